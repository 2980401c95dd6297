"""A private server in a real browser: the page sends you to the login form, a wrong token is
shown as such, the right one leads to the live page, and signing out ends the session."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .conftest import FeedstreamServer
from .test_page import static_site

pytestmark = pytest.mark.browser

READ_TOKEN = "browser-read-token-0123"


@pytest.fixture
def private_server(browser: Any, tmp_path: Path) -> Iterator[FeedstreamServer]:
    server = FeedstreamServer(tmp_path)
    text = server.config.read_text(encoding="utf-8")
    server.config.write_text(
        text.replace("[server]\n", f'[server]\nread_token = "{READ_TOKEN}"\n', 1), encoding="utf-8"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_login_then_the_live_page(private_server: FeedstreamServer, page: Page) -> None:
    server = private_server
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # The page sends a browser without a session to the form.
    page.goto(f"{server.url}/?pace=0.3")
    expect(page).to_have_url(f"{server.url}/login")
    expect(page.get_by_label("Access token")).to_be_focused()
    assert page.evaluate("document.scripts.length") == 0

    # A wrong token: the form again, with the reason, and no cookie.
    page.get_by_label("Access token").fill("not-the-read-token")
    with page.expect_navigation() as wrong:
        page.get_by_role("button", name="Sign in").click()
    response = wrong.value
    assert response is not None and response.status == 401
    expect(page).to_have_url(f"{server.url}/login")
    expect(page.get_by_role("alert")).to_have_text("wrong token")
    assert page.context.cookies() == []

    # The right one: the live page, reading with the session cookie.
    page.get_by_label("Access token").fill(READ_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server.url}/")
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    [cookie] = page.context.cookies()
    assert cookie["name"] == "feedstream_session" and READ_TOKEN not in cookie["value"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it

    server.push("news", {"title": "private arrival", "url": "https://example.org/p"})
    page.wait_for_function(
        "() => window.__inserted.some((r) => r.title === 'private arrival')", timeout=10_000
    )
    expect(page.locator("#entries > li.entry .title").first).to_have_text("private arrival")
    # The feed chips come from /api/feeds, read with the cookie too.
    expect(page.locator("#chips")).to_contain_text("World News")
    assert page.evaluate("window.__csp") == []
    assert errors == []

    # Signing out from the login page ends the session.
    page.goto(f"{server.url}/login")
    expect(page.get_by_text("You are signed in.")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{server.url}/login")
    assert page.context.cookies() == []
    page.goto(f"{server.url}/")
    expect(page).to_have_url(f"{server.url}/login")


def test_the_login_page_follows_its_policy(private_server: FeedstreamServer, page: Page) -> None:
    response = page.goto(f"{private_server.url}/login")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert re.search(r"form-action 'self'", csp) and "script-src" not in csp
    expect(page.locator(".card")).to_be_visible()
    # Styled by login.css (served without a session), with no policy violation.
    color = page.evaluate("getComputedStyle(document.querySelector('button')).backgroundColor")
    assert color not in ("", "rgba(0, 0, 0, 0)")
    assert page.evaluate("window.__csp") == []


def test_a_lost_session_takes_the_open_page_back_to_the_form(
    private_server: FeedstreamServer, page: Page
) -> None:
    server = private_server
    page.goto(f"{server.url}/login")
    page.get_by_label("Access token").fill(READ_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    page.context.clear_cookies()  # as if the session expired or the token changed
    # The parked long-poll was let in before; the next one is refused (401), and the page
    # loads itself again, which the server answers with the form.
    server.push("news", {"title": "wakes the long-poll"})
    expect(page).to_have_url(f"{server.url}/login")


EMBED_WITH_TOKEN = """<!doctype html>
<meta charset="utf-8"><title>embed</title>
<script type="module">
  import { feedStream } from "%(server)s/static/feedstream.js";
  window.__got = [];
  window.__status = [];
  window.__rejected = [];
  const common = {
    url: "%(server)s",
    timeout: 5,
    onStatus: (status) => window.__status.push(status),
  };
  window.__stream = feedStream({
    ...common,
    token: "%(token)s",
    onEntries: (entries) => window.__got.push(...entries.map((e) => e.title)),
  });
  feedStream({ ...common, onRejected: (info) => window.__rejected.push(info) });
</script>
"""


def test_the_client_module_sends_the_token_from_another_origin(
    private_server: FeedstreamServer, page: Page
) -> None:
    server = private_server
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    html = EMBED_WITH_TOKEN % {"server": server.url, "token": READ_TOKEN}
    with static_site(html) as origin:
        page.goto(origin)
        page.wait_for_function("() => window.__status.includes('live')")
        page.wait_for_function("() => window.__rejected.length === 1")
        server.push("sport", {"title": "embedded private entry"})
        page.wait_for_function("() => window.__got.includes('embedded private entry')")
        [rejected] = page.evaluate("window.__rejected")
        # Without the token: refused once, and never asked again.
        assert rejected["status"] == 401 and "missing credentials" in rejected["error"]
        assert sorted(page.evaluate("window.__status")) == ["live", "rejected"]
        page.evaluate("window.__stream.stop()")
    assert errors == []
