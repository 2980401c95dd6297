"""The media proxy, the pure part: signed ``/media/`` URLs, rewriting entries, sniffing images.

Pure: no I/O. :mod:`feedstream.service.media` fetches and caches; :mod:`feedstream.web.media`
answers ``GET /media/<signature>/<encoded url>``; this module decides.

**Signed URLs.** With ``[server] proxy_media = true`` every image URL of an entry becomes
``/media/<signature>/<encoded url>`` when the entry is ingested (:func:`proxy_entry`, run in the
parsing worker with the rest of the ingest work), so delivery never rewrites anything:

* ``<encoded url>`` is the URL's UTF-8 in unpadded base64url (:func:`encode_url`): one path
  segment of ``[A-Za-z0-9_-]``, which no proxy or router decodes, merges or splits (a
  percent-encoded URL's ``%2F`` is exactly what nginx and Apache tamper with);
* ``<signature>`` is HMAC-SHA256 under the store's ``media_key`` (32 random bytes, created
  once, so every node and every restart agrees) over ``media:`` + the URL, truncated to
  :data:`SIGNATURE_BYTES` = 16 bytes (128 bits: far beyond guessing, 22 characters) and
  base64url-encoded. :meth:`MediaSigner.verify` recomputes it and compares in constant time:
  the proxy fetches only URLs this server wrote.

What is rewritten (:func:`proxy_entry`): ``<img src>`` and ``<img srcset>`` in
``content_html``, ``image`` (the original goes to ``image_source``; every proxied entry has
that key, None without an image) and each enclosure whose type is ``image/*`` (its original
goes to the enclosure's ``source``). The entry's ``url`` (its link) is never touched. Only
absolute http(s) URLs are rewritten: sanitized content holds no other kind.

The paths are relative: they work on the page and on any client that resolves them against
the server's URL, whatever ``public_url`` is or becomes. **Output feeds publish the original
URLs** (:func:`original_entry`, applied by :func:`feedstream.core.publish.render`): a feed is
read by another program, somewhere else, with its own image policy; relative paths would be
wrong there, and the proxy is not meant to be an image relay for the world.
:func:`media_source` reads a proxied path back without the key: sanitized content never holds
a relative URL (the sanitizer makes them absolute), so a ``/media/`` path in a stored entry can
only have been written by :func:`proxy_entry`.

**Images** (:func:`sniff_media`): the bytes decide, never the Content-Type: PNG, JPEG, GIF,
WebP, AVIF, ICO and BMP by their magic numbers. SVG is refused (it is a document that can
carry script and load other resources); so is everything else, an HTML page first of all
(:func:`media_refusal` says why). Every answer carries :data:`MEDIA_CSP` all the same.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html import escape
from html.parser import HTMLParser
from typing import Any

from feedstream.core.icons import icon_etag, not_an_image, sniff_image
from feedstream.core.urls import MAX_URL_CHARS, is_http_url

logger = logging.getLogger(__name__)

__all__ = [
    "KEY_BYTES",
    "MEDIA_ACCEPT",
    "MEDIA_CACHE_CONTROL",
    "MEDIA_CSP",
    "MEDIA_PATH",
    "MEDIA_TYPES",
    "SIGNATURE_BYTES",
    "MediaRefused",
    "MediaSigner",
    "decode_url",
    "encode_url",
    "media_etag",
    "media_headers",
    "media_refusal",
    "media_source",
    "original_entry",
    "proxy_entry",
    "rewrite_html",
    "sniff_media",
]

MEDIA_PATH = "/media/"
"""Where proxied images are served: ``/media/<signature>/<encoded url>``."""

KEY_BYTES = 32
"""The size of the ``media_key`` the store creates (random bytes)."""

SIGNATURE_BYTES = 16
"""The HMAC-SHA256 is cut to this many bytes (128 bits), 22 base64url characters."""

_SIGNATURE_CHARS = 22
_MAX_ENCODED_CHARS = (MAX_URL_CHARS * 4 * 4 + 2) // 3  # 2048 characters of up to 4 bytes each
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_DOMAIN = b"media:"  # what the MAC is over: this prefix, then the URL (no other use of the key)

MEDIA_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/x-icon",
    "image/bmp",
)
"""What the proxy serves, as :func:`sniff_media` names it. No SVG."""

MEDIA_ACCEPT = (
    "image/avif, image/webp, image/png, image/jpeg, image/gif, image/x-icon, image/bmp, "
    "image/*;q=0.5, */*;q=0.1"
)
"""The ``Accept`` header of the proxy's requests (SVG is not asked for: it would be refused)."""

MEDIA_CACHE_CONTROL = "public, max-age=604800, immutable"
"""A signed URL's image rarely changes: browsers keep it a week without asking again."""

MEDIA_CSP = "sandbox; default-src 'none'"
"""Sent with every image: one opened on its own runs nothing and loads nothing."""


class MediaRefused(Exception):
    """Why a media request is not answered with an image: an HTTP status, a reason for the JSON
    body, and a one-word *kind* (the ``reason`` label of the refusal metric)."""

    def __init__(self, status: int, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.kind = kind


# -- signed URLs --------------------------------------------------------------------------------


def encode_url(url: str) -> str:
    """*url*'s UTF-8 as unpadded base64url (one path segment)."""
    return base64.urlsafe_b64encode(url.encode("utf-8")).rstrip(b"=").decode("ascii")


def decode_url(encoded: str) -> str | None:
    """The URL :func:`encode_url` made *encoded* from, or None when it is no such thing."""
    if not encoded or len(encoded) > _MAX_ENCODED_CHARS or not _BASE64URL.fullmatch(encoded):
        return None
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        url = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return url if is_http_url(url) and encode_url(url) == encoded else None


@dataclass(frozen=True, slots=True)
class MediaSigner:
    """Signs and verifies ``/media/`` paths with the store's key (picklable: it travels to the
    parsing workers with each document)."""

    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ValueError("a media key needs at least 16 bytes")

    def __repr__(self) -> str:  # never the key, in a log or a traceback
        return "MediaSigner(key=...)"

    def signature(self, url: str) -> str:
        mac = hmac.new(self.key, _DOMAIN + url.encode("utf-8"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:SIGNATURE_BYTES]).rstrip(b"=").decode("ascii")

    def path(self, url: str) -> str | None:
        """``/media/<signature>/<encoded url>`` for an absolute http(s) *url*, else None."""
        if not is_http_url(url):
            return None
        return f"{MEDIA_PATH}{self.signature(url)}/{encode_url(url)}"

    def verify(self, signature: str, encoded: str) -> str:
        """The URL of a ``/media/`` path this server signed; :class:`MediaRefused` (403)
        otherwise. The signature is compared in constant time."""
        url = decode_url(encoded)
        if url is None:
            raise MediaRefused(403, "not a media URL this server wrote (malformed)", "signature")
        if len(signature) != _SIGNATURE_CHARS or not hmac.compare_digest(
            signature.encode("ascii", "replace"), self.signature(url).encode("ascii")
        ):
            reason = "not a media URL this server wrote (bad signature)"
            raise MediaRefused(403, reason, "signature")
        return url


def media_source(value: str) -> str:
    """The original URL of a ``/media/`` path (no key needed, see the module docstring); any
    other value unchanged."""
    if not value.startswith(MEDIA_PATH):
        return value
    _, _, encoded = value[len(MEDIA_PATH) :].partition("/")
    return decode_url(encoded) or value


# -- rewriting entries ----------------------------------------------------------------------


class _ImageTags(HTMLParser):
    """Finds every ``<img>`` start tag: where it is (line, column), its text, its attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[tuple[int, int], str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.found.append((self.getpos(), self.get_starttag_text() or "", attrs))


_SPACE = " \t\n\r\f"  # ASCII whitespace, as HTML counts it


def _srcset(value: str, change: Callable[[str], str]) -> str:
    """A ``srcset`` with *change* applied to each candidate's URL, descriptors kept, parsed as
    HTML does: a URL runs to the next whitespace (commas inside it, as image CDNs write them,
    belong to it; trailing ones end the candidate), its descriptors to the next comma."""
    candidates: list[str] = []
    at, end = 0, len(value)
    while at < end:
        while at < end and (value[at] in _SPACE or value[at] == ","):
            at += 1
        start = at
        while at < end and value[at] not in _SPACE:
            at += 1
        url, descriptors = value[start:at], ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start, depth = at, 0
            while at < end and (value[at] != "," or depth):
                depth += {"(": 1, ")": -1 if depth else 0}.get(value[at], 0)
                at += 1
            descriptors = " ".join(value[start:at].split())
            at += 1
        if url:
            candidates.append(f"{change(url)} {descriptors}" if descriptors else change(url))
    return ", ".join(candidates) if candidates else value


def rewrite_html(html: str, change: Callable[[str], str]) -> str:
    """*html* (sanitized HTML) with *change* applied to every ``<img>``'s ``src`` and to each
    URL of its ``srcset``; the rest of the text is left exactly as it was.

    The tags are found by a real HTML tokenizer (an ``<img`` inside an attribute value or in
    text is not a tag), and each changed tag is written anew, its values escaped.
    """
    if "<img" not in html:
        return html
    finder = _ImageTags()
    finder.feed(html)
    finder.close()
    if not finder.found:
        return html
    starts = [0]  # where each line begins: the tokenizer counts lines by "\n" alone
    newline = html.find("\n")
    while newline != -1:
        starts.append(newline + 1)
        newline = html.find("\n", newline + 1)
    out: list[str] = []
    done = 0
    for (line, column), text, attrs in finder.found:
        begin = starts[line - 1] + column
        if html[begin : begin + len(text)] != text:  # never expected: leave the tag alone
            continue
        changed = False
        written = []
        for name, value in attrs:
            if value is not None and name in ("src", "srcset"):
                new = change(value) if name == "src" else _srcset(value, change)
                changed |= new != value
                value = new
            written.append(name if value is None else f'{name}="{escape(value)}"')
        if changed:
            out += [html[done:begin], "<img", *(f" {w}" for w in written), ">"]
            done = begin + len(text)
    out.append(html[done:])
    return "".join(out)


def proxy_entry(entry: Mapping[str, Any], signer: MediaSigner) -> dict[str, Any]:
    """*entry* with its image URLs proxied (see the module docstring); a new dict."""

    def proxied(url: str) -> str:
        return signer.path(url) or url

    out = dict(entry)
    html = entry.get("content_html")
    if isinstance(html, str):
        out["content_html"] = rewrite_html(html, proxied)
    image = entry.get("image")
    out["image_source"] = image if isinstance(image, str) else None
    if isinstance(image, str):
        out["image"] = proxied(image)
    enclosures = entry.get("enclosures")
    if isinstance(enclosures, list):
        out["enclosures"] = [_proxied_enclosure(item, proxied) for item in enclosures]
    return out


def _proxied_enclosure(item: Any, proxied: Callable[[str], str]) -> Any:
    if not isinstance(item, Mapping):
        return item
    url, kind = item.get("url"), item.get("type")
    if not isinstance(url, str) or not isinstance(kind, str) or not kind.startswith("image/"):
        return item
    path = proxied(url)
    return item if path == url else {**item, "url": path, "source": url}


def original_entry(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """*entry* with the original URLs back in place of proxied ones (for output feeds); the
    entry itself when nothing in it was proxied."""
    html = entry.get("content_html")
    html_proxied = isinstance(html, str) and MEDIA_PATH in html
    if "image_source" not in entry and not html_proxied:
        return entry
    out = dict(entry)
    if "image_source" in entry:
        source = entry["image_source"]
        out["image"] = source if isinstance(source, str) else None
        del out["image_source"]
    if html_proxied:
        assert isinstance(html, str)
        out["content_html"] = rewrite_html(html, media_source)
    enclosures = entry.get("enclosures")
    if isinstance(enclosures, list):
        out["enclosures"] = [_original_enclosure(item) for item in enclosures]
    return out


def _original_enclosure(item: Any) -> Any:
    if not isinstance(item, Mapping) or not isinstance(item.get("source"), str):
        return item
    restored = {**item, "url": item["source"]}
    del restored["source"]
    return restored


# -- images -----------------------------------------------------------------------------------

_BMP_HEADERS = frozenset({12, 16, 40, 52, 56, 64, 108, 124})  # DIB header sizes
_AVIF_BRANDS = frozenset({b"avif", b"avis"})


def _is_avif(body: bytes) -> bool:
    """An ISO-BMFF ``ftyp`` box naming ``avif`` or ``avis`` as its major or a compatible brand."""
    if len(body) < 16 or body[4:8] != b"ftyp":
        return False
    size = int.from_bytes(body[:4], "big")
    if size < 16 or size % 4 or size > min(len(body), 4096):
        return False
    brands = {body[8:12]} | {body[i : i + 4] for i in range(16, size, 4)}
    return bool(brands & _AVIF_BRANDS)


def _is_bmp(body: bytes) -> bool:
    return (
        len(body) >= 26
        and body.startswith(b"BM")
        and int.from_bytes(body[14:18], "little") in _BMP_HEADERS
    )


def sniff_media(body: bytes) -> str | None:
    """The media type of an image's bytes (one of :data:`MEDIA_TYPES`), or None. The first
    bytes decide (:func:`feedstream.core.icons.sniff_image` for PNG, GIF, JPEG, WebP and ICO,
    then AVIF and BMP); SVG is None."""
    kind = sniff_image(body)
    if kind is not None:
        return None if kind == "image/svg+xml" else kind
    if _is_avif(body):
        return "image/avif"
    if _is_bmp(body):
        return "image/bmp"
    return None


def media_refusal(body: bytes) -> MediaRefused:
    """Why *body* (which :func:`sniff_media` refused) is not served: 415 and the reason."""
    head = body[:4096]
    if sniff_image(body) == "image/svg+xml" or b"<svg" in head:
        return MediaRefused(415, "an SVG image: refused (it can carry script)", "svg")
    reason = not_an_image(body)
    if reason.startswith("not an image"):
        reason = "not an image (PNG, JPEG, GIF, WebP, AVIF, ICO or BMP)"
    return MediaRefused(415, reason, "not_an_image")


def media_etag(body: bytes) -> str:
    """A strong ETag for an image's bytes (quoted): the one icons use."""
    return icon_etag(body)


def media_headers(etag: str, *, private: bool = False) -> dict[str, str]:
    """Headers of an image answer (200 and 304): validator, caching, no sniffing, sandbox.

    On a *private* server (reading needs credentials) the answer is ``private``: a browser keeps
    it, a shared cache (a CDN, a caching proxy) does not.
    """
    cache_control = MEDIA_CACHE_CONTROL
    if private:
        cache_control = cache_control.replace("public", "private")
    return {
        "ETag": etag,
        "Cache-Control": cache_control,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": MEDIA_CSP,
    }
