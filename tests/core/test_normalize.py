"""Tests for feedstream.core.normalize.parse_feed: formats, safety, ids, dates, limits, hostile input."""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import feedparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedstream.core.normalize import ENTRY_KEYS, ParsedFeed, is_websub_hub_type, parse_feed
from feedstream.core.xmlsafe import (
    PLAIN_CHARACTER_REFERENCES,
    is_xml_character,
    mend_character_references,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "feeds"
BASE = "https://fetch.example/feeds/main.xml"
TAG_LIKE = re.compile(r"<[a-zA-Z/!?]")


def parse(body: bytes | str, **options: Any) -> ParsedFeed:
    if isinstance(body, str):
        body = body.encode()
    options.setdefault("feed_id", "f")
    options.setdefault("base_url", BASE)
    return parse_feed(body, **options)


def fixture(name: str, **options: Any) -> ParsedFeed:
    return parse((FIXTURES / name).read_bytes(), **options)


def by_title(result: ParsedFeed) -> dict[str | None, dict[str, Any]]:
    return {entry["title"]: entry for entry in result.entries}


def rss(items: str, channel: str = "") -> str:
    return f'<rss version="2.0"><channel><title>T</title>{channel}{items}</channel></rss>'


def atom(entries: str) -> str:
    return f'<feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>{entries}</feed>'


def json_feed(**document: Any) -> str:
    return json.dumps({"version": "https://jsonfeed.org/version/1.1", **document})


def all_strings(value: object) -> list[str]:
    """Every string anywhere in a result, for "this must appear nowhere" checks."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in all_strings(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in all_strings(item)]
    if isinstance(value, ParsedFeed):
        return all_strings([getattr(value, name) for name in ParsedFeed.__slots__])
    return []


# --- The formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["rss2.xml", "rss1.rdf", "atom.xml", "jsonfeed11.json", "jsonfeed10.json", "xss_rss.xml",
     "xss_atom.xml"],
)  # fmt: skip
def test_every_entry_has_exactly_the_entry_keys(name: str) -> None:
    result = fixture(name, via="websub")
    assert result.error is None
    assert result.entries
    for entry in result.entries:
        assert tuple(entry) == ENTRY_KEYS
        assert entry["cursor"] is None and entry["received"] is None
        assert entry["feed"] == "f" and entry["via"] == "websub"
        assert entry["id"].startswith("f:")


def test_rss2() -> None:
    result = fixture("rss2.xml")
    assert (result.format, result.title, result.link) == (
        "rss",
        "Fish & Chips < 5 > 3",
        "https://shop.example/",
    )
    assert result.hubs == ["https://hub.example/"]
    assert result.self_url == "https://shop.example/feed.xml"
    assert result.ttl_seconds == 30 * 60
    assert result.warning is None
    assert [entry["title"] for entry in result.entries] == ["News 1", "News 2", result.title]

    news3 = result.entries[-1]
    assert news3 == {
        "id": "f:news-3",
        "cursor": None,
        "feed": "f",
        "feed_title": "Fish & Chips < 5 > 3",
        "title": "Fish & Chips < 5 > 3",
        "url": "https://fetch.example/news/3",
        "author": "Ann Example",
        "published": "2024-01-02T02:04:05Z",
        "updated": None,
        "summary": "Short summary of news 3",
        "content_html": (
            '<p>Full <em>story</em> <img src="https://fetch.example/img/3.jpg" alt="three"> '
            '<a href="https://fetch.example/more" rel="noopener noreferrer nofollow">more</a></p>'
        ),
        "tags": ["Food", "Fish & Chips"],
        "enclosures": [{"url": "https://cdn.example/3.mp3", "type": "audio/mpeg", "length": 12345}],
        "image": "https://cdn.example/3-thumb.jpg",
        "via": "poll",
        "received": None,
        "matched": [],
        "highlight": False,
        "duplicate_of": None,
    }
    news2, news1 = result.entries[1], result.entries[0]
    assert news2["summary"] == "Plain & simple"  # description is HTML: &amp;amp; shows as &amp;
    assert news2["image"] == "https://cdn.example/2.png"  # enclosure of an image type
    assert news1["image"] == "https://cdn.example/1.jpg"  # first <img> of the content
    assert news1["url"] is None


def test_rss1_rdf() -> None:
    result = fixture("rss1.rdf")
    assert (result.format, result.title, result.link) == ("rdf", "RDF Site", "https://rdf.example/")
    assert [(e["title"], e["url"], e["updated"]) for e in result.entries] == [
        ("First", "https://rdf.example/a", "2024-02-01T10:00:00Z"),
        ("Second", "https://rdf.example/b", "2024-02-02T08:00:00Z"),
    ]
    assert result.entries[1]["author"] == "Bob"
    assert result.entries[1]["tags"] == ["rdf"]


def test_atom_text_html_and_xhtml_content() -> None:
    result = fixture("atom.xml")
    assert (result.format, result.title, result.link) == (
        "atom",
        "Fish & Chips < 5 > 3",
        "https://blog.example/",
    )
    assert result.self_url == "https://blog.example/atom.xml"
    assert result.hubs == ["https://hub.example/"]
    text, html, xhtml = result.entries

    assert text["title"] == "Fish & Chips < 5 > 3"
    assert text["content_html"] == (
        "<p>Plain text content with &lt;b&gt; that is not a tag &amp; an ampersand</p>"
    )
    assert text["author"] == "Cat Writer"
    assert text["published"] == "2024-03-01T08:30:00Z"
    assert text["updated"] == "2024-03-02T10:00:00Z"
    assert text["tags"] == ["atom"]
    assert text["url"] == "https://blog.example/posts/text"

    assert html["title"] == "Fish & Chips < 5 > 3"
    assert html["summary"] == "An HTML summary"
    assert html["author"] == "Feed Author"  # inherited from the feed
    assert html["url"] == "https://blog.example/posts/html"  # xml:base on the entry
    assert html["content_html"] == (
        '<p>Escaped <a href="https://blog.example/posts/relative" '
        'rel="noopener noreferrer nofollow">HTML</a> content</p>'
    )
    assert html["enclosures"] == [
        {"url": "https://cdn.example/talk.ogg", "type": "audio/ogg", "length": 42}
    ]

    assert xhtml["title"] == "An XHTML title"
    assert xhtml["content_html"] == (
        '<p>Inline <strong>XHTML</strong> with <img src="https://blog.example/pic.png" '
        'alt="pic"></p>'
    )
    assert xhtml["image"] == "https://blog.example/pic.png"
    assert xhtml["summary"] == "Inline XHTML with"


def test_json_feed_1_1() -> None:
    result = fixture("jsonfeed11.json")
    assert result.format == "json"
    assert result.title == "JSON Feed &amp; more"  # JSON Feed titles are plain text
    assert result.link == "https://json.example/"
    assert result.self_url == "https://json.example/feed.json"
    assert result.hubs == ["https://hub.example/"]  # rssCloud is not WebSub
    first, second = result.entries
    assert first == {
        "id": "f:1",
        "cursor": None,
        "feed": "f",
        "feed_title": "JSON Feed &amp; more",
        "title": "First",
        "url": "https://elsewhere.example/1",
        "author": "Feed Person",
        "published": "2024-04-01T10:00:00Z",
        "updated": None,
        "summary": "Plain & more",
        "content_html": "<p>Plain &lt;text&gt; &amp; more</p>",
        "tags": [],
        "enclosures": [],
        "image": "https://json.example/1.jpg",
        "via": "poll",
        "received": None,
        "matched": [],
        "highlight": False,
        "duplicate_of": None,
    }
    assert second["content_html"] == '<p>Second post <img src="https://fetch.example/2.png"></p>'
    assert second["summary"] == "The second one"
    assert second["author"] == "Item Person"
    assert (second["published"], second["updated"]) == (
        "2024-04-02T08:00:00Z",
        "2024-04-03T00:00:00Z",
    )
    assert second["tags"] == ["json", "feeds"]
    assert second["enclosures"] == [
        {"url": "https://cdn.example/2.mp4", "type": "video/mp4", "length": 2000}
    ]


def test_json_feed_1_0() -> None:
    result = fixture("jsonfeed10.json")
    (entry,) = result.entries
    assert result.title == "Old JSON Feed"
    assert entry["author"] == "Old Author"
    assert entry["image"] == "https://old.example/banner.png"
    assert entry["published"] == "2019-05-06T12:08:09Z"
    assert entry["content_html"] == "<p>Version one item</p>"
    assert entry["id"] == "f:https://old.example/a"


def test_json_feed_detected_by_content_type_and_by_body() -> None:
    body = json_feed(items=[{"id": "1", "content_text": "x"}])
    for content_type in (None, "application/feed+json", "application/json; charset=utf-8"):
        assert parse(body, content_type=content_type).format == "json"
    assert parse(b"\xef\xbb\xbf" + body.encode()).format == "json"
    assert parse(body.encode("utf-16")).format == "json"


def test_json_feed_survives_wrong_types_everywhere() -> None:
    body = json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": 42,
            "home_page_url": ["https://x.example/"],
            "hubs": {"url": "https://hub.example/"},
            "authors": "me",
            "items": [
                "not an item",
                None,
                {
                    "id": True,
                    "url": 7,
                    "title": {"nested": "object"},
                    "content_html": ["<p>x</p>"],
                    "content_text": 3.5,
                    "summary": None,
                    "image": False,
                    "date_published": 1712000000,
                    "date_modified": "yesterday",
                    "authors": [None, 1, {"name": 2}, {"name": "Real"}],
                    "author": "string",
                    "tags": ["ok", 1, None, ["x"]],
                    "attachments": [
                        1,
                        {"url": 5},
                        {"url": "https://a.example/f", "size_in_bytes": "x"},
                    ],
                },
                {"id": 12.5, "title": "numeric id"},
            ],
        }
    )
    result = parse(body)
    assert result.error is None and result.title is None and result.link is None
    assert result.hubs == []
    numeric, broken = result.entries  # undated: document order, returned oldest first
    assert broken["title"] is None and broken["url"] is None and broken["image"] is None
    assert broken["published"] is None and broken["updated"] is None
    assert broken["author"] == "Real"
    assert broken["tags"] == ["ok"]
    assert broken["enclosures"] == [{"url": "https://a.example/f", "type": None, "length": None}]
    assert broken["id"] == "f:sha256:" + hashlib.sha256(b"\n").hexdigest()  # no id, no link
    assert numeric["id"] == "f:12.5"


def test_json_feed_items_not_a_list_is_a_warning() -> None:
    result = parse(json_feed(title="T", items={"id": "1"}))
    assert result.error is None
    assert result.entries == []
    assert result.warning == "JSON Feed without an items list"


# --- Broken input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "empty body"),
        (b" \r\n\t ", "empty body"),
        (b"\xef\xbb\xbf  ", "empty body"),
        ((FIXTURES / "html_page.html").read_bytes(), "not a feed: looks like an HTML page"),
        (
            b"<?xml version='1.0'?><html><body>x</body></html>",
            "not a feed: looks like an HTML page",
        ),
        (b"{not json", "not a feed: invalid JSON"),
        (b"[" * 100_000, "not a feed: invalid JSON"),
        (b'{"title": "no version", "items": []}', "not a feed: JSON without a JSON Feed version"),
        (b'{"version": "1.1", "items": []}', "not a feed: JSON without a JSON Feed version"),
        (b"[1, 2, 3]", "not a feed: JSON without a JSON Feed version"),
        (b'<?xml version="1.0"?><catalog><book/></catalog>', "not a feed: no RSS, Atom or RDF"),
        (b"\x00\x9f\x92\x96garbage\xff\xfe\x00", "not a feed: XML error"),
        (b"just some text", "not a feed: XML error"),
    ],
)
def test_unusable_bodies_give_an_error_and_no_entries(body: bytes, error: str) -> None:
    result = parse(body)
    assert result.error is not None and result.error.startswith(error)
    assert result.entries == [] and result.format == "unknown"


def test_json_content_type_with_garbage_body() -> None:
    assert parse(b"garbage", content_type="application/json").error == "not a feed: invalid JSON"


def test_truncated_xml_is_read_with_a_warning() -> None:
    body = rss(
        "<item><title>Complete</title><guid>1</guid></item>"
        "<item><title>Cut off</title><guid>2</guid><description>never fini"
    )
    result = parse(body[: body.index("never fini") + 10])
    assert result.error is None
    assert result.warning is not None and "XML error" in result.warning
    assert "Complete" in [entry["title"] for entry in result.entries]


def test_empty_entries_are_skipped() -> None:
    result = parse(rss("<item></item><item><title>Real</title></item><item> </item>"))
    assert [entry["title"] for entry in result.entries] == ["Real"]


def test_valid_feed_without_entries() -> None:
    result = parse(rss(""))
    assert (result.error, result.format, result.title, result.entries) == (None, "rss", "T", [])


_JUNK = random.Random(7).randbytes(4096).replace(b"<", b"")


@pytest.mark.parametrize(
    "body",
    [
        b"\x89PNG\r\n\x1a\n" + _JUNK[:2000] + b'<rss version="2.0">' + _JUNK[2000:],
        b"Lorem ipsum <feed> dolor sit amet",
        b'<?xml version="1.0"?><rss version="2.0"><channel><ti',
        b'<?xml version="1.0"?><rss version="2.0">\n</rss',
        b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>',
    ],
    ids=[
        "binary-with-rss-tag",
        "text-with-feed-tag",
        "truncated-rss",
        "unclosed-rss",
        "truncated-atom",
    ],
)
def test_broken_document_with_nothing_read_is_not_a_feed(body: bytes) -> None:
    # feedparser's lenient parser gives these a version (an RSS or Atom element was seen), but
    # nothing was read from them: a healthy-looking empty feed would hide the breakage.
    result = parse(body, content_type="application/rss+xml")
    assert result.error is not None and result.error.startswith("not a feed: XML error")
    assert (result.format, result.entries, result.warning) == ("unknown", [], None)


def test_broken_html_page_with_a_feed_tag_is_an_html_page() -> None:
    result = parse(b"<!DOCTYPE html><html><body><p>Subscribe: <rss> <br></body></html>")
    assert result.error == "not a feed: looks like an HTML page"


@pytest.mark.parametrize(
    ("body", "content_type", "expected_format"),
    [
        ('<rss version="2.0"><channel></channel></rss>', None, "rss"),
        ('<feed xmlns="http://www.w3.org/2005/Atom"/>', None, "atom"),
        (
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            'xmlns="http://purl.org/rss/1.0/"><channel rdf:about="x"></channel></rdf:RDF>',
            None,
            "rdf",
        ),
        # feedparser flags these (bozo) although the XML is well-formed
        ('<rss version="2.0"><channel></channel></rss>', "text/plain", "rss"),
        (
            '<?xml version="1.0" encoding="us-ascii"?><!-- café --><rss version="2.0"><channel>'
            "</channel></rss>",
            None,
            "rss",
        ),
    ],
    ids=["rss", "atom", "rdf", "non-xml-content-type", "wrong-declared-encoding"],
)
def test_well_formed_feed_with_nothing_in_it_is_a_feed(
    body: str, content_type: str | None, expected_format: str
) -> None:
    result = parse(body, content_type=content_type)
    assert (result.error, result.format, result.entries) == (None, expected_format, [])


@pytest.mark.parametrize(
    ("channel", "title", "link"),
    [
        ("<title>T</title>", "T", None),
        ("<link>https://example.org/</link>", None, "https://example.org/"),
    ],
)
def test_broken_document_with_a_title_or_link_is_a_feed(
    channel: str, title: str | None, link: str | None
) -> None:
    result = parse(f'<rss version="2.0"><channel>{channel}<item><ti')
    assert (result.error, result.format, result.title, result.link) == (None, "rss", title, link)
    assert result.warning is not None and "XML error" in result.warning


def test_utf16_with_bom() -> None:
    body = '<?xml version="1.0" encoding="utf-16"?>' + rss("<item><title>Ünïcödé ✓</title></item>")
    for encoding in ("utf-16", "utf-16-be"):
        data = body.encode(encoding)
        result = parse(data if encoding == "utf-16" else b"\xfe\xff" + data)
        assert result.error is None
        assert result.entries[0]["title"] == "Ünïcödé ✓"


@pytest.mark.parametrize("declared", ['"utf-16"', "'UTF-16LE'", '"utf_16_be"', '"utf-32"'])
@pytest.mark.parametrize("content_type", [None, "application/rss+xml", "text/xml"])
@pytest.mark.parametrize("padding", ["", "!"])  # feedparser's result hung on the length's parity
def test_utf8_body_declaring_utf16_is_read_as_utf8(
    declared: str, content_type: str | None, padding: str
) -> None:
    body = f"<?xml version='1.0' encoding={declared}?>" + rss(
        f"<item><title>Café 日本{padding}</title></item>"
    )
    result = parse(body.encode("utf-8"), content_type=content_type)
    assert result.error is None
    assert [entry["title"] for entry in result.entries] == [f"Café 日本{padding}"]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_still_read_as_utf16(encoding: str) -> None:
    body = '<?xml version="1.0" encoding="utf-16"?>' + rss("<item><title>Ünïcödé ✓</title></item>")
    result = parse(body.encode(encoding))
    assert result.error is None
    assert result.entries[0]["title"] == "Ünïcödé ✓"


def test_latin1_body_declaring_utf16_is_read() -> None:
    body = '<?xml version="1.0" encoding="utf-16"?>' + rss("<item><title>Café</title></item>")
    result = parse(body.encode("latin-1"))
    assert result.error is None
    assert result.entries[0]["title"] == "Café"


def test_wrong_declared_encoding_is_a_warning() -> None:
    body = '<?xml version="1.0" encoding="utf-8"?>' + rss("<item><title>Café</title></item>")
    result = parse(body.encode("latin-1"))
    assert result.error is None
    assert result.entries[0]["title"] == "Café"
    assert result.warning is not None


def test_wrong_charset_in_content_type() -> None:
    body = rss("<item><title>Grüße</title></item>").encode("utf-8")
    result = parse(body, content_type="application/rss+xml; charset=no-such-charset")
    assert result.error is None
    assert result.entries[0]["title"] is not None


def test_feedparser_crashes_become_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise AttributeError("'LooseFeedParser' object has no attribute 'end_width'")

    monkeypatch.setattr(feedparser, "parse", explode)
    result = parse(rss(""))
    assert result.error == (
        "not a feed: the document is too broken to read (AttributeError in feedparser)"
    )
    assert result.entries == []


def test_our_own_bugs_become_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("feedstream.core.normalize.clean_html", explode)
    result = parse(rss("<item><title>t</title><description>x</description></item>"))
    assert result.error == "could not parse the document (internal error)"
    assert result.entries == []


def test_base_exceptions_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(feedparser, "parse", interrupt)
    with pytest.raises(KeyboardInterrupt):
        parse(rss(""))


def test_body_is_never_taken_as_a_file_name(tmp_path: Path) -> None:
    # Handed bytes, feedparser would open them as a path; parse_feed must not let it.
    feed_file = tmp_path / "feed.xml"
    feed_file.write_text(rss("<item><title>read from disk</title></item>"))
    result = parse(str(feed_file).encode())
    assert result.error is not None
    assert result.entries == []


# --- Safety ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xss_rss.xml", "xss_atom.xml"])
def test_xss_payloads_are_neutralized_in_every_field(name: str) -> None:
    result = fixture(name)
    (entry,) = result.entries
    for field in ("title", "summary", "author", "feed_title"):
        assert entry[field] and not TAG_LIKE.search(entry[field]), field
    for tag in entry["tags"]:
        assert not TAG_LIKE.search(tag)
    assert result.title and not TAG_LIKE.search(result.title)
    assert result.link is None and entry["url"] is None
    assert entry["enclosures"] == []
    html = entry["content_html"].lower()
    for forbidden in ("<script", "<style", "<svg", "<math", "<iframe", "<object", "<embed", "<form",
                      "<input", "<meta", "<link", "<base", " on", "style=", "javascript:",
                      "vbscript:", "data:", "alert(", "id=", "class="):  # fmt: skip
        assert forbidden not in html, forbidden
    everything = " ".join(all_strings(result)).lower()
    assert "javascript:" not in everything and "alert(" not in everything


def test_xss_rss_keeps_the_harmless_parts() -> None:
    (entry,) = fixture("xss_rss.xml").entries
    assert entry["title"] == "Title"
    assert entry["author"] == "Mallory"
    assert entry["summary"] == "Summary"
    assert entry["tags"] == ["tag"]
    assert "<div>kept text</div>" in entry["content_html"]
    assert entry["content_html"].count('rel="noopener noreferrer nofollow"') == 5


@pytest.mark.parametrize(
    "document",
    [
        atom('<entry><id>1</id><title type="text">Fish &amp; Chips &lt; 5 &gt; 3</title></entry>'),
        atom('<entry><id>1</id><title type="text">Fish &amp; Chips &lt; 5 > 3</title></entry>'),
        atom(
            '<entry><id>1</id><title type="html">Fish &amp;amp; Chips &amp;lt; 5 &gt; 3</title></entry>'
        ),
        atom(
            '<entry><id>1</id><title type="html"><![CDATA[Fish &amp; Chips < 5 > 3]]></title></entry>'
        ),
        rss("<item><title>Fish &amp; Chips &lt; 5 &gt; 3</title></item>"),
        rss("<item><title><![CDATA[Fish & Chips < 5 > 3]]></title></item>"),
        json_feed(items=[{"id": "1", "title": "Fish & Chips < 5 > 3"}]),
    ],
)
def test_fish_and_chips_title_is_preserved_exactly(document: str) -> None:
    assert parse(document).entries[0]["title"] == "Fish & Chips < 5 > 3"


@pytest.mark.parametrize(
    "document",
    [
        rss("<item><title>Fish &amp; Chips</title></item>"),
        rss("<item><title>t</title><description>Fish &amp;amp; Chips</description></item>"),
        atom('<entry><id>1</id><title type="html">Fish &amp;amp; Chips</title></entry>'),
    ],
)
def test_entities_are_decoded_once(document: str) -> None:
    entry = parse(document).entries[0]
    assert "Fish & Chips" in (entry["title"], entry["summary"])
    assert "&amp;" not in f"{entry['title']} {entry['summary']}"


# --- Ids -------------------------------------------------------------------------------------


def test_id_from_guid_then_link_then_digest() -> None:
    result = parse(
        rss(
            "<item><guid isPermaLink='false'>  g-1 </guid><link>https://x.example/1</link></item>"
            "<item><link>https://x.example/2</link><title>linked</title></item>"
            "<item><title>only a title</title><description>and content</description></item>"
        ),
        feed_id="feed-7",
    )
    digest = hashlib.sha256(b"only a title\nand content").hexdigest()
    assert [entry["id"] for entry in result.entries] == [
        f"feed-7:sha256:{digest}",
        "feed-7:https://x.example/2",
        "feed-7:g-1",
    ]


def test_ids_are_stable_across_parses_and_base_urls() -> None:
    body = rss("<item><guid>relative-guid</guid></item><item><title>t</title></item>")
    first = [entry["id"] for entry in parse(body, base_url="https://a.example/").entries]
    second = [entry["id"] for entry in parse(body, base_url="https://b.example/x/").entries]
    assert first == second
    assert "f:relative-guid" in first


def test_very_long_ids_are_hashed() -> None:
    guid = "x" * 513
    result = parse(rss(f"<item><guid isPermaLink='false'>{guid}</guid></item>"))
    assert result.entries[0]["id"] == "f:sha256:" + hashlib.sha256(guid.encode()).hexdigest()
    exact = "y" * 512
    result = parse(rss(f"<item><guid isPermaLink='false'>{exact}</guid></item>"))
    assert result.entries[0]["id"] == f"f:{exact}"


# --- Dates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pub_date", "expected"),
    [
        ("Tue, 02 Jan 2024 03:04:05 GMT", "2024-01-02T03:04:05Z"),
        ("Tue, 02 Jan 2024 03:04:05 -0800", "2024-01-02T11:04:05Z"),
        ("2024-01-02T03:04:05.123456+01:00", "2024-01-02T02:04:05Z"),
        ("Thu, 01 Jan 1970 00:00:00 GMT", "1970-01-01T00:00:00Z"),
        ("Mon, 01 Jan 1900 00:00:00 GMT", None),
        ("Fri, 01 Jan 2200 00:00:00 GMT", None),
        ("not a date at all", None),
    ],
)
def test_rss_dates(pub_date: str, expected: str | None) -> None:
    entry = parse(rss(f"<item><title>t</title><pubDate>{pub_date}</pubDate></item>")).entries[0]
    assert entry["published"] == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
        ("2024-01-02T03:04:05.999+05:30", "2024-01-01T21:34:05Z"),
        ("2024-01-02T03:04:05", "2024-01-02T03:04:05Z"),
        ("2024-01-02", "2024-01-02T00:00:00Z"),
        ("0001-01-01T00:00:00+01:00", None),
        ("9999-12-31T23:59:59-01:00", None),
        ("1969-12-31T23:59:59Z", None),
        ("yesterday", None),
        ("2024-13-45T99:99:99Z", None),
        ("2024-01-02T03:04:05Z" + " " * 100, None),
        (20240102, None),
    ],
)
def test_json_feed_dates(value: object, expected: str | None) -> None:
    body = json_feed(items=[{"id": "1", "title": "t", "date_published": value}])
    assert parse(body).entries[0]["published"] == expected


# --- Limits ----------------------------------------------------------------------------------


def dated_items(count: int, *, shuffled: bool = True) -> str:
    days = list(range(1, count + 1))
    if shuffled:  # a deterministic shuffle: document order is not date order
        days = days[::2] + days[1::2]
    return "".join(
        f"<item><title>day {day}</title><guid>{day}</guid>"
        f"<pubDate>{day:02d} Jan 2024 00:00:00 GMT</pubDate></item>"
        for day in days
    )


def test_max_entries_keeps_the_newest_by_date_oldest_first() -> None:
    result = parse(rss(dated_items(10)), max_entries=3)
    assert [entry["title"] for entry in result.entries] == ["day 8", "day 9", "day 10"]


def test_all_entries_returned_oldest_first() -> None:
    result = parse(rss(dated_items(10)))
    assert [entry["title"] for entry in result.entries] == [f"day {d}" for d in range(1, 11)]


def test_undated_entries_follow_document_order() -> None:
    items = "".join(f"<item><title>n{i}</title></item>" for i in range(5))
    result = parse(rss(items), max_entries=2)
    assert [entry["title"] for entry in result.entries] == ["n1", "n0"]


def test_partly_dated_entries_follow_document_order() -> None:
    items = (
        "<item><title>a</title><pubDate>01 Jan 2020 00:00:00 GMT</pubDate></item>"
        "<item><title>b</title></item>"
        "<item><title>c</title><pubDate>01 Jan 2024 00:00:00 GMT</pubDate></item>"
    )
    assert [e["title"] for e in parse(rss(items)).entries] == ["c", "b", "a"]


def test_same_dates_keep_document_order_as_newest_first() -> None:
    items = "".join(
        f"<item><title>{name}</title><pubDate>01 Jan 2024 00:00:00 GMT</pubDate></item>"
        for name in "abc"
    )
    assert [e["title"] for e in parse(rss(items)).entries] == ["c", "b", "a"]
    assert [e["title"] for e in parse(rss(items), max_entries=2).entries] == ["b", "a"]


def test_max_entries_zero() -> None:
    assert parse(rss(dated_items(3)), max_entries=0).entries == []


def test_huge_fields_are_cut_before_processing() -> None:
    huge = "word " * 200_000  # 1 MB
    body = json_feed(
        title=huge,
        items=[{"id": "1", "title": huge, "content_text": huge, "summary": huge, "tags": [huge]}],
    )
    started = time.perf_counter()
    result = parse(body, max_field_chars=1_000)
    assert time.perf_counter() - started < 5
    (entry,) = result.entries
    assert result.title is not None and len(result.title) <= 1_000
    assert len(entry["title"]) <= 1_000
    assert len(entry["content_html"]) <= 1_000 + len("<p></p>")
    assert len(entry["summary"]) <= 300 and entry["summary"].endswith("…")
    assert len(entry["tags"][0]) <= 100


def test_huge_title_in_xml_is_cut() -> None:
    result = parse(rss(f"<item><title>{'a' * 1_000_000}</title></item>"), max_field_chars=5_000)
    assert len(result.entries[0]["title"]) == 5_000


def test_tag_and_enclosure_limits() -> None:
    categories = "".join(f"<category>tag {i}</category>" for i in range(80))
    enclosures = "".join(
        f'<enclosure url="https://cdn.example/{i}.mp3" type="audio/mpeg" length="{i}"/>'
        for i in range(30)
    )
    (entry,) = parse(rss(f"<item><title>t</title>{categories}{enclosures}</item>")).entries
    assert entry["tags"] == [f"tag {i}" for i in range(50)]
    assert len(entry["enclosures"]) == 20


@pytest.mark.parametrize(
    ("ttl", "seconds"), [("60", 3600), (" 5 ", 300), ("0", None), ("-5", None), ("soon", None)]
)
def test_ttl(ttl: str, seconds: int | None) -> None:
    assert parse(rss("", channel=f"<ttl>{ttl}</ttl>")).ttl_seconds == seconds


# --- Entities and DOCTYPEs -------------------------------------------------------------------


def test_xxe_external_entities_are_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER")
    for doctype in (
        f'<!DOCTYPE rss [<!ENTITY e SYSTEM "file://{secret}">]>',
        f'<!DOCTYPE rss [\n<!ENTITY e SYSTEM "file://{secret}">\n]>',
        f'<!DOCTYPE rss [\n<!ENTITY x "<x>">\n<!ENTITY e SYSTEM "file://{secret}">\n]>',
        f'<!DOCTYPE rss [\n<!ENTITY % p SYSTEM "file://{secret}">\n%p;\n]>',
        f'<!DOCTYPE rss SYSTEM "file://{secret}">',
    ):
        body = f'<?xml version="1.0"?>\n{doctype}\n' + rss(
            "<item><title>a &e;</title><description>&e;</description><guid>&e;</guid></item>"
        )
        result = parse(body)
        assert "TOP-SECRET-MARKER" not in " ".join(all_strings(result)), doctype


def billion_laughs(prefix: str = "") -> str:
    entities = ['<!ENTITY lol0 "lollollollollollollollollollol">']
    entities += [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE rss [\n' + prefix + "\n".join(entities) + "\n]>\n"
        + rss("<item><title>&lol9;</title><guid>1</guid></item>")
    )  # fmt: skip


@pytest.mark.parametrize("prefix", ["", '<!ENTITY x "<x>">\n', "<!-- ] > -->\n", "<?pi ' ?>\n"])
def test_billion_laughs_stays_bounded(prefix: str) -> None:
    started = time.perf_counter()
    result = parse(billion_laughs(prefix))
    assert time.perf_counter() - started < 2
    assert max(len(s) for s in all_strings(result)) < 1_000
    assert "lollol" not in " ".join(all_strings(result))


def test_quadratic_blowup_is_bounded() -> None:
    body = (
        f'<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY a "{"x" * 50_000}">]>\n'
        + rss(f"<item><title>{'&a;' * 50_000}</title></item>")
    )  # fmt: skip
    started = time.perf_counter()
    result = parse(body)
    assert time.perf_counter() - started < 2
    assert max(len(s) for s in all_strings(result)) < 500_000


def test_unterminated_doctype_is_harmless() -> None:
    body = '<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY a "aaaaaaaa">\n<!ENTITY b "&a;&a;'
    result = parse(body)
    assert result.error is not None


def test_short_literal_entities_are_kept() -> None:
    body = (
        '<?xml version="1.0"?>\n<!DOCTYPE rss [\n  <!ENTITY id "tag:example.com,">\n'
        '  <!ENTITY copy "&#169;">\n]>\n'
        + rss("<item><guid isPermaLink='false'>&id;2006</guid><title>&copy; me</title></item>")
    )  # fmt: skip
    result = parse(body)
    assert result.warning is None
    assert result.entries[0]["id"] == "f:tag:example.com,2006"
    assert result.entries[0]["title"] == "© me"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("&#55357;&#56832;", "😀"),
        ("&#xD83D;&#xDE00;", "😀"),
        ("&#55357;", "\ufffd"),
        ("&#x110000;", "\ufffd"),
        ("&#99999999999999999999999;", "\ufffd"),
        ("&#38;&#60;", "&<"),
    ],
)
def test_invalid_character_references_do_not_lose_the_feed(reference: str, expected: str) -> None:
    result = parse(rss(f"<item><title>a {reference} b</title></item>"))
    assert result.error is None
    assert result.entries[0]["title"] == f"a {expected} b"


@pytest.mark.parametrize(
    ("references", "expected"),
    [
        ("&#65;" * 63 + "&#55357;&#56832;", "A" * 63 + "😀"),
        ("&#65;" * 62 + "&#xD83D;&#xD83D;&#xDE00;", "A" * 62 + "\ufffd😀"),
        ("&#55357;" * 64 + "&#56832;", "\ufffd" * 63 + "😀"),
        ("&#65;" * 64 + "&#56832;&#65;", "A" * 64 + "\ufffdA"),
        ("&#65;" * 200 + "&#1;" + "&#65;" * 200, "A" * 200 + "\ufffd" + "A" * 200),
    ],
    ids=[
        "pair-across-slices",
        "high-high-low-across-slices",
        "64-highs-then-low",
        "lone-low",
        "long-run",
    ],
)
def test_long_runs_of_references_are_mended_like_short_ones(references: str, expected: str) -> None:
    # References are mended 64 at a time; a surrogate pair split between two slices is joined.
    result = parse(rss(f"<item><title>{references}</title></item>"))
    assert result.error is None
    assert result.entries[0]["title"] == expected


def longest_pause_of_another_thread(work: Callable[[], object]) -> tuple[float, float]:
    """Run ``work``; return how long it took and the longest a ticking thread was held up."""
    pauses: list[float] = []
    done = threading.Event()

    def tick() -> None:
        while not done.is_set():
            due = time.perf_counter() + 0.002
            time.sleep(0.002)
            pauses.append(time.perf_counter() - due)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        started = time.perf_counter()
        work()
        elapsed = time.perf_counter() - started
    finally:
        done.set()
        ticker.join()
    return elapsed, max(pauses)


def test_megabytes_of_references_are_mended_quickly_without_holding_the_gil() -> None:
    # 15 MB, the default max_bytes. One regex match over the whole run held the GIL for ~1 s
    # (the event loop stopped although parsing runs in a worker thread) and mending took ~3 s.
    text = rss(
        "<item><title>t</title><description>" + "&#65;" * 3_000_000 + "</description></item>"
    )
    mended: list[str] = []
    elapsed, pause = longest_pause_of_another_thread(
        lambda: mended.append(mend_character_references(text))
    )
    assert mended == [text]
    assert elapsed < 1.0, f"mending took {elapsed:.2f} s"
    assert pause < 0.25, f"another thread was held up for {pause:.2f} s"


def _mend_in_one_match(text: str) -> str:
    """The mending as it was before it worked in slices: the reference for the property below."""

    def mend_run(match: re.Match[str]) -> str:
        numbers = [int(h or d, 16 if h else 10) for h, d in _REFERENCE.findall(match[0])]
        if all(map(is_xml_character, numbers)):
            return match[0]
        characters: list[int] = []
        for number in numbers:
            previous = characters[-1] if characters else 0
            if 0xDC00 <= number <= 0xDFFF and 0xD800 <= previous <= 0xDBFF:
                characters[-1] = 0x10000 + ((previous - 0xD800) << 10) + (number - 0xDC00)
            else:
                characters.append(number)
        return "".join(f"&#x{n if is_xml_character(n) else 0xFFFD:X};" for n in characters)

    return re.sub(r"(?:&#(?:[xX][0-9a-fA-F]+|[0-9]+);)+", mend_run, text)


_REFERENCE = re.compile(r"&#(?:[xX]([0-9a-fA-F]+)|([0-9]+));")
_SURROGATES = st.integers(0xD800, 0xDFFF)
_NUMBERS = st.one_of(
    _SURROGATES, _SURROGATES, st.integers(0, 0x10FFFF), st.sampled_from([0xFFFE, 0x110000, 10**9])
)


@st.composite
def references(draw: st.DrawFn) -> str:
    """One character reference, decimal or hexadecimal, maybe with leading zeros."""
    number = draw(_NUMBERS)
    zeros = "0" * draw(st.integers(0, 2))
    if draw(st.booleans()):
        return f"&#{zeros}{number};"
    x, digits = draw(st.sampled_from([("x", f"{number:x}"), ("X", f"{number:X}")]))
    return f"&#{x}{zeros}{digits};"


def characters_of(text: str) -> str:
    return _REFERENCE.sub(lambda m: chr(int(m[1] or m[2], 16 if m[1] else 10)), text)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.lists(references(), max_size=150).map("".join),
            st.sampled_from(["a", " ", "&", "&#", ";", "&#;", "&#x;", "&amp;", "&#65"]),
        ),
        max_size=6,
    )
)
def test_mending_in_slices_means_the_same_as_mending_whole_runs(pieces: list[str]) -> None:
    text = "".join(pieces)
    mended, before = mend_character_references(text), _mend_in_one_match(text)
    assert all(is_xml_character(ord(c)) for c in characters_of(mended))
    assert characters_of(mended) == characters_of(before)
    if not re.search(r"(?:&#(?:[xX][0-9a-fA-F]+|[0-9]+);){65}", text):  # no run was sliced
        assert mended == before


def test_plain_references_name_only_xml_characters() -> None:
    # The fast path of the mending: whatever it lets through unread must be a valid character.
    for number in range(0x11000):
        for reference in (f"&#{number};", f"&#x{number:x};", f"&#X{number:X};"):
            if PLAIN_CHARACTER_REFERENCES.fullmatch(reference):
                assert is_xml_character(number), reference
    for common in (
        "&#32;",
        "&#65;",
        "&#233;",
        "&#8217;",
        "&#26085;",
        "&#xe9;",
        "&#x2019;",
        "&#xCFFF;",
    ):
        assert PLAIN_CHARACTER_REFERENCES.fullmatch(common * 3), common


def test_hostile_xml_base_does_not_lose_the_feed() -> None:
    body = atom(
        '<entry xml:base="http://bad host.example/"><id>1</id><title>t</title>'
        '<content type="html">&lt;a href="rel"&gt;link&lt;/a&gt;</content></entry>'
    )
    (entry,) = parse(body).entries
    assert entry["content_html"] == (
        '<a href="https://fetch.example/feeds/rel" rel="noopener noreferrer nofollow">link</a>'
    )


def test_doctype_inside_content_is_left_alone() -> None:
    body = rss("<item><title>t</title><description><![CDATA[ <!DOCTYPE ]]></description></item>")
    result = parse(body)
    assert result.warning is None and result.entries[0]["title"] == "t"


# --- Properties ------------------------------------------------------------------------------

_VALID = [(FIXTURES / name).read_bytes() for name in ("rss2.xml", "atom.xml", "jsonfeed11.json")]


@st.composite
def mangled_feeds(draw: st.DrawFn) -> bytes:
    """A valid feed with a random slice replaced by random bytes."""
    body = draw(st.sampled_from(_VALID))
    start = draw(st.integers(0, len(body)))
    end = draw(st.integers(start, len(body)))
    return body[:start] + draw(st.binary(max_size=40)) + body[end:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(st.binary(max_size=300), mangled_feeds()),
    content_type=st.sampled_from([None, "application/xml", "application/json", "text/html"]),
)
def test_parse_feed_never_raises(body: bytes, content_type: str | None) -> None:
    result = parse(body, content_type=content_type)
    assert (result.error is None) or result.entries == []
    for entry in result.entries:
        assert tuple(entry) == ENTRY_KEYS
        for field in ("title", "summary", "author", "feed_title"):
            assert entry[field] is None or not TAG_LIKE.search(entry[field])
        for url in (entry["url"], entry["image"]):
            assert url is None or url.startswith(("http://", "https://"))


@pytest.mark.parametrize(
    ("value", "websub"),
    [
        (None, True),  # no type: WebSub, as discovery has it
        ("WebSub", True),
        ("websub", True),
        (" WEBSUB ", True),
        ("PubSubHubbub", True),
        ("pubsubhubbub\n", True),
        ("rssCloud", False),
        ("", False),
        ("web sub", False),
        (1, False),
        (["websub"], False),
        ({"type": "websub"}, False),
    ],
)
def test_websub_hub_type(value: object, websub: bool) -> None:
    assert is_websub_hub_type(value) is websub


def test_json_feed_hubs_follow_the_hub_type_rule() -> None:
    hubs = [
        {"url": "https://untyped.example/"},
        {"type": "PubSubHubbub", "url": "https://pshb.example/"},
        {"type": " websub ", "url": "https://spaced.example/"},
        {"type": "rssCloud", "url": "https://cloud.example/"},
        {"type": None, "url": "https://null.example/"},
        {"type": 7, "url": "https://number.example/"},
    ]
    result = parse(json_feed(hubs=hubs, items=[]))
    assert result.hubs == [
        "https://untyped.example/",
        "https://pshb.example/",
        "https://spaced.example/",
        "https://null.example/",
    ]
