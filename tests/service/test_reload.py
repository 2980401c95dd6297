"""Reloading the feed list while the server runs: the pure diff, then the real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from feedstream.core.config import (
    Config,
    ConfigError,
    FeedConfig,
    ServerConfig,
    compare,
    load_config,
)
from feedstream.core.httprules import ApiError, check_admin_auth
from tests.support.documents import atom, json_feed, push
from tests.support.helpers import free_port, sample, scrape
from tests.support.hub import Hub
from tests.support.servers import PUSH_TOKEN, FeedServer, Route, running
from tests.websub.test_websub_integration import ATOM

ADMIN = "admin-token-0123456789"


def test_compare_sorts_feeds_into_added_removed_changed_unchanged() -> None:
    a, b, c = (
        FeedConfig("a", url="https://a.org/f"),
        FeedConfig("b", token="t" * 8),
        FeedConfig("c"),
    )
    old = Config(feeds=(a, b, c))
    b2 = FeedConfig("b", token="u" * 8)
    d = FeedConfig("d", url="https://d.org/f")
    new = Config(server=ServerConfig(port=9999, backlog=7), feeds=(d, b2, c))
    changes = compare(old, new)
    assert changes.summary() == {
        "added": ["d"],
        "removed": ["a"],
        "changed": ["b"],
        "unchanged": ["c"],
        "restart_needed": ["port", "backlog"],
        "rules_changed": False,
        "streams_changed": False,
    }
    assert changes.changed == (b2,)
    assert compare(old, old).summary()["unchanged"] == ["a", "b", "c"]


def test_admin_auth() -> None:
    with pytest.raises(ApiError) as off:
        check_admin_auth(None, f"Bearer {ADMIN}")
    assert off.value.status == 404
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(ApiError) as missing:
            check_admin_auth(ADMIN, header)
        assert (missing.value.status, missing.value.reason.split(":")[0]) == (
            401,
            "missing credentials",
        )
    with pytest.raises(ApiError) as wrong:
        check_admin_auth(ADMIN, "Bearer admin-token-012345678X")
    assert wrong.value.reason == "wrong credentials"
    check_admin_auth(ADMIN, f"bearer  {ADMIN} ")


def test_admin_token_must_be_long(tmp_path: Path) -> None:
    path = tmp_path / "feeds.toml"
    path.write_text('[server]\nadmin_token = "short"\n')
    with pytest.raises(ConfigError, match=r"feeds.toml:2: server.admin_token: must be at least 16"):
        load_config(path)


def toml(*feeds: str, server: str = "") -> str:
    head = f'[server]\nadmin_token = "{ADMIN}"\nhost_gap = 0\n{server}\n'
    return head + "".join(f"\n[[feeds]]\n{feed}\n" for feed in feeds)


def pushed(feed_id: str) -> str:
    return f'id = "{feed_id}"\ntoken = "{PUSH_TOKEN}"'


def polled(feed_id: str, url: str, interval: int = 60) -> str:
    return f'id = "{feed_id}"\nurl = "{url}"\ninterval = {interval}'


async def reload(client: httpx.AsyncClient, token: str = ADMIN) -> httpx.Response:
    return await client.post("/api/admin/reload", headers={"Authorization": f"Bearer {token}"})


async def feed_ids(client: httpx.AsyncClient) -> list[str]:
    return [feed["id"] for feed in (await client.get("/api/feeds")).json()]


async def test_admin_reload_adds_removes_and_restarts_feeds_under_a_parked_long_poll(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    xml = {"Content-Type": "application/atom+xml"}
    feed_server.routes["/b"] = feed_server.routes["/b2"] = Route(200, atom(("b1", "from b")), xml)
    feed_server.routes["/c"] = Route(200, atom(), xml)  # no entries: only d's push wakes
    path = tmp_path / "feeds.toml"
    path.write_text(toml(pushed("a"), polled("b", f"{feed_server.url}/b")))
    config = load_config(path)
    async with running(config, loader=lambda: load_config(path)) as client:
        with trio.fail_after(10):
            await feed_server.wait_for_hits("/b", 1)
            page = (await client.get("/api/entries")).json()
            while not page["entries"]:
                page = (await client.get("/api/entries", params={"after": page["cursor"]})).json()
        cursor = page["cursor"]
        answers: list[dict[str, Any]] = []

        async def listen() -> None:
            params = {"after": cursor, "timeout": 30}
            answers.append((await client.get("/api/entries", params=params)).json())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            with trio.fail_after(10):
                while (await client.get("/api/status")).json()["waiting"] != 1:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            path.write_text(
                toml(
                    polled("b", f"{feed_server.url}/b2", interval=120),  # changed: restarts
                    polled("c", f"{feed_server.url}/c"),  # added
                    pushed("d"),  # added
                )  # "a" removed
            )
            assert (await client.post("/api/admin/reload")).status_code == 401
            assert (await reload(client, "wrong-token-0123456789")).status_code == 401
            answer = await reload(client)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {
                "added": ["c", "d"],
                "removed": ["a"],
                "changed": ["b"],
                "unchanged": [],
                "restart_needed": [],
                "rules_changed": False,
                "streams_changed": False,
            }
            assert answers == []  # the listener is still parked, on the same connection
            assert (await client.get("/api/status")).json()["waiting"] == 1
            assert await feed_ids(client) == ["b", "c", "d"]
            assert (await push(client, "a", json_feed(("a1", "gone")))).status_code == 404
            with trio.fail_after(10):
                await feed_server.wait_for_hits("/c", 1)
                await feed_server.wait_for_hits("/b2", 1)  # restarted at its new URL
            assert (await push(client, "d", json_feed(("d1", "hello from d")))).status_code == 202
        [woken] = answers
        assert [(e["feed"], e["title"]) for e in woken["entries"]] == [("d", "hello from d")]
        # The removed feed's history stays readable, and a filter naming it is still valid.
        old = await client.get("/api/entries", params={"feeds": "a,b"})
        assert old.status_code == 200


async def test_admin_reload_refuses_a_broken_config_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "feeds.toml"
    path.write_text(toml(pushed("a")))
    async with running(load_config(path), loader=lambda: load_config(path)) as client:
        path.write_text(toml(pushed("a"), 'id = "b"\ninterval = "often"\ntoken = "x"'))
        answer = await reload(client)
        assert answer.status_code == 422
        assert answer.json()["error"].startswith(f"config error, nothing changed: {path}:")
        assert "interval" in answer.json()["error"]
        assert await feed_ids(client) == ["a"]
        got = scrape((await client.get("/metrics")).text)
        assert sample(got, "feedstream_config_reloads_total", result="error") == 1
        assert sample(got, "feedstream_config_reloads_total", result="ok") == 0
        path.write_text(toml(pushed("a"), pushed("b"), server="port = 1"))
        answer = await reload(client)
        assert answer.json()["restart_needed"] == ["port"]
        assert await feed_ids(client) == ["a", "b"]
        assert (await client.get("/healthz")).status_code == 200  # still on its first port


async def test_admin_api_is_off_without_a_token_or_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "feeds.toml"
    path.write_text(f"[[feeds]]\n{pushed('a')}\n")
    async with running(load_config(path), loader=lambda: load_config(path)) as client:
        answer = await reload(client)
        assert answer.status_code == 404 and "admin_token" in answer.json()["error"]
    path.write_text(toml(pushed("a")))
    async with running(load_config(path)) as client:  # no loader: not from a file
        answer = await reload(client)
        assert answer.status_code == 409 and "config file" in answer.json()["error"]


async def test_reload_removing_a_websub_feed_unsubscribes_from_its_hub(
    tmp_path: Path, nursery: trio.Nursery, feed_server: FeedServer
) -> None:
    hub = await Hub(nursery).start()
    topic = f"{feed_server.url}/topic"
    feed_server.routes["/topic"] = Route(
        200, atom(("t1", "topic")), {"Content-Type": ATOM, "Link": f'<{hub.endpoint}>; rel="hub"'}
    )
    port = free_port()
    server = f'port = {port}\npublic_url = "http://127.0.0.1:{port}"'
    path = tmp_path / "feeds.toml"
    path.write_text(toml(polled("topic", topic), pushed("keep"), server=server))
    async with running(load_config(path), loader=lambda: load_config(path)) as client:
        with trio.fail_after(10):
            await hub.wait_for("verifications")
        assert hub.subscribers and hub.verifications[0].mode == "subscribe"
        path.write_text(toml(pushed("keep"), server=server))
        assert (await reload(client)).json()["removed"] == ["topic"]
        with trio.fail_after(10):
            await hub.wait_for("verifications", 2)
        unsubscribe = hub.verifications[1]
        assert (unsubscribe.mode, unsubscribe.status) == ("unsubscribe", 200)
        assert hub.subscribers == {}
        with trio.fail_after(10):
            while (await client.get("/metrics")).text.count('state="active"} 1.0'):  # noqa: ASYNC110
                await trio.sleep(0.02)
