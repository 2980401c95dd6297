"""Exponential backoff with jitter: the one formula behind every retry in feedstream.

The delay after the *failures*-th consecutive failure (1 for the first) is::

    min(cap, base * 2 ** (failures - 1)) * (low + (high - low) * jitter)

*jitter* is a number in [0, 1) that the caller draws (or fixes, in a test), so the function
stays pure and exact; ``(low, high)`` is the factor at jitter 0 and as jitter nears 1, which
spreads clients that failed together so they do not come back together. The callers keep their
own numbers:

* the poller (:func:`feedstream.core.schedule.backoff_delay`): base = the feed's interval,
  cap 4 h, factor 0.9 to 1.1 (+-10 %);
* ``feedstream tail``: base 1 s, cap 30 s by default, factor 0.75 to 1.25 (+-25 %);
* WebSub subscription retries: base 60 s, cap 6 h, factor 1.0 down to 0.5.
"""

from __future__ import annotations

__all__ = ["MAX_DOUBLINGS", "backoff_delay"]

MAX_DOUBLINGS = 62
"""The exponent stops growing here: far past any cap, and no float overflow."""


def backoff_delay(
    failures: int,
    jitter: float,
    *,
    base: float,
    cap: float,
    spread: tuple[float, float] = (1.0, 1.0),
    max_doublings: int = MAX_DOUBLINGS,
) -> float:
    """Seconds to wait after the *failures*-th consecutive failure (1 for the first).

    Doubles from *base* up to *cap*, then scales by ``low + (high - low) * jitter`` with
    ``(low, high) = spread``. *failures* below 1 count as 1; *max_doublings* bounds the
    exponent (a caller may keep a smaller one it always had).
    """
    low, high = spread
    exponent = min(max(failures - 1, 0), max_doublings)
    return min(cap, base * 2.0**exponent) * (low + (high - low) * jitter)
