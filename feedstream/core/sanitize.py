"""Turn untrusted feed text into safe HTML, plain text and URLs.

Everything a feed says is untrusted. This module is the single place that decides what may
reach a browser:

* :func:`clean_html` keeps a small allow-list of formatting tags (via nh3, a binding of the
  html5ever-based ammonia sanitizer), makes relative links absolute and forces
  ``rel="noopener noreferrer nofollow"`` on every link.
* :func:`plain_text` reduces any value to display text that never contains an HTML tag.
* :func:`safe_url` accepts absolute ``http``/``https`` URLs only: the scheme rule and the length
  limit (:data:`MAX_URL_CHARS`) of :mod:`feedstream.core.urls`, plus what a browser needs.
* :func:`remove_control_chars` removes what no text field should carry.

All functions are pure: no I/O, no global state.
"""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urljoin, urlsplit

import nh3

from feedstream.core.urls import HTTP_SCHEMES, MAX_URL_CHARS

__all__ = [
    "MAX_URL_CHARS",
    "clean_html",
    "plain_text",
    "remove_control_chars",
    "safe_url",
    "sanitized_text",
]

ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "acronym", "b", "bdi", "bdo", "blockquote", "br", "caption", "cite",
        "code", "col", "colgroup", "dd", "del", "details", "dfn", "div", "dl", "dt", "em",
        "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins",
        "kbd", "li", "mark", "ol", "p", "pre", "q", "rp", "rt", "ruby", "s", "samp", "small",
        "span", "strike", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot",
        "th", "thead", "time", "tr", "tt", "u", "ul", "var", "wbr",
    }
)  # fmt: skip

# No ``id``/``name`` (DOM clobbering), ``class`` (page CSS), ``style`` or ``on*`` attributes.
# ``rel`` is not listed because nh3 sets it on every link itself.
ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "*": frozenset({"title", "lang", "dir"}),
    "a": frozenset({"href", "hreflang"}),
    "img": frozenset({"src", "alt", "width", "height"}),
    "ol": frozenset({"start", "reversed", "type"}),
    "td": frozenset({"colspan", "rowspan", "headers"}),
    "th": frozenset({"colspan", "rowspan", "headers", "scope", "abbr"}),
    "col": frozenset({"span"}),
    "colgroup": frozenset({"span"}),
    "time": frozenset({"datetime"}),
    "del": frozenset({"datetime"}),
    "ins": frozenset({"datetime"}),
}

URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer nofollow"

# Elements dropped together with everything inside them: their content is code, or only makes
# sense as part of the element, never readable text.
DROPPED_WITH_CONTENT = frozenset(
    {"script", "style", "template", "svg", "math", "iframe", "object", "embed", "noscript",
     "textarea", "select"}
)  # fmt: skip

# Tags that separate words: a space goes in front of each, so that ``a<br>b`` reads "a b".
_BLOCK_TAG = re.compile(
    r"<(?=/?(?:address|article|aside|blockquote|br|dd|div|dl|dt|figcaption|figure|footer|"
    r"h[1-6]|header|hr|img|li|ol|p|pre|section|table|td|th|tr|ul)\b)",
    re.IGNORECASE,
)

# Markup as it may appear in plain text or in text that decoded entities turned into markup:
# an element whose content is code (dropped up to its end tag, or to the end of the text when it
# is never closed), a comment, or any other complete tag. ``[^<>]`` keeps every attempt linear.
_MARKUP = re.compile(
    r"<(script|style)\b[^<>]*>.*?(?:</\1\s*>|\Z)"
    r"|<!--.*?(?:-->|\Z)"
    r"|<[a-zA-Z/!?][^<>]*>",
    re.IGNORECASE | re.DOTALL,
)

# What is left of a tag that never closes (``<script`` at the very end, ``<<b>i>``...). A whole
# run of ``<`` goes, so that removing it cannot glue an earlier ``<`` to a letter; matching
# starts only at the first ``<`` of a run and never backtracks, which keeps it linear.
_TAG_OPENER = re.compile(r"(?<!<)<++(?=[a-zA-Z/!?])")

# C0 and C1 control characters and lone surrogates (they cannot even be encoded as UTF-8).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")

# Browsers delete ASCII tab and newlines anywhere in a URL (``java\tscript:`` is javascript:)
# and trim C0 controls and spaces at both ends; do the same before judging the URL.
_URL_IGNORED = re.compile(r"[\t\n\r]")
_URL_TRIMMED = "".join(chr(c) for c in range(0x21))
_URL_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\\]")
# The only allowed attributes that hold a URL.
_URL_ATTRIBUTES = frozenset({"href", "src"})
# Host names (any script), IPv4 and, without their brackets, IPv6 addresses.
_URL_HOST = re.compile(r"[\w.:-]+")


def clean_html(html: str | None, base_url: str | None) -> str | None:
    """Sanitize an HTML fragment for display; ``None`` if nothing is left.

    Every ``href``/``src`` becomes what :func:`safe_url` makes of it against ``base_url``
    (relative ones resolved; without a usable ``http(s)`` base they are dropped), except that
    links may also be ``mailto:``.
    """
    if not html:
        return None

    def check_url(element: str, attribute: str, value: str) -> str | None:
        if attribute not in _URL_ATTRIBUTES:
            return value
        if attribute == "href" and value.strip().lower().startswith("mailto:"):
            return value.strip()
        return safe_url(value, base_url)

    cleaned = nh3.clean(
        remove_control_chars(html),
        tags=ALLOWED_TAGS,
        clean_content_tags=DROPPED_WITH_CONTENT,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel=LINK_REL,
        strip_comments=True,
        # nh3 drops URLs with another scheme, then hands every remaining href/src, relative
        # ones included, to check_url, whose answer is final: only safe_url's output or mailto:.
        url_relative="pass_through",
        attribute_filter=check_url,
    )
    # Character references such as ``&#1;`` decode to control characters inside nh3.
    cleaned = remove_control_chars(cleaned).strip()
    return cleaned or None


# The start of one of those elements, or (harmless: the careful way is taken then) of a tag that
# begins like one with another first letter: the first letter and the rest matched apart are
# several times faster than an alternation of whole names tried at every ``<``.
_DROPPED_OPEN = re.compile(
    "<[" + "".join(sorted({name[0] for name in DROPPED_WITH_CONTENT})) + "]"
    "(?:" + "|".join(sorted({name[1:] for name in DROPPED_WITH_CONTENT})) + r")\b",
    re.IGNORECASE,
)
# What clean_html writes (html5ever's serializer): tag names in lower case, attribute values in
# double quotes, every ``<`` of the text escaped. So a tag is ``<``, then anything but ``>`` and
# ``"``, with quoted values in between (a value may hold ``>``): an unrolled loop, linear.
_CLEAN_BLOCK_TAG = re.compile(_BLOCK_TAG.pattern)  # the same names, without re.IGNORECASE
_CLEAN_TAG = re.compile(r'<[a-z/][^>"]*(?:"[^"]*"[^>"]*)*>')


def sanitized_text(html: str) -> str:
    """The words of HTML that :func:`clean_html` already made safe, for matching only.

    A cheap pass where :func:`plain_text` is a careful one: sanitized HTML holds no script,
    style or comment and only well-formed tags, so taking the tags out (a space for the ones
    that separate words) and decoding entities once gives the same words, several times faster.
    Never for display, and never for HTML that did not come out of :func:`clean_html`.
    """
    if _DROPPED_OPEN.search(html) is not None:  # not what clean_html makes: the careful way
        return plain_text(html, is_html=True) or ""
    text = _CLEAN_TAG.sub("", _CLEAN_BLOCK_TAG.sub(" <", html))
    return " ".join((unescape(text) if "&" in text else text).split())


def plain_text(
    value: str | None, *, is_html: bool = True, max_chars: int | None = None
) -> str | None:
    """Reduce ``value`` to one line of display text that never contains an HTML tag.

    With ``is_html`` the value is parsed as HTML: tags go, the content of script/style (and the
    other :data:`DROPPED_WITH_CONTENT` elements) goes, entities are decoded exactly once and a
    ``<`` that starts no tag stays. Without it the value is literal text, but tag-like markup is
    removed all the same. Whitespace is collapsed, control characters are removed, and the
    result is cut on a word boundary with ``…`` when it is longer than ``max_chars``.
    """
    if max_chars is not None and max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    if not value:
        return None
    text = remove_control_chars(value)
    if is_html:
        # nh3 with no allowed tag returns the text content, escaped as HTML: unescaping it only
        # undoes that escaping, so the source's own entities are decoded exactly once. A
        # character reference may have produced a control character: remove it before the
        # markup pass so that it cannot hide a tag (``<&#1;b>``).
        text = nh3.clean(
            _BLOCK_TAG.sub(" <", text), tags=set(), clean_content_tags=DROPPED_WITH_CONTENT
        )
        text = remove_control_chars(unescape(text))
    # Markup that was literal text (``&lt;b&gt;`` in HTML, or a plain-text value) goes too.
    text = _MARKUP.sub("", _BLOCK_TAG.sub(" <", text))
    text = " ".join(_TAG_OPENER.sub("", text).split())
    if max_chars is not None and len(text) > max_chars:
        text = _truncate(text, max_chars)
    return text or None


def remove_control_chars(value: str) -> str:
    """Remove C0/C1 control characters (except tab, LF and CR) and lone surrogates."""
    return _CONTROL.sub("", value)


def _truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, ending with ``…``, between words."""
    head = text[: max_chars - 1]
    if not text[max_chars - 1].isspace():
        last_space = head.rfind(" ")
        if last_space > 0:
            head = head[:last_space]
    return head.rstrip() + "…"


def safe_url(url: str | None, base_url: str | None = None) -> str | None:
    """Return ``url`` as an absolute ``http``/``https`` URL, or ``None``.

    A relative URL is resolved against ``base_url`` (itself required to be safe). Tabs and
    newlines are deleted and the ends trimmed, as browsers do. URLs with another scheme, embedded
    credentials, control characters, backslashes (which browsers and Python read differently),
    no host or a host with punctuation, an invalid port or more than :data:`MAX_URL_CHARS`
    characters are refused.
    """
    if not url:
        return None
    candidate = _URL_IGNORED.sub("", url).strip(_URL_TRIMMED)
    if not candidate or len(candidate) > MAX_URL_CHARS or _URL_FORBIDDEN.search(candidate):
        return None
    candidate = candidate.replace(" ", "%20")
    try:
        if not urlsplit(candidate).scheme:
            base = safe_url(base_url)
            if base is None:
                return None
            candidate = urljoin(base, candidate)
        parts = urlsplit(candidate)
        port = parts.port  # raises ValueError when not a number in 0..65535
    except ValueError:
        return None
    if parts.scheme not in HTTP_SCHEMES or port == 0:
        return None
    if not parts.hostname or not _URL_HOST.fullmatch(parts.hostname):
        return None
    if parts.username is not None:  # user:password@ is a phishing and secret-leaking vector
        return None
    absolute = parts.geturl()
    return absolute if len(absolute) <= MAX_URL_CHARS else None
