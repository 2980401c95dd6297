"""Feed discovery: from a website's address to the feeds it really has.

:func:`explore` fetches the page, and:

* when the page is a feed itself (it parses as one), offers it as it is: no page parsing;
* otherwise reads the feeds the page names (:func:`feedstream.core.feedlinks.candidate_links`:
  ``<link rel="alternate">``, else the common paths such as ``/feed``), and **fetches and
  parses every one before offering it**. Only a candidate that answered 200 and parsed as a
  feed without error is offered: a "not found" page answered with 200 at ``/feed``, an HTML
  page, a WordPress REST ``application/json`` link are reported with the reason, never offered.

Each :class:`Candidate` says where the feed answered after redirects, its format, title, entry
count, newest entry date and WebSub hub (from the feed's links or its ``Link`` header). Two
candidates that end at the same feed (``/feed`` redirecting to ``/feed/``) are offered once.

Fetching reuses the server's machinery unchanged: :func:`feedstream.service.fetch.fetch` (size
cap after decompression, one deadline, every redirect hop checked and bounded) under a
:class:`~feedstream.service.fetch.HostGate` (global and per-host concurrency, the gap between
requests to one host), with at most *concurrency* candidates in flight. Parsing runs in worker
processes under ``parse_timeout``, as for polled feeds.

Private addresses. The fetcher itself has no address rule (the server polls whatever the
operator configured, loopback included). Discovery fetches URLs that come from pages and OPML
files, so unless ``allow_private`` is set every request, redirect hops included, goes through
:class:`PublicOnlyTransport`, which resolves the host and refuses loopback, private, link-local,
shared, reserved and multicast addresses before connecting. The check resolves the name once
and the connection resolves it again, so a DNS server that answers differently the second time
(rebinding) is not stopped; an endpoint serving untrusted users should pin the address too.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

import httpx
import trio

from feedstream.core.config import FeedConfig, FetchLimits, ServerConfig
from feedstream.core.feedlinks import FeedLink, candidate_links
from feedstream.core.normalize import ParsedFeed
from feedstream.core.opml import url_key
from feedstream.core.urls import is_http_url
from feedstream.log.base import Offload
from feedstream.service.fetch import FetchError, FetchResult, HostGate, fetch
from feedstream.service.ingest import Ingestor
from feedstream.service.parsing import examine, parse_in_worker, parse_slots, parse_within
from feedstream.websub.discovery import Discovery

logger = logging.getLogger(__name__)

__all__ = [
    "CONCURRENCY",
    "Candidate",
    "PrivateAddressError",
    "PublicOnlyTransport",
    "Report",
    "Resolver",
    "discover",
    "explore",
    "host_gate",
    "is_public_address",
]

CONCURRENCY = 4
"""Candidates fetched at once by default (the host gate limits them per host too)."""

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``: how :class:`PublicOnlyTransport` resolves a name."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A URL that was tried as a feed, and what came back. Offered only when :attr:`ok`."""

    url: str  # where it answered, after redirects
    link: str  # the URL as asked for, named by the page or guessed
    source: str  # "self": the address itself; "link": named by the page; "guess": common path
    status: int | None = None
    format: str | None = None  # atom | rss | rdf | json
    title: str | None = None
    entry_count: int | None = None
    newest_entry: str | None = None  # RFC 3339: the latest published or updated date
    hub: str | None = None  # the first WebSub hub
    error: str | None = None  # why it is not offered

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "link": self.link,
            "source": self.source,
            "status": self.status,
            "format": self.format,
            "title": self.title,
            "entries": self.entry_count,
            "newest": self.newest_entry,
            "hub": self.hub,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Report:
    """Everything :func:`explore` tried for one address."""

    url: str
    page_url: str | None = None  # where the page answered, after redirects
    candidates: tuple[Candidate, ...] = ()  # every candidate tried, offered or not, in order
    error: str | None = None  # the page itself could not be had

    @property
    def offered(self) -> list[Candidate]:
        return [candidate for candidate in self.candidates if candidate.ok]


# -- private addresses ---------------------------------------------------------------------------


class PrivateAddressError(httpx.ConnectError):
    """The host resolves to an address discovery may not contact."""


def is_public_address(address: str) -> bool:
    """Whether *address* (an IPv4 or IPv6 literal) is a globally routed unicast address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _system_resolve(host: str, port: int) -> list[str]:
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    except OSError as exc:
        raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
    return [str(info[4][0]) for info in infos]


class PublicOnlyTransport(httpx.AsyncBaseTransport):
    """Refuses requests to hosts with a non-public address; passes the others to *inner*."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport | None = None, resolve: Resolver | None = None
    ) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()
        self._resolve = resolve or _system_resolve

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        addresses = await self._resolve(host, port)
        if not addresses:
            raise httpx.ConnectError(f"cannot resolve {host}", request=request)
        for address in addresses:
            if not is_public_address(address):
                raise PrivateAddressError(
                    f"refusing {host}: {address} is not a public address "
                    "(allow private addresses to fetch it)",
                    request=request,
                )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


# -- the worker's part -----------------------------------------------------------------------------


def read_page(
    body: bytes, feed: FeedConfig, content_type: str | None, url: str, headers: Mapping[str, str]
) -> tuple[ParsedFeed, Discovery | None, list[FeedLink]]:
    """A fetched page as a feed (when it is one), else the links it names: one worker trip."""
    parsed, discovery = examine(body, feed, content_type, url, "poll", headers)
    if parsed.error is None:
        return parsed, discovery, []
    return parsed, discovery, candidate_links(body, url, content_type)


# -- the shell ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    client: httpx.AsyncClient
    gate: HostGate
    limits: FetchLimits
    ingestor: Ingestor
    parse: Offload
    slots: trio.CapacityLimiter


async def explore(
    url: str,
    *,
    limits: FetchLimits | None = None,
    server: ServerConfig | None = None,
    gate: HostGate | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    allow_private: bool = False,
    resolve: Resolver | None = None,
    parse: Offload = parse_in_worker,
    concurrency: int = CONCURRENCY,
) -> Report:
    """Find and check the feeds of the page at *url* (see the module docstring).

    *limits* are the fetch limits (default: the config's defaults), *server* gives the host
    gate's politeness settings (``max_fetches``, ``per_host_fetches``, ``host_gap``); pass a
    *gate* to share one between several calls (an import discovering many sites).
    *transport* replaces the network (tests); unless *allow_private*, it is wrapped in
    :class:`PublicOnlyTransport` with *resolve* (default: the system resolver).
    """
    url = url.strip()
    if not is_http_url(url):
        return Report(url, error="not an absolute http:// or https:// URL")
    limits = limits or FetchLimits()
    server = server or ServerConfig()
    if not allow_private:
        transport = PublicOnlyTransport(transport, resolve)
    slots = parse_slots()
    async with httpx.AsyncClient(transport=transport) as client:
        context = _Context(
            client=client,
            gate=gate or host_gate(server),
            limits=limits,
            ingestor=Ingestor(None, parse=parse, slots=slots),
            parse=parse,
            slots=slots,
        )
        return await _explore(context, url, max(1, concurrency))


def host_gate(server: ServerConfig) -> HostGate:
    """The politeness the server's own polling has, for discovery."""
    return HostGate(total=server.max_fetches, per_host=server.per_host_fetches, gap=server.host_gap)


async def discover(url: str, **options: Any) -> list[Candidate]:
    """The feeds offered at *url*: :func:`explore`'s candidates that are feeds, best first."""
    return (await explore(url, **options)).offered


async def _explore(context: _Context, url: str, concurrency: int) -> Report:
    try:
        result = await _fetch(context, url)
    except FetchError as exc:
        return Report(url, error=f"cannot fetch the page: {exc}")
    if result.status != 200:
        return Report(url, page_url=result.url, error=f"the page answered {_status(result.status)}")
    feed = FeedConfig(id="discover", url=result.url, limits=context.limits)
    args = (result.body, feed, result.content_type, result.url, result.headers)
    read = await parse_within(context.parse, context.slots, context.limits, read_page, *args)
    if read is None:
        return Report(url, page_url=result.url, error="reading the page took too long")
    parsed, discovery, links = read
    if parsed.error is None:  # the address is a feed itself
        candidate = _candidate(FeedLink(url, source="self"), result, parsed, discovery)
        return Report(url, page_url=result.url, candidates=(candidate,))
    found: list[Candidate | None] = [None] * len(links)
    limiter = trio.CapacityLimiter(concurrency)

    async def check(index: int, link: FeedLink) -> None:
        async with limiter:
            found[index] = await _check(context, link)

    async with trio.open_nursery() as nursery:
        for index, link in enumerate(links):
            nursery.start_soon(check, index, link)
    candidates = _unique(candidate for candidate in found if candidate is not None)
    return Report(url, page_url=result.url, candidates=tuple(candidates))


async def _fetch(context: _Context, url: str) -> FetchResult:
    async with context.gate.slot(url):
        return await fetch(context.client, url, context.limits)


async def _check(context: _Context, link: FeedLink) -> Candidate:
    """Fetch and parse one candidate."""
    try:
        result = await _fetch(context, link.url)
    except FetchError as exc:
        return Candidate(link.url, link.url, link.source, error=str(exc) or type(exc).__name__)
    if result.status != 200:
        return Candidate(
            result.url, link.url, link.source, result.status, error=_status(result.status)
        )
    feed = FeedConfig(id="discover", url=result.url, limits=context.limits)
    parsed, discovery = await context.ingestor.examine(
        feed,
        result.body,
        content_type=result.content_type,
        via="poll",
        url=result.url,
        headers=result.headers,
    )
    return _candidate(link, result, parsed, discovery)


def _candidate(
    link: FeedLink, result: FetchResult, parsed: ParsedFeed, discovery: Discovery | None
) -> Candidate:
    candidate = Candidate(result.url, link.url, link.source, result.status, title=link.title)
    if parsed.error is not None:
        return replace(candidate, error=parsed.error)
    hubs = discovery.hub_urls if discovery is not None else parsed.hubs
    return replace(
        candidate,
        format=parsed.format,
        title=parsed.title or link.title,
        entry_count=len(parsed.entries),
        newest_entry=_newest(parsed.entries),
        hub=hubs[0] if hubs else None,
    )


def _newest(entries: Iterable[Mapping[str, Any]]) -> str | None:
    dates = [
        value
        for entry in entries
        for value in (entry.get("published"), entry.get("updated"))
        if isinstance(value, str) and value
    ]
    return max(dates) if dates else None  # "YYYY-MM-DDTHH:MM:SSZ": text order is time order


def _status(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _unique(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Offered candidates that end at the same feed are offered once (the first named)."""
    seen: set[str] = set()
    kept: list[Candidate] = []
    for candidate in candidates:
        if candidate.ok:
            key = url_key(candidate.url)
            if key in seen:
                continue
            seen.add(key)
        kept.append(candidate)
    return kept
