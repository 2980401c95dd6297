"""WebSub with two ingest nodes over one Redis, as real processes: the node polling the feed
subscribes, the hub's verification and a content distribution reach the other node (as a load
balancer in front of both would send them), and the node taking the feed over after the first
one dies keeps the stored subscription instead of subscribing anew. Everything on loopback."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from tests.cli.test_cli import server_process
from tests.service.test_scaleout import atom, kill_first, until
from tests.support.helpers import QuietHandler, ThreadedServer, free_port
from tests.support.redis import RedisServer, redis_server

__all__ = ["redis_server"]

PUBLIC = "http://feeds.websub.test"  # public_url: the balancer's address, never called here
LEASE = 2  # seconds: the poll lease


class Origin(ThreadedServer):
    """The publisher's feed, naming *hub* (once :attr:`with_hub` is set), recording which
    node (User-Agent) polled it."""

    def __init__(self, hub: str) -> None:
        self.hub = hub
        self.with_hub = False
        self.pollers: list[str] = []
        origin = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                origin.pollers.append(self.headers["User-Agent"])
                headers = {"Content-Type": "application/atom+xml"}
                if origin.with_hub:
                    headers["Link"] = f'<{origin.hub}>; rel="hub", <{origin.url}>; rel="self"'
                self.answer(200, atom("a"), headers)

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return self.address("/feed")


@dataclass
class Verification:
    node: str
    status: int
    ok: bool


class Hub(ThreadedServer):
    """A hub on loopback: answers 202, then verifies intent through the node that did *not*
    send the request (:attr:`other`), the way a balancer may route the hub's GET."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.verifications: list[Verification] = []
        self.other: Any = None  # () -> the base URL of the node not polling the feed
        hub = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                hub.requests.append(form)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                threading.Thread(target=hub.verify, args=(form,), daemon=True).start()

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return self.address("/hub")

    def callback(self, form: dict[str, str], base: str) -> str:
        """The callback of *form*, at node *base* instead of the public address."""
        return base + urlsplit(form["hub.callback"]).path

    def verify(self, form: dict[str, str]) -> None:
        time.sleep(0.2)  # after the 202 has gone out
        node = self.other()
        params = {"hub.mode": form["hub.mode"], "hub.topic": form["hub.topic"],
                  "hub.challenge": "chal-123", "hub.lease_seconds": "3600"}  # fmt: skip
        answer = httpx.get(self.callback(form, node), params=params, timeout=10)
        ok = answer.status_code == 200 and answer.text == "chal-123"
        self.verifications.append(Verification(node, answer.status_code, ok))


def write_config(path: Path, redis: RedisServer, name: str, origin: str) -> Path:
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ndata_dir = "{path.parent / name}"\n'
        f'log = "{redis.url}"\nlease_seconds = {LEASE}\nhost_gap = 0\n'
        f'public_url = "{PUBLIC}"\n\n'
        f'[defaults]\nuser_agent = "{name}"\n\n'
        f'[[feeds]]\nid = "origin"\nurl = "{origin}"\ninterval = 1\n'
    )
    return path


def feed(base: str) -> dict[str, Any]:
    feeds = httpx.get(f"{base}/api/feeds").json()
    found: dict[str, Any] = next(f for f in feeds if f["id"] == "origin")
    return found


def test_two_ingest_nodes_keep_one_subscription(tmp_path: Path, redis_server: RedisServer) -> None:
    hub = Hub()
    origin = Origin(hub.url)
    try:
        with ExitStack() as stack:
            bases: dict[str, str] = {}
            for name in ("ingest-a", "ingest-b"):
                port = free_port()
                config = write_config(tmp_path / f"{name}.toml", redis_server, name, origin.url)
                stack.enter_context(server_process(config, port, "--role", "ingest"))
                bases[name] = f"http://127.0.0.1:{port}"

            def other() -> str:  # the node that does not hold the feed's lease
                poller = origin.pollers[-1]
                return next(base for name, base in bases.items() if name != poller)

            hub.other = other
            origin.with_hub = True  # the next poll discovers the hub
            until(lambda: hub.verifications, what="the hub's verification")
            [request] = hub.requests
            holder = origin.pollers[-1]
            assert request["hub.mode"] == "subscribe" and request["hub.topic"] == origin.url
            [verification] = hub.verifications
            assert verification.ok and verification.node == bases[next(
                name for name in bases if name != holder
            )]  # fmt: skip
            # The subscription is shared: active on both nodes.
            for base in bases.values():
                until(
                    lambda b=base: (feed(b)["websub"] or {}).get("state") == "active",
                    timeout=15,
                    what="the subscription active on every node",
                )
            assert len(hub.requests) == 1  # the other node did not subscribe too

            # A content distribution reaching the node that does not poll the feed is ingested.
            body = atom("a", "pushed")
            secret = request["hub.secret"].encode()
            signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
            answer = httpx.post(
                hub.callback(request, other()),
                content=body,
                headers={"Content-Type": "application/atom+xml", "X-Hub-Signature": signature},
            )
            assert answer.status_code == 200, answer.text
            until(lambda: feed(other())["entries_seen"] == 2, what="the pushed entry stored")

            # The holder dies; the other node takes the feed over and keeps the subscription.
            kill_first(bases[holder])
            survivor = other()
            taken = len(origin.pollers)
            until(
                lambda: [p for p in origin.pollers[taken:] if p != holder],
                timeout=10,
                what="the other node to take the feed over",
            )
            time.sleep(LEASE)
            assert len(hub.requests) == 1  # no new subscription: the stored one is active
            assert feed(survivor)["websub"]["state"] == "active"
    finally:
        origin.shutdown()
        hub.shutdown()
