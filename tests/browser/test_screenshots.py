"""Regenerates docs/screenshot-light.png and docs/screenshot-dark.png (1200x800).

Skipped unless FEEDSTREAM_SCREENSHOTS=1:

    FEEDSTREAM_SCREENSHOTS=1 .venv/bin/python -m pytest tests/browser/test_screenshots.py

FEEDSTREAM_SCREENSHOTS_DIR=<dir> writes there instead of docs/ and adds a 360 px wide view
(narrow-light.png, narrow-dark.png) for checking small screens. Thumbnails are SVGs made here
and served through Playwright's routing: nothing leaves the machine.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Route, expect

from .conftest import PAGE_PROBE, REPO, running_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.environ.get("FEEDSTREAM_SCREENSHOTS"),
        reason="set FEEDSTREAM_SCREENSHOTS=1 to regenerate docs/screenshot-*.png",
    ),
]

IMAGES = "https://images.feedstream.test/"

FEEDS = [
    {"id": "city", "title": "City Desk"},
    {"id": "science", "title": "Science Weekly"},
    {"id": "dev", "title": "Developer Notes"},
    {"id": "design", "title": "Design Journal"},
    {"id": "hooks", "title": "Webhooks"},
]


def demo(
    feed: str,
    minutes: int,
    title: str,
    summary: str = "",
    author: str = "",
    colours: str = "",
    tags: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "feed": feed,
        "minutes": minutes,
        "title": title,
        "summary": summary,
        "author": author,
        "colours": colours,
        "tags": list(tags),
    }


ENTRIES = [
    demo("science", 240, "Deep-sea survey maps 40 new hydrothermal vents",
         "A six-week expedition along the mid-ocean ridge charted vent fields that host "
         "previously unknown microbial communities.", "Ines Carvalho", "0f766e-164e63",
         ("oceans",)),
    demo("dev", 180, "Python 3.14 beta: what changes for async code",
         "Free-threaded builds, a faster asyncio event loop and better tracebacks for task groups.",
         "Sam Okafor", tags=("python", "release")),
    demo("city", 95, "Night buses return to the river line from Monday",
         "The service runs every 20 minutes between midnight and 5 am, with step-free access at "
         "all stops.", colours="b45309-7c2d12"),
    demo("design", 61, "Type that reads well on every screen",
         "Variable fonts, optical sizes and a careful line length do more for legibility than "
         "any single typeface choice.", "Mara Lind", "6d28d9-db2777", ("typography",)),
    demo("hooks", 42, "Deploy finished: api-gateway v2.18.0",
         "Rolled out to all regions in 7 minutes. No errors reported by the canary.", tags=("ci",)),
    demo("science", 25, "Why the aurora was visible so far south this week",
         "A fast coronal mass ejection met a favourable magnetic orientation, pushing the "
         "auroral oval towards mid-latitudes.", "Dr. Amir Haddad", "15803d-1e3a8a", ("space",)),
    demo("city", 12, "Library opens a 24-hour reading room",
         "The pilot runs through the exam season; entry with a library card after 10 pm.",
         "Jo Park"),
]  # fmt: skip
LATER = [
    demo("dev", 1, "SQLite 3.50 adds JSONB indexes",
         "Generated columns over JSONB can now be indexed directly, cutting lookup times for "
         "document-style tables.", "Lena Ortiz", "1d4ed8-0891b2", ("databases",)),
    demo("design", 0, "A calmer dashboard in five steps",
         "Fewer colours, stable layouts and motion only where it explains a change."),
    demo("science", 0, "Coral nurseries show record survival rates"),
]  # fmt: skip


def thumbnail(colours: str) -> bytes:
    a, b = colours.split("-")
    return f"""<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 224 152">
<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">
<stop offset="0" stop-color="#{a}"/><stop offset="1" stop-color="#{b}"/></linearGradient></defs>
<rect width="224" height="152" fill="url(#g)"/>
<circle cx="168" cy="44" r="26" fill="#fff" fill-opacity=".28"/>
<path d="M0 152 L70 82 L118 124 L150 96 L224 152 Z" fill="#fff" fill-opacity=".22"/>
</svg>""".encode()


def serve_image(route: Route) -> None:
    name = route.request.url.removeprefix(IMAGES).removesuffix(".svg")
    route.fulfill(status=200, content_type="image/svg+xml", body=thumbnail(name))


def item(now: datetime, spec: dict[str, Any], n: int) -> dict[str, Any]:
    published = now - timedelta(minutes=spec["minutes"])
    data: dict[str, Any] = {
        "id": f"demo-{n}",
        "title": spec["title"],
        "url": f"https://example.org/{n}",
        "date_published": published.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tags": spec["tags"],
    }
    if spec["summary"]:
        data["summary"] = spec["summary"]
    if spec["author"]:
        data["authors"] = [{"name": spec["author"]}]
    if spec["colours"]:
        data["image"] = f"{IMAGES}{spec['colours']}.svg"
    return data


def test_screenshots(browser: Any, tmp_path: Path) -> None:
    custom = os.environ.get("FEEDSTREAM_SCREENSHOTS_DIR")
    out = Path(custom) if custom else REPO / "docs"
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    views = [
        ("light", 1200, 800, "screenshot-light.png"),
        ("dark", 1200, 800, "screenshot-dark.png"),
    ]
    if custom:
        views += [("light", 360, 760, "narrow-light.png"), ("dark", 360, 760, "narrow-dark.png")]
    for number, (scheme, width, height, name) in enumerate(views):
        with running_server(tmp_path / str(number), FEEDS) as server:
            for n, spec in enumerate(ENTRIES):
                server.push(spec["feed"], item(now, spec, n))
            context = browser.new_context(
                viewport={"width": width, "height": height}, color_scheme=scheme
            )
            try:
                context.route(f"{IMAGES}**", serve_image)
                context.add_init_script(PAGE_PROBE)
                page = context.new_page()
                page.goto(f"{server.url}/?pace=10")
                expect(page.locator("#status")).to_have_attribute("data-state", "live")
                # One entry enters now, two wait their turn: the counter shows "2 waiting".
                for k, spec in enumerate(LATER):
                    server.push(spec["feed"], item(now, spec, 100 + k))
                expect(page.locator("#waiting")).to_have_text("2 waiting")
                page.wait_for_function("() => document.getAnimations().length === 0")
                page.wait_for_function("() => [...document.images].every((i) => i.complete)")
                page.mouse.move(0, height - 1)
                page.screenshot(path=str(out / name))
            finally:
                context.close()
