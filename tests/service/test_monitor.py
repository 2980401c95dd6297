"""The event-loop lag heartbeat."""

from __future__ import annotations

import time

import trio
import trio.testing

from feedstream.service.monitor import LagMonitor


async def test_no_lag_on_an_idle_loop(autojump_clock: trio.testing.MockClock) -> None:
    monitor = LagMonitor(period=0.1, window=50)
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    stats = monitor.stats()
    assert stats["samples"] == 50 and stats["max_ms"] == 0 and stats["p99_ms"] == 0


async def test_a_blocked_loop_shows_as_lag() -> None:
    monitor = LagMonitor(period=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(0.05)
        time.sleep(0.2)  # noqa: ASYNC251 - deliberately block the loop, as a parse on it would
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    stats = monitor.stats()
    assert stats["max_ms"] >= 150 and stats["worst_ms"] == stats["max_ms"]
    assert stats["p50_ms"] < 100  # one bad beat, the rest fine


def test_quantiles() -> None:
    monitor = LagMonitor()
    for lag in [0.001] * 98 + [0.05, 0.2]:
        monitor.record(lag)
    stats = monitor.stats()
    assert (stats["p50_ms"], stats["p99_ms"], stats["max_ms"]) == (1.0, 50.0, 200.0)
