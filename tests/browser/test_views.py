"""The page with rules and streams: highlighted entries, notifications, search, stream chips,
folded duplicates, shortcuts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from .conftest import FeedstreamServer, PageFactory, running_server
from .test_page import wait_inserted

pytestmark = pytest.mark.browser

VIEWS = """
[[rules]]
id = "security"
query = "cve OR vulnerability"
action = "highlight"

[[streams]]
id = "goals"
title = "Goals"
query = "goal"
feeds = ["sport"]
"""

#: Records every Notification the page constructs (and every permission request) instead of
#: showing it: headless Chromium has no desktop to show it on.
NOTIFICATION_SPY = """
(() => {
  window.__notes = [];
  window.__permissionRequests = 0;
  const Real = window.Notification;
  class Spy {
    constructor(title, options = {}) {
      this.title = title;
      this.body = options.body;
      this.tag = options.tag;
      this.onclick = null;
      window.__notes.push(this);
    }
    close() { this.closed = true; }
    static get permission() { return Real ? Real.permission : "denied"; }
    static requestPermission(...args) {
      window.__permissionRequests += 1;
      return Real.requestPermission(...args);
    }
  }
  window.Notification = Spy;
})();
"""

HIDE = """() => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
  document.dispatchEvent(new Event("visibilitychange"));
}"""

SHOW = """() => {
  delete document.visibilityState;
  delete document.hidden;
  document.dispatchEvent(new Event("visibilitychange"));
}"""


@pytest.fixture(scope="module")
def views_server(
    browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FeedstreamServer]:
    with running_server(tmp_path_factory.mktemp("views"), extra=VIEWS) as server:
        yield server


def notes(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate(
        "window.__notes.map((n) => ({title: n.title, body: n.body, tag: n.tag}))"
    )
    return found


def test_a_highlighted_entry_is_marked_and_announced(
    views_server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    page = open_page(views_server, "pace=0.3")
    views_server.push("news", {"title": f"{tag} plain news"})
    views_server.push("news", {"title": f"{tag} a CVE in OpenSSL", "summary": "patch now"})
    wait_inserted(page, tag, 2)
    marked = page.locator("#entries > li.entry", has_text=f"{tag} a CVE")
    plain = page.locator("#entries > li.entry", has_text=f"{tag} plain")
    expect(marked).to_have_class(re.compile(r"\bhighlighted\b"))
    expect(marked.locator(".flag")).to_have_text("★Highlighted")  # a label, not colour alone
    expect(marked.locator(".flag-icon")).to_have_attribute("aria-hidden", "true")
    expect(plain).not_to_have_class(re.compile(r"\bhighlighted\b"))
    expect(plain.locator(".flag")).to_have_count(0)
    expect(page.locator("#announcer")).to_have_text(
        f"Highlighted: {tag} a CVE in OpenSSL (World News)"
    )
    expect(page.locator("#announcer")).to_have_attribute("aria-live", "polite")
    for field in (".title", ".summary", ".feed"):
        expect(marked.locator(field)).to_have_attribute("dir", "auto")


def test_notifications_need_a_click_and_a_hidden_tab(
    views_server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    def setup(context: Any) -> None:
        context.grant_permissions(["notifications"], origin=views_server.url)
        context.add_init_script(NOTIFICATION_SPY)

    page = open_page(views_server, "pace=0.3", setup=setup)
    notify = page.locator("#notify")
    expect(notify).to_have_attribute("aria-pressed", "false")

    # Granted, hidden, highlighted: still nothing, because nobody clicked "Notify".
    page.evaluate(HIDE)
    views_server.push("news", {"title": f"{tag} CVE before the click"})
    wait_inserted(page, f"{tag} CVE before", 1)
    page.wait_for_timeout(2000)  # longer than the grouping window
    assert notes(page) == [] and page.evaluate("window.__permissionRequests") == 0

    page.evaluate(SHOW)
    notify.click()
    expect(notify).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("localStorage.getItem('feedstream.notify')") == "on"

    # Visible: no notification.
    views_server.push("news", {"title": f"{tag} CVE while visible"})
    wait_inserted(page, f"{tag} CVE while", 1)
    page.wait_for_timeout(2000)
    assert notes(page) == []

    # Hidden: one for the highlighted entry, none for the plain one.
    page.evaluate(HIDE)
    views_server.push("news", {"title": f"{tag} plain while hidden"})
    views_server.push("news", {"title": f"{tag} vulnerability while hidden", "summary": "bad"})
    page.wait_for_function("() => window.__notes.length >= 1")
    page.wait_for_timeout(500)
    [note] = notes(page)
    assert note["title"] == f"{tag} vulnerability while hidden"
    assert note["body"] == "World News — bad"

    # Clicking it focuses the page at that entry.
    page.evaluate(SHOW)
    page.evaluate("window.__notes[0].onclick({ preventDefault() {} })")
    focused = page.evaluate("document.activeElement?.dataset?.id ?? null")
    shown = page.locator("#entries > li.entry", has_text=f"{tag} vulnerability while hidden")
    assert focused == shown.get_attribute("data-id")
    assert page.evaluate("window.__notes[0].closed") is True

    # A burst is one summary notification.
    page.evaluate(HIDE)
    views_server.push("news", *({"title": f"{tag} burst CVE {i}"} for i in range(6)))
    page.wait_for_function("() => window.__notes.length >= 2")
    page.wait_for_timeout(500)
    summary = notes(page)[1:]
    assert [n["title"] for n in summary] == ["6 new highlighted entries"]
    lines = summary[0]["body"].split("\n")
    assert len(lines) == 4 and all(line.startswith(f"{tag} burst CVE ") for line in lines[:3])
    assert lines[3] == "… and 3 more"

    # The choice persists: a reloaded page notifies without another click.
    page.evaluate(SHOW)
    page.reload()
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    expect(page.locator("#notify")).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("window.__permissionRequests") == 0


def test_permission_is_asked_only_on_click(
    views_server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    page = open_page(views_server, "pace=0.3", setup=lambda c: c.add_init_script(NOTIFICATION_SPY))
    page.evaluate(HIDE)
    views_server.push("news", {"title": f"{tag} CVE unasked"})
    wait_inserted(page, tag, 1)
    page.wait_for_timeout(300)
    assert page.evaluate("window.__permissionRequests") == 0
    page.evaluate(SHOW)
    page.locator("#notify").click()
    page.wait_for_function("() => window.__permissionRequests === 1")
    if page.evaluate("Notification.permission") != "granted":
        expect(page.locator("#notify")).to_have_attribute("aria-pressed", "false")
        expect(page.locator("#notice")).to_contain_text("Notifications are blocked")
    assert notes(page) == []


def test_search_narrows_the_stream_and_a_bad_query_says_where(
    views_server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    page = open_page(views_server, "pace=0.3")
    views_server.push("news", {"title": f"{tag} alpha one"}, {"title": f"{tag} beta one"})
    wait_inserted(page, tag, 2)

    page.keyboard.press("/")
    search = page.locator("#search")
    expect(search).to_be_focused()
    search.fill(f"{tag} alpha")
    search.press("Enter")
    expect(page).to_have_url(re.compile(rf"[?&]q={tag}\+alpha(&|$)"))
    entries = page.locator("#entries > li.entry")
    expect(entries.filter(has_text=f"{tag} alpha one")).to_have_count(1)
    expect(entries.filter(has_text=f"{tag} beta one")).to_have_count(0)
    views_server.push("news", {"title": f"{tag} beta two"}, {"title": f"{tag} alpha two"})
    expect(entries.filter(has_text=f"{tag} alpha two")).to_have_count(1)
    page.wait_for_timeout(600)
    assert entries.filter(has_text=f"{tag} beta").count() == 0

    search.fill("(alpha")
    search.press("Enter")
    error = page.locator("#search-error")
    expect(error).to_have_text("Search: query: unclosed '(' at 0")
    expect(search).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#status")).to_have_attribute("data-state", "rejected")

    search.fill("")  # cleared: everything again
    expect(error).to_be_hidden()
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    expect(page).not_to_have_url(re.compile(r"[?&]q="))

    # Loaded with ?q=, the box shows it.
    other = open_page(views_server, f"pace=0.3&q={tag}+beta")
    expect(other.locator("#search")).to_have_value(f"{tag} beta")
    expect(other.locator("#entries > li.entry").filter(has_text=f"{tag} beta two")).to_have_count(1)
    expect(other.locator("#entries > li.entry").filter(has_text=f"{tag} alpha")).to_have_count(0)


def test_a_stream_chip_selects_the_stream(
    views_server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    page = open_page(views_server, "pace=0.3")
    chip = page.get_by_role("button", name="Goals")
    expect(chip).to_have_attribute("aria-pressed", "false")
    chip.click()
    expect(chip).to_have_attribute("aria-pressed", "true")
    expect(page).to_have_url(re.compile(r"[?&]stream=goals(&|$)"))
    views_server.push("news", {"title": f"{tag} goal in the news feed"})
    views_server.push("sport", {"title": f"{tag} no score"}, {"title": f"{tag} a late goal"})
    entries = page.locator("#entries > li.entry")
    expect(entries.filter(has_text=f"{tag} a late goal")).to_have_count(1)
    page.wait_for_timeout(600)
    assert entries.filter(has_text=tag).count() == 1
    chip.click()
    expect(chip).to_have_attribute("aria-pressed", "false")
    expect(entries.filter(has_text=f"{tag} no score")).to_have_count(1)


def test_a_folded_duplicate_does_not_appear(
    views_server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    page = open_page(views_server, "pace=0.3")
    url = f"https://stories.example/{tag}?utm_source=feed"
    views_server.push("news", {"title": f"{tag} the story", "url": url})
    views_server.push("sport", {"title": f"{tag} the same story", "url": f"{url}&fbclid=x"})
    views_server.push("sport", {"title": f"{tag} after it"})
    records = wait_inserted(page, tag, 2)
    page.wait_for_timeout(900)  # three paces: a duplicate would have had its turn
    titles = [r["title"] for r in page.evaluate("window.__inserted") if r["title"].startswith(tag)]
    assert titles == [f"{tag} the story", f"{tag} after it"], records
    every = httpx.get(
        f"{views_server.url}/api/entries", params={"duplicates": "include", "limit": 500}
    ).json()["entries"]
    folded = [e for e in every if e["title"] == f"{tag} the same story"]
    assert len(folded) == 1 and folded[0]["duplicate_of"].startswith("news:")


def test_question_mark_lists_the_shortcuts(
    views_server: FeedstreamServer, open_page: PageFactory
) -> None:
    page = open_page(views_server, "pace=0.3")
    dialog = page.locator("#shortcuts")
    expect(dialog).to_be_hidden()
    page.keyboard.press("?")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Search")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Keyboard shortcuts").click()
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    report = page.evaluate("({ csp: window.__csp, errors: window.__errors })")
    assert report == {"csp": [], "errors": []}
