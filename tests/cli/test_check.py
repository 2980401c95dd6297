"""``feedstream check``: the row/table/exit-code rules, then real fetches from a loopback server."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from feedstream.cli.check import (
    EXIT_BROKEN,
    EXIT_OK,
    Row,
    check_feeds,
    error_row,
    exit_code,
    newest_date,
    progress_line,
    push_row,
    render_json,
    render_table,
    result_row,
    run_check,
    summary_line,
)
from feedstream.core.config import Config, FeedConfig, ServerConfig
from feedstream.core.normalize import parse_feed
from feedstream.service.fetch import (
    FetchError,
    FetchResult,
    FetchTimeout,
    NetworkError,
    RedirectError,
    TooLarge,
)
from feedstream.websub import discovery as websub
from tests.support.servers import PUSH_TOKEN, FeedServer, Route

ROOT = Path(__file__).resolve().parents[2]

GOOD_ATOM = b"""<?xml version="1.0"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Good</title><id>urn:good</id>
<updated>2024-05-03T00:00:00Z</updated>
<link rel="hub" href="https://hub.example.org/"/><link rel="self" href="http://example.org/good.xml"/>
<entry><id>urn:1</id><title>One</title><published>2024-05-01T10:00:00Z</published><updated>2024-05-04T08:00:00Z</updated></entry>
<entry><id>urn:2</id><title>Two</title><updated>2024-05-02T10:00:00Z</updated></entry>
</feed>"""
EMPTY_RSS = b'<rss version="2.0"><channel><title>Quiet</title></channel></rss>'
HTML_PAGE = b"<!doctype html><html><head><title>Blog</title></head><body>hi</body></html>"
GARBAGE = b"\x00\x01 garbage \xff\xfe"
ATOM = {"Content-Type": "application/atom+xml"}


def polled(feed_id: str, url: str = "http://example.org/feed") -> FeedConfig:
    return FeedConfig(id=feed_id, url=url)


def answered(
    feed: FeedConfig, status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> Row:
    """The row for *feed* answering *body*, parsed and examined as check does."""
    assert feed.url is not None
    result = FetchResult(status, feed.url, headers or {}, body)
    if status != 200:
        return result_row(feed, result)
    parsed = parse_feed(body, feed_id=feed.id, base_url=feed.url, content_type=result.content_type)
    discovery = websub.discover(result.headers, body, result.content_type, feed.url)
    return result_row(feed, result, parsed, discovery)


# -- rows ----------------------------------------------------------------------------------------


def test_good_feed_row() -> None:
    row = answered(polled("good"), 200, GOOD_ATOM, ATOM)
    assert row == Row(
        id="good",
        url="http://example.org/feed",
        status=200,
        format="atom",
        entries=2,
        newest="2024-05-04T08:00:00Z",  # an update later than every publication date
        hub="https://hub.example.org/",
    )
    assert row.ok and not row.push_only


def test_not_a_feed_is_broken() -> None:
    html = answered(polled("html"), 200, HTML_PAGE, {"content-type": "text/html"})
    assert not html.ok and html.problems == ("not a feed: looks like an HTML page",)
    assert html.format is None and html.entries is None
    garbage = answered(polled("garbage"), 200, GARBAGE)
    assert not garbage.ok and garbage.problems[0].startswith("not a feed")
    empty = answered(polled("empty"), 200, b"")
    assert not empty.ok and empty.problems == ("empty body",)


def test_zero_entries_is_a_note_not_a_failure() -> None:
    row = answered(polled("quiet"), 200, EMPTY_RSS)
    assert row.ok and row.format == "rss" and row.entries == 0 and row.newest is None
    assert row.problems == ("no entries",)


def test_http_errors() -> None:
    assert answered(polled("a"), 404).problems == ("HTTP 404 Not Found",)
    assert not answered(polled("a"), 404).ok
    gone = answered(polled("a"), 410)
    assert not gone.ok and gone.problems[0].startswith("410 Gone")
    busy = answered(polled("a"), 503, headers={"retry-after": "120"})
    assert busy.problems == ("HTTP 503 Service Unavailable (Retry-After: 120)",)
    assert answered(polled("a"), 500).problems == ("HTTP 500 Internal Server Error",)
    # The poller reads only 200 answers: another 2xx is no use to it.
    assert not answered(polled("a"), 204).ok
    assert answered(polled("a"), 304).ok  # (not sent unconditionally, but not a problem)


def test_permanent_redirect_is_a_note() -> None:
    feed = polled("moved", "http://old.example.org/feed")
    result = FetchResult(
        200,
        "https://new.example.org/feed",
        {},
        GOOD_ATOM,
        permanent_url="https://new.example.org/feed",
        redirects=(301,),
    )
    parsed = parse_feed(GOOD_ATOM, feed_id="moved", base_url=result.url)
    row = result_row(feed, result, parsed, None)
    assert row.ok and row.problems == ("moved to https://new.example.org/feed",)
    assert row.hub is None
    gone = result_row(feed, FetchResult(410, result.url, {}, b"", result.url, (308,)))
    assert gone.problems[0] == "moved to https://new.example.org/feed" and not gone.ok


def test_parse_warning_is_a_note() -> None:
    body = b'{"version": "https://jsonfeed.org/version/1.1", "title": "No items"}'
    row = answered(polled("j"), 200, body)
    assert row.ok and row.format == "json"
    assert row.problems == ("warning: JSON Feed without an items list", "no entries")


def test_fetch_errors() -> None:
    feed = polled("down")
    kinds = {
        FetchTimeout("no complete answer within 20 s"): "fetch failed: timed out",
        NetworkError("ConnectError: refused"): "fetch failed: network error",
        TooLarge("body is over the limit"): "fetch failed: too large",
        RedirectError("redirect loop at x"): "fetch failed: bad redirect",
        FetchError("something else"): "fetch failed: failed",
    }
    for error, problem in kinds.items():
        row = error_row(feed, error)
        assert row.problems == (problem,) and row.error == str(error)
        assert row.status is None and not row.ok


def test_push_row_and_exit_code() -> None:
    push = push_row(FeedConfig(id="hooks", token=PUSH_TOKEN))
    assert push.push_only and push.ok and push.url is None
    good = answered(polled("good"), 200, GOOD_ATOM)
    quiet = answered(polled("quiet"), 200, EMPTY_RSS)
    assert exit_code([good, quiet, push]) == EXIT_OK
    assert exit_code([push]) == EXIT_OK and exit_code([]) == EXIT_OK
    assert exit_code([good, answered(polled("x"), 404)]) == EXIT_BROKEN


def test_newest_date() -> None:
    assert newest_date([]) is None
    assert newest_date([{"published": None, "updated": None}]) is None
    entries: list[dict[str, Any]] = [
        {"published": "2024-01-02T00:00:00Z", "updated": None},
        {"published": "2023-12-01T00:00:00Z", "updated": "2024-01-03T00:00:00Z"},
    ]
    assert newest_date(entries) == "2024-01-03T00:00:00Z"


# -- rendering -----------------------------------------------------------------------------------


def test_render_table() -> None:
    rows = [
        answered(polled("good"), 200, GOOD_ATOM),
        answered(polled("quiet"), 200, EMPTY_RSS),
        answered(polled("gone"), 410),
        error_row(polled("down"), NetworkError("ConnectError: All connection attempts failed!")),
        push_row(FeedConfig(id="hooks", token=PUSH_TOKEN)),
    ]
    assert render_table(rows) == (
        "FEED   STATUS                                    FORMAT  ENTRIES  NEWEST                HUB              PROBLEMS\n"
        "good   200                                       atom          2  2024-05-04T08:00:00Z  hub.example.org  -\n"
        "quiet  200                                       rss           0  -                     no               no entries\n"
        "gone   410                                       -             -  -                     -                410 Gone: the publisher removed it; feedstream stops polling it\n"
        "down   ConnectError: All connection attempts f…  -             -  -                     -                fetch failed: network error\n"
        "hooks  push only                                 -             -  -                     -                -\n"
        "4 polled feeds: 2 ok, 2 broken (gone, down); 1 push only\n"
    )


def test_table_cells_cannot_carry_terminal_escapes() -> None:
    row = error_row(polled("evil"), NetworkError("bad\x1b[2Jthing\nhere"))
    table = render_table([row])
    assert "\x1b" not in table and "bad?[2Jthing?here" in table
    assert table.count("\n") == 3


def test_summary_line() -> None:
    good = answered(polled("good"), 200, GOOD_ATOM)
    assert summary_line([good]) == "1 polled feed: 1 ok, 0 broken"
    assert summary_line([]) == "0 polled feeds: 0 ok, 0 broken"


def test_render_json_has_stable_keys() -> None:
    rows = [
        answered(polled("good"), 200, GOOD_ATOM),
        error_row(polled("down"), FetchTimeout("no complete answer within 20 s")),
        push_row(FeedConfig(id="hooks", token=PUSH_TOKEN)),
    ]
    data = json.loads(render_json(rows))
    keys = ["id", "url", "status", "error", "format", "entries", "newest", "hub", "problems", "ok"]
    assert [list(item) for item in data] == [keys] * 3
    assert data[0] == {
        "id": "good",
        "url": "http://example.org/feed",
        "status": 200,
        "error": None,
        "format": "atom",
        "entries": 2,
        "newest": "2024-05-04T08:00:00Z",
        "hub": "https://hub.example.org/",
        "problems": [],
        "ok": True,
    }
    assert data[1]["error"] == "no complete answer within 20 s" and data[1]["ok"] is False
    assert data[2]["url"] is None and data[2]["status"] is None and data[2]["ok"] is True


def test_progress_line() -> None:
    assert progress_line(3, 10, "good") == "checked 3/10 … good"


# -- against a loopback server --------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_feeds(feed_server: FeedServer) -> None:
    feed_server.routes.update(
        {
            "/good.xml": Route(200, GOOD_ATOM, ATOM),
            "/html": Route(200, HTML_PAGE, {"Content-Type": "text/html"}),
            "/garbage": Route(200, GARBAGE, {"Content-Type": "application/xml"}),
            "/gone.xml": Route(410, b"gone"),
            "/old.xml": Route(301, b"", {"Location": "/good.xml"}),
        }
    )


def loopback_config(feed_server: FeedServer) -> Config:
    base = feed_server.url
    feeds = (
        FeedConfig(id="good", url=f"{base}/good.xml"),
        FeedConfig(id="html", url=f"{base}/html"),
        FeedConfig(id="garbage", url=f"{base}/garbage"),
        FeedConfig(id="missing", url=f"{base}/missing.xml"),
        FeedConfig(id="gone", url=f"{base}/gone.xml"),
        FeedConfig(id="moved", url=f"{base}/old.xml"),
        FeedConfig(id="down", url=f"http://127.0.0.1:{closed_port()}/feed"),
        FeedConfig(id="hooks", token=PUSH_TOKEN),
    )
    return Config(server=ServerConfig(host_gap=0.0), feeds=feeds, source="<test>")


async def to_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


async def test_check_feeds_against_a_loopback_server(feed_server: FeedServer) -> None:
    serve_feeds(feed_server)
    config = loopback_config(feed_server)
    seen: list[tuple[int, int, str]] = []
    with trio.fail_after(20):
        rows = await check_feeds(config, parse=to_thread, progress=lambda *args: seen.append(args))
    by_id = {row.id: row for row in rows}
    assert [row.id for row in rows] == [feed.id for feed in config.feeds]  # config order
    assert by_id["good"] == Row(
        id="good",
        url=f"{feed_server.url}/good.xml",
        status=200,
        format="atom",
        entries=2,
        newest="2024-05-04T08:00:00Z",
        hub="https://hub.example.org/",
    )
    assert by_id["html"].problems == ("not a feed: looks like an HTML page",)
    assert by_id["garbage"].problems[0].startswith("not a feed")
    assert by_id["missing"].status == 404 and by_id["missing"].problems == ("HTTP 404 Not Found",)
    assert by_id["gone"].status == 410 and by_id["gone"].problems[0].startswith("410 Gone")
    moved = by_id["moved"]
    assert moved.ok and moved.entries == 2
    assert moved.problems == (f"moved to {feed_server.url}/good.xml",)
    down = by_id["down"]
    assert down.status is None and down.problems == ("fetch failed: network error",)
    assert by_id["hooks"].push_only
    assert {row.id for row in rows if not row.ok} == {"html", "garbage", "missing", "gone", "down"}
    assert exit_code(rows) == EXIT_BROKEN
    # Progress: once per polled feed, counting up to 7; the push-only feed is not fetched.
    assert [(done, total) for done, total, _ in seen] == [(n, 7) for n in range(1, 8)]
    assert "/missing.xml" in {hit.path for hit in feed_server.hits}
    assert len(feed_server.hits) == 7  # one request each, the redirect's two hops included


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_run_check_prints_progress_only_on_a_terminal(feed_server: FeedServer) -> None:
    serve_feeds(feed_server)
    config = Config(
        server=ServerConfig(host_gap=0.0),
        feeds=(
            FeedConfig(id="good", url=f"{feed_server.url}/good.xml"),
            FeedConfig(id="moved", url=f"{feed_server.url}/old.xml"),
            FeedConfig(id="hooks", token=PUSH_TOKEN),
        ),
    )
    stdout, terminal = io.StringIO(), FakeTerminal()
    with trio.fail_after(20):
        assert await run_check(config, False, stdout, terminal, parse=to_thread) == EXIT_OK
    progress = terminal.getvalue()
    assert "\rchecked 1/2 … " in progress and "\rchecked 2/2 … " in progress
    assert progress.endswith("\r") and progress.rsplit("\r", 2)[-2].strip() == ""  # cleared
    lines = stdout.getvalue().splitlines()
    assert lines[0].split() == ["FEED", "STATUS", "FORMAT", "ENTRIES", "NEWEST", "HUB", "PROBLEMS"]
    assert lines[1].split()[:6] == [
        "good",
        "200",
        "atom",
        "2",
        "2024-05-04T08:00:00Z",
        "hub.example.org",
    ]
    assert lines[3].split()[:3] == ["hooks", "push", "only"]
    assert lines[-1] == "2 polled feeds: 2 ok, 0 broken; 1 push only"

    stdout, plain = io.StringIO(), io.StringIO()
    with trio.fail_after(20):
        assert await run_check(config, True, stdout, plain, parse=to_thread) == EXIT_OK
    assert plain.getvalue() == ""  # not a terminal: no progress at all
    assert [row["id"] for row in json.loads(stdout.getvalue())] == ["good", "moved", "hooks"]


# -- the real process -----------------------------------------------------------------------------


def write_config(path: Path, feed_server: FeedServer, *feeds: tuple[str, str]) -> Path:
    text = "[server]\nhost_gap = 0\n"
    for feed_id, route in feeds:
        text += f'\n[[feeds]]\nid = "{feed_id}"\nurl = "{feed_server.url}{route}"\n'
    text += f'\n[[feeds]]\nid = "hooks"\ntoken = "{PUSH_TOKEN}"\n'
    path.write_text(text)
    return path


async def feedstream(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m feedstream *args*`` to completion, output captured (the loop keeps serving)."""
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, "-m", "feedstream", *args],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_check_command_table_and_exit_1(tmp_path: Path, feed_server: FeedServer) -> None:
    serve_feeds(feed_server)
    config = write_config(
        tmp_path / "feeds.toml",
        feed_server,
        ("good", "/good.xml"),
        ("html", "/html"),
        ("missing", "/missing.xml"),
        ("gone", "/gone.xml"),
    )
    result = await feedstream("check", "--config", str(config))
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr and "checked" not in stderr  # no terminal: no progress
    rows = [line.split(None, 2) for line in stdout.splitlines()[1:-1]]
    assert [(feed, status) for feed, status, _ in rows] == [
        ("good", "200"),
        ("html", "200"),
        ("missing", "404"),
        ("gone", "410"),
        ("hooks", "push"),
    ]
    assert "hub.example.org" in stdout and "2024-05-04T08:00:00Z" in stdout  # parsed in a worker
    assert "not a feed: looks like an HTML page" in stdout and "HTTP 404 Not Found" in stdout
    assert stdout.splitlines()[-1] == (
        "4 polled feeds: 1 ok, 3 broken (html, missing, gone); 1 push only"
    )


async def test_check_command_json_and_exit_0(tmp_path: Path, feed_server: FeedServer) -> None:
    serve_feeds(feed_server)
    config = write_config(
        tmp_path / "feeds.toml", feed_server, ("good", "/good.xml"), ("moved", "/old.xml")
    )
    result = await feedstream("check", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr.decode()
    data = json.loads(result.stdout)
    assert [(row["id"], row["status"], row["entries"], row["ok"]) for row in data] == [
        ("good", 200, 2, True),
        ("moved", 200, 2, True),
        ("hooks", None, None, True),
    ]
    assert data[1]["problems"] == [f"moved to {feed_server.url}/good.xml"]


async def test_check_command_config_error_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text('[[feeds]]\nid = "a"\nurl = "ftp://a.org/f"\n')
    result = await feedstream("check", "--config", str(config))
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode() == (
        f"feedstream: config error: {config}:3: feeds[0].url: must be an absolute http:// or "
        "https:// URL, got 'ftp://a.org/f'\n"
    )
