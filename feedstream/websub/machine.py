"""The lifecycle of one WebSub subscription, as a pure state machine (in the style of h11).

Every decision about a subscription is taken here: when to subscribe, renew, retry and give
up; which form goes to the hub (``hub.secret`` only over https); what a verification, a
denial, a push or a poll means for the subscription and for push health. The trio shell
(:mod:`feedstream.websub.subscriber`) feeds in what happened and performs what comes out:

    sub, actions = step(sub, event, now)

``sub`` is a frozen :class:`Sub` (or ``None`` when the feed has no subscription yet),
``event`` one of the event classes below, ``now`` the wall clock in Unix seconds. ``actions``
is a list of :class:`Save`, :class:`Send`, :class:`Delete`, :class:`Forget` and
:class:`AwaitVerification`, to be performed in order. An event that makes no sense in the
subscription's state raises :class:`InvalidTransition` (like h11's ``LocalProtocolError``),
and every state change is checked against :data:`~feedstream.websub.protocol.TRANSITIONS`.
:func:`wakeup` says when the shell should send :class:`Due` next.

No I/O, no clock, no global randomness: jitter comes in with the events, and the only random
draws are fresh callback tokens and secrets (:mod:`secrets`).

The state type: :class:`SubscriptionState` is a ``StrEnum`` kept in
:mod:`feedstream.websub.protocol` (the verification rules need it too). The stored row,
:class:`feedstream.log.store.Subscription`, keeps ``state`` as the plain ``str`` value,
because ``log`` sits below ``websub`` and may not import it; the shell converts at the
boundary (:meth:`Sub.from_row` / :meth:`Sub.row_values`), so inside websub the state is
always the enum and a bad stored value fails loudly on load.

Events
======

``Due(wanted, jitter)``
    The time :func:`wakeup` named has come, or discovery changed its mind
    (``wanted`` says what the config and discovery want now). Covers the first subscription,
    a verification that never came, a retry, a renewal, an expired lease, and a move to
    another hub or topic.
``HubAnswered(mode, answer, endpoint, jitter)``
    The hub answered a request (after the shell followed 307/308 redirects).
``Verified(lease_seconds, lease_expires_at)`` / ``UnsubscribeVerified()`` / ``Denied(reason)``
    A verification of intent the shell accepted (see :func:`event_for`).
``FeedRemoved()`` / ``Abandon()``
    The feed left the config / the wait for an unsubscribe verification is over (a
    subscription that is neither unsubscribing nor denied any more is left alone).
``Pushed()`` / ``Polled(new_entries, fetched_at)``
    A delivery was ingested / a poll found entries (push health).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

from feedstream.websub.protocol import (
    ASSUMED_LEASE_SECONDS,
    HubOutcome,
    HubResponse,
    IntentDecision,
    Mode,
    SubscriptionState,
    can_transition,
    new_callback_token,
    new_secret,
    renewal_time,
    retry_delay,
    subscription_form,
)

__all__ = [
    "LOOPBACK_HOSTS",
    "VERIFY_TIMEOUT",
    "Abandon",
    "Action",
    "AwaitVerification",
    "Delete",
    "Denied",
    "Due",
    "Event",
    "FeedRemoved",
    "Forget",
    "HubAnswered",
    "InvalidTransition",
    "Polled",
    "Pushed",
    "Save",
    "Send",
    "Sub",
    "SubscriptionState",
    "Target",
    "UnsubscribeVerified",
    "Verified",
    "Wanted",
    "event_for",
    "may_send_secret",
    "push_is_live",
    "step",
    "wakeup",
]

VERIFY_TIMEOUT = 300.0
"""Seconds a hub gets to verify a request it accepted."""

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
"""Plain-http hubs on these hosts still get ``hub.secret``: the secret never leaves the machine."""

NEVER_VERIFIED = "the hub accepted but never verified the request"
LEASE_EXPIRED = "lease expired before a renewal was verified"

_S = SubscriptionState


class InvalidTransition(RuntimeError):
    """An event arrived that the subscription's state does not allow (a bug in the caller)."""


def may_send_secret(url: str) -> bool:
    """Whether ``hub.secret`` may travel to *url*: https, or plain http to a loopback host."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS)


# -- the state ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The hub and topic discovery named for a feed."""

    hub: str
    topic: str


@dataclass(frozen=True, slots=True)
class Wanted:
    """What the config and discovery want for one feed right now.

    ``discovered`` is False until discovery ran since the start (the subscription's own hub
    and topic are kept meanwhile); then ``target`` is what it found, ``None`` for no hub.
    ``lease_seconds`` is the lease to ask for (``None``: the hub's default).
    """

    feed_id: str
    lease_seconds: int | None = None
    target: Target | None = None
    discovered: bool = False


@dataclass(frozen=True, slots=True)
class Sub:
    """One subscription as the machine sees it: the stored row with a typed state.

    ``retired`` marks a subscription replaced by another one for the same feed (the hub or
    topic moved): it is unsubscribed quietly, and never saved or deleted, since its feed's
    row now belongs to its successor.
    """

    feed_id: str
    token: str
    hub: str
    endpoint: str
    topic: str
    secret: str | None
    state: SubscriptionState
    lease_seconds: int | None = None
    lease_expires: float | None = None
    verified_at: float | None = None
    requested_at: float | None = None
    retry_at: float | None = None
    attempts: int = 0
    last_push: float | None = None
    push_healthy: bool = True
    error: str | None = None
    retired: bool = False

    @classmethod
    def from_row(cls, row: Any) -> Sub:
        """Read a stored row (any object with the row's attributes; ``state`` a str)."""
        values = {f.name: getattr(row, f.name) for f in fields(cls) if f.name != "retired"}
        values["state"] = SubscriptionState(values["state"])
        return cls(**values)

    def row_values(self) -> Mapping[str, Any]:
        """The stored row's fields, ``state`` as its plain str value."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "retired"}
        values["state"] = self.state.value
        return values


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Due:
    wanted: Wanted
    jitter: float = 0.5  # in [0, 1), for the retry delay if this turns out to be a failure


@dataclass(frozen=True, slots=True)
class HubAnswered:
    mode: Mode
    answer: HubResponse
    endpoint: str  # where later requests go: the old endpoint, or where a 308 moved it
    jitter: float = 0.5


@dataclass(frozen=True, slots=True)
class Verified:
    lease_seconds: int | None
    lease_expires_at: float | None


@dataclass(frozen=True, slots=True)
class UnsubscribeVerified:
    pass


@dataclass(frozen=True, slots=True)
class Denied:
    reason: str


@dataclass(frozen=True, slots=True)
class FeedRemoved:
    pass


@dataclass(frozen=True, slots=True)
class Abandon:
    pass


@dataclass(frozen=True, slots=True)
class Pushed:
    pass


@dataclass(frozen=True, slots=True)
class Polled:
    new_entries: int
    fetched_at: float


Event = (
    Due
    | HubAnswered
    | Verified
    | UnsubscribeVerified
    | Denied
    | FeedRemoved
    | Abandon
    | Pushed
    | Polled
)


def event_for(decision: IntentDecision) -> Verified | UnsubscribeVerified | Denied | None:
    """The event a verification decision of :func:`~feedstream.websub.protocol.verify_intent`
    stands for, or ``None`` when it changes nothing (a refusal)."""
    if decision.new_state is _S.ACTIVE:
        return Verified(decision.lease_seconds, decision.lease_expires_at)
    if decision.new_state is _S.NONE:
        return UnsubscribeVerified()
    if decision.new_state is _S.DENIED:
        return Denied(decision.reason)
    return None


# -- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Save:
    """Write the subscription (before any request that the hub may verify at once)."""

    sub: Sub


@dataclass(frozen=True, slots=True)
class Send:
    """POST a request to ``sub.endpoint``; feed the answer back as :class:`HubAnswered`.

    For a retired subscription the shell sends it in the background.
    """

    sub: Sub
    mode: Mode
    lease_seconds: int | None = None
    secret: str | None = None

    def form(self, callback_url: str) -> dict[str, str]:
        return subscription_form(
            self.mode,
            callback_url,
            self.sub.topic,
            lease_seconds=self.lease_seconds,
            secret=self.secret,
        )

    def may_follow(self, url: str) -> bool:
        """Whether a redirect to *url* may be followed with the same form."""
        return self.secret is None or may_send_secret(url)


@dataclass(frozen=True, slots=True)
class Delete:
    """Forget the subscription: its callback token and its stored row."""

    sub: Sub


@dataclass(frozen=True, slots=True)
class Forget:
    """Forget a retired subscription's callback token (it has no row of its own)."""

    sub: Sub


@dataclass(frozen=True, slots=True)
class AwaitVerification:
    """Wait for the hub's unsubscribe verification until *until*, then send :class:`Abandon`
    (if the subscription is still there)."""

    sub: Sub
    until: float


Action = Save | Send | Delete | Forget | AwaitVerification


# -- queries -----------------------------------------------------------------------------------


def push_is_live(sub: Sub | None) -> bool:
    """Whether pushes can be trusted to bring new entries (the poller then slows down)."""
    return sub is not None and sub.state is _S.ACTIVE and sub.push_healthy


def _renewal_jitter(token: str) -> float:
    """A jitter fixed per subscription, so that the renewal time survives a restart."""
    return random.Random(token).random()


def _moved(sub: Sub, target: Target | None) -> bool:
    return target is not None and (target.hub, target.topic) != (sub.hub, sub.topic)


def wakeup(sub: Sub | None, wanted: Wanted, now: float) -> float | None:
    """When to send :class:`Due` for this feed (``None``: wait for news)."""
    target = wanted.target
    if sub is None:
        return now if target is not None else None
    if _moved(sub, target):
        return now
    if wanted.discovered and target is None:
        return None  # the feed no longer names a hub: let the subscription lapse
    state = sub.state
    if state is _S.PENDING:
        return (sub.requested_at or 0.0) + VERIFY_TIMEOUT
    if state is _S.FAILED:
        return sub.retry_at if sub.retry_at is not None else now
    if state is _S.ACTIVE:
        if sub.retry_at is not None:  # a renewal failed or went unverified
            return min(sub.retry_at, sub.lease_expires or sub.retry_at)
        lease = sub.lease_seconds or ASSUMED_LEASE_SECONDS
        granted = sub.verified_at if sub.verified_at is not None else now
        return renewal_time(granted, lease, _renewal_jitter(sub.token))
    if state in (_S.NONE, _S.UNSUBSCRIBING):
        return now
    return None  # denied: wait for discovery to name another hub or topic


# -- the transitions ---------------------------------------------------------------------------


def _move(sub: Sub, state: SubscriptionState, **changes: Any) -> Sub:
    if state is not sub.state and not can_transition(sub.state, state):
        raise InvalidTransition(f"subscription of {sub.feed_id}: {sub.state} -> {state}")
    return replace(sub, state=state, **changes)


def _failed(sub: Sub, reason: str, now: float, jitter: float, retry_after: float | None) -> Sub:
    attempts = sub.attempts + 1
    delay = retry_delay(attempts, jitter, retry_after=retry_after)
    state = _S.ACTIVE if sub.state is _S.ACTIVE else _S.FAILED
    return _move(sub, state, attempts=attempts, error=reason, retry_at=now + delay)


def _subscribe(old: Sub | None, wanted: Wanted, target: Target, now: float) -> list[Action]:
    if old is None:
        secret = new_secret() if may_send_secret(target.hub) else None
        sub = Sub(
            feed_id=wanted.feed_id,
            token=new_callback_token(),
            hub=target.hub,
            endpoint=target.hub,
            topic=target.topic,
            secret=secret,
            state=_S.PENDING,
        )
    else:
        renewing = old.state is _S.ACTIVE
        sub = old if renewing else _move(old, _S.PENDING)
    sub = replace(sub, requested_at=now, retry_at=None)
    if sub.secret is not None and not may_send_secret(sub.endpoint):
        sub = replace(sub, secret=None)  # never in clear: go unsigned instead
    return [Save(sub), Send(sub, Mode.SUBSCRIBE, wanted.lease_seconds, sub.secret)]


def _due(sub: Sub | None, event: Due, now: float) -> tuple[Sub | None, list[Action]]:
    wanted = event.wanted
    if sub is None:
        if wanted.target is None:
            return None, []
        first = _subscribe(None, wanted, wanted.target, now)
        return _saved(first), first
    if sub.state is _S.PENDING:
        sub = _failed(sub, NEVER_VERIFIED, now, event.jitter, None)
        return sub, [Save(sub)]
    expired = sub.lease_expires is not None and now >= sub.lease_expires
    if expired and sub.state in (_S.ACTIVE, _S.FAILED):
        sub = _move(sub, _S.FAILED, error=LEASE_EXPIRED)
    target = wanted.target or Target(sub.hub, sub.topic)
    actions: list[Action] = []
    old: Sub | None = sub
    if _moved(sub, target):
        if sub.state is _S.ACTIVE:  # tell the old hub, quietly and in the background
            retired = _move(sub, _S.UNSUBSCRIBING, retired=True)
            actions.append(Send(retired, Mode.UNSUBSCRIBE))
        old = None
    actions += _subscribe(old, wanted, target, now)
    return _saved(actions), actions


def _saved(actions: list[Action]) -> Sub | None:
    subs = [a.sub for a in actions if isinstance(a, Save)]
    return subs[-1] if subs else None


def _answered(sub: Sub, event: HubAnswered, now: float) -> tuple[Sub | None, list[Action]]:
    answer = event.answer
    accepted = answer.outcome is HubOutcome.ACCEPTED
    if event.mode is Mode.UNSUBSCRIBE:
        if accepted and sub.state is not _S.DENIED:
            return sub, [AwaitVerification(sub, now + VERIFY_TIMEOUT)]
        return _gone(sub)
    if sub.state is _S.DENIED:
        return sub, []  # the hub denied while it answered: the denial stands
    sub = replace(sub, endpoint=event.endpoint)
    if not accepted:
        sub = _failed(sub, answer.reason, now, event.jitter, answer.retry_after)
        return sub, [Save(sub)]
    requested = sub.requested_at or 0.0
    verified = sub.verified_at is not None and sub.verified_at >= requested
    if sub.state is _S.ACTIVE and not verified:  # a renewal: if no verification comes, retry
        sub = replace(sub, retry_at=requested + VERIFY_TIMEOUT)
    return sub, [Save(sub)]


def _removed(sub: Sub) -> tuple[Sub | None, list[Action]]:
    if sub.state in (_S.ACTIVE, _S.PENDING, _S.UNSUBSCRIBING):
        sub = _move(sub, _S.UNSUBSCRIBING)
        return sub, [Save(sub), Send(sub, Mode.UNSUBSCRIBE)]
    return None, [Delete(sub)]


def _gone(sub: Sub) -> tuple[Sub | None, list[Action]]:
    return None, [Forget(sub) if sub.retired else Delete(sub)]


_ALLOWED: Mapping[type, frozenset[SubscriptionState]] = {
    Verified: frozenset({_S.PENDING, _S.ACTIVE}),
    UnsubscribeVerified: frozenset({_S.UNSUBSCRIBING}),
    Denied: frozenset({_S.PENDING, _S.ACTIVE, _S.FAILED, _S.UNSUBSCRIBING}),
}
"""The states in which each event may arrive (events not named here: any state)."""

_ANSWER_STATES: Mapping[Mode, frozenset[SubscriptionState]] = {
    Mode.SUBSCRIBE: frozenset({_S.PENDING, _S.ACTIVE, _S.DENIED}),
    Mode.UNSUBSCRIBE: frozenset({_S.UNSUBSCRIBING, _S.DENIED}),
}
"""The states in which a hub's answer to each kind of request may arrive (a denial may come
while the request is in flight)."""


def step(sub: Sub | None, event: Event, now: float) -> tuple[Sub | None, list[Action]]:
    """Apply *event* to *sub* at *now*: the new subscription (``None``: it is gone) and the
    actions to perform, in order. Raises :class:`InvalidTransition` for an event the state
    does not allow."""
    if isinstance(event, Due):
        return _due(sub, event, now)
    if sub is None:
        raise InvalidTransition(f"{type(event).__name__} for a feed without a subscription")
    allowed = _ALLOWED.get(type(event))
    if allowed is not None and sub.state not in allowed:
        raise InvalidTransition(
            f"{type(event).__name__} for the subscription of {sub.feed_id} in state {sub.state}"
        )
    if isinstance(event, HubAnswered):
        if sub.state not in _ANSWER_STATES[event.mode]:
            raise InvalidTransition(
                f"{event.mode} answer for the subscription of {sub.feed_id} in state {sub.state}"
            )
        return _answered(sub, event, now)
    if isinstance(event, Verified):
        sub = _move(
            sub,
            _S.ACTIVE,
            lease_seconds=event.lease_seconds,
            lease_expires=event.lease_expires_at or now + ASSUMED_LEASE_SECONDS,
            verified_at=now,
            retry_at=None,
            attempts=0,
            error=None,
        )
        return sub, [Save(sub)]
    if isinstance(event, Denied):
        if sub.retired:
            return _gone(sub)
        sub = _move(sub, _S.DENIED, error=f"denied by the hub: {event.reason}")
        return sub, [Save(sub)]
    if isinstance(event, Abandon) and sub.state not in (_S.UNSUBSCRIBING, _S.DENIED):
        return sub, []  # the feed came back and subscribes again with this callback
    if isinstance(event, (UnsubscribeVerified, Abandon)):
        return _gone(sub)
    if isinstance(event, FeedRemoved):
        return _removed(sub)
    if isinstance(event, Pushed):
        sub = replace(sub, last_push=now, push_healthy=True)
        return sub, [Save(sub)]
    # Polled: should push have brought these entries?  Only if the subscription was verified
    # before that fetch began: the poll that discovers the hub finds entries published before
    # anyone subscribed.
    verified_before = sub.verified_at is not None and sub.verified_at < event.fetched_at
    if event.new_entries and verified_before and push_is_live(sub):
        sub = replace(sub, push_healthy=False)
        return sub, [Save(sub)]
    return sub, []
