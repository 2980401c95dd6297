"""``GET /metrics``: Prometheus text format, read from the runtime at scrape time.

The runtime keeps its figures in plain Python (:class:`Stats`: counters in dicts, a bucketed
:class:`Histogram`) because some are touched on the fan-out hot path, thousands of times per
entry, where a dict increment is all we can afford. A collector turns them, and what the runtime
already knows (the lag monitor's window, the log's per-feed counts, feed states, WebSub
subscriptions), into metric families when Prometheus asks. Each app has its own registry, so
several servers in one process (tests) never share series.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from feedstream.service.history import History
from feedstream.service.monitor import LagMonitor
from feedstream.service.stats import Histogram, Stats

__all__ = ["CONTENT_TYPE", "MetricsSource", "metrics_registry", "push_reason", "render"]


class MetricsSource(Protocol):
    """What the collector reads at scrape time."""

    @property
    def stats(self) -> Stats: ...

    @property
    def lag(self) -> LagMonitor: ...

    def feeds_status(self) -> list[dict[str, Any]]: ...

    def counts(self) -> dict[str, int]: ...

    def subscription_states(self) -> dict[str, int]: ...

    def hub_figures(self) -> tuple[dict[str, int], dict[str, int]] | None: ...

    @property
    def history(self) -> History | None: ...


_Labels = TypeVar("_Labels", bound=tuple[str, ...])

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: ``reason`` labels of ``feedstream_pushes_total`` for the webhook's refusals, by status.
_PUSH_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "push_disabled",
    404: "unknown_feed",
    413: "too_large",
    415: "media_type",
    422: "unparseable",
    503: "unavailable",
}


#: ``outcome`` labels of ``feedstream_hub_deliveries_total`` (listed at zero from the start).
HUB_OUTCOMES = ("ok", "error", "gone", "dropped")


def push_reason(status: int) -> str:
    return "accepted" if status < 300 else _PUSH_REASONS.get(status, f"http_{status}")


class _RuntimeCollector(Collector):
    def __init__(self, runtime: MetricsSource) -> None:
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
            "feedstream_push_duration_seconds",
            "Accepted webhook pushes, from the request until its acknowledgement is handed to "
            "the server (reading, parsing, storing)",
            stats.push_seconds,
        )
        yield _histogram(
            "feedstream_fanout_latency_seconds",
            "From an entry's commit until a waiting listener's answer is handed to the server",
            stats.fanout_seconds,
        )

        feeds = runtime.feeds_status()
        counts = runtime.counts()
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
        duplicates = {(feed, "same_id"): count for feed, count in stats.duplicates.items()}
        duplicates.update({(feed, "cross_feed"): n for feed, n in stats.folded.items()})
        yield _counter(
            "feedstream_duplicate_entries",
            "Duplicates since start, by feed and kind: same_id (offered again, not stored), "
            "cross_feed (another feed's story, stored with duplicate_of and not delivered)",
            ["feed", "kind"],
            duplicates,
        )
        yield _counter(
            "feedstream_rule_matches",
            "New entries matched by each [[rules]] rule since start, by rule and action",
            ["rule", "action"],
            stats.rule_matches,
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
        yield from _history_families(runtime.history)
        hub = runtime.hub_figures()
        if hub is not None:  # [hub] enabled, and it runs in this process
            states, deliveries = hub
            held = GaugeMetricFamily(
                "feedstream_hub_subscriptions",
                "Subscriptions to this server's own hub, by state (pending, active, failing)",
                labels=["state"],
            )
            for state, count in sorted(states.items()):
                held.add_metric([state], count)
            yield held
            outcomes = dict.fromkeys(HUB_OUTCOMES, 0) | deliveries
            yield _counter(
                "feedstream_hub_deliveries",
                "Content distributions to the hub's subscribers since start, by outcome: ok, "
                "error (to be retried, or failing), gone (a 410), dropped (its queue was full)",
                ["outcome"],
                {(outcome,): count for outcome, count in outcomes.items()},
            )


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


def _history_families(history: History | None) -> Iterator[Metric]:
    """The stored history (the SQLite log, or a Redis-log writer's copy): size, oldest entry,
    retention, searches."""
    if history is None:
        return
    figures = history.figures
    entries = history.entries()
    if figures is not None and entries is not None:
        yield GaugeMetricFamily(
            "feedstream_history_entries",
            "Entries stored now (the retained, searchable history)",
            value=entries,
        )
        if figures.oldest_at is not None:
            yield GaugeMetricFamily(
                "feedstream_history_oldest_timestamp_seconds",
                "When the oldest stored entry was stored (Unix time)",
                value=figures.oldest_at,
            )
        yield GaugeMetricFamily(
            "feedstream_database_bytes",
            "Size of the log's SQLite database (its pages, free ones included)",
            value=figures.database_bytes,
        )
        yield GaugeMetricFamily(
            "feedstream_database_free_bytes",
            "Free pages of the log's database, not yet given back by incremental vacuum",
            value=figures.free_bytes,
        )
    yield CounterMetricFamily(
        "feedstream_retention_deleted_entries",
        "Entries deleted by retention (retain_days, retain_entries) since start",
        value=history.deleted_total,
    )
    if history.last_pass is not None:
        yield GaugeMetricFamily(
            "feedstream_retention_pass_seconds",
            "How long the last retention pass took",
            value=history.last_pass.seconds,
        )
    yield _counter(
        "feedstream_searches",
        "History searches (GET /api/search) since start, by outcome (ok, timeout)",
        ["outcome"],
        {(outcome,): count for outcome, count in history.searches.items()},
    )


def metrics_registry(runtime: MetricsSource) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RuntimeCollector(runtime))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
