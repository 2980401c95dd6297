"""``GET /login``, ``POST /login`` and ``POST /logout``: the session cookie of a private server.

The form (``static/login.html``, its style sheet ``static/login.css``; no script at all, and a
policy of its own that lets its one form post here) takes the server's ``read_token``. A right
token gets a session cookie (see :mod:`feedstream.core.access`: derived from the token, never
the token itself; ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, ``Secure`` over https) and a
``303`` to the page; a wrong one gets the form again with the reason, and a client with too
many failures gets ``429`` with ``Retry-After`` before its token is even looked at. A client
asking for JSON (``Accept: application/json``) gets ``{"error": ...}`` instead of the form.

A server without ``read_token`` has nothing to sign in with: these paths answer 404 there.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import trio
from quart import Response, request
from quart_trio import QuartTrio

from feedstream.core.access import (
    LOGIN_PATH,
    LOGIN_SECURITY_HEADERS,
    LOGOUT_PATH,
    SESSION_COOKIE,
    SESSION_SECONDS,
    AccessPolicy,
    FailedLogins,
    clear_cookie,
    client_key,
    cookie_secure,
    cookie_values,
    cross_site,
    session_cookie,
    session_valid,
    session_value,
    token_matches,
    trusted_peer,
    wants_json,
)
from feedstream.core.config import Config

logger = logging.getLogger(__name__)

__all__ = ["FAILED_LOGINS", "FAILED_LOGIN_PERIOD", "register_login"]

FAILED_LOGINS = 5  # failed logins a client may make at once...
FAILED_LOGIN_PERIOD = 60.0  # ...and again over this many seconds
MAX_CLIENTS = 10_000  # clients whose failures are remembered
MAX_TOKEN_CHARS = 1024  # a longer field is a wrong token, not something to hash
MESSAGE, SIGNED_IN = "<!--message-->", "<!--signed-in-->"
BUNDLED_TEMPLATE = Path(__file__).resolve().parents[2] / "static" / "login.html"


def register_login(
    app: QuartTrio,
    config: Config,
    *,
    clock: Callable[[], float] = trio.current_time,
    wall_clock: Callable[[], float] = time.time,
) -> FailedLogins:
    """Add the login routes to *app*; return the failed-login counter (tests look at it).

    *clock* times the failed-login limit; *wall_clock* (Unix time) the cookie's expiry.
    """
    server = config.server
    policy = AccessPolicy.from_config(server)
    failures = FailedLogins(FAILED_LOGINS, FAILED_LOGIN_PERIOD, MAX_CLIENTS)
    static_dir = server.static_dir
    custom = static_dir / "login.html" if static_dir is not None else None
    template = (custom if custom is not None and custom.is_file() else BUNDLED_TEMPLATE).read_text(
        encoding="utf-8"
    )

    def peer() -> str | None:
        client = request.scope.get("client")
        return str(client[0]) if client else None

    def from_proxy() -> bool:
        return trusted_peer(peer(), policy.proxies)

    def secure() -> bool:
        forwarded = request.headers.get("X-Forwarded-Proto")
        return cookie_secure(request.scheme, server.public_url, forwarded, from_proxy())

    def signed_in() -> bool:
        key = policy.session_key
        cookie = request.headers.get("Cookie")
        if key is None or not cookie:
            return False
        values = cookie_values(cookie.encode("latin-1", "replace"), SESSION_COOKIE.encode())
        return any(session_valid(key, value, wall_clock()) for value in values)

    def page(status: int, message: str = "", headers: Mapping[str, str] | None = None) -> Response:
        note = f'<p class="message" role="alert">{html.escape(message)}</p>' if message else ""
        out = template.replace(MESSAGE, note)
        if signed_in():
            out = out.replace(
                SIGNED_IN,
                '<form class="signed-in" method="post" action="/logout">'
                '<p>You are signed in. <a href="/">Open the stream</a></p>'
                '<button type="submit" class="secondary">Sign out</button></form>',
            )
        answer = {**LOGIN_SECURITY_HEADERS, **(headers or {})}
        return Response(out, status, answer, content_type="text/html; charset=utf-8")

    def refuse(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
        """The form again with *reason*, or ``{"error": reason}`` for a client asking JSON."""
        if wants_json(request.headers.get("Accept")):
            body = json.dumps({"error": reason})
            answer = {**LOGIN_SECURITY_HEADERS, **(headers or {})}
            return Response(body, status, answer, content_type="application/json")
        return page(status, reason, headers)

    def off() -> Response:
        body = json.dumps({"error": "there is no login here (server.read_token is not set)"})
        return Response(body, 404, {"Cache-Control": "no-store"}, content_type="application/json")

    def redirect(location: str, cookie: str) -> Response:
        headers = {**LOGIN_SECURITY_HEADERS, "Location": location, "Set-Cookie": cookie}
        return Response("", 303, headers, content_type="text/plain; charset=utf-8")

    @app.get(LOGIN_PATH)
    async def login_form() -> Response:
        if policy.token is None:
            return off()
        return page(200)

    @app.post(LOGIN_PATH)
    async def login() -> Response:
        token = policy.token
        if token is None or policy.session_key is None:
            return off()
        if cross_site(request.headers.get("Sec-Fetch-Site")):
            return refuse(403, "sign in from this server's own login form")
        who = client_key(peer(), request.headers.get("X-Forwarded-For"), from_proxy())
        wait = failures.retry_after(who, clock())
        if wait is not None:
            logger.info("login refused for %s: too many failed attempts", who)
            return refuse(
                429, f"too many failed logins: try again in {wait} s", {"Retry-After": str(wait)}
            )
        given = (await request.form).get("token", "")
        if not given.strip():
            return refuse(400, "enter the access token")
        if len(given) > MAX_TOKEN_CHARS or not token_matches(given.strip().encode(), token):
            failures.failed(who, clock())
            logger.info("failed login from %s", who)
            return refuse(401, "wrong token", {"WWW-Authenticate": 'Bearer realm="feedstream"'})
        failures.succeeded(who)
        expires = int(wall_clock()) + SESSION_SECONDS
        cookie = session_cookie(session_value(policy.session_key, expires), secure())
        return redirect("/", cookie)

    @app.post(LOGOUT_PATH)
    async def logout() -> Response:
        if policy.token is None:
            return off()
        if cross_site(request.headers.get("Sec-Fetch-Site")):
            return refuse(403, "sign out from this server's own pages")
        return redirect(LOGIN_PATH, clear_cookie(secure()))

    return failures
