"""Hostile feeds never hurt the server ("Hardened, polite fetching").

Real sockets only: a raw trio server on loopback (``tests/hostile.py``) that misbehaves at the
socket level, the hypercorn ``FeedServer`` for well-formed-but-evil answers, the real httpx
client and, depending on the case, feedstream's :func:`~feedstream.service.poller.poll_once` with a real
store, worker threads and worker processes, or the whole server through ``running()``.

Every case checks the same four things: the fetch ends within its limits (time, bytes, memory),
the feed's state says clearly what went wrong (``status``, ``last_error``, ``failures``,
``next_poll``, also in SQLite or ``/api/feeds``), nothing escapes (no exception, no traceback in
the log) and nothing is stored from a document that was not a usable feed.
"""

from __future__ import annotations

import calendar
import gzip
import html.parser
import json
import logging
import random
import re
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import brotli
import httpx
import pytest
import trio

from feedstream.core.config import FeedConfig, FetchLimits
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import FeedState, Store
from feedstream.service.fetch import HostGate, host_of
from feedstream.service.poller import PollContext, poll_once
from tests.support.hostile import (
    Behaviour,
    Connection,
    HostileServer,
    dribble,
    endless,
    endless_headers,
    raw,
    reply,
    sequence,
    silent,
    stall,
)
from tests.support.servers import FeedServer, Route, make_config, running

RSS_TYPE = {"Content-Type": "application/rss+xml; charset=utf-8"}
MB = 1024 * 1024
TIMEOUT = 2.0
LIMITS = FetchLimits(timeout=TIMEOUT, connect_timeout=1.0, max_bytes=1 * MB, max_redirects=3)


# --- documents -------------------------------------------------------------------------------


def rss(*items: tuple[str, str], title: str = "Hostile test feed") -> bytes:
    """An RSS 2.0 document; *items* are ``(guid, title)``, dated a minute apart, newest last."""
    parts = []
    for index, (guid, text) in enumerate(items):
        date = formatdate(1_700_000_000 + 60 * index, usegmt=True)
        parts.append(
            f"<item><guid isPermaLink='false'>{guid}</guid><title>{text}</title>"
            f"<link>https://example.org/{guid}</link><pubDate>{date}</pubDate>"
            f"<description>About {text}</description></item>"
        )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{title}</title>'
        f"<link>https://example.org/</link>{''.join(parts)}</channel></rss>"
    ).encode()


def many_entries(count: int) -> bytes:
    """*count* dated entries listed oldest first (not as feeds usually do)."""
    return rss(*((f"g{i:05d}", f"Entry {i}") for i in range(count)), title="Huge")


def billion_laughs(root: str = "rss") -> bytes:
    entities = "".join(
        f' <!ENTITY lol{i} "{(f"&lol{i - 1};" if i > 1 else "&lol;") * 10}">\n'
        for i in range(1, 10)
    )
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE {root} [\n <!ENTITY lol "lol">\n{entities}]>\n'
        '<rss version="2.0"><channel><title>&lol9;</title><item><guid>laughs</guid>'
        "<title>&lol9;</title><description>&lol9;</description></item></channel></rss>"
    ).encode()


def xxe(secret: Path, dtd_url: str) -> bytes:
    return (
        '<?xml version="1.0"?>\n'
        f'<!DOCTYPE rss [\n <!ENTITY xxe SYSTEM "file://{secret}">\n'
        f' <!ENTITY % remote SYSTEM "{dtd_url}"> %remote;\n]>\n'
        '<rss version="2.0"><channel><title>XXE &xxe;</title><item><guid>xxe</guid>'
        "<title>t &xxe;</title><description>d &xxe;</description></item></channel></rss>"
    ).encode()


HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Welcome</title>"
    b'<link rel="alternate" type="application/rss+xml" href="/feed.xml"></head>'
    b"<body><h1>Not a feed</h1><script>alert(1)</script></body></html>"
)
GARBAGE = random.Random(20240501).randbytes(64 * 1024)  # no "<rss" or "<feed" in it


# --- the poller on real sockets ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing may be logged with a traceback or at ERROR: every hostile answer is expected."""
    caplog.set_level(logging.INFO)
    yield
    bad = [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.records
        if record.exc_info or record.levelno >= logging.ERROR
    ]
    assert not bad, bad


@pytest.fixture
async def hostile(nursery: trio.Nursery) -> HostileServer:
    server = HostileServer()
    await nursery.start(server.run)
    return server


@asynccontextmanager
async def poller(tmp_path: Path) -> AsyncIterator[PollContext]:
    """A PollContext as the runtime builds it: real store, worker threads, real httpx client."""
    store = Store(tmp_path / "hostile.sqlite3")
    try:
        log = SQLiteLog(store, store.snapshot(1000), backlog=1000)
        async with httpx.AsyncClient() as client:
            yield PollContext(
                client=client,
                log=log,
                store=store,
                gate=HostGate(total=10, per_host=10, gap=0.0),
            )
    finally:
        store.close()


@dataclass
class Polled:
    state: FeedState
    saved: FeedState  # what SQLite holds afterwards
    delay: float | None
    elapsed: float
    entries: list[dict[str, Any]]


async def poll(ctx: PollContext, feed: FeedConfig) -> Polled:
    """One real poll of *feed*, as ``run_feed`` does it; poll_once must not raise."""
    state = ctx.states.setdefault(feed.id, FeedState(id=feed.id, source_url=feed.url, url=feed.url))
    start = trio.current_time()
    delay = await poll_once(feed, state, ctx)
    elapsed = trio.current_time() - start
    page = ctx.log.read(None, feeds={feed.id}, limit=500)
    entries = [json.loads(item.json) for item in page.entries]
    saved = ctx.store.feed_states()[feed.id]
    return Polled(state, saved, delay, elapsed, entries)


def feed_at(url: str, *, id: str = "evil", interval: float = 60, **limits: Any) -> FeedConfig:
    settings = {
        "timeout": TIMEOUT,
        "connect_timeout": 1.0,
        "max_bytes": 1 * MB,
        "max_redirects": 3,
        **limits,
    }
    return FeedConfig(id=id, url=url, interval=interval, limits=FetchLimits(**settings))


def assert_failed(polled: Polled, error: str, *, http_status: int | None = None) -> None:
    """A clear failure: status error, a reason matching *error*, backoff, nothing stored."""
    state = polled.state
    assert state.status == "error", state
    assert state.error is not None and re.search(error, state.error), state.error
    assert "internal error" not in state.error
    assert state.failures == 1
    assert state.http_status == http_status
    assert polled.delay is not None and polled.delay >= 0.9 * 60  # backoff: at least interval
    assert state.last_fetch is not None and state.next_poll == state.last_fetch + polled.delay
    assert state.title is None and state.etag is None  # nothing learnt from a bad answer
    assert polled.entries == []
    assert (polled.saved.status, polled.saved.error, polled.saved.failures) == (
        "error",
        state.error,
        1,
    )


# --- timeouts: slowloris, silence, a stalled body ---------------------------------------------


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(dribble(rss(("a", "one byte a second")), every=1.0), id="slowloris"),
        pytest.param(
            dribble(rss(("a", "x")), every=1.0, declare_length=False), id="slowloris-no-length"
        ),
        pytest.param(silent(), id="never-answers"),
        pytest.param(stall(length=5000, first=b"<rss"), id="headers-then-stall"),
    ],
)
async def test_slow_servers_are_cut_at_the_total_timeout(
    tmp_path: Path, hostile: HostileServer, behaviour: Behaviour
) -> None:
    # A byte every second never trips a per-read timeout of 2 s: only the total deadline can.
    hostile.routes["/feed"] = behaviour
    async with poller(tmp_path) as ctx:
        polled = await poll(ctx, feed_at(f"{hostile.url}/feed"))
    assert TIMEOUT - 0.05 <= polled.elapsed < TIMEOUT + 1.0, polled.elapsed
    assert_failed(polled, r"no complete answer within 2 s|timed out")
    # The socket is released at the deadline, not left to the server.
    (hit,) = hostile.hits_for("/feed")
    with trio.fail_after(2):
        closed = await hostile.wait_closed(hit)
    assert closed - hit.time < TIMEOUT + 1.5


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        (raw(b"\x00\xff\xfe garbage, not HTTP\r\n\r\n"), r"NetworkError|RemoteProtocolError"),
        (raw(b""), r"disconnected without sending a response"),
        (raw(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n<rss ver"), r"closed connection"),
        (endless_headers(), r"RemoteProtocolError"),
    ],
    ids=["not-http", "hangs-up", "truncated-body", "endless-headers"],
)
async def test_broken_http_is_a_network_error(
    tmp_path: Path, hostile: HostileServer, behaviour: Behaviour, error: str
) -> None:
    hostile.routes["/feed"] = behaviour
    async with poller(tmp_path) as ctx:
        polled = await poll(ctx, feed_at(f"{hostile.url}/feed"))
    assert polled.elapsed < 1.5
    assert_failed(polled, error)


# --- redirects ---------------------------------------------------------------------------------


async def test_redirect_loop_is_refused(tmp_path: Path, hostile: HostileServer) -> None:
    hostile.routes["/a"] = reply(302, headers={"Location": "/b"})
    hostile.routes["/b"] = reply(301, headers={"Location": f"{hostile.url}/a"})
    async with poller(tmp_path) as ctx:
        loop = await poll(ctx, feed_at(f"{hostile.url}/a"))
        assert_failed(loop, r"redirect loop")
        assert len(hostile.hits_for("/a")) == 1 and len(hostile.hits_for("/b")) == 1
        assert loop.state.url == f"{hostile.url}/a"  # a refused chain moves nothing

    endless_chain: dict[str, int] = {"count": 0}

    async def hop(
        conn: Connection,
    ) -> None:  # a fresh target every time: only the hop limit stops it
        endless_chain["count"] += 1
        location = f"/hop/{endless_chain['count']}"
        await reply(301, headers={"Location": location})(conn)

    for index in range(10):
        hostile.routes[f"/hop/{index}"] = hop
    async with poller(tmp_path / "2") as ctx:
        chain = await poll(ctx, feed_at(f"{hostile.url}/hop/0", id="chain"))
    assert_failed(chain, r"more than 3 redirects")
    assert endless_chain["count"] == 4
    assert chain.state.url == f"{hostile.url}/hop/0"  # a chain that fails moves nothing


@pytest.mark.parametrize(
    "target",
    [
        "ftp://127.0.0.1/feed.xml",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/feed",
        "javascript:alert(1)",
        "data:application/rss+xml,<rss/>",
    ],
)
async def test_redirect_to_another_scheme_is_refused(
    tmp_path: Path, hostile: HostileServer, target: str
) -> None:
    hostile.routes["/feed"] = reply(301, headers={"Location": target})
    async with poller(tmp_path) as ctx:
        polled = await poll(ctx, feed_at(f"{hostile.url}/feed"))
    assert_failed(polled, r"only http and https|invalid URL")
    assert polled.state.url == f"{hostile.url}/feed"  # never moved to the other scheme
    assert polled.saved.url == f"{hostile.url}/feed"


# --- size: big bodies and compression bombs ----------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        (endless(limit=60 * MB), r"over the 1048576-byte limit \(after decompression\)"),
        (endless(length=60 * MB), r"body of 62914560 bytes is over the 1048576-byte limit"),
        (endless(), r"after decompression"),
    ],
    ids=["60MB-close-delimited", "60MB-declared", "endless"],
)
async def test_big_body_stops_at_max_bytes_with_bounded_memory(
    tmp_path: Path, hostile: HostileServer, behaviour: Behaviour, error: str
) -> None:
    hostile.routes["/feed"] = behaviour
    async with poller(tmp_path) as ctx:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            polled = await poll(ctx, feed_at(f"{hostile.url}/feed"))
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
    assert_failed(polled, error)
    assert polled.elapsed < 2.0
    assert peak < 6 * MB, f"peak {peak / MB:.1f} MiB for a 1 MiB limit"
    (hit,) = hostile.hits_for("/feed")
    with trio.fail_after(2):
        await hostile.wait_closed(hit)
    assert hit.sent < 8 * MB  # we hung up long before 60 MB


def gzip_bomb(size: int) -> bytes:
    return gzip.compress(b"\0" * size, compresslevel=9)


def deflate_bomb(size: int) -> bytes:
    return zlib.compress(b"\0" * size, 9)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compression_bomb_stops_at_max_bytes(
    tmp_path: Path, hostile: HostileServer, encoding: str
) -> None:
    body = gzip_bomb(10 * MB) if encoding == "gzip" else deflate_bomb(10 * MB)
    assert len(body) < 20_000  # 10 MiB of zeros on the wire in a few KB
    hostile.routes["/feed"] = reply(200, body, {"Content-Encoding": encoding, **RSS_TYPE})
    async with poller(tmp_path) as ctx:
        polled = await poll(ctx, feed_at(f"{hostile.url}/feed"))
    assert_failed(polled, r"over the 1048576-byte limit \(after decompression\)")
    assert polled.elapsed < 2.0


@pytest.mark.parametrize("encoding", ["gzip", "gzip, gzip", "br"])
async def test_decompression_memory_is_bounded_by_max_bytes(
    tmp_path: Path, hostile: HostileServer, encoding: str
) -> None:
    if encoding == "br":
        body = brotli.compress(b"\0" * (100 * MB), quality=5)  # 100 MiB of zeros in ~200 bytes
    else:
        body = gzip_bomb(100 * MB)  # 100 MiB of zeros in ~100 KB
    if encoding == "gzip, gzip":
        body = gzip.compress(body, compresslevel=9)  # ... in ~300 bytes
    hostile.routes["/feed"] = reply(200, body, {"Content-Encoding": encoding})
    async with poller(tmp_path) as ctx:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            polled = await poll(ctx, feed_at(f"{hostile.url}/feed"))
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
    expected = "refusing stacked Content-Encoding" if "," in encoding else "after decompression"
    assert_failed(polled, expected)
    assert peak < 8 * MB, f"peak {peak / MB:.0f} MiB for a 1 MiB limit, {len(body)} bytes sent"


async def test_brotli_bomb_stops_at_max_bytes(tmp_path: Path, hostile: HostileServer) -> None:
    body = brotli.compress(b"\0" * (10 * MB), quality=5)
    hostile.routes["/feed"] = reply(200, body, {"Content-Encoding": "br"})
    async with poller(tmp_path) as ctx:
        polled = await poll(ctx, feed_at(f"{hostile.url}/feed"))
    assert_failed(polled, r"after decompression")
    (hit,) = hostile.hits_for("/feed")
    assert hit.headers.get("accept-encoding") == "gzip, deflate, br"


# --- hostile documents -------------------------------------------------------------------------


async def test_billion_laughs_and_xxe_are_inert(tmp_path: Path, hostile: HostileServer) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER\n")
    hostile.routes["/laughs"] = reply(200, billion_laughs(), RSS_TYPE)
    hostile.routes["/laughs-broken"] = reply(
        200, billion_laughs().replace(b"</description>", b"<br></description>"), RSS_TYPE
    )
    hostile.routes["/xxe"] = reply(200, xxe(secret, f"{hostile.url}/evil.dtd"), RSS_TYPE)
    hostile.routes["/evil.dtd"] = reply(200, b'<!ENTITY leak SYSTEM "file:///etc/passwd">')
    async with poller(tmp_path) as ctx:
        for path in ("/laughs", "/laughs-broken", "/xxe"):
            feed = feed_at(f"{hostile.url}{path}", id=path.strip("/"))
            polled = await poll(ctx, feed)
            assert polled.elapsed < 2.0, path
            # Either the document is refused or it is read with the entities left alone; it is
            # never expanded (10**9 "lol"s) and never reads a file or fetches the DTD.
            assert polled.state.status in ("ok", "error"), polled.state
            assert "internal error" not in (polled.state.error or "")
            text = json.dumps(polled.entries) + (polled.state.title or "")
            assert len(text) < 10_000, path
            assert "lollollol" not in text and "TOP-SECRET" not in text and "root:" not in text
    assert hostile.hits_for("/evil.dtd") == []


async def test_twenty_thousand_entries_keep_the_newest_off_the_loop(
    tmp_path: Path, hostile: HostileServer
) -> None:
    body = many_entries(20_000)
    hostile.routes["/feed"] = reply(200, body, RSS_TYPE)
    lags: list[float] = []

    async def heartbeat() -> None:
        while True:
            due = trio.current_time() + 0.01
            await trio.sleep_until(due)
            lags.append(trio.current_time() - due)

    feed = feed_at(f"{hostile.url}/feed", timeout=30.0, max_bytes=8 * MB, max_entries=100)
    async with poller(tmp_path) as ctx, trio.open_nursery() as nursery:
        nursery.start_soon(heartbeat)
        polled = await poll(ctx, feed)
        nursery.cancel_scope.cancel()
    assert polled.state.status == "ok" and polled.state.error is None, polled.state
    assert polled.state.failures == 0
    titles = [entry["title"] for entry in polled.entries]
    assert titles == [f"Entry {i}" for i in range(19_900, 20_000)]  # the newest, oldest first
    # Parsing took seconds; it ran in a worker thread, so the loop kept its 10 ms beat.
    assert polled.elapsed > 0.5
    assert len(lags) > polled.elapsed / 0.05
    # (Had it run on the loop, the loop would have stopped for the whole parse.)
    assert max(lags) < min(0.5, polled.elapsed / 4), f"loop blocked for {max(lags):.3f} s"


async def test_parsing_a_big_document_does_not_stall_the_loop(
    tmp_path: Path, hostile: HostileServer
) -> None:
    body = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item><guid>a</guid>'
        b"<title>refs</title><description>"
        + b"&#65;" * (3 * MB)
        + b"</description></item></channel></rss>"
    )
    hostile.routes["/feed"] = reply(200, body, RSS_TYPE)
    lags: list[float] = []

    async def heartbeat() -> None:
        while True:
            due = trio.current_time() + 0.01
            await trio.sleep_until(due)
            lags.append(trio.current_time() - due)

    feed = feed_at(f"{hostile.url}/feed", timeout=30.0, max_bytes=16 * MB)
    async with poller(tmp_path) as ctx, trio.open_nursery() as nursery:
        nursery.start_soon(heartbeat)
        polled = await poll(ctx, feed)
        nursery.cancel_scope.cancel()
    assert polled.state.status == "ok", polled.state
    # With runs of references matched a few at a time the loop keeps a ~20 ms beat here.
    assert max(lags) < 0.25, f"loop blocked for {max(lags):.3f} s"


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (GARBAGE, "application/rss+xml", r"not a feed"),
        (HTML_PAGE, "text/html; charset=utf-8", r"not a feed: looks like an HTML page"),
        (b"", "application/rss+xml", r"empty body"),
        (b" \r\n\t ", "application/rss+xml", r"empty body"),
        (b'{"version": "1", "items": []}', "application/json", r"not a feed: JSON"),
        (b"\xef\xbb\xbf", "application/feed+json", r"empty body"),
    ],
    ids=["garbage", "html-page", "empty", "blank", "plain-json", "bom-only"],
)
async def test_not_a_feed_is_a_clear_error_and_stores_nothing(
    tmp_path: Path, hostile: HostileServer, body: bytes, content_type: str, error: str
) -> None:
    hostile.routes["/feed"] = reply(200, body, {"Content-Type": content_type})
    async with poller(tmp_path) as ctx:
        polled = await poll(ctx, feed_at(f"{hostile.url}/feed"))
    assert_failed(polled, error, http_status=200)


@pytest.mark.parametrize(
    "body",
    [
        b"\x89PNG\r\n\x1a\n" + GARBAGE[:3000] + b"<rss>" + GARBAGE[3000:6000],
        b"Lorem ipsum <feed> dolor sit amet",
    ],
    ids=["binary-with-rss-tag", "text-with-feed-tag"],
)
async def test_garbage_around_a_feed_tag_is_not_a_feed(
    tmp_path: Path, hostile: HostileServer, body: bytes
) -> None:
    hostile.routes["/feed"] = reply(200, body, RSS_TYPE)
    async with poller(tmp_path) as ctx:
        polled = await poll(ctx, feed_at(f"{hostile.url}/feed"))
    assert_failed(polled, r"not a feed", http_status=200)


ACCENTED = "Caf\u00e9 cr\u00e8me \u2014 na\u00efve \u65e5\u672c"


def encoded_feed(encoding: str, declared: str) -> bytes:
    text = (
        f'<?xml version="1.0" encoding="{declared}"?><rss version="2.0"><channel>'
        f"<title>{ACCENTED}</title><item><guid>enc-1</guid><title>{ACCENTED}</title>"
        "</item></channel></rss>"
    )
    return text.encode(encoding)


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (encoded_feed("utf-16", "utf-16"), "application/rss+xml", ACCENTED),  # with BOM
        (encoded_feed("utf-16-be", "utf-16"), "application/rss+xml", ACCENTED),  # no BOM
        (encoded_feed("utf-8", "iso-8859-1"), "application/rss+xml", ACCENTED),
        (encoded_feed("utf-8", "utf-8"), "application/rss+xml; charset=iso-8859-1", ACCENTED),
        (encoded_feed("utf-8", "x-no-such-codec"), "application/rss+xml", ACCENTED),
        (encoded_feed("utf-8", "utf-8"), "text/xml; charset=utf-16", ACCENTED),
        (
            encoded_feed("utf-8", "utf-8").replace("\u00e9".encode(), b"\xe9"),
            "application/rss+xml",
            None,  # invalid UTF-8: read anyway, bytes replaced or reinterpreted
        ),
    ],
    ids=[
        "utf16-bom",
        "utf16-no-bom",
        "declares-latin1-is-utf8",
        "header-latin1-is-utf8",
        "declares-unknown-codec",
        "header-utf16-is-utf8",
        "declares-utf8-has-latin1-bytes",
    ],
)
async def test_wrong_declared_encodings_still_read(
    tmp_path: Path, hostile: HostileServer, body: bytes, content_type: str, expected: str | None
) -> None:
    hostile.routes["/feed"] = reply(200, body, {"Content-Type": content_type})
    async with poller(tmp_path) as ctx:
        polled = await poll(ctx, feed_at(f"{hostile.url}/feed"))
    assert polled.state.status == "ok", polled.state
    (entry,) = polled.entries
    title = entry["title"]
    assert isinstance(title, str) and "na" in title and "\x00" not in title
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]", title)
    if expected is not None:
        assert title == expected and polled.state.title == expected


async def test_utf8_body_declaring_utf16_is_read(tmp_path: Path, hostile: HostileServer) -> None:
    # (With "charset=utf-8" in Content-Type feedparser believes the header and it works.)
    body = encoded_feed("utf-8", "utf-16")
    hostile.routes["/feed"] = reply(200, body, {"Content-Type": "application/rss+xml"})
    async with poller(tmp_path) as ctx:
        polled = await poll(ctx, feed_at(f"{hostile.url}/feed"))
    assert polled.state.status == "ok", polled.state
    assert [entry["title"] for entry in polled.entries] == [ACCENTED]


# --- XSS in every field, through the whole server ---------------------------------------------

XSS_RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"
     xmlns:media="http://search.yahoo.com/mrss/" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel>
 <title>&lt;script&gt;alert('feed')&lt;/script&gt;Evil &lt;b onmouseover=alert(1)&gt;RSS&lt;/b&gt;</title>
 <link>javascript:alert('site')</link>
 <image><url>javascript:alert('logo')</url><title>x</title><link>javascript:x</link></image>
 <item>
  <guid isPermaLink="false">rss-xss-1</guid>
  <title>&lt;img src=x onerror=alert(1)&gt;RSS title&lt;script&gt;alert(1)&lt;/script&gt;</title>
  <link>javascript:alert(document.cookie)</link>
  <author>&lt;svg onload=alert(1)&gt;mallory@evil.test (Mallory)</author>
  <dc:creator><![CDATA[<iframe src="javascript:alert(1)"></iframe>Mallory]]></dc:creator>
  <description>&lt;p onclick="alert(1)"&gt;Summary&lt;/p&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;a href="javascript:alert(1)"&gt;x&lt;/a&gt;</description>
  <content:encoded><![CDATA[<p style="color:red" onmouseover="alert(1)">Hi <b>there</b></p>
   <script>alert(1)</script><img src="javascript:alert(1)" onerror="alert(1)">
   <a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">d</a>
   <a href="JaVaScRiPt:alert(1)">j</a><a href="java&#x09;script:alert(1)">t</a>
   <a href="  javascript:alert(1)">s</a><a href="vbscript:msgbox(1)">v</a>
   <iframe src="https://evil.test/"></iframe><svg><script>alert(1)</script></svg>
   <form action="https://evil.test/"><input name="q"></form><object data="x"></object>
   <math><mi xlink:href="javascript:alert(1)">m</mi></math><style>body{display:none}</style>
   <img src="data:image/png;base64,AAAA"><img srcset="javascript:alert(1) 1x" src="/ok.png">
   <a href="/relative" target="_blank" id="clobber" name="x">rel</a>
   <base href="javascript:alert(1)//"><meta http-equiv="refresh" content="0;url=javascript:alert(1)">
   <div onmouseenter="alert(1)" class="x">div</div><noscript><p title="</noscript><img src=x onerror=alert(1)>"></p></noscript>
   <a href="https://example.org/ok" onclick="alert(1)">fine</a>]]></content:encoded>
  <category>&lt;script&gt;alert(1)&lt;/script&gt;tag</category>
  <category><![CDATA[<b onmouseover=alert(1)>bold tag</b>]]></category>
  <enclosure url="javascript:alert(1)" type="audio/mpeg" length="1"/>
  <enclosure url="data:audio/mpeg;base64,AAAA" type="audio/mpeg" length="2"/>
  <enclosure url="https://example.org/ok.mp3" type="audio/mpeg&quot;&gt;&lt;script&gt;" length="3"/>
  <media:thumbnail url="javascript:alert(1)"/>
  <media:content url="data:image/svg+xml,&lt;svg onload=alert(1)&gt;" medium="image"/>
 </item>
</channel>
</rss>"""

XSS_ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="javascript:alert(1)//">
 <title type="html">&lt;script&gt;alert(1)&lt;/script&gt;Evil Atom</title>
 <id>urn:evil</id><updated>2024-01-01T00:00:00Z</updated>
 <entry>
  <id>atom-html</id><updated>2024-01-01T00:00:00Z</updated>
  <title type="html">&lt;img src=x onerror=alert(1)&gt;HTML title</title>
  <link rel="alternate" href="javascript:alert(1)"/>
  <link rel="enclosure" href="javascript:alert(1)" type="image/png"/>
  <author><name>&lt;script&gt;alert(1)&lt;/script&gt;Eve</name><uri>javascript:alert(1)</uri></author>
  <category term="&lt;img src=x onerror=alert(1)&gt;" label="x"/>
  <summary type="html">&lt;a href="javascript:alert(1)"&gt;summary&lt;/a&gt;&lt;script&gt;alert(1)&lt;/script&gt;</summary>
  <content type="html" xml:base="javascript:alert(2)//">&lt;a href="x"&gt;relative under a javascript base&lt;/a&gt;&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(1)&lt;/script&gt;</content>
 </entry>
 <entry>
  <id>atom-xhtml</id><updated>2024-01-02T00:00:00Z</updated>
  <title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script><b onclick="alert(1)">XHTML title</b></div></title>
  <link href="data:text/html,&lt;script&gt;alert(1)&lt;/script&gt;"/>
  <summary type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><a href="javascript:alert(1)">s</a><script>alert(1)</script></div></summary>
  <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p onmouseover="alert(1)">x</p><script>alert(1)</script><iframe src="javascript:alert(1)"/><a href="vbscript:x">v</a><img src="data:image/svg+xml;base64,PHN2Zz4=" /></div></content>
 </entry>
 <entry>
  <id>atom-text</id><updated>2024-01-03T00:00:00Z</updated>
  <title type="text">&lt;script&gt;alert(1)&lt;/script&gt;Text title</title>
  <summary type="text">&lt;img src=x onerror=alert(1)&gt; text summary</summary>
  <content type="text">&lt;script&gt;alert(1)&lt;/script&gt; literal text content</content>
 </entry>
</feed>"""

XSS_JSON = json.dumps(
    {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "<script>alert(1)</script>Evil JSON",
        "home_page_url": "javascript:alert(1)",
        "authors": [{"name": "<img src=x onerror=alert(1)>Feed author"}],
        "items": [
            {
                "id": "json-html",
                "url": "javascript:alert(1)",
                "external_url": "data:text/html,<script>alert(1)</script>",
                "title": "<svg/onload=alert(1)>JSON title",
                "summary": "<script>alert(1)</script>json summary",
                "content_html": '<p onclick="alert(1)">x</p><script>alert(1)</script>'
                '<a href="javascript:alert(1)">j</a><img src="x" onerror="alert(1)">'
                '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
                "image": "javascript:alert(1)",
                "banner_image": "data:image/png;base64,AAAA",
                "authors": [{"name": "<b onmouseover=alert(1)>Eve</b>", "url": "javascript:x"}],
                "tags": ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"],
                "attachments": [
                    {"url": "javascript:alert(1)", "mime_type": "text/html"},
                    {"url": "https://example.org/a.mp3", "mime_type": "audio/mpeg<script>"},
                ],
                "date_published": "2024-01-01T00:00:00Z",
            },
            {
                "id": "json-text",
                "title": "json text",
                "content_text": "<script>alert(1)</script><img src=x onerror=alert(1)> text",
                "date_published": "2024-01-02T00:00:00Z",
            },
        ],
    }
).encode()

PLAIN_FIELDS = ("title", "summary", "author", "feed_title")
URL_FIELDS = ("url", "image")
DANGEROUS_TAGS = {
    "script", "style", "iframe", "frame", "object", "embed", "svg", "math", "form", "input",
    "base", "meta", "link", "noscript", "template", "textarea", "select", "button",
}  # fmt: skip


class _Audit(html.parser.HTMLParser):
    """Every tag and attribute in a content_html fragment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def audit_entry(entry: dict[str, Any]) -> list[str]:
    """What is unsafe in one stored entry (an empty list when it is clean)."""
    problems: list[str] = []
    text = json.dumps(entry, ensure_ascii=False)
    if re.search(r"<\s*script", text, re.IGNORECASE):
        problems.append("<script")
    for name in PLAIN_FIELDS:
        value = entry[name]
        if value is not None and re.search(r"<[a-zA-Z/!?]", value):
            problems.append(f"{name} has markup: {value!r}")
    for tag in entry["tags"]:
        if re.search(r"<[a-zA-Z/!?]", tag):
            problems.append(f"tag has markup: {tag!r}")
    urls = [entry[name] for name in URL_FIELDS] + [e["url"] for e in entry["enclosures"]]
    for url in urls:
        if url is not None and not re.match(r"https?://", url):
            problems.append(f"unsafe URL {url!r}")
    for enclosure in entry["enclosures"]:
        kind = enclosure["type"]
        if kind is not None and not re.fullmatch(r"[a-z0-9][\w!#$&^.+-]*/[\w!#$&^.+-]+", kind):
            problems.append(f"enclosure type {kind!r}")
    audit = _Audit()
    audit.feed(entry["content_html"] or "")
    audit.close()
    for tag, attrs in audit.tags:
        if tag in DANGEROUS_TAGS:
            problems.append(f"<{tag}> in content_html")
        for attr, value in attrs:
            if attr.startswith("on") or attr in ("style", "srcset", "srcdoc", "id", "name"):
                problems.append(f"{attr}= in <{tag}>")
            if attr in ("href", "src", "action", "formaction", "xlink:href"):
                link = re.sub(r"[\x00-\x20]", "", value or "").lower()
                if not link.startswith(("http://", "https://", "mailto:")):
                    problems.append(f"{attr}={value!r} in <{tag}>")
    return problems


async def test_xss_in_every_field_is_neutralized_end_to_end(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.routes["/rss"] = Route(200, XSS_RSS, RSS_TYPE)
    feed_server.routes["/atom"] = Route(200, XSS_ATOM, {"Content-Type": "application/atom+xml"})
    feed_server.routes["/json"] = Route(200, XSS_JSON, {"Content-Type": "application/feed+json"})
    feeds = [
        FeedConfig(id=name, url=f"{feed_server.url}/{name}", interval=60, limits=LIMITS)
        for name in ("rss", "atom", "json")
    ]
    async with running(make_config(tmp_path, *feeds)) as client:
        with trio.fail_after(10):
            while True:
                status = (await client.get("/api/feeds")).json()
                if all(feed["status"] != "new" for feed in status):
                    break
                await trio.sleep(0.05)
        assert [feed["status"] for feed in status] == ["ok", "ok", "ok"], status
        page = (await client.get("/api/entries", params={"limit": 500})).json()
    entries = page["entries"]
    assert sorted(entry["id"] for entry in entries) == [
        "atom:atom-html",
        "atom:atom-text",
        "atom:atom-xhtml",
        "json:json-html",
        "json:json-text",
        "rss:rss-xss-1",
    ]
    problems = {entry["id"]: audit_entry(entry) for entry in entries}
    assert all(not found for found in problems.values()), problems
    for feed in status:  # feed titles in /api/feeds are plain text too
        assert not re.search(r"<[a-zA-Z/!?]", feed["title"]), feed["title"]
    by_id = {entry["id"]: entry for entry in entries}
    # The harmless parts survive, so this is sanitizing, not dropping everything.
    rss_entry = by_id["rss:rss-xss-1"]
    assert rss_entry["title"] == "RSS title"
    assert "Hi <b>there</b>" in rss_entry["content_html"]
    assert (
        '<a href="https://example.org/ok" rel="noopener noreferrer nofollow">fine</a>'
        in (rss_entry["content_html"])
    )
    assert f'href="{feed_server.url}/relative"' in rss_entry["content_html"]
    assert [e["url"] for e in rss_entry["enclosures"]] == ["https://example.org/ok.mp3"]
    assert by_id["atom:atom-text"]["title"] == "Text title"
    json_entry = by_id["json:json-html"]
    assert json_entry["url"] is None  # javascript: and data: refused, nothing else offered
    assert json_entry["image"] == f"{feed_server.url}/x"  # the <img src="x"> of the content


# --- politeness: Retry-After per host, 410, 301 ------------------------------------------------


async def wait_status(
    client: httpx.AsyncClient, feed_id: str, predicate: Any, within: float = 10
) -> dict[str, Any]:
    with trio.fail_after(within):
        while True:
            for feed in (await client.get("/api/feeds")).json():
                if feed["id"] == feed_id and predicate(feed):
                    return dict(feed)
            await trio.sleep(0.05)


def parse_time(value: str) -> float:
    return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))


async def test_retry_after_pauses_the_whole_host_and_only_it(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    servers = [HostileServer() for _ in range(3)]
    for server in servers:
        await nursery.start(server.run)
    first, second, other = servers
    ok = reply(200, rss(("x", "fine")), RSS_TYPE)
    pause = 2.0
    # A 429 with delta seconds on one host, a 503 with an HTTP date on another; then fine.
    first.routes["/limited"] = sequence(
        reply(429, b"slow down", {"Retry-After": f"{pause:.0f}"}), ok
    )
    # trio time of a wall-clock instant (the hits are stamped with trio time)
    wall_offset = time.time() - trio.current_time()
    pause_until = float(int(time.time() + pause + 2))  # HTTP dates have whole seconds
    when = formatdate(pause_until, usegmt=True)
    second.routes["/limited"] = sequence(reply(503, b"maintenance", {"Retry-After": when}), ok)
    for server in servers:
        server.routes["/neighbour"] = ok
    assert host_of(f"{first.url}/x") != host_of(f"{second.url}/x")  # the gate keys on host:port

    def feed(server: HostileServer, path: str, feed_id: str) -> FeedConfig:
        return FeedConfig(id=feed_id, url=f"{server.url}{path}", interval=0.25, limits=LIMITS)

    config = make_config(
        tmp_path,
        feed(first, "/limited", "limited-429"),
        feed(first, "/neighbour", "neighbour-429"),
        feed(second, "/limited", "limited-503"),
        feed(second, "/neighbour", "neighbour-503"),
        feed(other, "/neighbour", "elsewhere"),
    )
    async with running(config) as client:
        with trio.fail_after(5):
            (hit429,) = await first.wait_for_hits("/limited", 1)
            (hit503,) = await second.wait_for_hits("/limited", 1)
        limited = await wait_status(client, "limited-429", lambda f: f["failures"] == 1)
        limited_503 = await wait_status(client, "limited-503", lambda f: f["failures"] == 1)
        await trio.sleep_until(max(hit429.time + pause, pause_until - wall_offset) + 1.5)
        feeds = {feed["id"]: feed for feed in (await client.get("/api/feeds")).json()}

    assert limited["status"] == "error" and limited["last_status"] == 429
    assert limited["last_error"] == "HTTP 429" and limited["failures"] == 1
    assert parse_time(limited["next_poll"]) - parse_time(limited["last_fetch"]) >= pause - 1
    assert limited_503["last_error"] == "HTTP 503" and limited_503["last_status"] == 503
    assert parse_time(limited_503["next_poll"]) >= pause_until - 1
    pause503 = pause_until - wall_offset - hit503.time
    assert pause503 > 1, pause503  # (less the time the server took to start)
    for server, hit, seconds in ((first, hit429, pause), (second, hit503, pause503)):
        # The answer is handled a few ms after the request came; from then on, nothing.
        quiet = [
            h.time - hit.time
            for h in server.hits
            if hit.time + 0.2 < h.time < hit.time + seconds - 0.1
        ]
        assert quiet == [], f"requests to a paused host at {quiet}"
        later = [h for h in server.hits_for("/neighbour") if h.time > hit.time + seconds - 0.1]
        assert later, "the host is polled again after the pause"
        assert len(server.hits_for("/limited")) >= 2  # and the limited feed itself recovers
    # Another host:port is another host: it was polled all along.
    during = [h for h in other.hits if hit429.time < h.time < hit429.time + pause - 0.1]
    assert len(during) >= 4, len(during)
    assert feeds["elsewhere"]["failures"] == 0
    assert feeds["limited-429"]["status"] == feeds["limited-503"]["status"] == "ok"  # recovered


async def test_retry_after_behind_a_redirect_pauses_the_host_that_answered(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    front, back = HostileServer(), HostileServer()
    await nursery.start(front.run)
    await nursery.start(back.run)
    front.routes["/feed"] = reply(302, headers={"Location": f"{back.url}/limited"})
    back.routes["/limited"] = reply(429, b"slow down", {"Retry-After": "30"})
    back.routes["/other"] = reply(200, rss(("o", "other")), RSS_TYPE)
    config = make_config(
        tmp_path,
        FeedConfig(id="redirected", url=f"{front.url}/feed", interval=60, limits=LIMITS),
        FeedConfig(id="other", url=f"{back.url}/other", interval=0.25, limits=LIMITS),
    )
    async with running(config):
        with trio.fail_after(5):
            (hit,) = await back.wait_for_hits("/limited", 1)
        await trio.sleep(2)
    late = [h.time - hit.time for h in back.hits_for("/other") if h.time > hit.time + 0.2]
    assert late == [], f"{len(late)} requests to the host that answered 429"


async def test_a_paused_host_does_not_starve_other_hosts(
    tmp_path: Path, nursery: trio.Nursery, feed_server: FeedServer
) -> None:
    paused = HostileServer()
    await nursery.start(paused.run)
    paused.routes["/limited"] = reply(429, b"slow down", {"Retry-After": "60"})
    paused.routes["/a"] = paused.routes["/b"] = reply(200, rss(("p", "p")), RSS_TYPE)
    feed_server.routes["/healthy"] = Route(200, rss(("h", "healthy")), RSS_TYPE)

    def feed(feed_id: str, url: str, interval: float) -> FeedConfig:
        return FeedConfig(id=feed_id, url=url, interval=interval, limits=LIMITS)

    config = make_config(
        tmp_path,
        feed("limited", f"{paused.url}/limited", 60),
        feed("a", f"{paused.url}/a", 0.25),
        feed("b", f"{paused.url}/b", 0.25),
        feed("healthy", f"{feed_server.url}/healthy", 0.25),
        max_fetches=2,  # the defaults (10 and 2) starve the same way with 5 paused hosts
        per_host_fetches=2,
    )
    async with running(config):
        with trio.fail_after(5):
            (hit,) = await paused.wait_for_hits("/limited", 1)
        await trio.sleep(2.5)
    healthy = [h for h in feed_server.hits_for("/healthy") if h.time > hit.time + 0.5]
    assert len(healthy) >= 4, f"the healthy feed was polled {len(healthy)} times in 2 s"


async def test_gone_stops_polling_for_good(tmp_path: Path, hostile: HostileServer) -> None:
    hostile.routes["/gone"] = reply(410, b"gone")
    feed = FeedConfig(id="gone", url=f"{hostile.url}/gone", interval=0.2, limits=LIMITS)
    config = make_config(tmp_path, feed)
    async with running(config) as client:
        state = await wait_status(client, "gone", lambda f: f["status"] != "new")
        await trio.sleep(1.0)  # five intervals
    assert state["status"] == "gone" and state["last_status"] == 410, state
    assert state["next_poll"] is None and state["last_error"] == "HTTP 410"
    assert len(hostile.hits_for("/gone")) == 1
    async with running(config) as client:  # and after a restart
        await trio.sleep(0.6)
        state = (await client.get("/api/feeds")).json()[0]
    assert state["status"] == "gone" and len(hostile.hits_for("/gone")) == 1


async def test_moved_permanently_updates_the_stored_url(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.routes["/old"] = Route(301, b"", {"Location": "/new"})
    feed_server.routes["/new"] = Route(200, rss(("m", "moved")), RSS_TYPE)
    feed = FeedConfig(id="moved", url=f"{feed_server.url}/old", interval=0.25, limits=LIMITS)
    async with running(make_config(tmp_path, feed)) as client:
        state = await wait_status(client, "moved", lambda f: f["status"] == "ok")
        with trio.fail_after(5):
            await feed_server.wait_for_hits("/new", 3)
        page = (await client.get("/api/entries")).json()
    assert state["url"] == f"{feed_server.url}/new" and state["failures"] == 0
    assert len(feed_server.hits_for("/old")) == 1  # later polls go straight to the new URL
    assert [entry["title"] for entry in page["entries"]] == ["moved"]


# --- everything at once: a healthy feed keeps delivering --------------------------------------


def hostile_routes(server: HostileServer, secret: Path) -> dict[str, Behaviour]:
    url = server.url
    return {
        "slowloris": dribble(rss(("s", "slow")), every=1.0),
        "silent": silent(),
        "stall": stall(),
        "endless": endless(),
        "big-declared": endless(length=60 * MB),
        "gzip-bomb": reply(200, gzip_bomb(10 * MB), {"Content-Encoding": "gzip"}),
        "deflate-bomb": reply(200, deflate_bomb(10 * MB), {"Content-Encoding": "deflate"}),
        "loop": reply(302, headers={"Location": f"{url}/loop"}),
        "ftp": reply(301, headers={"Location": "ftp://127.0.0.1/feed"}),
        "file": reply(302, headers={"Location": "file:///etc/passwd"}),
        "laughs": reply(200, billion_laughs(), RSS_TYPE),
        "xxe": reply(200, xxe(secret, f"{url}/evil.dtd"), RSS_TYPE),
        "garbage": reply(200, GARBAGE, RSS_TYPE),
        "html": reply(200, HTML_PAGE, {"Content-Type": "text/html"}),
        "empty": reply(200, b"", RSS_TYPE),
        "not-http": raw(b"\x00\x01\x02 hello\r\n\r\n"),
        "headers-flood": endless_headers(),
        "error-500": reply(500, b"Traceback (most recent call last): fake"),
        "limited": reply(429, b"", {"Retry-After": "2"}),
    }


async def test_healthy_feed_keeps_delivering_among_hostile_ones(
    tmp_path: Path, nursery: trio.Nursery, feed_server: FeedServer
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER\n")
    servers = [HostileServer() for _ in range(3)]  # 3 hosts x 2 per host < 10 fetches at once
    feeds: list[FeedConfig] = []
    for number, server in enumerate(servers):
        await nursery.start(server.run)
        server.routes.update(
            {f"/{name}": behaviour for name, behaviour in hostile_routes(server, secret).items()}
        )
        feeds += [
            FeedConfig(
                id=f"h{number}-{name}", url=f"{server.url}/{name}", interval=1, limits=LIMITS
            )
            for name in hostile_routes(server, secret)
        ]
    huge = HostileServer()  # a fourth host: 4 x 2 per host < 10 fetches at once
    await nursery.start(huge.run)
    huge.routes["/huge"] = reply(200, many_entries(5_000), RSS_TYPE)
    feeds.append(
        FeedConfig(
            id="huge",
            url=f"{huge.url}/huge",
            interval=1,
            limits=FetchLimits(timeout=10, max_bytes=4 * MB, max_entries=20),
        )
    )
    published = [("n0", "healthy 0")]
    feed_server.routes["/healthy"] = Route(200, rss(*published), RSS_TYPE)
    healthy = FeedConfig(id="healthy", url=f"{feed_server.url}/healthy", interval=0.5)
    responses: list[httpx.Response] = []

    async with running(make_config(tmp_path, *feeds, healthy)) as client:

        async def watch() -> None:  # the API keeps answering, never with a 5xx or a traceback
            while True:
                for path in ("/api/feeds", "/api/status", "/healthz", "/api/entries"):
                    responses.append(await client.get(path))
                await trio.sleep(0.2)

        async with trio.open_nursery() as watchers:
            watchers.start_soon(watch)
            with trio.fail_after(10):
                first = (await client.get("/api/entries", params={"feeds": "healthy"})).json()
                while not first["entries"]:
                    first = (
                        await client.get(
                            "/api/entries",
                            params={"feeds": "healthy", "after": first["cursor"], "timeout": 5},
                        )
                    ).json()
            cursor = first["cursor"]
            delays = []
            for round_ in range(1, 5):
                await trio.sleep(0.7)  # the hostile feeds keep at it in between
                published.append((f"n{round_}", f"healthy {round_}"))
                feed_server.routes["/healthy"] = Route(200, rss(*published), RSS_TYPE)
                start = trio.current_time()
                got: list[dict[str, Any]] = []
                with trio.fail_after(10):
                    while not got:
                        answer = await client.get(
                            "/api/entries",
                            params={"feeds": "healthy", "after": cursor, "timeout": 10},
                        )
                        assert answer.status_code == 200
                        page = answer.json()
                        got, cursor = page["entries"], page["cursor"]
                delays.append(trio.current_time() - start)
                assert [entry["title"] for entry in got] == [f"healthy {round_}"]
            status = (await client.get("/api/status")).json()
            states = {feed["id"]: feed for feed in (await client.get("/api/feeds")).json()}
            everything = (await client.get("/api/entries", params={"limit": 500})).json()
            watchers.cancel_scope.cancel()

    # The healthy feed: one interval (0.5 s) plus the fetch and a parse, even with 60 hostile
    # feeds failing around it.
    assert max(delays) < 2.0, delays
    assert states["healthy"]["status"] == "ok" and states["healthy"]["failures"] == 0
    # The loop never stalled for long (the server's own heartbeat).
    assert status["loop_lag"]["max_ms"] < 500, status["loop_lag"]
    # No 5xx, no traceback in anything feedstream answered.
    assert responses and all(r.status_code < 500 for r in responses)
    assert not any("Traceback" in r.text for r in responses)
    # Every hostile feed has a clear state, and none of them stored anything.
    for feed in feeds:
        state = states[feed.id]
        if feed.id == "huge":
            assert state["status"] == "ok" and state["entries_seen"] == 20, state
            continue
        name = feed.id.split("-", 1)[1]
        if name == "laughs" or name == "xxe":
            assert state["status"] in ("ok", "error", "new"), state
            continue
        assert state["status"] in ("error", "new"), state  # "new": never got a slot yet
        if state["status"] == "error":
            assert state["last_error"] and "internal error" not in state["last_error"], state
            assert state["failures"] >= 1 and state["next_poll"] is not None
            assert state["entries_seen"] == 0, state
    stored = everything["entries"]
    text = json.dumps(stored)
    assert "TOP-SECRET" not in text and "lollollol" not in text
    allowed = {"healthy", "huge"} | {f"h{n}-{x}" for n in range(3) for x in ("laughs", "xxe")}
    assert {entry["feed"] for entry in stored} <= allowed
    assert all(not audit_entry(entry) for entry in stored)
    for server in servers:
        assert server.hits_for("/evil.dtd") == []
