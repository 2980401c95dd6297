"""Searching the stored history: SQLite FTS5 over the entries of the log's database.

:class:`HistoryReader` answers :class:`~feedstream.core.search.SearchPlan` questions from
connections of its own to the database file (WAL: readers never block the writer, and a long
search never holds the :class:`~feedstream.log.store.Store`'s lock). Its methods block: the
service runs them in worker threads, as many at once as it has connections.

A search is two statements in one read transaction (one snapshot of the database):

1. the page: the rowids (seqs) matching the ``MATCH`` expression and the SQL filters, up to the
   head the first page saw, after the cursor, one more than asked for (is there a next page?).
   Newest first is a walk down the index in rowid order. Ranked is by bm25 (then newest first)
   within a window of the newest :data:`~feedstream.core.search.RANK_WINDOW` matches (the
   window's lowest seq is found by walking down that many matches), then the next window:
   scoring costs per match, a window bounds it;
2. per result, its JSON and the marked title and snippets (``highlight()``, ``snippet()``),
   computed for the page only, never for every match.

Every statement runs under a time budget (a progress handler): a search that would take longer
is abandoned with :class:`SearchTimeout`, so one expensive question cannot hold a connection
for minutes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedstream.core.search import (
    COLUMNS,
    MARK_CLOSE,
    MARK_OPEN,
    RANK_WINDOW,
    WEIGHTS,
    SearchCursor,
    SearchPlan,
    marked_html,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_BUDGET", "HistoryReader", "SearchHit", "SearchPage", "SearchTimeout"]

DEFAULT_BUDGET = 10.0  # seconds one search may take at most
SNIPPET_TOKENS = 32  # words around the matches in a snippet
_ELLIPSIS = "…"
_PROGRESS_STEPS = 20_000  # SQLite virtual machine steps between two looks at the clock

_BM25 = f"bm25(entries_fts, {', '.join(str(w) for w in WEIGHTS)})"
_TITLE = COLUMNS.index("title")
_SUMMARY = COLUMNS.index("summary")
_CONTENT = COLUMNS.index("content")


class SearchTimeout(Exception):
    """A search took longer than its budget and was abandoned."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One result: the stored entry, and its title and snippet as safe HTML with ``<mark>``."""

    seq: int
    entry: dict[str, Any]
    title_html: str
    snippet_html: str
    score: float  # bm25: lower is more relevant (0.0 with order "new")


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of results; *next* is where the following page starts (None: the last)."""

    hits: list[SearchHit]
    next: SearchCursor | None


class HistoryReader:
    """Read-only connections to the log's database at *path*, for searches."""

    def __init__(
        self,
        path: Path | str,
        *,
        connections: int = 2,
        budget: float = DEFAULT_BUDGET,
        rank_window: int = RANK_WINDOW,
    ) -> None:
        self.path = Path(path)
        self.connections = connections
        self.budget = budget
        self.rank_window = rank_window
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA query_only=1")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA cache_size=-32768")  # KiB: 32 MiB of pages per connection
        return db

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise RuntimeError("the history reader is closed")
            if self._idle:
                return self._idle.pop()
        db = self._connect()
        with self._lock:
            self._all.append(db)
        return db

    def _release(self, db: sqlite3.Connection) -> None:
        with self._lock:
            if self._closed:
                db.close()
            else:
                self._idle.append(db)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()

    def search(
        self, plan: SearchPlan, *, order: str, limit: int, cursor: SearchCursor | None
    ) -> SearchPage:
        """One page of results for *plan* (blocking: run it in a worker thread)."""
        db = self._acquire()
        deadline = time.monotonic() + self.budget
        db.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)
        try:
            db.execute("BEGIN")
            try:
                return self._search(db, plan, order, limit, cursor)
            finally:
                db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise SearchTimeout(f"the search took longer than {self.budget:g} s") from None
            raise
        finally:
            db.set_progress_handler(None, 0)
            self._release(db)

    def _search(
        self,
        db: sqlite3.Connection,
        plan: SearchPlan,
        order: str,
        limit: int,
        cursor: SearchCursor | None,
    ) -> SearchPage:
        if cursor is None:
            head = int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()[0])
        else:
            head = cursor.head
        query = _Query(plan)
        if order == "rank":
            rows = self._ranked(db, query, head, cursor, limit + 1)
        else:
            below = head + 1 if cursor is None else cursor.seq
            rows = [
                SearchCursor(head, seq) for (seq,) in db.execute(*query.newest(below, limit + 1))
            ]
        page, more = rows[:limit], len(rows) > limit
        hits = [hit for at in page if (hit := _hit(db, plan, at.seq, at.score)) is not None]
        return SearchPage(hits, page[-1] if more and page else None)

    def _ranked(
        self,
        db: sqlite3.Connection,
        query: _Query,
        head: int,
        cursor: SearchCursor | None,
        wanted: int,
    ) -> list[SearchCursor]:
        """Up to *wanted* results in rank order after *cursor*: by bm25 within the window of
        the newest :attr:`rank_window` matches at or below ``top``, then the next window."""
        if cursor is None:
            top, after = head, None
            floor = self._floor(db, query, top)
        else:
            top, floor, after = cursor.top, cursor.floor, (cursor.score, cursor.seq)
        rows: list[SearchCursor] = []
        while top >= 1:
            need = wanted - len(rows)
            found = db.execute(*query.ranked(top, floor, after, need)).fetchall()
            rows += [SearchCursor(head, int(seq), float(score), top, floor) for seq, score in found]
            if len(found) == need or floor <= 1:
                break
            top, after = floor - 1, None  # this window is done: the next (older) one
            floor = self._floor(db, query, top)
        return rows

    def _floor(self, db: sqlite3.Connection, query: _Query, top: int) -> int:
        """The lowest seq of the window of the newest :attr:`rank_window` matches at or
        below *top* (1 when fewer match: the window reaches the start)."""
        row = db.execute(*query.nth_newest(top, self.rank_window)).fetchone()
        return 1 if row is None else max(1, int(row[0]))


class _Query:
    """The SQL statements of one plan: ``(sql, params)`` pairs for ``execute``."""

    def __init__(self, plan: SearchPlan) -> None:
        self.match = plan.match
        self.join = " JOIN entries AS e ON e.seq = entries_fts.rowid" if plan.where else ""
        self.where = f" AND ({plan.where})" if plan.where else ""
        self.params = plan.params

    def _select(self, columns: str, bounds: str) -> str:
        return (
            f"SELECT {columns} FROM entries_fts{self.join} "
            f"WHERE entries_fts MATCH ? AND {bounds}{self.where}"
        )

    def newest(self, below: int, limit: int) -> tuple[str, list[Any]]:
        sql = self._select("entries_fts.rowid", "entries_fts.rowid < ?")
        sql += " ORDER BY entries_fts.rowid DESC LIMIT ?"
        return sql, [self.match, below, *self.params, limit]

    def nth_newest(self, top: int, n: int) -> tuple[str, list[Any]]:
        sql = self._select("entries_fts.rowid", "entries_fts.rowid <= ?")
        sql += " ORDER BY entries_fts.rowid DESC LIMIT 1 OFFSET ?"
        return sql, [self.match, top, *self.params, n - 1]

    def ranked(
        self, top: int, floor: int, after: tuple[float, int] | None, limit: int
    ) -> tuple[str, list[Any]]:
        params: list[Any] = [self.match, floor, top, *self.params]
        sql = self._select(
            f"entries_fts.rowid, {_BM25} AS score", "entries_fts.rowid BETWEEN ? AND ?"
        )
        if after is not None:  # keyset: after (score, seq) in (score, seq DESC) order
            sql += f" AND ({_BM25} > ? OR ({_BM25} = ? AND entries_fts.rowid < ?))"
            params += [after[0], after[0], after[1]]
        sql += " ORDER BY score, entries_fts.rowid DESC LIMIT ?"
        return sql, [*params, limit]


_DETAIL = (
    f"SELECT highlight(entries_fts, {_TITLE}, :open, :close), "
    f"snippet(entries_fts, {_SUMMARY}, :open, :close, :dots, {SNIPPET_TOKENS}), "
    f"snippet(entries_fts, {_CONTENT}, :open, :close, :dots, {SNIPPET_TOKENS}), e.data "
    "FROM entries_fts JOIN entries AS e ON e.seq = entries_fts.rowid "
    "WHERE entries_fts MATCH :match AND entries_fts.rowid = :seq"
)


def _hit(db: sqlite3.Connection, plan: SearchPlan, seq: int, score: float) -> SearchHit | None:
    """The result *seq*: its entry, marked title and the best snippet (one with a match: the
    summary's, else the content's; else the summary, else the start of the content)."""
    row = db.execute(
        _DETAIL,
        {
            "open": MARK_OPEN,
            "close": MARK_CLOSE,
            "dots": _ELLIPSIS,
            "match": plan.match,
            "seq": seq,
        },
    ).fetchone()
    if row is None or row[3] is None:
        return None
    title, summary, content, data = row
    try:
        entry = json.loads(data)
    except ValueError:
        logger.warning("history: entry %d is not valid JSON; left out", seq)
        return None
    snippets = [text for text in (summary, content) if text]
    marked = [text for text in snippets if MARK_OPEN in text]
    snippet = (marked or snippets or [""])[0]
    return SearchHit(seq, entry, marked_html(title), marked_html(snippet), score)
