"""``feedstream import``, ``export``, ``discover`` and ``add``: bringing feeds into a config.

* ``import FILE.opml --config feeds.toml [--dry-run] [--no-discover]`` adds every feed of an OPML
  file that the config lacks. Folders become ``category``; ids come from titles
  (:func:`feedstream.core.opml.ids_for`); an outline with only a web page (``htmlUrl``) goes
  through discovery and gets the best feed found there; a URL already in the config or earlier
  in the file (compared by :func:`~feedstream.core.opml.url_key`) is skipped and reported.
* ``export --config feeds.toml`` writes OPML 2.0 to stdout.
* ``discover URL [--json]`` prints the feeds a page offers, each fetched and parsed first.
* ``add URL --config feeds.toml [--id X] [--category Y] [--pick N]`` discovers and appends one
  feed: the only one found, the one picked on a terminal, or ``--pick N``.

Config edits go through :mod:`feedstream.cli.configedit`: appended, validated whole, written
atomically; ``--dry-run`` and every refusal write nothing.

Exit codes: 0 done (an import that found only duplicates is done too); 1 no feed found, or the
feed is already in the config; 2 usage, config or OPML errors (the OPML's line is named).

Discovery refuses private addresses (loopback, LAN) unless ``--allow-private`` is given: OPML
files and pages come from elsewhere, and their URLs should not reach into the local network
without the operator saying so.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import httpx
import trio

from feedstream.cli.configedit import NewFeed, apply_edit, plan_edit
from feedstream.core.config import FEED_ID_RE, Config, ConfigError, ServerConfig, load_config
from feedstream.core.opml import (
    MAX_OPML_BYTES,
    OpmlDocument,
    OpmlError,
    OpmlFeed,
    derive_ids,
    export_opml,
    ids_for,
    parse_opml,
    url_key,
)
from feedstream.log.base import Offload
from feedstream.service.discover import Candidate, Report, Resolver, explore, host_gate
from feedstream.service.fetch import HostGate
from feedstream.service.parsing import parse_in_worker

logger = logging.getLogger(__name__)

__all__ = [
    "COMMANDS",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "Console",
    "Network",
    "add_feed",
    "add_parsers",
    "discover_feeds",
    "export_feeds",
    "import_feeds",
    "run",
]

COMMANDS = ("import", "export", "discover", "add")
EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE = 0, 1, 2
SITE_CONCURRENCY = 4  # htmlUrl-only outlines discovered at once during an import
RELOAD_HINT = "A running server picks the new feeds up on SIGHUP or POST /api/admin/reload."


@dataclass(slots=True)
class Network:
    """How discovery reaches the network: replaced by tests (a mock transport, inline parsing)."""

    allow_private: bool = False
    transport: httpx.AsyncBaseTransport | None = None
    resolve: Resolver | None = None
    parse: Offload = parse_in_worker

    async def explore(
        self, url: str, server: ServerConfig | None = None, gate: HostGate | None = None
    ) -> Report:
        return await explore(
            url,
            server=server,
            gate=gate,
            transport=self.transport,
            allow_private=self.allow_private,
            resolve=self.resolve,
            parse=self.parse,
        )


@dataclass(slots=True)
class Console:
    """Where a command reads and writes (the process's own streams by default)."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)

    def say(self, text: str = "") -> None:
        print(text, file=self.out)

    def warn(self, text: str) -> None:
        print(text, file=self.err)


def _printable(text: str) -> str:
    """*text* with control characters (terminal escapes from a hostile page) made visible."""
    return "".join("?" if unicodedata.category(c) == "Cc" else c for c in text)


# -- import ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """What an import will do, filled as the OPML is read."""

    config: Config
    keys: dict[str, str] = field(default_factory=dict)  # url_key -> where it already is
    feeds: list[OpmlFeed] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duplicates: int = 0
    unfound: int = 0

    def __post_init__(self) -> None:
        for feed in self.config.feeds:
            if feed.url is not None:
                self.keys.setdefault(url_key(feed.url), f"in the config as {feed.id!r}")

    def take(self, feed: OpmlFeed) -> None:
        key = url_key(feed.xml_url)
        where = self.keys.get(key)
        if where is not None:
            self.duplicates += 1
            self.notes.append(f"line {feed.line}: duplicate, skipped: {feed.xml_url} ({where})")
            return
        self.keys[key] = f"at line {feed.line} of the OPML file"
        self.feeds.append(feed)


def read_opml_file(path: Path) -> OpmlDocument:
    """Read and parse an OPML file; a file over the size limit is refused without being read."""
    try:
        size = path.stat().st_size
        if size > MAX_OPML_BYTES:
            with path.open("rb") as stream:  # only as far as the limit, to name its line
                head = stream.read(MAX_OPML_BYTES + 1)
            return parse_opml(head)
        return parse_opml(path.read_bytes())
    except OSError as exc:
        raise OpmlError(f"cannot read: {exc.strerror or exc}") from None


async def import_feeds(
    opml_path: str | Path,
    config_path: str | Path,
    *,
    dry_run: bool = False,
    discover_sites: bool = True,
    console: Console | None = None,
    network: Network | None = None,
) -> int:
    """``feedstream import``: add the OPML file's new feeds to the config."""
    console = console or Console()
    network = network or Network()
    config = load_config(config_path)
    try:
        document = read_opml_file(Path(opml_path))
    except OpmlError as exc:
        where = f"{opml_path}:{exc.line}" if exc.line else str(opml_path)
        console.warn(f"feedstream: {where}: {exc.message}")
        return EXIT_USAGE
    plan = _Plan(config)
    for feed in document.feeds:
        plan.take(feed)
    if document.sites and discover_sites:
        await _discover_sites(document, plan, config.server, network)
    elif document.sites:
        for site in document.sites:
            plan.notes.append(f"line {site.line}: not discovered (--no-discover): {site.html_url}")
    for skipped in document.skipped:
        plan.notes.append(f"line {skipped.line}: skipped: {skipped.reason}")
    taken = [feed.id for feed in config.feeds]
    ids = ids_for(plan.feeds, taken)
    new = [
        NewFeed(feed_id, feed.xml_url, feed.title, feed.category)
        for feed_id, feed in zip(ids, plan.feeds, strict=True)
    ]
    if new:
        edit = plan_edit(config_path, new)  # validates the whole result; ConfigError: exit 2
        if not dry_run:
            apply_edit(edit)
    for added in new:
        category = f"  [{added.category}]" if added.category else ""
        console.say(_printable(f"+ {added.id}  {added.url}{category}"))
    for note in plan.notes:
        console.say(_printable(f"  {note}"))
    console.say(_import_summary(len(new), plan, document, config_path, dry_run, discover_sites))
    if new and not dry_run:
        console.say(RELOAD_HINT)
    return EXIT_OK


async def _discover_sites(
    document: OpmlDocument, plan: _Plan, server: ServerConfig, network: Network
) -> None:
    """Find the best feed of each htmlUrl-only outline, concurrently; keep the file's order."""
    reports: list[Report | None] = [None] * len(document.sites)
    limiter = trio.CapacityLimiter(SITE_CONCURRENCY)
    gate = host_gate(server)  # one politeness for every site: several may share a host

    async def one(index: int, url: str) -> None:
        async with limiter:
            reports[index] = await network.explore(url, server, gate)

    async with trio.open_nursery() as nursery:
        for index, site in enumerate(document.sites):
            nursery.start_soon(one, index, site.html_url)
    for site, report in zip(document.sites, reports, strict=True):
        assert report is not None
        offered = report.offered
        if not offered:
            plan.unfound += 1
            plan.notes.append(f"line {site.line}: no feed found at {site.html_url}: {_why(report)}")
            continue
        best = offered[0]
        plan.take(OpmlFeed(site.title, best.url, site.html_url, site.category, line=site.line))


def _why(report: Report) -> str:
    if report.error:
        return report.error
    reasons = [f"{c.link}: {c.error}" for c in report.candidates if c.error]
    return "; ".join(reasons[:3]) if reasons else "the page names no feed"


def _import_summary(
    added: int,
    plan: _Plan,
    document: OpmlDocument,
    config_path: str | Path,
    dry_run: bool,
    discover_sites: bool,
) -> str:
    verb = "would add" if dry_run else "added"
    text = f"{verb} {added} feed{'s' if added != 1 else ''} to {config_path}"
    parts = [f"{plan.duplicates} duplicate{'s' if plan.duplicates != 1 else ''} skipped"]
    if document.sites:
        if discover_sites:
            parts.append(f"{plan.unfound} site{'s' if plan.unfound != 1 else ''} without a feed")
        else:
            parts.append(f"{len(document.sites)} site{'s' if len(document.sites) != 1 else ''} "
                         "not discovered")  # fmt: skip
    if document.skipped:
        parts.append(f"{len(document.skipped)} unusable outline(s)")
    text += "; " + ", ".join(parts)
    return text + (" (dry run: nothing written)" if dry_run else "")


# -- export ---------------------------------------------------------------------------------------


def export_feeds(config_path: str | Path, out: BinaryIO, err: TextIO | None = None) -> int:
    """``feedstream export``: the config's polled feeds as OPML 2.0 on *out*."""
    config = load_config(config_path)
    out.write(export_opml(config.feeds))
    out.flush()
    push_only = [feed.id for feed in config.feeds if feed.url is None]
    if push_only:
        print(
            f"feedstream: not exported (push-only, no URL): {', '.join(push_only)}",
            file=err or sys.stderr,
        )
    return EXIT_OK


# -- discover -------------------------------------------------------------------------------------

_COLUMNS = ("#", "URL", "FORMAT", "ENTRIES", "NEWEST", "HUB", "TITLE")


def render_candidates(candidates: Sequence[Candidate]) -> str:
    """The offered candidates as an aligned table, numbered from 1 (the numbers --pick takes)."""
    rows: list[tuple[str, ...]] = [_COLUMNS]
    for number, c in enumerate(candidates, start=1):
        rows.append(
            (
                str(number),
                c.url,
                c.format or "-",
                "-" if c.entry_count is None else str(c.entry_count),
                c.newest_entry or "-",
                c.hub or "-",
                c.title or "-",
            )
        )
    rows = [tuple(_printable(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _report_json(report: Report) -> str:
    document: dict[str, Any] = {
        "url": report.url,
        "page_url": report.page_url,
        "error": report.error,
        "feeds": [c.to_json() for c in report.offered],
        "rejected": [c.to_json() for c in report.candidates if not c.ok],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def _tell_rejected(report: Report, console: Console) -> None:
    if report.error:
        console.warn(_printable(f"feedstream: {report.url}: {report.error}"))
    for candidate in report.candidates:
        if not candidate.ok:
            console.warn(_printable(f"  not a feed: {candidate.link}: {candidate.error}"))


async def discover_feeds(
    url: str,
    *,
    as_json: bool = False,
    console: Console | None = None,
    network: Network | None = None,
    server: ServerConfig | None = None,
) -> int:
    """``feedstream discover``: print the feeds *url* offers; 1 when there are none."""
    console = console or Console()
    network = network or Network()
    report = await network.explore(url, server)
    if as_json:
        console.say(_report_json(report))
    elif report.offered:
        console.say(render_candidates(report.offered))
    if not as_json:
        _tell_rejected(report, console)
    if not report.offered:
        if not as_json:
            console.warn(_printable(f"feedstream: no feed found at {url}"))
        return EXIT_NOT_FOUND
    return EXIT_OK


# -- add ------------------------------------------------------------------------------------------


async def add_feed(
    url: str,
    config_path: str | Path,
    *,
    feed_id: str | None = None,
    category: str | None = None,
    pick: int | None = None,
    console: Console | None = None,
    network: Network | None = None,
) -> int:
    """``feedstream add``: discover the feeds of *url* and append the chosen one."""
    console = console or Console()
    network = network or Network()
    config = load_config(config_path)
    taken = {feed.id for feed in config.feeds}
    if feed_id is not None and (not FEED_ID_RE.match(feed_id) or feed_id in taken):
        problem = "is taken" if feed_id in taken else "must be 1-64 characters of a-z, 0-9, - and _"
        console.warn(f"feedstream: --id {feed_id!r} {problem}")
        return EXIT_USAGE
    report = await network.explore(url, config.server)
    offered = report.offered
    if not offered:
        _tell_rejected(report, console)
        console.warn(_printable(f"feedstream: no feed found at {url}; nothing added"))
        return EXIT_NOT_FOUND
    choice = await _choose(offered, pick, console)
    if choice is None:
        return EXIT_USAGE
    candidate = offered[choice]
    for feed in config.feeds:
        if feed.url is not None and url_key(feed.url) == url_key(candidate.url):
            console.warn(
                _printable(f"feedstream: {candidate.url} is already in the config as {feed.id!r}")
                + "; nothing added"
            )
            return EXIT_NOT_FOUND
    new_id = feed_id or derive_ids([(candidate.title, candidate.url)], taken)[0]
    new = NewFeed(new_id, candidate.url, None, category)
    try:
        edit = plan_edit(config_path, [new])
    except ConfigError as exc:
        console.warn(f"feedstream: not written, the result would not load: {exc}")
        return EXIT_USAGE
    apply_edit(edit)
    console.say(_printable(f"added {new_id}: {candidate.url} ({candidate.title or 'untitled'})"))
    console.say(RELOAD_HINT)
    return EXIT_OK


async def _choose(offered: Sequence[Candidate], pick: int | None, console: Console) -> int | None:
    """The index of the candidate to add, or None (after saying why) when none is chosen."""
    if pick is not None:
        if not 1 <= pick <= len(offered):
            console.warn(f"feedstream: --pick {pick}: choose 1 to {len(offered)}")
            console.say(render_candidates(offered))
            return None
        return pick - 1
    if len(offered) == 1:
        return 0
    console.say(render_candidates(offered))
    if not console.stdin.isatty():
        console.warn(f"feedstream: {len(offered)} feeds found; choose one with --pick N")
        return None
    console.out.write(f"feed to add (1-{len(offered)}, empty to cancel): ")
    console.out.flush()
    answer = (await trio.to_thread.run_sync(console.stdin.readline)).strip()
    if answer.isdigit() and 1 <= int(answer) <= len(offered):
        return int(answer) - 1
    console.warn("feedstream: nothing added")
    return None


# -- the command line ----------------------------------------------------------------------------


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"not a number from 1: {value!r}")
    return int(value)


def add_parsers(commands: Any, log_level: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the four subcommands on *commands* (an argparse subparsers object)."""

    def config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config", "-c", required=True, metavar="PATH", help="the TOML config file"
        )

    def private(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--allow-private",
            action="store_true",
            help="let discovery fetch loopback and private-network addresses (refused by default)",
        )

    sub = commands.add_parser(
        "import",
        help="add the feeds of an OPML file to a config",
        description="Add every feed of an OPML 1.0/2.0 file that the config lacks: folders "
        "become categories, ids come from titles, outlines with only a web page (htmlUrl) go "
        "through discovery, and URLs already present are skipped and reported. The config "
        "keeps its comments and layout; the result is validated before it is written. "
        "Exit code 2 (naming the line) for a file that is not usable OPML.",
    )
    sub.add_argument("opml", metavar="FILE.opml", help="the OPML file")
    config(sub)
    sub.add_argument(
        "--dry-run", action="store_true", help="print what would be added; write nothing"
    )
    sub.add_argument(
        "--no-discover",
        action="store_true",
        help="skip outlines that have only a web page (htmlUrl) instead of discovering their feed",
    )
    private(sub)
    log_level(sub)

    sub = commands.add_parser(
        "export",
        help="write a config's feeds as OPML 2.0 to stdout",
        description="Write the polled feeds of a config as OPML 2.0 (categories as folders) "
        "to stdout. Importing the result into the same config changes nothing.",
    )
    config(sub)
    log_level(sub)

    sub = commands.add_parser(
        "discover",
        help="list the feeds a web page offers, each fetched and checked",
        description="Fetch a page and list the feeds it names (<link rel=alternate>, else "
        "common paths such as /feed), each fetched and parsed before it is listed: URL, "
        "format, entries, newest entry, WebSub hub and title. A URL that is a feed is listed as "
        "it is. Exit code 1 when no feed is found.",
    )
    sub.add_argument("url", metavar="URL", help="a web page or feed address")
    sub.add_argument("--json", action="store_true", help="print one JSON document for scripts")
    private(sub)
    log_level(sub)

    sub = commands.add_parser(
        "add",
        help="discover a page's feed and add it to a config",
        description="Discover the feeds of a page and append one to the config: the only one "
        "found, the one chosen on a terminal, or --pick N. The whole file is validated before "
        "it is written. Exit code 1 when no feed is found or it is already in the config.",
    )
    sub.add_argument("url", metavar="URL", help="a web page or feed address")
    config(sub)
    sub.add_argument(
        "--id", dest="feed_id", metavar="ID", help="the new feed's id (default: from its title)"
    )
    sub.add_argument("--category", metavar="NAME", help="the new feed's category")
    sub.add_argument(
        "--pick",
        type=_positive,
        metavar="N",
        help="when several feeds are found, add the N-th listed (needed without a terminal)",
    )
    private(sub)
    log_level(sub)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand *args* names; ConfigError is left to the caller (exit code 2)."""
    network = Network(allow_private=getattr(args, "allow_private", False))
    if args.command == "export":
        return export_feeds(args.config, sys.stdout.buffer)
    if args.command == "import":
        return trio.run(
            lambda: import_feeds(
                args.opml,
                args.config,
                dry_run=args.dry_run,
                discover_sites=not args.no_discover,
                network=network,
            )
        )
    if args.command == "discover":
        return trio.run(lambda: discover_feeds(args.url, as_json=args.json, network=network))
    return trio.run(
        lambda: add_feed(
            args.url,
            args.config,
            feed_id=args.feed_id,
            category=args.category,
            pick=args.pick,
            network=network,
        )
    )
