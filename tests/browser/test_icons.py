"""Categories and icons on the page: chips grouped by category with their icons, a category chip
filtering all its feeds, icons on entries, and no request from the page to any other host.

The feeds are polled from a small site on loopback (an Atom feed naming its icon, an RSS feed
whose site names one in ``<link rel="icon">``) and pushed to (which get generated icons).
"""

from __future__ import annotations

import contextlib
import re
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support.helpers import QuietHandler, ThreadedServer

from .conftest import TOKEN, FeedstreamServer, PageFactory, SameHostOnly, toml_string

pytestmark = pytest.mark.browser

ICON_TIMEOUT = 30.0  # seconds for the server to have found the icons


def png(red: int, green: int, blue: int, size: int = 16) -> bytes:
    """A valid *size* x *size* PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" + bytes((red, green, blue)) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


SVG_ICON = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="#2a7"/></svg>'


def site_routes(base: str) -> dict[str, tuple[str, bytes]]:
    atom = (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Atom Site</title>'
        "<id>urn:atom-site</id><icon>/atom-icon.png</icon>"
        "<entry><id>urn:atom-site:1</id><title>Atom entry</title>"
        "<updated>2024-05-01T10:00:00Z</updated></entry></feed>"
    )
    rss = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>RSS Site</title>'
        f"<link>{base}/site/</link><item><guid>rss-1</guid><title>RSS entry</title></item>"
        "</channel></rss>"
    )
    page = '<!doctype html><html><head><link rel="icon" href="/site-icon.svg"></head></html>'
    return {
        "/atom.xml": ("application/atom+xml", atom.encode()),
        "/atom-icon.png": ("image/png", png(200, 40, 40)),
        "/rss.xml": ("application/rss+xml", rss.encode()),
        "/site/": ("text/html; charset=utf-8", page.encode()),
        "/site-icon.svg": ("image/svg+xml", SVG_ICON),
    }


@contextlib.contextmanager
def feed_site() -> Iterator[str]:
    """The loopback site the server polls; yields its base URL."""
    routes: dict[str, tuple[str, bytes]] = {}

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            kind, body = routes.get(self.path, ("text/plain", b"not found"))
            self.send_response(200 if self.path in routes else 404)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    site = ThreadedServer(Handler)
    routes.update(site_routes(site.address()))
    try:
        yield site.address()
    finally:
        site.close()


@pytest.fixture
def categorized(browser: Any, tmp_path: Path) -> Iterator[FeedstreamServer]:
    """A server with feeds in two categories, two polled (with icons) and two pushed."""
    with feed_site() as site:
        server = FeedstreamServer(tmp_path, feeds=[])
        feeds = [
            ("atomfeed", "Atom Site", "News", f"{site}/atom.xml"),
            ("hooks", "Hooks", "News", None),
            ("rssfeed", "RSS Site", "Tech & Code", f"{site}/rss.xml"),
            ("plain", "Plain", None, None),
        ]
        lines = [server.config.read_text(encoding="utf-8")]
        for feed_id, title, category, url in feeds:
            lines += ["[[feeds]]", f"id = {toml_string(feed_id)}", f"title = {toml_string(title)}"]
            if category:
                lines.append(f"category = {toml_string(category)}")
            lines.append(
                f"url = {toml_string(url)}\ninterval = 3600"
                if url
                else f"token = {toml_string(TOKEN)}"
            )
            lines.append("")
        server.config.write_text("\n".join(lines), encoding="utf-8")
        server.start()
        try:
            wait_for_icons(server, {"atomfeed": "feed", "rssfeed": "page"})
            yield server
        finally:
            server.stop()


def wait_for_icons(server: FeedstreamServer, sources: dict[str, str]) -> None:
    deadline = time.monotonic() + ICON_TIMEOUT
    while True:
        feeds = {f["id"]: f for f in httpx.get(f"{server.url}/api/feeds", timeout=5).json()}
        found = {
            k: feeds[k]["icon"]["source"] for k in sources if feeds[k]["icon"]["status"] == "ok"
        }
        if found == sources:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"icons not found in time: {feeds}\n{server.log_tail()}")
        time.sleep(0.1)


def loaded_icons(page: Page, selector: str) -> list[dict[str, Any]]:
    page.wait_for_function(
        "(s) => [...document.querySelectorAll(s)].every((i) => i.complete && i.naturalWidth > 0)",
        arg=selector,
    )
    icons: list[dict[str, Any]] = page.eval_on_selector_all(
        selector,
        "(imgs) => imgs.map((i) => ({src: i.getAttribute('src'), width: i.naturalWidth}))",
    )
    return icons


def test_chips_grouped_by_category_with_icons(
    categorized: FeedstreamServer, open_page: PageFactory
) -> None:
    page = open_page(categorized, "pace=0.3")
    chips = page.locator("#chips")
    news = chips.get_by_role("group", name="News")
    tech = chips.get_by_role("group", name="Tech & Code")
    expect(news.locator("button.chip")).to_have_text(["News", "Atom Site", "Hooks"])
    expect(tech.locator("button.chip")).to_have_text(["Tech & Code", "RSS Site"])
    expect(chips.locator(":scope > button.chip")).to_have_text(["All feeds", "Plain"])

    # Every feed chip shows its icon, from this server: fetched (Atom icon, the RSS site's
    # <link rel="icon">) or generated (pushed feeds).
    icons = loaded_icons(page, "#chips img.chip-icon")
    assert sorted(icon["src"] for icon in icons) == [
        f"/api/feeds/{feed}/icon" for feed in ("atomfeed", "hooks", "plain", "rssfeed")
    ]
    assert {icon["width"] for icon in icons if "atomfeed" in icon["src"]} == {16}
    expect(chips.locator("button.chip.category img")).to_have_count(0)

    # A category chip filters all its feeds.
    categorized.push("hooks", {"title": "hooks in news"})
    categorized.push("plain", {"title": "plain, no category"})
    entries = page.locator("#entries > li.entry")
    expect(entries.filter(has_text="plain, no category")).to_have_count(1)
    category = news.get_by_role("button", name="News")
    category.click()
    expect(category).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("button", name="All feeds")).to_have_attribute("aria-pressed", "false")
    expect(page).to_have_url(re.compile(r"[?&]category=News(&|$)"))
    expect(entries.filter(has_text="hooks in news")).to_have_count(1)
    expect(entries.filter(has_text="Atom entry")).to_have_count(1)  # polled, in News too
    expect(entries.filter(has_text="plain, no category")).to_have_count(0)
    expect(entries.filter(has_text="RSS entry")).to_have_count(0)
    categorized.push("plain", {"title": "plain again"})
    categorized.push("hooks", {"title": "hooks again"})
    expect(entries.filter(has_text="hooks again")).to_have_count(1)
    page.wait_for_timeout(600)
    assert {e.get_attribute("data-feed") for e in entries.all()} == {"atomfeed", "hooks"}

    # Icons on entries, from this server too.
    entry_icons = loaded_icons(page, "#entries img.feed-icon")
    assert {icon["src"] for icon in entry_icons} == {
        "/api/feeds/hooks/icon",
        "/api/feeds/atomfeed/icon",
    }
    expect(entries.filter(has_text="hooks again").locator(".feed")).to_have_text("Hooks")

    # The page loaded with ?category= keeps it; "All feeds" clears it.
    again = open_page(categorized, "pace=0.3&category=Tech+%26+Code")
    expect(again.get_by_role("button", name="Tech & Code")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(again.locator("#entries > li.entry").filter(has_text="RSS entry")).to_have_count(1)
    again.get_by_role("button", name="All feeds").click()
    expect(again).not_to_have_url(re.compile("category="))
    expect(again.locator("#entries > li.entry").filter(has_text="plain again")).to_have_count(1)
    assert again.evaluate("window.__csp") == [] and again.evaluate("window.__errors") == []


def test_the_page_requests_nothing_from_another_host(
    categorized: FeedstreamServer, open_page: PageFactory
) -> None:
    recorder = SameHostOnly(urlsplit(categorized.url).netloc)
    page = open_page(categorized, "pace=0.3", setup=lambda context: context.route("**/*", recorder))
    categorized.push("hooks", {"title": "a pushed entry", "url": "https://example.org/post"})
    expect(page.locator("#entries > li.entry").filter(has_text="a pushed entry")).to_have_count(1)
    loaded_icons(page, "#chips img.chip-icon, #entries img.feed-icon")
    page.get_by_role("button", name="Tech & Code").click()
    expect(page.locator("#entries > li.entry").filter(has_text="RSS entry")).to_have_count(1)
    loaded_icons(page, "#entries img.feed-icon")
    page.get_by_role("button", name="Tech & Code").click()
    expect(page.locator("#entries > li.entry").filter(has_text="a pushed entry")).to_have_count(1)

    assert recorder.requested and recorder.elsewhere() == []
    paths = {urlsplit(url).path for url in recorder.requested}
    assert {
        f"/api/feeds/{feed}/icon" for feed in ("atomfeed", "rssfeed", "hooks", "plain")
    } <= paths
    assert "/api/entries" in paths and "/api/feeds" in paths
