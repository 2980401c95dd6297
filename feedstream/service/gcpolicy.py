"""The garbage-collector policy of a server that keeps thousands of long-polls parked.

CPython frees almost everything by reference counting; its cyclic collector is only for
reference cycles. Its generational trigger assumes that most objects die young, which a parked
long-poll defeats: every object of a waiting request (task, coroutine frames, scope, h11 state)
lives for seconds, survives the young collections and is walked again at every one of them. In
``bench/fanout.py`` (10,000 listeners, 10 entries/s) the automatic collector took about 40 % of
the server's CPU even with raised thresholds, while finding only a few thousand cyclic objects a
minute.

So the ``tuned`` policy (the default, ``server.gc``) paces collections itself, the way Go's
collector does with ``GOGC=100``, and prefers quiet moments:

- once start-up is done, one collection, then ``gc.freeze()``: modules, config and app leave
  the collector's sight for good; automatic collection is turned off;
- a trio task looks at the heap every :data:`CHECK_EVERY` seconds. The heap is
  ``sys.getallocatedblocks()``, Python's own count of its small-object blocks (cheap, exact, no
  drift), and its *budget* is as many blocks as the previous collection left, at least
  :data:`GROWTH_FLOOR`. It collects in full
  - for ``growth`` when the heap grew by the budget, busy or not: memory at most doubles;
  - for ``idle`` when the loop is quiet (the task's last two wake-ups were on time, within
    :data:`QUIET_LAG`, and the process used less than :data:`QUIET_CPU` of a core since the
    last look) and the heap grew by half the budget, so that the pause falls where
    nobody waits for an answer;
  - for ``interval`` when any container was allocated since the previous collection and
    :data:`INTERVAL` seconds have passed with the loop quiet, or :data:`BUSY_INTERVAL` in any
    case: garbage cycles do not linger.

At 10,000 parked listeners one collection holds the loop for 0.5-0.8 s; the automatic collector
spent that every second or two. Under steady load the heap hardly grows (reference counting
frees nearly everything), so a busy server collects for ``growth`` when it really accumulates,
and otherwise every :data:`BUSY_INTERVAL`: every entry published within a round of a pause
is late by the pause, so a pause every 2 minutes was in the delivery p99 of a loaded server
(about 2 % of entries), one every 10 minutes is below it; what it leaves is cyclic garbage
(a few thousand objects a minute at 10,000 listeners) within the growth budget.
:class:`Pacer` is the decision, a pure object tested on its own; :func:`manage_gc` is the thin
trio shell around it.

``default`` leaves Python's collector as it is; ``off`` freezes and disables it with nothing
collecting afterwards (cyclic garbage leaks: for measurements only).
"""

from __future__ import annotations

import gc
import logging
import math
import sys
import time
from collections.abc import Callable

import trio

from feedstream.core.config import GC_POLICIES
from feedstream.service.periodic import Periodic
from feedstream.service.stats import Stats

logger = logging.getLogger(__name__)

__all__ = [
    "BUSY_INTERVAL", "CHECK_EVERY", "GROWTH_FLOOR", "INTERVAL", "POLICIES", "QUIET_CPU",
    "QUIET_LAG", "Pacer", "manage_gc",
]  # fmt: skip

POLICIES = GC_POLICIES

#: Collect when the heap grew by at least this many blocks since the last collection (and by as
#: many as it held after it): about 13 MB of small objects.
GROWTH_FLOOR = 200_000
#: Seconds after which garbage cycles are collected even when the heap barely grew, when the
#: loop is quiet...
INTERVAL = 60.0
#: ... and when it never is (a pause then falls on listeners waiting for an answer).
BUSY_INTERVAL = 600.0
#: How often (seconds) the task looks at the heap size: a walk over Python's arenas, ~0.2 ms.
CHECK_EVERY = 0.5
#: A wake-up at most this late (seconds) means the event loop had nothing else to do.
QUIET_LAG = 0.005
#: ... and a process that used less than this share of a core since the last look is quiet. A
#: loop at full load still wakes a timer on time now and then (between two rounds of answers),
#: so lag alone let a collection fall in the middle of a busy minute.
QUIET_CPU = 0.5


class Pacer:
    """When to collect, from the heap size, the clock and whether the loop is quiet.

    No I/O and no ``gc`` calls: the shell passes *heap* (blocks), *now*, whether anything was
    *allocated* since the last collection and whether the loop is *quiet*; see the module
    docstring for the rules.
    """

    def __init__(
        self,
        heap: int,
        now: float,
        *,
        ratio: float = 1.0,
        floor: int = GROWTH_FLOOR,
        interval: float = INTERVAL,
        busy_interval: float = BUSY_INTERVAL,
    ) -> None:
        if ratio <= 0 or floor < 1 or not 0 < interval <= busy_interval:
            raise ValueError(
                "ratio and intervals must be positive, floor at least 1, and the busy interval "
                "no shorter than the quiet one"
            )
        self.ratio, self.floor = ratio, floor
        self.interval, self.busy_interval = interval, busy_interval
        self.base, self.last = heap, now

    @property
    def budget(self) -> int:
        """How much the heap may grow before a collection is due, busy or not."""
        return max(self.floor, math.ceil(self.ratio * self.base))

    def due(
        self, heap: int, now: float, *, allocated: bool = True, quiet: bool = False
    ) -> str | None:
        """``"growth"``, ``"idle"``, ``"interval"`` or ``None``."""
        grown, waited = heap - self.base, now - self.last
        if grown >= self.budget:
            return "growth"
        if quiet and 2 * grown >= self.budget:
            return "idle"
        if allocated and waited >= (self.interval if quiet else self.busy_interval):
            return "interval"
        return None

    def collected(self, heap: int, now: float) -> None:
        """A collection finished at *now* and left the heap at *heap* blocks."""
        self.base, self.last = heap, now


def _collect(pacer: Pacer, reason: str, stats: Stats | None) -> None:
    started = time.perf_counter()
    found = gc.collect()
    took = time.perf_counter() - started
    heap = sys.getallocatedblocks()
    pacer.collected(heap, trio.current_time())
    if stats is not None:
        stats.gc_collections[reason] += 1
        stats.gc_seconds.observe(took)
    logger.debug("gc (%s): %d unreachable, heap %d blocks, %.1f ms", reason, found, heap,
                 took * 1e3)  # fmt: skip


async def manage_gc(
    policy: str,
    stats: Stats | None = None,
    *,
    check_every: float = CHECK_EVERY,
    cpu_clock: Callable[[], float] = time.process_time,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Apply *policy* (one of :data:`POLICIES`) and, for ``tuned``, collect until cancelled.

    *cpu_clock* is the process's CPU time in seconds (what tells a busy loop from a quiet one).

    Start it with ``nursery.start`` once start-up is done (so that ``gc.freeze()`` takes the
    start-up objects). When cancelled it turns automatic collection back on if it was on before
    (tests run many servers in one process) and re-raises.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown gc policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if policy == "default":
        task_status.started()
        return
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    logger.debug("gc policy %s: %d objects frozen", policy, gc.get_freeze_count())
    try:
        if policy == "off":
            task_status.started()
            await trio.sleep_forever()
        pacer = Pacer(sys.getallocatedblocks(), trio.current_time())
        task_status.started()
        on_time = False
        last_woke, last_cpu = trio.current_time(), cpu_clock()
        # Drift-free; after a long stall (a collection, a busy loop) the missed checks are
        # skipped, not run back to back.
        async for tick in Periodic(check_every):
            woke, cpu = tick.woke, cpu_clock()
            idle = cpu - last_cpu < QUIET_CPU * (woke - last_woke)
            last_woke, last_cpu = woke, cpu
            quiet, on_time = on_time and idle and tick.lag <= QUIET_LAG, tick.lag <= QUIET_LAG
            allocated = gc.get_count()[0] > 0  # container objects, net, since the last collection
            heap = sys.getallocatedblocks()
            reason = pacer.due(heap, woke, allocated=allocated, quiet=quiet)
            if reason is not None:
                _collect(pacer, reason, stats)
                on_time = False  # the collection itself was not the loop being quiet
                last_woke, last_cpu = trio.current_time(), cpu_clock()
    finally:
        if was_enabled:
            gc.enable()
