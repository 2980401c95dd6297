"""The media proxy's pure part: signed paths, rewriting entries (and back for output feeds),
sniffing images, the headers; and the page's CSP with the proxy on."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from feedstream.core.httprules import (
    CONTENT_SECURITY_POLICY,
    PROXIED_CONTENT_SECURITY_POLICY,
    SECURITY_HEADERS,
    page_security_headers,
)
from feedstream.core.media import (
    MEDIA_CSP,
    MediaRefused,
    MediaSigner,
    decode_url,
    encode_url,
    media_etag,
    media_headers,
    media_refusal,
    media_source,
    original_entry,
    proxy_entry,
    rewrite_html,
    sniff_media,
)
from feedstream.core.normalize import parse_feed
from feedstream.core.publish import FeedInfo, render
from tests.core.test_icons import GIF, ICO, JPEG, PNG, SVG, WEBP
from tests.support.helpers import entry

KEY = bytes(range(32))
SIGNER = MediaSigner(KEY)
IMAGE = "https://img.example/a.png"

AVIF = struct.pack(">I", 28) + b"ftypavif" + b"\x00\x00\x00\x00" + b"avifmif1miaf" + b"\x00" * 20
AVIF_COMPATIBLE = (
    struct.pack(">I", 24) + b"ftypmif1" + b"\x00\x00\x00\x00" + b"mif1avif" + b"\x00" * 8
)
HEIC = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + b"\x00" * 8
BMP = b"BM" + struct.pack("<IHHI", 70, 0, 0, 54) + struct.pack("<I", 40) + b"\x00" * 48
HTML = b"<!doctype html><html><body>Not found</body></html>"


def parts(path: str) -> tuple[str, str]:
    prefix, signature, encoded = path.rsplit("/", 2)
    assert prefix == "/media"
    return signature, encoded


# -- signed paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        IMAGE,
        "http://x.example/p?q=1&r=2#f",
        "https://bücher.example/ü/图片.jpg",
        "https://a.b/" + "x" * 2000,
    ],
)
def test_urls_travel_as_one_base64url_segment(url: str) -> None:
    encoded = encode_url(url)
    assert "/" not in encoded and "=" not in encoded and "%" not in encoded
    assert decode_url(encoded) == url


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "not base64!",
        encode_url("ftp://x.example/a.png"),  # not http(s)
        encode_url("/relative"),
        "aHR0cHM6Ly9hLmIv" + "=",  # padding is never written
        encode_url("https://a.b/") + "x",  # not what encode_url makes (stray bits)
        "A" * 20_000,  # longer than any URL
        "__8",  # not UTF-8
    ],
)
def test_what_does_not_decode_to_an_http_url(encoded: str) -> None:
    assert decode_url(encoded) is None


def test_a_signed_path_verifies_and_gives_the_url_back() -> None:
    path = SIGNER.path(IMAGE)
    assert path is not None and path.startswith("/media/")
    signature, encoded = parts(path)
    assert len(signature) == 22  # 16 bytes of HMAC-SHA256, base64url
    assert SIGNER.verify(signature, encoded) == IMAGE
    assert MediaSigner(bytes(KEY)).path(IMAGE) == path  # the same key, the same path
    assert SIGNER.path("javascript:alert(1)") is None and SIGNER.path("/x.png") is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda sig, enc: (sig[:-1] + ("A" if sig[-1] != "A" else "B"), enc),  # another signature
        lambda sig, enc: (sig, encode_url("https://img.example/b.png")),  # another URL
        lambda sig, enc: (MediaSigner(b"k" * 32).signature(IMAGE), enc),  # another key
        lambda sig, enc: (sig[:10], enc),  # too short
        lambda sig, enc: ("é" * 22, enc),  # not ASCII
        lambda sig, enc: (sig, enc[:-2]),  # a cut URL
        lambda sig, enc: ("", enc),
    ],
)
def test_a_wrong_signature_is_refused_with_403(tamper: Any) -> None:
    path = SIGNER.path(IMAGE)
    assert path is not None
    signature, encoded = tamper(*parts(path))
    with pytest.raises(MediaRefused) as refused:
        SIGNER.verify(signature, encoded)
    assert refused.value.status == 403 and refused.value.kind == "signature"
    assert "not a media URL this server wrote" in refused.value.reason


def test_the_signer_never_shows_its_key() -> None:
    assert KEY.hex() not in repr(SIGNER) and str(KEY) not in repr(SIGNER)
    with pytest.raises(ValueError):
        MediaSigner(b"short")


def test_media_source_reads_a_path_back_without_the_key() -> None:
    path = SIGNER.path(IMAGE)
    assert path is not None
    assert media_source(path) == IMAGE
    assert media_source(IMAGE) == IMAGE
    assert media_source("/media/x/not-base64!") == "/media/x/not-base64!"


# -- rewriting ------------------------------------------------------------------------------


def proxied(url: str) -> str:
    return SIGNER.path(url) or url


def test_rewrite_html_changes_img_src_and_srcset_only() -> None:
    html = (
        '<p>See <a href="https://site.example/p">this</a>:</p>\n'
        '<p><img src="https://img.example/a.png?x=1&amp;y=2" alt="a &quot;quote&quot; &lt;b&gt;">'
        "</p>\n<figure>\n  <img "
        'srcset="https://img.example/s.png 1x, https://img.example/l.png 2x" '
        'src="https://img.example/s.png"></figure>'
    )
    out = rewrite_html(html, proxied)
    assert out.startswith(
        '<p>See <a href="https://site.example/p">this</a>:</p>\n<p><img src="/media/'
    )
    assert out.endswith("></figure>")
    assert f'src="{proxied("https://img.example/a.png?x=1&y=2")}"' in out
    assert 'alt="a &quot;quote&quot; &lt;b&gt;"' in out  # other values kept, escaped
    srcset = f"{proxied('https://img.example/s.png')} 1x, {proxied('https://img.example/l.png')} 2x"
    assert f'srcset="{srcset}"' in out
    assert "https://img.example" not in out
    assert rewrite_html(out, media_source) == html  # read back: the same text


def test_rewrite_html_finds_real_tags_only() -> None:
    decoy = (
        '<a title="<img src=https://evil.example/x.png>" href="https://a.example/">'
        "&lt;img src=&quot;https://evil.example/y.png&quot;&gt;</a>"
    )
    assert rewrite_html(decoy, proxied) == decoy
    assert rewrite_html("<p>no images</p>", proxied) == "<p>no images</p>"
    lines = "\r\n".join(f'<p>{n}</p>\n<img src="https://i.example/{n}.gif">' for n in range(5))
    out = rewrite_html(lines, proxied)
    assert out.count("/media/") == 5 and "https://i.example" not in out
    assert rewrite_html(out, media_source) == lines


def normalized(**item: Any) -> dict[str, Any]:
    """One entry as the parser makes it (sanitized) from a JSON Feed item."""
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "F", "items": [item]}
    parsed = parse_feed(json.dumps(doc).encode(), feed_id="f", base_url="https://site.example/")
    assert parsed.error is None, parsed.error
    return parsed.entries[0]


def test_proxy_entry_rewrites_content_image_and_image_enclosures() -> None:
    original = normalized(
        id="1",
        url="https://site.example/post",
        content_html='<p>Hi <img src="/pics/in.jpg" alt="x"> <a href="/more">more</a></p>',
        image="https://img.example/lead.webp",
        attachments=[
            {"url": "https://img.example/att.png", "mime_type": "image/png"},
            {"url": "https://pod.example/ep.mp3", "mime_type": "audio/mpeg"},
        ],
    )
    before = json.loads(json.dumps(original))
    entry = proxy_entry(original, SIGNER)
    assert original == before  # a new dict: the parse is not changed
    assert entry["url"] == "https://site.example/post"  # the link is never rewritten
    assert entry["image"] == proxied("https://img.example/lead.webp")
    assert entry["image_source"] == "https://img.example/lead.webp"
    assert f'src="{proxied("https://site.example/pics/in.jpg")}"' in entry["content_html"]
    assert 'href="https://site.example/more"' in entry["content_html"]
    assert entry["enclosures"] == [
        {
            "url": proxied("https://img.example/att.png"),
            "type": "image/png",
            "length": None,
            "source": "https://img.example/att.png",
        },
        {"url": "https://pod.example/ep.mp3", "type": "audio/mpeg", "length": None},
    ]
    assert original_entry(entry) == original  # and back, exactly


def test_proxy_entry_without_images() -> None:
    plain = entry("f", "1", content_html="<p>text</p>", image=None)
    proxied_entry = proxy_entry(plain, SIGNER)
    assert proxied_entry["image"] is None and proxied_entry["image_source"] is None
    assert proxied_entry["content_html"] == "<p>text</p>"
    assert original_entry(plain) is plain  # nothing proxied: the very same entry


def test_output_feeds_carry_the_original_urls() -> None:
    stored = proxy_entry(
        normalized(
            id="1",
            title="T",
            content_html='<p><img src="https://img.example/in.png"></p>',
            image="https://img.example/lead.png",
            attachments=[{"url": "https://img.example/att.png", "mime_type": "image/png"}],
            date_published="2026-01-01T00:00:00Z",
        ),
        SIGNER,
    )
    info = FeedInfo("all", "All", "https://feeds.example/feeds/all.atom", "https://feeds.example/")
    for format in ("atom", "rss", "json"):
        document = render(format, info, [stored]).decode()
        assert "/media/" not in document, format
        assert "https://img.example/lead.png" in document, format
        assert "https://img.example/att.png" in document, format
        assert "https://img.example/in.png" in document, format


# -- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "media_type"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (GIF, "image/gif"),
        (WEBP, "image/webp"),
        (AVIF, "image/avif"),
        (AVIF_COMPATIBLE, "image/avif"),
        (ICO, "image/x-icon"),
        (BMP, "image/bmp"),
    ],
)
def test_images_are_known_by_their_bytes(body: bytes, media_type: str) -> None:
    assert sniff_media(body) == media_type


@pytest.mark.parametrize(
    ("body", "kind", "reason"),
    [
        (SVG, "svg", "an SVG image: refused (it can carry script)"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "svg", "an SVG"),
        (HTML, "not_an_image", "an HTML page, not an image"),
        (b"", "not_an_image", "an empty body, not an image"),
        (HEIC, "not_an_image", "not an image (PNG, JPEG, GIF, WebP, AVIF, ICO or BMP)"),
        (b"BM" + b"\x00" * 30, "not_an_image", "not an image"),
        (b"\x89PNG", "not_an_image", "not an image"),  # a cut signature
        (b'{"json": true}', "not_an_image", "not an image"),
    ],
)
def test_what_is_not_served(body: bytes, kind: str, reason: str) -> None:
    assert sniff_media(body) is None
    refused = media_refusal(body)
    assert (refused.status, refused.kind) == (415, kind)
    assert refused.reason.startswith(reason)


def test_media_headers() -> None:
    etag = media_etag(PNG)
    assert etag.startswith('"') and etag == media_etag(PNG) != media_etag(GIF)
    headers = media_headers(etag)
    assert headers == {
        "ETag": etag,
        "Cache-Control": "public, max-age=604800, immutable",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": MEDIA_CSP,
    }
    assert (
        media_headers(etag, private=True)["Cache-Control"] == "private, max-age=604800, immutable"
    )
    assert "sandbox" in MEDIA_CSP and "default-src 'none'" in MEDIA_CSP


def test_the_page_allows_images_from_self_only_with_the_proxy() -> None:
    assert page_security_headers(False) == SECURITY_HEADERS
    assert "img-src 'self' https: http:" in CONTENT_SECURITY_POLICY
    proxied_headers = page_security_headers(True)
    assert proxied_headers["Content-Security-Policy"] == PROXIED_CONTENT_SECURITY_POLICY
    directives = [d.strip() for d in PROXIED_CONTENT_SECURITY_POLICY.split(";")]
    assert "img-src 'self'" in directives
    assert {d for d in directives if d.startswith("img-src")} == {"img-src 'self'"}
    assert set(directives) - {"img-src 'self'"} == {
        d.strip() for d in CONTENT_SECURITY_POLICY.split(";") if not d.strip().startswith("img-src")
    }
    assert {k: v for k, v in proxied_headers.items() if k != "Content-Security-Policy"} == {
        k: v for k, v in SECURITY_HEADERS.items() if k != "Content-Security-Policy"
    }


A, B = "https://i.example/a.png", "https://i.example/b.png"
CDN1, CDN2 = "https://c.example/w_100,h_100/a.jpg", "https://c.example/w_200,h_200/a.jpg"


@pytest.mark.parametrize(
    ("srcset", "urls", "rewritten"),
    [
        (f"{A} 1x, {B} 2x", [A, B], "[1] 1x, [2] 2x"),
        (f"{CDN1} 100w,{CDN2} 200w", [CDN1, CDN2], "[1] 100w, [2] 200w"),  # commas in URLs
        (f"{A},, {B}", [A, B], "[1], [2]"),  # trailing commas end a candidate
        (f"  {A} \t 1.5x  ", [A], "[1] 1.5x"),
        (" , ", [], ""),
    ],
)
def test_srcset_candidates(srcset: str, urls: list[str], rewritten: str) -> None:
    seen: list[str] = []

    def change(url: str) -> str:
        seen.append(url)
        return f"[{len(seen)}]"

    out = rewrite_html(f'<img srcset="{srcset}">', change)
    assert seen == urls
    assert out == (f'<img srcset="{rewritten}">' if urls else f'<img srcset="{srcset}">')
