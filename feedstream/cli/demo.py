"""The offline demo: the server plus a local publisher of synthetic feeds, all on loopback.

The publisher is a small ASGI app on its own port serving three feeds that gain an entry every
few seconds: Atom (``/atom.xml``), RSS 2.0 (``/rss.xml``) and JSON Feed 1.1 (``/feed.json``),
with ETags so the poller's conditional GETs get 304s between entries. A fourth source is pushed:
the publisher POSTs JSON Feed documents to ``/api/push/demo-push`` with a Bearer token, the way a
webhook would. Nothing leaves the machine.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from feedstream.core.config import Config, FeedConfig, ServerConfig
from feedstream.core.query import parse_query
from feedstream.core.rules import parse_rules
from feedstream.core.streams import StreamConfig
from feedstream.core.times import format_rfc3339_datetime
from feedstream.service.periodic import Periodic
from feedstream.web.asgi import Receive, Scope, Send, answer_lifespan
from feedstream.web.server import serve

logger = logging.getLogger(__name__)

__all__ = ["DemoPublisher", "demo_config", "run_demo"]

PUSH_TOKEN = "demo-push-token"
KEEP = 20  # entries per document

_SUBJECTS = ["Trio", "The comet", "A WebSub hub", "The long-poll", "SQLite", "The parser",
             "A quiet feed", "The broadcaster", "Our cursor", "The backlog", "A lighthouse",
             "The night shift", "A new moon", "The river", "Coffee"]  # fmt: skip
_VERBS = ["learns", "meets", "outlives", "rewrites", "streams", "watches", "finds", "greets",
          "borrows", "sketches", "measures", "follows"]  # fmt: skip
_OBJECTS = ["a nursery", "ten thousand listeners", "the morning news", "an old friend",
            "a perfect cursor", "the autojump clock", "a gentle pace", "the last entry",
            "a paper map", "fresh bread", "the quiet hour", "a distant hub"]  # fmt: skip
_COLORS = ["#3b82f6", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#06b6d4", "#84cc16"]


@dataclass(slots=True)
class _Item:
    number: int
    title: str
    summary: str
    published: datetime


@dataclass(slots=True)
class _Feed:
    name: str
    title: str
    items: list[_Item] = field(default_factory=list)

    @property
    def etag(self) -> str:
        return f'"{self.name}-{self.items[-1].number if self.items else 0}"'


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class DemoPublisher:
    """Synthetic feeds that grow over time, served by a tiny ASGI app."""

    def __init__(self, seed: int | None = None) -> None:
        self.random = random.Random(seed)
        self.feeds = {
            "atom.xml": _Feed("atom", "Demo Atom: Harbour Notes"),
            "rss.xml": _Feed("rss", "Demo RSS: Night Desk"),
            "feed.json": _Feed("json", "Demo JSON Feed: Field Log"),
        }
        self._counter = itertools.count(1)
        self.base_url = ""

    def new_item(self) -> _Item:
        number = next(self._counter)
        r = self.random
        title = f"{r.choice(_SUBJECTS)} {r.choice(_VERBS)} {r.choice(_OBJECTS)}"
        summary = (
            f"Entry {number} of the offline demo. {r.choice(_SUBJECTS)} {r.choice(_VERBS)} "
            f"{r.choice(_OBJECTS)}, while {r.choice(_SUBJECTS).lower()} {r.choice(_VERBS)} "
            f"{r.choice(_OBJECTS)}."
        )
        return _Item(number, title, summary, _now())

    def grow(self, path: str) -> None:
        feed = self.feeds[path]
        feed.items.append(self.new_item())
        del feed.items[:-KEEP]

    # -- documents ---------------------------------------------------------------------------

    def _thumb(self, item: _Item) -> str:
        return f"{self.base_url}/thumb/{item.number}.svg"

    def atom(self, feed: _Feed) -> bytes:
        entries = "".join(
            f"<entry><id>urn:demo:atom:{i.number}</id><title>{escape(i.title)}</title>"
            f'<link href="{self.base_url}/posts/{i.number}"/>'
            f"<updated>{format_rfc3339_datetime(i.published)}</updated>"
            "<author><name>Harbour Desk</name></author>"
            f"<summary>{escape(i.summary)}</summary>"
            f'<media:thumbnail url="{self._thumb(i)}"/></entry>'
            for i in reversed(feed.items)
        )
        updated = format_rfc3339_datetime(feed.items[-1].published if feed.items else _now())
        return (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/">'
            f"<id>urn:demo:atom</id><title>{escape(feed.title)}</title><updated>{updated}</updated>"
            f'<link href="{self.base_url}/"/>{entries}</feed>'
        ).encode()

    def rss(self, feed: _Feed) -> bytes:
        items = "".join(
            f'<item><guid isPermaLink="false">demo-rss-{i.number}</guid>'
            f"<title>{escape(i.title)}</title>"
            f"<link>{self.base_url}/posts/{i.number}</link>"
            f"<pubDate>{i.published.strftime('%a, %d %b %Y %H:%M:%S +0000')}</pubDate>"
            f"<description>{escape(i.summary)}</description>"
            f'<enclosure url="{self._thumb(i)}" type="image/svg+xml" length="300"/></item>'
            for i in reversed(feed.items)
        )
        return (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>{escape(feed.title)}</title><link>{self.base_url}/</link>"
            f"<description>Synthetic RSS</description>{items}</channel></rss>"
        ).encode()

    def json_feed(
        self, feed: _Feed, title: str | None = None, items: list[_Item] | None = None
    ) -> bytes:
        doc = {
            "version": "https://jsonfeed.org/version/1.1",
            "title": title or feed.title,
            "home_page_url": f"{self.base_url}/",
            "items": [
                {
                    "id": f"demo-json-{i.number}",
                    "url": f"{self.base_url}/posts/{i.number}",
                    "title": i.title,
                    "summary": i.summary,
                    "content_text": i.summary,
                    "image": self._thumb(i),
                    "date_published": format_rfc3339_datetime(i.published),
                    "authors": [{"name": "Field Team"}],
                    "tags": ["demo"],
                }
                for i in reversed(items if items is not None else feed.items)
            ],
        }
        return json.dumps(doc).encode()

    def thumb(self, number: int) -> bytes:
        color = _COLORS[number % len(_COLORS)]
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96">'
            f'<rect width="96" height="96" rx="14" fill="{color}"/>'
            '<text x="48" y="60" font-family="sans-serif" font-size="34" fill="#fff" '
            f'text-anchor="middle">{number % 1000}</text></svg>'
        ).encode()

    # -- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        path = scope["path"].lstrip("/")
        status, content_type, body = 404, "text/plain", b"not found"
        headers: list[tuple[bytes, bytes]] = []
        if path in self.feeds:
            feed = self.feeds[path]
            request_headers = dict(scope["headers"])
            headers.append((b"etag", feed.etag.encode()))
            if request_headers.get(b"if-none-match", b"").decode() == feed.etag:
                status, body = 304, b""
            else:
                status = 200
                render = {"atom": self.atom, "rss": self.rss, "json": self.json_feed}[feed.name]
                body = render(feed)
                content_type = {
                    "atom": "application/atom+xml",
                    "rss": "application/rss+xml",
                    "json": "application/feed+json",
                }[feed.name]
        elif path.startswith("thumb/") and path.endswith(".svg") and path[6:-4].isdigit():
            status, content_type, body = 200, "image/svg+xml", self.thumb(int(path[6:-4]))
            headers.append((b"cache-control", b"max-age=86400"))
        headers.append((b"content-type", content_type.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def demo_config(publisher_url: str, data_dir: Path, host: str, port: int, every: float) -> Config:
    interval = max(1.0, every)
    polled = [
        FeedConfig(id="demo-atom", url=f"{publisher_url}/atom.xml", interval=interval),
        FeedConfig(id="demo-rss", url=f"{publisher_url}/rss.xml", interval=interval),
        FeedConfig(id="demo-json", url=f"{publisher_url}/feed.json", interval=interval),
    ]
    pushed = FeedConfig(id="demo-push", title="Demo Webhook: Pager", token=PUSH_TOKEN)
    server = ServerConfig(host=host, port=port, data_dir=data_dir, backlog=500, host_gap=0.0)
    # A rule and a stream, so that the page shows highlighted entries and a stream chip.
    rules = parse_rules([{"id": "sky", "query": "comet OR moon", "action": "highlight"}])
    night = StreamConfig("night", "Night", parse_query('night OR moon OR "quiet hour"'))
    feeds = (*polled, pushed)
    return Config(server, feeds, source="<demo>", rules=tuple(rules), streams=(night,))


async def _publish(publisher: DemoPublisher, every: float) -> None:
    """Grow the polled feeds in turn, drift-free."""
    paths = list(publisher.feeds)
    for path in paths:  # something to show at once
        for _ in range(3):
            publisher.grow(path)
    turns = itertools.cycle(paths)
    async for _ in Periodic(every / len(paths)):
        publisher.grow(next(turns))


async def _push(publisher: DemoPublisher, server_url: str, every: float) -> None:
    """POST a new entry to the push feed now and then, like a webhook sender."""
    feed = _Feed("json", "Demo Webhook: Pager")
    async with httpx.AsyncClient() as client:
        ticks = Periodic(every * 1.5)
        while True:  # one push at once, then one per tick
            item = publisher.new_item()
            body = publisher.json_feed(feed, items=[item])
            try:
                response = await client.post(
                    f"{server_url}/api/push/demo-push",
                    content=body,
                    headers={
                        "Authorization": f"Bearer {PUSH_TOKEN}",
                        "Content-Type": "application/feed+json",
                    },
                )
                logger.debug("demo push: %s %s", response.status_code, response.text)
            except httpx.HTTPError as exc:
                logger.warning("demo push failed: %s", exc)
            await anext(ticks)


async def run_demo(
    data_dir: str | None,
    host: str | None,
    port: int | None,
    every: float = 3.0,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the publisher and the server together until interrupted."""
    every = max(0.5, every)
    with tempfile.TemporaryDirectory(prefix="feedstream-demo-") as tmp:
        directory = Path(data_dir) if data_dir else Path(tmp)
        publisher = DemoPublisher()
        async with trio.open_nursery() as nursery:
            pub_config = HypercornConfig()
            pub_config.bind = ["127.0.0.1:0"]
            pub_config.accesslog = None
            pub_config.errorlog = None
            binds = await nursery.start(hypercorn_serve, publisher, pub_config)
            publisher.base_url = binds[0]
            nursery.start_soon(_publish, publisher, every)
            config = demo_config(
                publisher.base_url,
                directory,
                host or "127.0.0.1",
                8080 if port is None else port,
                every,
            )

            async def run_server(*, task_status: trio.TaskStatus[list[str]]) -> None:
                await serve(config, task_status=task_status)  # returns on SIGINT / SIGTERM
                nursery.cancel_scope.cancel()

            server_url = (await nursery.start(run_server))[0]
            nursery.start_soon(_push, publisher, server_url, every)
            print(f"feedstream demo: open {server_url}/  (Ctrl+C to stop)", flush=True)
            task_status.started(server_url)
