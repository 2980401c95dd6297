"""Access control's rules without a server: paths, credentials, cookies, proxies, the limit."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedstream.core.access import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    AccessPolicy,
    FailedLogins,
    Protection,
    bearer,
    check,
    clear_cookie,
    client_key,
    cookie_secure,
    cookie_values,
    cross_site,
    private_cache,
    protection,
    session_cookie,
    session_valid,
    session_value,
    trusted_peer,
    wants_json,
)
from feedstream.core.config import ServerConfig
from feedstream.core.httprules import api_headers, cors_headers

TOKEN = "read-token-0123456789"
NOW = 1_700_000_000.0


def policy(**server: object) -> AccessPolicy:
    settings: dict[str, object] = {"read_token": TOKEN}
    settings.update(server)
    return AccessPolicy.from_config(ServerConfig(**settings))  # type: ignore[arg-type]


def session(p: AccessPolicy, expires: float = NOW + 3600) -> bytes:
    assert p.session_key is not None
    return f"{SESSION_COOKIE}={session_value(p.session_key, int(expires))}".encode()


PROXIED = {
    "read_token": None,
    "trusted_proxy_header": "X-Forwarded-User",
    "trusted_proxies": ("127.0.0.1/32", "10.1.0.0/16", "fd00::/8"),
}


# -- which paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/entries",
        "/api/stream",
        "/api/feeds",
        "/api/feeds/news/icon",
        "/api/streams",
        "/api/opml",
        "/api/status",
        "/api/search",
        "/media/abc/def",
        "/feeds/all.atom",
        "/metrics",
        "/static/app.js",
        "/static/index.html",
        "/static/login.html",  # the template: the form is served at /login
        "/a-route-added-later",
        "/api/admin/../feeds",  # only exact open paths, no prefix of the admin API
        "/healthz/../api/feeds",
    ],
)
def test_reading_paths_need_credentials(path: str) -> None:
    assert protection(path) is Protection.API


def test_the_page_is_the_one_path_that_goes_to_the_form() -> None:
    assert protection("/") is Protection.PAGE


@pytest.mark.parametrize(
    "path",
    [
        "/healthz",
        "/login",
        "/logout",
        "/static/login.css",
        "/static/favicon.svg",
        "/static/feedstream.js",  # the embeddable client: code, no data
        "/api/push/news",
        "/websub/0123456789abcdef",
        "/api/hub",
        "/api/admin/reload",
    ],
)
def test_open_paths(path: str) -> None:
    assert protection(path) is Protection.OPEN


def test_subscribing_to_the_hub_takes_read_credentials() -> None:
    """A hub subscriber is sent every entry of its topic: on a private server it must be
    allowed to read them (its callback, a /websub/<token> path of the subscriber's own
    server, is not ours to guard)."""
    assert protection("/websub/hub") is Protection.API
    assert protection("/websub/hubx") is Protection.OPEN


# -- credentials ----------------------------------------------------------------------------------


def test_policy_from_config() -> None:
    assert AccessPolicy.from_config(ServerConfig()).private is False
    p = policy()
    assert p.private and p.login and p.token == TOKEN.encode() and p.proxy_header is None
    assert p.session_key is not None and TOKEN.encode() not in p.session_key
    proxied = policy(**PROXIED)
    assert proxied.private and not proxied.login and proxied.proxy_header == b"x-forwarded-user"
    assert proxied.proxies[0] == ipaddress.ip_network("127.0.0.1/32")


def test_nothing_is_refused_with_the_reason() -> None:
    refusal = check(policy())
    assert refusal is not None and not refusal.invalid
    assert "Authorization: Bearer" in refusal.reason and "/login" in refusal.reason
    assert refusal.www_authenticate == 'Bearer realm="feedstream"'


def test_bearer_token() -> None:
    p = policy()
    assert check(p, authorization=f"Bearer {TOKEN}".encode()) is None
    assert check(p, authorization=f"bearer   {TOKEN} ".encode()) is None
    wrong = check(p, authorization=b"Bearer read-token-0123456788")
    assert wrong is not None and wrong.invalid and wrong.reason == "wrong credentials"
    assert 'error="invalid_token"' in wrong.www_authenticate
    for other in (f"Basic {TOKEN}", TOKEN, "Bearer", "Bearer ", f"Bearer {TOKEN}x"):
        assert check(p, authorization=other.encode()) is not None, other


def test_bearer_parse() -> None:
    assert bearer(b"Bearer abc") == b"abc"
    assert bearer(b"BEARER  abc ") == b"abc"
    assert bearer(b"Basic abc") is None
    assert bearer(b"Bearer") is None


def test_no_token_in_a_cookie_or_elsewhere() -> None:
    p = policy()
    # The token itself is not a session: a cookie must be a value the server derived.
    assert check(p, cookie=f"{SESSION_COOKIE}={TOKEN}".encode()) is not None


def test_session_cookie_lets_in_until_it_expires() -> None:
    p = policy()
    cookie = session(p, NOW + 60)
    assert check(p, cookie=cookie, now=NOW) is None
    assert check(p, cookie=b"theme=dark; " + cookie + b"; other=1", now=NOW) is None
    expired = check(p, cookie=cookie, now=NOW + 60)
    assert expired is not None and expired.invalid and "sign in again" in expired.reason
    assert check(p, cookie=b"theme=dark", now=NOW) == check(p)  # no session cookie: missing


def test_changing_the_token_revokes_every_cookie() -> None:
    cookie = session(policy())
    assert check(policy(), cookie=cookie, now=NOW) is None
    assert check(policy(read_token="another-token-0123456"), cookie=cookie, now=NOW) is not None


def test_session_values_cannot_be_forged_or_stretched() -> None:
    p = policy()
    assert p.session_key is not None
    value = session_value(p.session_key, int(NOW + 60))
    expires, mac = value.split(".")
    assert TOKEN not in value and len(value) < 64
    assert session_valid(p.session_key, value.encode(), NOW)
    later = f"{int(expires) + SESSION_SECONDS}.{mac}".encode()  # same MAC, later expiry
    assert not session_valid(p.session_key, later, NOW + 120)
    for bad in (b"", b".", mac.encode(), b"x." + mac.encode(), value.encode() + b"A", b"9" * 200):
        assert not session_valid(p.session_key, bad, NOW), bad


@given(st.binary(max_size=200))
def test_any_cookie_value_is_refused_without_an_error(value: bytes) -> None:
    p = policy()
    assert check(p, cookie=SESSION_COOKIE.encode() + b"=" + value, now=NOW) is not None


def test_cookie_values() -> None:
    header = b'a=1; feedstream_session="x.y"; b; feedstream_session=z'
    assert list(cookie_values(header, b"feedstream_session")) == [b"x.y", b"z"]
    assert list(cookie_values(b"", b"a")) == []


def test_any_valid_credential_wins_over_a_wrong_one() -> None:
    p = policy()
    assert check(p, authorization=b"Bearer nope", cookie=session(p), now=NOW) is None
    refusal = check(p, authorization=b"Bearer nope", cookie=session(p, NOW - 1), now=NOW)
    assert refusal is not None and refusal.reason == "wrong credentials"


# -- the trusted proxy --------------------------------------------------------------------------


def test_the_proxy_header_from_a_trusted_address_lets_in() -> None:
    p = policy(**PROXIED)
    for peer in ("127.0.0.1", "10.1.200.3", "fd00::1", "::ffff:127.0.0.1"):
        assert check(p, proxy_user=b"alice", peer=peer) is None, peer


def test_the_proxy_header_from_anyone_else_is_ignored() -> None:
    p = policy(**PROXIED)
    for peer in ("127.0.0.2", "10.2.0.1", "192.0.2.7", "2001:db8::1", None, "unix-socket"):
        refusal = check(p, proxy_user=b"alice", peer=peer)
        assert refusal is not None and "authenticating proxy" in refusal.reason, peer


def test_an_empty_proxy_header_is_no_user() -> None:
    p = policy(**PROXIED)
    assert check(p, proxy_user=b"", peer="127.0.0.1") is not None
    assert check(p, proxy_user=b"  ", peer="127.0.0.1") is not None


def test_a_proxy_only_server_takes_no_bearer_and_no_cookie() -> None:
    p = policy(**PROXIED)
    other = policy()
    assert check(p, authorization=f"Bearer {TOKEN}".encode()) is not None
    assert check(p, cookie=session(other), now=NOW) is not None


def test_token_and_proxy_together() -> None:
    p = policy(read_token=TOKEN, **{k: v for k, v in PROXIED.items() if k != "read_token"})
    assert check(p, proxy_user=b"alice", peer="127.0.0.1") is None
    assert check(p, authorization=f"Bearer {TOKEN}".encode(), peer="192.0.2.1") is None
    assert check(p, proxy_user=b"alice", peer="192.0.2.1") is not None


def test_trusted_peer() -> None:
    nets = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert trusted_peer("127.3.2.1", nets) and trusted_peer("::1", nets)
    assert not trusted_peer("128.0.0.1", nets)
    assert not trusted_peer("127.0.0.1", [])
    assert not trusted_peer("not an address", nets)


# -- the cookie and the form ----------------------------------------------------------------------


def test_session_cookie_attributes() -> None:
    cookie = session_cookie("123.abc", secure=False)
    assert cookie == (
        "feedstream_session=123.abc; Max-Age=2592000; Path=/; HttpOnly; SameSite=Strict"
    )
    assert session_cookie("1.a", secure=True).endswith("; SameSite=Strict; Secure")
    assert clear_cookie(True) == (
        "feedstream_session=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict; Secure"
    )


def test_cookie_secure() -> None:
    assert cookie_secure("https", None, None, False)
    assert not cookie_secure("http", None, None, False)
    assert not cookie_secure("http", None, "https", False)  # anyone can send the header
    assert cookie_secure("http", None, "https", True)  # the trusted proxy terminated TLS
    assert cookie_secure("http", "https://feeds.example.org", None, False)
    assert not cookie_secure("http", "http://feeds.example.org", None, False)


def test_client_key() -> None:
    assert client_key("192.0.2.1", None, False) == "192.0.2.1"
    assert client_key("192.0.2.1", "10.0.0.9", False) == "192.0.2.1"  # not from a proxy
    assert client_key("127.0.0.1", "203.0.113.9, 10.0.0.9", True) == "10.0.0.9"
    assert client_key("127.0.0.1", "", True) == "127.0.0.1"
    assert client_key("2001:db8:1:2:3:4:5:6", None, False) == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:2::9", None, False) == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.1", None, False) == "192.0.2.1"
    assert client_key(None, None, False) == "unknown"


def test_cross_site_and_json() -> None:
    assert cross_site("cross-site") and not cross_site("same-origin")
    assert not cross_site(None) and not cross_site("none") and not cross_site("same-site")
    assert wants_json("application/json")
    assert not wants_json("text/html,application/xhtml+xml,application/json;q=0.9")
    assert not wants_json(None) and not wants_json("*/*")


def test_private_cache() -> None:
    assert private_cache("public, max-age=86400") == "private, max-age=86400"
    assert private_cache("no-cache") == "no-cache"
    assert private_cache("max-age=60,Public") == "max-age=60, private"


# -- CORS of a private server -----------------------------------------------------------------


def test_cors_credentials_only_for_origins_listed_by_name() -> None:
    listed = ("https://app.example.org",)
    private = cors_headers("https://app.example.org", listed, credentials=True)
    assert private == {
        "Access-Control-Allow-Origin": "https://app.example.org",
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }
    public = cors_headers("https://app.example.org", listed)
    assert "Access-Control-Allow-Credentials" not in public
    assert cors_headers("https://evil.example", listed, credentials=True) == {"Vary": "Origin"}
    assert cors_headers(None, listed, credentials=True) == {"Vary": "Origin"}


def test_cors_wildcard_never_carries_credentials() -> None:
    for allowed in (("*",), ("*", "https://app.example.org")):
        headers = cors_headers("https://app.example.org", allowed, credentials=True)
        assert headers == {"Access-Control-Allow-Origin": "*"}
    assert "Access-Control-Allow-Credentials" not in api_headers("https://x", ("*",), True)


# -- failed logins ------------------------------------------------------------------------------


def test_five_failures_at_once_then_one_every_twelve_seconds() -> None:
    limit = FailedLogins(attempts=5, period=60)
    for _ in range(5):
        assert limit.retry_after("a", 100.0) is None
        limit.failed("a", 100.0)
    assert limit.retry_after("a", 100.0) == 12
    assert limit.retry_after("a", 105.0) == 7
    assert limit.retry_after("b", 100.0) is None  # per client
    assert limit.retry_after("a", 112.0) is None
    limit.failed("a", 112.0)
    assert limit.retry_after("a", 112.0) == 12
    assert limit.retry_after("a", 112.0 + 60) is None


def test_a_client_hammering_stays_limited() -> None:
    limit = FailedLogins(attempts=5, period=60)
    now, refused = 0.0, 0
    for _ in range(600):  # one attempt a second for ten minutes
        if limit.retry_after("a", now) is None:
            limit.failed("a", now)
        else:
            refused += 1
        now += 1.0
    assert 600 - refused <= 5 + 50 + 1  # the burst, then five a minute


def test_a_success_forgives() -> None:
    limit = FailedLogins(attempts=2, period=60)
    limit.failed("a", 0.0)
    limit.failed("a", 0.0)
    assert limit.retry_after("a", 0.0) == 30
    limit.succeeded("a")
    assert limit.retry_after("a", 0.0) is None and len(limit) == 0


def test_memory_is_bounded_for_many_addresses() -> None:
    limit = FailedLogins(attempts=5, period=60, max_clients=100)
    for i in range(10_000):
        limit.failed(f"10.0.{i // 256}.{i % 256}", 0.0)
        assert len(limit) <= 100
    assert limit.retry_after("10.0.39.15", 0.0) is None  # the newest: still counted
    # Buckets that have refilled are forgotten as new clients come.
    limit.failed("192.0.2.1", 1000.0)
    assert len(limit) == 1


def test_limit_arguments() -> None:
    with pytest.raises(ValueError):
        FailedLogins(attempts=0)
