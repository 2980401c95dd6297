"""Retention of the stored history: old entries deleted in batches, their ids remembered, the
index kept in step, space given back, an older database migrated."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from feedstream.core.config import FeedConfig
from feedstream.core.search import translate
from feedstream.log.history import HistoryReader
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import SCHEMA_VERSION, Store
from feedstream.service import history as history_module
from feedstream.service.history import FORGET_MARGIN_DAYS, History
from feedstream.service.ingest import Ingestor
from feedstream.service.stats import Stats
from tests.support.documents import atom
from tests.support.helpers import entry, inline

DAY = 86_400.0
T0 = 1_700_000_000.0
FEED = FeedConfig(id="f", url="https://example.org/feed", token="t" * 16)


class Clock:
    """Wall-clock time the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Node:
    """A store, its log, the ingest path and the history over them: one process of the server
    (``reopen`` is a restart)."""

    def __init__(
        self, path: Path, clock: Clock, *, retain_days: float = 90, retain_entries: int = 0
    ) -> None:
        self.path, self.clock = path, clock
        self.retain_days, self.retain_entries = retain_days, retain_entries
        self.open()

    def open(self) -> None:
        self.store = Store(self.path / "db.sqlite3")
        self.log = SQLiteLog(
            self.store, self.store.snapshot(10), backlog=10, offload=inline, clock=self.clock
        )
        self.ingestor = Ingestor(
            self.log, Stats(), parse=inline, slots=trio.CapacityLimiter(1), clock=self.clock
        )
        self.history = History(
            self.store,
            retain_days=self.retain_days,
            retain_entries=self.retain_entries,
            writer=True,
            offload=inline,
            head=lambda: self.log.head_seq,
            listed=self.ingestor.listed_ids,
            clock=self.clock,
        )

    def reopen(self) -> None:
        self.history.close()
        self.store.close()
        self.open()

    async def ingest(self, *items: tuple[str, str]) -> list[str]:
        done = await self.ingestor.ingest(FEED, atom(*items), content_type=None, via="poll")
        assert not done.parsed.error
        return [e["title"] for e in done.new]

    def search(self, query: str) -> list[str]:
        page = self.history.reader.search(translate(query), order="new", limit=100, cursor=None)
        return [hit.entry["title"] for hit in page.hits]


def count(store: Store, sql: str, *args: Any) -> int:
    db = sqlite3.connect(store.path)
    try:
        return int(db.execute(sql, args).fetchone()[0])
    finally:
        db.close()


async def test_old_entries_are_deleted_and_not_ingested_again(tmp_path: Path) -> None:
    """The acceptance rule, through the real ingest path: a feed still listing an entry that
    retention deleted does not bring it back, before or after a restart."""
    clock = Clock()
    node = Node(tmp_path, clock)
    assert await node.ingest(("1", "alpha old"), ("2", "beta old")) == ["alpha old", "beta old"]
    clock.now += 60 * DAY
    assert await node.ingest(("1", "alpha old"), ("2", "beta old"), ("3", "gamma new")) == [
        "gamma new"
    ]
    clock.now += 40 * DAY  # 100 days after the first two, 40 after the third
    done = await node.history.retain()
    assert done.deleted == 2 and node.history.deleted_total == 2
    assert node.search("old") == [] and node.search("gamma") == ["gamma new"]
    assert node.history.status()["entries"] == 1
    # The feed still lists them: nothing comes back, neither now ...
    document = (("1", "alpha old"), ("2", "beta old"), ("3", "gamma new"), ("4", "delta"))
    assert await node.ingest(*document) == ["delta"]
    # ... nor after a restart (the ingestor forgot what it saw; the store did not).
    node.reopen()
    assert await node.ingest(*document, ("5", "epsilon")) == ["epsilon"]
    assert node.search("alpha OR beta") == []
    assert count(node.store, "SELECT COUNT(*) FROM retired") == 2


async def test_ids_still_listed_are_kept_and_the_others_forgotten(tmp_path: Path) -> None:
    clock = Clock()
    node = Node(tmp_path, clock, retain_days=10)
    await node.ingest(("1", "one"), ("2", "two"))
    clock.now += 11 * DAY
    await node.history.retain()
    assert count(node.store, "SELECT COUNT(*) FROM retired") == 2
    # Only "1" is still listed (and seen: the document goes to the store after a restart).
    node.reopen()
    assert await node.ingest(("1", "one")) == []
    for _ in range(5):  # well past retain_days + the margin for "2"; "1" refreshed each pass
        clock.now += 10 * DAY
        await node.history.retain()
    assert clock.now - T0 > (10 + FORGET_MARGIN_DAYS) * DAY
    assert count(node.store, "SELECT COUNT(*) FROM retired WHERE id = 'f:urn:1'") == 1
    assert count(node.store, "SELECT COUNT(*) FROM retired WHERE id = 'f:urn:2'") == 0
    assert node.history.last_pass is not None and node.history.last_pass.forgotten == 1
    # Forgotten: a feed listing it again after so long brings it back, as a new entry.
    assert await node.ingest(("1", "one"), ("2", "two")) == ["two"]


async def test_retention_by_count_keeps_the_newest(tmp_path: Path) -> None:
    clock = Clock()
    node = Node(tmp_path, clock, retain_days=0, retain_entries=5)
    await node.log.append([entry("a", str(i)) for i in range(12)])
    done = await node.history.retain()
    assert done.deleted == 7
    assert [json.loads(e.json)["title"] for e in node.store.recent(100)] == [
        str(i) for i in range(7, 12)
    ]
    figures = await node.history.measure()
    assert (figures.entries, figures.oldest_seq, figures.head) == (5, 8, 12)


async def test_nothing_is_deleted_without_limits_or_on_a_reader(tmp_path: Path) -> None:
    clock = Clock()
    forever = Node(tmp_path / "a", clock, retain_days=0, retain_entries=0)
    await forever.log.append([entry("a", str(i)) for i in range(3)])
    clock.now += 10_000 * DAY
    assert (await forever.history.retain()).deleted == 0
    assert not forever.history.retaining
    reader = History(forever.store, retain_days=1, retain_entries=1, writer=False, offload=inline)
    assert not reader.retaining
    reader.close()


async def test_deletion_goes_in_small_batches_between_which_the_writer_gets_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setattr(history_module, "BATCH", 7)
    clock = Clock()
    calls: list[str] = []

    async def threaded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        await trio.sleep(0.01)  # a worker thread's trip: others run meanwhile
        calls.append(getattr(fn, "func", fn).__name__)
        return fn(*args, **kwargs)

    store = Store(tmp_path / "db.sqlite3")
    log = SQLiteLog(store, store.snapshot(10), backlog=10, offload=threaded, clock=clock)
    await log.append([entry("a", str(i)) for i in range(50)])
    history = History(
        store, retain_days=1, retain_entries=0, writer=True, offload=threaded, clock=clock
    )
    clock.now += 2 * DAY
    calls.clear()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(history.retain)
        await trio.sleep(0.025)  # the pass is under way
        nursery.start_soon(log.append, [entry("b", "new")])
    assert history.last_pass is not None
    assert history.last_pass.deleted == 50 and history.last_pass.batches == 8  # 7 * 7 + 1
    retires = [i for i, name in enumerate(calls) if name == "retire"]
    assert len(retires) == 8
    insert = calls.index("insert_new")
    assert retires[0] < insert < retires[-1]  # the append did not wait for the whole pass
    assert [json.loads(e.json)["title"] for e in store.recent(100)] == ["new"]
    history.close()


def test_a_batch_deletes_a_contiguous_prefix_and_says_whether_more_may_follow(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "db.sqlite3")
    rows = [("a:" + str(i), "a", entry("a", str(i))) for i in range(10)]
    store.insert_new(rows[:6], lambda seq, e: json.dumps(e), at=T0)
    store.insert_new(rows[6:], lambda seq, e: json.dumps(e), at=T0 + 100)
    first = store.retire(before=T0 + 1, keep=0, batch=4, now=T0 + 200)
    assert (first.deleted, first.through, first.more) == (4, 4, True)
    second = store.retire(before=T0 + 1, keep=0, batch=4, now=T0 + 200)
    assert (second.deleted, second.through, second.more) == (2, 6, False)
    assert store.retire(before=T0 + 1, keep=0, batch=4).deleted == 0
    assert store.history_figures().entries == 4


async def test_the_ring_keeps_serving_what_retention_deleted(tmp_path: Path) -> None:
    clock = Clock()
    node = Node(tmp_path, clock, retain_days=1)
    start = node.log.head
    await node.log.append([entry("a", str(i)) for i in range(4)])
    clock.now += 2 * DAY
    assert (await node.history.retain()).deleted == 4
    page = node.log.read(start, feeds=None, limit=10)  # live delivery: exactly as before
    assert [json.loads(e.json)["title"] for e in page.entries] == ["0", "1", "2", "3"]
    assert not page.reset
    # Every entry deleted: the next one still gets the next seq (a cursor is never reused).
    new = await node.log.append([entry("a", "4")])
    assert new[0]["cursor"].endswith("-5")
    node.reopen()
    assert node.store.last_seq() == 5
    assert not node.log.read(new[0]["cursor"], feeds=None, limit=10).entries
    assert [
        json.loads(e.json)["title"] for e in node.log.read(None, feeds=None, limit=9).entries
    ] == ["4"]


async def test_the_index_follows_deletes(tmp_path: Path) -> None:
    clock = Clock()
    node = Node(tmp_path, clock, retain_days=1)
    await node.log.append(
        [entry("a", f"t{i}", content_html=f"<p>word{i % 3} shared</p>") for i in range(30)]
    )
    await node.log.append([entry("b", "dup", duplicate_of="a:t1", content_html="<p>shared</p>")])
    assert count(node.store, "SELECT COUNT(*) FROM entries_fts") == 30  # the duplicate: not
    clock.now += 0.5 * DAY
    await node.log.append([entry("a", "late", content_html="<p>word0 shared</p>")])
    clock.now += 0.75 * DAY
    assert (await node.history.retain()).deleted == 31
    assert count(node.store, "SELECT COUNT(*) FROM entries_fts") == 1
    assert node.search("shared") == ["late"] and node.search("word1") == []
    db = sqlite3.connect(node.store.path)
    db.execute("INSERT INTO entries_fts(entries_fts) VALUES ('integrity-check')")
    db.close()


def segments(store: Store) -> int:
    """The full-text index's segments now (each has rows in the index's page index)."""
    return count(store, "SELECT COUNT(DISTINCT segid) FROM entries_fts_idx")


def integrity_check(store: Store) -> None:
    db = sqlite3.connect(store.path)
    try:
        db.execute("INSERT INTO entries_fts(entries_fts) VALUES ('integrity-check')")
    finally:
        db.close()


async def test_the_index_is_merged_in_bounded_steps_outside_appends_and_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends and retention batches never merge the index's segments (a merge reaching a
    common word could hold the writer for a second): the history merges them in steps of
    their own, each a transaction that writes about MERGE_PAGES pages, until none is needed."""
    clock = Clock()
    node = Node(tmp_path, clock, retain_days=1)
    options = dict(node.store._db.execute("SELECT k, v FROM entries_fts_config").fetchall())
    assert (options["automerge"], options["usermerge"], options["crisismerge"]) == (0, 4, 64)
    body = "<p>" + " ".join(f"w{i % 97} common" for i in range(300)) + "</p>"
    for i in range(40):  # one transaction each: one new segment each, none merged
        await node.log.append([entry("a", str(i), content_html=body)])
    assert segments(node.store) == 40
    # One small step merges a little (it stops at the first word after a page), then the next.
    assert node.store.merge_step(1) and segments(node.store) > 4
    steps = await node.history.merge()
    assert steps >= 1 and segments(node.store) < 4  # fewer than usermerge: nothing to do
    assert not node.store.merge_step(64)
    integrity_check(node.store)
    assert len(node.search("common")) == 40
    # A retention pass: its batches add segments (the deletions); it merges them as it goes.
    monkeypatch.setattr(history_module, "BATCH", 3)
    clock.now += 2 * DAY
    await node.log.append([entry("a", "new", content_html="<p>w1 common</p>")])
    before = node.history.merge_steps
    done = await node.history.retain()
    assert done.deleted == 40 and node.history.merge_steps > before
    assert not node.store.merge_step(64)  # no level has usermerge segments left
    integrity_check(node.store)
    assert node.search("common") == ["new"]


async def test_the_periodic_task_merges_after_new_entries(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    node = Node(tmp_path, Clock(), retain_days=0)  # no retention pass: merging all the same
    node.history = History(
        node.store, retain_days=0, retain_entries=0, writer=True, offload=inline,
        head=lambda: node.log.head_seq, watch=node.log.watch,
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(node.history.run)
        for i in range(30):
            await node.log.append([entry("a", str(i), content_html="<p>one two three</p>")])
            await trio.sleep(0.1)
        await trio.sleep(history_module.MERGE_GAP * 2)
        assert node.history.merge_steps > 0 and segments(node.store) < 8
        nursery.cancel_scope.cancel()
    integrity_check(node.store)


async def test_freed_space_is_given_back(tmp_path: Path) -> None:
    clock = Clock()
    node = Node(tmp_path, clock, retain_days=1)
    body = "<p>" + " ".join(f"w{i}" for i in range(400)) + "</p>"
    for chunk in range(10):
        await node.log.append([entry("a", f"{chunk}-{i}", content_html=body) for i in range(50)])
    before = await node.history.measure()
    clock.now += 2 * DAY
    await node.history.retain()
    after = node.history.figures
    assert after is not None and after.entries == 0 and after.free_bytes == 0
    # The entries' pages are given back at once; the index's keeps its deletions until FTS5
    # merges its segments (as later inserts make it do).
    assert after.database_bytes < before.database_bytes / 2
    assert (tmp_path / "db.sqlite3").stat().st_size == after.database_bytes


async def test_the_periodic_task_measures_and_retains(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    clock = Clock()
    node = Node(tmp_path, clock, retain_days=1)
    await node.log.append([entry("a", str(i)) for i in range(3)])
    async with trio.open_nursery() as nursery:
        await nursery.start(node.history.run)
        assert node.history.status()["entries"] == 3  # measured before it reports started
        await node.log.append([entry("a", "3")])
        assert node.history.status()["entries"] == 4  # counted from the log's head
        assert node.history.last_pass is None
        clock.now += 2 * DAY
        await trio.sleep(history_module.MEASURE_PERIOD + 1)  # the first tick: a pass
        assert node.history.last_pass is not None and node.history.last_pass.deleted == 4
        status = node.history.status()
        assert status["entries"] == 0 and status["oldest"] is None
        assert status["last_retention"]["deleted"] == 4
        nursery.cancel_scope.cancel()


# -- migration -----------------------------------------------------------------------------

#: Version 1's tables, as feedstream created them before the history was kept.
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, feed TEXT NOT NULL,
                      data TEXT);
CREATE TABLE dropped (id TEXT PRIMARY KEY, feed TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE feeds (id TEXT PRIMARY KEY, source_url TEXT, url TEXT, title TEXT, etag TEXT,
    last_modified TEXT, last_fetch REAL, http_status INTEGER, status TEXT NOT NULL DEFAULT 'new',
    error TEXT, failures INTEGER NOT NULL DEFAULT 0, next_poll REAL);
CREATE TABLE subscriptions (feed_id TEXT PRIMARY KEY, token TEXT NOT NULL UNIQUE,
    hub TEXT NOT NULL, endpoint TEXT NOT NULL, topic TEXT NOT NULL, secret TEXT,
    state TEXT NOT NULL, lease_seconds INTEGER, lease_expires REAL, verified_at REAL,
    requested_at REAL, retry_at REAL, attempts INTEGER NOT NULL DEFAULT 0, last_push REAL,
    push_healthy INTEGER NOT NULL DEFAULT 1, error TEXT);
INSERT INTO meta VALUES ('log_id', 'cafe0001');
PRAGMA user_version = 1;
"""


def old_database(path: Path, pruned: int, kept: int) -> None:
    """A version-1 database: *pruned* id-only rows, then *kept* rows with their JSON."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA_1)
    db.execute("BEGIN")
    for seq in range(1, pruned + kept + 1):
        item = entry("old" if seq % 2 else "other", str(seq), title=f"title {seq}")
        item.update(
            cursor=f"cafe0001-{seq}",
            received="2024-05-01T10:00:00Z",
            content_html=f"<p>migrated body{seq}</p>",
        )
        data = None if seq <= pruned else json.dumps(item)
        db.execute("INSERT INTO entries VALUES (?, ?, ?, ?)", (seq, item["id"], item["feed"], data))
    db.execute("COMMIT")
    db.close()


async def test_an_old_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    old_database(path, pruned=40, kept=10)
    store = Store(path)
    assert store.log_id == "cafe0001"
    assert count(store, "PRAGMA user_version") == SCHEMA_VERSION == 2
    assert count(store, "PRAGMA auto_vacuum") == 2  # incremental, after the one VACUUM
    assert count(store, "SELECT COUNT(*) FROM retired") == 40
    assert count(store, "SELECT COUNT(*) FROM entries") == 10
    assert count(store, "SELECT COUNT(*) FROM entries_fts") == 10
    assert store.entry_counts() == {"old": 25, "other": 25}  # entries ever stored, as before
    figures = store.history_figures()
    assert (figures.entries, figures.oldest_seq, figures.head) == (10, 41, 50)
    assert figures.oldest_at == 1714557600.0  # 2024-05-01T10:00:00Z, from "received"
    # The index was filled from the entries that had their JSON.
    reader = HistoryReader(path)
    page = reader.search(translate("body45 OR body3"), order="new", limit=10, cursor=None)
    assert [hit.seq for hit in page.hits] == [45]
    reader.close()
    # The pruned ids are still duplicates, and seqs go on after the newest, pruned or not.
    log = SQLiteLog(store, store.snapshot(5), backlog=5, offload=inline)
    assert await log.append([entry("old", "1"), entry("other", "50")]) == []
    new = await log.append([entry("old", "51")])
    assert new[0]["cursor"] == "cafe0001-51"
    store.close()
    again = Store(path)  # opening a migrated database changes nothing
    assert count(again, "SELECT COUNT(*) FROM retired") == 40
    assert again.entry_counts() == {"old": 26, "other": 25}
    again.close()


def test_a_database_of_only_pruned_rows_keeps_its_head(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    old_database(path, pruned=7, kept=0)
    store = Store(path)
    assert store.last_seq() == 7 and store.history_figures().entries == 0
    assert store.snapshot(10).head == 7


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(RuntimeError, match="schema 99 is newer"):
        Store(path)


def test_a_new_database_vacuums_incrementally(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    assert count(store, "PRAGMA auto_vacuum") == 2
    assert count(store, "PRAGMA user_version") == SCHEMA_VERSION
