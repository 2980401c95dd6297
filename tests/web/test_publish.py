"""``GET /feeds/<name>.atom|.rss|.json`` on the real server: names (all, feed, stream), limit,
validators and 304, CORS, content types, errors, folded duplicates, and feedstream reading
its own output back."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest

from feedstream.core.config import Config
from feedstream.core.normalize import parse_feed
from feedstream.core.publish import CONTENT_TYPES, FORMATS, entry_id_from_uri, entry_uri
from feedstream.core.query import parse_query
from feedstream.core.streams import StreamConfig
from feedstream.core.times import parse_http_date
from tests.support.documents import push
from tests.support.servers import make_config, push_feed, running

STREAMS = (StreamConfig("sec", "Security", parse_query("cve")),)


def config(tmp_path: Path, **server: Any) -> Config:
    base = make_config(tmp_path, push_feed("a", title="Feed A"), push_feed("b"), **server)
    return dataclasses.replace(base, streams=STREAMS)


def items(*titles: str, feed: str = "a") -> bytes:
    """A JSON Feed of dated items, oldest first in *titles*."""
    return json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": f"Feed {feed.upper()}",
            "items": [
                {
                    "id": f"{feed}-{title}",
                    "title": title,
                    "url": f"https://{feed}.example/{title}",
                    "content_html": f"<p>{title}</p>",
                    "date_published": f"2026-05-{index + 1:02d}T10:00:00Z",
                }
                for index, title in enumerate(titles)
            ],
        }
    ).encode()


async def fill(client: httpx.AsyncClient) -> None:
    assert (await push(client, "a", items("one", "two cve", "three"))).status_code == 202
    assert (await push(client, "b", items("four", feed="b"))).status_code == 202


async def test_every_format_of_every_name(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as client:
        await fill(client)
        for format in FORMATS:
            expected = {
                "all": ["four", "three", "two cve", "one"],  # newest first
                "a": ["three", "two cve", "one"],
                "sec": ["two cve"],
            }
            for name, titles in expected.items():
                answer = await client.get(f"/feeds/{name}.{format}")
                assert answer.status_code == 200, answer.text
                assert answer.headers["content-type"] == CONTENT_TYPES[format]
                assert answer.headers["access-control-allow-origin"] == "*"
                assert answer.headers["x-content-type-options"] == "nosniff"
                assert answer.headers["cache-control"] == "no-cache"
                assert answer.headers["etag"].startswith('"')
                body = answer.content
                if format == "json":
                    feed = json.loads(body)
                    assert [item["title"] for item in feed["items"]] == titles
                    assert feed["feed_url"] == f"{client.base_url}/feeds/{name}.json"
                else:
                    document = feedparser.parse(io.BytesIO(body))
                    assert not document.bozo, document.get("bozo_exception")
                    assert [e.title for e in document.entries] == titles
                    selves = [link.href for link in document.feed.links if link.rel == "self"]
                    assert selves == [f"{client.base_url}/feeds/{name}.{format}"]
                # feedstream polling its own output: the same entries, ids included.
                result = parse_feed(
                    body, feed_id="up", base_url=None, content_type=CONTENT_TYPES[format]
                )
                assert result.error is None
                stored = (await client.get("/api/entries", params={"limit": 100})).json()
                by_id = {e["id"]: e for e in stored["entries"]}
                assert sorted(e["title"] for e in result.entries) == sorted(titles)
                for copy in result.entries:
                    original = by_id[entry_id_from_uri(copy["id"].removeprefix("up:")) or ""]
                    for key in ("title", "url", "published", "content_html"):
                        assert copy[key] == original[key], key
        atom = feedparser.parse(io.BytesIO((await client.get("/feeds/a.atom")).content))
        assert atom.feed.title == "Feed A"
        assert atom.entries[0].id == entry_uri("a:a-three")
        sec = feedparser.parse(io.BytesIO((await client.get("/feeds/sec.atom")).content))
        assert sec.feed.title == "Security"


async def test_public_url_sets_links_and_ids(tmp_path: Path) -> None:
    async with running(config(tmp_path, public_url="https://news.example/fs")) as client:
        await fill(client)
        feed = (await client.get("/feeds/all.json")).json()
        assert feed["feed_url"] == "https://news.example/fs/feeds/all.json"
        assert feed["home_page_url"] == "https://news.example/fs/"
        assert feed["items"][0]["id"] == "tag:news.example,2026:b:b-four"


async def test_limit(tmp_path: Path) -> None:
    async with running(config(tmp_path, backlog=3)) as client:
        await fill(client)
        answer = await client.get("/feeds/all.json")  # default 50, capped at the backlog
        assert [item["title"] for item in answer.json()["items"]] == ["four", "three", "two cve"]
        answer = await client.get("/feeds/all.json", params={"limit": "1"})
        assert [item["title"] for item in answer.json()["items"]] == ["four"]
        for bad in ("0", "4", "-1", "x", "", "1.5", "99999999999"):
            answer = await client.get("/feeds/all.atom", params={"limit": bad})
            assert answer.status_code == 400
            assert answer.headers["content-type"] == "application/json"
            assert answer.json() == {"error": "limit: must be a whole number from 1 to 3"}


async def test_etag_and_last_modified(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as client:
        empty = await client.get("/feeds/a.atom")
        assert empty.status_code == 200 and "last-modified" not in empty.headers
        await fill(client)
        first = await client.get("/feeds/a.rss")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        # The newest date of any entry: here when the last was received, now.
        assert parse_http_date(modified) is not None
        assert etag != empty.headers["etag"]
        again = await client.get("/feeds/a.rss", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["content-type"] == CONTENT_TYPES["rss"]
        assert again.headers["access-control-allow-origin"] == "*"
        weak = await client.get("/feeds/a.rss", headers={"If-None-Match": f'"x", W/{etag}'})
        assert weak.status_code == 304
        since = await client.get("/feeds/a.rss", headers={"If-Modified-Since": modified})
        assert since.status_code == 304
        older = "Sat, 02 May 2026 10:00:00 GMT"
        assert (
            await client.get("/feeds/a.rss", headers={"If-Modified-Since": older})
        ).status_code == 200
        # If-None-Match wins over If-Modified-Since.
        both = {"If-None-Match": '"other"', "If-Modified-Since": modified}
        assert (await client.get("/feeds/a.rss", headers=both)).status_code == 200
        # Another format, another document.
        atom = await client.get("/feeds/a.atom", headers={"If-None-Match": etag})
        assert atom.status_code == 200
        # A new entry changes the validators.
        assert (
            await push(client, "a", items("one", "two cve", "three", "five"))
        ).status_code == 202
        later = await client.get("/feeds/a.rss", headers={"If-None-Match": etag})
        assert later.status_code == 200 and later.headers["etag"] != etag


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/feeds/nope.atom", 404, "no feed or stream 'nope' here"),
        ("/feeds/a.html", 404, "output feeds are /feeds/<name>.atom, .rss or .json"),
        ("/feeds/a", 404, "output feeds are /feeds/<name>.atom, .rss or .json"),
        ("/feeds/.json", 404, "output feeds are /feeds/<name>.atom, .rss or .json"),
        ("/feeds/" + "x" * 500 + ".rss", 404, f"no feed or stream {'x' * 64!r} here"),
    ],
)
async def test_unknown_names_are_404_json(
    tmp_path: Path, path: str, status: int, reason: str
) -> None:
    async with running(config(tmp_path)) as client:
        answer = await client.get(path)
        assert answer.status_code == status
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {"error": reason}


async def test_methods_and_preflight(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as client:
        await fill(client)
        head = await client.head("/feeds/all.atom")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == CONTENT_TYPES["atom"]
        post = await client.post("/feeds/all.atom", content=b"x")
        assert post.status_code == 405 and "error" in post.json()
        options = await client.options(
            "/feeds/all.atom",
            headers={"Origin": "https://x.example", "Access-Control-Request-Method": "GET"},
        )
        assert options.status_code == 204
        assert options.headers["access-control-allow-origin"] == "*"
        assert "If-None-Match" in options.headers["access-control-allow-headers"]


async def test_cors_follows_the_configured_origins(tmp_path: Path) -> None:
    async with running(config(tmp_path, cors_origins=("https://ok.example",))) as client:
        ok = await client.get("/feeds/all.json", headers={"Origin": "https://ok.example"})
        assert ok.headers["access-control-allow-origin"] == "https://ok.example"
        other = await client.get("/feeds/all.json", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_folded_duplicates_are_left_out(tmp_path: Path) -> None:
    story = {"title": "Same story", "url": "https://news.example/story", "content_text": "x"}
    async with running(config(tmp_path)) as client:
        for feed in ("a", "b"):
            body = {"version": "https://jsonfeed.org/version/1.1", "items": [{"id": feed, **story}]}
            assert (await push(client, feed, json.dumps(body).encode())).status_code == 202
        shown = (await client.get("/api/entries", params={"duplicates": "include"})).json()
        folded = [e["id"] for e in shown["entries"] if e["duplicate_of"]]
        assert folded == ["b:b"]
        for name in ("all", "b"):
            feed = (await client.get(f"/feeds/{name}.json")).json()
            assert entry_uri("b:b") not in [item["id"] for item in feed["items"]]
        assert [i["id"] for i in (await client.get("/feeds/all.json")).json()["items"]] == [
            entry_uri("a:a")
        ]


async def test_hostile_content_is_served_safe(tmp_path: Path) -> None:
    hostile = {
        "id": "evil",
        "title": "Evil \u0001\u001b <script>alert(1)</script> ]]>",
        "url": "https://evil.example/?a=1&b=<2>",
        "content_html": '<p onclick="x()">hi<script>alert(1)</script>\u0000</p>',
        "tags": ["<b>x</b>", "\u0007"],
    }
    body = {"version": "https://jsonfeed.org/version/1.1", "items": [hostile]}
    async with running(config(tmp_path)) as client:
        assert (await push(client, "a", json.dumps(body).encode())).status_code == 202
        for format in ("atom", "rss"):
            answer = await client.get(f"/feeds/a.{format}")
            document = feedparser.parse(io.BytesIO(answer.content))
            assert not document.bozo, document.get("bozo_exception")
            content = document.entries[0].content[0].value
            assert "<script" not in content and "onclick" not in content
        item = (await client.get("/feeds/a.json")).json()["items"][0]
        assert "<script" not in item["content_html"]
