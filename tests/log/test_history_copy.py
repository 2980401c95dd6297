"""The history of a Redis deployment: each writer's own copy of the whole shared log in SQLite
(:mod:`feedstream.service.mirror`), searched and trimmed as the SQLite log's history is. A real
redis-server; every node is its own client, RedisLog and copy, as separate processes would be."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from feedstream.core.search import translate
from feedstream.log.redis import RedisLog, connect
from feedstream.log.state import LogUnavailable
from feedstream.log.store import Store
from feedstream.service.history import History
from feedstream.service.mirror import FILE_NAME, HistoryMirror
from tests.support.helpers import entry
from tests.support.redis import RedisServer

WAIT = 10  # seconds: the bound on anything a test waits for
DAY = 86_400.0
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Node:
    log: RedisLog
    mirror: HistoryMirror
    history: History

    async def settle(self, upto: RedisLog | None = None) -> None:
        """Wait until the copy has what the log knows (and first, until the log's tail saw
        *upto*'s appends)."""
        with trio.fail_after(WAIT):
            if upto is not None:
                head = upto.head_seq
                await self.log.wait_for(lambda: self.log.head_seq >= head)
            await self.mirror.caught_up()

    def search(self, query: str) -> list[str]:
        reader = self.history.reader
        page = reader.search(translate(query), order="new", limit=100, cursor=None)
        return [hit.entry["title"] for hit in page.hits]


@asynccontextmanager
async def writer(
    url: str, data_dir: Path, clock: Clock, *, retention: int | None = None, retain_days: float = 90
) -> AsyncIterator[Node]:
    """An ingest node's log and history: the tail, the copy and the history's task running."""
    async with connect(url) as client:
        log = await RedisLog.open(client, backlog=10, retention=retention, clock=clock)
        store = Store(data_dir / FILE_NAME)
        mirror = HistoryMirror(store, log)
        history = History(
            store, retain_days=retain_days, retain_entries=0, writer=True, mirror=mirror,
            clock=clock,
        )  # fmt: skip
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(log.run)
                await nursery.start(history.run)
                yield Node(log, mirror, history)
                nursery.cancel_scope.cancel()
        finally:
            log.close()
            history.close()
            store.close()


@asynccontextmanager
async def appender(url: str, clock: Clock, retention: int | None = None) -> AsyncIterator[RedisLog]:
    """Another ingest node, without a copy: it only appends."""
    async with connect(url) as client:
        yield await RedisLog.open(client, backlog=10, retention=retention, clock=clock)


def text(feed: str, key: str, title: str, html: str) -> dict[str, object]:
    return entry(feed, key, title=title, content_html=html)


async def test_every_entry_of_the_shared_log_is_copied_and_found(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    clock = Clock()
    async with (
        writer(redis_server.url, tmp_path / "a", clock) as a,
        appender(redis_server.url, clock) as b,
    ):
        await b.append([text("news", "1", "Harbour", "<p>The lighthouse keeper retired.</p>")])
        await a.log.append([text("blog", "1", "Mine", "<p>A walrus on the beach.</p>")])
        await b.append([text("news", "2", "Later", "<p>Another walrus.</p>")])
        await a.settle(b)
        # Appended by the other node, found here by a word of its content.
        assert a.search("lighthouse") == ["Harbour"]
        assert a.search("walrus") == ["Later", "Mine"]  # newest first: the stream's order
        # Stored as the stream holds it, byte for byte: its cursor is the shared log's.
        [hit] = a.history.reader.search(
            translate("keeper"), order="rank", limit=1, cursor=None
        ).hits
        assert hit.entry["cursor"] == f"{a.log.epoch}-1"
        assert hit.entry["received"] == "2023-11-14T22:13:20Z"
        copy = a.history.status()["copy"]
        assert copy == {
            "source": "redis",
            "position": f"{a.log.epoch}-3",
            "behind": 0,
            "copied": 3,
            "missed": 0,
        }
        with trio.fail_after(WAIT):  # measured within a second after the news
            while a.history.status()["entries"] != 3:  # noqa: ASYNC110 - measured in a thread
                await trio.sleep(0.02)


async def test_the_copy_resumes_where_it_stopped_and_says_what_the_stream_lost(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock, url = Clock(), redis_server.url
    async with appender(url, clock, retention=10) as b:
        async with writer(url, tmp_path / "a", clock) as a:
            await b.append([text("f", str(i), f"early{i}", "<p>x</p>") for i in range(3)])
            await a.settle(b)
        # Down: what comes meanwhile is copied at the restart, once.
        await b.append([text("f", str(i), f"meanwhile{i}", "<p>x</p>") for i in range(3, 8)])
        async with writer(url, tmp_path / "a", clock) as a:
            await a.settle(b)
            assert a.search("x") == [f"meanwhile{i}" for i in range(7, 2, -1)] + [
                f"early{i}" for i in range(2, -1, -1)
            ]
            assert a.mirror.copied == 5 and a.mirror.missed == 0
        # Down for longer than the stream keeps (MAXLEN ~ 10 trims whole nodes of 100).
        for start in range(8, 308, 50):
            await b.append(
                [text("f", str(i), f"late{i}", "<p>y</p>") for i in range(start, start + 50)]
            )
        caplog.set_level(logging.WARNING, logger="feedstream.service.mirror")
        async with writer(url, tmp_path / "a", clock) as a:
            await a.settle(b)
            held = a.search("y")
            assert held and held[0] == "late307" and "late8" not in held
            assert a.mirror.missed == 300 - len(held)
            assert "missing from this node's history" in caplog.text


async def test_retention_trims_the_copy(tmp_path: Path, redis_server: RedisServer) -> None:
    clock = Clock()
    async with (
        writer(redis_server.url, tmp_path / "a", clock, retain_days=90) as a,
        appender(redis_server.url, clock) as b,
    ):
        await b.append([text("f", "1", "alpha old", "<p>x</p>"), text("f", "2", "beta old", "")])
        clock.now += 60 * DAY
        await b.append([text("f", "3", "gamma new", "<p>x</p>")])
        await a.settle(b)
        assert a.search("old OR new") == ["gamma new", "beta old", "alpha old"]
        clock.now += 40 * DAY  # the first two were received 100 days ago
        done = await a.history.retain()
        assert done.deleted == 2
        assert a.search("old OR new") == ["gamma new"]
        status = a.history.status()
        assert status["entries"] == 1 and status["retention"] == "here"
        assert status["last_retention"]["deleted"] == 2
        # What the copy retired stays out of it, even if the stream is read again.
        a.mirror.seq = 0
        await a.mirror.sync()
        assert a.search("old OR new") == ["gamma new"]


async def test_a_new_epoch_is_copied_from_its_start(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    clock = Clock()
    async with writer(redis_server.url, tmp_path / "a", clock) as a:
        await a.log.append([text("f", "1", "before", "<p>x</p>")])
        await a.settle()
        first = a.log.epoch
        redis_server.stop()
        redis_server.start()  # empty: the next script makes a new epoch
        with trio.fail_after(WAIT):
            while True:
                try:
                    await a.log.append(
                        [text("f", "1", "before", "<p>x</p>"), text("f", "2", "after", "<p>x</p>")]
                    )
                    break
                except LogUnavailable:  # reconnecting
                    await trio.sleep(0.05)
        assert a.log.epoch != first
        await a.settle()
        # The id stored again under the new epoch is known here: the first copy stays.
        assert a.search("x") == ["after", "before"]
        [old] = a.history.reader.search(translate("before"), order="new", limit=1, cursor=None).hits
        assert old.entry["cursor"] == f"{first}-1"
        assert a.mirror.status()["position"] == f"{a.log.epoch}-2"
        assert json.loads(json.dumps(a.history.status()))["copy"]["missed"] == 0
