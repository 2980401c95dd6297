"""The embedded SQLite store: entries (for dedup and catch-up) and per-feed fetch state.

The store is synchronous and thread-safe (one connection behind a lock), so the trio side calls
it from a worker thread and never blocks the event loop on disk I/O. The database runs in WAL
mode with ``synchronous=NORMAL``: a committed transaction survives a crash of the process.

Tables:

``entries(seq, id, feed, data)``
    ``seq`` is the position in the cursor log, assigned densely (1, 2, 3, ...) by the one writer.
    ``id`` is unique: inserting an id that is already there is a no-op, which is how entries are
    deduplicated across polls, pushes and restarts. ``data`` is the entry's JSON while the entry
    is inside the backlog, and NULL afterwards (the id stays, so dedup keeps working).
``dropped(id, feed, at)``
    Ids a rule dropped at ingest: never stored as entries, but seen, so that the next poll of
    the feed does not bring them back. An id in either table is a duplicate.
``feeds(id, ...)``
    What the poller needs to resume politely after a restart (ETag, Last-Modified, the URL after
    permanent redirects, failures, next poll) and what ``/api/feeds`` shows.
``subscriptions(feed_id, ...)``
    One WebSub subscription per feed: hub, topic, callback token, secret, state and lease, so
    subscriptions survive restarts.
``meta(key, value)``
    ``log_id``: a random name for this database, part of every cursor, so that a cursor issued
    by another database is recognised as foreign instead of being misread.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TypeVar

from feedstream.log.base import StoredEntry
from feedstream.log.cursors import format_cursor

logger = logging.getLogger(__name__)

__all__ = ["FeedState", "Snapshot", "Store", "Subscription"]

SCHEMA_VERSION = 1

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    seq  INTEGER PRIMARY KEY,
    id   TEXT NOT NULL UNIQUE,
    feed TEXT NOT NULL,
    data TEXT
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
);
"""


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


class Store:
    """One SQLite database file; every method may be called from any thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._lock, self._db:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: database schema {version} is newer than this feedstream "
                    f"({SCHEMA_VERSION}); upgrade feedstream or use another data_dir"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            row = self._db.execute("SELECT value FROM meta WHERE key='log_id'").fetchone()
            if row is None:
                self.log_id = secrets.token_hex(4)
                self._db.execute("INSERT INTO meta VALUES ('log_id', ?)", (self.log_id,))
            else:
                self.log_id = str(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- entries -----------------------------------------------------------------------------

    def last_seq(self) -> int:
        with self._lock:
            return self._last_seq()

    def _last_seq(self) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM entries").fetchone()
        return int(row[0] or 0)

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
        rows = self._db.execute("SELECT feed, COUNT(*) FROM entries GROUP BY feed").fetchall()
        return {str(feed): int(count) for feed, count in rows}

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes whenever another connection commits."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def entries_after(self, seq: int, limit: int) -> list[tuple[int, str, str | None]]:
        """``(seq, feed, data)`` of up to *limit* entries after *seq*, oldest first; ``data`` is
        None for an entry already pruned."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, feed, data FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [(int(s), str(f), None if d is None else str(d)) for s, f, d in rows]

    def insert_new(
        self, items: Sequence[tuple[str, str, _T]], render: Callable[[int, _T], str]
    ) -> list[tuple[StoredEntry, _T]]:
        """Store the ``(id, feed, item)`` triples whose id is new, in one transaction.

        New rows get the next seqs in order; ``render(seq, item)`` makes the stored JSON (the
        caller puts the cursor into it). Known ids, and repeats within *items*, are skipped.
        Returns what was stored, in order.
        """
        stored: list[tuple[StoredEntry, _T]] = []
        with self._lock, self._db:
            seq = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()[0])
            for entry_id, feed, item in items:
                if self._seen(entry_id):
                    continue
                seq += 1
                text = render(seq, item)
                self._db.execute(
                    "INSERT INTO entries(seq, id, feed, data) VALUES (?, ?, ?, ?)",
                    (seq, entry_id, feed, text),
                )
                cursor = format_cursor(self.log_id, seq)
                stored.append((StoredEntry(seq, cursor, feed, text), item))
        return stored

    def _seen(self, entry_id: str) -> bool:
        """Whether *entry_id* is stored, or was dropped by a rule (the lock held)."""
        row = self._db.execute(
            "SELECT EXISTS(SELECT 1 FROM entries WHERE id = ?) "
            "OR EXISTS(SELECT 1 FROM dropped WHERE id = ?)",
            (entry_id, entry_id),
        ).fetchone()
        return bool(row[0])

    def mark_seen(self, items: Sequence[tuple[str, str]], at: float | None = None) -> list[str]:
        """Remember the ``(id, feed)`` pairs as dropped, in one transaction; return the ids
        that were neither stored nor dropped before."""
        new: list[str] = []
        when = time.time() if at is None else at
        with self._lock, self._db:
            for entry_id, feed in items:
                if self._seen(entry_id):
                    continue
                self._db.execute(
                    "INSERT INTO dropped(id, feed, at) VALUES (?, ?, ?)", (entry_id, feed, when)
                )
                new.append(entry_id)
        return new

    def prune(self, keep: int) -> None:
        """Drop the data (not the id) of entries older than the newest *keep*."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE entries SET data = NULL WHERE data IS NOT NULL "
                "AND seq <= (SELECT MAX(seq) FROM entries) - ?",
                (keep,),
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
            sub = Subscription(*row)
            sub.push_healthy = bool(sub.push_healthy)
            subscriptions[sub.feed_id] = sub
        return subscriptions

    def save_subscription(self, subscription: Subscription) -> None:
        values = asdict(subscription)
        values["push_healthy"] = int(subscription.push_healthy)
        self._upsert("subscriptions", _SUBSCRIPTION_COLUMNS, values)

    def delete_subscription(self, feed_id: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM subscriptions WHERE feed_id = ?", (feed_id,))

    def _upsert(self, table: str, columns: tuple[str, ...], values: dict[str, object]) -> None:
        key = columns[0]
        names = ", ".join(columns)
        marks = ", ".join(f":{c}" for c in columns)
        updates = ", ".join(f"{c}=excluded.{c}" for c in columns[1:])
        with self._lock, self._db:
            self._db.execute(
                f"INSERT INTO {table}({names}) VALUES ({marks}) "
                f"ON CONFLICT({key}) DO UPDATE SET {updates}",
                values,
            )
