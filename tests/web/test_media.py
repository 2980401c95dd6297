"""``/media/`` on the real server (hypercorn on loopback), with an image server on 127.0.0.1: an
entry pushed with images comes out with signed ``/media/`` paths, which serve the image (fetched
once), answer 304, survive a restart; refusals are JSON; the page's CSP and the output feeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio

from feedstream.core.config import Config
from feedstream.core.httprules import CONTENT_SECURITY_POLICY, PROXIED_CONTENT_SECURITY_POLICY
from feedstream.core.media import MEDIA_CSP
from tests.service.test_media import png
from tests.support.documents import push
from tests.support.helpers import sample, scrape
from tests.support.servers import FeedServer, Route, make_config, push_feed, running
from tests.web.test_roles import cluster


def config(tmp_path: Path, **server: Any) -> Config:
    settings: dict[str, Any] = {"proxy_media": True, "media_allow_private": True}
    return make_config(tmp_path, push_feed("a", title="Feed A"), **(settings | server))


def item(base: str, key: str = "1") -> bytes:
    return json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "A",
            "items": [
                {
                    "id": key,
                    "title": f"with pictures {key}",
                    "url": f"https://site.example/{key}",
                    "image": f"{base}/lead.png",
                    "content_html": f'<p>Look: <img src="{base}/inline.png" alt="x"></p>',
                    "attachments": [{"url": f"{base}/att.gif", "mime_type": "image/gif"}],
                    "date_published": "2026-05-01T10:00:00Z",
                }
            ],
        }
    ).encode()


async def stored(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    answer = await client.get("/api/entries", params={"timeout": "0"})
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()["entries"]
    return entries


def images(feed_server: FeedServer) -> None:
    feed_server.routes["/lead.png"] = Route(200, png(400), {"Content-Type": "text/plain"})
    feed_server.routes["/inline.png"] = Route(200, png(200, seed=1))
    feed_server.routes["/att.gif"] = Route(200, b"GIF89a" + b"\x01\x00" * 40)
    feed_server.routes["/page.png"] = Route(200, b"<html><body>nope</body></html>")


async def test_entries_carry_signed_paths_that_serve_the_images(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    images(feed_server)
    base = feed_server.url
    async with running(config(tmp_path)) as client:
        assert (await push(client, "a", item(base))).status_code == 202
        [entry] = await stored(client)
        assert entry["url"] == "https://site.example/1"
        assert entry["image_source"] == f"{base}/lead.png"
        assert entry["image"].startswith("/media/")
        [enclosure] = entry["enclosures"]
        assert enclosure["source"] == f"{base}/att.gif" and enclosure["url"].startswith("/media/")
        assert 'src="/media/' in entry["content_html"] and base not in entry["content_html"]

        answer = await client.get(entry["image"], headers={"Cookie": "c=1", "Referer": "x"})
        assert answer.status_code == 200, answer.text
        assert answer.content == png(400)
        assert answer.headers["content-type"] == "image/png"
        assert answer.headers["cache-control"] == "public, max-age=604800, immutable"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-security-policy"] == MEDIA_CSP
        etag = answer.headers["etag"]
        [hit] = feed_server.hits_for("/lead.png")
        assert "cookie" not in hit.headers and "referer" not in hit.headers
        assert hit.headers["user-agent"].startswith("feedstream/")

        again = await client.get(entry["image"], headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        assert (await client.get(entry["image"])).content == png(400)
        head = await client.head(entry["image"])
        assert head.status_code == 200 and head.headers["etag"] == etag
        assert len(feed_server.hits_for("/lead.png")) == 1  # fetched once

        gif = await client.get(enclosure["url"])
        assert gif.headers["content-type"] == "image/gif"
        inline_path = entry["content_html"].split('src="')[1].split('"')[0]
        assert (await client.get(inline_path)).content == png(200, seed=1)

        samples = scrape((await client.get("/metrics")).text)
        assert sample(samples, "feedstream_media_misses_total") == 3
        assert sample(samples, "feedstream_media_hits_total") == 2
        assert sample(samples, "feedstream_media_not_modified_total") == 1
        assert sample(samples, "feedstream_media_cache_files") == 3
        assert sample(samples, "feedstream_media_cache_bytes") > 400
        assert sample(samples, "feedstream_media_refusals_total", reason="signature") == 0

    # A restart (the same data directory): the stored paths still verify, from the cache.
    async with running(config(tmp_path)) as client:
        [entry] = await stored(client)
        answer = await client.get(entry["image"])
        assert answer.status_code == 200 and answer.headers["etag"] == etag
        assert len(feed_server.hits_for("/lead.png")) == 1
    assert (tmp_path / "media_key.key").exists()


async def test_refusals_are_json(tmp_path: Path, feed_server: FeedServer) -> None:
    images(feed_server)
    base = feed_server.url
    async with running(config(tmp_path)) as client:
        body = json.loads(item(base))
        body["items"][0]["image"] = f"{base}/page.png"
        body["items"].append({"id": "2", "title": "gone", "image": f"{base}/missing.png"})
        assert (await push(client, "a", json.dumps(body).encode())).status_code == 202
        entries = {e["title"]: e for e in await stored(client)}
        page, missing = entries["with pictures 1"]["image"], entries["gone"]["image"]
        _, _, signature, encoded = page.split("/")

        for path, status, reason in [
            (page, 415, "an HTML page, not an image"),
            (missing, 404, "upstream answered HTTP 404"),
            (f"/media/{'A' * 22}/{encoded}", 403, "not a media URL this server wrote"),
            (f"/media/{signature}/{encoded[:-4]}", 403, "not a media URL this server wrote"),
            (f"/media/{signature}/", 404, ""),
        ]:
            answer = await client.get(path)
            assert answer.status_code == status, (path, answer.text)
            assert answer.headers["content-type"] == "application/json"
            assert reason in answer.json()["error"]
            assert "Traceback" not in answer.text
        samples = scrape((await client.get("/metrics")).text)
        assert sample(samples, "feedstream_media_refusals_total", reason="signature") == 2
        assert sample(samples, "feedstream_media_refusals_total", reason="not_an_image") == 1


async def test_loopback_images_are_refused_unless_allowed(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    images(feed_server)
    async with running(config(tmp_path, media_allow_private=False)) as client:
        assert (await push(client, "a", item(feed_server.url))).status_code == 202
        [entry] = await stored(client)
        answer = await client.get(entry["image"])
        assert answer.status_code == 403
        assert "127.0.0.1 is not a public address" in answer.json()["error"]
    assert feed_server.hits == []


async def test_the_page_policy_and_the_output_feeds(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    images(feed_server)
    base = feed_server.url
    async with running(config(tmp_path)) as client:
        page = await client.get("/")
        assert page.headers["content-security-policy"] == PROXIED_CONTENT_SECURITY_POLICY
        assert "img-src 'self';" in page.headers["content-security-policy"]
        assert (await push(client, "a", item(base))).status_code == 202
        for format in ("atom", "rss", "json"):
            document = (await client.get(f"/feeds/all.{format}")).text
            assert "/media/" not in document, format
            assert f"{base}/lead.png" in document and f"{base}/att.gif" in document, format
    async with running(make_config(tmp_path / "off", push_feed("a"))) as client:
        page = await client.get("/")
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        answer = await client.get(f"/media/{'A' * 22}/aHR0cHM6Ly9hLmIv")
        assert answer.status_code == 404
        assert answer.json() == {"error": "the media proxy is off ([server] proxy_media)"}
        assert (await push(client, "a", item(base))).status_code == 202
        [entry] = await stored(client)
        assert entry["image"] == f"{base}/lead.png" and "image_source" not in entry


async def test_a_deliver_node_serves_what_the_ingest_node_signed(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    images(feed_server)
    base = config(tmp_path)
    async with cluster(base, delivers=2) as (ingest, *delivers):
        assert (await push(ingest, "a", item(feed_server.url))).status_code == 202
        with trio.fail_after(10):
            while not (entries := await stored(delivers[0])):  # noqa: ASYNC110 - from outside
                await trio.sleep(0.02)
        path = entries[0]["image"]
        for node in delivers:  # one key for every process (data_dir/media_key.key)
            answer = await node.get(path)
            assert answer.status_code == 200 and answer.content == png(400)
        # The second deliver node found the first one's file in the shared cache directory.
        assert len(feed_server.hits_for("/lead.png")) == 1
