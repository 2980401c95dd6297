"""The live page with ``proxy_media = true``: entries' images come from the feedstream server's
``/media/`` paths, the page's CSP allows images from itself only, and request interception
shows the browser asking no host but the feedstream server (the image site, another port on
127.0.0.1, is reached by the server alone)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.helpers import QuietHandler, ThreadedServer

from .conftest import FeedstreamServer, PageFactory, SameHostOnly
from .test_icons import png

pytestmark = pytest.mark.browser


@contextlib.contextmanager
def image_site() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A site with two PNGs on loopback; yields its base URL and its requests (path, agent)."""
    images = {"/red.png": png(220, 30, 30, size=24), "/blue.png": png(30, 30, 220, size=24)}
    requests: list[tuple[str, str]] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            requests.append((self.path, self.headers.get("User-Agent", "")))
            body = images.get(self.path, b"not found")
            self.send_response(200 if self.path in images else 404)
            self.send_header("Content-Type", "application/octet-stream")  # the bytes decide
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    site = ThreadedServer(Handler)
    try:
        yield site.address(), requests
    finally:
        site.close()


@pytest.fixture
def proxied(browser: Any, tmp_path: Path) -> Iterator[tuple[FeedstreamServer, str, list[Any]]]:
    with image_site() as (site, requests):
        server = FeedstreamServer(tmp_path)
        text = server.config.read_text(encoding="utf-8")
        settings = (
            "[server]\nproxy_media = true\nmedia_allow_private = true  # the site is on 127.0.0.1\n"
        )
        server.config.write_text(text.replace("[server]\n", settings, 1), encoding="utf-8")
        server.start()
        try:
            yield server, site, requests
        finally:
            server.stop()


def test_the_page_shows_images_from_the_proxy_only(
    proxied: tuple[FeedstreamServer, str, list[tuple[str, str]]], open_page: PageFactory
) -> None:
    server, site, site_requests = proxied
    recorder = SameHostOnly(urlsplit(server.url).netloc)
    page = open_page(server, "pace=0.3", setup=lambda context: context.route("**/*", recorder))
    csp = open_page.response.headers["content-security-policy"]
    assert "img-src 'self'" in {d.strip() for d in csp.split(";")}, csp

    server.push(
        "sport",
        {
            "title": "red picture",
            "url": "https://example.org/red",
            "image": f"{site}/red.png",
            "content_html": f'<p><img src="{site}/blue.png"></p>',
        },
        {"title": "blue picture", "url": "https://example.org/blue", "image": f"{site}/blue.png"},
    )
    entries = page.locator("#entries > li.entry")
    thumbs = entries.locator("img.thumb")
    expect(thumbs).to_have_count(2)
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.thumb')]"
        ".every((i) => i.complete && i.naturalWidth === 24)"
    )
    sources = {
        entry.locator(".title").inner_text(): entry.locator("img.thumb").get_attribute("src")
        for entry in entries.all()
    }
    assert set(sources) == {"red picture", "blue picture"}
    for src in sources.values():
        assert src is not None and src.startswith(f"{server.url}/media/"), sources
    assert sources["red picture"] != sources["blue picture"]

    # The API says where each image came from.
    answer = httpx.get(f"{server.url}/api/entries", params={"timeout": "0"}, timeout=10).json()
    by_title = {e["title"]: e for e in answer["entries"]}
    assert by_title["red picture"]["image_source"] == f"{site}/red.png"
    assert f"{server.url}{by_title['red picture']['image']}" == sources["red picture"]

    assert recorder.requested and recorder.elsewhere() == []
    assert sum(urlsplit(url).path.startswith("/media/") for url in recorder.requested) == 2
    # The image site saw the feedstream server only, once per image.
    assert sorted(path for path, _ in site_requests) == ["/blue.png", "/red.png"]
    assert all(agent.startswith("feedstream/") for _, agent in site_requests)
    assert page.evaluate("window.__csp") == [] and page.evaluate("window.__errors") == []
