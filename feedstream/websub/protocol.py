"""Sans-io WebSub subscription protocol (W3C Recommendation, 23 January 2018).

Everything here is a pure function or a small frozen dataclass, in the spirit of
h11: no sockets, no trio, no httpx, no SQLite and no clock.  Time comes in as a
float ``now`` (Unix seconds) and jitter as a float in ``[0, 1)`` chosen by the
caller; the only randomness drawn here is for secrets and callback tokens
(:mod:`secrets`).  Discovery lives in :mod:`feedstream.websub.discovery`, the
subscription lifecycle (which of these to use when) in
:mod:`feedstream.websub.machine`, and the I/O in :mod:`feedstream.websub.subscriber`.

Public API
==========

State model
    ``SubscriptionState``  -- ``none``, ``pending``, ``active``, ``failed``,
    ``denied``, ``unsubscribing`` (transitions below).
    ``TRANSITIONS`` / ``can_transition(old, new)`` -- the allowed moves; the
    machine checks every state change it makes against them.
    ``Mode`` -- ``subscribe`` / ``unsubscribe``; ``expected_mode(state)``.

1. Subscription request (section 5.1)
    ``subscription_form(mode, callback_url, topic_url, lease_seconds=, secret=)``
    -> ``dict`` of form fields for the POST to the hub.
    ``new_secret()`` / ``new_callback_token()`` -- random URL-safe strings.
    ``classify_hub_response(status, hub_url, location=, redirects_followed=,
    body=, retry_after=) -> HubResponse`` (accepted / redirect / failed).

2. Verification of intent and denial (sections 5.2, 5.3)
    ``verify_intent(query, subscription, now) -> IntentDecision``; the stored
    row is passed as ``SubscriptionRecord(topic, state)`` (or ``None`` for an
    unknown callback).  ``parse_lease_seconds(raw)``.

3. Content distribution (section 7)
    ``check_delivery(state, secret, header, body) -> DeliveryDecision`` (the
    signature itself is checked by :mod:`feedstream.core.signatures`).

4. Leases and retries
    ``renewal_time(granted_at, lease_seconds, jitter)`` and
    ``retry_delay(attempt, jitter, ...)``.

Why this module is a little over 600 lines: close to half of it is docstrings that
quote the Recommendation's rules where they are applied; the code is four small
sections that share the limits and the state model above them.

State transitions
=================

::

    none          -> pending        subscribe POST sent
    pending       -> active         hub verified hub.mode=subscribe
    pending       -> failed         hub refused the POST, or no verification came
    pending       -> unsubscribing  user dropped the feed before verification
    pending       -> none           gave up without telling the hub
    active        -> active         renewal verified (state stays active while
                                    a renewal is in flight)
    active        -> pending        lease ran out; subscribing afresh
    active        -> failed         lease ran out and renewals keep failing
    active        -> unsubscribing  unsubscribe POST sent
    unsubscribing -> none           hub verified hub.mode=unsubscribe, or gave up
    unsubscribing -> active         unsubscribe refused, lease still running
    unsubscribing -> pending        user re-subscribed
    failed        -> pending        retry after ``retry_delay``
    failed        -> none           gave up / feed removed
    denied        -> pending        user asked again explicitly
    denied        -> none           feed removed
    pending, active, unsubscribing, failed -> denied   hub sent hub.mode=denied

Notes for the shell
===================

* ``fetched_url`` is the final URL after redirects of the discovery GET.
* Subscribe to ``Discovery.topic(fetched_url)``: the ``rel=self`` URL when one
  is advertised, which may differ from the fetched URL (websub.rocks 200).
* On a 307/308 from the hub, re-POST the very same form to
  ``HubResponse.redirect_to`` and pass ``redirects_followed + 1`` next time;
  remember the hub URL that finally accepted (for renewals and unsubscribe).
* Answer the verification GET with ``IntentDecision.status``, ``.body`` and
  ``.headers`` verbatim (a safe media type plus ``nosniff``), after recording
  ``new_state`` / ``lease_seconds`` / ``lease_expires_at`` when they are set.
* ``IntentDecision.lease_seconds`` is ``None`` when the hub sent no lease;
  schedule the renewal with ``ASSUMED_LEASE_SECONDS`` then.
* Look a delivery up by the callback token in the URL only, never by the
  ``Link`` headers of the POST.  Use the exact raw request body for the HMAC.
* Send ``hub.secret`` only to ``https`` hubs (it travels in clear otherwise);
  :func:`feedstream.websub.machine.may_send_secret` is the rule.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from feedstream.core.backoff import backoff_delay
from feedstream.core.signatures import SignatureResult, verify_signature
from feedstream.core.times import parse_retry_after
from feedstream.websub.discovery import http_url

__all__ = [
    "ASSUMED_LEASE_SECONDS",
    "DEFAULT_LEASE_SECONDS",
    "MAX_CHALLENGE_LENGTH",
    "MAX_HUB_REDIRECTS",
    "MAX_LEASE_SECONDS",
    "MAX_SECRET_BYTES",
    "TRANSITIONS",
    "DeliveryDecision",
    "HubOutcome",
    "HubResponse",
    "IntentDecision",
    "Mode",
    "SubscriptionRecord",
    "SubscriptionState",
    "can_transition",
    "check_delivery",
    "classify_hub_response",
    "expected_mode",
    "new_callback_token",
    "new_secret",
    "parse_lease_seconds",
    "renewal_time",
    "retry_delay",
    "subscription_form",
    "verify_intent",
]

# --------------------------------------------------------------------------
# Limits and defaults
# --------------------------------------------------------------------------

MAX_HUB_REDIRECTS = 5
"""How many 307/308 answers from hubs are followed for one subscription request."""

MAX_SECRET_BYTES = 199
"""``hub.secret`` MUST be shorter than 200 bytes."""

MAX_CHALLENGE_LENGTH = 1024
"""Longer ``hub.challenge`` values are refused (the spec asks to limit them)."""

MAX_LEASE_SECONDS = 365 * 86_400
"""Granted leases are clamped to this (hubs must not grant perpetual leases)."""

DEFAULT_LEASE_SECONDS = 10 * 86_400
"""A sensible ``hub.lease_seconds`` to request (the spec's suggested default)."""

ASSUMED_LEASE_SECONDS = 86_400
"""Lease to plan renewals with when the hub's verification carried none."""

_MAX_REASON_CHARS = 300
_RENEWAL_FRACTION = 0.80
_RENEWAL_JITTER_FRACTION = 0.05
_MIN_RENEWAL_FRACTION = 0.50
_RENEWAL_HEADROOM_SECONDS = 60.0

# --------------------------------------------------------------------------
# State model
# --------------------------------------------------------------------------


class SubscriptionState(StrEnum):
    """Where one (hub, topic, callback) subscription stands, as stored by the shell."""

    NONE = "none"
    PENDING = "pending"
    ACTIVE = "active"
    FAILED = "failed"
    DENIED = "denied"
    UNSUBSCRIBING = "unsubscribing"


class Mode(StrEnum):
    """``hub.mode`` of a subscription request or of a verification of intent."""

    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


_S = SubscriptionState

TRANSITIONS: Mapping[SubscriptionState, frozenset[SubscriptionState]] = {
    _S.NONE: frozenset({_S.PENDING}),
    _S.PENDING: frozenset({_S.ACTIVE, _S.FAILED, _S.DENIED, _S.UNSUBSCRIBING, _S.NONE}),
    _S.ACTIVE: frozenset({_S.ACTIVE, _S.PENDING, _S.FAILED, _S.DENIED, _S.UNSUBSCRIBING}),
    _S.UNSUBSCRIBING: frozenset({_S.NONE, _S.ACTIVE, _S.PENDING, _S.DENIED}),
    _S.FAILED: frozenset({_S.PENDING, _S.DENIED, _S.NONE}),
    _S.DENIED: frozenset({_S.PENDING, _S.NONE}),
}
"""Allowed state changes; see the module docstring for what triggers each."""


def can_transition(old: SubscriptionState, new: SubscriptionState) -> bool:
    """Tell whether moving a subscription from ``old`` to ``new`` is allowed."""
    return new in TRANSITIONS[old]


def expected_mode(state: SubscriptionState) -> Mode | None:
    """The ``hub.mode`` a verification may carry in ``state``, or ``None`` if none may.

    A pending or active subscription (an active one may be renewing) accepts a
    ``subscribe`` verification; an unsubscribing one accepts ``unsubscribe``.
    """
    if state in (_S.PENDING, _S.ACTIVE):
        return Mode.SUBSCRIBE
    if state is _S.UNSUBSCRIBING:
        return Mode.UNSUBSCRIBE
    return None


# --------------------------------------------------------------------------
# Small shared helpers
# --------------------------------------------------------------------------

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


def _clean_text(value: str, limit: int = _MAX_REASON_CHARS) -> str:
    """Make untrusted text safe for logs: no control characters, bounded length."""
    return _CONTROL_CHARS.sub(" ", value[: limit * 2]).strip()[:limit]


# --------------------------------------------------------------------------
# 1. Subscription request and the hub's answer
# --------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh ``hub.secret``: 256 random bits as 43 URL-safe characters."""
    return secrets.token_urlsafe(32)


def new_callback_token() -> str:
    """A fresh unguessable callback path token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def subscription_form(
    mode: Mode | str,
    callback_url: str,
    topic_url: str,
    *,
    lease_seconds: int | None = None,
    secret: str | None = None,
) -> dict[str, str]:
    """Form fields for the ``application/x-www-form-urlencoded`` POST to the hub.

    ``lease_seconds`` and ``secret`` are only sent with ``subscribe``.  Raises
    ``ValueError`` on an unknown mode, a non-http(s) callback or topic, a
    non-positive lease, or a secret that is empty or not under 200 bytes.
    """
    mode = Mode(mode)
    for label, url in (("callback", callback_url), ("topic", topic_url)):
        if http_url(url, "") != url:
            raise ValueError(f"hub.{label} must be an absolute http(s) URL: {url!r}")
    form = {"hub.callback": callback_url, "hub.mode": mode.value, "hub.topic": topic_url}
    if mode is Mode.UNSUBSCRIBE:
        return form
    if lease_seconds is not None:
        if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, int):
            raise ValueError("hub.lease_seconds must be an int")
        if lease_seconds <= 0:
            raise ValueError("hub.lease_seconds must be positive")
        form["hub.lease_seconds"] = str(lease_seconds)
    if secret is not None:
        size = len(secret.encode("utf-8"))
        if size == 0 or size > MAX_SECRET_BYTES:
            raise ValueError("hub.secret must be 1 to 199 bytes long")
        form["hub.secret"] = secret
    return form


class HubOutcome(StrEnum):
    """What the shell does after the hub answered the subscription POST."""

    ACCEPTED = "accepted"
    """2xx (normally 202): wait for the verification of intent."""
    REDIRECT = "redirect"
    """307/308: POST the same form again to ``redirect_to``."""
    FAILED = "failed"
    """Anything else: the request failed, see ``reason`` and ``retryable``."""


@dataclass(frozen=True)
class HubResponse:
    """Classification of a hub's answer to a subscribe/unsubscribe POST."""

    outcome: HubOutcome
    status: int
    reason: str = ""
    redirect_to: str | None = None
    permanent: bool = False
    """For redirects: 308, so the stored hub URL may be replaced."""
    retryable: bool = False
    """For failures: worth retrying later (5xx, 408, 425, 429)."""
    retry_after: float | None = None
    """Seconds from the hub's ``Retry-After`` (delta-seconds form only)."""


_RETRYABLE_STATUSES = frozenset({408, 425, 429})


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in its delta-seconds form only (a hub's date is not trusted against our
    clock); ten digits or more are ignored, as they always were here, where
    :func:`~feedstream.core.times.parse_retry_after` would read them as 10**9 seconds."""
    if value is not None and len(value.strip()) > 9:
        return None
    return parse_retry_after(value, None)


def classify_hub_response(
    status: int,
    hub_url: str,
    location: str | None = None,
    *,
    redirects_followed: int = 0,
    body: bytes | str = b"",
    retry_after: str | None = None,
) -> HubResponse:
    """Classify the hub's answer to a subscription POST made to ``hub_url``.

    2xx is accepted.  307 and 308 are redirects to ``location`` (resolved
    against ``hub_url``, http(s) only) while ``redirects_followed`` is below
    ``MAX_HUB_REDIRECTS``; the shell re-POSTs the same form there.  Any other
    status, including 301/302/303 (which would turn the POST into a GET), is a
    failure whose ``reason`` quotes the status and the start of ``body``.
    """
    if 200 <= status < 300:
        return HubResponse(HubOutcome.ACCEPTED, status)
    if status in (307, 308):
        if redirects_followed >= MAX_HUB_REDIRECTS:
            reason = f"hub redirected more than {MAX_HUB_REDIRECTS} times"
            return HubResponse(HubOutcome.FAILED, status, reason)
        target = http_url(location, hub_url) if location else None
        if target is None:
            reason = f"hub answered {status} without a usable http(s) Location"
            return HubResponse(HubOutcome.FAILED, status, reason)
        return HubResponse(
            HubOutcome.REDIRECT, status, f"hub moved to {target}", target, status == 308
        )
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    detail = _clean_text(text)
    reason = f"hub answered {status}" + (f": {detail}" if detail else "")
    if 300 <= status < 400:
        reason += " (only 307/308 redirects are followed for a POST)"
    retryable = status >= 500 or status in _RETRYABLE_STATUSES
    return HubResponse(
        HubOutcome.FAILED,
        status,
        reason,
        retryable=retryable,
        retry_after=_retry_after_seconds(retry_after) if retryable else None,
    )


# --------------------------------------------------------------------------
# 2. Verification of intent and denial
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionRecord:
    """What the shell stored for one callback token: the topic and the state."""

    topic: str
    state: SubscriptionState

    @property
    def expected_mode(self) -> Mode | None:
        """The ``hub.mode`` a verification may carry now (see ``expected_mode``)."""
        return expected_mode(self.state)


_SAFE_RESPONSE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "text/plain; charset=utf-8"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
)


@dataclass(frozen=True)
class IntentDecision:
    """How to answer a verification (or denial) GET, and what to record.

    ``new_state`` is ``None`` when nothing is to be recorded.  For a verified
    subscribe, ``lease_seconds`` is the granted lease (``None`` if the hub sent
    none) and ``lease_expires_at`` is ``now + lease_seconds``.  ``reason`` is
    for logs (for a denial: the hub's ``hub.reason``).
    """

    status: int
    body: str
    reason: str
    new_state: SubscriptionState | None = None
    lease_seconds: int | None = None
    lease_expires_at: float | None = None
    headers: tuple[tuple[str, str], ...] = _SAFE_RESPONSE_HEADERS

    @property
    def accepted(self) -> bool:
        """True when the answer is a 2xx."""
        return 200 <= self.status < 300


QueryLike = Mapping[str, str] | Mapping[str, list[str]] | Iterable[tuple[str, str]]
"""Query parameters: a mapping, a multi-dict (with ``getlist``), ``parse_qs``
output, or (name, value) pairs."""


def _query_values(query: QueryLike, name: str) -> list[str]:
    getlist = getattr(query, "getlist", None)
    if callable(getlist):
        return [str(v) for v in getlist(name)]
    if isinstance(query, Mapping):
        value = query.get(name)
        if value is None:
            return []
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        return [str(value)]
    return [str(v) for k, v in query if k == name]


class _BadQuery(ValueError):
    pass


def _one(query: QueryLike, name: str) -> str | None:
    """The single value of ``name``; ``None`` if absent; ``_BadQuery`` if conflicting."""
    values = _query_values(query, name)
    if not values:
        return None
    if any(v != values[0] for v in values[1:]):
        raise _BadQuery(f"conflicting values for {name}")
    return values[0]


_LEASE_DIGITS = re.compile(r"[0-9]+")


def parse_lease_seconds(raw: str | None) -> int | None:
    """Parse ``hub.lease_seconds``: ``None`` if absent or blank, else a clamped int.

    Values above ``MAX_LEASE_SECONDS`` are clamped down to it.  Raises
    ``ValueError`` for anything but ASCII digits, or for zero.
    """
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    if not _LEASE_DIGITS.fullmatch(raw):
        raise ValueError(f"hub.lease_seconds is not a positive integer: {raw[:40]!r}")
    digits = raw.lstrip("0")
    if not digits:
        raise ValueError("hub.lease_seconds is zero")
    if len(digits) > len(str(MAX_LEASE_SECONDS)):
        return MAX_LEASE_SECONDS
    return min(int(digits), MAX_LEASE_SECONDS)


_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")
_PERCENT_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normalize_topic(url: str) -> str:
    """Decode percent-escaped unreserved characters and upper-case the other escapes.

    Hubs must decode non-reserved characters in ``hub.topic``, so ``%7E`` and
    ``~`` name the same topic; reserved escapes such as ``%2F`` stay distinct.
    """

    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _PERCENT_ESCAPE.sub(fix, url)


def _refuse(status: int, reason: str) -> IntentDecision:
    return IntentDecision(status, reason, reason)


def verify_intent(
    query: QueryLike,
    subscription: SubscriptionRecord | None,
    now: float,
) -> IntentDecision:
    """Decide the answer to a hub's GET on a callback URL (sections 5.2 and 5.3).

    ``subscription`` is what is stored for the callback token, or ``None`` if
    the token is unknown.  The challenge is echoed (200, body = ``hub.challenge``
    exactly) only when ``hub.topic`` equals the stored topic (up to escaping
    of unreserved characters) and ``hub.mode``
    is the one the state expects (``expected_mode``).  A wrong topic, mode or
    state, or an unknown callback, gets 404 (websub.rocks 205).  A malformed
    request (missing or conflicting parameters, a missing, over-long or
    non-printable challenge, a bad lease) gets 400.  ``hub.mode=denied`` for
    the right topic is acknowledged with 200 and moves the subscription to
    ``denied`` (or leaves ``none`` alone), keeping ``hub.reason``.
    """
    if subscription is None:
        return _refuse(404, "unknown callback")
    try:
        mode = _one(query, "hub.mode")
        topic = _one(query, "hub.topic")
        challenge = _one(query, "hub.challenge")
        raw_lease = _one(query, "hub.lease_seconds")
        hub_reason = _one(query, "hub.reason")
    except _BadQuery as exc:
        return _refuse(400, str(exc))
    if not mode:
        return _refuse(400, "missing hub.mode")
    if not topic:
        return _refuse(400, "missing hub.topic")
    if _normalize_topic(topic) != _normalize_topic(subscription.topic):
        return _refuse(404, "hub.topic does not match the subscription")
    state = subscription.state

    if mode == "denied":
        reason = _clean_text(hub_reason or "") or "denied by hub"
        new_state = None if state in (_S.NONE, _S.DENIED) else _S.DENIED
        return IntentDecision(200, "", reason, new_state)

    if mode not in (Mode.SUBSCRIBE, Mode.UNSUBSCRIBE):
        return _refuse(400, f"unknown hub.mode {_clean_text(mode, 40)!r}")
    if not challenge:
        return _refuse(400, "missing hub.challenge")
    if len(challenge) > MAX_CHALLENGE_LENGTH or not _PRINTABLE_ASCII.fullmatch(challenge):
        return _refuse(400, "hub.challenge is too long or not printable ASCII")
    if expected_mode(state) != mode:
        return _refuse(404, f"no {mode} is wanted for a subscription in state {state}")

    if mode == Mode.UNSUBSCRIBE:  # hub.lease_seconds MUST be ignored here
        return IntentDecision(200, challenge, "unsubscribe verified", _S.NONE)
    try:
        lease = parse_lease_seconds(raw_lease)
    except ValueError as exc:
        return _refuse(400, str(exc))
    expires = now + lease if lease is not None else None
    return IntentDecision(200, challenge, "subscribe verified", _S.ACTIVE, lease, expires)


# --------------------------------------------------------------------------
# 3. Content distribution
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryDecision:
    """How to answer a content distribution POST, and whether to use its body."""

    status: int
    process: bool
    reason: str
    signature: SignatureResult | None = None


_RECEIVING_STATES = frozenset({_S.PENDING, _S.ACTIVE, _S.UNSUBSCRIBING})


def check_delivery(
    state: SubscriptionState | None,
    secret: bytes | str | None,
    signature_header: str | None,
    body: bytes,
) -> DeliveryDecision:
    """Decide on a content distribution POST to a callback.

    ``state`` is the stored state for the callback token (``None`` when the
    token is unknown: 404).  A subscription that is over (``none``, ``failed``,
    ``denied``) gets 410 Gone, which lets the hub drop it.  Otherwise the
    signature decides (see ``SignatureResult.http_status``); only a valid one
    sets ``process``.
    """
    if state is None:
        return DeliveryDecision(404, False, "unknown callback")
    if state not in _RECEIVING_STATES:
        return DeliveryDecision(410, False, f"subscription is {state}")
    result = verify_signature(secret, signature_header, body)
    return DeliveryDecision(result.http_status, result.valid, f"signature {result.status}", result)


# --------------------------------------------------------------------------
# 4. Leases, renewals and retries
# --------------------------------------------------------------------------


def _check_jitter(jitter: float) -> None:
    if not 0.0 <= jitter < 1.0:  # also rejects NaN
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")


def renewal_time(granted_at: float, lease_seconds: int, jitter: float) -> float:
    """When to renew a lease granted at ``granted_at`` for ``lease_seconds``.

    Normally at 80 % of the lease, moved earlier by up to 5 % of it with
    ``jitter`` in ``[0, 1)``.  Short leases also keep a minute of headroom for
    the round trip, but the renewal never comes before half of the lease: a
    10 s lease renews after 5 s.  The result is always strictly between
    ``granted_at`` and ``granted_at + lease_seconds``.
    """
    _check_jitter(jitter)
    if lease_seconds <= 0:
        raise ValueError("lease_seconds must be positive")
    fraction = _RENEWAL_FRACTION - _RENEWAL_JITTER_FRACTION * jitter
    offset = min(lease_seconds * fraction, lease_seconds - _RENEWAL_HEADROOM_SECONDS)
    offset = max(offset, lease_seconds * _MIN_RENEWAL_FRACTION)
    return granted_at + offset


def retry_delay(
    attempt: int,
    jitter: float,
    *,
    base: float = 60.0,
    cap: float = 6 * 3600.0,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before retrying after ``attempt`` consecutive failures.

    Exponential (``base * 2 ** (attempt - 1)``) up to ``cap``, then scaled into
    ``[50 %, 100 %]`` of that by ``jitter`` in ``[0, 1)``.  A hub's
    ``retry_after`` is honoured when it asks for longer (but never beyond
    ``cap``).
    """
    _check_jitter(jitter)
    if attempt < 1:
        raise ValueError("attempt counts failures and starts at 1")
    if not (base > 0 and cap >= base and math.isfinite(cap)):
        raise ValueError("need 0 < base <= cap < inf")
    delay = backoff_delay(attempt, jitter, base=base, cap=cap, spread=(1.0, 0.5), max_doublings=64)
    if retry_after is not None and math.isfinite(retry_after):
        delay = max(delay, min(retry_after, cap))
    return delay
