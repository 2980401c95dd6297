"""The SQLite log backend and the broadcaster above it: cursors, dedup, filters, waiting,
rounds, restarts (over a real SQLite store)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from feedstream.log import broadcast
from feedstream.log.base import Page
from feedstream.log.broadcast import Broadcaster
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import Store
from feedstream.log.wire import entries_body
from tests.support.helpers import entry, inline


class Harness(Broadcaster):
    """A broadcaster over a SQLite log, with the log's append at hand."""

    def __init__(self, log: SQLiteLog, *, coalesce: float = 0.0) -> None:
        super().__init__(log, coalesce=coalesce)
        self.append = log.append


def coalescing_log(path: Path) -> Harness:
    """A broadcaster whose run() task coalesces appends over 5 ms and paces rounds (virtual
    time)."""
    store = Store(path / "db.sqlite3")
    log = SQLiteLog(store, store.snapshot(10), backlog=10, offload=inline)
    return Harness(log, coalesce=0.005)


def open_log(path: Path, backlog: int = 100) -> Harness:
    store = Store(path / "db.sqlite3")
    snapshot = store.snapshot(backlog)
    return Harness(SQLiteLog(store, snapshot, backlog=backlog, offload=inline, clock=lambda: 0.0))


def titles(page: Page) -> list[str]:
    return [json.loads(e.json)["title"] for e in page.entries]


async def test_append_assigns_cursors_and_reads_after(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    start = log.cursor
    new = await log.append([entry("a", "one"), entry("a", "two")])
    assert [e["title"] for e in new] == ["one", "two"]
    assert new[0]["cursor"] != new[1]["cursor"]
    assert new[0]["received"] == "1970-01-01T00:00:00Z"
    page = log.read(start, feeds=None, limit=50)
    assert titles(page) == ["one", "two"] and page.cursor == new[1]["cursor"] and not page.reset
    page = log.read(new[0]["cursor"], feeds=None, limit=50)
    assert titles(page) == ["two"]
    assert log.read(new[1]["cursor"], feeds=None, limit=50).entries == ()


async def test_duplicates_are_not_stored_twice(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    assert len(await log.append([entry("a", "x"), entry("a", "x")])) == 1
    assert await log.append([entry("a", "x", title="changed")]) == []
    assert log.counts() == {"a": 1}


async def test_no_after_gives_newest_oldest_first(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    await log.append([entry("a", str(i)) for i in range(10)])
    page = log.read(None, feeds=None, limit=3)
    assert titles(page) == ["7", "8", "9"] and page.cursor == log.cursor


async def test_limit_pages_through(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    start = log.cursor
    await log.append([entry("a", str(i)) for i in range(5)])
    first = log.read(start, feeds=None, limit=2)
    second = log.read(first.cursor, feeds=None, limit=2)
    third = log.read(second.cursor, feeds=None, limit=2)
    assert titles(first) + titles(second) + titles(third) == ["0", "1", "2", "3", "4"]
    assert third.cursor == log.cursor


async def test_filter_skips_other_feeds_and_advances(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    start = log.cursor
    await log.append([entry("a", "a1"), entry("b", "b1"), entry("a", "a2"), entry("b", "b2")])
    page = log.read(start, feeds={"a"}, limit=50)
    assert titles(page) == ["a1", "a2"]
    assert page.cursor == log.cursor  # the b entries after a2 were looked at too
    page = log.read(start, feeds={"b"}, limit=1)
    assert titles(page) == ["b1"]
    assert titles(log.read(page.cursor, feeds={"b"}, limit=1)) == ["b2"]


async def test_reset_for_foreign_old_and_future_cursors(tmp_path: Path) -> None:
    log = open_log(tmp_path, backlog=3)
    start = log.cursor
    new = await log.append([entry("a", str(i)) for i in range(6)])
    old = log.read(start, feeds=None, limit=50)
    assert old.reset and titles(old) == ["3", "4", "5"]
    for foreign in ("garbage", "ffffffff-1", log.cursor.rsplit("-", 1)[0] + "-99"):
        page = log.read(foreign, feeds=None, limit=2)
        assert page.reset and titles(page) == ["4", "5"] and page.cursor == log.cursor
    # Right before the oldest entry still held is fine; one further back is a reset.
    assert titles(log.read(new[2]["cursor"], feeds=None, limit=50)) == ["3", "4", "5"]
    assert log.read(new[1]["cursor"], feeds=None, limit=50).reset


async def test_wait_wakes_on_append_and_respects_filter(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    cursor = log.cursor
    woke_at: list[float] = []

    async def listener() -> None:
        await log.wait(cursor, feeds={"b"})
        woke_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener)
        await trio.testing.wait_all_tasks_blocked()
        await log.append([entry("a", "not for b")])
        await trio.testing.wait_all_tasks_blocked()
        assert woke_at == []
        await log.append([entry("b", "for b")])
    assert len(woke_at) == 1
    assert titles(log.read(cursor, feeds={"b"}, limit=50)) == ["for b"]


async def test_close_releases_waiters(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(log.wait, log.cursor, feeds=None))
            await trio.testing.wait_all_tasks_blocked()
            log.close()
    await log.wait(log.cursor, feeds=None)  # closed: returns at once


async def test_restart_keeps_cursors_and_dedup(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    await log.append([entry("a", "one"), entry("a", "two")])
    middle = log.read(None, feeds=None, limit=2).entries[0]
    cursor = json.loads(middle.json)["cursor"]
    reopened = open_log(tmp_path)
    assert reopened.cursor == log.cursor
    assert titles(reopened.read(cursor, feeds=None, limit=50)) == ["two"]
    assert await reopened.append([entry("a", "two"), entry("a", "three")]) != []
    assert titles(reopened.read(cursor, feeds=None, limit=50)) == ["two", "three"]


async def test_the_ring_holds_the_backlog_and_the_store_the_history(tmp_path: Path) -> None:
    log = open_log(tmp_path, backlog=4)
    first = log.cursor
    await log.append([entry("a", str(i)) for i in range(20)])
    assert titles(log.read(None, feeds=None, limit=50)) == ["16", "17", "18", "19"]
    assert log.read(first, feeds=None, limit=50).reset  # older than the ring: a reset
    store = Store(tmp_path / "db.sqlite3")
    assert len(store.recent(100)) == 20  # the history keeps every entry's JSON
    assert await log.append([entry("a", "0")]) == []  # long gone from the ring, still deduped


def test_page_json_is_valid() -> None:
    page = Page("abc-1", (), reset=True)
    assert json.loads(entries_body(page)) == {"cursor": "abc-1", "entries": [], "reset": True}


@pytest.mark.parametrize("backlog", [1, 2, 5])
async def test_ring_stays_consistent_over_many_appends(tmp_path: Path, backlog: int) -> None:
    log = open_log(tmp_path, backlog=backlog)
    cursors = []
    for i in range(30):
        cursors.append((await log.append([entry("a", str(i))]))[0]["cursor"])
        assert titles(log.read(None, feeds=None, limit=backlog))[-1] == str(i)
    # The cursor just before the newest `backlog` entries is still good, one older is a reset.
    assert not log.read(cursors[-backlog - 1], feeds=None, limit=50).reset
    assert log.read(cursors[-backlog - 2], feeds=None, limit=50).reset


async def test_a_burst_reaches_a_listener_in_one_answer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    log = coalescing_log(tmp_path)
    cursor = log.cursor
    answers: list[Page] = []

    async def listener() -> None:
        await log.wait(cursor, feeds=None)
        answers.append(log.read(cursor, feeds=None, limit=50))

    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        nursery.start_soon(listener)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await log.append([entry("a", "first")])
        assert trio.current_time() == start  # the appender never waits for the window
        await trio.sleep(0.002)
        assert answers == []  # the first entry of the burst waits for the window
        await log.append([entry("a", "second")])  # rides along
        await trio.sleep(0.01)
        assert [titles(page) for page in answers] == [["first", "second"]]
        nursery.cancel_scope.cancel()


async def test_listeners_asking_the_same_share_one_serialized_page(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    cursor = log.cursor
    await log.append([entry("a", "x")])
    first = log.read(cursor, feeds={"a"}, limit=50)
    assert log.read(cursor, feeds=["a"], limit=50) is first
    assert entries_body(first) is entries_body(first)
    await log.append([entry("a", "y")])
    assert log.read(cursor, feeds={"a"}, limit=50) is not first  # a new head, a new answer


async def test_appends_arriving_during_a_commit_share_the_next_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    trips: list[int] = []
    release = trio.Event()

    async def offload(fn: Callable[..., Any], *args: Any) -> Any:
        if fn == store.insert_new:
            trips.append(len(args[0]))
            if len(trips) == 1:
                await release.wait()  # the first transaction takes its time
        return fn(*args)

    log = Harness(SQLiteLog(store, store.snapshot(10), backlog=10, offload=offload))
    results: dict[str, list[str]] = {}

    async def append(name: str, *keys: str) -> None:
        results[name] = [e["title"] for e in await log.append([entry("a", k) for k in keys])]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(append, "first", "1")
        await trio.testing.wait_all_tasks_blocked()
        for name, keys in (("x", ("2", "3")), ("y", ("3", "4")), ("z", ("1",))):
            nursery.start_soon(append, name, *keys)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert trips == [1, 5]  # one transaction for the three that came while the first ran
    assert results["first"] == ["1"] and results["z"] == []  # already stored
    assert sorted(results["x"] + results["y"]) == ["2", "3", "4"]  # "3" counts for one of them
    stored = titles(log.read(None, feeds=None, limit=10))
    assert stored[0] == "1" and sorted(stored) == ["1", "2", "3", "4"]  # x, y in either order


async def test_listeners_see_entries_in_rounds_and_fresh_reads_see_them_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    log = coalescing_log(tmp_path)
    start = log.cursor
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        await log.append([entry("a", "one")])
        # Committed, not yet published: a waiting listener's view has nothing yet...
        assert log.read(start, feeds=None, limit=10).entries == ()
        # ...while a client that will not wait sees it, and its cursor stays good.
        fresh = log.read(start, feeds=None, limit=10, fresh=True)
        assert titles(fresh) == ["one"]
        ahead = log.read(fresh.cursor, feeds=None, limit=10)
        assert (ahead.cursor, ahead.entries, ahead.reset) == (fresh.cursor, (), False)
        await trio.sleep(0.006)
        assert titles(log.read(start, feeds=None, limit=10)) == ["one"]
        assert log.cursor == fresh.cursor
        nursery.cancel_scope.cancel()


async def test_the_next_round_waits_until_the_answered_came_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    log = coalescing_log(tmp_path)
    woken: dict[str, list[float]] = {"slow": [], "fast": []}

    async def listener(name: str, delay: float) -> None:
        cursor = log.cursor
        for _ in range(2):
            await log.wait(cursor, feeds=None)
            woken[name].append(trio.current_time())
            cursor = log.read(cursor, feeds=None, limit=10).cursor
            log.answered()
            await trio.sleep(delay)  # the client's way back

    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        nursery.start_soon(listener, "slow", 0.04)
        nursery.start_soon(listener, "fast", 0.0)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await log.append([entry("a", "one")])
        await trio.sleep(0.02)
        await log.append([entry("a", "two")])  # while the slow one is still away
        with trio.fail_after(5):
            while len(woken["fast"]) < 2 or len(woken["slow"]) < 2:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert woken["fast"][0] - start == pytest.approx(0.005, abs=0.001)
    # The second round waited for the slow listener (back at 0.045 s), not just the window
    # (0.025 s): a listener that keeps coming back is not taken for a closed page.
    second = woken["fast"][1] - start
    assert 0.045 <= second <= 0.055


async def test_a_listener_that_never_comes_back_holds_the_next_round_only_briefly(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    log = coalescing_log(tmp_path)
    cursor = log.cursor
    seen: list[float] = []

    async def gone() -> None:  # a page closed mid-poll: answered, never asks again
        await log.wait(cursor, feeds=None)
        log.answered()

    async def other() -> None:  # only interested in the second entry's feed
        await log.wait(cursor, feeds={"b"})
        seen.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        nursery.start_soon(gone)
        nursery.start_soon(other)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await log.append([entry("a", "one")])
        await trio.sleep(0.01)
        await log.append([entry("b", "two")])
        with trio.fail_after(5):
            while not seen:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert seen[0] - start < 0.1  # not PACE_LIMIT (10 s) later


async def test_streams_and_long_polls_wake_in_groups(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("feedstream.log.broadcast.WAKE_GROUP", 2)
    monkeypatch.setattr("feedstream.log.broadcast.ANSWER_GROUP", 3)
    log = coalescing_log(tmp_path)
    passes = 0  # scheduler passes, counted by a task that checkpoints in every one
    woke: dict[str, list[int]] = {"stream": [], "poll": []}

    async def count_passes() -> None:
        nonlocal passes
        await trio.sleep(0.005)  # wakes with the log's publishing task: same deadline
        for _ in range(50):  # then a bounded number: virtual time cannot move meanwhile
            await trio.lowlevel.checkpoint()
            passes += 1

    async def waiter(kind: str) -> None:
        await log.wait(log.cursor, feeds=None, streaming=kind == "stream")
        woke[kind].append(passes)

    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        for kind in ["stream"] * 10 + ["poll"] * 9:
            nursery.start_soon(waiter, kind)
        await trio.testing.wait_all_tasks_blocked()
        await log.append([entry("a", "one")])  # starts the 5 ms window
        nursery.start_soon(count_passes)
        with trio.fail_after(5):
            while len(woke["stream"]) < 10 or len(woke["poll"]) < 9:  # noqa: ASYNC110
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    # A task sees the count before or after the counter's turn in its pass (trio shuffles
    # each pass), so each figure is its pass's number or one less.
    for kind, group, passes_ in (("poll", 3, 3), ("stream", 2, 5)):
        assert max(woke[kind]) - min(woke[kind]) >= passes_ - 2, woke  # several passes...
        assert max(woke[kind].count(p) for p in woke[kind]) <= 2 * group, woke  # ...in groups
    assert max(woke["poll"]) <= min(woke["stream"]) + 1, woke  # long-polls first


class Listener:
    """A long-poll as the delivery endpoint runs it: wait, read, answer, then the gate."""

    def __init__(self, log: Harness, name: str, record: list[tuple[str, str]]) -> None:
        self.log, self.name, self.record = log, name, record
        self.cursor = log.cursor
        self.pages: list[list[str]] = []

    async def poll(self, times: int, on_answer: Callable[[], Any] | None = None) -> None:
        for _ in range(times):
            await self.log.wait(self.cursor, feeds=None)
            page = self.log.read(self.cursor, feeds=None, limit=50)
            self.cursor = page.cursor
            self.pages.append(titles(page))
            self.record.append(("answer", self.name))
            self.log.answered()
            if on_answer is not None:
                await on_answer()
            await self.log.hold()
            self.record.append(("back", self.name))


async def test_a_round_answers_everyone_before_anyone_comes_back_in_the_same_order(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long-polls are answered oldest first, a group per pass; each then waits at the gate
    until the whole round is answered, and comes back in the order it was answered: the
    order listeners park in, and so their places in the next round, stay the same."""
    monkeypatch.setattr("feedstream.log.broadcast.ANSWER_GROUP", 2)
    log = coalescing_log(tmp_path)
    record: list[tuple[str, str]] = []
    listeners = [Listener(log, str(i), record) for i in range(7)]
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        for listener in listeners:
            nursery.start_soon(listener.poll, 2)
            await trio.testing.wait_all_tasks_blocked()  # park in this order
        await log.append([entry("a", "one")])
        await trio.sleep(1)
        await log.append([entry("a", "two")])
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    names = [listener.name for listener in listeners]
    first, second = record[:14], record[14:]
    for round_ in (first, second):
        assert [kind for kind, _ in round_] == ["answer"] * 7 + ["back"] * 7, round_
        for kind in ("answer", "back"):  # in groups of two, oldest first (any order within)
            order = [name for k, name in round_ if k == kind]
            assert [sorted(order[i : i + 2]) for i in range(0, 7, 2)] == [
                names[i : i + 2] for i in range(0, 7, 2)
            ], round_
    assert all(listener.pages == [["one"], ["two"]] for listener in listeners)


async def test_later_groups_of_a_round_see_entries_committed_meanwhile(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry committed while a round is under way reaches the listeners the round answers
    after the commit; those answered before get it in the next round (not at once: rounds stay
    paced), and nobody gets it twice."""
    monkeypatch.setattr("feedstream.log.broadcast.ANSWER_GROUP", 1)
    log = coalescing_log(tmp_path)
    record: list[tuple[str, str]] = []
    listeners = [Listener(log, str(i), record) for i in range(8)]
    committed: list[int] = []  # how many answers had been read when the head moved to "two"
    heads: list[str] = []

    def moved() -> None:  # a watcher of the log's own, called right after the broadcaster's
        heads.append(log.log.head)
        if len(heads) == 2:
            committed.append(sum(kind == "answer" for kind, _ in record))

    log.log.watch(moved)

    async def commit_during_the_round() -> None:
        if len(heads) == 1:  # the round's first answer commits an entry
            await log.append([entry("a", "two")])

    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        nursery.start_soon(listeners[0].poll, 2, commit_during_the_round)
        await trio.testing.wait_all_tasks_blocked()
        for listener in listeners[1:]:
            nursery.start_soon(listener.poll, 2)
            await trio.testing.wait_all_tasks_blocked()
        await log.append([entry("a", "one")])
        with trio.fail_after(5):
            while any(len(listener.pages) < 1 for listener in listeners):  # noqa: ASYNC110
                await trio.sleep(0.001)
            await trio.sleep(1)  # a second round, if any
        nursery.cancel_scope.cancel()
    answered_before = committed[0]  # one group per pass: answers are read in park order
    assert 1 <= answered_before < len(listeners) - 1  # the commit took a few passes at most
    for i, listener in enumerate(listeners):
        if i < answered_before:  # answered before the commit: "two" in the next round
            assert listener.pages == [["one"], ["two"]], (i, answered_before, listener.pages)
        else:
            assert listener.pages == [["one", "two"]], (i, answered_before, listener.pages)


async def test_the_gate_does_not_raise_cancelled(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hold() is where the connection loop would otherwise take a shielded yield: a
    cancellation arriving meanwhile waits for the listener's next checkpoint."""
    monkeypatch.setattr("feedstream.log.broadcast.ANSWER_GROUP", 1)
    log = coalescing_log(tmp_path)
    returned: list[str] = []

    async def cancelled_at_the_gate() -> None:
        with trio.CancelScope() as scope:
            await log.wait(log.cursor, feeds=None)
            scope.cancel()
            await log.hold()
            returned.append("hold")
            await trio.lowlevel.checkpoint()
            returned.append("not reached")

    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        for _ in range(3):
            nursery.start_soon(cancelled_at_the_gate)
        await trio.testing.wait_all_tasks_blocked()
        await log.append([entry("a", "one")])
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert returned == ["hold"] * 3


async def test_closing_mid_round_lets_everyone_through(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("feedstream.log.broadcast.ANSWER_GROUP", 1)
    log = coalescing_log(tmp_path)
    record: list[tuple[str, str]] = []
    listeners = [Listener(log, str(i), record) for i in range(4)]

    async def close() -> None:
        log.close()  # the server shutting down while the round is under way

    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        nursery.start_soon(listeners[0].poll, 1)
        nursery.start_soon(listeners[1].poll, 1, close)
        for listener in listeners[2:]:
            nursery.start_soon(listener.poll, 1)
        await trio.testing.wait_all_tasks_blocked()
        await log.append([entry("a", "one")])
        with trio.fail_after(1):
            while sum(kind == "back" for kind, _ in record) < 4:  # noqa: ASYNC110
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()


# -- long-poll deadlines, kept by the broadcaster ------------------------------------------------


async def timed_wait(log: Harness, seconds: float, out: list[tuple[bool, float]]) -> None:
    """A long-poll's wait as the delivery endpoint runs it, until now + *seconds*."""
    started, cursor = trio.current_time(), log.cursor
    deadline = started + seconds
    woken = True
    while woken and not log.ready(cursor, feeds=None):
        woken = await log.changed_by(deadline)
    out.append((woken, trio.current_time() - started))


@pytest.mark.parametrize("running", [True, False])
async def test_a_long_poll_ends_at_its_deadline_and_leaves_nothing_behind(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, running: bool
) -> None:
    """Deadlines of 3, 1 and 2 s (the shorter ones parked later: the sweep moves earlier);
    each wait ends False at its deadline, at most a TICK late. Without run(), a cancel scope
    keeps the deadline instead."""
    log = coalescing_log(tmp_path)
    out: list[tuple[bool, float]] = []
    async with trio.open_nursery() as nursery:
        if running:
            await nursery.start(log.run)
        for seconds in (3.0, 1.0, 2.0):
            nursery.start_soon(timed_wait, log, seconds, out)
            await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(5)
        assert len(log._waiters) == 0 and not log._waiters._slots
        nursery.cancel_scope.cancel()
    assert [woken for woken, _ in out] == [False] * 3
    for (_, took), seconds in zip(out, (1.0, 2.0, 3.0), strict=True):
        assert seconds <= took <= seconds + broadcast.TICK, out


@asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[Harness, trio.Nursery]]:
    """A coalescing broadcaster with its run() task (and so its deadline sweep) going."""
    log = coalescing_log(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        yield log, nursery
        nursery.cancel_scope.cancel()


async def test_a_long_poll_woken_by_a_round_keeps_no_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    out: list[tuple[bool, float]] = []
    async with running(tmp_path) as (log, nursery):
        nursery.start_soon(timed_wait, log, 30.0, out)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(1)
        await log.append([entry("a", "one")])
        await trio.sleep(0.5)
        assert out and out[0][0] is True and 1.0 <= out[0][1] < 1.1, out
        assert len(log._waiters) == 0
        await trio.sleep(31)  # its slot comes and goes: nothing to end
        assert len(out) == 1


async def test_a_cancelled_long_poll_is_forgotten(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    out: list[tuple[bool, float]] = []
    async with running(tmp_path) as (log, nursery):
        with trio.CancelScope() as scope:
            nursery.start_soon(timed_wait, log, 2.0, out)  # one that times out
            async with trio.open_nursery() as inner:
                inner.start_soon(timed_wait, log, 2.0, out)
                await trio.testing.wait_all_tasks_blocked()
                assert len(log._waiters) == 2
                scope.cancel()  # the other one: the server shutting its connection
        assert len(log._waiters) == 1
        await trio.sleep(3)
        assert len(log._waiters) == 0 and [woken for woken, _ in out] == [False]


async def test_long_polls_with_deadlines_are_woken_oldest_first(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round wakes parked long-polls in the order they parked, whatever their deadlines."""
    monkeypatch.setattr("feedstream.log.broadcast.ANSWER_GROUP", 1)
    log = coalescing_log(tmp_path)
    order: list[int] = []

    async def listener(i: int, seconds: float) -> None:
        deadline, cursor = trio.current_time() + seconds, log.cursor
        while not log.ready(cursor, feeds=None):
            assert await log.changed_by(deadline)
        order.append(i)

    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        for i, seconds in enumerate((30.0, 5.0, 60.0, 10.0)):
            nursery.start_soon(listener, i, seconds)
            await trio.testing.wait_all_tasks_blocked()
        await log.append([entry("a", "one")])
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert order == [0, 1, 2, 3]
