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

from feedstream.log.store import Snapshot, Store, StoredEntry, format_cursor

logger = logging.getLogger(__name__)

PAGE_CACHE = 4096  # distinct questions answered per head before the cache starts over
PACE_TICK = 0.005  # seconds between two looks at whether a round is over
PACE_QUIET = 0.05  # a round is over when nobody came back for this long
PACE_LIMIT = 10.0  # and at the latest after this long
#: Streaming waiters (SSE) woken per scheduler pass. Thousands of open streams woken at once
#: make one pass so long that every other task (a push being taken in) waits seconds for each
#: of its steps; in groups, pushes are acknowledged in between. Long-polls are woken all at
#: once: their answers then leave soonest, and their clean-up comes after. Measured at 10,000
#: streams (bench/fanout.py): groups of 32 beat 100 and 256 on fan-out and sustained delivery.
WAKE_GROUP = 32

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

    def read(
        self, after: str | None, *, feeds: Collection[str] | None, limit: int, fresh: bool = False
    ) -> Page:
        """Entries after *after* at once (newest *limit* when *after* is None).

        Committed entries are published to listeners in rounds (see ``run``); *fresh* reads
        (a client that will not wait) see every committed entry at once.
        """
        ...

    async def wait(
        self, after: str | None, *, feeds: Collection[str] | None, streaming: bool = False
    ) -> None:
        """Return as soon as :meth:`read` has something for *after* (or the log is closed).

        Never returns by itself otherwise: the caller bounds it with a cancel scope. It is
        :meth:`asking`, then :meth:`ready` / :meth:`changed` in a loop; the long-poll runs that
        loop itself, so that each parked listener keeps one coroutine frame less alive.
        *streaming* waiters (an open stream's producer) are woken in groups, see
        :data:`WAKE_GROUP`.
        """
        ...

    def asking(self) -> None:
        """A listener starts waiting (most likely right after its last answer): paces rounds."""
        ...

    def ready(self, after: str, *, feeds: Collection[str] | None) -> bool:
        """Whether :meth:`read` has something for *after* now, or the log is closed.

        ``True`` also counts the listener as leaving with news (this paces rounds too).
        """
        ...

    def changed(self, *, streaming: bool = False) -> Awaitable[None]:
        """Something to await that returns when what :meth:`ready` says may have changed."""
        ...

    async def append(self, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Store the new ones among *entries*, give them cursors and wake the waiters."""
        ...

    def counts(self) -> Mapping[str, int]:
        """Entries stored per feed."""
        ...

    @property
    def committed_at(self) -> float:
        """When (``trio.current_time()``) the newest visible entry was committed."""
        ...

    def answered(self) -> None:
        """A listener woken by :meth:`wait` has had its answer sent (this paces rounds)."""
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

    def after(self, seq: int, upto: int) -> list[StoredEntry]:
        """Visible items with a seq greater than *seq* and at most *upto*, oldest first."""
        first = self.first_seq
        if first is None or upto <= seq:
            return []
        return self._items[self._start + max(0, seq - first + 1) : self._start + upto - first + 1]

    def newest(self, limit: int, feeds: Collection[str] | None, upto: int) -> list[StoredEntry]:
        """The newest *limit* visible items up to seq *upto* (of *feeds*), oldest first."""
        found: list[StoredEntry] = []
        first = self.first_seq
        if first is None or upto < first:
            return found
        top = min(len(self._items) - 1, self._start + upto - first)
        for index in range(top, self._start - 1, -1):
            if len(found) >= limit:
                break
            item = self._items[index]
            if feeds is None or item.feed in feeds:
                found.append(item)
        found.reverse()
        return found


class _Batch:
    """Entries waiting for one transaction, from every append that came while it formed."""

    __slots__ = ("done", "error", "items", "new")

    def __init__(self, items: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.items = items
        self.new: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.done = trio.Event()


class SQLiteCursorLog:
    """The cursor log kept in :class:`~feedstream.log.store.Store`, with an in-memory ring.

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
        # Committed entries become visible in rounds: `_head` is what readers see (published),
        # `_committed` what SQLite holds. Without the waker task they are always equal.
        self._head = self._committed = snapshot.head
        self._counts = dict(snapshot.counts)
        self._write_lock = trio.Lock()
        self._batch: _Batch | None = None  # the next transaction, while it gathers entries
        self._waiters = trio.lowlevel.ParkingLot()  # long-polls: woken all at once each round
        self._streams = trio.lowlevel.ParkingLot()  # SSE producers: woken WAKE_GROUP at a time
        self._committed_at = self._published_at = trio.current_time()
        self._closed = False
        # Pacing (see run()): listeners that left a round, and came back asking again.
        self._left = self._returned = self._answered = 0
        self._returned_at = self._answered_at = 0.0
        self._pruned_at = 0
        self._coalesce = coalesce
        self._dirty = trio.Event()  # set by append, for the waker task
        self._waker = False  # is run() coalescing wake-ups?
        # Answers for the current head, by question: listeners asking the same share one page.
        self._pages: dict[tuple[str | None, frozenset[str] | None, int, bool], Page] = {}

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
        return self._published_at

    # -- reading -----------------------------------------------------------------------------

    def read(
        self, after: str | None, *, feeds: Collection[str] | None, limit: int, fresh: bool = False
    ) -> Page:
        key = (after, feeds if feeds is None else frozenset(feeds), limit, fresh)
        page = self._pages.get(key)
        if page is None:
            if len(self._pages) >= PAGE_CACHE:
                self._pages.clear()
            page = self._pages[key] = self._read(after, feeds, limit, fresh)
        return page

    def _read(
        self, after: str | None, feeds: Collection[str] | None, limit: int, fresh: bool
    ) -> Page:
        seq = None if after is None else self._parse(after)
        first = self._ring.first_seq
        oldest_known = first - 1 if first is not None else self._committed
        reset = after is not None and (seq is None or seq > self._committed or seq < oldest_known)
        # A first page or a reset answers at once: it may as well show every committed entry.
        head = self._committed if fresh or reset or after is None else self._head
        if after is None or reset:
            return Page(self._format(head), self._ring.newest(limit, feeds, head), reset=reset)
        assert seq is not None
        if seq >= head:  # nothing new in this view (a fresh cursor may be ahead of a round)
            return Page(after, ())
        pending = self._ring.after(seq, head)
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
        if len(taken) == limit and taken[-1].seq < head:
            return Page(self._format(taken[-1].seq), taken)
        return Page(self._format(head), taken)

    async def wait(
        self, after: str | None, *, feeds: Collection[str] | None, streaming: bool = False
    ) -> None:
        if after is None:
            return
        self.asking()
        while not self.ready(after, feeds=feeds):
            await self.changed(streaming=streaming)

    def asking(self) -> None:
        if not self._closed:
            self._returned += 1
            self._returned_at = trio.current_time()

    def ready(self, after: str, *, feeds: Collection[str] | None) -> bool:
        if self._closed:
            return True
        page = self.read(after, feeds=feeds, limit=1)
        if page.entries or page.reset:
            self._left += 1
            return True
        return False

    def changed(self, *, streaming: bool = False) -> Awaitable[None]:
        # Parks right away: nothing runs between a caller's ready() and this, so no wake-up
        # is missed.
        return (self._streams if streaming else self._waiters).park()

    # -- writing -----------------------------------------------------------------------------

    async def append(self, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if not entries:
            return []
        received = format_time(self._now())
        items = [(str(e["id"]), str(e["feed"]), dict(e, received=received)) for e in entries]

        def render(seq: int, entry: dict[str, Any]) -> str:
            entry["cursor"] = self._format(seq)
            return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))

        mine = {id(entry) for _, _, entry in items}
        batch = self._batch
        if batch is not None:  # a commit is being prepared: ride along with it
            batch.items.extend(items)
            await batch.done.wait()
            if batch.error is not None:
                raise batch.error
        else:
            batch = self._batch = _Batch(list(items))  # a list of its own: others extend it
            # Shielded: those riding along wait for this task, whatever happens to its caller.
            with trio.CancelScope(shield=True):
                try:
                    await self._commit(batch, render)
                except BaseException as exc:
                    batch.error = exc
                    raise
                finally:
                    if self._batch is batch:
                        self._batch = None
                    batch.done.set()
        return [entry for entry in batch.new if id(entry) in mine]

    async def _commit(self, batch: _Batch, render: Callable[[int, dict[str, Any]], str]) -> None:
        """Insert *batch* (and whatever joins it until the write lock is ours) in one go.

        Group commit: pushes arriving while the previous transaction runs share the next one,
        one trip to a worker thread for all of them instead of one each in single file.
        """
        async with self._write_lock:
            self._batch = None  # from here on, new appenders start the next batch
            stored = await self._offload(self._store.insert_new, batch.items, render)
            batch.new = [entry for _, entry in stored]
            if not stored:
                return
            # Committed: only now does anyone get to see them.
            self._ring.extend([row for row, _ in stored])
            self._committed = stored[-1][0].seq
            self._committed_at = trio.current_time()
            self._pages.clear()  # fresh reads see more now
            for row, _ in stored:
                self._counts[row.feed] = self._counts.get(row.feed, 0) + 1
            # Publish (or have run() publish) before anything else can be cancelled.
            if self._waker:
                self._dirty.set()
            else:
                self._publish()
            batch.done.set()  # those riding along need not wait for the pruning
            logger.debug("log: %d new entries, committed %s", len(stored), self._committed)
            if self._committed - self._pruned_at >= max(1, self._backlog // 4):
                await self._offload(self._store.prune, self._backlog)
                self._pruned_at = self._committed

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
                self._publish(streams=False)
                await self._wake_streams()
                await self._absorbed()
        finally:
            self._waker = False
            self._publish()

    def answered(self) -> None:
        self._answered += 1
        self._answered_at = trio.current_time()

    def _publish(self, *, streams: bool = True) -> None:
        """Make everything committed visible and wake the long-polls (and, unless told not to,
        the streams): a new round."""
        self._left = self._returned = self._answered = 0
        if self._head != self._committed:
            self._head = self._committed
            self._published_at = self._committed_at
            self._pages.clear()
        self._waiters.unpark_all()
        if streams:
            self._streams.unpark_all()

    async def _wake_streams(self) -> None:
        """Wake the streams parked now, :data:`WAKE_GROUP` per scheduler pass (FIFO: those
        parking meanwhile, on the new head, stay parked)."""
        left = len(self._streams)
        while left > 0 and not self._closed:
            woken = self._streams.unpark(count=min(WAKE_GROUP, left))
            if not woken:
                return
            left -= len(woken)
            await trio.lowlevel.checkpoint()

    async def _absorbed(self) -> None:
        """Wait until the listeners the last round answered have come back (most of them).

        Under a load the server cannot keep up with (10,000 long-polls and ten entries a
        second), rounds would otherwise overlap: each entry would start another wave of
        answers and re-polls before the last one is through, every listener would cycle as
        fast as the CPU allows for one entry per answer, and everything else (pushes being
        taken in) would wait behind them. Paced, each listener gets one answer per round with
        everything published since its last. With few listeners a round is over in
        milliseconds and pacing costs nothing.

        A round is over when nine in ten of those who left are back; or when nine in ten have
        been answered and nobody has come back for :data:`PACE_QUIET` s (a closed page never
        comes back, and hypercorn does not tell us it went: its answer still goes out); or
        after :data:`PACE_LIMIT` s.
        """
        started = trio.current_time()
        while not self._closed:
            await trio.sleep(PACE_TICK)
            now = trio.current_time()
            answered = self._answered >= 0.9 * self._left
            last = max(started, self._returned_at, self._answered_at)
            quiet = answered and now - last >= PACE_QUIET
            if self._returned >= 0.9 * self._left or quiet or now - started >= PACE_LIMIT:
                break

    def close(self) -> None:
        self._closed = True
        self._waiters.unpark_all()
        self._streams.unpark_all()

    @property
    def closed(self) -> bool:
        return self._closed
