"""``feedstream import / export / discover / add``: config edits that keep every byte, on loopback."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from feedstream.cli.configedit import NewFeed, append_feeds, apply_edit, plan_edit
from feedstream.cli.feeds import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    Console,
    Network,
    add_feed,
    discover_feeds,
    export_feeds,
    import_feeds,
)
from feedstream.core.config import ConfigError, ServerConfig, load_config, parse_config
from feedstream.core.opml import parse_opml
from tests.support.helpers import inline
from tests.support.servers import FeedServer, Route

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
# My feeds -- hand-written, with comments that must survive.
[server]
host = "127.0.0.1"   # loopback only
port = 8080
host_gap = 0.0       # no pause between two requests to one host (the tests' loopback server)

[defaults]
interval = 600       # ten minutes

[[feeds]]
id = "python-insider"          # the one I read first
url = "https://blog.python.org/feeds/posts/default"
title = "Python Insider"
category = "Python"

[[feeds]]
id = "hooks"                   # push-only
token = "s3cret-token"

# the end: nothing below this line
"""

OPML = b"""<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head><title>From another reader</title></head>
  <body>
    <outline text="Python">
      <outline text="Python Insider (again)" type="rss" xmlUrl="http://blog.python.org/feeds/posts/default/"/>
      <outline text="PEPs" type="rss" xmlUrl="https://peps.python.org/peps.rss"/>
    </outline>
    <outline text="News" title="News">
      <outline text="Hacker News" title="Hacker News" xmlUrl="https://hnrss.org/frontpage"/>
      <outline text="HN, twice" xmlUrl="https://HNRSS.org/frontpage#dup"/>
      <outline text="Ars \xe2\x80\x9cTechnica\xe2\x80\x9d" xmlUrl="https://feeds.arstechnica.com/arstechnica/index"/>
    </outline>
    <outline text="xkcd" xmlUrl="https://xkcd.com/atom.xml"/>
    <outline text="bad" xmlUrl="javascript:alert(1)"/>
  </body>
</opml>
"""


def console(stdin: str = "") -> Console:
    return Console(out=io.StringIO(), err=io.StringIO(), stdin=io.StringIO(stdin))


def out(c: Console) -> str:
    assert isinstance(c.out, io.StringIO)
    return c.out.getvalue()


def err(c: Console) -> str:
    assert isinstance(c.err, io.StringIO)
    return c.err.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "feeds.toml"
    config.write_text(CONFIG)
    opml = tmp_path / "subs.opml"
    opml.write_bytes(OPML)
    return config, opml


# -- import ---------------------------------------------------------------------------------------


async def test_import_appends_and_keeps_every_byte(files: tuple[Path, Path]) -> None:
    config, opml = files
    before = config.read_bytes()
    c = console()
    assert await import_feeds(opml, config, console=c, network=Network(parse=inline)) == EXIT_OK
    after = config.read_bytes()
    assert after.startswith(before)  # the file as it was, byte for byte, then the new tables
    added = after[len(before) :].decode()
    assert added == (
        '\n[[feeds]]\nid = "peps"\nurl = "https://peps.python.org/peps.rss"\ntitle = "PEPs"\ncategory = "Python"\n'
        '\n[[feeds]]\nid = "hacker-news"\nurl = "https://hnrss.org/frontpage"\ntitle = "Hacker News"\ncategory = "News"\n'
        '\n[[feeds]]\nid = "ars-technica"\nurl = "https://feeds.arstechnica.com/arstechnica/index"\ntitle = "Ars \u201cTechnica\u201d"\ncategory = "News"\n'
        '\n[[feeds]]\nid = "xkcd"\nurl = "https://xkcd.com/atom.xml"\ntitle = "xkcd"\n'
    )
    loaded = load_config(config)
    assert [f.id for f in loaded.feeds] == [
        "python-insider",
        "hooks",
        "peps",
        "hacker-news",
        "ars-technica",
        "xkcd",
    ]
    report = out(c)
    assert "+ peps  https://peps.python.org/peps.rss  [Python]" in report
    assert (
        "line 6: duplicate, skipped: http://blog.python.org/feeds/posts/default/ (in the config as 'python-insider')"
        in report
    )
    assert (
        "line 11: duplicate, skipped: https://HNRSS.org/frontpage#dup (at line 10 of the OPML file)"
        in report
    )
    assert "line 15: skipped: xmlUrl 'javascript:alert(1)' is not an http(s) URL" in report
    assert (
        "added 4 feeds to" in report
        and "2 duplicates skipped" in report
        and "1 unusable outline" in report
    )
    assert "SIGHUP" in report


async def test_dry_run_writes_nothing(files: tuple[Path, Path]) -> None:
    config, opml = files
    before, mtime = config.read_bytes(), config.stat().st_mtime_ns
    c = console()
    assert (
        await import_feeds(opml, config, dry_run=True, console=c, network=Network(parse=inline))
        == EXIT_OK
    )
    assert config.read_bytes() == before and config.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in config.parent.iterdir()) == [
        "feeds.toml",
        "subs.opml",
    ]  # no temp file
    assert "+ hacker-news  https://hnrss.org/frontpage  [News]" in out(c)
    assert "would add 4 feeds" in out(c) and "dry run: nothing written" in out(c)


async def test_reimporting_an_export_changes_nothing(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    config, opml = files
    await import_feeds(opml, config, console=console(), network=Network(parse=inline))
    exported = io.BytesIO()
    assert export_feeds(config, exported, io.StringIO()) == EXIT_OK
    (tmp_path / "export.opml").write_bytes(exported.getvalue())
    before = config.read_bytes()
    c = console()
    assert (
        await import_feeds(
            tmp_path / "export.opml", config, console=c, network=Network(parse=inline)
        )
        == EXIT_OK
    )
    assert config.read_bytes() == before
    assert "added 0 feeds" in out(c) and "5 duplicates skipped" in out(c)


async def test_an_export_imported_into_an_empty_config_keeps_ids_and_categories(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    config, opml = files
    await import_feeds(opml, config, console=console(), network=Network(parse=inline))
    exported = io.BytesIO()
    export_feeds(config, exported, io.StringIO())
    (tmp_path / "export.opml").write_bytes(exported.getvalue())
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert (
        await import_feeds(
            tmp_path / "export.opml", empty, console=console(), network=Network(parse=inline)
        )
        == EXIT_OK
    )
    original = {f.id: (f.url, f.title, f.category) for f in load_config(config).feeds if f.url}
    copied = {f.id: (f.url, f.title, f.category) for f in load_config(empty).feeds}
    assert copied == original


async def test_bad_opml_exits_2_naming_the_line(files: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = files
    before = config.read_bytes()
    bad = tmp_path / "bad.opml"
    bad.write_bytes(b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "b">]>\n<opml/>')
    c = console()
    assert await import_feeds(bad, config, console=c) == EXIT_USAGE
    assert (
        err(c).strip()
        == f"feedstream: {bad}:2: a DOCTYPE is not allowed in OPML (a DTD could declare entities)"
    )
    missing = console()
    assert await import_feeds(tmp_path / "nope.opml", config, console=missing) == EXIT_USAGE
    assert "cannot read: No such file or directory" in err(missing)
    assert config.read_bytes() == before


async def test_a_fifty_megabyte_file_is_refused_unread(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    config, _ = files
    huge = tmp_path / "huge.opml"
    with huge.open("wb") as stream:
        stream.truncate(50 * 1000 * 1000)  # sparse: nothing to write, nothing to read
    c = console()
    start = time.perf_counter()
    assert await import_feeds(huge, config, console=c) == EXIT_USAGE
    assert time.perf_counter() - start < 1
    assert f"{huge}:1: the file is larger than the 10 MiB limit" in err(c)


async def test_import_discovers_htmlurl_only_outlines(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    base = feed_server.url
    feed_server.routes["/blog/"] = Route(
        200,
        b'<html><head><link rel="alternate" type="application/atom+xml" href="atom.xml"></head></html>',
        {"Content-Type": "text/html"},
    )
    feed_server.routes["/blog/atom.xml"] = Route(
        200, ATOM, {"Content-Type": "application/atom+xml"}
    )
    feed_server.routes["/empty/"] = Route(
        200, b"<html><head></head><body>no feed</body></html>", {"Content-Type": "text/html"}
    )
    opml = tmp_path / "sites.opml"
    opml.write_text(
        f"""<opml version="2.0"><body><outline text="Friends">
        <outline text="A friend's blog" htmlUrl="{base}/blog/"/>
        <outline text="Nothing there" htmlUrl="{base}/empty/"/>
        </outline></body></opml>"""
    )
    config = tmp_path / "feeds.toml"
    empty = "# empty\n[server]\nhost_gap = 0.0\n"
    config.write_text(empty)
    skipped = console()
    assert await import_feeds(opml, config, discover_sites=False, console=skipped) == EXIT_OK
    assert config.read_text() == empty
    assert "2 sites not discovered" in out(skipped) and "not discovered (--no-discover)" in out(
        skipped
    )
    refused = console()
    assert (
        await import_feeds(opml, config, console=refused, network=Network(parse=inline)) == EXIT_OK
    )
    assert "not a public address" in out(refused) and config.read_text() == empty
    c = console()
    assert (
        await import_feeds(
            opml, config, console=c, network=Network(allow_private=True, parse=inline)
        )
        == EXIT_OK
    )
    (feed,) = load_config(config).feeds
    assert (feed.id, feed.url, feed.title, feed.category) == (
        "a-friend-s-blog",
        f"{base}/blog/atom.xml",
        "A friend's blog",
        "Friends",
    )
    assert f"line 3: no feed found at {base}/empty/" in out(c)
    assert "1 site without a feed" in out(c)


# -- export ---------------------------------------------------------------------------------------


def test_export_output_parses_as_opml(files: tuple[Path, Path]) -> None:
    config, _ = files
    stream, errors = io.BytesIO(), io.StringIO()
    assert export_feeds(config, stream, errors) == EXIT_OK
    document = parse_opml(stream.getvalue())
    assert [(f.id, f.title, f.xml_url, f.category) for f in document.feeds] == [
        (
            "python-insider",
            "Python Insider",
            "https://blog.python.org/feeds/posts/default",
            "Python",
        )
    ]
    assert "not exported (push-only, no URL): hooks" in errors.getvalue()


# -- discover -------------------------------------------------------------------------------------

ATOM = b"""<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Friend</title><id>urn:f</id>
<updated>2024-05-03T00:00:00Z</updated><link rel="hub" href="https://hub.example.net/"/>
<entry><id>urn:1</id><title>One</title><updated>2024-05-02T10:00:00Z</updated></entry></feed>"""
RSS = b"""<rss version="2.0"><channel><title>Second \x1b[31mred</title>
<item><guid>a</guid><title>A</title></item></channel></rss>"""


def two_feed_site(server: FeedServer) -> None:
    server.routes["/"] = Route(
        200,
        b'<html><head><link rel="alternate" type="application/atom+xml" href="/atom.xml">'
        b'<link rel="alternate" type="application/rss+xml" href="/rss.xml">'
        b'<link rel="alternate" type="application/rss+xml" href="/broken"></head></html>',
        {"Content-Type": "text/html"},
    )
    server.routes["/atom.xml"] = Route(200, ATOM, {"Content-Type": "application/atom+xml"})
    server.routes["/rss.xml"] = Route(200, RSS, {"Content-Type": "application/rss+xml"})
    server.routes["/broken"] = Route(200, b"<html>not found</html>", {"Content-Type": "text/html"})


LOCAL = Network(allow_private=True, parse=inline)
QUICK = ServerConfig(host_gap=0.0)


async def test_discover_table_and_json(feed_server: FeedServer) -> None:
    two_feed_site(feed_server)
    base = feed_server.url
    c = console()
    assert await discover_feeds(f"{base}/", console=c, network=LOCAL, server=QUICK) == EXIT_OK
    lines = out(c).splitlines()
    assert lines[0].split() == ["#", "URL", "FORMAT", "ENTRIES", "NEWEST", "HUB", "TITLE"]
    assert lines[1].split() == [
        "1",
        f"{base}/atom.xml",
        "atom",
        "1",
        "2024-05-02T10:00:00Z",
        "https://hub.example.net/",
        "Friend",
    ]
    assert lines[2].split()[:4] == ["2", f"{base}/rss.xml", "rss", "1"]
    assert "\x1b" not in out(c) and lines[2].endswith("Second [31mred")  # no terminal escape
    assert f"not a feed: {base}/broken: not a feed: looks like an HTML page" in err(c)
    j = console()
    assert (
        await discover_feeds(f"{base}/", as_json=True, console=j, network=LOCAL, server=QUICK)
        == EXIT_OK
    )
    document = json.loads(out(j))
    assert [f["url"] for f in document["feeds"]] == [f"{base}/atom.xml", f"{base}/rss.xml"]
    assert set(document["feeds"][0]) == {
        "url",
        "link",
        "source",
        "status",
        "format",
        "title",
        "entries",
        "newest",
        "hub",
        "error",
    }
    assert document["rejected"][0]["error"] == "not a feed: looks like an HTML page"


async def test_discover_nothing_found_exits_1(feed_server: FeedServer) -> None:
    c = console()
    assert (
        await discover_feeds(f"{feed_server.url}/nothing", console=c, network=LOCAL, server=QUICK)
        == EXIT_NOT_FOUND
    )
    assert "the page answered HTTP 404 Not Found" in err(c) and "no feed found" in err(c)


# -- add ------------------------------------------------------------------------------------------


async def test_add_with_pick_appends_one_table(
    files: tuple[Path, Path], feed_server: FeedServer
) -> None:
    config, _ = files
    two_feed_site(feed_server)
    before = config.read_bytes()
    c = console()
    code = await add_feed(
        f"{feed_server.url}/", config, pick=2, category="Friends", console=c, network=LOCAL
    )
    assert code == EXIT_OK, err(c)
    after = config.read_bytes()
    assert after.startswith(before)
    assert after[len(before) :].decode() == (
        f'\n[[feeds]]\nid = "second-31mred"\nurl = "{feed_server.url}/rss.xml"\ncategory = "Friends"\n'
    )
    again = console()
    assert (
        await add_feed(f"{feed_server.url}/", config, pick=2, console=again, network=LOCAL)
        == EXIT_NOT_FOUND
    )
    assert "is already in the config as 'second-31mred'; nothing added" in err(again)
    assert config.read_bytes() == after


async def test_add_needs_a_choice_without_a_terminal(
    files: tuple[Path, Path], feed_server: FeedServer
) -> None:
    config, _ = files
    two_feed_site(feed_server)
    before = config.read_bytes()
    c = console()
    assert await add_feed(f"{feed_server.url}/", config, console=c, network=LOCAL) == EXIT_USAGE
    assert "2 feeds found; choose one with --pick N" in err(c)
    assert f"1  {feed_server.url}/atom.xml" in out(c)
    wrong = console()
    assert (
        await add_feed(f"{feed_server.url}/", config, pick=3, console=wrong, network=LOCAL)
        == EXIT_USAGE
    )
    assert "--pick 3: choose 1 to 2" in err(wrong)
    assert config.read_bytes() == before


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_add_asks_on_a_terminal(files: tuple[Path, Path], feed_server: FeedServer) -> None:
    config, _ = files
    two_feed_site(feed_server)
    c = Console(out=io.StringIO(), err=io.StringIO(), stdin=Terminal("1\n"))
    assert (
        await add_feed(f"{feed_server.url}/", config, feed_id="friend", console=c, network=LOCAL)
        == EXIT_OK
    )
    assert "feed to add (1-2, empty to cancel): " in out(c)
    feed = load_config(config).feed("friend")
    assert feed is not None and feed.url == f"{feed_server.url}/atom.xml"
    cancel = Console(out=io.StringIO(), err=io.StringIO(), stdin=Terminal("\n"))
    before = config.read_bytes()
    assert (
        await add_feed(
            f"{feed_server.url}/", config, feed_id="other", console=cancel, network=LOCAL
        )
        == EXIT_USAGE
    )
    assert config.read_bytes() == before


async def test_add_the_only_feed_and_refuse_a_broken_result(
    files: tuple[Path, Path], feed_server: FeedServer
) -> None:
    config, _ = files
    feed_server.routes["/feed.json"] = Route(
        200,
        json.dumps(
            {"version": "https://jsonfeed.org/version/1.1", "title": "J", "items": []}
        ).encode(),
    )
    before = config.read_bytes()
    url = f"{feed_server.url}/feed.json"
    broken = console()
    assert (
        await add_feed(url, config, category="x" * 65, console=broken, network=LOCAL) == EXIT_USAGE
    )
    assert config.read_bytes() == before
    assert "not written, the result would not load" in err(broken)
    assert f"{config}:25: feeds[2].category: must be at most 64 characters" in err(broken)
    taken = console()
    assert await add_feed(url, config, feed_id="hooks", console=taken, network=LOCAL) == EXIT_USAGE
    assert "--id 'hooks' is taken" in err(taken)
    c = console()
    assert await add_feed(url, config, console=c, network=LOCAL) == EXIT_OK
    assert load_config(config).feeds[-1].id == "j"
    assert "added j:" in out(c)


async def test_add_when_nothing_is_found(files: tuple[Path, Path], feed_server: FeedServer) -> None:
    config, _ = files
    feed_server.routes["/"] = Route(
        200, b"<html><head></head><body>plain</body></html>", {"Content-Type": "text/html"}
    )
    before = config.read_bytes()
    c = console()
    assert await add_feed(f"{feed_server.url}/", config, console=c, network=LOCAL) == EXIT_NOT_FOUND
    assert "no feed found" in err(c) and f"not a feed: {feed_server.url}/feed: HTTP 404" in err(c)
    assert config.read_bytes() == before


# -- editing the file -------------------------------------------------------------------------------


def test_append_keeps_crlf_and_a_missing_final_newline() -> None:
    text = "# c\r\n[server]\r\nport = 1  # x"
    result = append_feeds(text, [NewFeed("a", "https://a.example/", 'Say "hi"\\', "News")])
    assert result.startswith(text + "\r\n\r\n[[feeds]]\r\n")
    assert parse_config(result).feeds[0].title == 'Say "hi"\\'
    assert "\n" not in result.replace("\r\n", "")


def test_inline_array_of_feeds_is_edited_in_place() -> None:
    text = 'feeds = [\n  {id = "x", url = "https://x.example/"},  # keep me\n]\n# after\n'
    result = append_feeds(text, [NewFeed("y", "https://y.example/", None, "News")])
    assert "# keep me" in result and result.endswith("]\n# after\n")
    assert [f.id for f in parse_config(result).feeds] == ["x", "y"]


def test_a_broken_result_is_never_written(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text('[[feeds]]\nid = "a"\nurl = "https://a.example/"\n')
    with pytest.raises(ConfigError, match=r"feeds\.toml:6: feeds\[1\]\.id: duplicate feed id 'a'"):
        plan_edit(config, [NewFeed("a", "https://b.example/")])
    config.write_text("not = [toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        plan_edit(config, [NewFeed("b", "https://b.example/")])


def test_a_file_changed_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text("# v1\n")
    edit = plan_edit(config, [NewFeed("a", "https://a.example/")])
    config.write_text("# v2, edited by hand meanwhile\n")
    with pytest.raises(ConfigError, match="changed while it was being edited"):
        apply_edit(edit)
    assert config.read_text() == "# v2, edited by hand meanwhile\n"


def test_permissions_and_symlinks_are_kept(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    real.write_text("# secrets inside\n")
    real.chmod(0o600)
    link = tmp_path / "feeds.toml"
    link.symlink_to(real)
    apply_edit(plan_edit(link, [NewFeed("a", "https://a.example/")]))
    assert link.is_symlink() and "[[feeds]]" in real.read_text()
    assert real.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feeds.toml", "real.toml"]


# -- as a user runs it ------------------------------------------------------------------------------


def feedstream(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedstream", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        **kwargs,
    )


def test_commands_as_processes(files: tuple[Path, Path], tmp_path: Path) -> None:
    config, opml = files
    help_text = feedstream("--help").stdout
    for command in ("import", "export", "discover", "add"):
        assert command in help_text
    for flag in ("--config", "--dry-run", "--no-discover", "--allow-private"):
        assert flag in feedstream("import", "--help").stdout
    for flag in ("--id", "--category", "--pick"):
        assert flag in feedstream("add", "--help").stdout
    bad = tmp_path / "bad.opml"
    bad.write_bytes(b"<opml>\n<body>\n<outline text='x'>\n</opml>")
    result = feedstream("import", str(bad), "--config", str(config))
    assert (
        result.returncode == 2 and f"{bad}:4: not well-formed XML: mismatched tag" in result.stderr
    )
    broken_config = tmp_path / "broken.toml"
    broken_config.write_text('[[feeds]]\nid = "A B"\nurl = "https://a.example/"\n')
    result = feedstream("export", "--config", str(broken_config))
    assert (
        result.returncode == 2
        and "config error" in result.stderr
        and ":2: feeds[0].id" in result.stderr
    )
    result = feedstream("import", str(opml), "--config", str(config), "--dry-run", "--no-discover")
    assert result.returncode == 0 and "would add 4 feeds" in result.stdout
    assert config.read_text() == CONFIG
    result = feedstream("export", "--config", str(config))
    assert (
        result.returncode == 0
        and parse_opml(result.stdout.encode()).feeds[0].id == "python-insider"
    )
    result = feedstream("add", "https://example.org/", "--config", str(config), "--pick", "0")
    assert result.returncode == 2 and "not a number from 1" in result.stderr


async def test_discover_as_a_process_on_loopback(feed_server: FeedServer) -> None:
    two_feed_site(feed_server)
    command = [sys.executable, "-m", "feedstream", "discover", f"{feed_server.url}/", "--json"]
    with trio.fail_after(60):
        refused = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT
        )
        assert refused.returncode == 1
        assert "not a public address" in json.loads(refused.stdout)["error"]
        result = await trio.run_process(
            [*command, "--allow-private"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )
    assert result.returncode == 0, result.stderr
    assert [f["format"] for f in json.loads(result.stdout)["feeds"]] == ["atom", "rss"]
