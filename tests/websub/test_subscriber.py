"""The WebSub subscriber on virtual time: leases, renewals, retries, restarts, push health."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import trio
import trio.testing

from feedstream.core.config import FeedConfig
from feedstream.core.times import format_rfc3339
from feedstream.log.state import SQLiteState
from feedstream.log.store import Store, Subscription
from feedstream.websub.discovery import Discovery
from feedstream.websub.protocol import SubscriptionState, check_delivery, renewal_time
from feedstream.websub.subscriber import VERIFY_TIMEOUT, DeliveryResult, Subscriber
from tests.support.helpers import inline

EPOCH = 1_700_000_000.0
HUB = "https://hub.test/"
TOPIC = "https://pub.test/feed"
FEED = FeedConfig(id="f", url=TOPIC, interval=300, websub_poll=6 * 3600, websub_lease=1000)


def now() -> float:
    return EPOCH + trio.current_time()


async def no_ingest(feed: FeedConfig, body: bytes, content_type: str | None) -> int:
    return 0


def bare_subscriber(
    client: httpx.AsyncClient, store: Store, *, jitter: float | Callable[[], float] = 0.5
) -> Subscriber:
    """A subscriber at http://me.test on virtual time, storing inline, ingesting nothing."""
    draw = jitter if callable(jitter) else (lambda: jitter)
    return Subscriber(
        public_url="http://me.test", state=SQLiteState(store, inline), client=client, ingest=no_ingest,
        offload=inline, wall_clock=now, jitter=draw,
    )  # fmt: skip


def intent_check(form: dict[str, str], lease: int) -> tuple[str, dict[str, str]]:
    """What a hub sends back for the subscription request *form*: the callback's token and the
    verification of intent's query (challenge "c")."""
    token = form["hub.callback"].rsplit("/", 1)[1]
    query = {"hub.mode": form["hub.mode"], "hub.topic": form["hub.topic"], "hub.challenge": "c"}
    if form["hub.mode"] == "subscribe":
        query["hub.lease_seconds"] = str(lease)
    return token, query


class MockHub:
    """A hub behind httpx.MockTransport that verifies synchronously, inside the POST."""

    def __init__(self) -> None:
        self.subscriber: Subscriber | None = None
        self.posts: list[tuple[float, dict[str, str]]] = []
        self.status = 202
        self.verify = True
        self.lease = 1000

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.posts.append((trio.current_time(), form))
        if self.status == 202 and self.verify:
            assert self.subscriber is not None
            token, query = intent_check(form, self.lease)
            decision = await self.subscriber.verify(token, query)
            assert decision.status == 200 and decision.body == "c"
        return httpx.Response(self.status)

    def times(self, mode: str = "subscribe") -> list[float]:
        return [t for t, form in self.posts if form["hub.mode"] == mode]


@asynccontextmanager
async def subscriber(
    store: Store, hub: MockHub, feeds: list[FeedConfig], ingested: list[bytes] | None = None
) -> AsyncIterator[Subscriber]:
    async def ingest(feed: FeedConfig, body: bytes, content_type: str | None) -> int:
        if ingested is not None:
            ingested.append(body)
        return 1

    async with httpx.AsyncClient(transport=httpx.MockTransport(hub)) as client:
        sub = Subscriber(
            public_url="http://me.test:8080/",
            state=SQLiteState(store, inline),
            client=client,
            ingest=ingest,
            offload=inline,
            wall_clock=now,
            jitter=lambda: 0.5,
        )
        hub.subscriber = sub
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(sub.run, feeds))
            yield sub
            nursery.cancel_scope.cancel()


def discovery() -> Discovery:
    return Discovery([HUB], TOPIC, "headers")


async def test_lease_renewal_at_about_80_percent(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = Store(tmp_path / "db")
    hub = MockHub()
    async with subscriber(store, hub, [FEED]) as sub:
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
        assert hub.times() == [0]
        state = sub.subs["f"]
        assert state.state == "active" and state.lease_seconds == 1000
        assert state.lease_expires == pytest.approx(EPOCH + 1000, abs=0.01)
        token = state.token
        first_renewal = renewal_time(EPOCH, 1000, random.Random(token).random()) - EPOCH
        assert 750 <= first_renewal <= 800
        await trio.sleep(2000)
        times = hub.times()
        assert times[1] == pytest.approx(first_renewal)
        assert times[2] == pytest.approx(times[1] + first_renewal)
        assert sub.subs["f"].token == token  # a renewal keeps the callback
        assert {form["hub.lease_seconds"] for _, form in hub.posts} == {"1000"}


async def test_subscription_is_stored_before_the_post(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The mock hub verifies inside the POST: that only works if the row exists already."""
    store = Store(tmp_path / "db")
    hub = MockHub()
    async with subscriber(store, hub, [FEED]) as sub:
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
    stored = store.subscriptions()["f"]
    assert (stored.state, stored.hub, stored.topic) == ("active", HUB, TOPIC)
    assert stored.secret and len(stored.secret.encode()) < 200


async def test_restart_keeps_the_subscription(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = Store(tmp_path / "db")
    hub = MockHub()
    async with subscriber(store, hub, [FEED]) as sub:
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(100)
        token = sub.subs["f"].token
    assert hub.times() == [0]

    restarted_hub = MockHub()
    async with subscriber(Store(tmp_path / "db"), restarted_hub, [FEED]) as sub:
        assert sub.subs["f"].state == "active" and sub.push_is_live("f")
        await trio.sleep(500)
        assert restarted_hub.posts == []  # nothing to do before the renewal is due
        query = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.lease_seconds": "1000"}
        decision = await sub.verify(token, {**query, "hub.challenge": "x"})
        assert decision.status == 200  # the stored callback still answers (and re-verifies)
        await trio.sleep(1000)
        assert len(restarted_hub.times()) == 1  # renewed from the stored lease


async def test_refused_subscription_backs_off_and_polling_stays_normal(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MockHub()
    hub.status = 500
    async with subscriber(Store(tmp_path / "db"), hub, [FEED]) as sub:
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
        state = sub.subs["f"]
        assert state.state == "failed" and "500" in (state.error or "")
        assert sub.interval(FEED) == FEED.interval
        await trio.sleep(3600)
        times = hub.times()
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 4 and all(g2 > g1 for g1, g2 in itertools.pairwise(gaps))
        hub.status = 202
        await trio.sleep(6 * 3600)
        assert sub.subs["f"].state == "active" and sub.subs["f"].attempts == 0


async def test_accepted_but_never_verified_is_retried(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MockHub()
    hub.verify = False
    async with subscriber(Store(tmp_path / "db"), hub, [FEED]) as sub:
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
        assert sub.subs["f"].state == "pending"
        await trio.sleep(VERIFY_TIMEOUT)
        assert sub.subs["f"].state == "failed"
        await trio.sleep(3600)
        assert len(hub.times()) >= 2


async def test_push_health_moves_the_poll_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MockHub()
    ingested: list[bytes] = []
    async with subscriber(Store(tmp_path / "db"), hub, [FEED], ingested) as sub:
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
        assert sub.interval(FEED) == 6 * 3600  # push works: poll as a safety net only
        await sub.polled(FEED, 0, now())
        assert sub.interval(FEED) == 6 * 3600
        await sub.polled(FEED, 3, now())  # a poll found entries the hub never delivered
        assert sub.interval(FEED) == FEED.interval and sub.status("f")["push_healthy"] is False  # type: ignore[index]
        state = sub.subs["f"]
        body = b"<feed/>"
        signature = (
            "sha256=" + hmac.new((state.secret or "").encode(), body, hashlib.sha256).hexdigest()
        )
        result = await sub.deliver(state.token, signature, body, "application/atom+xml")
        assert result.status == 200
        await trio.sleep(1)
        assert ingested == [body]
        assert sub.interval(FEED) == 6 * 3600 and sub.subs["f"].last_push == pytest.approx(
            now(), abs=2
        )


async def test_removed_feed_is_unsubscribed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = Store(tmp_path / "db")
    store.save_subscription(
        Subscription(
            feed_id="gone",
            token="t" * 43,
            hub=HUB,
            endpoint=HUB,
            topic=TOPIC,
            secret="s",
            state="active",
        )
    )
    hub = MockHub()
    async with subscriber(store, hub, []):
        await trio.sleep(1)
        assert hub.times("unsubscribe") == [0]
    assert store.subscriptions() == {}


async def test_new_hub_means_a_new_subscription(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MockHub()
    async with subscriber(Store(tmp_path / "db"), hub, [FEED]) as sub:
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
        old_token = sub.subs["f"].token
        sub.discovered(FEED, Discovery(["https://other-hub.test/"], TOPIC, "headers"), TOPIC)
        await trio.sleep(1)
        assert sub.subs["f"].hub == "https://other-hub.test/" and sub.subs["f"].token != old_token
        assert hub.times("unsubscribe") != []  # the old subscription is given up


async def test_deliveries_beyond_the_queue_get_503(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MockHub()
    blocker = trio.Event()

    async def slow_ingest(feed: FeedConfig, body: bytes, content_type: str | None) -> int:
        await blocker.wait()
        return 0

    async with subscriber(Store(tmp_path / "db"), hub, [FEED]) as sub:
        sub._ingest = slow_ingest
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
        state = sub.subs["f"]
        body = b"<feed/>"
        signature = (
            "sha256=" + hmac.new((state.secret or "").encode(), body, hashlib.sha256).hexdigest()
        )
        statuses = [
            (await sub.deliver(state.token, signature, body, None)).status for _ in range(70)
        ]
        assert statuses.count(200) >= 64 and statuses[-1] == 503
        busy = await sub.deliver(state.token, signature, body, None)
        assert busy == DeliveryResult(503, "too many deliveries waiting; retry later", "busy")
        blocker.set()


async def test_poller_slows_down_while_push_works_and_falls_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    from feedstream.log.sqlite import SQLiteLog
    from feedstream.service.fetch import HostGate
    from feedstream.service.poller import PollContext, run_feed

    store = Store(tmp_path / "db")
    hub = MockHub()
    polls: list[float] = []
    entries = ["a"]

    def publisher(request: httpx.Request) -> httpx.Response:
        polls.append(trio.current_time())
        items = "".join(f"<entry><id>urn:{k}</id><title>{k}</title></entry>" for k in entries)
        body = f'<feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>{items}</feed>'
        link = f'<{HUB}>; rel="hub", <{TOPIC}>; rel="self"'
        return httpx.Response(200, content=body.encode(), headers={"Link": link})

    async def route(request: httpx.Request) -> httpx.Response:
        return await hub(request) if request.url.host == "hub.test" else publisher(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(route)) as client:
        sub = bare_subscriber(client, store, jitter=0.5)
        hub.subscriber = sub
        log = SQLiteLog(store, store.snapshot(10), backlog=10, offload=inline)
        ctx = PollContext(client, log, store, HostGate(total=2, per_host=2, gap=0), inline, now,
                          lambda: 0.5, websub=sub, parse=inline)  # fmt: skip
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(sub.run, [FEED]))
            await nursery.start(run_feed, FEED, ctx)
            await trio.sleep(1)
            assert sub.subs["f"].state == "active"
            await trio.sleep(2 * 3600)
            # The poll that found the hub may end before or after the hub verified (trio does
            # not order tasks woken at the same instant): its successor is at 300 s or 6 h.
            assert polls in ([0], [0, 300])
            last = polls[-1]
            entries.append("b")  # published, but the hub never pushes it
            await trio.sleep(last + 6 * 3600 + 1 - trio.current_time())
            assert polls[-1] == last + 6 * 3600  # the safety net finds it
            assert sub.subs["f"].push_healthy is False
            await trio.sleep(300)
            assert polls[-1] == last + 6 * 3600 + 300  # back to the feed's own interval
            nursery.cancel_scope.cancel()


async def test_a_denial_is_recorded_and_polling_stays_normal(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MockHub()
    hub.verify = False
    async with subscriber(Store(tmp_path / "db"), hub, [FEED]) as sub:
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
        token = sub.subs["f"].token
        query = {"hub.mode": "denied", "hub.topic": TOPIC, "hub.reason": "not <b>allowed</b>"}
        decision = await sub.verify(token, query)
        assert decision.status == 200
        state = sub.subs["f"]
        assert state.state == "denied" and "not" in (state.error or "")
        assert sub.interval(FEED) == FEED.interval
        await trio.sleep(24 * 3600)
        assert len(hub.times()) == 1  # no retry storm after a denial


async def test_a_redirect_to_plain_http_never_carries_the_secret(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    posts: list[str] = []

    async def hub(request: httpx.Request) -> httpx.Response:
        posts.append(str(request.url))
        if request.url.host == "hub.test":
            return httpx.Response(307, headers={"Location": "http://plain.test/hub"})
        return httpx.Response(202)

    async with httpx.AsyncClient(transport=httpx.MockTransport(hub)) as client:
        sub = bare_subscriber(client, Store(tmp_path / "db"), jitter=0.5)
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(sub.run, [FEED]))
            sub.discovered(FEED, discovery(), TOPIC)
            await trio.sleep(1)
            assert posts == [HUB]  # the redirect is not followed
            state = sub.subs["f"]
            assert state.state == "failed" and "https" in (state.error or "")
            assert state.endpoint == HUB
            nursery.cancel_scope.cancel()


async def test_a_permanent_redirect_moves_the_endpoint_for_renewals(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MockHub()

    async def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "hub.test":
            return httpx.Response(308, headers={"Location": "https://hub2.test/"})
        return await hub(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(route)) as client:
        sub = bare_subscriber(client, Store(tmp_path / "db"), jitter=0.5)
        hub.subscriber = sub
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(sub.run, [FEED]))
            sub.discovered(FEED, discovery(), TOPIC)
            await trio.sleep(1)
            state = sub.subs["f"]
            assert state.state == "active" and state.endpoint == "https://hub2.test/"
            assert state.hub == HUB and hub.posts[0][1]["hub.secret"] == state.secret
            nursery.cancel_scope.cancel()


def signed(secret: str | None, body: bytes) -> str:
    return "sha256=" + hmac.new((secret or "").encode(), body, hashlib.sha256).hexdigest()


def test_who_uses_websub_and_the_callback_url(tmp_path: Path) -> None:
    assert Subscriber.wants(FeedConfig(id="a", url=TOPIC))
    assert Subscriber.wants(FeedConfig(id="a", url=TOPIC, websub=True))
    assert not Subscriber.wants(FeedConfig(id="a", url=TOPIC, websub=False))
    assert not Subscriber.wants(FeedConfig(id="a", url=None))
    assert not Subscriber.wants(FeedConfig(id="a", url=None, websub=True))
    sub = Subscriber(public_url="http://me.test:8080//", state=SQLiteState(Store(tmp_path / "db")),
                     client=httpx.AsyncClient(), ingest=None)  # type: ignore[arg-type]  # fmt: skip
    assert sub.callback_url("t") == "http://me.test:8080/websub/t"


async def test_unknown_callbacks_get_404(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MockHub()
    async with subscriber(Store(tmp_path / "db"), hub, [FEED]) as sub:
        query = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "c"}
        assert (await sub.verify("nope", query)).status == 404
        result = await sub.deliver("nope", None, b"x", None)
        assert result == DeliveryResult(404, "unknown callback", "unknown_callback")


async def test_delivery_answers(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    hub = MockHub()
    ingested: list[tuple[str, bytes, str | None]] = []

    async def ingest(feed: FeedConfig, body: bytes, content_type: str | None) -> int:
        ingested.append((feed.id, body, content_type))
        if body == b"boom":
            raise ValueError("a bug in ingest")
        return 1

    async with subscriber(Store(tmp_path / "db"), hub, [FEED]) as sub:
        sub._ingest = ingest
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
        state = sub.subs["f"]
        body = b"<feed/>"
        bad = await sub.deliver(state.token, "sha256=" + "0" * 64, body, None)
        expected = check_delivery(
            SubscriptionState.ACTIVE, state.secret, "sha256=" + "0" * 64, body
        )
        assert expected.signature is not None
        assert bad == DeliveryResult(
            expected.status, expected.reason, f"signature_{expected.signature.status}"
        )
        good = await sub.deliver(state.token, signed(state.secret, b"boom"), b"boom", "a/b")
        assert good == DeliveryResult(200, "signature ok", "accepted")
        await sub.deliver(state.token, signed(state.secret, body), body, "application/atom+xml")
        await trio.sleep(1)
        assert ingested == [("f", b"boom", "a/b"), ("f", body, "application/atom+xml")]
        query = {"hub.mode": "denied", "hub.topic": TOPIC}
        await sub.verify(state.token, query)
        result = await sub.deliver(state.token, signed(state.secret, body), body, None)
        assert result == DeliveryResult(410, "subscription is denied", "inactive")


async def test_status_and_discovery_without_a_hub(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MockHub()
    async with subscriber(Store(tmp_path / "db"), hub, [FEED]) as sub:
        assert sub.status("f") is None
        sub.discovered(FEED, Discovery([], None, "none"), TOPIC)
        await trio.sleep(1)
        assert sub.status("f") is None and hub.posts == []
        hub.verify = False
        sub.discovered(FEED, Discovery([HUB], None, "headers"), TOPIC + "?fetched")
        assert sub.status("f") == {"hub": HUB, "topic": TOPIC + "?fetched", "state": "none"}
        await trio.sleep(1)
        assert sub.status("f") == {
            "hub": HUB,
            "topic": TOPIC + "?fetched",
            "state": "pending",
            "lease_expires": None,
            "last_push": None,
            "push_healthy": True,
            "error": None,
        }
        assert hub.posts[0][1]["hub.topic"] == TOPIC + "?fetched"
        token = sub.subs["f"].token
        query = {"hub.mode": "subscribe", "hub.topic": TOPIC + "?fetched", "hub.challenge": "c",
                 "hub.lease_seconds": "1000"}  # fmt: skip
        await sub.verify(token, query)
        assert sub.status("f") == {
            "hub": HUB,
            "topic": TOPIC + "?fetched",
            "state": "active",
            "lease_expires": format_rfc3339(now() + 1000),
            "last_push": None,
            "push_healthy": True,
            "error": None,
        }
        await sub.deliver(token, signed(sub.subs["f"].secret, b"x"), b"x", None)
        await trio.sleep(1)
        assert sub.status("f")["last_push"] == format_rfc3339(now() - 1)  # type: ignore[index]
        assert sub.status("f")["lease_expires"] == format_rfc3339(EPOCH + 1002)  # type: ignore[index]
        sub.discovered(FEED, Discovery([], None, "none"), TOPIC)  # the hub is gone: let it lapse
        await trio.sleep(5000)
        assert len(hub.times()) == 1


async def test_hub_trouble_is_recorded(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    answers: list[httpx.Response | Exception] = []

    async def hub(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async with httpx.AsyncClient(transport=httpx.MockTransport(hub)) as client:
        sub = bare_subscriber(client, Store(tmp_path / "db"), jitter=0.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(sub.run, [FEED]))
            answers.append(httpx.ConnectError("refused"))
            sub.discovered(FEED, discovery(), TOPIC)
            await trio.sleep(1)
            state = sub.subs["f"]
            assert state.error == "hub unreachable: ConnectError refused"
            assert state.retry_at == pytest.approx(EPOCH + 60, abs=0.01)  # jitter 0: the full delay
            answers.append(httpx.Response(503, headers={"Retry-After": "3600"}, content=b"busy"))
            await trio.sleep(60)
            state = sub.subs["f"]
            assert state.error == "hub answered 503: busy" and state.attempts == 2
            assert state.retry_at == pytest.approx(EPOCH + 60 + 3600, abs=0.01)
            answers.extend(httpx.Response(307, headers={"Location": HUB}) for _ in range(6))
            await trio.sleep(3600)
            assert answers == [] and sub.subs["f"].error == "hub redirected more than 5 times"
            nursery.cancel_scope.cancel()


async def test_update_follows_the_config(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = Store(tmp_path / "db")
    hub = MockHub()
    async with subscriber(store, hub, [FEED]) as sub:
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
        changed = FeedConfig(id="f", url=TOPIC, interval=300, websub_poll=6 * 3600, websub_lease=50)
        await sub.update([changed])  # a changed feed: upkeep restarts, discovery is kept
        await trio.sleep(1)
        assert sub.status("f")["state"] == "active"  # type: ignore[index]
        assert hub.times() == [0]  # nothing to do until the renewal is due
        moved = replace(changed, url=TOPIC + "?moved")
        await sub.update([moved])  # a new URL: discovery starts over
        assert sub.subs["f"].hub == HUB and sub._targets == {}
        hub.verify = False  # the hub accepts the unsubscription but never verifies it
        await sub.update([])
        await trio.sleep(1)
        assert hub.times("unsubscribe") == [2] and sub.subs["f"].state == "unsubscribing"
        await trio.sleep(VERIFY_TIMEOUT)
        assert sub.subs == {} and store.subscriptions() == {}
        await sub.update([FEED, FeedConfig(id="p", url=None)])
        assert set(sub._feeds) == {"f"}


async def test_a_replaced_subscription_is_given_up_completely(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MockHub()
    async with subscriber(Store(tmp_path / "db"), hub, [FEED]) as sub:
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
        old = sub.subs["f"].token
        hub.verify = False
        sub.discovered(FEED, Discovery(["https://other-hub.test/"], TOPIC, "headers"), TOPIC)
        await trio.sleep(1)
        assert old in sub._retiring
        await trio.sleep(VERIFY_TIMEOUT)
        assert sub._retiring == {} and old not in sub._tokens
        query = {"hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.challenge": "c"}
        assert (await sub.verify(old, query)).status == 404


async def test_update_touches_only_what_changed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = Store(tmp_path / "db")
    hub = MockHub()
    other = FeedConfig(id="g", url=TOPIC + "/g", interval=300, websub_lease=1000)
    async with subscriber(store, hub, [FEED, other]) as sub:
        sub.discovered(FEED, discovery(), TOPIC)
        sub.discovered(other, Discovery([HUB], None, "headers"), TOPIC + "/g")
        await trio.sleep(1)
        assert sorted(form["hub.topic"] for _, form in hub.posts) == [TOPIC, TOPIC + "/g"]
        sub.discovered(FEED, Discovery([], None, "none"), TOPIC)  # f's hub is gone: let it lapse
        longer = replace(other, websub_lease=2000)
        await sub.update([FEED, longer])  # f unchanged, g changed (same URL)
        await trio.sleep(1000)
        # g renews once (one upkeep loop, not two) and with its new lease; f lapses quietly
        renewals = [form for _, form in hub.posts[2:]]
        assert [form["hub.topic"] for form in renewals] == [TOPIC + "/g"]
        assert renewals[0]["hub.lease_seconds"] == "2000"
        same = replace(FEED, websub_lease=3000)
        await sub.update([same, longer])  # same URL: what discovery said still stands
        await trio.sleep(1000)
        assert all(form["hub.topic"] != TOPIC for _, form in hub.posts[2:])


async def test_an_old_callback_does_not_answer_for_a_new_subscription(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MockHub()
    async with subscriber(Store(tmp_path / "db"), hub, [FEED]) as sub:
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
        old = sub.subs["f"].token
        await sub.update([])
        await trio.sleep(1)
        assert sub.subs == {}
        await sub.update([FEED])
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
        assert sub.subs["f"].token != old
        query = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "c"}
        assert (await sub.verify(old, query)).status == 404
        body = b"x"
        result = await sub.deliver(old, signed(sub.subs["f"].secret, body), body, None)
        assert result.status == 404


async def test_deliveries_for_a_removed_feed_are_gone(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MockHub()
    async with subscriber(Store(tmp_path / "db"), hub, [FEED]) as sub:
        sub.discovered(FEED, discovery(), TOPIC)
        await trio.sleep(1)
        state = sub.subs["f"]
        hub.verify = False
        await sub.update([])
        await trio.sleep(1)
        body = b"x"
        result = await sub.deliver(state.token, signed(state.secret, body), body, None)
        assert result == DeliveryResult(410, "feed no longer configured", "feed_removed")


async def test_relative_redirects_and_never_verified_retries(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    posts: list[str] = []

    async def hub(request: httpx.Request) -> httpx.Response:
        posts.append(str(request.url))
        if request.url.path == "/":
            return httpx.Response(307, headers={"Location": "/moved"})
        return httpx.Response(202)  # accepted, but no verification ever comes

    async with httpx.AsyncClient(transport=httpx.MockTransport(hub)) as client:
        sub = bare_subscriber(client, Store(tmp_path / "db"), jitter=0.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(sub.run, [FEED]))
            sub.discovered(FEED, discovery(), TOPIC)
            await trio.sleep(1)
            assert posts == [HUB, "https://hub.test/moved"]
            assert sub.subs["f"].endpoint == HUB  # a 307 is temporary
            await trio.sleep(VERIFY_TIMEOUT)
            state = sub.subs["f"]
            assert state.state == "failed" and state.retry_at == pytest.approx(
                EPOCH + VERIFY_TIMEOUT + 60, abs=0.01
            )
            nursery.cancel_scope.cancel()


async def test_a_bug_in_upkeep_pauses_a_minute(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MockHub()
    calls = itertools.count()

    def jitter() -> float:
        if next(calls) == 0:
            raise RuntimeError("a bug")
        return 0.5

    async with httpx.AsyncClient(transport=httpx.MockTransport(hub)) as client:
        sub = bare_subscriber(client, Store(tmp_path / "db"), jitter=jitter)
        hub.subscriber = sub
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(sub.run, [FEED]))
            sub.discovered(FEED, discovery(), TOPIC)
            await trio.sleep(100)
            assert hub.times() == [60]
            nursery.cancel_scope.cancel()
