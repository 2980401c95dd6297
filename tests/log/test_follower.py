"""A deliver process's view of the ingest process's SQLite log (two connections, one file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import trio.testing

from feedstream.log.base import Page
from feedstream.log.follower import ReadOnlyLog, SQLiteFollower
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import Store
from tests.support.helpers import entry, inline


def writer(path: Path, backlog: int = 100) -> SQLiteLog:
    store = Store(path / "db.sqlite3")
    return SQLiteLog(store, store.snapshot(backlog), backlog=backlog, offload=inline)


def follower(path: Path, backlog: int = 100) -> SQLiteFollower:
    store = Store(path / "db.sqlite3")
    return SQLiteFollower(store, store.snapshot(backlog), backlog=backlog, offload=inline)


def titles(page: Page) -> list[str]:
    return [json.loads(e.json)["title"] for e in page.entries]


async def test_a_follower_reads_what_the_writer_committed(tmp_path: Path) -> None:
    log = writer(tmp_path)
    await log.append([entry("a", "1")])
    view = follower(tmp_path)
    heads: list[str] = []
    view.watch(lambda: heads.append(view.head))
    start = log.head
    await log.append([entry("a", "2"), entry("b", "3")])
    assert view.head == start  # nothing read yet
    await view.catch_up()
    assert heads == [log.head] and view.head == log.head
    for after, feeds in ((None, None), (start, None), (start, {"b"}), ("x-1", None)):
        mine, theirs = (
            view.read(after, feeds=feeds, limit=10),
            log.read(after, feeds=feeds, limit=10),
        )
        assert (mine.cursor, mine.entries, mine.reset) == (
            theirs.cursor,
            theirs.entries,
            theirs.reset,
        )
    assert view.counts() == log.counts() == {"a": 2, "b": 1}
    await view.catch_up()
    assert heads == [log.head]  # nothing new, nobody told
    with pytest.raises(ReadOnlyLog):
        await view.append([entry("a", "4")])


async def test_run_follows_within_its_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    log = writer(tmp_path)
    view = follower(tmp_path)
    seen = trio.Event()
    view.watch(seen.set)
    async with trio.open_nursery() as nursery:
        await nursery.start(view.run)
        await trio.sleep(1)
        await log.append([entry("a", "1")])
        start = trio.current_time()
        with trio.fail_after(1):
            await seen.wait()
        assert trio.current_time() - start <= 0.02
        nursery.cancel_scope.cancel()
    assert titles(view.read(None, feeds=None, limit=5)) == ["1"]


async def test_a_follower_that_fell_behind_the_backlog_starts_over(tmp_path: Path) -> None:
    log = writer(tmp_path, backlog=4)
    view = follower(tmp_path, backlog=4)
    old = view.head
    await log.append([entry("a", "0")])
    mid = log.head
    for i in range(1, 12):
        await log.append([entry("a", str(i))])
    await view.catch_up()
    assert view.head == log.head
    assert titles(view.read(None, feeds=None, limit=10)) == ["8", "9", "10", "11"]
    assert view.read(mid, feeds=None, limit=10).reset and view.read(old, feeds=None, limit=10).reset
