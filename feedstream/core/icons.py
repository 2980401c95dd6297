"""Feed icons, the pure part: where a feed's icon may be, whether bytes are an image, the
generated fallback, and the HTTP rules of ``GET /api/feeds/<id>/icon``.

Pure: no I/O. :mod:`feedstream.service.icons` fetches and stores; this module decides.

Where an icon is looked for, in order (:mod:`feedstream.service.icons` stops at the first
candidate that answers 200 with an image):

1. the feed document's own icon (:attr:`feedstream.core.normalize.ParsedFeed.icon_url`: Atom
   ``icon`` else ``logo``, RSS ``image/url``, JSON Feed ``favicon`` else ``icon``), read by
   :func:`feed_hints` in a worker process;
2. the site's ``<link rel="icon">`` (then ``apple-touch-icon``), read from the feed's ``link``
   page (else the feed host's home page) by :func:`page_icons`;
3. ``/favicon.ico`` at the root of that site (:func:`favicon_url`).

**The bytes decide, not the Content-Type** (servers label ``favicon.ico`` as ``text/plain``
and "not found" pages as ``image/png``): :func:`sniff_image` knows PNG, GIF, JPEG, WebP, ICO
and SVG by their first bytes, and anything else, an HTML page first of all, is refused. An SVG
must be a plain ``<svg>`` document: no entity declarations, no DOCTYPE with an internal subset.
Every icon, SVG or not, is served with :data:`ICON_CSP` (no script, no fetch, a sandbox), so
an SVG opened on its own cannot run anything either.

A feed without an icon gets :func:`generated_icon`: an SVG with the first letter of its title
(else its id) in white on a colour derived from its id (:func:`feed_colour`), always the same
for the same feed.
"""

from __future__ import annotations

import colorsys
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from urllib.parse import urldefrag, urlsplit, urlunsplit

from feedstream.core.feedlinks import LinkScanner
from feedstream.core.normalize import parse_feed
from feedstream.core.urls import is_http_url, resolve_http_url

logger = logging.getLogger(__name__)

__all__ = [
    "GENERATED_CACHE_CONTROL",
    "ICON_ACCEPT",
    "ICON_CSP",
    "ICON_TYPES",
    "IMAGE_CACHE_CONTROL",
    "MAX_ICON_BYTES",
    "MAX_PAGE_ICONS",
    "PAGE_ACCEPT",
    "FeedHints",
    "etag_matches",
    "favicon_url",
    "feed_colour",
    "feed_hints",
    "generated_icon",
    "icon_etag",
    "icon_headers",
    "not_an_image",
    "page_icons",
    "site_root",
    "sniff_image",
]

MAX_ICON_BYTES = 256 * 1024
"""The largest icon kept (after decompression); a bigger one is refused."""

MAX_PAGE_ICONS = 3
"""At most this many ``<link rel="icon">`` of a page are tried."""

ICON_TYPES = (
    "image/png",
    "image/gif",
    "image/jpeg",
    "image/webp",
    "image/x-icon",
    "image/svg+xml",
)
"""The media types an icon may have, as :func:`sniff_image` names them."""

ICON_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
"""Sent with every icon: an SVG opened directly runs no script and loads nothing."""

IMAGE_CACHE_CONTROL = "public, max-age=86400"
"""A fetched icon: refreshed weekly at the source, so a day in a browser's cache is fine."""

GENERATED_CACHE_CONTROL = "no-cache"
"""A generated icon: revalidated (304) on every use, so a fetched one replaces it at once."""

ICON_ACCEPT = (
    "image/png, image/gif, image/jpeg, image/webp, image/x-icon, image/vnd.microsoft.icon, "
    "image/svg+xml;q=0.9, image/*;q=0.5, */*;q=0.1"
)
PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"


# -- where icons are ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedHints:
    """What a feed document says about its icon: whether it is a feed, its icon, its site."""

    is_feed: bool
    icon_url: str | None = None
    site_url: str | None = None  # the feed's ``link`` (its web site), http(s)


def feed_hints(body: bytes, url: str, content_type: str | None) -> FeedHints:
    """The icon and site a feed document names (what a worker process runs: parsing is CPU
    work on untrusted bytes). Only the feed's header matters, so one entry is normalized."""
    parsed = parse_feed(
        body, feed_id="icon", base_url=url, content_type=content_type, max_entries=1
    )
    if parsed.error is not None:
        return FeedHints(False)
    return FeedHints(True, parsed.icon_url, parsed.link)


class _IconLinkParser(LinkScanner):
    """Collects the icon ``<link>`` elements' hrefs, raw, in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.icons: list[str] = []
        self.touch: list[str] = []  # apple-touch-icon: larger, tried after the icons

    def link(self, href: str, values: dict[str, str]) -> None:
        rels = {token.lower() for token in values.get("rel", "").split()}
        if "icon" in rels and len(self.icons) < 4 * MAX_PAGE_ICONS:  # also "shortcut icon"
            self.icons.append(href)
        elif rels & {"apple-touch-icon", "apple-touch-icon-precomposed"} and not self.touch:
            self.touch.append(href)


def page_icons(body: bytes, base_url: str, content_type: str | None = None) -> list[str]:
    """The icons an HTML page names: ``rel="icon"`` (``"shortcut icon"`` too) in page order,
    then one ``apple-touch-icon``; resolved against ``<base href>`` or *base_url*, http(s)
    only, without fragments, deduplicated, at most :data:`MAX_PAGE_ICONS`.

    The parser reads at most :data:`~feedstream.core.feedlinks.MAX_SCAN_CHARS` characters and is
    never closed (see :mod:`feedstream.core.feedlinks` for why); run it in a worker.
    """
    parser = _IconLinkParser()
    base = parser.scan(body, base_url, content_type)
    found: list[str] = []
    for href in [*parser.icons, *parser.touch]:
        url = resolve_http_url(href, base)
        if url is None:
            continue
        url = urldefrag(url).url
        if url not in found:
            found.append(url)
        if len(found) >= MAX_PAGE_ICONS:
            break
    return found


def site_root(url: str) -> str:
    """``scheme://host[:port]/`` of *url*."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))


def favicon_url(url: str) -> str | None:
    """``/favicon.ico`` at the root of *url*'s site, or None for a URL that is not http(s)."""
    if not is_http_url(url):
        return None
    return site_root(url) + "favicon.ico"


# -- what an icon is ----------------------------------------------------------------------------

_SVG_PROLOG = re.compile(
    r"\A(?:\s+|<\?xml[^>]{0,200}\?>|<!--.*?-->|<!DOCTYPE\s+svg[^\[>]{0,300}>)*<svg[\s>/]",
    re.DOTALL,
)
_XML_DECLARATIONS = re.compile(r"<!ENTITY|<!DOCTYPE[^>]*\[", re.IGNORECASE)
_HTML_START = re.compile(
    r"\A\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b",
    re.IGNORECASE | re.DOTALL,
)


def sniff_image(body: bytes) -> str | None:
    """The media type of an icon's bytes (one of :data:`ICON_TYPES`), or None if they are none
    of them. The first bytes decide; a declared Content-Type is not asked."""
    if body.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if body.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if body.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(body) >= 12 and body.startswith(b"RIFF") and body[8:12] == b"WEBP":
        return "image/webp"
    if len(body) >= 6 and body.startswith(b"\x00\x00\x01\x00") and body[4:6] != b"\x00\x00":
        return "image/x-icon"  # reserved 0, type 1 (icon), at least one image
    if _is_svg(body):
        return "image/svg+xml"
    return None


def _is_svg(body: bytes) -> bool:
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if _XML_DECLARATIONS.search(text):
        return False  # entities or an internal DTD subset: never passed on to a browser
    return _SVG_PROLOG.match(text) is not None


def not_an_image(body: bytes) -> str:
    """Why *body* (which :func:`sniff_image` refused) is not served as an icon."""
    if not body.strip():
        return "an empty body, not an image"
    head = body[:2048].decode("utf-8", "replace")
    if _HTML_START.match(head):
        return "an HTML page, not an image"
    if "<svg" in head and "<!" in head:
        return "an SVG with entity or DOCTYPE declarations (refused)"
    return "not an image (PNG, GIF, JPEG, WebP, ICO or SVG)"


# -- the generated icon -------------------------------------------------------------------------


def feed_colour(feed_id: str) -> str:
    """A colour for *feed_id* (``#rrggbb``), the same every time: a hue from its SHA-256, a
    saturation and lightness dark enough for white text."""
    digest = hashlib.sha256(feed_id.encode()).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536
    saturation = 0.45 + digest[2] / 255 * 0.2
    red, green, blue = colorsys.hls_to_rgb(hue, 0.38, saturation)
    return "#" + "".join(f"{round(c * 255):02x}" for c in (red, green, blue))


def _initial(label: str) -> str:
    for char in label:
        if char.isalnum():
            return char.upper()[0]
    return "?"


def generated_icon(feed_id: str, title: str | None = None) -> bytes:
    """An SVG icon for a feed without one: its initial (of *title*, else of the id) on
    :func:`feed_colour`."""
    label = title if title and any(char.isalnum() for char in title) else feed_id
    initial = escape(_initial(label))
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64" width="64" height="64">'
        f'<rect width="64" height="64" rx="14" fill="{feed_colour(feed_id)}"/>'
        '<text x="32" y="32" dy="0.35em" text-anchor="middle" fill="#fff" font-size="36" '
        'font-weight="600" font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif">'
        f"{initial}</text></svg>"
    ).encode()


# -- HTTP ---------------------------------------------------------------------------------------


def icon_etag(body: bytes) -> str:
    """A strong ETag for an icon's bytes (quoted)."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names *etag* (weak comparison, as RFC 9110 asks
    for this header; ``*`` matches anything)."""
    if not if_none_match:
        return False
    wanted = etag.removeprefix("W/")
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == wanted:
            return True
    return False


def icon_headers(etag: str, *, generated: bool) -> Mapping[str, str]:
    """Headers of an icon answer (200 and 304): validator, caching, the sandbox policy."""
    return {
        "ETag": etag,
        "Cache-Control": GENERATED_CACHE_CONTROL if generated else IMAGE_CACHE_CONTROL,
        "Content-Security-Policy": ICON_CSP,
        "X-Content-Type-Options": "nosniff",
    }
