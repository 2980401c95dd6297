"""Feed icons, the pure part: the feed's own icon, page icons, sniffing, the generated icon,
ETags; and categories (the ``?category=`` filter, category-only config changes)."""

from __future__ import annotations

import json
import re
import struct
import xml.etree.ElementTree as ET

import pytest

from feedstream.core.categories import feed_categories, only_category_changed
from feedstream.core.config import FeedConfig
from feedstream.core.httprules import ApiError, parse_entries_query
from feedstream.core.icons import (
    ICON_CSP,
    MAX_PAGE_ICONS,
    etag_matches,
    favicon_url,
    feed_colour,
    feed_hints,
    generated_icon,
    icon_etag,
    icon_headers,
    not_an_image,
    page_icons,
    sniff_image,
)
from feedstream.core.normalize import parse_feed

BASE = "http://feeds.example.org/blog/feed.xml"

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 40
GIF = b"GIF89a" + b"\x01\x00\x01\x00" + b"\x00" * 20
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20
WEBP = b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8 " + b"\x00" * 20
ICO = b"\x00\x00\x01\x00\x01\x00" + b"\x10\x10\x00\x00" + b"\x00" * 20
SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"><rect width="1" height="1"/></svg>'
)


# -- the feed's own icon ------------------------------------------------------------------------


def atom(head: str) -> bytes:
    return (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>'
        f'<id>urn:t</id><link href="https://site.example.org/"/>{head}</feed>'
    ).encode()


def rss(channel: str) -> bytes:
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
        f"<link>https://site.example.org/</link>{channel}</channel></rss>"
    ).encode()


def json_feed(**fields: str) -> bytes:
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "T", "items": [], **fields}
    doc.setdefault("home_page_url", "https://site.example.org/")
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("body", "icon"),
    [
        (
            atom("<icon>/favicon.png</icon><logo>/logo.png</logo>"),
            "http://feeds.example.org/favicon.png",
        ),
        (atom("<logo>logo.png</logo>"), "http://feeds.example.org/blog/logo.png"),
        (atom(""), None),
        (
            rss(
                "<image><url>https://cdn.example.org/i.gif</url><title>T</title>"
                "<link>https://site.example.org/</link></image>"
            ),
            "https://cdn.example.org/i.gif",
        ),
        (
            rss(
                '<itunes:image xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd" '
                'href="https://cdn.example.org/cover.jpg"/>'
            ),
            "https://cdn.example.org/cover.jpg",
        ),
        (json_feed(favicon="/fav.png", icon="/big.png"), "http://feeds.example.org/fav.png"),
        (json_feed(icon="https://cdn.example.org/big.png"), "https://cdn.example.org/big.png"),
        (json_feed(icon="javascript:alert(1)"), None),
        (atom("<icon>data:image/png;base64,AAAA</icon>"), None),
    ],
    ids=[
        "atom-icon",
        "atom-logo",
        "atom-none",
        "rss-image",
        "itunes-image",
        "json-favicon",
        "json-icon",
        "json-script",
        "atom-data-url",
    ],
)
def test_the_feed_names_its_icon(body: bytes, icon: str | None) -> None:
    assert parse_feed(body, feed_id="f", base_url=BASE).icon_url == icon
    hints = feed_hints(body, BASE, None)
    assert hints.is_feed and hints.icon_url == icon
    assert hints.site_url == "https://site.example.org/"


def test_a_page_is_no_feed_hint() -> None:
    assert not feed_hints(b"<!doctype html><html><head></head></html>", BASE, "text/html").is_feed


# -- page icons ---------------------------------------------------------------------------------


def test_page_icons_in_order_touch_icons_last_at_most_three() -> None:
    page = b"""<!doctype html><html><head>
    <link rel="apple-touch-icon" href="/touch.png">
    <link rel="mask-icon" href="/mask.svg" color="#000">
    <link rel="stylesheet" href="/style.css">
    <link rel="shortcut icon" href="/favicon.ico">
    <link rel="icon" type="image/png" sizes="32x32" href="icons/32.png#frag">
    <link rel="ICON" href="/favicon.ico">
    <link rel="icon" href="javascript:alert(1)">
    </head><body><link rel="icon" href="https://cdn.example.org/late.svg"></body></html>"""
    assert page_icons(page, "https://site.example.org/blog/") == [
        "https://site.example.org/favicon.ico",
        "https://site.example.org/blog/icons/32.png",
        "https://cdn.example.org/late.svg",
    ]
    assert len(page_icons(page, "https://site.example.org/")) == MAX_PAGE_ICONS


def test_page_icons_honour_base_and_fall_back_to_touch_icons() -> None:
    page = b'<html><head><base href="https://static.example.org/a/"><link rel="apple-touch-icon-precomposed" href="t.png"></head></html>'
    assert page_icons(page, "https://site.example.org/") == ["https://static.example.org/a/t.png"]
    assert page_icons(b"<html><head><title>x</title></head></html>", "https://s.example/") == []
    assert page_icons(b"<![junk <link rel=icon href=/a.png>", "https://s.example/") == []


def test_favicon_url_is_at_the_site_root() -> None:
    assert (
        favicon_url("https://site.example.org:8443/a/b?c#d")
        == "https://site.example.org:8443/favicon.ico"
    )
    assert favicon_url("ftp://site.example.org/") is None


# -- sniffing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "media_type"),
    [
        (PNG, "image/png"),
        (GIF, "image/gif"),
        (b"GIF87a" + b"\x00" * 10, "image/gif"),
        (JPEG, "image/jpeg"),
        (WEBP, "image/webp"),
        (ICO, "image/x-icon"),
        (SVG, "image/svg+xml"),
        (
            b'\xef\xbb\xbf<?xml version="1.0"?>\n<!-- made by hand -->\n'
            b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
            + SVG,
            "image/svg+xml",
        ),
        (b"<!doctype html><html><body>not found</body></html>", None),
        (b"<html><svg></svg></html>", None),
        (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaa">]><svg>&a;</svg>', None),
        (b"<svg><!ENTITY x 'y'></svg>", None),
        (b"\x00\x00\x01\x00\x00\x00", None),  # an ICO header with no image
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
        (b"", None),
        (b"plain text", None),
        (b"<svg\xff\xfe>", None),
    ],
)
def test_sniff_image_knows_images_by_their_bytes(body: bytes, media_type: str | None) -> None:
    assert sniff_image(body) == media_type


def test_not_an_image_says_why() -> None:
    assert not_an_image(b"  ") == "an empty body, not an image"
    assert not_an_image(b"\n<!DOCTYPE html>\n<title>404</title>") == "an HTML page, not an image"
    assert (
        not_an_image(b"<?xml version='1.0'?><html><body/></html>") == "an HTML page, not an image"
    )
    assert "entity" in not_an_image(b"<!DOCTYPE svg [<!ENTITY a 'b'>]><svg/>")
    assert not_an_image(b"GIF-ish") == "not an image (PNG, GIF, JPEG, WebP, ICO or SVG)"


# -- the generated icon -------------------------------------------------------------------------


def test_generated_icon_is_an_svg_with_the_initial_on_the_feeds_colour() -> None:
    body = generated_icon("python-insider", "Python Insider")
    assert body == generated_icon("python-insider", "Python Insider")  # deterministic
    assert sniff_image(body) == "image/svg+xml"
    root = ET.fromstring(body)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.find(f"{ns}rect").get("fill") == feed_colour("python-insider")  # type: ignore[union-attr]
    assert root.find(f"{ns}text").text == "P"  # type: ignore[union-attr]
    assert re.fullmatch(r"#[0-9a-f]{6}", feed_colour("x"))
    assert feed_colour("a") != feed_colour("b")


@pytest.mark.parametrize(
    ("feed_id", "title", "initial"),
    [
        ("news", None, "N"),
        ("news", "«élan» vital", "É"),
        ("news", "<script>", "S"),
        ("news", "— ★ —", "N"),  # nothing to take from the title: the id
        ("42-things", None, "4"),
        ("straße", "ßpecial", "S"),
        ("--", None, "?"),
    ],
)
def test_the_initial(feed_id: str, title: str | None, initial: str) -> None:
    text = ET.fromstring(generated_icon(feed_id, title)).find("{http://www.w3.org/2000/svg}text")
    assert text is not None and text.text == initial


# -- HTTP ---------------------------------------------------------------------------------------


def test_etags_and_if_none_match() -> None:
    etag = icon_etag(PNG)
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag) and etag != icon_etag(GIF)
    assert etag_matches(etag, etag)
    assert etag_matches(f'"other", W/{etag}', etag)
    assert etag_matches("*", etag)
    assert not etag_matches(None, etag) and not etag_matches("", etag)
    assert not etag_matches('"other"', etag)
    headers = icon_headers(etag, generated=False)
    assert headers["Content-Security-Policy"] == ICON_CSP
    assert "sandbox" in ICON_CSP and "default-src 'none'" in ICON_CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "max-age" in headers["Cache-Control"]
    assert icon_headers(etag, generated=True)["Cache-Control"] == "no-cache"


# -- categories ---------------------------------------------------------------------------------

FEEDS = (
    FeedConfig("a", url="https://a.example/f", category="News"),
    FeedConfig("b", url="https://b.example/f", category="Tech / Python"),
    FeedConfig("c", url="https://c.example/f", category="News"),
    FeedConfig("d", token="t" * 8),
)


def test_feed_categories() -> None:
    assert feed_categories(FEEDS) == {
        "News": frozenset({"a", "c"}),
        "Tech / Python": frozenset({"b"}),
    }


def test_only_category_changed() -> None:
    a = FEEDS[0]
    assert only_category_changed(a, FeedConfig("a", url="https://a.example/f", category="X"))
    assert only_category_changed(a, FeedConfig("a", url="https://a.example/f"))
    assert not only_category_changed(a, a)
    assert not only_category_changed(None, a)
    assert not only_category_changed(
        a, FeedConfig("a", url="https://a.example/f", category="X", title="T")
    )


def test_the_category_filter() -> None:
    categories = feed_categories(FEEDS)
    known = {"a", "b", "c", "d"}
    query = parse_entries_query({"category": "News"}, known, categories)
    assert query.feeds == {"a", "c"}
    query = parse_entries_query({"category": " Tech / Python ", "feeds": "d"}, known, categories)
    assert query.feeds == {"b", "d"}  # either
    assert parse_entries_query({}, known, categories).feeds is None
    for value, reason in [
        ("Sport", "category: unknown category 'Sport'"),
        ("news", "category: unknown category 'news'"),  # names are exact
        ("  ", "category: give a category name"),
    ]:
        with pytest.raises(ApiError) as error:
            parse_entries_query({"category": value}, known, categories)
        assert (error.value.status, error.value.reason) == (400, reason)
    with pytest.raises(ApiError):
        parse_entries_query({"category": "News"}, known)  # no categories given: none known
