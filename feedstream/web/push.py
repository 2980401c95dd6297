"""The push endpoints, in one raw ASGI layer: ``POST /api/push/<feed_id>`` (webhook) and the
WebSub callbacks ``GET|POST /websub/<token>`` (verification of intent, content distribution).

On a server busy with thousands of listeners every scheduler pass is long, and a push should
take as few of them as it can: these skip Quart's request and response objects too. Every
document goes through the service's one ingest path; every refusal is a JSON reason with a 4xx
status, and nothing is acknowledged that is not stored (webhook) or queued (WebSub).
"""

from __future__ import annotations

import json
import logging

import trio

from feedstream.core.httprules import (
    SECURITY_HEADERS,
    ApiError,
    check_push_auth,
    preflight_headers,
    push_media_type,
)
from feedstream.log.state import LogUnavailable
from feedstream.service.runtime import Intake
from feedstream.web.asgi import (
    Receive,
    Responder,
    Scope,
    Send,
    encode_headers,
    header,
    query_pairs,
    read_body,
    too_large,
)
from feedstream.web.metrics import push_reason

logger = logging.getLogger(__name__)

__all__ = ["PUSH", "WEBSUB", "PushEndpoints"]

PUSH = "/api/push/"
WEBSUB = "/websub/"
_PAGE_HEADERS = encode_headers(SECURITY_HEADERS)  # WebSub answers are not /api/ answers
RETRY_AFTER = 5  # seconds, with a 503 while the log cannot be reached
_UNAVAILABLE = ApiError(503, "the log cannot be reached: nothing was stored; retry shortly")


class PushEndpoints:
    """Webhook and WebSub callbacks over the service's :class:`Intake` view."""

    def __init__(self, intake: Intake, max_push_bytes: int, responder: Responder) -> None:
        self.intake = intake
        self.max_push_bytes = max_push_bytes
        self.responder = responder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path.startswith(PUSH):
            await self._webhook(scope, receive, send, path[len(PUSH) :])
        else:
            await self._websub(scope, receive, send, path[len(WEBSUB) :])

    async def misdirected(self, scope: Scope, send: Send, role: str) -> None:
        """421: this node does not have the *role* that serves the path."""
        mine = "delivers" if role == "ingest" else "ingests"
        error = ApiError(
            421,
            f"this node only {mine}: {scope['path'][:64]} is served by nodes with the {role} role",
        )
        await self.responder.error(send, scope, error)

    # -- POST /api/push/<feed_id> -----------------------------------------------------------

    async def _webhook(self, scope: Scope, receive: Receive, send: Send, feed_id: str) -> None:
        """Webhook ingest: 202 ``{"accepted": n}``, or a 4xx with a JSON reason."""
        method = scope["method"]
        if method == "OPTIONS":
            await self.responder.api(send, scope, 204, b"", preflight_headers())
            return
        began = trio.current_time()
        try:
            if method != "POST":
                raise ApiError(405, f"{method} is not allowed here")
            accepted = await self._take_push(scope, receive, feed_id)
        except ApiError as error:
            self.intake.pushes["webhook", push_reason(error.status)] += 1
            extra = {"Retry-After": str(RETRY_AFTER)} if error.status == 503 else None
            await self.responder.error(send, scope, error, extra)
            return
        self.intake.pushes["webhook", "accepted"] += 1
        self.intake.push_seconds.observe(trio.current_time() - began)
        await self.responder.api(send, scope, 202, b'{"accepted":%d}' % accepted)

    async def _take_push(self, scope: Scope, receive: Receive, feed_id: str) -> int:
        feed = self.intake.feed(feed_id)  # the config of the last reload
        if feed is None:
            raise ApiError(404, f"unknown feed {feed_id[:64]!r}")
        if not feed.accepts_push:
            raise ApiError(403, f"feed {feed.id!r} takes no pushes (it has no token or secret)")
        length = header(scope, b"content-length")  # h11 has refused a malformed one
        if length is not None and length.isdigit() and int(length) > self.max_push_bytes:
            raise too_large(self.max_push_bytes)  # before reading a byte of it
        media_type = push_media_type(header(scope, b"content-type"))
        body = await read_body(receive, self.max_push_bytes)
        check_push_auth(
            feed, header(scope, b"authorization"), header(scope, b"x-hub-signature"), body
        )
        try:
            result = await self.intake.push(feed, body, media_type)
        except LogUnavailable:
            raise _UNAVAILABLE from None
        if result.accepted is None:
            raise ApiError(422, f"unparseable body: {result.error}")
        return result.accepted

    # -- GET|POST /websub/<token> ----------------------------------------------------------

    async def _websub(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        method = scope["method"]
        if method == "OPTIONS":
            allow = encode_headers({"Allow": "GET, HEAD, POST, OPTIONS"})
            await self.responder.respond(send, scope, 204, b"", _PAGE_HEADERS + allow)
            return
        try:
            websub = self.intake.websub
            if method not in ("GET", "HEAD", "POST"):
                raise ApiError(405, f"{method} is not allowed here")
            if websub is None:
                raise ApiError(404, "WebSub is off (server.public_url is not set)")
            if method == "POST":
                body = await read_body(receive, self.max_push_bytes)
                if not self.intake.available:  # it would be acknowledged and then lost
                    raise _UNAVAILABLE
                result = await websub.deliver(
                    token, header(scope, b"x-hub-signature"), body, header(scope, b"content-type")
                )
                self.intake.pushes["websub", result.outcome] += 1
                answer = json.dumps({"status": result.reason}).encode()
                await self.responder.respond(send, scope, result.status, answer, _PAGE_HEADERS)
                return
            decision = await websub.verify(token, query_pairs(scope))
        except ApiError as error:
            raw = _PAGE_HEADERS
            if error.status == 503:
                raw = raw + encode_headers({"Retry-After": str(RETRY_AFTER)})
            await self.responder.error(send, scope, error, headers=raw)
            return
        headers = {**dict(decision.headers), **SECURITY_HEADERS}
        content_type = headers.pop("Content-Type", "text/plain; charset=utf-8")
        await self.responder.respond(
            send,
            scope,
            decision.status,
            decision.body.encode(),
            encode_headers(headers),
            content_type.encode(),
        )
