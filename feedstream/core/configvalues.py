"""The value converters of :mod:`feedstream.core.config` (pure).

Each takes a decoded TOML value and returns it checked, or raises ``ValueError`` or
``TypeError`` with a message saying what is expected; the validator adds the file, the line and
the key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from feedstream.core.urls import HTTP_SCHEMES, MAX_URL_CHARS, is_http_url

FEED_ID_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
#: The longest ``category`` a feed may have (the page shows it as a chip).
MAX_CATEGORY_CHARS = 64
#: ``server.log``: the embedded SQLite database in ``data_dir``, or a Redis (or Valkey) URL.
SQLITE_LOG = "sqlite"


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(repr(c) for c in choices))
        return str(value)

    return convert


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("must be true or false")
    return value


def _nonempty_str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError("must be a non-empty string")
    return value.strip()


def _category(value: Any) -> str:
    """A short label: trimmed, at most :data:`MAX_CATEGORY_CHARS`, no control characters."""
    text = _nonempty_str(value)
    if len(text) > MAX_CATEGORY_CHARS:
        raise ValueError(f"must be at most {MAX_CATEGORY_CHARS} characters")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text):
        raise ValueError("must not contain control characters (tabs, newlines...)")
    return text


def _secret(value: Any) -> str:
    text = _nonempty_str(value)
    if len(text) < 8:
        raise ValueError("must be at least 8 characters")
    return text


def _admin_token(value: Any) -> str:
    text = _nonempty_str(value)
    if len(text) < 16:
        raise ValueError("must be at least 16 characters (it guards reloading the config)")
    return text


def _read_token(value: Any) -> str:
    text = _nonempty_str(value)
    if len(text) < 16:
        raise ValueError("must be at least 16 characters (it guards reading the stream)")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError("must be printable characters without spaces (it is sent as a header)")
    return text


#: An HTTP header name (RFC 9110 ``token``).
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$")


def _header_name(value: Any) -> str:
    text = _nonempty_str(value)
    if not HEADER_NAME_RE.match(text):
        raise ValueError("must be an HTTP header name such as X-Forwarded-User")
    return text


def _networks(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TypeError('must be a list of addresses or networks such as ["127.0.0.1/32"]')
    networks = []
    for item in value:
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(networks)


def _feed_id(value: Any) -> str:
    if not isinstance(value, str) or not FEED_ID_RE.match(value):
        raise ValueError("must be 1-64 characters of a-z, 0-9, '-' and '_'")
    return value


def _http_url(value: Any) -> str:
    text = _nonempty_str(value)
    if len(text) > MAX_URL_CHARS:
        raise ValueError(f"must be a URL of at most {MAX_URL_CHARS} characters")
    if not is_http_url(text):
        raise ValueError("must be an absolute http:// or https:// URL")
    return text


def _log_url(value: Any) -> str:
    """``sqlite``, or ``redis://[user:password@]host[:port][/db]`` (``rediss://`` for TLS)."""
    text = _nonempty_str(value)
    if text == SQLITE_LOG:
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError('must be "sqlite" or a redis://host:port/db URL')
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    db = parts.path.strip("/")
    if (db and not db.isdigit()) or parts.query or parts.fragment or port == 0:
        raise ValueError("must be redis://host:port/db with a numeric db and nothing else")
    return text


def _path(value: Any) -> Path:
    return Path(_nonempty_str(value))


def _int_range(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("must be a whole number")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return convert


def _float_range(low: float, high: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("must be a number")
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return float(value)

    return convert


def _interval(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("must be a number of seconds")
    if not 1 <= value <= 7 * 86400:
        raise ValueError("must be between 1 and 604800 seconds")
    return float(value)


def _origins(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TypeError('must be a list of origins such as ["*"] or ["https://example.org"]')
    for origin in value:
        if origin != "*" and urlsplit(origin).scheme not in HTTP_SCHEMES:
            raise ValueError(f'{origin!r} is neither "*" nor an http(s) origin')
    return tuple(value)
