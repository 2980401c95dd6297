"""The running service behind the HTTP routes: the log, the broadcaster, the feed tasks.

:meth:`Runtime.run` is a long-lived task (started with ``nursery.start`` by
:func:`feedstream.web.server.serve`) that owns everything with a lifetime: it opens the backend
(:mod:`feedstream.service.backends`), starts the broadcaster (roles ``all`` and ``deliver``) or
the fetch client, the feed tasks and the WebSub subscriber (roles ``all`` and ``ingest``; with
a shared log, each feed's subscription is kept by the ingest node holding the feed's poll
lease, and the hub's callbacks are answered by any ingest node), and reports itself started;
cancelling it stops all of that and closes the backend. With
``[hub] enabled``, the roles that write the log (``all``, ``ingest``: where ``/websub/`` is
served, and one process per log under ``--workers``) run the WebSub hub of the output feeds
too (:func:`feedstream.service.hub.run_hub`), distributing what is appended as it is appended.
With ``[server] proxy_media``, every role runs the media proxy
(:class:`feedstream.service.media.MediaProxy`), started before ingesting: its key signs the
image URLs of new entries.
With the SQLite log, every role runs the stored history's task
(:class:`feedstream.service.history.History`: measured for the status, searched by
``/api/search``, trimmed by the retention pass on the roles that write the log); with the Redis
log, the roles that write the log do, over a copy of their own of the whole log.
The HTTP layer gets narrow views (:class:`Delivery`, :class:`Intake`, the status and reload
methods) and never touches the store, httpx or the runtime's fields.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import httpx
import trio

from feedstream import __version__
from feedstream.core.categories import feed_categories, only_category_changed
from feedstream.core.config import Config, ConfigChanges, ConfigError, FeedConfig, compare
from feedstream.core.fold import FoldIndex
from feedstream.core.opml import export_opml
from feedstream.core.streams import StreamConfig
from feedstream.core.times import format_rfc3339
from feedstream.log.base import Log, Offload, Selection
from feedstream.log.broadcast import Broadcaster
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.state import StateStore
from feedstream.log.store import FeedState, Subscription
from feedstream.log.views import UnknownStream, Views
from feedstream.service.backends import Backend, open_backend
from feedstream.service.fetch import HostGate
from feedstream.service.history import History
from feedstream.service.hub import Hub, run_hub
from feedstream.service.icons import IconImage, IconKeeper, Icons
from feedstream.service.ingest import Ingestor
from feedstream.service.media import MediaProxy
from feedstream.service.monitor import LagMonitor
from feedstream.service.parsing import parse_in_worker, parse_slots
from feedstream.service.poller import PollContext, hold_feed
from feedstream.service.stats import Stats
from feedstream.websub.protocol import SubscriptionState
from feedstream.websub.subscriber import Subscriber, subscription_status

logger = logging.getLogger(__name__)

__all__ = ["Delivery", "Intake", "PushResult", "ReloadUnavailable", "Runtime"]


class ReloadUnavailable(Exception):
    """Reloading is not possible in this process (no config file, or not running)."""


@dataclass(frozen=True, slots=True)
class PushResult:
    accepted: int | None  # new entries, or None when the body was rejected
    error: str | None = None


class Delivery:
    """What the delivery endpoints (long-poll, SSE) see of the service."""

    def __init__(
        self,
        stats: Stats,
        known_feeds: frozenset[str],
        streams: Sequence[StreamConfig] = (),
        *,
        backlog: int = 1000,
    ) -> None:
        #: Feed ids a ``feeds`` filter may name: configured now, or with stored entries.
        self.known_feeds = known_feeds
        #: What a ``category`` filter may name: each category and its feeds, as configured now.
        self.categories: dict[str, frozenset[str]] = {}
        #: Streams and ad-hoc queries: per-entry results, computed once (held above the ring's
        #: size, so an entry the log still serves is never evaluated twice).
        self.views = Views(streams, capacity=2 * backlog + 1024)
        self.waiting = stats.waiting  # listeners parked now, by kind
        self.fanout_seconds = stats.fanout_seconds
        self.draining = False  # shutting down: answers close their connections
        self._broadcaster: Broadcaster | None = None

    @property
    def broadcaster(self) -> Broadcaster:
        if self._broadcaster is None:
            raise RuntimeError("the service is not running")
        return self._broadcaster

    @property
    def listeners(self) -> int:
        """Long-polls and SSE streams parked right now."""
        return sum(self.waiting.values())

    @property
    def cursor(self) -> str | None:
        """The head listeners have been shown (None: no broadcaster runs here)."""
        return None if self._broadcaster is None else self._broadcaster.cursor

    def topic(self, name: str) -> tuple[frozenset[str] | None, Selection | None] | None:
        """The output feed *name* as (feed filter, selection): ``all`` every feed, a feed id
        that feed, a stream id its selection; None when nothing is published so (the hub's
        :data:`~feedstream.service.hub.Select`)."""
        if name == "all":
            return None, None
        if name in self.known_feeds:
            return frozenset((name,)), None
        try:
            return None, self.views.select(stream=name)
        except UnknownStream:
            return None

    def set_streams(self, streams: Sequence[StreamConfig]) -> None:
        """Serve these ``[[streams]]`` from now on (a reload)."""
        self.views.set_streams(streams)
        if self._broadcaster is not None:
            self._broadcaster.refresh()

    def attach(self, broadcaster: Broadcaster | None) -> None:
        """The broadcaster listeners wait on (None: not running)."""
        self._broadcaster = broadcaster

    def close(self) -> None:
        """Shutting down: answer every waiting listener now, and every later one at once."""
        self.draining = True
        if self._broadcaster is not None:
            self._broadcaster.close()


class Intake:
    """What the push endpoints (webhook, WebSub callbacks) see of the service."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.pushes = runtime.stats.pushes  # by (kind, reason)
        self.push_seconds = runtime.stats.push_seconds  # accepted webhook pushes

    def feed(self, feed_id: str) -> FeedConfig | None:
        """The feed's config as of the last reload."""
        return self._runtime.config.feed(feed_id)

    @property
    def available(self) -> bool:
        """Whether pushes can be stored now (the shared log is reachable)."""
        log = self._runtime._log
        return log is not None and log.available

    @property
    def websub(self) -> Subscriber | None:
        """The WebSub subscriber, when ``server.public_url`` is set and the service runs."""
        return self._runtime.websub

    @property
    def hub(self) -> Hub | None:
        """The WebSub hub of the output feeds, when ``[hub] enabled`` and it runs here."""
        return self._runtime.hub

    async def push(self, feed: FeedConfig, body: bytes, content_type: str | None) -> PushResult:
        """Ingest a webhook push with ``via: push``."""
        ingested = await self._runtime.ingestor.ingest(
            feed, body, content_type=content_type, via="push"
        )
        if ingested.parsed.error:
            return PushResult(None, ingested.parsed.error)
        logger.info(
            "feed %s: push accepted, %d new of %d",
            feed.id,
            len(ingested.new),
            ingested.entries,  # known entries skipped before parsing included
            extra={"feed": feed.id},
        )
        return PushResult(len(ingested.new))


class Runtime:
    """The service: store, log, broadcaster, ingest path, feed tasks, WebSub subscriber.

    The HTTP layer gets its narrow parts (:attr:`delivery`, :attr:`intake`, and this object's
    status and reload methods), never its fields.
    """

    def __init__(
        self,
        config: Config,
        *,
        offload: Offload = trio.to_thread.run_sync,
        parse: Offload = parse_in_worker,
        transport: httpx.AsyncBaseTransport | None = None,
        loader: Callable[[], Config] | None = None,
    ) -> None:
        self.config = config
        self.loader = loader  # re-reads the config for reload; None: no reloading
        self.offload = offload  # blocking I/O: worker threads
        self.stats = Stats()
        self.lag = LagMonitor()
        # parsing: worker processes, so the event loop never waits on the GIL
        self.ingestor = Ingestor(
            None,
            self.stats,
            parse=parse,
            slots=parse_slots(),
            rules=config.rules,
            fold=FoldIndex() if config.server.fold_duplicates else None,
        )
        self.delivery = Delivery(
            self.stats,
            frozenset(feed.id for feed in config.feeds),
            config.streams,
            backlog=config.server.backlog,
        )
        self.delivery.categories = feed_categories(config.feeds)
        self.intake = Intake(self)
        self.icons = Icons()  # every node serves icons; the ingest side looks for them
        self._icon_keeper: IconKeeper | None = None
        self.history: History | None = None  # a SQLite log's history: search, retention
        #: ``[server] proxy_media``: the ``/media/`` proxy (every role), else None.
        self.media = (
            MediaProxy(config.server, offload=offload, transport=transport)
            if config.server.proxy_media
            else None
        )
        self._transport = transport
        self._log: Log | None = None
        self._poll: PollContext | None = None
        self.websub: Subscriber | None = None
        self.hub: Hub | None = None  # [hub] enabled, on a role that writes the log
        self._nursery: trio.Nursery | None = None
        self._feed_tasks: dict[str, tuple[trio.CancelScope, trio.Event]] = {}
        self._reload_lock = trio.Lock()
        self._states: dict[str, FeedState] = {}  # fetch state by feed, for /api/feeds
        self._subscriptions: dict[str, Subscription] = {}  # a deliver node's copy

    @property
    def log(self) -> Log:
        if self._log is None:
            raise RuntimeError("the runtime is not running")
        return self._log

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled: the long-lived part of the server, started with
        ``nursery.start`` by :func:`feedstream.web.server.serve` before it serves.

        What runs depends on ``server.role``: ``all`` and ``ingest`` write the log (polling,
        WebSub, pushes); ``all`` and ``deliver`` publish it to listeners; ``deliver`` follows a
        log another process writes.
        """
        server = self.config.server
        wants_hub = self.config.hub.enabled and server.role != "deliver"
        async with open_backend(server, self.offload, hub=wants_hub) as backend:
            log = backend.log
            self.delivery.known_feeds |= frozenset(log.counts())
            self._log = self.ingestor.log = log
            self.icons.attach(backend.icons)
            await self.icons.refresh()
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.lag.run)
                    if backend.history is not None:  # the stored history (or a Redis copy)
                        self.history = self._open_history(backend, log)
                        await nursery.start(self.history.run)
                    if self.media is not None and backend.secrets is not None:  # before ingest
                        self.ingestor.media = await nursery.start(self.media.run, backend.secrets)
                    if backend.follow is not None:
                        await nursery.start(backend.follow)
                    if server.role != "ingest":
                        broadcaster = Broadcaster(log, coalesce=server.coalesce_ms / 1000)
                        self.delivery.attach(broadcaster)
                        await nursery.start(broadcaster.run)
                    if server.role == "deliver":
                        await nursery.start(self._follow_state, backend.state)
                        self._nursery = nursery
                    else:
                        if backend.hub is not None:  # before the feeds: it sees their entries
                            self.hub = await nursery.start(
                                partial(
                                    run_hub,
                                    leases=backend.leases if server.shared_log else None,
                                ),
                                self.config,
                                backend.hub,
                                log,
                                self.delivery.topic,
                            )
                        await nursery.start(self._ingest, nursery, backend)
                    logger.info(
                        "running as %s: %d feeds, log head %s, data in %s",
                        server.role,
                        len(self.config.feeds),
                        log.head,
                        backend.where,
                    )
                    task_status.started()
            finally:
                self._nursery = None
                self.hub = None
                if self.history is not None:
                    self.history.close()
                    self.history = None
                self.drain()
                self._log = None
                self.icons.attach(None)

    def _open_history(self, backend: Backend, log: Log) -> History:
        """The stored history: the SQLite log's (searched on every role, trimmed where
        written), or a Redis-log writer's own copy (:attr:`Backend.mirror` fills it)."""
        server = self.config.server
        assert backend.history is not None
        return History(
            backend.history,
            retain_days=server.retain_days,
            retain_entries=server.retain_entries,
            writer=server.role != "deliver",
            offload=self.offload,
            head=(lambda: log.head_seq) if isinstance(log, SQLiteLog) else None,
            watch=log.watch,
            listed=self.ingestor.listed_ids,
            mirror=backend.mirror,
        )

    async def _ingest(
        self,
        nursery: trio.Nursery,
        backend: Backend,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The writing side: the fetch client, the feed tasks and the WebSub subscriber."""
        server = self.config.server
        async with httpx.AsyncClient(transport=self._transport) as client:
            states = await backend.state.feed_states()
            ctx = PollContext(
                client=client,
                log=backend.log,
                store=backend.store,
                gate=HostGate(
                    total=server.max_fetches, per_host=server.per_host_fetches, gap=server.host_gap
                ),
                offload=self.offload,
                states=states,
                stats=self.stats,
                ingestor=self.ingestor,
                state=backend.state,
                leases=backend.leases,
                lease_seconds=server.lease_seconds,
            )
            self._states = ctx.states
            await self.ingestor.rebuild_fold(backend.log, server.backlog, self.offload)
            if server.public_url:
                # Shared (Redis): each feed's upkeep runs where its poll lease is (hold_feed).
                ctx.websub = Subscriber(
                    public_url=server.public_url,
                    state=backend.state,
                    client=client,
                    ingest=self._ingest_delivery,
                    offload=self.offload,
                    leases=backend.leases if server.shared_log else None,
                    lease_seconds=server.lease_seconds,
                )
                await nursery.start(ctx.websub.run, self.config.feeds)
                self.websub = ctx.websub
            self._poll, self._nursery = ctx, nursery
            for feed in self.config.feeds:
                await self._start_feed(feed)
            # Icons: a task of their own, after the feeds' first polls are under way.
            if server.fetch_icons:
                self._icon_keeper = IconKeeper(
                    self.icons, lambda: self.config.feeds, server, transport=self._transport
                )
                await nursery.start(self._icon_keeper.run)
            task_status.started()
            await trio.sleep_forever()  # the client lives as long as the feed tasks

    async def _follow_state(
        self,
        state: StateStore,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """A deliver node's copy of what the ingest side keeps, for ``/api/feeds``."""
        task_status.started()
        while True:
            self._states = await state.feed_states()
            self._subscriptions = await state.subscriptions()
            await self.icons.refresh()
            await trio.sleep(STATE_REFRESH)

    async def _start_feed(self, feed: FeedConfig) -> None:
        if feed.url and self._nursery is not None:
            await self._nursery.start(self._feed_task, feed)

    async def _feed_task(
        self, feed: FeedConfig, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Poll *feed* in a cancel scope of its own, so a reload can stop just this feed."""
        assert self._poll is not None
        done = trio.Event()
        with trio.CancelScope() as scope:
            self._feed_tasks[feed.id] = (scope, done)
            try:
                await hold_feed(feed, self._poll, task_status=task_status)
            finally:
                if self._feed_tasks.get(feed.id, (None,))[0] is scope:
                    del self._feed_tasks[feed.id]
                done.set()

    async def _stop_feed(self, feed_id: str) -> None:
        task = self._feed_tasks.get(feed_id)
        if task is not None:
            scope, done = task
            scope.cancel()
            await done.wait()

    # -- reload ------------------------------------------------------------------------------

    async def reload(self) -> ConfigChanges:
        """Re-read the config (with :attr:`loader`) and apply it; see :meth:`apply`.

        Raises :class:`~feedstream.core.config.ConfigError` (nothing changes then), or
        :class:`ReloadUnavailable` when the server was not started from a config file.
        """
        if self.loader is None:
            raise ReloadUnavailable("the server was not started from a config file")
        async with self._reload_lock:
            try:
                new: Config = await self.offload(self.loader)
            except ConfigError:
                self.stats.reloads["error"] += 1
                raise
            changes = await self.apply(new)
            self.stats.reloads["ok"] += 1
            return changes

    async def apply(self, new: Config) -> ConfigChanges:
        """Switch to *new*'s feeds: added ones start, removed ones stop (and leave their hub),
        changed ones restart. Listeners are untouched. ``[server]`` settings need a restart.
        """
        if self._nursery is None:
            raise ReloadUnavailable("the server is not running")
        changes = compare(self.config, new)
        if changes.restart_needed:
            logger.warning(
                "reload: [server] %s changed; that takes a restart, the running values stay",
                ", ".join(changes.restart_needed),
            )
        before = {feed.id: feed for feed in self.config.feeds}
        self.config = replace(new, server=self.config.server, hub=self.config.hub)
        self.delivery.known_feeds |= {feed.id for feed in new.feeds}
        self.delivery.categories = feed_categories(new.feeds)
        # A feed whose category alone changed keeps polling: nothing its task reads changed.
        restart = [f for f in changes.changed if not only_category_changed(before.get(f.id), f)]
        if changes.rules_changed:
            self.ingestor.set_rules(new.rules)  # entries arriving from now on
        if changes.streams_changed:
            self.delivery.set_streams(new.streams)
        for feed in (*changes.removed, *restart):
            await self._stop_feed(feed.id)
        if self.websub is not None:
            await self.websub.update(self.config.feeds)
        for feed in (*changes.added, *restart):
            await self._start_feed(feed)
        if self._icon_keeper is not None:
            self._icon_keeper.poke()  # new feeds, changed URLs
        logger.info(
            "reload: added %s, removed %s, changed %s, %d unchanged; rules %s, streams %s",
            ",".join(feed.id for feed in changes.added) or "none",
            ",".join(feed.id for feed in changes.removed) or "none",
            ",".join(feed.id for feed in changes.changed) or "none",
            len(changes.unchanged),
            f"changed ({len(new.rules)})" if changes.rules_changed else "unchanged",
            f"changed ({len(new.streams)})" if changes.streams_changed else "unchanged",
        )
        return changes

    def drain(self) -> None:
        """Answer every waiting listener now, and every later one at once (shutting down)."""
        self.delivery.close()

    # -- WebSub deliveries -------------------------------------------------------------------

    async def _ingest_delivery(
        self, feed: FeedConfig, body: bytes, content_type: str | None
    ) -> int:
        """Ingest a WebSub content distribution with ``via: websub``."""
        ingested = await self.ingestor.ingest(feed, body, content_type=content_type, via="websub")
        if ingested.parsed.error:
            logger.warning(
                "feed %s: WebSub delivery is not a feed: %s",
                feed.id,
                ingested.parsed.error,
                extra={"feed": feed.id},
            )
        return len(ingested.new)

    # -- status ------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Entries stored per feed (empty when not running)."""
        return dict(self._log.counts()) if self._log is not None else {}

    def feeds_status(self) -> list[dict[str, Any]]:
        """One object per configured feed, for ``/api/feeds``."""
        states = self._states
        counts = self._log.counts() if self._log is not None else {}
        out = []
        for feed in self.config.feeds:
            state = states.get(feed.id) or FeedState(id=feed.id)
            out.append(
                {
                    "id": feed.id,
                    "title": feed.title or state.title or feed.id,
                    "url": state.url or feed.url,
                    "kind": feed.kind,
                    "accepts_push": feed.accepts_push,
                    "interval": feed.interval if feed.url else None,
                    "status": state.status if feed.url else "push",
                    "last_fetch": _time(state.last_fetch),
                    "last_status": state.http_status,
                    "last_error": state.error,
                    "failures": state.failures,
                    "next_poll": _time(state.next_poll) if state.status != "gone" else None,
                    "entries_seen": counts.get(feed.id, 0),
                    "websub": self._websub_status(feed.id),
                    "category": feed.category,
                    "icon": self.icons.status(feed),
                }
            )
        return out

    def opml(self) -> bytes:
        """The running config's polled feeds as OPML 2.0 (``GET /api/opml``)."""
        return export_opml(self.config.feeds)

    def _icon_label(self, feed_id: str) -> tuple[bool, str | None]:
        """Whether *feed_id* is a feed known here, and the title its generated icon shows."""
        feed = self.config.feed(feed_id)
        if feed is None:
            return feed_id in self.delivery.known_feeds, None
        state = self._states.get(feed_id)
        return True, feed.title or (state.title if state is not None else None)

    def icon_etag(self, feed_id: str) -> tuple[str, bool] | None:
        """The ETag of *feed_id*'s icon now and whether it is generated; None for an unknown
        feed (no I/O)."""
        known, title = self._icon_label(feed_id)
        return self.icons.etag(feed_id, title) if known else None

    async def icon(self, feed_id: str) -> IconImage | None:
        """*feed_id*'s icon (the fetched one, else the generated one); None: unknown feed.

        Feeds with stored entries that left the config keep an icon, for their old entries.
        """
        known, title = self._icon_label(feed_id)
        return await self.icons.image(feed_id, title) if known else None

    def _websub_status(self, feed_id: str) -> dict[str, Any] | None:
        if self.websub is not None:
            return self.websub.status(feed_id)
        sub = self._subscriptions.get(feed_id)  # a deliver node: as the ingest side stored it
        return None if sub is None else subscription_status(sub)

    def subscription_states(self) -> dict[str, int]:
        """WebSub subscriptions by state (every state listed, zeros included)."""
        counts = dict.fromkeys(SubscriptionState, 0)
        subs: list[Subscription]
        if self.websub is not None:
            subs = list(self.websub.subs.values())
        else:
            subs = list(self._subscriptions.values())
        for sub in subs:
            counts[SubscriptionState(sub.state)] += 1
        return {state.value: count for state, count in counts.items()}

    def hub_figures(self) -> tuple[dict[str, int], dict[str, int]] | None:
        """The hub's subscriptions by state and deliveries by outcome (None: no hub here)."""
        hub = self.hub
        return None if hub is None else (hub.counts(), dict(hub.deliveries))

    def health(self) -> str | None:
        """None when healthy, else why not (for ``/healthz``)."""
        if self._log is None:
            return "not running"
        if not self._log.available:
            return "the log store is unreachable; reconnecting"
        return None

    def _cursor(self) -> str | None:
        """The head listeners have been shown (the log's, on an ingest node)."""
        shown = self.delivery.cursor
        if shown is not None:
            return shown
        return self._log.head if self._log is not None else None

    def status(self) -> dict[str, Any]:
        """Process-wide figures for ``/api/status``."""
        return {
            "version": __version__,
            "role": self.config.server.role,
            "pid": os.getpid(),
            "cursor": self._cursor(),
            "feeds": len(self.config.feeds),
            "waiting": self.delivery.listeners,
            "loop_lag": self.lag.stats(),
            "history": self.history.status() if self.history is not None else None,
        }


STATE_REFRESH = 2.0  # seconds between a deliver node's reads of the feed states


def _time(value: float | None) -> str | None:
    return None if value is None else format_rfc3339(value)
