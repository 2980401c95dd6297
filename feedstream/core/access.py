"""Access control of a private server, as pure rules: who may read, and failed logins.

A server with ``[server] read_token`` (or ``trusted_proxy_header``) is *private*: reading (the
page, the API, the output feeds, ``/metrics``) needs one of three credentials, checked by
:func:`check` in this order:

* the trusted proxy's header (``trusted_proxy_header``, non-empty) on a request whose peer
  address is inside ``trusted_proxies``; the same header from any other address is ignored;
* ``Authorization: Bearer <read_token>``, compared in constant time;
* the session cookie set by ``POST /login``: ``<expires>.<mac>``, an HMAC of the expiry under a
  key derived from the token (:func:`session_value`). The cookie is not the token, and
  changing the token revokes every cookie issued under the old one.

There is no ``?token=``: a token in a URL ends up in logs and in ``Referer``. Which paths need
credentials is :func:`protection`: every path except an explicit open list (deny by default,
so a route added later is private at once). ``/healthz`` stays open; the push and WebSub
callback paths and the admin API keep their own credentials; subscribing to the hub
(``/websub/hub``) takes read credentials, since a subscriber is sent what it subscribes to.

:class:`FailedLogins` is the token-bucket limit on failed logins per client address, with the
clock passed in and a bounded number of addresses remembered. Everything here is a function of
its arguments (the clock included) and is tested synchronously (tests/core/test_access.py);
:mod:`feedstream.web.access` and :mod:`feedstream.web.login` only carry bytes to it.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import ipaddress
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from feedstream.core.config import ServerConfig

__all__ = [
    "HUB_PATH",
    "LOGIN_PATH",
    "LOGIN_SECURITY_HEADERS",
    "LOGOUT_PATH",
    "OPEN_PATHS",
    "OPEN_PREFIXES",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "AccessPolicy",
    "FailedLogins",
    "Protection",
    "Refusal",
    "bearer",
    "check",
    "clear_cookie",
    "client_key",
    "cookie_secure",
    "cookie_values",
    "cross_site",
    "private_cache",
    "protection",
    "session_cookie",
    "session_valid",
    "session_value",
    "token_matches",
    "trusted_peer",
    "wants_json",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOGIN_PATH, LOGOUT_PATH = "/login", "/logout"
SESSION_COOKIE = "feedstream_session"
SESSION_SECONDS = 30 * 24 * 3600  # a login lasts 30 days (or until the token changes)
_SESSION_LABEL = b"feedstream session cookie v1"  # the key is HMAC(token, this label)
_MAX_COOKIE_VALUE = 128  # "<expires>.<mac>" is about 55 bytes: anything longer is not ours

#: Paths a private server answers without credentials. The login form needs its style sheet
#: and the icon; the embeddable client is code, no data, and a page on another origin imports
#: it before it can send the token; ``/api/hub`` and ``/api/admin/reload`` check the admin
#: token themselves.
OPEN_PATHS = frozenset(
    {
        "/healthz",
        LOGIN_PATH,
        LOGOUT_PATH,
        "/static/login.css",
        "/static/favicon.svg",
        "/static/feedstream.js",
        "/api/hub",
        "/api/admin/reload",
    }
)
#: Path prefixes answered without read credentials: webhook pushes and WebSub callbacks carry
#: their own (the hub's ``/websub/hub`` is the exception: see :data:`HUB_PATH`). The router
#: sends these to raw endpoints of their own, so a ``..`` in such a path never reaches another
#: route.
OPEN_PREFIXES = ("/api/push/", "/websub/")

#: The login form's policy: the page's, but its one form may post to this origin.
LOGIN_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
LOGIN_SECURITY_HEADERS = {
    "Content-Security-Policy": LOGIN_CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Protection(enum.Enum):
    """What a path needs on a private server."""

    OPEN = "open"  # nothing (or credentials of its own)
    PAGE = "page"  # read credentials; without them, the login form
    API = "api"  # read credentials; without them, 401 JSON


#: The hub's subscription endpoint: a subscriber is sent every entry of the feed it names, so
#: on a private server subscribing takes read credentials (the callbacks still get none).
HUB_PATH = "/websub/hub"


def protection(path: str) -> Protection:
    """Which credentials *path* needs on a private server (deny by default)."""
    if path == HUB_PATH:
        return Protection.API
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return Protection.OPEN
    if path == "/":
        return Protection.PAGE
    return Protection.API


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """The credentials a private server accepts, prepared once from ``[server]``."""

    token: bytes | None = None  # read_token, UTF-8
    session_key: bytes | None = None  # HMAC(token, label): what session cookies are signed with
    proxy_header: bytes | None = None  # trusted_proxy_header, lower case (as ASGI gives names)
    proxies: tuple[Network, ...] = ()  # trusted_proxies

    @classmethod
    def from_config(cls, server: ServerConfig) -> AccessPolicy:
        token = server.read_token.encode() if server.read_token is not None else None
        return cls(
            token=token,
            session_key=_session_key(token) if token is not None else None,
            proxy_header=(
                server.trusted_proxy_header.lower().encode()
                if server.trusted_proxy_header
                else None
            ),
            proxies=tuple(
                ipaddress.ip_network(net, strict=False) for net in server.trusted_proxies
            ),
        )

    @property
    def private(self) -> bool:
        return self.token is not None or self.proxy_header is not None

    @property
    def login(self) -> bool:
        """Whether ``/login`` can sign anyone in (there is a token to give)."""
        return self.token is not None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request without valid credentials is refused (a 401)."""

    reason: str
    invalid: bool = False  # credentials were given but are wrong (``error="invalid_token"``)

    @property
    def www_authenticate(self) -> str:
        if self.invalid:
            return 'Bearer realm="feedstream", error="invalid_token"'
        return 'Bearer realm="feedstream"'


MISSING = Refusal(
    "missing credentials: send Authorization: Bearer <read token>, or sign in at /login"
)
MISSING_PROXY_ONLY = Refusal(
    "missing credentials: this server is read through its authenticating proxy"
)
WRONG_TOKEN = Refusal("wrong credentials", invalid=True)
STALE_SESSION = Refusal("the session has expired or was revoked: sign in again at /login", True)


def check(
    policy: AccessPolicy,
    *,
    authorization: bytes | None = None,
    cookie: bytes | None = None,
    proxy_user: bytes | None = None,
    peer: str | None = None,
    now: float = 0.0,
) -> Refusal | None:
    """None when the request may read, else why not.

    *authorization*, *cookie* and *proxy_user* are the raw values of the ``Authorization``,
    ``Cookie`` and trusted proxy headers (None when absent); *peer* is the address the
    connection comes from; *now* is Unix time (session cookies expire).
    """
    if proxy_user is not None and proxy_user.strip() and trusted_peer(peer, policy.proxies):
        return None
    refusal = MISSING if policy.token is not None else MISSING_PROXY_ONLY
    if authorization is not None and policy.token is not None:
        given = bearer(authorization)
        if given is not None and token_matches(given, policy.token):
            return None
        refusal = WRONG_TOKEN
    if cookie is not None and policy.session_key is not None:
        values = list(cookie_values(cookie, SESSION_COOKIE.encode()))
        if any(session_valid(policy.session_key, value, now) for value in values):
            return None
        if values and not refusal.invalid:
            refusal = STALE_SESSION
    return refusal


def bearer(authorization: bytes) -> bytes | None:
    """The credentials of ``Authorization: Bearer <credentials>``, or None (another scheme)."""
    scheme, _, credentials = authorization.strip().partition(b" ")
    credentials = credentials.strip()
    if scheme.lower() != b"bearer" or not credentials:
        return None
    return credentials


def token_matches(given: bytes, token: bytes) -> bool:
    """Constant-time comparison (in the length of *token*)."""
    return hmac.compare_digest(given, token)


def cookie_values(cookie: bytes, name: bytes) -> Iterator[bytes]:
    """Every value of the cookie *name* in a ``Cookie`` header (``a=1; b=2``)."""
    for part in cookie.split(b";"):
        key, eq, value = part.strip().partition(b"=")
        if eq and key == name:
            yield value.strip().strip(b'"')


def _session_key(token: bytes) -> bytes:
    return hmac.new(token, _SESSION_LABEL, hashlib.sha256).digest()


def _mac(key: bytes, expires: int) -> bytes:
    digest = hmac.new(key, b"%d" % expires, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=")


def session_value(key: bytes, expires: int) -> str:
    """The cookie value of a session lasting until *expires* (Unix time), signed with *key*."""
    return f"{expires}.{_mac(key, expires).decode()}"


def session_valid(key: bytes, value: bytes, now: float) -> bool:
    """Whether *value* is a session cookie signed with *key* and not expired at *now*."""
    if len(value) > _MAX_COOKIE_VALUE:
        return False
    raw_expires, dot, mac = value.partition(b".")
    if not dot or not raw_expires.isdigit() or len(raw_expires) > 12:
        return False
    expires = int(raw_expires)
    return now < expires and hmac.compare_digest(mac, _mac(key, expires))


def trusted_peer(peer: str | None, proxies: Sequence[Network]) -> bool:
    """Whether the connection's address *peer* is inside one of the *proxies* networks.

    An IPv4 address seen by a dual-stack socket (``::ffff:127.0.0.1``) counts as itself.
    """
    if peer is None or not proxies:
        return False
    try:
        address = ipaddress.ip_address(peer.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in proxies)


# -- the login form -------------------------------------------------------------------------


def client_key(peer: str | None, forwarded_for: str | None, peer_trusted: bool) -> str:
    """Whom a failed login is counted against.

    The peer address, or behind a trusted proxy the last address of ``X-Forwarded-For`` (the
    one that proxy saw; earlier ones are the client's say). IPv6 addresses count per /64, the
    block one subscriber usually has.
    """
    where = peer or "unknown"
    if peer_trusted and forwarded_for:
        where = forwarded_for.rsplit(",", 1)[-1].strip() or where
    try:
        address = ipaddress.ip_address(where.partition("%")[0])
    except ValueError:
        return where[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def cookie_secure(
    scheme: str, public_url: str | None, forwarded_proto: str | None, peer_trusted: bool
) -> bool:
    """Whether the session cookie gets ``Secure``: the request came over https (directly, or to
    a trusted proxy that says so in ``X-Forwarded-Proto``), or the server's public URL is
    https."""
    if scheme in ("https", "wss"):
        return True
    if peer_trusted and forwarded_proto and forwarded_proto.strip().lower() == "https":
        return True
    return bool(public_url and public_url.lower().startswith("https://"))


def session_cookie(value: str, secure: bool, max_age: int = SESSION_SECONDS) -> str:
    """``Set-Cookie`` for a new session."""
    attributes = f"; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict"
    return f"{SESSION_COOKIE}={value}{attributes}{'; Secure' if secure else ''}"


def clear_cookie(secure: bool) -> str:
    """``Set-Cookie`` that removes the session cookie (``POST /logout``)."""
    return session_cookie("", secure, max_age=0)


def cross_site(sec_fetch_site: str | None) -> bool:
    """Whether a browser says the request comes from another site (a forged form post)."""
    return (sec_fetch_site or "").strip().lower() == "cross-site"


def private_cache(cache_control: str) -> str:
    """*cache_control* for a private server's answer: ``public`` becomes ``private``.

    What needs credentials to read must not be kept by a shared cache (a CDN, a caching
    proxy) and handed to whoever asks next; the browser's own cache may keep it.
    """
    parts = [part.strip() for part in cache_control.split(",") if part.strip()]
    if not any(part.lower() == "public" for part in parts):
        return cache_control
    return ", ".join("private" if part.lower() == "public" else part for part in parts)


def wants_json(accept: str | None) -> bool:
    """Whether the client asked for JSON rather than a page (the form's answers are HTML)."""
    accept = (accept or "").lower()
    return "application/json" in accept and "text/html" not in accept


class FailedLogins:
    """Failed logins per client, as token buckets: *attempts* at once, then one every
    ``period / attempts`` seconds.

    A client with no attempt left is refused before its token is even looked at, until
    :meth:`retry_after` says otherwise. At most *max_clients* buckets are kept: a bucket that
    has refilled is forgotten (it is the same as none), and when that is not enough the
    least recently used goes. The clock is an argument of every call.
    """

    def __init__(self, attempts: int = 5, period: float = 60.0, max_clients: int = 10_000) -> None:
        if attempts < 1 or period <= 0 or max_clients < 1:
            raise ValueError("attempts, period and max_clients must be positive")
        self.attempts = float(attempts)
        self.rate = attempts / period  # attempts regained per second
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key: (left, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def _left(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.attempts
        left, at = bucket
        return min(self.attempts, left + max(0.0, now - at) * self.rate)

    def retry_after(self, key: str, now: float) -> int | None:
        """None when *key* may try now, else whole seconds until it may."""
        left = self._left(key, now)
        if left >= 1.0:
            return None
        return max(1, math.ceil((1.0 - left) / self.rate - 1e-9))  # no 7.000000001 -> 8

    def failed(self, key: str, now: float) -> None:
        """Count a failed attempt of *key*."""
        left = max(0.0, self._left(key, now) - 1.0)
        self._buckets[key] = (left, now)
        self._buckets.move_to_end(key)
        self._forget(now)

    def succeeded(self, key: str) -> None:
        """The right token: the client's earlier failures are forgiven."""
        self._buckets.pop(key, None)

    def _forget(self, now: float) -> None:
        """Drop refilled buckets from the least recently used end, then any over the cap.

        Amortized constant time: each bucket is dropped once, and the scan stops at the first
        one still counting.
        """
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets))
            if len(buckets) <= self.max_clients and self._left(oldest, now) < self.attempts:
                return
            del buckets[oldest]
