"""The real server (hypercorn on loopback) against a local feed server and webhook pushes."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import trio

from feedstream.core.config import FeedConfig
from tests.support.documents import AUTH, atom, json_feed, push
from tests.support.helpers import sample, scrape
from tests.support.servers import (
    FeedServer,
    Route,
    make_config,
    push_feed,
    running,
    status_until,
)


async def collect(client: httpx.AsyncClient, count: int) -> dict[str, Any]:
    """Long-poll until *count* entries arrived; the answer holds all of them and the cursor."""
    with trio.fail_after(10):
        page = (await client.get("/api/entries")).json()
        entries = page["entries"]
        while len(entries) < count:
            params = {"after": page["cursor"], "timeout": 10}
            page = (await client.get("/api/entries", params=params)).json()
            entries += page["entries"]
    return {"cursor": page["cursor"], "entries": entries}


def titles(payload: dict[str, Any]) -> list[str]:
    return [e["title"] for e in payload["entries"]]


async def test_long_poll_wakes_on_push_and_resumes(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("hooks"), push_feed("other"))
    async with running(config) as client:
        first = (await client.get("/api/entries")).json()
        assert first["entries"] == [] and first["reset"] is False
        woke: list[tuple[float, dict[str, Any]]] = []

        async def listen() -> None:
            answer = await client.get(
                "/api/entries", params={"after": first["cursor"], "timeout": 20}
            )
            woke.append((trio.current_time(), answer.json()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await trio.sleep(0.3)  # the listener is parked by now
            pushed_at = trio.current_time()
            response = await push(client, "hooks", json_feed(("a1", "first")))
            assert response.status_code == 202 and response.json() == {"accepted": 1}
        at, payload = woke[0]
        assert at - pushed_at < 1.0
        assert titles(payload) == ["first"]
        entry = payload["entries"][0]
        assert entry["via"] == "push" and entry["feed"] == "hooks" and entry["id"] == "hooks:a1"
        assert entry["cursor"] == payload["cursor"]

        await push(client, "hooks", json_feed(("a2", "second"), ("a3", "third")))
        newer = (await client.get("/api/entries", params={"after": payload["cursor"]})).json()
        assert titles(newer) == ["second", "third"]

        # Nothing new: the long-poll times out with the same cursor and no entries.
        start = trio.current_time()
        idle = (
            await client.get("/api/entries", params={"after": newer["cursor"], "timeout": 0.5})
        ).json()
        assert idle == {"cursor": newer["cursor"], "entries": [], "reset": False}
        assert 0.4 < trio.current_time() - start < 3


async def test_feed_filter_and_reset(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("a"), push_feed("b"), backlog=5)
    async with running(config) as client:
        start = (await client.get("/api/entries")).json()["cursor"]
        waiting: list[dict[str, Any]] = []

        async def listen_b() -> None:
            answer = await client.get(
                "/api/entries", params={"after": start, "feeds": "b", "timeout": 20}
            )
            waiting.append(answer.json())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen_b)
            await trio.sleep(0.3)
            await push(client, "a", json_feed(("x", "for a")))
            await trio.sleep(0.3)
            assert waiting == []  # an entry of feed a does not end a wait for feed b
            await push(client, "b", json_feed(("y", "for b")))
        assert titles(waiting[0]) == ["for b"]

        both = (await client.get("/api/entries", params={"after": start, "feeds": "a,b"})).json()
        assert titles(both) == ["for a", "for b"]

        await push(client, "a", json_feed(*[(f"n{i}", f"n{i}") for i in range(8)]))
        reset = (await client.get("/api/entries", params={"after": start, "limit": 3})).json()
        assert reset["reset"] is True and titles(reset) == ["n5", "n6", "n7"]
        foreign = (await client.get("/api/entries", params={"after": "not-a-cursor"})).json()
        assert foreign["reset"] is True


async def test_polled_feed_reaches_listeners_and_uses_conditional_get(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.routes["/feed.xml"] = Route(
        200, atom(("p1", "polled one")), {"Content-Type": "application/atom+xml", "ETag": '"v1"'}
    )
    feed = FeedConfig(id="local", url=f"{feed_server.url}/feed.xml", interval=1)
    async with running(make_config(tmp_path, feed)) as client:
        payload = await collect(client, 1)
        entry = payload["entries"][0]
        assert entry["title"] == "polled one" and entry["via"] == "poll"
        assert entry["url"] == f"{feed_server.url}/posts/p1"  # made absolute
        assert entry["feed_title"] == "Local Atom"

        feed_server.routes["/feed.xml"] = Route(
            200,
            atom(("p1", "polled one"), ("p2", "polled two")),
            {"Content-Type": "application/atom+xml", "ETag": '"v2"'},
        )
        with trio.fail_after(10):
            answer = await client.get(
                "/api/entries", params={"after": payload["cursor"], "timeout": 10}
            )
        assert titles(answer.json()) == ["polled two"]  # p1 is not broadcast again
        hits = feed_server.hits_for("/feed.xml")
        assert hits[0].headers.get("if-none-match") is None
        assert any(hit.headers.get("if-none-match") == '"v1"' for hit in hits[1:])

        feeds = (await client.get("/api/feeds")).json()
        assert feeds[0]["id"] == "local" and feeds[0]["kind"] == "poll"
        assert feeds[0]["status"] in ("ok", "not_modified") and feeds[0]["last_status"] in (
            200,
            304,
        )
        assert feeds[0]["entries_seen"] == 2 and feeds[0]["next_poll"].endswith("Z")
        assert feeds[0]["title"] == "Local Atom"


async def test_restart_keeps_cursors_and_rebroadcasts_nothing(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.routes["/f"] = Route(
        200, atom(("r1", "one"), ("r2", "two")), {"Content-Type": "application/atom+xml"}
    )
    config = make_config(
        tmp_path, FeedConfig(id="local", url=f"{feed_server.url}/f", interval=1), push_feed("hooks")
    )
    async with running(config) as client:
        payload = await collect(client, 2)
        await push(client, "hooks", json_feed(("h1", "hook one")))
        before = (await client.get("/api/entries")).json()
    polls_before = len(feed_server.hits_for("/f"))

    async with running(config) as client:
        after_restart = (await client.get("/api/entries")).json()
        assert after_restart["cursor"] == before["cursor"]
        assert titles(after_restart) == ["one", "two", "hook one"]
        # Same documents again: the poll and the push are deduplicated, nothing is broadcast.
        assert (await push(client, "hooks", json_feed(("h1", "hook one")))).json() == {
            "accepted": 0
        }
        with trio.fail_after(10):
            await feed_server.wait_for_hits("/f", polls_before + 1)
        quiet = (
            await client.get("/api/entries", params={"after": before["cursor"], "timeout": 1.5})
        ).json()
        assert quiet["entries"] == [] and quiet["reset"] is False
        # An old cursor still resumes exactly.
        resumed = (
            await client.get("/api/entries", params={"after": payload["entries"][0]["cursor"]})
        ).json()
        assert titles(resumed) == ["two", "hook one"]


async def test_push_errors_are_clear_json(tmp_path: Path) -> None:
    signed = FeedConfig(id="signed", secret="hmac-key-1234")
    config = make_config(
        tmp_path,
        push_feed("hooks"),
        signed,
        FeedConfig(id="polled", url="http://127.0.0.1:9/x"),
        max_push_bytes=4096,
    )
    async with running(config) as client:
        body = json_feed(("s1", "signed one"))

        async def status(path: str, content: bytes, headers: dict[str, str]) -> tuple[int, str]:
            response = await client.post(path, content=content, headers=headers)
            assert response.headers["content-type"].startswith("application/json")
            return response.status_code, response.json().get("error", "")

        assert (await status("/api/push/nope", body, AUTH))[0] == 404
        assert (await status("/api/push/polled", body, AUTH))[0] == 403
        assert await status("/api/push/hooks", body, {"Content-Type": "application/feed+json"}) == (
            401,
            "missing credentials: send Authorization: Bearer or X-Hub-Signature",
        )
        assert (await status("/api/push/hooks", body, {**AUTH, "Authorization": "Bearer wrong"}))[
            0
        ] == 401
        assert (await status("/api/push/hooks", b"x" * 5000, AUTH))[0] == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for _ in range(5):
                yield b"x" * 1000

        streamed = await client.post("/api/push/hooks", content=chunks(), headers=AUTH)
        assert streamed.status_code == 413 and "4096-byte limit" in streamed.json()["error"]
        wrong_method = await client.get("/api/push/hooks")
        assert wrong_method.status_code == 405 and wrong_method.json()["error"]
        # Atom goes to a worker process, small JSON is read in place: both land.
        atom_push = await client.post(
            "/api/push/hooks",
            content=atom(("x1", "by atom")),
            headers={**AUTH, "Content-Type": "application/atom+xml"},
        )
        assert atom_push.status_code == 202 and atom_push.json() == {"accepted": 1}
        assert (await status("/api/push/hooks", body, {**AUTH, "Content-Type": "image/png"}))[
            0
        ] == 415
        code, reason = await status("/api/push/hooks", b"\x00\xffgarbage", AUTH)
        assert code == 422 and reason.startswith("unparseable body")

        good = hmac.new(b"hmac-key-1234", body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/feed+json", "X-Hub-Signature": f"sha256={good}"}
        assert (await status("/api/push/signed", body, headers))[0] == 202
        headers["X-Hub-Signature"] = "sha256=" + "0" * 64
        assert (await status("/api/push/signed", body, headers))[0] == 401


async def test_bad_query_parameters_are_400(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, push_feed("hooks"))) as client:
        for params in (
            {"timeout": "abc"},
            {"timeout": "61"},
            {"timeout": "nan"},
            {"limit": "0"},
            {"limit": "501"},
            {"limit": "1.5"},
            {"feeds": "unknown"},
            {"feeds": ","},
            {"after": ""},
            {"after": "x" * 200},
        ):
            response = await client.get("/api/entries", params=params)
            assert response.status_code == 400, params
            assert set(response.json()) == {"error"}
        ok = await client.get("/api/entries", params={"_": "123", "limit": "500"})
        assert ok.status_code == 200


async def test_headers_health_and_page(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, push_feed("hooks"))) as client:
        health = await client.get("/healthz")
        assert health.json() == {"ok": True}
        status = (await client.get("/api/status")).json()
        assert status["waiting"] == 0 and status["feeds"] == 1
        assert set(status["loop_lag"]) >= {"p50_ms", "p99_ms", "max_ms"}
        api = await client.get("/api/entries", headers={"Origin": "https://elsewhere.example"})
        assert api.headers["access-control-allow-origin"] == "*"
        assert api.headers["cache-control"] == "no-store"
        assert api.headers["x-content-type-options"] == "nosniff" and "server" not in api.headers
        assert "content-security-policy" not in api.headers  # JSON: no page policy needed
        preflight = await client.options(
            "/api/push/hooks",
            headers={"Origin": "https://x.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204
        assert "Authorization" in preflight.headers["access-control-allow-headers"]
        assert preflight.headers["access-control-allow-origin"] == "*"
        page = await client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        csp = page.headers["content-security-policy"]
        assert (
            "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        )
        missing = await client.get("/api/nothing")
        assert missing.status_code == 404 and "error" in missing.json()


async def test_metrics_after_real_traffic(tmp_path: Path, feed_server: FeedServer) -> None:
    xml = {"Content-Type": "application/atom+xml"}
    feed_server.routes["/good"] = Route(200, atom(("g1", "one")), {**xml, "ETag": '"v1"'})
    feed_server.routes["/broken"] = Route(200, b"<html>not a feed</html>", xml)
    polled = [
        FeedConfig(id=name, url=f"{feed_server.url}/{name}", interval=0.2)
        for name in ("good", "broken", "missing")
    ]
    config = make_config(tmp_path, push_feed("hooks"), push_feed("quiet"), *polled)
    async with running(config) as client:
        with trio.fail_after(10):
            await feed_server.wait_for_hits("/good", 2)  # 200, then 304
            await feed_server.wait_for_hits("/broken", 2)  # a second fetch: the first is counted
            await feed_server.wait_for_hits("/missing", 2)
            await status_until(client, lambda s: s["cursor"].endswith("-1"))
        start = (await client.get("/api/entries")).json()["cursor"]
        async with trio.open_nursery() as nursery:

            async def listen() -> None:
                await client.get("/api/entries", params={"after": start, "timeout": 10})

            nursery.start_soon(listen)
            with trio.fail_after(10):
                await status_until(client, lambda s: s["waiting"] == 1)
            await push(client, "hooks", json_feed(("m1", "one"), ("m2", "two")))
        await push(client, "hooks", json_feed(("m2", "two")))  # a duplicate counts once
        assert (await push(client, "hooks", b"{}", Authorization="Bearer wrong")).status_code == 401
        assert (await push(client, "nope", json_feed(("x", "x")))).status_code == 404
        assert (await push(client, "hooks", b"[1, 2")).status_code == 422
        async with client.stream("GET", "/api/stream", params={"after": start}) as stream:
            with trio.fail_after(10):
                await status_until(client, lambda s: s["waiting"] == 1)
            answer = await client.get("/metrics")
            assert stream.status_code == 200
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    got = scrape(answer.text)
    assert sample(got, "feedstream_entries_total", feed="hooks") == 2
    assert sample(got, "feedstream_entries_total", feed="quiet") == 0
    assert sample(got, "feedstream_entries_ingested_total", feed="hooks", via="push") == 2
    assert sample(got, "feedstream_entries_ingested_total", feed="good", via="poll") == 1
    assert sample(got, "feedstream_duplicate_entries_total", feed="hooks", kind="same_id") == 1
    assert sample(got, "feedstream_fetches_total", feed="good", outcome="ok") == 1
    assert sample(got, "feedstream_fetches_total", feed="good", outcome="not_modified") >= 1
    assert sample(got, "feedstream_fetches_total", feed="broken", outcome="not_a_feed") >= 1
    assert sample(got, "feedstream_fetches_total", feed="missing", outcome="http_4xx") >= 1
    fetches = sum(v for (name, _), v in got.items() if name == "feedstream_fetches_total")
    assert sample(got, "feedstream_fetch_duration_seconds_count") == fetches
    assert sample(got, "feedstream_fetch_duration_seconds_bucket", le="+Inf") == fetches
    assert sample(got, "feedstream_pushes_total", kind="webhook", reason="accepted") == 2
    for reason in ("unauthorized", "unknown_feed", "unparseable"):
        assert sample(got, "feedstream_pushes_total", kind="webhook", reason=reason) == 1
    # the accepted ones are timed, the refused ones are not
    assert sample(got, "feedstream_push_duration_seconds_count") == 2
    assert sample(got, "feedstream_push_duration_seconds_bucket", le="5.0") == 2
    assert 0 < sample(got, "feedstream_push_duration_seconds_sum") < 10
    assert sample(got, "feedstream_fanout_latency_seconds_count") == 1  # the woken long-poll
    assert sample(got, "feedstream_fanout_latency_seconds_bucket", le="5.0") == 1
    assert sample(got, "feedstream_waiting_listeners", kind="sse") == 1
    assert sample(got, "feedstream_waiting_listeners", kind="longpoll") == 0
    assert sample(got, "feedstream_event_loop_lag_seconds", quantile="0.99") >= 0
    assert sample(got, "feedstream_feed_failures", feed="missing") >= 1
    assert sample(got, "feedstream_websub_subscriptions", state="active") == 0
