"""The drift-free periodic loop, on trio's virtual clock."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from feedstream.service.periodic import Periodic, Tick


async def test_ticks_fall_on_the_grid_from_the_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    ticks: list[Tick] = []
    async for tick in Periodic(0.1):
        ticks.append(tick)
        if len(ticks) == 50:
            break
    assert [t.index for t in ticks] == list(range(1, 51))
    assert all(t.due == start + t.index * 0.1 for t in ticks)
    assert all(t.lag == 0 for t in ticks)
    # No drift: the 50th tick is 50 periods from the start, not 50 additions of 0.1.
    assert trio.current_time() == start + 50 * 0.1


async def test_a_short_body_does_not_delay_the_next_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    wakes: list[float] = []
    async for tick in Periodic(1.0):
        wakes.append(tick.woke - start)
        await trio.sleep(0.3)  # work that takes less than a period
        if len(wakes) == 4:
            break
    assert wakes == [1.0, 2.0, 3.0, 4.0]


async def test_an_overrun_skips_the_missed_ticks(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    ticks: list[Tick] = []
    async for tick in Periodic(1.0):
        ticks.append(tick)
        if tick.index == 2:
            await trio.sleep(3.5)  # overrun: grid points 3, 4 and 5 pass meanwhile
        if len(ticks) == 4:
            break
    assert [t.index for t in ticks] == [1, 2, 6, 7]
    assert [t.woke - start for t in ticks] == [1.0, 2.0, 6.0, 7.0]
    assert all(t.lag == 0 for t in ticks)


async def test_a_body_ending_on_a_grid_point_takes_that_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticks: list[int] = []
    async for tick in Periodic(1.0):
        ticks.append(tick.index)
        if tick.index == 1:
            await trio.sleep(2.0)  # ends exactly at grid point 3: it is due now, not missed
        if len(ticks) == 3:
            break
    assert ticks == [1, 3, 4]


async def test_a_blocked_loop_shows_as_lag(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()

    async def hog() -> None:  # at 1.5 s, hold the loop for 1.25 s without a checkpoint
        await trio.sleep_until(start + 1.5)
        autojump_clock.jump(1.25)

    ticks: list[Tick] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hog)
        async for tick in Periodic(1.0):
            ticks.append(tick)
            if len(ticks) == 3:
                break
    assert [t.index for t in ticks] == [1, 2, 3]
    assert [t.lag for t in ticks] == [0, pytest.approx(0.75), 0]


async def test_an_explicit_start(autojump_clock: trio.testing.MockClock) -> None:
    now = trio.current_time()
    periodic = Periodic(2.0, start=now - 5.0)  # grid: now-3, now-1, now+1, ...
    tick = await periodic.__anext__()
    assert tick.index == 3 and tick.due == now - 5.0 + 6.0


@pytest.mark.parametrize("period", [0.0, -1.0, math.inf, math.nan])
async def test_nonsense_periods_are_refused(period: float) -> None:
    with pytest.raises(ValueError, match="period"):
        Periodic(period)
