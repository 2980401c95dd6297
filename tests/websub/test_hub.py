"""The WebSub hub's rules at the pure level (feedstream.websub.hub): no trio, no HTTP."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from urllib.parse import parse_qsl, urlsplit

import pytest

from feedstream.core.signatures import SignatureStatus, verify_signature
from feedstream.websub.hub import (
    MAX_CALLBACK_LENGTH,
    RETRY_WINDOW,
    SAVE_INTERVAL,
    TRANSITIONS,
    DeliveryOutcome,
    HubMode,
    HubRequest,
    HubSettings,
    HubState,
    HubSubscription,
    InvalidTransition,
    Refusal,
    Topic,
    after_delivery,
    can_transition,
    challenge_echoed,
    clamp_lease,
    classify_delivery,
    denial_url,
    distribution_headers,
    is_expired,
    merge_stored,
    needs_saving,
    new_challenge,
    parse_request,
    signature,
    topic_of,
    verification_url,
    verified,
)

PUBLIC = "https://feeds.example.org"
SETTINGS = HubSettings(PUBLIC)
NOW = 1_700_000_000.0
H = HubState


def form(**fields: str) -> dict[str, str]:
    base = {
        "hub.mode": "subscribe",
        "hub.topic": f"{PUBLIC}/feeds/all.atom",
        "hub.callback": "https://sub.example.net/cb",
    }
    base.update({f"hub.{k}": v for k, v in fields.items()})
    return base


def accepted(request: HubRequest | Refusal) -> HubRequest:
    assert isinstance(request, HubRequest), request
    return request


def refused(request: HubRequest | Refusal) -> Refusal:
    assert isinstance(request, Refusal), request
    return request


# -- topics and leases -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{PUBLIC}/feeds/all.atom", Topic("all", "atom")),
        (f"{PUBLIC}/feeds/python-insider.rss", Topic("python-insider", "rss")),
        ("HTTPS://Feeds.Example.org/feeds/sec.json", Topic("sec", "json")),
        (f"{PUBLIC}/feeds/all.xml", None),
        (f"{PUBLIC}/feeds/all.atom?limit=5", None),
        (f"{PUBLIC}/feeds/a/b.atom", None),
        (f"{PUBLIC}/other/all.atom", None),
        ("http://feeds.example.org/feeds/all.atom", None),  # another scheme
        ("https://feeds.example.org:8443/feeds/all.atom", None),
        ("https://evil.example/feeds/all.atom", None),
        ("not a url", None),
    ],
)
def test_topic_of(url: str, expected: Topic | None) -> None:
    assert topic_of(url, PUBLIC) == expected


def test_topic_under_a_path_prefix() -> None:
    assert topic_of("https://h.example/fs/feeds/all.rss", "https://h.example/fs/") == Topic(
        "all", "rss"
    )
    assert topic_of("https://h.example/feeds/all.rss", "https://h.example/fs") is None


def test_lease_is_clamped() -> None:
    settings = HubSettings(PUBLIC, min_lease=3600, max_lease=864_000)
    assert clamp_lease(None, settings) == 864_000
    assert clamp_lease(10, settings) == 3600
    assert clamp_lease(7200, settings) == 7200
    assert clamp_lease(10**9, settings) == 864_000
    assert accepted(parse_request(form(lease_seconds="60"), SETTINGS)).lease_seconds == 3600
    huge = form(lease_seconds="9" * 40)
    assert accepted(parse_request(huge, SETTINGS)).lease_seconds == 864_000


# -- the request -------------------------------------------------------------------------------


def test_typical_subscription() -> None:
    request = accepted(parse_request(form(lease_seconds="86400", unknown="x"), SETTINGS, {"all"}))
    assert request.mode is HubMode.SUBSCRIBE
    assert request.topic == Topic("all", "atom")
    assert request.topic_url == f"{PUBLIC}/feeds/all.atom"
    assert request.callback == "https://sub.example.net/cb"
    assert request.lease_seconds == 86400
    assert request.secret is None


def test_unsubscription_and_secret() -> None:
    request = accepted(parse_request(form(mode="unsubscribe"), SETTINGS))
    assert request.mode is HubMode.UNSUBSCRIBE
    assert accepted(parse_request(form(secret="s" * 199), SETTINGS)).secret == "s" * 199
    assert accepted(parse_request(form(secret=""), SETTINGS)).secret is None
    # a secret over plain http is accepted (the subscriber's SHOULD; see the module docstring)
    plain = form(secret="k", callback="http://sub.example.net/cb")
    assert accepted(parse_request(plain, SETTINGS)).secret == "k"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"mode": "publish"}, "hub.mode"),
        ({"mode": ""}, "hub.mode"),
        ({"callback": ""}, "hub.callback: missing"),
        ({"callback": "ftp://sub.example.net/cb"}, "http"),
        ({"callback": "/relative"}, "http"),
        ({"callback": "https://u:p@sub.example.net/"}, "credentials"),
        ({"callback": "https://sub.example.net/a b"}, "spaces"),
        ({"callback": "https://sub.example.net:99999/"}, "not a URL"),
        ({"callback": "https://sub.example.net/" + "a" * MAX_CALLBACK_LENGTH}, "2048"),
        ({"topic": ""}, "hub.topic: missing"),
        ({"secret": "s" * 200}, "200 bytes"),
        ({"secret": "é" * 100}, "200 bytes"),
        ({"lease_seconds": "-5"}, "whole number"),
        ({"lease_seconds": "1e3"}, "whole number"),
    ],
)
def test_bad_requests(fields: dict[str, str], reason: str) -> None:
    refusal = refused(parse_request(form(**fields), SETTINGS))
    assert refusal.status == 400
    assert reason in refusal.reason
    assert refusal.deny_callback is None


def test_conflicting_repeated_field() -> None:
    pairs = [*form().items(), ("hub.mode", "unsubscribe")]
    assert refused(parse_request(pairs, SETTINGS)).reason == "hub.mode: given more than once"
    same = [*form().items(), ("hub.mode", "subscribe")]
    assert accepted(parse_request(same, SETTINGS)).mode is HubMode.SUBSCRIBE


def test_foreign_topic_is_denied_to_the_callback() -> None:
    refusal = refused(parse_request(form(topic="https://elsewhere.example/feed"), SETTINGS))
    assert refusal.status == 404
    assert refusal.deny_callback == "https://sub.example.net/cb"
    assert refusal.topic_url == "https://elsewhere.example/feed"
    unknown = refused(parse_request(form(topic=f"{PUBLIC}/feeds/nope.atom"), SETTINGS, {"all"}))
    assert unknown.status == 404 and unknown.deny_callback is not None
    # nothing to deny for an unsubscription
    unsub = form(mode="unsubscribe", topic=f"{PUBLIC}/feeds/nope.atom")
    assert refused(parse_request(unsub, SETTINGS, {"all"})).deny_callback is None


# -- verification ------------------------------------------------------------------------------


def test_verification_keeps_the_callbacks_query() -> None:
    request = accepted(
        parse_request(form(callback="https://sub.example.net/cb?x=1&y=a%20b&x=2"), SETTINGS)
    )
    url = verification_url(request, "CHAL")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "sub.example.net", "/cb")
    assert parse_qsl(parts.query) == [
        ("x", "1"),
        ("y", "a b"),
        ("x", "2"),
        ("hub.mode", "subscribe"),
        ("hub.topic", f"{PUBLIC}/feeds/all.atom"),
        ("hub.challenge", "CHAL"),
        ("hub.lease_seconds", str(SETTINGS.max_lease)),
    ]


def test_unsubscribe_verification_has_no_lease() -> None:
    request = accepted(parse_request(form(mode="unsubscribe"), SETTINGS))
    query = dict(parse_qsl(urlsplit(verification_url(request, "c")).query))
    assert query["hub.mode"] == "unsubscribe" and "hub.lease_seconds" not in query


def test_hub_parameters_override_the_callbacks() -> None:
    request = accepted(parse_request(form(callback="https://s.example/cb?hub.mode=x"), SETTINGS))
    pairs = parse_qsl(urlsplit(verification_url(request, "c")).query)
    assert [v for k, v in pairs if k == "hub.mode"] == ["subscribe"]


def test_denial_url() -> None:
    query = parse_qsl(urlsplit(denial_url("https://s.example/cb?k=v", "t", "no" * 200)).query)
    assert query[0] == ("k", "v")
    assert dict(query)["hub.mode"] == "denied"
    assert dict(query)["hub.topic"] == "t"
    assert len(dict(query)["hub.reason"]) == 200


def test_challenge() -> None:
    challenge = new_challenge()
    assert len(challenge) >= 32 and challenge != new_challenge()
    assert challenge_echoed(200, challenge.encode(), challenge)
    assert challenge_echoed(204, challenge.encode(), challenge)
    assert not challenge_echoed(200, challenge.encode() + b"\n", challenge)
    assert not challenge_echoed(200, b"wrong", challenge)
    assert not challenge_echoed(404, challenge.encode(), challenge)
    assert not challenge_echoed(302, challenge.encode(), challenge)


def test_verified_subscribe_and_renewal() -> None:
    request = accepted(parse_request(form(lease_seconds="7200", secret="one"), SETTINGS))
    sub = verified(request, None, NOW)
    assert sub is not None
    assert (sub.state, sub.lease_seconds, sub.expires_at, sub.secret) == (
        H.ACTIVE,
        7200,
        NOW + 7200,
        "one",
    )
    assert sub.key == (request.topic_url, request.callback)
    failing = sub.move(H.FAILING, failures=3, last_error="boom")
    renewal = accepted(parse_request(form(lease_seconds="4000", secret="two"), SETTINGS))
    renewed = verified(renewal, failing, NOW + 100)
    assert renewed is not None
    assert (renewed.state, renewed.expires_at, renewed.secret, renewed.failures) == (
        H.ACTIVE,
        NOW + 4100,
        "two",
        0,
    )
    assert renewed.created_at == NOW


def test_verified_unsubscribe_forgets() -> None:
    request = accepted(parse_request(form(mode="unsubscribe"), SETTINGS))
    assert verified(request, None, NOW) is None


def test_expiry() -> None:
    request = accepted(parse_request(form(lease_seconds="3600"), SETTINGS))
    sub = verified(request, None, NOW)
    assert sub is not None
    assert not is_expired(sub, NOW + 3599)
    assert is_expired(sub, NOW + 3600)
    assert can_transition(H.ACTIVE, H.EXPIRED)


def test_transitions() -> None:
    assert set(TRANSITIONS) == set(HubState)
    assert TRANSITIONS[H.PENDING] == {H.ACTIVE, H.DENIED, H.FAILED}
    for end in (H.DENIED, H.FAILED, H.EXPIRED, H.GONE):
        assert not TRANSITIONS[end]
    pending = HubSubscription("t", "c", H.PENDING, 3600, NOW + 3600)
    with pytest.raises(InvalidTransition):
        pending.move(H.FAILING)


# -- distribution ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("format", "content_type"),
    [
        ("atom", "application/atom+xml; charset=utf-8"),
        ("rss", "application/rss+xml; charset=utf-8"),
        ("json", "application/feed+json; charset=utf-8"),
    ],
)
def test_distribution_headers(format: str, content_type: str) -> None:
    topic = Topic("all", format)
    url = f"{PUBLIC}/feeds/all.{format}"
    headers = distribution_headers(topic, url, SETTINGS.hub_url, b"body", None)
    assert headers == [
        ("Content-Type", content_type),
        ("Link", f'<{PUBLIC}/websub/hub>; rel="hub"'),
        ("Link", f'<{url}>; rel="self"'),
    ]


def test_signature_matches_the_subscribers_check() -> None:
    body = b"<feed/>"
    headers = dict(distribution_headers(Topic("all", "atom"), "t", "h", body, "s3cret"))
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature"] == f"sha256={expected}" == signature("s3cret", body)
    check = verify_signature("s3cret", headers["X-Hub-Signature"], body)
    assert check.status is SignatureStatus.OK


def test_classify_delivery() -> None:
    assert classify_delivery(200) is DeliveryOutcome.OK
    assert classify_delivery(204) is DeliveryOutcome.OK
    assert classify_delivery(410) is DeliveryOutcome.GONE
    for status in (None, 301, 404, 429, 500, 503):
        assert classify_delivery(status) is DeliveryOutcome.RETRY


def _active() -> HubSubscription:
    return HubSubscription("t", "c", H.ACTIVE, 3600, NOW + 3600)


def test_delivery_success_and_gone() -> None:
    step = after_delivery(_active(), 202, attempt=1, first_attempt=NOW, now=NOW, jitter=0.5)
    assert step.sub is not None and step.sub.last_delivery == NOW and step.retry_in is None
    assert (
        after_delivery(_active(), 410, attempt=1, first_attempt=NOW, now=NOW, jitter=0).sub is None
    )


def test_a_healthy_delivery_is_saved_at_most_every_interval() -> None:
    sub = _active()
    ok = after_delivery(sub, 204, attempt=1, first_attempt=NOW, now=NOW, jitter=0).sub
    assert ok is not None
    assert needs_saving(sub, ok, saved_at=NOW - 1, now=NOW) is False
    assert needs_saving(sub, ok, saved_at=NOW - SAVE_INTERVAL, now=NOW) is True
    later = after_delivery(ok, 204, attempt=1, first_attempt=NOW + 5, now=NOW + 5, jitter=0).sub
    assert later is not None and needs_saving(ok, later, saved_at=NOW, now=NOW + 5) is False
    assert needs_saving(ok, ok, saved_at=0.0, now=NOW) is False  # nothing changed at all


def test_a_failure_or_a_recovery_is_always_saved() -> None:
    sub = _active()
    failed = after_delivery(sub, 500, attempt=1, first_attempt=NOW, now=NOW, jitter=0).sub
    assert failed is not None and needs_saving(sub, failed, saved_at=NOW, now=NOW) is True
    again = after_delivery(failed, 204, attempt=2, first_attempt=NOW, now=NOW + 1, jitter=0).sub
    assert again is not None and again.failures == 0
    assert needs_saving(failed, again, saved_at=NOW, now=NOW + 1) is True
    moved = sub.move(H.FAILING)
    assert needs_saving(sub, moved, saved_at=NOW, now=NOW) is True


def test_merging_what_other_hubs_stored() -> None:
    a, b, c = (HubSubscription("t", cb, H.ACTIVE, 3600, NOW + 3600) for cb in "abc")
    memory = {
        a.key: replace(a, last_delivery=NOW + 5),  # delivered here, not written yet
        b.key: replace(b, last_delivery=NOW),
        c.key: c,  # unsubscribed through another node: no longer stored
    }
    renewed = replace(b, expires_at=NOW + 7200, last_delivery=NOW + 1)
    pending = HubSubscription("t", "d", H.PENDING, 3600, NOW + 3600)
    stored = {a.key: replace(a, failures=0), b.key: renewed, pending.key: pending}
    merged = merge_stored(memory, stored)
    assert merged == {
        a.key: replace(a, last_delivery=NOW + 5),
        b.key: renewed,  # the store's is newer, and so is the renewal
        pending.key: pending,
    }


def test_delivery_retries_with_backoff_then_fails() -> None:
    sub, attempt, now, delays = _active(), 1, NOW, []
    while True:
        step = after_delivery(sub, 500, attempt=attempt, first_attempt=NOW, now=now, jitter=0.99)
        assert step.sub is not None
        sub = step.sub
        if step.retry_in is None:
            break
        delays.append(step.retry_in)
        now += step.retry_in
        attempt += 1
    assert sub.state is H.FAILING and sub.failures == attempt
    assert delays == sorted(delays) and delays[0] < 6 and max(delays) <= 300
    assert now - NOW <= RETRY_WINDOW
    assert sub.last_error == "callback answered 500"
    # failing: one attempt per delivery, no retry; a success brings it back
    again = after_delivery(sub, None, attempt=1, first_attempt=now, now=now, jitter=0, error="x")
    assert again.retry_in is None and again.sub is not None and again.sub.state is H.FAILING
    assert again.sub.last_error == "x"
    back = after_delivery(sub, 200, attempt=1, first_attempt=now, now=now, jitter=0)
    assert back.sub is not None and back.sub.state is H.ACTIVE and back.sub.failures == 0
