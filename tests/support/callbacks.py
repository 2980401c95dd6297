"""WebSub subscribers on one loopback server, for the hub's tests: each path behaves its way."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from feedstream.web.asgi import Receive, Scope, Send, answer_lifespan

__all__ = ["Callbacks", "Got"]


@dataclass
class Got:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    time: float


@dataclass
class Callbacks:
    """Subscribers on one loopback server; the path says how each behaves:
    ``/ok...`` echoes the challenge, ``/wrong`` answers another one, ``/gone`` answers content
    with 410, ``/hang`` never answers content."""

    nursery: trio.Nursery
    url: str = ""
    got: list[Got] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    async def start(self) -> Callbacks:
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.errorlog = None
        self.url = (await self.nursery.start(hypercorn_serve, self, config))[0]
        return self

    def of(self, path: str, method: str | None = None) -> list[Got]:
        return [g for g in self.got if g.path == path and method in (None, g.method)]

    async def wait(self, path: str, method: str, count: int = 1) -> list[Got]:
        with trio.fail_after(10):
            while len(got := self.of(path, method)) < count:
                await self._changed.wait()
        return got

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = parse_qsl(scope["query_string"].decode(), keep_blank_values=True)
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name = k.decode().lower()
            headers[name] = f"{headers[name]}, {v.decode()}" if name in headers else v.decode()
        path = scope["path"]
        self.got.append(Got(scope["method"], path, query, headers, body, trio.current_time()))
        self._changed.set()
        self._changed = trio.Event()
        status, answer = 200, b""
        if scope["method"] == "GET":
            challenge = dict(query).get("hub.challenge", "")
            answer = b"not-it" if path == "/wrong" else challenge.encode()
        elif path == "/gone":
            status = 410
        elif path == "/hang":
            await trio.sleep_forever()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": answer})
