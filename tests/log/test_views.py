"""Streams and ad-hoc queries on the delivery side: selections, caches, and one evaluation per
entry however many listeners wait on a stream or a query."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import trio.testing

from feedstream.core.query import QueryError, parse_query
from feedstream.core.streams import StreamConfig
from feedstream.log.base import Selection, StoredEntry
from feedstream.log.broadcast import Broadcaster
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import Store
from feedstream.log.views import MAX_QUERIES, UnknownStream, Views
from tests.support.helpers import entry, inline

SECURITY = StreamConfig("security", "Security", parse_query("cve OR vulnerability"))
HN_ONLY = StreamConfig("hn-python", "HN Python", parse_query("python"), frozenset({"hn"}))


def stored(seq: int, feed: str = "hn", **fields: object) -> StoredEntry:
    data = entry(feed, str(seq), **fields)
    data["cursor"] = f"db-{seq}"
    return StoredEntry(seq, f"db-{seq}", feed, json.dumps(data, separators=(",", ":")))


def test_a_plain_question_has_no_selection() -> None:
    views = Views([SECURITY])
    assert views.select() is None
    both = views.select(duplicates=True)
    assert both is not None and both.duplicates and both.test is None


def test_streams_select_by_query_and_feeds() -> None:
    views = Views([SECURITY, HN_ONLY])
    security = views.select(stream="security")
    python = views.select(stream="hn-python")
    assert security is not None and security.test is not None
    assert python is not None and python.test is not None
    cve, py_hn, py_lwn = (
        stored(1, title="CVE-1 fixed"),
        stored(2, title="Python 3"),
        stored(3, "lwn", title="Python 3"),
    )
    assert [security.test(e) for e in (cve, py_hn, py_lwn)] == [True, False, False]
    assert [python.test(e) for e in (cve, py_hn, py_lwn)] == [False, True, False]
    # Each entry was evaluated once per stream that applies to its feed, and never again.
    assert views.evaluations == 5
    for e in (cve, py_hn, py_lwn):
        security.test(e)
        python.test(e)
    assert views.evaluations == 5
    assert views.describe()[1] == {
        "id": "hn-python",
        "title": "HN Python",
        "query": "python",
        "feeds": ["hn"],
    }
    with pytest.raises(UnknownStream):
        views.select(stream="nope")


def test_ad_hoc_queries_share_one_cache_per_canonical_text() -> None:
    views = Views()
    one = views.select(q="cve  OR  bug")
    two = views.select(q="cve OR bug")
    assert one is two and one is not None and one.test is not None
    assert one.key == (None, "cve OR bug", False)
    assert one.test(stored(1, title="a bug")) and not one.test(stored(2, title="fine"))
    assert two is not None and two.test is not None and two.test(stored(1, title="a bug"))
    assert views.evaluations == 2
    with_duplicates = views.select(q="cve OR bug", duplicates=True)
    assert with_duplicates is not None and with_duplicates.test is not None
    assert with_duplicates.test(stored(1, title="a bug"))
    assert views.evaluations == 2  # the same per-entry results
    both = views.select(stream=None, q="bug")
    assert both != one


def test_a_stream_and_a_query_together() -> None:
    views = Views([SECURITY])
    selection = views.select(stream="security", q="title:openssl")
    assert selection is not None and selection.test is not None
    assert selection.test(stored(1, title="OpenSSL CVE"))
    assert not selection.test(stored(2, title="Kernel CVE"))
    assert not selection.test(stored(3, title="OpenSSL release"))


def test_bad_queries_raise_with_their_position_and_are_remembered() -> None:
    views = Views()
    for _ in range(2):
        with pytest.raises(QueryError) as info:
            views.select(q="a )")
        assert str(info.value) == "query: unexpected ')' at 2"


def test_caches_are_bounded() -> None:
    views = Views(capacity=64)
    for n in range(MAX_QUERIES * 3):
        selection = views.select(q=f"word{n}")
        assert selection is not None and selection.test is not None
        selection.test(stored(1))
    assert len(views._selections) <= MAX_QUERIES and len(views._results) <= MAX_QUERIES
    security = Views([SECURITY], capacity=64)
    test = security.select(stream="security")
    assert test is not None and test.test is not None
    for seq in range(1, 500):
        test.test(stored(seq))
    assert len(security._memberships) <= 64


def test_reloaded_streams_are_computed_afresh() -> None:
    views = Views([SECURITY])
    old = views.select(stream="security")
    assert old is not None and old.test is not None and not old.test(stored(1, title="python"))
    views.set_streams([StreamConfig("security", "Security", parse_query("python"))])
    new = views.select(stream="security")
    assert new is not None and new.test is not None and new.test(stored(1, title="python"))
    assert old.test(stored(1, title="python"))  # a listener parked before the reload too
    views.set_streams([])
    with pytest.raises(UnknownStream):
        views.select(stream="security")


def test_an_entry_that_is_not_json_matches_nothing() -> None:
    views = Views([SECURITY])
    selection = views.select(stream="security")
    assert selection is not None and selection.test is not None
    assert not selection.test(StoredEntry(1, "db-1", "hn", "not json"))


async def _fanout(
    tmp_path: Path, selection_of: str, listeners: int
) -> tuple[Views, list[list[str]], int]:
    """*listeners* wait, each from its own cursor, on one stream or query; entries arrive
    (most not matching); every listener must get exactly the matching ones."""
    store = Store(tmp_path / "db.sqlite3")
    log = SQLiteLog(store, store.snapshot(1000), backlog=1000, offload=inline)
    views = Views([SECURITY], capacity=4096)
    if selection_of == "stream":
        selection = views.select(stream="security")
    else:
        selection = views.select(q="cve OR vulnerability")
    broadcaster = Broadcaster(log)
    # 40 entries before anybody waits, none matching: the listeners' cursors are among them.
    cursors = [e["cursor"] for e in await log.append([entry("hn", f"old{i}") for i in range(40)])]
    received: list[list[str]] = [[] for _ in range(listeners)]

    async def listen(index: int) -> None:
        after = cursors[index % len(cursors)]
        while len(received[index]) < 2:
            await broadcaster.wait(after, feeds=None, view=selection)
            page = broadcaster.read(after, feeds=None, limit=50, view=selection)
            received[index] += [json.loads(e.json)["title"] for e in page.entries]
            broadcaster.answered()
            after = page.cursor

    async with trio.open_nursery() as nursery:
        for index in range(listeners):
            nursery.start_soon(listen, index)
        await trio.testing.wait_all_tasks_blocked()
        assert views.evaluations == 40 - 1  # every entry after the oldest cursor, once
        await log.append([entry("hn", "new1", title="nothing to see")])
        await trio.testing.wait_all_tasks_blocked()
        assert not any(received)  # woken, looked, parked again: no match yet
        await log.append([entry("hn", "new2", title="CVE-2024-1 fixed")])
        await log.append([entry("lwn", "new3", title="more news"), entry("lwn", "new4")])
        await log.append([entry("lwn", "new5", summary="a vulnerability")])
    return views, received, 40 - 1 + 5


@pytest.mark.parametrize("kind", ["stream", "query"])
async def test_one_evaluation_per_entry_whatever_the_listeners(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    views, received, entries = await _fanout(tmp_path, kind, 10_000)
    assert all(titles == ["CVE-2024-1 fixed", "new5"] for titles in received)
    assert views.evaluations == entries  # not 10,000 times that


def test_selections_are_equal_by_key_only() -> None:
    def never(_: StoredEntry) -> bool:
        return False

    assert Selection(False, "k", never) == Selection(False, "k", None)
    assert hash(Selection(False, "k", never)) == hash(Selection(False, "k"))
    assert Selection(True, "k") != Selection(False, "k")
