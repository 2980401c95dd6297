"""The delivery endpoints, as a small ASGI layer in front of the Quart app.

``GET /api/entries`` (the long-poll) and ``GET /api/stream`` (Server-Sent Events) are what every
open page and embedder hits, thousands at a time, so they skip Quart's request and response
objects: this module is the one place that defines both endpoints. Each request does the least
it can: validate the query (:func:`feedstream.core.httprules.parse_entries_query`), wait on the
cursor log under its own deadline (hypercorn's trio worker does not report client disconnects),
and send the page the log has already serialized for everyone asking the same question.

``POST /api/push/<feed_id>`` (webhook ingest) lives here too: on a server busy with thousands
of listeners every scheduler pass is long, and this path takes far fewer of them than a Quart
route would. Everything else goes to the Quart app untouched.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qsl

import trio

from feedstream.core.config import Config
from feedstream.core.httprules import (
    ApiError,
    api_headers,
    check_push_auth,
    parse_entries_query,
    preflight_headers,
    push_media_type,
)
from feedstream.service.runtime import Runtime
from feedstream.web.asgi import ASGIApp, Receive, Scope, Send
from feedstream.web.metrics import push_reason

logger = logging.getLogger(__name__)

__all__ = ["StreamEndpoints"]


ENTRIES, STREAM = "/api/entries", "/api/stream"
PUSH = "/api/push/"
HEARTBEAT = 15.0  # seconds between SSE comments on a quiet stream
SSE_BATCH = 500  # entries per SSE write at most


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


class StreamEndpoints:
    """ASGI app: the two delivery endpoints here, every other request to *app*."""

    def __init__(self, app: ASGIApp, config: Config, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.cors_origins = config.server.cors_origins
        self.max_listeners = config.server.max_listeners
        self.buffer_bytes = config.server.sse_buffer_bytes
        self.max_push_bytes = config.server.max_push_bytes
        # With a wildcard CORS policy the headers never vary: encode them once.
        self._fixed_headers = (
            _encode(api_headers(None, self.cors_origins)) if "*" in self.cors_origins else None
        )

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        """Route the request: the handler's coroutine is what the server awaits.

        A plain function, not a coroutine of its own: a parked long-poll then keeps one frame
        less alive (some 300 bytes of each waiting listener's 20 KiB).
        """
        path = scope.get("path")
        if scope["type"] == "http" and isinstance(path, str) and path.startswith(PUSH):
            return self._push(scope, receive, send, path[len(PUSH) :])
        if scope["type"] != "http" or path not in (ENTRIES, STREAM):
            return self.app(scope, receive, send)
        method = scope["method"]
        if method == "OPTIONS":
            return self._respond(send, scope, 204, b"", preflight_headers())
        if method not in ("GET", "HEAD"):
            return self._error(send, scope, ApiError(405, f"{method} is not allowed here"))
        if self.runtime.waiting >= self.max_listeners:
            error = ApiError(503, "too many listeners; retry shortly")
            return self._error(send, scope, error, {"Retry-After": "5"})
        if path == ENTRIES:
            return self._entries(scope, send)
        return self._stream(scope, send)

    # -- responses ---------------------------------------------------------------------------

    def _headers(
        self, scope: Scope, extra: dict[str, str] | None = None
    ) -> list[tuple[bytes, bytes]]:
        headers = self._fixed_headers
        if headers is None:
            origin = _header(scope, b"origin")
            headers = _encode(api_headers(origin, self.cors_origins))
        return headers + _encode(extra) if extra else headers

    async def _respond(
        self,
        send: Send,
        scope: Scope,
        status: int,
        body: bytes,
        extra: dict[str, str] | None = None,
        content_type: bytes = b"application/json",
    ) -> None:
        headers = [*self._headers(scope, extra), (b"content-type", content_type)]
        headers.append((b"content-length", str(len(body)).encode()))
        if self.runtime.draining:
            # Shutting down: the client must not re-send on this connection, or hypercorn
            # holds the shutdown for its whole graceful timeout; a new one is refused at once.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""}
        )

    async def _error(
        self, send: Send, scope: Scope, error: ApiError, extra: dict[str, str] | None = None
    ) -> None:
        body = json.dumps({"error": error.reason}).encode()
        await self._respond(send, scope, error.status, body, extra)

    # -- GET /api/entries --------------------------------------------------------------------

    async def _entries(self, scope: Scope, send: Send) -> None:
        try:
            query = parse_entries_query(_query(scope), self.runtime.known_feeds)
        except ApiError as error:
            await self._error(send, scope, error)
            return
        log = self.runtime.log
        woken = False
        if query.after is not None and query.timeout > 0:
            waiting = self.runtime.stats.waiting
            waiting["longpoll"] += 1
            try:
                log.asking()
                with trio.move_on_after(query.timeout) as timer:
                    # log.wait(), inlined: a parked listener keeps one coroutine frame less.
                    while not log.ready(query.after, feeds=query.feeds):
                        await log.changed()
                woken = not timer.cancelled_caught and not log.closed
            finally:
                waiting["longpoll"] -= 1
        # A client that does not wait sees everything committed; a waiting one, the last round.
        fresh = query.after is None or query.timeout <= 0
        page = log.read(query.after, feeds=query.feeds, limit=query.limit, fresh=fresh)
        await self._respond(send, scope, 200, page.body)
        if woken and page.entries:
            log.answered()
            self.runtime.stats.fanout_seconds.observe(trio.current_time() - log.committed_at)

    # -- POST /api/push/<feed_id> -----------------------------------------------------------

    async def _push(self, scope: Scope, receive: Receive, send: Send, feed_id: str) -> None:
        """Webhook ingest: 202 ``{"accepted": n}``, or a 4xx with a JSON reason."""
        method = scope["method"]
        if method == "OPTIONS":
            await self._respond(send, scope, 204, b"", preflight_headers())
            return
        try:
            if method != "POST":
                raise ApiError(405, f"{method} is not allowed here")
            accepted = await self._take_push(scope, receive, feed_id)
        except ApiError as error:
            self.runtime.stats.pushes["webhook", push_reason(error.status)] += 1
            await self._error(send, scope, error)
            return
        self.runtime.stats.pushes["webhook", "accepted"] += 1
        await self._respond(send, scope, 202, b'{"accepted":%d}' % accepted)

    async def _take_push(self, scope: Scope, receive: Receive, feed_id: str) -> int:
        feed = self.runtime.config.feed(feed_id)  # the config of the last reload
        if feed is None:
            raise ApiError(404, f"unknown feed {feed_id[:64]!r}")
        if not feed.accepts_push:
            raise ApiError(403, f"feed {feed.id!r} takes no pushes (it has no token or secret)")
        length = _header(scope, b"content-length")  # h11 has refused a malformed one
        if length is not None and length.isdigit() and int(length) > self.max_push_bytes:
            raise _too_large(self.max_push_bytes)  # before reading a byte of it
        media_type = push_media_type(_header(scope, b"content-type"))
        body = await _read_body(receive, self.max_push_bytes)
        check_push_auth(
            feed, _header(scope, b"authorization"), _header(scope, b"x-hub-signature"), body
        )
        result = await self.runtime.push(feed, body, media_type)
        if result.accepted is None:
            raise ApiError(422, f"unparseable body: {result.error}")
        return result.accepted

    # -- GET /api/stream (Server-Sent Events) ------------------------------------------------

    async def _stream(self, scope: Scope, send: Send) -> None:
        args = _query(scope)
        last_event_id = _header(scope, b"last-event-id")
        if last_event_id and "after" not in args:
            args["after"] = last_event_id
        try:
            query = parse_entries_query(args, self.runtime.known_feeds)
        except ApiError as error:
            await self._error(send, scope, error)
            return
        headers = self._headers(scope, {"X-Accel-Buffering": "no"})
        headers.append((b"content-type", b"text/event-stream; charset=utf-8"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        client = _SseClient(send, self.buffer_bytes)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.write_out)
            waiting = self.runtime.stats.waiting
            waiting["sse"] += 1
            try:
                await self._produce(client, query.after, query.feeds, query.limit)
            finally:
                waiting["sse"] -= 1
                client.finish()

    async def _produce(
        self, client: _SseClient, after: str | None, feeds: frozenset[str] | None, limit: int
    ) -> None:
        """Queue the stream's events for *client* until shutdown, or until it falls behind."""
        log = self.runtime.log
        # A first page (the newest entries when no cursor was given), then everything new.
        page = log.read(after, feeds=feeds, limit=limit)
        chunk = page.events
        while True:
            if chunk and not client.queue(chunk):
                logger.info("SSE client too slow, dropped (it resumes by Last-Event-ID)")
                return
            with trio.move_on_after(HEARTBEAT) as quiet:
                await log.wait(page.cursor, feeds=feeds, streaming=True)
            if log.closed:
                return
            if quiet.cancelled_caught:
                chunk = b": heartbeat\n\n"
                continue
            page = log.read(page.cursor, feeds=feeds, limit=SSE_BATCH)
            chunk = page.events
            if chunk:
                log.answered()
                self.runtime.stats.fanout_seconds.observe(trio.current_time() - log.committed_at)


class _SseClient:
    """One SSE connection's outgoing buffer, written out by its own task.

    Hypercorn shields its socket writes from cancellation, so a client that stops reading
    would block a direct ``send`` for as long as it likes. Events therefore go into this
    buffer and a writer task sends them; when more than *limit* bytes are waiting, the client
    is dropped: nothing more is queued, and the response ends as soon as the write in flight
    completes. The broadcaster and every other listener never wait for it.
    """

    def __init__(self, send: Send, limit: int) -> None:
        self._send = send
        self._limit = limit
        self._pending = 0  # bytes queued and not yet written
        self._chunks: deque[bytes] = deque()
        self._ready = trio.Event()
        self._done = False

    def queue(self, chunk: bytes) -> bool:
        if self._pending + len(chunk) > self._limit:
            return False
        self._pending += len(chunk)
        self._chunks.append(chunk)
        self._ready.set()
        return True

    def finish(self) -> None:
        self._done = True
        self._chunks.clear()  # a dropped client gets nothing more
        self._ready.set()

    async def write_out(self) -> None:
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            while self._chunks:
                chunk = self._chunks.popleft()
                await self._send({"type": "http.response.body", "body": chunk, "more_body": True})
                self._pending -= len(chunk)
            if self._done:
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
                return


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"body over the {limit}-byte limit")


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The request body, or 413 as soon as it grows past *limit* bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _query(scope: Scope) -> dict[str, str]:
    """Query parameters, the first of repeated ones winning."""
    args: dict[str, str] = {}
    raw = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(raw, keep_blank_values=True):
        args.setdefault(name, value)
    return args


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None
