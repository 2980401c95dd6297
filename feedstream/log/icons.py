"""Where feed icons are kept: what was found for each feed, and the image bytes.

:class:`IconStore` is the interface; :class:`SQLiteIcons` keeps icons in a database file of
their own next to the log's (``data_dir/icons.sqlite3``: blobs of up to 256 KiB stay out of
the log's database and its write path), :class:`feedstream.log.redisicons.RedisIcons` in Redis
for several machines. The ingest side writes (:mod:`feedstream.service.icons`), every node
reads: the metadata often (it is small), an image only when a browser asks for it.

Table ``icons(feed_id, ...)``: one row per feed, :class:`IconRecord`'s fields, plus ``body``,
the image, NULL when none is stored (the generated icon is served then). The image is read
together with its media type and ETag, so the three always belong together.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

import trio

from feedstream.log.base import Offload

__all__ = ["ICON_STATUSES", "IconRecord", "IconStore", "SQLiteIcons", "StoredImage"]

ICON_STATUSES = ("pending", "ok", "none", "error")
"""``pending``: not looked for yet; ``ok``: an image is stored; ``none``: looked everywhere and
found none (the generated icon is served); ``error``: the last attempt failed (network, 5xx):
it is retried with backoff and a stored image, if any, is still served."""


@dataclass(slots=True)
class IconRecord:
    """What is known of one feed's icon (times are Unix seconds)."""

    feed_id: str
    feed_url: str | None = None  # the configured feed URL this was looked up for
    status: str = "pending"  # one of ICON_STATUSES
    source: str | None = None  # where the stored image was named: feed | page | favicon
    url: str | None = None  # the stored image's URL
    media_type: str | None = None  # None: no image stored
    etag: str | None = None  # the stored image's ETag
    checked: float | None = None  # the last attempt
    next_check: float | None = None
    failures: int = 0  # consecutive failed attempts
    error: str | None = None  # what went wrong, or why nothing was found


@dataclass(frozen=True, slots=True)
class StoredImage:
    media_type: str
    etag: str
    body: bytes


class IconStore(Protocol):
    """Icon records and images (every method may raise
    :class:`~feedstream.log.state.LogUnavailable` on a shared store)."""

    async def icons(self) -> dict[str, IconRecord]:
        """Every feed's record, without the images."""
        ...

    async def image(self, feed_id: str) -> StoredImage | None:
        """The stored image of *feed_id*, if any."""
        ...

    async def save(self, record: IconRecord, body: bytes | None) -> None:
        """Store *record*. With *body*, it is the new image; without, the stored image stays
        if the record still has a media type, and is removed if it has none."""
        ...


_COLUMNS = tuple(f.name for f in fields(IconRecord))
_SCHEMA = """
CREATE TABLE IF NOT EXISTS icons (
    feed_id    TEXT PRIMARY KEY,
    feed_url   TEXT,
    status     TEXT NOT NULL,
    source     TEXT,
    url        TEXT,
    media_type TEXT,
    etag       TEXT,
    checked    REAL,
    next_check REAL,
    failures   INTEGER NOT NULL DEFAULT 0,
    error      TEXT,
    body       BLOB
);
"""
FILE_NAME = "icons.sqlite3"


class SQLiteIcons:
    """:class:`IconStore` in its own SQLite file; blocking calls run by *offload*."""

    def __init__(self, path: Path | str, offload: Offload = trio.to_thread.run_sync) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._offload = offload
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")  # first: other processes open it too
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock, self._db:
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- blocking --------------------------------------------------------------------------------

    def read_icons(self) -> dict[str, IconRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM icons").fetchall()
        return {row[0]: IconRecord(*row) for row in rows}

    def read_image(self, feed_id: str) -> StoredImage | None:
        with self._lock:
            row = self._db.execute(
                "SELECT media_type, etag, body FROM icons WHERE feed_id = ?", (feed_id,)
            ).fetchone()
        if row is None or row[0] is None or row[1] is None or row[2] is None:
            return None
        return StoredImage(str(row[0]), str(row[1]), bytes(row[2]))

    def write(self, record: IconRecord, body: bytes | None) -> None:
        values: dict[str, object] = asdict(record)
        columns = list(_COLUMNS)
        if body is not None or record.media_type is None:
            values["body"] = body if record.media_type is not None else None
            columns.append("body")
        names = ", ".join(columns)
        marks = ", ".join(f":{c}" for c in columns)
        updates = ", ".join(f"{c}=excluded.{c}" for c in columns[1:])
        with self._lock, self._db:
            self._db.execute(
                f"INSERT INTO icons({names}) VALUES ({marks}) "
                f"ON CONFLICT(feed_id) DO UPDATE SET {updates}",
                values,
            )

    # -- IconStore -------------------------------------------------------------------------------

    async def icons(self) -> dict[str, IconRecord]:
        records: dict[str, IconRecord] = await self._offload(self.read_icons)
        return records

    async def image(self, feed_id: str) -> StoredImage | None:
        image: StoredImage | None = await self._offload(self.read_image, feed_id)
        return image

    async def save(self, record: IconRecord, body: bytes | None) -> None:
        await self._offload(self.write, record, body)
