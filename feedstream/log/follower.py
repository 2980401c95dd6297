"""A read-only view of another process's SQLite log: how deliver processes share one machine.

One process writes the database in ``data_dir`` (the ingest role); any number of deliver
processes each open it too and follow its WAL: every :data:`FOLLOW_INTERVAL` seconds they ask
SQLite whether another connection committed (``PRAGMA data_version``, a read of shared memory),
and only then read the new rows into their own ring and tell their broadcaster. Reads never
touch SQLite, so each deliver process fans out from memory like the single process does.

If the follower fell further behind than the writer keeps data for (``backlog``), it starts
over from a fresh snapshot; clients then see a ``reset`` for cursors it can no longer place,
never a gap. (Replacing the database file under running processes is not supported: restart
them.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from feedstream.log.base import Offload, StoredEntry
from feedstream.log.cursors import Ring, format_cursor
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import Snapshot, Store

logger = logging.getLogger(__name__)

__all__ = ["FOLLOW_INTERVAL", "ReadOnlyLog", "SQLiteFollower"]

#: Seconds between two looks at whether the writer committed: at most this much is added to
#: the delivery latency of a deliver process over its single-process figure.
FOLLOW_INTERVAL = 0.02


class ReadOnlyLog(Exception):
    """An append on a node that only delivers."""


class SQLiteFollower(SQLiteLog):
    """The log of the database at *store*, written by another process; :meth:`run` follows it."""

    def __init__(
        self,
        store: Store,
        snapshot: Snapshot,
        *,
        backlog: int,
        offload: Offload = trio.to_thread.run_sync,
        interval: float = FOLLOW_INTERVAL,
    ) -> None:
        super().__init__(store, snapshot, backlog=backlog, offload=offload)
        self._interval = interval

    async def append(
        self, entries: Sequence[Mapping[str, Any]], *, texts: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        raise ReadOnlyLog("this node only delivers: entries are appended by the ingest role")

    async def mark_seen(self, items: Sequence[tuple[str, str]]) -> list[str]:
        raise ReadOnlyLog("this node only delivers: entries are appended by the ingest role")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the writer until cancelled (drift-free: one look per interval)."""
        version = await self._offload(self._store.data_version)
        await self.catch_up()  # whatever was committed between the snapshot and now
        task_status.started()
        due = trio.current_time()
        while True:
            due = max(due + self._interval, trio.current_time())
            await trio.sleep_until(due)
            now = await self._offload(self._store.data_version)
            if now != version:
                version = now
                await self.catch_up()

    async def catch_up(self) -> None:
        """Read what the writer committed since our head; tell the watchers once."""
        rows = await self._offload(self._store.entries_after, self._head, self._backlog)
        if not rows:
            return
        if rows[0][0] != self._head + 1 or any(data is None for _, _, data in rows):
            await self._start_over("fell behind the writer's backlog")
            return
        entries = [
            StoredEntry(seq, format_cursor(self._log_id, seq), feed, data)
            for seq, feed, data in rows
            if data is not None
        ]
        self._ring.extend(entries)
        self._head = entries[-1].seq
        for entry in entries:
            self._counts[entry.feed] = self._counts.get(entry.feed, 0) + 1
        self._tell()
        if len(rows) == self._backlog:  # there may be more: read on at once
            await self.catch_up()

    async def _start_over(self, why: str) -> None:
        snapshot: Snapshot = await self._offload(self._store.snapshot, self._backlog)
        logger.warning("log follower: %s; starting over at %d", why, snapshot.head)
        self._ring = Ring(self._backlog)
        self._ring.extend(snapshot.recent)
        self._head = snapshot.head
        self._counts = dict(snapshot.counts)
        self._tell()
