"""Tests for feedstream.core.sanitize: HTML allow-listing, plain text and URL checks."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedstream.core.sanitize import (
    ALLOWED_TAGS,
    MAX_URL_CHARS,
    clean_html,
    plain_text,
    safe_url,
    sanitized_text,
)

BASE = "https://example.com/blog/post.html"
TAG_LIKE = re.compile(r"<[a-zA-Z/!?]")


class _Elements(HTMLParser):
    """Collects (tag, attributes) of every start tag, the way a browser would read them."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))


def elements(markup: str | None) -> list[tuple[str, dict[str, str | None]]]:
    return _Elements(markup or "").elements


# --- clean_html ------------------------------------------------------------------------------


def test_clean_html_keeps_formatting() -> None:
    markup = "<p>Some <b>bold</b>, <em>em</em> and <code>code</code></p><ul><li>one</li></ul>"
    assert clean_html(markup, BASE) == markup


@pytest.mark.parametrize(
    "tag",
    ["script", "style", "iframe", "object", "embed", "form", "input", "meta", "link", "base",
     "svg", "math", "textarea", "select", "template", "noscript"],
)  # fmt: skip
def test_clean_html_drops_dangerous_elements(tag: str) -> None:
    cleaned = clean_html(
        f'<p>before</p><{tag} src="https://x.example/" href="/x">inner</{tag}>', BASE
    )
    assert cleaned is not None
    assert all(name in {"p"} for name, _ in elements(cleaned))
    assert "before" in cleaned


def test_clean_html_drops_script_and_style_content() -> None:
    assert clean_html("<script>alert(1)</script><style>p{}</style>ok", BASE) == "ok"


def test_clean_html_drops_event_handlers_style_and_identity_attributes() -> None:
    cleaned = clean_html(
        '<p onclick="alert(1)" style="position:fixed" id="x" class="c" name="n" title="t">hi</p>'
        '<img src="a.png" onerror="alert(2)" alt="a">',
        BASE,
    )
    assert cleaned == '<p title="t">hi</p><img src="https://example.com/blog/a.png" alt="a">'


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "  javascript:alert(1)",
        "java\tscript:alert(1)",
        "java&#x09;script:alert(1)",
        "&#106;avascript:alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
    ],
)
def test_clean_html_drops_unsafe_link_schemes(href: str) -> None:
    cleaned = clean_html(f'<a href="{href}">x</a><img src="{href}">', BASE)
    assert cleaned == '<a rel="noopener noreferrer nofollow">x</a><img>'


def test_clean_html_links_get_rel_and_absolute_urls() -> None:
    cleaned = clean_html(
        '<a href="/a">a</a><a href="b?q=1#f">b</a><a href="//cdn.example/c">c</a>'
        '<a href="mailto:me@example.com">m</a><a href="https://other.example/" rel="opener">o</a>',
        BASE,
    )
    assert [attrs for _, attrs in elements(cleaned)] == [
        {"href": "https://example.com/a", "rel": "noopener noreferrer nofollow"},
        {"href": "https://example.com/blog/b?q=1#f", "rel": "noopener noreferrer nofollow"},
        {"href": "https://cdn.example/c", "rel": "noopener noreferrer nofollow"},
        {"href": "mailto:me@example.com", "rel": "noopener noreferrer nofollow"},
        {"href": "https://other.example/", "rel": "noopener noreferrer nofollow"},
    ]


@pytest.mark.parametrize(
    "base",
    [None, "", "javascript:alert(1)", "file:///tmp/", "/relative", "http://a b.example/",
     "http://exa%mple.com/"],
)  # fmt: skip
def test_clean_html_drops_relative_urls_without_usable_base(base: str | None) -> None:
    cleaned = clean_html(
        '<a href="/a">a</a><img src="b.png"><a href="https://x.example/">x</a>', base
    )
    assert [attrs.get("href") or attrs.get("src") for _, attrs in elements(cleaned)] == [
        None,
        None,
        "https://x.example/",
    ]


@pytest.mark.parametrize(
    "markup", [None, "", "   ", "<script>x</script>", "<!-- only a comment -->"]
)
def test_clean_html_empty_result_is_none(markup: str | None) -> None:
    assert clean_html(markup, BASE) is None


def test_clean_html_removes_control_characters_and_lone_surrogates() -> None:
    assert clean_html("<p>a\x00b\x1bc&#1;d\ud800e</p>", BASE) == "<p>abcde</p>"


def test_clean_html_escapes_text_that_looks_like_markup() -> None:
    assert clean_html("<p>5 &lt; 6 &amp; &lt;script&gt;</p>", BASE) == (
        "<p>5 &lt; 6 &amp; &lt;script&gt;</p>"
    )


_FRAGMENTS = [
    "<a href=", "<img src=", "<svg>", "<script>", "</script>", "<iframe src=", "<p", ">", "<",
    "/>", '"', "'", " onerror=", " onclick=", " style=", "javascript:", "java\tscript:",
    "data:text/html,", "vbscript:", "mailto:", "http://x.example/", "//evil.example/", "/rel",
    "&#x6a;", "&lt;", "&amp;", "alert(1)", " ", "\n", "<!--", "-->", "<math>", "<form>",
]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    fragments=st.lists(st.sampled_from(_FRAGMENTS), max_size=30),
    base=st.sampled_from([None, BASE]),
)
def test_clean_html_output_is_always_safe(fragments: list[str], base: str | None) -> None:
    cleaned = clean_html("".join(fragments), base)
    for tag, attrs in elements(cleaned):
        assert tag in ALLOWED_TAGS
        for name, value in attrs.items():
            assert not name.startswith("on") and name != "style"
            if name in ("href", "src"):
                assert value is not None
                schemes = (
                    ("http://", "https://", "mailto:")
                    if name == "href"
                    else ("http://", "https://")
                )
                assert value.startswith(schemes)
    assert "<script" not in (cleaned or "").lower()


# --- plain_text ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Fish &amp; Chips", "Fish & Chips"),
        ("Fish & Chips < 5 > 3", "Fish & Chips < 5 > 3"),
        ("5 < 6", "5 < 6"),
        ("x <3 y", "x <3 y"),
        ("1 &lt; 2", "1 < 2"),
        ("AT&T", "AT&T"),
        ("&amp;amp; once", "&amp; once"),
        ("&amp;lt;b&amp;gt;", "&lt;b&gt;"),
        ("<b>bold</b> text", "bold text"),
        ("Fi<b>sh</b>", "Fish"),
        ("<p>one</p><p>two</p>", "one two"),
        ("Hello<br>World", "Hello World"),
        ("<script>alert(1)</script>ok", "ok"),
        ("<style>p { color: red }</style>ok", "ok"),
        ("ok <script", "ok"),
        ("ok <script src=x", "ok"),
        ("<!-- comment -->x", "x"),
        ("<?php echo 1 ?>x", "x"),
        ("a <!-- never closed", "a"),
        ("&lt;b&gt;escaped&lt;/b&gt; markup", "escaped markup"),
        ("&lt;script&gt;alert(1)&lt;/script&gt;after", "after"),
        ("  lots \n\t of\u00a0 space  ", "lots of space"),
        ("bell\x07 and \x1b[31mescape\x9b", "bell and [31mescape"),
        ("lone \ud800surrogate", "lone surrogate"),
    ],
)
def test_plain_text_html(value: str, expected: str) -> None:
    assert plain_text(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Fish & Chips < 5 > 3", "Fish & Chips < 5 > 3"),
        ("AT&amp;T is literal", "AT&amp;T is literal"),
        ("a <b>tag</b> still goes", "a tag still goes"),
        ("<script>alert(1)</script>ok", "ok"),
        ("ok <script", "ok script"),
        ("if a<b then", "if ab then"),
    ],
)
def test_plain_text_literal(value: str, expected: str) -> None:
    assert plain_text(value, is_html=False) == expected


@pytest.mark.parametrize("value", [None, "", "   ", "<b></b>", "<script>x</script>", "\x00\x01"])
def test_plain_text_empty_is_none(value: str | None) -> None:
    assert plain_text(value) is None


@pytest.mark.parametrize(
    ("value", "max_chars", "expected"),
    [
        ("The quick brown fox", 19, "The quick brown fox"),
        ("The quick brown fox", 12, "The quick…"),
        ("The quick brown fox", 10, "The quick…"),
        ("The quick brown fox", 11, "The quick…"),
        ("Supercalifragilistic", 8, "Superca…"),
        ("abc", 1, "…"),
    ],
)
def test_plain_text_truncates_on_word_boundary(value: str, max_chars: int, expected: str) -> None:
    result = plain_text(value, max_chars=max_chars)
    assert result == expected
    assert len(result) <= max_chars


def test_plain_text_rejects_nonsense_limit() -> None:
    with pytest.raises(ValueError):
        plain_text("x", max_chars=0)


# Text rich in the characters that make markup, so that examples often contain near-tags.
markupish = st.text(alphabet=st.sampled_from("<>/!?&;#=\"' -abscriptAB\x00\t\n"), max_size=80)


@settings(max_examples=400, deadline=None)
@given(value=st.one_of(st.text(max_size=200), markupish), is_html=st.booleans())
def test_plain_text_never_returns_a_tag(value: str, is_html: bool) -> None:
    result = plain_text(value, is_html=is_html, max_chars=50)
    assert result is None or (TAG_LIKE.search(result) is None and len(result) <= 50)


@pytest.mark.parametrize(
    "value",
    ["<" * 100_000, "<<b>" * 50_000, "<a" * 100_000, "<script>" * 20_000, "<!--" * 50_000,
     "&lt;a" * 50_000, "<script<style<!--<a " * 10_000],
)  # fmt: skip
def test_plain_text_stays_fast_on_hostile_markup(value: str) -> None:
    for is_html in (True, False):
        started = time.perf_counter()
        result = plain_text(value, is_html=is_html)
        assert time.perf_counter() - started < 2
        assert result is None or not TAG_LIKE.search(result)


# --- safe_url --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "base", "expected"),
    [
        ("https://example.com/a?b=c#d", None, "https://example.com/a?b=c#d"),
        ("HTTP://Example.com/", None, "http://Example.com/"),
        ("  https://example.com/x  ", None, "https://example.com/x"),
        ("https://exa\tmple.com/\nx", None, "https://example.com/x"),
        ("https://example.com/a b", None, "https://example.com/a%20b"),
        ("/a", BASE, "https://example.com/a"),
        ("b", BASE, "https://example.com/blog/b"),
        ("//cdn.example/c", BASE, "https://cdn.example/c"),
        ("?page=2", BASE, "https://example.com/blog/post.html?page=2"),
        ("https://example.com:8443/", None, "https://example.com:8443/"),
        ("http://[::1]:8080/x", None, "http://[::1]:8080/x"),
        ("https://bücher.example/ü", None, "https://bücher.example/ü"),
    ],
)
def test_safe_url_accepts(url: str, base: str | None, expected: str) -> None:
    assert safe_url(url, base) == expected


@pytest.mark.parametrize(
    ("url", "base"),
    [
        (None, BASE),
        ("", BASE),
        ("   ", BASE),
        ("javascript:alert(1)", BASE),
        ("JAVASCRIPT:alert(1)", BASE),
        ("java\tscript:alert(1)", BASE),
        ("java\nscript:alert(1)", BASE),
        ("\x01javascript:alert(1)", BASE),
        (" javascript:alert(1)", BASE),
        ("java\x00script:alert(1)", BASE),
        ("data:text/html;base64,PHNjcmlwdD4=", BASE),
        ("vbscript:msgbox(1)", BASE),
        ("file:///etc/passwd", BASE),
        ("ftp://example.com/", BASE),
        ("mailto:me@example.com", BASE),
        ("/relative", None),
        ("/relative", "javascript:alert(1)"),
        ("http://", None),
        ("http:relative", None),
        ("https://[::1", None),
        ("https://example.com:99999/", None),
        ("https://example.com:0/", None),
        ("https://user:secret@example.com/", None),
        ("https://good.example\\@evil.example/", None),
        ("http://a<b/", None),
        ("http://a b.example/", None),
        ("http://exa%mple.com/", None),
        ("https://example.com/\ud800", None),
        ("https://example.com/" + "a" * MAX_URL_CHARS, None),
        ("a" * (MAX_URL_CHARS - 5), "https://example.com/"),
        ("garbage \x00\x01\x02 inside", BASE),
    ],
)
def test_safe_url_refuses(url: str | None, base: str | None) -> None:
    assert safe_url(url, base) is None


@settings(max_examples=300, deadline=None)
@given(url=st.text(max_size=100), base=st.sampled_from([None, BASE]))
def test_safe_url_only_returns_clean_http_urls(url: str, base: str | None) -> None:
    result = safe_url(url, base)
    if result is not None:
        assert result.startswith(("http://", "https://"))
        assert not re.search(r"[\x00-\x20\x7f-\x9f\\]", result)
        assert len(result) <= MAX_URL_CHARS


@pytest.mark.parametrize(
    "raw",
    [
        "<p>Deep <b>dive</b> into kernels &amp; compilers</p>",
        "<h1>Title</h1><p>one<br>two</p><ul><li>a</li><li>b</li></ul>",
        '<p><a href="https://x.example/?a=1&amp;b=2" title="t">link</a> &nbsp; text</p>',
        "<p>caf&eacute; na&#xEF;ve &#8212; done</p><img src='https://x.example/i.png' alt='pic'>",
        "<table><tr><td>c1</td><td>c2</td></tr></table><pre>  code\n  here</pre>",
        "plain words only",
    ],
)
def test_sanitized_text_reads_the_words_plain_text_reads(raw: str) -> None:
    html = clean_html(raw, "https://x.example/")
    assert sanitized_text(html) == (plain_text(html, is_html=True) or "")


def test_sanitized_text_falls_back_for_html_that_was_not_sanitized() -> None:
    html = "<p>visible</p><script>hidden()</script><style>p{}</style>"
    assert sanitized_text(html) == "visible"
