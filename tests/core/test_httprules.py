"""The API's request rules, without a server."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedstream.core.config import FeedConfig
from feedstream.core.httprules import (
    ApiError,
    check_push_auth,
    cors_headers,
    parse_entries_query,
    push_media_type,
)

FEEDS = {"a", "b"}


def test_defaults() -> None:
    query = parse_entries_query({}, FEEDS)
    assert (query.after, query.timeout, query.feeds, query.limit) == (None, 25.0, None, 50)


def test_full_query() -> None:
    query = parse_entries_query(
        {"after": "abc-1", "timeout": "0", "feeds": "a, b,", "limit": "500"}, FEEDS
    )
    assert (query.after, query.timeout, query.feeds, query.limit) == ("abc-1", 0.0, {"a", "b"}, 500)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"timeout": "-1"}, "timeout: must be a number from 0 to 60"),
        ({"timeout": "inf"}, "timeout"),
        ({"limit": "abc"}, "limit: must be a whole number from 1 to 500"),
        ({"feeds": "c"}, "feeds: unknown feed 'c'"),
        ({"feeds": "<script>"}, "feeds: unknown feed"),
        ({"after": "\x00"}, "after: not a cursor"),
    ],
)
def test_bad_queries(args: dict[str, str], reason: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_entries_query(args, FEEDS)
    assert info.value.status == 400 and reason in info.value.reason


@given(
    st.dictionaries(
        st.sampled_from(["after", "timeout", "feeds", "limit", "x"]), st.text(max_size=80)
    )
)
def test_any_query_is_accepted_or_a_400(args: dict[str, str]) -> None:
    try:
        parse_entries_query(args, FEEDS)
    except ApiError as error:
        assert error.status == 400 and error.reason


def test_cors() -> None:
    assert cors_headers("https://x.org", ["*"]) == {"Access-Control-Allow-Origin": "*"}
    allowed = ["https://app.example.org"]
    assert (
        cors_headers("https://app.example.org", allowed)["Access-Control-Allow-Origin"]
        == "https://app.example.org"
    )
    assert "Access-Control-Allow-Origin" not in cors_headers("https://evil.example", allowed)
    assert "Access-Control-Allow-Origin" not in cors_headers(None, allowed)


def test_push_media_types() -> None:
    assert push_media_type("application/atom+xml; charset=utf-8") == "application/atom+xml"
    assert push_media_type(None) is None
    with pytest.raises(ApiError) as info:
        push_media_type("text/html")
    assert info.value.status == 415


def test_push_auth() -> None:
    feed = FeedConfig(id="f", token="tok-12345678", secret="key-12345678")
    check_push_auth(feed, "Bearer tok-12345678", None, b"x")
    check_push_auth(feed, "bearer  tok-12345678 ", None, b"x")
    good = "sha256=" + hmac.new(b"key-12345678", b"body", hashlib.sha256).hexdigest()
    check_push_auth(feed, None, good, b"body")
    check_push_auth(feed, "Bearer wrong", good, b"body")  # either credential will do
    for authorization, signature, body in [
        (None, None, b"x"),
        ("Bearer wrong", None, b"x"),
        ("Basic dG9rOg==", None, b"x"),
        (None, good, b"other body"),
        (None, "sha256=zz", b"body"),
    ]:
        with pytest.raises(ApiError) as info:
            check_push_auth(feed, authorization, signature, body)
        assert info.value.status == 401
    token_only = FeedConfig(id="t", token="tok-12345678")
    with pytest.raises(ApiError):
        check_push_auth(token_only, None, good, b"body")  # no secret configured: no HMAC
