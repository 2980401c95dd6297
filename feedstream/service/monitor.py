"""Event-loop lag: a heartbeat task that measures how late its own wake-ups are.

If anything blocks the trio loop (a parse that should have gone to a thread, a slow callback),
every task is late by the same amount, and so is this heartbeat. It wakes every ``period``
seconds on the drift-free grid of :class:`~feedstream.service.periodic.Periodic` and records
how far past the due time it woke (a stall longer than a period skips the missed beats).
"""

from __future__ import annotations

import math
from collections import deque

import trio

from feedstream.service.periodic import Periodic

__all__ = ["LagMonitor"]


class LagMonitor:
    def __init__(self, period: float = 0.1, window: int = 600) -> None:
        self.period = period
        self._samples: deque[float] = deque(maxlen=window)
        self.worst = 0.0

    def record(self, lag: float) -> None:
        self._samples.append(lag)
        self.worst = max(self.worst, lag)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        ticks = Periodic(self.period)
        task_status.started()
        async for tick in ticks:
            self.record(tick.lag)

    def stats(self) -> dict[str, float | int]:
        """Lag over the recent window in milliseconds: p50, p99, max; and the worst ever."""
        ordered = sorted(self._samples)

        def quantile(q: float) -> float:
            if not ordered:
                return 0.0
            return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

        return {
            "p50_ms": round(quantile(0.50) * 1000, 3),
            "p99_ms": round(quantile(0.99) * 1000, 3),
            "max_ms": round((ordered[-1] if ordered else 0.0) * 1000, 3),
            "worst_ms": round(self.worst * 1000, 3),
            "samples": len(ordered),
        }
