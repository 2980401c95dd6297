"""#18's browser acceptance in one flow: a private server with the media proxy on; the login
form, then the live page whose images come from the server's ``/media/`` (with the login's
cookie), and request interception showing no request to any other host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from .conftest import FeedstreamServer, SameHostOnly
from .test_media_proxy import image_site

pytestmark = pytest.mark.browser

READ_TOKEN = "browser-read-token-media-0123"


@pytest.fixture
def private_proxied(browser: Any, tmp_path: Path) -> Iterator[tuple[FeedstreamServer, str]]:
    with image_site() as (site, _requests):
        server = FeedstreamServer(tmp_path)
        text = server.config.read_text(encoding="utf-8")
        settings = (
            f'[server]\nread_token = "{READ_TOKEN}"\nproxy_media = true\n'
            "media_allow_private = true  # the image site is on 127.0.0.1\n"
        )
        server.config.write_text(text.replace("[server]\n", settings, 1), encoding="utf-8")
        server.start()
        try:
            yield server, site
        finally:
            server.stop()


def test_login_then_proxied_images_and_no_third_party_request(
    private_proxied: tuple[FeedstreamServer, str], page: Page
) -> None:
    server, site = private_proxied
    recorder = SameHostOnly(urlsplit(server.url).netloc)
    page.context.route("**/*", recorder)
    page.goto(f"{server.url}/?pace=0.3")
    expect(page).to_have_url(f"{server.url}/login")
    page.get_by_label("Access token").fill(READ_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server.url}/")
    expect(page.locator("#status")).to_have_attribute("data-state", "live")

    server.push(
        "sport",
        {"title": "red picture", "url": "https://example.org/red", "image": f"{site}/red.png"},
    )
    thumb = page.locator("#entries > li.entry img.thumb")
    expect(thumb).to_have_count(1)
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.thumb')]"
        ".every((i) => i.complete && i.naturalWidth === 24)"
    )  # loaded: /media/ answered the browser's cookie
    src = thumb.get_attribute("src")
    assert src is not None and src.startswith(f"{server.url}/media/"), src
    assert recorder.requested and recorder.elsewhere() == []
    assert any(urlsplit(url).path.startswith("/media/") for url in recorder.requested)
    assert page.evaluate("window.__csp") == [] and page.evaluate("window.__errors") == []
