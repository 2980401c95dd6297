"""Cut the entries the log already has out of an XML feed document before it is parsed.

WebSub hubs push "fat pings": the whole feed, of which usually one entry is new. Parsing the
whole document (feedparser, then the sanitizer) is the single biggest cost of ingesting it, and
the entries the log has are passed through unchanged anyway. :func:`drop_known_entries` scans
the bytes with expat (no feedparser, no DOM) and cuts out the byte spans of the entries whose id
is known; :func:`parse_skipping_known` parses what is left, and is exactly
:func:`~feedstream.core.normalize.parse_feed` of the whole document minus the skipped entries:
the same entries (dicts and order), the same feed-level fields, and each skipped id precisely
the one the whole parse gives that entry.

Exactness is bought by declining whatever is not plainly safe (then nothing, or that entry, is
cut). feedparser is a state machine whose state outlives elements, so the rules follow its code
(6.0), not the specifications:

* The document: no DOCTYPE, well-formed (expat, namespaces on), unambiguously UTF-8 as
  feedparser decodes it (its own RFC 3023 rules: a ``text/*`` type without charset means
  US-ASCII, so the body must then be ASCII), the root an Atom 1.0 ``feed`` (entries its direct
  ``entry`` children) or an RSS ``rss`` (entries the ``item`` children of its direct
  ``channel``), at most *max_entries* entry-like elements (``entry`` or ``item`` anywhere: the
  parse keeps only the newest that many).
* An entry is cut only if it has exactly one id element (Atom ``id`` / RSS ``guid``), a direct
  child holding text only, whose stripped text is printable ASCII without whitespace, ``&``,
  ``<`` or ``>``, an absolute URI (scheme ``:``), not ``scheme:///`` (feedparser folds the
  slashes), at most :data:`~feedstream.core.normalize.MAX_ID_CHARS` long, and
  ``f"{feed_id}:{text}"`` is known.
* Its other direct children are ones whose feedparser handlers only write into the entry
  (:data:`_ATOM_CHILDREN`, :data:`_RSS_CHILDREN`); anything deeper has a name no feedparser
  handler has (an HTML ``<summary>`` or ``<source>`` inside content would call feedparser's
  and unbalance its state for the rest of the document), save an Atom author's
  ``name``/``uri``/``email``. Its start tag has no attribute but ``xml:lang``.
* Nothing in the entry declares a namespace feedparser has not recorded already (it keeps a
  prefix map for the rest of the document), and no element up to and including it has a
  ``base`` attribute (feedparser's base URI outlives the element that set it, and ids are
  resolved against it), an ``svg`` or ``math`` element, an element feedparser has a handler
  for inside content (there only its end handler runs), or, outside entries, an element that
  makes feedparser believe the next entry has content (``content``, ``summary``...).
* Only the entries after which the container holds nothing but entries are cut: what follows
  an entry would otherwise see feedparser state the entry left behind.

What the rules cannot see is the order of the entries left: the parse sorts by date only when
every entry has one, so cutting the one undated entry could change the order of the others.
:func:`~feedstream.core.normalize.parse_remainder` answers None then, and
:func:`parse_skipping_known` parses the whole document after all.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from xml.parsers import expat

import feedparser.api

from feedstream.core.normalize import MAX_ID_CHARS, ParsedFeed, parse_feed, parse_remainder

__all__ = ["Trimmed", "drop_known_entries", "parse_skipping_known"]

ATOM = "http://www.w3.org/2005/Atom"
_XML_LANG = "http://www.w3.org/XML/1998/namespace lang"
_DC = "http://purl.org/dc/elements/1.1/"
_CONTENT = "http://purl.org/rss/1.0/modules/content/"

#: Direct children of an Atom entry whose feedparser handlers only write into the entry.
_ATOM_CHILDREN = frozenset(
    f"{ATOM} {name}"
    for name in (
        "title", "link", "updated", "published", "author", "contributor", "summary",
        "content", "category", "rights",
    )
)  # fmt: skip
_ATOM_PEOPLE = frozenset({f"{ATOM} author", f"{ATOM} contributor"})
_ATOM_PERSON = frozenset(f"{ATOM} {name}" for name in ("name", "uri", "email"))
#: The same for an RSS item; the namespaced ones also need feedparser's prefix map to name
#: them as usual (:data:`_PREFIXED`).
_RSS_CHILDREN = frozenset(
    [
        *("title", "link", "description", "pubDate", "author", "category", "comments"),
        "enclosure",
        f"{_DC} creator",
        f"{_DC} date",
        f"{_CONTENT} encoded",
    ]
)
_PREFIXED = {_DC: "dc", _CONTENT: "content"}

#: Local names that make feedparser think a following entry has content, outside entries.
_CONTENT_NAMES = frozenset({"content", "encoded", "fullitem", "summary", "body"})
#: Local names that put feedparser's parser in a mode of its own (svg, MathML in content).
_ODD_NAMES = frozenset({"svg", "math"})
#: feedparser's handling of a document prolog: the encoding of the first processing
#: instruction (``encodings.RE_XML_PI_ENCODING``) and the slashes it folds in a URI.
_PI_ENCODING = re.compile(rb"""^<\?.*encoding=['"](.*?)['"].*\?>""")
_URI_FIXED = re.compile("^[A-Za-z][A-Za-z0-9+-.]*:///")
_ABSOLUTE_ID = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[!-~]+")
_XML_MEDIA_TYPES = frozenset(
    {"application/xml", "application/xml-dtd", "application/xml-external-parsed-entity"}
)
_WHITESPACE = b" \t\r\n"


def _tails(method: str, head: str) -> list[str]:
    """The local names a feedparser handler method can be called for, under any prefix:
    ``_start_dc_creator`` gives ``dc_creator`` and ``creator``."""
    parts = method[len(head) :].lower().split("_")
    return ["_".join(parts[index:]) for index in range(len(parts)) if parts[index]]


def _handler_names() -> tuple[frozenset[str], frozenset[str]]:
    """The lower-case local names feedparser has a start or end handler for, and those whose
    start handler opens content (``push_content``: inside, elements are text, and only their
    end handlers run)."""
    parser = feedparser.api.StrictFeedParser
    handled: set[str] = set(_ODD_NAMES)
    starts: dict[str, object] = {}
    for method in dir(parser):
        for head in ("_start_", "_end_"):
            if method.startswith(head):
                handled.update(_tails(method, head))
                if head == "_start_":
                    starts[method] = getattr(parser, method)
    content: set[str] = set()
    grown = True
    while grown:
        grown = False
        for method, function in starts.items():
            names = set(getattr(getattr(function, "__code__", None), "co_names", ()))
            if method not in content and ("push_content" in names or names & content):
                content.add(method)
                grown = True
    return frozenset(handled), frozenset(
        name for method in content for name in _tails(method, "_start_")
    )


_HANDLED, _CONTENTISH = _handler_names()
_MATCH_NAMESPACES: dict[str, str] = {
    uri.lower(): prefix for uri, prefix in feedparser.api.StrictFeedParser.namespaces.items()
}


@dataclass(frozen=True, slots=True)
class Trimmed:
    """A document with known entries cut out: its bytes and the skipped entries' ids (in
    document order, ``feed_id:`` included, once per entry cut)."""

    body: bytes
    skipped: tuple[str, ...]


class _Decline(Exception):
    """The document is not one to trim."""


@dataclass(slots=True)
class _Entry:
    start: int  # byte offset of its "<"
    ok: bool = True
    id_text: list[str] | None = None  # the pieces of its id element's text, once seen
    in_id: bool = False
    children: int = 0  # elements inside its id element (must stay 0)


def parse_skipping_known(
    body: bytes,
    *,
    feed_id: str,
    known: frozenset[str],
    base_url: str | None,
    content_type: str | None = None,
    via: str = "poll",
    max_entries: int = 500,
) -> tuple[ParsedFeed, tuple[str, ...]]:
    """``parse_feed(body)`` without the entries whose id is in *known*, and their ids.

    Exactly :func:`~feedstream.core.normalize.parse_feed` of the whole *body* with the skipped
    entries left out (see the module docstring); when nothing can be cut it is that parse.
    """
    trimmed = drop_known_entries(body, feed_id, known, content_type, max_entries=max_entries)
    if trimmed is not None:
        parsed = parse_remainder(
            trimmed.body,
            feed_id=feed_id,
            base_url=base_url,
            content_type=content_type,
            via=via,
            max_entries=max_entries,
        )
        if parsed is not None and parsed.error is None:
            return parsed, trimmed.skipped
    whole = parse_feed(
        body,
        feed_id=feed_id,
        base_url=base_url,
        content_type=content_type,
        via=via,
        max_entries=max_entries,
    )
    return whole, ()


def drop_known_entries(
    body: bytes,
    feed_id: str,
    known: frozenset[str],
    content_type: str | None,
    *,
    max_entries: int = 500,
) -> Trimmed | None:
    """*body* without the entries whose id (``feed_id:`` + its id) is in *known*, or None when
    nothing is cut or the document is not one to trim (see the module docstring).

    What is cut is the entry from the ``<`` of its start tag to the ``>`` of its end tag; the
    rest of the document stays byte for byte. Never raises for any *body*.
    """
    if not known or max_entries <= 0 or not _decodes_as_utf8(body, content_type):
        return None
    try:
        return _Scan(body, feed_id, known, max_entries).run()
    except (_Decline, expat.ExpatError):
        return None
    except Exception:  # a scan that fails declines; the whole document is parsed instead
        return None


def _decodes_as_utf8(body: bytes, content_type: str | None) -> bool:
    """Whether feedparser reads *body* as UTF-8 text (or as ASCII, from an ASCII body), as the
    scan does; False also for a body that does not begin like XML (JSON Feed, HTML text)."""
    data = body[3:] if body.startswith(codecs.BOM_UTF8) else body
    if data.lstrip(_WHITESPACE)[:1] != b"<":
        return False
    declared = ""
    if match := _PI_ENCODING.match(data):
        try:
            declared = match[1].decode("utf-8").lower()
        except UnicodeDecodeError:
            return False
        if not _is_utf8(declared, body):
            return False
    if content_type:  # feedparser.encodings.convert_to_utf8, for the headers we give it
        media_type, _, parameters = content_type.partition(";")
        media_type = media_type.strip()
        charset = ""
        for chunk in parameters.split(";"):
            key, _, value = chunk.partition("=")
            if key.strip().lower() == "charset":
                charset = value.strip().strip("\"'")
        if media_type in _XML_MEDIA_TYPES or (
            media_type.startswith("application/") and media_type.endswith("+xml")
        ):
            encoding = charset or declared or "utf-8"
        elif media_type.startswith("text/"):  # text/xml and other text types alike
            encoding = charset or "us-ascii"
        else:
            encoding = declared or "utf-8"
    else:
        encoding = declared or "utf-8"
    return _is_utf8(encoding, body)


def _is_utf8(encoding: str, body: bytes) -> bool:
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, ValueError):
        return False
    return name == "utf-8" or (name == "ascii" and body.isascii())


class _Scan:
    """One pass of expat over a document, collecting the entries to cut."""

    def __init__(self, body: bytes, feed_id: str, known: frozenset[str], max_entries: int):
        self.body = body
        self.feed_id = feed_id
        self.known = known
        self.max_entries = max_entries
        self.path: list[str] = []  # expanded names of the open elements
        self.entry_depth = 0  # the depth (len(path)) of an entry element; 0 until known
        self.entry: _Entry | None = None  # the entry being read
        self.cuts: list[tuple[int, int, str]] = []  # start, end, id
        self.entry_like = 0  # elements named entry or item, anywhere
        self.contentish = 0  # open elements whose feedparser handler opens content
        # Once set, no entry ending later is cut: a base attribute (ids may be resolved
        # against it), svg or MathML, content outside entries (the next entry would "have
        # content"), or a handled element inside content (its end handler alone runs).
        self.odd = False
        self.changed = False  # a namespace declaration before this element changed the map
        # feedparser's namespace state (track_namespace): prefix map and namespaces in use.
        self.namespace_map: dict[str | None, str] = {}
        self.in_use: dict[str, str] = {}
        self.parser = expat.ParserCreate("utf-8", " ")
        self.parser.buffer_text = True
        self.parser.buffer_size = 1 << 16
        self.parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        self.parser.StartDoctypeDeclHandler = self._doctype
        self.parser.XmlDeclHandler = self._declaration
        self.parser.StartNamespaceDeclHandler = self._namespace
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end

    def run(self) -> Trimmed | None:
        self.parser.Parse(self.body, True)
        if not self.cuts or self.entry_like > self.max_entries:
            return None
        pieces: list[bytes] = []
        position = 0
        for start, end, _ in self.cuts:
            pieces.append(self.body[position:start])
            position = end
        pieces.append(self.body[position:])
        return Trimmed(b"".join(pieces), tuple(entry_id for _, _, entry_id in self.cuts))

    def _doctype(self, *_: object) -> None:
        raise _Decline("DOCTYPE")

    def _declaration(self, version: str | None, encoding: str | None, standalone: int) -> None:
        if encoding is not None and not _is_utf8(encoding, self.body):
            raise _Decline("encoding")

    def _namespace(self, prefix: str | None, uri: str | None) -> None:
        """feedparser's ``track_namespace``; a change inside an entry keeps the entry."""
        if not uri:
            return
        lower = uri.lower()
        if "backend.userland.com/rss" in lower:
            uri = lower = "http://backend.userland.com/rss"
        canonical = _MATCH_NAMESPACES.get(lower)
        if canonical is not None:
            changed = (
                self.namespace_map.get(prefix) != canonical or self.in_use.get(canonical) != uri
            )
            self.namespace_map[prefix] = canonical
            self.in_use[canonical] = uri
        else:
            changed = self.in_use.get(prefix or "") != uri
            self.in_use[prefix or ""] = uri
        self.changed = self.changed or changed

    def _start(self, name: str, attributes: dict[str, str]) -> None:
        path = self.path
        depth = len(path) + 1
        local = name.rpartition(" ")[2].lower()
        if local in ("entry", "item"):
            self.entry_like += 1
        if local in _ODD_NAMES or (self.contentish and local in _HANDLED):
            self.odd = True
        for attribute in attributes:
            if attribute.rpartition(" ")[2].lower() == "base":
                self.odd = True
        entry = self.entry
        changed, self.changed = self.changed, False
        if entry is not None:
            self._inside(entry, name, local, depth, changed)
        elif self._is_entry(name, depth):
            entry = self.entry = _Entry(self.parser.CurrentByteIndex)
            entry.ok = not changed and all(key == _XML_LANG for key in attributes)
        else:
            if depth == 1 and name not in (f"{ATOM} feed", "rss"):
                raise _Decline("not Atom or RSS")
            if depth <= max(self.entry_depth, 3):
                self.cuts.clear()  # the entries cut so far would not be followed by entries only
            if local in _CONTENT_NAMES:
                self.odd = True
        if local in _CONTENTISH:
            self.contentish += 1
        path.append(name)

    def _is_entry(self, name: str, depth: int) -> bool:
        path = self.path
        if depth == 2 and name == f"{ATOM} entry" and path[0] == f"{ATOM} feed":
            self.entry_depth = 2
            return True
        if depth == 3 and name == "item" and path[0] == "rss" and path[1] == "channel":
            self.entry_depth = 3
            return True
        return False

    def _inside(self, entry: _Entry, name: str, local: str, depth: int, changed: bool) -> None:
        if changed:
            entry.ok = False
        if entry.in_id:
            entry.children += 1
        elif depth == self.entry_depth + 1:
            if name == (f"{ATOM} id" if self.entry_depth == 2 else "guid"):
                if entry.id_text is not None:
                    entry.ok = False  # a second id
                else:
                    entry.id_text = []
                    entry.in_id = True
                    self.parser.CharacterDataHandler = entry.id_text.append
                return
            allowed = _ATOM_CHILDREN if self.entry_depth == 2 else _RSS_CHILDREN
            prefix = _PREFIXED.get(name.rpartition(" ")[0])
            if name in allowed and (
                prefix is None or self.namespace_map.get(prefix, prefix) == prefix
            ):
                return
        elif (
            self.entry_depth == 2
            and depth == 4
            and name in _ATOM_PERSON
            and self.path[-1] in _ATOM_PEOPLE
        ):
            return
        if local in _HANDLED:
            entry.ok = False

    def _end(self, name: str) -> None:
        path = self.path
        path.pop()
        if self.contentish and name.rpartition(" ")[2].lower() in _CONTENTISH:
            self.contentish -= 1
        entry = self.entry
        if entry is None:
            return
        depth = len(path)
        if entry.in_id and depth == self.entry_depth:
            entry.in_id = False
            self.parser.CharacterDataHandler = None
            return
        if depth + 1 != self.entry_depth:
            return
        self.entry = None
        index = self.parser.CurrentByteIndex
        if self.odd or not entry.ok or entry.children or entry.id_text is None:
            return
        entry_id = self._entry_id("".join(entry.id_text))
        if entry_id is not None and entry_id in self.known and index > entry.start:
            end = self.body.index(b">", index) + 1
            self.cuts.append((entry.start, end, entry_id))

    def _entry_id(self, text: str) -> str | None:
        """The id the parse gives an entry with this id text, if it is sure to be this."""
        key = text.strip()
        if not (0 < len(key) <= MAX_ID_CHARS) or not _ABSOLUTE_ID.fullmatch(key):
            return None
        if "&" in key or "<" in key or ">" in key or _URI_FIXED.match(key):
            return None
        return f"{self.feed_id}:{key}"
