"""A private server on loopback: every reading path behind the read token, a login's cookie,
the trusted proxy header, the failed-login limit, CORS with credentials, what stays open."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from feedstream.core.access import SESSION_COOKIE
from feedstream.core.config import Config, FeedConfig
from feedstream.web import login
from feedstream.web.asgi import answer_lifespan
from tests.core.test_icons import PNG
from tests.support.documents import json_feed, push
from tests.support.helpers import free_port
from tests.support.servers import (
    FeedServer,
    Route,
    make_config,
    push_feed,
    running,
    status_until,
)
from tests.web.test_delivery import events, take
from tests.web.test_feeds_api import ATOM_TYPE, atom, icon_status
from tests.web.test_nginx import (
    SNIPPET,
    listening,
    nginx_binary,
    nginx_conf,
    startup_errors,
    stop,
    upstream_block,
)

TOKEN = "read-token-for-tests-0123"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_TOKEN = "admin-token-for-tests-0123"
PROXY = {"trusted_proxy_header": "X-Forwarded-User", "trusted_proxies": ("127.0.0.2/32",)}
ORIGIN = "https://app.example.org"

#: Every path that reads something, and what the token gets there (a status < 400 or the
#: route's own 4xx: the gate let the request through).
PROTECTED = [
    "/api/entries",
    "/api/stream",
    "/api/feeds",
    "/api/feeds/a/icon",
    "/api/streams",
    "/api/opml",
    "/api/status",
    "/api/search?q=word",
    "/media/0123abcd/aHR0cHM6Ly9leGFtcGxlLm9yZy9hLnBuZw",
    "/feeds/all.atom",
    "/feeds/a.json",
    "/metrics",
    "/static/app.js",
    "/static/app.css",
    "/static/index.html",
    "/a-route-added-later",
]


def private_config(tmp_path: Path, **server: Any) -> Config:
    settings: dict[str, Any] = {"read_token": TOKEN}
    settings.update(server)
    return make_config(tmp_path, push_feed("a"), **settings)


@asynccontextmanager
async def client_from(base_url: httpx.URL, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose connections come from *address* (any 127.x.y.z is loopback)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=10) as client:
        yield client


async def sign_in(client: httpx.AsyncClient, token: str = TOKEN, **headers: str) -> httpx.Response:
    return await client.post("/login", data={"token": token}, headers=headers)


def assert_refused(response: httpx.Response, *, invalid: bool = False) -> None:
    assert response.status_code == 401, (response.request.url, response.text)
    assert response.headers["content-type"] == "application/json"
    if response.request.method != "HEAD":
        assert response.json()["error"]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert ('error="invalid_token"' in challenge) is invalid
    assert response.headers["cache-control"] == "no-store"


# -- without credentials ----------------------------------------------------------------------


@pytest.mark.parametrize("path", PROTECTED)
async def test_every_reading_path_is_refused_without_credentials(tmp_path: Path, path: str) -> None:
    async with running(private_config(tmp_path)) as client:
        refused = await client.get(path)
        assert_refused(refused)
        assert "Authorization: Bearer" in refused.json()["error"]
        assert_refused(await client.head(path))
        wrong = await client.get(path, headers={"Authorization": "Bearer not-the-read-token"})
        assert_refused(wrong, invalid=True)
        assert wrong.json() == {"error": "wrong credentials"}
        # No ?token=: a token in a URL ends up in logs.
        assert_refused(await client.get(path, params={"token": TOKEN}))
        # The token lets the same request through the gate.
        with trio.fail_after(10):  # (an SSE stream stays open: look at the head only)
            async with client.stream("GET", path, headers=BEARER) as let_in:
                assert let_in.status_code != 401, path


async def test_the_page_sends_a_browser_to_the_login_form(tmp_path: Path) -> None:
    async with running(private_config(tmp_path)) as client:
        page = await client.get("/", params={"stream": "x"})
        assert page.status_code == 303 and page.headers["location"] == "/login"
        assert page.headers["cache-control"] == "no-store"
        assert (await client.head("/")).status_code == 303
        assert_refused(await client.post("/"))
        with_token = await client.get("/", headers=BEARER)
        assert with_token.status_code == 200 and "<title>feedstream</title>" in with_token.text


async def test_open_paths_stay_open(tmp_path: Path) -> None:
    config = private_config(tmp_path, admin_token=ADMIN_TOKEN)
    async with running(config) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"ok": True}
        # Pushes keep their own token (and only it: the read token is no push token).
        pushed = await push(client, "a", json_feed(("1", "one")))
        assert pushed.status_code == 202 and pushed.json() == {"accepted": 1}
        by_reader = await client.post(
            "/api/push/a", content=json_feed(("2", "two")), headers=BEARER
        )
        assert by_reader.status_code == 401
        # WebSub callbacks answer for themselves; the hub (off here) is a 404 with a reason.
        assert (await client.get("/websub/0123456789abcdef0123")).status_code == 404
        # Subscribing to the hub takes read credentials (a subscriber gets the entries).
        assert (await client.post("/websub/hub", data={"hub.mode": "x"})).status_code == 401
        hub = await client.post("/websub/hub", data={"hub.mode": "x"}, headers=BEARER)
        assert hub.status_code == 404
        # The admin API wants the admin token, not the read token.
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert (await client.get("/api/hub", headers=admin)).status_code == 404  # hub off
        assert (await client.get("/api/hub", headers=BEARER)).status_code == 401
        assert (await client.post("/api/admin/reload", headers=BEARER)).status_code == 401
        # What the login form itself needs.
        assert (await client.get("/static/login.css")).status_code == 200
        assert (await client.get("/static/favicon.svg")).status_code == 200
        # The embeddable client: code, no data, imported before a token can be sent.
        assert (await client.get("/static/feedstream.js")).status_code == 200
        # CORS preflights carry no credentials.
        preflight = await client.options(
            "/api/entries",
            headers={"Origin": ORIGIN, "Access-Control-Request-Headers": "authorization"},
        )
        assert preflight.status_code == 204
        assert "Authorization" in preflight.headers["access-control-allow-headers"]


async def test_an_open_server_has_no_gate_and_no_login(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, push_feed("a"))) as client:
        assert (await client.get("/api/feeds")).status_code == 200
        assert (await client.get("/")).status_code == 200
        form = await client.get("/login")
        assert form.status_code == 404 and "read_token" in form.json()["error"]
        assert (await sign_in(client)).status_code == 404


# -- the login form and its cookie ------------------------------------------------------------------


async def test_login_form_wrong_token_then_the_cookie_reads_page_long_poll_and_sse(
    tmp_path: Path,
) -> None:
    async with running(private_config(tmp_path)) as client:
        form = await client.get("/login")
        assert form.status_code == 200 and form.headers["content-type"].startswith("text/html")
        csp = form.headers["content-security-policy"]
        assert "form-action 'self'" in csp and "default-src 'none'" in csp
        assert "script-src" not in csp and "<script" not in form.text
        assert form.headers["cache-control"] == "no-store"
        assert 'name="token"' in form.text and 'action="/login"' in form.text

        wrong = await sign_in(client, "not-the-token-at-all")
        assert wrong.status_code == 401 and "wrong token" in wrong.text
        assert "set-cookie" not in wrong.headers and 'name="token"' in wrong.text
        as_json = await sign_in(client, "not-the-token", Accept="application/json")
        assert as_json.status_code == 401 and as_json.json() == {"error": "wrong token"}
        empty = await sign_in(client, "  ")
        assert empty.status_code == 400

        signed = await sign_in(client)
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        set_cookie = signed.headers["set-cookie"]
        attributes = [part.strip() for part in set_cookie.split(";")]
        assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
        assert "Secure" not in attributes  # plain http, no proxy saying https
        value = client.cookies[SESSION_COOKIE]
        assert value and TOKEN not in value

        # The cookie (httpx keeps it, as a browser would) reads the page...
        page = await client.get("/")
        assert page.status_code == 200 and "app.js" in page.text
        assert (await client.get("/static/app.js")).status_code == 200
        assert "You are signed in" in (await client.get("/login")).text
        start = (await client.get("/api/entries")).json()["cursor"]

        # ...a parked long-poll...
        answers: list[httpx.Response] = []

        async def listen() -> None:
            params = {"after": start, "timeout": 10}
            answers.append(await client.get("/api/entries", params=params))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                await status_until(client, lambda status: status["waiting"] >= 1)  # cookie
                assert (await push(client, "a", json_feed(("1", "one")))).status_code == 202
        [answer] = answers
        assert answer.status_code == 200
        assert [e["title"] for e in answer.json()["entries"]] == ["one"]

        # ...and an SSE stream.
        with trio.fail_after(10):
            async with client.stream("GET", "/api/stream", params={"after": start}) as stream:
                assert stream.status_code == 200
                [event] = await take(events(stream), 1)
        assert event["data"]["title"] == "one"

        # Signing out clears the cookie; the page goes back to the form.
        out = await client.post("/logout")
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert "Max-Age=0" in out.headers["set-cookie"]
        assert SESSION_COOKIE not in client.cookies
        assert (await client.get("/")).status_code == 303


async def test_a_cookie_is_revoked_by_a_new_token(tmp_path: Path) -> None:
    async with running(private_config(tmp_path)) as client:
        assert (await sign_in(client)).status_code == 303
        cookie = {"Cookie": f"{SESSION_COOKIE}={client.cookies[SESSION_COOKIE]}"}
    new = private_config(tmp_path, read_token="another-read-token-456789")
    async with running(new) as client:
        refused = await client.get("/api/entries", headers=cookie)
        assert_refused(refused, invalid=True)
        assert "sign in again" in refused.json()["error"]
        the_token = {"Cookie": f"{SESSION_COOKIE}={TOKEN}"}  # the token itself is no session
        assert_refused(await client.get("/api/entries", headers=the_token), invalid=True)


async def test_login_from_another_site_is_refused(tmp_path: Path) -> None:
    async with running(private_config(tmp_path)) as client:
        forged = await sign_in(client, **{"Sec-Fetch-Site": "cross-site"})
        assert forged.status_code == 403 and "set-cookie" not in forged.headers
        assert (await sign_in(client, **{"Sec-Fetch-Site": "same-origin"})).status_code == 303
        out = await client.post("/logout", headers={"Sec-Fetch-Site": "cross-site"})
        assert out.status_code == 403


async def test_the_cookie_is_secure_when_a_trusted_proxy_says_https(tmp_path: Path) -> None:
    config = private_config(tmp_path, trusted_proxies=("127.0.0.2/32",))
    https = {"X-Forwarded-Proto": "https"}
    async with running(config) as client:
        assert "Secure" not in (await sign_in(client, **https)).headers["set-cookie"]
        async with client_from(client.base_url, "127.0.0.2") as proxy:
            assert (await sign_in(proxy, **https)).headers["set-cookie"].endswith("; Secure")
    public = private_config(tmp_path, public_url="https://feeds.example.org")
    async with running(public) as client:
        assert (await sign_in(client)).headers["set-cookie"].endswith("; Secure")


# -- failed logins ---------------------------------------------------------------------------------


async def test_failed_logins_are_limited_per_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(login, "FAILED_LOGIN_PERIOD", 2.5)  # five at once, then one per 0.5 s
    async with running(private_config(tmp_path)) as client:
        for _ in range(5):
            assert (await sign_in(client, "wrong-token-guess")).status_code == 401
        limited = await sign_in(client, "wrong-token-guess")
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        assert "too many failed logins" in limited.text
        assert limited.headers["content-type"].startswith("text/html")
        as_json = await sign_in(client, "wrong", Accept="application/json")
        assert as_json.status_code == 429
        assert as_json.json()["error"].startswith("too many failed logins")
        # Even the right token waits: a guesser must not learn it is right.
        assert (await sign_in(client)).status_code == 429
        assert "set-cookie" not in limited.headers
        # Another address is not held back...
        async with client_from(client.base_url, "127.0.0.3") as other:
            assert (await sign_in(other, "wrong-guess")).status_code == 401
            assert (await sign_in(other)).status_code == 303
        # ...and the first may try again once a try has come back.
        await trio.sleep(0.6)
        assert (await sign_in(client)).status_code == 303
        assert (await client.get("/api/feeds")).status_code == 200


# -- the trusted proxy header -----------------------------------------------------------------------


async def test_the_proxy_header_is_believed_from_trusted_addresses_only(tmp_path: Path) -> None:
    config = private_config(tmp_path, **PROXY)
    user = {"X-Forwarded-User": "alice"}
    async with running(config) as client:
        # From 127.0.0.1 (not a trusted proxy) the header is just a header.
        assert_refused(await client.get("/api/feeds", headers=user))
        assert (await client.get("/", headers=user)).status_code == 303
        async with client_from(client.base_url, "127.0.0.2") as proxy:
            assert (await proxy.get("/api/feeds", headers=user)).status_code == 200
            assert (await proxy.get("/", headers=user)).status_code == 200
            assert (await proxy.get("/api/entries", headers=user)).status_code == 200
            assert_refused(await proxy.get("/api/feeds"))  # the proxy without a user
            assert_refused(await proxy.get("/api/feeds", headers={"X-Forwarded-User": ""}))


async def test_a_proxy_only_server(tmp_path: Path) -> None:
    config = make_config(tmp_path, push_feed("a"), **PROXY)
    async with running(config) as client:
        refused = await client.get("/api/feeds", headers=BEARER)
        assert_refused(refused)
        assert "authenticating proxy" in refused.json()["error"]
        assert_refused(await client.get("/"))  # no form to go to
        assert (await client.get("/login")).status_code == 404
        async with client_from(client.base_url, "127.0.0.2") as proxy:
            page = await proxy.get("/", headers={"X-Forwarded-User": "bob"})
            assert page.status_code == 200


# -- CORS ---------------------------------------------------------------------------------------


async def test_cors_credentials_only_for_listed_origins(tmp_path: Path) -> None:
    config = private_config(tmp_path, cors_origins=(ORIGIN,))
    async with running(config) as client:
        for path in ("/api/entries", "/api/feeds", "/feeds/all.json", "/static/app.js"):
            listed = await client.get(path, headers={**BEARER, "Origin": ORIGIN})
            assert listed.status_code == 200, path
            assert listed.headers["access-control-allow-origin"] == ORIGIN, path
            assert listed.headers["access-control-allow-credentials"] == "true", path
            other = await client.get(path, headers={**BEARER, "Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers, path
            assert "access-control-allow-credentials" not in other.headers, path
        # A refusal is readable by a listed origin (it can tell the user why)...
        refused = await client.get("/api/entries", headers={"Origin": ORIGIN})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == ORIGIN
        # ...and its preflight allows credentials too.
        preflight = await client.options("/api/entries", headers={"Origin": ORIGIN})
        assert preflight.headers["access-control-allow-credentials"] == "true"


async def test_cors_wildcard_on_a_private_server_never_allows_credentials(tmp_path: Path) -> None:
    async with running(private_config(tmp_path)) as client:  # cors_origins = ["*"]
        for path in ("/api/entries", "/api/feeds", "/feeds/all.json"):
            answer = await client.get(path, headers={**BEARER, "Origin": ORIGIN})
            assert answer.status_code == 200
            assert answer.headers["access-control-allow-origin"] == "*"
            assert "access-control-allow-credentials" not in answer.headers
    async with running(make_config(tmp_path, push_feed("a"), cors_origins=(ORIGIN,))) as client:
        public = await client.get("/api/entries", headers={"Origin": ORIGIN})
        assert public.headers["access-control-allow-origin"] == ORIGIN
        assert "access-control-allow-credentials" not in public.headers  # nothing to send


# -- shared caches ------------------------------------------------------------------------------


async def test_a_private_server_keeps_its_answers_out_of_shared_caches(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.routes["/feed.xml"] = Route(200, atom("<icon>/icon.png</icon>"), ATOM_TYPE)
    feed_server.routes["/icon.png"] = Route(200, PNG, {"Content-Type": "image/png"})
    polled = FeedConfig(id="png", url=f"{feed_server.url}/feed.xml", interval=3600)
    config = make_config(tmp_path, polled, read_token=TOKEN, fetch_icons=True)
    async with running(config) as client:
        client.headers.update(BEARER)
        with trio.fail_after(30):
            await icon_status(client, "png", "ok")
        icon = await client.get("/api/feeds/png/icon")
        assert icon.status_code == 200 and icon.content == PNG
        # An open server says "public, max-age=86400" (tests/web/test_feeds_api.py).
        assert icon.headers["cache-control"] == "private, max-age=86400"


def test_protected_list_matches_the_issue() -> None:
    # The paths issue #18 names, each present in PROTECTED.
    named = ["/api/entries", "/api/stream", "/api/feeds", "/api/streams", "/api/opml"]
    named += ["/api/status", "/api/search", "/media/", "/feeds/", "/metrics", "/static/"]
    for prefix in named:
        assert any(re.match(re.escape(prefix), path) for path in PROTECTED), prefix
    json.dumps(PROTECTED)  # plain strings


# -- behind nginx (docs/nginx.conf) ---------------------------------------------------------------


class SignInProxy:
    """A stand-in for oauth2-proxy: ``/oauth2/auth`` answers 202 with the user for its own
    session cookie, 401 otherwise; ``/oauth2/sign_in`` is its sign-in page."""

    COOKIE = b"_oauth2_proxy=alice-session"

    def __init__(self) -> None:
        self.asked: list[str] = []  # the X-Original-URI of each auth request

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        headers = dict(scope["headers"])
        status, body, extra = 404, b"", []
        if scope["path"] == "/oauth2/auth":
            self.asked.append(headers.get(b"x-original-uri", b"").decode())
            if self.COOKIE in headers.get(b"cookie", b""):
                status, extra = 202, [(b"x-auth-request-user", b"alice")]
            else:
                status = 401
        elif scope["path"] == "/oauth2/sign_in":
            status, body = 200, b"sign in with your identity provider"
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def behind_nginx(
    tmp_path: Path, config: Config, auth: str | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """feedstream (*config*) behind nginx with docs/nginx.conf; with *auth* (the sign-in
    proxy's address), its "#auth " lines uncommented. Yields (direct, through nginx)."""
    binary = nginx_binary()
    text = SNIPPET.read_text()
    snippet = tmp_path / "feedstream.conf"
    snippet.write_text(re.sub(r"^#auth ", "", text, flags=re.M) if auth else text)
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    async with running(config) as direct:
        address = f"{direct.base_url.host}:{direct.base_url.port}"
        upstreams = upstream_block(text, address)
        if auth:
            upstreams += f"\nupstream oauth2_proxy {{ server {auth}; }}\n"
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(prefix, port, upstreams).replace(str(SNIPPET), str(snippet)))
        process = await trio.lowlevel.open_process(
            [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            with trio.fail_after(10):
                while not listening(prefix):
                    assert process.poll() is None, startup_errors(prefix)
                    await trio.sleep(0.01)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as nginx:
                yield direct, nginx
        finally:
            await stop(process)


async def test_nginx_never_passes_a_clients_own_user_header(tmp_path: Path) -> None:
    # feedstream trusts nginx (127.0.0.1), which runs the snippet as documented, without auth.
    config = private_config(tmp_path, trusted_proxy_header="X-Forwarded-User",
                            trusted_proxies=("127.0.0.1/32",))  # fmt: skip
    async with behind_nginx(tmp_path, config) as (direct, nginx):
        forged = {"X-Forwarded-User": "mallory"}
        assert (await direct.get("/api/feeds", headers=forged)).status_code == 200  # the test
        assert_refused(await nginx.get("/api/feeds", headers=forged))  # stripped by nginx
        assert (await nginx.get("/", headers=forged)).status_code == 303
        assert (await nginx.get("/api/feeds", headers=BEARER)).status_code == 200
        # Through nginx (X-Forwarded-Proto from a trusted proxy) the login still works.
        assert (await sign_in(nginx)).status_code == 303
        assert (await nginx.get("/api/feeds")).status_code == 200


async def test_nginx_with_an_authenticating_proxy(tmp_path: Path, nursery: trio.Nursery) -> None:
    sign_in_proxy = SignInProxy()
    hconfig = HypercornConfig()
    hconfig.bind = ["127.0.0.1:0"]
    hconfig.accesslog = hconfig.errorlog = None
    auth_url = httpx.URL((await nursery.start(hypercorn_serve, sign_in_proxy, hconfig))[0])
    config = make_config(
        tmp_path, push_feed("a"), **{**PROXY, "trusted_proxies": ("127.0.0.1/32",)}
    )
    async with behind_nginx(tmp_path, config, f"{auth_url.host}:{auth_url.port}") as (
        direct,
        nginx,
    ):
        session = {"Cookie": SignInProxy.COOKIE.decode()}
        forged = {"X-Forwarded-User": "mallory"}
        # Not signed in at the proxy: its sign-in page, whatever header the client sends.
        for headers in ({}, forged, BEARER):
            page = await nginx.get("/api/feeds", headers=headers)
            assert page.text == "sign in with your identity provider"
        assert sign_in_proxy.asked[-1] == "/api/feeds"
        # Signed in: the page, the API and a long-poll, with the user nginx passes on.
        assert (await nginx.get("/", headers=session)).status_code == 200
        assert (await nginx.get("/api/feeds", headers={**session, **forged})).status_code == 200
        start = (await nginx.get("/api/entries", headers=session)).json()["cursor"]
        # Pushes and /healthz need no sign-in (pushes carry their own token).
        pushed = await push(nginx, "a", json_feed(("1", "one")))
        assert pushed.status_code == 202
        assert (await nginx.get("/healthz")).json() == {"ok": True}
        answer = await nginx.get("/api/entries", headers=session, params={"after": start})
        assert [e["title"] for e in answer.json()["entries"]] == ["one"]
        # Straight to feedstream from an address that is not nginx's: the header is ignored.
        async with client_from(direct.base_url, "127.0.0.5") as stranger:
            assert_refused(await stranger.get("/api/feeds", headers={"X-Forwarded-User": "alice"}))
