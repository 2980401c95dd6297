"""WebSub end to end: an in-process hub and publisher on loopback, the real server.

The cases are numbered after the websub.rocks subscriber suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from feedstream.core.config import FeedConfig
from feedstream.log.store import Store
from tests.support.helpers import free_port, sample, scrape
from tests.support.hub import Hub
from tests.support.servers import FeedServer, Route, make_config, running

ATOM = "application/atom+xml"


@asynccontextmanager
async def websub_server(tmp_path: Path, *feeds: FeedConfig) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    config = make_config(tmp_path, *feeds, port=port, public_url=f"http://127.0.0.1:{port}")
    async with running(config) as client:
        yield client


def atom(links: str = "", *entries: tuple[str, str]) -> bytes:
    items = "".join(
        f"<entry><id>urn:{key}</id><title>{title}</title><updated>2024-01-01T00:00:0{i}Z</updated></entry>"
        for i, (key, title) in enumerate(entries)
    )
    return (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Topic</title>'
        f"<id>urn:topic</id><updated>2024-01-01T00:00:00Z</updated>{links}{items}</feed>"
    ).encode()


def rss(links: str) -> bytes:
    return (
        '<?xml version="1.0"?><rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">'
        f"<channel><title>Topic</title><link>https://example.org/</link>{links}"
        "<item><guid>r1</guid><title>R1</title></item></channel></rss>"
    ).encode()


def html(links: str) -> bytes:
    return f"<!doctype html><html><head><title>Topic</title>{links}</head><body>hi</body></html>".encode()


def discovery_route(case: str, hub: str, topic: str) -> Route:
    if case == "100-link-header":
        link = f'<{hub}>; rel="hub", <{topic}>; rel="self"'
        return Route(200, atom(), {"Content-Type": ATOM, "Link": link})
    if case == "101-html-tag":
        links = f'<link rel="hub" href="{hub}"><link rel="self" href="{topic}">'
        return Route(200, html(links), {"Content-Type": "text/html"})
    if case == "102-atom-tag":
        links = f'<link rel="hub" href="{hub}"/><link rel="self" href="{topic}"/>'
        return Route(200, atom(links), {"Content-Type": ATOM})
    assert case == "103-rss-tag"
    links = f'<atom:link rel="hub" href="{hub}"/><atom:link rel="self" href="{topic}"/>'
    return Route(200, rss(links), {"Content-Type": "application/rss+xml"})


async def feed_status(client: httpx.AsyncClient, feed_id: str = "topic") -> dict[str, Any]:
    feeds = (await client.get("/api/feeds")).json()
    return next(f for f in feeds if f["id"] == feed_id)


@pytest.mark.parametrize("case", ["100-link-header", "101-html-tag", "102-atom-tag", "103-rss-tag"])
async def test_discovery_and_subscription(
    case: str, tmp_path: Path, nursery: trio.Nursery, feed_server: FeedServer
) -> None:
    hub = await Hub(nursery).start()
    topic = f"{feed_server.url}/topic"
    feed_server.routes["/topic"] = discovery_route(case, hub.endpoint, topic)
    async with websub_server(tmp_path, FeedConfig(id="topic", url=topic, interval=60)) as client:
        with trio.fail_after(10):
            await hub.wait_for("verifications")
        form = hub.requests[0].form
        assert form["hub.mode"] == "subscribe" and form["hub.topic"] == topic
        assert form["hub.callback"].startswith(f"{str(client.base_url).rstrip('/')}/websub/")
        assert len(form["hub.callback"].rsplit("/", 1)[1]) >= 40  # unguessable
        assert form["hub.lease_seconds"] == str(10 * 86400)
        assert 0 < len(form["hub.secret"].encode()) < 200
        verification = hub.verifications[0]
        assert (verification.status, verification.body) == (200, verification.challenge)
        status = (await feed_status(client))["websub"]
        assert status["state"] == "active" and status["hub"] == hub.endpoint
        assert status["topic"] == topic and status["lease_expires"].endswith("Z")


async def test_104_headers_win_over_the_body(
    tmp_path: Path, nursery: trio.Nursery, feed_server: FeedServer
) -> None:
    hub = await Hub(nursery).start()
    topic = f"{feed_server.url}/topic"
    body_links = '<link rel="hub" href="http://127.0.0.1:9/not-this-hub"/><link rel="self" href="http://127.0.0.1:9/x"/>'
    feed_server.routes["/topic"] = Route(
        200,
        atom(body_links),
        {"Content-Type": ATOM, "Link": f'<{hub.endpoint}>; rel="hub", <{topic}>; rel="self"'},
    )
    async with websub_server(tmp_path, FeedConfig(id="topic", url=topic, interval=60)) as client:
        with trio.fail_after(10):
            await hub.wait_for("verifications")
        assert hub.requests[0].form["hub.topic"] == topic
        assert (await feed_status(client))["websub"]["hub"] == hub.endpoint


async def test_200_self_url_differs_from_fetched_url(
    tmp_path: Path, nursery: trio.Nursery, feed_server: FeedServer
) -> None:
    hub = await Hub(nursery).start()
    canonical = f"{feed_server.url}/canonical-topic"
    feed_server.routes["/topic"] = Route(
        200,
        atom(),
        {"Content-Type": ATOM, "Link": f'<{hub.endpoint}>; rel="hub", <{canonical}>; rel="self"'},
    )
    async with websub_server(
        tmp_path, FeedConfig(id="topic", url=f"{feed_server.url}/topic", interval=60)
    ) as client:
        with trio.fail_after(10):
            await hub.wait_for("verifications")
        assert hub.requests[0].form["hub.topic"] == canonical
        assert (await feed_status(client))["websub"]["topic"] == canonical


@pytest.mark.parametrize(("case", "status"), [("201-temporary", 302), ("202-permanent", 301)])
async def test_201_202_topic_redirects(
    case: str, status: int, tmp_path: Path, nursery: trio.Nursery, feed_server: FeedServer
) -> None:
    hub = await Hub(nursery).start()
    feed_server.routes["/topic"] = Route(status, b"", {"Location": "/moved"})
    feed_server.routes["/moved"] = Route(
        200, atom(), {"Content-Type": ATOM, "Link": f'<{hub.endpoint}>; rel="hub"'}
    )
    async with websub_server(
        tmp_path, FeedConfig(id="topic", url=f"{feed_server.url}/topic", interval=60)
    ) as client:
        with trio.fail_after(10):
            await hub.wait_for("verifications")
        assert hub.requests[0].form["hub.topic"] == f"{feed_server.url}/moved"
        assert (await feed_status(client))["websub"]["state"] == "active"


@pytest.mark.parametrize(("case", "status"), [("203-temporary", 307), ("204-permanent", 308)])
async def test_203_204_hub_redirects(
    case: str, status: int, tmp_path: Path, nursery: trio.Nursery, feed_server: FeedServer
) -> None:
    hub = await Hub(nursery, redirect=status).start()
    topic = f"{feed_server.url}/topic"
    feed_server.routes["/topic"] = Route(
        200, atom(), {"Content-Type": ATOM, "Link": f'<{hub.endpoint}>; rel="hub"'}
    )
    async with websub_server(tmp_path, FeedConfig(id="topic", url=topic, interval=60)) as client:
        with trio.fail_after(10):
            await hub.wait_for("verifications")
        assert [r.path for r in hub.requests] == ["/hub", "/hub-moved"]
        assert hub.requests[0].form == hub.requests[1].form  # the same request, re-posted
        assert (await feed_status(client))["websub"]["state"] == "active"
    endpoint = Store(tmp_path / "feedstream.sqlite3").subscriptions()["topic"].endpoint
    assert endpoint == (f"{hub.url}/hub-moved" if status == 308 else hub.endpoint)


async def test_205_verification_with_the_wrong_topic_is_404(
    tmp_path: Path, nursery: trio.Nursery, feed_server: FeedServer
) -> None:
    hub = await Hub(nursery, wrong_topic=True).start()
    topic = f"{feed_server.url}/topic"
    feed_server.routes["/topic"] = Route(
        200, atom(), {"Content-Type": ATOM, "Link": f'<{hub.endpoint}>; rel="hub"'}
    )
    async with websub_server(tmp_path, FeedConfig(id="topic", url=topic, interval=60)) as client:
        with trio.fail_after(10):
            await hub.wait_for("verifications")
        assert hub.verifications[0].status == 404
        assert hub.verifications[0].body != hub.verifications[0].challenge
        assert (await feed_status(client))["websub"]["state"] == "pending"


async def subscribed(tmp_path: Path, hub: Hub, feed_server: FeedServer) -> str:
    topic = f"{feed_server.url}/topic"
    feed_server.routes["/topic"] = Route(
        200,
        atom("", ("old", "Already there")),
        {"Content-Type": ATOM, "Link": f'<{hub.endpoint}>; rel="hub", <{topic}>; rel="self"'},
    )
    return topic


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha384", "sha512"])
async def test_300_signed_delivery_reaches_a_waiting_listener(
    algorithm: str, tmp_path: Path, nursery: trio.Nursery, feed_server: FeedServer
) -> None:
    hub = await Hub(nursery).start()
    topic = await subscribed(tmp_path, hub, feed_server)
    async with websub_server(tmp_path, FeedConfig(id="topic", url=topic, interval=60)) as client:
        with trio.fail_after(10):
            await hub.wait_for("verifications")
            start = (await client.get("/api/entries")).json()
            while not start["entries"]:  # the first poll's entry
                start = (
                    await client.get(
                        "/api/entries", params={"after": start["cursor"], "timeout": 5}
                    )
                ).json()
        [subscriber] = hub.subscribers.values()
        got: list[dict[str, Any]] = []

        async def listen() -> None:
            answer = await client.get(
                "/api/entries", params={"after": start["cursor"], "timeout": 10}
            )
            got.append(answer.json())

        async with trio.open_nursery() as inner:
            inner.start_soon(listen)
            await trio.sleep(0.2)
            pushed_at = trio.current_time()
            answer = await hub.publish(
                subscriber, atom("", ("new", "Pushed by the hub")), algorithm=algorithm
            )
            assert answer.status_code == 200
        assert trio.current_time() - pushed_at < 2
        [entry] = got[0]["entries"]
        assert (entry["title"], entry["via"], entry["feed"]) == (
            "Pushed by the hub",
            "websub",
            "topic",
        )
        status = (await feed_status(client))["websub"]
        assert status["last_push"] is not None and status["push_healthy"] is True
        metrics = scrape((await client.get("/metrics")).text)
    assert sample(metrics, "feedstream_websub_subscriptions", state="active") == 1
    assert sample(metrics, "feedstream_websub_subscriptions", state="pending") == 0
    assert sample(metrics, "feedstream_pushes_total", kind="websub", reason="accepted") == 1
    assert sample(metrics, "feedstream_entries_ingested_total", feed="topic", via="websub") == 1


@pytest.mark.parametrize(
    ("case", "signature", "expected"),
    [("301-bad-signature", "sha256=" + "0" * 64, 202), ("302-missing-signature", None, 403)],
)
async def test_301_302_bad_or_missing_signature_is_not_ingested(
    case: str,
    signature: str | None,
    expected: int,
    tmp_path: Path,
    nursery: trio.Nursery,
    feed_server: FeedServer,
) -> None:
    hub = await Hub(nursery).start()
    topic = await subscribed(tmp_path, hub, feed_server)
    async with websub_server(tmp_path, FeedConfig(id="topic", url=topic, interval=60)) as client:
        with trio.fail_after(10):
            await hub.wait_for("verifications")
        [subscriber] = hub.subscribers.values()
        before = (await client.get("/api/entries")).json()
        forged = atom("", ("forged", "Forged entry"))
        answer = await hub.publish(subscriber, forged, signature=signature, sign=False)
        assert answer.status_code == expected
        if signature is None:
            assert 400 <= answer.status_code < 500
        else:
            assert 200 <= answer.status_code < 300  # acknowledged, and ignored
        await trio.sleep(0.3)
        after = (
            await client.get("/api/entries", params={"after": before["cursor"], "timeout": 0})
        ).json()
        assert after["entries"] == []
        got = scrape((await client.get("/metrics")).text)
    reason = "signature_mismatch" if signature else "signature_missing"
    assert sample(got, "feedstream_pushes_total", kind="websub", reason=reason) == 1


async def test_unknown_callback_and_hostile_requests(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.routes["/topic"] = Route(200, atom(), {"Content-Type": ATOM})
    async with websub_server(
        tmp_path, FeedConfig(id="topic", url=f"{feed_server.url}/topic", interval=60)
    ) as client:
        assert (
            await client.get(
                "/websub/nope",
                params={"hub.mode": "subscribe", "hub.topic": "x", "hub.challenge": "c"},
            )
        ).status_code == 404
        assert (await client.post("/websub/nope", content=b"<feed/>")).status_code == 404
        assert (await client.get("/websub/nope")).status_code == 404


async def test_websub_off_without_public_url(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, FeedConfig(id="p", token="token-12345"))) as client:
        answer = await client.get("/websub/anything")
        assert answer.status_code == 404 and "public_url" in answer.json()["error"]
