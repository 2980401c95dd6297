"""What the service counts as it goes, in plain Python: read by ``/metrics`` at scrape time.

Some figures are touched on the fan-out hot path, thousands of times per entry, where a dict
increment is all we can afford; :mod:`feedstream.web.metrics` turns them into metric families
only when Prometheus asks.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from feedstream.service.fetch import FetchError, fetch_error_kind

__all__ = ["Histogram", "Stats", "fetch_outcome"]

#: Seconds; a fetch is bounded by ``limits.timeout`` (20 s by default).
FETCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)
#: Seconds from an entry's commit to a listener's answer (the coalescing window included).
FANOUT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Seconds from a webhook push's request to its acknowledgement (the parse and the commit).
PUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Seconds the event loop stood still for one garbage collection (see
#: :mod:`feedstream.service.gcpolicy`).
GC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Observations counted into fixed buckets: one bisect and two additions per value."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # buckets are "less than or equal"
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs as Prometheus wants them, ending with ``+Inf``."""
        out, total = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            out.append((bound, float(total)))
        return out


def fetch_outcome(status: int | None, error: Exception | None, usable: bool) -> str:
    """One word for how a fetch went, the ``outcome`` label of ``feedstream_fetches_total``.

    A failed fetch is named by :func:`feedstream.service.fetch.fetch_error_kind`; an answer by
    its status (and, for a 200, whether the body was a feed).
    """
    if isinstance(error, FetchError):
        return fetch_error_kind(error)
    if status is None:
        return "error"
    if status == 304:
        return "not_modified"
    if status == 200:
        return "ok" if usable else "not_a_feed"
    return f"http_{status // 100}xx"


@dataclass(slots=True)
class Stats:
    """What the runtime counts as it goes; read by the collector at scrape time."""

    fetches: Counter[tuple[str, str]] = field(default_factory=Counter)  # (feed, outcome)
    fetch_seconds: Histogram = field(default_factory=lambda: Histogram(FETCH_BUCKETS))
    ingested: Counter[tuple[str, str]] = field(default_factory=Counter)  # (feed, via)
    duplicates: Counter[str] = field(default_factory=Counter)  # by feed: same id, seen before
    folded: Counter[str] = field(default_factory=Counter)  # by feed: stored as another's story
    rule_matches: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, action)
    pushes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, reason)
    #: Accepted webhook pushes: from the request to its acknowledgement (parse and commit).
    push_seconds: Histogram = field(default_factory=lambda: Histogram(PUSH_BUCKETS))
    fanout_seconds: Histogram = field(default_factory=lambda: Histogram(FANOUT_BUCKETS))
    waiting: dict[str, int] = field(default_factory=lambda: {"longpoll": 0, "sse": 0})
    reloads: Counter[str] = field(default_factory=Counter)  # by result: ok, error
    gc_collections: Counter[str] = field(default_factory=Counter)  # growth, idle, interval
    gc_seconds: Histogram = field(default_factory=lambda: Histogram(GC_BUCKETS))

    def count_ingest(
        self, offered: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]
    ) -> None:
        """Count what an append was *offered* and what was *new*: the rest were duplicates."""
        seen: Counter[str] = Counter(str(entry["feed"]) for entry in offered)
        for entry in new:
            feed = str(entry["feed"])
            self.ingested[feed, str(entry.get("via") or "poll")] += 1
            seen[feed] -= 1
        for feed, duplicates in seen.items():
            if duplicates > 0:
                self.duplicates[feed] += duplicates

    def count_rules(self, matched: Iterable[str], actions: Mapping[str, str]) -> None:
        """Count one new entry's matching rules (ids, in order) by their *actions*."""
        for rule in matched:
            self.rule_matches[rule, actions.get(rule, "unknown")] += 1
