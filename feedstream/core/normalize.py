"""Turn the bytes of a fetched feed document into normalized, sanitized entries.

This is the sans-io core of feedstream: :func:`parse_feed` takes the body of an Atom, RSS
0.9x/2.0, RSS 1.0 (RDF) or JSON Feed 1.0/1.1 document and returns a :class:`ParsedFeed` whose
entries are plain dicts with exactly the keys of :data:`ENTRY_KEYS`, every string in them made
safe by :mod:`feedstream.core.sanitize`. It never raises for any input: a body that is not a usable
feed comes back with ``error`` set and no entries.

The work is done in two steps. A reader turns the document into format-neutral
``_RawEntry``/``_RawFeed`` records holding the untrusted values, each string already cut to
``max_field_chars``; ``_normalize_entry`` then builds the entry dicts from them, so every rule
(ids, dates, sanitizing, limits) lives in one place whatever the format.

XML goes through feedparser with its own sanitizing and URI rewriting off. Two details matter
for safety:

* feedparser is handed a ``BytesIO``, never the bytes themselves: given ``bytes`` it first tries
  them as a file name and would read that local file (``b"/etc/passwd"``).
* The DOCTYPE is neutralized before parsing (:mod:`feedstream.core.xmlsafe`). Python's expat already
  skips external entities (no XXE), and expat 2.4.0 and later stop runaway entity expansion,
  but only past 8 MiB of expanded text, and only where Python was built with such an expat.
  Rewriting the DOCTYPE makes both independent of the expat at hand: only short literal
  entities such as ``<!ENTITY copy "&#169;">`` are kept, which cannot nest or amplify.
* Character references that name no character (``&#55357;``, ``&#x110000;``) crash
  feedparser; they are mended first (the same module). Any other failure inside
  feedparser makes the document an error rather than an exception.

JSON Feed is mapped here, since feedparser's JSON support is not released.

At about 650 lines this module is over the package's ~600-line guide on purpose: its two
readers (XML, JSON Feed) and the one normalizer share the raw records and a dozen coercion
helpers, and split apart they would only import each other's privates.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import re
import time
import xml.sax
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape, unescape
from typing import Any, NamedTuple

import feedparser

from feedstream.core.encoding import sniff_encoding
from feedstream.core.sanitize import clean_html, plain_text, remove_control_chars, safe_url
from feedstream.core.times import format_rfc3339_datetime
from feedstream.core.xmlsafe import prepare_xml

__all__ = [
    "ENTRY_KEYS",
    "WEBSUB_HUB_TYPES",
    "ParsedFeed",
    "is_websub_hub_type",
    "parse_feed",
    "parse_remainder",
]

logger = logging.getLogger(__name__)

ENTRY_KEYS = (
    "id", "cursor", "feed", "feed_title", "title", "url", "author", "published", "updated",
    "summary", "content_html", "tags", "enclosures", "image", "via", "received", "matched",
    "highlight", "duplicate_of",
)  # fmt: skip

SUMMARY_CHARS = 300
MAX_ID_CHARS = 512
MAX_TAGS = 50
TAG_CHARS = 100
MAX_ENCLOSURES = 20
WARNING_CHARS = 300

_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2101, 1, 1, tzinfo=UTC)  # exclusive

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_JSON_TYPES = frozenset({"application/feed+json", "application/json"})
_JSON_FEED_VERSION = "https://jsonfeed.org/version/"

_MEDIA_TYPE = re.compile(r"[a-z0-9][\w!#$&^.+-]{0,126}/[a-z0-9][\w!#$&^.+-]{0,126}", re.ASCII)
_IMG_SRC = re.compile(r'<img\s[^>]*?\bsrc="([^"]*)"')
_HTML_PAGE = re.compile(
    r"(?:\s|<\?.*?\?>|<!--.*?-->)*<(?:!doctype\s+html|html|head|body)\b",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """What :func:`parse_feed` found in one document."""

    format: str  # "atom" | "rss" | "rdf" | "json" | "unknown"
    title: str | None  # plain text
    link: str | None  # site URL, http(s) or None
    entries: list[dict[str, Any]]  # normalized, oldest first
    hubs: list[str]  # WebSub hub URLs
    self_url: str | None  # rel="self" / JSON Feed feed_url
    ttl_seconds: int | None  # RSS <ttl>
    error: str | None  # the body is not a usable feed (then entries == [])
    warning: str | None  # the document is broken but was read
    #: The feed's own icon, http(s) or None: Atom ``icon`` (else ``logo``), RSS ``image/url``,
    #: JSON Feed ``favicon`` (else ``icon``); the small square one first.
    icon_url: str | None = None

    @classmethod
    def failure(cls, error: str) -> ParsedFeed:
        return cls("unknown", None, None, [], [], None, None, error, None)


class _NotAFeed(Exception):
    """The body is not a usable feed; the message is the ``ParsedFeed.error`` sentence."""


class _Text(NamedTuple):
    value: str
    is_html: bool


class _RawEnclosure(NamedTuple):
    url: str | None
    type: str | None
    length: object


@dataclass(slots=True)
class _RawEntry:
    """One entry's untrusted values, whatever the format, strings cut to the field limit."""

    guid: str | None = None
    link: str | None = None
    title: _Text | None = None
    author: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    summary: _Text | None = None
    content: _Text | None = None
    base: str | None = None  # xml:base of the content, if any
    tags: list[str] = field(default_factory=list)
    enclosures: list[_RawEnclosure] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # candidates, best first

    @property
    def date(self) -> datetime | None:
        return self.published or self.updated

    def is_empty(self) -> bool:
        return not (
            self.guid or self.link or self.title or self.summary or self.content or self.enclosures
        )


@dataclass(slots=True)
class _RawFeed:
    format: str
    title: _Text | None = None
    link: str | None = None
    hubs: list[str] = field(default_factory=list)
    self_url: str | None = None
    ttl_seconds: int | None = None
    entries: list[_RawEntry] = field(default_factory=list)
    warning: str | None = None
    icon: str | None = None

    def is_blank(self) -> bool:
        """Nothing was read: no title, no link, no entry with anything in it."""
        return not (self.title or self.link or any(not entry.is_empty() for entry in self.entries))


def parse_feed(
    body: bytes,
    *,
    feed_id: str,
    base_url: str | None,
    content_type: str | None = None,
    via: str = "poll",
    max_entries: int = 500,
    max_field_chars: int = 100_000,
) -> ParsedFeed:
    """Parse and normalize one feed document. Never raises for any ``body``.

    ``base_url`` (normally the URL the body was fetched from) resolves relative links.
    At most ``max_entries`` entries are kept, the newest ones, and returned oldest first.
    """
    parsed = _parse(body, feed_id, base_url, content_type, via, max_entries, max_field_chars)
    assert parsed is not None  # only a remainder is refused
    return parsed


def parse_remainder(
    body: bytes,
    *,
    feed_id: str,
    base_url: str | None,
    content_type: str | None = None,
    via: str = "poll",
    max_entries: int = 500,
    max_field_chars: int = 100_000,
) -> ParsedFeed | None:
    """:func:`parse_feed` of a document some entries were cut from (:mod:`feedstream.core.trim`),
    or None when the entries left might be ordered otherwise than among the whole document's.

    The parse orders entries by date only when every entry has one, else by document order:
    with an undated entry cut, entries dated out of document order would come out sorted.
    None when every entry left is dated and their document order is not newest first (then
    both rules agree only if the whole document had an undated entry, which is not known).
    """
    return _parse(
        body, feed_id, base_url, content_type, via, max_entries, max_field_chars, remainder=True
    )


def _parse(
    body: bytes,
    feed_id: str,
    base_url: str | None,
    content_type: str | None,
    via: str,
    max_entries: int,
    max_field_chars: int,
    *,
    remainder: bool = False,
) -> ParsedFeed | None:
    try:
        raw = _read_document(body, content_type, max_field_chars)
        if remainder and not _order_settled(raw.entries):
            return None
        feed_title = _plain(raw.title)
        entries = [
            _normalize_entry(
                entry, feed_id=feed_id, feed_title=feed_title, base_url=base_url, via=via
            )
            for entry in _newest(raw.entries, max_entries)
        ]
    except _NotAFeed as exc:
        return ParsedFeed.failure(str(exc))
    except Exception:  # a hostile document must not take the caller down
        logger.exception(
            "feed %s: unexpected error while parsing", feed_id, extra={"feed": feed_id}
        )
        return ParsedFeed.failure("could not parse the document (internal error)")
    return ParsedFeed(
        format=raw.format,
        title=feed_title,
        link=safe_url(raw.link, base_url),
        entries=entries,
        hubs=_unique(safe_url(hub, base_url) for hub in raw.hubs),
        self_url=safe_url(raw.self_url, base_url),
        ttl_seconds=raw.ttl_seconds,
        error=None,
        warning=raw.warning,
        icon_url=safe_url(raw.icon, base_url),
    )


# --- Reading the document --------------------------------------------------------------------


def _read_document(body: bytes, content_type: str | None, limit: int) -> _RawFeed:
    codec, bom_length = sniff_encoding(body)
    if not body[bom_length:].strip():
        raise _NotAFeed("empty body")
    head = body[bom_length : bom_length + 4096].decode(codec or "utf-8", "replace").lstrip()
    media_type = (content_type or "").split(";")[0].strip().lower()
    if head.startswith(("{", "[")) or (media_type in _JSON_TYPES and not head.startswith("<")):
        return _read_json(body[bom_length:], codec or "utf-8", limit)
    return _read_xml(body, head, content_type, limit)


# --- XML through feedparser ------------------------------------------------------------------


def _read_xml(body: bytes, head: str, content_type: str | None, limit: int) -> _RawFeed:
    try:
        result = feedparser.parse(
            io.BytesIO(prepare_xml(body)),
            response_headers={"content-type": content_type} if content_type else {},
            sanitize_html=False,
            resolve_relative_uris=False,
        )
    except Exception as exc:  # feedparser's lenient parser has bugs on badly broken input
        logger.debug("feedparser failed", exc_info=True)
        raise _NotAFeed(
            f"not a feed: the document is too broken to read ({type(exc).__name__} in feedparser)"
        ) from None
    version = _string(result.get("version"), 32) or ""
    problem = _describe_problem(result.get("bozo_exception")) if result.get("bozo") else None
    entries = _mappings(result.get("entries"))
    if not version and not entries:
        raise _NotAFeed(_not_a_feed(head, problem))
    feed = _mapping(result.get("feed"))
    links = _mappings(feed.get("links"))
    raw = _RawFeed(
        format=_format(version),
        title=_detail_text(feed.get("title_detail"), limit),
        link=_string(feed.get("link"), limit),
        hubs=_link_hrefs(links, "hub", limit),
        self_url=next(iter(_link_hrefs(links, "self", limit)), None),
        ttl_seconds=_ttl_seconds(feed.get("ttl")),
        entries=[_xml_entry(entry, feed, limit) for entry in entries],
        warning=problem,
        icon=_string(feed.get("icon"), limit)  # Atom; RSS and iTunes images come as image.href
        or _string(feed.get("logo"), limit)
        or _string(_mapping(feed.get("image")).get("href"), limit),
    )
    # When the XML is not well-formed feedparser's lenient parser takes over, and it finds an
    # RSS or Atom document in any junk with "<rss" or "<feed" in it. A valid feed may be empty;
    # a broken document that yields nothing is not a feed.
    if isinstance(result.get("bozo_exception"), xml.sax.SAXException) and raw.is_blank():
        raise _NotAFeed(_not_a_feed(head, problem))
    return raw


def _not_a_feed(head: str, problem: str | None) -> str:
    if _HTML_PAGE.match(head):
        return "not a feed: looks like an HTML page"
    if problem:
        return f"not a feed: {problem}"
    return "not a feed: no RSS, Atom or RDF document element"


def _format(version: str) -> str:
    """Our name for a feedparser ``version`` ("rss20", "atom10", "rss10", "cdf"...)."""
    if version.startswith("atom"):
        return "atom"
    if version in ("rss090", "rss10"):
        return "rdf"
    return "rss" if version.startswith("rss") else "unknown"


def _link_hrefs(links: list[Mapping[str, Any]], rel: str, limit: int) -> list[str]:
    return _present(*(_string(link.get("href"), limit) for link in links if link.get("rel") == rel))


def _describe_problem(exc: object) -> str:
    if isinstance(exc, xml.sax.SAXParseException):
        text = (
            f"XML error at line {exc.getLineNumber()}, column {exc.getColumnNumber()}: "
            f"{exc.getMessage()}"
        )
    else:
        text = str(exc) or type(exc).__name__
    return text[:WARNING_CHARS]


def _xml_entry(entry: Mapping[str, Any], feed: Mapping[str, Any], limit: int) -> _RawEntry:
    summary = _mapping(entry.get("summary_detail"))
    content = _best_content(_mappings(entry.get("content")), limit) or summary
    enclosures = [
        _RawEnclosure(
            _string(item.get("href"), limit), _string(item.get("type"), limit), item.get("length")
        )
        for item in _mappings(entry.get("enclosures"))
    ]
    media = _mappings(entry.get("media_content"))
    return _RawEntry(
        guid=_string(entry.get("id"), limit),
        link=_string(entry.get("link"), limit),
        title=_detail_text(entry.get("title_detail"), limit),
        author=_xml_author(entry, limit) or _xml_author(feed, limit),
        published=_from_struct_time(entry.get("published_parsed")),
        # feedparser answers ``updated_parsed`` with the published date when there is none.
        updated=_from_struct_time(
            entry.get("updated_parsed") if "updated_parsed" in entry else None
        ),
        summary=_detail_text(summary, limit),
        content=_detail_text(content, limit),
        base=_string(content.get("base"), limit),
        tags=[
            tag
            for item in _mappings(entry.get("tags"))
            if (tag := _string(item.get("term"), limit) or _string(item.get("label"), limit))
        ],
        enclosures=enclosures,
        images=_present(
            *(_string(item.get("url"), limit) for item in _mappings(entry.get("media_thumbnail"))),
            *(
                _string(item.get("url"), limit)
                for item in media
                if item.get("medium") == "image" or _is_image_type(item.get("type"))
            ),
            *(enclosure.url for enclosure in enclosures if _is_image_type(enclosure.type)),
        ),
    )


def _best_content(contents: Sequence[Mapping[str, Any]], limit: int) -> Mapping[str, Any] | None:
    """The HTML version of the content if there is one, else the plain text one."""
    usable = [item for item in contents if _string(item.get("value"), limit)]
    html = (item for item in usable if _is_html_type(item.get("type")))
    text = (item for item in usable if item.get("type") == "text/plain")
    return next(html, None) or next(text, None)


def _detail_text(detail: object, limit: int) -> _Text | None:
    """A feedparser ``*_detail`` dict as text, HTML or not as its declared type says."""
    detail = _mapping(detail)
    value = _string(detail.get("value"), limit)
    return _Text(value, _is_html_type(detail.get("type"))) if value else None


def _xml_author(item: Mapping[str, Any], limit: int) -> str | None:
    return _string(_mapping(item.get("author_detail")).get("name"), limit) or _string(
        item.get("author"), limit
    )


def _from_struct_time(value: object) -> datetime | None:
    if not isinstance(value, time.struct_time):
        return None
    try:
        moment = datetime(*value[:5], min(value.tm_sec, 59), tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
    return _within_range(moment)


def _ttl_seconds(value: object) -> int | None:
    text = value.strip() if isinstance(value, str) else ""
    if not text.isascii() or not text.isdigit() or len(text) > 9 or int(text) == 0:
        return None
    return int(text) * 60


# --- JSON Feed -------------------------------------------------------------------------------


def _read_json(body: bytes, codec: str, limit: int) -> _RawFeed:
    warning = None
    try:
        text = body.decode(codec)
    except UnicodeDecodeError:
        text = body.decode(codec, "replace")
        warning = f"invalid {codec} bytes replaced"
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise _NotAFeed("not a feed: invalid JSON") from None
    version = document.get("version") if isinstance(document, dict) else None
    if not (isinstance(version, str) and version.startswith(_JSON_FEED_VERSION)):
        raise _NotAFeed("not a feed: JSON without a JSON Feed version")
    items = document.get("items")
    if not isinstance(items, list):
        warning = warning or "JSON Feed without an items list"
    feed_author = _json_author(document, limit)
    return _RawFeed(
        format="json",
        title=_json_text(document.get("title"), limit),
        link=_string(document.get("home_page_url"), limit),
        hubs=_present(
            *(
                _string(hub.get("url"), limit)
                for hub in _mappings(document.get("hubs"))
                if is_websub_hub_type(hub.get("type"))  # not rssCloud
            )
        ),
        self_url=_string(document.get("feed_url"), limit),
        entries=[_json_item(item, feed_author, limit) for item in _mappings(items)],
        warning=warning,
        icon=_string(document.get("favicon"), limit) or _string(document.get("icon"), limit),
    )


WEBSUB_HUB_TYPES = frozenset({"websub", "pubsubhubbub"})
"""JSON Feed hub ``type`` values naming WebSub (PubSubHubbub is its former name)."""


def is_websub_hub_type(value: object) -> bool:
    """Whether a JSON Feed hub object's ``type`` makes it a WebSub hub.

    JSON Feed lists hubs of several protocols (``rssCloud`` among them); feedstream can only
    subscribe to WebSub ones. A hub without a ``type`` (*value* None) is taken as WebSub, the
    protocol JSON Feed names first; otherwise the text, stripped and case-insensitive, must be
    ``websub`` or ``pubsubhubbub``. Feed parsing and WebSub discovery both ask this, so a hub
    is either found by both or by neither.
    """
    if value is None:
        return True
    return isinstance(value, str) and value.strip().lower() in WEBSUB_HUB_TYPES


def _json_item(item: Mapping[str, Any], feed_author: str | None, limit: int) -> _RawEntry:
    content_html = _string(item.get("content_html"), limit)
    item_id = item.get("id")
    if isinstance(item_id, int | float) and not isinstance(item_id, bool):
        item_id = str(item_id)  # the spec says string, some feeds use numbers
    attachments = [
        _RawEnclosure(
            _string(attachment.get("url"), limit),
            _string(attachment.get("mime_type"), limit),
            attachment.get("size_in_bytes"),
        )
        for attachment in _mappings(item.get("attachments"))
    ]
    return _RawEntry(
        guid=_string(item_id, limit),
        link=_string(item.get("url"), limit) or _string(item.get("external_url"), limit),
        title=_json_text(item.get("title"), limit),
        author=_json_author(item, limit) or feed_author,
        published=_from_rfc3339(item.get("date_published")),
        updated=_from_rfc3339(item.get("date_modified")),
        summary=_json_text(item.get("summary"), limit),
        content=(
            _Text(content_html, True)
            if content_html
            else _json_text(item.get("content_text"), limit)
        ),
        tags=_present(*(_string(tag, limit) for tag in _sequence(item.get("tags")))),
        enclosures=attachments,
        images=_present(
            _string(item.get("image"), limit),
            _string(item.get("banner_image"), limit),
            *(attachment.url for attachment in attachments if _is_image_type(attachment.type)),
        ),
    )


def _json_text(value: object, limit: int) -> _Text | None:
    text = _string(value, limit)
    return _Text(text, False) if text else None


def _json_author(item: Mapping[str, Any], limit: int) -> str | None:
    """The first named author: ``authors`` (JSON Feed 1.1), else ``author`` (1.0)."""
    candidates = [*_mappings(item.get("authors")), _mapping(item.get("author"))]
    return next(
        (name for author in candidates if (name := _string(author.get("name"), limit))), None
    )


def _from_rfc3339(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return _within_range(moment)


# --- Normalizing -----------------------------------------------------------------------------


def _newest(entries: list[_RawEntry], max_entries: int) -> list[_RawEntry]:
    """The newest ``max_entries`` non-empty entries, oldest first.

    Dates decide when every entry has one; otherwise document order does, newest first as
    feeds list them.
    """
    entries = [entry for entry in entries if not entry.is_empty()]
    if all(entry.date for entry in entries):
        # A stable sort, even reversed: entries with the same date keep document order.
        entries = sorted(entries, key=lambda entry: entry.date or _EARLIEST, reverse=True)
    return entries[: max(max_entries, 0)][::-1]


def _order_settled(entries: list[_RawEntry]) -> bool:
    """Whether :func:`_newest` orders the non-empty *entries* alike by either of its rules:
    some have no date (document order), or the dates do not rise in document order."""
    dates = [entry.date for entry in entries if not entry.is_empty()]
    if not all(dates):
        return True
    return all(a >= b for a, b in itertools.pairwise(dates) if a and b)


def _normalize_entry(
    raw: _RawEntry, *, feed_id: str, feed_title: str | None, base_url: str | None, via: str
) -> dict[str, Any]:
    content_base = safe_url(raw.base, base_url) or base_url
    content_html = _content_html(raw.content, content_base)
    enclosures = _enclosures(raw.enclosures, base_url)
    return {
        "id": _entry_id(feed_id, raw),
        "cursor": None,
        "feed": feed_id,
        "feed_title": feed_title,
        "title": _plain(raw.title),
        "url": safe_url(raw.link, base_url),
        "author": plain_text(raw.author, is_html=False),
        "published": _rfc3339(raw.published),
        "updated": _rfc3339(raw.updated),
        "summary": _plain(raw.summary or raw.content, max_chars=SUMMARY_CHARS),
        "content_html": content_html,
        "tags": _tags(raw.tags),
        "enclosures": enclosures,
        "image": _image(raw.images, content_html, base_url),
        "via": via,
        "received": None,
        "matched": [],  # ids of the [[rules]] that matched it (set at ingest)
        "highlight": False,  # a "highlight" rule matched it
        "duplicate_of": None,  # the id of the same story from another feed, if folded
    }


def _entry_id(feed_id: str, raw: _RawEntry) -> str:
    """``feed_id:`` + the guid, else the link, else a digest of title and content."""
    candidates = (_id_text(value) for value in (raw.guid, raw.link) if value)
    key = next((candidate for candidate in candidates if candidate), None)
    if key is None:
        title, content = raw.title, raw.content or raw.summary
        key = _sha256(f"{title.value if title else ''}\n{content.value if content else ''}")
    elif len(key) > MAX_ID_CHARS:
        key = _sha256(key)
    return f"{feed_id}:{key}"


def _id_text(value: str) -> str:
    return remove_control_chars(value).strip()


def _sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _plain(text: _Text | None, max_chars: int | None = None) -> str | None:
    if text is None:
        return None
    return plain_text(text.value, is_html=text.is_html, max_chars=max_chars)


def _content_html(content: _Text | None, base_url: str | None) -> str | None:
    if content is None:
        return None
    if content.is_html:
        return clean_html(content.value, base_url)
    return clean_html(f"<p>{escape(content.value.strip(), quote=False)}</p>", base_url)


def _rfc3339(moment: datetime | None) -> str | None:
    return format_rfc3339_datetime(moment) if moment else None


def _within_range(moment: datetime) -> datetime | None:
    return moment if _EARLIEST <= moment < _LATEST else None


def _tags(values: list[str]) -> list[str]:
    tags: list[str] = []
    seen: set[str] = set()
    for value in values:
        tag = plain_text(value, is_html=False, max_chars=TAG_CHARS)
        if tag and tag.casefold() not in seen:
            seen.add(tag.casefold())
            tags.append(tag)
            if len(tags) == MAX_TAGS:
                break
    return tags


def _enclosures(raw: list[_RawEnclosure], base_url: str | None) -> list[dict[str, Any]]:
    enclosures: list[dict[str, Any]] = []
    seen: set[str] = set()
    for enclosure in raw:
        url = safe_url(enclosure.url, base_url)
        if url is None or url in seen:
            continue
        seen.add(url)
        enclosures.append(
            {"url": url, "type": _media_type(enclosure.type), "length": _length(enclosure.length)}
        )
        if len(enclosures) == MAX_ENCLOSURES:
            break
    return enclosures


def _image(candidates: list[str], content_html: str | None, base_url: str | None) -> str | None:
    """The first usable declared image, else the first image in the (sanitized) content."""
    for candidate in candidates:
        if url := safe_url(candidate, base_url):
            return url
    for match in _IMG_SRC.finditer(content_html or ""):
        if url := safe_url(unescape(match[1])):
            return url
    return None


def _media_type(value: str | None) -> str | None:
    media_type = (value or "").split(";")[0].strip().lower()
    return media_type if _MEDIA_TYPE.fullmatch(media_type) else None


def _is_html_type(value: object) -> bool:
    return isinstance(value, str) and value in _HTML_TYPES


def _is_image_type(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith("image/")


def _length(value: object) -> int | None:
    """A byte count: a non-negative integer, or a string of at most 18 digits."""
    if isinstance(value, str):
        digits = value.strip()
        return int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 18 else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


# --- Type-defensive access to untrusted structures -------------------------------------------


def _string(value: object, limit: int) -> str | None:
    """``value`` cut to ``limit`` characters if it is a string and not blank, else None."""
    if not isinstance(value, str):
        return None
    text = value[:limit]
    return text if text.strip() else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _mappings(value: object) -> list[Mapping[str, Any]]:
    return [item for item in _sequence(value) if isinstance(item, Mapping)]


def _sequence(value: object) -> Sequence[object]:
    return value if isinstance(value, list | tuple) else ()


def _present(*values: str | None) -> list[str]:
    return [value for value in values if value]


def _unique(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(value for value in values if value))
