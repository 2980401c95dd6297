"""A scriptable feed server and the real feedstream server, both on loopback."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from feedstream.core.config import Config, FeedConfig, ServerConfig
from feedstream.web.asgi import Receive, Scope, Send, answer_lifespan
from feedstream.web.server import serve


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    time: float


class FeedServer:
    """An ASGI app serving whatever the test puts in :attr:`routes`, recording every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self.url = ""
        self._hit = trio.Event()

    def hits_for(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    async def wait_for_hits(self, path: str, count: int) -> list[Hit]:
        """Wait until *path* was requested *count* times (bound it with a cancel scope)."""
        while len(hits := self.hits_for(path)) < count:
            await self._hit.wait()
        return hits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.hits.append(Hit(scope["path"], headers, trio.current_time()))
        self._hit.set()
        self._hit = trio.Event()
        route = self.routes.get(scope["path"], Route(404, b"not found"))
        etag = route.headers.get("ETag")
        status, body = route.status, route.body
        if etag and headers.get("if-none-match") == etag:
            status, body = 304, b""
        raw = [(k.lower().encode(), v.encode()) for k, v in route.headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


def make_config(data_dir: Path, *feeds: FeedConfig, **server: Any) -> Config:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": data_dir,
        "host_gap": 0.0,
        # No icon look-ups unless a test asks: they are requests of their own to the feed's
        # host (and to the hosts its documents name), which other tests count or never serve.
        "fetch_icons": False,
    }
    settings.update(server)
    return Config(server=ServerConfig(**settings), feeds=feeds, source="<test>")


PUSH_TOKEN = "test-token-1234"


def push_feed(feed_id: str, **kwargs: Any) -> FeedConfig:
    return FeedConfig(id=feed_id, token=PUSH_TOKEN, **kwargs)


@asynccontextmanager
async def running(
    config: Config, loader: Callable[[], Config] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The real server on a loopback port; yields a client with that base URL.

    *loader* re-reads the config for a reload (as ``feedstream serve`` passes one).
    Leaving the block shuts the server down gracefully, as SIGTERM would.
    """
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, config, shutdown_trigger=stop.wait, loader=loader)
        )
        async with httpx.AsyncClient(base_url=binds[0], timeout=30) as client:
            try:
                yield client
            finally:
                stop.set()


def with_port(config: Config, port: int) -> Config:
    return dataclasses.replace(config, server=dataclasses.replace(config.server, port=port))


async def status_until(client: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool]) -> None:
    """Poll ``/api/status`` until *check* holds (bound it with a cancel scope).

    Polling is the point here: this is how an operator would watch the server from outside.
    """
    while not check((await client.get("/api/status")).json()):  # noqa: ASYNC110
        await trio.sleep(0.02)
