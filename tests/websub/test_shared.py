"""The WebSub subscriber over a store several ingest nodes share (Redis), and over SQLite.

Two nodes here are two :class:`Subscriber` objects in one process, each with its own Redis
client, poll context and lease holder name, on one real redis-server; the hub is an
``httpx.MockTransport`` that verifies inside the POST through whichever node the test names
(as a load balancer in front of the ingest nodes would). Virtual time jumps only after 50 ms
without anything to do, so never while a Redis reply is on its way.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import trio
import trio.testing

from feedstream.core.config import FeedConfig
from feedstream.log.redis import connect
from feedstream.log.redisstate import Keys, RedisLeases, RedisState
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.state import SQLiteState, StateStore
from feedstream.log.store import Store, Subscription
from feedstream.service.fetch import HostGate
from feedstream.service.poller import PollContext, hold_feed
from feedstream.websub import machine as m
from feedstream.websub.protocol import HubOutcome, HubResponse, Mode, renewal_time
from feedstream.websub.subscriber import DeliveryResult, Subscriber
from tests.support.helpers import inline
from tests.support.redis import RedisServer, redis_server
from tests.websub.test_subscriber import intent_check

__all__ = ["redis_server"]

EPOCH = 1_700_000_000.0
HUB = "https://hub.test/"
TOPIC = "https://pub.test/feed"
FEED = FeedConfig(id="f", url=TOPIC, interval=300, websub_poll=6 * 3600, websub_lease=1000)
LEASE = 300.0  # the poll lease (virtual seconds; its Redis TTL, in real ms, never runs out here)
ATOM = "application/atom+xml"


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


def now() -> float:
    return EPOCH + trio.current_time()


def signed(secret: str | None, body: bytes) -> str:
    return "sha256=" + hmac.new((secret or "").encode(), body, hashlib.sha256).hexdigest()


def feed_body() -> bytes:
    return (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>'
        b"<entry><id>urn:a</id><title>a</title></entry></feed>"
    )


@dataclass
class Hub:
    """A hub behind MockTransport: records every POST (with the node that sent it) and
    verifies inside it, with a GET that reaches the node named by :attr:`verify_at`."""

    verify_at: Subscriber | None = None
    verify: bool = True
    lease: int = 1000
    posts: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    verifications: list[tuple[str, int]] = field(default_factory=list)

    async def handle(self, node: str, request: httpx.Request) -> httpx.Response:
        if request.url.host == "pub.test":  # the publisher: the feed names this hub
            link = f'<{HUB}>; rel="hub", <{TOPIC}>; rel="self"'
            headers = {"Content-Type": ATOM, "Link": link}
            return httpx.Response(200, content=feed_body(), headers=headers)
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.posts.append((trio.current_time(), node, form))
        if self.verify and self.verify_at is not None:
            token, query = intent_check(form, self.lease)
            decision = await self.verify_at.verify(token, query)
            self.verifications.append((form["hub.mode"], decision.status))
        return httpx.Response(202)

    def subscribes(self) -> list[tuple[float, str, str]]:
        """(time, node, callback token) of every subscribe request."""
        return [
            (t, node, form["hub.callback"].rsplit("/", 1)[1])
            for t, node, form in self.posts
            if form["hub.mode"] == "subscribe"
        ]

    def unsubscribes(self) -> list[tuple[float, str]]:
        return [(t, node) for t, node, form in self.posts if form["hub.mode"] == "unsubscribe"]


@dataclass
class Node:
    name: str
    sub: Subscriber
    state: StateStore
    leases: RedisLeases | None
    ctx: PollContext
    ingested: list[bytes]
    polls: list[float]


@asynccontextmanager
async def node(
    name: str,
    hub: Hub,
    state: StateStore,
    tmp_path: Path,
    feeds: list[FeedConfig],
    leases: RedisLeases | None = None,
) -> AsyncIterator[Node]:
    """One ingest node: its subscriber running (its feeds' upkeep left to hold_feed when
    *leases* is given) and a poll context for hold_feed."""
    ingested: list[bytes] = []
    polls: list[float] = []

    async def ingest(feed: FeedConfig, body: bytes, content_type: str | None) -> int:
        ingested.append(body)
        return 1

    async def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "pub.test":
            polls.append(trio.current_time())
        return await hub.handle(name, request)

    store = Store(tmp_path / f"{name}.sqlite3")
    async with httpx.AsyncClient(transport=httpx.MockTransport(route)) as client:
        sub = Subscriber(
            public_url="http://me.test", state=state, client=client, ingest=ingest,
            offload=inline, wall_clock=now, jitter=lambda: 0.5, leases=leases,
            lease_seconds=LEASE, refresh=LEASE / 3,
        )  # fmt: skip
        log = SQLiteLog(store, store.snapshot(10), backlog=10, offload=inline)
        ctx = PollContext(
            client, log, store, HostGate(total=2, per_host=2, gap=0), inline, now,
            lambda: 0.5, websub=sub, parse=inline, state=state, leases=leases,
            lease_seconds=LEASE,
        )  # fmt: skip
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(sub.run, feeds))
            yield Node(name, sub, state, leases, ctx, ingested, polls)
            nursery.cancel_scope.cancel()


@dataclass
class Polling:
    scope: trio.CancelScope
    done: trio.Event

    async def stop(self) -> None:
        """Stop polling (as a reload does): the node gives the lease up."""
        self.scope.cancel()
        await self.done.wait()


async def start_polling(nursery: trio.Nursery, n: Node, feed: FeedConfig) -> Polling:
    """hold_feed for *feed* on node *n*, in a scope of its own."""

    async def holding(task_status: trio.TaskStatus[Polling]) -> None:
        done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                task_status.started(Polling(scope, done))
                await hold_feed(feed, n.ctx)
        finally:
            done.set()

    polling: Polling = await nursery.start(holding)
    return polling


@asynccontextmanager
async def two_redis_nodes(
    redis: RedisServer, tmp_path: Path, hub: Hub, feeds: tuple[list[FeedConfig], ...] = ()
) -> AsyncIterator[tuple[Node, Node, RedisState]]:
    a_feeds, b_feeds = feeds or ([FEED], [FEED])
    async with (
        connect(redis.url) as ca,
        connect(redis.url) as cb,
        connect(redis.url) as cc,
        node("a", hub, RedisState(ca), tmp_path, a_feeds, RedisLeases(ca, LEASE, node="a")) as a,
        node("b", hub, RedisState(cb), tmp_path, b_feeds, RedisLeases(cb, LEASE, node="b")) as b,
    ):
        yield a, b, RedisState(cc)


# -- the stores ---------------------------------------------------------------------------------


def row(feed_id: str, token: str, **fields: object) -> Subscription:
    return Subscription(
        feed_id=feed_id, token=token, hub=HUB, endpoint=HUB, topic=TOPIC, secret="s",
        state="pending", **fields,  # type: ignore[arg-type]
    )  # fmt: skip


@asynccontextmanager
async def a_store(
    kind: str, tmp_path: Path, redis: RedisServer | None
) -> AsyncIterator[StateStore]:
    if kind == "sqlite":
        yield SQLiteState(Store(tmp_path / "db.sqlite3"), inline)
        return
    assert redis is not None
    async with connect(redis.url) as client:
        yield RedisState(client)


@pytest.fixture(params=["sqlite", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def maybe_redis(kind: str, request: pytest.FixtureRequest) -> RedisServer | None:
    if kind == "sqlite":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    return server


async def test_lookups_and_compare_and_set(
    kind: str, maybe_redis: RedisServer | None, tmp_path: Path
) -> None:
    async with a_store(kind, tmp_path, maybe_redis) as state:
        first = row("f", "tok1")
        assert await state.subscription("f") is None
        assert await state.subscription_by_token("tok1") is None
        assert await state.replace_subscription("f", None, first)
        assert not await state.replace_subscription("f", None, first)  # there is one now
        assert await state.subscription("f") == first
        assert await state.subscription_by_token("tok1") == first
        active = replace(first, state="active", lease_seconds=1000, lease_expires=EPOCH + 1000.5)
        assert await state.replace_subscription("f", first, active)
        # A writer holding the old row loses: nothing is written.
        assert not await state.replace_subscription("f", first, replace(first, error="x"))
        assert await state.subscription("f") == active
        # A new token frees the old one; another feed may not take a token in use.
        renewed = replace(active, token="tok2")
        assert await state.replace_subscription("f", active, renewed)
        assert await state.subscription_by_token("tok1") is None
        assert await state.subscription_by_token("tok2") == renewed
        with pytest.raises(ValueError, match="token"):
            await state.replace_subscription("g", None, row("g", "tok2"))
        assert await state.replace_subscription("g", None, row("g", "tok1"))
        # Delete: only the row expected.
        assert not await state.replace_subscription("f", active, None)
        assert await state.replace_subscription("f", renewed, None)
        assert await state.subscription("f") is None
        assert await state.subscription_by_token("tok2") is None
        assert set(await state.subscriptions()) == {"g"}


async def test_redis_compares_values_not_their_spelling(redis_server: RedisServer) -> None:
    async with connect(redis_server.url) as client:
        state = RedisState(client)
        stored = row("f", "tok", lease_seconds=1000, lease_expires=5, attempts=0)
        await state.save_subscription(stored)  # 5 spelled as an int
        assert await state.replace_subscription("f", replace(stored, lease_expires=5.0), None)
        # A token whose feed row says otherwise is not that feed's.
        await client.hset(Keys().tokens, {"stale": "f"})
        assert await state.subscription_by_token("stale") is None


# -- one node, over either store ------------------------------------------------------------------


@asynccontextmanager
async def one_node(
    kind: str, tmp_path: Path, redis: RedisServer | None, hub: Hub, feeds: list[FeedConfig]
) -> AsyncIterator[Node]:
    async with a_store(kind, tmp_path, redis) as state:
        leases = None
        if isinstance(state, RedisState):
            leases = RedisLeases(state._client, LEASE, node="one")
        async with node("one", hub, state, tmp_path, feeds, leases) as n:
            hub.verify_at = n.sub
            yield n


async def test_one_node_subscribes_takes_deliveries_renews_and_leaves(
    kind: str, maybe_redis: RedisServer | None, tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    hub = Hub()
    async with one_node(kind, tmp_path, maybe_redis, hub, [FEED]) as n, trio.open_nursery() as ns:
        assert n.sub.shared is (kind == "redis")
        polling = await start_polling(ns, n, FEED)
        await trio.sleep(1)
        [(at, who, token)] = hub.subscribes()
        assert (at, who) == (0, "one") and hub.verifications == [("subscribe", 200)]
        stored = await n.state.subscription("f")
        assert stored is not None and stored.state == "active" and stored.token == token
        assert n.sub.subs["f"] == stored and n.sub.interval(FEED) == 6 * 3600
        body = feed_body()
        answer = await n.sub.deliver(token, signed(stored.secret, body), body, ATOM)
        assert answer == DeliveryResult(200, "signature ok", "accepted")
        await trio.sleep(1)
        assert n.ingested == [body]
        pushed = await n.state.subscription("f")
        assert pushed is not None and pushed.last_push == pytest.approx(EPOCH + 1, abs=0.01)
        renewal = renewal_time(EPOCH, 1000, random.Random(token).random()) - EPOCH
        await trio.sleep(renewal + 1 - trio.current_time())
        [_, (renewed_at, _, renewed_token)] = hub.subscribes()
        assert renewed_at == pytest.approx(renewal, abs=0.01) and renewed_token == token
        await polling.stop()
        await n.sub.update([])  # the feed leaves the config: unsubscribed, forgotten
        await trio.sleep(1)
        assert [node for _, node in hub.unsubscribes()] == ["one"]
        assert hub.verifications[-1] == ("unsubscribe", 200)
        assert await n.state.subscription("f") is None and n.sub.subs == {}
        ns.cancel_scope.cancel()


# -- two nodes on one Redis ---------------------------------------------------------------------


async def test_two_nodes_one_subscription(
    redis_server: RedisServer, tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    """Only the lease holder subscribes; the hub's verification and deliveries may reach the
    other node; the node taking the feed over renews the stored subscription when due,
    without subscribing anew."""
    hub = Hub()
    async with (
        two_redis_nodes(redis_server, tmp_path, hub) as (a, b, shared),
        trio.open_nursery() as nursery,
    ):
        hub.verify_at = b.sub  # the verification of a's request reaches b
        a_polls = await start_polling(nursery, a, FEED)
        await trio.sleep(1)
        await start_polling(nursery, b, FEED)
        await trio.sleep(LEASE)  # b tried for the lease, in vain
        assert b.polls == [] and a.polls[0] == 0
        [(at, who, token)] = hub.subscribes()
        assert (at, who) == (0, "a") and hub.verifications == [("subscribe", 200)]
        stored = await shared.subscription("f")
        assert stored is not None and stored.state == "active" and stored.token == token
        assert a.sub.subs["f"].state == "active"  # a saw what b stored
        query = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "c"}
        assert (await b.sub.verify("nope", query)).status == 404

        # A content distribution reaching either node is ingested there.
        body = feed_body()
        for n in (b, a):
            answer = await n.sub.deliver(token, signed(stored.secret, body), body, ATOM)
            assert answer.outcome == "accepted"
        await trio.sleep(1)
        assert (a.ingested, b.ingested) == ([body], [body])
        bad = await b.sub.deliver(token, signed("wrong", body), body, ATOM)
        assert bad.outcome.startswith("signature_") and b.ingested == [body]

        # a gives the feed up; b takes it over within a lease and renews when due.
        await a_polls.stop()
        hub.verify_at = a.sub  # and the renewal's verification reaches a
        await trio.sleep(LEASE / 3 + 1)  # b asks for the lease every third of it
        assert b.leases is not None and await b.leases.holder("f") == "b"
        renewal = renewal_time(EPOCH, 1000, random.Random(token).random()) - EPOCH
        assert trio.current_time() < renewal - 10  # taken over well before renewal is due
        await trio.sleep(renewal - 1 - trio.current_time())
        assert len(hub.subscribes()) == 1  # no new subscription: the stored one is active
        await trio.sleep(2)
        [_, (renewed_at, who, renewed_token)] = hub.subscribes()
        assert who == "b" and renewed_token == token
        assert renewed_at == pytest.approx(renewal, abs=0.01)
        assert hub.verifications[-1] == ("subscribe", 200)
        after = await shared.subscription("f")
        assert after is not None and after.state == "active"
        assert after.verified_at == pytest.approx(EPOCH + renewal, abs=0.01)
        assert b.sub.subs["f"].verified_at == after.verified_at
        nursery.cancel_scope.cancel()


async def test_a_change_from_another_node_is_not_lost(
    redis_server: RedisServer, tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    """a applies the hub's answer to the row it read before b stored the verification: the
    write is refused, a reads the row again, and the verification stands."""
    hub = Hub(verify=False)
    async with (
        two_redis_nodes(redis_server, tmp_path, hub) as (a, b, shared),
        trio.open_nursery() as nursery,
    ):
        await start_polling(nursery, a, FEED)
        await trio.sleep(1)
        [(_, _, token)] = hub.subscribes()
        pending = await shared.subscription("f")
        assert pending is not None and pending.state == "pending"
        query = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "c",
                 "hub.lease_seconds": "1000"}  # fmt: skip
        assert (await b.sub.verify(token, query)).status == 200
        reads: list[m.Sub | None] = [m.Sub.from_row(pending)]  # what a had read before

        async def read() -> m.Sub | None:
            return reads.pop() if reads else await a.sub._lookup(token)

        answer = HubResponse(HubOutcome.ACCEPTED, 202, "accepted")
        before, after = await a.sub._change(
            read, m.HubAnswered(Mode.SUBSCRIBE, answer, "https://hub2.test/")
        )
        assert before is not None and before.state is m.SubscriptionState.ACTIVE
        assert after is not None and after.state is m.SubscriptionState.ACTIVE
        stored = await shared.subscription("f")
        assert stored is not None and stored.state == "active"
        assert stored.endpoint == "https://hub2.test/" and stored.lease_seconds == 1000
        nursery.cancel_scope.cancel()


async def test_a_removed_feed_is_left_by_whoever_gets_its_lease(
    redis_server: RedisServer, tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    """b's config no longer has the feed, a's still has it and polls it: b leaves the
    subscription alone while a holds the lease, and unsubscribes once it gets the lease."""
    hub = Hub()
    async with connect(redis_server.url) as ca, connect(redis_server.url) as cb:
        a_leases = RedisLeases(ca, LEASE, node="a")
        async with node("a", hub, RedisState(ca), tmp_path, [FEED], a_leases) as a:
            hub.verify_at = a.sub
            async with trio.open_nursery() as nursery:
                a_polls = await start_polling(nursery, a, FEED)
                await trio.sleep(1)
                assert len(hub.subscribes()) == 1
                b_leases = RedisLeases(cb, LEASE, node="b")
                async with node("b", hub, RedisState(cb), tmp_path, [], b_leases) as b:
                    await trio.sleep(LEASE)
                    assert hub.unsubscribes() == []
                    assert (await a.state.subscription("f")) is not None
                    await a_polls.stop()
                    hub.verify_at = b.sub
                    await trio.sleep(LEASE / 3 + 10)
                    assert [who for _, who in hub.unsubscribes()] == ["b"]
                    assert hub.verifications[-1] == ("unsubscribe", 200)
                    assert await b.state.subscription("f") is None
                    assert await b_leases.holder("f") is None  # given back
                nursery.cancel_scope.cancel()


async def test_callbacks_answer_503_when_redis_is_away(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    hub = Hub()
    async with connect(redis_server.url) as client:
        leases = RedisLeases(client, LEASE, node="a")
        async with node("a", hub, RedisState(client), tmp_path, [FEED], leases) as a:
            await trio.to_thread.run_sync(redis_server.stop)
            query = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "c"}
            decision = await a.sub.verify("tok", query)
            assert decision.status == 503 and ("Retry-After", "5") in decision.headers
            result = await a.sub.deliver("tok", None, b"x", ATOM)
            assert result.status == 503 and result.outcome == "unavailable"


async def test_a_reload_that_keeps_the_feed_polling_restarts_its_upkeep(
    redis_server: RedisServer, tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    """A reload changing only settings the poll task does not read (the runtime keeps that
    task, and so the lease): the upkeep goes on, with the new settings."""
    hub = Hub()
    async with (
        one_node("redis", tmp_path, redis_server, hub, [FEED]) as n,
        trio.open_nursery() as nursery,
    ):
        await start_polling(nursery, n, FEED)
        await trio.sleep(1)
        [(_, _, token)] = hub.subscribes()
        longer = replace(FEED, websub_lease=2000)
        await n.sub.update([longer])
        renewal = renewal_time(EPOCH, 1000, random.Random(token).random()) - EPOCH
        await trio.sleep(renewal + 1 - trio.current_time())
        [first, renewed] = [form for _, _, form in hub.posts]
        assert first["hub.lease_seconds"] == "1000" and renewed["hub.lease_seconds"] == "2000"
        nursery.cancel_scope.cancel()
