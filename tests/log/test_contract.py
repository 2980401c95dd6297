"""The log contract (:class:`feedstream.log.base.Log`), run against every backend.

A backend passes when it deduplicates, assigns cursors in order, answers "after this cursor"
(with filters, limits, the newest page and ``upto``), recognises cursors it cannot place as a
reset, tells its watchers once per commit, and keeps all of it across a reopen.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from feedstream.log.base import Log, Page, Selection
from feedstream.log.redis import RedisLog, connect
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import Store
from tests.support.helpers import entry, inline
from tests.support.redis import RedisServer

#: Opens a backend on *path* with room for *backlog* entries: a new one, or the same data again.
Opener = Callable[[Path, int], Awaitable[Log]]


async def _sqlite(path: Path, backlog: int) -> Log:
    store = Store(path / "db.sqlite3")
    return SQLiteLog(store, store.snapshot(backlog), backlog=backlog, offload=inline)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> str | RedisServer:
    """The backend's name, or for Redis a redis-server of the test's own."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server
    return str(request.param)


@pytest.fixture
async def opener(backend: str | RedisServer) -> AsyncIterator[Opener]:
    if not isinstance(backend, RedisServer):
        yield _sqlite
        return
    async with connect(backend.url) as client:

        async def _redis(path: Path, backlog: int) -> Log:
            # Opening again is another node (or the same one restarted) on the same Redis.
            return await RedisLog.open(client, backlog=backlog)

        yield _redis


def titles(page: Page) -> list[str]:
    return [json.loads(e.json)["title"] for e in page.entries]


async def test_append_returns_only_new_entries_with_increasing_cursors(
    opener: Opener, tmp_path: Path
) -> None:
    log = await opener(tmp_path, 100)
    first = await log.append([entry("a", "1"), entry("a", "2"), entry("a", "1")])
    assert [e["title"] for e in first] == ["1", "2"]
    assert await log.append([entry("a", "2", title="again")]) == []
    assert log.head == first[-1]["cursor"]
    stored = log.read(None, feeds=None, limit=10).entries
    assert [e.cursor for e in stored] == [e["cursor"] for e in first]
    assert [json.loads(e.json)["cursor"] for e in stored] == [e.cursor for e in stored]
    assert log.counts() == {"a": 2}


async def test_read_after_a_cursor_pages_in_order(opener: Opener, tmp_path: Path) -> None:
    log = await opener(tmp_path, 100)
    start = log.head
    new = await log.append([entry("a", str(i)) for i in range(5)])
    page = log.read(start, feeds=None, limit=2)
    assert titles(page) == ["0", "1"] and page.cursor == new[1]["cursor"]
    page = log.read(page.cursor, feeds=None, limit=2)
    assert titles(page) == ["2", "3"]
    page = log.read(page.cursor, feeds=None, limit=2)
    assert titles(page) == ["4"] and page.cursor == log.head
    last = log.read(page.cursor, feeds=None, limit=2)
    assert (last.entries, last.cursor, last.reset) == ((), log.head, False)


async def test_newest_page_and_filter(opener: Opener, tmp_path: Path) -> None:
    log = await opener(tmp_path, 100)
    start = log.head
    await log.append([entry("a" if i % 2 else "b", str(i)) for i in range(6)])
    assert titles(log.read(None, feeds=None, limit=2)) == ["4", "5"]
    assert titles(log.read(None, feeds={"a"}, limit=2)) == ["3", "5"]
    page = log.read(start, feeds={"b"}, limit=10)
    assert titles(page) == ["0", "2", "4"] and page.cursor == log.head  # skips the rest


async def test_upto_hides_what_came_after_it(opener: Opener, tmp_path: Path) -> None:
    log = await opener(tmp_path, 100)
    start = log.head
    await log.append([entry("a", "1")])
    shown = log.head
    await log.append([entry("a", "2")])
    assert titles(log.read(start, feeds=None, limit=10, upto=shown)) == ["1"]
    assert log.read(shown, feeds=None, limit=10, upto=shown).entries == ()
    assert titles(log.read(start, feeds=None, limit=10)) == ["1", "2"]
    # A first page shows everything readable, whatever upto says.
    assert titles(log.read(None, feeds=None, limit=10, upto=shown)) == ["1", "2"]


async def test_cursors_it_cannot_place_are_a_reset(opener: Opener, tmp_path: Path) -> None:
    log = await opener(tmp_path, 3)
    old = log.head
    await log.append([entry("a", str(i)) for i in range(6)])
    for cursor in (old, "garbage", "other-1", log.head + "0", "x" * 60):
        page = log.read(cursor, feeds=None, limit=10)
        assert page.reset, cursor
        assert titles(page) == ["3", "4", "5"] and page.cursor == log.head


async def test_watchers_hear_of_each_commit_once(opener: Opener, tmp_path: Path) -> None:
    log = await opener(tmp_path, 100)
    heads: list[str] = []
    log.watch(lambda: heads.append(log.head))
    await log.append([entry("a", "1"), entry("a", "2")])
    await log.append([entry("a", "1")])  # nothing new: nothing to tell
    await log.append([entry("a", "3")])
    assert len(heads) == 2 and heads[-1] == log.head
    log.close()
    await log.append([entry("a", "4")])  # in flight at shutdown: stored, nobody told
    assert len(heads) == 2


async def test_a_reopened_log_keeps_cursors_and_dedup(opener: Opener, tmp_path: Path) -> None:
    log = await opener(tmp_path, 100)
    new = await log.append([entry("a", "1"), entry("a", "2")])
    log.close()
    again = await opener(tmp_path, 100)
    assert again.head == new[-1]["cursor"]
    assert titles(again.read(new[0]["cursor"], feeds=None, limit=10)) == ["2"]
    assert await again.append([entry("a", "2"), entry("a", "3")]) != []
    assert [json.loads(e.json)["title"] for e in again.read(None, feeds=None, limit=9).entries] == [
        "1",
        "2",
        "3",
    ]


async def test_ids_marked_seen_are_never_stored(opener: Opener, tmp_path: Path) -> None:
    log = await opener(tmp_path, 100)
    await log.append([entry("a", "1")])
    # What a rule dropped: remembered as seen, whether or not it is new; only the new reported.
    assert await log.mark_seen([("a:2", "a"), ("a:1", "a"), ("a:3", "a")]) == ["a:2", "a:3"]
    assert await log.mark_seen([("a:2", "a")]) == []
    assert await log.mark_seen([]) == []
    new = await log.append([entry("a", "2"), entry("a", "3"), entry("a", "4")])
    assert [e["title"] for e in new] == ["4"]
    assert log.counts() == {"a": 2}
    log.close()
    again = await opener(tmp_path, 100)  # remembered across a reopen (another node)
    assert await again.append([entry("a", "2")]) == []


async def test_folded_duplicates_are_read_only_when_asked(opener: Opener, tmp_path: Path) -> None:
    log = await opener(tmp_path, 100)
    start = log.head
    await log.append([entry("a", "1"), entry("b", "1", duplicate_of="a:1"), entry("b", "2")])
    both = Selection(duplicates=True, key="duplicates")
    assert titles(log.read(start, feeds=None, limit=10)) == ["1", "2"]
    assert [e.feed for e in log.read(start, feeds=None, limit=10).entries] == ["a", "b"]
    assert len(log.read(start, feeds=None, limit=10, view=both).entries) == 3
    assert [e.duplicate for e in log.read(start, feeds=None, limit=10, view=both).entries] == [
        False,
        True,
        False,
    ]
    assert len(log.read(None, feeds=None, limit=10).entries) == 2  # a first page too
    assert len(log.read(None, feeds={"b"}, limit=10, view=both).entries) == 2
    # A wait ends only for an entry the reader sees: after "1", only the duplicate is pending.
    first = log.read(start, feeds=None, limit=1)
    assert log.read(first.cursor, feeds={"b"}, limit=1).entries[0].json.count('"title":"2"')
    only_duplicate = log.read(first.cursor, feeds=None, limit=10, upto=log.head)
    assert titles(only_duplicate) == ["2"]
    tested = Selection(key="two", test=lambda e: '"title":"2"' in e.json)
    assert titles(log.read(start, feeds=None, limit=10, view=tested)) == ["2"]
