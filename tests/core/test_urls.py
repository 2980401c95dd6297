"""The one http(s) URL rule and its one length limit."""

from __future__ import annotations

import pytest

from feedstream.core.sanitize import MAX_URL_CHARS as SANITIZE_LIMIT
from feedstream.core.urls import MAX_URL_CHARS, is_http_url, resolve_http_url


@pytest.mark.parametrize(
    "url",
    [
        "http://example.org",
        "https://example.org/feed.xml?x=1#top",
        "https://example.org:8443/",
        "http://[::1]:8080/feed",
        "https://example.org/" + "a" * (MAX_URL_CHARS - len("https://example.org/")),
    ],
)
def test_accepted(url: str) -> None:
    assert is_http_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "example.org/feed",
        "/feed.xml",
        "ftp://example.org/feed",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "http://",
        "https:///path-only",
        "http://example.org:99999/",  # port out of range
        "http://example.org:port/",
        "http://[::1/",  # broken IPv6 literal
        "https://example.org/" + "a" * (MAX_URL_CHARS - len("https://example.org/") + 1),
    ],
)
def test_refused(url: str) -> None:
    assert not is_http_url(url)


def test_one_limit_for_the_whole_package() -> None:
    assert MAX_URL_CHARS == SANITIZE_LIMIT == 2048


def test_resolve_against_a_base() -> None:
    base = "https://blog.example/posts/1"
    assert resolve_http_url("/hub", base) == "https://blog.example/hub"
    assert resolve_http_url("  https://hub.example/  ", base) == "https://hub.example/"
    assert resolve_http_url("//cdn.example/x", base) == "https://cdn.example/x"
    assert resolve_http_url("https://hub.example/", "") == "https://hub.example/"


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "   ",
        "mailto:hub@example.org",
        "https://hub.example/a b",  # an inner space is refused, not guessed at
        "https://hub.example/\x00",
        "https://hub.example:70000/",
        "https://hub.example/" + "a" * 5000,
    ],
)
def test_resolve_refuses(ref: str) -> None:
    assert resolve_http_url(ref, "https://blog.example/") is None


def test_resolve_refuses_a_result_over_the_limit() -> None:
    base = "https://blog.example/" + "d/" * 1000
    ref = "x" * 100  # short itself, too long once joined
    assert len(ref) <= MAX_URL_CHARS and resolve_http_url(ref, base) is None


def test_relative_without_a_usable_base_is_refused() -> None:
    assert resolve_http_url("/hub", "") is None
    assert resolve_http_url("/hub", "mailto:x@example.org") is None
