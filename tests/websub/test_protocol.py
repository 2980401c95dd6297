"""Tests for the sans-io WebSub subscription protocol (feedstream.websub.protocol).

Cases numbered like websub.rocks subscriber tests (200-205, 300-302) cover the part of each
test that the pure protocol decides.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import re
from urllib.parse import parse_qs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedstream.core.signatures import SignatureStatus, verify_signature
from feedstream.websub import protocol as websub
from feedstream.websub.discovery import discover
from feedstream.websub.protocol import (
    ASSUMED_LEASE_SECONDS,
    MAX_CHALLENGE_LENGTH,
    MAX_HUB_REDIRECTS,
    MAX_LEASE_SECONDS,
    TRANSITIONS,
    HubOutcome,
    Mode,
    SubscriptionRecord,
    SubscriptionState,
    can_transition,
    check_delivery,
    classify_hub_response,
    expected_mode,
    new_callback_token,
    new_secret,
    parse_lease_seconds,
    renewal_time,
    retry_delay,
    subscription_form,
    verify_intent,
)

S = SubscriptionState
TOPIC = "https://websub.example/blog/100/tok"
HUB = "https://websub.example/blog/100/tok/hub"
FETCHED = "https://websub.example/blog/100/tok"
NOW = 1_700_000_000.0
URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


# --------------------------------------------------------------------------
# Subscription request
# --------------------------------------------------------------------------

CALLBACK = "https://reader.example/websub/callback/abc"


def test_subscription_form_subscribe() -> None:
    secret = new_secret()
    form = subscription_form(Mode.SUBSCRIBE, CALLBACK, TOPIC, lease_seconds=86400, secret=secret)
    assert form == {
        "hub.callback": CALLBACK,
        "hub.mode": "subscribe",
        "hub.topic": TOPIC,
        "hub.lease_seconds": "86400",
        "hub.secret": secret,
    }
    assert subscription_form("subscribe", CALLBACK, TOPIC) == {
        "hub.callback": CALLBACK,
        "hub.mode": "subscribe",
        "hub.topic": TOPIC,
    }


def test_subscription_form_unsubscribe_omits_lease_and_secret() -> None:
    form = subscription_form("unsubscribe", CALLBACK, TOPIC, lease_seconds=60, secret="s")
    assert form == {"hub.callback": CALLBACK, "hub.mode": "unsubscribe", "hub.topic": TOPIC}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "publish"},
        {"callback_url": "/relative/callback"},
        {"callback_url": "ftp://reader.example/cb"},
        {"topic_url": "javascript:x"},
        {"lease_seconds": 0},
        {"lease_seconds": -5},
        {"lease_seconds": True},
        {"secret": ""},
        {"secret": "x" * 200},
        {"secret": "\u00e9" * 100},  # 200 bytes in UTF-8
    ],
)
def test_subscription_form_rejects_bad_input(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"mode": "subscribe", "callback_url": CALLBACK, "topic_url": TOPIC}
    args.update(kwargs)
    with pytest.raises(ValueError):
        subscription_form(**args)  # type: ignore[arg-type]


def test_secret_of_199_bytes_is_accepted() -> None:
    form = subscription_form("subscribe", CALLBACK, TOPIC, secret="x" * 199)
    assert len(form["hub.secret"]) == 199


def test_new_secret_and_callback_token() -> None:
    secrets_ = {new_secret() for _ in range(50)}
    tokens = {new_callback_token() for _ in range(50)}
    assert len(secrets_) == 50 and len(tokens) == 50
    for value in secrets_ | tokens:
        assert URL_SAFE.fullmatch(value)
    assert all(0 < len(s.encode()) < 200 for s in secrets_)
    # base64url carries 6 bits per character: 128 bits need at least 22 characters.
    assert all(len(token) * 6 >= 128 for token in tokens)


@pytest.mark.parametrize("status", [200, 202, 204])
def test_hub_accepts(status: int) -> None:
    answer = classify_hub_response(status, HUB)
    assert answer.outcome is HubOutcome.ACCEPTED
    assert answer.redirect_to is None


def test_203_hub_307_redirect_is_followed() -> None:
    answer = classify_hub_response(307, HUB + "?redirect=true", "/blog/203/tok/hub")
    assert answer.outcome is HubOutcome.REDIRECT
    assert answer.redirect_to == "https://websub.example/blog/203/tok/hub"
    assert not answer.permanent


def test_204_hub_308_redirect_is_permanent() -> None:
    answer = classify_hub_response(308, HUB, "https://new-hub.example/")
    assert answer.outcome is HubOutcome.REDIRECT
    assert answer.redirect_to == "https://new-hub.example/"
    assert answer.permanent


def test_hub_redirect_chain_is_limited() -> None:
    # Drive the classifier the way the shell does, against a hub that always redirects.
    url, hops = HUB, 0
    for _ in range(MAX_HUB_REDIRECTS + 10):  # bounded, should the limit ever break
        answer = classify_hub_response(307, url, f"/hop/{hops}", redirects_followed=hops)
        if answer.outcome is not HubOutcome.REDIRECT:
            break
        assert answer.redirect_to is not None
        url, hops = answer.redirect_to, hops + 1
    assert hops == MAX_HUB_REDIRECTS
    assert answer.outcome is HubOutcome.FAILED
    assert "redirected" in answer.reason


@pytest.mark.parametrize("location", [None, "", "ftp://hub.example/", "javascript:x", "http://"])
def test_hub_redirect_without_usable_location_fails(location: str | None) -> None:
    answer = classify_hub_response(307, HUB, location)
    assert answer.outcome is HubOutcome.FAILED
    assert "Location" in answer.reason


@pytest.mark.parametrize("status", [301, 302, 303])
def test_hub_post_redirects_other_than_307_308_fail(status: int) -> None:
    answer = classify_hub_response(status, HUB, "https://elsewhere.example/")
    assert answer.outcome is HubOutcome.FAILED
    assert "307/308" in answer.reason


def test_hub_error_reason_quotes_a_cleaned_body() -> None:
    body = b"invalid_topic: The topic provided\r\nis not allowed\x1b[31m" + b"!" * 10_000
    answer = classify_hub_response(400, HUB, body=body)
    assert answer.outcome is HubOutcome.FAILED
    assert answer.reason.startswith("hub answered 400: invalid_topic: The topic provided is not")
    assert "\x1b" not in answer.reason and "\n" not in answer.reason
    assert len(answer.reason) < 400
    assert not answer.retryable


@pytest.mark.parametrize(
    ("status", "retry_after", "retryable", "seconds"),
    [
        (503, "120", True, 120.0),
        (429, " 5 ", True, 5.0),
        (500, "Wed, 21 Oct 2015 07:28:00 GMT", True, None),
        (502, None, True, None),
        (404, "60", False, None),
        (410, None, False, None),
        (503, "999999999", True, 999999999.0),
        (503, "1000000000", True, None),  # ten digits: ignored, not 31 years
        (503, "-5", True, None),
        (503, "\u00b2", True, None),
        (503, "", True, None),
    ],
)
def test_hub_failures_retryable_and_retry_after(
    status: int, retry_after: str | None, retryable: bool, seconds: float | None
) -> None:
    answer = classify_hub_response(status, HUB, retry_after=retry_after)
    assert answer.outcome is HubOutcome.FAILED
    assert answer.retryable is retryable
    assert answer.retry_after == seconds


# --------------------------------------------------------------------------
# Verification of intent (section 5.3) and denial (5.2)
# --------------------------------------------------------------------------

PENDING = SubscriptionRecord(TOPIC, S.PENDING)


def query(mode: str = "subscribe", **extra: str) -> dict[str, str]:
    params = {"hub.mode": mode, "hub.topic": TOPIC, "hub.challenge": "c+h/a=l!lenge 42"}
    params.update({f"hub.{key}": value for key, value in extra.items()})
    return params


def test_subscribe_verification_echoes_challenge_and_records_lease() -> None:
    decision = verify_intent(query(lease_seconds="86400"), PENDING, NOW)
    assert decision.status == 200 and decision.accepted
    assert decision.body == "c+h/a=l!lenge 42"
    assert decision.new_state is S.ACTIVE
    assert decision.lease_seconds == 86400
    assert decision.lease_expires_at == NOW + 86400
    headers = dict(decision.headers)
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"].startswith("text/plain")


def test_subscribe_verification_without_lease() -> None:
    decision = verify_intent(query(), PENDING, NOW)
    assert decision.status == 200
    assert decision.lease_seconds is None and decision.lease_expires_at is None
    assert renewal_time(NOW, ASSUMED_LEASE_SECONDS, 0.0) > NOW


def test_renewal_of_an_active_subscription_is_verified() -> None:
    decision = verify_intent(query(lease_seconds="600"), SubscriptionRecord(TOPIC, S.ACTIVE), NOW)
    assert decision.status == 200 and decision.new_state is S.ACTIVE


def test_unsubscribe_verification_ignores_lease() -> None:
    record = SubscriptionRecord(TOPIC, S.UNSUBSCRIBING)
    decision = verify_intent(query("unsubscribe", lease_seconds="garbage"), record, NOW)
    assert decision.status == 200
    assert decision.body == "c+h/a=l!lenge 42"
    assert decision.new_state is S.NONE
    assert decision.lease_seconds is None


def test_205_wrong_topic_is_404() -> None:
    bad = query()
    bad["hub.topic"] = TOPIC + "/other"
    decision = verify_intent(bad, PENDING, NOW)
    assert decision.status == 404
    assert decision.new_state is None
    assert "c+h" not in decision.body


def test_topic_comparison_tolerates_escaped_unreserved_characters() -> None:
    record = SubscriptionRecord("https://ex.example/%7Euser/feed%3Fx?q=a%2fb", S.PENDING)
    decoded = {
        "hub.mode": "subscribe",
        "hub.topic": "https://ex.example/~user/feed%3fx?q=a%2Fb",
        "hub.challenge": "c",
    }
    assert verify_intent(decoded, record, NOW).status == 200
    reserved_decoded = {**decoded, "hub.topic": "https://ex.example/~user/feed?x?q=a/b"}
    assert verify_intent(reserved_decoded, record, NOW).status == 404


def test_unknown_callback_is_404() -> None:
    assert verify_intent(query(), None, NOW).status == 404


@pytest.mark.parametrize(
    ("state", "mode"),
    [
        (S.ACTIVE, "unsubscribe"),  # someone else trying to unsubscribe us
        (S.PENDING, "unsubscribe"),
        (S.UNSUBSCRIBING, "subscribe"),
        (S.NONE, "subscribe"),
        (S.NONE, "unsubscribe"),
        (S.FAILED, "subscribe"),
        (S.DENIED, "subscribe"),
    ],
)
def test_unwanted_mode_for_state_is_404(state: SubscriptionState, mode: str) -> None:
    decision = verify_intent(query(mode), SubscriptionRecord(TOPIC, state), NOW)
    assert decision.status == 404
    assert decision.new_state is None


@pytest.mark.parametrize(
    "params",
    [
        {"hub.topic": TOPIC, "hub.challenge": "x"},
        {"hub.mode": "subscribe", "hub.challenge": "x"},
        {"hub.mode": "subscribe", "hub.topic": TOPIC},
        {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": ""},
        {
            "hub.mode": "subscribe",
            "hub.topic": TOPIC,
            "hub.challenge": "x" * (MAX_CHALLENGE_LENGTH + 1),
        },
        {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "bin\x00ary"},
        {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "caf\u00e9"},
        {"hub.mode": "publish", "hub.topic": TOPIC, "hub.challenge": "x"},
        {
            "hub.mode": "subscribe",
            "hub.topic": TOPIC,
            "hub.challenge": "x",
            "hub.lease_seconds": "-1",
        },
        {
            "hub.mode": "subscribe",
            "hub.topic": TOPIC,
            "hub.challenge": "x",
            "hub.lease_seconds": "1e9",
        },
    ],
)
def test_malformed_verification_is_400(params: dict[str, str]) -> None:
    decision = verify_intent(params, PENDING, NOW)
    assert decision.status == 400
    assert decision.new_state is None


def test_challenge_of_maximum_length_is_echoed() -> None:
    challenge = "A" * MAX_CHALLENGE_LENGTH
    params = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": challenge}
    assert verify_intent(params, PENDING, NOW).body == challenge


class MultiDict:
    """A minimal multi-dict with ``getlist``, like werkzeug's."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self.pairs if k == key]


def test_verification_accepts_pairs_multidicts_and_parse_qs() -> None:
    raw = "hub.mode=subscribe&hub.topic=" + TOPIC + "&hub.challenge=abc&hub.lease_seconds=60"
    pairs = [tuple(part.split("=", 1)) for part in raw.split("&")]
    for form in (pairs, MultiDict(pairs), parse_qs(raw)):  # type: ignore[arg-type]
        decision = verify_intent(form, PENDING, NOW)  # type: ignore[arg-type]
        assert (decision.status, decision.body, decision.lease_seconds) == (200, "abc", 60)


def test_conflicting_duplicate_parameters_are_400() -> None:
    pairs = [
        ("hub.mode", "subscribe"),
        ("hub.topic", "https://evil.example/"),
        ("hub.topic", TOPIC),
        ("hub.challenge", "abc"),
    ]
    assert verify_intent(pairs, PENDING, NOW).status == 400
    same = [*pairs[:1], ("hub.topic", TOPIC), ("hub.topic", TOPIC), pairs[3]]
    assert verify_intent(same, PENDING, NOW).status == 200


@pytest.mark.parametrize("state", [S.PENDING, S.ACTIVE, S.UNSUBSCRIBING, S.FAILED])
def test_denial_is_acknowledged_and_recorded(state: SubscriptionState) -> None:
    params = {"hub.mode": "denied", "hub.topic": TOPIC, "hub.reason": "topic not allowed"}
    decision = verify_intent(params, SubscriptionRecord(TOPIC, state), NOW)
    assert decision.status == 200
    assert decision.new_state is S.DENIED
    assert decision.reason == "topic not allowed"


def test_denial_edge_cases() -> None:
    base = {"hub.mode": "denied", "hub.topic": TOPIC}
    no_reason = verify_intent(base, PENDING, NOW)
    assert no_reason.status == 200 and no_reason.reason == "denied by hub"
    hostile = verify_intent({**base, "hub.reason": "a\r\nb\x00" + "x" * 5000}, PENDING, NOW)
    assert "\n" not in hostile.reason and "\x00" not in hostile.reason
    assert len(hostile.reason) <= 300
    wrong_topic = verify_intent({**base, "hub.topic": "https://other.example/"}, PENDING, NOW)
    assert wrong_topic.status == 404 and wrong_topic.new_state is None
    already_gone = verify_intent(base, SubscriptionRecord(TOPIC, S.NONE), NOW)
    assert already_gone.status == 200 and already_gone.new_state is None


def test_every_recorded_state_change_is_an_allowed_transition() -> None:
    for state in SubscriptionState:
        for mode in ("subscribe", "unsubscribe", "denied"):
            decision = verify_intent(
                query(mode, lease_seconds="60"), SubscriptionRecord(TOPIC, state), NOW
            )
            if decision.new_state is not None:
                assert can_transition(state, decision.new_state), (state, mode)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("86400", 86400),
        (" 60 ", 60),
        ("0000120", 120),
        ("1", 1),
        (str(MAX_LEASE_SECONDS + 1), MAX_LEASE_SECONDS),
        ("9" * 5000, MAX_LEASE_SECONDS),
    ],
)
def test_parse_lease_seconds(raw: str | None, expected: int | None) -> None:
    assert parse_lease_seconds(raw) == expected


@pytest.mark.parametrize(
    "raw", ["0", "000", "-5", "+5", "1.5", "1e3", "abc", "\u0663", "10 s", "0x10"]
)
def test_parse_lease_seconds_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_lease_seconds(raw)


# --------------------------------------------------------------------------
# Content distribution signatures (websub.rocks 300, 301, 302)
# --------------------------------------------------------------------------

SECRET = b"s3cr3t-value"
BODY = b"<feed>new post \xe2\x9c\x93</feed>"
ALGORITHMS = ["sha1", "sha256", "sha384", "sha512"]


def sign(algorithm: str, body: bytes = BODY, secret: bytes = SECRET) -> str:
    return f"{algorithm}={hmac.new(secret, body, getattr(hashlib, algorithm)).hexdigest()}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_300_valid_signature(algorithm: str) -> None:
    result = verify_signature(SECRET, sign(algorithm), BODY)
    assert result.status is SignatureStatus.OK
    assert result.algorithm == algorithm
    assert result.valid and 200 <= result.http_status < 300
    decision = check_delivery(S.ACTIVE, SECRET, sign(algorithm), BODY)
    assert decision.process and decision.status == 200


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_301_invalid_signature_is_acknowledged_but_ignored(algorithm: str) -> None:
    wrong = sign(algorithm, secret=b"not-the-secret")
    result = verify_signature(SECRET, wrong, BODY)
    assert result.status is SignatureStatus.MISMATCH
    assert not result.valid
    decision = check_delivery(S.ACTIVE, SECRET, wrong, BODY)
    assert 200 <= decision.status < 300
    assert not decision.process
    tampered = check_delivery(S.ACTIVE, SECRET, sign(algorithm), BODY + b" ")
    assert not tampered.process


@pytest.mark.parametrize("header", [None, "", "   "])
def test_302_missing_signature_with_secret_is_4xx(header: str | None) -> None:
    result = verify_signature(SECRET, header, BODY)
    assert result.status is SignatureStatus.MISSING
    decision = check_delivery(S.ACTIVE, SECRET, header, BODY)
    assert 400 <= decision.status < 500
    assert not decision.process


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_signature_is_lenient_about_case_and_whitespace(algorithm: str) -> None:
    method, _, digest = sign(algorithm).partition("=")
    for header in (f"  {method.upper()}={digest.upper()}  ", f"{method.title()} = {digest}\t"):
        assert verify_signature(SECRET, header, BODY).status is SignatureStatus.OK


def test_str_secret_is_utf8_encoded() -> None:
    secret = "sécret"
    header = sign("sha256", secret=secret.encode())
    assert verify_signature(secret, header, BODY).status is SignatureStatus.OK


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("sha256", SignatureStatus.MALFORMED),
        ("sha256=", SignatureStatus.MALFORMED),
        ("sha256=" + "z" * 64, SignatureStatus.MALFORMED),
        ("sha256=" + "a" * 63, SignatureStatus.MALFORMED),
        ("sha1=" + "a" * 64, SignatureStatus.MALFORMED),
        ("sha256=" + "a" * 64 + ",sha1=" + "b" * 40, SignatureStatus.MALFORMED),
        ("md5=" + "a" * 32, SignatureStatus.UNKNOWN_ALGORITHM),
        ("=abc", SignatureStatus.UNKNOWN_ALGORITHM),
        ("sha3-256=" + "a" * 64, SignatureStatus.UNKNOWN_ALGORITHM),
    ],
)
def test_malformed_or_unknown_signatures(header: str, status: SignatureStatus) -> None:
    result = verify_signature(SECRET, header, BODY)
    assert result.status is status
    assert not result.valid
    assert result.http_status == 400


@pytest.mark.parametrize("secret", [None, b"", ""])
def test_no_secret_configured_accepts_anything(secret: bytes | str | None) -> None:
    for header in (None, "garbage", sign("sha256")):
        result = verify_signature(secret, header, BODY)
        assert result.status is SignatureStatus.NO_SECRET and result.valid


def test_signature_uses_constant_time_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    verify_signature(SECRET, sign("sha512"), BODY)
    verify_signature(SECRET, sign("sha512", secret=b"x"), BODY)
    assert len(calls) == 2


def test_delivery_to_unknown_or_finished_subscriptions() -> None:
    assert check_delivery(None, SECRET, sign("sha1"), BODY).status == 404
    for state in (S.NONE, S.FAILED, S.DENIED):
        decision = check_delivery(state, SECRET, sign("sha1"), BODY)
        assert decision.status == 410 and not decision.process
    for state in (S.PENDING, S.ACTIVE, S.UNSUBSCRIBING):
        assert check_delivery(state, None, None, BODY).process


# --------------------------------------------------------------------------
# Leases, renewal and retry timing
# --------------------------------------------------------------------------


def test_renewal_at_about_80_percent() -> None:
    lease = 10 * 86400
    assert renewal_time(NOW, lease, 0.0) == pytest.approx(NOW + 0.80 * lease)
    assert renewal_time(NOW, lease, 0.999999) == pytest.approx(NOW + 0.75 * lease, abs=1.0)
    assert renewal_time(NOW, lease, 0.5) < renewal_time(NOW, lease, 0.0)


@pytest.mark.parametrize(
    ("lease", "offset"),
    [(1, 0.5), (10, 5.0), (100, 50.0), (200, 140.0), (300, 240.0), (3600, 2880.0)],
)
def test_renewal_of_short_leases_keeps_headroom(lease: int, offset: float) -> None:
    assert renewal_time(NOW, lease, 0.0) == pytest.approx(NOW + offset)


@pytest.mark.parametrize(
    ("lease", "jitter"),
    [(0, 0.0), (-10, 0.0), (60, 1.0), (60, -0.1), (60, math.nan), (60, math.inf)],
)
def test_renewal_rejects_bad_input(lease: int, jitter: float) -> None:
    with pytest.raises(ValueError):
        renewal_time(NOW, lease, jitter)


@given(
    granted_at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    lease=st.integers(min_value=1, max_value=10 * MAX_LEASE_SECONDS),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_renewal_strictly_between_grant_and_expiry(
    granted_at: float, lease: int, jitter: float
) -> None:
    renew = renewal_time(granted_at, lease, jitter)
    assert granted_at < renew < granted_at + lease
    assert renew >= granted_at + 0.5 * lease - 1e-6 * max(1.0, granted_at)
    assert renew <= granted_at + 0.8 * lease + 1e-6 * max(1.0, granted_at)


def test_retry_delay_grows_and_caps() -> None:
    delays = [retry_delay(attempt, 0.0) for attempt in range(1, 12)]
    assert delays[:4] == [60.0, 120.0, 240.0, 480.0]
    assert delays[-1] == 6 * 3600.0
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert retry_delay(10_000, 0.0) == 6 * 3600.0  # no overflow
    assert retry_delay(1, 0.999) == pytest.approx(30.0, abs=0.1)
    assert retry_delay(1, 0.0, retry_after=600.0) == 600.0
    assert retry_delay(1, 0.0, retry_after=10 * 86400.0) == 6 * 3600.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempt": 0},
        {"jitter": 1.0},
        {"jitter": -1.0},
        {"base": 0.0},
        {"cap": 1.0},
        {"cap": math.inf},
    ],
)
def test_retry_delay_rejects_bad_input(kwargs: dict[str, float]) -> None:
    args: dict[str, float] = {"attempt": 1, "jitter": 0.0}
    args.update(kwargs)
    with pytest.raises(ValueError):
        retry_delay(**args)  # type: ignore[arg-type]


@given(
    attempt=st.integers(min_value=1, max_value=2000),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_retry_delay_bounds(attempt: int, jitter: float) -> None:
    delay = retry_delay(attempt, jitter, base=30.0, cap=3600.0)
    assert 15.0 <= delay <= 3600.0


# --------------------------------------------------------------------------
# State model
# --------------------------------------------------------------------------


def test_state_values_and_transitions() -> None:
    assert [state.value for state in SubscriptionState] == [
        "none",
        "pending",
        "active",
        "failed",
        "denied",
        "unsubscribing",
    ]
    assert set(TRANSITIONS) == set(SubscriptionState)
    assert can_transition(S.NONE, S.PENDING)
    assert can_transition(S.PENDING, S.ACTIVE)
    assert can_transition(S.ACTIVE, S.ACTIVE)
    assert can_transition(S.UNSUBSCRIBING, S.NONE)
    assert can_transition(S.FAILED, S.PENDING)
    assert not can_transition(S.NONE, S.ACTIVE)
    assert not can_transition(S.DENIED, S.ACTIVE)
    assert not can_transition(S.FAILED, S.ACTIVE)


def test_expected_mode() -> None:
    assert expected_mode(S.PENDING) is Mode.SUBSCRIBE
    assert expected_mode(S.ACTIVE) is Mode.SUBSCRIBE
    assert expected_mode(S.UNSUBSCRIBING) is Mode.UNSUBSCRIBE
    for state in (S.NONE, S.FAILED, S.DENIED):
        assert expected_mode(state) is None
    assert SubscriptionRecord(TOPIC, S.UNSUBSCRIBING).expected_mode is Mode.UNSUBSCRIBE


# --------------------------------------------------------------------------
# A whole subscription, driven through the pure functions as the shell would
# --------------------------------------------------------------------------


def test_full_flow_discover_redirect_verify_deliver_renew_unsubscribe() -> None:
    found = discover(
        [("Link", f'<{TOPIC}?self=other>; rel="self", <{HUB}?redirect=true>; rel="hub"')],
        b"<html><head></head></html>",
        "text/html",
        FETCHED,
    )
    topic = found.topic(FETCHED)
    assert topic == TOPIC + "?self=other"
    token, secret = new_callback_token(), new_secret()
    callback = f"https://reader.example/websub/{token}"
    form = subscription_form("subscribe", callback, topic, lease_seconds=3600, secret=secret)

    state = S.NONE
    assert can_transition(state, S.PENDING)
    state = S.PENDING
    hub, hops = found.hub_urls[0], 0
    answer = classify_hub_response(307, hub, "/blog/100/tok/hub", redirects_followed=hops)
    assert answer.outcome is HubOutcome.REDIRECT and answer.redirect_to is not None
    hub, hops = answer.redirect_to, hops + 1
    assert classify_hub_response(202, hub, redirects_followed=hops).outcome is HubOutcome.ACCEPTED

    verification = {
        "hub.mode": "subscribe",
        "hub.topic": form["hub.topic"],
        "hub.challenge": "xyz",
        "hub.lease_seconds": "3600",
    }
    decision = verify_intent(verification, SubscriptionRecord(topic, state), NOW)
    assert (decision.status, decision.body, decision.new_state) == (200, "xyz", S.ACTIVE)
    assert decision.new_state is not None and decision.lease_seconds is not None
    state = decision.new_state
    renew_at = renewal_time(NOW, decision.lease_seconds, 0.3)
    assert decision.lease_expires_at is not None and NOW < renew_at < decision.lease_expires_at

    signature = "sha256=" + hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
    assert check_delivery(state, secret, signature, BODY).process

    state = S.UNSUBSCRIBING
    bye = {"hub.mode": "unsubscribe", "hub.topic": topic, "hub.challenge": "bye"}
    decision = verify_intent(bye, SubscriptionRecord(topic, state), NOW + 10)
    assert decision.new_state is S.NONE
    assert check_delivery(S.NONE, secret, signature, BODY).status == 410


# --------------------------------------------------------------------------
# Exact answers (pinned so that a changed reason, status or flag is noticed)
# --------------------------------------------------------------------------


def test_secret_and_token_carry_256_bits() -> None:
    assert len(new_secret()) == 43 and len(new_callback_token()) == 43


@pytest.mark.parametrize(
    ("query", "status", "reason"),
    [
        ({"hub.topic": TOPIC, "hub.challenge": "x"}, 400, "missing hub.mode"),
        ({"hub.mode": "subscribe", "hub.challenge": "x"}, 400, "missing hub.topic"),
        ({"hub.mode": "subscribe", "hub.topic": TOPIC}, 400, "missing hub.challenge"),
        (
            [("hub.mode", "subscribe"), ("hub.mode", "unsubscribe")],
            400,
            "conflicting values for hub.mode",
        ),
        (
            {"hub.mode": "subscribe", "hub.topic": TOPIC + "x", "hub.challenge": "x"},
            404,
            "hub.topic does not match the subscription",
        ),
        (
            {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "caf\u00e9"},
            400,
            "hub.challenge is too long or not printable ASCII",
        ),
        (
            {"hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.challenge": "x"},
            404,
            "no unsubscribe is wanted for a subscription in state pending",
        ),
        (
            {"hub.mode": "x" * 60, "hub.topic": TOPIC, "hub.challenge": "x"},
            400,
            f"unknown hub.mode {'x' * 40!r}",
        ),
        (
            {
                "hub.mode": "subscribe",
                "hub.topic": TOPIC,
                "hub.challenge": "x",
                "hub.lease_seconds": "0",
            },
            400,
            "hub.lease_seconds is zero",
        ),
        (
            {
                "hub.mode": "subscribe",
                "hub.topic": TOPIC,
                "hub.challenge": "x",
                "hub.lease_seconds": "-1",
            },
            400,
            "hub.lease_seconds is not a positive integer: '-1'",
        ),
    ],
)
def test_verification_refusals_say_why(query: object, status: int, reason: str) -> None:
    decision = verify_intent(query, SubscriptionRecord(TOPIC, S.PENDING), NOW)  # type: ignore[arg-type]
    assert (decision.status, decision.body, decision.reason, decision.new_state) == (
        status,
        reason,
        reason,
        None,
    )


def test_verification_answers_exactly() -> None:
    assert verify_intent({}, None, NOW).reason == "unknown callback"
    sub = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "c"}
    decision = verify_intent(sub, SubscriptionRecord(TOPIC, S.PENDING), NOW)
    assert (decision.reason, decision.lease_seconds, decision.lease_expires_at) == (
        "subscribe verified",
        None,
        None,
    )
    bye = {"hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.challenge": "c"}
    assert verify_intent(bye, SubscriptionRecord(TOPIC, S.UNSUBSCRIBING), NOW).reason == (
        "unsubscribe verified"
    )
    denied = {"hub.mode": "denied", "hub.topic": TOPIC}
    decision = verify_intent(denied, SubscriptionRecord(TOPIC, S.ACTIVE), NOW)
    assert (decision.status, decision.body, decision.reason) == (200, "", "denied by hub")


def test_reasons_for_logs_are_cleaned_and_bounded() -> None:
    hidden = "\x00" * 700 + "after the junk"
    answer = classify_hub_response(500, HUB, body=hidden)
    assert answer.reason == "hub answered 500"  # only the first 600 characters are looked at
    answer = classify_hub_response(500, HUB, body="\xff".encode("latin-1") + b" oops")
    assert answer.reason == "hub answered 500: \ufffd oops"
    assert classify_hub_response(500, HUB, body="text body").reason == "hub answered 500: text body"


@pytest.mark.parametrize(
    ("status", "location", "hops", "expected"),
    [
        (202, None, 0, websub.HubResponse(HubOutcome.ACCEPTED, 202)),
        (299, None, 0, websub.HubResponse(HubOutcome.ACCEPTED, 299)),
        (
            300,
            None,
            0,
            websub.HubResponse(
                HubOutcome.FAILED,
                300,
                "hub answered 300 (only 307/308 redirects are followed for a POST)",
            ),
        ),
        (
            301,
            "/x",
            0,
            websub.HubResponse(
                HubOutcome.FAILED,
                301,
                "hub answered 301 (only 307/308 redirects are followed for a POST)",
            ),
        ),
        (
            399,
            None,
            0,
            websub.HubResponse(
                HubOutcome.FAILED,
                399,
                "hub answered 399 (only 307/308 redirects are followed for a POST)",
            ),
        ),
        (400, None, 0, websub.HubResponse(HubOutcome.FAILED, 400, "hub answered 400")),
        (
            307,
            "/h",
            4,
            websub.HubResponse(
                HubOutcome.REDIRECT,
                307,
                "hub moved to https://websub.example/h",
                "https://websub.example/h",
                False,
            ),
        ),
        (
            308,
            "/h",
            0,
            websub.HubResponse(
                HubOutcome.REDIRECT,
                308,
                "hub moved to https://websub.example/h",
                "https://websub.example/h",
                True,
            ),
        ),
        (
            307,
            "/h",
            5,
            websub.HubResponse(
                HubOutcome.FAILED, 307, f"hub redirected more than {MAX_HUB_REDIRECTS} times"
            ),
        ),
        (
            308,
            None,
            0,
            websub.HubResponse(
                HubOutcome.FAILED, 308, "hub answered 308 without a usable http(s) Location"
            ),
        ),
    ],
)
def test_hub_answers_exactly(
    status: int, location: str | None, hops: int, expected: websub.HubResponse
) -> None:
    assert classify_hub_response(status, HUB, location, redirects_followed=hops) == expected


def test_redirect_count_starts_at_zero() -> None:
    for _ in range(MAX_HUB_REDIRECTS):
        assert classify_hub_response(307, HUB, "/h").outcome is HubOutcome.REDIRECT


def test_delivery_decisions_exactly() -> None:
    assert check_delivery(None, SECRET, sign("sha1"), BODY) == websub.DeliveryDecision(
        404, False, "unknown callback"
    )
    assert check_delivery(S.DENIED, SECRET, sign("sha1"), BODY) == websub.DeliveryDecision(
        410, False, "subscription is denied"
    )
    decision = check_delivery(S.ACTIVE, SECRET, sign("sha1"), BODY)
    assert decision == websub.DeliveryDecision(
        200, True, "signature ok", verify_signature(SECRET, sign("sha1"), BODY)
    )
    assert decision.signature is not None and decision.signature.status is SignatureStatus.OK


def test_lease_boundaries() -> None:
    assert parse_lease_seconds("0" * 20 + "5") == 5  # leading zeros are not a long number
    assert parse_lease_seconds("999999999") == MAX_LEASE_SECONDS
    assert parse_lease_seconds(str(MAX_LEASE_SECONDS)) == MAX_LEASE_SECONDS
    assert parse_lease_seconds(str(MAX_LEASE_SECONDS - 1)) == MAX_LEASE_SECONDS - 1
    with pytest.raises(ValueError, match=r"^hub.lease_seconds is not a positive integer: 'x{40}'$"):
        parse_lease_seconds("x" * 50)


def test_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"^jitter must be in \[0, 1\), got 1.0$"):
        renewal_time(NOW, 10, 1.0)
    with pytest.raises(ValueError, match=r"^lease_seconds must be positive$"):
        renewal_time(NOW, 0, 0.0)
    with pytest.raises(ValueError, match=r"^attempt counts failures and starts at 1$"):
        retry_delay(0, 0.0)
    with pytest.raises(ValueError, match=r"^need 0 < base <= cap < inf$"):
        retry_delay(1, 0.0, base=0.0)
    with pytest.raises(ValueError, match=r"^hub.lease_seconds must be an int$"):
        subscription_form("subscribe", CALLBACK, TOPIC, lease_seconds=True)
    with pytest.raises(ValueError, match=r"^hub.lease_seconds must be positive$"):
        subscription_form("subscribe", CALLBACK, TOPIC, lease_seconds=0)
    with pytest.raises(ValueError, match=r"^hub.secret must be 1 to 199 bytes long$"):
        subscription_form("subscribe", CALLBACK, TOPIC, secret="")
    with pytest.raises(ValueError, match=r"^hub.callback must be an absolute http\(s\) URL: '/x'$"):
        subscription_form("subscribe", "/x", TOPIC)
    with pytest.raises(ValueError, match=r"^hub.topic must be an absolute http\(s\) URL: 'x'$"):
        subscription_form("subscribe", CALLBACK, "x")


def test_backoff_and_form_boundaries() -> None:
    assert retry_delay(1, 0.0, base=0.5, cap=0.5) == 0.5  # base below 1 s and cap == base
    assert retry_delay(200, 0.0, base=1.0, cap=1e300) == 2.0**64
    form = subscription_form("subscribe", CALLBACK, TOPIC, lease_seconds=1)
    assert form["hub.lease_seconds"] == "1"
    assert renewal_time(NOW, 200, 0.0) == NOW + 140  # 60 s of headroom before the end
