"""The running service behind the HTTP routes: store, cursor log, HTTP client and feed tasks.

:meth:`Runtime.run` is a long-lived task (started with ``nursery.start``) that owns everything
with a lifetime: it opens the SQLite store, builds the cursor log, opens the fetch client, starts
one task per polled feed and reports itself started; cancelling it stops the feed tasks and
closes the store. The routes in :mod:`feedstream.web.app` use :attr:`Runtime.log` and the push
ingest here, and never touch SQLite or httpx themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
import trio

from feedstream import __version__
from feedstream.core.config import Config, ConfigChanges, ConfigError, FeedConfig, compare
from feedstream.core.normalize import ParsedFeed, parse_feed
from feedstream.log.cursorlog import CursorLog, Offload, SQLiteCursorLog, format_time
from feedstream.log.store import FeedState, Store
from feedstream.service.fetch import HostGate
from feedstream.service.monitor import LagMonitor
from feedstream.service.poller import (
    PollContext,
    feed_entries,
    overran,
    parse_in_worker,
    parse_slots,
    parse_within,
    run_feed,
)
from feedstream.service.stats import Stats
from feedstream.websub.protocol import SubscriptionState
from feedstream.websub.subscriber import Subscriber

logger = logging.getLogger(__name__)

__all__ = ["PushResult", "ReloadUnavailable", "Runtime"]


#: Pushed JSON up to this size is parsed on the event loop (see ``Runtime._parse_pushed``).
INLINE_JSON_BYTES = 4096


class ReloadUnavailable(Exception):
    """Reloading is not possible in this process (no config file, or not running)."""


@dataclass(frozen=True, slots=True)
class PushResult:
    accepted: int | None  # new entries, or None when the body was rejected
    error: str | None = None


class Runtime:
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
        #: Feed ids a ``feeds`` filter may name: configured now, or with stored entries.
        self.known_feeds = frozenset(feed.id for feed in config.feeds)
        self.offload = offload  # blocking I/O: worker threads
        self.parse = parse  # parsing: worker processes, so the event loop never waits on the GIL
        self.parse_slots = parse_slots()
        self._transport = transport
        self._log: CursorLog | None = None
        self._poll: PollContext | None = None
        self.websub: Subscriber | None = None
        self._cancel = trio.CancelScope()
        self.lag = LagMonitor()
        self.stats = Stats()
        self._nursery: trio.Nursery | None = None
        self._feed_tasks: dict[str, tuple[trio.CancelScope, trio.Event]] = {}
        self._reload_lock = trio.Lock()
        self.draining = False  # shutting down: answers close their connections

    @property
    def waiting(self) -> int:
        """Long-polls and SSE streams parked right now."""
        return sum(self.stats.waiting.values())

    @property
    def log(self) -> CursorLog:
        if self._log is None:
            raise RuntimeError("the runtime is not running")
        return self._log

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled (or :meth:`stop`): the long-lived part of the server."""
        server = self.config.server
        store: Store = await self.offload(Store, server.data_dir / "feedstream.sqlite3")
        try:
            snapshot = await self.offload(store.snapshot, server.backlog)
            self.known_feeds |= frozenset(snapshot.counts)
            log = SQLiteCursorLog(
                store,
                snapshot,
                backlog=server.backlog,
                offload=self.offload,
                coalesce=server.coalesce_ms / 1000,
            )
            async with httpx.AsyncClient(transport=self._transport) as client:
                states = await self.offload(store.feed_states)
                ctx = PollContext(
                    client=client,
                    log=log,
                    store=store,
                    gate=HostGate(
                        total=server.max_fetches,
                        per_host=server.per_host_fetches,
                        gap=server.host_gap,
                    ),
                    offload=self.offload,
                    parse=self.parse,
                    parse_slots=self.parse_slots,
                    states=states,
                    stats=self.stats,
                )
                self._log = log
                with self._cancel:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(self.lag.run)
                        await nursery.start(log.run)
                        if server.public_url:
                            ctx.websub = Subscriber(
                                public_url=server.public_url,
                                store=store,
                                client=client,
                                ingest=self._ingest_delivery,
                                offload=self.offload,
                            )
                            await nursery.start(ctx.websub.run, self.config.feeds)
                            self.websub = ctx.websub
                        self._poll, self._nursery = ctx, nursery
                        for feed in self.config.feeds:
                            await self._start_feed(feed)
                        logger.info(
                            "running: %d feeds, log head %s, data in %s",
                            len(self.config.feeds),
                            log.cursor,
                            server.data_dir,
                        )
                        task_status.started()
                        await trio.sleep_forever()
        finally:
            self._nursery = None
            if self._log is not None:
                self._log.close()
            self._log = None
            store.close()

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
                await run_feed(feed, self._poll, task_status=task_status)
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
        self.config = replace(new, server=self.config.server)
        self.known_feeds |= {feed.id for feed in new.feeds}
        for feed in (*changes.removed, *changes.changed):
            await self._stop_feed(feed.id)
        if self.websub is not None:
            await self.websub.update(self.config.feeds)
        for feed in (*changes.added, *changes.changed):
            await self._start_feed(feed)
        summary = changes.summary()
        logger.info(
            "reload: added %s, removed %s, changed %s, %d unchanged",
            ",".join(summary["added"]) or "none",
            ",".join(summary["removed"]) or "none",
            ",".join(summary["changed"]) or "none",
            len(changes.unchanged),
        )
        return changes

    def drain(self) -> None:
        """Answer every waiting listener now, and every later one at once (shutting down)."""
        self.draining = True
        if self._log is not None:
            self._log.close()

    def stop(self) -> None:
        """Stop the feed tasks and close the store."""
        self.drain()
        self._cancel.cancel()

    # -- push ingest -------------------------------------------------------------------------

    async def ingest(self, feed: FeedConfig, parsed: ParsedFeed) -> list[dict[str, Any]]:
        """Append what *parsed* holds for *feed* to the log; return the new entries."""
        offered = feed_entries(feed, parsed)
        new = await self.log.append(offered)
        self.stats.count_ingest(offered, new)
        return new

    async def push(self, feed: FeedConfig, body: bytes, content_type: str | None) -> PushResult:
        """Parse a pushed document (off the event loop) and ingest it with ``via: push``."""
        parsed = await self._parse_pushed(body, feed, content_type, "push")
        if parsed.error:
            return PushResult(None, parsed.error)
        new = await self.ingest(feed, parsed)
        logger.info(
            "feed %s: push accepted, %d new of %d",
            feed.id,
            len(new),
            len(parsed.entries),
            extra={"feed": feed.id},
        )
        return PushResult(len(new))

    async def _ingest_delivery(
        self, feed: FeedConfig, body: bytes, content_type: str | None
    ) -> int:
        """Ingest a WebSub content distribution with ``via: websub``."""
        parsed = await self._parse_pushed(body, feed, content_type, "websub")
        if parsed.error:
            logger.warning(
                "feed %s: WebSub delivery is not a feed: %s",
                feed.id,
                parsed.error,
                extra={"feed": feed.id},
            )
            return 0
        return len(await self.ingest(feed, parsed))

    async def _parse_pushed(
        self, body: bytes, feed: FeedConfig, content_type: str | None, via: str
    ) -> ParsedFeed:
        """Parse a pushed body in a worker, within the feed's ``parse_timeout``.

        A small JSON body is parsed right here instead. JSON parses in linear time (our own
        JSON Feed reader: no XML, no entities, no feedparser), and 4 KiB take about a
        millisecond at most. A trip to a worker process costs several passes of the
        scheduler, each a long one on a server busy with thousands of listeners, and pushes
        queue for the few workers: measured, this was what held push intake to one every
        two seconds under the fan-out benchmark's load.
        """
        if len(body) <= INLINE_JSON_BYTES and _is_json(content_type, body):
            return _parse_pushed(body, feed, content_type, via)
        parsed = await parse_within(
            self.parse, self.parse_slots, feed.limits, _parse_pushed, body, feed, content_type, via
        )
        return parsed or overran(feed.limits)

    # -- status ------------------------------------------------------------------------------

    def feeds_status(self) -> list[dict[str, Any]]:
        """One object per configured feed, for ``/api/feeds``."""
        states = self._poll.states if self._poll is not None else {}
        counts = self.log.counts() if self._log is not None else {}
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
                    "websub": self.websub.status(feed.id) if self.websub else None,
                }
            )
        return out

    def subscription_states(self) -> dict[str, int]:
        """WebSub subscriptions by state (every state listed, zeros included)."""
        counts = dict.fromkeys(SubscriptionState, 0)
        if self.websub is not None:
            for sub in list(self.websub.subs.values()):
                counts[SubscriptionState(sub.state)] += 1
        return {state.value: count for state, count in counts.items()}

    def status(self) -> dict[str, Any]:
        """Process-wide figures for ``/api/status``."""
        return {
            "version": __version__,
            "cursor": self.log.cursor,
            "feeds": len(self.config.feeds),
            "waiting": self.waiting,
            "loop_lag": self.lag.stats(),
        }


def _time(value: float | None) -> str | None:
    return None if value is None else format_time(value)


def _is_json(content_type: str | None, body: bytes) -> bool:
    if content_type is not None:
        return content_type in ("application/feed+json", "application/json")
    return body.lstrip()[:1] in (b"{", b"[")


def _parse_pushed(body: bytes, feed: FeedConfig, content_type: str | None, via: str) -> ParsedFeed:
    return parse_feed(
        body,
        feed_id=feed.id,
        base_url=feed.url,
        content_type=content_type,
        via=via,
        max_entries=feed.limits.max_entries,
    )
