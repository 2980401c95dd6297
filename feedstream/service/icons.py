"""Feed icons, the shell: finding and fetching them, keeping them fresh, serving them.

:class:`Icons` is what every node holds: each feed's :class:`~feedstream.log.icons.IconRecord`
and the way to an image, the stored one or, for a feed without one, the generated SVG
(:func:`feedstream.core.icons.generated_icon`). :class:`IconKeeper` runs on the ingest side,
as one task of its own: it looks for the icon of every polled feed once, then weekly, at most
:data:`CONCURRENCY` feeds at a time, and writes what it found to the
:class:`~feedstream.log.icons.IconStore`. Polling, parsing for ingest and the listeners never
wait for it: it has its own :class:`~feedstream.service.fetch.HostGate` (one request at a time
per host, the server's ``host_gap`` between two), its own parse slot, and it never raises.

Looking for a feed's icon (see :mod:`feedstream.core.icons` for the order): fetch the feed
document (one extra fetch of each feed per week, so the poller is not involved), read its icon
and site in a worker process, try the feed's icon; else fetch the site's page (at most
:data:`MAX_PAGE_BYTES`) and try its ``<link rel="icon">`` elements; else ``/favicon.ico``.
Every image fetch goes through :func:`feedstream.service.fetch.fetch` with the feed's own
limits but a body of at most 256 KiB, and is kept only if its bytes are an image.

Outcomes: ``ok`` (refreshed a week later, +-10 %), ``none`` (every candidate answered, none
with an image: the generated icon, looked for again a week later), ``error`` (something failed
that may pass: a network error, a timeout, a 5xx or 429. Retried after 1 h, doubling up to a
week; an image found before is still served). ``/api/feeds`` shows each feed's ``icon``.

Private addresses. Icon URLs come from feed documents and web pages, which the feed's
publisher writes, not the operator. So the feed's own host is trusted as configured (a feed
on loopback or the local network gets its icon from there), and every other host must have a
public address (:class:`FeedTrust`, built on discovery's
:class:`~feedstream.service.discover.PublicOnlyTransport`): a public feed cannot make
feedstream fetch from, and serve, an address of the private network.

With several ingest nodes (Redis), each looks for icons itself; the last one written wins.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from feedstream.core.backoff import backoff_delay
from feedstream.core.config import FeedConfig, ServerConfig
from feedstream.core.icons import (
    ICON_ACCEPT,
    MAX_ICON_BYTES,
    PAGE_ACCEPT,
    FeedHints,
    favicon_url,
    feed_hints,
    generated_icon,
    icon_etag,
    not_an_image,
    page_icons,
    site_root,
    sniff_image,
)
from feedstream.core.times import format_rfc3339
from feedstream.log.base import Offload
from feedstream.log.icons import IconRecord, IconStore
from feedstream.log.state import LogUnavailable
from feedstream.service.discover import PrivateAddressError, PublicOnlyTransport, Resolver
from feedstream.service.fetch import (
    FetchError,
    FetchResult,
    HostGate,
    RedirectError,
    TooLarge,
    fetch,
)
from feedstream.service.parsing import parse_in_worker, parse_within

logger = logging.getLogger(__name__)

__all__ = [
    "CONCURRENCY",
    "MAX_PAGE_BYTES",
    "REFRESH",
    "RETRY_BASE",
    "FeedTrust",
    "IconImage",
    "IconKeeper",
    "Icons",
]

REFRESH = 7 * 86400.0
"""Seconds between two looks at a feed's icon (+-10 %)."""
RETRY_BASE = 3600.0
"""After a failed look: this long, doubling with each failure up to :data:`REFRESH`."""
CONCURRENCY = 2
"""Feeds whose icon is looked for at once."""
MAX_PAGE_BYTES = 1 << 20
"""The most of a site's page read for its ``<link rel="icon">``."""
MIN_SLEEP, MAX_SLEEP = 1.0, 3600.0  # the keeper's idle wake-ups


@dataclass(frozen=True, slots=True)
class IconImage:
    """An icon as served: a stored image, or the generated one."""

    media_type: str
    etag: str
    body: bytes
    generated: bool


class Icons:
    """Every feed's icon record (read from the store on deliver nodes), and the icons."""

    def __init__(self) -> None:
        self.records: dict[str, IconRecord] = {}
        self.store: IconStore | None = None

    def attach(self, store: IconStore | None) -> None:
        self.store = store

    async def refresh(self) -> None:
        """Read the records again (a deliver node follows what the ingest side found)."""
        if self.store is None:
            return
        try:
            self.records = await self.store.icons()
        except LogUnavailable as exc:
            logger.debug("icons: cannot read the records: %s", exc)

    def etag(self, feed_id: str, title: str | None) -> tuple[str, bool]:
        """The ETag of the icon :meth:`image` would give now, and whether that icon is the
        generated one (no I/O)."""
        record = self.records.get(feed_id)
        if record is not None and record.media_type is not None and record.etag is not None:
            return record.etag, False
        return icon_etag(generated_icon(feed_id, title)), True

    async def image(self, feed_id: str, title: str | None) -> IconImage:
        """The stored image of *feed_id*, else its generated icon (labelled with *title*)."""
        record = self.records.get(feed_id)
        if record is not None and record.media_type is not None and self.store is not None:
            try:
                stored = await self.store.image(feed_id)
            except LogUnavailable:
                stored = None
            if stored is not None:
                return IconImage(stored.media_type, stored.etag, stored.body, generated=False)
        body = generated_icon(feed_id, title)
        return IconImage("image/svg+xml", icon_etag(body), body, generated=True)

    def status(self, feed: FeedConfig) -> dict[str, Any]:
        """The ``icon`` object of *feed* in ``/api/feeds``."""
        record = self.records.get(feed.id)
        if record is None or (feed.url is not None and record.feed_url != feed.url):
            record = IconRecord(feed.id, status="pending" if feed.url else "none")
        return {
            "status": record.status,
            "generated": record.media_type is None,
            "source": record.source,
            "url": record.url,
            "media_type": record.media_type,
            "checked": _time(record.checked),
            "next_check": _time(record.next_check),
            "failures": record.failures,
            "error": record.error,
        }


def _time(value: float | None) -> str | None:
    return None if value is None else format_rfc3339(value)


class FeedTrust(PublicOnlyTransport):
    """Requests to *trusted_host* (the feed's own) pass; any other host must be public.

    The inner transport is shared by every feed's client and closed by its owner: closing this
    one leaves it open.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        trusted_host: str | None,
        resolve: Resolver | None = None,
    ) -> None:
        super().__init__(inner, resolve)
        self._trusted = (trusted_host or "").lower()
        self.refusals = 0  # requests refused for a non-public address so far

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._trusted and request.url.host.lower() == self._trusted:
            return await self._inner.handle_async_request(request)
        try:
            return await super().handle_async_request(request)
        except PrivateAddressError:
            self.refusals += 1
            raise

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Found:
    source: str  # feed | page | favicon
    url: str
    media_type: str
    body: bytes


@dataclass(slots=True)
class _Search:
    """One look for a feed's icon: what was tried, what went wrong."""

    client: httpx.AsyncClient
    trust: FeedTrust
    feed: FeedConfig
    problems: list[str] = field(default_factory=list)
    transient: bool = False  # something failed that may work next time
    tried: set[str] = field(default_factory=set)


class IconKeeper:
    """Looks for every polled feed's icon, once and then every :data:`REFRESH` seconds.

    *feeds* gives the feeds as configured now (it follows reloads; :meth:`poke` after one).
    *transport* replaces the network (tests); *resolve* the resolver of :class:`FeedTrust`.
    """

    def __init__(
        self,
        icons: Icons,
        feeds: Callable[[], Sequence[FeedConfig]],
        server: ServerConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        resolve: Resolver | None = None,
        parse: Offload = parse_in_worker,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.icons = icons
        self._feeds = feeds
        self._transport = transport
        self._resolve = resolve
        self._parse = parse
        self._clock = clock
        self._jitter = jitter
        self._gate = HostGate(total=concurrency, per_host=1, gap=server.host_gap)
        self._limiter = trio.CapacityLimiter(concurrency)
        self._slots = trio.CapacityLimiter(1)  # one document parsed at a time, at most
        self._running: set[str] = set()
        self._wake = trio.Event()

    def poke(self) -> None:
        """Look at the feeds again now (after a reload: new feeds, changed URLs)."""
        self._wake.set()

    def due(self, feed: FeedConfig, now: float) -> float:
        """When *feed*'s icon is next looked for (Unix time; ``now`` or earlier: at once)."""
        record = self.icons.records.get(feed.id)
        if record is None or record.feed_url != feed.url or record.next_check is None:
            return now
        return record.next_check

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep every polled feed's icon fresh, until cancelled."""
        inner = self._transport or httpx.AsyncHTTPTransport()
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    now = self._clock()
                    soonest = now + MAX_SLEEP
                    for feed in self._feeds():
                        if feed.url is None or feed.id in self._running:
                            continue
                        due = self.due(feed, now)
                        if due <= now:
                            self._running.add(feed.id)
                            nursery.start_soon(self._job, feed, inner)
                        else:
                            soonest = min(soonest, due)
                    with trio.move_on_after(max(soonest - now, MIN_SLEEP)):
                        await self._wake.wait()
                    self._wake = trio.Event()
        finally:
            if self._transport is None:
                with trio.CancelScope(shield=True):
                    await inner.aclose()

    async def _job(self, feed: FeedConfig, inner: httpx.AsyncBaseTransport) -> None:
        try:
            async with self._limiter:
                await self.check(feed, inner)
        except Exception:  # a bug here must not take the server down
            logger.exception(
                "feed %s: looking for its icon failed", feed.id, extra={"feed": feed.id}
            )
            now = self._clock()
            previous = self.icons.records.get(feed.id) or IconRecord(feed.id)
            self.icons.records[feed.id] = replace(
                previous,
                feed_url=feed.url,
                status="error",
                checked=now,
                next_check=now + RETRY_BASE,
                failures=previous.failures + 1,
                error="internal error",
            )
        finally:
            self._running.discard(feed.id)

    async def check(
        self, feed: FeedConfig, inner: httpx.AsyncBaseTransport | None = None
    ) -> IconRecord:
        """Look for *feed*'s icon now, store what was found and return its record."""
        assert feed.url is not None, "push-only feeds have no icon to look for"
        base = inner or self._transport
        own = None
        if base is None:  # a call of its own (a test, a one-off check): its own connections
            base = own = httpx.AsyncHTTPTransport()
        trust = FeedTrust(base, urlsplit(feed.url).hostname, self._resolve)
        try:
            async with httpx.AsyncClient(transport=trust) as client:
                search = _Search(client, trust, feed)
                found = await self._search(search)
        finally:
            if own is not None:
                with trio.CancelScope(shield=True):
                    await own.aclose()
        now = self._clock()
        record = self._record(feed, search, found, now)
        body = found.body if found is not None else None
        if self.icons.store is not None:
            try:
                await self.icons.store.save(record, body)
            except LogUnavailable as exc:
                logger.warning(
                    "feed %s: icon not stored: %s", feed.id, exc, extra={"feed": feed.id}
                )
                record = replace(record, next_check=now + RETRY_BASE)
        self.icons.records[feed.id] = record
        if found is not None:
            logger.info(
                "feed %s: icon from %s %s (%s, %d bytes)",
                feed.id, found.source, found.url, found.media_type, len(found.body),
                extra={"feed": feed.id},
            )  # fmt: skip
        else:
            logger.info(
                "feed %s: no icon (%s): %s",
                feed.id, record.status, record.error,
                extra={"feed": feed.id},
            )  # fmt: skip
        return record

    def _record(
        self, feed: FeedConfig, search: _Search, found: _Found | None, now: float
    ) -> IconRecord:
        jitter = self._jitter()
        if found is not None:
            return IconRecord(
                feed.id,
                feed_url=feed.url,
                status="ok",
                source=found.source,
                url=found.url,
                media_type=found.media_type,
                etag=icon_etag(found.body),
                checked=now,
                next_check=now + REFRESH * (0.9 + 0.2 * jitter),
            )
        error = "; ".join(search.problems)[:1000] or None
        if not search.transient:
            return IconRecord(
                feed.id,
                feed_url=feed.url,
                status="none",
                checked=now,
                next_check=now + REFRESH * (0.9 + 0.2 * jitter),
                error=error,
            )
        previous = self.icons.records.get(feed.id)
        if previous is None or previous.feed_url != feed.url:
            previous = IconRecord(feed.id, feed_url=feed.url)
        failures = previous.failures + 1
        delay = backoff_delay(failures, jitter, base=RETRY_BASE, cap=REFRESH, spread=(0.9, 1.1))
        return replace(  # an image found before is kept, and served
            previous,
            status="error",
            checked=now,
            next_check=now + delay,
            failures=failures,
            error=error,
        )

    # -- looking -----------------------------------------------------------------------------

    async def _search(self, search: _Search) -> _Found | None:
        feed = search.feed
        assert feed.url is not None
        site = feed.url
        hints: FeedHints | None = None
        result = await self._get(search, "feed", feed.url, feed.limits.max_bytes, None)
        if result is not None:
            site = result.url
            hints = await parse_within(
                self._parse, self._slots, feed.limits, feed_hints,
                result.body, result.url, result.content_type,
            )  # fmt: skip
            if hints is None:
                search.problems.append("feed: reading it took too long")
            elif not hints.is_feed:
                search.problems.append("feed: not a feed")
        if hints is not None and hints.icon_url:
            found = await self._image(search, "feed", hints.icon_url)
            if found is not None:
                return found
        page = hints.site_url if hints is not None and hints.site_url else site_root(site)
        candidates: list[tuple[str, str]] = []
        result = await self._get(search, "page", page, MAX_PAGE_BYTES, PAGE_ACCEPT)
        if result is not None:
            page = result.url
            links = await parse_within(
                self._parse, self._slots, feed.limits, page_icons,
                result.body, result.url, result.content_type,
            )  # fmt: skip
            candidates += [("page", url) for url in links or ()]
        favicon = favicon_url(page)
        if favicon is not None:
            candidates.append(("favicon", favicon))
        for source, url in candidates:
            found = await self._image(search, source, url)
            if found is not None:
                return found
        return None

    async def _image(self, search: _Search, source: str, url: str) -> _Found | None:
        """*url* as an icon, if it answers 200 with an image of at most 256 KiB."""
        if url in search.tried:
            return None
        search.tried.add(url)
        result = await self._get(search, f"{source} icon", url, MAX_ICON_BYTES, ICON_ACCEPT)
        if result is None:
            return None
        media_type = sniff_image(result.body)
        if media_type is None:
            search.problems.append(f"{source} icon {url[:200]}: {not_an_image(result.body)}")
            return None
        return _Found(source, url, media_type, result.body)

    async def _get(
        self, search: _Search, what: str, url: str, max_bytes: int, accept: str | None
    ) -> FetchResult | None:
        """A 200 answer from *url*, or None with the problem noted."""
        feed = search.feed
        limits = replace(feed.limits, max_bytes=min(max_bytes, feed.limits.max_bytes))
        where = what if what == "feed" else f"{what} {url[:200]}"
        refusals = search.trust.refusals
        try:
            async with self._gate.slot(url):
                if accept is None:
                    result = await fetch(search.client, url, limits)
                else:
                    result = await fetch(search.client, url, limits, accept=accept)
        except TooLarge:
            search.problems.append(f"{where}: over the {limits.max_bytes // 1024} KiB limit")
            return None
        except FetchError as exc:
            if search.trust.refusals > refusals:
                search.problems.append(f"{where}: refused, not a public address")
                return None  # not a failure that passes: no retry sooner than weekly
            search.problems.append(f"{where}: {exc}")
            search.transient |= not isinstance(exc, RedirectError)
            return None
        if result.status != 200:
            search.problems.append(f"{where}: {_status(result.status)}")
            search.transient |= result.status >= 500 or result.status in (408, 429)
            return None
        return result


def _status(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"
