"""The one jittered exponential backoff, with each caller's numbers."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from feedstream.core.backoff import backoff_delay


def test_doubles_from_base_up_to_cap() -> None:
    delays = [backoff_delay(n, 0.0, base=1.0, cap=30.0) for n in range(1, 8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30]


def test_failures_below_one_count_as_one() -> None:
    assert backoff_delay(0, 0.0, base=5.0, cap=100.0) == 5.0
    assert backoff_delay(-3, 0.0, base=5.0, cap=100.0) == 5.0


def test_jitter_spreads_between_low_and_high() -> None:
    spread = (0.75, 1.25)
    assert backoff_delay(1, 0.0, base=4.0, cap=30.0, spread=spread) == 3.0
    assert backoff_delay(1, 0.5, base=4.0, cap=30.0, spread=spread) == 4.0
    assert backoff_delay(1, 1.0, base=4.0, cap=30.0, spread=spread) == 5.0


def test_a_spread_may_run_downwards() -> None:
    # WebSub: 100 % of the delay at jitter 0, down to 50 % as jitter nears 1.
    assert backoff_delay(1, 0.0, base=60.0, cap=3600.0, spread=(1.0, 0.5)) == 60.0
    assert backoff_delay(1, 0.5, base=60.0, cap=3600.0, spread=(1.0, 0.5)) == 45.0


def test_no_overflow_for_absurd_failure_counts() -> None:
    assert backoff_delay(10**9, 0.0, base=1.0, cap=30.0) == 30.0
    assert backoff_delay(10**9, 0.0, base=1.0, cap=math.inf) == 2.0**62


def test_max_doublings_bounds_the_exponent() -> None:
    assert backoff_delay(40, 0.0, base=1.0, cap=1e15, max_doublings=30) == 2.0**30


@given(
    failures=st.integers(-5, 10_000),
    jitter=st.floats(0, 1, exclude_max=True),
    base=st.floats(0.001, 86400),
    cap=st.floats(0.001, 7 * 86400),
)
def test_bounded_by_cap_times_the_spread(
    failures: int, jitter: float, base: float, cap: float
) -> None:
    delay = backoff_delay(failures, jitter, base=base, cap=cap, spread=(0.9, 1.1))
    assert math.isfinite(delay)
    assert 0.9 * min(base, cap) * (1 - 1e-12) <= delay <= 1.1 * cap * (1 + 1e-12)
