"""The page in a real browser: pacing, pausing, reconnecting, safety, filters, CSP, layout."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support.helpers import QuietHandler, ThreadedServer

from .conftest import XSS, FeedstreamServer, PageFactory

pytestmark = pytest.mark.browser


def inserted(page: Page, prefix: str) -> list[dict[str, Any]]:
    """Entries added to the list so far whose title starts with *prefix*, in insertion order."""
    records: list[dict[str, Any]] = page.evaluate("window.__inserted")
    return [r for r in records if r["title"].startswith(prefix)]


def wait_inserted(page: Page, prefix: str, count: int) -> list[dict[str, Any]]:
    page.wait_for_function(
        "([p, n]) => window.__inserted.filter((r) => r.title.startsWith(p)).length >= n",
        arg=[prefix, count],
    )
    return inserted(page, prefix)


def shown_titles(page: Page) -> list[str]:
    """Titles in the list, top (newest) to bottom."""
    return page.locator("#entries > li.entry .title").all_text_contents()


def collapse(text: str) -> str:
    """Whitespace as the page shows it."""
    return " ".join(text.split())


def stream_center(page: Page) -> tuple[float, float]:
    box = page.locator("#stream").bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def assert_still(page: Page, prefix: str, before: int, seconds: float) -> None:
    """Nothing with *prefix* enters the list for *seconds* (several paces), nothing animates."""
    page.wait_for_timeout(seconds * 1000)
    assert len(inserted(page, prefix)) == before
    running = page.evaluate(
        "document.getAnimations().filter((a) => a.playState === 'running').length"
    )
    assert running == 0


def test_entries_enter_in_arrival_order_at_the_pace(
    server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    page = open_page(server, "pace=0.5")
    waiting = page.locator("#waiting")
    for i in range(4):
        server.push("news", {"title": f"{tag} arrival {i}", "url": f"https://example.org/{i}"})
    expect(waiting).to_be_visible()
    expect(waiting).to_have_text(re.compile(r"^[1-3] waiting$"))

    records = wait_inserted(page, tag, 4)
    assert [r["title"] for r in records] == [f"{tag} arrival {i}" for i in range(4)]
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(records)]
    assert all(400 <= gap <= 1500 for gap in gaps), gaps
    expect(waiting).to_be_hidden()
    top = [t for t in shown_titles(page) if t.startswith(tag)]
    assert top == [f"{tag} arrival {i}" for i in reversed(range(4))]


def test_a_long_queue_speeds_up_gently(
    server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    # interval = max(min(pace, 0.25), pace / (1 + max(0, waiting - 10) / 20)): with pace 2 s
    # and ~58 waiting, entries enter about every 0.6 s instead of every 2 s.
    page = open_page(server, "pace=2")
    server.push("news", *({"title": f"{tag} queued {i:02}"} for i in range(60)))
    expect(page.locator("#waiting")).to_have_text(re.compile(r"^5\d waiting$"))
    records = wait_inserted(page, tag, 4)
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(records[:4])]
    assert all(450 <= gap <= 1500 for gap in gaps), gaps  # the pace alone: 2000


def test_hovering_the_list_stops_everything(
    server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    page = open_page(server, "pace=0.3")
    waiting, paused = page.locator("#waiting"), page.locator("#paused")
    server.push("news", {"title": f"{tag} before"})
    wait_inserted(page, tag, 1)

    page.mouse.move(*stream_center(page))
    expect(paused).to_be_visible()
    for i in range(1, 4):
        server.push("news", {"title": f"{tag} during {i}"})
        expect(waiting).to_have_text(f"{i} waiting")
    assert_still(page, tag, 1, seconds=1.0)  # more than 3 paces
    expect(waiting).to_have_text("3 waiting")

    box = page.locator(".brand").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 5, box["y"] + 5)  # off the list
    expect(paused).to_be_hidden()
    records = wait_inserted(page, tag, 4)
    assert [r["title"] for r in records[1:]] == [f"{tag} during {i}" for i in range(1, 4)]
    expect(waiting).to_be_hidden()


def test_keyboard_focus_space_and_the_pause_button(
    server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    page = open_page(server, "pace=0.3")
    waiting, paused = page.locator("#waiting"), page.locator("#paused")
    button = page.get_by_role("button", name=re.compile("^(Pause|Resume)$"))

    # Keyboard focus on the list pauses it.
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement?.id") == "stream":
            break
    else:
        pytest.fail("Tab never reached the list")
    expect(paused).to_have_text("Paused while focused")
    server.push("news", {"title": f"{tag} k1"})
    expect(waiting).to_have_text("1 waiting")
    assert_still(page, tag, 0, seconds=0.8)

    # Space toggles the pause on; moving focus away keeps it paused.
    page.keyboard.press("Space")
    expect(button).to_have_text("Resume")
    brand = page.locator(".brand").bounding_box()
    assert brand is not None
    page.mouse.click(brand["x"] + 5, brand["y"] + 5)  # focus leaves the list, pointer not on it
    expect(paused).to_have_text("Paused")
    assert_still(page, tag, 0, seconds=0.8)

    # Space again resumes.
    page.keyboard.press("Space")
    expect(button).to_have_text("Pause")
    expect(paused).to_be_hidden()
    wait_inserted(page, tag, 1)

    # The visible button: click pauses, click resumes; Space on the focused button toggles once.
    button.click()
    expect(button).to_have_text("Resume")
    server.push("news", {"title": f"{tag} k2"})
    expect(waiting).to_have_text("1 waiting")
    assert_still(page, tag, 1, seconds=0.8)
    button.click()
    expect(button).to_have_text("Pause")
    wait_inserted(page, tag, 2)

    button.focus()
    page.keyboard.press("Space")
    expect(button).to_have_text("Resume")
    server.push("news", {"title": f"{tag} k3"})
    expect(waiting).to_have_text("1 waiting")
    assert_still(page, tag, 2, seconds=0.8)
    page.keyboard.press("Space")
    expect(button).to_have_text("Pause")
    records = wait_inserted(page, tag, 3)
    assert [r["title"] for r in records] == [f"{tag} k1", f"{tag} k2", f"{tag} k3"]


def test_reconnects_after_a_restart_without_duplicates_or_gaps(
    own_server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    server = own_server
    page = open_page(server, "pace=0.3")
    status = page.locator("#status")
    server.push("news", {"title": f"{tag} r1"})
    server.push("news", {"title": f"{tag} r2"})
    wait_inserted(page, tag, 2)

    server.stop()
    expect(status).to_have_attribute("data-state", "reconnecting")
    expect(status).to_have_text("Reconnecting…")
    server.start()  # same port, same data_dir
    server.push("news", {"title": f"{tag} r3"})  # most likely before the page is back
    expect(status).to_have_attribute("data-state", "live", timeout=20_000)
    expect(status).to_have_text("Live")
    server.push("sport", {"title": f"{tag} r4"})
    server.push("news", {"title": f"{tag} r5"})

    records = wait_inserted(page, tag, 5)
    page.wait_for_timeout(600)  # two more paces: anything duplicated would show by now
    records = inserted(page, tag)
    assert [r["title"] for r in records] == [f"{tag} r{i}" for i in range(1, 6)]
    titles = [t for t in shown_titles(page) if t.startswith(tag)]
    assert titles == [f"{tag} r{i}" for i in range(5, 0, -1)]
    expect(page.locator("#notice")).to_be_hidden()  # no reset: nothing was skipped


def test_entry_text_is_text_and_hostile_fields_run_nothing(
    server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    page = open_page(server, "pace=0.3")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    script = '<script>window.__pwned="script"</script>'
    img = "<img src=x onerror=\"window.__pwned='img';alert(1)\">"
    svg = "<svg onload=\"window.__pwned='svg'\"></svg>"
    payload = f"{script}{img}{svg}"

    server.push("news", {"title": f"{tag} Fish & Chips < 5 > 3", "url": "https://example.org/f"})
    server.push(
        "xss",
        {
            "title": f"{tag} {payload}",
            "summary": payload,
            "content_html": payload,
            "authors": [{"name": payload}],
            "url": "javascript:window.__pwned='href'",
            "image": "javascript:window.__pwned='image'",
            "tags": [payload, "javascript:alert(1)"],
        },
        {
            "title": f"{tag} attribute breakout",
            "summary": '"><img src=x onerror=alert(2)>',
            "url": " JaVaScRiPt:alert(3)",
            "image": "x\" onerror=\"window.__pwned='attr'",
            "authors": [{"name": '" onmouseover="alert(4)'}],
        },
        {"title": f"{tag} data url", "url": "data:text/html,<script>alert(5)</script>"},
        title=payload,
    )
    records = wait_inserted(page, tag, 4)
    assert len(records) == 4

    fish = page.locator("#entries .entry .title", has_text="Fish & Chips")
    expect(fish).to_have_text(f"{tag} Fish & Chips < 5 > 3")
    link = fish.locator("a")
    expect(link).to_have_attribute("href", "https://example.org/f")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")

    page.mouse.move(*stream_center(page))  # hover everything (onmouseover payloads)
    page.wait_for_timeout(300)
    report = page.evaluate(
        """() => {
          const all = [...document.querySelectorAll("*")];
          const onAttrs = all.flatMap((el) =>
            [...el.attributes].filter((a) => a.name.startsWith("on")).map((a) => a.name));
          const urls = all.flatMap((el) => ["href", "src", "action", "formaction", "xlink:href"]
            .map((name) => el.getAttribute(name)).filter((v) => v !== null));
          return {
            pwned: window.__pwned ?? null,
            scripts: [...document.scripts].map((s) => s.src),
            onAttrs,
            badUrls: urls.filter((u) => !/^(https?:|\\/)/i.test(u.trim())),
            frames: document.querySelectorAll("iframe, object, embed, svg [onload]").length,
            entryImages: [...document.querySelectorAll("#entries img")].map((i) => i.src),
            errors: window.__errors,
            csp: window.__csp,
          };
        }"""
    )
    assert report["pwned"] is None
    assert dialogs == []
    assert report["scripts"] == [f"{server.url}/static/{name}.js" for name in ("app", "search")]
    assert report["onAttrs"] == []
    assert report["badUrls"] == []
    assert report["frames"] == 0
    assert all(src.startswith(("http://", "https://")) for src in report["entryImages"])
    assert report["errors"] == []
    assert report["csp"] == []
    # Whatever text the server keeps of the hostile fields is shown exactly, as text.
    api = httpx.get(f"{server.url}/api/entries", params={"feeds": "xss", "limit": 500}).json()
    mine = [e for e in api["entries"] if (e["title"] or "").startswith(tag)]
    assert len(mine) == 3
    for entry in mine:
        shown = page.locator(f"#entries > li.entry[data-id={json.dumps(entry['id'])}]")
        expect(shown).to_have_count(1)
        expect(shown.locator(".title")).to_have_text(collapse(entry["title"]))
        expect(shown.locator(".feed")).to_have_text(collapse(entry["feed_title"] or "xss"))
        if entry["author"]:
            expect(shown.locator(".author")).to_have_text(collapse(entry["author"]))
        if entry["summary"] and collapse(entry["summary"]) != collapse(entry["title"]):
            expect(shown.locator(".summary")).to_have_text(collapse(entry["summary"]))
    expect(page.locator("#entries .entry .feed", has_text="<script>").first).to_have_text(XSS)
    for link in page.locator("#entries a").all():
        assert (link.get_attribute("href") or "").startswith(("http://", "https://"))
    expect(page.get_by_role("button", name=XSS)).to_be_visible()  # the chip, as text


HOSTILE = '<script>window.__pwned="script"</script><img src=x onerror="window.__pwned=1">'


def raw_entry(n: int, **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": f"raw:{n}",
        "cursor": f"raw-{n}",
        "feed": "news",
        "feed_title": HOSTILE,
        "title": f"raw {n} {HOSTILE}",
        "url": None,
        "author": HOSTILE,
        "published": None,
        "updated": None,
        "summary": f"summary {n} {HOSTILE}",
        "content_html": HOSTILE,
        "tags": [HOSTILE, "<b>bold</b>"],
        "enclosures": [{"url": "javascript:alert(1)", "type": "text/html"}],
        "image": None,
        "via": "push",
        "received": "2024-01-01T00:00:00Z",
    }
    entry.update(fields)
    return entry


def test_unsanitized_api_data_is_still_inert(
    server: FeedstreamServer, open_page: PageFactory
) -> None:
    # The server sanitizes, but the page must not depend on it: its first answer is replaced by
    # raw hostile entries, every field a payload, and every URL a bad one.
    bad_urls = [
        "javascript:window.__pwned='href'",
        " JaVaScRiPt:alert(1)",
        "java\tscript:alert(2)",
        "data:text/html,<script>alert(3)</script>",
        "vbscript:msgbox(4)",
        "//evil.example/x",
        "/relative",
        'x" onerror="window.__pwned=5',
    ]
    entries = [
        raw_entry(n, url=url, image=url, published=HOSTILE if n % 2 else "not a date")
        for n, url in enumerate(bad_urls)
    ]
    head = httpx.get(f"{server.url}/api/entries", params={"timeout": 0}).json()["cursor"]
    body = json.dumps({"cursor": head, "entries": entries, "reset": False})

    def setup(context: Any) -> None:
        def first_answer(route: Any) -> None:
            if "after=" in route.request.url:
                route.continue_()
            else:
                route.fulfill(status=200, content_type="application/json", body=body)

        context.route(lambda url: "/api/entries" in url, first_answer)

    page = open_page(server, "pace=0.3", setup=setup, viewport={"width": 1000, "height": 1600})
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    rows = page.locator("#entries > li.entry")
    expect(rows.filter(has_text="raw ")).to_have_count(len(bad_urls))
    page.mouse.move(*stream_center(page))
    page.wait_for_timeout(300)
    for n in range(len(bad_urls)):
        row = page.locator(f'#entries > li.entry[data-id="raw:{n}"]')
        expect(row.locator(".title")).to_have_text(f"raw {n} {HOSTILE}")
        expect(row.locator(".feed")).to_have_text(HOSTILE)
        expect(row.locator(".summary")).to_have_text(f"summary {n} {HOSTILE}")
        expect(row.locator(".title a")).to_have_count(0)
        expect(row.locator("img:not(.feed-icon)")).to_have_count(0)  # no thumbnail
        expect(row.locator("img.feed-icon")).to_have_attribute("src", "/api/feeds/news/icon")
        expect(row.locator(".tag").first).to_have_text(HOSTILE)
    report = page.evaluate(
        """() => ({
          pwned: window.__pwned ?? null,
          scripts: [...document.scripts].map((s) => s.src),
          onAttrs: [...document.querySelectorAll("*")].flatMap((el) =>
            [...el.attributes].filter((a) => a.name.startsWith("on")).map((a) => a.name)),
          links: [...document.querySelectorAll("#entries [href], #entries [src]:not(.feed-icon)")]
            .length,
          csp: window.__csp,
          errors: window.__errors,
        })"""
    )
    assert report == {
        "pwned": None,
        "scripts": [f"{server.url}/static/{name}.js" for name in ("app", "search")],
        "onAttrs": [],
        "links": 0,
        "csp": [],
        "errors": [],
    }
    assert dialogs == []


def test_filter_chips_show_only_the_chosen_feed(
    server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    page = open_page(server, "pace=0.3")
    server.push("news", {"title": f"{tag} news 0"})
    server.push("sport", {"title": f"{tag} sport 0"})
    wait_inserted(page, tag, 2)

    sport = page.get_by_role("button", name="Sport Daily")
    everything = page.get_by_role("button", name="All feeds")
    expect(everything).to_have_attribute("aria-pressed", "true")
    sport.click()
    expect(sport).to_have_attribute("aria-pressed", "true")
    expect(everything).to_have_attribute("aria-pressed", "false")
    expect(page).to_have_url(re.compile(r"[?&]feeds=sport(&|$)"))
    entries = page.locator("#entries > li.entry")
    expect(entries.filter(has_text=f"{tag} sport 0")).to_have_count(1)
    expect(entries.filter(has_text=f"{tag} news 0")).to_have_count(0)

    server.push("news", {"title": f"{tag} news 1"})
    server.push("sport", {"title": f"{tag} sport 1"})
    expect(entries.filter(has_text=f"{tag} sport 1")).to_have_count(1)
    page.wait_for_timeout(600)  # two paces: a news entry would have had its turn
    assert {e.get_attribute("data-feed") for e in entries.all()} == {"sport"}
    expect(page.locator("#waiting")).to_be_hidden()

    everything.click()
    expect(everything).to_have_attribute("aria-pressed", "true")
    expect(entries.filter(has_text=f"{tag} news 1")).to_have_count(1)
    expect(entries.filter(has_text=f"{tag} sport 1")).to_have_count(1)


def test_csp_header_and_a_clean_console(
    server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    tab = open_page(server, "pace=0.3")
    response = open_page.response
    assert response is not None and response.ok
    csp = response.headers.get("content-security-policy", "")
    directives = {d.strip() for d in csp.split(";") if d.strip()}
    for expected in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]:
        assert expected in directives, (expected, csp)

    server.push(
        "sport",
        {
            "title": f"{tag} with a picture",
            "summary": "A same-origin thumbnail exercises img-src.",
            "url": "https://example.org/p",
            "image": f"{server.url}/static/favicon.svg",
            "tags": ["one", "two"],
            "authors": [{"name": "A. Writer"}],
            "date_published": "2024-05-01T12:00:00Z",
        },
    )
    wait_inserted(tab, tag, 1)
    thumb = tab.locator("#entries .entry", has_text=tag).locator("img.thumb")
    expect(thumb).to_be_visible()
    tab.wait_for_function("() => [...document.images].every((i) => i.complete)")
    time = tab.locator("#entries .entry", has_text=tag).locator("time")
    expect(time).to_have_attribute("datetime", "2024-05-01T12:00:00.000Z")
    expect(time).to_have_attribute("title", re.compile("2024"))

    # Accessible names and roles.
    expect(tab.get_by_role("log", name="Entries")).to_have_attribute("aria-live", "polite")
    expect(tab.get_by_role("status").first).to_be_visible()
    expect(tab.get_by_role("button", name="Pause")).to_be_visible()
    expect(tab.get_by_role("combobox", name="Seconds between entries")).to_have_value("0.3")
    expect(tab.get_by_role("navigation", name="Filter by feed")).to_be_visible()
    expect(tab.get_by_role("main")).to_have_attribute("tabindex", "0")

    assert tab.evaluate("window.__csp") == []
    assert tab.evaluate("window.__errors") == []
    assert [
        line for line in open_page.console if not line.startswith(("log:", "debug:", "info:"))
    ] == []
    for asset, kind in [
        ("app.js", "javascript"),
        ("feedstream.js", "javascript"),
        ("app.css", "css"),
    ]:
        headers = tab.request.get(f"{server.url}/static/{asset}").headers
        assert kind in headers.get("content-type", ""), (asset, headers)


EMBED_PAGE = """<!doctype html>
<meta charset="utf-8"><title>embed</title>
<script type="module">
  import { feedStream } from "%(server)s/static/feedstream.js";
  window.__got = [];
  window.__status = [];
  window.__stream = feedStream({
    feeds: ["sport"],
    timeout: 5,
    onEntries: (entries, info) => window.__got.push(...entries.map((e) => e.title)),
    onStatus: (status) => window.__status.push(status),
  });
</script>
"""


@contextlib.contextmanager
def static_site(html: str) -> Iterator[str]:
    """Serve *html* at / from another loopback port: a second origin on this machine."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    site = ThreadedServer(Handler)
    try:
        yield site.address()
    finally:
        site.close()


def test_the_client_module_works_from_another_origin(
    server: FeedstreamServer, browser: Any, tag: str
) -> None:
    # A page of another origin imports the module and long-polls the API: both need CORS.
    context = browser.new_context()
    context.set_default_timeout(10_000)
    errors: list[str] = []
    try:
        with static_site(EMBED_PAGE % {"server": server.url}) as origin:
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(origin)
            page.wait_for_function("() => window.__status?.includes('live')")
            server.push("news", {"title": f"{tag} not for the embed"})
            server.push("sport", {"title": f"{tag} embed 1"}, {"title": f"{tag} embed 2"})
            page.wait_for_function(
                "(t) => window.__got.filter((x) => x.startsWith(t)).length >= 2", arg=tag
            )
            page.evaluate("window.__stream.stop()")
            server.push("sport", {"title": f"{tag} after stop"})
            page.wait_for_timeout(500)
            got = [t for t in page.evaluate("window.__got") if t.startswith(tag)]
            assert sorted(got) == [f"{tag} embed 1", f"{tag} embed 2"]
            assert page.evaluate("window.__status") == ["live"]
            assert errors == []
    finally:
        context.close()


def test_small_screen_dark_theme_and_reduced_motion(
    server: FeedstreamServer, open_page: PageFactory, tag: str
) -> None:
    page = open_page(
        server,
        "pace=0.3",
        viewport={"width": 360, "height": 740},
        color_scheme="dark",
        reduced_motion="reduce",
        has_touch=True,
        is_mobile=True,
    )
    long_word = "Supercalifragilisticexpialidocious" * 3
    server.push(
        "news",
        {"title": f"{tag} {long_word}", "summary": long_word * 4, "url": "https://example.org/l"},
        {"title": f"{tag} short", "image": f"{server.url}/static/favicon.svg", "tags": [long_word]},
    )
    wait_inserted(page, tag, 2)
    expect(page.locator("#waiting")).to_be_hidden()
    layout = page.evaluate(
        """() => ({
          scrollWidth: document.documentElement.scrollWidth,
          bodyScroll: document.body.scrollHeight - document.body.clientHeight,
          widest: Math.max(...[...document.querySelectorAll(".bar *, .card, .card *")]
            .map((el) => el.getBoundingClientRect().right)),
          background: getComputedStyle(document.body).backgroundColor,
          animations: document.getAnimations().length,
        })"""
    )
    assert layout["scrollWidth"] <= 360, layout
    assert layout["bodyScroll"] <= 0, layout
    assert layout["widest"] <= 360.5, layout
    rgb = [int(c) for c in re.findall(r"\d+", layout["background"])[:3]]
    assert sum(rgb) < 3 * 60, layout  # dark
    assert layout["animations"] == 0, layout  # reduced motion: entries appear without moving

    # A tap on the list toggles the pause on touch screens.
    page.locator("#stream").tap(position={"x": 180, "y": 300})
    expect(page.locator("#pause")).to_have_text("Resume")
    server.push("news", {"title": f"{tag} while tapped"})
    expect(page.locator("#waiting")).to_have_text("1 waiting")
    page.locator("#stream").tap(position={"x": 180, "y": 300})
    expect(page.locator("#pause")).to_have_text("Pause")
    wait_inserted(page, f"{tag} while tapped", 1)
