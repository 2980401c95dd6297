"""The one ingest path: a document in, new entries out.

Polling, webhook pushes, WebSub deliveries and ``feedstream check`` all go through
:class:`Ingestor`: parse off the event loop within the feed's deadline (:meth:`examine`), then
append what is new to the log and count it (:meth:`ingest`).

One fast path, named: a JSON body of at most :data:`INLINE_JSON_BYTES` is parsed right here on
the event loop instead of in a worker. JSON parses in linear time (our own JSON Feed reader: no
XML, no entities, no feedparser) and 4 KiB take about a millisecond at most, while a trip to a
worker costs several scheduler passes, each a long one on a server busy with thousands of
listeners. XML documents (what hubs and most webhooks send) always go to a worker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from feedstream.core.config import FeedConfig
from feedstream.core.normalize import ParsedFeed
from feedstream.log.base import Log, Offload
from feedstream.service.parsing import examine, overran, parse_in_worker, parse_slots, parse_within
from feedstream.service.stats import Stats
from feedstream.websub.discovery import Discovery

logger = logging.getLogger(__name__)

__all__ = ["INLINE_JSON_BYTES", "Ingested", "Ingestor", "feed_entries"]

#: Pushed JSON up to this size is parsed on the event loop (the module's one fast path).
INLINE_JSON_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Ingested:
    """What one document gave: its parse, the entries new to the log, and its hub if asked."""

    parsed: ParsedFeed
    new: list[dict[str, Any]] = field(default_factory=list)
    discovery: Discovery | None = None


class Ingestor:
    """Parses documents off the event loop and appends their new entries to *log*.

    Without a *log* (``feedstream check``) it only examines.
    """

    def __init__(
        self,
        log: Log | None,
        stats: Stats | None = None,
        *,
        parse: Offload = parse_in_worker,
        slots: trio.CapacityLimiter | None = None,
    ) -> None:
        self.log = log
        self.stats = stats or Stats()
        self.parse = parse
        self.slots = slots or parse_slots()

    async def examine(
        self,
        feed: FeedConfig,
        body: bytes,
        *,
        content_type: str | None,
        via: str,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[ParsedFeed, Discovery | None]:
        """Parse *body* for *feed* (relative links against *url*, the feed's own by default)
        within ``parse_timeout``; with *headers*, look for its WebSub hub too."""
        base = url or feed.url
        if headers is None and len(body) <= INLINE_JSON_BYTES and _is_json(content_type, body):
            return examine(body, feed, content_type, base, via)
        args = (body, feed, content_type, base, via, headers)
        examined = await parse_within(self.parse, self.slots, feed.limits, examine, *args)
        return examined or (overran(feed.limits), None)  # None: overran, the worker was killed

    async def ingest(
        self,
        feed: FeedConfig,
        body: bytes,
        *,
        content_type: str | None,
        via: str,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Ingested:
        """:meth:`examine`, then append the entries to the log: ``new`` are those it lacked.

        A document that is not a feed (``parsed.error``) appends nothing.
        """
        parsed, discovery = await self.examine(
            feed, body, content_type=content_type, via=via, url=url, headers=headers
        )
        if parsed.error:
            return Ingested(parsed, [], discovery)
        return Ingested(parsed, await self.append(feed, parsed), discovery)

    async def append(self, feed: FeedConfig, parsed: ParsedFeed) -> list[dict[str, Any]]:
        """Append what *parsed* holds for *feed*; return the new entries."""
        assert self.log is not None, "an examine-only ingestor has no log"
        offered = feed_entries(feed, parsed)
        new = await self.log.append(offered)
        self.stats.count_ingest(offered, new)
        return new


def feed_entries(feed: FeedConfig, parsed: ParsedFeed) -> list[dict[str, Any]]:
    """The parsed entries as they go into the log: a configured feed title wins."""
    title = feed.title or parsed.title or feed.id
    if all(entry["feed_title"] == title for entry in parsed.entries):
        return parsed.entries
    return [dict(entry, feed_title=title) for entry in parsed.entries]


def _is_json(content_type: str | None, body: bytes) -> bool:
    if content_type is not None:
        return content_type in ("application/feed+json", "application/json")
    return body.lstrip()[:1] in (b"{", b"[")
