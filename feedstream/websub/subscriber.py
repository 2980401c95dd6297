"""The WebSub subscriber: keeps one subscription per feed alive, and takes its deliveries.

A thin trio shell around :mod:`feedstream.websub.machine`, which decides everything about a
subscription's lifecycle (when to subscribe, renew, retry or give up, which form goes to the
hub, what push health is). This module only performs the machine's actions: HTTP requests to
hubs (following 307/308 redirects), store writes through the offload, and timers. The poller
tells it what discovery found on each fetch; one task per feed waits for the machine's next
wake-up and feeds it :class:`~feedstream.websub.machine.Due`; a removed feed is unsubscribed.
Subscriptions live in SQLite, written *before* each request goes out, because hubs may verify
before they answer the POST.

Deliveries are checked (signature, state) and answered at once; parsing and ingesting happen in
a worker task fed by a bounded channel, so a hub never waits for feedparser, and a flood gets
503 instead of eating memory.

Push health: while a subscription is active and healthy the feed is polled only every
``websub_poll`` seconds (a safety net). A poll that finds entries the hub never delivered, or a
subscription that failed, sends the feed back to its normal interval until a push arrives.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from feedstream.core.config import FeedConfig
from feedstream.core.times import format_rfc3339
from feedstream.log.base import Offload
from feedstream.log.store import Store, Subscription
from feedstream.websub import machine as m
from feedstream.websub.discovery import Discovery
from feedstream.websub.machine import VERIFY_TIMEOUT, Sub
from feedstream.websub.protocol import (
    DeliveryDecision,
    HubOutcome,
    HubResponse,
    IntentDecision,
    Mode,
    SubscriptionRecord,
    check_delivery,
    classify_hub_response,
    verify_intent,
)

logger = logging.getLogger(__name__)

__all__ = ["VERIFY_TIMEOUT", "DeliveryResult", "Subscriber", "subscription_status"]

HUB_TIMEOUT = 20.0  # seconds for one request to a hub
DELIVERY_QUEUE = 64  # deliveries accepted but not yet parsed

Ingest = Callable[[FeedConfig, bytes, str | None], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    status: int
    reason: str
    outcome: str  # one word for metrics: accepted, or why not


def _refusal(decision: DeliveryDecision) -> str:
    if decision.signature is not None:
        return f"signature_{decision.signature.status}"
    return "unknown_callback" if decision.status == 404 else "inactive"


def _row(sub: Sub) -> Subscription:
    return Subscription(**sub.row_values())


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
        self.subs: dict[str, Subscription] = {}  # the stored rows, by feed id
        self._tokens: dict[str, str] = {}  # callback token -> feed id
        self._targets: dict[str, m.Target | None] = {}  # None: discovery found no hub
        self._feeds: dict[str, FeedConfig] = {}
        self._changed: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._retiring: dict[str, Sub] = {}  # replaced subscriptions being given up
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

    def _wanted(self, feed: FeedConfig) -> m.Wanted:
        return m.Wanted(
            feed.id,
            feed.websub_lease,
            self._targets.get(feed.id),
            discovered=feed.id in self._targets,
        )

    def _current(self, feed_id: str) -> Sub | None:
        row = self.subs.get(feed_id)
        return Sub.from_row(row) if row is not None else None

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
            due = m.wakeup(self._current(feed.id), self._wanted(feed), self._now())
            if due is None:
                await changed.wait()
                continue
            delay = due - self._now()
            if delay > 0:
                with trio.move_on_after(delay):
                    await changed.wait()
                    continue
            try:
                event = m.Due(self._wanted(feed), self._jitter())
                await self._apply(self._current(feed.id), event)
            except Exception:  # a bug must not end the subscription's upkeep
                logger.exception("feed %s: WebSub upkeep failed", feed.id, extra={"feed": feed.id})
                await trio.sleep(60)

    # -- performing the machine's actions ------------------------------------------------------

    async def _apply(self, sub: Sub | None, event: m.Event) -> Sub | None:
        now = self._now()
        new, actions = m.step(sub, event, now)
        if sub is not None and new is not None and new.attempts > sub.attempts:
            logger.warning(
                "feed %s: WebSub %s (attempt %d, retry in %.0f s)",
                new.feed_id,
                new.error,
                new.attempts,
                (new.retry_at or now) - now,
                extra={"feed": new.feed_id},
            )
        for action in actions:
            await self._perform(action)
        return new

    async def _perform(self, action: m.Action) -> None:
        if isinstance(action, m.Save):
            await self._save(action.sub)
        elif isinstance(action, m.Delete):
            await self._forget(action.sub)
        elif isinstance(action, m.Forget):
            self._retiring.pop(action.sub.token, None)
        elif isinstance(action, m.AwaitVerification):
            await self._await_verification(action)
        elif action.sub.retired:
            assert self._nursery is not None
            self._retiring[action.sub.token] = action.sub
            self._nursery.start_soon(self._unsubscribe_quietly, action)
        else:
            await self._send(action)

    async def _save(self, sub: Sub) -> None:
        old = self.subs.get(sub.feed_id)
        if old is not None and old.token != sub.token:
            self._tokens.pop(old.token, None)  # replaced: its callback is given up
        self.subs[sub.feed_id] = _row(sub)
        self._tokens[sub.token] = sub.feed_id
        await self._offload(self._store.save_subscription, self.subs[sub.feed_id])

    async def _forget(self, sub: Sub) -> None:
        current = self.subs.get(sub.feed_id)
        if current is not None and current.token == sub.token:
            del self.subs[sub.feed_id]
        self._tokens.pop(sub.token, None)
        await self._offload(self._store.delete_subscription, sub.feed_id)

    def _lookup(self, token: str) -> Sub | None:
        if token in self._retiring:
            return self._retiring[token]
        feed_id = self._tokens.get(token)
        return self._current(feed_id) if feed_id is not None else None

    async def _send(self, send: m.Send) -> None:
        sub = send.sub
        logger.info(
            "feed %s: %s %s at %s",
            sub.feed_id,
            send.mode,
            sub.topic,
            sub.endpoint,
            extra={"feed": sub.feed_id},
        )
        answer, endpoint = await self._request(send)
        if send.mode is Mode.UNSUBSCRIBE and answer.outcome is not HubOutcome.ACCEPTED:
            logger.info(
                "feed %s: unsubscribing %s: %s",
                sub.feed_id,
                sub.topic,
                answer.reason,
                extra={"feed": sub.feed_id},
            )
        current = self._lookup(sub.token)  # the hub may have verified or denied meanwhile
        if current is None:
            return
        await self._apply(current, m.HubAnswered(send.mode, answer, endpoint, self._jitter()))

    async def _request(self, send: m.Send) -> tuple[HubResponse, str]:
        """POST a (un)subscription request, following 307/308 from the hub.

        Returns the hub's answer and the endpoint for later requests (moved by a 308).
        """
        form = send.form(self.callback_url(send.sub.token))
        endpoint = url = send.sub.endpoint
        hops = 0
        while True:
            try:
                with trio.fail_after(HUB_TIMEOUT):
                    response = await self._client.post(url, data=form, follow_redirects=False)
            except (httpx.HTTPError, trio.TooSlowError) as exc:
                reason = f"hub unreachable: {type(exc).__name__} {exc}".strip()
                return HubResponse(HubOutcome.FAILED, 0, reason, retryable=True), endpoint
            answer = classify_hub_response(
                response.status_code,
                url,
                response.headers.get("location"),
                redirects_followed=hops,
                body=response.content[:500],
                retry_after=response.headers.get("retry-after"),
            )
            if answer.outcome is not HubOutcome.REDIRECT or answer.redirect_to is None:
                return answer, endpoint
            if not send.may_follow(answer.redirect_to):
                reason = f"hub redirected to {answer.redirect_to}: hub.secret only goes over https"
                return HubResponse(HubOutcome.FAILED, answer.status, reason), endpoint
            if answer.permanent:
                endpoint = answer.redirect_to
            url, hops = answer.redirect_to, hops + 1

    async def _await_verification(self, wait: m.AwaitVerification) -> None:
        """Give the hub until ``wait.until`` to verify an unsubscription, then abandon it."""
        # A verification in the meantime deletes the subscription, so there is no need to wake.
        await trio.sleep_until(trio.current_time() + wait.until - self._now())
        sub = self._lookup(wait.sub.token)
        if sub is not None:
            await self._apply(sub, m.Abandon())

    async def _unsubscribe_quietly(self, send: m.Send) -> None:
        """Best effort: tell the hub we no longer want a replaced subscription."""
        logger.info(
            "feed %s: hub or topic changed, unsubscribing %s",
            send.sub.feed_id,
            send.sub.topic,
            extra={"feed": send.sub.feed_id},
        )
        try:
            await self._send(send)
        finally:
            self._retiring.pop(send.sub.token, None)

    async def _retire(self, row: Subscription) -> None:
        """Unsubscribe a feed that left the config, then forget it."""
        logger.info(
            "feed %s: no longer configured, unsubscribing from %s",
            row.feed_id,
            row.hub,
            extra={"feed": row.feed_id},
        )
        await self._apply(Sub.from_row(row), m.FeedRemoved())

    # -- what the poller tells us ------------------------------------------------------------

    def discovered(self, feed: FeedConfig, discovery: Discovery, fetched_url: str) -> None:
        if not self.wants(feed):
            return
        target = (
            m.Target(discovery.hub_urls[0], discovery.topic(fetched_url))
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
        return m.push_is_live(self._current(feed_id))

    def interval(self, feed: FeedConfig) -> float:
        """The poll interval for *feed*: a slow safety net while push works."""
        return max(feed.interval, feed.websub_poll) if self.push_is_live(feed.id) else feed.interval

    async def polled(self, feed: FeedConfig, new_entries: int, fetched_at: float) -> None:
        """A poll started at *fetched_at* found *new_entries*: should push have brought them?"""
        sub = self._current(feed.id)
        if sub is None:
            return
        new = await self._apply(sub, m.Polled(new_entries, fetched_at))
        if new is not None and sub.push_healthy and not new.push_healthy:
            logger.warning(
                "feed %s: a poll found %d entries the hub never pushed; polling at the "
                "normal interval until a push arrives",
                feed.id,
                new_entries,
                extra={"feed": feed.id},
            )

    # -- what the hub sends ------------------------------------------------------------------

    async def verify(self, token: str, query: Any) -> IntentDecision:
        """Answer a verification of intent (or a denial) on a callback URL."""
        sub = self._lookup(token)
        record = SubscriptionRecord(sub.topic, sub.state) if sub is not None else None
        decision = verify_intent(query, record, self._now())
        event = m.event_for(decision)
        if sub is None or event is None:
            if sub is not None:
                logger.info(
                    "feed %s: verification refused (%s)",
                    sub.feed_id,
                    decision.reason,
                    extra={"feed": sub.feed_id},
                )
            return decision
        new = await self._apply(sub, event)
        logger.info(
            "feed %s: hub verification: %s%s",
            sub.feed_id,
            decision.reason,
            f", lease {new.lease_seconds} s" if isinstance(event, m.Verified) and new else "",
            extra={"feed": sub.feed_id},
        )
        self._wake(sub.feed_id)
        return decision

    async def deliver(
        self, token: str, signature: str | None, body: bytes, content_type: str | None
    ) -> DeliveryResult:
        """Check a content distribution POST and queue it for ingest; answer at once."""
        sub = self._lookup(token)
        state = sub.state if sub is not None else None
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
            sub = self._current(feed.id)
            if sub is not None:
                if not sub.push_healthy:
                    logger.info("feed %s: push works again", feed.id, extra={"feed": feed.id})
                await self._apply(sub, m.Pushed())
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
        return subscription_status(sub)


def subscription_status(sub: Subscription) -> dict[str, Any]:
    """A subscription as ``/api/feeds`` shows it."""
    return {
        "hub": sub.hub,
        "topic": sub.topic,
        "state": sub.state,
        "lease_expires": format_rfc3339(sub.lease_expires) if sub.lease_expires else None,
        "last_push": format_rfc3339(sub.last_push) if sub.last_push else None,
        "push_healthy": sub.push_healthy,
        "error": sub.error,
    }
