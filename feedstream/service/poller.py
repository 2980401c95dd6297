"""One trio task per polled feed: fetch, ingest (parse off the event loop, append), sleep.

The decisions (when to poll next, what counts as a failure) belong to
:mod:`feedstream.core.schedule`; this module only carries them out. The loop is drift-free: the
next poll is due ``delay`` seconds after the *start* of the previous one, awaited with
``trio.sleep_until``."""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import trio

from feedstream.core.config import FeedConfig
from feedstream.core.schedule import plan
from feedstream.log.base import Log, Offload
from feedstream.log.state import Leases, LocalLeases, LogUnavailable, SQLiteState, StateStore
from feedstream.log.store import FeedState, Store
from feedstream.service.fetch import FetchError, HostGate, fetch
from feedstream.service.ingest import Ingestor
from feedstream.service.parsing import parse_in_worker, parse_slots
from feedstream.service.stats import Stats, fetch_outcome
from feedstream.websub.subscriber import Subscriber

logger = logging.getLogger(__name__)

__all__ = ["UNAVAILABLE_RETRY", "PollContext", "hold_feed", "poll_once", "run_feed"]

UNAVAILABLE_RETRY = 5.0  # seconds before a poll whose entries could not be stored is retried


@dataclass(slots=True)
class PollContext:
    """What every feed task shares."""

    client: httpx.AsyncClient
    log: Log
    store: Store | None  # the SQLite store, or None when *state* is kept elsewhere
    gate: HostGate
    offload: Offload = trio.to_thread.run_sync  # blocking I/O (SQLite)
    wall_clock: Callable[[], float] = time.time
    jitter: Callable[[], float] = random.random
    states: dict[str, FeedState] = field(default_factory=dict)
    websub: Subscriber | None = None
    parse: Offload = parse_in_worker  # CPU work: parsing
    parse_slots: trio.CapacityLimiter = field(default_factory=parse_slots)
    stats: Stats = field(default_factory=Stats)
    #: The ingest path; by default one over the fields above (the runtime passes its own).
    ingestor: Ingestor | None = None
    #: Where fetch state is kept: by default the SQLite *store* (Redis: shared by the nodes).
    state: StateStore | None = None
    #: Who may poll which feed: by default every feed is ours (one ingest process).
    leases: Leases | None = None
    lease_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.ingestor is None:
            self.ingestor = Ingestor(self.log, self.stats, parse=self.parse, slots=self.parse_slots)
        if self.state is None:
            assert self.store is not None, "fetch state needs a store or a StateStore"
            self.state = SQLiteState(self.store, self.offload)
        if self.leases is None:
            self.leases = LocalLeases()


async def hold_feed(
    feed: FeedConfig,
    ctx: PollContext,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Poll *feed* whenever this node holds its lease, until it answers 410 Gone.

    With one ingest process every lease is granted and this is :func:`run_feed`. With several
    (Redis), the lease is renewed every third of its length; a node that loses it (or cannot
    reach the store to renew it) stops polling at once, and one that dies is replaced by
    another within one lease. Before polling, the new holder reads the feed's fetch state
    (ETag, Last-Modified, failures, next poll) from the shared store. The holder also keeps
    the feed's WebSub subscription (:meth:`~feedstream.websub.subscriber.Subscriber.hold`),
    and stops with the lease.
    """
    assert ctx.leases is not None and ctx.state is not None
    if isinstance(ctx.leases, LocalLeases):
        await run_feed(feed, ctx, task_status=task_status)
        return
    task_status.started()
    every = ctx.lease_seconds / 3
    while True:
        if await _claim(ctx.leases, feed.id):
            try:
                stored = (await ctx.state.feed_states()).get(feed.id)
                if stored is not None:
                    ctx.states[feed.id] = stored
                gone = False
                async with trio.open_nursery() as nursery:
                    lost = nursery.cancel_scope
                    nursery.start_soon(_keep_lease, ctx.leases, feed.id, every, lost)
                    if ctx.websub is not None:  # the feed's WebSub upkeep: the holder's too
                        await nursery.start(ctx.websub.hold, feed)
                    await run_feed(feed, ctx)
                    gone = True  # 410: nobody polls it again
                    lost.cancel()
                if gone:
                    return
            except LogUnavailable:
                logger.warning(
                    "feed %s: the shared store is unreachable; not polling",
                    feed.id,
                    extra={"feed": feed.id},
                )
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await _release(ctx.leases, feed.id)
        await trio.sleep(every)


async def _claim(leases: Leases, feed_id: str) -> bool:
    try:
        return await leases.claim(feed_id)
    except LogUnavailable:
        return False


async def _release(leases: Leases, feed_id: str) -> None:
    with contextlib.suppress(LogUnavailable):  # unreachable: it expires by itself
        await leases.release(feed_id)


async def _keep_lease(leases: Leases, feed_id: str, every: float, scope: trio.CancelScope) -> None:
    """Renew the lease every *every* seconds; cancel *scope* (the polling) once it is lost."""
    while True:
        await trio.sleep(every)
        if not await _claim(leases, feed_id):
            logger.info("feed %s: lease lost; another node polls it", feed_id)
            scope.cancel()
            return


async def run_feed(
    feed: FeedConfig,
    ctx: PollContext,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Poll *feed* until cancelled, or until it answers 410 Gone."""
    state = ctx.states.setdefault(feed.id, FeedState(id=feed.id))
    if state.source_url != feed.url:  # new feed, or its configured URL changed: start afresh
        state = ctx.states[feed.id] = FeedState(id=feed.id, source_url=feed.url, url=feed.url)
    task_status.started()
    if state.status == "gone":
        logger.info(
            "feed %s: gone (410) at %s, not polling", feed.id, state.url, extra={"feed": feed.id}
        )
        return
    # Resume the schedule a previous run left, so restarts do not hammer anyone.
    wait = 0.0 if state.next_poll is None else state.next_poll - ctx.wall_clock()
    next_at = trio.current_time() + min(max(wait, 0.0), feed.interval)
    while True:
        await trio.sleep_until(next_at)
        started = trio.current_time()
        try:
            delay = await poll_once(feed, state, ctx)
        except LogUnavailable:  # not the feed's fault: try again soon, no failure counted
            logger.warning(
                "feed %s: the log is unreachable; polling again in %g s",
                feed.id,
                UNAVAILABLE_RETRY,
                extra={"feed": feed.id},
            )
            delay = min(feed.interval, UNAVAILABLE_RETRY)
        except Exception:  # a bug must not end polling for this feed, nor crash the others
            logger.exception(
                "feed %s: unexpected error while polling", feed.id, extra={"feed": feed.id}
            )
            state.status, state.error = "error", "internal error (see the server log)"
            state.failures += 1
            delay = feed.interval
        if delay is None:
            return
        next_at = started + delay


async def poll_once(feed: FeedConfig, state: FeedState, ctx: PollContext) -> float | None:
    """Fetch and ingest *feed* once; update *state*; return the delay until the next poll."""
    url = state.url or feed.url
    assert url is not None, "only polled feeds have a task"
    started = ctx.wall_clock()
    status: int | None = None
    headers: dict[str, str] = {}
    answered = url  # the URL whose server answered, after redirects
    usable, ttl, error = True, None, None
    failure: FetchError | None = None
    try:
        async with ctx.gate.slot(url):
            fetch_started = trio.current_time()
            try:
                result = await fetch(
                    ctx.client, url, feed.limits, etag=state.etag, last_modified=state.last_modified
                )
            finally:
                ctx.stats.fetch_seconds.observe(trio.current_time() - fetch_started)
    except FetchError as exc:
        error, failure = str(exc), exc
    else:
        status, headers, answered = result.status, result.headers, result.url
        if result.permanent_url and result.permanent_url != state.url:
            logger.info(
                "feed %s: moved permanently to %s",
                feed.id,
                result.permanent_url,
                extra={"feed": feed.id},
            )
            state.url = result.permanent_url
        if status == 200:
            assert ctx.ingestor is not None
            discover = ctx.websub is not None and ctx.websub.wants(feed)
            ingested = await ctx.ingestor.ingest(
                feed,
                result.body,
                content_type=result.content_type,
                via="poll",
                url=result.url,
                headers=result.headers if discover else None,
            )
            parsed, discovery = ingested.parsed, ingested.discovery
            if ctx.websub is not None and discovery is not None:
                ctx.websub.discovered(feed, discovery, result.url)
            ttl = parsed.ttl_seconds
            if parsed.error:
                usable, error = False, parsed.error
            else:
                state.title = parsed.title or state.title
                state.etag = headers.get("etag")
                state.last_modified = headers.get("last-modified")
                if ingested.new:
                    logger.info(
                        "feed %s: %d new entries",
                        feed.id,
                        len(ingested.new),
                        extra={"feed": feed.id},
                    )
                if ctx.websub is not None:
                    await ctx.websub.polled(feed, len(ingested.new), started)
        elif status != 304:
            error = f"HTTP {status}"
    ctx.stats.fetches[feed.id, fetch_outcome(status, failure, usable)] += 1
    outcome = plan(
        status,
        headers,
        interval=ctx.websub.interval(feed) if ctx.websub is not None else feed.interval,
        failures=state.failures,
        now=ctx.wall_clock(),
        jitter=ctx.jitter(),
        usable=usable,
        ttl=ttl,
    )
    if outcome.host_pause:  # Retry-After: hold back the host that asked for it
        ctx.gate.pause(answered, outcome.host_pause)
    state.last_fetch = ctx.wall_clock()
    state.http_status = status
    state.status = outcome.kind
    state.error = error if outcome.kind in ("error", "gone") else None
    state.failures = outcome.failures
    state.next_poll = None if outcome.delay is None else state.last_fetch + outcome.delay
    if error:
        logger.warning(
            "feed %s: %s (failure %d)", feed.id, error, state.failures, extra={"feed": feed.id}
        )
    assert ctx.state is not None
    await ctx.state.save_feed_state(state)
    return outcome.delay
