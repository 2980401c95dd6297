"""Output feeds (:mod:`feedstream.core.publish`): Atom, RSS 2.0 and JSON Feed 1.1 documents.

Every XML output is parsed by feedparser (no bozo) and by expat; every output goes back through
feedstream's own normalizer, which must find the same entries.
"""

from __future__ import annotations

import dataclasses
import io
import json
import xml.dom.minidom
from pathlib import Path
from typing import Any

import feedparser
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedstream.core.normalize import parse_feed
from feedstream.core.publish import (
    CONTENT_TYPES,
    FORMATS,
    FeedInfo,
    authority_of,
    entry_id_from_uri,
    entry_uri,
    feed_uri,
    newest,
    render,
    xml_text,
)
from feedstream.websub.discovery import discover
from tests.support.helpers import entry

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"
INFO = FeedInfo(
    name="all",
    title="Everything & more",
    self_url="https://news.example/feeds/all.atom",
    home_url="https://news.example/",
    authority="news.example",
    source_url="https://news.example/feeds/{feed}.atom",
)
ROUND_TRIP_KEYS = ("title", "url", "published", "author", "tags", "enclosures", "summary", "image")
FULL = entry(
    "blog",
    "https://blog.example/posts/1",
    title="First & best",
    url="https://blog.example/posts/1?a=1&b=2",
    author="Ann Author",
    published="2026-01-02T03:04:05Z",
    updated="2026-01-03T03:04:05Z",
    received="2026-01-04T00:00:00Z",
    summary="A summary",
    content_html='<p>Some <a href="https://blog.example/x" rel="noopener noreferrer nofollow">content</a></p>',
    tags=["python", "r&d"],
    enclosures=[
        {"url": "https://cdn.example/a.mp3", "type": "audio/mpeg", "length": 1234},
        {"url": "https://cdn.example/b.ogg", "type": None, "length": None},
    ],
    image="https://cdn.example/a.png",
    feed_title="The Blog",
)
BARE = entry("hooks", "bare", title=None, received="2026-01-01T00:00:00Z")


def parsed(format: str, body: bytes) -> Any:
    document = feedparser.parse(io.BytesIO(body))
    assert not document.bozo, document.get("bozo_exception")
    return document


def round_trip(format: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """*entries* (newest first) rendered and read back by feedstream's normalizer, newest first."""
    body = render(format, INFO, entries)
    result = parse_feed(body, feed_id="up", base_url=None, content_type=CONTENT_TYPES[format])
    assert result.error is None and result.warning is None
    return list(reversed(result.entries))


# -- ids --------------------------------------------------------------------------------------


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cn")), min_size=1, max_size=200))
def test_entry_uri_round_trips_any_id(entry_id: str) -> None:
    uri = entry_uri(entry_id, "news.example")
    assert uri.startswith("tag:news.example,2026:")
    assert uri.isascii() and not any(c.isspace() or c in '<>"' for c in uri)
    assert entry_id_from_uri(uri) == entry_id


def test_ids_are_stable_and_distinct_from_feed_ids() -> None:
    assert entry_uri("blog:https://x.example/1") == "tag:localhost,2026:blog:https://x.example/1"
    assert feed_uri("all", "news.example") == "tag:news.example,2026:feeds/all"
    assert entry_id_from_uri(feed_uri("all")) is None
    assert entry_id_from_uri("urn:x") is None
    assert entry_id_from_uri("tag:a.example,1999:x") is None
    assert authority_of("News.Example.") == "news.example"
    assert authority_of(None) == authority_of("bad host!") == "localhost"


def test_the_same_id_in_every_format() -> None:
    expected = entry_uri(FULL["id"], "news.example")
    atom = parsed("atom", render("atom", INFO, [FULL]))
    rss = parsed("rss", render("rss", INFO, [FULL]))
    feed = json.loads(render("json", INFO, [FULL]))
    assert atom.entries[0].id == rss.entries[0].id == feed["items"][0]["id"] == expected


# -- documents --------------------------------------------------------------------------------


def test_atom_has_the_required_elements() -> None:
    document = parsed("atom", render("atom", INFO, [FULL, BARE]))
    assert document.version == "atom10"
    feed = document.feed
    assert feed.title == "Everything & more"
    assert feed.id == "tag:news.example,2026:feeds/all"
    assert feed.updated == "2026-01-04T00:00:00Z"  # the newest date of any entry
    assert {(link.rel, link.href) for link in feed.links} == {
        ("self", "https://news.example/feeds/all.atom"),
        ("alternate", "https://news.example/"),
    }
    first, bare = document.entries
    assert first.title == "First & best"
    assert first.link == "https://blog.example/posts/1?a=1&b=2"
    assert first.published == "2026-01-02T03:04:05Z"
    assert first.updated == "2026-01-03T03:04:05Z"
    assert first.author == "Ann Author"
    assert [tag.term for tag in first.tags] == ["python", "r&d"]
    assert first.summary == "A summary"
    assert first.content[0].type == "text/html"
    assert first.content[0].value == FULL["content_html"]
    assert [e.href for e in first.enclosures] == [
        "https://cdn.example/a.mp3",
        "https://cdn.example/b.ogg",
    ]
    assert (first.enclosures[0].type, first.enclosures[0].length) == ("audio/mpeg", "1234")
    assert first.source.title == "The Blog"
    # Every entry has an author (RFC 4287): the bare one through its source, not its own.
    assert bare.updated == "2026-01-01T00:00:00Z"  # received, for want of anything else
    assert "author" not in bare
    assert bare.source.author == "hooks"


def test_rss_has_the_required_elements() -> None:
    document = parsed("rss", render("rss", INFO, [FULL, BARE]))
    assert document.version == "rss20"
    channel = document.feed
    assert channel.title == "Everything & more"
    assert channel.link == "https://news.example/"
    assert channel.subtitle == "Everything & more"
    assert any(link.rel == "self" for link in channel.links)
    first = document.entries[0]
    assert first.title == "First & best"
    assert first.link == "https://blog.example/posts/1?a=1&b=2"
    assert first.guidislink is False
    assert first.published_parsed[:6] == (2026, 1, 2, 3, 4, 5)
    assert first.updated == "2026-01-03T03:04:05Z"
    assert first.author == "Ann Author"
    assert [tag.term for tag in first.tags] == ["python", "r&d"]
    assert first.summary == "A summary"
    assert first.content[0].value == FULL["content_html"]
    # RSS 2.0 allows one enclosure per item: the first.
    assert [(e.href, e.type, e.length) for e in first.enclosures] == [
        ("https://cdn.example/a.mp3", "audio/mpeg", "1234")
    ]


def test_json_feed_has_the_required_fields() -> None:
    # feedparser 6.0 does not read JSON Feed: the structure is checked against the spec here,
    # and the normalizer reads it back in the round trip below.
    feed = json.loads(render("json", INFO, [FULL, BARE]))
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["title"] == "Everything & more"
    assert feed["feed_url"] == INFO.self_url and feed["home_page_url"] == INFO.home_url
    first, bare = feed["items"]
    assert first == {
        "id": entry_uri(FULL["id"], "news.example"),
        "url": FULL["url"],
        "title": "First & best",
        "content_html": FULL["content_html"],
        "summary": "A summary",
        "image": FULL["image"],
        "date_published": "2026-01-02T03:04:05Z",
        "date_modified": "2026-01-03T03:04:05Z",
        "authors": [{"name": "Ann Author"}],
        "tags": ["python", "r&d"],
        "attachments": [
            {"url": "https://cdn.example/a.mp3", "mime_type": "audio/mpeg", "size_in_bytes": 1234},
            {"url": "https://cdn.example/b.ogg", "mime_type": "application/octet-stream"},
        ],
    }
    assert bare == {"id": entry_uri(BARE["id"], "news.example"), "content_text": ""}


@pytest.mark.parametrize("format", FORMATS)
def test_an_empty_document_is_valid(format: str) -> None:
    body = render(format, INFO, [])
    if format == "json":
        assert json.loads(body)["items"] == []
        return
    document = parsed(format, body)
    assert document.entries == []
    if format == "atom":
        assert document.feed.updated == "1970-01-01T00:00:00Z"


def test_newest_and_unknown_format() -> None:
    assert newest([]) is None
    assert newest([FULL, BARE]) is not None
    assert newest([FULL]).isoformat() == "2026-01-04T00:00:00+00:00"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        render("html", INFO, [])


# -- the round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize(
    "fixture",
    [
        "atom.xml",
        "rss2.xml",
        "rss1.rdf",
        "jsonfeed10.json",
        "jsonfeed11.json",
        "xss_atom.xml",
        "xss_rss.xml",
    ],
)
def test_feedstream_reads_its_own_output_back(format: str, fixture: str) -> None:
    """Entries normalized from real documents, published, then polled by feedstream: the same
    ids, titles, links, dates, authors, tags, enclosures, summaries, images and content."""
    source = parse_feed(
        (FIXTURES / fixture).read_bytes(), feed_id="src", base_url="https://blog.example/"
    )
    assert source.entries
    entries = [dict(e, received="2026-12-01T00:00:00Z") for e in reversed(source.entries)]
    back = round_trip(format, entries)
    assert len(back) == len(entries)
    for original, copy in zip(entries, back, strict=True):
        assert copy["id"].startswith("up:")
        assert entry_id_from_uri(copy["id"].removeprefix("up:")) == original["id"]
        for key in ROUND_TRIP_KEYS:
            assert copy[key] == original[key], key
        assert copy["content_html"] == original["content_html"]
        if format != "atom" or original["updated"]:
            assert copy["updated"] == original["updated"]
        else:  # Atom requires one: published, else received
            assert copy["updated"] == (original["published"] or original["received"])


# -- hostile entries --------------------------------------------------------------------------

HOSTILE = entry(
    "evil",
    "x\x00<y>&\ufffe\ud800]]>",
    title='Title <script>alert(1)</script> \x01\x1b\x7f\x85\ufffe\uffff & "q" ]]>',
    url='https://evil.example/?a=<b>&c="d"',
    author="Mallory\x00 <mal@evil.example>",
    published="2026-02-30T00:00:00Z",  # not a date: left out
    updated="garbage",
    summary="<img src=x onerror=alert(1)>\x0c",
    content_html='<p onclick="x()">hi<script>alert(1)</script><iframe src="https://evil.example"></iframe>\x00\ud83d</p>',
    tags=["<b>tag</b>", "\x00", 42],
    enclosures=[{"url": "https://evil.example/\x01x", "type": 'a"b', "length": -5}, "junk"],
    feed_title="Evil <feed>",
    received="2026-03-01T00:00:00Z",
)


@pytest.mark.parametrize("format", FORMATS)
def test_hostile_entries_make_valid_safe_documents(format: str) -> None:
    body = render(format, INFO, [HOSTILE, FULL])
    text = body.decode("utf-8")  # strict: no lone surrogates
    assert not any(ord(c) < 0x20 and c not in "\t\n\r" for c in text)
    assert not any(c in text for c in "\x7f\x85\ufffe\uffff")
    if format == "json":
        feed = json.loads(body)
        content = feed["items"][0]["content_html"]
    else:
        xml.dom.minidom.parseString(body)  # well-formed for expat
        document = parsed(format, body)
        assert len(document.entries) == 2
        content = document.entries[0].content[0].value
    assert "<script" not in content and "onclick" not in content and "<iframe" not in content
    assert "hi" in content
    back = round_trip(format, [HOSTILE, FULL])
    assert entry_id_from_uri(back[0]["id"].removeprefix("up:")) == "evil:x<y>&]]>"
    assert back[1]["title"] == "First & best"


def test_xml_text_escapes_and_strips() -> None:
    assert xml_text('a&b<c>d"e\x00\x08\ud800\ufffe') == "a&amp;b&lt;c&gt;d&quot;e"
    assert xml_text(None) == ""
    assert xml_text("tab\tnewline\n\U0001f600") == "tab\tnewline\n\U0001f600"


HUB_INFO = dataclasses.replace(INFO, hub_url="https://news.example/websub/hub")


@pytest.mark.parametrize("format", FORMATS)
def test_a_hub_is_named_in_every_format(format: str) -> None:
    """``[hub] enabled``: the hub and self links are in the document, where feedstream's own
    WebSub discovery (and feedparser) find them."""
    body = render(format, HUB_INFO, [FULL])
    found = discover({}, body, CONTENT_TYPES[format], "https://elsewhere.example/copy")
    assert found.hub_urls == ["https://news.example/websub/hub"]
    assert found.self_url == "https://news.example/feeds/all.atom"
    if format == "json":
        assert json.loads(body)["hubs"] == [
            {"type": "WebSub", "url": "https://news.example/websub/hub"}
        ]
    else:
        document = parsed(format, body)
        assert ("hub", "https://news.example/websub/hub") in {
            (link.rel, link.href) for link in document.feed.links
        }
    assert b"websub/hub" not in render(format, INFO, [FULL])  # no hub: no link
