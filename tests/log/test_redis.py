"""The Redis backend as a shared log: several nodes (each its own client and RedisLog) on one
real redis-server, which the tests stop and start again (empty: persistence is off).

The contract every backend passes is in test_contract.py; here is what only a shared log has:
racing writers, a tail on a reader node, losing Redis and getting an empty one back (a new
epoch), retention, leases and the shared state.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import sniffio
import trio

from feedstream.log.redis import RedisLog, connect, open_redis
from feedstream.log.redisstate import Keys, RedisLeases, RedisState
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.state import LogUnavailable
from feedstream.log.store import FeedState, Store, Subscription
from tests.support.helpers import entry, free_port, inline
from tests.support.redis import RedisServer

WAIT = 10  # seconds: the bound on anything a test waits for


def titles(log: RedisLog, after: str | None = None, limit: int = 100) -> list[str]:
    return [json.loads(e.json)["title"] for e in log.read(after, feeds=None, limit=limit).entries]


async def wait_for(log: RedisLog, predicate: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT):
        await log.wait_for(predicate)


async def test_coredis_runs_under_trio(redis_server: RedisServer) -> None:
    async with connect(redis_server.url) as client:
        assert sniffio.current_async_library() == "trio"
        assert await client.ping() == "PONG"
        async with trio.open_nursery() as nursery:  # concurrent commands, one client
            results: list[int] = []

            async def incr() -> None:
                results.append(await client.incr("n"))

            for _ in range(20):
                nursery.start_soon(incr)
        assert sorted(results) == list(range(1, 21))


async def test_stored_json_is_the_sqlite_backends(redis_server: RedisServer, tmp_path) -> None:
    fixed = 1_700_000_000.0
    store = Store(tmp_path / "db.sqlite3")
    sqlite = SQLiteLog(store, store.snapshot(10), backlog=10, offload=inline, clock=lambda: fixed)
    async with connect(redis_server.url) as client:
        log = await RedisLog.open(client, backlog=10, clock=lambda: fixed)
        one = entry("a", "1", title='ünïcode "quoted" }', link="https://x/")
        [from_redis] = await log.append([one])
        [from_sqlite] = await sqlite.append([one])
        assert list(from_redis) == list(from_sqlite)  # same keys, same order: cursor last
        assert from_redis["received"] == from_sqlite["received"] == "2023-11-14T22:13:20Z"
        assert from_redis["cursor"] == f"{log.epoch}-1"
        stored = log.read(None, feeds=None, limit=1).entries[0]
        other = sqlite.read(None, feeds=None, limit=1).entries[0]
        assert stored.json == other.json.replace(other.cursor, stored.cursor)
        assert json.loads(stored.json) == from_redis
        # Another node reads back exactly what was stored.
        again = await RedisLog.open(client, backlog=10)
        assert again.read(None, feeds=None, limit=1).entries == [stored]


async def test_racing_nodes_store_each_entry_once(redis_server: RedisServer) -> None:
    async with connect(redis_server.url) as c1, connect(redis_server.url) as c2:
        one = await RedisLog.open(c1, backlog=100)
        two = await RedisLog.open(c2, backlog=100)
        got: list[list[dict[str, object]]] = []

        async def push(log: RedisLog, keys: range) -> None:
            for key in keys:  # overlapping batches, interleaved between the two nodes
                got.append(await log.append([entry("a", str(key)), entry("a", str(key + 1))]))

        async with trio.open_nursery() as nursery:
            # Their tails run too: appends and tails extend each ring in whatever order.
            await nursery.start(one.run)
            await nursery.start(two.run)
            async with trio.open_nursery() as pushers:
                pushers.start_soon(push, one, range(0, 40, 2))
                pushers.start_soon(push, two, range(0, 40, 2))
                pushers.start_soon(push, two, range(1, 40, 2))
            final = f"{one.epoch}-41"
            await wait_for(one, lambda: one.head == final)
            await wait_for(two, lambda: two.head == final)
            nursery.cancel_scope.cancel()
        new = [e for batch in got for e in batch]
        assert sorted(e["title"] for e in new) == sorted(str(i) for i in range(41))
        assert len({e["cursor"] for e in new}) == 41
        assert await c1.xlen(Keys().stream) == 41
        assert one.counts() == two.counts() == {"a": 41}
        assert titles(one) == titles(two)
        assert sorted(titles(one), key=int) == [str(i) for i in range(41)]
        by_cursor = {
            e.cursor: json.loads(e.json) for e in one.read(None, feeds=None, limit=99).entries
        }
        assert all(by_cursor[e["cursor"]] == e for e in new)  # what each append returned
        assert dict(await c1.hgetall(Keys().counts)) == {"a": "41"}


async def test_a_reader_node_tails_what_a_writer_node_appends(redis_server: RedisServer) -> None:
    async with connect(redis_server.url) as c1, connect(redis_server.url) as c2:
        writer = await RedisLog.open(c1, backlog=100)
        reader = await RedisLog.open(c2, backlog=100, block=0.2)
        start = reader.head
        told: list[str] = []
        reader.watch(lambda: told.append(reader.head))
        async with trio.open_nursery() as nursery:
            await nursery.start(reader.run)
            await writer.append([entry("a", "1"), entry("b", "2")])
            await wait_for(reader, lambda: reader.head == writer.head)
            assert told == [writer.head]  # once per batch
            assert titles(reader, start) == ["1", "2"]
            assert reader.counts() == {"a": 1, "b": 1}
            assert reader.available
            await writer.append([entry("a", "3")])
            await wait_for(reader, lambda: len(told) == 2)
            page = reader.read(start, feeds={"a"}, limit=10)
            assert [json.loads(e.json)["title"] for e in page.entries] == ["1", "3"]
            assert page.cursor == writer.head
            nursery.cancel_scope.cancel()  # the tail ends on cancellation, never swallows it


async def test_losing_redis_and_getting_an_empty_one_back(redis_server: RedisServer) -> None:
    async with connect(redis_server.url) as c1, connect(redis_server.url) as c2:
        writer = await RedisLog.open(c1, backlog=100)
        reader = await RedisLog.open(c2, backlog=100, block=0.2)
        told: list[str] = []
        reader.watch(lambda: told.append(reader.head))
        async with trio.open_nursery() as nursery:
            await nursery.start(reader.run)
            await writer.append([entry("a", "1"), entry("a", "2")])
            await wait_for(reader, lambda: reader.head == writer.head)
            old_epoch, old_head = reader.epoch, reader.head
            first = reader.read(None, feeds=None, limit=1).cursor

            await trio.to_thread.run_sync(redis_server.stop)
            await wait_for(reader, lambda: not reader.available)
            with pytest.raises(LogUnavailable):
                await writer.append([entry("a", "3")])
            assert not writer.available
            # Reads answer from the ring meanwhile.
            assert titles(reader) == ["1", "2"] and reader.head == old_head
            assert titles(reader, first) == []

            await trio.to_thread.run_sync(redis_server.start)  # empty: persistence is off
            await wait_for(reader, lambda: reader.available and reader.epoch != old_epoch)
            assert reader.head == f"{reader.epoch}-0" and titles(reader) == []
            assert reader.counts() == {}
            # An old cursor reads as exactly one reset, which hands out a new-epoch cursor.
            page = reader.read(old_head, feeds=None, limit=10)
            assert page.reset and page.cursor == reader.head
            after = reader.read(page.cursor, feeds=None, limit=10)
            assert not after.reset and after.entries == ()

            # The writer learns the new epoch from its next append; new entries flow.
            new = await writer.append([entry("a", "4")])
            assert writer.available and writer.epoch == reader.epoch
            assert new[0]["cursor"] == f"{reader.epoch}-1"
            await wait_for(reader, lambda: reader.head == writer.head)
            page = reader.read(page.cursor, feeds=None, limit=10)
            assert not page.reset
            assert [json.loads(e.json)["title"] for e in page.entries] == ["4"]
            assert told[-1] == writer.head
            nursery.cancel_scope.cancel()


async def test_a_tail_notices_a_new_epoch_without_losing_the_connection(
    redis_server: RedisServer,
) -> None:
    """The log rebuilt under a running node (here: the epoch key deleted, as ``docs/redis.md``
    says to after restoring an old snapshot): the tail looks at the epoch each block timeout."""
    async with connect(redis_server.url) as c1, connect(redis_server.url) as c2:
        writer = await RedisLog.open(c1, backlog=100)
        reader = await RedisLog.open(c2, backlog=100, block=0.1)
        async with trio.open_nursery() as nursery:
            await nursery.start(reader.run)
            await writer.append([entry("a", "1")])
            await wait_for(reader, lambda: reader.head == writer.head)
            old = reader.head
            await c1.delete([Keys().epoch])
            await wait_for(reader, lambda: not reader.head.startswith(writer.epoch))
            assert reader.read(old, feeds=None, limit=10).reset
            assert titles(reader) == []
            assert await writer.append([entry("a", "1")]) == []  # dedup outlives a rebuild
            new = await writer.append([entry("a", "2")])
            assert new[0]["cursor"] == f"{reader.epoch}-1"
            await wait_for(reader, lambda: reader.head == writer.head)
            nursery.cancel_scope.cancel()


async def test_retention_bounds_the_stream_and_older_cursors_reset(
    redis_server: RedisServer,
) -> None:
    async with connect(redis_server.url) as c1, connect(redis_server.url) as c2:
        writer = await RedisLog.open(c1, backlog=10, retention=50)
        late = await RedisLog.open(c2, backlog=10, block=0.2)  # its tail starts later
        start = late.head
        told: list[str] = []
        late.watch(lambda: told.append(late.head))
        for batch in range(20):
            await writer.append([entry("a", f"{batch}-{i}") for i in range(20)])
        length = await c1.xlen(Keys().stream)
        # MAXLEN ~ trims whole stream nodes (100 entries each by default): near, never under.
        assert 50 <= length < 50 + 100, length
        assert writer.read(start, feeds=None, limit=5).reset
        async with trio.open_nursery() as nursery:
            await nursery.start(late.run)
            # Its first XREAD starts long after what was trimmed: not contiguous, so it starts
            # over from the newest entries instead of taking the gap for news.
            await wait_for(late, lambda: late.head == writer.head)
            nursery.cancel_scope.cancel()
        assert told == [writer.head]
        assert titles(late) == titles(writer) == [f"19-{i}" for i in range(10, 20)]
        assert late.counts() == {"a": 400}  # kept in Redis, not counted from the stream
        page = late.read(start, feeds=None, limit=3)
        assert page.reset and page.cursor == late.head
        assert [json.loads(e.json)["title"] for e in page.entries] == ["19-17", "19-18", "19-19"]


async def test_scripts_are_loaded_again_after_a_script_flush(redis_server: RedisServer) -> None:
    async with connect(redis_server.url) as client:
        log = await RedisLog.open(client, backlog=10)
        await log.append([entry("a", "1")])
        await client.script_flush()
        assert [e["title"] for e in await log.append([entry("a", "2")])] == ["2"]


async def test_open_redis_is_the_entry_point(redis_server: RedisServer) -> None:
    async with open_redis(redis_server.url, backlog=10, lease_seconds=5, prefix="fs2") as one:
        async with open_redis(redis_server.url, backlog=10, lease_seconds=5, prefix="fs2") as two:
            async with trio.open_nursery() as nursery:
                await nursery.start(two.log.run)
                await one.log.append([entry("a", "1")])
                await wait_for(two.log, lambda: two.log.head == one.log.head)
                nursery.cancel_scope.cancel()
            assert await one.leases.claim("a") and not await two.leases.claim("a")
            await one.state.save_feed_state(FeedState(id="a", etag='"x"'))
            assert (await two.state.feed_states())["a"].etag == '"x"'
        assert sorted(await one.client.keys("fs2:*")) == [
            "fs2:counts",
            "fs2:epoch",
            "fs2:feeds",
            "fs2:ids",
            "fs2:lease:a",
            "fs2:log",
            "fs2:seq",
        ]


async def test_open_redis_without_redis_is_unavailable() -> None:
    with trio.fail_after(WAIT), pytest.raises(LogUnavailable):
        async with open_redis(f"redis://127.0.0.1:{free_port()}/0", backlog=10):
            pass


async def test_leases_one_holder_renewal_expiry_release(redis_server: RedisServer) -> None:
    async with connect(redis_server.url) as c1, connect(redis_server.url) as c2:
        a = RedisLeases(c1, ttl=5.0)
        b = RedisLeases(c2, ttl=5.0)
        assert a.node != b.node
        key = Keys().lease("feed")
        assert await a.claim("feed")
        assert not await b.claim("feed")
        assert await a.holder("feed") == a.node
        # Renewal: the holder's claim sets the TTL back (shortened here by hand first).
        await c1.pexpire(key, 1000)
        assert await a.claim("feed")
        assert 4000 < await c1.pttl(key) <= 5000
        assert not await b.claim("feed")
        # Expiry: a holder that stops renewing loses the lease to the next claim.
        await c1.pexpire(key, 30)
        await trio.sleep(0.06)  # time itself passing is what expiry is (Redis checks on access)
        assert await b.holder("feed") is None
        assert await b.claim("feed")
        assert not await a.claim("feed")
        await a.release("feed")  # not a's: nothing happens
        assert await a.holder("feed") == b.node
        await b.release("feed")
        assert await a.holder("feed") is None
        assert await a.claim("feed")


async def test_leases_and_state_say_when_redis_is_away(redis_server: RedisServer) -> None:
    async with connect(redis_server.url) as client:
        leases, state = RedisLeases(client), RedisState(client)
        await trio.to_thread.run_sync(redis_server.stop)
        with pytest.raises(LogUnavailable):
            await leases.claim("feed")
        with pytest.raises(LogUnavailable):
            await state.feed_states()
        await trio.to_thread.run_sync(redis_server.start)
        assert await leases.claim("feed")


def subscription(feed_id: str, token: str, **fields: object) -> Subscription:
    return Subscription(
        feed_id=feed_id,
        token=token,
        hub="https://hub.example/",
        endpoint="https://hub.example/",
        topic=f"https://example.com/{feed_id}.xml",
        secret="s3cret",
        state="verified",
        **fields,  # type: ignore[arg-type]
    )


async def test_state_round_trip_across_nodes(redis_server: RedisServer) -> None:
    async with connect(redis_server.url) as c1, connect(redis_server.url) as c2:
        one, two = RedisState(c1), RedisState(c2)
        state = FeedState(
            id="a",
            source_url="https://e/a",
            url="https://e/a2",
            title="Ä feed",
            etag='W/"1"',
            last_modified="Tue, 01 Jan 2030 00:00:00 GMT",
            last_fetch=1.5,
            http_status=200,
            status="ok",
            failures=2,
            next_poll=99.25,
        )
        await one.save_feed_state(state)
        await one.save_feed_state(FeedState(id="b"))
        assert await two.feed_states() == {"a": state, "b": FeedState(id="b")}

        sub = subscription("a", "tok1", lease_seconds=3600, lease_expires=5.5, push_healthy=False)
        await one.save_subscription(sub)
        assert await two.subscriptions() == {"a": sub}
        # Tokens stay unique: another feed cannot take one in use...
        with pytest.raises(ValueError, match="token"):
            await two.save_subscription(subscription("b", "tok1"))
        # ...but a feed may change its own, which frees the old one.
        await two.save_subscription(subscription("a", "tok2"))
        await one.save_subscription(subscription("b", "tok1"))
        assert {s.token for s in (await one.subscriptions()).values()} == {"tok1", "tok2"}
        await one.delete_subscription("b")
        await one.delete_subscription("missing")
        assert list(await two.subscriptions()) == ["a"]
        await two.save_subscription(subscription("c", "tok1"))  # freed by the delete
        assert dict(await c1.hgetall(Keys().tokens)) == {"tok2": "a", "tok1": "c"}
