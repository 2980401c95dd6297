"""Output feeds: ``GET /feeds/<name>.atom``, ``.rss`` and ``.json``.

``<name>`` is ``all`` (every feed), a feed id, or a stream id (a configured ``[[streams]]``
view); feed ids are looked up first. The document holds the newest entries (``?limit``, default
:data:`DEFAULT_LIMIT`, at most the backlog), newest first, read the way the delivery endpoints
read them (the broadcaster's ``fresh`` read, with the stream's
:class:`~feedstream.log.base.Selection`), so folded duplicates and dropped entries stay out.
Rendering is :mod:`feedstream.core.publish`.

Answers carry a strong ``ETag`` (a digest of the body) and ``Last-Modified`` (the newest entry's
date), answer conditional requests with ``304``, send CORS headers as the API does, and are
``no-cache`` (revalidate every time). Every error is ``{"error": ...}`` JSON with a 4xx status.
Rendered documents are remembered by what they show (format, name, limit, the entries' cursors,
the document's own links and title), so a poller that revalidates costs one log read.

With ``[hub] enabled`` every document names the hub (``<public_url>/websub/hub``) and itself,
in ``Link`` headers (``rel="hub"``, ``rel="self"``) and in the document (see
:mod:`feedstream.core.publish`), so a WebSub subscriber finds where to subscribe.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

from quart import Response, request
from quart_trio import QuartTrio

from feedstream.core.config import Config
from feedstream.core.httprules import API_SECURITY_HEADERS, ApiError, cors_headers
from feedstream.core.icons import etag_matches
from feedstream.core.publish import CONTENT_TYPES, FeedInfo, authority_of, newest, render
from feedstream.core.times import parse_http_date
from feedstream.log.base import Selection
from feedstream.service.runtime import Delivery
from feedstream.websub.hub import HubSettings

__all__ = ["ALL", "DEFAULT_LIMIT", "FEEDS", "PublishedFeeds", "register_publish"]

FEEDS = "/feeds/"
ALL = "all"  # every feed; reserved (no feed or stream may be called so)
DEFAULT_LIMIT = 50
CACHE_SIZE = 64  # rendered documents remembered
CACHE_CONTROL = "no-cache"  # cache, but revalidate (ETag / Last-Modified) every time


@dataclass(frozen=True, slots=True)
class Document:
    """One rendered output feed."""

    body: bytes
    content_type: str
    etag: str
    last_modified: str | None  # an HTTP date, or None for an empty document
    modified: float | None  # the same as Unix seconds
    links: tuple[str, ...] = ()  # ``Link`` header values (the hub's and the self link)


class PublishedFeeds:
    """The output feeds of one delivery process, over its :class:`Delivery` view."""

    def __init__(self, delivery: Delivery, config: Config) -> None:
        self.delivery = delivery
        self.backlog = config.server.backlog
        self.public_url = config.server.public_url
        host = urlsplit(self.public_url).hostname if self.public_url else None
        self.authority = authority_of(host)
        self.hub_url: str | None = None
        if config.hub.enabled and self.public_url:
            self.hub_url = HubSettings(self.public_url).hub_url
        self._cache: OrderedDict[tuple[Any, ...], Document] = OrderedDict()

    def limit(self, args: Mapping[str, str]) -> int:
        """``?limit``: a whole number from 1 to the backlog (400 otherwise)."""
        raw = args.get("limit")
        if raw is None:
            return min(DEFAULT_LIMIT, self.backlog)
        value = raw.strip()
        if not (value.isascii() and value.isdigit() and len(value) <= 9) or not (
            1 <= int(value) <= self.backlog
        ):
            raise ApiError(400, f"limit: must be a whole number from 1 to {self.backlog}")
        return int(value)

    def select(self, name: str) -> tuple[frozenset[str] | None, Selection | None, str | None]:
        """The feed filter, selection and title (None: the feed's own) for *name*; 404 when it
        names nothing published here."""
        delivery = self.delivery
        if name == ALL:
            return None, None, "feedstream: every feed"
        if name in delivery.known_feeds:
            return frozenset((name,)), None, None
        for stream in delivery.views.streams:
            if stream.id == name:
                return None, delivery.views.select(stream=name), stream.title
        raise ApiError(404, f"no feed or stream {name[:64]!r} here")

    def document(self, name: str, format: str, limit: int, base_url: str) -> Document:
        """The output feed *name* in *format* (``atom``, ``rss``, ``json``), its newest
        *limit* entries newest first; *base_url* is where the server is reached (no slash)."""
        if self.delivery.cursor is None:
            raise ApiError(503, "the service is not running")
        feeds, view, title = self.select(name)
        page = self.delivery.broadcaster.read(None, feeds=feeds, limit=limit, fresh=True, view=view)
        root = (self.public_url or base_url).rstrip("/")
        key = (format, name, limit, tuple(e.cursor for e in page.entries), root, title)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        decoded = (_decoded(stored.json) for stored in reversed(page.entries))
        entries = [entry for entry in decoded if entry and not entry.get("duplicate_of")]
        if title is None:  # a feed: its title as its newest entry tells it
            title = next((e["feed_title"] for e in entries if e.get("feed_title")), name)
        info = FeedInfo(
            name=name,
            title=str(title),
            self_url=f"{root}{FEEDS}{name}.{format}",
            home_url=f"{root}/",
            authority=self.authority,
            source_url=f"{root}{FEEDS}{{feed}}.atom",
            hub_url=self.hub_url,
        )
        body = render(format, info, entries)
        moment = newest(entries)
        document = Document(
            body=body,
            content_type=CONTENT_TYPES[format],
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            last_modified=None if moment is None else format_datetime(moment, usegmt=True),
            modified=None if moment is None else moment.timestamp(),
            links=()
            if self.hub_url is None
            else (f'<{self.hub_url}>; rel="hub"', f'<{info.self_url}>; rel="self"'),
        )
        self._cache[key] = document
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return document


def _decoded(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def not_modified(
    document: Document, if_none_match: str | None, if_modified_since: str | None
) -> bool:
    """Whether a conditional request already has *document* (``If-None-Match`` wins over
    ``If-Modified-Since``, as RFC 9110 asks)."""
    if if_none_match:
        return etag_matches(if_none_match, document.etag)
    since = parse_http_date(if_modified_since)
    return since is not None and document.modified is not None and int(document.modified) <= since


def split_document(document: str) -> tuple[str, str]:
    """``all.atom`` -> (``all``, ``atom``); 404 for an unknown extension."""
    name, dot, format = document.rpartition(".")
    if not dot or not name or format not in CONTENT_TYPES:
        raise ApiError(404, "output feeds are /feeds/<name>.atom, .rss or .json")
    return name, format


def register_publish(app: QuartTrio, config: Config, delivery: Delivery) -> PublishedFeeds:
    """Add ``GET /feeds/<name>.<format>`` to *app*."""
    published = PublishedFeeds(delivery, config)
    origins = config.server.cors_origins
    credentials = config.server.private  # listed origins may send the session cookie
    role = config.server.role

    def headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
        cors = cors_headers(request.headers.get("Origin"), origins, credentials)
        base = {**API_SECURITY_HEADERS, **cors}
        return {**base, "Cache-Control": CACHE_CONTROL, **(extra or {})}

    def error(status: int, reason: str) -> Response:
        body = json.dumps({"error": reason}, ensure_ascii=False)
        return Response(body, status, headers(), content_type="application/json")

    @app.route(FEEDS + "<document>", methods=["GET", "OPTIONS"])
    async def output_feed(document: str) -> Response:
        if request.method == "OPTIONS":
            allow = {
                "Access-Control-Allow-Methods": "GET, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, If-None-Match, If-Modified-Since",
                "Access-Control-Max-Age": "86400",
            }
            return Response(b"", 204, headers(allow))
        if role == "ingest":
            return error(421, "this node only ingests: output feeds are served by deliver nodes")
        try:
            name, format = split_document(document)
            limit = published.limit(request.args)
            doc = published.document(name, format, limit, request.host_url)
        except ApiError as exc:
            return error(exc.status, exc.reason)
        validators = {"ETag": doc.etag}
        if doc.last_modified is not None:
            validators["Last-Modified"] = doc.last_modified
        if not_modified(
            doc, request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since")
        ):
            answer = Response(b"", 304, headers(validators), content_type=doc.content_type)
        else:
            answer = Response(doc.body, 200, headers(validators), content_type=doc.content_type)
        for link in doc.links:
            answer.headers.add("Link", link)
        return answer

    return published
