"""Which feeds a web page names, and whether fetched bytes are a feed themselves.

Pure: no I/O. :mod:`feedstream.service.discover` fetches; this module reads what came back.

:func:`page_links` reads an HTML page's ``<link>`` elements with :mod:`html.parser` (no regular
expression over HTML) and keeps those that name a feed:

* ``rel`` holds ``alternate`` (a list such as ``"alternate home"`` counts) and ``type`` is one
  of :data:`FEED_TYPES`: RSS, Atom, JSON Feed, RDF, and the generic ``application/json``,
  ``application/xml`` and ``text/xml`` that older sites use. The generic types are taken on
  purpose: nothing found here is offered before it was fetched and parsed as a feed, so a wrong
  guess (WordPress's ``application/json`` REST link) costs one request, never a false offer;
* or ``rel`` holds ``feed`` (HTML's own relation for a feed, which needs no type).

``href`` is resolved against the page's ``<base href>`` (the first one, wherever it is, as
browsers do) or else the page's URL; only http(s) URLs of at most 2048 characters are kept,
without their fragment, deduplicated, in page order, at most :data:`MAX_LINKS` of them.
``<link>`` elements in the body count too: pages put them there, and readers accept them.

:func:`common_paths` gives the usual feed locations of a site (:data:`COMMON_PATHS`, from its
root); :func:`candidate_links` uses them only when the page names no feed.

The HTML parser sees at most :data:`MAX_SCAN_CHARS` characters, is fed once and never closed:
on the Python this runs on, ``HTMLParser.close()`` takes quadratic time on an unclosed comment
(90 s for 300 KB), while feeding stays linear (about 1.5 s for the worst 512 KiB measured), and
it may raise on junk (``<![`` raises AssertionError), which ends the scan with what was found.
Discovery runs it off the event loop, in the worker process that parses the page as a feed.
"""

from __future__ import annotations

import codecs
import logging
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urldefrag, urlsplit, urlunsplit

from feedstream.core.encoding import sniff_encoding
from feedstream.core.normalize import ParsedFeed, parse_feed
from feedstream.core.urls import resolve_http_url

logger = logging.getLogger(__name__)

__all__ = [
    "COMMON_PATHS",
    "FEED_TYPES",
    "MAX_LINKS",
    "MAX_SCAN_CHARS",
    "FeedLink",
    "candidate_links",
    "common_paths",
    "decode_html",
    "page_links",
    "parse_if_feed",
]

FEED_TYPES = frozenset(
    {
        "application/rss+xml",
        "application/atom+xml",
        "application/feed+json",
        "application/rdf+xml",
        "application/json",
        "application/xml",
        "text/xml",
    }
)
"""``type`` values of a ``<link rel="alternate">`` that may be a feed (lower case, no params)."""

COMMON_PATHS = ("/feed", "/rss", "/atom.xml", "/feed.json", "/index.xml", "/feed/", "/rss.xml")
"""Where sites usually keep a feed, tried (from the site's root) when a page names none."""

MAX_LINKS = 16
"""At most this many links are taken from one page: each one is fetched."""

MAX_SCAN_CHARS = 1 << 19
"""The HTML parser reads this much of a page (512 Ki characters) and no more."""


@dataclass(frozen=True, slots=True)
class FeedLink:
    """A URL that may be a feed: named by a page (``source="link"``) or guessed (``"guess"``)."""

    url: str
    type: str | None = None  # the media type the page gave
    title: str | None = None  # the link's title attribute
    source: str = "link"


def decode_html(body: bytes, content_type: str | None = None) -> str:
    """The text of a page: its BOM, else the charset of *content_type*, else UTF-8, else
    windows-1252 (what a browser falls back to)."""
    codec, bom_length = sniff_encoding(body)
    body = body[bom_length:]
    if codec is not None:
        return body.decode(codec, "replace")
    charset = _charset(content_type)
    if charset is not None:
        return body.decode(charset, "replace")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("cp1252", "replace")


def _charset(content_type: str | None) -> str | None:
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            try:
                return codecs.lookup(value.strip().strip("\"'")).name
            except LookupError:
                return None
    return None


class LinkScanner(HTMLParser):
    """Reads a page's ``<base href>`` and hands each ``<link>`` with an href to :meth:`link`.

    :meth:`scan` feeds it at most :data:`MAX_SCAN_CHARS` characters and never closes it (see the
    module docstring); subclasses collect the links they want.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("link", "base"):
            return
        values: dict[str, str] = {}
        for name, value in attrs:  # names are lower case; the first of a repeated one wins
            values.setdefault(name, value or "")
        href = values.get("href", "").strip()
        if not href:
            return
        if tag == "base":
            if self.base is None:
                self.base = href
            return
        self.link(href, values)

    def link(self, href: str, values: dict[str, str]) -> None:
        raise NotImplementedError

    def scan(self, body: bytes, base_url: str, content_type: str | None) -> str:
        """Read the page; return the URL its relative links resolve against."""
        try:
            self.feed(decode_html(body, content_type)[:MAX_SCAN_CHARS])
        except Exception:  # html.parser asserts on some junk: keep what was found before it
            logger.debug("HTML scan of %s stopped early", base_url, exc_info=True)
        if self.base is not None:
            return resolve_http_url(self.base, base_url) or base_url
        return base_url


class _LinkParser(LinkScanner):
    """Collects the feed ``<link>`` attributes, raw, in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str | None, str | None]] = []  # href, type, title

    def link(self, href: str, values: dict[str, str]) -> None:
        if len(self.links) >= 4 * MAX_LINKS:  # plenty to find MAX_LINKS distinct feed ones in
            return
        rels = {token.lower() for token in values.get("rel", "").split()}
        media = values.get("type", "").split(";")[0].strip().lower() or None
        if ("alternate" in rels and media in FEED_TYPES) or "feed" in rels:
            self.links.append((href, media, values.get("title")))


def page_links(body: bytes, base_url: str, content_type: str | None = None) -> list[FeedLink]:
    """The feeds an HTML page names in ``<link>`` elements (see the module docstring)."""
    parser = _LinkParser()
    base = parser.scan(body, base_url, content_type)
    found: list[FeedLink] = []
    seen: set[str] = set()
    for href, media, title in parser.links:
        url = resolve_http_url(href, base)
        if url is None:
            continue
        url = urldefrag(url).url
        if url in seen:
            continue
        seen.add(url)
        found.append(FeedLink(url, media, _title(title), "link"))
        if len(found) >= MAX_LINKS:
            break
    return found


def _title(value: str | None) -> str | None:
    if not value:
        return None
    text = " ".join("".join(c if c.isprintable() else " " for c in value).split())
    return text[:200] or None


def common_paths(base_url: str) -> list[FeedLink]:
    """:data:`COMMON_PATHS` on the site of *base_url* (its scheme, host and port)."""
    parts = urlsplit(base_url)
    root = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    return [FeedLink(root + path, None, None, "guess") for path in COMMON_PATHS]


def candidate_links(body: bytes, base_url: str, content_type: str | None = None) -> list[FeedLink]:
    """The links a page names, or, when it names none, the common paths of its site."""
    return page_links(body, base_url, content_type) or common_paths(base_url)


def parse_if_feed(
    body: bytes,
    url: str,
    content_type: str | None = None,
    *,
    max_entries: int = 500,
) -> ParsedFeed | None:
    """*body* parsed as a feed when it is one (:func:`parse_feed` finds no error), else None.

    An HTML page (a "not found" page answered with 200, a site's home page) is not a feed. A
    valid feed without entries is one.
    """
    parsed = parse_feed(
        body,
        feed_id="discover",
        base_url=url,
        content_type=content_type,
        max_entries=max_entries,
    )
    return None if parsed.error else parsed
