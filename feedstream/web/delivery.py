"""The delivery endpoints: ``GET /api/entries`` (the long-poll) and ``GET /api/stream`` (SSE).

They are what every open page and embedder hits, thousands at a time, so they are raw ASGI,
skipping Quart's request and response objects. Each request does the least it can: validate
the query (:func:`feedstream.core.httprules.parse_entries_query`), wait on the broadcaster under
its own deadline (hypercorn's trio worker does not report client disconnects), and send the
page the broadcaster has already rendered for everyone asking the same question.

``stream``, ``q`` and ``duplicates`` become a :class:`~feedstream.log.base.Selection` from the
service's :class:`~feedstream.log.views.Views` (queries evaluated once per entry, whatever the
number of listeners); a request without them gets none and reads exactly as before.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable

import trio

from feedstream.core.config import Config
from feedstream.core.httprules import ApiError, EntriesQuery, parse_entries_query, preflight_headers
from feedstream.core.query import QueryError
from feedstream.log.base import Selection
from feedstream.log.views import UnknownStream
from feedstream.log.wire import entries_body, sse_events
from feedstream.service.runtime import Delivery
from feedstream.web.asgi import AFTER_ANSWER, Responder, Scope, Send, header, query

logger = logging.getLogger(__name__)

__all__ = ["ENTRIES", "STREAM", "DeliveryEndpoints"]


ENTRIES, STREAM = "/api/entries", "/api/stream"
HEARTBEAT = 15.0  # seconds between SSE comments on a quiet stream
SSE_BATCH = 500  # entries per SSE write at most


class DeliveryEndpoints:
    """The two delivery endpoints, over the service's :class:`Delivery` view."""

    def __init__(self, delivery: Delivery, config: Config, responder: Responder) -> None:
        self.delivery = delivery
        self.responder = responder
        self.max_listeners = config.server.max_listeners
        self.buffer_bytes = config.server.sse_buffer_bytes

    def __call__(self, scope: Scope, send: Send) -> Awaitable[None]:
        """The handler's coroutine for an http request to :data:`ENTRIES` or :data:`STREAM`.

        A plain function, not a coroutine of its own: a parked long-poll then keeps one frame
        less alive (some 300 bytes of each waiting listener's 20 KiB).
        """
        method = scope["method"]
        if method == "OPTIONS":
            return self.responder.api(send, scope, 204, b"", preflight_headers())
        if method not in ("GET", "HEAD"):
            return self.responder.error(send, scope, ApiError(405, f"{method} is not allowed here"))
        if self.delivery.listeners >= self.max_listeners:
            error = ApiError(503, "too many listeners; retry shortly")
            return self.responder.error(send, scope, error, {"Retry-After": "5"})
        if scope["path"] == ENTRIES:
            return self._entries(scope, send)
        return self._stream(scope, send)

    # -- GET /api/entries --------------------------------------------------------------------

    async def _entries(self, scope: Scope, send: Send) -> None:
        delivery = self.delivery
        try:
            query_ = parse_entries_query(query(scope), delivery.known_feeds, delivery.categories)
            plain = query_.stream is None and query_.q is None and not query_.duplicates
            view = None if plain else self._view(query_)
        except ApiError as error:
            await self.responder.error(send, scope, error)
            return
        feed = delivery.broadcaster
        woken = False
        if query_.after is not None and query_.timeout > 0:
            waiting = delivery.waiting
            waiting["longpoll"] += 1
            try:
                feed.asking()
                deadline = trio.current_time() + query_.timeout
                woken = True  # until the deadline comes first
                # feed.wait(), inlined: a parked listener keeps one coroutine frame less.
                while woken and not feed.ready(query_.after, feeds=query_.feeds, view=view):
                    woken = await feed.changed_by(deadline)
                woken = woken and not feed.closed
            finally:
                waiting["longpoll"] -= 1
        # A client that does not wait sees everything committed; a waiting one, the last round.
        fresh = query_.after is None or query_.timeout <= 0
        page = feed.read(
            query_.after, feeds=query_.feeds, limit=query_.limit, fresh=fresh, view=view
        )
        if not (woken and page.entries):
            await self.responder.api(send, scope, 200, entries_body(page))
            return
        feed.answered()
        delivery.fanout_seconds.observe(trio.current_time() - feed.committed_at)
        # Answered in a round: after the write, wait at the round's gate (Broadcaster.hold).
        token = AFTER_ANSWER.set(feed.hold)
        try:
            await self.responder.api(send, scope, 200, entries_body(page))
        finally:
            AFTER_ANSWER.reset(token)

    # -- GET /api/stream (Server-Sent Events) ------------------------------------------------

    async def _stream(self, scope: Scope, send: Send) -> None:
        args = query(scope)
        last_event_id = header(scope, b"last-event-id")
        if last_event_id and "after" not in args:
            args["after"] = last_event_id
        try:
            query_ = parse_entries_query(args, self.delivery.known_feeds, self.delivery.categories)
            plain = query_.stream is None and query_.q is None and not query_.duplicates
            view = None if plain else self._view(query_)
        except ApiError as error:
            await self.responder.error(send, scope, error)
            return
        headers = self.responder.api_headers(scope, {"X-Accel-Buffering": "no"})
        headers.append((b"content-type", b"text/event-stream; charset=utf-8"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        client = _SseClient(send, self.buffer_bytes)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.write_out)
            waiting = self.delivery.waiting
            waiting["sse"] += 1
            try:
                await self._produce(client, query_.after, query_.feeds, query_.limit, view)
            finally:
                waiting["sse"] -= 1
                client.finish()

    async def _produce(
        self,
        client: _SseClient,
        after: str | None,
        feeds: frozenset[str] | None,
        limit: int,
        view: Selection | None = None,
    ) -> None:
        """Queue the stream's events for *client* until shutdown, or until it falls behind."""
        feed = self.delivery.broadcaster
        # A first page (the newest entries when no cursor was given), then everything new.
        page = feed.read(after, feeds=feeds, limit=limit, view=view)
        # Never empty: the server writes a head with its first body chunk, and a client must see
        # the head at once, not at the first entry or heartbeat.
        chunk = sse_events(page) or b": stream open\n\n"
        while True:
            if chunk and not client.queue(chunk):
                logger.info("SSE client too slow, dropped (it resumes by Last-Event-ID)")
                return
            with trio.move_on_after(HEARTBEAT) as quiet:
                await feed.wait(page.cursor, feeds=feeds, streaming=True, view=view)
            if feed.closed:
                return
            if quiet.cancelled_caught:
                chunk = b": heartbeat\n\n"
                continue
            page = feed.read(page.cursor, feeds=feeds, limit=SSE_BATCH, view=view)
            chunk = sse_events(page)
            if chunk:
                feed.answered()
                self.delivery.fanout_seconds.observe(trio.current_time() - feed.committed_at)

    def _view(self, query_: EntriesQuery) -> Selection | None:
        """The selection for ``stream``, ``q`` and ``duplicates``; 400 for an unknown stream or
        a query that does not parse (``query: <reason> at <position>``)."""
        try:
            return self.delivery.views.select(
                stream=query_.stream, q=query_.q, duplicates=query_.duplicates
            )
        except UnknownStream:
            raise ApiError(400, f"stream: unknown stream {query_.stream!r}") from None
        except QueryError as exc:
            raise ApiError(400, str(exc)) from None


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
