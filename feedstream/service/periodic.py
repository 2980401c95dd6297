"""A drift-free periodic loop for trio: ``async for tick in Periodic(period): ...``.

Ticks fall on a grid computed from the start, ``start + n * period``, never on "last wake-up
plus period": waking a little late does not push every later tick back (no drift), and the
lateness of each wake-up (:attr:`Tick.lag`) is exactly what the event-loop lag monitor wants
to measure. When the loop body (or a blocked event loop) overruns, the grid points that have
already passed are skipped, not run back to back: the next tick is the first grid point at or
after the moment the body handed control back.

The shape follows ``periodic`` of groove-x/trio-util, which yields (elapsed, delta) and
sleeps ``period`` after each wake-up; this one keeps to the start's grid instead, and is a
plain iterator class rather than an async generator, so that a cancelled loop leaves no
generator to finalize.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import trio

logger = logging.getLogger(__name__)

__all__ = ["Periodic", "Tick"]


@dataclass(frozen=True, slots=True)
class Tick:
    """One wake-up: the grid time it was due (``trio.current_time()`` clock) and when it came."""

    index: int  # n of the grid point start + n * period (1 for the first)
    due: float
    woke: float

    @property
    def lag(self) -> float:
        """How late the wake-up was, in seconds (0 on an idle loop)."""
        return self.woke - self.due


class Periodic:
    """Iterate to wake at ``start + n * period`` (n = 1, 2, ...), skipping missed grid points.

    *start* defaults to ``trio.current_time()`` when the object is made, so the first tick
    comes one *period* after it. Iterate it once, from one task.
    """

    def __init__(self, period: float, *, start: float | None = None) -> None:
        if not (period > 0 and math.isfinite(period)):
            raise ValueError(f"period must be a positive number of seconds, not {period!r}")
        self.period = period
        self.start = trio.current_time() if start is None else start
        self._index = 0

    def due(self, index: int) -> float:
        """The clock time of grid point *index*."""
        return self.start + index * self.period

    def __aiter__(self) -> Periodic:
        return self

    async def __anext__(self) -> Tick:
        index = self._index + 1
        now = trio.current_time()
        if self.due(index) < now:  # overran: skip to the first grid point not yet past
            index = max(index, math.ceil((now - self.start) / self.period))
            while self.due(index) < now:  # float rounding in the division
                index += 1
        self._index = index
        due = self.due(index)
        await trio.sleep_until(due)
        return Tick(index, due, trio.current_time())
