"""Sans-io WebSub *hub* (W3C Recommendation, 23 January 2018): feedstream's own output feeds.

The hub's side of the protocol, as pure functions and an explicit state model, in the style of
:mod:`feedstream.websub.protocol` (the subscriber's side): no sockets, no trio, no httpx, no
storage and no clock. Time comes in as ``now`` (Unix seconds), jitter as a float in ``[0, 1)``
drawn by the caller; the only randomness drawn here is the challenge (:mod:`secrets`). The I/O
is :mod:`feedstream.service.hub`.

1. Subscription request (section 5.1): :func:`parse_request` reads the form and returns a
   :class:`HubRequest` or a :class:`Refusal` (a 4xx with a reason, and whether a denial goes to
   the callback). The topic must be one of this server's output feeds: :func:`topic_of` reads
   ``<public_url>/feeds/<name>.<atom|rss|json>``, and the caller says which names it publishes.
2. Verification of intent and denial (sections 5.2, 5.3): :func:`verification_url`,
   :func:`denial_url` (the callback's own query parameters kept), :func:`challenge_echoed`
   (a 2xx with the challenge verbatim), then :func:`verified` gives the subscription to keep.
3. Content distribution (section 7): :func:`distribution_headers` (the topic's Content-Type,
   ``Link`` rel=hub and rel=self, ``X-Hub-Signature: sha256=<HMAC>`` with a secret),
   :func:`classify_delivery` and :func:`after_delivery` (retries, 410, failing).
4. Leases: :func:`clamp_lease`, :func:`is_expired`.

Decisions
=========

* **Secrets over plain http.** The Recommendation says the subscriber SHOULD only send
  ``hub.secret`` when its request goes over HTTPS, and that it MUST be under 200 bytes. The
  hub cannot know how the request travelled behind a proxy, and the secret itself never leaves
  the hub again (only its HMAC does), so the hub accepts a secret of 1 to 199 bytes with any
  callback scheme and always signs with it; 200 bytes or more is a 400. An empty secret is
  the same as none.
* **Keys.** A subscription is the pair (topic, callback): re-subscribing the same pair renews
  it once verified (new lease, new secret); the one in place keeps working meanwhile, and a
  failed re-verification leaves it as it was.
* **States.** ``pending`` (verifying a first subscription), ``active``, ``failing``
  (deliveries failed for :data:`RETRY_WINDOW`: each later delivery still gets one attempt, and
  a success makes it ``active`` again); the ends ``denied`` (a topic we do not publish),
  ``failed`` (verification not confirmed), ``expired`` (the lease ran out), ``gone`` (a 410, or
  unsubscribed) are not stored: the shell counts them and forgets the subscription.
* **Retries.** A failed delivery (not 2xx, not 410, or no answer) is retried after
  :func:`~feedstream.core.backoff.backoff_delay` (base :data:`RETRY_BASE`, cap
  :data:`RETRY_CAP`) until :data:`RETRY_WINDOW` after the first attempt; then the subscription
  is ``failing`` and that delivery is dropped.
* **Unknown parameters** are ignored, as section 5.1 asks.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from feedstream.core.backoff import backoff_delay
from feedstream.core.publish import CONTENT_TYPES

__all__ = [
    "CHALLENGE_BYTES",
    "DEFAULT_MAX_LEASE",
    "DEFAULT_MIN_LEASE",
    "FORMATS",
    "MAX_CALLBACK_LENGTH",
    "MAX_SECRET_BYTES",
    "RETRY_BASE",
    "RETRY_CAP",
    "RETRY_WINDOW",
    "SAVE_INTERVAL",
    "STORED_STATES",
    "TRANSITIONS",
    "DeliveryOutcome",
    "DeliveryStep",
    "HubMode",
    "HubRequest",
    "HubSettings",
    "HubState",
    "HubSubscription",
    "InvalidTransition",
    "Refusal",
    "Topic",
    "after_delivery",
    "callback_problem",
    "can_transition",
    "challenge_echoed",
    "clamp_lease",
    "classify_delivery",
    "denial_url",
    "distribution_headers",
    "is_expired",
    "merge_stored",
    "needs_saving",
    "new_challenge",
    "parse_request",
    "signature",
    "topic_of",
    "topic_url",
    "verification_url",
    "verified",
]

DEFAULT_MIN_LEASE = 3600
DEFAULT_MAX_LEASE = 864_000
MAX_CALLBACK_LENGTH = 2048
MAX_SECRET_BYTES = 199
"""``hub.secret`` MUST be less than 200 bytes (section 5.1)."""
CHALLENGE_BYTES = 24
"""Random bytes in a challenge (32 URL-safe characters)."""
RETRY_BASE = 5.0
RETRY_CAP = 300.0
RETRY_WINDOW = 900.0
"""Seconds after the first attempt of a delivery when retrying it stops (then ``failing``)."""
MAX_REASON_CHARS = 200
SAVE_INTERVAL = 300.0
"""Seconds a subscription's stored ``last_delivery`` may lag behind the one in memory."""

FORMATS: Mapping[str, str] = CONTENT_TYPES
"""Output formats and their Content-Type (:mod:`feedstream.core.publish` renders them)."""

FEEDS_PATH = "/feeds/"
_NAME = re.compile(r"[a-z0-9_-]{1,64}")


class HubMode(StrEnum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


class HubState(StrEnum):
    """Where a subscription stands (only :data:`STORED_STATES` are kept)."""

    PENDING = "pending"
    ACTIVE = "active"
    FAILING = "failing"
    DENIED = "denied"
    FAILED = "failed"
    EXPIRED = "expired"
    GONE = "gone"


_H = HubState
STORED_STATES = frozenset({_H.PENDING, _H.ACTIVE, _H.FAILING})

TRANSITIONS: Mapping[HubState, frozenset[HubState]] = {
    _H.PENDING: frozenset({_H.ACTIVE, _H.DENIED, _H.FAILED}),
    _H.ACTIVE: frozenset({_H.ACTIVE, _H.FAILING, _H.EXPIRED, _H.GONE}),
    _H.FAILING: frozenset({_H.ACTIVE, _H.FAILING, _H.EXPIRED, _H.GONE}),
    _H.DENIED: frozenset(),
    _H.FAILED: frozenset(),
    _H.EXPIRED: frozenset(),
    _H.GONE: frozenset(),
}
"""Allowed moves. ``pending`` ends verified (active), denied or failed; active and failing
subscriptions renew (stay), fail or recover, expire, or are gone (410, unsubscribed)."""


def can_transition(old: HubState, new: HubState) -> bool:
    return new in TRANSITIONS[old]


class InvalidTransition(ValueError):
    """A state change :data:`TRANSITIONS` does not allow."""


@dataclass(frozen=True, slots=True)
class HubSettings:
    """The ``[hub]`` settings the rules need."""

    public_url: str
    min_lease: int = DEFAULT_MIN_LEASE
    max_lease: int = DEFAULT_MAX_LEASE

    @property
    def hub_url(self) -> str:
        return f"{self.public_url.rstrip('/')}/websub/hub"


@dataclass(frozen=True, slots=True)
class Topic:
    """An output feed: ``name`` (``all``, a feed id or a stream id) in ``format``."""

    name: str
    format: str

    @property
    def content_type(self) -> str:
        return FORMATS[self.format]


def topic_url(public_url: str, topic: Topic) -> str:
    return f"{public_url.rstrip('/')}{FEEDS_PATH}{topic.name}.{topic.format}"


def topic_of(url: str, public_url: str) -> Topic | None:
    """The output feed *url* names on the server at *public_url* (None: not one of ours).

    Scheme and host compare case-insensitively; the path must be exactly
    ``/feeds/<name>.<format>`` under the public URL's path, with no query or fragment.
    """
    try:
        want, got = urlsplit(public_url.rstrip("/")), urlsplit(url)
        want_port, got_port = want.port, got.port
    except ValueError:
        return None
    if (got.scheme.lower(), got.hostname, got_port) != (
        want.scheme.lower(),
        want.hostname,
        want_port,
    ):
        return None
    if got.query or got.fragment or got.username or got.password:
        return None
    prefix = want.path + FEEDS_PATH
    if not got.path.startswith(prefix):
        return None
    name, dot, format = got.path[len(prefix) :].rpartition(".")
    if not dot or format not in FORMATS or not _NAME.fullmatch(name):
        return None
    return Topic(name, format)


def clamp_lease(asked: int | None, settings: HubSettings) -> int:
    """The lease granted for *asked* seconds (None: the maximum), within the settings."""
    if asked is None:
        return settings.max_lease
    return max(settings.min_lease, min(settings.max_lease, asked))


# -- 1. the subscription request ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HubRequest:
    """A valid (un)subscription request."""

    mode: HubMode
    topic_url: str
    topic: Topic
    callback: str
    lease_seconds: int  # granted (clamped); unused for unsubscribe
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request answered with *status* and ``{"error": reason}``.

    ``deny_callback`` is set when the request is well formed but names a topic this server
    does not publish: a ``hub.mode=denied`` GET then goes to it (section 5.2).
    """

    status: int
    reason: str
    deny_callback: str | None = None
    topic_url: str | None = None


FormLike = Mapping[str, str] | Mapping[str, list[str]] | Iterable[tuple[str, str]]


def _values(form: FormLike, name: str) -> list[str]:
    getlist = getattr(form, "getlist", None)
    if callable(getlist):
        return [str(v) for v in getlist(name)]
    if isinstance(form, Mapping):
        value = form.get(name)
        if value is None:
            return []
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return [str(v) for k, v in form if k == name]


def _one(form: FormLike, name: str) -> str | None:
    values = _values(form, name)
    if len(values) > 1 and any(v != values[0] for v in values):
        raise ValueError(f"{name}: given more than once")
    return values[0] if values else None


def callback_problem(callback: str) -> str | None:
    """Why *callback* is not acceptable (None: it is): http(s), a host, at most 2048 chars."""
    if len(callback) > MAX_CALLBACK_LENGTH:
        return f"hub.callback: longer than {MAX_CALLBACK_LENGTH} characters"
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in callback):
        return "hub.callback: spaces or control characters"
    try:
        parts = urlsplit(callback)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "hub.callback: not a URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "hub.callback: must be an absolute http:// or https:// URL"
    if parts.username or parts.password:
        return "hub.callback: credentials in the URL are not accepted"
    if parts.fragment:
        return "hub.callback: a fragment is not accepted"
    return None


def _lease(raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()):
        raise ValueError("hub.lease_seconds: must be a whole number of seconds")
    return int(text[-12:]) if len(text) <= 12 else 10**12


def parse_request(
    form: FormLike, settings: HubSettings, publishes: Container[str] | None = None
) -> HubRequest | Refusal:
    """Read a subscription request (section 5.1).

    *publishes* holds the output feed names served here (None: every well-formed name).
    """
    try:
        mode_raw = _one(form, "hub.mode")
        topic_raw = _one(form, "hub.topic")
        callback = _one(form, "hub.callback")
        secret = _one(form, "hub.secret")
        lease = _lease(_one(form, "hub.lease_seconds"))
    except ValueError as exc:
        return Refusal(400, str(exc))
    if mode_raw not in (HubMode.SUBSCRIBE, HubMode.UNSUBSCRIBE):
        return Refusal(400, "hub.mode: must be subscribe or unsubscribe")
    mode = HubMode(mode_raw)
    if not callback:
        return Refusal(400, "hub.callback: missing")
    if (problem := callback_problem(callback)) is not None:
        return Refusal(400, problem)
    if not topic_raw:
        return Refusal(400, "hub.topic: missing")
    if secret is not None and len(secret.encode("utf-8")) > MAX_SECRET_BYTES:
        return Refusal(400, f"hub.secret: must be less than 200 bytes (at most {MAX_SECRET_BYTES})")
    topic = topic_of(topic_raw, settings.public_url)
    known = publishes is None or (topic is not None and topic.name in publishes)
    if topic is None or not known:
        reason = "hub.topic: not a feed this hub publishes"
        deny = callback if mode is HubMode.SUBSCRIBE else None
        return Refusal(404, reason, deny, topic_raw)
    return HubRequest(
        mode=mode,
        topic_url=topic_url(settings.public_url, topic),
        topic=topic,
        callback=callback,
        lease_seconds=clamp_lease(lease, settings),
        secret=secret or None,
    )


# -- 2. verification of intent and denial ------------------------------------------------------


def new_challenge() -> str:
    return secrets.token_urlsafe(CHALLENGE_BYTES)


def _with_query(callback: str, extra: Iterable[tuple[str, str]]) -> str:
    """*callback* with *extra* parameters after its own (which are kept as they are)."""
    parts = urlsplit(callback)
    own = parse_qsl(parts.query, keep_blank_values=True)
    names = {name for name, _ in extra}
    kept = [(k, v) for k, v in own if k not in names]  # the hub's own values win
    return urlunsplit(parts._replace(query=urlencode([*kept, *extra])))


def verification_url(request: HubRequest, challenge: str) -> str:
    """The verification GET's URL (section 5.3): the callback, its own query kept, plus
    ``hub.mode``, ``hub.topic``, ``hub.challenge`` and (subscribe) ``hub.lease_seconds``."""
    extra = [
        ("hub.mode", request.mode.value),
        ("hub.topic", request.topic_url),
        ("hub.challenge", challenge),
    ]
    if request.mode is HubMode.SUBSCRIBE:
        extra.append(("hub.lease_seconds", str(request.lease_seconds)))
    return _with_query(request.callback, extra)


def denial_url(callback: str, topic: str, reason: str) -> str:
    """The denial GET's URL (section 5.2): ``hub.mode=denied``, ``hub.topic``, ``hub.reason``."""
    extra = [
        ("hub.mode", "denied"),
        ("hub.topic", topic),
        ("hub.reason", reason[:MAX_REASON_CHARS]),
    ]
    return _with_query(callback, extra)


def challenge_echoed(status: int, body: bytes, challenge: str) -> bool:
    """Whether the subscriber confirmed: a 2xx whose body is the challenge, verbatim."""
    return 200 <= status < 300 and hmac.compare_digest(body, challenge.encode("ascii"))


@dataclass(frozen=True, slots=True)
class HubSubscription:
    """One stored subscription (times are Unix seconds)."""

    topic: str  # the topic URL
    callback: str
    state: HubState
    lease_seconds: int
    expires_at: float
    secret: str | None = None
    created_at: float = 0.0
    failures: int = 0  # consecutive failed delivery attempts
    last_delivery: float | None = None  # the last successful one
    last_error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.topic, self.callback)

    def move(self, state: HubState, **changes: object) -> HubSubscription:
        if state is not self.state and not can_transition(self.state, state):
            raise InvalidTransition(f"hub subscription {self.callback}: {self.state} -> {state}")
        return replace(self, state=state, **changes)  # type: ignore[arg-type]


def verified(
    request: HubRequest, existing: HubSubscription | None, now: float
) -> HubSubscription | None:
    """The subscription once the subscriber confirmed *request*: a new or renewed active one
    (subscribe), or None (unsubscribe: forget it)."""
    if request.mode is HubMode.UNSUBSCRIBE:
        return None
    expires = now + request.lease_seconds
    if existing is None or existing.state not in (_H.ACTIVE, _H.FAILING):
        created = existing.created_at if existing is not None else now
        return HubSubscription(
            topic=request.topic_url,
            callback=request.callback,
            state=_H.ACTIVE,
            lease_seconds=request.lease_seconds,
            expires_at=expires,
            secret=request.secret,
            created_at=created,
        )
    return existing.move(
        _H.ACTIVE,
        lease_seconds=request.lease_seconds,
        expires_at=expires,
        secret=request.secret,
        failures=0,
        last_error=None,
    )


def is_expired(sub: HubSubscription, now: float) -> bool:
    return sub.state in (_H.ACTIVE, _H.FAILING) and now >= sub.expires_at


# -- 3. content distribution -------------------------------------------------------------------


def signature(secret: str, body: bytes) -> str:
    """``X-Hub-Signature``'s value: ``sha256=<hex HMAC-SHA256 of body>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def distribution_headers(
    topic: Topic, topic_url: str, hub_url: str, body: bytes, secret: str | None
) -> list[tuple[str, str]]:
    """The content distribution POST's headers (section 7)."""
    headers = [
        ("Content-Type", topic.content_type),
        ("Link", f'<{hub_url}>; rel="hub"'),
        ("Link", f'<{topic_url}>; rel="self"'),
    ]
    if secret:
        headers.append(("X-Hub-Signature", signature(secret, body)))
    return headers


class DeliveryOutcome(StrEnum):
    OK = "ok"  # 2xx
    GONE = "gone"  # 410: the subscription ends
    RETRY = "retry"  # anything else, or no answer


def classify_delivery(status: int | None) -> DeliveryOutcome:
    """What a callback's answer to a distribution means (None: no answer at all)."""
    if status is not None and 200 <= status < 300:
        return DeliveryOutcome.OK
    if status == 410:
        return DeliveryOutcome.GONE
    return DeliveryOutcome.RETRY


@dataclass(frozen=True, slots=True)
class DeliveryStep:
    """What follows an attempt: the subscription as it is now (None: it ended) and, when
    the delivery is to be tried again, after how many seconds."""

    sub: HubSubscription | None
    retry_in: float | None = None


def needs_saving(
    old: HubSubscription, new: HubSubscription, *, saved_at: float, now: float
) -> bool:
    """Whether *new*, which replaces *old* after a delivery, must be written to the store.

    A change of state, failure count or error always is (a restart must not forget that a
    callback is failing). A successful delivery to a healthy subscriber only moves
    ``last_delivery``: that is written at most every :data:`SAVE_INTERVAL` (since *saved_at*),
    so a hundred subscribers do not cost a hundred writes per entry.
    """
    if replace(old, last_delivery=new.last_delivery) != new:
        return True
    return new.last_delivery != old.last_delivery and now - saved_at >= SAVE_INTERVAL


def merge_stored(
    memory: Mapping[tuple[str, str], HubSubscription],
    stored: Mapping[tuple[str, str], HubSubscription],
) -> dict[tuple[str, str], HubSubscription]:
    """The subscriptions a hub holds after reading a store other hubs write too (several
    ingest nodes on one Redis): the stored records, which every change is written to, except
    that a ``last_delivery`` this hub has in memory and has not written yet (see
    :func:`needs_saving`) is kept when newer. A subscription no longer stored is gone."""
    merged = {}
    for key, sub in stored.items():
        mine = memory.get(key)
        if (
            mine is not None
            and mine.last_delivery is not None
            and (sub.last_delivery is None or mine.last_delivery > sub.last_delivery)
        ):
            sub = replace(sub, last_delivery=mine.last_delivery)
        merged[key] = sub
    return merged


def after_delivery(
    sub: HubSubscription,
    status: int | None,
    *,
    attempt: int,
    first_attempt: float,
    now: float,
    jitter: float,
    error: str | None = None,
) -> DeliveryStep:
    """Apply the answer to the *attempt*-th try (1 for the first) of one delivery, first
    tried at *first_attempt*: 2xx is success (a failing subscription is active again), 410
    ends it, anything else retries with backoff until :data:`RETRY_WINDOW` has passed, then
    marks it failing (and a failing subscription does not retry)."""
    outcome = classify_delivery(status)
    if outcome is DeliveryOutcome.OK:
        return DeliveryStep(sub.move(_H.ACTIVE, failures=0, last_delivery=now, last_error=None))
    if outcome is DeliveryOutcome.GONE:
        return DeliveryStep(None)
    reason = (error or f"callback answered {status}")[:MAX_REASON_CHARS]
    failed = replace(sub, failures=sub.failures + 1, last_error=reason)
    if sub.state is _H.FAILING:
        return DeliveryStep(failed)
    delay = backoff_delay(attempt, jitter, base=RETRY_BASE, cap=RETRY_CAP, spread=(0.5, 1.0))
    if now + delay - first_attempt > RETRY_WINDOW:
        return DeliveryStep(failed.move(_H.FAILING))
    return DeliveryStep(failed, delay)
