"""RFC 3339 output, HTTP dates and Retry-After: the one definition of each."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedstream.core.times import (
    MAX_DELTA_SECONDS,
    format_rfc3339,
    format_rfc3339_datetime,
    parse_http_date,
    parse_retry_after,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def test_rfc3339_is_utc_seconds_with_z() -> None:
    assert format_rfc3339(NOW) == "2023-11-14T22:13:20Z"
    assert format_rfc3339(NOW + 0.999) == "2023-11-14T22:13:20Z"  # fractions are dropped
    assert format_rfc3339(0) == "1970-01-01T00:00:00Z"


def test_rfc3339_of_a_datetime() -> None:
    moment = datetime(2024, 5, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    assert format_rfc3339_datetime(moment) == "2024-05-01T12:00:00Z"
    paris = moment.astimezone(timezone(timedelta(hours=2)))
    assert format_rfc3339_datetime(paris) == "2024-05-01T12:00:00Z"  # converted, not relabelled
    assert format_rfc3339_datetime(datetime(2024, 5, 1, 12)) == "2024-05-01T12:00:00Z"  # naive


@given(st.floats(0, 4_102_444_800, allow_nan=False))
def test_rfc3339_sorts_as_time(timestamp: float) -> None:
    text = format_rfc3339(timestamp)
    assert len(text) == 20 and text.endswith("Z")
    assert (format_rfc3339(timestamp) <= format_rfc3339(timestamp + 1)) is True


def test_http_dates_in_all_three_forms() -> None:
    for value in (
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",  # obsolete asctime, no zone: GMT
    ):
        assert parse_http_date(value) == 784111777, value
    assert parse_http_date(None) is None
    assert parse_http_date("") is None
    assert parse_http_date("yesterday") is None


def test_retry_after_delta_seconds() -> None:
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after(" 5 ", NOW) == 5
    assert parse_retry_after("0", NOW) == 0
    assert parse_retry_after("-5", NOW) is None
    assert parse_retry_after("1.5", NOW) is None
    assert parse_retry_after("\u00b2", NOW) is None  # a digit to str.isdigit, not to HTTP
    assert parse_retry_after("\u0661\u0662", NOW) is None  # Arabic-Indic digits: not ASCII
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("", NOW) is None


def test_retry_after_huge_values_stop_at_the_ceiling_then_the_cap() -> None:
    assert parse_retry_after("9" * 40, NOW) == MAX_DELTA_SECONDS
    assert parse_retry_after("9" * 5000, NOW) == MAX_DELTA_SECONDS  # int() would refuse it
    assert parse_retry_after("9" * 40, NOW, cap=600) == 600
    assert parse_retry_after("86400", NOW, cap=7 * 86400.0) == 86400


def test_retry_after_http_date() -> None:
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:10 GMT", NOW) == 0  # in the past
    assert parse_retry_after("Tue, 14 Nov 2023 22:15:20 GMT", NOW) == 120
    assert parse_retry_after("Tue, 14 Nov 2023 22:15:20 GMT", NOW, cap=60) == 60
    assert parse_retry_after("soon", NOW) is None


def test_retry_after_without_a_clock_reads_delta_seconds_only() -> None:
    assert parse_retry_after("120", None) == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", None) is None


@given(st.text(), st.floats(0, 1e10), st.floats(0, 1e9))
def test_retry_after_never_raises_and_stays_in_range(value: str, now: float, cap: float) -> None:
    seconds = parse_retry_after(value, now, cap)
    assert seconds is None or (math.isfinite(seconds) and 0 <= seconds <= cap)


@pytest.mark.parametrize("cap", [0.0, 1.0, math.inf])
def test_retry_after_cap_bounds(cap: float) -> None:
    assert parse_retry_after("30", NOW, cap) == min(30.0, cap)
