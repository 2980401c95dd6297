"""Parsing off the event loop: worker processes, one slot per core, a deadline per document.

Parsing a feed is CPU work (feedparser, nh3) that would hold the event loop and, with it, every
listener; it runs in trio-parallel worker processes. :func:`examine` is the function a worker
runs: parse, and (for WebSub) find the hub, in one trip.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import trio
import trio_parallel

from feedstream.core.config import FeedConfig, FetchLimits
from feedstream.core.normalize import ParsedFeed, parse_feed
from feedstream.log.base import Offload
from feedstream.websub.discovery import Discovery, discover

__all__ = ["examine", "overran", "parse_in_worker", "parse_slots", "parse_within"]

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


def examine(
    body: bytes,
    feed: FeedConfig,
    content_type: str | None,
    url: str | None,
    via: str,
    headers: Mapping[str, str] | None = None,
) -> tuple[ParsedFeed, Discovery | None]:
    """Parse a document and, given the *headers* it came with, look for its WebSub hub.

    Discovery runs whether or not the body is a feed (a topic may be an HTML page); when it is
    one, the hubs and self URL the parser found stand in for a second scan of the body. A pure
    function of its arguments: what a worker process runs.
    """
    parsed = parse_feed(
        body,
        feed_id=feed.id,
        base_url=url,
        content_type=content_type,
        via=via,
        max_entries=feed.limits.max_entries,
    )
    if headers is None or url is None:
        return parsed, None
    links = None if parsed.error else (parsed.hubs, parsed.self_url)
    return parsed, discover(headers, body, content_type, url, feed_links=links)
