"""Delivery endpoints on the real server: SSE, resume, filters, the listener cap, slow clients."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from feedstream.web import delivery
from tests.support.documents import json_feed, push
from tests.support.servers import make_config, push_feed, running, status_until


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parse a text/event-stream into dicts (comments come as {"comment": ...})."""
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value


async def take(
    source: AsyncIterator[dict[str, Any]], count: int, *, skip_comments: bool = True
) -> list[dict[str, Any]]:
    """The next *count* events of *source* (one :func:`events` iterator per response)."""
    found: list[dict[str, Any]] = []
    with trio.fail_after(10):
        async for event in source:
            if skip_comments and "comment" in event:
                continue
            found.append(event)
            if len(found) == count:
                break
    return found


async def test_sse_streams_entries_and_resumes_by_last_event_id(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, push_feed("a"), push_feed("b"))) as client:
        start = (await client.get("/api/entries")).json()["cursor"]
        async with client.stream("GET", "/api/stream", params={"after": start}) as response:
            received = events(response)
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-accel-buffering"] == "no"
            assert response.headers["cache-control"] == "no-store"
            await push(client, "a", json_feed(("1", "one"), ("2", "two")))
            first = await take(received, 2)
        assert [e["event"] for e in first] == ["entry", "entry"]
        assert [e["data"]["title"] for e in first] == ["one", "two"]
        assert [e["id"] for e in first] == [e["data"]["cursor"] for e in first]

        await push(client, "a", json_feed(("3", "three")))
        headers = {"Last-Event-ID": first[0]["id"]}
        async with client.stream("GET", "/api/stream", headers=headers) as response:
            received = events(response)
            resumed = await take(received, 2)
        assert [e["data"]["title"] for e in resumed] == ["two", "three"]


async def test_sse_filter_reset_and_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "HEARTBEAT", 0.2)
    async with running(make_config(tmp_path, push_feed("a"), push_feed("b"))) as client:
        async with client.stream("GET", "/api/stream", params={"after": "nonsense-7"}) as response:
            received = events(response)
            [reset] = await take(received, 1)
            assert reset["event"] == "reset" and reset["data"]["cursor"]
            [beat] = await take(received, 1, skip_comments=False)
            assert beat == {"comment": "heartbeat"}
        start = (await client.get("/api/entries")).json()["cursor"]
        async with client.stream(
            "GET", "/api/stream", params={"after": start, "feeds": "b"}
        ) as response:
            received = events(response)
            await push(client, "a", json_feed(("x", "for a")))
            await push(client, "b", json_feed(("y", "for b")))
            [only] = await take(received, 1)
        assert only["data"]["feed"] == "b"
        bad = await client.get("/api/stream", params={"feeds": "nope"})
        assert bad.status_code == 400 and "unknown feed" in bad.json()["error"]


async def test_sse_head_and_a_first_comment_come_at_once_on_a_quiet_stream(
    tmp_path: Path,
) -> None:
    # The server writes a head together with the first body chunk: an SSE stream with nothing
    # to send must still open at once, not at the first heartbeat (15 s).
    async with running(make_config(tmp_path, push_feed("a"))) as client:
        start = (await client.get("/api/entries")).json()["cursor"]
        with trio.fail_after(2):
            async with client.stream("GET", "/api/stream", params={"after": start}) as response:
                assert response.status_code == 200
                received = events(response)
                assert await take(received, 1, skip_comments=False) == [{"comment": "stream open"}]


async def test_listener_cap_answers_503_with_retry_after(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, push_feed("a"), max_listeners=2)) as client:
        cursor = (await client.get("/api/entries")).json()["cursor"]
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                params = {"after": cursor, "timeout": 5}
                nursery.start_soon(partial(client.get, "/api/entries", params=params))
            with trio.fail_after(5):
                await status_until(client, lambda status: status["waiting"] >= 2)
            refused = await client.get("/api/entries", params={"after": cursor, "timeout": 5})
            assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
            assert "too many listeners" in refused.json()["error"]
            await push(client, "a", json_feed(("1", "wake up")))  # releases the two
        ok = await client.get("/api/entries", params={"after": cursor, "timeout": 0})
        assert ok.status_code == 200


async def test_entries_preflight_and_methods(tmp_path: Path) -> None:
    async with running(
        make_config(tmp_path, push_feed("a"), cors_origins=["https://app.example"])
    ) as client:
        preflight = await client.options("/api/entries", headers={"Origin": "https://app.example"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "Last-Event-ID" in preflight.headers["access-control-allow-headers"]
        other = await client.get("/api/entries", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        assert (await client.post("/api/entries")).status_code == 405


async def test_a_slow_sse_client_is_dropped_without_hurting_others(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("a"), sse_buffer_bytes=256 * 1024, backlog=5000)
    async with running(config) as client:
        host, port = client.base_url.host, client.base_url.port
        assert port is not None
        slow = trio.socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with slow:  # closed before the server stops: its last write is stuck until then
            await slow.connect((host, port))
            await slow.send(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")  # never read again
            with trio.fail_after(5):
                await status_until(client, lambda status: status["waiting"] >= 1)
            cursor = (await client.get("/api/entries")).json()["cursor"]
            big = "x" * 20_000
            delivered_at: list[float] = []
            for batch in range(20):
                body = json_feed(*[(f"{batch}-{i}", f"{big} {batch}-{i}") for i in range(20)])
                start = trio.current_time()
                assert (await push(client, "a", body)).status_code == 202
                params = {"after": cursor, "timeout": 5, "limit": 500}
                answer = await client.get("/api/entries", params=params)
                delivered_at.append(trio.current_time() - start)
                cursor = answer.json()["cursor"]
            # The stuck client never held anyone up: held up, a delivery would wait for the
            # client to be dropped (seconds of buffered writes) or forever. Each push here is
            # 400 KB parsed in a worker, which alone can take most of a second on a busy
            # 2-core machine, hence the margin.
            assert max(delivered_at) < 3.0
            with trio.fail_after(5):  # and it was let go
                await status_until(client, lambda status: status["waiting"] == 0)
