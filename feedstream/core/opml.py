"""OPML subscription lists in and out: parsing, exporting, ids for new feeds, URL keys.

Pure: the standard library and defusedxml, no I/O. The CLI (``feedstream import`` /
``export``) and the server's ``/api/opml`` build on these functions.

Reading (:func:`parse_opml`)
============================

OPML 1.0 and 2.0 files as readers export them (Miniflux, FreshRSS, Feedly, Inoreader,
NetNewsWire, ...) are parsed strictly, but forgivingly where exporters are known to be sloppy:

* **Safety first.** The bytes are refused unread past :data:`MAX_OPML_BYTES` (10 MiB: a list of
  50,000 feeds fits in a third of that). The XML goes through defusedxml: any DOCTYPE, entity
  declaration or external reference is refused (no billion laughs, no XXE), outlines nest at
  most :data:`MAX_DEPTH` deep and a file has at most :data:`MAX_OUTLINES` outlines. Every
  refusal is an :class:`OpmlError` carrying the line it happened on.
* **Any encoding.** A byte-order mark wins, then the XML declaration, then UTF-8. Files that
  declare ISO-8859-1 (or ASCII) are read as windows-1252, its superset, as browsers do: exporters
  that say latin-1 write curly quotes in 0x80-0x9F. Other declared encodings (Shift_JIS,
  KOI8-R, ...) are read with Python's codecs. Bytes invalid in the encoding are refused with
  their line.
* **Mended, not refused:** a bare ``&`` (``xmlUrl="...?a=1&b=2"``, a frequent exporter bug)
  becomes ``&amp;``, and HTML named references (``&nbsp;``, ``&eacute;``) become the character
  they name; XML allows neither, and the files are otherwise fine.
* **Outlines.** One with an ``xmlUrl`` is a feed, whatever its ``type`` (``rss``, ``atom``, none
  at all). Its name is ``text`` (the attribute OPML requires and readers display), else
  ``title``. One with only an ``htmlUrl`` is a *site*: a web page whose feed must be found by
  discovery, so it is reported apart (:class:`OpmlSite`). One with neither but with children is
  a folder: its name is the category of every feed below it. Attribute names are matched
  case-insensitively (``xmlurl``, ``XMLURL``). ``feed://`` URLs become ``http://``.
* **Categories** of nested folders are joined with ``" / "`` (``Tech / Python``), the way the
  readers that show one level of folders flatten deeper ones, so that ``Work / News`` and
  ``Home / News`` stay apart. A path longer than the config's 64 characters keeps its innermost
  levels (the most specific names), cut to 64 if one name alone is longer.

Writing (:func:`export_opml`)
=============================

OPML 2.0, UTF-8, no dates (the same config gives the same bytes). One folder per category,
flat (``Tech / Python`` is one folder and reads back as the same category), ``type="rss"`` on
every feed as the spec asks, and the id in a ``feedstream:id`` attribute, so that an import
elsewhere keeps the ids (entry ids start with them). A feed without a title gets its id as
``text`` and no ``title``, which an import reads back as no title. Push-only feeds have no URL
and are left out. Importing an export gives the same feeds: URL, title, category and id.

Ids (:func:`derive_ids`) and URL keys (:func:`url_key`)
=======================================================

Ids are slugs of titles (ASCII, lowercase, hyphens; accents dropped, ``ß`` -> ``ss``), else
of the URL's host (``日本語`` or empty titles), made unique with ``-2``, ``-3``... The same
titles in the same order against the same taken ids always give the same ids.

Duplicates are found by :func:`url_key`: the URL without its scheme (``http`` and ``https`` are
the same feed), fragment, default port, trailing slash and percent-encoding differences.
"""

from __future__ import annotations

import codecs
import contextlib
import html.entities
import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden
from defusedxml.ElementTree import DefusedXMLParser

from feedstream.core.config import FEED_ID_RE, MAX_CATEGORY_CHARS, FeedConfig
from feedstream.core.encoding import sniff_encoding
from feedstream.core.urls import is_http_url

logger = logging.getLogger(__name__)

__all__ = [
    "FEEDSTREAM_NS",
    "MAX_DEPTH",
    "MAX_OPML_BYTES",
    "MAX_OUTLINES",
    "OpmlDocument",
    "OpmlError",
    "OpmlFeed",
    "OpmlSite",
    "OpmlSkipped",
    "derive_ids",
    "export_opml",
    "ids_for",
    "parse_opml",
    "slugify",
    "url_key",
]

MAX_OPML_BYTES = 10 * 1024 * 1024
"""The largest OPML file read; a larger one is refused before any parsing."""
MAX_DEPTH = 32
"""The deepest element nesting accepted (real files nest folders one or two levels deep)."""
MAX_OUTLINES = 50_000
"""The most outlines one file may hold."""
MAX_TITLE_CHARS = 200
FEEDSTREAM_NS = "https://github.com/feedstream/feedstream/opml"
"""The namespace of feedstream's own attribute in exports: ``feedstream:id``."""

_CATEGORY_SEPARATOR = " / "
_ID_ATTRIBUTE = f"{{{FEEDSTREAM_NS}}}id"
_MAX_SLUG_CHARS = 48  # leaves room for "-2".. within the 64 characters of an id


class OpmlError(ValueError):
    """The file cannot be read as OPML; :attr:`line` says where (None: nowhere in particular)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.message = message
        self.line = line


@dataclass(frozen=True, slots=True)
class OpmlFeed:
    """An outline with a feed URL (``xmlUrl``)."""

    title: str | None
    xml_url: str
    html_url: str | None = None
    category: str | None = None
    id: str | None = None  # feedstream's own id, from an export's feedstream:id
    line: int = 0


@dataclass(frozen=True, slots=True)
class OpmlSite:
    """An outline with only a web page (``htmlUrl``): its feed must be discovered."""

    title: str | None
    html_url: str
    category: str | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class OpmlSkipped:
    """An outline that names something but cannot be used, and why."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class OpmlDocument:
    title: str | None
    feeds: tuple[OpmlFeed, ...]
    sites: tuple[OpmlSite, ...]
    skipped: tuple[OpmlSkipped, ...]


# -- reading -------------------------------------------------------------------------------------


def parse_opml(data: bytes, *, max_bytes: int = MAX_OPML_BYTES) -> OpmlDocument:
    """Read an OPML 1.0/2.0 file, or raise :class:`OpmlError` naming the line."""
    if len(data) > max_bytes:
        line = data.count(b"\n", 0, max_bytes) + 1
        raise OpmlError(
            f"the file is larger than the {_size(max_bytes)} limit for OPML; refused unparsed "
            f"(the limit is passed on this line)",
            line,
        )
    text = _mend_references(_decode(data))
    builder = _Builder()
    parser = DefusedXMLParser(
        target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    builder.expat = parser.parser
    try:
        parser.feed(text)
        parser.close()
    except OpmlError:
        raise
    except DTDForbidden:
        raise OpmlError(
            "a DOCTYPE is not allowed in OPML (a DTD could declare entities)", builder.line()
        ) from None
    except EntitiesForbidden:
        raise OpmlError("entity declarations are not allowed in OPML", builder.line()) from None
    except DefusedXmlException as exc:  # external references
        raise OpmlError(f"refused: {exc}", builder.line()) from None
    except ParseError as exc:
        position = getattr(exc, "position", None)
        where = position[0] if position else builder.line()
        raise OpmlError(f"not well-formed XML: {_expat_message(exc)}", where) from None
    if not builder.root_seen:
        raise OpmlError("not an OPML document: no root element", builder.line())
    return OpmlDocument(
        title=_clean(builder.head_title, MAX_TITLE_CHARS),
        feeds=tuple(builder.feeds),
        sites=tuple(builder.sites),
        skipped=tuple(builder.skipped),
    )


def _size(count: int) -> str:
    return f"{count / (1024 * 1024):g} MiB" if count >= 1024 * 1024 else f"{count} bytes"


def _expat_message(exc: ParseError) -> str:
    """Expat's words without its own ``line N, column M`` (the line is ours to give)."""
    return re.sub(r":\s*line \d+, column \d+$", "", str(exc))


_DECLARED_ENCODING = re.compile(
    rb"""\s*<\?xml\s[^>]{0,200}?\bencoding\s*=\s*(["'])([A-Za-z][\w.:-]{0,39})\1"""
)
_LATIN1_NAMES = frozenset({"latin-1", "iso8859-1", "cp1252"})  # codecs.lookup names
_ASCII_NAMES = frozenset({"ascii"})


def _decode(data: bytes) -> str:
    """The text of *data*: BOM, then the declaration, then UTF-8 (see the module docstring)."""
    codec, bom_length = sniff_encoding(data)
    body = data[bom_length:]
    if codec is None and not bom_length:
        match = _DECLARED_ENCODING.match(body)
        if match:
            codec = _declared_codec(match.group(2).decode("ascii"))
    codec = codec or "utf-8"
    if codec in _LATIN1_NAMES:
        try:
            return body.decode("cp1252")
        except UnicodeDecodeError:  # one of the five bytes cp1252 leaves undefined
            return body.decode("latin-1")
    if codec in _ASCII_NAMES:
        codec = "utf-8"  # a superset: an exporter that says ASCII and writes UTF-8 is common
    try:
        return body.decode(codec)
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        bad = body[exc.start : exc.start + 1].hex().upper()
        raise OpmlError(
            f"byte 0x{bad} is not valid {codec}; save the file as UTF-8 or declare its encoding",
            line,
        ) from None


def _declared_codec(name: str) -> str | None:
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise OpmlError(f"unknown encoding {name!r} in the XML declaration", 1) from None
    if codec.startswith(("utf-16", "utf-32")):  # no BOM, no NUL bytes: it is not
        return "utf-8"
    return codec


# A reference XML knows (character references, the five predefined entities) is kept; a named
# one HTML knows becomes its character; any other "&" is a bare ampersand and gets escaped.
_REFERENCE = re.compile(r"&(?:(#[0-9]{1,8}|#[xX][0-9A-Fa-f]{1,8})|([A-Za-z][A-Za-z0-9]{0,31}))?;?")
_XML_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"})


def _mend_references(text: str) -> str:
    if "&" not in text:
        return text

    def mend(match: re.Match[str]) -> str:
        whole, number, name = match.group(0), match.group(1), match.group(2)
        if not whole.endswith(";") or whole == "&;":
            return "&amp;" + whole[1:]
        if number is not None or name in _XML_ENTITIES:
            return whole
        character = html.entities.html5.get(f"{name};")
        if character is not None:
            return "".join(f"&#{ord(c)};" for c in character)
        return "&amp;" + whole[1:]

    return _REFERENCE.sub(mend, text)


@dataclass(slots=True)
class _Frame:
    """An element being read: its local name and, for an outline, what it is."""

    name: str
    label: str | None = None  # a folder's name: the category of what is below it
    site: OpmlSite | None = None  # an htmlUrl-only outline, kept unless it turns out a folder
    children: bool = False


class _Builder:
    """The parser's target: turns start/end events into feeds, without building a tree."""

    def __init__(self) -> None:
        self.expat: Any = None
        self.stack: list[_Frame] = []
        self.root_seen = False
        self.outlines = 0
        self.head_title: str | None = None
        self.title_parts: list[str] | None = None
        self.title_chars = 0
        self.feeds: list[OpmlFeed] = []
        self.sites: list[OpmlSite] = []
        self.skipped: list[OpmlSkipped] = []

    def line(self) -> int | None:
        number = getattr(self.expat, "CurrentLineNumber", None)
        return number if isinstance(number, int) and number > 0 else None

    # -- the target protocol of xml.etree.ElementTree.XMLParser --------------------------------

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        name = tag.rpartition("}")[2].lower()
        if not self.root_seen:
            self.root_seen = True
            if name != "opml":
                raise OpmlError(
                    f"not an OPML document: the root element is <{name[:40]}>", self.line()
                )
        if len(self.stack) >= MAX_DEPTH:
            raise OpmlError(f"elements nest deeper than {MAX_DEPTH} levels", self.line())
        path = [frame.name for frame in self.stack]
        frame = _Frame(name)
        if name == "title" and path == ["opml", "head"]:
            self.title_parts = []
        elif name == "outline" and "body" in path:
            self.outlines += 1
            if self.outlines > MAX_OUTLINES:
                raise OpmlError(f"more than {MAX_OUTLINES} outlines", self.line())
            if self.stack:
                self.stack[-1].children = True
            self._outline(frame, attrib)
        self.stack.append(frame)

    def end(self, tag: str) -> None:
        frame = self.stack.pop()
        if frame.name == "title" and self.title_parts is not None:
            self.head_title = "".join(self.title_parts)
            self.title_parts = None
        if frame.site is not None and not frame.children:
            self.sites.append(frame.site)

    def data(self, text: str) -> None:
        if self.title_parts is not None and self.title_chars < 4 * MAX_TITLE_CHARS:
            self.title_parts.append(text)
            self.title_chars += len(text)

    # -- outlines ------------------------------------------------------------------------------

    def _outline(self, frame: _Frame, attrib: dict[str, str]) -> None:
        attrs = {key.rpartition("}")[2].lower(): value for key, value in attrib.items()}
        line = self.line() or 0
        name = _clean(attrs.get("text"), MAX_TITLE_CHARS) or _clean(
            attrs.get("title"), MAX_TITLE_CHARS
        )
        xml_url = attrs.get("xmlurl", "").strip()
        html_url = _http(attrs.get("htmlurl"))
        if xml_url:
            url = _http(xml_url)
            if url is None:
                reason = f"xmlUrl {_clean(xml_url, 80)!r} is not an http(s) URL"
                self.skipped.append(OpmlSkipped(line, reason))
                return
            own_id = attrib.get(_ID_ATTRIBUTE, "").strip()
            untitled = own_id and "title" not in attrs  # feedstream's export of a title-less feed
            self.feeds.append(
                OpmlFeed(
                    title=None if untitled else name,
                    xml_url=url,
                    html_url=html_url,
                    category=self._category(),
                    id=own_id if FEED_ID_RE.match(own_id) else None,
                    line=line,
                )
            )
            return
        if html_url is not None:
            frame.site = OpmlSite(name, html_url, self._category(), line)
        elif attrs.get("url", "").strip():
            kind = attrs.get("type", "").strip().lower()[:20] or "link"
            self.skipped.append(
                OpmlSkipped(line, f"a {kind} outline (not followed: only feeds are imported)")
            )
        frame.label = name

    def _category(self) -> str | None:
        labels = [frame.label for frame in self.stack if frame.label]
        return _category_path(labels)


def _category_path(labels: Sequence[str]) -> str | None:
    """Folder names joined with " / ", keeping the innermost ones that fit in 64 characters."""
    kept: list[str] = []
    for label in reversed(labels):
        candidate = _CATEGORY_SEPARATOR.join([label, *kept])
        if len(candidate) > MAX_CATEGORY_CHARS:
            if not kept:
                kept = [label[:MAX_CATEGORY_CHARS].rstrip()]
            break
        kept.insert(0, label)
    return _CATEGORY_SEPARATOR.join(kept) or None


_WHITESPACE = re.compile(r"\s+")


def _clean(value: str | None, limit: int) -> str | None:
    """One line of text: whitespace runs made one space, control characters dropped, cut."""
    if not value:
        return None
    text = "".join(c for c in value if unicodedata.category(c) != "Cc" or c.isspace())
    text = _WHITESPACE.sub(" ", text).strip()[:limit].rstrip()
    return text or None


def _http(value: str | None) -> str | None:
    """*value* as an absolute http(s) URL (``feed://`` and ``feed:`` mended), else None."""
    if not value:
        return None
    url = value.strip()
    lower = url[:16].lower()
    if lower.startswith("feed://"):
        url = "http://" + url[7:]
    elif lower.startswith(("feed:http://", "feed:https://")):
        url = url[5:]
    return url if is_http_url(url) else None


# -- writing -------------------------------------------------------------------------------------


def export_opml(feeds: Iterable[FeedConfig], *, title: str = "feedstream subscriptions") -> bytes:
    """OPML 2.0 for the polled *feeds*, categories as folders, in config order."""
    groups: dict[str | None, list[FeedConfig]] = {}
    order: list[FeedConfig | str] = []  # uncategorized feeds and categories, as first met
    for feed in feeds:
        if feed.url is None:
            continue
        if feed.category is None:
            order.append(feed)
        elif feed.category not in groups:
            groups[feed.category] = []
            order.append(feed.category)
        if feed.category is not None:
            groups[feed.category].append(feed)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<opml version="2.0" xmlns:feedstream="{FEEDSTREAM_NS}">',
        "  <head>",
        f"    <title>{_xml_text(title)}</title>",
        "  </head>",
        "  <body>",
    ]
    for item in order:
        if isinstance(item, FeedConfig):
            lines.append("    " + _feed_outline(item))
            continue
        label = _xml_text(item, attribute=True)
        lines.append(f'    <outline text="{label}" title="{label}">')
        lines.extend("      " + _feed_outline(feed) for feed in groups[item])
        lines.append("    </outline>")
    lines += ["  </body>", "</opml>", ""]
    return "\n".join(lines).encode("utf-8")


def _feed_outline(feed: FeedConfig) -> str:
    assert feed.url is not None
    attrs = [("text", feed.title or feed.id)]
    if feed.title:
        attrs.append(("title", feed.title))
    attrs += [("type", "rss"), ("xmlUrl", feed.url), ("feedstream:id", feed.id)]
    return (
        "<outline "
        + " ".join(f'{name}="{_xml_text(value, attribute=True)}"' for name, value in attrs)
        + "/>"
    )


def _xml_text(value: str, *, attribute: bool = False) -> str:
    text = "".join(c for c in value if _is_xml_char(c))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if attribute:
        text = text.replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;")
        text = text.replace("\t", "&#9;")
    return text


def _is_xml_char(c: str) -> bool:
    n = ord(c)
    return n in (0x9, 0xA, 0xD) or 0x20 <= n <= 0xD7FF or 0xE000 <= n <= 0xFFFD or n >= 0x10000


# -- ids -----------------------------------------------------------------------------------------

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_LETTERS = str.maketrans(
    {"ß": "ss", "æ": "ae", "Æ": "ae", "ø": "o", "Ø": "o", "œ": "oe", "Œ": "oe", "đ": "d",
     "Đ": "d", "ł": "l", "Ł": "l", "þ": "th", "Þ": "th", "ð": "d", "Ð": "d", "\u0131": "i"}
)  # fmt: skip


def slugify(text: str | None, limit: int = _MAX_SLUG_CHARS) -> str:
    """ASCII, lowercase, words joined by hyphens, at most *limit* characters; may be empty."""
    if not text:
        return ""
    folded = unicodedata.normalize("NFKD", text.translate(_LETTERS))
    ascii_text = folded.encode("ascii", "ignore").decode("ascii").lower()
    slug = _NOT_SLUG.sub("-", ascii_text).strip("-")
    if len(slug) > limit:
        cut = slug[:limit]
        slug = cut.rsplit("-", 1)[0] if "-" in cut[limit // 2 :] else cut
    return slug.strip("-")


def _host_slug(url: str | None) -> str:
    if not url:
        return ""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    host = host.removeprefix("www.")
    return slugify(host.replace(".", "-"))


def derive_ids(
    items: Iterable[tuple[str | None, str | None]], taken: Iterable[str] = ()
) -> list[str]:
    """One new, unique feed id for each ``(title, url)`` in *items*.

    The slug of the title, else of the URL's host, else ``feed``; ``-2``, ``-3``... added until
    it is free of *taken* and of the ids given before it. Deterministic.
    """
    used = set(taken)
    ids: list[str] = []
    for title, url in items:
        base = slugify(title) or _host_slug(url) or "feed"
        candidate, number = base, 1
        while candidate in used:
            number += 1
            suffix = f"-{number}"
            candidate = base[: 64 - len(suffix)].rstrip("-") + suffix
        used.add(candidate)
        ids.append(candidate)
    return ids


def ids_for(feeds: Sequence[OpmlFeed], taken: Iterable[str] = ()) -> list[str]:
    """Ids for *feeds*: the id an export carried when it is free, else :func:`derive_ids`.

    The carried ids are reserved first, so that a feed without one cannot take the id a later
    feed brings along.
    """
    used = set(taken)
    chosen: list[str | None] = []
    for feed in feeds:
        if feed.id is not None and feed.id not in used:
            used.add(feed.id)
            chosen.append(feed.id)
        else:
            chosen.append(None)
    rest = [(f.title, f.xml_url) for f, own in zip(feeds, chosen, strict=True) if not own]
    derived = iter(derive_ids(rest, used))
    return [own or next(derived) for own in chosen]


# -- duplicate detection -------------------------------------------------------------------------

_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normalize_escapes(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        character = chr(int(match.group(0)[1:], 16))
        return character if character in _UNRESERVED else match.group(0).upper()

    return _ESCAPE.sub(one, text)


def url_key(url: str) -> str:
    """What two URLs of the same feed have in common, for finding duplicates.

    The scheme is left out (``http`` and ``https`` name the same feed), and so are the fragment,
    a default port (80, 443), one trailing slash and the case of the host and of escapes.
    The query is kept as it is: it often selects the feed.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.strip()
    host = (parts.hostname or "").rstrip(".")
    with contextlib.suppress(UnicodeError):
        host = host if host.isascii() else host.encode("idna").decode("ascii")
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + host
    if port is not None and port not in (80, 443):
        netloc += f":{port}"
    path = _normalize_escapes(parts.path) or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    query = _normalize_escapes(parts.query)
    return netloc + path + ("?" + query if query else "")
