"""The poll schedule: pure decisions from HTTP answers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedstream.core.schedule import (
    BACKOFF_CAP,
    MAX_HINT,
    backoff_delay,
    parse_http_date,
    parse_max_age,
    parse_retry_after,
    plan,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def test_success_keeps_the_interval() -> None:
    outcome = plan(200, {}, interval=300, failures=0, now=NOW)
    assert (outcome.kind, outcome.delay, outcome.failures) == ("ok", 300, 0)


def test_not_modified_is_a_success_and_resets_failures() -> None:
    outcome = plan(304, {}, interval=300, failures=4, now=NOW)
    assert (outcome.kind, outcome.delay, outcome.failures) == ("not_modified", 300, 0)


@pytest.mark.parametrize(
    ("headers", "ttl", "expected"),
    [
        ({"cache-control": "public, max-age=900"}, None, 900),
        ({"cache-control": "max-age=60"}, None, 300),  # never sooner than the interval
        ({"cache-control": "max-age=100, s-maxage=1200"}, None, 1200),
        ({"cache-control": "max-age=99999999"}, None, MAX_HINT),  # capped
        ({"cache-control": "max-age=abc"}, None, 300),
        ({}, 3600.0, 3600),
        ({"cache-control": "max-age=600"}, 1800.0, 1800),
        ({"expires": "Tue, 14 Nov 2023 23:13:20 GMT"}, None, 3600),
        (
            {"expires": "Tue, 14 Nov 2023 23:13:20 GMT", "date": "Tue, 14 Nov 2023 22:43:20 GMT"},
            None,
            1800,
        ),
        ({"expires": "0"}, None, 300),
    ],
)
def test_cache_hints_stretch_the_delay(
    headers: dict[str, str], ttl: float | None, expected: float
) -> None:
    assert plan(200, headers, interval=300, failures=0, now=NOW, ttl=ttl).delay == expected


def test_failures_back_off_exponentially_to_the_cap() -> None:
    delays = []
    failures = 0
    for _ in range(12):
        outcome = plan(500, {}, interval=60, failures=failures, now=NOW)
        assert outcome.kind == "error"
        failures = outcome.failures
        delays.append(outcome.delay)
    assert delays[:5] == [60, 120, 240, 480, 960]
    assert delays[-1] == BACKOFF_CAP
    assert plan(200, {}, interval=60, failures=failures, now=NOW).failures == 0


@pytest.mark.parametrize("status", [None, 400, 401, 403, 404, 500, 502])
def test_every_failure_kind_backs_off(status: int | None) -> None:
    outcome = plan(status, {}, interval=100, failures=2, now=NOW)
    assert (outcome.kind, outcome.delay, outcome.failures) == ("error", 400, 3)


def test_unusable_body_is_a_failure() -> None:
    assert plan(200, {}, interval=100, failures=0, now=NOW, usable=False).kind == "error"


def test_gone_stops_polling() -> None:
    outcome = plan(410, {}, interval=100, failures=0, now=NOW)
    assert outcome.kind == "gone" and outcome.delay is None


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_pauses_the_host(status: int) -> None:
    outcome = plan(status, {"retry-after": "7200"}, interval=300, failures=0, now=NOW)
    assert outcome.host_pause == 7200 and outcome.delay == 7200
    dated = plan(
        status, {"retry-after": "Tue, 14 Nov 2023 22:23:20 GMT"}, interval=30, failures=0, now=NOW
    )
    assert dated.host_pause == 600 and dated.delay == 600
    short = plan(status, {"retry-after": "1"}, interval=300, failures=0, now=NOW)
    assert short.host_pause == 1 and short.delay == 300  # backoff still applies


def test_retry_after_parsing() -> None:
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after(" 5 ", NOW) == 5
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:10 GMT", NOW) == 0  # in the past
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("-5", NOW) is None
    assert parse_retry_after("9" * 40, NOW) == 7 * 86400
    assert parse_retry_after(None, NOW) is None


def test_http_dates_in_all_three_forms() -> None:
    expected = 784111777.0
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == expected
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == expected
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == expected
    assert parse_http_date("not a date") is None


def test_max_age_ignores_garbage() -> None:
    assert parse_max_age({"cache-control": 'no-cache, max-age="30"'}, NOW) == 30
    assert parse_max_age({"cache-control": ",,=,max-age"}, NOW) is None
    assert parse_max_age({"expires": "garbage"}, NOW) is None


@given(
    interval=st.floats(1, 7 * 86400),
    failures=st.integers(0, 10_000),
    jitter=st.floats(0, 1, exclude_max=True),
)
def test_backoff_is_bounded(interval: float, failures: int, jitter: float) -> None:
    delay = backoff_delay(interval, failures + 1, jitter)
    assert math.isfinite(delay)
    assert 0.9 * min(interval, BACKOFF_CAP) <= delay <= 1.1 * BACKOFF_CAP


@given(
    headers=st.dictionaries(
        st.sampled_from(["cache-control", "expires", "date", "retry-after"]), st.text()
    ),
    status=st.one_of(st.none(), st.integers(100, 599)),
)
def test_plan_never_raises_on_hostile_headers(headers: dict[str, str], status: int | None) -> None:
    outcome = plan(status, headers, interval=60, failures=0, now=NOW)
    assert outcome.delay is None or (math.isfinite(outcome.delay) and outcome.delay >= 0)
