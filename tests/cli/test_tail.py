"""``feedstream tail``: the pure rules, the loop on virtual time, then against the real server."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio

from feedstream.cli.tail import (
    RESET_NOTE,
    Fatal,
    Page,
    Retry,
    TailOptions,
    entries_query,
    entries_url,
    format_entry,
    interpret,
    retry_delay,
    tail,
)
from tests.support.helpers import entry
from tests.support.servers import (
    PUSH_TOKEN,
    make_config,
    push_feed,
    running,
    status_until,
    with_port,
)

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {PUSH_TOKEN}", "Content-Type": "application/feed+json"}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# -- pure rules ----------------------------------------------------------------------------------


def test_entries_url_keeps_a_path_prefix() -> None:
    assert entries_url("http://h:8080") == "http://h:8080/api/entries"
    assert entries_url("https://h/feeds/") == "https://h/feeds/api/entries"


def test_entries_query() -> None:
    now = TailOptions(url="http://h")
    assert entries_query(None, now) == {"limit": "1"}  # only to learn the head cursor
    backlog = TailOptions(url="http://h", feeds=("a", "b"), backlog=20, timeout=10)
    assert entries_query(None, backlog) == {"feeds": "a,b", "limit": "20"}
    assert entries_query("c-5", backlog) == {
        "feeds": "a,b",
        "after": "c-5",
        "timeout": "10",
        "limit": "100",
    }


def test_interpret_pages() -> None:
    body = json.dumps({"cursor": "c-2", "entries": [{"id": "x"}], "reset": False}).encode()
    assert interpret(200, {}, body, 0) == Page("c-2", [{"id": "x"}], False)
    reset = json.dumps({"cursor": "c-9", "entries": [], "reset": True}).encode()
    assert interpret(200, {}, reset, 0) == Page("c-9", [], True)
    assert isinstance(interpret(200, {}, b"<html>", 0), Fatal)
    assert isinstance(interpret(200, {}, b'{"entries": []}', 0), Fatal)
    assert isinstance(interpret(200, {}, b'{"cursor": "c", "entries": [1]}', 0), Fatal)


def test_interpret_errors() -> None:
    unknown = json.dumps({"error": "feeds: unknown feed 'nope'"}).encode()
    assert interpret(400, {}, unknown, 0) == Fatal("HTTP 400: feeds: unknown feed 'nope'")
    assert interpret(404, {}, b"not found", 0) == Fatal("HTTP 404 Not Found")
    busy = json.dumps({"error": "too many listeners; retry shortly"}).encode()
    assert interpret(503, {"retry-after": "5"}, busy, 0) == Retry(
        "HTTP 503: too many listeners; retry shortly", 5.0
    )
    assert interpret(502, {}, b"", 0) == Retry("HTTP 502 Bad Gateway", None)
    assert interpret(429, {"retry-after": "Thu, 01 Jan 1970 00:01:40 GMT"}, b"", 40) == Retry(
        "HTTP 429 Too Many Requests", 60.0
    )
    assert interpret(301, {}, b"", 0) == Fatal("unexpected answer: HTTP 301 Moved Permanently")
    escape = json.dumps({"error": "bad\x1b[2J\nthing"}).encode()
    assert interpret(400, {}, escape, 0) == Fatal("HTTP 400: bad [2J thing")


def test_retry_delay_doubles_caps_and_respects_retry_after() -> None:
    options = TailOptions(url="http://h", min_backoff=1, max_backoff=30)
    assert [retry_delay(n, None, options, 0.5) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert retry_delay(1, None, options, 0.0) == 0.75 and retry_delay(1, None, options, 1) == 1.25
    assert retry_delay(1, 7, options, 0.5) == 7  # never sooner than the server asked
    assert retry_delay(6, 7, options, 0.5) == 30
    assert retry_delay(1, 86400, options, 0.5) == 600  # an absurd Retry-After is capped
    assert retry_delay(10**6, None, options, 0.5) == 30


def test_format_entry() -> None:
    item = entry(
        "news",
        "k",
        title="Hello  world",
        url="https://example.org/k",
        published="2024-05-01T10:00:00Z",
        updated="2024-05-02T10:00:00Z",
        received="2024-05-03T10:00:00Z",
    )
    assert format_entry(item) == "2024-05-01T10:00:00Z  news  Hello world  https://example.org/k"
    bare = entry("news", "k", title=None, received="2024-05-03T10:00:00Z")
    assert format_entry(bare) == "2024-05-03T10:00:00Z  news  (untitled)"
    assert format_entry(entry("news", "k")) == "-                     news  k"
    evil = entry("news", "k", title="a\x1b]0;owned\x07\nb", url=None)
    assert format_entry(evil) == "-                     news  a ]0;owned b"
    as_json = format_entry(item, as_json=True)
    assert "\n" not in as_json and json.loads(as_json) == item


# -- the loop on virtual time ------------------------------------------------------------------


class Lines:
    """A writer for tail that keeps the lines and lets a test wait for one."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = trio.Event()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, text: str, count: int = 1) -> list[str]:
        """Wait until *count* lines contain *text* (bound it with a cancel scope)."""
        while len(found := [line for line in self.lines if text in line]) < count:
            await self._changed.wait()
        return found


def page(cursor: str, *entries: dict[str, Any], reset: bool = False) -> httpx.Response:
    return httpx.Response(200, json={"cursor": cursor, "entries": list(entries), "reset": reset})


async def test_loop_backs_off_respects_retry_after_and_stops_on_4xx(
    autojump_clock: trio.abc.Clock,
) -> None:
    first = entry("news", "old", title="old")
    new = entry("news", "new", title="new", received="2024-05-01T10:00:00Z")
    script: list[Callable[[], httpx.Response]] = [
        lambda: page("db-1", first),  # the first look: learns the cursor, prints nothing
        lambda: (_ for _ in ()).throw(httpx.ConnectError("refused")),
        lambda: httpx.Response(
            503, json={"error": "too many listeners; retry shortly"}, headers={"Retry-After": "7"}
        ),
        lambda: httpx.Response(500, text="oops"),
        lambda: page("db-2", new),
        lambda: httpx.Response(400, json={"error": "after: not a cursor"}),
    ]
    requests: list[tuple[float, httpx.Request]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append((trio.current_time(), request))
        return script[len(requests) - 1]()

    out, err = Lines(), Lines()
    options = TailOptions(url="http://feeds.test", min_backoff=1, max_backoff=30)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        code = await tail(client, options, out, err, jitter=lambda: 0.5, wall_clock=lambda: 0)
    assert code == 1
    times = [at for at, _ in requests]
    assert [b - a for a, b in itertools.pairwise(times)] == [0, 1, 7, 4, 0]
    assert [r.url.params.get("after") for _, r in requests] == [
        None,
        "db-1",
        "db-1",
        "db-1",
        "db-1",
        "db-2",
    ]
    assert out.lines == ["2024-05-01T10:00:00Z  news  new"]
    assert err.lines == [
        "feedstream tail: cannot reach http://feeds.test: ConnectError: refused; retrying in 1.0 s",
        "feedstream tail: HTTP 503: too many listeners; retry shortly; retrying in 7.0 s",
        "feedstream tail: HTTP 500 Internal Server Error; retrying in 4.0 s",
        "feedstream tail: reconnected",
        "feedstream tail: HTTP 400: after: not a cursor",
    ]


# -- against the real server ---------------------------------------------------------------------


def json_feed(*items: tuple[str, str]) -> bytes:
    """A JSON Feed of undated *items*, given oldest first."""
    return json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "Pushed",
            "items": [
                {"id": key, "title": title, "url": f"https://example.org/{key}"}
                for key, title in reversed(items)
            ],
        }
    ).encode()


async def push(client: httpx.AsyncClient, feed: str, *items: tuple[str, str]) -> None:
    response = await client.post(f"/api/push/{feed}", content=json_feed(*items), headers=AUTH)
    assert response.status_code == 202, response.text


class Tail:
    """``tail`` running in a task, writing into :class:`Lines`."""

    def __init__(self, url: str, **options: Any) -> None:
        options.setdefault("min_backoff", 0.05)
        options.setdefault("max_backoff", 0.2)
        self.options = TailOptions(url=url, **options)
        self.out, self.err = Lines(), Lines()
        self.code: int | None = None
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        with self.scope:
            async with httpx.AsyncClient() as client:
                self.code = await tail(client, self.options, self.out, self.err, jitter=lambda: 0.5)

    def stop(self) -> None:
        """End the loop (as Ctrl-C would), closing its connection."""
        self.scope.cancel()


def base_url(client: httpx.AsyncClient) -> str:
    return f"http://127.0.0.1:{client.base_url.port}"


async def head(client: httpx.AsyncClient) -> str:
    cursor: str = (await client.get("/api/entries")).json()["cursor"]
    return cursor


async def test_tail_starts_from_now_and_prints_arrivals(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("hooks"))
    async with running(config) as client, trio.open_nursery() as nursery:
        await push(client, "hooks", ("old", "before tail started"))
        follower = Tail(base_url(client))
        nursery.start_soon(follower.run)
        with trio.fail_after(10):
            await status_until(client, lambda status: status["waiting"] >= 1)  # parked: from now
            await push(client, "hooks", ("n1", "first news"))
            await follower.out.wait_for("first news")
            await push(client, "hooks", ("n2", "second news"), ("n3", "third news"))
            await follower.out.wait_for("third news")
        nursery.cancel_scope.cancel()
    lines = [line.split("  ") for line in follower.out.lines]
    assert [parts[1:] for parts in lines] == [
        ["hooks", "first news", "https://example.org/n1"],
        ["hooks", "second news", "https://example.org/n2"],
        ["hooks", "third news", "https://example.org/n3"],
    ]
    assert all(RFC3339.match(parts[0].strip()) for parts in lines)  # undated: time received
    assert follower.err.lines == []


async def test_tail_backlog_shows_the_newest_first(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("hooks"))
    async with running(config) as client, trio.open_nursery() as nursery:
        await push(client, "hooks", ("a", "one"), ("b", "two"), ("c", "three"))
        follower = Tail(base_url(client), backlog=2)
        nursery.start_soon(follower.run)
        with trio.fail_after(10):
            await follower.out.wait_for("three")
            await push(client, "hooks", ("d", "four"))
            await follower.out.wait_for("four")
        nursery.cancel_scope.cancel()
    assert [line.split("  ")[2] for line in follower.out.lines] == ["two", "three", "four"]


async def test_tail_feed_filter_and_json(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("a"), push_feed("b"))
    async with running(config) as client, trio.open_nursery() as nursery:
        follower = Tail(base_url(client), feeds=("b",), after=await head(client), as_json=True)
        nursery.start_soon(follower.run)
        with trio.fail_after(10):
            await push(client, "a", ("x", "for a"))
            await push(client, "b", ("y", "for b"))
            await follower.out.wait_for('"for b"')
            await push(client, "a", ("x2", "for a again"))
            await push(client, "b", ("y2", "for b again"))
            await follower.out.wait_for('"for b again"')
        nursery.cancel_scope.cancel()
    entries = [json.loads(line) for line in follower.out.lines]
    assert [(e["feed"], e["id"], e["title"]) for e in entries] == [
        ("b", "b:y", "for b"),
        ("b", "b:y2", "for b again"),
    ]
    assert all(e["cursor"] and e["via"] == "push" for e in entries)


async def test_tail_notes_a_reset_and_continues(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("hooks"))
    async with running(config) as client, trio.open_nursery() as nursery:
        await push(client, "hooks", ("a", "one"), ("b", "two"))
        follower = Tail(base_url(client), after="0123456789abcdef-7")  # another database's
        nursery.start_soon(follower.run)
        with trio.fail_after(10):
            await follower.err.wait_for("reset")
            await follower.out.wait_for("two")
            await push(client, "hooks", ("c", "three"))
            await follower.out.wait_for("three")
        nursery.cancel_scope.cancel()
    assert follower.err.lines == [RESET_NOTE]
    assert [line.split("  ")[2] for line in follower.out.lines] == ["one", "two", "three"]


async def test_tail_exits_1_on_a_refused_request(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("hooks"))
    async with running(config) as client:
        follower = Tail(base_url(client), feeds=("hooks", "nope"))
        with trio.fail_after(10):
            await follower.run()
    assert follower.code == 1
    assert follower.err.lines == ["feedstream tail: HTTP 400: feeds: unknown feed 'nope'"]
    assert follower.out.lines == []


async def test_tail_reconnects_when_the_server_comes_back(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("hooks"))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            async with running(config) as client:
                port = client.base_url.port
                assert port is not None
                follower = Tail(base_url(client), after=await head(client))
                nursery.start_soon(follower.run)
                await push(client, "hooks", ("a", "before the restart"))
                await follower.out.wait_for("before the restart")
            # The server is gone: tail says so and keeps trying.
            await follower.err.wait_for("retrying in", count=2)
            async with running(with_port(config, port)) as client:
                await push(client, "hooks", ("b", "after the restart"))
                await follower.out.wait_for("after the restart")
                await follower.err.wait_for("reconnected")
                leaving = trio.current_time()
            # tail's parked long-poll was answered with Connection: close, so the shutdown did
            # not sit out hypercorn's 3 s graceful timeout for a re-sent one.
            assert trio.current_time() - leaving < 2
            follower.stop()
    assert [line.split("  ")[2] for line in follower.out.lines] == [
        "before the restart",
        "after the restart",
    ]
    retries = [line for line in follower.err.lines if "retrying in" in line]
    assert all(
        line.startswith("feedstream tail: cannot reach http://127.0.0.1:") for line in retries
    )
    assert not any("reset" in line for line in follower.err.lines)  # the cursor is still good


async def first_line(stdout: trio.abc.ReceiveStream) -> bytes:
    """What the process wrote until its first line ended (at least that line)."""
    output = b""
    while b"\n" not in output:
        chunk = await stdout.receive_some()
        assert chunk, "tail ended early"
        output += chunk
    return output


async def test_tail_command_prints_a_push_and_stops_quietly_on_ctrl_c(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("hooks"))
    async with running(config) as client:
        command = [sys.executable, "-m", "feedstream", "tail", "--url", base_url(client)]
        command += ["--after", await head(client)]
        process = await trio.lowlevel.open_process(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        try:
            with trio.fail_after(20):
                await push(client, "hooks", ("s", "seen by the process"))
                output = await first_line(process.stdout)
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 0
                errors = b""
                while chunk := await process.stderr.receive_some():
                    errors += chunk
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    fields = output.decode().rstrip("\n").split("  ")
    assert fields[1:] == ["hooks", "seen by the process", "https://example.org/s"]
    assert errors == b""  # no traceback, no noise


# -- a private server (read_token) ---------------------------------------------------------------

READ_TOKEN = "read-token-for-tail-0123"


def test_the_token_goes_in_a_header_and_not_in_repr() -> None:
    options = TailOptions(url="http://h", token=READ_TOKEN)
    assert options.headers() == {"Authorization": f"Bearer {READ_TOKEN}"}
    assert READ_TOKEN not in repr(options)
    assert READ_TOKEN not in str(entries_query("c-1", options))
    assert TailOptions(url="http://h").headers() == {}


def test_interpret_401_says_how_to_give_the_token() -> None:
    body = json.dumps({"error": "missing credentials: send Authorization: Bearer"}).encode()
    outcome = interpret(401, {}, body, 0)
    assert isinstance(outcome, Fatal)
    assert outcome.reason.startswith("HTTP 401: missing credentials")
    assert "--token or FEEDSTREAM_TOKEN" in outcome.reason


async def test_tail_reads_a_private_server_with_the_token(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("hooks"), read_token=READ_TOKEN)
    async with running(config) as client, trio.open_nursery() as nursery:
        client.headers["Authorization"] = f"Bearer {READ_TOKEN}"  # for status_until
        refused = Tail(base_url(client))
        with trio.fail_after(10):
            await refused.run()
        assert refused.code == 1
        assert refused.err.lines[0].startswith("feedstream tail: HTTP 401: missing credentials")
        follower = Tail(base_url(client), token=READ_TOKEN)
        nursery.start_soon(follower.run)
        with trio.fail_after(10):
            await status_until(client, lambda status: status["waiting"] >= 1)
            await push(client, "hooks", ("p", "private news"))
            await follower.out.wait_for("private news")
        nursery.cancel_scope.cancel()
    assert follower.err.lines == []


async def test_tail_command_takes_the_token_from_the_environment(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("hooks"), read_token=READ_TOKEN)
    async with running(config) as client:
        client.headers["Authorization"] = f"Bearer {READ_TOKEN}"
        command = [sys.executable, "-m", "feedstream", "tail", "--url", base_url(client)]
        command += ["--backlog", "1"]
        await push(client, "hooks", ("e", "seen with the variable"))
        env = {**os.environ, "FEEDSTREAM_TOKEN": READ_TOKEN}
        process = await trio.lowlevel.open_process(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        assert process.stdout is not None
        try:
            with trio.fail_after(20):
                output = await first_line(process.stdout)
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert b"seen with the variable" in output
        # --token wins over the variable; a wrong one is refused with the reason.
        wrong = await trio.run_process(
            [*command, "--token", "not-the-read-token"], cwd=ROOT, env=env, capture_stdout=True,
            capture_stderr=True, check=False,
        )  # fmt: skip
    assert wrong.returncode == 1
    assert wrong.stderr.decode().startswith("feedstream tail: HTTP 401: wrong credentials")
