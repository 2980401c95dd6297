"""The media proxy's shell over ``httpx.MockTransport`` (the transport's calls are counted): what
it refuses, what it fetches once and serves from its cache, eviction, shared fetches, and the
ingest path rewriting new entries. Names resolve through a table here, never through DNS."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from feedstream.core.config import FeedConfig, ServerConfig
from feedstream.core.media import MediaRefused, MediaSigner, media_source
from feedstream.log.secrets import MemorySecrets
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import Store
from feedstream.service.ingest import Ingestor
from feedstream.service.media import (
    FAILURE_TTL,
    QUEUE_WAIT,
    RESCAN_INTERVAL,
    TRANSIENT_TTL,
    MediaCache,
    MediaProxy,
)
from feedstream.service.stats import Stats
from tests.core.test_icons import SVG
from tests.support.helpers import inline

PUBLIC = "93.184.216.34"
ADDRESSES = {
    "img.example": [PUBLIC],
    "cdn.example": ["93.184.216.35"],
    "evil.example": ["10.0.0.7"],
    "mixed.example": ["93.184.216.36", "192.168.1.5"],
    "local.example": ["127.0.0.1"],
}


async def resolve(host: str, port: int) -> list[str]:
    if host in ADDRESSES:
        return ADDRESSES[host]
    with contextlib.suppress(ValueError):
        return [str(ipaddress.ip_address(host))]
    raise httpx.ConnectError(f"cannot resolve {host}")


def png(size: int = 200, seed: int = 0) -> bytes:
    """A PNG of about *size* bytes (a valid header, then padding: only the bytes are sniffed)."""
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 1, 1)
    return head + bytes([seed % 256]) * max(size - len(head), 0)


Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


@dataclass
class Upstream:
    """The image servers: ``"host/path"`` -> a handler; every request recorded."""

    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def serve(
        self, where: str, body: bytes, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        async def answer(request: httpx.Request) -> httpx.Response:
            return httpx.Response(status, content=body, headers=headers)

        self.routes[where] = answer

    def calls(self, where: str) -> int:
        return sum(f"{r.headers['host']}{r.url.path}" == where for r in self.requests)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.routes.get(f"{request.headers['host']}{request.url.path}")
        if handler is None:
            return httpx.Response(404, content=b"not found")
        return await handler(request)


def make_proxy(tmp_path: Path, upstream: Upstream, **server: Any) -> MediaProxy:
    config = ServerConfig(data_dir=tmp_path, proxy_media=True, **server)
    return MediaProxy(
        config, offload=inline, transport=httpx.MockTransport(upstream), resolve=resolve
    )


@asynccontextmanager
async def running(proxy: MediaProxy) -> AsyncIterator[MediaSigner]:
    async with trio.open_nursery() as nursery:
        signer: MediaSigner = await nursery.start(proxy.run, MemorySecrets(media_key=b"k" * 32))
        yield signer
        nursery.cancel_scope.cancel()


def bare_mac(key: bytes, url: str) -> str:
    """The proxy's key used the way another feature might: HMAC of the URL alone."""
    mac = hmac.new(key, url.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def signed(signer: MediaSigner, url: str) -> tuple[str, str]:
    path = signer.path(url)
    assert path is not None
    _, _, signature, encoded = path.split("/")
    return signature, encoded


async def get(
    proxy: MediaProxy, signer: MediaSigner, url: str, if_none_match: str | None = None
) -> Any:
    return await proxy.image(*signed(signer, url), if_none_match)


async def refused(proxy: MediaProxy, signer: MediaSigner, url: str) -> MediaRefused:
    with pytest.raises(MediaRefused) as caught:
        await get(proxy, signer, url)
    return caught.value


# -- serving and caching --------------------------------------------------------------------------


async def test_an_image_is_fetched_once_then_served_from_the_cache(tmp_path: Path) -> None:
    upstream = Upstream()
    image = png(300)
    upstream.serve(
        "img.example/a.png", image, headers={"Content-Type": "text/plain", "Set-Cookie": "t=1"}
    )
    proxy = make_proxy(tmp_path, upstream)
    async with running(proxy) as signer:
        url = "https://img.example/a.png?size=large"
        first = await get(proxy, signer, url)
        assert (first.media_type, first.body) == ("image/png", image)  # the bytes decide
        second = await get(proxy, signer, url)
        assert (second.media_type, second.body, second.etag) == ("image/png", image, first.etag)
        assert upstream.calls("img.example/a.png") == 1  # no second fetch
        assert (proxy.stats.hits, proxy.stats.misses) == (1, 1)
        # Conditional: 304 without reading the disk.
        not_modified = await get(proxy, signer, url, if_none_match=first.etag)
        assert not_modified.body is None and not_modified.etag == first.etag
        assert proxy.stats.not_modified == 1
        assert upstream.calls("img.example/a.png") == 1
    [request] = upstream.requests
    assert request.url.host == PUBLIC  # connected to the checked address
    assert request.headers["host"] == "img.example"
    assert "cookie" not in request.headers and "referer" not in request.headers
    assert request.headers["accept"].startswith("image/avif")
    assert "svg" not in request.headers["accept"]
    files = [p for p in (tmp_path / "media").iterdir()]
    assert len(files) == 1 and files[0].read_bytes().endswith(image)


async def test_the_cache_outlives_a_restart(tmp_path: Path) -> None:
    upstream = Upstream()
    upstream.serve("img.example/a.png", png(100))
    proxy = make_proxy(tmp_path, upstream)
    async with running(proxy) as signer:
        etag = (await get(proxy, signer, "https://img.example/a.png")).etag
    again = make_proxy(tmp_path, upstream)
    async with running(again) as signer:
        assert again.cache.files == 1 and again.cache.bytes > 100
        assert (await get(again, signer, "https://img.example/a.png", etag)).body is None
        assert (await get(again, signer, "https://img.example/a.png")).body == png(100)
    assert len(upstream.requests) == 1


async def test_concurrent_requests_share_one_fetch(tmp_path: Path) -> None:
    upstream = Upstream()
    release = trio.Event()
    started = trio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        started.set()
        await release.wait()
        return httpx.Response(200, content=png(500))

    upstream.routes["img.example/slow.png"] = slow
    proxy = make_proxy(tmp_path, upstream)
    answers: list[bytes] = []
    async with running(proxy) as signer:

        async def ask() -> None:
            answers.append((await get(proxy, signer, "https://img.example/slow.png")).body)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(ask)
            await started.wait()
            await trio.testing.wait_all_tasks_blocked()
            release.set()
    assert answers == [png(500)] * 5
    assert upstream.calls("img.example/slow.png") == 1
    assert (proxy.stats.misses, proxy.stats.shared) == (1, 4)


async def test_least_recently_used_images_are_evicted_at_the_cap(tmp_path: Path) -> None:
    upstream = Upstream()
    for name in "abcd":
        upstream.serve(f"img.example/{name}.png", png(1000, seed=ord(name)))
    proxy = make_proxy(tmp_path, upstream, media_cache_bytes=3300)  # three files of ~1045 bytes
    async with running(proxy) as signer:

        async def fetch(name: str) -> None:
            assert (await get(proxy, signer, f"https://img.example/{name}.png")).body == png(
                1000, seed=ord(name)
            )

        for name in "abc":
            await fetch(name)
        await fetch("a")  # a is used again: b is now the least recently used
        assert proxy.stats.hits == 1
        await fetch("d")
        assert proxy.cache.files == 3 and proxy.cache.bytes <= 3300
        assert len(list((tmp_path / "media").iterdir())) == 3
        calls = len(upstream.requests)
        await fetch("a")
        await fetch("c")
        await fetch("d")
        assert len(upstream.requests) == calls  # all three still cached
        await fetch("b")  # evicted: fetched again (and a, the oldest use now, goes)
        assert upstream.calls("img.example/b.png") == 2
        assert len(upstream.requests) == calls + 1
    assert proxy.cache.bytes == sum(p.stat().st_size for p in (tmp_path / "media").iterdir())


async def test_an_image_larger_than_the_cache_is_served_not_kept(tmp_path: Path) -> None:
    upstream = Upstream()
    upstream.serve("img.example/big.png", png(5000))
    proxy = make_proxy(tmp_path, upstream, media_cache_bytes=2000)
    async with running(proxy) as signer:
        assert (await get(proxy, signer, "https://img.example/big.png")).body == png(5000)
        assert (await get(proxy, signer, "https://img.example/big.png")).body == png(5000)
    assert proxy.cache.files == 0 and upstream.calls("img.example/big.png") == 2


# -- refusals --------------------------------------------------------------------------------------


async def test_unsigned_or_wrongly_signed_urls_are_refused(tmp_path: Path) -> None:
    upstream = Upstream()
    upstream.serve("img.example/a.png", png())
    proxy = make_proxy(tmp_path, upstream)
    async with running(proxy) as signer:
        signature, encoded = signed(signer, "https://img.example/a.png")
        other = MediaSigner(b"o" * 32)
        for sig, enc in [
            ("A" * 22, encoded),  # made up
            (other.signature("https://img.example/a.png"), encoded),  # another server's key
            (signature, signed(signer, "https://img.example/b.png")[1]),  # another URL
            (bare_mac(b"k" * 32, "https://img.example/a.png"), encoded),  # not a media MAC
            (signature, "!!"),
        ]:
            with pytest.raises(MediaRefused) as caught:
                await proxy.image(sig, enc)
            assert (caught.value.status, caught.value.kind) == (403, "signature")
    assert upstream.requests == []  # nothing unsigned is ever fetched
    assert proxy.stats.refusals == {"signature": 5}


@pytest.mark.parametrize(
    ("body", "headers", "kind", "reason"),
    [
        (b"<!doctype html><html><body>404</body></html>", {"Content-Type": "image/png"},
         "not_an_image", "an HTML page, not an image"),
        (SVG, {"Content-Type": "image/svg+xml"}, "svg", "an SVG image: refused"),
        (b"GIF8", {"Content-Type": "image/gif"}, "not_an_image", "not an image"),
    ],
)  # fmt: skip
async def test_what_is_not_an_image_is_refused_and_remembered(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    body: bytes,
    headers: dict[str, str],
    kind: str,
    reason: str,
) -> None:
    upstream = Upstream()
    upstream.serve("img.example/x", body, headers=headers)
    proxy = make_proxy(tmp_path, upstream)
    async with running(proxy) as signer:
        for _ in range(2):
            refusal = await refused(proxy, signer, "https://img.example/x")
            assert (refusal.status, refusal.kind) == (415, kind)
            assert refusal.reason.startswith(reason)
        assert upstream.calls("img.example/x") == 1  # the refusal is remembered...
        await trio.sleep(FAILURE_TTL + 1)
        await refused(proxy, signer, "https://img.example/x")
        assert upstream.calls("img.example/x") == 2  # ...for a while
    assert proxy.cache.files == 0 and proxy.stats.refusals == {kind: 3}


class Chunks(httpx.AsyncByteStream):
    """A body sent in pieces, without a Content-Length; counts the pieces read."""

    def __init__(self, piece: bytes, count: int) -> None:
        self.piece, self.count, self.read = piece, count, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.read += 1
            yield self.piece


async def test_an_oversized_body_is_cut_off(tmp_path: Path) -> None:
    upstream = Upstream()
    upstream.serve("img.example/declared.png", png(4096))  # Content-Length: 4096
    stream = Chunks(png(1000), 100)

    async def streamed(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=stream)

    upstream.routes["img.example/streamed.png"] = streamed
    gzipped = zlib.compressobj(wbits=31)
    bomb = gzipped.compress(png(1 << 20)) + gzipped.flush()
    upstream.serve("img.example/bomb.png", bomb, headers={"Content-Encoding": "gzip"})
    proxy = make_proxy(tmp_path, upstream, media_max_bytes=2048)
    async with running(proxy) as signer:
        for name in ("declared", "streamed", "bomb"):
            refusal = await refused(proxy, signer, f"https://img.example/{name}.png")
            assert (refusal.status, refusal.kind) == (413, "too_large"), name
            assert "2048-byte limit" in refusal.reason
    assert stream.read == 3  # stopped past 2048 bytes, not read to the end
    assert len(bomb) < 2048  # small on the wire: the limit counts what it inflates to


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example/a.png",  # a private address
        "http://mixed.example/a.png",  # one of its addresses is private
        "http://local.example/a.png",  # loopback
        "http://127.0.0.1:8080/a.png",
        "http://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
        "http://[::1]/a.png",
        "http://224.0.0.1/a.png",  # multicast
        "http://240.0.0.1/a.png",  # reserved
        "http://100.64.0.1/a.png",  # shared address space
    ],
)
async def test_private_addresses_are_refused(tmp_path: Path, url: str) -> None:
    upstream = Upstream()
    proxy = make_proxy(tmp_path, upstream)
    async with running(proxy) as signer:
        refusal = await refused(proxy, signer, url)
    assert (refusal.status, refusal.kind) == (403, "private")
    assert "not a public address" in refusal.reason
    assert upstream.requests == []


async def test_a_redirect_to_a_private_address_is_refused(tmp_path: Path) -> None:
    upstream = Upstream()
    upstream.serve("img.example/r1", b"", 302, headers={"Location": "https://cdn.example/r2"})
    upstream.serve(
        "cdn.example/r2", b"", 301, headers={"Location": "http://evil.example/secret.png"}
    )
    upstream.serve("evil.example/secret.png", png())
    proxy = make_proxy(tmp_path, upstream)
    async with running(proxy) as signer:
        refusal = await refused(proxy, signer, "https://img.example/r1")
    assert (refusal.status, refusal.kind) == (403, "private")
    assert [r.headers["host"] for r in upstream.requests] == ["img.example", "cdn.example"]


async def test_redirects_are_followed_without_cookies(tmp_path: Path) -> None:
    upstream = Upstream()
    upstream.serve(
        "img.example/r",
        b"",
        302,
        headers={"Location": "https://cdn.example/i.png", "Set-Cookie": "s=1"},
    )
    upstream.serve("cdn.example/i.png", png())
    upstream.serve("img.example/loop", b"", 302, headers={"Location": "https://img.example/loop2"})
    upstream.serve("img.example/loop2", b"", 302, headers={"Location": "https://img.example/loop"})
    proxy = make_proxy(tmp_path, upstream)
    async with running(proxy) as signer:
        assert (await get(proxy, signer, "https://img.example/r")).body == png()
        refusal = await refused(proxy, signer, "https://img.example/loop")
        assert (refusal.status, refusal.kind) == (502, "bad_redirect")
    assert all("cookie" not in r.headers for r in upstream.requests)


async def test_private_addresses_are_fetched_when_allowed(tmp_path: Path) -> None:
    upstream = Upstream()
    upstream.serve("local.example/a.png", png())
    proxy = make_proxy(tmp_path, upstream, media_allow_private=True)
    async with running(proxy) as signer:
        assert (await get(proxy, signer, "http://local.example/a.png")).body == png()
    assert upstream.requests[0].url.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("status", "answer", "kind"),
    [(404, 404, "upstream_gone"), (410, 404, "upstream_gone"), (403, 502, "upstream_status"),
     (500, 502, "upstream_status")],
)  # fmt: skip
async def test_upstream_errors(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, status: int, answer: int, kind: str
) -> None:
    upstream = Upstream()
    upstream.serve("img.example/e.png", b"error page", status)
    proxy = make_proxy(tmp_path, upstream)
    async with running(proxy) as signer:
        refusal = await refused(proxy, signer, "https://img.example/e.png")
        assert (refusal.status, refusal.kind) == (answer, kind)
        assert f"HTTP {status}" in refusal.reason
        await trio.sleep(TRANSIENT_TTL + 1)  # a 5xx may pass: remembered a minute only
        await refused(proxy, signer, "https://img.example/e.png")
    assert upstream.calls("img.example/e.png") == (2 if answer == 502 else 1)


async def test_a_silent_server_times_out_and_a_full_queue_answers_busy(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    upstream = Upstream()

    async def silent(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    upstream.routes["img.example/silent.png"] = silent
    upstream.serve("cdn.example/ok.png", png())
    config = ServerConfig(data_dir=tmp_path, proxy_media=True)
    proxy = MediaProxy(
        config,
        offload=inline,
        transport=httpx.MockTransport(upstream),
        resolve=resolve,
        concurrency=1,
    )
    outcome: list[MediaRefused] = []
    async with running(proxy) as signer:

        async def silent_one() -> None:
            outcome.append(await refused(proxy, signer, "https://img.example/silent.png"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(silent_one)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            busy = await refused(proxy, signer, "https://cdn.example/ok.png")
            assert (busy.status, busy.kind) == (503, "busy")
            assert trio.current_time() - start == pytest.approx(QUEUE_WAIT)
        assert (outcome[0].status, outcome[0].kind) == (504, "timeout")
        assert trio.current_time() - start == pytest.approx(proxy.limits.timeout)
        # Not remembered: the next request is fetched.
        assert (await get(proxy, signer, "https://cdn.example/ok.png")).body == png()


async def test_not_running_is_503(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, Upstream())
    with pytest.raises(MediaRefused) as caught:
        await proxy.image("A" * 22, "aHR0cHM6Ly9hLmIv")
    assert (caught.value.status, caught.value.kind) == (503, "unavailable")


# -- ingest ------------------------------------------------------------------------------------------


async def test_ingest_rewrites_new_entries_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    log = SQLiteLog(store, store.snapshot(100), backlog=100, offload=inline)
    ingestor = Ingestor(log, Stats(), parse=inline, slots=trio.CapacityLimiter(1))
    signer = MediaSigner(b"k" * 32)
    ingestor.media = signer
    feed = FeedConfig(id="f", token="t" * 16)
    item = {
        "id": "1",
        "url": "https://site.example/post",
        "image": "https://img.example/lead.jpg",
        "content_html": '<p><img src="https://img.example/in.gif"></p>' + "x" * 5000,
    }
    body = json.dumps(
        {"version": "https://jsonfeed.org/version/1.1", "title": "T", "items": [item]}
    ).encode()
    assert len(body) > 4096  # over the inline size: through the worker's path (sift)
    first = await ingestor.ingest(feed, body, content_type=None, via="push")
    assert len(first.new) == 1
    again = await ingestor.ingest(feed, body, content_type=None, via="push")
    assert again.new == []  # the repeat is a duplicate, left as it came
    assert again.parsed.entries[0]["image"] == "https://img.example/lead.jpg"
    [stored] = [json.loads(e.json) for e in log.read(None, feeds=None, limit=10).entries]
    assert stored["url"] == "https://site.example/post"
    assert stored["image"] == signer.path("https://img.example/lead.jpg")
    assert stored["image_source"] == "https://img.example/lead.jpg"
    assert f'src="{signer.path("https://img.example/in.gif")}"' in stored["content_html"]
    assert media_source(stored["image"]) == stored["image_source"]
    store.close()


def on_disk(directory: Path) -> dict[str, int]:
    """The cache files of *directory*, by the first character of their names: their sizes."""
    return {path.name[0]: path.stat().st_size for path in directory.iterdir()}


async def test_processes_sharing_the_cache_directory_keep_it_under_the_cap(tmp_path: Path) -> None:
    now = [0.0]
    first = MediaCache(tmp_path, 3300, inline, clock=lambda: now[0])  # one process's cache
    second = MediaCache(tmp_path, 3300, inline, clock=lambda: now[0])  # another's
    await first.open()
    await second.open()
    for key in ("1" * 64, "2" * 64):
        await first.store(key, "image/png", png(1000))
        await trio.sleep(0.02)  # file times order the uses (a coarse clock ticks every few ms)
    assert (await second.read("1" * 64)) is not None  # a file the other process wrote
    await trio.sleep(0.02)
    await second.store("3" * 64, "image/png", png(1000))
    assert sorted(on_disk(tmp_path)) == ["1", "2", "3"]
    now[0] += RESCAN_INTERVAL  # the next store reads the directory again
    await trio.sleep(0.02)
    await second.store("4" * 64, "image/png", png(1000))
    files = on_disk(tmp_path)
    assert sorted(files) == ["1", "3", "4"]  # 2 went: the least recently used of all four
    assert second.bytes == sum(files.values()) <= 3300
    assert (await first.read("2" * 64)) is None and first.peek("2" * 64) is None
