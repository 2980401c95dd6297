"""The WebSub hub's shell (feedstream.service.hub) against subscribers on loopback.

The cases follow the websub.rocks hub suite: a typical subscription, with a secret, a callback
with its own query parameters, re-subscription, unsubscription, distribution of Atom, RSS and
JSON Feed topics; then a wrong challenge, a 410, a hanging callback, a private address refused.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import feedparser
import httpx
import pytest
import trio
import trio.testing

from feedstream.log.base import Selection
from feedstream.log.hubstore import MemoryHubStore, SQLiteHubStore
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import Store
from feedstream.service.hub import HOST_POOLS, HUB_LEASE, Hub, PinnedTransport, PrivateCallbackError
from feedstream.websub.hub import RETRY_WINDOW, HubSettings, HubState
from tests.support.callbacks import Callbacks
from tests.support.helpers import entry, inline

PUBLIC = "http://feeds.test"
TOPIC = f"{PUBLIC}/feeds/all.atom"
FEEDS = {"hn", "lwn"}


def select(name: str) -> tuple[frozenset[str] | None, Selection | None] | None:
    if name == "all":
        return None, None
    return (frozenset({name}), None) if name in FEEDS else None


@asynccontextmanager
async def hub_env(
    store: MemoryHubStore | SQLiteHubStore | None = None, *, allow_private: bool = True
) -> AsyncIterator[tuple[Hub, Callbacks]]:
    async with trio.open_nursery() as nursery:
        callbacks = await Callbacks(nursery).start()
        transport = PinnedTransport(allow_private=allow_private)
        async with httpx.AsyncClient(transport=transport) as client:
            hub = Hub(
                HubSettings(PUBLIC), store or MemoryHubStore(), client, select=select, timeout=2
            )
            await nursery.start(hub.run)
            yield hub, callbacks
            nursery.cancel_scope.cancel()


def subscribe(callback: str, topic: str = TOPIC, **fields: str) -> dict[str, str]:
    form = {"hub.mode": "subscribe", "hub.topic": topic, "hub.callback": callback}
    form.update({f"hub.{k}": v for k, v in fields.items()})
    return form


async def until(check: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not check():  # noqa: ASYNC110 - the hub's state, looked at from outside
            await trio.sleep(0.01)


async def active(hub: Hub, topic: str, callback: str) -> None:
    def check() -> bool:
        sub = hub.subs.get((topic, callback))
        return sub is not None and sub.state is HubState.ACTIVE

    await until(check)


async def test_typical_subscription_and_distribution(tmp_path: Path) -> None:
    async with hub_env() as (hub, cb):
        callback = f"{cb.url}/ok"
        assert await hub.request(subscribe(callback, lease_seconds="7200")) == (202, "")
        [check] = await cb.wait("/ok", "GET")
        query = dict(check.query)
        assert query["hub.mode"] == "subscribe"
        assert query["hub.topic"] == TOPIC
        assert query["hub.lease_seconds"] == "7200"
        await active(hub, TOPIC, callback)
        assert hub.counts() == {"pending": 0, "active": 1, "failing": 0}
        hub.publish(TOPIC, b"<feed/>")
        [post] = await cb.wait("/ok", "POST")
        assert post.body == b"<feed/>"
        assert post.headers["content-type"] == "application/atom+xml; charset=utf-8"
        assert post.headers["link"] == f'<{PUBLIC}/websub/hub>; rel="hub", <{TOPIC}>; rel="self"'
        assert "x-hub-signature" not in post.headers


class CountingStore(MemoryHubStore):
    def __init__(self) -> None:
        super().__init__()
        self.saves = 0

    async def save(self, key: str, record: str) -> None:
        self.saves += 1
        await super().save(key, record)


async def test_healthy_deliveries_do_not_each_write_the_store() -> None:
    """A hundred subscribers must not cost a hundred writes per entry: a success that only
    moves last_delivery is kept in memory (written with the next change)."""
    store = CountingStore()
    async with hub_env(store) as (hub, cb):
        callback = f"{cb.url}/ok-count"
        await hub.request(subscribe(callback))
        await active(hub, TOPIC, callback)
        before = store.saves
        for k in range(3):
            hub.publish(TOPIC, f"doc {k}".encode())
        await cb.wait("/ok-count", "POST", 3)
        await until(lambda: hub.deliveries["ok"] == 3)
        # The subscription was written when verified, moments ago: three successes only
        # move last_delivery, which waits for the next change (or SAVE_INTERVAL).
        assert store.saves == before
        sub = hub.subs[(TOPIC, callback)]
        assert sub.last_delivery is not None and sub.failures == 0


async def test_secret_signs_the_body() -> None:
    async with hub_env() as (hub, cb):
        callback = f"{cb.url}/ok-secret"
        await hub.request(subscribe(callback, secret="s3cret"))
        await active(hub, TOPIC, callback)
        hub.publish(TOPIC, b"payload")
        [post] = await cb.wait("/ok-secret", "POST")
        digest = hmac.new(b"s3cret", b"payload", hashlib.sha256).hexdigest()
        assert post.headers["x-hub-signature"] == f"sha256={digest}"
        assert b"s3cret" not in post.body and "s3cret" not in json.dumps(post.headers)


async def test_callback_keeps_its_query() -> None:
    async with hub_env() as (hub, cb):
        callback = f"{cb.url}/ok-q?user=7&tag=a%20b"
        await hub.request(subscribe(callback))
        [check] = await cb.wait("/ok-q", "GET")
        assert check.query[:2] == [("user", "7"), ("tag", "a b")]
        await active(hub, TOPIC, callback)
        hub.publish(TOPIC, b"x")
        [post] = await cb.wait("/ok-q", "POST")
        assert post.query == [("user", "7"), ("tag", "a b")]


async def test_resubscription_renews_and_unsubscription_ends(tmp_path: Path) -> None:
    store = SQLiteHubStore(tmp_path / "hub.sqlite3", offload=inline)
    async with hub_env(store) as (hub, cb):
        callback = f"{cb.url}/ok"
        await hub.request(subscribe(callback, lease_seconds="3600"))
        await active(hub, TOPIC, callback)
        first = hub.subs[(TOPIC, callback)]
        await trio.sleep(0.05)
        await hub.request(subscribe(callback, lease_seconds="7200", secret="new"))
        await cb.wait("/ok", "GET", 2)
        await until(lambda: hub.subs[TOPIC, callback].secret == "new")
        renewed = hub.subs[(TOPIC, callback)]
        assert renewed.expires_at > first.expires_at + 3000
        assert renewed.created_at == first.created_at
        assert len(await store.load()) == 1
    # survives a restart
    async with hub_env(store) as (hub, cb2):
        assert hub.subs[(TOPIC, callback)].secret == "new"
        await hub.request({"hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.callback": callback})
        # the subscriber at the old address is gone, so verification fails and it stays
        await until(lambda: bool(hub.verifications["failed"]))
        assert (TOPIC, callback) in hub.subs
        callback2 = f"{cb2.url}/ok"
        await hub.request(subscribe(callback2))
        await active(hub, TOPIC, callback2)
        await hub.request(
            {"hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.callback": callback2}
        )
        [_, check] = await cb2.wait("/ok", "GET", 2)
        assert dict(check.query)["hub.mode"] == "unsubscribe"
        await until(lambda: (TOPIC, callback2) not in hub.subs)
        assert hub.ended["gone"] == 1
    assert len(await store.load()) == 1
    store.close()


async def test_distribution_per_format_from_the_log(tmp_path: Path) -> None:
    db = Store(tmp_path / "db.sqlite3")
    log = SQLiteLog(db, db.snapshot(100), backlog=100, offload=inline)
    async with hub_env() as (hub, cb):
        callbacks = {}
        for name, format in (("all", "atom"), ("hn", "rss"), ("lwn", "json")):
            topic = f"{PUBLIC}/feeds/{name}.{format}"
            callbacks[format] = (topic, f"{cb.url}/ok-{format}")
            await hub.request(subscribe(callbacks[format][1], topic))
        for topic, callback in callbacks.values():
            await active(hub, topic, callback)
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.follow, log)
            await log.append([entry("hn", "one", feed_title="HN"), entry("lwn", "two")])
            atom = (await cb.wait("/ok-atom", "POST"))[0]
            rss = (await cb.wait("/ok-rss", "POST"))[0]
            js = (await cb.wait("/ok-json", "POST"))[0]
            nursery.cancel_scope.cancel()
    parsed = feedparser.parse(atom.body)
    assert not parsed.bozo and [e.title for e in parsed.entries] == ["two", "one"]
    assert rss.headers["content-type"].startswith("application/rss+xml")
    parsed = feedparser.parse(rss.body)
    assert not parsed.bozo and [e.title for e in parsed.entries] == ["one"]
    assert parsed.feed.title == "HN"
    assert js.headers["content-type"].startswith("application/feed+json")
    assert [item["title"] for item in json.loads(js.body)["items"]] == ["two"]
    db.close()


async def test_wrong_challenge_is_not_a_subscription() -> None:
    async with hub_env() as (hub, cb):
        callback = f"{cb.url}/wrong"
        assert await hub.request(subscribe(callback)) == (202, "")
        await cb.wait("/wrong", "GET")
        await until(lambda: (TOPIC, callback) not in hub.subs)
        assert hub.verifications["failed"] == 1 and hub.ended["failed"] == 1


async def test_bad_request_and_foreign_topic_denied() -> None:
    async with hub_env() as (hub, cb):
        status, reason = await hub.request(subscribe("ftp://x/"))
        assert status == 400 and "hub.callback" in reason
        callback = f"{cb.url}/ok-denied"
        status, reason = await hub.request(subscribe(callback, f"{PUBLIC}/feeds/nope.atom"))
        assert status == 404 and "topic" in reason
        [denial] = await cb.wait("/ok-denied", "GET")
        assert dict(denial.query)["hub.mode"] == "denied"
        assert dict(denial.query)["hub.topic"] == f"{PUBLIC}/feeds/nope.atom"
        assert not hub.subs


async def test_410_ends_the_subscription() -> None:
    async with hub_env() as (hub, cb):
        callback = f"{cb.url}/gone"
        await hub.request(subscribe(callback))
        await active(hub, TOPIC, callback)
        hub.publish(TOPIC, b"x")
        await cb.wait("/gone", "POST")
        await until(lambda: (TOPIC, callback) not in hub.subs)
        assert hub.deliveries["gone"] == 1 and hub.ended["gone"] == 1


async def test_a_hanging_callback_delays_nobody() -> None:
    async with hub_env() as (hub, cb):
        paths = ["/hang", *(f"/ok-{i}" for i in range(5))]
        for path in paths:
            await hub.request(subscribe(f"{cb.url}{path}"))
        for path in paths:
            await active(hub, TOPIC, f"{cb.url}{path}")
        start = trio.current_time()
        for n in range(3):
            assert hub.publish(TOPIC, f"doc{n}".encode()) == 6
        for path in paths[1:]:
            got = await cb.wait(path, "POST", 3)
            assert [g.body for g in got] == [b"doc0", b"doc1", b"doc2"]
            assert max(g.time for g in got) - start < 1.0
        await cb.wait("/hang", "POST")


async def test_private_callback_refused_unless_allowed() -> None:
    async with hub_env(allow_private=False) as (hub, cb):
        callback = f"{cb.url}/ok"
        assert await hub.request(subscribe(callback)) == (202, "")
        await until(lambda: bool(hub.verifications["failed"]))
        assert not cb.got and not hub.subs
    transport = PinnedTransport(allow_private=False)
    async with httpx.AsyncClient(transport=transport) as client:
        for url in (
            "http://127.0.0.1:9/",
            "http://[::1]:9/",
            "http://10.0.0.1/",
            "http://169.254.1.1/",
        ):
            with pytest.raises(PrivateCallbackError):
                await client.get(url)


async def test_pinned_transport_connects_to_the_checked_address() -> None:
    seen: list[tuple[str, str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(
            (request.url.host, request.headers["host"], request.extensions.get("sni_hostname"))
        )
        return httpx.Response(204)

    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    transport = PinnedTransport(httpx.MockTransport(answer), resolve=resolve)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("https://sub.example.net/cb?x=1")).status_code == 204
    assert seen == [("93.184.216.34", "sub.example.net", "sub.example.net")]


async def test_retries_then_failing_then_recovers(autojump_clock: trio.testing.MockClock) -> None:
    statuses = [500]
    posts: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            challenge = dict(request.url.params)["hub.challenge"].encode()
            return httpx.Response(200, stream=httpx.ByteStream(challenge))
        posts.append(trio.current_time())
        return httpx.Response(statuses[0])

    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    transport = PinnedTransport(httpx.MockTransport(answer), resolve=resolve)
    clock = [1_700_000_000.0]
    async with trio.open_nursery() as nursery, httpx.AsyncClient(transport=transport) as client:
        hub = Hub(
            HubSettings(PUBLIC, min_lease=60, max_lease=100_000),
            MemoryHubStore(),
            client,
            select=select,
            wall_clock=lambda: clock[0] + trio.current_time(),
            jitter=lambda: 0.5,
        )
        await nursery.start(hub.run)
        callback = "https://sub.example.net/cb"
        await hub.request(subscribe(callback, lease_seconds="5000"))
        await active(hub, TOPIC, callback)
        hub.publish(TOPIC, b"x")
        await trio.sleep(RETRY_WINDOW + 60)
        sub = hub.subs[(TOPIC, callback)]
        assert sub.state is HubState.FAILING
        assert 5 <= len(posts) <= 20 and posts[-1] - posts[0] <= RETRY_WINDOW
        statuses[0] = 204
        hub.publish(TOPIC, b"y")
        await trio.sleep(1)
        assert hub.subs[(TOPIC, callback)].state is HubState.ACTIVE
        await trio.sleep(5000)  # the lease runs out: the sweep removes it
        assert not hub.subs and hub.ended["expired"] == 1
        nursery.cancel_scope.cancel()


class SharedLeases:
    """One holder at a time, as Redis's leases are (without the expiry)."""

    def __init__(self) -> None:
        self.holder: str | None = None

    def of(self, node: str) -> NodeLeases:
        return NodeLeases(self, node)


@dataclass
class NodeLeases:
    shared: SharedLeases
    node: str

    async def claim(self, name: str) -> bool:
        assert name == HUB_LEASE
        if self.shared.holder in (None, self.node):
            self.shared.holder = self.node
            return True
        return False

    async def release(self, name: str) -> None:
        if self.shared.holder == self.node:
            self.shared.holder = None


async def test_two_hubs_on_one_store_one_distributes_the_other_takes_over(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Several ingest nodes on one Redis: a subscription made through either reaches the
    hub holding the lease, which alone delivers; when it stops, the other takes over."""
    posts: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            challenge = dict(request.url.params)["hub.challenge"].encode()
            return httpx.Response(200, stream=httpx.ByteStream(challenge))
        posts.append(request.content)
        return httpx.Response(204)

    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    db = Store(tmp_path / "log.sqlite3")
    log = SQLiteLog(db, db.snapshot(100), backlog=100, offload=inline)
    store, leases = MemoryHubStore(), SharedLeases()
    transport = PinnedTransport(httpx.MockTransport(answer), resolve=resolve)
    async with httpx.AsyncClient(transport=transport) as client:

        def make(node: str) -> Hub:
            leased = leases.of(node)
            return Hub(
                HubSettings(PUBLIC), store, client, select=select, leases=leased, lease_seconds=3
            )

        async with trio.open_nursery() as nursery:
            first, second = make("a"), make("b")
            scopes = []
            for hub in (first, second):
                scope = trio.CancelScope()
                scopes.append(scope)

                async def run(hub: Hub = hub, scope: trio.CancelScope = scope) -> None:
                    with scope:
                        async with trio.open_nursery() as inner:
                            await inner.start(hub.run)
                            await inner.start(hub.follow, log)

                nursery.start_soon(run)
                await trio.sleep(0.1)
            assert (first.leading, second.leading) == (True, False)
            callback = "https://sub.example.net/cb"
            await second.request(subscribe(callback))  # through the node not distributing
            await active(second, TOPIC, callback)
            await trio.sleep(2)  # the next reload
            assert first.subs[(TOPIC, callback)].state is HubState.ACTIVE
            await log.append([entry("hn", "one")])
            await trio.sleep(1)
            assert len(posts) == 1 and b">one</title>" in posts[0]  # once, not twice
            scopes[0].cancel()  # the first node stops: it gives the lease up
            await trio.sleep(2.5)
            assert (first.leading, second.leading) == (False, True)
            await log.append([entry("hn", "two")])
            await trio.sleep(1)
            assert len(posts) == 2 and b">two</title>" in posts[1]
            await second.request(subscribe(callback, mode="unsubscribe"))
            await trio.sleep(1)
            assert not second.subs and not store.records
            nursery.cancel_scope.cancel()


async def test_pinned_transport_keeps_a_pool_per_host() -> None:
    """Two hosts on one address never share a connection (one made, and its certificate
    checked, for the other); one host's requests do reuse theirs."""
    seen: list[tuple[str, int]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append((self.headers["Host"].split(":")[0], self.client_address[1]))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    try:
        transport = PinnedTransport(allow_private=True, resolve=resolve)
        async with httpx.AsyncClient(transport=transport) as client:
            for host in ("a.test", "b.test", "a.test", "b.test"):
                answer = await client.post(f"http://{host}:{port}/cb", content=b"x")
                assert answer.status_code == 204
            ports = {host: {p for h, p in seen if h == host} for host in ("a.test", "b.test")}
            assert len(ports["a.test"]) == len(ports["b.test"]) == 1  # each reused its own
            assert ports["a.test"] != ports["b.test"]  # and never the other's
            for n in range(HOST_POOLS + 5):  # many hosts: the idle pools beyond go
                await client.post(f"http://h{n}.test:{port}/cb", content=b"x")
            assert len(transport._pools) <= HOST_POOLS
    finally:
        await trio.to_thread.run_sync(server.shutdown)


async def test_requests_to_many_subscribers_start_one_per_scheduler_pass() -> None:
    """An entry for a hundred subscribers must not wake a hundred requests into the same
    scheduler passes (each pass would then hold a push or a long-poll for all of their steps):
    they start one per pass, counted here by a task that checkpoints in a loop."""
    passes = 0
    started: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            challenge = dict(request.url.params)["hub.challenge"].encode()
            return httpx.Response(200, stream=httpx.ByteStream(challenge))
        started.append(passes)
        return httpx.Response(204)

    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    async def count_passes() -> None:
        nonlocal passes
        while True:
            passes += 1
            await trio.lowlevel.checkpoint()

    transport = PinnedTransport(httpx.MockTransport(answer), resolve=resolve)
    callbacks = [f"https://sub{i}.example.net/cb" for i in range(20)]
    async with trio.open_nursery() as nursery, httpx.AsyncClient(transport=transport) as client:
        hub = Hub(HubSettings(PUBLIC), MemoryHubStore(), client, select=select)
        await nursery.start(hub.run)
        for callback in callbacks:
            await hub.request(subscribe(callback))
        for callback in callbacks:
            await active(hub, TOPIC, callback)
        nursery.start_soon(count_passes)
        assert hub.publish(TOPIC, b"<feed/>") == len(callbacks)
        await until(lambda: hub.deliveries["ok"] == len(callbacks))
        nursery.cancel_scope.cancel()
    assert len(started) == len(callbacks)
    assert len(set(started)) == len(callbacks), started  # never two in one pass
