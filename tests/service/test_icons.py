"""Looking for feed icons against a feed server on loopback: every kind of icon, and every way
an icon is refused. Nothing here leaves 127.0.0.1 (``localhost`` stands for "another host")."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from feedstream.core.config import FeedConfig, ServerConfig
from feedstream.core.icons import generated_icon, icon_etag
from feedstream.log.icons import IconRecord, SQLiteIcons
from feedstream.log.state import LogUnavailable
from feedstream.service.icons import REFRESH, RETRY_BASE, FeedTrust, IconKeeper, Icons
from tests.core.test_icons import GIF, ICO, JPEG, PNG, SVG, WEBP
from tests.support.helpers import inline
from tests.support.servers import FeedServer, Route

NOW = 1_800_000_000.0
ATOM_TYPE = {"Content-Type": "application/atom+xml"}
HTML_TYPE = {"Content-Type": "text/html; charset=utf-8"}


def atom(head: str = "", link: str | None = None) -> bytes:
    site = f'<link rel="alternate" href="{link}"/>' if link else ""
    return (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Local</title>'
        f"<id>urn:local</id>{site}{head}<entry><id>urn:1</id><title>One</title></entry></feed>"
    ).encode()


def keeper(store: SQLiteIcons | None = None, **options: Any) -> IconKeeper:
    icons = Icons()
    icons.attach(store or SQLiteIcons(":memory:", offload=inline))
    options.setdefault("parse", inline)
    return IconKeeper(
        icons, lambda: (), ServerConfig(host_gap=0.0), clock=lambda: NOW, jitter=lambda: 0.5,
        **options,
    )  # fmt: skip


def feed(server: FeedServer, path: str = "/feed.xml") -> FeedConfig:
    return FeedConfig("local", url=f"{server.url}{path}")


async def check(server: FeedServer, **options: Any) -> tuple[IconRecord, IconKeeper]:
    k = keeper(**options)
    with trio.fail_after(20):
        record = await k.check(feed(server))
    return record, k


async def stored(k: IconKeeper, feed_id: str = "local") -> bytes:
    image = await k.icons.image(feed_id, None)
    assert not image.generated
    return image.body


# -- each kind of icon --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "path", "body", "media_type"),
    [
        ("<icon>/icon.png</icon><logo>/logo.gif</logo>", "/icon.png", PNG, "image/png"),
        ("<logo>logo.gif</logo>", "/logo.gif", GIF, "image/gif"),
        ("<icon>/i.jpg</icon>", "/i.jpg", JPEG, "image/jpeg"),
        ("<icon>/i.webp</icon>", "/i.webp", WEBP, "image/webp"),
        ("<icon>/i.svg</icon>", "/i.svg", SVG, "image/svg+xml"),
    ],
)
async def test_atom_icon_and_logo(
    feed_server: FeedServer, head: str, path: str, body: bytes, media_type: str
) -> None:
    feed_server.routes["/feed.xml"] = Route(200, atom(head), ATOM_TYPE)
    # The type a server declares does not matter: the bytes do.
    feed_server.routes[path] = Route(200, body, {"Content-Type": "text/plain"})
    record, k = await check(feed_server)
    assert (record.status, record.source, record.media_type) == ("ok", "feed", media_type)
    assert record.url == f"{feed_server.url}{path}"
    assert record.etag == icon_etag(body)
    assert (record.checked, record.failures, record.error) == (NOW, 0, None)
    assert record.next_check == NOW + REFRESH  # jitter 0.5: the middle of +-10 %
    assert await stored(k) == body
    assert "image/" in feed_server.hits_for(path)[0].headers["accept"]
    assert not feed_server.hits_for("/")  # found in the feed: no page fetched


async def test_rss_image(feed_server: FeedServer) -> None:
    feed_server.routes["/feed.xml"] = Route(
        200,
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>R</title>'
        b"<image><url>/rss.ico</url><title>R</title><link>/</link></image></channel></rss>",
        {"Content-Type": "application/rss+xml"},
    )
    feed_server.routes["/rss.ico"] = Route(200, ICO)
    record, k = await check(feed_server)
    assert (record.status, record.source, record.media_type) == ("ok", "feed", "image/x-icon")
    assert await stored(k) == ICO


@pytest.mark.parametrize(
    ("fields", "path"),
    [({"favicon": "/fav.png", "icon": "/big.png"}, "/fav.png"), ({"icon": "/big.png"}, "/big.png")],
)
async def test_json_feed_favicon_then_icon(
    feed_server: FeedServer, fields: dict[str, str], path: str
) -> None:
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "J", "items": [], **fields}
    feed_server.routes["/feed.xml"] = Route(
        200, json.dumps(doc).encode(), {"Content-Type": "application/feed+json"}
    )
    feed_server.routes["/fav.png"] = Route(200, PNG)
    feed_server.routes["/big.png"] = Route(200, GIF)
    record, _ = await check(feed_server)
    assert (record.status, record.source, record.url) == ("ok", "feed", f"{feed_server.url}{path}")


async def test_link_rel_icon_of_the_feeds_site(feed_server: FeedServer) -> None:
    feed_server.routes["/feed.xml"] = Route(200, atom(link=f"{feed_server.url}/blog/"), ATOM_TYPE)
    feed_server.routes["/blog/"] = Route(
        200,
        b'<!doctype html><html><head><link rel="stylesheet" href="/s.css">'
        b'<link rel="icon" href="gone.png"><link rel="shortcut icon" href="/static/icon.svg">'
        b"</head><body></body></html>",
        HTML_TYPE,
    )
    feed_server.routes["/static/icon.svg"] = Route(200, SVG, {"Content-Type": "image/svg+xml"})
    feed_server.routes["/favicon.ico"] = Route(200, ICO)
    record, k = await check(feed_server)
    assert (record.status, record.source, record.media_type) == ("ok", "page", "image/svg+xml")
    assert record.url == f"{feed_server.url}/static/icon.svg"
    assert await stored(k) == SVG
    assert feed_server.hits_for("/blog/gone.png")  # tried first: 404
    assert "text/html" in feed_server.hits_for("/blog/")[0].headers["accept"]
    assert not feed_server.hits_for("/favicon.ico")


async def test_favicon_ico_at_the_root_when_nothing_names_an_icon(feed_server: FeedServer) -> None:
    feed_server.routes["/feed.xml"] = Route(200, atom(), ATOM_TYPE)  # no icon, no site link
    feed_server.routes["/"] = Route(
        200, b"<html><head><title>home</title></head></html>", HTML_TYPE
    )
    feed_server.routes["/favicon.ico"] = Route(
        200, ICO, {"Content-Type": "image/vnd.microsoft.icon"}
    )
    record, k = await check(feed_server)
    assert (record.status, record.source, record.url) == (
        "ok",
        "favicon",
        f"{feed_server.url}/favicon.ico",
    )
    assert await stored(k) == ICO


# -- refusals -----------------------------------------------------------------------------------


async def test_an_oversized_icon_is_refused(feed_server: FeedServer) -> None:
    big = PNG + b"\x00" * (256 * 1024)
    feed_server.routes["/feed.xml"] = Route(200, atom("<icon>/big.png</icon>"), ATOM_TYPE)
    feed_server.routes["/big.png"] = Route(200, big)
    feed_server.routes["/favicon.ico"] = Route(200, ICO)
    record, _ = await check(feed_server)
    assert (record.status, record.source) == ("ok", "favicon")  # the next candidate
    del feed_server.routes["/favicon.ico"]
    record, k = await check(feed_server)
    assert (record.status, record.media_type) == ("none", None)
    assert record.error is not None
    assert f"feed icon {feed_server.url}/big.png: over the 256 KiB limit" in record.error
    assert record.next_check == NOW + REFRESH  # nothing to retry sooner
    assert (await k.icons.image("local", "Local")).generated


async def test_an_oversized_icon_without_content_length_stops_at_the_cap(
    feed_server: FeedServer,
) -> None:
    feed_server.routes["/feed.xml"] = Route(200, atom("<icon>/big.png</icon>"), ATOM_TYPE)
    feed_server.routes["/big.png"] = Route(
        200, PNG + b"\x00" * (300 * 1024), {"Transfer-Encoding": "chunked"}
    )
    record, _ = await check(feed_server)
    assert record.status == "none"
    assert record.error is not None and "over the 256 KiB limit" in record.error


async def test_an_html_page_served_as_an_icon_is_refused(feed_server: FeedServer) -> None:
    not_found = b"<!DOCTYPE html><html><head><title>Not found</title></head><body>404</body></html>"
    feed_server.routes["/feed.xml"] = Route(200, atom("<icon>/icon.png</icon>"), ATOM_TYPE)
    feed_server.routes["/icon.png"] = Route(200, not_found, {"Content-Type": "image/png"})
    feed_server.routes["/favicon.ico"] = Route(200, not_found, HTML_TYPE)
    record, k = await check(feed_server)
    assert (record.status, record.media_type) == ("none", None)
    assert record.error is not None
    assert f"feed icon {feed_server.url}/icon.png: an HTML page, not an image" in record.error
    assert f"favicon icon {feed_server.url}/favicon.ico: an HTML page, not an image" in record.error
    image = await k.icons.image("local", "Local")
    assert image.generated and image.body == generated_icon("local", "Local")


async def test_an_svg_with_entities_is_refused(feed_server: FeedServer) -> None:
    feed_server.routes["/feed.xml"] = Route(200, atom("<icon>/i.svg</icon>"), ATOM_TYPE)
    feed_server.routes["/i.svg"] = Route(
        200, b'<!DOCTYPE svg [<!ENTITY a "b">]><svg xmlns="http://www.w3.org/2000/svg">&a;</svg>'
    )
    record, _ = await check(feed_server)
    assert record.status == "none" and record.error is not None and "entity" in record.error


async def test_icons_on_other_hosts_must_be_public(feed_server: FeedServer) -> None:
    # The feed is on 127.0.0.1, trusted as configured; "localhost" is another host, and it
    # resolves to a loopback address: refused before connecting.
    other = feed_server.url.replace("127.0.0.1", "localhost")
    feed_server.routes["/feed.xml"] = Route(200, atom(f"<icon>{other}/icon.png</icon>"), ATOM_TYPE)
    feed_server.routes["/icon.png"] = Route(200, PNG)
    record, _ = await check(feed_server)
    assert record.status == "none"  # a refusal is not retried sooner
    assert record.error is not None
    assert f"feed icon {other}/icon.png: refused, not a public address" in record.error
    assert not feed_server.hits_for("/icon.png")


async def test_feed_trust_passes_the_feeds_host_and_checks_the_others() -> None:
    seen: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        return {"public.example": ["93.184.216.34"], "intranet.example": ["10.0.0.7"]}[host]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        return httpx.Response(200)

    trust = FeedTrust(httpx.MockTransport(handler), "Feeds.Local", resolve)
    async with httpx.AsyncClient(transport=trust) as client:
        assert (await client.get("http://feeds.local/x")).status_code == 200  # not resolved
        assert (await client.get("https://public.example/i.png")).status_code == 200
        with pytest.raises(httpx.ConnectError, match="not a public address"):
            await client.get("http://intranet.example/i.png")
    assert seen == ["feeds.local", "public.example"]
    assert trust.refusals == 1


# -- failures, retries, the loop ------------------------------------------------------------------


async def test_a_transient_failure_keeps_the_old_image_and_backs_off(
    feed_server: FeedServer,
) -> None:
    feed_server.routes["/feed.xml"] = Route(200, atom("<icon>/icon.png</icon>"), ATOM_TYPE)
    feed_server.routes["/icon.png"] = Route(200, PNG)
    store = SQLiteIcons(":memory:", offload=inline)
    k = keeper(store)
    with trio.fail_after(20):
        first = await k.check(feed(feed_server))
        feed_server.routes["/feed.xml"] = Route(503, b"busy")
        feed_server.routes["/icon.png"] = Route(503, b"busy")
        second = await k.check(feed(feed_server))
        third = await k.check(feed(feed_server))
    assert first.status == "ok"
    assert (second.status, second.failures, second.next_check) == ("error", 1, NOW + RETRY_BASE)
    assert (third.failures, third.next_check) == (2, NOW + 2 * RETRY_BASE)
    assert second.error is not None and "feed: HTTP 503 Service Unavailable" in second.error
    assert (third.media_type, third.etag) == ("image/png", first.etag)  # still served
    assert await stored(k) == PNG
    assert store.read_icons()["local"] == third


async def test_a_store_that_fails_does_not_crash_the_keeper(feed_server: FeedServer) -> None:
    class Broken:
        async def icons(self) -> dict[str, IconRecord]:
            raise LogUnavailable("down")

        async def image(self, feed_id: str) -> None:
            raise LogUnavailable("down")

        async def save(self, record: IconRecord, body: bytes | None) -> None:
            raise LogUnavailable("down")

    feed_server.routes["/feed.xml"] = Route(200, atom("<icon>/icon.png</icon>"), ATOM_TYPE)
    feed_server.routes["/icon.png"] = Route(200, PNG)
    icons = Icons()
    icons.attach(Broken())
    await icons.refresh()
    k = IconKeeper(icons, lambda: (), ServerConfig(host_gap=0), parse=inline, clock=lambda: NOW)
    with trio.fail_after(20):
        record = await k.check(feed(feed_server))
    assert record.status == "ok" and record.next_check == NOW + RETRY_BASE  # stored next time
    assert (await icons.image("local", "Local")).generated  # nothing stored to serve


async def test_the_keeper_looks_once_per_feed_and_again_after_a_poke(
    feed_server: FeedServer,
) -> None:
    feed_server.routes["/a.xml"] = Route(200, atom("<icon>/a.png</icon>"), ATOM_TYPE)
    feed_server.routes["/b.xml"] = Route(200, atom("<icon>/b.png</icon>"), ATOM_TYPE)
    feed_server.routes["/a.png"] = Route(200, PNG)
    feed_server.routes["/b.png"] = Route(200, b"<html>")
    feeds = [
        FeedConfig("a", url=f"{feed_server.url}/a.xml"),
        FeedConfig("hooks", token="t" * 8),  # push-only: nothing to look for
    ]
    icons = Icons()
    icons.attach(SQLiteIcons(":memory:", offload=inline))
    k = IconKeeper(icons, lambda: feeds, ServerConfig(host_gap=0), parse=inline)
    async with trio.open_nursery() as nursery:
        await nursery.start(k.run)
        with trio.fail_after(20):
            while "a" not in icons.records:  # noqa: ASYNC110
                await trio.sleep(0.01)
            feeds.append(FeedConfig("b", url=f"{feed_server.url}/b.xml"))
            k.poke()
            while "b" not in icons.records:  # noqa: ASYNC110
                await trio.sleep(0.01)
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    assert icons.records["a"].status == "ok" and icons.records["b"].status == "none"
    assert "hooks" not in icons.records
    assert len(feed_server.hits_for("/a.xml")) == 1  # not again before the week is over
    assert icons.status(feeds[1]) == {
        "status": "none", "generated": True, "source": None, "url": None, "media_type": None,
        "checked": None, "next_check": None, "failures": 0, "error": None,
    }  # fmt: skip
    assert icons.status(FeedConfig("c", url="http://x.example/f"))["status"] == "pending"
