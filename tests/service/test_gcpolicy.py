"""The garbage-collector policy: the pacing rule on its own, then the trio task in virtual time."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from feedstream.service.gcpolicy import (
    BUSY_INTERVAL,
    CHECK_EVERY,
    GROWTH_FLOOR,
    INTERVAL,
    QUIET_LAG,
    Pacer,
    manage_gc,
)
from feedstream.service.stats import Stats
from tests.support.helpers import sample, scrape
from tests.support.servers import make_config, push_feed, running

# -- Pacer: pure -------------------------------------------------------------------------------


def test_growth_collects_busy_or_not() -> None:
    pacer = Pacer(500, 100.0, ratio=1.0, floor=1000, interval=60)
    assert pacer.budget == 1000
    assert pacer.due(1499, 100.0) is None
    assert pacer.due(1500, 100.5) == "growth"
    assert pacer.due(1500, 100.5, quiet=True) == "growth"
    assert pacer.due(200, 100.5, quiet=True) is None  # a shrinking heap is no reason


def test_a_quiet_loop_collects_at_half_the_budget() -> None:
    pacer = Pacer(500, 100.0, ratio=1.0, floor=1000, interval=60)
    assert pacer.due(999, 100.0, quiet=True) is None
    assert pacer.due(1000, 100.0, quiet=True) == "idle"
    assert pacer.due(1000, 100.0, quiet=False) is None


def test_interval_waits_for_quiet_but_not_forever() -> None:
    pacer = Pacer(500, 100.0, floor=1000, interval=60, busy_interval=300)
    assert pacer.due(501, 159.9, quiet=True) is None
    assert pacer.due(501, 160.0, quiet=True) == "interval"
    assert pacer.due(501, 160.0, quiet=False) is None
    assert pacer.due(501, 399.9, quiet=False) is None
    assert pacer.due(501, 400.0, quiet=False) == "interval"
    assert Pacer(0, 0.0).busy_interval == BUSY_INTERVAL > INTERVAL
    assert pacer.due(501, 10_000.0, allocated=False, quiet=True) is None  # nothing to find


def test_budget_follows_the_heap_the_last_collection_left() -> None:
    pacer = Pacer(0, 0.0, ratio=1.0, floor=1000, interval=60)
    pacer.collected(heap=50_000, now=5.0)
    assert pacer.budget == 50_000
    assert pacer.due(99_999, 6.0) is None
    assert pacer.due(100_000, 6.0) == "growth"
    assert pacer.due(50_001, 64.9, quiet=True) is None
    assert pacer.due(50_001, 65.0, quiet=True) == "interval"  # counted from 5.0
    pacer.collected(heap=10, now=70.0)
    assert pacer.budget == 1000  # the floor again once the heap is small
    half = Pacer(1001, 0.0, ratio=0.5, floor=1, interval=60)
    assert half.budget == 501  # rounded up: a ratio never makes it due earlier


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ratio": 0},
        {"ratio": -1.0},
        {"floor": 0},
        {"interval": 0},
        {"interval": -5},
        {"interval": 60, "busy_interval": 30},
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(0, 0.0, **kwargs)  # type: ignore[arg-type]


# -- manage_gc: the task -----------------------------------------------------------------------


class Node:
    """A container that can be weak-referenced, to watch a garbage cycle go."""

    def __init__(self) -> None:
        self.me = self


def garbage_cycle() -> weakref.ref[Node]:
    node = Node()
    return weakref.ref(node)  # *node* now only keeps itself alive


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """manage_gc changes process-wide state: put it back for the other tests."""
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


async def hog(clock: trio.testing.MockClock, start: float) -> None:
    """Be busy right when the gc task wakes: every one of its checks wakes late."""
    tick = 1
    while True:
        await trio.sleep_until(start + tick * CHECK_EVERY - 0.001)
        clock.jump(2 * QUIET_LAG)  # the virtual clock moves on while "we compute"
        tick += 1


def lists(count: int) -> list[list[int]]:
    """*count* new small tracked objects: one pymalloc block each."""
    return [[] for _ in range(count)]


@pytest.mark.usefixtures("restore_gc")
async def test_tuned_collects_on_growth_even_when_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stats = Stats()
    gc.enable()
    async with trio.open_nursery() as nursery:
        await nursery.start(manage_gc, "tuned", stats)
        nursery.start_soon(hog, autojump_clock, trio.current_time())
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        cycle = garbage_cycle()
        base = sys.getallocatedblocks()  # frozen start-up objects count too: the first budget
        keep = lists(base // 2 + 1000)  # a quiet loop would collect now, a busy one waits
        await trio.sleep(10 * CHECK_EVERY)
        assert cycle() is not None and not stats.gc_collections
        keep += lists(base // 2 + 1000)  # now the heap has doubled
        await trio.sleep(2 * CHECK_EVERY)
        assert cycle() is None, "the growth trigger should have collected the cycle"
        assert stats.gc_collections == {"growth": 1} and stats.gc_seconds.count == 1
        # The heap is about twice as big now, so the next collection waits for as much again.
        more = lists(base)
        await trio.sleep(10 * CHECK_EVERY)
        assert stats.gc_collections == {"growth": 1}
        more += lists(base + 2000)
        await trio.sleep(2 * CHECK_EVERY)
        assert stats.gc_collections == {"growth": 2}
        del keep, more
        await trio.sleep(BUSY_INTERVAL + INTERVAL)  # busy all along: garbage still goes
        assert stats.gc_collections == {"growth": 2, "interval": 1}
        nursery.cancel_scope.cancel()
    assert gc.isenabled(), "cancelling the task turns automatic collection back on"


@pytest.mark.usefixtures("restore_gc")
async def test_a_quiet_loop_collects_early_and_after_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stats = Stats()
    async with trio.open_nursery() as nursery:
        await nursery.start(manage_gc, "tuned", stats)
        started = trio.current_time()
        cycle = garbage_cycle()
        await trio.sleep(INTERVAL - 2 * CHECK_EVERY)
        assert cycle() is not None and not stats.gc_collections
        await trio.sleep(3 * CHECK_EVERY)
        assert cycle() is None and stats.gc_collections == {"interval": 1}
        assert trio.current_time() - started < INTERVAL + 2 * CHECK_EVERY
        cycle = garbage_cycle()
        keep = lists(sys.getallocatedblocks() // 2 + 1000)  # half the budget: enough when quiet
        await trio.sleep(3 * CHECK_EVERY)
        assert cycle() is None and stats.gc_collections == {"interval": 1, "idle": 1}
        del keep
        nursery.cancel_scope.cancel()


@pytest.mark.usefixtures("restore_gc")
async def test_a_loop_on_time_but_using_the_cpu_is_not_quiet(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A loaded loop still wakes a timer on time now and then (between two rounds of
    answers): the process's CPU time says it is busy all the same."""
    stats = Stats()
    busy = [True]

    def cpu_clock() -> float:  # a core's worth of CPU per second of the (virtual) clock
        return trio.current_time() if busy[0] else 0.0

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(manage_gc, "tuned", stats, cpu_clock=cpu_clock))
        cycle = garbage_cycle()
        await trio.sleep(INTERVAL + 4 * CHECK_EVERY)
        assert cycle() is not None and not stats.gc_collections, "busy: no interval yet"
        busy[0] = False
        await trio.sleep(4 * CHECK_EVERY)
        assert cycle() is None and stats.gc_collections == {"interval": 1}
        nursery.cancel_scope.cancel()


@pytest.mark.usefixtures("restore_gc")
async def test_off_never_collects_and_default_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gc.enable()
    before = gc.get_freeze_count()
    async with trio.open_nursery() as nursery:
        await nursery.start(manage_gc, "default")
        assert gc.isenabled() and gc.get_freeze_count() == before
        await nursery.start(manage_gc, "off")
        assert not gc.isenabled()
        cycle = garbage_cycle()
        junk = lists(2 * GROWTH_FLOOR)
        await trio.sleep(10 * INTERVAL)
        assert cycle() is not None, "off means nothing collects"
        del junk
        nursery.cancel_scope.cancel()
    assert gc.isenabled()
    gc.collect()
    assert cycle() is None


async def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown gc policy 'sometimes'"):
        await manage_gc("sometimes")


@pytest.mark.usefixtures("restore_gc")
@pytest.mark.parametrize("policy", ["tuned", "default"])
async def test_the_server_applies_its_configured_policy(tmp_path: Path, policy: str) -> None:
    gc.enable()
    config = make_config(tmp_path, push_feed("hooks"), gc=policy)
    async with running(config) as client:
        assert gc.isenabled() == (policy == "default")
        got = scrape((await client.get("/metrics")).text)
    assert gc.isenabled(), "a stopped server leaves the collector as it found it"
    for trigger in ("growth", "idle", "interval"):
        assert sample(got, "feedstream_gc_collections_total", trigger=trigger) >= 0
    assert sample(got, "feedstream_gc_pause_seconds_count") == sum(
        sample(got, "feedstream_gc_collections_total", trigger=t)
        for t in ("growth", "idle", "interval")
    )
