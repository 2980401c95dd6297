"""Bringing feeds to the running server: ``/api/feeds`` (category, icon), ``?category=``,
``GET /api/opml``, ``GET /api/feeds/<id>/icon``, and a reload picking up ``feedstream import``.

Everything on loopback: a scripted feed server and the real feedstream server.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import trio

from feedstream.cli.feeds import Console, import_feeds
from feedstream.core.config import load_config
from feedstream.core.icons import ICON_CSP, generated_icon, icon_etag
from feedstream.core.opml import parse_opml
from tests.core.test_icons import PNG, SVG
from tests.service.test_reload import ADMIN, feed_ids, polled, pushed, reload, toml
from tests.support.documents import json_feed, push
from tests.support.servers import FeedServer, Route, running

ATOM_TYPE = {"Content-Type": "application/atom+xml"}


def atom(icon: str = "", title: str = "Local") -> bytes:
    return (
        f'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>{title}</title>'
        f"<id>urn:{title}</id>{icon}<entry><id>urn:{title}:1</id><title>first</title>"
        "<updated>2024-05-01T10:00:00Z</updated></entry></feed>"
    ).encode()


def categorized(feed_id: str, category: str) -> str:
    return f'{pushed(feed_id)}\ncategory = "{category}"'


async def feeds_by_id(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return {feed["id"]: feed for feed in (await client.get("/api/feeds")).json()}


async def icon_status(client: httpx.AsyncClient, feed_id: str, status: str) -> dict[str, Any]:
    """Wait (bound it with a cancel scope) until the feed's icon has *status*."""
    while (icon := (await feeds_by_id(client))[feed_id]["icon"])["status"] != status:  # noqa: ASYNC110
        await trio.sleep(0.05)  # as an operator would: watching /api/feeds
    return icon


# -- categories ---------------------------------------------------------------------------------


async def test_categories_in_api_feeds_and_the_category_filter(tmp_path: Path) -> None:
    path = tmp_path / "feeds.toml"
    path.write_text(
        toml(categorized("world", "News"), categorized("local", "News"),
             categorized("py", "Tech / Python"), pushed("misc"))
    )  # fmt: skip
    async with running(load_config(path)) as client:
        feeds = await feeds_by_id(client)
        assert {k: f["category"] for k, f in feeds.items()} == {
            "world": "News", "local": "News", "py": "Tech / Python", "misc": None,
        }  # fmt: skip
        assert feeds["misc"]["icon"]["status"] == "none"  # push-only: the generated icon
        for feed_id in ("world", "py", "local", "misc"):
            assert (
                await push(client, feed_id, json_feed((f"{feed_id}1", feed_id)))
            ).status_code == 202
        news = await client.get("/api/entries", params={"category": "News"})
        assert sorted(e["feed"] for e in news.json()["entries"]) == ["local", "world"]
        both = await client.get(
            "/api/entries", params={"category": "Tech / Python", "feeds": "misc"}
        )
        assert sorted(e["feed"] for e in both.json()["entries"]) == ["misc", "py"]
        for params in ({"category": "Sport"}, {"category": ""}):
            answer = await client.get("/api/entries", params=params)
            assert answer.status_code == 400
            assert answer.json()["error"].startswith("category: ")
        answer = await client.get("/api/stream", params={"category": "nope"})
        assert answer.status_code == 400 and answer.json() == {
            "error": "category: unknown category 'nope'"
        }

        # A waiting long-poll with a category ends only for an entry of that category.
        cursor = news.json()["cursor"]
        got: list[dict[str, Any]] = []

        async def wait() -> None:
            params = {"after": cursor, "timeout": 20, "category": "News"}
            got.append((await client.get("/api/entries", params=params)).json())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            with trio.fail_after(10):
                while (await client.get("/api/status")).json()["waiting"] != 1:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            await push(client, "py", json_feed(("py2", "not news")))
            await push(client, "misc", json_feed(("misc2", "not news either")))
            await trio.sleep(0.3)
            assert got == []  # still waiting
            await push(client, "local", json_feed(("local2", "news")))
        [answer] = got
        assert [(e["feed"], e["title"]) for e in answer["entries"]] == [("local", "news")]


async def test_api_opml_round_trips_through_parse_opml(tmp_path: Path) -> None:
    path = tmp_path / "feeds.toml"
    path.write_text(
        toml(
            f'{polled("py", "https://blog.example.org/feed", 3600)}\ntitle = "Python & <Friends>"\n'
            'category = "Tech / Python"',
            f'{polled("world", "https://news.example.org/rss", 3600)}\ncategory = "News"',
            polled("plain", "https://plain.example.org/atom.xml", 3600),
            pushed("hooks"),
        )
    )
    config = load_config(path)
    async with running(config) as client:
        answer = await client.get("/api/opml")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/x-opml; charset=utf-8"
    assert answer.headers["content-disposition"] == 'attachment; filename="feedstream.opml"'
    assert answer.headers["x-content-type-options"] == "nosniff"
    document = parse_opml(answer.content)
    assert [(f.xml_url, f.title, f.category, f.id) for f in document.feeds] == [
        ("https://blog.example.org/feed", "Python & <Friends>", "Tech / Python", "py"),
        ("https://news.example.org/rss", None, "News", "world"),
        ("https://plain.example.org/atom.xml", None, None, "plain"),
    ]  # push-only "hooks" has no URL: not exported


# -- icons ---------------------------------------------------------------------------------------


async def test_icons_served_with_caching_headers_etags_and_304(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.routes["/png.xml"] = Route(200, atom("<icon>/icon.png</icon>", "Png"), ATOM_TYPE)
    feed_server.routes["/icon.png"] = Route(200, PNG, {"Content-Type": "image/png"})
    feed_server.routes["/svg.xml"] = Route(200, atom("<logo>/logo.svg</logo>", "Svg"), ATOM_TYPE)
    feed_server.routes["/logo.svg"] = Route(200, SVG, {"Content-Type": "image/svg+xml"})
    feed_server.routes["/html.xml"] = Route(200, atom("<icon>/page</icon>", "Html"), ATOM_TYPE)
    feed_server.routes["/page"] = Route(
        200, b"<!doctype html><title>x</title>", {"Content-Type": "image/png"}
    )
    path = tmp_path / "feeds.toml"
    path.write_text(
        toml(
            polled("png", f"{feed_server.url}/png.xml", 3600),
            polled("svg", f"{feed_server.url}/svg.xml", 3600),
            polled("html", f"{feed_server.url}/html.xml", 3600),
            f'{pushed("hooks")}\ntitle = "Webhooks"',
        )
    )
    async with running(load_config(path)) as client:
        with trio.fail_after(30):
            png = await icon_status(client, "png", "ok")
            svg = await icon_status(client, "svg", "ok")
            html = await icon_status(client, "html", "none")
        assert (png["source"], png["url"], png["media_type"]) == (
            "feed",
            f"{feed_server.url}/icon.png",
            "image/png",
        )
        assert png["generated"] is False and png["error"] is None and png["checked"]
        assert svg["media_type"] == "image/svg+xml"
        assert html["generated"] is True and "an HTML page, not an image" in html["error"]

        answer = await client.get("/api/feeds/png/icon")
        assert answer.status_code == 200 and answer.content == PNG
        assert answer.headers["content-type"] == "image/png"
        assert answer.headers["etag"] == icon_etag(PNG)
        assert answer.headers["cache-control"] == "public, max-age=86400"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-security-policy"] == ICON_CSP
        again = await client.get("/api/feeds/png/icon", headers={"If-None-Match": icon_etag(PNG)})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == icon_etag(PNG)

        answer = await client.get("/api/feeds/svg/icon")
        assert answer.content == SVG and answer.headers["content-type"].startswith("image/svg+xml")
        assert (
            answer.headers["content-security-policy"]
            == "default-src 'none'; style-src 'unsafe-inline'; sandbox"
        )

        for feed_id, label in (("html", "Html"), ("hooks", "Webhooks")):
            answer = await client.get(f"/api/feeds/{feed_id}/icon")
            assert answer.status_code == 200
            assert answer.content == generated_icon(feed_id, label)
            assert answer.headers["content-type"].startswith("image/svg+xml")
            assert answer.headers["cache-control"] == "no-cache"
            assert answer.headers["content-security-policy"] == ICON_CSP
            etag = answer.headers["etag"]
            again = await client.get(
                f"/api/feeds/{feed_id}/icon", headers={"If-None-Match": f'"x", {etag}'}
            )
            assert again.status_code == 304 and again.headers["cache-control"] == "no-cache"

        for bad in ("nope", "UPPER", "a%20b"):
            answer = await client.get(f"/api/feeds/{bad}/icon")
            assert answer.status_code == 404 and answer.json()["error"].startswith("unknown feed")
        assert (await client.post("/api/feeds/png/icon")).status_code == 405


# -- reload after feedstream import ----------------------------------------------------------------


async def test_reload_picks_up_an_imported_feed_and_a_new_category(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.routes["/one.xml"] = Route(200, atom("", "One"), ATOM_TYPE)
    feed_server.routes["/two.xml"] = Route(200, atom("<icon>/two.png</icon>", "Two"), ATOM_TYPE)
    feed_server.routes["/two.png"] = Route(200, PNG)
    path = tmp_path / "feeds.toml"
    path.write_text(toml(polled("one", f"{feed_server.url}/one.xml", 3600)))
    opml = tmp_path / "subs.opml"
    opml.write_text(
        '<?xml version="1.0"?><opml version="2.0"><head><title>s</title></head><body>'
        '<outline text="Reading"><outline text="Second Feed" type="rss" '
        f'xmlUrl="{feed_server.url}/two.xml"/></outline></body></opml>'
    )
    async with running(load_config(path), loader=lambda: load_config(path)) as client:
        with trio.fail_after(10):
            await feed_server.wait_for_hits("/one.xml", 1)
        out = io.StringIO()
        code = await import_feeds(opml, path, console=Console(out, out), discover_sites=False)
        assert code == 0, out.getvalue()
        assert await feed_ids(client) == ["one"]  # nothing changes before the reload
        answer = await reload(client)
        assert answer.status_code == 200
        assert answer.json()["added"] == ["second-feed"]
        feeds = await feeds_by_id(client)
        assert feeds["second-feed"]["category"] == "Reading"
        with trio.fail_after(30):
            await feed_server.wait_for_hits("/two.xml", 1)
            icon = await icon_status(client, "second-feed", "ok")
            entries: list[dict[str, Any]] = []
            while not entries:
                page = await client.get("/api/entries", params={"category": "Reading"})
                assert page.status_code == 200
                entries = page.json()["entries"]
                await trio.sleep(0.05)
        assert icon["url"] == f"{feed_server.url}/two.png"
        assert {e["feed"] for e in entries} == {"second-feed"}

        # A category change alone regroups the feed without restarting its poller.
        polls = len(feed_server.hits_for("/one.xml"))
        text = path.read_text().replace(
            f'url = "{feed_server.url}/one.xml"',
            f'url = "{feed_server.url}/one.xml"\ncategory = "Reading"',
        )
        path.write_text(text)
        answer = await reload(client)
        assert answer.json()["changed"] == ["one"]
        page = await client.get("/api/entries", params={"category": "Reading"})
        assert {e["feed"] for e in page.json()["entries"]} == {"one", "second-feed"}
        assert (await feeds_by_id(client))["one"]["category"] == "Reading"
        await trio.sleep(0.5)
        assert len(feed_server.hits_for("/one.xml")) == polls  # no restart, no new poll
        assert ADMIN  # the admin token the helpers use
