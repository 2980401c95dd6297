"""Roles: an ingest node and deliver nodes over one SQLite log (here in one trio run; the
supervisor's tests run them as real processes)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import trio

from feedstream.core.config import Config
from tests.support.documents import AUTH, json_feed
from tests.support.servers import make_config, push_feed, running


def as_role(config: Config, role: str) -> Config:
    return dataclasses.replace(config, server=dataclasses.replace(config.server, role=role))


@asynccontextmanager
async def cluster(config: Config, delivers: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """An ingest node first (it creates the database), then *delivers* deliver nodes."""
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(running(as_role(config, "ingest")))]
        for _ in range(delivers):
            nodes.append(await stack.enter_async_context(running(as_role(config, "deliver"))))
        yield nodes


async def test_a_push_on_the_ingest_node_reaches_long_polls_on_every_deliver_node(
    tmp_path: Path,
) -> None:
    async with cluster(make_config(tmp_path, push_feed("p")), delivers=2) as (ingest, *delivers):
        heads = [(await node.get("/api/entries")).json()["cursor"] for node in delivers]
        got: dict[int, list[str]] = {}

        async def listen(index: int, node: httpx.AsyncClient, after: str) -> None:
            page = (await node.get("/api/entries", params={"after": after, "timeout": 10})).json()
            got[index] = [entry["title"] for entry in page["entries"]]

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for index, (node, head) in enumerate(zip(delivers, heads, strict=True)):
                    nursery.start_soon(listen, index, node, head)
                await trio.sleep(0.1)
                answer = await ingest.post(
                    "/api/push/p", content=json_feed(("1", "One")), headers=AUTH
                )
                assert answer.status_code == 202 and answer.json() == {"accepted": 1}
        assert got == {0: ["One"], 1: ["One"]}
        # A cursor from one deliver node resumes on the other: they serve one log.
        first = (await delivers[0].get("/api/entries")).json()
        params = {"after": first["cursor"], "timeout": 0}
        second = (await delivers[1].get("/api/entries", params=params)).json()
        assert second == {"cursor": first["cursor"], "entries": [], "reset": False}
        status = (await delivers[1].get("/api/status")).json()
        assert status["role"] == "deliver" and status["cursor"] == first["cursor"]


async def test_each_role_refuses_the_others_paths_with_a_reason(tmp_path: Path) -> None:
    async with cluster(make_config(tmp_path, push_feed("p")), delivers=1) as (ingest, deliver):
        answer = await deliver.post("/api/push/p", content=json_feed(("1", "One")), headers=AUTH)
        assert answer.status_code == 421 and "ingest role" in answer.json()["error"]
        assert (await deliver.get("/websub/x")).status_code == 421
        for path in ("/api/entries", "/api/stream", "/"):
            answer = await ingest.get(path)
            assert answer.status_code == 421 and "deliver role" in answer.json()["error"], path
        for node in (ingest, deliver):
            assert (await node.get("/healthz")).status_code == 200
            feeds = (await node.get("/api/feeds")).json()
            assert [feed["id"] for feed in feeds] == ["p"]
        assert (await ingest.get("/api/status")).json()["role"] == "ingest"
