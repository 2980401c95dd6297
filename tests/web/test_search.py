"""``GET /api/search`` on the real server (hypercorn on loopback): results, paging, errors,
the history's figures in ``/api/status`` and ``/metrics``, roles and the Redis log."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support.documents import AUTH, push
from tests.support.helpers import sample, scrape
from tests.support.redis import RedisServer, redis_server
from tests.support.servers import make_config, push_feed, running, status_until

__all__ = ["redis_server"]  # the fixture, for the Redis test


def document(*items: dict[str, Any]) -> bytes:
    return json.dumps(
        {"version": "https://jsonfeed.org/version/1.1", "title": "Pushed", "items": list(items)}
    ).encode()


def item(key: str, title: str, html: str, **more: Any) -> dict[str, Any]:
    return {"id": key, "title": title, "content_html": html, **more}


async def search(client: httpx.AsyncClient, **params: Any) -> httpx.Response:
    return await client.get("/api/search", params=params)


async def found_on(client: httpx.AsyncClient, q: str) -> None:
    """Search until *q* finds something (another node's copy catches up in the background)."""
    with trio.fail_after(10):
        while not (await search(client, q=q)).json()["results"]:  # noqa: ASYNC110
            await trio.sleep(0.05)


def pages(answers: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for answer in answers:
        yield from answer["results"]


async def test_search_finds_a_word_of_the_content_highlighted(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("news"), push_feed("blog"))
    async with running(config) as client:
        await push(
            client,
            "news",
            document(
                item("1", "Harbour news", "<p>The <b>lighthouse</b> keeper retired.</p>"),
                item("2", "Weather", "<p>Rain, then <i>sun</i>.</p>", tags=["coast"]),
            ),
        )
        await push(client, "blog", document(item("1", "A lighthouse of my own", "<p>Built.</p>")))
        answer = await search(client, q="lighthouse")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert body["query"] == "lighthouse" and body["order"] == "rank"
        assert body["before"] is None
        found = {r["entry"]["id"]: r for r in body["results"]}
        assert set(found) == {"news:1", "blog:1"}
        assert "The <mark>lighthouse</mark> keeper retired." in found["news:1"]["snippet_html"]
        assert found["blog:1"]["title_html"] == "A <mark>lighthouse</mark> of my own"
        assert isinstance(found["news:1"]["score"], float)
        assert found["news:1"]["entry"]["cursor"]  # the stored entry, as delivered
        narrowed = (await search(client, q="lighthouse feed:blog")).json()
        assert [r["entry"]["id"] for r in narrowed["results"]] == ["blog:1"]
        whole = (await search(client, q="feed:news", order="new")).json()  # a feed's history
        # Newest first: the document listed "1" first (a feed's newest), so it was stored last.
        assert [r["entry"]["id"] for r in whole["results"]] == ["news:1", "news:2"]
        tagged = (await search(client, q="tag:coast", order="new")).json()
        assert [r["entry"]["id"] for r in tagged["results"]] == ["news:2"]
        assert tagged["results"][0]["score"] is None


async def test_cursor_paging_and_limits(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("bulk"))
    async with running(config) as client:
        for chunk in range(5):
            items = [
                item(f"{chunk}-{i}", f"Post {chunk}-{i}", f"<p>walrus number {chunk * 50 + i}</p>")
                for i in range(50)
            ]
            assert (await push(client, "bulk", document(*items))).status_code == 202
        first = (await search(client, q="walrus")).json()
        assert len(first["results"]) == 20 and first["before"]  # the default limit
        for order in ("rank", "new"):
            answers = [(await search(client, q="walrus", limit=100, order=order)).json()]
            while answers[-1]["before"] is not None:
                params = {"q": "walrus", "limit": 100, "order": order}
                params["before"] = answers[-1]["before"]
                answers.append((await search(client, **params)).json())
            assert [len(a["results"]) for a in answers] == [100, 100, 50]
            ids = [r["entry"]["id"] for r in pages(answers)]
            assert len(ids) == len(set(ids)) == 250
        # A cursor belongs to its query and order.
        cursor = first["before"]
        others: list[dict[str, Any]] = [{"q": "other"}, {"q": "walrus", "order": "new"}]
        for params in others:
            refused = await search(client, before=cursor, **params)
            assert refused.status_code == 400
            assert refused.json()["error"].startswith("before: not a cursor of this search")


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "q: a search query is required"),
        ({"q": "a ("}, "query: expected a term at 3"),
        ({"q": "/cve-\\d+/"}, "/cve-\\d+/: regular expressions cannot be searched"),
        ({"q": "-spam"}, "a search needs a word or phrase that is not excluded"),
        ({"q": "url:example.org"}, "a search needs a word, a phrase or feed:"),
        ({"q": "x OR url:example.org"}, "url: only narrows a search"),
        ({"q": "x", "limit": "0"}, "limit: a whole number from 1 to 100"),
        ({"q": "x", "limit": "101"}, "limit: a whole number from 1 to 100"),
        ({"q": "x", "limit": "lots"}, "limit: a whole number from 1 to 100"),
        ({"q": "x", "order": "best"}, "order: one of rank, new"),
        ({"q": "x", "before": "not-a-cursor"}, "before: not a cursor of this search"),
        ({"q": "x" * 501}, "query: longer than 500 characters"),
    ],
)
async def test_bad_requests_are_400_json_with_a_reason(
    tmp_path: Path, params: dict[str, str], reason: str
) -> None:
    async with running(make_config(tmp_path, push_feed("news"))) as client:
        answer = await search(client, **params)
        assert answer.status_code == 400
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"].startswith(reason)


async def test_fts5_syntax_in_a_query_is_never_a_server_error(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, push_feed("news"))) as client:
        await push(client, "news", document(item("1", 'He said "NEAR" AND *', "<p>x</p>")))
        for q in ('NEAR(a b)', '"', 'a"b', "*", "title:*", "^x", '"NEAR"', "a AND", ":", "{}",
                  "x NOT", "col:umn", "\x00x", "-", "((x)", 'AND "*"'):  # fmt: skip
            answer = await search(client, q=q)
            assert answer.status_code in (200, 400), (q, answer.text)
            assert set(answer.json()) >= ({"results"} if answer.status_code == 200 else {"error"})
        found = (await search(client, q='"near"')).json()["results"]
        assert [r["entry"]["id"] for r in found] == ["news:1"]


async def test_status_and_metrics_show_the_history(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("news"), retain_days=30, retain_entries=1000)
    async with running(config) as client:
        await push(client, "news", document(*(item(str(i), f"t{i}", "<p>x</p>") for i in range(3))))
        with trio.fail_after(10):  # measured again after the news, within a second
            await status_until(client, lambda status: status["history"]["oldest"] is not None)
        history = (await client.get("/api/status")).json()["history"]
        assert history["entries"] == 3
        assert history["oldest"].endswith("Z")
        assert history["database_bytes"] > 0 and history["free_bytes"] >= 0
        assert (history["retain_days"], history["retain_entries"]) == (30, 1000)
        assert history["retention"] == "here" and history["search"] is True
        samples = scrape((await client.get("/metrics")).text)
        assert sample(samples, "feedstream_history_entries") >= 0
        assert sample(samples, "feedstream_database_bytes") > 0
        assert sample(samples, "feedstream_retention_deleted_entries_total") == 0
        assert sample(samples, "feedstream_searches_total", outcome="ok") == 0
        await search(client, q="x")
        samples = scrape((await client.get("/metrics")).text)
        assert sample(samples, "feedstream_searches_total", outcome="ok") == 1


async def test_every_role_of_a_sqlite_deployment_searches(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("p"))
    roles: dict[str, httpx.AsyncClient] = {}
    async with AsyncExitStack() as stack:
        for role in ("ingest", "deliver"):
            server = dataclasses.replace(config.server, role=role)
            roles[role] = await stack.enter_async_context(
                running(dataclasses.replace(config, server=server))
            )
        answer = await roles["ingest"].post(
            "/api/push/p", content=document(item("1", "Otter", "<p>an otter</p>")), headers=AUTH
        )
        assert answer.status_code == 202
        for role, node in roles.items():
            found = (await search(node, q="otter")).json()["results"]
            assert [r["entry"]["id"] for r in found] == ["p:1"], role
        deliver = (await roles["deliver"].get("/api/status")).json()["history"]
        assert deliver["retention"] == "on the ingest process"


async def test_with_the_redis_log_the_ingest_side_searches_its_copy(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Each node that writes the Redis log keeps the whole history in SQLite (data_dir): a
    push is found at once on the node that took it, and on another ingest node too; a deliver
    node refuses, naming the ingest role (421, as for the ingest role's other paths)."""
    feeds = (push_feed("news"),)

    def node(name: str, role: str) -> Any:
        config = make_config(tmp_path / name, *feeds, log=redis_server.url, role=role)
        return running(config)

    async with node("a", "all") as a, node("b", "ingest") as b, node("c", "deliver") as c:
        pushed = document(
            item("1", "Harbour news", "<p>The <b>lighthouse</b> keeper retired.</p>"),
            item("2", "Weather", "<p>Rain, then sun.</p>"),
        )
        assert (await push(a, "news", pushed)).status_code == 202
        body = (await search(a, q="lighthouse")).json()  # right after the push: found
        [found] = body["results"]
        assert found["entry"]["id"] == "news:1"
        assert "The <mark>lighthouse</mark> keeper retired." in found["snippet_html"]
        head = (await a.get("/api/entries")).json()["cursor"]
        assert found["entry"]["cursor"].rpartition("-")[0] == head.rpartition("-")[0]  # the epoch
        # Another writer of the same log copies what it did not append itself.
        await found_on(b, "lighthouse")
        assert [r["entry"]["id"] for r in (await search(b, q="feed:news", order="new")).json()[
            "results"]] == ["news:1", "news:2"]  # fmt: skip
        assert (
            await push(b, "news", document(item("3", "Otter", "<p>an otter</p>")))
        ).status_code == 202
        await found_on(a, "otter")
        for client in (a, b):
            with trio.fail_after(10):
                await status_until(client, lambda status: status["history"]["entries"] == 3)
            history = (await client.get("/api/status")).json()["history"]
            assert history["retention"] == "here" and history["search"] is True
            assert history["copy"]["source"] == "redis" and history["copy"]["missed"] == 0
            assert (tmp_path / ("a" if client is a else "b") / "history.sqlite3").exists()
        refused = await search(c, q="lighthouse")
        assert refused.status_code == 421
        assert refused.headers["content-type"] == "application/json"
        assert "ingest role" in refused.json()["error"]
        assert (await c.get("/api/status")).json()["history"] is None
        assert not (tmp_path / "c" / "history.sqlite3").exists()
