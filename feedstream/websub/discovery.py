"""Sans-io WebSub discovery (section 4 of the W3C Recommendation of 23 January 2018).

Pure: no sockets, no trio, no httpx, no clock.  Given a fetched topic (its
response headers, body, Content-Type and final URL), find the hub URLs and
the ``rel=self`` URL.

Public API
==========

``discover(headers, body, content_type, fetched_url, *, feed_links=None) -> Discovery``
    ``Link`` headers first; the body (Atom, RSS, HTML, JSON Feed) only for what
    they lack.  ``feed_links=(hubs, self_url)`` passes what a feed parser already
    found in the body, so the body is not parsed a second time.
``Discovery(hub_urls, self_url, source)``; ``Discovery.topic(fetched_url)``
    gives the URL to use as ``hub.topic``.
``parse_link_header(value) -> list[Link]`` -- RFC 8288 ``Link`` parser.
``http_url(ref, base)`` -- resolve a reference, keep it only as an absolute http(s) URL of at
    most ``MAX_URL_CHARS`` (2048) characters: :func:`feedstream.core.urls.resolve_http_url`
    under the name :mod:`feedstream.websub.protocol` imports.

Why this module is over 600 lines: it holds four small, bounded parsers (RFC 8288
headers, XML with a tolerant fallback, an HTML head tokenizer, JSON Feed) that
each must stay linear on hostile input; splitting them apart would only spread
the shared ``_Found`` accumulator and the URL rules over several files.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import unescape as _html_unescape
from urllib.parse import urljoin

from feedstream.core.encoding import sniff_bom
from feedstream.core.normalize import is_websub_hub_type
from feedstream.core.urls import resolve_http_url

__all__ = [
    "MAX_DISCOVERY_BODY_BYTES",
    "MAX_HUBS",
    "MAX_LINK_HEADER_CHARS",
    "Discovery",
    "HeadersLike",
    "Link",
    "discover",
    "http_url",
    "parse_link_header",
]


MAX_DISCOVERY_BODY_BYTES = 1 << 20
"""Only this much of a fetched body is looked at for ``<link>`` elements."""

MAX_LINK_HEADER_CHARS = 1 << 16
"""Only this many characters of ``Link`` header values are parsed in total."""

MAX_HUBS = 8
"""At most this many distinct hub URLs are kept from discovery."""

http_url = resolve_http_url
"""Hub, self and ``<base href>`` URLs follow the one URL rule of :mod:`feedstream.core.urls`
(absolute http(s), at most ``MAX_URL_CHARS`` = 2048 characters, the limit the feed parser
already applies to the same hub and self URLs in a feed document)."""


_IANA_REL_PREFIXES = (
    "http://www.iana.org/assignments/relation/",
    "https://www.iana.org/assignments/relation/",
)


def _rel_tokens(value: str) -> set[str]:
    """Split a ``rel`` value into lower-cased relation types (IANA URIs shortened)."""
    tokens: set[str] = set()
    for token in value.split():
        token = token.lower()
        for prefix in _IANA_REL_PREFIXES:
            if token.startswith(prefix):
                token = token[len(prefix) :]
        tokens.add(token)
    return tokens


@dataclass(frozen=True)
class Discovery:
    """What discovery found on a fetched topic.

    ``hub_urls``: absolute http(s) hub URLs, in document order, deduplicated.
    ``self_url``: the advertised ``rel=self`` URL, or ``None``.
    ``source``: where they came from: ``"headers"``, one body kind (``"atom"``,
    ``"rss"``, ``"html"``, ``"jsonfeed"``), ``"headers+<kind>"`` when the headers
    gave one of the two and the body the other, or ``"none"``.
    """

    hub_urls: list[str]
    self_url: str | None
    source: str

    @property
    def found(self) -> bool:
        """True when at least one hub was found, i.e. a subscription is possible."""
        return bool(self.hub_urls)

    def topic(self, fetched_url: str) -> str:
        """The ``hub.topic`` to subscribe to: the self URL, else the fetched URL."""
        return self.self_url if self.self_url is not None else fetched_url


@dataclass(frozen=True)
class Link:
    """One RFC 8288 link-value: the raw target and its parameters.

    Parameter names are lower-cased; when a parameter repeats, the first
    occurrence wins (RFC 8288 section 3).
    """

    target: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def rels(self) -> set[str]:
        """The relation types of ``rel``, lower-cased; empty without ``rel``."""
        return _rel_tokens(self.params.get("rel", ""))


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"?', re.DOTALL)
_UNQUOTED_VALUE = re.compile(r'[^\s;,"]*')
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_OWS = " \t"


def _skip_to(value: str, i: int, stops: str) -> int:
    """Index of the next character of ``stops`` at or after ``i``, skipping quoted strings."""
    n = len(value)
    while i < n:
        c = value[i]
        if c in stops:
            return i
        if c == '"':
            i = _QUOTED.match(value, i).end()  # type: ignore[union-attr]
        else:
            i += 1
    return n


def parse_link_header(value: str, *, max_links: int = 1024) -> list[Link]:
    """Parse one ``Link`` header value (RFC 8288) into its link-values.

    Handles several comma-separated links, commas inside ``<...>`` and inside
    quoted strings, quoted and bare parameter values, backslash escapes, and
    parameters in any order.  Malformed pieces are skipped, never raised on.
    Runs in time linear in ``len(value)``.
    """
    links: list[Link] = []
    n = len(value)
    i = 0
    while i < n and len(links) < max_links:
        while i < n and value[i] in " \t\r\n,":
            i += 1
        if i >= n:
            break
        if value[i] != "<":  # not a link-value: skip to the next one
            i = _skip_to(value, i, ",")
            continue
        end = value.find(">", i + 1)
        if end < 0:
            break
        target = value[i + 1 : end].strip()
        i = end + 1
        params: dict[str, str] = {}
        while i < n:
            while i < n and value[i] in _OWS:
                i += 1
            if i >= n:
                break
            if value[i] == ",":
                i += 1
                break
            if value[i] != ";":  # junk: drop it up to the next parameter or link
                i = _skip_to(value, i, ";,")
                continue
            i += 1
            while i < n and value[i] in _OWS:
                i += 1
            match = _TOKEN.match(value, i)
            if match is None:
                i = _skip_to(value, i, ";,")
                continue
            name = match.group().lower()
            i = match.end()
            while i < n and value[i] in _OWS:
                i += 1
            param_value = ""
            if i < n and value[i] == "=":
                i += 1
                while i < n and value[i] in _OWS:
                    i += 1
                if i < n and value[i] == '"':
                    quoted = _QUOTED.match(value, i)
                    assert quoted is not None  # the pattern always matches a '"'
                    param_value = _QUOTED_PAIR.sub(r"\1", quoted.group(1))
                    i = quoted.end()
                else:
                    bare = _UNQUOTED_VALUE.match(value, i)
                    assert bare is not None  # the pattern matches the empty string
                    param_value = bare.group()
                    i = bare.end()
            params.setdefault(name, param_value)
        links.append(Link(target, params))
    return links


HeadersLike = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]
"""Response headers: a mapping, or (name, value) pairs when a name repeats."""


def _header_values(headers: HeadersLike, wanted: str) -> list[str]:
    """All values of the header named ``wanted`` (case-insensitive), in order."""
    pairs: Iterable[tuple[str | bytes, str | bytes]]
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    values: list[str] = []
    for name, value in pairs:
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if name.strip().lower() != wanted:
            continue
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        values.append(value)
    return values


class _Found:
    """Accumulates hub and self URLs, keeping the first self and distinct hubs."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.hubs: list[str] = []
        self.self_url: str | None = None

    def add(self, rel: str, href: str | None, base: str | None = None) -> None:
        """Record a link with relation types ``rel`` pointing to ``href``."""
        if not href:
            return
        rels = _rel_tokens(rel)
        if "hub" not in rels and "self" not in rels:
            return
        url = http_url(href, base if base is not None else self.base)
        if url is None:
            return
        if "hub" in rels and url not in self.hubs and len(self.hubs) < MAX_HUBS:
            self.hubs.append(url)
        if "self" in rels and self.self_url is None:
            self.self_url = url


def _links_from_headers(headers: HeadersLike, fetched_url: str) -> _Found:
    found = _Found(fetched_url)
    budget = MAX_LINK_HEADER_CHARS
    for value in _header_values(headers, "link"):
        if budget <= 0:
            break
        value = value[:budget]
        budget -= len(value)
        for link in parse_link_header(value):
            anchor = link.params.get("anchor")
            if anchor is not None and urljoin(fetched_url, anchor) != fetched_url:
                continue  # the link is about another resource
            found.add(link.params.get("rel", ""), link.target)
    return found


# ---- body decoding and sniffing -------------------------------------------

_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9][\w.:\-]*)""", re.IGNORECASE)
_XML_DECL_ENCODING = re.compile(
    rb"""^\s*<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z][\w.\-]{0,40})["']"""
)
_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z][\w.\-]{0,40})""", re.IGNORECASE
)


def _decode_body(body: bytes, content_type: str | None) -> str:
    """Decode a fetched body: BOM, then the charset parameter, then in-document hints."""
    bom = sniff_bom(body)
    if bom is not None:
        codec, length = bom
        return body[length:].decode(codec, "replace")
    candidates: list[str] = []
    if content_type:
        match = _CHARSET_PARAM.search(content_type)
        if match:
            candidates.append(match.group(1))
    for pattern in (_XML_DECL_ENCODING, _META_CHARSET):
        match_b = pattern.search(body[:1024])
        if match_b:
            candidates.append(match_b.group(1).decode("ascii"))
    if body[:2] in (b"<\x00", b"\x00<"):
        candidates.insert(0, "utf-16-le" if body[:1] == b"<" else "utf-16-be")
    for encoding in candidates:
        try:
            return body.decode(encoding, "replace")
        except (LookupError, ValueError):
            continue
    return body.decode("utf-8", "replace")


_FIRST_ELEMENT = re.compile(r"<([A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?)")


def _sniff(text: str, content_type: str | None) -> str:
    """Guess ``"json"``, ``"xml"`` or ``"html"`` from the content, then the media type."""
    head = text[:4096].lstrip("\ufeff \t\r\n")
    if head.startswith("{"):
        return "json"
    media = (content_type or "").split(";", 1)[0].strip().lower()
    match = _FIRST_ELEMENT.search(head)
    if match:
        local = match.group(1).rpartition(":")[2].lower()
        if local in ("feed", "rss", "rdf"):
            return "xml"
        if local == "html":
            return "html"
    if "xml" in media or head.startswith("<?xml"):
        return "xml"
    return "html"


# ---- XML (Atom, RSS) ------------------------------------------------------

_XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
_DOCTYPE_TOKENS = re.compile(r"""[^"'\[\]>]+|"[^"]*"|'[^']*'|["'\[\]>]""")


def _doctype_end(text: str, start: int) -> int:
    """Index just past the ``<!DOCTYPE ...>`` starting at ``start``, or -1."""
    depth = 0
    for token in _DOCTYPE_TOKENS.finditer(text, start + 9):
        c = token.group()
        if c == "[":
            depth += 1
        elif c == "]":
            depth = max(0, depth - 1)
        elif c == ">" and depth == 0:
            return token.end()
        elif c in "\"'":  # an unterminated quote: the declaration never ends
            return -1
    return -1


def _after_prolog(text: str) -> str | None:
    """The document from its root element on, with the whole prolog removed.

    The XML declaration, comments, processing instructions and the DOCTYPE
    (internal subset included) are dropped, so the XML parser never sees a DTD
    and cannot declare or expand entities.  ``None`` if the prolog is unreadable.
    """
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in "\ufeff \t\r\n":
            i += 1
        if text.startswith("<?", i):
            j = text.find("?>", i + 2)
            if j < 0:
                return None
            i = j + 2
        elif text.startswith("<!--", i):
            j = text.find("-->", i + 4)
            if j < 0:
                return None
            i = j + 3
        elif text.startswith("<!", i) and text[i + 2 : i + 9].upper() == "DOCTYPE":
            i = _doctype_end(text, i)
            if i < 0:
                return None
        else:
            break
    return text[i:] if text.startswith("<", i) else None


def _local(tag: str) -> str:
    """Local part of an ElementTree tag ``{ns}name``."""
    return tag.rpartition("}")[2]


def _xml_kind(root_local: str) -> str | None:
    if root_local == "feed":
        return "atom"
    if root_local in ("rss", "RDF"):
        return "rss"
    return None


def _strict_xml_links(doc: str, found: _Found) -> tuple[str | None, bool]:
    """Walk ``doc`` with ElementTree, recording feed-level links.

    Returns the feed kind (``"atom"``, ``"rss"``, ``"html"`` for XHTML, or
    ``None``) and whether the document parsed without error.
    """
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
    kind: str | None = None
    base = found.base
    stack: list[str] = []
    try:
        parser.feed(doc)
        parser.close()
        clean = True
    except ET.ParseError:
        clean = False
    try:
        for queued in parser.read_events():
            event, elem = queued[0], queued[-1]
            if not isinstance(elem, ET.Element):
                continue
            if event == "end":
                stack.pop()
                if stack:
                    elem.clear()
                continue
            local = _local(elem.tag)
            stack.append(local)
            if len(stack) == 1:
                kind = "html" if local == "html" else _xml_kind(local)
                if kind is None or kind == "html":
                    return kind, clean
                xml_base = elem.get(_XML_BASE)
                if xml_base:
                    base = urljoin(base, xml_base.strip())
            elif local == "link" and (
                (kind == "atom" and len(stack) == 2)
                or (kind == "rss" and len(stack) == 3 and stack[1] == "channel")
            ):
                found.add(elem.get("rel", ""), elem.get("href"), base)
    except ET.ParseError:
        clean = False
    return kind, clean


_XML_REF = re.compile(r"&(#[0-9]{1,8}|#x[0-9A-Fa-f]{1,8}|amp|lt|gt|quot|apos);")
_XML_PREDEFINED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


def _xml_unescape(value: str) -> str | None:
    """Replace the five predefined entities and character references.

    Any other ``&`` (a reference to a DTD entity, a bare ampersand, an invalid
    code point) makes the value unusable, so ``None`` is returned.
    """
    if "&" in _XML_REF.sub("", value):
        return None
    codes_ok = True

    def replace(match: re.Match[str]) -> str:
        nonlocal codes_ok
        ref = match.group(1)
        if ref[0] != "#":
            return _XML_PREDEFINED[ref]
        code = int(ref[2:], 16) if ref[1] == "x" else int(ref[1:])
        if 0 < code <= 0x10FFFF:
            return chr(code)
        codes_ok = False
        return ""

    decoded = _XML_REF.sub(replace, value)
    return decoded if codes_ok else None


_LOOSE_ROOT = re.compile(r"<(?:[\w.\-]+:)?([\w.\-]+)")
_LOOSE_CUT = re.compile(r"<(?:[\w.\-]+:)?(?:entry|item)[\s/>]")
_LOOSE_LINK = re.compile(r"<(?:[\w.\-]+:)?link(\s[^<>]*)>")
_LOOSE_ATTR = re.compile(r"""([\w.:\-]+)\s*=\s*(?:"([^"<]*)"|'([^'<]*)')""")


def _without_comments_and_cdata(text: str) -> str:
    """Drop ``<!-- -->`` and ``<![CDATA[ ]]>`` sections (linear time; unclosed = to the end)."""
    out: list[str] = []
    i = 0
    while True:
        comment, cdata = text.find("<!--", i), text.find("<![CDATA[", i)
        if comment < 0 and cdata < 0:
            out.append(text[i:])
            return "".join(out)
        if cdata < 0 or 0 <= comment < cdata:
            start, opener, closer = comment, "<!--", "-->"
        else:
            start, opener, closer = cdata, "<![CDATA[", "]]>"
        out.append(text[i:start])
        end = text.find(closer, start + len(opener))
        if end < 0:
            return "".join(out)
        i = end + len(closer)


def _loose_xml_links(doc: str, found: _Found) -> str | None:
    """Tolerant fallback for broken feeds: scan ``<link>`` tags before the first entry.

    Only the predefined XML entities and character references are decoded.
    """
    root = _LOOSE_ROOT.match(doc)
    kind = _xml_kind(root.group(1)) if root else None
    if kind is None:
        return None
    cut = _LOOSE_CUT.search(doc)
    region = _without_comments_and_cdata(doc[: cut.start() if cut else len(doc)])
    for tag in _LOOSE_LINK.finditer(region):
        attrs: dict[str, str] = {}
        for attr in _LOOSE_ATTR.finditer(tag.group(1)):
            raw = attr.group(2) if attr.group(2) is not None else attr.group(3)
            value = _xml_unescape(raw)
            if value is not None:
                attrs.setdefault(attr.group(1).lower(), value)
        found.add(attrs.get("rel", ""), attrs.get("href"))
    return kind


def _xml_links(text: str, found: _Found) -> str | None:
    """Find feed-level links in an Atom or RSS document; returns the kind found."""
    doc = _after_prolog(text)
    if doc is None:
        return None
    kind, clean = _strict_xml_links(doc, found)
    if kind == "html":
        return _html_links(text, found)
    if not clean and (not found.hubs or found.self_url is None):
        loose_kind = _loose_xml_links(doc, found)
        kind = kind or loose_kind
    return kind


# ---- HTML -------------------------------------------------------------------

# A small linear tokenizer for the document head.  html.parser is avoided on
# purpose: on hostile input (unclosed comments, "<a b=" repeated) CPython's
# parser takes quadratic time, and some inputs make it raise AssertionError.
_HEAD_TAGS = frozenset(
    {"html", "head", "title", "base", "link", "meta", "style", "script", "noscript", "template"}
)
_RAW_TEXT_END = {
    name: re.compile(rf"</{name}[\s/>]", re.IGNORECASE) for name in ("script", "style", "title")
}
_TAG_NAME = re.compile(r"[A-Za-z][^\s/>]*")
_ATTR_GAP = re.compile(r"[\s/]*")
_HTML_ATTR = re.compile(r"""([^\s/>=][^\s/>=]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?""")
_HTML_SCAN_CHARS = 1 << 19


def _html_tag(text: str, pos: int) -> tuple[dict[str, str], int] | None:
    """Parse attributes from ``pos`` (just after a tag name) to ``>``; ``None`` at EOF."""
    attrs: dict[str, str] = {}
    n = len(text)
    while True:
        pos = _ATTR_GAP.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= n:
            return None
        if text[pos] == ">":
            return attrs, pos + 1
        attr = _HTML_ATTR.match(text, pos)
        if attr is None:  # a stray quote or '=': step over it
            pos += 1
            continue
        value = next((g for g in attr.group(2, 3, 4) if g is not None), "")
        attrs.setdefault(attr.group(1).lower(), _html_unescape(value))
        pos = attr.end()


def _html_links(text: str, found: _Found) -> str:
    """Record ``<link>`` elements of the HTML ``<head>`` (honouring ``<base href>``).

    Scanning stops where the head ends: at ``</head>``, ``<body>``, any element
    that cannot live in a head, or non-blank text, as an HTML parser would.
    """
    text = text[:_HTML_SCAN_CHARS].lstrip("\ufeff")
    n = len(text)
    base: str | None = None
    i = 0
    while i < n:
        lt = text.find("<", i)
        if lt < 0 or text[i:lt].strip():
            break
        if text.startswith("<!--", lt):
            end = text.find("-->", lt + 4)
            i = end + 3 if end >= 0 else n
            continue
        if text.startswith(("<!", "<?"), lt):
            end = text.find(">", lt + 2)
            i = end + 1 if end >= 0 else n
            continue
        closing = text.startswith("</", lt)
        name_match = _TAG_NAME.match(text, lt + (2 if closing else 1))
        if name_match is None:
            if closing:  # "</>" or "</ ...": a bogus comment
                end = text.find(">", lt + 2)
                i = end + 1 if end >= 0 else n
                continue
            break  # a bare "<" is text, and text ends the head
        name = name_match.group().lower()
        parsed = _html_tag(text, name_match.end())
        if parsed is None:
            break
        attrs, i = parsed
        if closing:
            if name == "head":
                break
            continue
        if name not in _HEAD_TAGS:
            break
        if name == "base" and base is None and attrs.get("href"):
            base = http_url(attrs["href"], found.base)
        elif name == "link":
            found.add(attrs.get("rel", ""), attrs.get("href"), base)
        elif name in _RAW_TEXT_END:
            end_match = _RAW_TEXT_END[name].search(text, i)
            if end_match is None:
                break
            i = end_match.start()
    return "html"


# ---- JSON Feed -------------------------------------------------------------


def _json_links(text: str, found: _Found) -> str | None:
    """Read JSON Feed ``hubs`` (type WebSub) and ``feed_url``."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    hubs = doc.get("hubs")
    if isinstance(hubs, list):
        for hub in hubs:
            if not isinstance(hub, dict):
                continue
            url = hub.get("url")
            if isinstance(url, str) and is_websub_hub_type(hub.get("type")):
                found.add("hub", url)
    feed_url = doc.get("feed_url")
    if isinstance(feed_url, str):
        found.add("self", feed_url)
    return "jsonfeed"


def _links_from_body(
    body: bytes, content_type: str | None, fetched_url: str
) -> tuple[str | None, _Found]:
    found = _Found(fetched_url)
    if not body:
        return None, found
    text = _decode_body(body[:MAX_DISCOVERY_BODY_BYTES], content_type)
    kind = _sniff(text, content_type)
    parse: Callable[[str, _Found], str | None]
    parse = {"json": _json_links, "xml": _xml_links, "html": _html_links}[kind]
    return parse(text, found), found


FeedLinks = tuple[Sequence[str], str | None]
"""Hub URLs and the self URL a feed parser already found in a body (``ParsedFeed.hubs``,
``ParsedFeed.self_url``)."""


def _links_from_feed(feed_links: FeedLinks, fetched_url: str) -> _Found:
    found = _Found(fetched_url)
    hubs, self_url = feed_links
    for hub in hubs:
        found.add("hub", hub)
    if self_url is not None:
        found.add("self", self_url)
    return found


def discover(
    headers: HeadersLike,
    body: bytes,
    content_type: str | None,
    fetched_url: str,
    *,
    feed_links: FeedLinks | None = None,
) -> Discovery:
    """Find the hub(s) and the self URL of a fetched topic (WebSub section 4).

    ``headers`` are the response headers (a mapping, or a list of pairs to keep
    repeated ``Link`` headers apart), ``body`` the raw response body,
    ``content_type`` its ``Content-Type`` and ``fetched_url`` the final URL the
    body came from (relative references resolve against it).

    ``Link`` headers are read first.  Only when they do not give both a hub and
    a self URL is the body consulted: Atom ``<link>``, RSS ``<atom:link>`` in
    ``<channel>``, HTML ``<link>`` in ``<head>``, or JSON Feed ``hubs`` /
    ``feed_url``.  Whatever the headers do provide wins over the body.  Only
    http(s) URLs are kept.  Never raises on malformed input.

    ``feed_links``, when the body already parsed as a feed, is ``(hubs, self_url)``
    as the feed parser found them: they stand in for the body, which is then not
    scanned at all (the source names it ``"feed"``).  They pass the same URL rules
    (resolved against ``fetched_url``, http(s) only, deduplicated, at most ``MAX_HUBS``).
    """
    from_headers = _links_from_headers(headers, fetched_url)
    if from_headers.hubs and from_headers.self_url is not None:
        return Discovery(list(from_headers.hubs), from_headers.self_url, "headers")
    kind: str | None
    if feed_links is not None:
        kind, from_body = "feed", _links_from_feed(feed_links, fetched_url)
    else:
        kind, from_body = _links_from_body(body, content_type, fetched_url)
    hubs = from_headers.hubs or from_body.hubs
    self_url = from_headers.self_url if from_headers.self_url is not None else from_body.self_url
    used_headers = bool(from_headers.hubs) or from_headers.self_url is not None
    used_body = (not from_headers.hubs and bool(from_body.hubs)) or (
        from_headers.self_url is None and from_body.self_url is not None
    )
    parts = (["headers"] if used_headers else []) + ([kind or "body"] if used_body else [])
    return Discovery(list(hubs), self_url, "+".join(parts) or "none")
