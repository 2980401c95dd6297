"""Folding: recognize the same story arriving from several feeds.

Two entries of *different* feeds are the same story when their canonical URLs are equal, or,
for an entry without a usable URL, when their title keys are. Entries of one feed never fold
with each other (within a feed, deduplication by entry id is the log's job).

* :func:`canonical_url` makes a comparison key of a URL (not a link to display): scheme and
  host lowercased, an IDN host in its ASCII (``xn--``) form so both spellings agree, a trailing
  dot of the host and the default port dropped, the fragment removed, percent-encoding
  normalized (``%7e`` is ``~``, ``%c3%a9`` is ``%C3%A9``, a raw ``é`` is ``%C3%A9``), dot
  segments resolved, trailing slashes removed (``/a/`` is ``/a``; the root stays ``/``), and
  the tracking parameters of :data:`TRACKING_PARAMETERS` and every ``utm_*`` removed, the other
  query parameters kept in their order. ``http`` and ``https`` stay different, and so do
  ``www.example.com`` and ``example.com``: folding must never merge two different stories.
* :func:`title_key` folds a title to lower-case words without punctuation, but only when it is
  specific enough: at least :data:`MIN_TITLE_WORDS` words and :data:`MIN_TITLE_CHARS`
  characters, so that "Weekly links" or "Release 1.2" never fold. Titles in scripts written
  without spaces rarely qualify; a missed fold is better than a wrong one.
* :class:`FoldIndex` remembers the first entry of each key for a time window (48 hours by
  default) in an insertion-ordered map: expiry and the size bound pop the oldest keys first,
  so every operation is amortized O(1). Time is passed in (``now``); nothing here reads a
  clock. After a restart, :meth:`FoldIndex.add` replays the stored entries of the window,
  oldest first. :func:`fold_keys` computes an entry's keys on their own (in a worker process,
  say) and :meth:`FoldIndex.check_keys` takes them, so that the index's owner only looks up.

Pure: no I/O.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote_plus, urlsplit

from feedstream.core.urls import MAX_URL_CHARS

__all__ = [
    "DEFAULT_MAX_KEYS",
    "DEFAULT_WINDOW",
    "MIN_TITLE_CHARS",
    "MIN_TITLE_WORDS",
    "TRACKING_PARAMETERS",
    "FoldIndex",
    "FoldKeys",
    "canonical_url",
    "fold_keys",
    "title_key",
]

DEFAULT_WINDOW = 48 * 3600.0  # seconds
DEFAULT_MAX_KEYS = 200_000  # two keys (URL, title) per entry at most
MIN_TITLE_WORDS = 5
MIN_TITLE_CHARS = 20

TRACKING_PARAMETERS = frozenset(
    {
        # click ids: Facebook, Google Ads (and its iOS variants), DoubleClick, Microsoft Ads,
        # Yandex, Twitter/X, TikTok, LinkedIn, Instagram share links, Reddit
        "fbclid", "gclid", "gclsrc", "gbraid", "wbraid", "dclid", "msclkid", "yclid", "twclid",
        "ttclid", "li_fat_id", "igshid", "rdt_cid",
        # Google Analytics cross-domain linker
        "_ga", "_gl",
        # Mailchimp, HubSpot, Marketo, Vero, Olytics (newsletters)
        "mc_cid", "mc_eid", "_hsenc", "_hsmi", "__hssc", "__hstc", "__hsfp", "hsctatracking",
        "mkt_tok", "vero_id", "vero_conv", "oly_anon_id", "oly_enc_id",
        # Twitter/X share links
        "ref_src", "ref_url",
    }
)  # fmt: skip
"""Query parameters dropped by :func:`canonical_url` (compared case-insensitively), besides
every parameter whose name starts with ``utm_``."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_KEPT = _UNRESERVED | frozenset("!$&'()*+,;=:@/?")  # used as they are in paths and queries
_HEX = frozenset("0123456789abcdefABCDEF")
_HOST = re.compile(r"[\w.-]+")
_IPV6 = re.compile(r"[0-9a-f:.]+")
_TITLE_WORD = re.compile(r"[^\W_]+")


def canonical_url(url: object) -> str | None:
    """The comparison key of an http(s) URL (see the module docstring), or None."""
    if not isinstance(url, str):
        return None
    url = url.strip()
    if not url or len(url) > MAX_URL_CHARS:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or parts.username is not None or port == 0:
        return None
    host = _canonical_host(host or "")
    if host is None:
        return None
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _remove_dot_segments(_normalize_escapes(parts.path)).rstrip("/") or "/"
    query = "&".join(
        _normalize_escapes(parameter)
        for parameter in parts.query.split("&")
        if parameter and not _is_tracking(parameter)
    )
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _canonical_host(host: str) -> str | None:
    if ":" in host:  # an IPv6 literal, brackets already removed by urlsplit
        return f"[{host}]" if _IPV6.fullmatch(host) else None
    host = host.removesuffix(".")
    if not _HOST.fullmatch(host) or host.startswith(".") or ".." in host:  # empty labels
        return None
    if not host.isascii():
        # Not valid IDNA 2003 (an empty label, say): keep the lowercased Unicode form.
        with contextlib.suppress(UnicodeError):
            host = host.encode("idna").decode("ascii")
    return host.lower()


def _is_tracking(parameter: str) -> bool:
    name = unquote_plus(parameter.split("=", 1)[0]).strip().lower()
    return name.startswith("utm_") or name in TRACKING_PARAMETERS


def _normalize_escapes(component: str) -> str:
    """Percent-encoding in one form: unreserved characters decoded, hex digits upper case,
    characters that must be escaped escaped as UTF-8, a stray ``%`` as ``%25``."""
    out: list[str] = []
    index, length = 0, len(component)
    while index < length:
        char = component[index]
        if char == "%":
            digits = component[index + 1 : index + 3]
            if len(digits) == 2 and digits[0] in _HEX and digits[1] in _HEX:
                decoded = chr(int(digits, 16))
                out.append(decoded if decoded in _UNRESERVED else "%" + digits.upper())
                index += 3
                continue
            out.append("%25")
        elif char in _KEPT:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        index += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, for an absolute path (or an empty one)."""
    if "." not in path:
        return path
    output: list[str] = []
    segments = path.split("/")
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        elif segment == ".":
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/".join(output) if output != [""] else "/"


def title_key(title: object) -> str | None:
    """The folded words of *title*, or None when it is too short to identify a story."""
    if not isinstance(title, str):
        return None
    words = _TITLE_WORD.findall(unicodedata.normalize("NFKC", title.casefold()))
    key = " ".join(words)
    if len(words) < MIN_TITLE_WORDS or len(key) < MIN_TITLE_CHARS:
        return None
    return key


@dataclass(frozen=True, slots=True)
class _First:
    feed: str
    entry_id: str
    at: float


class FoldIndex:
    """The first entry of each canonical URL and title key seen in the last *window* seconds.

    At most *max_keys* keys are kept; past that the oldest go first. ``now`` and ``seen_at``
    are seconds on any clock that does not go backwards (say ``time.time()``).
    """

    def __init__(self, *, window: float = DEFAULT_WINDOW, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if not window > 0:
            raise ValueError("window must be positive")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.window = window
        self.max_keys = max_keys
        self._first: OrderedDict[str, _First] = OrderedDict()

    def __len__(self) -> int:
        """The number of keys held (an entry has up to two: its URL and its title)."""
        return len(self._first)

    def check(
        self, feed: str, entry_id: str, url: str | None, title: str | None, now: float
    ) -> str | None:
        """The id of the entry this one duplicates, or None after recording this one.

        The entry duplicates the first entry of another feed seen within the window with the
        same canonical URL or, when it has no usable URL, the same title key. A duplicate is
        not recorded: later copies fold into the first entry too.
        """
        return self.check_keys(feed, entry_id, fold_keys(url, title), now)

    def check_keys(self, feed: str, entry_id: str, keys: FoldKeys, now: float) -> str | None:
        """:meth:`check` with the entry's :func:`fold_keys` computed already."""
        self._expire(now)
        url_key, text_key = keys
        probe = url_key or text_key
        if probe is not None:
            first = self._first.get(probe)
            if first is not None and first.feed != feed and self._fresh(first, now):
                return first.entry_id
        self._record(_First(feed, entry_id, now), url_key, text_key)
        return None

    def add(
        self, feed: str, entry_id: str, url: str | None, title: str | None, seen_at: float
    ) -> None:
        """Record an entry without checking it (rebuilding after a restart: oldest first).

        A key already held by an entry within the window keeps that entry.
        """
        self._expire(seen_at)
        self._record(_First(feed, entry_id, seen_at), *fold_keys(url, title))

    def clear(self) -> None:
        self._first.clear()

    def _fresh(self, first: _First, now: float) -> bool:
        return now - first.at <= self.window

    def _record(self, first: _First, *keys: str | None) -> None:
        for key in keys:
            if key is None:
                continue
            held = self._first.get(key)
            if held is not None and self._fresh(held, first.at):
                continue  # the first entry of the key stays
            if held is not None:
                del self._first[key]  # expired out of order: re-insert at the young end
            self._first[key] = first
        while len(self._first) > self.max_keys:
            self._first.popitem(last=False)

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        while self._first:
            if next(iter(self._first.values())).at >= horizon:
                break
            self._first.popitem(last=False)


FoldKeys = tuple[str | None, str | None]
"""An entry's URL key and title key (see :func:`fold_keys`)."""


def fold_keys(url: object, title: object) -> FoldKeys:
    """The URL key and the title key, prefixed so that the two kinds never collide."""
    url_key = canonical_url(url)
    text_key = title_key(title)
    return (
        f"u {url_key}" if url_key is not None else None,
        f"t {text_key}" if text_key is not None else None,
    )
