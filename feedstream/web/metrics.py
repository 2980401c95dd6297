"""``GET /metrics``: Prometheus text format, read from the runtime at scrape time.

The runtime keeps its figures in plain Python (:class:`Stats`: counters in dicts, a bucketed
:class:`Histogram`) because some are touched on the fan-out hot path, thousands of times per
entry, where a dict increment is all we can afford. A collector turns them, and what the runtime
already knows (the lag monitor's window, the log's per-feed counts, feed states, WebSub
subscriptions), into metric families when Prometheus asks. Each app has its own registry, so
several servers in one process (tests) never share series.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from feedstream.service.fetch import FetchError, FetchTimeout, NetworkError, RedirectError, TooLarge

if TYPE_CHECKING:
    from feedstream.service.runtime import Runtime

__all__ = [
    "CONTENT_TYPE",
    "Histogram",
    "Stats",
    "fetch_outcome",
    "metrics_registry",
    "push_reason",
    "render",
]

_Labels = TypeVar("_Labels", bound=tuple[str, ...])

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds; a fetch is bounded by ``limits.timeout`` (20 s by default).
FETCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)
#: Seconds from an entry's commit to a listener's answer (the coalescing window included).
FANOUT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
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
    """One word for how a fetch went, the ``outcome`` label of ``feedstream_fetches_total``."""
    if isinstance(error, FetchTimeout):
        return "timeout"
    if isinstance(error, TooLarge):
        return "too_large"
    if isinstance(error, RedirectError):
        return "bad_redirect"
    if isinstance(error, NetworkError):
        return "network_error"
    if isinstance(error, FetchError) or status is None:
        return "error"
    if status == 304:
        return "not_modified"
    if status == 200:
        return "ok" if usable else "not_a_feed"
    return f"http_{status // 100}xx"


#: ``reason`` labels of ``feedstream_pushes_total`` for the webhook's refusals, by status.
_PUSH_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "push_disabled",
    404: "unknown_feed",
    413: "too_large",
    415: "media_type",
    422: "unparseable",
    503: "busy",
}


def push_reason(status: int) -> str:
    return "accepted" if status < 300 else _PUSH_REASONS.get(status, f"http_{status}")


@dataclass(slots=True)
class Stats:
    """What the runtime counts as it goes; read by the collector at scrape time."""

    fetches: Counter[tuple[str, str]] = field(default_factory=Counter)  # (feed, outcome)
    fetch_seconds: Histogram = field(default_factory=lambda: Histogram(FETCH_BUCKETS))
    ingested: Counter[tuple[str, str]] = field(default_factory=Counter)  # (feed, via)
    duplicates: Counter[str] = field(default_factory=Counter)  # by feed
    pushes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, reason)
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


class _RuntimeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        stats = runtime.stats
        lag = runtime.lag.stats()
        family = GaugeMetricFamily(
            "feedstream_event_loop_lag_seconds",
            "How late the event loop's heartbeat woke, over the last minute",
            labels=["quantile"],
        )
        for quantile, key in (("0.5", "p50_ms"), ("0.99", "p99_ms"), ("1", "max_ms")):
            family.add_metric([quantile], float(lag[key]) / 1000)
        yield family
        waiting = GaugeMetricFamily(
            "feedstream_waiting_listeners", "Listeners parked now, by kind", labels=["kind"]
        )
        for kind, count in stats.waiting.items():
            waiting.add_metric([kind], count)
        yield waiting
        yield _histogram(
            "feedstream_fanout_latency_seconds",
            "From an entry's commit until a waiting listener's answer is handed to the server",
            stats.fanout_seconds,
        )

        feeds = runtime.feeds_status()
        try:
            counts = runtime.log.counts()
        except RuntimeError:  # not running yet, or stopping
            counts = {}
        entries = CounterMetricFamily(
            "feedstream_entries", "Entries stored (new, deduplicated), by feed", labels=["feed"]
        )
        failures = GaugeMetricFamily(
            "feedstream_feed_failures", "Consecutive failed polls, by feed", labels=["feed"]
        )
        for feed in feeds:
            entries.add_metric([feed["id"]], counts.get(feed["id"], 0))
            failures.add_metric([feed["id"]], feed["failures"])
        yield entries
        yield failures
        yield _counter(
            "feedstream_entries_ingested",
            "New entries since start, by feed and how they came (poll, push, websub)",
            ["feed", "via"],
            stats.ingested,
        )
        yield _counter(
            "feedstream_duplicate_entries",
            "Entries offered again (already stored) since start, by feed",
            ["feed"],
            {(feed,): count for feed, count in stats.duplicates.items()},
        )
        yield _counter(
            "feedstream_fetches",
            "Feed fetches since start, by feed and outcome",
            ["feed", "outcome"],
            stats.fetches,
        )
        yield _histogram(
            "feedstream_fetch_duration_seconds",
            "One fetch, from sending the request to the last body byte or the error",
            stats.fetch_seconds,
        )
        yield _counter(
            "feedstream_pushes",
            "Pushes since start, by kind (webhook, websub) and reason (accepted, or why not)",
            ["kind", "reason"],
            stats.pushes,
        )
        yield _counter(
            "feedstream_config_reloads",
            "Config reloads (SIGHUP or the admin API) since start, by result (ok, error)",
            ["result"],
            {(result,): stats.reloads[result] for result in ("ok", "error")},
        )
        yield _counter(
            "feedstream_gc_collections",
            "Garbage collections run by the tuned policy, by trigger (growth, idle, interval)",
            ["trigger"],
            {(t,): stats.gc_collections[t] for t in ("growth", "idle", "interval")},
        )
        yield _histogram(
            "feedstream_gc_pause_seconds",
            "How long each of those collections held the event loop",
            stats.gc_seconds,
        )
        subscriptions = GaugeMetricFamily(
            "feedstream_websub_subscriptions", "WebSub subscriptions, by state", labels=["state"]
        )
        for state, count in sorted(runtime.subscription_states().items()):
            subscriptions.add_metric([state], count)
        yield subscriptions


def _counter(
    name: str, documentation: str, labels: list[str], values: Mapping[_Labels, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=histogram.cumulative(), sum_value=histogram.sum
    )


def metrics_registry(runtime: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RuntimeCollector(runtime))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
