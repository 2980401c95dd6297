"""What counts as an http(s) URL, and how long one may be: defined once.

Configured feed URLs, redirect targets, the ``tail`` server address, WebSub hub and self URLs
and the links inside entries all pass through here (the last through
:func:`feedstream.core.sanitize.safe_url`, which adds browser-safety rules on top).

The one length limit is :data:`MAX_URL_CHARS` = 2048 characters. Why 2048 and not 4096 (what
WebSub discovery allowed) or none (what the configuration allowed):

* a hub or self URL travels twice: discovery reads it from ``<link>`` headers, and the
  normalizer reads the same URL from the feed document through ``safe_url``, which has always
  stopped at 2048. Two limits meant a hub kept by one path and dropped by the other;
* 2048 is the long-standing interoperable size (the sitemaps protocol's limit, below the 2083
  of old browsers, within every CDN and proxy default); a longer feed, hub or link URL is
  almost always a tracking blob or an attack, and entries reach browsers;
* every URL feedstream keeps ends up in its log, its SQLite rows and its API answers, so one
  bound keeps all of them bounded.

Pure: no I/O.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

__all__ = ["HTTP_SCHEMES", "MAX_URL_CHARS", "is_http_url", "resolve_http_url"]

MAX_URL_CHARS = 2048
"""The longest URL feedstream accepts anywhere (see the module docstring for why 2048)."""

HTTP_SCHEMES = frozenset({"http", "https"})

_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def is_http_url(url: str) -> bool:
    """Whether *url* is an absolute ``http``/``https`` URL with a host, a valid port (if any)
    and at most :data:`MAX_URL_CHARS` characters.

    The text is judged as given: callers that accept surrounding spaces strip them first.
    """
    if not url or len(url) > MAX_URL_CHARS:
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a port that is not 0..65535
    except ValueError:
        return False
    return parts.scheme in HTTP_SCHEMES and bool(parts.hostname)


def resolve_http_url(ref: str, base: str) -> str | None:
    """*ref* resolved against *base*, kept only if the result passes :func:`is_http_url`.

    *ref* is stripped first; one that still holds a space or a control character is refused
    rather than guessed at (WebSub hub, self and redirect URLs come from untrusted headers).
    """
    ref = ref.strip()
    if not ref or len(ref) > MAX_URL_CHARS or _SPACE_OR_CONTROL.search(ref):
        return None
    try:
        url = urljoin(base, ref)
    except ValueError:
        return None
    return url if is_http_url(url) else None
