"""The hub's subscription stores: SQLite, Redis (a hash) and memory pass the same contract."""

from __future__ import annotations

from pathlib import Path

from feedstream.log.hubstore import HubStore, MemoryHubStore, SQLiteHubStore
from feedstream.log.redis import connect
from feedstream.log.redishub import RedisHubStore
from tests.support.helpers import inline
from tests.support.redis import RedisServer


async def contract(store: HubStore) -> None:
    assert await store.load() == {}
    await store.save('["t","c1"]', '{"state":"pending"}')
    await store.save('["t","c2"]', '{"state":"active"}')
    await store.save('["t","c1"]', '{"state":"active"}')  # replaced
    assert await store.load() == {
        '["t","c1"]': '{"state":"active"}',
        '["t","c2"]': '{"state":"active"}',
    }
    await store.delete('["t","c2"]')
    await store.delete("never there")
    assert await store.load() == {'["t","c1"]': '{"state":"active"}'}


async def test_memory_hub_store() -> None:
    await contract(MemoryHubStore())


async def test_sqlite_hub_store(tmp_path: Path) -> None:
    store = SQLiteHubStore(tmp_path / "hub.sqlite3", offload=inline)
    await contract(store)
    store.close()


async def test_redis_hub_store(redis_server: RedisServer) -> None:
    async with connect(redis_server.url) as client:
        store = RedisHubStore(client, prefix="test")
        await contract(store)
        assert await client.hgetall("test:hub") == {'["t","c1"]': '{"state":"active"}'}
