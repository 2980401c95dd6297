"""Browser tests: Debian's Chromium driven by Playwright (sync API) against the real server.

The server runs as a subprocess (``python -m feedstream serve --config <tmp toml> --port <free>``)
on 127.0.0.1; tests push entries to it with httpx and watch the page. Nothing leaves loopback.

Without /usr/bin/chromium (or the playwright package) the tests are skipped, unless the
environment variable CI is set, where that is a failure.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.helpers import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
TOKEN = "browser-test-token"
START_TIMEOUT = 20.0  # seconds for the server to answer /healthz
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL

#: Feeds of the shared server. "xss" has a hostile title to check the filter chips too.
XSS = '<img src=x onerror="window.__pwned=\'chip\'"><script>window.__pwned="chip"</script>'
FEEDS: list[dict[str, str]] = [
    {"id": "news", "title": "World News"},
    {"id": "sport", "title": "Sport Daily"},
    {"id": "xss", "title": XSS},
]

#: Installed in every page before its own scripts: records each entry added to the list (with
#: a performance.now() time stamp, from a MutationObserver), CSP violations and errors.
PAGE_PROBE = """
(() => {
  window.__inserted = [];
  window.__csp = [];
  window.__errors = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
  });
  window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
  new MutationObserver((records) => {
    const t = performance.now();
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.nodeType === 1 && node.matches("li.entry")) {
          window.__inserted.push({
            id: node.dataset.id,
            feed: node.dataset.feed,
            title: node.querySelector(".title")?.textContent ?? "",
            t,
          });
        }
      }
    }
  }).observe(document, { childList: true, subtree: true });
})();
"""


class SameHostOnly:
    """A Playwright route handler that lets requests to *host* through, aborts every other one
    and records every URL asked for (``context.route("**/*", recorder)``), so that a test can
    name any third-party request the page made."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.requested: list[str] = []

    def __call__(self, route: Any) -> None:
        url = route.request.url
        self.requested.append(url)
        if urlsplit(url).netloc == self.host:
            route.continue_()
        else:
            route.abort()  # and the test's assertion names it

    def elsewhere(self) -> list[str]:
        """What was asked of another host."""
        return [url for url in self.requested if urlsplit(url).netloc != self.host]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}")


def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


class FeedstreamServer:
    """The real server in a subprocess, with its own config and data directory."""

    def __init__(self, workdir: Path, feeds: list[dict[str, str]] = FEEDS, extra: str = "") -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "feedstream.toml"
        self.log = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)
        lines = [
            "[server]",
            'host = "127.0.0.1"',
            f"port = {self.port}",
            f"data_dir = {toml_string(str(workdir / 'data'))}",
        ]
        for feed in feeds:
            lines += ["", "[[feeds]]", f"id = {toml_string(feed['id'])}"]
            if feed.get("title"):
                lines.append(f"title = {toml_string(feed['title'])}")
            lines.append(f"token = {toml_string(TOKEN)}")
        lines.append(extra)  # more TOML: [[rules]], [[streams]]
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def command(self) -> list[str]:
        prefix = os.environ.get("FEEDSTREAM_SERVER_CMD")  # e.g. another build of the server
        base = shlex.split(prefix) if prefix else [sys.executable, "-m", "feedstream"]
        return [*base, "serve", "--config", str(self.config), "--port", str(self.port)]

    def start(self) -> None:
        assert self.proc is None, "already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"the server exited at start:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).json().get("ok") is True:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"no /healthz within {START_TIMEOUT} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def push(self, feed: str, *items: dict[str, Any], title: str = "Pushed") -> None:
        """POST a JSON Feed 1.1 document with *items* (an "id" is added when missing)."""
        doc = {
            "version": "https://jsonfeed.org/version/1.1",
            "title": title,
            "items": [{"id": f"item-{next(self._ids)}", **item} for item in items],
        }
        response = httpx.post(
            f"{self.url}/api/push/{feed}",
            content=json.dumps(doc).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/feed+json"},
            timeout=10,
        )
        assert response.status_code == 202, (response.status_code, response.text)
        assert response.json() == {"accepted": len(items)}, response.text


@contextlib.contextmanager
def running_server(
    workdir: Path, feeds: list[dict[str, str]] = FEEDS, extra: str = ""
) -> Iterator[FeedstreamServer]:
    server = FeedstreamServer(workdir, feeds, extra)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def server(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeedstreamServer]:
    """One server for the tests that do not restart it (each uses its own entry titles)."""
    with running_server(tmp_path_factory.mktemp("feedstream")) as server:
        yield server


@pytest.fixture
def own_server(browser: Any, tmp_path: Path) -> Iterator[FeedstreamServer]:
    """A server for one test, which may stop and start it again."""
    with running_server(tmp_path) as server:
        yield server


@pytest.fixture
def tag() -> str:
    """A prefix that makes this test's entry titles unique on the shared server."""
    return uuid.uuid4().hex[:6]


class PageFactory:
    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.console: list[str] = []  # every console message and page error, "type: text"
        self.response: Any = None  # the last page load's response

    def __call__(
        self,
        server: FeedstreamServer,
        query: str = "pace=0.3",
        setup: Callable[[Any], None] | None = None,
        **context_options: Any,
    ) -> Any:
        """A new context's page at ``/?<query>``, once it is live; *setup* gets the context."""
        from playwright.sync_api import expect

        options = {"viewport": {"width": 1000, "height": 800}, **context_options}
        context = self.browser.new_context(**options)
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        context.add_init_script(PAGE_PROBE)
        if setup is not None:
            setup(context)
        page = context.new_page()
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))
        self.response = page.goto(f"{server.url}/?{query}")
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[PageFactory]:
    """``open_page(server, "pace=0.5")``: a fresh context's page, loaded and live."""
    factory = PageFactory(browser)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh context's page, probed but not loaded (for flows that start elsewhere, such as
    a private server's login form)."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    context.set_default_timeout(10_000)
    context.add_init_script(PAGE_PROBE)
    try:
        yield context.new_page()
    finally:
        context.close()
