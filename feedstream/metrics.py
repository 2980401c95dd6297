"""``GET /metrics``: Prometheus text format, read from the runtime at scrape time.

Nothing is counted twice: a collector turns what the runtime already keeps (the lag monitor's
window, the parked-listener count, the log's per-feed counts, feed states) into metric families
when Prometheus asks. Each app has its own registry, so several servers in one process (tests)
never share series.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["CONTENT_TYPE", "metrics_registry", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _RuntimeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        lag = runtime.lag.stats()
        family = GaugeMetricFamily(
            "feedstream_event_loop_lag_seconds",
            "How late the event loop's heartbeat woke, over the last minute",
            labels=["quantile"],
        )
        for quantile, key in (("0.5", "p50_ms"), ("0.99", "p99_ms"), ("1", "max_ms")):
            family.add_metric([quantile], float(lag[key]) / 1000)
        yield family
        yield GaugeMetricFamily(
            "feedstream_waiting_listeners", "Long-polls and SSE streams parked now",
            value=runtime.waiting,
        )  # fmt: skip
        entries = CounterMetricFamily(
            "feedstream_entries", "Entries stored (new, deduplicated), by feed", labels=["feed"]
        )
        failures = GaugeMetricFamily(
            "feedstream_feed_failures", "Consecutive failed polls, by feed", labels=["feed"]
        )
        try:
            counts = runtime.log.counts()
        except RuntimeError:  # not running yet, or stopping
            counts = {}
        for feed in runtime.feeds_status():
            entries.add_metric([feed["id"]], counts.get(feed["id"], 0))
            failures.add_metric([feed["id"]], feed["failures"])
        yield entries
        yield failures


def metrics_registry(runtime: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RuntimeCollector(runtime))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
