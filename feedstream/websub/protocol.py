"""Sans-io WebSub subscriber core (W3C Recommendation, 23 January 2018).

Everything here is a pure function or a small frozen dataclass, in the spirit of
h11: no sockets, no trio, no httpx, no SQLite and no clock.  Time comes in as a
float ``now`` (Unix seconds) and jitter as a float in ``[0, 1)`` chosen by the
caller; the only randomness drawn here is for secrets and callback tokens
(:mod:`secrets`).  The trio shell does the HTTP and the storage around it.

Public API
==========

State model
    ``SubscriptionState``  -- ``none``, ``pending``, ``active``, ``failed``,
    ``denied``, ``unsubscribing`` (transitions below).
    ``TRANSITIONS`` / ``can_transition(old, new)`` -- the allowed moves.
    ``Mode`` -- ``subscribe`` / ``unsubscribe``; ``expected_mode(state)``.

1. Discovery (section 4 of the Recommendation)
    ``discover(headers, body, content_type, fetched_url) -> Discovery``
    ``Discovery(hub_urls, self_url, source)``; ``Discovery.topic(fetched_url)``
    gives the URL to use as ``hub.topic``.
    ``parse_link_header(value) -> list[Link]`` -- RFC 8288 ``Link`` parser.

2. Subscription request (section 5.1)
    ``subscription_form(mode, callback_url, topic_url, lease_seconds=, secret=)``
    -> ``dict`` of form fields for the POST to the hub.
    ``new_secret()`` / ``new_callback_token()`` -- random URL-safe strings.
    ``classify_hub_response(status, hub_url, location=, redirects_followed=,
    body=, retry_after=) -> HubResponse`` (accepted / redirect / failed).

3. Verification of intent and denial (sections 5.2, 5.3)
    ``verify_intent(query, subscription, now) -> IntentDecision``; the stored
    row is passed as ``SubscriptionRecord(topic, state)`` (or ``None`` for an
    unknown callback).  ``parse_lease_seconds(raw)``.

4. Content distribution (section 7)
    ``verify_signature(secret, header, body) -> SignatureResult``
    ``check_delivery(state, secret, header, body) -> DeliveryDecision``

5. Leases and retries
    ``renewal_time(granted_at, lease_seconds, jitter)`` and
    ``retry_delay(attempt, jitter, ...)``.

State transitions
=================

::

    none          -> pending        subscribe POST sent
    pending       -> active         hub verified hub.mode=subscribe
    pending       -> failed         hub refused the POST, or no verification came
    pending       -> unsubscribing  user dropped the feed before verification
    pending       -> none           gave up without telling the hub
    active        -> active         renewal verified (state stays active while
                                    a renewal is in flight)
    active        -> pending        lease ran out; subscribing afresh
    active        -> failed         lease ran out and renewals keep failing
    active        -> unsubscribing  unsubscribe POST sent
    unsubscribing -> none           hub verified hub.mode=unsubscribe, or gave up
    unsubscribing -> active         unsubscribe refused, lease still running
    unsubscribing -> pending        user re-subscribed
    failed        -> pending        retry after ``retry_delay``
    failed        -> none           gave up / feed removed
    denied        -> pending        user asked again explicitly
    denied        -> none           feed removed
    pending, active, unsubscribing, failed -> denied   hub sent hub.mode=denied

Notes for the shell
===================

* ``fetched_url`` is the final URL after redirects of the discovery GET.
* Subscribe to ``Discovery.topic(fetched_url)``: the ``rel=self`` URL when one
  is advertised, which may differ from the fetched URL (websub.rocks 200).
* On a 307/308 from the hub, re-POST the very same form to
  ``HubResponse.redirect_to`` and pass ``redirects_followed + 1`` next time;
  remember the hub URL that finally accepted (for renewals and unsubscribe).
* Answer the verification GET with ``IntentDecision.status``, ``.body`` and
  ``.headers`` verbatim (a safe media type plus ``nosniff``), after recording
  ``new_state`` / ``lease_seconds`` / ``lease_expires_at`` when they are set.
* ``IntentDecision.lease_seconds`` is ``None`` when the hub sent no lease;
  schedule the renewal with ``ASSUMED_LEASE_SECONDS`` then.
* Look a delivery up by the callback token in the URL only, never by the
  ``Link`` headers of the POST.  Use the exact raw request body for the HMAC.
* Send ``hub.secret`` only to ``https`` hubs (it travels in clear otherwise).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from html import unescape as _html_unescape
from urllib.parse import urljoin, urlsplit

from feedstream.core.signatures import SignatureResult, SignatureStatus, verify_signature

__all__ = [
    "ASSUMED_LEASE_SECONDS",
    "DEFAULT_LEASE_SECONDS",
    "MAX_CHALLENGE_LENGTH",
    "MAX_HUB_REDIRECTS",
    "MAX_LEASE_SECONDS",
    "MAX_SECRET_BYTES",
    "TRANSITIONS",
    "DeliveryDecision",
    "Discovery",
    "HubOutcome",
    "HubResponse",
    "IntentDecision",
    "Link",
    "Mode",
    "SignatureResult",
    "SignatureStatus",
    "SubscriptionRecord",
    "SubscriptionState",
    "can_transition",
    "check_delivery",
    "classify_hub_response",
    "discover",
    "expected_mode",
    "new_callback_token",
    "new_secret",
    "parse_lease_seconds",
    "parse_link_header",
    "renewal_time",
    "retry_delay",
    "subscription_form",
    "verify_intent",
    "verify_signature",
]

# --------------------------------------------------------------------------
# Limits and defaults
# --------------------------------------------------------------------------

MAX_HUB_REDIRECTS = 5
"""How many 307/308 answers from hubs are followed for one subscription request."""

MAX_SECRET_BYTES = 199
"""``hub.secret`` MUST be shorter than 200 bytes."""

MAX_CHALLENGE_LENGTH = 1024
"""Longer ``hub.challenge`` values are refused (the spec asks to limit them)."""

MAX_LEASE_SECONDS = 365 * 86_400
"""Granted leases are clamped to this (hubs must not grant perpetual leases)."""

DEFAULT_LEASE_SECONDS = 10 * 86_400
"""A sensible ``hub.lease_seconds`` to request (the spec's suggested default)."""

ASSUMED_LEASE_SECONDS = 86_400
"""Lease to plan renewals with when the hub's verification carried none."""

MAX_DISCOVERY_BODY_BYTES = 1 << 20
"""Only this much of a fetched body is looked at for ``<link>`` elements."""

MAX_LINK_HEADER_CHARS = 1 << 16
"""Only this many characters of ``Link`` header values are parsed in total."""

MAX_HUBS = 8
"""At most this many distinct hub URLs are kept from discovery."""

MAX_URL_LENGTH = 4096
"""Hub and self URLs longer than this are ignored."""

_MAX_REASON_CHARS = 300
_RENEWAL_FRACTION = 0.80
_RENEWAL_JITTER_FRACTION = 0.05
_MIN_RENEWAL_FRACTION = 0.50
_RENEWAL_HEADROOM_SECONDS = 60.0

# --------------------------------------------------------------------------
# State model
# --------------------------------------------------------------------------


class SubscriptionState(StrEnum):
    """Where one (hub, topic, callback) subscription stands, as stored by the shell."""

    NONE = "none"
    PENDING = "pending"
    ACTIVE = "active"
    FAILED = "failed"
    DENIED = "denied"
    UNSUBSCRIBING = "unsubscribing"


class Mode(StrEnum):
    """``hub.mode`` of a subscription request or of a verification of intent."""

    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


_S = SubscriptionState

TRANSITIONS: Mapping[SubscriptionState, frozenset[SubscriptionState]] = {
    _S.NONE: frozenset({_S.PENDING}),
    _S.PENDING: frozenset({_S.ACTIVE, _S.FAILED, _S.DENIED, _S.UNSUBSCRIBING, _S.NONE}),
    _S.ACTIVE: frozenset({_S.ACTIVE, _S.PENDING, _S.FAILED, _S.DENIED, _S.UNSUBSCRIBING}),
    _S.UNSUBSCRIBING: frozenset({_S.NONE, _S.ACTIVE, _S.PENDING, _S.DENIED}),
    _S.FAILED: frozenset({_S.PENDING, _S.DENIED, _S.NONE}),
    _S.DENIED: frozenset({_S.PENDING, _S.NONE}),
}
"""Allowed state changes; see the module docstring for what triggers each."""


def can_transition(old: SubscriptionState, new: SubscriptionState) -> bool:
    """Tell whether moving a subscription from ``old`` to ``new`` is allowed."""
    return new in TRANSITIONS[old]


def expected_mode(state: SubscriptionState) -> Mode | None:
    """The ``hub.mode`` a verification may carry in ``state``, or ``None`` if none may.

    A pending or active subscription (an active one may be renewing) accepts a
    ``subscribe`` verification; an unsubscribing one accepts ``unsubscribe``.
    """
    if state in (_S.PENDING, _S.ACTIVE):
        return Mode.SUBSCRIBE
    if state is _S.UNSUBSCRIBING:
        return Mode.UNSUBSCRIBE
    return None


# --------------------------------------------------------------------------
# Small shared helpers
# --------------------------------------------------------------------------

_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f]")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


def _http_url(ref: str, base: str) -> str | None:
    """Resolve ``ref`` against ``base``; keep it only if it is an absolute http(s) URL."""
    ref = ref.strip()
    if not ref or len(ref) > MAX_URL_LENGTH or _BAD_URL_CHARS.search(ref):
        return None
    try:
        url = urljoin(base, ref)
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if len(url) > MAX_URL_LENGTH:
        return None
    return url


def _clean_text(value: str, limit: int = _MAX_REASON_CHARS) -> str:
    """Make untrusted text safe for logs: no control characters, bounded length."""
    return _CONTROL_CHARS.sub(" ", value[: limit * 2]).strip()[:limit]


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


# --------------------------------------------------------------------------
# 1. Discovery
# --------------------------------------------------------------------------


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
        url = _http_url(href, base if base is not None else self.base)
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

_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9][\w.:\-]*)""", re.IGNORECASE)
_XML_DECL_ENCODING = re.compile(
    rb"""^\s*<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z][\w.\-]{0,40})["']"""
)
_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z][\w.\-]{0,40})""", re.IGNORECASE
)


def _decode_body(body: bytes, content_type: str | None) -> str:
    """Decode a fetched body: BOM, then the charset parameter, then in-document hints."""
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(encoding, "replace")
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
            base = _http_url(attrs["href"], found.base)
        elif name == "link":
            found.add(attrs.get("rel", ""), attrs.get("href"), base)
        elif name in _RAW_TEXT_END:
            end_match = _RAW_TEXT_END[name].search(text, i)
            if end_match is None:
                break
            i = end_match.start()
    return "html"


# ---- JSON Feed -------------------------------------------------------------

_JSONFEED_HUB_TYPES = frozenset({"websub", "pubsubhubbub"})


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
            hub_type, url = hub.get("type"), hub.get("url")
            if isinstance(url, str) and (
                hub_type is None
                or (isinstance(hub_type, str) and hub_type.strip().lower() in _JSONFEED_HUB_TYPES)
            ):
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


def discover(
    headers: HeadersLike,
    body: bytes,
    content_type: str | None,
    fetched_url: str,
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
    """
    from_headers = _links_from_headers(headers, fetched_url)
    if from_headers.hubs and from_headers.self_url is not None:
        return Discovery(list(from_headers.hubs), from_headers.self_url, "headers")
    kind, from_body = _links_from_body(body, content_type, fetched_url)
    hubs = from_headers.hubs or from_body.hubs
    self_url = from_headers.self_url if from_headers.self_url is not None else from_body.self_url
    used_headers = bool(from_headers.hubs) or from_headers.self_url is not None
    used_body = (not from_headers.hubs and bool(from_body.hubs)) or (
        from_headers.self_url is None and from_body.self_url is not None
    )
    parts = (["headers"] if used_headers else []) + ([kind or "body"] if used_body else [])
    return Discovery(list(hubs), self_url, "+".join(parts) or "none")


# --------------------------------------------------------------------------
# 2. Subscription request and the hub's answer
# --------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh ``hub.secret``: 256 random bits as 43 URL-safe characters."""
    return secrets.token_urlsafe(32)


def new_callback_token() -> str:
    """A fresh unguessable callback path token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def subscription_form(
    mode: Mode | str,
    callback_url: str,
    topic_url: str,
    *,
    lease_seconds: int | None = None,
    secret: str | None = None,
) -> dict[str, str]:
    """Form fields for the ``application/x-www-form-urlencoded`` POST to the hub.

    ``lease_seconds`` and ``secret`` are only sent with ``subscribe``.  Raises
    ``ValueError`` on an unknown mode, a non-http(s) callback or topic, a
    non-positive lease, or a secret that is empty or not under 200 bytes.
    """
    mode = Mode(mode)
    for label, url in (("callback", callback_url), ("topic", topic_url)):
        if _http_url(url, "") != url:
            raise ValueError(f"hub.{label} must be an absolute http(s) URL: {url!r}")
    form = {"hub.callback": callback_url, "hub.mode": mode.value, "hub.topic": topic_url}
    if mode is Mode.UNSUBSCRIBE:
        return form
    if lease_seconds is not None:
        if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, int):
            raise ValueError("hub.lease_seconds must be an int")
        if lease_seconds <= 0:
            raise ValueError("hub.lease_seconds must be positive")
        form["hub.lease_seconds"] = str(lease_seconds)
    if secret is not None:
        size = len(secret.encode("utf-8"))
        if size == 0 or size > MAX_SECRET_BYTES:
            raise ValueError("hub.secret must be 1 to 199 bytes long")
        form["hub.secret"] = secret
    return form


class HubOutcome(StrEnum):
    """What the shell does after the hub answered the subscription POST."""

    ACCEPTED = "accepted"
    """2xx (normally 202): wait for the verification of intent."""
    REDIRECT = "redirect"
    """307/308: POST the same form again to ``redirect_to``."""
    FAILED = "failed"
    """Anything else: the request failed, see ``reason`` and ``retryable``."""


@dataclass(frozen=True)
class HubResponse:
    """Classification of a hub's answer to a subscribe/unsubscribe POST."""

    outcome: HubOutcome
    status: int
    reason: str = ""
    redirect_to: str | None = None
    permanent: bool = False
    """For redirects: 308, so the stored hub URL may be replaced."""
    retryable: bool = False
    """For failures: worth retrying later (5xx, 408, 425, 429)."""
    retry_after: float | None = None
    """Seconds from the hub's ``Retry-After`` (delta-seconds form only)."""


_RETRYABLE_STATUSES = frozenset({408, 425, 429})


def _retry_after_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        return None
    return float(int(value))


def classify_hub_response(
    status: int,
    hub_url: str,
    location: str | None = None,
    *,
    redirects_followed: int = 0,
    body: bytes | str = b"",
    retry_after: str | None = None,
) -> HubResponse:
    """Classify the hub's answer to a subscription POST made to ``hub_url``.

    2xx is accepted.  307 and 308 are redirects to ``location`` (resolved
    against ``hub_url``, http(s) only) while ``redirects_followed`` is below
    ``MAX_HUB_REDIRECTS``; the shell re-POSTs the same form there.  Any other
    status, including 301/302/303 (which would turn the POST into a GET), is a
    failure whose ``reason`` quotes the status and the start of ``body``.
    """
    if 200 <= status < 300:
        return HubResponse(HubOutcome.ACCEPTED, status)
    if status in (307, 308):
        if redirects_followed >= MAX_HUB_REDIRECTS:
            reason = f"hub redirected more than {MAX_HUB_REDIRECTS} times"
            return HubResponse(HubOutcome.FAILED, status, reason)
        target = _http_url(location, hub_url) if location else None
        if target is None:
            reason = f"hub answered {status} without a usable http(s) Location"
            return HubResponse(HubOutcome.FAILED, status, reason)
        return HubResponse(
            HubOutcome.REDIRECT, status, f"hub moved to {target}", target, status == 308
        )
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    detail = _clean_text(text)
    reason = f"hub answered {status}" + (f": {detail}" if detail else "")
    if 300 <= status < 400:
        reason += " (only 307/308 redirects are followed for a POST)"
    retryable = status >= 500 or status in _RETRYABLE_STATUSES
    return HubResponse(
        HubOutcome.FAILED,
        status,
        reason,
        retryable=retryable,
        retry_after=_retry_after_seconds(retry_after) if retryable else None,
    )


# --------------------------------------------------------------------------
# 3. Verification of intent and denial
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionRecord:
    """What the shell stored for one callback token: the topic and the state."""

    topic: str
    state: SubscriptionState

    @property
    def expected_mode(self) -> Mode | None:
        """The ``hub.mode`` a verification may carry now (see ``expected_mode``)."""
        return expected_mode(self.state)


_SAFE_RESPONSE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "text/plain; charset=utf-8"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
)


@dataclass(frozen=True)
class IntentDecision:
    """How to answer a verification (or denial) GET, and what to record.

    ``new_state`` is ``None`` when nothing is to be recorded.  For a verified
    subscribe, ``lease_seconds`` is the granted lease (``None`` if the hub sent
    none) and ``lease_expires_at`` is ``now + lease_seconds``.  ``reason`` is
    for logs (for a denial: the hub's ``hub.reason``).
    """

    status: int
    body: str
    reason: str
    new_state: SubscriptionState | None = None
    lease_seconds: int | None = None
    lease_expires_at: float | None = None
    headers: tuple[tuple[str, str], ...] = _SAFE_RESPONSE_HEADERS

    @property
    def accepted(self) -> bool:
        """True when the answer is a 2xx."""
        return 200 <= self.status < 300


QueryLike = Mapping[str, str] | Mapping[str, list[str]] | Iterable[tuple[str, str]]
"""Query parameters: a mapping, a multi-dict (with ``getlist``), ``parse_qs``
output, or (name, value) pairs."""


def _query_values(query: QueryLike, name: str) -> list[str]:
    getlist = getattr(query, "getlist", None)
    if callable(getlist):
        return [str(v) for v in getlist(name)]
    if isinstance(query, Mapping):
        value = query.get(name)
        if value is None:
            return []
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        return [str(value)]
    return [str(v) for k, v in query if k == name]


class _BadQuery(ValueError):
    pass


def _one(query: QueryLike, name: str) -> str | None:
    """The single value of ``name``; ``None`` if absent; ``_BadQuery`` if conflicting."""
    values = _query_values(query, name)
    if not values:
        return None
    if any(v != values[0] for v in values[1:]):
        raise _BadQuery(f"conflicting values for {name}")
    return values[0]


_LEASE_DIGITS = re.compile(r"[0-9]+")


def parse_lease_seconds(raw: str | None) -> int | None:
    """Parse ``hub.lease_seconds``: ``None`` if absent or blank, else a clamped int.

    Values above ``MAX_LEASE_SECONDS`` are clamped down to it.  Raises
    ``ValueError`` for anything but ASCII digits, or for zero.
    """
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    if not _LEASE_DIGITS.fullmatch(raw):
        raise ValueError(f"hub.lease_seconds is not a positive integer: {raw[:40]!r}")
    digits = raw.lstrip("0")
    if not digits:
        raise ValueError("hub.lease_seconds is zero")
    if len(digits) > len(str(MAX_LEASE_SECONDS)):
        return MAX_LEASE_SECONDS
    return min(int(digits), MAX_LEASE_SECONDS)


_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")
_PERCENT_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normalize_topic(url: str) -> str:
    """Decode percent-escaped unreserved characters and upper-case the other escapes.

    Hubs must decode non-reserved characters in ``hub.topic``, so ``%7E`` and
    ``~`` name the same topic; reserved escapes such as ``%2F`` stay distinct.
    """

    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _PERCENT_ESCAPE.sub(fix, url)


def _refuse(status: int, reason: str) -> IntentDecision:
    return IntentDecision(status, reason, reason)


def verify_intent(
    query: QueryLike,
    subscription: SubscriptionRecord | None,
    now: float,
) -> IntentDecision:
    """Decide the answer to a hub's GET on a callback URL (sections 5.2 and 5.3).

    ``subscription`` is what is stored for the callback token, or ``None`` if
    the token is unknown.  The challenge is echoed (200, body = ``hub.challenge``
    exactly) only when ``hub.topic`` equals the stored topic (up to escaping
    of unreserved characters) and ``hub.mode``
    is the one the state expects (``expected_mode``).  A wrong topic, mode or
    state, or an unknown callback, gets 404 (websub.rocks 205).  A malformed
    request (missing or conflicting parameters, a missing, over-long or
    non-printable challenge, a bad lease) gets 400.  ``hub.mode=denied`` for
    the right topic is acknowledged with 200 and moves the subscription to
    ``denied`` (or leaves ``none`` alone), keeping ``hub.reason``.
    """
    if subscription is None:
        return _refuse(404, "unknown callback")
    try:
        mode = _one(query, "hub.mode")
        topic = _one(query, "hub.topic")
        challenge = _one(query, "hub.challenge")
        raw_lease = _one(query, "hub.lease_seconds")
        hub_reason = _one(query, "hub.reason")
    except _BadQuery as exc:
        return _refuse(400, str(exc))
    if not mode:
        return _refuse(400, "missing hub.mode")
    if not topic:
        return _refuse(400, "missing hub.topic")
    if _normalize_topic(topic) != _normalize_topic(subscription.topic):
        return _refuse(404, "hub.topic does not match the subscription")
    state = subscription.state

    if mode == "denied":
        reason = _clean_text(hub_reason or "") or "denied by hub"
        new_state = None if state in (_S.NONE, _S.DENIED) else _S.DENIED
        return IntentDecision(200, "", reason, new_state)

    if mode not in (Mode.SUBSCRIBE, Mode.UNSUBSCRIBE):
        return _refuse(400, f"unknown hub.mode {_clean_text(mode, 40)!r}")
    if not challenge:
        return _refuse(400, "missing hub.challenge")
    if len(challenge) > MAX_CHALLENGE_LENGTH or not _PRINTABLE_ASCII.fullmatch(challenge):
        return _refuse(400, "hub.challenge is too long or not printable ASCII")
    if expected_mode(state) != mode:
        return _refuse(404, f"no {mode} is wanted for a subscription in state {state}")

    if mode == Mode.UNSUBSCRIBE:  # hub.lease_seconds MUST be ignored here
        return IntentDecision(200, challenge, "unsubscribe verified", _S.NONE)
    try:
        lease = parse_lease_seconds(raw_lease)
    except ValueError as exc:
        return _refuse(400, str(exc))
    expires = now + lease if lease is not None else None
    return IntentDecision(200, challenge, "subscribe verified", _S.ACTIVE, lease, expires)


# --------------------------------------------------------------------------
# 4. Content distribution
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryDecision:
    """How to answer a content distribution POST, and whether to use its body."""

    status: int
    process: bool
    reason: str
    signature: SignatureResult | None = None


_RECEIVING_STATES = frozenset({_S.PENDING, _S.ACTIVE, _S.UNSUBSCRIBING})


def check_delivery(
    state: SubscriptionState | None,
    secret: bytes | str | None,
    signature_header: str | None,
    body: bytes,
) -> DeliveryDecision:
    """Decide on a content distribution POST to a callback.

    ``state`` is the stored state for the callback token (``None`` when the
    token is unknown: 404).  A subscription that is over (``none``, ``failed``,
    ``denied``) gets 410 Gone, which lets the hub drop it.  Otherwise the
    signature decides (see ``SignatureResult.http_status``); only a valid one
    sets ``process``.
    """
    if state is None:
        return DeliveryDecision(404, False, "unknown callback")
    if state not in _RECEIVING_STATES:
        return DeliveryDecision(410, False, f"subscription is {state}")
    result = verify_signature(secret, signature_header, body)
    return DeliveryDecision(result.http_status, result.valid, f"signature {result.status}", result)


# --------------------------------------------------------------------------
# 5. Leases, renewals and retries
# --------------------------------------------------------------------------


def _check_jitter(jitter: float) -> None:
    if not 0.0 <= jitter < 1.0:  # also rejects NaN
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")


def renewal_time(granted_at: float, lease_seconds: int, jitter: float) -> float:
    """When to renew a lease granted at ``granted_at`` for ``lease_seconds``.

    Normally at 80 % of the lease, moved earlier by up to 5 % of it with
    ``jitter`` in ``[0, 1)``.  Short leases also keep a minute of headroom for
    the round trip, but the renewal never comes before half of the lease: a
    10 s lease renews after 5 s.  The result is always strictly between
    ``granted_at`` and ``granted_at + lease_seconds``.
    """
    _check_jitter(jitter)
    if lease_seconds <= 0:
        raise ValueError("lease_seconds must be positive")
    fraction = _RENEWAL_FRACTION - _RENEWAL_JITTER_FRACTION * jitter
    offset = min(lease_seconds * fraction, lease_seconds - _RENEWAL_HEADROOM_SECONDS)
    offset = max(offset, lease_seconds * _MIN_RENEWAL_FRACTION)
    return granted_at + offset


def retry_delay(
    attempt: int,
    jitter: float,
    *,
    base: float = 60.0,
    cap: float = 6 * 3600.0,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before retrying after ``attempt`` consecutive failures.

    Exponential (``base * 2 ** (attempt - 1)``) up to ``cap``, then scaled into
    ``[50 %, 100 %]`` of that by ``jitter`` in ``[0, 1)``.  A hub's
    ``retry_after`` is honoured when it asks for longer (but never beyond
    ``cap``).
    """
    _check_jitter(jitter)
    if attempt < 1:
        raise ValueError("attempt counts failures and starts at 1")
    if not (base > 0 and cap >= base and math.isfinite(cap)):
        raise ValueError("need 0 < base <= cap < inf")
    delay = min(cap, base * 2.0 ** min(attempt - 1, 64))
    delay *= 1.0 - 0.5 * jitter
    if retry_after is not None and math.isfinite(retry_after):
        delay = max(delay, min(retry_after, cap))
    return delay
