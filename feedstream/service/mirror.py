"""A node's own copy of the shared (Redis) log, for history search and retention.

With ``server.log = "redis://..."`` Redis keeps only the backlog (the stream is trimmed to
``MAXLEN ~ retention``). Every node that writes the log (roles ``all`` and ``ingest``) keeps the
whole history in a SQLite database of its own, ``data_dir/history.sqlite3``: the same
:class:`~feedstream.log.store.Store` (schema, FTS5 index, ``retired`` ids) as the SQLite log, so
search and retention are the same code (:class:`~feedstream.service.history.History`).

:class:`HistoryMirror` fills it. It follows the **stream**, not only this node's appends: every
entry any ingest node appended is copied, so every ingest node's history is complete and a
search answers the same on each of them. It reads from Redis (``XRANGE`` after its own
position, :meth:`~feedstream.log.redis.RedisLog.stream_after`), not from the ring: the ring
holds ``backlog`` entries only, and after a restart the copy resumes where it stopped, as far
back as the stream still reaches. It is woken by the log's watchers (the tail saw new entries,
or this node appended), and looks again every :data:`IDLE_LOOK` seconds regardless.

Each chunk of at most :data:`CHUNK` entries is one transaction in a worker thread
(:meth:`~feedstream.log.store.Store.insert_new`: dedup by id, the index, and the position
``<epoch>-<seq>`` in ``meta``, all in the same transaction), so a crash never loses the place
and never copies an entry twice. The stored JSON is the stream's, byte for byte (its cursor
included); an entry is "stored" (what retention counts from) when the log received it (its
``received``), not when it was copied.

Two things can make the copy incomplete, and both are logged and counted (``missed``):

* the stream was trimmed past the position (this node was down, or behind, for more than the
  stream's ``retention`` entries): the entries in between are not in this node's history;
* the Redis log started over (a new epoch: Redis restarted empty): the copy follows the new
  epoch from its start. Entries stored again under the new epoch with an id already here (or
  retired here) are skipped: the history keeps the first copy, with its old cursor.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import trio

from feedstream.log.base import Offload, StoredEntry
from feedstream.log.state import LogUnavailable
from feedstream.log.store import Store

logger = logging.getLogger(__name__)

__all__ = ["CHUNK", "FILE_NAME", "IDLE_LOOK", "POSITION_KEY", "HistoryMirror", "SharedLog"]

FILE_NAME = "history.sqlite3"  # in data_dir
POSITION_KEY = "mirror_position"  # meta: "<epoch>-<seq>" of the last stream entry copied
CHUNK = 500  # stream entries per XRANGE and per transaction
IDLE_LOOK = 30.0  # seconds: looks at the stream at least this often without news
RETRY = 1.0  # seconds before trying again after Redis could not be reached


class SharedLog(Protocol):
    """What the mirror needs of the shared log (:class:`~feedstream.log.redis.RedisLog`)."""

    @property
    def epoch(self) -> str: ...

    @property
    def head_seq(self) -> int: ...

    def watch(self, callback: Callable[[], None]) -> None: ...

    async def stream_after(self, seq: int, count: int) -> list[tuple[str, StoredEntry]]: ...


class HistoryMirror:
    """Copies every entry of *log* into *store* (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        log: SharedLog,
        *,
        offload: Offload = trio.to_thread.run_sync,
        chunk: int = CHUNK,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.store = store
        self.log = log
        self.chunk = chunk
        self._offload = offload
        self._now = clock or time.time
        self.epoch = ""  # the position in the stream: the last entry copied
        self.seq = 0
        self.head = 0  # the store's newest seq (its own numbering, not the stream's)
        self.copied = 0  # entries copied since the start
        self.missed = 0  # entries the stream no longer had when the copy got there
        self._watchers: list[Callable[[], None]] = []
        self._news = trio.Event()
        self._moved = trio.Event()
        self._started = False

    def watch(self, callback: Callable[[], None]) -> None:
        """Call *callback* (on the loop) whenever entries were copied into the store."""
        self._watchers.append(callback)

    def status(self) -> dict[str, Any]:
        """For ``/api/status``'s ``history``: where the copy is."""
        return {
            "source": "redis",
            "position": f"{self.epoch}-{self.seq}" if self.epoch else None,
            "behind": (
                max(0, self.log.head_seq - self.seq) if self.epoch == self.log.epoch else None
            ),
            "copied": self.copied,
            "missed": self.missed,
        }

    # -- the task ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Copy until cancelled: what the stream holds after the stored position, then every
        new entry as the log sees it."""
        position = await self._offload(self.store.meta_value, POSITION_KEY)
        if position:
            epoch, _, seq = position.rpartition("-")
            if seq.isdigit():
                self.epoch, self.seq = epoch, int(seq)
        self.head = await self._offload(self.store.last_seq)
        self.log.watch(self._told)
        self._started = True
        task_status.started()
        failures = 0
        while True:
            self._news = trio.Event()
            try:
                await self.sync()
            except LogUnavailable as exc:  # the tail reconnects; try again meanwhile
                failures += 1
                if failures == 1:
                    logger.warning("history: cannot copy the shared log now: %s", exc)
                await trio.sleep(RETRY)
                continue
            except Exception:  # the database (locked, a full disk): the place is kept
                failures += 1
                logger.exception("history: copying the shared log failed; retrying")
                await trio.sleep(min(RETRY * failures, IDLE_LOOK))
                continue
            if failures:
                logger.info("history: copying the shared log again")
                failures = 0
            with trio.move_on_after(IDLE_LOOK):
                await self._news.wait()

    def _told(self) -> None:
        self._news.set()

    async def sync(self) -> int:
        """Copy what the stream holds after the position, chunk by chunk, until the head the
        log knows; how many entries were stored."""
        stored = 0
        while True:
            epoch = self.log.epoch
            if epoch and epoch != self.epoch:
                if self.epoch:
                    logger.warning(
                        "history: the Redis log started over (epoch %s -> %s): copying the new "
                        "epoch from its start; entries already here keep their old cursors",
                        self.epoch,
                        epoch,
                    )
                self.epoch, self.seq = epoch, 0
            if self.seq >= self.log.head_seq:
                return stored
            raw = await self.log.stream_after(self.seq, self.chunk)
            batch = [entry for at, entry in raw if at == self.epoch and entry.seq > self.seq]
            if not batch:  # trimmed away, or another epoch: the tail will reload and tell us
                return stored
            if batch[0].seq != self.seq + 1:
                gone = batch[0].seq - self.seq - 1
                self.missed += gone
                logger.warning(
                    "history: the Redis stream no longer holds entries %d to %d of epoch %s "
                    "(trimmed before this node copied them): %d entries are missing from this "
                    "node's history (keep nodes running, or a larger stream retention)",
                    self.seq + 1,
                    batch[0].seq - 1,
                    self.epoch,
                    gone,
                )
            position = f"{self.epoch}-{batch[-1].seq}"
            head, count = await self._offload(self._copy, batch, position)
            self.seq = batch[-1].seq
            self.copied += count
            if count:
                self.head = head
                stored += count
                for callback in self._watchers:
                    callback()
            self._moved.set()
            self._moved = trio.Event()
            await trio.lowlevel.checkpoint()

    def _copy(self, batch: list[StoredEntry], position: str) -> tuple[int, int]:
        """Store *batch* and the new *position* in one transaction (blocking: a worker
        thread); the store's newest seq and how many entries were new."""
        items: list[tuple[str, str, dict[str, Any]]] = []
        texts: dict[str, str] = {}
        for entry in batch:
            try:
                item = json.loads(entry.json)
            except ValueError:
                item = None
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                logger.warning("history: stream entry %d is not an entry; left out", entry.seq)
                continue
            items.append((item["id"], entry.feed, item))
            texts[item["id"]] = entry.json
        stored = self.store.insert_new(
            items,
            lambda _seq, item: texts[item["id"]],
            at=self._received,
            meta={POSITION_KEY: position},
        )
        return (stored[-1][0].seq if stored else self.head), len(stored)

    def _received(self, item: dict[str, Any]) -> float:
        """When the log received *item* (its ``received``), else now."""
        received = item.get("received")
        if isinstance(received, str):
            try:
                return datetime.fromisoformat(received).timestamp()
            except ValueError:
                pass
        return self._now()

    async def caught_up(self) -> None:
        """Return once everything the log knows now is copied (so that a search right after
        an append finds it; bound the wait with a cancel scope)."""
        target, epoch = self.log.head_seq, self.log.epoch
        while not self._started or self.epoch != epoch or self.seq < target:
            await self._moved.wait()
