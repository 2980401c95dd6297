"""The embedded SQLite store: entries (for dedup, catch-up and history search) and per-feed
fetch state.

The store is synchronous and thread-safe (one connection behind a lock), so the trio side calls
it from a worker thread and never blocks the event loop on disk I/O. The database runs in WAL
mode with ``synchronous=NORMAL``: a committed transaction survives a crash of the process.
History search reads through connections of its own (:mod:`feedstream.log.history`), so a long
search never holds the writer's lock.

Tables:

``entries(seq, id, feed, data, at)``
    ``seq`` is the position in the cursor log, assigned densely (1, 2, 3, ...) by the one writer.
    ``id`` is unique: inserting an id that is already there is a no-op, which is how entries are
    deduplicated across polls, pushes and restarts. ``data`` is the entry's JSON, kept for the
    whole retained history; ``at`` is when it was stored (Unix seconds). Retention
    (:meth:`Store.retire`) deletes from the oldest end only, so the rows always hold one
    contiguous range of seqs: the count is ``MAX(seq) - MIN(seq) + 1``.
``entries_fts``
    The full-text index (FTS5) of the entries, rowid = ``seq``: the columns of
    :data:`feedstream.core.search.COLUMNS`, filled from :func:`~feedstream.core.search.search_text`
    in the transaction that inserts the entry, and emptied in the one that deletes it (explicit
    writes, no triggers: the text is computed in Python). Folded duplicates are not indexed.
``retired(id, at)``
    Ids of entries retention deleted, so that a feed still listing an old entry does not bring
    it back. ``at`` is the last time the id was seen: when it was retired, and again whenever a
    feed offers it (an insert finding it here) or still lists it (:meth:`Store.touch_retired`).
    An id is forgotten (:meth:`Store.forget`) once no feed has listed it for a while.
``dropped(id, feed, at)``
    Ids a rule dropped at ingest: never stored as entries, but seen, so that the next poll of
    the feed does not bring them back. An id in ``entries``, ``retired`` or ``dropped`` is a
    duplicate.
``feed_counts(feed, entries)``
    Entries ever stored per feed (what :meth:`~feedstream.log.base.Log.counts` reports:
    retention does not lower it, and a start does not count a million rows).
``feeds(id, ...)``
    What the poller needs to resume politely after a restart (ETag, Last-Modified, the URL after
    permanent redirects, failures, next poll) and what ``/api/feeds`` shows.
``subscriptions(feed_id, ...)``
    One WebSub subscription per feed: hub, topic, callback token, secret, state and lease, so
    subscriptions survive restarts.
``meta(key, value)``
    ``log_id``: a random name for this database, part of every cursor, so that a cursor issued
    by another database is recognised as foreign instead of being misread. ``retired_seq``: the
    newest seq retention deleted, so that a seq is never given out twice even when every entry
    was deleted.

Schema versions (``PRAGMA user_version``): 1 kept an entry's JSON only while it was inside the
backlog (NULL afterwards, the row kept for its id). 2 keeps the history: opening a version-1
database migrates it in one transaction (the id-only rows move to ``retired``, the index is
filled from the entries that still have their JSON, ``at`` from their ``received``, the counts
from the rows) and then turns on incremental vacuum with a one-time ``VACUUM`` (the database
is small then: a version-1 database holds about a backlog of entries). A new database gets
``auto_vacuum=INCREMENTAL`` before its first table, so that space freed by retention is given
back in small steps (:meth:`Store.vacuum_step`) instead of by a full ``VACUUM``.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from feedstream.core.search import COLUMNS, search_text
from feedstream.log.base import StoredEntry
from feedstream.log.cursors import format_cursor

logger = logging.getLogger(__name__)

__all__ = ["FeedState", "HistoryFigures", "Retired", "Snapshot", "Store", "Subscription"]

SCHEMA_VERSION = 2

_T = TypeVar("_T", bound=Mapping[str, Any])

_AUTO_VACUUM_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL

#: How the full-text index merges its segments (FTS5 options, kept in ``entries_fts_config``;
#: set at every open). FTS5 merges inside the commit that wrote a segment by default
#: (``automerge``; ``crisismerge`` merges a whole level at once), and a merge that reaches a
#: common word writes its whole position list, so an append or a retention batch could hold the
#: writer for a second or more. Here no commit that appends or deletes merges: the history's
#: task merges in steps of their own (:meth:`Store.merge_step`), once a level has ``usermerge``
#: segments; ``crisismerge`` is only the safety net if those steps stop.
FTS_OPTIONS: dict[str, int] = {"automerge": 0, "usermerge": 4, "crisismerge": 64}

_TABLES = f"""
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    seq  INTEGER PRIMARY KEY,
    id   TEXT NOT NULL UNIQUE,
    feed TEXT NOT NULL,
    at   REAL,
    data TEXT
);
CREATE VIRTUAL TABLE IF NOT EXISTS entries_fts USING fts5(
    {", ".join(COLUMNS)}, tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS retired (
    id TEXT PRIMARY KEY,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS retired_at ON retired(at);
CREATE TABLE IF NOT EXISTS feed_counts (
    feed    TEXT PRIMARY KEY,
    entries INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dropped (
    id   TEXT PRIMARY KEY,
    feed TEXT NOT NULL,
    at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feeds (
    id            TEXT PRIMARY KEY,
    source_url    TEXT,
    url           TEXT,
    title         TEXT,
    etag          TEXT,
    last_modified TEXT,
    last_fetch    REAL,
    http_status   INTEGER,
    status        TEXT NOT NULL DEFAULT 'new',
    error         TEXT,
    failures      INTEGER NOT NULL DEFAULT 0,
    next_poll     REAL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    feed_id       TEXT PRIMARY KEY,
    token         TEXT NOT NULL UNIQUE,
    hub           TEXT NOT NULL,
    endpoint      TEXT NOT NULL,
    topic         TEXT NOT NULL,
    secret        TEXT,
    state         TEXT NOT NULL,
    lease_seconds INTEGER,
    lease_expires REAL,
    verified_at   REAL,
    requested_at  REAL,
    retry_at      REAL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_push     REAL,
    push_healthy  INTEGER NOT NULL DEFAULT 1,
    error         TEXT
)
"""
#: The oldest and newest seq stored. Two subqueries: ``SELECT MIN(seq), MAX(seq)`` in one would
#: scan the table (SQLite's min/max optimization takes one aggregate per query).
_BOUNDS = "SELECT (SELECT MIN(seq) FROM entries), (SELECT MAX(seq) FROM entries)"
_STATEMENTS = [statement.strip() for statement in _TABLES.split(";") if statement.strip()]
_INSERT_FTS = (
    f"INSERT INTO entries_fts(rowid, {', '.join(COLUMNS)}) "
    f"VALUES (?, {', '.join('?' for _ in COLUMNS)})"
)
#: ``received`` (RFC 3339) of an entry's JSON as Unix seconds, in SQL (the migration's ``at``).
_RECEIVED_AT = (
    "CASE WHEN json_valid(data) THEN "
    "CAST(strftime('%s', json_extract(data, '$.received')) AS REAL) END"
)


@dataclass(slots=True)
class FeedState:
    """The persistent part of a feed's fetch state (one row of ``feeds``)."""

    id: str
    source_url: str | None = None  # the configured URL this state belongs to
    url: str | None = None  # current URL: changes after a permanent redirect
    title: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    last_fetch: float | None = None  # Unix time
    http_status: int | None = None
    status: str = "new"  # new | ok | not_modified | error | gone
    error: str | None = None
    failures: int = 0
    next_poll: float | None = None  # Unix time


_FEED_COLUMNS = tuple(f.name for f in fields(FeedState))


@dataclass(slots=True)
class Subscription:
    """One WebSub subscription (one row of ``subscriptions``); times are Unix seconds."""

    feed_id: str
    token: str  # the unguessable last segment of the callback URL
    hub: str  # the hub URL discovery found
    endpoint: str  # where requests go: the hub URL, or where a 308 moved it
    topic: str
    secret: str | None
    state: str  # a feedstream.websub.protocol.SubscriptionState value
    lease_seconds: int | None = None
    lease_expires: float | None = None
    verified_at: float | None = None
    requested_at: float | None = None
    retry_at: float | None = None
    attempts: int = 0  # consecutive failed requests
    last_push: float | None = None
    push_healthy: bool = True
    error: str | None = None


_SUBSCRIPTION_COLUMNS = tuple(f.name for f in fields(Subscription))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the cursor log needs at start: the newest entries, the head, counts per feed."""

    recent: list[StoredEntry]
    head: int
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class Retired:
    """One retention batch: how many entries it deleted (the oldest, up to seq *through*), and
    whether the next batch may find more."""

    deleted: int
    through: int = 0
    more: bool = False


@dataclass(frozen=True, slots=True)
class HistoryFigures:
    """The stored history, measured: for ``/api/status`` and ``/metrics``."""

    entries: int  # entries stored now (with their JSON, searchable)
    oldest_seq: int | None
    oldest_at: float | None  # when the oldest stored entry was stored (Unix seconds)
    head: int  # the newest seq given out
    database_bytes: int  # the main database file's pages
    free_bytes: int  # of which free (given back by incremental vacuum)


class Store:
    """One SQLite database file; every method may be called from any thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        # Before any table exists (a new database), so that retention's space can be given back.
        self._db.execute(f"PRAGMA auto_vacuum={_AUTO_VACUUM_INCREMENTAL}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # one opener at a time creates or migrates
            try:
                self._create_or_migrate()
                self._configure_index()
                row = self._db.execute("SELECT value FROM meta WHERE key='log_id'").fetchone()
                if row is None:
                    self.log_id = secrets.token_hex(4)
                    self._db.execute("INSERT INTO meta VALUES ('log_id', ?)", (self.log_id,))
                else:
                    self.log_id = str(row[0])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._ensure_incremental_vacuum()

    def _create_or_migrate(self) -> None:
        """Create the tables, or bring an older database to :data:`SCHEMA_VERSION` (in the
        caller's transaction)."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: database schema {version} is newer than this feedstream "
                f"({SCHEMA_VERSION}); upgrade feedstream or use another data_dir"
            )
        had_entries = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'entries'"
        ).fetchone()
        if had_entries is not None and version < 2:
            self._migrate_to_2()
        for statement in _STATEMENTS:
            self._db.execute(statement)
        if version != SCHEMA_VERSION:
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _migrate_to_2(self) -> None:
        """Version 1 (JSON only for the backlog) to 2 (the history, searchable)."""
        now = time.time()
        self._db.execute("ALTER TABLE entries ADD COLUMN at REAL")
        for statement in _STATEMENTS:
            self._db.execute(statement)
        self._db.execute(
            "INSERT OR REPLACE INTO feed_counts(feed, entries) "
            "SELECT feed, COUNT(*) FROM entries GROUP BY feed"
        )
        # Pruned rows: only their id was kept. They become retired ids (seen now).
        self._db.execute(
            "INSERT OR REPLACE INTO retired(id, at) SELECT id, ? FROM entries WHERE data IS NULL",
            (now,),
        )
        pruned = self._db.execute("SELECT MAX(seq) FROM entries WHERE data IS NULL").fetchone()[0]
        if pruned is not None:
            self._set_retired_seq(int(pruned))
        moved = self._db.execute("DELETE FROM entries WHERE data IS NULL").rowcount
        self._db.execute(f"UPDATE entries SET at = COALESCE({_RECEIVED_AT}, ?)", (now,))
        indexed = 0
        for seq, data in self._db.execute("SELECT seq, data FROM entries").fetchall():
            try:
                entry = json.loads(data)
            except ValueError:
                continue
            text = search_text(entry) if isinstance(entry, dict) else None
            if text is not None:
                self._db.execute(_INSERT_FTS, (seq, *text))
                indexed += 1
        logger.info(
            "%s: migrated the database to schema 2 (history and search): %d ids kept as "
            "retired, %d entries indexed",
            self.path,
            moved,
            indexed,
        )

    def _configure_index(self) -> None:
        """Set :data:`FTS_OPTIONS` where the index has other values (in the caller's
        transaction)."""
        current = dict(self._db.execute("SELECT k, v FROM entries_fts_config").fetchall())
        for option, value in FTS_OPTIONS.items():
            if current.get(option) != value:
                self._db.execute(
                    "INSERT INTO entries_fts(entries_fts, rank) VALUES (?, ?)", (option, value)
                )

    def _ensure_incremental_vacuum(self) -> None:
        """A database made before version 2 needs one ``VACUUM`` to switch to incremental
        vacuum (retried at the next start if another connection is busy)."""
        mode = int(self._db.execute("PRAGMA auto_vacuum").fetchone()[0])
        if mode == _AUTO_VACUUM_INCREMENTAL or str(self.path) == ":memory:":
            return
        try:
            with self._lock:
                self._db.execute(f"PRAGMA auto_vacuum={_AUTO_VACUUM_INCREMENTAL}")
                self._db.execute("VACUUM")
        except sqlite3.OperationalError as exc:
            logger.warning("%s: could not switch to incremental vacuum yet: %s", self.path, exc)
        else:
            logger.info("%s: switched to incremental vacuum (one VACUUM)", self.path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- entries -----------------------------------------------------------------------------

    def last_seq(self) -> int:
        with self._lock:
            return self._last_seq()

    def _last_seq(self) -> int:
        row = self._db.execute(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM entries), 0), "
            "COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'retired_seq'), 0))"
        ).fetchone()
        return int(row[0] or 0)

    def _set_retired_seq(self, seq: int) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES ('retired_seq', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = "
            "MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            (str(seq),),
        )

    def recent(self, limit: int) -> list[StoredEntry]:
        """The newest *limit* entries still holding data, oldest first, contiguous in seq."""
        with self._lock:
            return self._recent(limit)

    def _recent(self, limit: int) -> list[StoredEntry]:
        rows = self._db.execute(
            "SELECT seq, feed, data FROM entries WHERE data IS NOT NULL ORDER BY seq DESC LIMIT ?",
            (limit,),
        ).fetchall()
        rows.reverse()
        # Keep only the contiguous tail, so that position arithmetic on seq holds.
        start = len(rows)
        while start > 0 and (start == len(rows) or rows[start - 1][0] == rows[start][0] - 1):
            start -= 1
        return [
            StoredEntry(int(seq), format_cursor(self.log_id, int(seq)), str(feed), str(data))
            for seq, feed, data in rows[start:]
        ]

    def snapshot(self, backlog: int) -> Snapshot:
        """Newest entries, head and counts, read in one transaction (a consistent picture even
        while another process writes)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                return Snapshot(self._recent(backlog), self._last_seq(), self._entry_counts())
            finally:
                self._db.execute("COMMIT")

    def entry_counts(self) -> dict[str, int]:
        with self._lock:
            return self._entry_counts()

    def _entry_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT feed, entries FROM feed_counts").fetchall()
        return {str(feed): int(count) for feed, count in rows if count}

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes whenever another connection commits."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def entries_after(self, seq: int, limit: int) -> list[tuple[int, str, str | None]]:
        """``(seq, feed, data)`` of up to *limit* entries after *seq*, oldest first; ``data`` is
        None for an entry without its JSON (a version-1 database's pruned rows)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, feed, data FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [(int(s), str(f), None if d is None else str(d)) for s, f, d in rows]

    def insert_new(
        self,
        items: Sequence[tuple[str, str, _T]],
        render: Callable[[int, _T], str],
        at: float | Callable[[_T], float] | None = None,
        meta: Mapping[str, str] | None = None,
        texts: Mapping[str, str] | None = None,
    ) -> list[tuple[StoredEntry, _T]]:
        """Store the ``(id, feed, entry)`` triples whose id is new, in one transaction.

        New rows get the next seqs in order; ``render(seq, entry)`` makes the stored JSON (the
        caller puts the cursor into it); the entry's text goes into the search index in the
        same transaction; *at* (default: now; or a function of the entry) is when they are
        stored. Known ids (stored, retired or dropped), and repeats within *items*, are
        skipped. *meta* is written to ``meta`` in the same transaction (a copy's position).
        *texts* are entries' content texts by id, worked out before (the parse worker's), that
        the index takes instead of working them out again.
        Returns what was stored, in order.
        """
        stored: list[tuple[StoredEntry, _T]] = []
        now = time.time()
        added: dict[str, int] = {}
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            seq = self._last_seq()
            for entry_id, feed, item in items:
                when = now if at is None else at(item) if callable(at) else at
                if self._seen(entry_id, when):
                    continue
                seq += 1
                text = render(seq, item)
                self._db.execute(
                    "INSERT INTO entries(seq, id, feed, data, at) VALUES (?, ?, ?, ?, ?)",
                    (seq, entry_id, feed, text, when),
                )
                indexed = search_text(item, texts.get(entry_id) if texts else None)
                if indexed is not None:
                    self._db.execute(_INSERT_FTS, (seq, *indexed))
                added[feed] = added.get(feed, 0) + 1
                cursor = format_cursor(self.log_id, seq)
                stored.append((StoredEntry(seq, cursor, feed, text), item))
            self._db.executemany(
                "INSERT INTO feed_counts(feed, entries) VALUES (?, ?) "
                "ON CONFLICT(feed) DO UPDATE SET entries = entries + excluded.entries",
                list(added.items()),
            )
            if meta:
                self._db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    list(meta.items()),
                )
        return stored

    def meta_value(self, key: str) -> str | None:
        """The value of *key* in ``meta`` (None: not set)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _seen(self, entry_id: str, now: float) -> bool:
        """Whether *entry_id* is stored, retired or was dropped by a rule (the lock held). A
        retired id offered again is seen *now* (it is remembered for longer)."""
        row = self._db.execute(
            "SELECT EXISTS(SELECT 1 FROM entries WHERE id = ?) "
            "OR EXISTS(SELECT 1 FROM dropped WHERE id = ?)",
            (entry_id, entry_id),
        ).fetchone()
        if row[0]:
            return True
        touched = self._db.execute(
            "UPDATE retired SET at = MAX(at, ?) WHERE id = ?", (now, entry_id)
        ).rowcount
        return bool(touched)

    def mark_seen(self, items: Sequence[tuple[str, str]], at: float | None = None) -> list[str]:
        """Remember the ``(id, feed)`` pairs as dropped, in one transaction; return the ids
        that were neither stored nor dropped before."""
        new: list[str] = []
        when = time.time() if at is None else at
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for entry_id, feed in items:
                if self._seen(entry_id, when):
                    continue
                self._db.execute(
                    "INSERT INTO dropped(id, feed, at) VALUES (?, ?, ?)", (entry_id, feed, when)
                )
                new.append(entry_id)
        return new

    # -- history: retention, figures ---------------------------------------------------------

    def retire(
        self, *, before: float | None, keep: int, batch: int, now: float | None = None
    ) -> Retired:
        """Delete up to *batch* of the oldest entries, in one short transaction: those stored
        before *before* (Unix seconds; None: no age limit) or beyond the newest *keep* (0: no
        count limit). Deletion stops at the first entry that may stay, so the rows keep one
        contiguous range (a clock that stepped back never makes a hole). Their ids move to
        ``retired`` (seen *now*), their text leaves the index."""
        if before is None and keep <= 0:
            return Retired(0)
        when = time.time() if now is None else now
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            first, last = self._db.execute(_BOUNDS).fetchone()
            if first is None:
                return Retired(0)
            count = int(last) - int(first) + 1
            rows = self._db.execute(
                "SELECT seq, id, at FROM entries ORDER BY seq LIMIT ?", (batch,)
            ).fetchall()
            taken = 0
            for _, _, stored_at in rows:
                too_many = keep > 0 and count - taken > keep
                too_old = before is not None and stored_at is not None and stored_at < before
                if not (too_many or too_old):
                    break
                taken += 1
            if taken == 0:
                return Retired(0)
            through = int(rows[taken - 1][0])
            self._db.executemany(
                "INSERT INTO retired(id, at) VALUES (?, ?) "
                "ON CONFLICT(id) DO UPDATE SET at = MAX(at, excluded.at)",
                [(entry_id, when) for _, entry_id, _ in rows[:taken]],
            )
            self._db.execute("DELETE FROM entries_fts WHERE rowid <= ?", (through,))
            self._db.execute("DELETE FROM entries WHERE seq <= ?", (through,))
            self._set_retired_seq(through)
        return Retired(taken, through, more=taken == len(rows) == batch)

    def touch_retired(
        self, ids: Collection[str], now: float | None = None, stale_before: float | None = None
    ) -> int:
        """Mark the retired ones of *ids* as seen *now* (feeds still list them), those last
        seen before *stale_before* (default: *now*) only; return how many."""
        when = time.time() if now is None else now
        stale = when if stale_before is None else stale_before
        touched = 0
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for entry_id in ids:
                touched += self._db.execute(
                    "UPDATE retired SET at = ? WHERE id = ? AND at < ?", (when, entry_id, stale)
                ).rowcount
        return touched

    def forget(self, before: float, batch: int) -> int:
        """Forget up to *batch* retired ids last seen before *before*, in one transaction; how
        many (fewer than *batch*: nothing more to forget now)."""
        with self._lock, self._db:
            return int(
                self._db.execute(
                    "DELETE FROM retired WHERE id IN "
                    "(SELECT id FROM retired WHERE at < ? ORDER BY at LIMIT ?)",
                    (before, batch),
                ).rowcount
            )

    def vacuum_step(self, pages: int) -> int:
        """Give up to *pages* free pages back to the file system (incremental vacuum); return
        how many free pages are left. The last step checkpoints the WAL (passively)."""
        with self._lock:
            if int(self._db.execute("PRAGMA freelist_count").fetchone()[0]) > 0:
                # Run to completion (sqlite3's execute() would take one step: one page).
                self._db.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
            free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
            if free == 0:  # done: copy the WAL back now, so the file shrinks (never waits)
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            return free

    def merge_step(self, pages: int) -> bool:
        """Merge segments of the full-text index: about *pages* leaf pages (4 KiB each) in one
        transaction of its own, taken from a level with ``usermerge`` segments or more; whether
        it found work (ask again until it does not). A step ends at the first word boundary
        after *pages*, so one word's position list is the most it can write past that."""
        with self._lock:
            before = self._db.total_changes
            self._db.execute(
                "INSERT INTO entries_fts(entries_fts, rank) VALUES ('merge', ?)", (int(pages),)
            )
            return self._db.total_changes - before >= 2  # FTS5: fewer means nothing to merge

    def history_figures(self) -> HistoryFigures:
        """Entries stored, the oldest of them, the database's size: a few index look-ups."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                first, last = self._db.execute(_BOUNDS).fetchone()
                oldest_at = None
                if first is not None:
                    row = self._db.execute(
                        "SELECT at FROM entries WHERE seq = ?", (first,)
                    ).fetchone()
                    oldest_at = None if row is None or row[0] is None else float(row[0])
                head = self._last_seq()
                page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
                pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
                free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
            finally:
                self._db.execute("COMMIT")
        entries = 0 if first is None else int(last) - int(first) + 1
        return HistoryFigures(
            entries=entries,
            oldest_seq=None if first is None else int(first),
            oldest_at=oldest_at,
            head=head,
            database_bytes=pages * page_size,
            free_bytes=free * page_size,
        )

    # -- feeds -------------------------------------------------------------------------------

    def feed_states(self) -> dict[str, FeedState]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_FEED_COLUMNS)} FROM feeds").fetchall()
        return {row[0]: FeedState(*row) for row in rows}

    def save_feed_state(self, state: FeedState) -> None:
        self._upsert("feeds", _FEED_COLUMNS, asdict(state))

    # -- WebSub subscriptions ----------------------------------------------------------------

    def subscriptions(self) -> dict[str, Subscription]:
        columns = ", ".join(_SUBSCRIPTION_COLUMNS)
        with self._lock:
            rows = self._db.execute(f"SELECT {columns} FROM subscriptions").fetchall()
        subscriptions = {}
        for row in rows:
            sub = _subscription(row)
            subscriptions[sub.feed_id] = sub
        return subscriptions

    def subscription(self, feed_id: str) -> Subscription | None:
        with self._lock:
            return self._subscription_where("feed_id", feed_id)

    def subscription_by_token(self, token: str) -> Subscription | None:
        with self._lock:
            return self._subscription_where("token", token)

    def _subscription_where(self, column: str, value: str) -> Subscription | None:
        columns = ", ".join(_SUBSCRIPTION_COLUMNS)
        row = self._db.execute(
            f"SELECT {columns} FROM subscriptions WHERE {column} = ?", (value,)
        ).fetchone()
        return None if row is None else _subscription(row)

    def save_subscription(self, subscription: Subscription) -> None:
        values = asdict(subscription)
        values["push_healthy"] = int(subscription.push_healthy)
        self._upsert("subscriptions", _SUBSCRIPTION_COLUMNS, values)

    def replace_subscription(
        self, feed_id: str, expected: Subscription | None, new: Subscription | None
    ) -> bool:
        """Compare and set: write *new* (``None``: delete) as *feed_id*'s subscription only if
        the stored one is *expected* (``None``: there is none); False when it is not (nothing
        written). ValueError if another feed has *new*'s token."""
        with self._lock, self._db:
            if self._subscription_where("feed_id", feed_id) != expected:
                return False
            if new is None:
                self._db.execute("DELETE FROM subscriptions WHERE feed_id = ?", (feed_id,))
                return True
            values = asdict(new)
            values["push_healthy"] = int(new.push_healthy)
            try:
                self._db.execute(_upsert_sql("subscriptions", _SUBSCRIPTION_COLUMNS), values)
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"subscription of {feed_id}: callback token already used") from exc
            return True

    def delete_subscription(self, feed_id: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM subscriptions WHERE feed_id = ?", (feed_id,))

    def _upsert(self, table: str, columns: tuple[str, ...], values: dict[str, object]) -> None:
        with self._lock, self._db:
            self._db.execute(_upsert_sql(table, columns), values)


def _upsert_sql(table: str, columns: tuple[str, ...]) -> str:
    """Insert a row, or update every column of the row with the same key (the first column)."""
    names = ", ".join(columns)
    marks = ", ".join(f":{c}" for c in columns)
    updates = ", ".join(f"{c}=excluded.{c}" for c in columns[1:])
    return (
        f"INSERT INTO {table}({names}) VALUES ({marks}) "
        f"ON CONFLICT({columns[0]}) DO UPDATE SET {updates}"
    )


def _subscription(row: Sequence[Any]) -> Subscription:
    sub = Subscription(*row)
    sub.push_healthy = bool(sub.push_healthy)
    return sub
