"""The cursor log: every new entry gets the next cursor, and listeners wait for new ones.

Routes talk only to the :class:`CursorLog` interface (append, read after a cursor, wait for
new), so another backend (say, one shared by several processes) can replace
:class:`SQLiteCursorLog` without touching them.

Cursors are opaque strings ``"<log id>-<seq>"``: the log id names the database that issued
them, so a cursor from another database (or garbage) is answered with ``reset`` instead of being
misread as a position. ``seq`` counts entries densely from 1; the in-memory ring holds the
newest ``backlog`` of them, serialized once, so a read is slicing a list and joining strings.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Protocol

import trio

from .store import Snapshot, Store, StoredEntry, format_cursor

logger = logging.getLogger(__name__)

PAGE_CACHE = 4096  # distinct questions answered per head before the cache starts over

__all__ = ["CursorLog", "Offload", "Page", "SQLiteCursorLog", "format_time"]

#: Runs a blocking function away from the event loop: ``trio.to_thread.run_sync`` or, in tests on
#: virtual time, an inline runner (a worker thread would let the autojump clock run ahead).
Offload = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Page:
    """One answer of the log: entries after a cursor, and where to resume."""

    cursor: str
    entries: Sequence[StoredEntry]
    reset: bool = False

    @cached_property
    def body(self) -> bytes:
        """The ``/api/entries`` body, joining the entries' stored JSON without re-encoding.

        Built once per page; the log hands the same page to every listener that asks the same
        question, so a fan-out serializes each answer once.
        """
        items = ",".join(entry.json for entry in self.entries)
        reset = "true" if self.reset else "false"
        return (
            f'{{"cursor":{json.dumps(self.cursor)},"entries":[{items}],"reset":{reset}}}'.encode()
        )

    @cached_property
    def events(self) -> bytes:
        """The page as Server-Sent Events: ``reset`` first if it is one, then one per entry."""
        frames = []
        if self.reset:
            frames.append(f"event: reset\ndata: {json.dumps({'cursor': self.cursor})}\n\n")
        frames.extend(f"id: {e.cursor}\nevent: entry\ndata: {e.json}\n\n" for e in self.entries)
        return "".join(frames).encode()


class CursorLog(Protocol):
    @property
    def cursor(self) -> str:
        """The cursor of the newest entry (the log's head)."""
        ...

    def read(self, after: str | None, *, feeds: Collection[str] | None, limit: int) -> Page:
        """Entries after *after* at once (newest *limit* when *after* is None)."""
        ...

    async def wait(self, after: str | None, *, feeds: Collection[str] | None) -> None:
        """Return as soon as :meth:`read` has something for *after* (or the log is closed).

        Never returns by itself otherwise: the caller bounds it with a cancel scope.
        """
        ...

    async def append(self, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Store the new ones among *entries*, give them cursors and wake the waiters."""
        ...

    def counts(self) -> Mapping[str, int]:
        """Entries stored per feed."""
        ...

    @property
    def committed_at(self) -> float:
        """When (``trio.current_time()``) the head last moved: the start of a fan-out."""
        ...

    def close(self) -> None:
        """Answer every waiter now (shutdown); later waits return at once."""
        ...

    @property
    def closed(self) -> bool: ...


def format_time(timestamp: float) -> str:
    """RFC 3339 UTC with ``Z``, seconds precision."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Ring:
    """The newest *capacity* entries, addressable by seq in O(1)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: list[StoredEntry] = []
        self._start = 0  # index of the oldest visible item

    def extend(self, items: Sequence[StoredEntry]) -> None:
        self._items.extend(items)
        self._start = max(0, len(self._items) - self.capacity)
        if self._start > self.capacity:  # compact now and then: amortized O(1)
            del self._items[: self._start]
            self._start = 0

    @property
    def first_seq(self) -> int | None:
        return self._items[self._start].seq if len(self._items) > self._start else None

    def after(self, seq: int) -> list[StoredEntry]:
        """Visible items with a seq greater than *seq*, oldest first."""
        first = self.first_seq
        if first is None:
            return []
        return self._items[self._start + max(0, seq - first + 1) :]

    def newest(self, limit: int, feeds: Collection[str] | None) -> list[StoredEntry]:
        found: list[StoredEntry] = []
        for index in range(len(self._items) - 1, self._start - 1, -1):
            if len(found) >= limit:
                break
            item = self._items[index]
            if feeds is None or item.feed in feeds:
                found.append(item)
        found.reverse()
        return found


class SQLiteCursorLog:
    """The cursor log kept in :class:`~feedstream.store.Store`, with an in-memory ring.

    *snapshot* is ``store.snapshot(backlog)``, read by the caller (in a worker thread).
    """

    def __init__(
        self,
        store: Store,
        snapshot: Snapshot,
        *,
        backlog: int,
        offload: Offload = trio.to_thread.run_sync,
        clock: Callable[[], float] | None = None,
        coalesce: float = 0.0,
    ) -> None:
        self._store = store
        self._backlog = backlog
        self._offload = offload
        self._now = clock or time.time
        self._log_id = store.log_id
        self._ring = _Ring(backlog)
        self._ring.extend(snapshot.recent)
        self._head = snapshot.head
        self._counts = dict(snapshot.counts)
        self._write_lock = trio.Lock()
        self._changed = trio.Event()
        self._committed_at = trio.current_time()
        self._closed = False
        self._pruned_at = 0
        self._coalesce = coalesce
        self._dirty = trio.Event()  # set by append, for the waker task
        self._waker = False  # is run() coalescing wake-ups?
        # Answers for the current head, by question: listeners asking the same share one page.
        self._pages: dict[tuple[str | None, frozenset[str] | None, int], Page] = {}

    # -- cursors -----------------------------------------------------------------------------

    def _format(self, seq: int) -> str:
        return format_cursor(self._log_id, seq)

    def _parse(self, cursor: str) -> int | None:
        log_id, _, seq = cursor.rpartition("-")
        if log_id != self._log_id or not seq.isdigit() or len(seq) > 18:
            return None
        return int(seq)

    @property
    def cursor(self) -> str:
        return self._format(self._head)

    def counts(self) -> Mapping[str, int]:
        return self._counts

    @property
    def committed_at(self) -> float:
        return self._committed_at

    # -- reading -----------------------------------------------------------------------------

    def read(self, after: str | None, *, feeds: Collection[str] | None, limit: int) -> Page:
        key = (after, feeds if feeds is None else frozenset(feeds), limit)
        page = self._pages.get(key)
        if page is None:
            if len(self._pages) >= PAGE_CACHE:
                self._pages.clear()
            page = self._pages[key] = self._read(after, feeds, limit)
        return page

    def _read(self, after: str | None, feeds: Collection[str] | None, limit: int) -> Page:
        if after is None:
            return Page(self.cursor, self._ring.newest(limit, feeds))
        seq = self._parse(after)
        first = self._ring.first_seq
        oldest_known = first - 1 if first is not None else self._head
        if seq is None or seq > self._head or seq < oldest_known:
            return Page(self.cursor, self._ring.newest(limit, feeds), reset=True)
        if seq == self._head:
            return Page(after, ())
        pending = self._ring.after(seq)
        if feeds is None:
            taken = pending[:limit]
        else:
            taken = []
            for entry in pending:
                if entry.feed in feeds:
                    taken.append(entry)
                    if len(taken) == limit:
                        break
        # Resume after the last entry given; when the page is not full, every pending entry was
        # looked at, so the cursor moves to the head and skips what the filter left out.
        if len(taken) == limit and taken[-1].seq < self._head:
            return Page(self._format(taken[-1].seq), taken)
        return Page(self.cursor, taken)

    async def wait(self, after: str | None, *, feeds: Collection[str] | None) -> None:
        while not self._closed and after is not None:
            page = self.read(after, feeds=feeds, limit=1)
            if page.entries or page.reset:
                return
            await self._changed.wait()

    # -- writing -----------------------------------------------------------------------------

    async def append(self, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if not entries:
            return []
        received = format_time(self._now())
        items = [(str(e["id"]), str(e["feed"]), dict(e, received=received)) for e in entries]

        def render(seq: int, entry: dict[str, Any]) -> str:
            entry["cursor"] = self._format(seq)
            return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))

        async with self._write_lock:
            stored = await self._offload(self._store.insert_new, items, render)
            if not stored:
                return []
            # Committed: only now does anyone get to see them.
            self._ring.extend([row for row, _ in stored])
            self._head = stored[-1][0].seq
            self._committed_at = trio.current_time()
            self._pages.clear()
            for row, _ in stored:
                self._counts[row.feed] = self._counts.get(row.feed, 0) + 1
            # Wake before anything else can be cancelled: the entries are committed.
            if self._waker:
                self._dirty.set()
            else:
                self._wake()
            logger.debug("log: %d new entries, head %s", len(stored), self._head)
            if self._head - self._pruned_at >= max(1, self._backlog // 4):
                await self._offload(self._store.prune, self._backlog)
                self._pruned_at = self._head
        return [entry for _, entry in stored]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Coalesce wake-ups, forever: one per burst of appends within the window.

        The first append of a burst starts the window; what is appended before it closes goes
        out in the same answers. Appenders never wait for it. Without this task running (or
        with a zero window) every append wakes the waiters at once.
        """
        self._waker = self._coalesce > 0
        task_status.started()
        try:
            while self._waker:
                await self._dirty.wait()
                await trio.sleep(self._coalesce)
                self._dirty = trio.Event()
                self._wake()
        finally:
            self._waker = False

    def _wake(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def close(self) -> None:
        self._closed = True
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed
