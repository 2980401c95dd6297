"""feedstream's own WebSub hub in the real server: ``POST /websub/hub``, the ``Link`` headers
and document links of the output feeds, ``GET /api/hub``, ``/metrics``; and two feedstream
servers, the second subscribed to the first's ``/feeds/all.atom`` through WebSub."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import feedparser
import trio

from feedstream.core.config import Config, FeedConfig, HubConfig
from feedstream.websub.hub import signature
from tests.support.callbacks import Callbacks
from tests.support.documents import push
from tests.support.helpers import free_port, scrape
from tests.support.servers import make_config, push_feed, running, status_until
from tests.web.test_publish import STREAMS, items

ADMIN = "admin-token-0123456789"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def hub_config(tmp_path: Path, *feeds: FeedConfig, enabled: bool = True, **server: Any) -> Config:
    port = free_port()
    base = make_config(
        tmp_path,
        *(feeds or (push_feed("a", title="Feed A"), push_feed("b"))),
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        admin_token=ADMIN,
        **server,
    )
    hub = HubConfig(enabled=enabled, min_lease=60, allow_private_callbacks=True)
    return dataclasses.replace(base, hub=hub, streams=STREAMS)


def subscribe(topic: str, callback: str, **more: str) -> dict[str, str]:
    return {"hub.mode": "subscribe", "hub.topic": topic, "hub.callback": callback, **more}


async def test_output_feeds_name_the_hub_and_themselves(tmp_path: Path) -> None:
    config = hub_config(tmp_path)
    root = config.server.public_url
    async with running(config) as client:
        for format in ("atom", "rss", "json"):
            answer = await client.get(f"/feeds/all.{format}")
            assert answer.status_code == 200
            assert answer.headers.get_list("Link") == [
                f'<{root}/websub/hub>; rel="hub"',
                f'<{root}/feeds/all.{format}>; rel="self"',
            ]
            again = await client.get(
                f"/feeds/all.{format}", headers={"If-None-Match": answer.headers["ETag"]}
            )
            assert again.status_code == 304 and len(again.headers.get_list("Link")) == 2
            if format == "json":
                hubs = json.loads(answer.content)["hubs"]
                assert hubs == [{"type": "WebSub", "url": f"{root}/websub/hub"}]
            else:
                links = {(x.rel, x.href) for x in feedparser.parse(answer.content).feed.links}
                assert ("hub", f"{root}/websub/hub") in links
                assert ("self", f"{root}/feeds/all.{format}") in links


async def test_no_hub_no_links_and_a_404(tmp_path: Path) -> None:
    async with running(hub_config(tmp_path, enabled=False)) as client:
        answer = await client.get("/feeds/all.atom")
        assert "Link" not in answer.headers and b"websub/hub" not in answer.content
        refused = await client.post("/websub/hub", data=subscribe("x", "http://127.0.0.1/"))
        assert refused.status_code == 404 and "hub is off" in refused.json()["error"]
        listed = await client.get("/api/hub", headers={"Authorization": f"Bearer {ADMIN}"})
        assert listed.status_code == 404


async def test_requests_refused_with_a_reason(tmp_path: Path) -> None:
    config = hub_config(tmp_path)
    root = config.server.public_url
    async with running(config) as client:
        cases: list[tuple[dict[str, str], int, str]] = [
            ({"hub.mode": "nope"}, 400, "hub.mode"),
            (subscribe(f"{root}/feeds/all.atom", "ftp://x/"), 400, "hub.callback"),
            (subscribe(f"{root}/feeds/nothing.atom", "http://127.0.0.1:9/"), 404, "hub.topic"),
            (subscribe("https://elsewhere.example/feed", "http://127.0.0.1:9/"), 404, "hub.topic"),
        ]
        for form, status, reason in cases:
            answer = await client.post("/websub/hub", data=form)
            assert answer.status_code == status, (form, answer.text)
            assert answer.json()["error"].startswith(reason)
        wrong_type = await client.post(
            "/websub/hub", content=b"{}", headers={"Content-Type": "application/json"}
        )
        assert wrong_type.status_code == 415
        assert (await client.get("/websub/hub")).status_code == 405
        assert (await client.get("/api/hub")).status_code == 401


async def test_subscribe_verify_distribute_list_and_count(tmp_path: Path) -> None:
    config = hub_config(tmp_path)
    root = config.server.public_url
    async with trio.open_nursery() as nursery:
        callbacks = await Callbacks(nursery).start()
        async with running(config) as client:
            topic = f"{root}/feeds/a.json"
            form = subscribe(topic, f"{callbacks.url}/ok?mine=1", **{"hub.secret": "s3cret"})
            answer = await client.post("/websub/hub", data=form)
            assert answer.status_code == 202, answer.text
            (check,) = await callbacks.wait("/ok", "GET")
            assert dict(check.query)["mine"] == "1"
            assert dict(check.query)["hub.topic"] == topic
            admin = {"Authorization": f"Bearer {ADMIN}"}

            async def hub_state() -> str:
                return str(
                    (await client.get("/api/hub", headers=admin)).json()["subscriptions"][0][
                        "state"
                    ]
                )

            with trio.fail_after(5):
                while await hub_state() != "active":  # noqa: ASYNC110 - watched from outside
                    await trio.sleep(0.01)
            listing = (await client.get("/api/hub", headers=admin)).json()
            assert listing["hub"] == f"{root}/websub/hub"
            (sub,) = listing["subscriptions"]
            assert (sub["topic"], sub["signed"]) == (topic, True)
            assert "s3cret" not in json.dumps(listing)
            # an entry pushed to feed a reaches the subscriber as a JSON Feed, signed
            assert (await push(client, "a", items("fresh"))).status_code == 202
            (delivery,) = await callbacks.wait("/ok", "POST")
            assert delivery.headers["content-type"].startswith("application/feed+json")
            assert delivery.headers["x-hub-signature"] == signature("s3cret", delivery.body)
            assert f'<{root}/websub/hub>; rel="hub"' in delivery.headers["link"]
            assert [i["title"] for i in json.loads(delivery.body)["items"]] == ["fresh"]
            # pushed to feed b: not this topic (checked below, once the first was counted)
            assert (await push(client, "b", items("other", feed="b"))).status_code == 202
            metrics = scrape((await client.get("/metrics")).text)
            state = frozenset({("state", "active")})
            assert metrics[("feedstream_hub_subscriptions", state)] == 1
            ok = frozenset({("outcome", "ok")})

            def delivered(text: str) -> float | None:
                return scrape(text).get(("feedstream_hub_deliveries_total", ok))

            with trio.fail_after(5):
                while delivered((await client.get("/metrics")).text) != 1:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert len(callbacks.of("/ok", "POST")) == 1
        nursery.cancel_scope.cancel()


async def test_a_second_feedstream_subscribes_through_websub(tmp_path: Path) -> None:
    """The issue's end to end: B polls A's /feeds/all.atom once, finds A's hub in the Link
    headers, subscribes; an entry pushed into A reaches a long-poll on B in under a second."""
    first = hub_config(tmp_path / "a")
    upstream = f"{first.server.public_url}/feeds/all.atom"
    port = free_port()
    second = make_config(
        tmp_path / "b",
        FeedConfig(id="up", url=upstream, interval=3600),
        port=port,
        public_url=f"http://127.0.0.1:{port}",
    )
    async with running(first) as a, running(second) as b:
        with trio.fail_after(10):
            while True:
                feeds = (await b.get("/api/feeds")).json()
                websub = feeds[0]["websub"]
                if websub is not None and websub.get("state") == "active":
                    break
                await trio.sleep(0.02)
        cursor = (await b.get("/api/entries")).json()["cursor"]
        async with trio.open_nursery() as nursery:
            got: list[Any] = []

            async def long_poll() -> None:
                params = {"after": cursor, "timeout": 10}
                got.append((await b.get("/api/entries", params=params)).json())

            nursery.start_soon(long_poll)
            await status_until(b, lambda status: status["waiting"] >= 1)
            start = trio.current_time()
            assert (await push(a, "a", items("through the hub"))).status_code == 202
        elapsed = trio.current_time() - start
        (answer,) = got
        assert [e["title"] for e in answer["entries"]] == ["through the hub"]
        assert answer["entries"][0]["feed"] == "up"
        assert answer["entries"][0]["via"] == "websub"
        assert elapsed < 1.0, elapsed
