"""The feeds a page names: alternates, relative links, <base>, odd markup, fallbacks."""

from __future__ import annotations

import time

import pytest

from feedstream.core.feedlinks import (
    COMMON_PATHS,
    MAX_LINKS,
    FeedLink,
    candidate_links,
    common_paths,
    decode_html,
    page_links,
    parse_if_feed,
)

BASE = "https://example.org/blog/post.html"


def urls(body: bytes | str, base: str = BASE) -> list[str]:
    data = body.encode() if isinstance(body, str) else body
    return [link.url for link in page_links(data, base)]


def test_several_alternates_in_page_order_with_types_and_titles() -> None:
    page = """<!doctype html><html><head>
    <title>A blog</title>
    <link rel="stylesheet" href="/style.css">
    <link rel="alternate" type="application/rss+xml" title="Posts (RSS)" href="https://example.org/feed.rss">
    <link rel="alternate" type="application/atom+xml" title="Posts (Atom)" href="https://example.org/feed.atom">
    <link rel="alternate" type="application/feed+json" title="Posts (JSON)" href="https://example.org/feed.json">
    <link rel="alternate" type="application/rdf+xml" href="https://example.org/index.rdf">
    <link rel="alternate" type="text/html" hreflang="fr" href="https://example.org/fr/">
    <link rel="alternate" type="application/json+oembed" href="https://example.org/oembed">
    <link rel="icon" href="/favicon.ico">
    </head><body><p>Hello</p></body></html>"""
    links = page_links(page.encode(), BASE)
    assert links == [
        FeedLink("https://example.org/feed.rss", "application/rss+xml", "Posts (RSS)"),
        FeedLink("https://example.org/feed.atom", "application/atom+xml", "Posts (Atom)"),
        FeedLink("https://example.org/feed.json", "application/feed+json", "Posts (JSON)"),
        FeedLink("https://example.org/index.rdf", "application/rdf+xml", None),
    ]


def test_relative_links_resolve_against_the_page() -> None:
    page = """<head>
    <link rel="alternate" type="application/rss+xml" href="feed.xml">
    <link rel="alternate" type="application/atom+xml" href="/atom.xml">
    <link rel="alternate" type="application/feed+json" href="../feed.json">
    <link rel="alternate" type="application/rss+xml" href="//cdn.example.net/rss">
    <link rel="alternate" type="application/rss+xml" href="?format=rss">
    </head>"""
    assert urls(page) == [
        "https://example.org/blog/feed.xml",
        "https://example.org/atom.xml",
        "https://example.org/feed.json",
        "https://cdn.example.net/rss",
        "https://example.org/blog/post.html?format=rss",
    ]


def test_base_href_wins_wherever_it_is() -> None:
    page = """<head>
    <link rel="alternate" type="application/rss+xml" href="feed.xml">
    <base href="https://static.example.com/site/">
    <base href="https://ignored.example/">
    <link rel="alternate" type="application/atom+xml" href="atom.xml">
    </head>"""
    assert urls(page) == [
        "https://static.example.com/site/feed.xml",
        "https://static.example.com/site/atom.xml",
    ]
    relative_base = (
        '<base href="/other/"><link rel="alternate" type="application/rss+xml" href="f">'
    )
    assert urls(relative_base) == ["https://example.org/other/f"]
    bad_base = (
        '<base href="javascript:x"><link rel="alternate" type="application/rss+xml" href="f">'
    )
    assert urls(bad_base) == ["https://example.org/blog/f"]


def test_uppercase_markup_rel_lists_and_parameters() -> None:
    page = """<HTML><HEAD>
    <LINK REL="Alternate Home" TYPE="Application/RSS+XML; charset=UTF-8" HREF="/one">
    <link rel="home alternate" type="application/atom+xml" href="/two">
    <link rel=alternate type=application/rss+xml href=/three>
    <link rel="ALTERNATE" type="APPLICATION/FEED+JSON" href="/four"/>
    <link rel="feed" href="/five">
    <link rel="alternate stylesheet" type="text/css" href="/six.css">
    <link rel="alternate" href="/no-type">
    </HEAD></HTML>"""
    assert urls(page) == [
        "https://example.org/one",
        "https://example.org/two",
        "https://example.org/three",
        "https://example.org/four",
        "https://example.org/five",
    ]
    assert page_links(page.encode(), BASE)[0].type == "application/rss+xml"


def test_generic_xml_and_json_types_are_candidates() -> None:
    page = """<head>
    <link rel="alternate" type="text/xml" href="/old.xml">
    <link rel="alternate" type="application/xml" href="/older.xml">
    <link rel="alternate" type="application/json" href="/wp-json/wp/v2/pages/2">
    </head>"""
    assert urls(page) == [
        "https://example.org/old.xml",
        "https://example.org/older.xml",
        "https://example.org/wp-json/wp/v2/pages/2",
    ]


def test_duplicates_fragments_entities_and_unusable_hrefs() -> None:
    page = """<head>
    <link rel="alternate" type="application/rss+xml" href="/feed?a=1&amp;b=2#top">
    <link rel="alternate" type="application/atom+xml" href="/feed?a=1&b=2">
    <link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">
    <link rel="alternate" type="application/rss+xml" href="mailto:me@example.org">
    <link rel="alternate" type="application/rss+xml" href="">
    <link rel="alternate" type="application/rss+xml">
    <link rel="alternate" type="application/rss+xml" href="/feed with space">
    <link rel="alternate" type="application/rss+xml" title="  Multi
      line\tname  " href="/named">
    </head>"""
    links = page_links(page.encode(), BASE)
    assert [link.url for link in links] == [
        "https://example.org/feed?a=1&b=2",
        "https://example.org/named",
    ]
    assert links[1].title == "Multi line name"


def test_links_in_the_body_count_and_scripts_comments_do_not() -> None:
    page = """<html><head><!-- <link rel="alternate" type="application/rss+xml" href="/commented"> -->
    <script>var s = '<link rel="alternate" type="application/rss+xml" href="/scripted">';</script>
    </head><body><link rel="alternate" type="application/rss+xml" href="/in-body"></body></html>"""
    assert urls(page) == ["https://example.org/in-body"]


def test_at_most_max_links() -> None:
    page = "".join(
        f'<link rel="alternate" type="application/rss+xml" href="/f{n}">' for n in range(100)
    )
    assert len(urls(page)) == MAX_LINKS


def test_no_links_gives_the_common_paths_of_the_site() -> None:
    page = b"<!doctype html><html><head><title>No feeds</title></head><body></body></html>"
    assert page_links(page, BASE) == []
    links = candidate_links(page, "https://example.org:8443/deep/page?x=1#y")
    assert [link.url for link in links] == [f"https://example.org:8443{p}" for p in COMMON_PATHS]
    assert {link.source for link in links} == {"guess"}
    for path in ("/feed", "/rss", "/atom.xml", "/feed.json", "/index.xml", "/feed/", "/rss.xml"):
        assert path in COMMON_PATHS
    assert common_paths("http://example.org")[0].url == "http://example.org/feed"


def test_named_links_replace_the_common_paths() -> None:
    page = b'<link rel="alternate" type="application/rss+xml" href="/only">'
    assert [link.source for link in candidate_links(page, BASE)] == ["link"]


def test_encodings() -> None:
    latin = '<link rel="alternate" type="application/rss+xml" title="Café" href="/caf%C3%A9">'
    assert page_links(latin.encode("latin-1"), BASE)[0].title == "Café"  # not UTF-8: cp1252
    assert decode_html("Café".encode()) == "Café"
    assert decode_html("Café".encode("latin-1"), "text/html; charset=ISO-8859-1") == "Café"
    utf16 = "\ufeff" + '<link rel="alternate" type="application/rss+xml" href="/u16">'
    assert urls(utf16.encode("utf-16-le")) == ["https://example.org/u16"]


@pytest.mark.parametrize(
    "junk",
    [
        b"<!--" + b"a<b" * 100_000,  # close() would take minutes on this
        b"<![" * 50_000,  # html.parser raises AssertionError here
        b"<a x" + b" y" * 200_000,
        b"<" * 300_000,
        b"\x00\xff" * 100_000,
    ],
)
def test_hostile_markup_is_bounded(junk: bytes) -> None:
    page = b'<link rel="alternate" type="application/rss+xml" href="/early">' + junk
    start = time.perf_counter()
    assert urls(page) == ["https://example.org/early"]
    assert time.perf_counter() - start < 5


def test_parse_if_feed() -> None:
    atom = b"""<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>
    <entry><id>urn:1</id><title>One</title><updated>2024-01-01T00:00:00Z</updated></entry></feed>"""
    parsed = parse_if_feed(atom, "https://example.org/atom.xml", "application/atom+xml")
    assert parsed is not None and parsed.format == "atom" and len(parsed.entries) == 1
    empty_rss = b'<rss version="2.0"><channel><title>Quiet</title></channel></rss>'
    assert parse_if_feed(empty_rss, BASE) is not None  # a feed without entries is a feed
    not_found = b"<!doctype html><html><head><title>Not found</title></head><body>404</body></html>"
    assert parse_if_feed(not_found, BASE, "text/html") is None
    assert parse_if_feed(b'{"posts": []}', BASE, "application/json") is None
    assert parse_if_feed(b"", BASE) is None
