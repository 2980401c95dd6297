"""The poll loop on virtual time, with httpx.MockTransport standing in for the network."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
import trio_parallel

from feedstream.core.config import FeedConfig, FetchLimits
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import FeedState, Store
from feedstream.service.fetch import HostGate
from feedstream.service.parsing import parse_in_worker, parse_within
from feedstream.service.poller import PollContext, poll_once, run_feed
from tests.support.helpers import inline

EPOCH = 1_700_000_000.0


def atom(*keys: str) -> bytes:
    entries = "".join(
        f"<entry><id>urn:{k}</id><title>T {k}</title><updated>2024-01-01T00:00:0{i}Z</updated></entry>"
        for i, k in enumerate(keys)
    )
    return (
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>F</title><id>urn:f</id>'
        f"<updated>2024-01-01T00:00:00Z</updated>{entries}</feed>"
    ).encode()


class Recorder:
    """A MockTransport handler that records request times and answers from a script."""

    def __init__(self, answer: Callable[[httpx.Request, int], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[tuple[float, httpx.Request]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((trio.current_time(), request))
        return self.answer(request, len(self.requests))

    def times(self, path: str | None = None) -> list[float]:
        return [t for t, r in self.requests if path is None or r.url.path == path]


def virtual_context(client: httpx.AsyncClient, store: Store, **overrides: Any) -> PollContext:
    """A poll context for virtual time: inline offloads, wall clock tied to trio's, no jitter."""
    settings: dict[str, Any] = {
        "client": client,
        "log": SQLiteLog(store, store.snapshot(100), backlog=100, offload=inline),
        "store": store,
        "gate": HostGate(total=10, per_host=2, gap=0.0),
        "offload": inline,
        "parse": inline,
        "wall_clock": lambda: EPOCH + trio.current_time(),
        "jitter": lambda: 0.5,
    }
    return PollContext(**{**settings, **overrides})


@asynccontextmanager
async def polling(
    tmp_path: Path, recorder: Recorder, *feeds: FeedConfig
) -> AsyncIterator[PollContext]:
    store = Store(tmp_path / "db.sqlite3")
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        ctx = virtual_context(client, store)
        async with trio.open_nursery() as nursery:
            for feed in feeds:
                await nursery.start(run_feed, feed, ctx)
            yield ctx
            nursery.cancel_scope.cancel()


def feed(url: str = "https://a.test/feed", interval: float = 300, **kw: object) -> FeedConfig:
    return FeedConfig(id=kw.pop("id", "f"), url=url, interval=interval, **kw)  # type: ignore[arg-type]


async def test_interval_kept_and_etag_sent_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        if request.headers.get("if-none-match") == '"v1"':
            return httpx.Response(304)
        return httpx.Response(
            200,
            content=atom("a", "b"),
            headers={"ETag": '"v1"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"},
        )

    recorder = Recorder(answer)
    start = trio.current_time()
    async with polling(tmp_path, recorder, feed()) as ctx:
        await trio.sleep(1000)
        assert [t - start for t in recorder.times()] == [0, 300, 600, 900]
        sent = [r.headers.get("if-none-match") for _, r in recorder.requests]
        assert sent == [None, '"v1"', '"v1"', '"v1"']
        assert (
            recorder.requests[1][1].headers["if-modified-since"] == "Mon, 01 Jan 2024 00:00:00 GMT"
        )
        state = ctx.states["f"]
        assert (state.status, state.http_status, state.failures) == ("not_modified", 304, 0)
        assert state.next_poll == EPOCH + start + 1200
        assert ctx.log.counts() == {"f": 2}


async def test_no_drift_when_fetches_take_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        recorder.requests.append((trio.current_time(), request))
        await trio.sleep(7)
        return httpx.Response(200, content=atom("a"))

    recorder = Recorder(lambda r, n: httpx.Response(500))
    store = Store(tmp_path / "db.sqlite3")
    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
        ctx = virtual_context(client, store)
        with trio.move_on_after(1000):
            await run_feed(feed(interval=100), ctx)
    assert recorder.times() == pytest.approx(
        [0, 100, 200, 300, 400, 500, 600, 700, 800, 900], abs=1e-9
    )


async def test_failures_back_off_then_recover(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        return httpx.Response(500) if n <= 3 else httpx.Response(200, content=atom("a"))

    recorder = Recorder(answer)
    async with polling(tmp_path, recorder, feed(interval=60)) as ctx:
        await trio.sleep(60 + 120 + 240 + 60 + 1)
        assert recorder.times() == [0, 60, 180, 420, 480]
        assert ctx.states["f"].failures == 0 and ctx.states["f"].status == "ok"


async def test_unparseable_body_is_a_failure_with_a_reason(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    recorder = Recorder(
        lambda r, n: httpx.Response(
            200, content=b"<html><body>hello</body></html>", headers={"Content-Type": "text/html"}
        )
    )
    async with polling(tmp_path, recorder, feed()) as ctx:
        await trio.sleep(1)
        state = ctx.states["f"]
        assert state.status == "error" and state.failures == 1 and state.error
        assert ctx.log.counts() == {}


async def test_gone_stops_polling_and_survives_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    recorder = Recorder(lambda r, n: httpx.Response(410))
    async with polling(tmp_path, recorder, feed()) as ctx:
        await trio.sleep(10_000)
        assert recorder.times() == [0]
        assert ctx.states["f"].status == "gone"
    states = Store(tmp_path / "db.sqlite3").feed_states()
    assert states["f"].status == "gone"


async def test_permanent_redirect_updates_the_url(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        if request.url.path == "/old":
            return httpx.Response(301, headers={"Location": "https://a.test/new"})
        return httpx.Response(200, content=atom("a"))

    recorder = Recorder(answer)
    async with polling(tmp_path, recorder, feed("https://a.test/old")) as ctx:
        await trio.sleep(301)
        assert [r.url.path for _, r in recorder.requests] == ["/old", "/new", "/new"]
        assert ctx.states["f"].url == "https://a.test/new"


async def test_retry_after_holds_every_feed_on_the_host(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        if request.url.path == "/busy" and n == 1:
            return httpx.Response(429, headers={"Retry-After": "3600"})
        return httpx.Response(200, content=atom("x"))

    recorder = Recorder(answer)
    busy = feed("https://a.test/busy", interval=600, id="busy")
    neighbour = feed("https://a.test/calm", interval=600, id="calm")
    other_host = feed("https://b.test/calm", interval=600, id="elsewhere")
    async with polling(tmp_path, recorder, busy, neighbour, other_host):
        await trio.sleep(3700)
    assert recorder.times("/busy") == [0, 3600]
    assert recorder.times("/calm")[0] == 0  # b.test is not held back
    a_calm = [t for t, r in recorder.requests if r.url.host == "a.test" and r.url.path == "/calm"]
    assert all(t == 0 or t >= 3600 for t in a_calm), a_calm


async def test_restart_resumes_the_schedule(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = Store(tmp_path / "db.sqlite3")
    state = FeedState(
        id="f",
        source_url="https://a.test/feed",
        url="https://a.test/feed",
        status="ok",
        next_poll=EPOCH + 200,
    )
    store.save_feed_state(state)
    recorder = Recorder(lambda r, n: httpx.Response(200, content=atom("a")))
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        ctx = virtual_context(client, store, states=store.feed_states())
        start = trio.current_time()
        with trio.move_on_after(250):
            await run_feed(feed(), ctx)
    assert [t - start for t in recorder.times()] == [200]


async def test_parsing_runs_in_a_worker_process(tmp_path: Path) -> None:
    """By default the parse leaves this process: the event loop never waits on the GIL."""
    import os

    pids: list[int] = []

    async def spy(fn: Callable[..., object], *args: object) -> object:
        pids.append(await trio_parallel.run_sync(os.getpid))
        return await trio_parallel.run_sync(fn, *args)

    recorder = Recorder(lambda r, n: httpx.Response(200, content=atom("a", "b")))
    store = Store(tmp_path / "db.sqlite3")
    log = SQLiteLog(store, store.snapshot(10), backlog=10)
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        ctx = PollContext(client, log, store, HostGate(total=1, per_host=1, gap=0), parse=spy)
        assert PollContext(client, log, store, ctx.gate).parse is parse_in_worker
        with trio.fail_after(30):
            await poll_once(feed(), FeedState(id="f"), ctx)
    assert pids and pids[0] != os.getpid()
    assert log.counts() == {"f": 2}


async def test_unexpected_errors_do_not_end_the_task(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        if n == 1:
            raise RuntimeError("bug in a transport")
        return httpx.Response(200, content=atom("a"))

    recorder = Recorder(answer)
    async with polling(tmp_path, recorder, feed()) as ctx:
        await trio.sleep(301)
        assert recorder.times() == [0, 300]
        assert ctx.states["f"].status == "ok"


async def test_a_parse_that_overruns_is_abandoned(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async def stuck(fn: Callable[..., object], *args: object) -> object:
        await trio.sleep(3600)  # what a worker grinding through a hostile document looks like
        raise AssertionError("not reached")

    recorder = Recorder(lambda r, n: httpx.Response(200, content=atom("a")))
    store = Store(tmp_path / "db.sqlite3")
    limits = FetchLimits(parse_timeout=5)
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        ctx = virtual_context(client, store, parse=stuck)
        state = FeedState(id="f")
        start = trio.current_time()
        delay = await poll_once(feed(limits=limits), state, ctx)
    assert trio.current_time() - start == pytest.approx(5)
    assert state.status == "error" and state.error == "parsing took longer than 5 s; abandoned"
    assert delay == 300 and ctx.log.counts() == {}


async def test_parse_time_counts_from_a_free_slot_not_from_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(fn: Callable[..., object], *args: object) -> object:
        await trio.sleep(6)  # a worker taking its time over a good document
        return fn(*args)

    slots = trio.CapacityLimiter(1)
    limits = FetchLimits(parse_timeout=8)
    done: dict[str, tuple[object, float]] = {}

    async def parse(name: str) -> None:
        result = await parse_within(slow, slots, limits, str.upper, name)
        done[name] = (result, trio.current_time())

    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c"):
            nursery.start_soon(parse, name)
    # Each waited its turn (up to 12 s), none was cut at 8 s.
    assert {name: result for name, (result, _) in done.items()} == {"a": "A", "b": "B", "c": "C"}
    assert sorted(at for _, at in done.values()) == [6, 12, 18]
    limits = FetchLimits(parse_timeout=5)
    start = trio.current_time()
    assert await parse_within(slow, slots, limits, str.upper, "d") is None
    assert trio.current_time() - start == 5
