"""``POST /websub/hub``: the subscription requests of feedstream's own WebSub hub, raw ASGI.

The form (``application/x-www-form-urlencoded``: ``hub.mode``, ``hub.topic``,
``hub.callback``, ``hub.lease_seconds``, ``hub.secret``) goes to
:meth:`feedstream.service.hub.Hub.request`, which decides: ``202`` (verification of intent
follows, from the hub's own task) or a 4xx with a reason. Every answer is JSON. With
``[hub]`` off (or on a role that does not run the hub) the path is a 404 like any unknown one,
with a reason.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from feedstream.core.httprules import SECURITY_HEADERS, ApiError
from feedstream.log.state import LogUnavailable
from feedstream.service.runtime import Intake
from feedstream.web.asgi import Receive, Responder, Scope, Send, encode_headers, header, read_body

__all__ = ["HUB", "MAX_FORM_BYTES", "HubEndpoint"]

HUB = "/websub/hub"
MAX_FORM_BYTES = 16 * 1024  # a callback (2048) and a topic, a secret (199): far less
MAX_FIELDS = 32
FORM = "application/x-www-form-urlencoded"
_HEADERS = encode_headers(SECURITY_HEADERS)
_ACCEPTED = json.dumps({"status": "accepted: verification of intent follows"}).encode()


class HubEndpoint:
    """``POST /websub/hub`` over the service's :class:`Intake` view."""

    def __init__(self, intake: Intake, responder: Responder) -> None:
        self.intake = intake
        self.responder = responder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "OPTIONS":
            allow = encode_headers({"Allow": "POST, OPTIONS"})
            await self.responder.respond(send, scope, 204, b"", _HEADERS + allow)
            return
        try:
            status, reason = await self._request(scope, receive, method)
        except ApiError as error:
            await self.responder.error(send, scope, error, headers=_HEADERS)
            return
        if status >= 400:
            await self.responder.error(send, scope, ApiError(status, reason), headers=_HEADERS)
            return
        await self.responder.respond(send, scope, status, _ACCEPTED, _HEADERS)

    async def _request(self, scope: Scope, receive: Receive, method: str) -> tuple[int, str]:
        hub = self.intake.hub
        if hub is None:
            raise ApiError(404, "the hub is off (set [hub] enabled = true and server.public_url)")
        if method != "POST":
            raise ApiError(405, f"{method} is not allowed here: subscribe with a POST")
        media = (header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        if media != FORM:
            raise ApiError(415, f"the request must be {FORM}")
        body = await read_body(receive, MAX_FORM_BYTES)
        try:
            form = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=MAX_FIELDS,
            )
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "the form is not UTF-8 URL-encoded fields") from None
        try:
            return await hub.request(form)
        except LogUnavailable:
            raise ApiError(503, "the subscription store cannot be reached; retry shortly") from None
