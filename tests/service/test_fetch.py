"""The fetch shell against a scripted transport: conditional GET, redirects, limits.

The handlers are httpx.MockTransport's, but :class:`NetworkLikeTransport` hands their answers
over as a network connection would: an unread, still content-encoded body arriving in small
pieces. ``fetch`` has no special case for test transports; the in-memory answers of a bare
MockTransport are read the same way (``test_in_memory_answers_are_read_like_any_other``).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Callable

import brotli
import httpx
import pytest
import trio

from feedstream.core.config import FetchLimits
from feedstream.core.urls import MAX_URL_CHARS
from feedstream.service.fetch import (
    FETCH_ERROR_KINDS,
    FetchError,
    FetchTimeout,
    HostGate,
    NetworkError,
    RedirectError,
    TooLarge,
    fetch,
    fetch_error_kind,
)

LIMITS = FetchLimits(timeout=5, connect_timeout=2, max_bytes=4096, max_redirects=3)
WIRE_CHUNK = 512  # bytes per read, as a socket might deliver them


class _OnTheWire(httpx.AsyncByteStream):
    """A body arriving in pieces of at most :data:`WIRE_CHUNK` bytes, readable once."""

    def __init__(self, source: httpx.AsyncByteStream) -> None:
        self._source = source

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._source:
            for start in range(0, len(part), WIRE_CHUNK):
                yield part[start : start + WIRE_CHUNK]


class NetworkLikeTransport(httpx.AsyncBaseTransport):
    """MockTransport handlers, answered as a real transport answers: a streamed, raw body."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self._mock = httpx.MockTransport(handler)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        scripted = await self._mock.handle_async_request(request)
        assert isinstance(scripted.stream, httpx.AsyncByteStream)
        return httpx.Response(
            scripted.status_code,
            headers=scripted.headers,
            stream=_OnTheWire(scripted.stream),
            extensions=scripted.extensions,
        )


def client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=NetworkLikeTransport(handler))


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


async def test_refuses_urls_over_the_one_limit() -> None:
    long_url = "https://a.test/" + "a" * MAX_URL_CHARS
    routes = {"https://a.test/f": httpx.Response(301, headers={"Location": long_url})}
    async with client(lambda r: routes.get(str(r.url), httpx.Response(200))) as c:
        with pytest.raises(RedirectError, match="2048 characters"):
            await fetch(c, long_url, LIMITS)
        with pytest.raises(RedirectError, match="only http and https"):
            await fetch(c, "https://a.test/f", LIMITS)  # nor is a redirect there followed


async def test_in_memory_answers_are_read_like_any_other() -> None:
    """A bare MockTransport's answers were read into memory by httpx: fetch reads them too,
    with the same bounded decoding (no special case for them)."""
    body = b"<feed>" + b" " * 3000 + b"</feed>"
    answers = {
        "https://a.test/plain": httpx.Response(200, content=body),
        "https://a.test/gzip": httpx.Response(
            200, content=gzip.compress(body), headers={"Content-Encoding": "gzip"}
        ),
        "https://a.test/bomb": httpx.Response(
            200, content=gzip.compress(b"\0" * 1_000_000), headers={"Content-Encoding": "gzip"}
        ),
    }
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: answers[str(r.url)])) as c:
        assert (await fetch(c, "https://a.test/plain", LIMITS)).body == body
        assert (await fetch(c, "https://a.test/gzip", LIMITS)).body == body
        with pytest.raises(TooLarge, match="after decompression"):
            await fetch(c, "https://a.test/bomb", LIMITS)


async def test_streamed_compressed_body_is_decoded() -> None:
    body = b"<rss>" + bytes(range(256)) * 10 + b"</rss>"
    answer = httpx.Response(
        200, content=zlib.compress(body), headers={"Content-Encoding": "deflate"}
    )
    async with client(lambda r: answer) as c:
        assert (await fetch(c, "https://a.test/f", LIMITS)).body == body


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (FetchTimeout("t"), "timeout"),
        (TooLarge("big"), "too_large"),
        (RedirectError("loop"), "bad_redirect"),
        (NetworkError("refused"), "network_error"),
        (FetchError("other"), "error"),
    ],
)
def test_fetch_error_kind(error: FetchError, kind: str) -> None:
    assert fetch_error_kind(error) == kind


def test_every_fetch_error_class_has_a_kind() -> None:
    assert {cls for cls, _ in FETCH_ERROR_KINDS} == set(FetchError.__subclasses__())


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
