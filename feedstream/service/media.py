"""The media proxy, the shell: signed image URLs fetched, checked, cached on disk and served.

:class:`MediaProxy` is what ``GET /media/<signature>/<encoded url>`` asks
(:mod:`feedstream.web.media`); :mod:`feedstream.core.media` decides everything that needs no
I/O (signatures, rewriting, sniffing, headers). The runtime starts :meth:`MediaProxy.run` on
every role when ``[server] proxy_media = true``: it reads the ``media_key`` from the store's
secrets (:mod:`feedstream.log.secrets`, created once) and hands back the
:class:`~feedstream.core.media.MediaSigner` the ingest path rewrites entries with.

A request, in order:

1. the signature is checked (403 otherwise): only URLs this server wrote are ever fetched;
2. ``If-None-Match`` matching the cached image's ETag: ``304``, no disk read;
3. the disk cache (``data_dir/media/``): a hit is read in a worker thread;
4. a failure remembered for that URL (:data:`FAILURE_TTL`, :data:`TRANSIENT_TTL` for 5xx):
   answered again without a request upstream;
5. otherwise one fetch per URL, however many requests ask at once: the first starts it as a task
   of the proxy's own (a browser that goes away does not cancel it), the others wait for it.

Fetching. :func:`feedstream.service.fetch.fetch` (redirects followed by hand, each hop checked,
at most ``max_redirects``; the body streamed and cut off at ``media_max_bytes`` after
decompression; one deadline) with the default feed limits (:class:`FetchLimits`) but the size,
under a :class:`~feedstream.service.fetch.HostGate` of :data:`CONCURRENCY` fetches at once
(:data:`PER_HOST` per host, no gap: a page shows several images of one host at once); a request
that waits :data:`QUEUE_WAIT` seconds for a slot gets 503. Every request goes through
:class:`~feedstream.service.hub.PinnedTransport`: the host is resolved once, every address must
be public (no loopback, private, link-local, shared, multicast or reserved address) unless
``media_allow_private``, and the connection goes to the checked address, so neither a redirect
nor DNS rebinding reaches the private network. A fetch opens connections of its own and keeps
none (a connection made to the address checked for one host never carries a request for
another host behind the same address; the TLS context is made once). No cookie is kept or sent
(a jar that refuses every cookie), no ``Referer`` and nothing of the browser's request is
forwarded, and the environment's proxy settings are ignored (they would bypass the pinning).
Only a ``200`` whose bytes are an image (:func:`~feedstream.core.media.sniff_media`) is
served; SVG is refused.

The cache (:class:`MediaCache`): one file per URL (``<sha256 of the URL>``: a header line with
the media type and the ETag, then the bytes), written under a temporary name and renamed. An
index in memory (size, type, ETag, least recently used first) is built from the directory at
start (file times give the order: a hit touches its file). Past ``media_cache_bytes`` the least
recently used files are deleted (in a worker thread) until the cache fits. After a store, the
directory is read again when the last read is :data:`RESCAN_INTERVAL` seconds old, so that the
files other processes sharing ``data_dir`` wrote (``--workers``) count against the cap too. An
image larger than the cap is served but not kept.
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import logging
import math
import os
import re
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from feedstream.core.config import FetchLimits, ServerConfig
from feedstream.core.icons import etag_matches
from feedstream.core.media import (
    MEDIA_ACCEPT,
    MEDIA_TYPES,
    MediaRefused,
    MediaSigner,
    media_etag,
    media_refusal,
    sniff_media,
)
from feedstream.log.base import Offload
from feedstream.log.secrets import SecretStore
from feedstream.service.discover import Resolver
from feedstream.service.fetch import (
    FetchError,
    FetchResult,
    FetchTimeout,
    HostGate,
    TooLarge,
    fetch,
    fetch_error_kind,
)
from feedstream.service.hub import PinnedTransport, PrivateCallbackError

logger = logging.getLogger(__name__)

__all__ = [
    "CONCURRENCY",
    "FAILURE_TTL",
    "KEY_NAME",
    "PER_HOST",
    "QUEUE_WAIT",
    "RESCAN_INTERVAL",
    "TRANSIENT_TTL",
    "Cached",
    "MediaAnswer",
    "MediaCache",
    "MediaProxy",
    "MediaStats",
]

KEY_NAME = "media_key"
"""The secret the signatures are made with (see :mod:`feedstream.log.secrets`)."""
CONCURRENCY = 8
"""Upstream fetches at once, every host together."""
PER_HOST = 4
"""Upstream fetches at once to one host."""
QUEUE_WAIT = 10.0
"""Seconds a fetch may wait for a slot; then 503 (``busy``)."""
FAILURE_TTL = 600.0
"""Seconds a refusal (not an image, too large, private, 404) is answered from memory."""
TRANSIENT_TTL = 60.0
"""The same for a failure that may pass (5xx, timeout, network)."""
FAILURES_KEPT = 4096
"""Refusals remembered at most (the oldest go first)."""
RESCAN_INTERVAL = 60.0
"""Seconds between two reads of the cache directory before evicting (files of others)."""
STALE_TEMPORARY = 3600.0
"""A temporary file older than this (a process died writing it) is removed by a scan."""

_KEY = re.compile(r"[0-9a-f]{64}")
_TEMPORARY = ".tmp-"
_HEADER_MAX = 200  # bytes: "<media type> <etag>\n"


@dataclass(frozen=True, slots=True)
class MediaAnswer:
    """An image to send (``body``), or ``304 Not Modified`` (``body`` None)."""

    etag: str
    media_type: str | None = None
    body: bytes | None = None


@dataclass(slots=True)
class MediaStats:
    """The proxy's figures since start, for ``/metrics``."""

    hits: int = 0  # answered from the disk cache
    misses: int = 0  # fetches upstream (one per URL, whatever the number of requests waiting)
    shared: int = 0  # requests that waited for a fetch another request started
    not_modified: int = 0  # 304 answers
    refusals: Counter[str] = field(default_factory=Counter)  # by MediaRefused.kind


# -- the disk cache -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cached:
    """One cached image, as the index knows it."""

    size: int  # bytes on disk, header included
    media_type: str
    etag: str


class MediaCache:
    """``data_dir/media/``: one file per image, at most *cap* bytes (see the module docstring).

    File I/O runs through *offload*; *clock* (seconds) spaces the directory reads.
    """

    def __init__(
        self,
        directory: Path,
        cap: int,
        offload: Offload,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.cap = cap
        self._offload = offload
        self._clock = clock
        self._index: OrderedDict[str, Cached] = OrderedDict()  # least recently used first
        self.bytes = 0
        self._scanned = -math.inf
        self._evicting = trio.Lock()

    @property
    def files(self) -> int:
        return len(self._index)

    def keys(self) -> list[str]:
        """The cached keys, least recently used first."""
        return list(self._index)

    async def open(self) -> None:
        """Create the directory and index what it holds."""
        await self._offload(_make_directory, self.directory)
        await self._rescan()

    def peek(self, key: str) -> Cached | None:
        """What the index holds for *key* (no I/O); a use of it."""
        cached = self._index.get(key)
        if cached is not None:
            self._index.move_to_end(key)
        return cached

    async def read(self, key: str) -> tuple[Cached, bytes] | None:
        """The cached image of *key*, also one another process wrote; None if there is none."""
        found: tuple[Cached, bytes] | None = await self._offload(_read_file, self._path(key))
        if found is None:
            self._forget(key)
            return None
        self._put(key, found[0])
        return found

    async def store(self, key: str, media_type: str, body: bytes) -> Cached:
        """Keep *body* (evicting what no longer fits) and return how it is indexed; an image
        over the cap is not kept. Raises ``OSError`` when the disk refuses."""
        if len(body) + _HEADER_MAX > self.cap:
            etag: str = await self._offload(media_etag, body)
            return Cached(len(body), media_type, etag)
        cached: Cached = await self._offload(_write_file, self.directory, key, media_type, body)
        self._put(key, cached)
        if self.bytes > self.cap or self._clock() - self._scanned >= RESCAN_INTERVAL:
            await self._evict(keep=key)
        return cached

    def _path(self, key: str) -> Path:
        return self.directory / key

    def _put(self, key: str, cached: Cached) -> None:
        self._forget(key)
        self._index[key] = cached
        self.bytes += cached.size

    def _forget(self, key: str) -> None:
        old = self._index.pop(key, None)
        if old is not None:
            self.bytes -= old.size

    async def _rescan(self) -> None:
        found: list[tuple[str, Cached]] = await self._offload(_scan, self.directory)
        self._index = OrderedDict(found)
        self.bytes = sum(cached.size for cached in self._index.values())
        self._scanned = self._clock()

    async def _evict(self, keep: str) -> None:
        """Delete the least recently used files (never *keep*, the one just stored) until the
        cache fits, after reading the directory again if that is due."""
        async with self._evicting:
            if self._clock() - self._scanned >= RESCAN_INTERVAL:
                kept = self._index.get(keep)
                await self._rescan()  # what other processes wrote counts too
                if kept is not None:
                    self._put(keep, kept)  # the newest, whatever the file times say
            victims: list[str] = []
            for key in list(self._index):
                if self.bytes <= self.cap:
                    break
                if key != keep:
                    self._forget(key)
                    victims.append(key)
            if victims:
                await self._offload(_remove_files, self.directory, victims)
                left = self.bytes
                logger.debug("media cache: evicted %d files, %d bytes left", len(victims), left)


def _make_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def _header(data: bytes) -> tuple[str, str, int] | None:
    """The media type, ETag and body offset of a cache file's bytes (None: not one)."""
    end = data.find(b"\n", 0, _HEADER_MAX)
    if end < 0:
        return None
    media_type, _, etag = data[:end].decode("ascii", "replace").partition(" ")
    if media_type not in MEDIA_TYPES or not etag.startswith('"'):
        return None
    return media_type, etag, end + 1


def _read_file(path: Path) -> tuple[Cached, bytes] | None:
    try:
        data = path.read_bytes()
        os.utime(path)  # the file's time is its last use (the order after a restart)
    except FileNotFoundError:
        return None
    header = _header(data)
    if header is None:
        path.unlink(missing_ok=True)
        return None
    media_type, etag, start = header
    return Cached(len(data), media_type, etag), data[start:]


def _write_file(directory: Path, key: str, media_type: str, body: bytes) -> Cached:
    etag = media_etag(body)
    header = f"{media_type} {etag}\n".encode("ascii")
    temporary = directory / f"{_TEMPORARY}{key[:16]}-{os.urandom(4).hex()}"
    try:
        with temporary.open("wb") as file:
            file.write(header)
            file.write(body)
        os.replace(temporary, directory / key)
    finally:
        temporary.unlink(missing_ok=True)
    return Cached(len(header) + len(body), media_type, etag)


def _remove_files(directory: Path, keys: list[str]) -> None:
    for key in keys:
        (directory / key).unlink(missing_ok=True)


def _scan(directory: Path) -> list[tuple[str, Cached]]:
    """Every cache file of *directory*, least recently used first; stale temporary files and
    files that are not the cache's are removed."""
    found: list[tuple[float, str, Cached]] = []
    now = time.time()
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                info = entry.stat()
                if entry.name.startswith(_TEMPORARY):
                    if now - info.st_mtime > STALE_TEMPORARY:
                        os.unlink(entry.path)
                    continue
                if not _KEY.fullmatch(entry.name) or not entry.is_file():
                    continue
                with open(entry.path, "rb") as file:
                    header = _header(file.read(_HEADER_MAX))
                if header is None:
                    os.unlink(entry.path)
                    continue
            except FileNotFoundError:  # removed meanwhile, by another process
                continue
            media_type, etag, _ = header
            found.append((info.st_mtime, entry.name, Cached(info.st_size, media_type, etag)))
    found.sort(key=lambda item: item[0])
    return [(key, cached) for _, key, cached in found]


# -- fetching -------------------------------------------------------------------------------------


def _no_cookies() -> http.cookiejar.CookieJar:
    """A cookie jar that keeps nothing: a cookie set by one hop is never sent to the next."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class _Pinned(PinnedTransport):
    """:class:`PinnedTransport` for one fetch: it notes a refused address, and closes *inner*
    only if it *owns* it (a test's transport is shared by every fetch)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        owns: bool,
        allow_private: bool,
        resolve: Resolver | None,
    ) -> None:
        super().__init__(inner, allow_private=allow_private, resolve=resolve)
        self.refused: str | None = None
        self._owns = owns

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except PrivateCallbackError as exc:
            self.refused = str(exc)
            raise

    async def aclose(self) -> None:
        if self._owns and self._inner is not None:
            with trio.CancelScope(shield=True):
                await self._inner.aclose()


#: A fetch's own connections are never kept: a connection made to the address checked for one
#: host must not carry a request for another host that shares that address.
_NO_KEEPALIVE = httpx.Limits(max_connections=None, max_keepalive_connections=0)


@dataclass(slots=True)
class _Flight:
    """One fetch of a URL, which every request for it waits for."""

    done: trio.Event = field(default_factory=trio.Event)
    answer: MediaAnswer | None = None
    error: MediaRefused | None = None


def _copy(refused: MediaRefused) -> MediaRefused:
    """A fresh exception for each request (one instance raised in several tasks would gather
    their tracebacks)."""
    return MediaRefused(refused.status, refused.reason, refused.kind)


class MediaProxy:
    """Answers ``/media/`` requests (see the module docstring).

    *transport* replaces the network (tests; it is wrapped in the pinning transport all the
    same), *resolve* the resolver of :class:`PinnedTransport`; *offload* runs the file I/O;
    *clock* (seconds, trio's by default) times the remembered failures.
    """

    def __init__(
        self,
        server: ServerConfig,
        *,
        offload: Offload = trio.to_thread.run_sync,
        transport: httpx.AsyncBaseTransport | None = None,
        resolve: Resolver | None = None,
        clock: Callable[[], float] = trio.current_time,
        concurrency: int = CONCURRENCY,
        per_host: int = PER_HOST,
    ) -> None:
        self.limits = FetchLimits(max_bytes=server.media_max_bytes)
        self.allow_private = server.media_allow_private
        self.cache = MediaCache(server.data_dir / "media", server.media_cache_bytes, offload)
        self.stats = MediaStats()
        self.signer: MediaSigner | None = None  # set while running
        self._offload = offload
        self._tls: ssl.SSLContext | None = None  # made once, off the event loop (certificates)
        self._transport = transport
        self._resolve = resolve
        self._clock = clock
        self._gate = HostGate(total=concurrency, per_host=per_host, gap=0.0)
        self._flights: dict[str, _Flight] = {}
        self._failures: OrderedDict[str, tuple[float, MediaRefused]] = OrderedDict()
        self._nursery: trio.Nursery | None = None

    async def run(
        self,
        secrets: SecretStore,
        *,
        task_status: trio.TaskStatus[MediaSigner] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read the key (creating it the first time), index the cache, then run the fetches
        until cancelled. Started, it hands back the signer."""
        signer = MediaSigner(await secrets.secret(KEY_NAME))
        await self.cache.open()
        if self._transport is None and self._tls is None:
            self._tls = await self._offload(httpx.create_ssl_context)
        logger.info(
            "media proxy: %d cached images, %d bytes of %d, in %s",
            self.cache.files, self.cache.bytes, self.cache.cap, self.cache.directory,
        )  # fmt: skip
        try:
            async with trio.open_nursery() as nursery:
                self._nursery, self.signer = nursery, signer
                task_status.started(signer)
                await trio.sleep_forever()
        finally:
            self._nursery = self.signer = None

    async def image(
        self, signature: str, encoded: str, if_none_match: str | None = None
    ) -> MediaAnswer:
        """The image of a ``/media/<signature>/<encoded>`` path, or 304; raises
        :class:`~feedstream.core.media.MediaRefused` (counted by kind) otherwise."""
        try:
            return await self._image(signature, encoded, if_none_match)
        except MediaRefused as refused:
            self.stats.refusals[refused.kind] += 1
            raise

    async def _image(self, signature: str, encoded: str, if_none_match: str | None) -> MediaAnswer:
        signer, nursery = self.signer, self._nursery
        if signer is None or nursery is None:
            raise MediaRefused(503, "the media proxy is not running", "unavailable")
        url = signer.verify(signature, encoded)
        key = hashlib.sha256(url.encode("utf-8")).hexdigest()
        cached = self.cache.peek(key)
        if cached is not None and etag_matches(if_none_match, cached.etag):
            self.stats.not_modified += 1
            return MediaAnswer(cached.etag)
        remembered = self._failures.get(key)
        if remembered is not None:
            until, refused = remembered
            if until > self._clock():
                raise _copy(refused)
            del self._failures[key]
        found = await self.cache.read(key)
        if found is not None:
            self.stats.hits += 1
            cached, body = found
            return self._answer(MediaAnswer(cached.etag, cached.media_type, body), if_none_match)
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight()
            nursery.start_soon(self._fetch_and_store, key, url, flight)
        else:
            self.stats.shared += 1
        await flight.done.wait()
        if flight.answer is None:
            refused = flight.error or MediaRefused(503, "the media proxy stopped", "unavailable")
            raise _copy(refused)
        return self._answer(flight.answer, if_none_match)

    def _answer(self, answer: MediaAnswer, if_none_match: str | None) -> MediaAnswer:
        if etag_matches(if_none_match, answer.etag):
            self.stats.not_modified += 1
            return MediaAnswer(answer.etag)
        return answer

    async def _fetch_and_store(self, key: str, url: str, flight: _Flight) -> None:
        self.stats.misses += 1
        try:
            media_type, body = await self._fetch(url)
            try:
                cached = await self.cache.store(key, media_type, body)
                etag = cached.etag
            except OSError as exc:
                logger.warning("media cache: cannot keep %s: %s", url[:200], exc)
                etag = media_etag(body)
            flight.answer = MediaAnswer(etag, media_type, body)
            logger.debug("media: fetched %s (%s, %d bytes)", url[:200], media_type, len(body))
        except MediaRefused as refused:
            flight.error = refused
            if refused.kind != "busy":
                ttl = TRANSIENT_TTL if refused.status >= 500 else FAILURE_TTL
                self._failures[key] = (self._clock() + ttl, refused)
                self._failures.move_to_end(key)
                while len(self._failures) > FAILURES_KEPT:
                    self._failures.popitem(last=False)
            logger.info("media: %s refused: %s", url[:200], refused.reason)
        except Exception:  # a bug here must not take the server down
            logger.exception("media: fetching %s failed", url[:200])
            flight.error = MediaRefused(502, "internal error", "error")
        finally:
            del self._flights[key]
            flight.done.set()

    async def _fetch(self, url: str) -> tuple[str, bytes]:
        """The image at *url*: its sniffed media type and bytes; MediaRefused otherwise."""
        if self._transport is not None:
            inner, owns = self._transport, False
        else:
            assert self._tls is not None, "run() makes the TLS context first"
            inner = httpx.AsyncHTTPTransport(
                verify=self._tls, trust_env=False, retries=0, limits=_NO_KEEPALIVE
            )
            owns = True
        pinned = _Pinned(inner, owns=owns, allow_private=self.allow_private, resolve=self._resolve)
        with trio.move_on_after(QUEUE_WAIT) as waiting:
            async with self._gate.slot(url):
                waiting.deadline = math.inf  # a slot: from now on, the fetch's own deadline
                result = await self._get(pinned, url)
        if waiting.cancelled_caught:
            raise MediaRefused(503, "too many images are being fetched; try again", "busy")
        if result.status in (404, 410):
            raise MediaRefused(404, f"upstream answered HTTP {result.status}", "upstream_gone")
        if result.status != 200:
            raise MediaRefused(502, f"upstream answered HTTP {result.status}", "upstream_status")
        media_type = sniff_media(result.body)
        if media_type is None:
            raise media_refusal(result.body)
        return media_type, result.body

    async def _get(self, pinned: _Pinned, url: str) -> FetchResult:
        """One fetch of *url* through *pinned*: the answer, whatever its status."""
        limits = self.limits
        async with httpx.AsyncClient(
            transport=pinned, cookies=_no_cookies(), trust_env=False
        ) as client:
            try:
                return await fetch(client, url, limits, accept=MEDIA_ACCEPT)
            except TooLarge:
                reason = f"the image is over the {limits.max_bytes}-byte limit"
                raise MediaRefused(413, reason, "too_large") from None
            except FetchError as exc:
                if pinned.refused is not None:
                    raise MediaRefused(403, pinned.refused, "private") from None
                status = 504 if isinstance(exc, FetchTimeout) else 502
                raise MediaRefused(status, f"upstream: {exc}", fetch_error_kind(exc)) from None
