"""The fetch shell against httpx.MockTransport: conditional GET, redirects, limits."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Callable

import brotli
import httpx
import pytest
import trio

from feedstream.core.config import FetchLimits
from feedstream.service.fetch import (
    FetchTimeout,
    HostGate,
    NetworkError,
    RedirectError,
    TooLarge,
    fetch,
)

LIMITS = FetchLimits(timeout=5, connect_timeout=2, max_bytes=4096, max_redirects=3)


def client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_conditional_headers_and_304() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(304, headers={"ETag": '"v1"'})

    async with client(handler) as c:
        result = await fetch(
            c,
            "https://a.test/feed",
            LIMITS,
            etag='"v1"',
            last_modified="Mon, 01 Jan 2024 00:00:00 GMT",
        )
    assert result.status == 304 and result.body == b""
    assert seen[0].headers["if-none-match"] == '"v1"'
    assert seen[0].headers["if-modified-since"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert "feedstream" in seen[0].headers["user-agent"]
    assert "application/atom+xml" in seen[0].headers["accept"]


async def test_redirects_permanent_then_temporary() -> None:
    routes = {
        "https://a.test/old": httpx.Response(301, headers={"Location": "/newer"}),
        "https://a.test/newer": httpx.Response(308, headers={"Location": "https://b.test/feed"}),
        "https://b.test/feed": httpx.Response(302, headers={"Location": "https://b.test/today"}),
        "https://b.test/today": httpx.Response(200, content=b"<feed/>"),
    }
    async with client(lambda r: routes[str(r.url)]) as c:
        result = await fetch(c, "https://a.test/old", LIMITS)
    assert (result.status, result.url, result.body) == (200, "https://b.test/today", b"<feed/>")
    assert result.permanent_url == "https://b.test/feed"  # the 302 after it does not count
    assert result.redirects == (301, 308, 302)


async def test_temporary_redirect_first_means_no_permanent_url() -> None:
    routes = {
        "https://a.test/f": httpx.Response(307, headers={"Location": "https://a.test/g"}),
        "https://a.test/g": httpx.Response(301, headers={"Location": "https://a.test/h"}),
        "https://a.test/h": httpx.Response(200, content=b"x"),
    }
    async with client(lambda r: routes[str(r.url)]) as c:
        assert (await fetch(c, "https://a.test/f", LIMITS)).permanent_url is None


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ({"https://a.test/f": httpx.Response(302, headers={"Location": "/f"})}, "redirect loop"),
        ({"https://a.test/f": httpx.Response(302)}, "without a Location"),
        (
            {"https://a.test/f": httpx.Response(301, headers={"Location": "file:///etc/passwd"})},
            "only http",
        ),
        (
            {"https://a.test/f": httpx.Response(301, headers={"Location": "ftp://a.test/f"})},
            "only http",
        ),
    ],
)
async def test_bad_redirects(routes: dict[str, httpx.Response], message: str) -> None:
    async with client(lambda r: routes[str(r.url)]) as c:
        with pytest.raises(RedirectError, match=message):
            await fetch(c, "https://a.test/f", LIMITS)


async def test_too_many_redirects() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        n = int(request.url.path.strip("/") or 0)
        return httpx.Response(302, headers={"Location": f"/{n + 1}"})

    async with client(handler) as c:
        with pytest.raises(RedirectError, match="more than 3 redirects"):
            await fetch(c, "https://a.test/0", LIMITS)


async def test_refuses_non_http_urls() -> None:
    async with client(lambda r: httpx.Response(200)) as c:
        with pytest.raises(RedirectError):
            await fetch(c, "file:///etc/passwd", LIMITS)


async def test_size_cap_on_declared_and_streamed_bodies() -> None:
    async with client(lambda r: httpx.Response(200, content=b"x" * 5000)) as c:
        with pytest.raises(TooLarge):
            await fetch(c, "https://a.test/f", LIMITS)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 1000

    def stream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())  # no Content-Length

    async with client(stream) as c:
        with pytest.raises(TooLarge, match="after decompression"):
            await fetch(c, "https://a.test/f", LIMITS)


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("br", brotli.compress)],
)
async def test_size_cap_counts_decompressed_bytes(
    encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    bomb = compress(b"\0" * 1_000_000)
    assert len(bomb) < LIMITS.max_bytes
    async with client(
        lambda r: httpx.Response(200, content=bomb, headers={"Content-Encoding": encoding})
    ) as c:
        with pytest.raises(TooLarge):
            await fetch(c, "https://a.test/f", LIMITS)


async def test_broken_compression_is_a_network_error() -> None:
    async with client(
        lambda r: httpx.Response(200, content=b"not gzip", headers={"Content-Encoding": "gzip"})
    ) as c:
        with pytest.raises(NetworkError, match="content encoding"):
            await fetch(c, "https://a.test/f", LIMITS)


async def test_connection_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with client(refuse) as c:
        with pytest.raises(NetworkError, match="refused"):
            await fetch(c, "https://a.test/f", LIMITS)


async def test_total_deadline(autojump_clock: trio.testing.MockClock) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await trio.sleep(3600)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as c:
        start = trio.current_time()
        with pytest.raises(FetchTimeout, match="within 5 s"):
            await fetch(c, "https://a.test/f", LIMITS)
        assert trio.current_time() - start == pytest.approx(5)


async def test_host_gate_spaces_requests_and_honours_pauses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = HostGate(total=10, per_host=2, gap=1.0)
    starts: list[float] = []

    async def one(url: str) -> None:
        async with gate.slot(url):
            starts.append(trio.current_time())
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one, "https://a.test/x")
        nursery.start_soon(one, "https://b.test/x")
    assert sorted(starts) == pytest.approx([0, 0, 1, 2])

    gate.pause("https://a.test/other-feed", 600)
    before = trio.current_time()
    await one("https://a.test/y")
    assert starts[-1] - before == pytest.approx(600)
