"""The page's "search the history" view: finds stored entries, marks the matches (as text,
never as the feed's HTML), pages with "More results", and leaves the live stream alone."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from .conftest import FeedstreamServer, PageFactory
from .test_page import wait_inserted

pytestmark = pytest.mark.browser


def open_history(page: Page) -> None:
    page.locator("#history-toggle").click()
    expect(page.locator("#history")).to_be_visible()
    expect(page.locator("#history-q")).to_be_focused()


def search(page: Page, query: str) -> None:
    page.locator("#history-q").fill(query)
    page.locator("#history-q").press("Enter")


def test_the_history_view_finds_and_highlights_an_entry(
    server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    word = f"zebra{tag}"
    server.push(
        "news",
        {"title": f"{tag} Savanna report", "content_html": f"<p>A <b>{word}</b> crossed.</p>"},
        {"title": f"{tag} Unrelated", "content_html": "<p>nothing here</p>"},
    )
    page = open_page(server)
    open_history(page)
    search(page, word)
    results = page.locator("#history-results > li.history-result")
    expect(results).to_have_count(1)
    result = results.first
    expect(result.locator(".title")).to_have_text(f"{tag} Savanna report")
    mark = result.locator(".history-snippet mark")
    expect(mark).to_have_count(1)
    expect(mark).to_have_text(word)
    expect(result.locator(".history-snippet")).to_have_text(f"A {word} crossed.")
    expect(page.locator("#history-summary")).to_have_text(f"1 result for “{word}”")
    # A match in the title is marked there.
    search(page, f"savanna {word}")
    expect(results.first.locator(".title mark")).to_have_text("Savanna")
    assert page.evaluate("window.__csp") == [] and page.evaluate("window.__errors") == []


def test_feed_html_in_results_stays_text(
    server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    title = f"""5 < 6 & "quoted" 'x' {tag}hostile"""
    content = f"<p>{tag}hostile &lt;img src=x onerror=\"window.__pwned='search'\"&gt;</p>"
    server.push("news", {"title": title, "content_html": content})
    page = open_page(server)
    open_history(page)
    search(page, f"{tag}hostile")
    result = page.locator("#history-results > li.history-result").first
    expect(result.locator(".title")).to_have_text(title)
    expect(result.locator(".title mark")).to_have_text(f"{tag}hostile")
    search(page, f"content:{tag}hostile")  # the snippet of the content's text
    expect(result.locator(".title mark")).to_have_count(0)
    snippet = result.locator(".history-snippet")
    expect(snippet).to_have_text(f"{tag}hostile <img src=x onerror=\"window.__pwned='search'\">")
    assert result.locator("img").count() == 0 and result.locator("script").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_more_results_and_errors(
    server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    word = f"okapi{tag}"
    server.push(
        "sport",
        *({"title": f"{tag} n{i}", "content_html": f"<p>{word} {i}</p>"} for i in range(25)),
    )
    page = open_page(server)
    open_history(page)
    page.locator("#history-order").select_option("new")
    search(page, word)
    results = page.locator("#history-results > li.history-result")
    expect(results).to_have_count(20)
    # Newest first: the document listed n0 first (a feed's newest), so it was stored last.
    expect(results.first.locator(".title")).to_have_text(f"{tag} n0")
    more = page.locator("#history-more")
    expect(more).to_have_text("Older results")
    more.click()
    expect(results).to_have_count(25)
    expect(more).to_be_hidden()
    expect(results.last.locator(".title")).to_have_text(f"{tag} n24")
    # A query the server refuses says why, next to the box.
    search(page, "-alone")
    expect(page.locator("#history-error")).to_contain_text("a search needs a word or phrase")
    expect(page.locator("#history-q")).to_have_attribute("aria-invalid", "true")
    search(page, word)
    expect(page.locator("#history-error")).to_be_hidden()
    page.keyboard.press("Escape")
    expect(page.locator("#history")).to_be_hidden()
    expect(page.locator("#history-toggle")).to_have_attribute("aria-pressed", "false")


def test_the_live_stream_runs_while_the_history_is_open(
    server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    page = open_page(server, "pace=0.3")
    open_history(page)
    search(page, f"nothing{tag}")
    expect(page.locator("#history-summary")).to_contain_text("Nothing stored matches")
    server.push("news", {"title": f"{tag} live one"}, {"title": f"{tag} live two"})
    wait_inserted(page, tag, 2)  # entries keep arriving in the live list
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    expect(page.locator("#paused")).to_be_hidden()  # typing in the history does not pause it
    # Paused, it stays paused: the history view does not resume it.
    page.locator("#pause").click()
    expect(page.locator("#paused")).to_be_visible()
    search(page, f"{tag} live")
    expect(page.locator("#history-results > li.history-result")).to_have_count(2)
    expect(page.locator("#paused")).to_be_visible()
