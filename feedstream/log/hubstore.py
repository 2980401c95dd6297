"""Where the WebSub hub keeps its subscriptions, so that they survive a restart.

:class:`HubStore` is the interface: records are opaque JSON texts under a key (the hub's shell,
:mod:`feedstream.service.hub`, owns their shape), so this layer needs nothing of the hub's
model. :class:`SQLiteHubStore` keeps them in a database file of its own next to the log's
(``data_dir/hub.sqlite3``), as the icons are: the log's write path never waits on the hub.

Table ``hub_subscriptions(key TEXT PRIMARY KEY, record TEXT)``.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Protocol

import trio

from feedstream.log.base import Offload

__all__ = ["FILE_NAME", "HubStore", "MemoryHubStore", "SQLiteHubStore"]

FILE_NAME = "hub.sqlite3"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hub_subscriptions (key TEXT PRIMARY KEY, record TEXT NOT NULL)"
)


class HubStore(Protocol):
    """Hub subscription records by key (a shared store may raise
    :class:`~feedstream.log.state.LogUnavailable`)."""

    async def load(self) -> dict[str, str]: ...

    async def save(self, key: str, record: str) -> None: ...

    async def delete(self, key: str) -> None: ...


class MemoryHubStore:
    """A :class:`HubStore` in a dict: for tests, and for a hub that need not remember."""

    def __init__(self) -> None:
        self.records: dict[str, str] = {}

    async def load(self) -> dict[str, str]:
        return dict(self.records)

    async def save(self, key: str, record: str) -> None:
        self.records[key] = record

    async def delete(self, key: str) -> None:
        self.records.pop(key, None)


class SQLiteHubStore:
    """A :class:`HubStore` in ``<data_dir>/hub.sqlite3``; its calls run by *offload*."""

    def __init__(self, path: Path, offload: Offload = trio.to_thread.run_sync) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # As the log's: a commit survives the process crashing, not the machine; without it
        # every write waits for the disk (a delivery's bookkeeping is written by each).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()
        self._offload = offload

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _load(self) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute("SELECT key, record FROM hub_subscriptions").fetchall()
        return {str(key): str(record) for key, record in rows}

    def _save(self, key: str, record: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO hub_subscriptions (key, record) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET record = excluded.record",
                (key, record),
            )

    def _delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM hub_subscriptions WHERE key = ?", (key,))

    async def load(self) -> dict[str, str]:
        records: dict[str, str] = await self._offload(self._load)
        return records

    async def save(self, key: str, record: str) -> None:
        await self._offload(self._save, key, record)

    async def delete(self, key: str) -> None:
        await self._offload(self._delete, key)
