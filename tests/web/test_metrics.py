"""The metrics' pure parts: buckets, outcome words, ingest counting."""

from __future__ import annotations

import pytest

from feedstream.service.fetch import FetchError, FetchTimeout, NetworkError, RedirectError, TooLarge
from feedstream.service.stats import Histogram, Stats, fetch_outcome
from feedstream.web.metrics import push_reason
from tests.support.helpers import entry


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    histogram = Histogram([0.1, 1.0, 0.5])
    for value in (0.05, 0.1, 0.3, 0.5, 2.0, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [
        ("0.1", 2.0),  # 0.1 itself falls in "le 0.1"
        ("0.5", 4.0),
        ("1.0", 4.0),
        ("+Inf", 6.0),
    ]
    assert histogram.count == 6
    assert histogram.sum == pytest.approx(9.95)


@pytest.mark.parametrize(
    ("status", "error", "usable", "expected"),
    [
        (200, None, True, "ok"),
        (200, None, False, "not_a_feed"),
        (304, None, True, "not_modified"),
        (404, None, True, "http_4xx"),
        (503, None, True, "http_5xx"),
        (None, FetchTimeout("slow"), True, "timeout"),
        (None, TooLarge("big"), True, "too_large"),
        (None, RedirectError("ftp"), True, "bad_redirect"),
        (None, NetworkError("refused"), True, "network_error"),
        (None, FetchError("other"), True, "error"),
    ],
)
def test_fetch_outcome(
    status: int | None, error: Exception | None, usable: bool, expected: str
) -> None:
    assert fetch_outcome(status, error, usable) == expected


def test_push_reason() -> None:
    assert push_reason(202) == "accepted"
    assert [push_reason(s) for s in (401, 403, 404, 413, 415, 422)] == [
        "unauthorized", "push_disabled", "unknown_feed", "too_large", "media_type", "unparseable",
    ]  # fmt: skip
    assert push_reason(418) == "http_418"


def test_count_ingest_splits_new_by_via_and_counts_duplicates() -> None:
    stats = Stats()
    offered = [entry("a", "1"), entry("a", "2", via="poll"), entry("b", "3"), entry("b", "4")]
    stats.count_ingest(offered, [offered[0], offered[1], offered[2]])
    assert stats.ingested == {("a", "push"): 1, ("a", "poll"): 1, ("b", "push"): 1}
    assert stats.duplicates == {"b": 1}
    stats.count_ingest(offered[:2], [])
    assert stats.duplicates == {"a": 2, "b": 1}
