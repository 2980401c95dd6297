"""The WebSub subscription lifecycle at the pure level (feedstream.websub.machine).

Every security and lease rule is pinned here, without trio or HTTP: the secret never goes to
a plain-http hub, leases expire and are renewed before they do, failures back off, denials
stick, push health follows pushes and polls, and events a state does not allow are refused.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedstream.log.store import Subscription
from feedstream.websub import machine as m
from feedstream.websub.machine import (
    LEASE_EXPIRED,
    NEVER_VERIFIED,
    VERIFY_TIMEOUT,
    Abandon,
    AwaitVerification,
    Delete,
    Denied,
    Due,
    FeedRemoved,
    Forget,
    HubAnswered,
    InvalidTransition,
    Polled,
    Pushed,
    Save,
    Send,
    Sub,
    Target,
    UnsubscribeVerified,
    Verified,
    Wanted,
    event_for,
    may_send_secret,
    push_is_live,
    step,
    wakeup,
)
from feedstream.websub.protocol import (
    ASSUMED_LEASE_SECONDS,
    TRANSITIONS,
    HubOutcome,
    HubResponse,
    IntentDecision,
    Mode,
    SubscriptionState,
    renewal_time,
    retry_delay,
)

S = SubscriptionState
NOW = 1_700_000_000.0
HUB = "https://hub.test/"
TOPIC = "https://pub.test/feed"
CALLBACK = "https://me.test/websub/tok"
TARGET = Target(HUB, TOPIC)
WANTED = Wanted("f", 1000, TARGET, discovered=True)
ACCEPTED = HubResponse(HubOutcome.ACCEPTED, 202)
REFUSED = HubResponse(HubOutcome.FAILED, 500, "hub answered 500", retryable=True)


def make(state: S = S.ACTIVE, **changes: object) -> Sub:
    base = Sub(
        feed_id="f",
        token="tok",
        hub=HUB,
        endpoint=HUB,
        topic=TOPIC,
        secret="s3cret",
        state=state,
        lease_seconds=1000,
        lease_expires=NOW + 1000,
        verified_at=NOW,
        requested_at=NOW - 1,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def only_save(actions: list[m.Action]) -> Sub:
    assert len(actions) == 1 and isinstance(actions[0], Save)
    return actions[0].sub


def sends(actions: list[m.Action]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


# --------------------------------------------------------------------------
# Secrets: only over https (or to a hub on this very machine)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hub.test/", True),
        ("HTTPS://hub.test/", True),
        ("http://hub.test/", False),
        ("http://localhost:8000/hub", True),
        ("http://127.0.0.1/hub", True),
        ("http://[::1]:9/hub", True),
        ("http://127.0.0.2/hub", False),
        ("http://localhost.evil.test/", False),
        ("ftp://localhost/", False),
        ("https://hub.test:99999/", True),
        ("http://[::1/", False),
        ("", False),
    ],
)
def test_may_send_secret(url: str, allowed: bool) -> None:
    assert may_send_secret(url) is allowed


def test_first_subscription_to_an_https_hub_carries_a_secret() -> None:
    sub, actions = step(None, Due(WANTED), NOW)
    assert sub is not None and sub.state is S.PENDING
    assert sub.secret and len(sub.secret.encode()) < 200
    assert (sub.hub, sub.endpoint, sub.topic, sub.requested_at) == (HUB, HUB, TOPIC, NOW)
    assert len(sub.token) >= 43 and sub.retry_at is None and sub.attempts == 0
    save, send = actions
    assert save == Save(sub)
    assert send == Send(sub, Mode.SUBSCRIBE, 1000, sub.secret)
    form = send.form(CALLBACK)
    assert form["hub.secret"] == sub.secret and form["hub.lease_seconds"] == "1000"
    assert (form["hub.mode"], form["hub.topic"], form["hub.callback"]) == (
        "subscribe",
        TOPIC,
        CALLBACK,
    )


def test_secret_is_never_sent_to_a_plain_http_hub() -> None:
    wanted = replace(WANTED, target=Target("http://hub.test/", TOPIC))
    sub, actions = step(None, Due(wanted), NOW)
    assert sub is not None and sub.secret is None
    [send] = sends(actions)
    assert send.secret is None and "hub.secret" not in send.form(CALLBACK)


def test_loopback_http_hub_gets_a_secret() -> None:
    wanted = replace(WANTED, target=Target("http://127.0.0.1:8080/hub", TOPIC))
    sub, actions = step(None, Due(wanted), NOW)
    assert sub is not None and sub.secret is not None
    assert sends(actions)[0].form(CALLBACK)["hub.secret"] == sub.secret


def test_a_stored_secret_is_dropped_rather_than_sent_to_an_http_endpoint() -> None:
    stored = make(S.FAILED, endpoint="http://moved.test/hub", retry_at=NOW)
    sub, actions = step(stored, Due(WANTED), NOW)
    assert sub is not None and sub.secret is None
    [send] = sends(actions)
    assert send.secret is None and "hub.secret" not in send.form(CALLBACK)
    assert only_save(actions[:1]).secret is None


def test_redirects_with_a_secret_only_to_https() -> None:
    with_secret = Send(make(), Mode.SUBSCRIBE, 1000, "s3cret")
    assert with_secret.may_follow("https://elsewhere.test/")
    assert not with_secret.may_follow("http://elsewhere.test/")
    assert with_secret.may_follow("http://localhost/hub")
    without = Send(make(secret=None), Mode.SUBSCRIBE, 1000, None)
    assert without.may_follow("http://elsewhere.test/")


def test_unsubscribe_form_has_no_secret_and_no_lease() -> None:
    _, actions = step(make(), FeedRemoved(), NOW)
    [send] = sends(actions)
    assert send.mode is Mode.UNSUBSCRIBE and send.secret is None and send.lease_seconds is None
    form = send.form(CALLBACK)
    assert "hub.secret" not in form and "hub.lease_seconds" not in form
    assert form["hub.mode"] == "unsubscribe"


# --------------------------------------------------------------------------
# When to act: wakeup
# --------------------------------------------------------------------------


def test_wakeup_without_a_subscription() -> None:
    assert wakeup(None, Wanted("f"), NOW) is None  # discovery has not spoken
    assert wakeup(None, Wanted("f", discovered=True), NOW) is None  # no hub
    assert wakeup(None, WANTED, NOW) == NOW


def test_wakeup_when_the_hub_or_topic_moved_or_vanished() -> None:
    sub = make()
    assert wakeup(sub, replace(WANTED, target=Target("https://other.test/", TOPIC)), NOW) == NOW
    assert wakeup(sub, replace(WANTED, target=Target(HUB, TOPIC + "2")), NOW) == NOW
    assert wakeup(sub, Wanted("f", discovered=True), NOW) is None  # no hub: let it lapse
    assert wakeup(make(S.FAILED, retry_at=NOW + 5), Wanted("f", discovered=True), NOW) is None
    assert wakeup(make(S.FAILED, retry_at=NOW + 5), Wanted("f"), NOW) == NOW + 5


def test_wakeup_by_state() -> None:
    assert wakeup(make(S.PENDING, requested_at=NOW), WANTED, NOW + 1) == NOW + VERIFY_TIMEOUT
    assert wakeup(make(S.PENDING, requested_at=None), WANTED, NOW) == VERIFY_TIMEOUT
    assert wakeup(make(S.FAILED, retry_at=NOW + 60), WANTED, NOW) == NOW + 60
    assert wakeup(make(S.FAILED, retry_at=None), WANTED, NOW + 7) == NOW + 7
    assert wakeup(make(S.NONE), WANTED, NOW + 3) == NOW + 3
    assert wakeup(make(S.UNSUBSCRIBING), WANTED, NOW + 3) == NOW + 3
    assert wakeup(make(S.DENIED), WANTED, NOW) is None


def test_wakeup_after_a_failed_renewal_never_passes_the_lease() -> None:
    assert wakeup(make(retry_at=NOW + 50), WANTED, NOW) == NOW + 50
    assert wakeup(make(retry_at=NOW + 5000), WANTED, NOW) == NOW + 1000  # the lease ends first
    assert wakeup(make(retry_at=NOW + 50, lease_expires=None), WANTED, NOW) == NOW + 50


def test_renewal_before_expiry_with_jitter_bounds() -> None:
    sub = make(verified_at=NOW, lease_seconds=100_000)
    at = wakeup(sub, WANTED, NOW + 10)
    assert at == renewal_time(NOW, 100_000, random.Random("tok").random())
    assert at is not None and NOW + 75_000 < at <= NOW + 80_000
    for token in ("a", "b", "c", "d", "e"):  # the jitter is fixed per token, within 75-80 %
        renew = wakeup(replace(sub, token=token), WANTED, NOW)
        assert renew is not None and NOW + 75_000 < renew <= NOW + 80_000
    assert len({wakeup(replace(sub, token=t), WANTED, NOW) for t in "abcdef"}) > 1


def test_renewal_without_a_granted_lease_or_verification_time() -> None:
    sub = make(lease_seconds=None, verified_at=NOW)
    jitter = random.Random("tok").random()
    assert wakeup(sub, WANTED, NOW) == renewal_time(NOW, ASSUMED_LEASE_SECONDS, jitter)
    sub = make(verified_at=None)
    assert wakeup(sub, WANTED, NOW + 5) == renewal_time(NOW + 5, 1000, jitter)


# --------------------------------------------------------------------------
# Subscribing, renewing, lease expiry
# --------------------------------------------------------------------------


def test_renewal_keeps_the_subscription_active_and_its_callback() -> None:
    sub, actions = step(make(retry_at=NOW + 1), Due(WANTED), NOW + 800)
    assert sub is not None and sub.state is S.ACTIVE and sub.token == "tok"
    assert sub.requested_at == NOW + 800 and sub.retry_at is None
    assert actions == [Save(sub), Send(sub, Mode.SUBSCRIBE, 1000, "s3cret")]


def test_lease_expiry_means_subscribing_afresh() -> None:
    stored = make(lease_expires=NOW + 1000, attempts=2)
    sub, actions = step(stored, Due(WANTED), NOW + 1000)  # exactly at the end: expired
    assert sub is not None and sub.state is S.PENDING and sub.error == LEASE_EXPIRED
    assert sub.token == "tok" and sub.requested_at == NOW + 1000
    assert [type(a) for a in actions] == [Save, Send]
    sub, _ = step(stored, Due(WANTED), NOW + 999)  # a second before: still a renewal
    assert sub is not None and sub.state is S.ACTIVE and sub.error is None


def test_lease_expiry_of_a_failed_subscription_is_recorded() -> None:
    stored = make(S.FAILED, lease_expires=NOW, error="hub answered 500", retry_at=NOW)
    sub, _ = step(stored, Due(WANTED), NOW + 1)
    assert sub is not None and sub.state is S.PENDING and sub.error == LEASE_EXPIRED


def test_resubscribing_from_other_states_keeps_the_callback() -> None:
    for state in (S.NONE, S.UNSUBSCRIBING, S.FAILED, S.DENIED):
        sub, actions = step(make(state, lease_expires=None), Due(WANTED), NOW)
        assert sub is not None and sub.state is S.PENDING and sub.token == "tok"
        assert [type(a) for a in actions] == [Save, Send]


def test_without_discovery_the_subscription_renews_its_own_hub() -> None:
    sub, actions = step(make(), Due(Wanted("f", 1000)), NOW + 800)
    assert sub is not None and (sub.hub, sub.topic) == (HUB, TOPIC)
    assert sends(actions)[0].sub.endpoint == HUB


def test_due_without_a_subscription_or_target_does_nothing() -> None:
    assert step(None, Due(Wanted("f")), NOW) == (None, [])


def test_a_new_hub_replaces_the_subscription_and_unsubscribes_the_old_quietly() -> None:
    wanted = replace(WANTED, target=Target("https://other.test/", TOPIC))
    sub, actions = step(make(), Due(wanted), NOW)
    assert sub is not None and sub.hub == "https://other.test/" and sub.token != "tok"
    assert sub.state is S.PENDING and not sub.retired
    bye, save, hello = actions
    assert isinstance(bye, Send) and bye.mode is Mode.UNSUBSCRIBE
    assert bye.sub.retired and bye.sub.token == "tok" and bye.sub.state is S.UNSUBSCRIBING
    assert save == Save(sub) and isinstance(hello, Send) and hello.sub == sub


@pytest.mark.parametrize("state", [S.FAILED, S.DENIED, S.NONE])
def test_a_new_hub_after_a_dead_subscription_sends_no_unsubscribe(state: S) -> None:
    wanted = replace(WANTED, target=Target(HUB, TOPIC + "?v=2"))
    sub, actions = step(make(state, lease_expires=None), Due(wanted), NOW)
    assert sub is not None and sub.topic == TOPIC + "?v=2" and sub.token != "tok"
    assert [a.mode for a in sends(actions)] == [Mode.SUBSCRIBE]


# --------------------------------------------------------------------------
# The hub's answers, retries and backoff
# --------------------------------------------------------------------------


def test_verification_that_never_comes_is_a_failure() -> None:
    sub, actions = step(make(S.PENDING, attempts=0), Due(WANTED, jitter=0.0), NOW + 300)
    assert sub is not None and sub.state is S.FAILED and sub.error == NEVER_VERIFIED
    assert sub.attempts == 1 and sub.retry_at == NOW + 300 + 60
    assert actions == [Save(sub)]


def test_refused_request_backs_off_exponentially_with_jitter() -> None:
    sub: Sub | None = make(S.PENDING, attempts=0)
    delays = []
    for attempt in range(1, 6):
        assert sub is not None
        sub, actions = step(sub, HubAnswered(Mode.SUBSCRIBE, REFUSED, HUB, 0.5), NOW)
        assert sub is not None and sub.state is S.FAILED and sub.attempts == attempt
        assert sub.error == "hub answered 500" and actions == [Save(sub)]
        assert sub.retry_at is not None
        delays.append(sub.retry_at - NOW)
        assert delays[-1] == retry_delay(attempt, 0.5)
        sub = replace(sub, state=S.PENDING)
    assert delays == [45.0, 90.0, 180.0, 360.0, 720.0]


def test_retry_after_from_the_hub_is_honoured() -> None:
    busy = HubResponse(HubOutcome.FAILED, 503, "busy", retryable=True, retry_after=3600.0)
    sub, _ = step(make(S.PENDING), HubAnswered(Mode.SUBSCRIBE, busy, HUB, 0.0), NOW)
    assert sub is not None and sub.retry_at == NOW + 3600


def test_failed_renewal_keeps_the_lease_and_retries() -> None:
    sub, _ = step(make(S.ACTIVE), HubAnswered(Mode.SUBSCRIBE, REFUSED, HUB, 0.0), NOW)
    assert sub is not None and sub.state is S.ACTIVE and sub.attempts == 1
    assert sub.retry_at == NOW + 60 and push_is_live(sub)


def test_accepted_renewal_waits_for_its_verification() -> None:
    renewing = make(S.ACTIVE, verified_at=NOW - 800, requested_at=NOW)
    sub, actions = step(renewing, HubAnswered(Mode.SUBSCRIBE, ACCEPTED, HUB), NOW + 1)
    assert sub is not None and sub.retry_at == NOW + VERIFY_TIMEOUT and actions == [Save(sub)]
    verified_at_once = make(S.ACTIVE, verified_at=NOW, requested_at=NOW)
    sub, _ = step(verified_at_once, HubAnswered(Mode.SUBSCRIBE, ACCEPTED, HUB), NOW + 1)
    assert sub is not None and sub.retry_at is None
    pending = make(S.PENDING, verified_at=None, requested_at=NOW)
    sub, _ = step(pending, HubAnswered(Mode.SUBSCRIBE, ACCEPTED, HUB), NOW + 1)
    assert sub is not None and sub.state is S.PENDING and sub.retry_at is None


def test_accepted_without_request_time_or_verification() -> None:
    sub, _ = step(
        make(S.ACTIVE, verified_at=None, requested_at=None),
        HubAnswered(Mode.SUBSCRIBE, ACCEPTED, HUB),
        NOW,
    )
    assert sub is not None and sub.retry_at == VERIFY_TIMEOUT
    sub, _ = step(
        make(S.ACTIVE, verified_at=NOW, requested_at=None),
        HubAnswered(Mode.SUBSCRIBE, ACCEPTED, HUB),
        NOW,
    )
    assert sub is not None and sub.retry_at is None


def test_a_permanent_redirect_moves_the_endpoint() -> None:
    moved = "https://hub2.test/"
    for answer in (ACCEPTED, REFUSED):
        sub, _ = step(make(S.PENDING), HubAnswered(Mode.SUBSCRIBE, answer, moved), NOW)
        assert sub is not None and sub.endpoint == moved and sub.hub == HUB


def test_an_answer_after_a_denial_changes_nothing() -> None:
    denied = make(S.DENIED, error="denied by the hub: no")
    for answer in (ACCEPTED, REFUSED):
        assert step(denied, HubAnswered(Mode.SUBSCRIBE, answer, HUB), NOW) == (denied, [])


# --------------------------------------------------------------------------
# Verification of intent and denial
# --------------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.PENDING, S.ACTIVE])
def test_verified_activates_with_the_granted_lease(state: S) -> None:
    before = make(state, attempts=3, error="x", retry_at=NOW, verified_at=None)
    sub, actions = step(before, Verified(500, NOW + 500), NOW)
    assert sub is not None and sub.state is S.ACTIVE and actions == [Save(sub)]
    assert (sub.lease_seconds, sub.lease_expires, sub.verified_at) == (500, NOW + 500, NOW)
    assert (sub.retry_at, sub.attempts, sub.error) == (None, 0, None)


def test_verified_without_a_lease_assumes_one() -> None:
    sub, _ = step(make(S.PENDING), Verified(None, None), NOW)
    assert sub is not None and sub.lease_seconds is None
    assert sub.lease_expires == NOW + ASSUMED_LEASE_SECONDS


def test_denied_is_recorded_and_never_retried() -> None:
    for state in (S.PENDING, S.ACTIVE, S.FAILED, S.UNSUBSCRIBING):
        sub, actions = step(make(state), Denied("not allowed"), NOW)
        assert sub is not None and sub.state is S.DENIED and actions == [Save(sub)]
        assert sub.error == "denied by the hub: not allowed"
        assert wakeup(sub, WANTED, NOW) is None and not push_is_live(sub)


def test_a_denied_replaced_subscription_is_just_forgotten() -> None:
    retired = make(S.UNSUBSCRIBING, retired=True)
    assert step(retired, Denied("no"), NOW) == (None, [Forget(retired)])


def test_event_for_a_verification_decision() -> None:
    assert event_for(IntentDecision(200, "c", "ok", S.ACTIVE, 10, NOW + 10)) == Verified(
        10, NOW + 10
    )
    assert event_for(IntentDecision(200, "c", "ok", S.NONE)) == UnsubscribeVerified()
    assert event_for(IntentDecision(200, "", "no", S.DENIED)) == Denied("no")
    assert event_for(IntentDecision(404, "x", "x")) is None
    assert event_for(IntentDecision(200, "x", "x", S.PENDING)) is None


# --------------------------------------------------------------------------
# Unsubscribing
# --------------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.ACTIVE, S.PENDING, S.UNSUBSCRIBING])
def test_removed_feed_is_unsubscribed(state: S) -> None:
    sub, actions = step(make(state), FeedRemoved(), NOW)
    assert sub is not None and sub.state is S.UNSUBSCRIBING
    assert actions == [Save(sub), Send(sub, Mode.UNSUBSCRIBE)]


@pytest.mark.parametrize("state", [S.FAILED, S.DENIED, S.NONE])
def test_removed_feed_without_a_live_subscription_is_just_deleted(state: S) -> None:
    stored = make(state)
    assert step(stored, FeedRemoved(), NOW) == (None, [Delete(stored)])


def test_unsubscribe_accepted_waits_for_verification_then_deletes() -> None:
    leaving = make(S.UNSUBSCRIBING)
    sub, actions = step(leaving, HubAnswered(Mode.UNSUBSCRIBE, ACCEPTED, HUB), NOW)
    assert sub == leaving and actions == [AwaitVerification(leaving, NOW + VERIFY_TIMEOUT)]
    assert step(leaving, UnsubscribeVerified(), NOW) == (None, [Delete(leaving)])
    assert step(leaving, Abandon(), NOW) == (None, [Delete(leaving)])


def test_unsubscribe_refused_deletes_at_once() -> None:
    leaving = make(S.UNSUBSCRIBING)
    answered = HubAnswered(Mode.UNSUBSCRIBE, REFUSED, HUB)
    assert step(leaving, answered, NOW) == (None, [Delete(leaving)])
    denied = make(S.DENIED)
    accepted = HubAnswered(Mode.UNSUBSCRIBE, ACCEPTED, HUB)
    assert step(denied, accepted, NOW) == (None, [Delete(denied)])


def test_replaced_subscription_is_forgotten_never_deleted() -> None:
    retired = make(S.UNSUBSCRIBING, retired=True)
    accepted = HubAnswered(Mode.UNSUBSCRIBE, ACCEPTED, HUB)
    assert step(retired, accepted, NOW) == (
        retired,
        [AwaitVerification(retired, NOW + VERIFY_TIMEOUT)],
    )
    assert step(retired, HubAnswered(Mode.UNSUBSCRIBE, REFUSED, HUB), NOW) == (
        None,
        [Forget(retired)],
    )
    assert step(retired, UnsubscribeVerified(), NOW) == (None, [Forget(retired)])
    assert step(retired, Abandon(), NOW) == (None, [Forget(retired)])


# --------------------------------------------------------------------------
# Push health
# --------------------------------------------------------------------------


def test_push_is_live_only_while_active_and_healthy() -> None:
    assert push_is_live(make())
    assert not push_is_live(make(push_healthy=False))
    assert not push_is_live(None)
    for state in (S.PENDING, S.FAILED, S.DENIED, S.UNSUBSCRIBING, S.NONE):
        assert not push_is_live(make(state))


def test_a_poll_with_entries_the_hub_missed_marks_push_unhealthy() -> None:
    sub, actions = step(make(verified_at=NOW), Polled(3, NOW + 1), NOW + 2)
    assert sub is not None and sub.push_healthy is False and actions == [Save(sub)]


@pytest.mark.parametrize(
    ("stored", "polled"),
    [
        (make(verified_at=NOW), Polled(0, NOW + 1)),  # nothing new
        (make(verified_at=NOW), Polled(3, NOW)),  # fetched as it was verified: not before
        (make(verified_at=NOW), Polled(3, NOW - 1)),  # fetched before the verification
        (make(verified_at=None), Polled(3, NOW + 1)),  # never verified
        (make(S.PENDING, verified_at=NOW), Polled(3, NOW + 1)),  # push not live
        (make(push_healthy=False), Polled(3, NOW + 1)),  # already unhealthy
    ],
)
def test_polls_that_say_nothing_about_push(stored: Sub, polled: Polled) -> None:
    assert step(stored, polled, NOW + 2) == (stored, [])


def test_a_push_makes_push_healthy_again() -> None:
    sub, actions = step(make(push_healthy=False, last_push=None), Pushed(), NOW + 5)
    assert sub is not None and sub.push_healthy and sub.last_push == NOW + 5
    assert actions == [Save(sub)]


# --------------------------------------------------------------------------
# Invalid events and the transition table
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.FAILED, Verified(10, NOW)),
        (S.UNSUBSCRIBING, Verified(10, NOW)),
        (S.NONE, Verified(10, NOW)),
        (S.DENIED, Verified(10, NOW)),
        (S.ACTIVE, UnsubscribeVerified()),
        (S.PENDING, UnsubscribeVerified()),
        (S.NONE, Denied("x")),
        (S.DENIED, Denied("x")),
        (S.UNSUBSCRIBING, HubAnswered(Mode.SUBSCRIBE, ACCEPTED, HUB)),
        (S.FAILED, HubAnswered(Mode.SUBSCRIBE, ACCEPTED, HUB)),
        (S.NONE, HubAnswered(Mode.SUBSCRIBE, ACCEPTED, HUB)),
        (S.ACTIVE, HubAnswered(Mode.UNSUBSCRIBE, ACCEPTED, HUB)),
        (S.PENDING, HubAnswered(Mode.UNSUBSCRIBE, REFUSED, HUB)),
    ],
)
def test_events_the_state_does_not_allow_are_refused(state: S, event: m.Event) -> None:
    with pytest.raises(InvalidTransition, match=str(state)):
        step(make(state), event, NOW)


@pytest.mark.parametrize(
    "event", [Verified(1, NOW), Denied("x"), Pushed(), FeedRemoved(), Polled(1, NOW)]
)
def test_events_without_a_subscription_are_refused(event: m.Event) -> None:
    with pytest.raises(InvalidTransition, match=type(event).__name__):
        step(None, event, NOW)


def test_a_state_change_outside_the_table_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(m, "can_transition", lambda old, new: False)
    with pytest.raises(InvalidTransition, match="pending -> active"):
        step(make(S.PENDING), Verified(1, NOW), NOW)
    sub, _ = step(make(S.ACTIVE), Verified(1, NOW), NOW)  # staying put is no transition
    assert sub is not None and sub.state is S.ACTIVE


EVENTS = st.sampled_from(
    [
        Due(WANTED),
        Due(replace(WANTED, target=Target("https://other.test/", TOPIC))),
        Due(Wanted("f", None)),
        HubAnswered(Mode.SUBSCRIBE, ACCEPTED, HUB),
        HubAnswered(Mode.SUBSCRIBE, REFUSED, HUB),
        HubAnswered(Mode.UNSUBSCRIBE, ACCEPTED, HUB),
        HubAnswered(Mode.UNSUBSCRIBE, REFUSED, HUB),
        Verified(100, NOW + 100),
        UnsubscribeVerified(),
        Denied("no"),
        FeedRemoved(),
        Abandon(),
        Pushed(),
        Polled(2, NOW + 50),
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(EVENTS, st.floats(0, 5000)), max_size=12))
def test_every_state_change_is_in_the_transition_table(
    events: list[tuple[m.Event, float]],
) -> None:
    sub: Sub | None = None
    for event, offset in events:
        try:
            new, actions = step(sub, event, NOW + offset)
        except InvalidTransition:
            continue
        if sub is not None and new is not None and new.token == sub.token:
            assert new.state is sub.state or new.state in TRANSITIONS[sub.state]
        for action in actions:
            if isinstance(action, Send) and action.secret is not None:
                assert may_send_secret(action.sub.endpoint)
            if isinstance(action, Save):
                assert not action.sub.retired
        sub = new


# --------------------------------------------------------------------------
# The stored row
# --------------------------------------------------------------------------


def test_row_round_trip_and_typed_state() -> None:
    sub = make(S.PENDING)
    row = Subscription(**sub.row_values())
    assert type(row.state) is str and row.state == "pending"
    back = Sub.from_row(row)
    assert back == sub and back.state is S.PENDING
    assert "retired" not in sub.row_values()


def test_a_bad_stored_state_fails_loudly() -> None:
    row = Subscription(**{**make().row_values(), "state": "bogus"})
    with pytest.raises(ValueError, match="bogus"):
        Sub.from_row(row)


def test_refusals_name_the_event_and_the_state() -> None:
    with pytest.raises(
        InvalidTransition, match=r"^Verified for the subscription of f in state failed$"
    ):
        step(make(S.FAILED), Verified(1, NOW), NOW)
    with pytest.raises(
        InvalidTransition, match=r"^subscribe answer for the subscription of f in state none$"
    ):
        step(make(S.NONE), HubAnswered(Mode.SUBSCRIBE, ACCEPTED, HUB), NOW)
    with pytest.raises(InvalidTransition, match=r"^Pushed for a feed without a subscription$"):
        step(None, Pushed(), NOW)


@pytest.mark.parametrize("state", [S.PENDING, S.ACTIVE, S.FAILED, S.NONE])
def test_abandon_leaves_a_subscription_that_came_back_alone(state: S) -> None:
    stored = make(state)
    assert step(stored, Abandon(), NOW) == (stored, [])
    denied = make(S.DENIED)
    assert step(denied, Abandon(), NOW) == (None, [Delete(denied)])
