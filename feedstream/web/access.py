"""The gate of a private server: one check in front of every route, raw ASGI.

:class:`feedstream.web.app.Router` calls the gate before it dispatches anything, on a server
with ``read_token`` or ``trusted_proxy_header`` only (an open server has no gate at all, so its
delivery path pays nothing). The gate reads the three headers it needs in one pass over the
request's headers and asks :func:`feedstream.core.access.check`; a request it lets through
goes on as if there were no gate, and a refused one is answered here: ``401`` with a JSON
reason and ``WWW-Authenticate: Bearer`` (with the ``/api/*`` CORS headers, so a page on another
origin can read why), or, for the page ``/``, a ``303`` to the login form.

Like the router, :meth:`AccessGate.__call__` is a plain function: it returns None or the
refusal's coroutine, so a parked long-poll that was let in keeps no frame of the gate alive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from feedstream.core.access import LOGIN_PATH, AccessPolicy, Protection, check, protection
from feedstream.core.config import ServerConfig
from feedstream.core.httprules import SECURITY_HEADERS, ApiError
from feedstream.web.asgi import Responder, Scope, Send, encode_headers

logger = logging.getLogger(__name__)

__all__ = ["AccessGate"]


class AccessGate:
    """Lets a request through (None) or answers it with a refusal."""

    def __init__(
        self, server: ServerConfig, responder: Responder, clock: Callable[[], float] = time.time
    ) -> None:
        self.policy = AccessPolicy.from_config(server)
        self.responder = responder
        self.clock = clock  # Unix time: session cookies carry their expiry
        self._proxy_header = self.policy.proxy_header
        self._to_login = encode_headers(
            {**SECURITY_HEADERS, "Location": LOGIN_PATH, "Cache-Control": "no-store"}
        )
        ways = []
        if server.read_token is not None:
            ways.append("the read token (Bearer, or a login's cookie)")
        if server.trusted_proxy_header is not None:
            proxies = ", ".join(server.trusted_proxies)
            ways.append(f"{server.trusted_proxy_header} from {proxies}")
        logger.info("private server: reading needs %s", " or ".join(ways))

    def __call__(self, scope: Scope, send: Send) -> Awaitable[None] | None:
        """None when the request may go on; else the coroutine that refuses it."""
        method = scope["method"]
        if method == "OPTIONS":  # CORS preflights never carry credentials
            return None
        kind = protection(scope["path"])
        if kind is Protection.OPEN:
            return None
        authorization = cookie = proxy_user = None
        proxy_header = self._proxy_header
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = bytes(value)
            elif name == b"cookie":  # HTTP/2 may split cookies over several fields
                cookie = bytes(value) if cookie is None else cookie + b"; " + bytes(value)
            elif name == proxy_header:
                proxy_user = bytes(value)
        client = scope.get("client")
        refusal = check(
            self.policy,
            authorization=authorization,
            cookie=cookie,
            proxy_user=proxy_user,
            peer=client[0] if client else None,
            now=self.clock(),
        )
        if refusal is None:
            return None
        if proxy_user is not None:
            logger.debug("%s ignored: %s is not a trusted proxy", proxy_header, client)
        if kind is Protection.PAGE and self.policy.login and method in ("GET", "HEAD"):
            return self.responder.respond(
                send, scope, 303, b"", self._to_login, b"text/plain; charset=utf-8"
            )
        error = ApiError(401, refusal.reason)
        return self.responder.error(
            send, scope, error, {"WWW-Authenticate": refusal.www_authenticate}
        )
