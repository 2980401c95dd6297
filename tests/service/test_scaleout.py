"""Several nodes over one Redis, as real processes: ingest nodes sharing feeds and pushes,
deliver nodes sharing cursors, and Redis going away and coming back empty."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from tests.cli.test_cli import server_process
from tests.support.helpers import QuietHandler, ThreadedServer, free_port
from tests.support.redis import RedisServer, redis_server

__all__ = ["redis_server"]

TOKEN = "scaleout-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/atom+xml"}
PUBLIC = "http://feeds.scaleout.test"
ADMIN = "scaleout-admin-token-0123"


def atom(*keys: str) -> bytes:
    entries = "".join(
        f"<entry><id>urn:{k}</id><title>{k}</title><updated>2024-01-01T00:00:0{i}Z</updated>"
        "</entry>"
        for i, k in enumerate(keys)
    )
    return (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>'
        f"<id>urn:t</id><updated>2024-01-01T00:00:00Z</updated>{entries}</feed>"
    ).encode()


def write_config(
    path: Path,
    redis: RedisServer,
    name: str,
    *,
    polled: str | None = None,
    lease: float = 30,
    hub: bool = False,
) -> Path:
    feeds = f'[[feeds]]\nid = "p"\ntoken = "{TOKEN}"\n'
    if polled:
        feeds += f'\n[[feeds]]\nid = "origin"\nurl = "{polled}"\ninterval = 1\n'
    server = ""
    if hub:  # one public address for every node, as behind a load balancer
        server = f'public_url = "{PUBLIC}"\nadmin_token = "{ADMIN}"\n'
        feeds = "[hub]\nenabled = true\nallow_private_callbacks = true\n\n" + feeds
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ndata_dir = "{path.parent / name}"\n'
        f'log = "{redis.url}"\nlease_seconds = {lease}\nhost_gap = 0\n{server}\n'
        f'[defaults]\nuser_agent = "{name}"\n\n{feeds}'
    )
    return path


@contextmanager
def node(tmp_path: Path, redis: RedisServer, name: str, role: str, **kw: Any) -> Iterator[str]:
    """``feedstream serve --role ROLE`` on Redis, as a process of its own; yields its URL."""
    config = write_config(tmp_path / f"{name}.toml", redis, name, **kw)
    port = free_port()
    with server_process(config, port, "--role", role, "--name", name):
        yield f"http://127.0.0.1:{port}"


def until(check: Callable[[], Any], timeout: float = 15, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Origin(ThreadedServer):
    """A feed on loopback with an ETag, recording who asked (User-Agent) and what."""

    def __init__(self) -> None:
        self.hits: list[tuple[float, str, str | None]] = []
        origin = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                etag = self.headers.get("If-None-Match")
                origin.hits.append((time.monotonic(), self.headers["User-Agent"], etag))
                if etag == '"v1"':
                    self.send_response(304)
                    self.end_headers()
                    return
                headers = {"Content-Type": "application/atom+xml", "ETag": '"v1"'}
                self.answer(200, atom("a", "b"), headers)

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return self.address("/feed")


def entries(base: str, after: str | None = None) -> dict[str, Any]:
    params = {"timeout": 0} if after is None else {"after": after, "timeout": 0}
    page: dict[str, Any] = httpx.get(f"{base}/api/entries", params=params).json()
    return page


def test_one_feed_two_ingest_nodes_taken_over_after_sigkill(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    origin = Origin()
    try:
        with ExitStack() as stack:
            first = stack.enter_context(
                node(tmp_path, redis_server, "ingest-a", "ingest", polled=origin.url, lease=3)
            )
            until(lambda: origin.hits, what="a first poll")
            second = stack.enter_context(
                node(tmp_path, redis_server, "ingest-b", "ingest", polled=origin.url, lease=3)
            )
            time.sleep(2.5)  # both run; polls every second
            pollers = {agent for _, agent, _ in origin.hits}
            assert pollers == {"ingest-a"}, origin.hits  # one node polls, the other waits
            killed_at = time.monotonic()
            kill_first(first)
            until(
                lambda: any(agent == "ingest-b" for _, agent, _ in origin.hits),
                timeout=10,
                what="the second node to take the feed over",
            )
            taken = next(t for t, agent, _ in origin.hits if agent == "ingest-b")
            assert taken - killed_at <= 3 + 1 + 1.5  # one lease, one renewal period, one poll
            # The conditional-GET state came along: b revalidated a's ETag from its first poll.
            assert next(etag for _, agent, etag in origin.hits if agent == "ingest-b") == '"v1"'
            feeds = {f["id"]: f for f in httpx.get(f"{second}/api/feeds").json()}
            assert feeds["origin"]["entries_seen"] == 2  # stored once, whoever polled
            assert feeds["origin"]["status"] in ("ok", "not_modified")
    finally:
        origin.shutdown()


def kill_first(base: str) -> None:
    """SIGKILL the node serving *base* (found by its pid in /api/status)."""
    pid = httpx.get(f"{base}/api/status").json()["pid"]
    os.kill(pid, signal.SIGKILL)
    until(lambda: _gone(pid), what="the killed node to go")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_same_push_to_two_ingest_nodes_is_stored_once_and_reaches_every_deliver_node(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with ExitStack() as stack:
        ingests = [
            stack.enter_context(node(tmp_path, redis_server, f"ingest-{i}", "ingest"))
            for i in (1, 2)
        ]
        delivers = [
            stack.enter_context(node(tmp_path, redis_server, f"deliver-{i}", "deliver"))
            for i in (1, 2)
        ]
        heads = [entries(base)["cursor"] for base in delivers]
        answers: dict[int, dict[str, Any]] = {}

        def listen(index: int) -> None:
            params = {"after": heads[index], "timeout": 20}
            answers[index] = httpx.get(
                f"{delivers[index]}/api/entries", params=params, timeout=30
            ).json()

        listeners = [threading.Thread(target=listen, args=(i,)) for i in (0, 1)]
        for thread in listeners:
            thread.start()
        for base in delivers:
            until(lambda b=base: httpx.get(f"{b}/api/status").json()["waiting"] >= 1)
        accepted: list[int] = []
        barrier = threading.Barrier(2)

        def push(base: str) -> None:
            barrier.wait()
            answer = httpx.post(f"{base}/api/push/p", content=atom("x1", "x2"), headers=AUTH)
            assert answer.status_code == 202, answer.text
            accepted.append(answer.json()["accepted"])

        pushers = [threading.Thread(target=push, args=(base,)) for base in ingests]
        for thread in pushers:
            thread.start()
        for thread in [*pushers, *listeners]:
            thread.join(30)
        assert sorted(accepted) in ([0, 2], [1, 1])  # each entry accepted by exactly one node
        for index in (0, 1):
            got = [e["title"] for e in answers[index]["entries"]]
            if len(got) < 2:  # the two commits may have gone out in two rounds
                got += [
                    e["title"]
                    for e in entries(delivers[index], answers[index]["cursor"])["entries"]
                ]
            assert sorted(got) == ["x1", "x2"]
        # A cursor from one deliver node resumes on the other.
        cursor = entries(delivers[0])["cursor"]
        assert entries(delivers[1], cursor) == {"cursor": cursor, "entries": [], "reset": False}


def test_redis_away_and_back_empty(tmp_path: Path, redis_server: RedisServer) -> None:
    with ExitStack() as stack:
        ingest = stack.enter_context(node(tmp_path, redis_server, "ingest", "ingest"))
        deliver = stack.enter_context(node(tmp_path, redis_server, "deliver", "deliver"))
        assert (
            httpx.post(f"{ingest}/api/push/p", content=atom("k1"), headers=AUTH).status_code == 202
        )
        page = until(lambda: entries(deliver)["entries"] and entries(deliver))
        cursor = page["cursor"]
        redis_server.stop()
        health = until(
            lambda: (r := httpx.get(f"{deliver}/healthz")).status_code == 503 and r,
            what="the deliver node to report the log unreachable",
        )
        assert health.json()["ok"] is False and "unreachable" in health.json()["error"]
        # The deliver node still answers from its ring...
        assert [e["title"] for e in entries(deliver)["entries"]] == ["k1"]
        # ...and a push is refused, not acknowledged and lost.
        refused = until(
            lambda: (
                (
                    r := httpx.post(f"{ingest}/api/push/p", content=atom("k2"), headers=AUTH)
                ).status_code
                == 503
                and r
            )
        )
        assert (
            refused.headers["retry-after"] == "5"
            and "nothing was stored" in refused.json()["error"]
        )
        redis_server.start()  # empty, as after a restart without persistence
        until(lambda: httpx.get(f"{deliver}/healthz").status_code == 200, timeout=20)
        until(
            lambda: (
                httpx.post(f"{ingest}/api/push/p", content=atom("k3"), headers=AUTH).status_code
                == 202
            ),
            timeout=20,
        )
        # The old cursor is from another epoch: exactly one reset, then entries flow.
        first = until(lambda: (p := entries(deliver, cursor))["reset"] and p, what="a reset")
        assert [e["title"] for e in first["entries"]] == ["k3"]
        again = entries(deliver, first["cursor"])
        assert again["reset"] is False and again["entries"] == []
        assert (
            httpx.post(f"{ingest}/api/push/p", content=atom("k4"), headers=AUTH).status_code == 202
        )
        later = until(lambda: (p := entries(deliver, first["cursor"]))["entries"] and p)
        assert [e["title"] for e in later["entries"]] == ["k4"] and later["reset"] is False


class Subscriber(ThreadedServer):
    """A WebSub subscriber on loopback: confirms every verification, records every delivery."""

    def __init__(self) -> None:
        self.deliveries: list[bytes] = []
        subscriber = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                query = dict(parse_qsl(urlsplit(self.path).query))
                body = query.get("hub.challenge", "").encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                subscriber.deliveries.append(self.rfile.read(length))
                self.send_response(204)
                self.end_headers()

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return self.address("/cb")

    def got(self, key: str) -> int:
        return sum(f"urn:{key}<".encode() in body for body in self.deliveries)


def hub_listing(base: str) -> dict[str, Any]:
    listing: dict[str, Any] = httpx.get(
        f"{base}/api/hub", headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()
    return listing


def test_two_ingest_nodes_run_one_hub_between_them(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """[hub] on two ingest nodes of one Redis: a subscription made through one is served by
    the node holding the hub's lease, every entry is delivered once whichever node took it,
    and when that node dies the other takes the hub over."""
    subscriber = Subscriber()
    try:
        with ExitStack() as stack:
            nodes = [
                stack.enter_context(
                    node(tmp_path, redis_server, f"hub-{i}", "ingest", lease=2, hub=True)
                )
                for i in (1, 2)
            ]
            leader = until(
                lambda: [b for b in nodes if hub_listing(b)["distributing"]],
                what="a node to hold the hub's lease",
            )
            assert len(leader) == 1  # one distributes, the other stands by
            other = next(b for b in nodes if b != leader[0])
            form = {
                "hub.mode": "subscribe",
                "hub.topic": f"{PUBLIC}/feeds/all.atom",
                "hub.callback": subscriber.url,
            }
            answer = httpx.post(f"{other}/websub/hub", data=form)  # not through the leader
            assert answer.status_code == 202, answer.text
            until(
                lambda: [s["state"] for s in hub_listing(leader[0])["subscriptions"]] == ["active"],
                what="the leader to see the subscription",
            )
            for key, base in (("x1", nodes[0]), ("x2", nodes[1])):
                answer = httpx.post(f"{base}/api/push/p", content=atom(key), headers=AUTH)
                assert answer.status_code == 202, answer.text
            until(lambda: subscriber.got("x1") and subscriber.got("x2"), what="the deliveries")
            time.sleep(1.5)  # a second hub delivering would have by now
            assert (subscriber.got("x1"), subscriber.got("x2")) == (1, 1)
            kill_first(leader[0])
            until(lambda: hub_listing(other)["distributing"], what="the other node to take over")
            answer = httpx.post(f"{other}/api/push/p", content=atom("x3"), headers=AUTH)
            assert answer.status_code == 202, answer.text
            until(lambda: subscriber.got("x3"), what="a delivery from the new leader")
            assert subscriber.got("x3") == 1
    finally:
        subscriber.shutdown()
