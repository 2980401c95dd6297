"""The icon stores: SQLite (a file of its own) and Redis pass the same contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from feedstream.log.icons import IconRecord, IconStore, SQLiteIcons, StoredImage
from feedstream.log.redis import connect
from feedstream.log.redisicons import RedisIcons
from tests.support.helpers import inline
from tests.support.redis import RedisServer

PNG = b"\x89PNG\r\n\x1a\n\x00\x01\x02"
GIF = b"GIF89a\x00\x01"


async def contract(store: IconStore) -> None:
    assert await store.icons() == {}
    assert await store.image("a") is None
    ok = IconRecord(
        "a", "http://x/f", "ok", "feed", "http://x/i.png", "image/png", '"e1"', 1.0, 2.0
    )
    await store.save(ok, PNG)
    assert await store.icons() == {"a": ok}
    assert await store.image("a") == StoredImage("image/png", '"e1"', PNG)
    # A failed refresh keeps the image: a record with a media type and no body.
    failed = replace(ok, status="error", failures=1, error="feed: HTTP 503")
    await store.save(failed, None)
    assert (await store.icons())["a"] == failed
    assert await store.image("a") == StoredImage("image/png", '"e1"', PNG)
    # A new image replaces the old one, with its type and ETag.
    await store.save(replace(ok, media_type="image/gif", etag='"e2"'), GIF)
    assert await store.image("a") == StoredImage("image/gif", '"e2"', GIF)
    # Nothing found any more: the image goes.
    gone = IconRecord("a", "http://x/f", "none", checked=3.0, next_check=4.0, error="nothing")
    await store.save(gone, None)
    assert await store.image("a") is None
    await store.save(IconRecord("b", status="none"), None)
    assert set(await store.icons()) == {"a", "b"}


async def test_sqlite_icons(tmp_path: Path) -> None:
    path = tmp_path / "data" / "icons.sqlite3"
    store = SQLiteIcons(path, offload=inline)
    await contract(store)
    store.close()
    again = SQLiteIcons(path, offload=inline)  # it survives a restart
    assert set(await again.icons()) == {"a", "b"}
    again.close()


@asynccontextmanager
async def redis_icons(url: str) -> AsyncIterator[RedisIcons]:
    async with connect(url) as client:
        yield RedisIcons(client, prefix="test")


async def test_redis_icons(redis_server: RedisServer) -> None:
    async with redis_icons(redis_server.url) as store:
        await contract(store)
