"""Time formats at the edges: RFC 3339 out, HTTP dates and ``Retry-After`` in.

One definition of each, so that every timestamp feedstream writes looks the same and every
``Retry-After`` it reads is understood the same way. Pure: the clock (``now``) is an argument.

* :func:`format_rfc3339` / :func:`format_rfc3339_datetime`: UTC, seconds precision, ``Z``
  (``2024-05-01T12:00:00Z``), the form of every date in entries, APIs and logs. Fixed width
  (for years 1000-9999), so such strings sort as text in time order.
* :func:`parse_http_date`: an HTTP date (RFC 9110 section 5.6.7, any of its three forms).
* :func:`parse_retry_after`: ``Retry-After`` (RFC 9110 section 10.2.3) as seconds from now.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "MAX_DELTA_SECONDS",
    "format_rfc3339",
    "format_rfc3339_datetime",
    "parse_http_date",
    "parse_retry_after",
]

MAX_DELTA_SECONDS = 10**9
"""Delta-seconds are read up to this (about 31 years) before any cap: no huge integers."""

_RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


def format_rfc3339(timestamp: float) -> str:
    """Unix *timestamp* as RFC 3339 UTC with ``Z``, seconds precision (fractions dropped)."""
    return format_rfc3339_datetime(datetime.fromtimestamp(timestamp, UTC))


def format_rfc3339_datetime(moment: datetime) -> str:
    """*moment* as RFC 3339 UTC with ``Z``, seconds precision (fractions dropped).

    An aware datetime is converted to UTC first; a naive one is taken to be UTC already.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(_RFC3339)


def parse_http_date(value: str | None) -> float | None:
    """An HTTP date (RFC 9110, any of its three forms) as Unix seconds, or None."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:  # obsolete forms carry no zone: HTTP dates are GMT
        return parsed.replace(tzinfo=UTC).timestamp()
    return parsed.timestamp()


def parse_retry_after(value: str | None, now: float | None, cap: float = math.inf) -> float | None:
    """``Retry-After`` as seconds from *now*, between 0 and *cap*; None when absent or unusable.

    Both forms of RFC 9110 are read: delta-seconds (ASCII digits only, as the grammar says;
    ``"²"`` or ``"-5"`` are not numbers of seconds) and an HTTP date, which is turned into
    seconds from *now* (Unix seconds). A caller without a wall clock passes ``now=None`` and
    then understands the delta-seconds form only. A date in the past means 0: retry at once.
    *cap* is the caller's patience: a longer wait is taken as *cap*.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # More than ten digits is past the ceiling anyway (and int() refuses huge strings).
        seconds = float(
            min(int(value), MAX_DELTA_SECONDS) if len(value) <= 10 else MAX_DELTA_SECONDS
        )
    else:
        when = parse_http_date(value) if now is not None else None
        if when is None or now is None:
            return None
        seconds = when - now
    return min(max(seconds, 0.0), cap)
