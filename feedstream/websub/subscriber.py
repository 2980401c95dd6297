"""The WebSub subscriber: keeps one subscription per feed alive, and takes its deliveries.

A thin trio shell around :mod:`feedstream.websub.machine`, which decides everything about a
subscription's lifecycle (when to subscribe, renew, retry or give up, which form goes to the
hub, what push health is). This module only performs the machine's actions: HTTP requests to
hubs (following 307/308 redirects), writes to the :class:`~feedstream.log.state.StateStore`,
and timers. The poller tells it what discovery found on each fetch; one task per feed waits for
the machine's next wake-up and feeds it :class:`~feedstream.websub.machine.Due`; a removed feed
is unsubscribed. Subscriptions are stored *before* each request goes out, because hubs may
verify before they answer the POST.

Two modes:

* **One ingest process** (SQLite, ``leases=None``): this object is the only writer, its copy
  of the rows is the truth, and it keeps every configured feed's subscription itself
  (:meth:`Subscriber.run`).
* **Several ingest nodes sharing the store** (Redis, *leases* given): a feed's upkeep
  (subscribe, renew, retry, unsubscribe) runs only on the node holding the feed's poll lease,
  for as long as the poller holds it (:meth:`Subscriber.hold`, started by
  :func:`feedstream.service.poller.hold_feed`); a node taking a feed over reads the stored row
  and carries on from it (a subscription still active is renewed when due, not requested
  again). The hub's callbacks may reach any node (they go to ``public_url``): each reads the
  row by its token from the store before answering, so a verification of a request another
  node sent is answered, and a delivery to any node is ingested. Every change reads the row,
  steps the machine and writes with a compare-and-set
  (:meth:`~feedstream.log.state.StateStore.replace_subscription`); a row another node changed
  in between is read again and the event applied to it, so no node loses another's change. A
  feed that left the config is unsubscribed by the node that gets its lease. The rows this
  node keeps for ``/api/feeds`` and the poll interval are read again every
  :data:`REFRESH` seconds.

Deliveries are checked (signature, state) and answered at once; parsing and ingesting happen in
a worker task fed by a bounded channel, so a hub never waits for feedparser, and a flood gets
503 instead of eating memory.

Push health: while a subscription is active and healthy the feed is polled only every
``websub_poll`` seconds (a safety net). A poll that finds entries the hub never delivered, or a
subscription that failed, sends the feed back to its normal interval until a push arrives.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import httpx
import trio

from feedstream.core.config import FeedConfig
from feedstream.core.times import format_rfc3339
from feedstream.log.base import Offload
from feedstream.log.state import Leases, LogUnavailable, StateStore
from feedstream.log.store import Subscription
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
REFRESH = 10.0  # shared store: seconds between reads of every row (status, poll intervals)
UNAVAILABLE_RETRY = 5.0  # shared store unreachable: seconds before upkeep tries again
WRITE_ATTEMPTS = 8  # shared store: reads and writes of one change racing other nodes
UNAVAILABLE = "the shared store is unreachable; retry later"

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


class _Conflict(Exception):
    """Another node changed the stored row since it was read (shared store): nothing was
    written; read it again and apply the event again."""


def _unavailable_decision() -> IntentDecision:
    decision = IntentDecision(503, "", UNAVAILABLE)
    return replace(decision, headers=(*decision.headers, ("Retry-After", "5")))


class Subscriber:
    def __init__(
        self,
        *,
        public_url: str,
        state: StateStore,
        client: httpx.AsyncClient,
        ingest: Ingest,
        offload: Offload = trio.to_thread.run_sync,
        wall_clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        leases: Leases | None = None,
        lease_seconds: float = 30.0,
        refresh: float = REFRESH,
    ) -> None:
        """*offload* runs CPU work (signature checks); *leases*: the store is shared by
        several ingest nodes, whose poll leases (of *lease_seconds*) say which node keeps which
        feed's subscription (see the module's docstring)."""
        self.public_url = public_url.rstrip("/")
        self._state = state
        self._client = client
        self._ingest = ingest
        self._offload = offload
        self._leases = leases
        #: Several nodes share the store: read before every change, compare-and-set writes.
        self.shared = leases is not None
        self._lease_seconds = lease_seconds
        self._refresh_every = refresh
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
        self._keep(await self._state.subscriptions())
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._deliveries)
            if self.shared:
                nursery.start_soon(self._follow)
            for feed in feeds:
                if self.wants(feed):
                    self._feeds[feed.id] = feed
                    if not self.shared:  # shared: while the poller holds the lease (hold())
                        await nursery.start(self._maintain, feed)
            for feed_id, sub in list(self.subs.items()):
                if feed_id not in self._feeds:
                    self._start_retiring(sub)
            task_status.started()

    async def hold(
        self, feed: FeedConfig, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Shared store: keep *feed*'s subscription (subscribe, renew, retry) for as long as
        this runs, which is while the caller holds the feed's poll lease; cancel it when the
        lease is lost. The stored row is read first: a node taking a feed over carries on from
        where the previous holder left it. A reload changing the feed's settings restarts the
        upkeep with them (:meth:`update`). Returns at once for a feed that does not use
        WebSub, and when the store is not shared (:meth:`run` keeps every feed then)."""
        task_status.started()
        if not self.shared:
            return
        assert self._nursery is not None, "run() first"
        current: FeedConfig | None = feed
        while current is not None and self.wants(current):
            await self._maintain(current)  # until a reload changes the feed's settings
            current = self._feeds.get(feed.id)  # the reloaded ones (None: removed)

    def _keep(self, rows: dict[str, Subscription]) -> None:
        """Replace the rows this node keeps (and their tokens) with *rows*."""
        self.subs = rows
        self._tokens = {sub.token: sub.feed_id for sub in rows.values()}

    async def _follow(self) -> None:
        """Shared store: read every row again now and then, for ``/api/feeds``, the metrics
        and the poll interval; wake the upkeep of a feed whose row another node changed."""
        while True:
            await trio.sleep(self._refresh_every)
            try:
                rows = await self._state.subscriptions()
            except LogUnavailable:
                continue  # the rows kept stay; the next round tries again
            changed = {f for f in rows.keys() | self.subs.keys() if rows.get(f) != self.subs.get(f)}
            self._keep(rows)
            for feed_id in changed:
                self._wake(feed_id)

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
            if feed is None and (sub is not None or self.shared):
                self._start_retiring(sub or feed_id)
        for feed_id, feed in wanted.items():
            if feed_id not in self._feeds:
                self._feeds[feed_id] = feed
                if not self.shared:  # shared: the poller's hold() starts it
                    await self._nursery.start(self._maintain, feed)

    def _start_retiring(self, sub: Subscription | str) -> None:
        """Unsubscribe a feed that left the config (*sub*: its row, or its id when this node
        has none: another node may have stored one)."""
        assert self._nursery is not None
        if self.shared:
            feed_id = sub if isinstance(sub, str) else sub.feed_id
            self._nursery.start_soon(self._retire_shared, feed_id)
        elif not isinstance(sub, str):
            self._nursery.start_soon(self._retire, sub)

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

    async def _read(self, feed_id: str) -> Sub | None:
        """*feed_id*'s subscription: as stored now (shared store), else this node's row."""
        if self.shared:
            row = await self._state.subscription(feed_id)
            if row is None:
                old = self.subs.pop(feed_id, None)
                if old is not None:
                    self._tokens.pop(old.token, None)
            else:
                self._remember(row)
        return self._current(feed_id)

    async def _maintain(
        self, feed: FeedConfig, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Subscribe, renew and retry for *feed*, until a reload (or a lost lease) cancels it."""
        with trio.CancelScope() as scope:
            self._upkeep[feed.id] = scope
            task_status.started()
            try:
                await self._upkeep_loop(feed)
            finally:
                if self._upkeep.get(feed.id) is scope:
                    del self._upkeep[feed.id]

    async def _upkeep_loop(self, feed: FeedConfig) -> None:
        while True:
            changed = self._changed.setdefault(feed.id, trio.Event())
            try:
                sub = await self._read(feed.id)
            except LogUnavailable:
                await self._unavailable(feed.id)
                continue
            except Exception:  # a row that does not load must not end the upkeep either
                logger.exception("feed %s: WebSub upkeep failed", feed.id, extra={"feed": feed.id})
                await trio.sleep(60)
                continue
            due = m.wakeup(sub, self._wanted(feed), self._now())
            if due is None:
                await changed.wait()
                continue
            delay = due - self._now()
            if delay > 0:
                with trio.move_on_after(delay):
                    await changed.wait()
                    continue
                if self.shared:
                    continue  # read the row again: another node may have moved it on
            try:
                event = m.Due(self._wanted(feed), self._jitter())
                await self._change(partial(self._read, feed.id), event)
            except LogUnavailable:
                await self._unavailable(feed.id)
            except Exception:  # a bug must not end the subscription's upkeep
                logger.exception("feed %s: WebSub upkeep failed", feed.id, extra={"feed": feed.id})
                await trio.sleep(60)

    async def _unavailable(self, feed_id: str) -> None:
        logger.warning(
            "feed %s: WebSub upkeep paused: the shared store is unreachable",
            feed_id,
            extra={"feed": feed_id},
        )
        await trio.sleep(UNAVAILABLE_RETRY)

    # -- performing the machine's actions ------------------------------------------------------

    async def _change(
        self, read: Callable[[], Awaitable[Sub | None]], event: m.Event
    ) -> tuple[Sub | None, Sub | None]:
        """Apply *event* to the subscription *read* returns (nothing when there is none,
        except for :class:`~feedstream.websub.machine.Due`); the subscription before and
        after. With a shared store, a row another node changed meanwhile is read again."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            sub = await read()
            if sub is None and not isinstance(event, m.Due):
                return None, None
            try:
                return sub, await self._apply(sub, event)
            except _Conflict:
                logger.debug("subscription changed by another node (attempt %d)", attempt)
        raise RuntimeError(f"a subscription kept changing under {type(event).__name__}")

    async def _apply(self, sub: Sub | None, event: m.Event) -> Sub | None:
        """Step the machine and perform its actions; with a shared store, :class:`_Conflict`
        when the stored row is no longer *sub* (before any request went out for it)."""
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
        stored = sub  # what the store holds, as far as this change knows
        for action in actions:
            if isinstance(action, m.Save):
                await self._save(action.sub, stored)
                stored = action.sub
            elif isinstance(action, m.Delete):
                await self._forget(action.sub, stored)
                stored = None
            else:
                await self._perform(action)
        return new

    async def _perform(self, action: m.Send | m.Forget | m.AwaitVerification) -> None:
        if isinstance(action, m.Forget):
            self._retiring.pop(action.sub.token, None)
        elif isinstance(action, m.AwaitVerification):
            await self._await_verification(action)
        elif action.sub.retired:
            assert self._nursery is not None
            self._retiring[action.sub.token] = action.sub
            self._nursery.start_soon(self._unsubscribe_quietly, action)
        else:
            await self._send(action)

    def _remember(self, row: Subscription) -> None:
        old = self.subs.get(row.feed_id)
        if old is not None and old.token != row.token:
            self._tokens.pop(old.token, None)  # replaced: its callback is given up
        self.subs[row.feed_id] = row
        self._tokens[row.token] = row.feed_id

    async def _save(self, sub: Sub, stored: Sub | None) -> None:
        row = _row(sub)
        if self.shared:
            expected = None if stored is None else _row(stored)
            if not await self._state.replace_subscription(sub.feed_id, expected, row):
                raise _Conflict(sub.feed_id)
            self._remember(row)
            return
        self._remember(row)
        await self._state.save_subscription(row)

    async def _forget(self, sub: Sub, stored: Sub | None) -> None:
        if self.shared:
            expected = None if stored is None else _row(stored)
            if not await self._state.replace_subscription(sub.feed_id, expected, None):
                raise _Conflict(sub.feed_id)
        current = self.subs.get(sub.feed_id)
        if current is not None and current.token == sub.token:
            del self.subs[sub.feed_id]
        self._tokens.pop(sub.token, None)
        if not self.shared:
            await self._state.delete_subscription(sub.feed_id)

    async def _lookup(self, token: str) -> Sub | None:
        """The subscription whose callback is *token*: a replaced one this node is giving up,
        else the stored row (read from the store when it is shared: the request may be about
        what another node sent, or changed)."""
        if token in self._retiring:
            return self._retiring[token]
        if self.shared:
            row = await self._state.subscription_by_token(token)
            if row is None:
                return None
            self._remember(row)
            return Sub.from_row(row)
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
        # the hub may have verified or denied meanwhile (on any node)
        event = m.HubAnswered(send.mode, answer, endpoint, self._jitter())
        await self._change(partial(self._lookup, sub.token), event)

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
        await self._change(partial(self._lookup, wait.sub.token), m.Abandon())

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
        self._log_retire(row)
        await self._apply(Sub.from_row(row), m.FeedRemoved())

    async def _retire_shared(self, feed_id: str) -> None:
        """Shared store: unsubscribe a feed that left the config, by the node that gets its
        lease (held meanwhile), so that one node does it and none polls the feed meanwhile; a
        node whose config still has the feed holds the lease, and keeps the subscription. Waits
        for the lease until the row is gone or the feed is back in this node's config."""
        assert self._leases is not None
        every = self._lease_seconds / 3
        while feed_id not in self._feeds:
            try:
                if await self._state.subscription(feed_id) is None:
                    return
                if await self._leases.claim(feed_id):
                    try:
                        await self._retire_holding(feed_id, every)
                    finally:
                        with trio.CancelScope(shield=True), trio.move_on_after(1):
                            await self._release(feed_id)
                    continue
            except LogUnavailable:
                logger.warning(
                    "feed %s: cannot unsubscribe now: the shared store is unreachable",
                    feed_id,
                    extra={"feed": feed_id},
                )
            await trio.sleep(every)

    async def _retire_holding(self, feed_id: str, every: float) -> None:
        """Unsubscribe *feed_id* (including the wait for the hub's verification) while this
        node holds its lease; stop if the lease is lost."""
        leases = self._leases
        assert leases is not None
        async with trio.open_nursery() as nursery:

            async def keep_lease() -> None:
                while True:
                    await trio.sleep(every)
                    try:
                        held = await leases.claim(feed_id)
                    except LogUnavailable:
                        held = False
                    if not held:
                        logger.info("feed %s: lease lost while unsubscribing", feed_id)
                        nursery.cancel_scope.cancel()

            nursery.start_soon(keep_lease)
            sub = await self._read(feed_id)
            if sub is not None and feed_id not in self._feeds:
                self._log_retire(_row(sub))
                await self._change(partial(self._read, feed_id), m.FeedRemoved())
            nursery.cancel_scope.cancel()

    async def _release(self, feed_id: str) -> None:
        assert self._leases is not None
        with contextlib.suppress(LogUnavailable):  # unreachable: it expires by itself
            await self._leases.release(feed_id)

    def _log_retire(self, row: Subscription) -> None:
        logger.info(
            "feed %s: no longer configured, unsubscribing from %s",
            row.feed_id,
            row.hub,
            extra={"feed": row.feed_id},
        )

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
        try:
            sub, new = await self._change(
                partial(self._read, feed.id), m.Polled(new_entries, fetched_at)
            )
        except LogUnavailable:
            logger.warning(
                "feed %s: push health not updated: the shared store is unreachable",
                feed.id,
                extra={"feed": feed.id},
            )
            return
        if sub is not None and new is not None and sub.push_healthy and not new.push_healthy:
            logger.warning(
                "feed %s: a poll found %d entries the hub never pushed; polling at the "
                "normal interval until a push arrives",
                feed.id,
                new_entries,
                extra={"feed": feed.id},
            )

    # -- what the hub sends ------------------------------------------------------------------

    async def verify(self, token: str, query: Any) -> IntentDecision:
        """Answer a verification of intent (or a denial) on a callback URL.

        With a shared store the row is read by its token first (the request may be about one
        another node sent), and what is accepted is stored before the answer goes out (503
        when the store is unreachable: nothing was recorded, the hub may try again)."""
        try:
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                sub = await self._lookup(token)
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
                try:
                    new = await self._apply(sub, event)
                except _Conflict:
                    logger.debug("verification: row changed by another node (%d)", attempt)
                    continue
                break
            else:
                raise RuntimeError("a subscription kept changing under a verification")
        except LogUnavailable:
            logger.warning("WebSub verification refused: %s", UNAVAILABLE)
            return _unavailable_decision()
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
        try:
            sub = await self._lookup(token)
        except LogUnavailable:
            return DeliveryResult(503, UNAVAILABLE, "unavailable")
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
            try:
                sub, _ = await self._change(partial(self._read, feed.id), m.Pushed())
            except LogUnavailable:
                logger.warning(
                    "feed %s: last push not recorded: the shared store is unreachable",
                    feed.id,
                    extra={"feed": feed.id},
                )
            else:
                if sub is not None and not sub.push_healthy:
                    logger.info("feed %s: push works again", feed.id, extra={"feed": feed.id})
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
