"""The HTTP API's rules as pure functions: query validation, push checks, CORS.

Everything a route decides from request data alone lives here and is tested without a server;
:mod:`feedstream.web.app` only moves bytes between Quart and these functions and the runtime.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from feedstream.core.config import FEED_ID_RE, FeedConfig
from feedstream.core.query import MAX_QUERY_CHARS
from feedstream.core.signatures import SignatureStatus, verify_signature

__all__ = [
    "API_SECURITY_HEADERS",
    "CONTENT_SECURITY_POLICY",
    "DEFAULT_LIMIT",
    "DEFAULT_TIMEOUT",
    "MAX_LIMIT",
    "MAX_TIMEOUT",
    "PROXIED_CONTENT_SECURITY_POLICY",
    "SECURITY_HEADERS",
    "ApiError",
    "EntriesQuery",
    "api_headers",
    "check_admin_auth",
    "check_push_auth",
    "cors_headers",
    "page_security_headers",
    "parse_entries_query",
    "preflight_headers",
    "push_media_type",
]

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
DEFAULT_TIMEOUT, MAX_TIMEOUT = 25.0, 60.0
MAX_CURSOR_CHARS = 64

#: Media types a push may carry; anything else is 415. A missing type is sniffed by the parser.
PUSH_TYPES = frozenset(
    {
        "application/atom+xml",
        "application/rss+xml",
        "application/rdf+xml",
        "application/xml",
        "text/xml",
        "application/feed+json",
        "application/json",
    }
)


class ApiError(Exception):
    """A request the API refuses: *status* and a reason for the JSON body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EntriesQuery:
    after: str | None
    timeout: float
    feeds: frozenset[str] | None
    limit: int
    stream: str | None = None  # a stream id, shape checked (the delivery side knows which exist)
    q: str | None = None  # an ad-hoc query, length checked (parsed by the delivery side)
    duplicates: bool = False  # ?duplicates=include: folded duplicates are delivered too


def parse_entries_query(
    args: Mapping[str, str],
    known_feeds: Collection[str],
    categories: Mapping[str, frozenset[str]] | None = None,
) -> EntriesQuery:
    """Validate ``/api/entries`` parameters; unknown parameters (cache busters) are ignored.

    ``category`` names one of *categories* (name -> its feed ids) and selects its feeds; with
    ``feeds`` too, the entries of either.
    """
    after = args.get("after")
    if after is not None and (
        not after or len(after) > MAX_CURSOR_CHARS or not after.isprintable()
    ):
        raise ApiError(400, "after: not a cursor (use the cursor of a previous answer)")
    timeout = _number(args, "timeout", DEFAULT_TIMEOUT, 0.0, MAX_TIMEOUT)
    limit = int(_number(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, integer=True))
    feeds: frozenset[str] | None = None
    raw_feeds = args.get("feeds")
    if raw_feeds is not None:
        names = [name.strip() for name in raw_feeds.split(",") if name.strip()]
        if not names:
            raise ApiError(400, "feeds: give one or more feed ids separated by commas")
        for name in names:
            if not FEED_ID_RE.match(name) or name not in known_feeds:
                raise ApiError(400, f"feeds: unknown feed {name[:64]!r}")
        feeds = frozenset(names)
    raw_category = args.get("category")
    if raw_category is not None:
        feeds = _category_feeds(raw_category, categories or {}, feeds)
    stream, q, duplicates = _view_args(args)
    return EntriesQuery(
        after=after,
        timeout=timeout,
        feeds=feeds,
        limit=limit,
        stream=stream,
        q=q,
        duplicates=duplicates,
    )


def _view_args(args: Mapping[str, str]) -> tuple[str | None, str | None, bool]:
    """``stream``, ``q`` and ``duplicates`` (include / exclude, the default)."""
    stream = args.get("stream")
    if stream is not None and not FEED_ID_RE.match(stream):
        raise ApiError(400, f"stream: unknown stream {stream[:64]!r}")
    q = args.get("q")
    if q is not None:
        if not q.strip():
            raise ApiError(400, "q: give a query (see the query language in the README)")
        if len(q) > MAX_QUERY_CHARS:
            raise ApiError(400, f"query: longer than {MAX_QUERY_CHARS} characters")
    duplicates = args.get("duplicates")
    if duplicates not in (None, "include", "exclude"):
        raise ApiError(400, "duplicates: must be include or exclude")
    return stream, q, duplicates == "include"


def _category_feeds(
    raw: str, categories: Mapping[str, frozenset[str]], feeds: frozenset[str] | None
) -> frozenset[str]:
    name = raw.strip()
    if not name:
        raise ApiError(400, "category: give a category name")
    members = categories.get(name)
    if members is None:
        raise ApiError(400, f"category: unknown category {name[:64]!r}")
    return members if feeds is None else feeds | members


def _number(
    args: Mapping[str, str],
    name: str,
    default: float,
    low: float,
    high: float,
    integer: bool = False,
) -> float:
    raw = args.get(name)
    if raw is None:
        return default
    kind = "a whole number" if integer else "a number"
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ApiError(400, f"{name}: must be {kind} from {low:g} to {high:g}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ApiError(400, f"{name}: must be {kind} from {low:g} to {high:g}")
    return value


def push_media_type(content_type: str | None) -> str | None:
    """The media type of a push body, or raise 415; None when the client sent none."""
    if not content_type or not content_type.strip():
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in PUSH_TYPES:
        raise ApiError(
            415, f"unsupported Content-Type {media_type[:100]!r}: send Atom, RSS or JSON Feed"
        )
    return media_type


def check_push_auth(
    feed: FeedConfig, authorization: str | None, signature: str | None, body: bytes
) -> None:
    """Accept a push with the feed's Bearer token or a valid ``X-Hub-Signature``; else 401.

    Both secrets are compared in constant time.
    """
    if feed.token is not None and authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), feed.token.encode()
        ):
            return
    if feed.secret is not None and signature:
        result = verify_signature(feed.secret.encode(), signature, body)
        if result.status is SignatureStatus.OK:
            return
    if not authorization and not signature:
        raise ApiError(401, "missing credentials: send Authorization: Bearer or X-Hub-Signature")
    raise ApiError(401, "wrong credentials")


def check_admin_auth(token: str | None, authorization: str | None) -> None:
    """Let an admin request through with ``Authorization: Bearer <server.admin_token>``.

    404 when no admin token is configured (the admin API does not exist then), 401 otherwise.
    """
    if token is None:
        raise ApiError(404, "the admin API is off (set server.admin_token to enable it)")
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise ApiError(401, "missing credentials: send Authorization: Bearer <admin token>")
    if not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        raise ApiError(401, "wrong credentials")


CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: http:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: Sent with every response: the page's strict CSP and the usual hardening.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: The page's policy with ``[server] proxy_media``: images from this server only (an entry's
#: image URLs are ``/media/`` paths then, feed icons are ``/api/feeds/<id>/icon``).
PROXIED_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace(
    "img-src 'self' https: http:", "img-src 'self'"
)


def page_security_headers(proxy_media: bool) -> dict[str, str]:
    """:data:`SECURITY_HEADERS`, with :data:`PROXIED_CONTENT_SECURITY_POLICY` when the media
    proxy is on (with it off, the page shows images from wherever entries name them)."""
    if not proxy_media:
        return dict(SECURITY_HEADERS)
    return {**SECURITY_HEADERS, "Content-Security-Policy": PROXIED_CONTENT_SECURITY_POLICY}


#: Sent with every ``/api/*`` answer instead. The answers are JSON (or an event stream), never
#: a document a browser renders: with ``nosniff`` it cannot be read as HTML or script, so a page
#: policy adds nothing. Kept to the minimum on purpose: hypercorn and h11 validate every header
#: of every response, ten thousand times per fan-out.
API_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff"}


def api_headers(
    origin: str | None, allowed: Sequence[str], credentials: bool = False
) -> dict[str, str]:
    """Headers of every ``/api/*`` answer: security, CORS for *origin*, no caching."""
    cors = cors_headers(origin, allowed, credentials)
    return {**API_SECURITY_HEADERS, **cors, "Cache-Control": "no-store"}


def preflight_headers() -> dict[str, str]:
    """What a CORS preflight (OPTIONS) on ``/api/*`` answers, besides :func:`api_headers`."""
    return {
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, Last-Event-ID, "
        "X-Hub-Signature",
        "Access-Control-Max-Age": "86400",
    }


def cors_headers(
    origin: str | None, allowed: Sequence[str], credentials: bool = False
) -> dict[str, str]:
    """``Access-Control-Allow-Origin`` for *origin* under the configured *allowed* origins.

    With *credentials* (a private server, see :mod:`feedstream.core.access`) an origin listed
    by name also gets ``Access-Control-Allow-Credentials: true``, so its pages may send the
    session cookie. ``"*"`` never does (browsers refuse the pair): under ``"*"`` another origin
    reads only what it asks for with ``Authorization: Bearer``, never with a cookie.
    """
    if "*" in allowed:
        return {"Access-Control-Allow-Origin": "*"}
    if origin and origin in allowed:
        if credentials:
            return {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Vary": "Origin",
            }
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {"Vary": "Origin"}
