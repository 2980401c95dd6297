"""One trio task per polled feed: fetch, parse off the event loop, append, sleep, repeat.

The decisions (when to poll next, what counts as a failure) belong to
:mod:`feedstream.core.schedule`; this module only carries them out. The loop is drift-free: the
next poll is due ``delay`` seconds after the *start* of the previous one, awaited with
``trio.sleep_until``."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import trio
import trio_parallel

from feedstream.core.config import FeedConfig, FetchLimits
from feedstream.core.normalize import ParsedFeed, parse_feed
from feedstream.core.schedule import plan
from feedstream.log.cursorlog import CursorLog, Offload
from feedstream.log.store import FeedState, Store
from feedstream.service.fetch import FetchError, FetchResult, HostGate, fetch
from feedstream.service.stats import Stats, fetch_outcome
from feedstream.websub import protocol as websub
from feedstream.websub.protocol import Discovery
from feedstream.websub.subscriber import Subscriber

logger = logging.getLogger(__name__)

__all__ = [
    "PollContext",
    "examine",
    "feed_entries",
    "overran",
    "parse_in_worker",
    "parse_slots",
    "parse_within",
    "poll_once",
    "run_feed",
]

_T = TypeVar("_T")


async def parse_in_worker(fn: Callable[..., Any], *args: Any) -> Any:
    """Run *fn* in a trio-parallel worker process; killed if the caller stops waiting."""
    return await trio_parallel.run_sync(fn, *args, kill_on_cancel=True)


def parse_slots() -> trio.CapacityLimiter:
    """One slot per core: how many documents are parsed at once."""
    return trio.CapacityLimiter(os.cpu_count() or 2)


def overran(limits: FetchLimits) -> ParsedFeed:
    return ParsedFeed.failure(f"parsing took longer than {limits.parse_timeout:g} s; abandoned")


async def parse_within(
    parse: Offload,
    slots: trio.CapacityLimiter,
    limits: FetchLimits,
    fn: Callable[..., _T],
    *args: Any,
) -> _T | None:
    """``fn(*args)`` through *parse*, for at most ``limits.parse_timeout`` s; None if it overran.

    The clock starts once one of the *slots* is ours: time spent queueing behind other
    documents (a burst of pushes on a busy server) is not the document's fault, and must not
    turn a good one into a rejected one.
    """
    async with slots:
        with trio.move_on_after(limits.parse_timeout):
            result: _T = await parse(fn, *args)
            return result
    return None


@dataclass(slots=True)
class PollContext:
    """What every feed task shares."""

    client: httpx.AsyncClient
    log: CursorLog
    store: Store
    gate: HostGate
    offload: Offload = trio.to_thread.run_sync  # blocking I/O (SQLite)
    wall_clock: Callable[[], float] = time.time
    jitter: Callable[[], float] = random.random
    states: dict[str, FeedState] = field(default_factory=dict)
    websub: Subscriber | None = None
    parse: Offload = parse_in_worker  # CPU work: parsing
    parse_slots: trio.CapacityLimiter = field(default_factory=parse_slots)
    stats: Stats = field(default_factory=Stats)


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
            discover = ctx.websub is not None and ctx.websub.wants(feed)
            examined = await parse_within(
                ctx.parse, ctx.parse_slots, feed.limits, examine, result, feed, discover
            )
            # None: a hostile document, and the worker was killed
            parsed, discovery = examined or (overran(feed.limits), None)
            if ctx.websub is not None and discovery is not None:
                ctx.websub.discovered(feed, discovery, result.url)
            ttl = parsed.ttl_seconds
            if parsed.error:
                usable, error = False, parsed.error
            else:
                state.title = parsed.title or state.title
                state.etag = headers.get("etag")
                state.last_modified = headers.get("last-modified")
                offered = feed_entries(feed, parsed)
                new = await ctx.log.append(offered)
                ctx.stats.count_ingest(offered, new)
                if new:
                    logger.info(
                        "feed %s: %d new entries", feed.id, len(new), extra={"feed": feed.id}
                    )
                if ctx.websub is not None:
                    await ctx.websub.polled(feed, len(new), started)
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
    await ctx.offload(ctx.store.save_feed_state, state)
    return outcome.delay


def examine(
    result: FetchResult, feed: FeedConfig, discover: bool
) -> tuple[ParsedFeed, Discovery | None]:
    """Parse a fetched body and, for WebSub, look for its hub: one trip to a worker thread.

    Discovery runs whether or not the body is a feed (a topic may be an HTML page).
    """
    parsed = parse_feed(
        result.body,
        feed_id=feed.id,
        base_url=result.url,
        content_type=result.content_type,
        via="poll",
        max_entries=feed.limits.max_entries,
    )
    if not discover:
        return parsed, None
    return parsed, websub.discover(result.headers, result.body, result.content_type, result.url)


def feed_entries(feed: FeedConfig, parsed: ParsedFeed) -> list[dict[str, Any]]:
    """The parsed entries as they go into the log: a configured feed title wins."""
    title = feed.title or parsed.title or feed.id
    if all(entry["feed_title"] == title for entry in parsed.entries):
        return parsed.entries
    return [dict(entry, feed_title=title) for entry in parsed.entries]
