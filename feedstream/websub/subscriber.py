"""The WebSub subscriber: keeps one subscription per feed alive, and takes its deliveries.

A thin trio shell around :mod:`feedstream.websub.protocol` (which decides everything that can be
decided from data alone). The poller tells it what discovery found on each fetch; one task per
feed then subscribes, waits for the hub's verification, renews before the lease ends and retries
with backoff; a removed feed is unsubscribed. Subscriptions live in SQLite, written *before*
each request goes out, because hubs may verify before they answer the POST.

Deliveries are checked (signature, state) and answered at once; parsing and ingesting happen in
a worker task fed by a bounded channel, so a hub never waits for feedparser, and a flood gets
503 instead of eating memory.

Push health: while a subscription is active and healthy the feed is polled only every
``websub_poll`` seconds (a safety net). A poll that finds entries the hub never delivered, or a
subscription that failed, sends the feed back to its normal interval until a push arrives.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from feedstream.core.config import FeedConfig
from feedstream.log.cursorlog import Offload, format_time
from feedstream.log.store import Store, Subscription
from feedstream.websub.protocol import (
    ASSUMED_LEASE_SECONDS,
    DeliveryDecision,
    Discovery,
    HubOutcome,
    HubResponse,
    IntentDecision,
    Mode,
    SubscriptionRecord,
    SubscriptionState,
    check_delivery,
    classify_hub_response,
    new_callback_token,
    new_secret,
    renewal_time,
    retry_delay,
    subscription_form,
    verify_intent,
)

logger = logging.getLogger(__name__)

__all__ = ["DeliveryResult", "Subscriber"]

VERIFY_TIMEOUT = 300.0  # seconds a hub gets to verify a request it accepted
HUB_TIMEOUT = 20.0  # seconds for one request to a hub
DELIVERY_QUEUE = 64  # deliveries accepted but not yet parsed

_S = SubscriptionState
Ingest = Callable[[FeedConfig, bytes, str | None], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class _Target:
    hub: str
    topic: str


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    status: int
    reason: str
    outcome: str  # one word for metrics: accepted, or why not


def _refusal(decision: DeliveryDecision) -> str:
    if decision.signature is not None:
        return f"signature_{decision.signature.status}"
    return "unknown_callback" if decision.status == 404 else "inactive"


def _is_local(url: str) -> bool:
    host = httpx.URL(url).host
    return host in ("localhost", "127.0.0.1", "::1")


class Subscriber:
    def __init__(
        self,
        *,
        public_url: str,
        store: Store,
        client: httpx.AsyncClient,
        ingest: Ingest,
        offload: Offload = trio.to_thread.run_sync,
        wall_clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.public_url = public_url.rstrip("/")
        self._store = store
        self._client = client
        self._ingest = ingest
        self._offload = offload
        self._now = wall_clock
        self._jitter = jitter
        self.subs: dict[str, Subscription] = {}
        self._tokens: dict[str, str] = {}  # callback token -> feed id
        self._targets: dict[str, _Target | None] = {}  # None: discovery found no hub
        self._feeds: dict[str, FeedConfig] = {}
        self._changed: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._retiring: dict[str, Subscription] = {}  # replaced subscriptions being given up
        self._upkeep: dict[str, trio.CancelScope] = {}  # each feed's _maintain task
        self._queue_in, self._queue_out = trio.open_memory_channel[
            tuple[FeedConfig, bytes, str | None]
        ](DELIVERY_QUEUE)

    @staticmethod
    def wants(feed: FeedConfig) -> bool:
        """Whether *feed* uses WebSub (given that the server has a public URL)."""
        return feed.url is not None and feed.websub is not False

    def callback_url(self, token: str) -> str:
        return f"{self.public_url}/websub/{token}"

    # -- the long-lived part -----------------------------------------------------------------

    async def run(
        self,
        feeds: Sequence[FeedConfig],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.subs = await self._offload(self._store.subscriptions)
        self._tokens = {sub.token: sub.feed_id for sub in self.subs.values()}
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._deliveries)
            for feed in feeds:
                if self.wants(feed):
                    self._feeds[feed.id] = feed
                    await nursery.start(self._maintain, feed)
            for feed_id, sub in list(self.subs.items()):
                if feed_id not in self._feeds:
                    nursery.start_soon(self._retire, sub)
            task_status.started()

    async def update(self, feeds: Sequence[FeedConfig]) -> None:
        """Follow a reloaded config: upkeep starts for new feeds and restarts for changed ones;
        feeds gone from the config (or no longer using WebSub) are unsubscribed from their hub.
        """
        assert self._nursery is not None, "run() first"
        wanted = {feed.id: feed for feed in feeds if self.wants(feed)}
        for feed_id, old in list(self._feeds.items()):
            feed = wanted.get(feed_id)
            if feed == old:
                continue
            self._upkeep.pop(feed_id, trio.CancelScope()).cancel()
            del self._feeds[feed_id]
            if feed is None or feed.url != old.url:
                self._targets.pop(feed_id, None)  # discovery starts over
            sub = self.subs.get(feed_id)
            if feed is None and sub is not None:
                self._nursery.start_soon(self._retire, sub)
        for feed_id, feed in wanted.items():
            if feed_id not in self._feeds:
                self._feeds[feed_id] = feed
                await self._nursery.start(self._maintain, feed)

    def _wake(self, feed_id: str) -> None:
        event = self._changed.pop(feed_id, None)
        if event is not None:
            event.set()

    async def _save(self, sub: Subscription) -> None:
        self.subs[sub.feed_id] = sub
        self._tokens[sub.token] = sub.feed_id
        await self._offload(self._store.save_subscription, sub)

    async def _forget(self, sub: Subscription) -> None:
        if self.subs.get(sub.feed_id) is sub:
            del self.subs[sub.feed_id]
        self._tokens.pop(sub.token, None)
        await self._offload(self._store.delete_subscription, sub.feed_id)

    async def _maintain(
        self, feed: FeedConfig, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Subscribe, renew and retry for *feed*, until a reload cancels it."""
        with trio.CancelScope() as scope:
            self._upkeep[feed.id] = scope
            task_status.started()
            await self._upkeep_loop(feed)

    async def _upkeep_loop(self, feed: FeedConfig) -> None:
        while True:
            changed = self._changed.setdefault(feed.id, trio.Event())
            due = self._due(feed)
            if due is None:
                await changed.wait()
                continue
            delay = due - self._now()
            if delay > 0:
                with trio.move_on_after(delay):
                    await changed.wait()
                    continue
            try:
                await self._step(feed)
            except Exception:  # a bug must not end the subscription's upkeep
                logger.exception("feed %s: WebSub upkeep failed", feed.id, extra={"feed": feed.id})
                await trio.sleep(60)

    def _due(self, feed: FeedConfig) -> float | None:
        """When :meth:`_step` has something to do for *feed* (None: wait for news)."""
        sub = self.subs.get(feed.id)
        target = self._targets.get(feed.id)
        if sub is None:
            return self._now() if target is not None else None
        if target is not None and (target.hub, target.topic) != (sub.hub, sub.topic):
            return self._now()  # the feed moved to another hub or topic
        if feed.id in self._targets and target is None:
            return None  # the feed no longer names a hub: let the subscription lapse
        state = _S(sub.state)
        if state is _S.PENDING:
            return (sub.requested_at or 0.0) + VERIFY_TIMEOUT
        if state is _S.FAILED:
            return sub.retry_at or self._now()
        if state is _S.ACTIVE:
            if sub.retry_at is not None:  # a renewal failed or went unverified
                return min(sub.retry_at, sub.lease_expires or sub.retry_at)
            lease = sub.lease_seconds or ASSUMED_LEASE_SECONDS
            jitter = random.Random(sub.token).random()
            return renewal_time(sub.verified_at or self._now(), lease, jitter)
        if state in (_S.NONE, _S.UNSUBSCRIBING):
            return self._now()
        return None  # denied: wait for discovery to name another hub or topic

    async def _step(self, feed: FeedConfig) -> None:
        sub = self.subs.get(feed.id)
        target = self._targets.get(feed.id)
        now = self._now()
        if sub is not None and _S(sub.state) is _S.PENDING:
            await self._failed(sub, "the hub accepted but never verified the request")
            return
        if sub is not None and sub.lease_expires is not None and now >= sub.lease_expires:
            sub.state = _S.FAILED
            sub.error = "lease expired before a renewal was verified"
        if target is None:  # renewal of what we have (discovery not run yet since start)
            assert sub is not None
            target = _Target(sub.hub, sub.topic)
        if sub is not None and (target.hub, target.topic) != (sub.hub, sub.topic):
            logger.info(
                "feed %s: hub or topic changed, subscribing afresh",
                feed.id,
                extra={"feed": feed.id},
            )
            self._tokens.pop(sub.token, None)
            if _S(sub.state) in (_S.ACTIVE, _S.PENDING):
                assert self._nursery is not None
                self._nursery.start_soon(self._unsubscribe_quietly, sub)
            sub = None
        await self._subscribe(feed, target, sub)

    async def _unsubscribe_quietly(self, old: Subscription) -> None:
        """Best effort: tell the hub we no longer want a replaced subscription."""
        old.state = _S.UNSUBSCRIBING
        self._retiring[old.token] = old
        try:
            answer = await self._request(old, Mode.UNSUBSCRIBE)
            if answer.outcome is HubOutcome.ACCEPTED:
                await trio.sleep(VERIFY_TIMEOUT)  # the hub's verification is welcome until then
            else:
                logger.info(
                    "feed %s: unsubscribing %s: %s",
                    old.feed_id,
                    old.topic,
                    answer.reason,
                    extra={"feed": old.feed_id},
                )
        finally:
            self._retiring.pop(old.token, None)

    async def _subscribe(self, feed: FeedConfig, target: _Target, old: Subscription | None) -> None:
        renewing = old is not None and _S(old.state) is _S.ACTIVE
        if old is not None:
            sub = old
        else:
            secret = (
                new_secret() if target.hub.startswith("https:") or _is_local(target.hub) else None
            )
            sub = Subscription(
                feed_id=feed.id,
                token=new_callback_token(),
                hub=target.hub,
                endpoint=target.hub,
                topic=target.topic,
                secret=secret,
                state=_S.PENDING,
            )
        if not renewing:
            sub.state = _S.PENDING
        sub.requested_at = self._now()
        sub.retry_at = None
        await self._save(sub)  # before the POST: the hub may verify before it answers
        logger.info(
            "feed %s: %s %s at %s",
            feed.id,
            "renewing" if renewing else "subscribing",
            sub.topic,
            sub.endpoint,
            extra={"feed": feed.id},
        )
        answer = await self._request(sub, Mode.SUBSCRIBE, lease=feed.websub_lease)
        if answer.outcome is HubOutcome.ACCEPTED:
            verified = sub.verified_at is not None and sub.verified_at >= sub.requested_at
            if renewing and not verified:  # if no verification comes, try again
                sub.retry_at = sub.requested_at + VERIFY_TIMEOUT
            await self._save(sub)
        else:
            await self._failed(sub, answer.reason, answer.retry_after)

    async def _failed(
        self, sub: Subscription, reason: str, retry_after: float | None = None
    ) -> None:
        sub.attempts += 1
        sub.error = reason
        delay = retry_delay(sub.attempts, self._jitter(), retry_after=retry_after)
        sub.retry_at = self._now() + delay
        if _S(sub.state) is not _S.ACTIVE:
            sub.state = _S.FAILED
        logger.warning(
            "feed %s: WebSub %s (attempt %d, retry in %.0f s)",
            sub.feed_id,
            reason,
            sub.attempts,
            delay,
            extra={"feed": sub.feed_id},
        )
        await self._save(sub)

    async def _request(
        self, sub: Subscription, mode: Mode, lease: int | None = None
    ) -> HubResponse:
        """POST a (un)subscription request, following 307/308 from the hub."""
        form = subscription_form(
            mode,
            self.callback_url(sub.token),
            sub.topic,
            lease_seconds=lease if mode is Mode.SUBSCRIBE else None,
            secret=sub.secret if mode is Mode.SUBSCRIBE else None,
        )
        url, hops = sub.endpoint, 0
        while True:
            try:
                with trio.fail_after(HUB_TIMEOUT):
                    response = await self._client.post(url, data=form, follow_redirects=False)
            except (httpx.HTTPError, trio.TooSlowError) as exc:
                reason = f"hub unreachable: {type(exc).__name__} {exc}".strip()
                return HubResponse(HubOutcome.FAILED, 0, reason, retryable=True)
            answer = classify_hub_response(
                response.status_code,
                url,
                response.headers.get("location"),
                redirects_followed=hops,
                body=response.content[:500],
                retry_after=response.headers.get("retry-after"),
            )
            if answer.outcome is not HubOutcome.REDIRECT or answer.redirect_to is None:
                return answer
            if answer.permanent:
                sub.endpoint = answer.redirect_to
            url, hops = answer.redirect_to, hops + 1

    async def _retire(self, sub: Subscription) -> None:
        """Unsubscribe a feed that left the config, then forget it."""
        logger.info(
            "feed %s: no longer configured, unsubscribing from %s",
            sub.feed_id,
            sub.hub,
            extra={"feed": sub.feed_id},
        )
        if _S(sub.state) in (_S.ACTIVE, _S.PENDING, _S.UNSUBSCRIBING):
            sub.state = _S.UNSUBSCRIBING
            await self._save(sub)
            answer = await self._request(sub, Mode.UNSUBSCRIBE)
            if answer.outcome is HubOutcome.ACCEPTED:
                with trio.move_on_after(VERIFY_TIMEOUT):
                    while sub.feed_id in self.subs:
                        await self._changed.setdefault(sub.feed_id, trio.Event()).wait()
        await self._forget(sub)

    # -- what the poller tells us ------------------------------------------------------------

    def discovered(self, feed: FeedConfig, discovery: Discovery, fetched_url: str) -> None:
        if not self.wants(feed):
            return
        target = (
            _Target(discovery.hub_urls[0], discovery.topic(fetched_url))
            if discovery.found
            else None
        )
        if feed.id not in self._targets or self._targets[feed.id] != target:
            self._targets[feed.id] = target
            if target is not None:
                logger.info(
                    "feed %s: hub %s, topic %s (%s)",
                    feed.id,
                    target.hub,
                    target.topic,
                    discovery.source,
                    extra={"feed": feed.id},
                )
            self._wake(feed.id)

    def push_is_live(self, feed_id: str) -> bool:
        sub = self.subs.get(feed_id)
        return sub is not None and sub.state == _S.ACTIVE and sub.push_healthy

    def interval(self, feed: FeedConfig) -> float:
        """The poll interval for *feed*: a slow safety net while push works."""
        return max(feed.interval, feed.websub_poll) if self.push_is_live(feed.id) else feed.interval

    async def polled(self, feed: FeedConfig, new_entries: int, fetched_at: float) -> None:
        """A poll started at *fetched_at* found *new_entries*: should push have brought them?

        Only if the subscription was verified before that fetch: the poll that discovers the
        hub finds entries that were published before anyone subscribed.
        """
        sub = self.subs.get(feed.id)
        verified_before = sub is not None and (sub.verified_at or math.inf) < fetched_at
        if new_entries and sub is not None and verified_before and self.push_is_live(feed.id):
            logger.warning(
                "feed %s: a poll found %d entries the hub never pushed; polling at the "
                "normal interval until a push arrives",
                feed.id,
                new_entries,
                extra={"feed": feed.id},
            )
            sub.push_healthy = False
            await self._save(sub)

    # -- what the hub sends ------------------------------------------------------------------

    def _lookup(self, token: str) -> Subscription | None:
        if token in self._retiring:
            return self._retiring[token]
        feed_id = self._tokens.get(token)
        return self.subs.get(feed_id) if feed_id is not None else None

    async def verify(self, token: str, query: Any) -> IntentDecision:
        """Answer a verification of intent (or a denial) on a callback URL."""
        sub = self._lookup(token)
        record = SubscriptionRecord(sub.topic, _S(sub.state)) if sub is not None else None
        now = self._now()
        decision = verify_intent(query, record, now)
        if sub is None or decision.new_state is None:
            if sub is not None:
                logger.info(
                    "feed %s: verification refused (%s)",
                    sub.feed_id,
                    decision.reason,
                    extra={"feed": sub.feed_id},
                )
            return decision
        if decision.new_state is _S.ACTIVE:
            sub.state = _S.ACTIVE
            sub.lease_seconds = decision.lease_seconds
            sub.lease_expires = decision.lease_expires_at or now + ASSUMED_LEASE_SECONDS
            sub.verified_at, sub.retry_at, sub.attempts, sub.error = now, None, 0, None
            logger.info(
                "feed %s: subscription verified, lease %s s",
                sub.feed_id,
                sub.lease_seconds,
                extra={"feed": sub.feed_id},
            )
            await self._save(sub)
        elif decision.new_state is _S.NONE:
            logger.info(
                "feed %s: unsubscription verified", sub.feed_id, extra={"feed": sub.feed_id}
            )
            if self._retiring.pop(token, None) is None:
                await self._forget(sub)
        else:
            sub.state, sub.error = decision.new_state, f"denied by the hub: {decision.reason}"
            logger.warning("feed %s: %s", sub.feed_id, sub.error, extra={"feed": sub.feed_id})
            await self._save(sub)
        self._wake(sub.feed_id)
        return decision

    async def deliver(
        self, token: str, signature: str | None, body: bytes, content_type: str | None
    ) -> DeliveryResult:
        """Check a content distribution POST and queue it for ingest; answer at once."""
        sub = self._lookup(token)
        state = _S(sub.state) if sub is not None else None
        secret = sub.secret if sub is not None else None
        decision = await self._offload(check_delivery, state, secret, signature, body)
        if sub is None or not decision.process:
            if sub is not None:
                logger.warning(
                    "feed %s: delivery refused: %s",
                    sub.feed_id,
                    decision.reason,
                    extra={"feed": sub.feed_id},
                )
            return DeliveryResult(decision.status, decision.reason, _refusal(decision))
        feed = self._feeds.get(sub.feed_id)
        if feed is None:
            return DeliveryResult(410, "feed no longer configured", "feed_removed")
        try:
            self._queue_in.send_nowait((feed, body, content_type))
        except trio.WouldBlock:
            return DeliveryResult(503, "too many deliveries waiting; retry later", "busy")
        return DeliveryResult(decision.status, decision.reason, "accepted")

    async def _deliveries(self) -> None:
        async for feed, body, content_type in self._queue_out:
            try:
                new = await self._ingest(feed, body, content_type)
            except Exception:
                logger.exception(
                    "feed %s: ingesting a delivery failed", feed.id, extra={"feed": feed.id}
                )
                continue
            sub = self.subs.get(feed.id)
            if sub is not None:
                if not sub.push_healthy:
                    logger.info("feed %s: push works again", feed.id, extra={"feed": feed.id})
                sub.last_push, sub.push_healthy = self._now(), True
                await self._save(sub)
            logger.info(
                "feed %s: WebSub delivery, %d new entries", feed.id, new, extra={"feed": feed.id}
            )

    # -- status ------------------------------------------------------------------------------

    def status(self, feed_id: str) -> dict[str, Any] | None:
        sub = self.subs.get(feed_id)
        target = self._targets.get(feed_id)
        if sub is None:
            return (
                None
                if target is None
                else {"hub": target.hub, "topic": target.topic, "state": "none"}
            )
        return {
            "hub": sub.hub,
            "topic": sub.topic,
            "state": sub.state,
            "lease_expires": format_time(sub.lease_expires) if sub.lease_expires else None,
            "last_push": format_time(sub.last_push) if sub.last_push else None,
            "push_healthy": sub.push_healthy,
            "error": sub.error,
        }
