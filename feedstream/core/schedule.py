"""When to poll a feed next: a pure function of what the last fetch answered.

The rules, in the order they apply:

* 410 Gone stops polling for good (the feed is marked ``gone``).
* Success (200 with a usable feed, or 304): the next poll is after
  ``max(interval, Cache-Control max-age or Expires, RSS <ttl>)``; the hints are capped at
  :data:`MAX_HINT` so a publisher cannot park a feed for a year.
* Failure (network error, timeout, 4xx, 5xx, a body that is not a feed): exponential backoff
  ``interval * 2**(failures - 1)``, capped at :data:`BACKOFF_CAP`, with +-10 % jitter; success
  resets the count. 404 is a failure like any other: feeds come back.
* 429 and 503 with ``Retry-After`` (delta seconds or an HTTP date): no request before then, and
  the pause is reported as ``host_pause`` so the caller applies it to every feed on that host.

Nothing here reads a clock or a random generator: ``now`` (Unix seconds) and ``jitter`` (in
[0, 1); 0.5 means none) are arguments, which is what makes the rules testable to the second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from feedstream.core import backoff, times
from feedstream.core.times import parse_http_date

__all__ = [
    "BACKOFF_CAP",
    "MAX_HINT",
    "MAX_RETRY_AFTER",
    "Outcome",
    "backoff_delay",
    "parse_http_date",
    "parse_max_age",
    "parse_retry_after",
    "plan",
]

MAX_HINT = 24 * 3600.0  # cache hints (max-age, Expires, ttl) never push a poll further than this
BACKOFF_CAP = 4 * 3600.0  # a failing feed is still retried at least this often
MAX_RETRY_AFTER = 7 * 86400.0  # a Retry-After beyond a week is taken as a week
BACKOFF_SPREAD = (0.9, 1.1)  # +-10 % jitter around the backoff delay

Kind = Literal["ok", "not_modified", "error", "gone"]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    delay: float | None  # seconds until the next poll; None: never (gone)
    failures: int  # consecutive failures, this one included
    host_pause: float | None = None  # seconds with no request at all to this host


def parse_max_age(headers: Mapping[str, str], now: float) -> float | None:
    """Freshness in seconds from ``Cache-Control`` (s-maxage, max-age) or ``Expires``."""
    cache_control = headers.get("cache-control", "")
    ages: dict[str, float] = {}
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("max-age", "s-maxage"):
            value = value.strip().strip('"')
            if value.isdigit():
                ages[name] = float(min(int(value), 10**9))
    if ages:
        return ages.get("s-maxage", ages.get("max-age"))
    expires = parse_http_date(headers.get("expires"))
    if expires is not None:
        date = parse_http_date(headers.get("date"))
        return max(0.0, expires - (date if date is not None else now))
    return None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from *now* (delta seconds or an HTTP date), or None.

    :func:`feedstream.core.times.parse_retry_after` with the poller's cap,
    :data:`MAX_RETRY_AFTER`.
    """
    return times.parse_retry_after(value, now, MAX_RETRY_AFTER)


def backoff_delay(interval: float, failures: int, jitter: float) -> float:
    """Delay after the *failures*-th consecutive failure (1 for the first).

    :func:`feedstream.core.backoff.backoff_delay` from the feed's *interval*, capped at
    :data:`BACKOFF_CAP`, spread +-10 % by *jitter*.
    """
    return backoff.backoff_delay(
        failures, jitter, base=interval, cap=BACKOFF_CAP, spread=BACKOFF_SPREAD
    )


def plan(
    status: int | None,
    headers: Mapping[str, str],
    *,
    interval: float,
    failures: int,
    now: float,
    jitter: float = 0.5,
    usable: bool = True,
    ttl: float | None = None,
) -> Outcome:
    """Decide the next poll after a fetch.

    *status* is the HTTP status (None when no response came: network error, timeout, too large);
    *headers* are the response headers with lower-case names; *usable* is False when a 200 body
    was not a feed; *ttl* is the feed's RSS ``<ttl>`` in seconds; *failures* counts the
    consecutive failures before this fetch.
    """
    if status == 410:
        return Outcome("gone", None, failures + 1)
    if status == 304 or (status is not None and 200 <= status < 300 and usable):
        hints = [h for h in (parse_max_age(headers, now), ttl) if h is not None]
        delay = max(interval, min(MAX_HINT, max(hints, default=0.0)))
        return Outcome("ok" if status != 304 else "not_modified", delay, 0)
    failures += 1
    delay = backoff_delay(interval, failures, jitter)
    host_pause = None
    if status in (429, 503):
        host_pause = parse_retry_after(headers.get("retry-after"), now)
        if host_pause is not None:
            delay = max(delay, host_pause)
    return Outcome("error", delay, failures, host_pause)
