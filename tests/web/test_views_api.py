"""Rules, streams, queries and folding through the real server: /api/streams, ?stream=, ?q=,
?duplicates=, the metrics, and rules and streams changed by a reload."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx
import trio

from feedstream.core.config import Config, load_config
from feedstream.core.query import parse_query
from feedstream.core.rules import parse_rules
from feedstream.core.streams import StreamConfig
from tests.support.documents import json_feed, push
from tests.support.helpers import sample, scrape
from tests.support.servers import PUSH_TOKEN, make_config, push_feed, running, status_until
from tests.web.test_delivery import events, take

RULES = parse_rules(
    [
        {"id": "no-ads", "query": "sponsored", "action": "drop"},
        {"id": "security", "query": "cve OR vulnerability", "action": "highlight"},
        {"id": "python", "query": "python", "action": "tag", "tag": "python"},
    ]
)
STREAMS = (
    StreamConfig("sec", "Security", parse_query("cve OR vulnerability")),
    StreamConfig("b-only", "B", parse_query("news"), frozenset({"b"})),
)


def config(tmp_path: Path, **server: Any) -> Config:
    base = make_config(tmp_path, push_feed("a"), push_feed("b"), **server)
    return dataclasses.replace(base, rules=tuple(RULES), streams=STREAMS)


def doc(*items: dict[str, Any]) -> bytes:
    return json.dumps(
        {"version": "https://jsonfeed.org/version/1.1", "title": "T", "items": list(items)}
    ).encode()


async def entries(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    answer = await client.get("/api/entries", params=params)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def titles(page: dict[str, Any]) -> list[str]:
    return [entry["title"] for entry in page["entries"]]


async def test_streams_are_listed(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as client:
        answer = await client.get("/api/streams")
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "no-store"
        assert answer.json() == [
            {"id": "sec", "title": "Security", "query": "cve OR vulnerability", "feeds": None},
            {"id": "b-only", "title": "B", "query": "news", "feeds": ["b"]},
        ]


async def test_entries_carry_rules_and_a_stream_wait_ends_only_for_a_match(
    tmp_path: Path,
) -> None:
    async with running(config(tmp_path)) as client:
        start = (await entries(client))["cursor"]
        answers: list[dict[str, Any]] = []

        async def listen(**params: Any) -> None:
            answers.append(await entries(client, after=start, timeout=20, **params))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: listen(stream="sec"))
            nursery.start_soon(lambda: listen(q="title:openssl"))
            with trio.fail_after(10):
                await status_until(client, lambda status: status["waiting"] == 2)
            await push(client, "a", json_feed(("1", "python news"), ("2", "sponsored python")))
            await trio.sleep(0.3)
            assert answers == []  # neither listener's question matched: both still wait
            await push(client, "b", json_feed(("3", "OpenSSL CVE-2024-1 fixed")))
        assert [titles(answer) for answer in answers] == [["OpenSSL CVE-2024-1 fixed"]] * 2
        assert all(answer["cursor"] == answers[0]["cursor"] for answer in answers)

        every = await entries(client, after=start, timeout=0)
        assert titles(every) == ["python news", "OpenSSL CVE-2024-1 fixed"]  # one dropped
        python, cve = every["entries"]
        assert (python["matched"], python["highlight"], python["tags"]) == (
            ["python"],
            False,
            ["python"],
        )
        assert (cve["matched"], cve["highlight"], cve["duplicate_of"]) == (["security"], True, None)
        # The same cursor semantics as feeds=: resume from the answer's cursor.
        news = await entries(client, after=start, timeout=0, stream="b-only")
        assert titles(news) == [] and news["cursor"] == every["cursor"]
        first = await entries(client, stream="sec")  # a first page: the newest matching
        assert titles(first) == ["OpenSSL CVE-2024-1 fixed"]


async def test_bad_views_are_clear_400s(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as client:
        cases = {
            "q=a+)": "query: unexpected ')' at 2",
            "q=title%3A%2Fa(%2F": "query: invalid regex (missing ): a() at 6",
            "q=": "q: give a query (see the query language in the README)",
            "q=" + "a" * 501: "query: longer than 500 characters",
            "stream=nope": "stream: unknown stream 'nope'",
            "stream=Bad!": "stream: unknown stream 'Bad!'",
            "duplicates=maybe": "duplicates: must be include or exclude",
        }
        for path in ("/api/entries", "/api/stream"):
            for query, error in cases.items():
                answer = await client.get(f"{path}?{query}")
                assert answer.status_code == 400, (path, query)
                assert answer.json() == {"error": error}, (path, query)


async def test_folded_duplicates_are_hidden_unless_asked_for(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as client:
        start = (await entries(client))["cursor"]
        story = {"url": "https://news.example/story?utm_source=x", "title": "Big"}
        await push(client, "a", doc({"id": "s", **story}))
        answer = await push(client, "b", doc({"id": "t", **story}))
        assert answer.json() == {"accepted": 1}  # stored
        plain = await entries(client, after=start, timeout=0)
        assert [e["id"] for e in plain["entries"]] == ["a:s"]
        every = await entries(client, after=start, timeout=0, duplicates="include")
        assert [(e["id"], e["duplicate_of"]) for e in every["entries"]] == [
            ("a:s", None),
            ("b:t", "a:s"),
        ]
        # A long-poll after the first story is not woken by its duplicate.
        cursor = plain["cursor"]
        waited = await entries(client, after=cursor, timeout=0.3)
        assert waited["entries"] == []
        metrics = scrape((await client.get("/metrics")).text)
        assert (
            sample(metrics, "feedstream_duplicate_entries_total", feed="b", kind="cross_feed") == 1
        )


async def test_sse_with_a_stream_and_a_query(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as client:
        start = (await entries(client))["cursor"]
        params = {"after": start, "stream": "sec", "q": "kernel"}
        async with client.stream("GET", "/api/stream", params=params) as response:
            received = events(response)
            await push(client, "a", json_feed(("1", "kernel news"), ("2", "openssl CVE")))
            await push(client, "b", json_feed(("3", "kernel CVE")))
            [only] = await take(received, 1)
        assert only["data"]["title"] == "kernel CVE"


async def test_rule_metrics(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as client:
        await push(client, "a", json_feed(("1", "python CVE"), ("2", "sponsored"), ("3", "x")))
        metrics = scrape((await client.get("/metrics")).text)
        assert (
            sample(metrics, "feedstream_rule_matches_total", rule="security", action="highlight")
            == 1
        )
        assert sample(metrics, "feedstream_rule_matches_total", rule="python", action="tag") == 1
        assert sample(metrics, "feedstream_rule_matches_total", rule="no-ads", action="drop") == 1


ADMIN = "admin-token-0123456789"


async def test_a_reload_changes_rules_and_streams(tmp_path: Path) -> None:
    path = tmp_path / "feeds.toml"
    head = f'[server]\nadmin_token = "{ADMIN}"\ndata_dir = "data"\n'
    feeds = "".join(f'\n[[feeds]]\nid = "{f}"\ntoken = "{PUSH_TOKEN}"\n' for f in "ab")
    path.write_text(
        head
        + feeds
        + '\n[[rules]]\nid = "hl"\nquery = "alpha"\naction = "highlight"\n'
        + '\n[[streams]]\nid = "s"\nquery = "alpha"\n'
    )
    loaded = load_config(path)
    loaded = dataclasses.replace(loaded, server=dataclasses.replace(loaded.server, port=0))
    async with running(loaded, loader=lambda: load_config(path)) as client:
        await push(client, "a", json_feed(("1", "alpha"), ("2", "beta")))
        path.write_text(
            head
            + feeds
            + '\n[[rules]]\nid = "hl"\nquery = "beta"\naction = "highlight"\n'
            + '\n[[streams]]\nid = "s2"\nquery = "beta"\n'
        )
        bad = await client.get("/api/entries", params={"stream": "s2"})
        assert bad.status_code == 400
        answer = await client.post(
            "/api/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["rules_changed"] is True and answer.json()["streams_changed"] is True
        assert [s["id"] for s in (await client.get("/api/streams")).json()] == ["s2"]
        assert (await client.get("/api/entries", params={"stream": "s"})).status_code == 400
        await push(client, "a", json_feed(("3", "beta again")))
        page = await entries(client, stream="s2")
        assert titles(page) == ["beta", "beta again"]
        highlighted = {e["title"]: e["highlight"] for e in (await entries(client))["entries"]}
        # Rules apply to entries arriving after the reload; stored ones keep what they got.
        assert highlighted == {"alpha": True, "beta": False, "beta again": True}
