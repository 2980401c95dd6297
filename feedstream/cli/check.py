"""``feedstream check``: fetch every polled feed of a config once and report what came back.

The decisions are plain functions, tested without a network: :func:`push_row`,
:func:`error_row` and :func:`result_row` turn what a fetch produced into a :class:`Row`,
:func:`render_table` / :func:`render_json` print the rows and :func:`exit_code` decides.
:func:`check_feeds` is the trio shell: it fetches the feeds concurrently under the server's own
limits (:class:`~feedstream.service.fetch.HostGate`), and parses each body off the event loop.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx
import trio

from feedstream.core.config import Config, FeedConfig
from feedstream.core.normalize import ParsedFeed
from feedstream.service.fetch import FetchError, FetchResult, HostGate, fetch, fetch_error_kind
from feedstream.service.ingest import Ingestor
from feedstream.service.parsing import parse_in_worker, parse_slots
from feedstream.websub.discovery import Discovery

logger = logging.getLogger(__name__)

__all__ = [
    "EXIT_BROKEN",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "Row",
    "check_feeds",
    "error_row",
    "error_words",
    "exit_code",
    "newest_date",
    "progress_line",
    "push_row",
    "render_json",
    "render_table",
    "result_row",
    "run_check",
    "summary_line",
]

EXIT_OK, EXIT_BROKEN, EXIT_INTERRUPTED = 0, 1, 130
STATUS_WIDTH = 40  # the STATUS cell holds a fetch error's text; longer ones are cut
HUB_WIDTH = 32

#: Parses a fetched body (and looks for its hub) somewhere other than the event loop.
Parse = Callable[..., Awaitable[Any]]
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class Row:
    """What checking one feed found. ``ok`` is False only for a feed that is broken."""

    id: str
    url: str | None  # None: a push-only feed, not fetched
    status: int | None = None  # HTTP status of the final answer
    error: str | None = None  # why no answer came back (a FetchError's text)
    format: str | None = None  # atom | rss | rdf | json
    entries: int | None = None
    newest: str | None = None  # RFC 3339, the latest published/updated date
    hub: str | None = None  # the first WebSub hub URL discovered
    problems: tuple[str, ...] = ()  # failures and notes, in the order found
    ok: bool = True

    @property
    def push_only(self) -> bool:
        return self.url is None

    def to_json(self) -> dict[str, Any]:
        """The row for scripts: always the same keys, ``null`` where unknown."""
        return {
            "id": self.id,
            "url": self.url,
            "status": self.status,
            "error": self.error,
            "format": self.format,
            "entries": self.entries,
            "newest": self.newest,
            "hub": self.hub,
            "problems": list(self.problems),
            "ok": self.ok,
        }


# -- turning results into rows (pure) ------------------------------------------------------------


def push_row(feed: FeedConfig) -> Row:
    """A push-only feed: nothing to fetch, nothing that can be broken from here."""
    return Row(id=feed.id, url=None)


# Words for a person, for the few kinds whose metric word does not read well as it is.
_ERROR_WORDS = {"timeout": "timed out", "error": "failed"}


def error_words(error: FetchError) -> str:
    """Why a fetch failed, in words: :func:`fetch_error_kind` made readable."""
    kind = fetch_error_kind(error)
    return _ERROR_WORDS.get(kind, kind.replace("_", " "))


def error_row(feed: FeedConfig, error: FetchError) -> Row:
    """A feed whose fetch failed before an answer was in hand."""
    kind = error_words(error)
    return Row(
        id=feed.id,
        url=feed.url,
        error=str(error) or type(error).__name__,
        problems=(f"fetch failed: {kind}",),
        ok=False,
    )


def result_row(
    feed: FeedConfig,
    result: FetchResult,
    parsed: ParsedFeed | None = None,
    discovery: Discovery | None = None,
) -> Row:
    """A feed that answered: *parsed* and *discovery* are given for a 200 answer's body.

    Broken: any status but 200 and 304 (the poller reads nothing else), or a body that is not a
    feed. Notes that leave the feed usable: a permanent redirect, a parse warning, no entries.
    """
    problems: list[str] = []
    ok = True
    status = result.status
    if result.permanent_url and result.permanent_url != feed.url:
        problems.append(f"moved to {result.permanent_url}")
    if status == 410:
        problems.append("410 Gone: the publisher removed it; feedstream stops polling it")
        ok = False
    elif status not in (200, 304):
        problems.append(_http_problem(status, result.headers))
        ok = False
    hub = discovery.hub_urls[0] if discovery is not None and discovery.hub_urls else None
    if status != 200 or parsed is None:
        return Row(feed.id, feed.url, status, hub=hub, problems=tuple(problems), ok=ok)
    if parsed.error:
        problems.append(parsed.error)
        return Row(feed.id, feed.url, status, hub=hub, problems=tuple(problems), ok=False)
    if parsed.warning:
        problems.append(f"warning: {parsed.warning}")
    if not parsed.entries:
        problems.append("no entries")
    return Row(
        id=feed.id,
        url=feed.url,
        status=status,
        format=parsed.format,
        entries=len(parsed.entries),
        newest=newest_date(parsed.entries),
        hub=hub,
        problems=tuple(problems),
        ok=ok,
    )


def _http_problem(status: int, headers: Mapping[str, str]) -> str:
    try:
        text = f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        text = f"HTTP {status}"
    if 200 <= status < 300:
        text += " (only 200 answers are read)"
    retry_after = headers.get("retry-after")
    if retry_after and status in (429, 503):
        text += f" (Retry-After: {retry_after.strip()[:40]})"
    return text


def newest_date(entries: Iterable[Mapping[str, Any]]) -> str | None:
    """The latest ``published`` or ``updated`` date of *entries* (RFC 3339 strings), or None."""
    dates = [
        value
        for entry in entries
        for value in (entry.get("published"), entry.get("updated"))
        if isinstance(value, str) and value
    ]
    return max(dates) if dates else None  # normalized "YYYY-MM-DDTHH:MM:SSZ": text order works


def exit_code(rows: Iterable[Row]) -> int:
    """0 when every polled feed is fine, 1 when any is broken."""
    return EXIT_OK if all(row.ok for row in rows) else EXIT_BROKEN


# -- rendering (pure) -----------------------------------------------------------------------------

_HEADERS = ("FEED", "STATUS", "FORMAT", "ENTRIES", "NEWEST", "HUB", "PROBLEMS")


def _cells(row: Row) -> tuple[str, ...]:
    if row.push_only:
        return (row.id, "push only", "-", "-", "-", "-", "-")
    if row.status is not None:
        status = str(row.status)
    else:
        status = _cut(row.error or "failed", STATUS_WIDTH)
    hub = (urlsplit(row.hub).hostname or row.hub) if row.hub else "no"
    return (
        row.id,
        status,
        row.format or "-",
        "-" if row.entries is None else str(row.entries),
        row.newest or "-",
        _cut(hub, HUB_WIDTH) if row.status == 200 else "-",
        "; ".join(row.problems) or "-",
    )


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _printable(text: str) -> str:
    """*text* with control characters (terminal escapes from a hostile server) made visible."""
    return "".join("?" if unicodedata.category(c) == "Cc" else c for c in text)


def render_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned text table (header first), ending with a summary line."""
    table = [_HEADERS, *(tuple(_printable(c) for c in _cells(row)) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_HEADERS) - 1)]
    lines = []
    for line in table:
        cells = [
            cell.rjust(width) if i == 3 and line is not table[0] else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=False))
        ]
        lines.append("  ".join([*cells, line[-1]]).rstrip())
    lines.append(summary_line(rows))
    return "\n".join(lines) + "\n"


def summary_line(rows: Sequence[Row]) -> str:
    """``3 polled feeds: 2 ok, 1 broken (gone); 1 push only``."""
    polled = [row for row in rows if not row.push_only]
    broken = [row.id for row in polled if not row.ok]
    text = f"{len(polled)} polled feed{'s' if len(polled) != 1 else ''}: "
    text += f"{len(polled) - len(broken)} ok, {len(broken)} broken"
    if broken:
        text += f" ({', '.join(broken)})"
    push = len(rows) - len(polled)
    if push:
        text += f"; {push} push only"
    return text


def render_json(rows: Sequence[Row]) -> str:
    """One JSON document: a list of :meth:`Row.to_json` objects, in config order."""
    return json.dumps([row.to_json() for row in rows], indent=2) + "\n"


def progress_line(done: int, total: int, last: str) -> str:
    """The progress indicator shown on a terminal while feeds are checked."""
    return f"checked {done}/{total} … {last}"


# -- the trio shell ---------------------------------------------------------------------------


async def check_feed(
    feed: FeedConfig,
    client: httpx.AsyncClient,
    gate: HostGate,
    parse: Parse = parse_in_worker,
    slots: trio.CapacityLimiter | None = None,
) -> Row:
    """Fetch *feed* once (unconditionally), parse the answer off the event loop, make its row."""
    if feed.url is None:
        return push_row(feed)
    try:
        async with gate.slot(feed.url):
            result = await fetch(client, feed.url, feed.limits)
    except FetchError as exc:
        return error_row(feed, exc)
    if result.status != 200:
        return result_row(feed, result)
    examiner = Ingestor(None, parse=parse, slots=slots or parse_slots())
    parsed, discovery = await examiner.examine(
        feed,
        result.body,
        content_type=result.content_type,
        via="poll",
        url=result.url,
        headers=result.headers,
    )
    return result_row(feed, result, parsed, discovery)


async def check_feeds(
    config: Config,
    *,
    client: httpx.AsyncClient | None = None,
    parse: Parse = parse_in_worker,
    progress: Progress | None = None,
) -> list[Row]:
    """Check every feed of *config* concurrently; the rows come back in config order.

    Fetches respect ``server.max_fetches``, ``per_host_fetches`` and ``host_gap``, as the
    server's own polling does. *progress* is called with (done, total, feed id) after each
    polled feed.
    """
    server = config.server
    gate = HostGate(total=server.max_fetches, per_host=server.per_host_fetches, gap=server.host_gap)
    slots = parse_slots()
    rows: list[Row | None] = [push_row(f) if f.url is None else None for f in config.feeds]
    total = sum(1 for row in rows if row is None)
    done = 0

    async def one(index: int, feed: FeedConfig, http: httpx.AsyncClient) -> None:
        nonlocal done
        rows[index] = await check_feed(feed, http, gate, parse, slots)
        done += 1
        if progress is not None:
            progress(done, total, feed.id)

    async def run_all(http: httpx.AsyncClient) -> None:
        async with trio.open_nursery() as nursery:
            for index, feed in enumerate(config.feeds):
                if feed.url is not None:
                    nursery.start_soon(one, index, feed, http)

    if client is not None:
        await run_all(client)
    else:
        async with httpx.AsyncClient() as own:
            await run_all(own)
    return [row for row in rows if row is not None]


class _TerminalProgress:
    """``checked 3/10 … feed-id`` on one line of *stream*, rewritten in place."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.width = 0

    def __call__(self, done: int, total: int, last: str) -> None:
        line = _printable(progress_line(done, total, last))[:79]
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def clear(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


async def run_check(
    config: Config,
    as_json: bool,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    *,
    parse: Parse = parse_in_worker,
) -> int:
    """The ``feedstream check`` command: check, print, return the exit code.

    Ctrl-C stops it quietly with exit code 130.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    show = _TerminalProgress(stderr) if stderr.isatty() else None
    rows: list[Row] | None = None
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def interrupt() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            async def work() -> None:
                nonlocal rows
                rows = await check_feeds(config, parse=parse, progress=show)
                nursery.cancel_scope.cancel()

            nursery.start_soon(interrupt)
            nursery.start_soon(work)
    if show is not None:
        show.clear()
    if rows is None:
        print("feedstream: check interrupted", file=stderr)
        return EXIT_INTERRUPTED
    stdout.write(render_json(rows) if as_json else render_table(rows))
    stdout.flush()
    return exit_code(rows)
