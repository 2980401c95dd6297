"""The embedded log backend: entries in :class:`~feedstream.log.store.Store` (SQLite), the
newest ``backlog`` of them in an in-memory ring.

Appends are committed in one transaction per burst (group commit): appends that arrive while a
transaction is being written share the next one, one trip to a worker thread for all of them
instead of one each in single file behind the write lock. Only once committed are entries
readable and watchers told. A read is slicing the ring and never touches SQLite.

The ring is the live part only: the store keeps every entry's JSON for the retained history
(searched by :mod:`feedstream.log.history`, trimmed by the runtime's retention pass, see
:mod:`feedstream.service.history`); the ring is filled from the newest of them at start.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

from feedstream.core.times import format_rfc3339
from feedstream.log.base import Offload
from feedstream.log.cursors import Ring, RingReader, format_cursor
from feedstream.log.store import Snapshot, Store

logger = logging.getLogger(__name__)

__all__ = ["SQLiteLog"]


class _Batch:
    """Entries waiting for one transaction, from every append that came while it formed."""

    __slots__ = ("done", "error", "items", "new", "texts")

    def __init__(self, items: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.items = items
        self.texts: dict[str, str] = {}  # content texts by entry id, for the search index
        self.new: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.done = trio.Event()


class SQLiteLog(RingReader):
    """The :class:`~feedstream.log.base.Log` kept in a SQLite :class:`Store`.

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
    ) -> None:
        self._store = store
        self._backlog = backlog
        self._offload = offload
        self._now = clock or time.time
        self._log_id = store.log_id
        self._ring = Ring(backlog)
        self._ring.extend(snapshot.recent)
        self._head = snapshot.head
        self._counts = dict(snapshot.counts)
        self._write_lock = trio.Lock()
        self._batch: _Batch | None = None  # the next transaction, while it gathers entries
        self._watchers: list[Callable[[], None]] = []
        self._closed = False

    # -- reading (the rules are RingReader's) ------------------------------------------------

    def counts(self) -> Mapping[str, int]:
        return self._counts

    @property
    def head_seq(self) -> int:
        """The seq of the newest readable entry (what :attr:`head` names)."""
        return self._head

    @property
    def available(self) -> bool:
        return True  # a file on this machine: there is nothing to lose touch with

    def watch(self, callback: Callable[[], None]) -> None:
        self._watchers.append(callback)

    # -- writing -----------------------------------------------------------------------------

    async def append(
        self, entries: Sequence[Mapping[str, Any]], *, texts: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        if not entries:
            return []
        received = format_rfc3339(self._now())
        items = [(str(e["id"]), str(e["feed"]), dict(e, received=received)) for e in entries]
        mine = {id(entry) for _, _, entry in items}
        batch = self._batch
        if batch is not None:  # a commit is being prepared: ride along with it
            batch.items.extend(items)
            batch.texts.update(texts or {})
            await batch.done.wait()
            if batch.error is not None:
                raise batch.error
        else:
            batch = self._batch = _Batch(list(items))  # a list of its own: others extend it
            batch.texts.update(texts or {})
            # Shielded: those riding along wait for this task, whatever happens to its caller.
            with trio.CancelScope(shield=True):
                try:
                    await self._commit(batch)
                except BaseException as exc:
                    batch.error = exc
                    raise
                finally:
                    if self._batch is batch:
                        self._batch = None
                    batch.done.set()
        return [entry for entry in batch.new if id(entry) in mine]

    async def mark_seen(self, items: Sequence[tuple[str, str]]) -> list[str]:
        if not items:
            return []
        new: list[str] = await self._offload(self._store.mark_seen, list(items), self._now())
        return new

    def _render(self, seq: int, entry: dict[str, Any]) -> str:
        entry["cursor"] = format_cursor(self._log_id, seq)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))

    async def _commit(self, batch: _Batch) -> None:
        """Insert *batch* (and whatever joins it until the write lock is ours) in one go."""
        async with self._write_lock:
            self._batch = None  # from here on, new appenders start the next batch
            stored = await self._offload(
                self._store.insert_new,
                batch.items,
                self._render,
                self._now(),
                None,  # meta
                batch.texts,
            )
            batch.new = [entry for _, entry in stored]
            if not stored:
                return
            # Committed: only now does anyone get to see them.
            self._ring.extend([row for row, _ in stored])
            self._head = stored[-1][0].seq
            for row, _ in stored:
                self._counts[row.feed] = self._counts.get(row.feed, 0) + 1
            self._tell()  # before anything else can be cancelled
            logger.debug("log: %d new entries, head %s", len(stored), self._head)

    def _tell(self) -> None:
        """The head moved: call the watchers (unless closed)."""
        if not self._closed:
            for callback in self._watchers:
                callback()

    def close(self) -> None:
        self._closed = True
