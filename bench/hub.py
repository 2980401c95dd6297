"""Hub benchmark: 100 WebSub subscribers of feedstream's own hub, one of them hanging.

1. start ``python -m feedstream serve`` on loopback with ``[hub] enabled = true`` (and
   ``allow_private_callbacks``, since the subscribers are on loopback), one push feed;
2. in this process, a subscriber server (hypercorn, trio) with N callbacks: callback 0 answers
   the verification of intent and then never answers a delivery (it hangs until the hub's
   timeout); the others answer ``204`` and note when each entry arrived;
3. subscribe all N to ``/feeds/all.atom`` and wait until ``/api/hub`` shows them active;
4. park L long-poll listeners on ``/api/entries``;
5. push K Atom entries (what a publisher sends: an Atom document), one every ``--gap`` seconds,
   and time, per entry, the push's acknowledgement, its arrival at each healthy subscriber, and
   the long-polls' answers.

Prints the quantiles. Everything is on loopback; the run stops by itself.

    .venv/bin/python bench/hub.py                 # N=100 subscribers, 20 entries
    .venv/bin/python bench/hub.py -n 20 -k 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TOKEN = "bench-push-token"
ADMIN = "bench-admin-token-0123456789"
MARK = re.compile(rb"hubbench-(\d{4})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def atom(k: int) -> bytes:
    """Entry *k* as an Atom document (~2 KB of content, as a blog post's summary is)."""
    text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        "<id>urn:hubbench</id><title>Hub bench</title><updated>2026-01-01T00:00:00Z</updated>"
        f"<entry><id>urn:hubbench-{k:04d}</id><title>Entry hubbench-{k:04d}</title>"
        f'<link href="http://{HOST}/post/{k}"/><updated>2026-01-01T00:00:00Z</updated>'
        f'<content type="html">&lt;p&gt;{text}&lt;/p&gt;</content></entry></feed>'
    ).encode()


def quantiles(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return f"p50 {q(0.5):.0f} ms, p99 {q(0.99):.0f} ms, max {ordered[-1] * 1000:.0f} ms"


class Subscribers:
    """The callbacks: ``/cb/<i>``. Callback 0 hangs on deliveries."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.arrived: dict[tuple[int, int], float] = {}  # (callback, entry) -> time
        self.verified: set[int] = set()
        self.hanging_posts = 0
        self.wanted = 0  # deliveries to the healthy callbacks that complete the run
        self.complete = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        index = int(scope["path"].rsplit("/", 1)[1])
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":  # verification of intent: echo the challenge
            query = parse_qs(scope["query_string"].decode())
            self.verified.add(index)
            await self._answer(send, 200, query.get("hub.challenge", [""])[0].encode())
            return
        now = trio.current_time()
        if index == 0:
            self.hanging_posts += 1
            await trio.sleep_forever()  # until the hub gives up on us
        for mark in MARK.findall(body):
            self.arrived.setdefault((index, int(mark)), now)
        if self.wanted and len(self.arrived) >= self.wanted:
            self.complete.set()
        await self._answer(send, 204, b"")

    @staticmethod
    async def _answer(send: Any, status: int, body: bytes) -> None:
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def long_poll(base: str, cursor: str, seen: dict[int, float], stop: trio.Event) -> None:
    """One listener on a client (and a connection) of its own, as a browser is: httpcore's
    pool scans every connection it holds per request, so 100 listeners sharing one client
    made this process, which also runs the subscribers, the bottleneck."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        while not stop.is_set():
            answer = await client.get("/api/entries", params={"after": cursor, "timeout": 30})
            now = trio.current_time()
            page = answer.json()
            cursor = page["cursor"]
            for entry in page["entries"]:
                for mark in MARK.findall(entry["id"].encode()):
                    seen.setdefault(int(mark), now)


def start_server(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """feedstream on a free loopback port, with the hub on; returns it and its base URL."""
    port = free_port()
    base = f"http://{HOST}:{port}"
    config = tmp / "feeds.toml"
    config.write_text(
        f'[server]\nhost = "{HOST}"\nport = {port}\ndata_dir = "{tmp / "data"}"\n'
        f'public_url = "{base}"\nadmin_token = "{ADMIN}"\nfetch_icons = false\n'
        "[hub]\nenabled = true\nallow_private_callbacks = true\n"
        f'[[feeds]]\nid = "bench"\ntoken = "{TOKEN}"\n'
    )
    with open(tmp / "feedstream.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "feedstream", "serve", "--config", str(config)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return server, base


async def run(args: argparse.Namespace, base: str) -> None:
    subs = Subscribers(args.subscribers)
    hconfig = HypercornConfig()
    hconfig.bind = [f"{HOST}:0"]
    hconfig.accesslog = None
    hconfig.keep_alive_timeout = 75
    async with trio.open_nursery() as nursery:
        [sub_url] = await nursery.start(hypercorn_serve, subs, hconfig)
        # The pushes have a client of their own, and so has every long-poll (see long_poll).
        async with (
            httpx.AsyncClient(base_url=base, timeout=60) as client,
            httpx.AsyncClient(base_url=base, timeout=60) as pusher,
        ):
            with trio.fail_after(30):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    await trio.sleep(0.1)
            topic = f"{base}/feeds/all.atom"
            for i in range(args.subscribers):
                form = {
                    "hub.mode": "subscribe",
                    "hub.topic": topic,
                    "hub.callback": f"{sub_url}/cb/{i}",
                    "hub.secret": f"secret-{i}",
                }
                answer = await client.post("/websub/hub", data=form)
                assert answer.status_code == 202, answer.text
            admin = {"Authorization": f"Bearer {ADMIN}"}
            with trio.fail_after(60):
                while True:
                    listing = (await client.get("/api/hub", headers=admin)).json()
                    active = [s for s in listing["subscriptions"] if s["state"] == "active"]
                    if len(active) == args.subscribers:
                        break
                    await trio.sleep(0.2)
            print(f"{args.subscribers} subscriptions active (callback 0 hangs on deliveries)")

            cursor = (await client.get("/api/entries")).json()["cursor"]
            polled: dict[int, float] = {}
            stop = trio.Event()
            async with trio.open_nursery() as polls:
                for _ in range(args.listeners):
                    polls.start_soon(long_poll, base, cursor, polled, stop)
                await trio.sleep(1)
                sent: dict[int, float] = {}
                acks: list[float] = []
                headers = {
                    "Authorization": f"Bearer {TOKEN}",
                    "Content-Type": "application/atom+xml",
                }
                # Entry 0 first, not timed: the first Atom push starts a parse worker process.
                warm = await pusher.post("/api/push/bench", content=atom(0), headers=headers)
                assert warm.status_code == 202, warm.text
                await trio.sleep(1)
                subs.wanted = (args.subscribers - 1) * (args.entries + 1)
                for k in range(1, args.entries + 1):
                    sent[k] = trio.current_time()
                    answer = await pusher.post("/api/push/bench", content=atom(k), headers=headers)
                    acks.append(trio.current_time() - sent[k])
                    assert answer.status_code == 202, answer.text
                    await trio.sleep(args.gap)
                if args.subscribers > 1:
                    with trio.move_on_after(10):
                        await subs.complete.wait()
                else:
                    await trio.sleep(2)
                stop.set()
                polls.cancel_scope.cancel()
            hub_lat = [t - sent[k] for (i, k), t in subs.arrived.items() if i != 0 and k in sent]
            poll_lat = [t - sent[k] for k, t in polled.items() if k in sent]
            healthy = max(args.subscribers - 1, 0)
            missing = healthy * args.entries - len(hub_lat)
            print(
                f"{args.entries} Atom entries pushed, one every {args.gap:g} s, "
                f"{args.listeners} long-polls parked"
            )
            print(f"  push acknowledged: {quantiles(acks)}")
            if args.subscribers:
                print(
                    f"  to the {healthy} healthy subscribers: {len(hub_lat)} "
                    f"deliveries, {missing} missing; push -> arrival {quantiles(hub_lat)}"
                )
            else:
                print("  no subscribers: the baseline for the acknowledgements and long-polls")
            print(f"  to the long-polls (first arrival per entry): {quantiles(poll_lat)}")
            if args.subscribers:
                print(f"  the hanging subscriber was sent {subs.hanging_posts} deliveries")
            listing = (await client.get("/api/hub", headers=admin)).json()["subscriptions"]
            hanging = [s for s in listing if s["callback"].endswith("/cb/0")]
            if hanging:
                print(
                    f"  hanging subscriber: state {hanging[0]['state']}, failures "
                    f"{hanging[0]['failures']}, last error {hanging[0]['last_error']!r}"
                )
        nursery.cancel_scope.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", "-n", type=int, default=100)
    parser.add_argument("--entries", "-k", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between pushes")
    parser.add_argument("--listeners", type=int, default=100, help="parked long-polls")
    args = parser.parse_args()
    print(
        f"hub.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.node()}  "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="hubbench-") as tmp:
        server, base = start_server(Path(tmp))
        try:
            trio.run(run, args, base)
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
