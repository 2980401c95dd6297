"""Crash safety, as the README promises it: the real server killed with SIGKILL, then restarted.

"An entry is broadcast only after it is committed, so after ``kill -9`` and a restart every
listener resumes from its cursor with nothing lost and nothing repeated." These tests run
``python -m feedstream serve`` as a subprocess on loopback, kill it with SIGKILL in the middle of
things, start it again on the same data dir and port, and check what a client resuming from its
cursor sees, and what the store holds.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.cli.test_cli import ROOT
from tests.support.helpers import free_port

TOKEN = "crash-token-1234"
FEED = "hooks"
FEEDSTREAM = [sys.executable, "-m", "feedstream", "serve", "--host", "127.0.0.1"]
PUSHERS = 4  # concurrent pushers, so that some push is always in flight at the kill


class Watch:
    """Wakes whoever waits for a condition on shared state, whenever that state changes."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def until(self, condition: Callable[[], object]) -> None:
        """Wait until *condition* holds (bound it with a cancel scope)."""
        while not condition():
            await self._event.wait()


class ServerProcess:
    """``python -m feedstream serve`` on 127.0.0.1, started, killed and restarted by a test.

    Each start is its own session, so that whatever it leaves behind (parse workers) can be
    found by its process group and ended in :meth:`cleanup`.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.config = tmp_path / "feeds.toml"
        self.config.write_text(
            f"[server]\n"
            f"data_dir = {json.dumps(str(tmp_path / 'data'))}\n"
            f"[[feeds]]\n"
            f'id = "{FEED}"\n'
            f'token = "{TOKEN}"\n'
        )
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: trio.Process | None = None
        self.started: list[trio.Process] = []
        self.logs: list[Path] = []

    def log_text(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')}" for log in self.logs)

    def assert_no_errors_logged(self) -> None:
        text = self.log_text()
        assert "Traceback" not in text and " ERROR " not in text, text

    async def start(self) -> None:
        """Start the server and wait until ``/healthz`` answers (at most 20 s)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        log = self.tmp_path / f"server-{len(self.logs) + 1}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.process = await trio.lowlevel.open_process(
                [*FEEDSTREAM, "--config", str(self.config), "--port", str(self.port)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        self.started.append(self.process)
        with trio.fail_after(20):
            async with httpx.AsyncClient(base_url=self.base, timeout=1) as client:
                while True:
                    assert self.process.poll() is None, f"the server exited\n{self.log_text()}"
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.02)

    async def kill9(self) -> None:
        """SIGKILL the server process (only it, as a crash would) and wait until it is gone."""
        assert self.process is not None and self.process.poll() is None
        self.process.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            assert await self.process.wait() == -signal.SIGKILL

    async def cleanup(self) -> None:
        """End every process this test started, and anything left in their process groups."""
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            for process in self.started:
                process.kill()
                await process.wait()
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)


@asynccontextmanager
async def server_process(tmp_path: Path, *, deadline: float) -> AsyncIterator[ServerProcess]:
    """A :class:`ServerProcess`; the block must end within *deadline* seconds."""
    server = ServerProcess(tmp_path)
    try:
        with trio.fail_after(deadline):
            yield server
    finally:
        await server.cleanup()


def json_feed(*ids: str) -> bytes:
    """A minimal JSON Feed 1.1 document with one item per id."""
    items = [{"id": i, "title": f"entry {i}", "content_text": f"body of {i}"} for i in ids]
    document = {"version": "https://jsonfeed.org/version/1.1", "title": "Crash", "items": items}
    return json.dumps(document).encode()


def entry_id(item_id: str) -> str:
    """The id the server gives the entry of item *item_id* of the push feed."""
    return f"{FEED}:{item_id}"


def parse_cursor(cursor: str) -> tuple[str, int]:
    """``(log id, seq)``: the README calls cursors opaque; the test knows their shape."""
    log_id, _, seq = cursor.rpartition("-")
    assert log_id and seq.isdigit(), cursor
    return log_id, int(seq)


async def push(client: httpx.AsyncClient, *item_ids: str) -> int:
    """Push one document; return how many entries the server accepted as new."""
    response = await client.post(
        f"/api/push/{FEED}",
        content=json_feed(*item_ids),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/feed+json"},
    )
    assert response.status_code == 202, response.text
    accepted = response.json()["accepted"]
    assert isinstance(accepted, int)
    return accepted


async def read_store(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """Everything a fresh client gets from the start: the newest 500 entries, with no ``after``.

    The tests stay well within that (and within the default backlog of 1000), so it is all of
    the log: ``(cursor, id)`` oldest first.
    """
    response = await client.get("/api/entries", params={"limit": 500, "timeout": 0})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["reset"] is False
    entries = [(e["cursor"], e["id"]) for e in page["entries"]]
    assert len(entries) < 500
    return entries


@dataclass
class PushBook:
    """What the pushers sent, and which pushes the server acknowledged (2xx)."""

    sent: list[str] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)  # item id: entries accepted
    in_flight: set[str] = field(default_factory=set)


async def push_until_the_server_is_gone(
    client: httpx.AsyncClient, item_ids: Iterator[str], book: PushBook, watch: Watch
) -> None:
    """Push one new item after another until a push gets no answer; that one stays unanswered."""
    for item_id in item_ids:
        book.sent.append(item_id)
        book.in_flight.add(item_id)
        try:
            accepted = await push(client, item_id)
        except httpx.TransportError:
            return
        book.in_flight.discard(item_id)
        book.acked[item_id] = accepted
        watch.notify()


@dataclass
class Follower:
    """A long-poll client following ``/api/entries`` from its cursor, through crashes."""

    cursor: str
    received: list[tuple[str, str]] = field(default_factory=list)  # (cursor, id) in order
    pages: int = 0
    resets: int = 0
    errors: int = 0  # requests that got no answer (server killed or not up yet)

    async def follow(self, client: httpx.AsyncClient, watch: Watch) -> None:
        """Run until cancelled; a request without an answer is retried from the same cursor."""
        while True:
            try:
                response = await client.get(
                    "/api/entries", params={"after": self.cursor, "timeout": 5, "limit": 7}
                )
            except httpx.TransportError:
                self.errors += 1
                watch.notify()
                await trio.sleep(0.02)
                continue
            assert response.status_code == 200, response.text
            page = response.json()
            self.pages += 1
            self.resets += bool(page["reset"])
            self.received.extend((e["cursor"], e["id"]) for e in page["entries"])
            self.cursor = page["cursor"]
            watch.notify()


async def test_kill_9_during_a_stream_of_pushes_loses_and_repeats_nothing(tmp_path: Path) -> None:
    watch = Watch()
    book = PushBook()
    item_ids = (f"item-{n:05d}" for n in itertools.count(1))
    async with server_process(tmp_path, deadline=60) as server:
        await server.start()
        async with (
            httpx.AsyncClient(base_url=server.base, timeout=10) as listener,
            httpx.AsyncClient(base_url=server.base, timeout=10) as pusher,
            trio.open_nursery() as nursery,
        ):
            # Follow from the very start: on an empty log the first answer is its head cursor.
            first = (await listener.get("/api/entries", params={"timeout": 0})).json()
            assert first["entries"] == [] and first["reset"] is False
            log_id, head = parse_cursor(first["cursor"])
            assert head == 0
            follower = Follower(first["cursor"])
            nursery.start_soon(follower.follow, listener, watch)

            # Push from several tasks at once; kill the server once enough went through and the
            # listener got some of it, while pushes are in flight.
            async with trio.open_nursery() as pushers:
                for _ in range(PUSHERS):
                    pushers.start_soon(push_until_the_server_is_gone, pusher, item_ids, book, watch)
                await watch.until(
                    lambda: (
                        len(book.acked) >= 30
                        and len(follower.received) >= 10
                        and len(book.in_flight) >= 2
                    )
                )
                await server.kill9()
            # Every pusher has ended on a push without an answer: the acknowledgements are final.
            acked = dict(book.acked)
            unanswered = [i for i in book.sent if i not in acked]
            assert len(unanswered) == PUSHERS
            assert all(accepted == 1 for accepted in acked.values())

            # The listener has noticed: nothing more can come from the killed process.
            errors = follower.errors
            await watch.until(lambda: follower.errors > errors)
            before_restart = list(follower.received)

            await server.start()

            # Acknowledged means committed: every acknowledged push is in the store after the
            # crash, and so is everything the listener was given before it, at the same cursor.
            stored = await read_store(pusher)
            stored_ids = {entry for _, entry in stored}
            assert {entry_id(i) for i in acked} <= stored_ids
            assert stored[: len(before_restart)] == before_restart

            # An at-least-once pusher sends the unanswered pushes again: each was either
            # committed before the kill (then the server knows its id) or not at all.
            for item_id in unanswered:
                accepted = await push(pusher, item_id)
                assert accepted == (0 if entry_id(item_id) in stored_ids else 1), item_id

            # New entries after the restart, as a marker the listener must get to.
            markers = [f"marker-{n}" for n in range(3)]
            for item_id in markers:
                assert await push(pusher, item_id) == 1
            marker_ids = {entry_id(i) for i in markers}
            await watch.until(lambda: marker_ids <= {entry for _, entry in follower.received})
            final = await read_store(pusher)
            nursery.cancel_scope.cancel()
        server.assert_no_errors_logged()

    received = follower.received
    ids = [entry for _, entry in received]
    cursors = [cursor for cursor, _ in received]
    repeated = {entry: n for entry, n in Counter(ids).items() if n > 1}
    assert not repeated, f"entries delivered more than once: {repeated}"
    assert len(set(cursors)) == len(cursors), "a cursor was delivered twice"
    assert follower.resets == 0, "the listener was told to reset after the restart"
    # Cursors name the same database and count densely from 1: nothing skipped, nothing twice.
    positions = [parse_cursor(cursor) for cursor in cursors]
    assert {log for log, _ in positions} == {log_id}
    assert [seq for _, seq in positions] == list(range(1, len(received) + 1))
    # Exactly what was pushed, each once: acknowledged ones, unanswered ones (re-sent), markers.
    assert sorted(ids) == sorted(entry_id(i) for i in [*book.sent, *markers])
    # The listener got exactly the log, and a fresh client from the start sees the same.
    assert received == final
    # The crash really happened mid-stream: the listener was given entries from both processes.
    assert 10 <= len(before_restart) < len(received)
    assert follower.errors > 0


async def test_kill_9_with_a_parked_long_poll_resumes_with_only_new_entries(
    tmp_path: Path,
) -> None:
    async with server_process(tmp_path, deadline=60) as server:
        await server.start()
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
            for item_id in ("old-1", "old-2", "old-3"):
                assert await push(client, item_id) == 1
            page = (await client.get("/api/entries", params={"timeout": 0})).json()
            assert [e["id"] for e in page["entries"]] == [
                entry_id(i) for i in ("old-1", "old-2", "old-3")
            ]
            cursor = page["cursor"]
            log_id, head = parse_cursor(cursor)
            assert head == 3

            # Park a long-poll with nothing pending, then kill the server under it.
            outcome: list[httpx.Response | Exception] = []

            async def park() -> None:
                try:
                    outcome.append(
                        await client.get("/api/entries", params={"after": cursor, "timeout": 30})
                    )
                except httpx.TransportError as error:
                    outcome.append(error)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(park)
                while (await client.get("/api/status")).json()["waiting"] < 1:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                await server.kill9()
            assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError), outcome

            await server.start()

            # Resuming from the cursor: nothing pending, no reset, the same cursor.
            resumed = await client.get("/api/entries", params={"after": cursor, "timeout": 0})
            assert resumed.json() == {"cursor": cursor, "entries": [], "reset": False}

            # Then only the new entries, under the next cursors; the old ids are still known.
            assert await push(client, "old-2") == 0
            async with trio.open_nursery() as nursery:
                answers: list[dict[str, Any]] = []

                async def wait_for_new() -> None:
                    response = await client.get(
                        "/api/entries", params={"after": cursor, "timeout": 20}
                    )
                    answers.append(response.json())

                nursery.start_soon(wait_for_new)
                while (await client.get("/api/status")).json()["waiting"] < 1:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                # Undated items: document order is newest first, the log oldest first.
                assert await push(client, "new-2", "new-1") == 2
            assert len(answers) == 1
            answer = answers[0]
            assert answer["reset"] is False
            assert [(e["cursor"], e["id"]) for e in answer["entries"]] == [
                (f"{log_id}-4", entry_id("new-1")),
                (f"{log_id}-5", entry_id("new-2")),
            ]
            assert answer["cursor"] == f"{log_id}-5"
        server.assert_no_errors_logged()
