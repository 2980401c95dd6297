"""Small ASGI pieces shared by the raw ASGI endpoints (delivery, push) and the demo publisher."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qsl

from feedstream.core.httprules import ApiError, api_headers

__all__ = [
    "AFTER_ANSWER",
    "ASGIApp",
    "Receive",
    "Responder",
    "Scope",
    "Send",
    "answer_lifespan",
    "encode_headers",
    "header",
    "query",
    "query_pairs",
    "read_body",
]

# ASGI's own types, kept loose: hypercorn and Quart each declare stricter TypedDict unions.
Scope = Any
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]

#: What the connection loop (:mod:`feedstream.web.connection`) awaits in a request's task right
#: after the request's whole answer is on the wire, instead of its single yield; set by an app
#: for the length of its last ``send``. It must not raise ``Cancelled`` (a cancellation waits for
#: the next checkpoint, as with a shielded one). The delivery endpoint sets the broadcaster's
#: :meth:`~feedstream.log.broadcast.Broadcaster.hold` for a long-poll woken in a round.
AFTER_ANSWER: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "after_answer", default=None
)


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """Run a ``lifespan`` scope for an app that needs no start-up or shutdown work."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


def encode_headers(headers: Mapping[str, str]) -> RawHeaders:
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


def header(scope: Scope, name: bytes) -> str | None:
    """The first request header *name* (lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def query_pairs(scope: Scope) -> list[tuple[str, str]]:
    """Query parameters in order, repeats kept."""
    raw = scope.get("query_string", b"").decode("latin-1")
    return parse_qsl(raw, keep_blank_values=True)


def query(scope: Scope) -> dict[str, str]:
    """Query parameters, the first of repeated ones winning."""
    args: dict[str, str] = {}
    for name, value in query_pairs(scope):
        args.setdefault(name, value)
    return args


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"body over the {limit}-byte limit")


async def read_body(receive: Receive, limit: int) -> bytes:
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
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class Responder:
    """Whole answers of the raw endpoints: ``/api/*`` headers (CORS for the request's origin,
    ``no-store``, ``nosniff``), and ``Connection: close`` once the server is shutting down."""

    def __init__(
        self,
        cors_origins: tuple[str, ...],
        draining: Callable[[], bool],
        credentials: bool = False,
    ) -> None:
        self.cors_origins = cors_origins
        self.draining = draining
        self.credentials = credentials  # a private server: listed origins may send cookies
        # With a wildcard CORS policy the headers never vary: encode them once.
        self._fixed = (
            encode_headers(api_headers(None, cors_origins)) if "*" in cors_origins else None
        )

    def api_headers(self, scope: Scope, extra: Mapping[str, str] | None = None) -> RawHeaders:
        headers = self._fixed
        if headers is None:
            origin = header(scope, b"origin")
            headers = encode_headers(api_headers(origin, self.cors_origins, self.credentials))
        return headers + encode_headers(extra) if extra else headers

    async def respond(
        self,
        send: Send,
        scope: Scope,
        status: int,
        body: bytes,
        headers: RawHeaders,
        content_type: bytes = b"application/json",
    ) -> None:
        headers = [*headers, (b"content-type", content_type)]
        headers.append((b"content-length", str(len(body)).encode()))
        if self.draining():
            # Shutting down: the client must not re-send on this connection, or hypercorn
            # holds the shutdown for its whole graceful timeout; a new one is refused at once.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""}
        )

    def api(
        self,
        send: Send,
        scope: Scope,
        status: int,
        body: bytes,
        extra: Mapping[str, str] | None = None,
    ) -> Awaitable[None]:
        """An ``/api/*`` answer with a JSON *body*.

        A plain function returning :meth:`respond`'s coroutine: every long-poll answer goes
        through here, and a coroutine level less is one frame less per answer.
        """
        return self.respond(send, scope, status, body, self.api_headers(scope, extra))

    def error(
        self,
        send: Send,
        scope: Scope,
        error: ApiError,
        extra: Mapping[str, str] | None = None,
        headers: RawHeaders | None = None,
    ) -> Awaitable[None]:
        """``{"error": reason}`` with the error's status (``/api/*`` headers by default)."""
        body = json.dumps({"error": error.reason}).encode()
        headers = self.api_headers(scope, extra) if headers is None else headers
        return self.respond(send, scope, error.status, body, headers)
