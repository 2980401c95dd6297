"""Folding the same story from several feeds: canonical URLs, title keys and the index."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedstream.core.fold import (
    DEFAULT_WINDOW,
    TRACKING_PARAMETERS,
    FoldIndex,
    canonical_url,
    title_key,
)
from feedstream.core.urls import MAX_URL_CHARS

HOUR = 3600.0

# --- canonical_url -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("http://Example.COM:80/a/?utm_source=x#f", "http://example.com/a"),
        ("HTTPS://EXAMPLE.com", "https://example.com/"),
        ("https://example.com/", "https://example.com/"),
        ("https://example.com:443/x", "https://example.com/x"),
        ("http://example.com:443/x", "http://example.com:443/x"),  # not the default for http
        ("https://example.com:80/x", "https://example.com:80/x"),
        ("https://example.com:8443/x/", "https://example.com:8443/x"),
        ("http://example.com:080/", "http://example.com/"),
        ("  https://example.com/a  ", "https://example.com/a"),
        # the path keeps its case; trailing slashes go, the root stays
        ("https://example.com/A/B/", "https://example.com/A/B"),
        ("https://example.com/a//", "https://example.com/a"),
        ("https://example.com//", "https://example.com/"),
        ("https://example.com/a/./b/../c/", "https://example.com/a/c"),
        ("https://example.com/a/..", "https://example.com/"),
        ("https://example.com/../../a", "https://example.com/a"),
        ("https://example.com/a/%2E%2E/b", "https://example.com/b"),
        # fragments go, even alone
        ("https://example.com/a#", "https://example.com/a"),
        ("https://example.com/a#top?x=1", "https://example.com/a"),
        # IDN hosts: one ASCII form, whatever the spelling
        ("https://BÜCHER.example/x", "https://xn--bcher-kva.example/x"),
        ("https://xn--bcher-kva.example/x", "https://xn--bcher-kva.example/x"),
        ("https://XN--BCHER-KVA.example/x", "https://xn--bcher-kva.example/x"),
        ("https://example.com./a", "https://example.com/a"),
        ("http://[2001:DB8::1]:80/a", "http://[2001:db8::1]/a"),
        ("http://[::1]:8080/", "http://[::1]:8080/"),
        ("http://127.0.0.1:80/a", "http://127.0.0.1/a"),
        # percent-encoding in one form
        ("https://example.com/%7euser/%c3%a9", "https://example.com/~user/%C3%A9"),
        ("https://example.com/café", "https://example.com/caf%C3%A9"),
        ("https://example.com/a b", "https://example.com/a%20b"),
        ("https://example.com/a%2Fb", "https://example.com/a%2Fb"),  # an encoded / stays encoded
        ("https://example.com/a%2fb", "https://example.com/a%2Fb"),
        ("https://example.com/100%", "https://example.com/100%25"),
        ("https://example.com/%zz", "https://example.com/%25zz"),
        ("https://example.com/?q=caf%c3%a9&r=a%2bb", "https://example.com/?q=caf%C3%A9&r=a%2Bb"),
        ("https://example.com/?q=a+b", "https://example.com/?q=a+b"),
        # query: order kept, only tracking parameters removed
        ("https://example.com/?b=2&a=1", "https://example.com/?b=2&a=1"),
        (
            "https://example.com/p?id=7&utm_source=rss&utm_medium=feed&fbclid=abc&page=2&gclid=x",
            "https://example.com/p?id=7&page=2",
        ),
        (
            "https://example.com/p?mc_cid=1&mc_eid=2&igshid=3&ref_src=twsrc&yclid=4&_hsenc=5"
            "&_hsmi=6&mkt_tok=7&keep=1",
            "https://example.com/p?keep=1",
        ),
        ("https://example.com/p?UTM_Source=x&FBCLID=y&k=v", "https://example.com/p?k=v"),
        ("https://example.com/p?utm%5Fsource=x&k=v", "https://example.com/p?k=v"),
        ("https://example.com/p?utm_source", "https://example.com/p"),
        (
            "https://example.com/p?utm=1&notutm_x=2&ref=rss",
            "https://example.com/p?utm=1&notutm_x=2&ref=rss",
        ),
        ("https://example.com/p?a=1&&b=2&", "https://example.com/p?a=1&b=2"),
        ("https://example.com/p?", "https://example.com/p"),
        ("https://example.com/p?a=1&a=2", "https://example.com/p?a=1&a=2"),
        ("https://example.com/p?x=utm_source", "https://example.com/p?x=utm_source"),
    ],
)
def test_canonical_url(url: str, canonical: str) -> None:
    assert canonical_url(url) == canonical
    assert canonical_url(canonical) == canonical  # a fixed point


@pytest.mark.parametrize(
    "url",
    [
        None,
        42,
        "",
        "   ",
        "example.com/a",
        "/a/b",
        "ftp://example.com/a",
        "mailto:a@example.com",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "http://",
        "https:///path-only",
        "http://user:secret@example.com/",
        "http://example.com:99999/",
        "http://example.com:port/",
        "http://example.com:0/",
        "http://[::1/",
        "http://exa mple.com/",
        "http://exa<mple.com/",
        "http://../",
        "http://.example.com/",
        "http://a..example.com/",
        "https://example.com/" + "a" * MAX_URL_CHARS,
    ],
)
def test_canonical_url_refuses(url: object) -> None:
    assert canonical_url(url) is None


def test_every_listed_tracking_parameter_goes() -> None:
    for name in sorted(TRACKING_PARAMETERS):
        assert (
            canonical_url(f"https://example.com/?{name}=1&keep=2") == "https://example.com/?keep=2"
        )


@given(st.text(max_size=200))
def test_canonical_url_never_raises_and_is_idempotent(text: str) -> None:
    for candidate in (text, "http://example.com/" + text, "https://" + text):
        result = canonical_url(candidate)
        if result is not None:
            assert result.startswith(("http://", "https://"))
            assert "#" not in result
            assert canonical_url(result) == result


# --- title_key -----------------------------------------------------------------------------


def test_title_key_folds_case_punctuation_and_space() -> None:
    expected = "apple s new chip is faster than expected"
    assert title_key("Apple's new chip is faster than expected!") == expected
    assert (
        title_key("  APPLE\u2019S NEW CHIP \u2014 is faster, than \u201cexpected\u201d  ")
        == expected
    )
    assert title_key("apple_s new chip is faster than expected") == expected
    assert (
        title_key("Straße wird gebaut: ab Montag gesperrt")
        == "strasse wird gebaut ab montag gesperrt"
    )


@pytest.mark.parametrize(
    "title",
    [
        None,
        7,
        "",
        "Weekly links",
        "Go 1.2 is out now",  # six words, but 17 characters only
        "One two three four",  # 18 characters, four words
        "a b c d e f g h i j",  # ten words, 19 characters
        "!!! ??? ... --- !!!",
        "日本語のタイトルはスペースなしで書かれています",
    ],
)
def test_title_key_refuses_titles_that_are_not_specific(title: object) -> None:
    assert title_key(title) is None


def test_title_key_thresholds() -> None:
    assert title_key("abcd efgh ijkl mnop qrst") == "abcd efgh ijkl mnop qrst"  # 5 words, 24 chars
    assert title_key("abc def ghi jkl mno") is None  # 19 characters
    assert title_key("abc def ghi jkl mnop") == "abc def ghi jkl mnop"  # 20 characters
    assert title_key("abcdefghij abcdefghij abcdefghij abcd") is None  # 4 words


# --- FoldIndex -----------------------------------------------------------------------------

URL = "https://news.example/story?utm_source=a"
SAME_URL = "HTTPS://news.example:443/story/#comments"
TITLE = "Big company announces a big new thing today"


def test_cross_feed_fold_by_url() -> None:
    index = FoldIndex()
    assert index.check("a", "a:1", URL, "Title A", now=0.0) is None
    assert index.check("b", "b:1", SAME_URL, "Another title entirely", now=10.0) == "a:1"
    assert index.check("c", "c:1", URL, None, now=20.0) == "a:1"  # always the first entry


def test_the_same_feed_never_folds() -> None:
    index = FoldIndex()
    assert index.check("a", "a:1", URL, TITLE, now=0.0) is None
    assert index.check("a", "a:2", SAME_URL, TITLE, now=1.0) is None
    assert index.check("a", "a:3", None, TITLE, now=2.0) is None
    assert index.check("b", "b:1", URL, None, now=3.0) == "a:1"


def test_different_urls_do_not_fold_even_with_the_same_title() -> None:
    index = FoldIndex()
    assert index.check("a", "a:1", "https://one.example/x", TITLE, now=0.0) is None
    assert index.check("b", "b:1", "https://two.example/x", TITLE, now=1.0) is None


def test_without_a_url_the_title_decides() -> None:
    index = FoldIndex()
    assert index.check("a", "a:1", "https://one.example/x", TITLE, now=0.0) is None
    assert index.check("b", "b:1", None, TITLE.upper() + "!", now=1.0) == "a:1"
    assert index.check("c", "c:1", "javascript:x()", TITLE, now=2.0) == "a:1"  # unusable URL
    assert index.check("d", "d:1", None, "Short title", now=3.0) is None
    assert index.check("e", "e:1", None, "Short title", now=4.0) is None  # too short to fold
    assert index.check("f", "f:1", None, None, now=5.0) is None
    assert len(index) == 2  # a:1's URL and title; nothing for the others


def test_a_title_only_first_entry_does_not_catch_entries_with_urls() -> None:
    index = FoldIndex()
    assert index.check("a", "a:1", None, TITLE, now=0.0) is None
    assert index.check("b", "b:1", URL, TITLE, now=1.0) is None


def test_duplicates_are_not_recorded() -> None:
    index = FoldIndex()
    index.check("a", "a:1", URL, "First title of the story here", now=0.0)
    assert index.check("b", "b:1", URL, "Second title of the story here", now=1.0) == "a:1"
    assert len(index) == 2
    assert index.check("c", "c:1", None, "Second title of the story here", now=2.0) is None


def test_the_window() -> None:
    index = FoldIndex(window=48 * HOUR)
    assert index.window == DEFAULT_WINDOW == 48 * HOUR
    index.check("a", "a:1", URL, None, now=0.0)
    assert index.check("b", "b:1", URL, None, now=48 * HOUR) == "a:1"  # the edge is inside
    assert index.check("b", "b:2", URL, None, now=48 * HOUR + 1) is None  # expired: b:2 is first
    assert index.check("a", "a:9", URL, None, now=48 * HOUR + 2) == "b:2"


def test_expiry_frees_the_keys() -> None:
    index = FoldIndex(window=10.0)
    for n in range(100):
        index.check("a", f"a:{n}", f"https://example.com/{n}", None, now=float(n))
    assert len(index) == 11  # the entries of the last 10 seconds, both ends included
    assert index.check("b", "b:1", "https://example.com/89", None, now=99.0) == "a:89"
    assert index.check("b", "b:2", "https://example.com/88", None, now=99.0) is None


def test_the_size_bound_evicts_the_oldest() -> None:
    index = FoldIndex(max_keys=3)
    for n in range(5):
        index.check("a", f"a:{n}", f"https://example.com/{n}", None, now=float(n))
    assert len(index) == 3
    assert index.check("b", "b:0", "https://example.com/0", None, now=5.0) is None  # evicted
    assert index.check("b", "b:4", "https://example.com/4", None, now=6.0) == "a:4"


def test_many_entries_stay_bounded() -> None:
    index = FoldIndex(window=100.0, max_keys=1000)
    for n in range(20_000):
        index.check(
            f"f{n % 7}",
            f"e{n}",
            f"https://example.com/{n}",
            f"story {n} of many words here",
            now=n / 10,
        )
        assert len(index) <= 1000
    assert index.check("x", "x:1", "https://example.com/19999", None, now=2000.0) == "e19999"


def test_add_seeds_without_checking() -> None:
    index = FoldIndex()
    index.add("a", "a:1", URL, TITLE, seen_at=0.0)
    index.add("b", "b:1", URL, TITLE, seen_at=1.0)  # a key held stays with its first entry
    assert len(index) == 2
    assert index.check("c", "c:1", SAME_URL, None, now=2.0) == "a:1"
    assert index.check("c", "c:2", None, TITLE, now=3.0) == "a:1"
    assert index.check("a", "a:2", URL, None, now=4.0) is None


def test_add_replaces_an_expired_key() -> None:
    index = FoldIndex(window=10.0)
    index.add("a", "a:1", URL, None, seen_at=0.0)
    index.add("b", "b:1", URL, None, seen_at=20.0)
    assert index.check("c", "c:1", URL, None, now=21.0) == "b:1"


def test_a_clock_that_steps_back_does_not_break_the_index() -> None:
    index = FoldIndex(window=10.0)
    index.check("a", "a:1", "https://example.com/1", None, now=100.0)
    index.check("a", "a:2", "https://example.com/2", None, now=50.0)
    assert index.check("b", "b:1", "https://example.com/2", None, now=55.0) == "a:2"
    assert index.check("b", "b:2", "https://example.com/2", None, now=70.0) is None


def test_clear() -> None:
    index = FoldIndex()
    index.check("a", "a:1", URL, TITLE, now=0.0)
    index.clear()
    assert len(index) == 0
    assert index.check("b", "b:1", URL, TITLE, now=1.0) is None


@pytest.mark.parametrize(
    "arguments", [{"window": 0.0}, {"window": -1.0}, {"window": float("nan")}, {"max_keys": 0}]
)
def test_invalid_settings(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FoldIndex(**arguments)
