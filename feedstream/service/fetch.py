"""Fetching a feed over HTTP: a thin trio/httpx shell with hard limits.

:func:`fetch` does one conditional GET, following redirects itself so that every hop is checked
(http/https only, a bounded number, no loops) and permanent redirects are reported. The body is
streamed and counted *after* decompression, so a gzip bomb stops at ``max_bytes``; the whole
fetch, connect to last byte, runs under one deadline, so a server that dribbles a byte a second
is cut off. :class:`HostGate` keeps the crawler polite: a global cap on concurrent fetches, a
per-host cap, a minimum gap between requests to one host, and host-wide pauses (Retry-After).

Exceptions::

    FetchError            anything that kept us from getting a response body
    ├── FetchTimeout      connect, read or total deadline passed
    ├── NetworkError      DNS, refused, reset, TLS, broken compression
    ├── TooLarge          the decompressed body passed max_bytes
    └── RedirectError     too many hops, a loop, a non-http(s) target, no Location
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import brotli
import httpx
import trio

from feedstream.core.config import FetchLimits
from feedstream.core.urls import MAX_URL_CHARS, is_http_url

logger = logging.getLogger(__name__)

__all__ = [
    "ACCEPT",
    "FETCH_ERROR_KINDS",
    "FetchError",
    "FetchResult",
    "FetchTimeout",
    "HostGate",
    "NetworkError",
    "RedirectError",
    "TooLarge",
    "fetch",
    "fetch_error_kind",
    "host_of",
]

ACCEPT = (
    "application/atom+xml, application/rss+xml, application/feed+json, application/rdf+xml;q=0.9, "
    "application/json;q=0.8, application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1"
)
_REDIRECTS = {301, 302, 303, 307, 308}
_PERMANENT = {301, 308}


class FetchError(Exception):
    """A fetch failed before a complete response body was in hand."""


class FetchTimeout(FetchError):
    pass


class NetworkError(FetchError):
    pass


class TooLarge(FetchError):
    pass


class RedirectError(FetchError):
    pass


FETCH_ERROR_KINDS: tuple[tuple[type[FetchError], str], ...] = (
    (FetchTimeout, "timeout"),
    (TooLarge, "too_large"),
    (RedirectError, "bad_redirect"),
    (NetworkError, "network_error"),
)
"""Each kind of failed fetch and its one word, most specific first."""


def fetch_error_kind(error: FetchError) -> str:
    """One word for why a fetch failed: a word of :data:`FETCH_ERROR_KINDS`, else ``error``.

    The only classification of fetch failures: the ``outcome`` label of the fetch metric
    (:func:`feedstream.service.stats.fetch_outcome`) and ``feedstream check``'s report
    both start from it, so the two always agree on what went wrong.
    """
    return next((kind for cls, kind in FETCH_ERROR_KINDS if isinstance(error, cls)), "error")


@dataclass(frozen=True, slots=True)
class FetchResult:
    status: int
    url: str  # the URL that answered, after redirects
    headers: dict[str, str]  # lower-case names
    body: bytes
    permanent_url: str | None = None  # where the leading permanent redirects (301/308) lead
    redirects: tuple[int, ...] = field(default=())

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or ''}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _check_url(url: str) -> None:
    """Refuse what :func:`feedstream.core.urls.is_http_url` refuses, before any request."""
    if not is_http_url(url):
        raise RedirectError(
            f"refusing to fetch {url[:200]!r}: only http and https URLs "
            f"of at most {MAX_URL_CHARS} characters"
        )


async def fetch(
    client: httpx.AsyncClient,
    url: str,
    limits: FetchLimits,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    accept: str = ACCEPT,
) -> FetchResult:
    """GET *url* once (conditionally when *etag* / *last_modified* are given); *accept* is the
    Accept header (feed types by default; icons and pages ask for theirs)."""
    headers = {
        "User-Agent": limits.user_agent,
        "Accept": accept,
        "Accept-Encoding": ACCEPT_ENCODING,
    }
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        with trio.fail_after(limits.timeout):
            return await _follow(client, url, headers, limits)
    except trio.TooSlowError:
        raise FetchTimeout(f"no complete answer within {limits.timeout:g} s") from None
    except httpx.TimeoutException as exc:
        raise FetchTimeout(f"timed out ({type(exc).__name__})") from None
    except httpx.DecodingError as exc:
        raise NetworkError(f"broken content encoding: {exc}") from None
    except httpx.TransportError as exc:
        raise NetworkError(
            f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        ) from None
    except httpx.InvalidURL as exc:
        raise RedirectError(f"invalid URL: {exc}") from None


async def _follow(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    limits: FetchLimits,
) -> FetchResult:
    timeout = httpx.Timeout(limits.timeout, connect=limits.connect_timeout)
    seen = {url}
    hops: list[int] = []
    permanent_url: str | None = None
    while True:
        _check_url(url)
        request = client.build_request("GET", url, headers=headers, timeout=timeout)
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if response.status_code in _REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise RedirectError(f"{response.status_code} without a Location header")
                target = urljoin(url, location.strip())
                if len(hops) >= limits.max_redirects:
                    raise RedirectError(f"more than {limits.max_redirects} redirects")
                if target in seen:
                    raise RedirectError(f"redirect loop at {target[:200]}")
                _check_url(target)
                if response.status_code in _PERMANENT and all(h in _PERMANENT for h in hops):
                    permanent_url = target
                hops.append(response.status_code)
                seen.add(target)
                url = target
                continue
            body = await _read_capped(response, limits.max_bytes)
        finally:
            await response.aclose()
        return FetchResult(
            status=response.status_code,
            url=url,
            headers={k.lower(): v for k, v in response.headers.items()},
            body=body,
            permanent_url=permanent_url,
            redirects=tuple(hops),
        )


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The body, decompressed by us in bounded pieces so that a bomb stops at *max_bytes*.

    httpx would inflate each network read in one call (a few hundred bytes of stacked gzip can
    become hundreds of MiB); here no single step produces more than :data:`PIECE` bytes.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:  # compressed or not, it is too big
        raise TooLarge(f"body of {int(declared)} bytes is over the {max_bytes}-byte limit")
    decoder = _decoder(response.headers.get("content-encoding", ""))
    chunks: list[bytes] = []
    total = 0
    try:
        async for raw in _raw_stream(response):
            for piece in decoder(raw):
                total += len(piece)
                if total > max_bytes:
                    raise TooLarge(f"body is over the {max_bytes}-byte limit (after decompression)")
                chunks.append(piece)
    except (zlib.error, brotli.error) as exc:
        raise NetworkError(f"broken content encoding: {exc}") from None
    return b"".join(chunks)


def _raw_stream(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's bytes as the transport delivers them, still content-encoded.

    This is the stream ``Response.aiter_raw`` reads, taken directly: a response that httpx
    built in memory (``httpx.Response(content=...)``, as an ASGI app, a proxy or a test
    transport may hand back) has already been read into ``.content`` once, and ``aiter_raw``
    would refuse it, although its byte stream can be read again. Reading the stream itself
    treats every response alike, so the same bounded decoding applies to all of them.
    """
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise NetworkError("the HTTP client gave a synchronous body stream")
    return stream.__aiter__()


PIECE = 64 * 1024  # the most one decompression step may produce
ACCEPT_ENCODING = "gzip, deflate, br"


def _decoder(header: str) -> Callable[[bytes], Iterator[bytes]]:
    """A function turning raw body chunks into decoded pieces of at most :data:`PIECE` bytes."""
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return lambda raw: iter((raw,))
    if len(codings) > 1:
        raise NetworkError(f"refusing stacked Content-Encoding {header[:100]!r}")
    coding = codings[0]
    if coding in ("gzip", "x-gzip"):
        return _inflate(zlib.decompressobj(16 + zlib.MAX_WBITS))
    if coding == "deflate":
        return _inflate_deflate()
    if coding == "br":
        return _unbrotli(brotli.Decompressor())
    raise NetworkError(f"unsupported Content-Encoding {coding[:50]!r}")


def _inflate(inflater: Any) -> Callable[[bytes], Iterator[bytes]]:
    def pieces(raw: bytes) -> Iterator[bytes]:
        yield inflater.decompress(raw, PIECE)
        yield from _drain(inflater)

    return pieces


def _drain(inflater: Any) -> Iterator[bytes]:
    while inflater.unconsumed_tail:
        yield inflater.decompress(inflater.unconsumed_tail, PIECE)


def _inflate_deflate() -> Callable[[bytes], Iterator[bytes]]:
    """``deflate`` as servers send it: zlib-wrapped as the RFC says, or raw as some do."""
    inflaters: list[Any] = []

    def pieces(raw: bytes) -> Iterator[bytes]:
        if not inflaters:  # the first bytes tell which of the two it is
            inflaters.append(zlib.decompressobj())
            try:
                first = inflaters[0].decompress(raw, PIECE)
            except zlib.error:
                inflaters[0] = zlib.decompressobj(-zlib.MAX_WBITS)
                first = inflaters[0].decompress(raw, PIECE)
            yield first
            yield from _drain(inflaters[0])
        else:
            yield from _inflate(inflaters[0])(raw)

    return pieces


def _unbrotli(decompressor: Any) -> Callable[[bytes], Iterator[bytes]]:
    def pieces(raw: bytes) -> Iterator[bytes]:
        yield decompressor.process(raw, output_buffer_limit=PIECE)
        while not decompressor.can_accept_more_data():
            yield decompressor.process(b"", output_buffer_limit=PIECE)

    return pieces


class HostGate:
    """Politeness: global and per-host concurrency, a gap between requests, host pauses."""

    def __init__(self, *, total: int, per_host: int, gap: float) -> None:
        self._total = trio.CapacityLimiter(total)
        self._per_host = per_host
        self._gap = gap
        self._hosts: dict[str, trio.Semaphore] = {}
        self._next_start: dict[str, float] = {}
        self._paused_until: dict[str, float] = {}

    def pause(self, url: str, seconds: float) -> None:
        """No request to *url*'s host for *seconds* (Retry-After), for every feed there."""
        host = host_of(url)
        until = trio.current_time() + seconds
        self._paused_until[host] = max(self._paused_until.get(host, -math.inf), until)
        logger.info("host %s paused for %.0f s", host, seconds, extra={"host": host})

    @asynccontextmanager
    async def slot(self, url: str) -> AsyncIterator[None]:
        """Wait for *url*'s host to be free, then hold one of the global fetch slots.

        Waiting out a pause or a gap holds only the host's own semaphore, never a global
        slot: a paused host cannot starve the feeds of every other host.
        """
        host = host_of(url)
        semaphore = self._hosts.setdefault(host, trio.Semaphore(self._per_host))
        async with semaphore:
            while True:
                now = trio.current_time()
                start = max(self._next_start.get(host, now), self._paused_until.get(host, now))
                if start <= now:
                    break
                await trio.sleep_until(start)
            self._next_start[host] = now + self._gap
            async with self._total:
                yield
