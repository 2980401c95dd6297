"""``feedstream tail``: follow a feedstream server's long-poll from a terminal.

The decisions are plain functions: :func:`entries_query` builds each request, :func:`interpret`
turns an answer into a :class:`Page`, a :class:`Retry` or a :class:`Fatal`, :func:`retry_delay`
says how long to wait, :func:`format_entry` prints an entry. :func:`tail` is the loop that
carries them out over httpx on trio; :func:`run_tail` adds the terminal (stdout, stderr,
Ctrl-C).
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TextIO

import httpx
import trio

from feedstream import __version__
from feedstream.core.backoff import backoff_delay
from feedstream.core.times import parse_retry_after

logger = logging.getLogger(__name__)

__all__ = [
    "RESET_NOTE",
    "TOKEN_VARIABLE",
    "Fatal",
    "Page",
    "Retry",
    "TailOptions",
    "describe_error",
    "entries_query",
    "entries_url",
    "format_entry",
    "interpret",
    "retry_delay",
    "run_tail",
    "tail",
]

TOKEN_VARIABLE = "FEEDSTREAM_TOKEN"  # the environment variable --token defaults to
MAX_RETRY_AFTER = 600.0  # a longer Retry-After is taken as ten minutes
BACKOFF_SPREAD = (0.75, 1.25)  # +-25 % jitter: many clients must not come back at once
MAX_DOUBLINGS = 30
RESET_NOTE = (
    "feedstream tail: reset: entries were missed (the cursor is older than the server's "
    "backlog, or from another database); continuing with the newest"
)

Write = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class TailOptions:
    """What to follow and how. ``after`` None with ``backlog`` 0 starts from now."""

    url: str  # the server's base URL, e.g. http://127.0.0.1:8080
    feeds: tuple[str, ...] = ()  # () for every feed
    after: str | None = None  # a cursor to resume from
    backlog: int = 0  # show the newest N entries first (when not resuming), 0 to 500
    as_json: bool = False
    timeout: float = 25.0  # seconds each long-poll waits on the server
    limit: int = 100  # entries per answer
    min_backoff: float = 1.0  # first reconnect delay; doubles up to max_backoff
    max_backoff: float = 30.0
    token: str | None = field(default=None, repr=False)  # a private server's read_token

    def headers(self) -> dict[str, str]:
        """Headers of every request: the token as ``Authorization: Bearer`` (never in the URL)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@dataclass(frozen=True, slots=True)
class Page:
    cursor: str
    entries: list[dict[str, Any]]
    reset: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again later: the server is away, overloaded or failing."""

    reason: str
    retry_after: float | None = None  # seconds the server asked us to wait


@dataclass(frozen=True, slots=True)
class Fatal:
    """Stop: the request itself is wrong (a 4xx) or the URL is not a feedstream server."""

    reason: str


Outcome = Page | Retry | Fatal


# -- pure decisions ------------------------------------------------------------------------------


def entries_url(base_url: str) -> str:
    """``/api/entries`` under *base_url* (which may carry a path prefix)."""
    return base_url.rstrip("/") + "/api/entries"


def entries_query(cursor: str | None, options: TailOptions) -> dict[str, str]:
    """Parameters of the next request: a long-poll after *cursor*, or the first look."""
    params: dict[str, str] = {}
    if options.feeds:
        params["feeds"] = ",".join(options.feeds)
    if cursor is None:  # the newest entries at once, and the head cursor
        params["limit"] = str(options.backlog or 1)
    else:
        params.update(after=cursor, timeout=f"{options.timeout:g}", limit=str(options.limit))
    return params


def interpret(status: int, headers: Mapping[str, str], body: bytes, now: float) -> Outcome:
    """What an answer of ``GET /api/entries`` means for the loop."""
    if status == 200:
        try:
            data = json.loads(body)
        except ValueError:
            return Fatal("not a feedstream server: the answer is not JSON")
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("cursor"), str)
            or not isinstance(data.get("entries"), list)
            or not all(isinstance(entry, dict) for entry in data["entries"])
        ):
            return Fatal("not a feedstream server: no cursor and entries in the answer")
        return Page(data["cursor"], data["entries"], data.get("reset") is True)
    reason = _reason(status, body)
    if status == 401:
        return Fatal(f"{reason} (give the server's read token with --token or {TOKEN_VARIABLE})")
    if status in (408, 429) or 500 <= status < 600:
        return Retry(reason, parse_retry_after(headers.get("retry-after"), now, MAX_RETRY_AFTER))
    if 400 <= status < 500:
        return Fatal(reason)
    return Fatal(f"unexpected answer: {reason}")


def _reason(status: int, body: bytes) -> str:
    """``HTTP 400: <the error the server gave>``, or the status and its phrase."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, str) and error:
        return f"HTTP {status}: {_one_line(error)[:300]}"
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def retry_delay(
    failures: int, retry_after: float | None, options: TailOptions, jitter: float
) -> float:
    """Seconds before retry number *failures* (1 for the first).

    Doubles from ``min_backoff`` up to ``max_backoff``, spread by ±25 % with *jitter* in
    [0, 1) so that many clients do not come back at once; never sooner than the server's
    ``Retry-After`` (taken up to :data:`MAX_RETRY_AFTER`).
    """
    delay = backoff_delay(
        failures,
        jitter,
        base=options.min_backoff,
        cap=options.max_backoff,
        spread=BACKOFF_SPREAD,
        max_doublings=MAX_DOUBLINGS,
    )
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def format_entry(entry: Mapping[str, Any], as_json: bool = False) -> str:
    """One line for *entry*: ``time  feed  title  url``, or the entry as JSON."""
    if as_json:
        return json.dumps(entry, ensure_ascii=True)
    when = _text(entry.get("published")) or _text(entry.get("updated"))
    when = when or _text(entry.get("received")) or "-"
    parts = [
        when.ljust(20),
        _text(entry.get("feed")) or "-",
        _text(entry.get("title")) or "(untitled)",
    ]
    url = _text(entry.get("url"))
    if url:
        parts.append(url)
    return "  ".join(parts)


def _text(value: object) -> str | None:
    return _one_line(value) if isinstance(value, str) and value.strip() else None


def _one_line(text: str) -> str:
    """*text* on one line, with no control characters (no terminal escapes from the server)."""
    cleaned = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return " ".join(cleaned.split())


def describe_error(exc: Exception) -> str:
    """A short text for a failed request: its kind and httpx's message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the loop -------------------------------------------------------------------------------------


async def tail(
    client: httpx.AsyncClient,
    options: TailOptions,
    out: Write,
    err: Write,
    *,
    jitter: Callable[[], float] = random.random,
    wall_clock: Callable[[], float] = time.time,
) -> int:
    """Follow ``/api/entries`` until cancelled, writing entries with *out*, notes with *err*.

    Network errors, timeouts, 408, 429 and 5xx are retried with backoff (and ``Retry-After``);
    any other 4xx, or an answer that is not a feedstream page, returns 1.
    """
    url = entries_url(options.url)
    request_timeout = httpx.Timeout(10.0, read=options.timeout + 15.0)
    cursor = options.after
    failures = 0
    while True:
        outcome: Outcome
        try:
            response = await client.get(
                url,
                params=entries_query(cursor, options),
                headers=options.headers(),
                timeout=request_timeout,
            )
        except (httpx.TransportError, httpx.DecodingError) as exc:
            outcome = Retry(f"cannot reach {options.url}: {describe_error(exc)}")
        except httpx.HTTPError as exc:  # too many redirects, an invalid URL
            outcome = Fatal(describe_error(exc))
        else:
            outcome = interpret(
                response.status_code, response.headers, response.content, wall_clock()
            )
        if isinstance(outcome, Fatal):
            err(f"feedstream tail: {outcome.reason}")
            return 1
        if isinstance(outcome, Retry):
            failures += 1
            delay = retry_delay(failures, outcome.retry_after, options, jitter())
            err(f"feedstream tail: {outcome.reason}; retrying in {delay:.1f} s")
            await trio.sleep(delay)
            continue
        if failures:
            err("feedstream tail: reconnected")
            failures = 0
        if outcome.reset:
            err(RESET_NOTE)
        if cursor is not None or options.backlog or outcome.reset:
            for entry in outcome.entries:
                out(format_entry(entry, options.as_json))
        cursor = outcome.cursor


async def run_tail(
    options: TailOptions, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """The ``feedstream tail`` command: :func:`tail` on the terminal; Ctrl-C ends it with 0."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr

    def out(line: str) -> None:
        stdout.write(line + "\n")
        stdout.flush()

    def err(line: str) -> None:
        stderr.write(line + "\n")
        stderr.flush()

    code = 0
    headers = {"User-Agent": f"feedstream-tail/{__version__}"}
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with (
            httpx.AsyncClient(headers=headers, follow_redirects=True) as client,
            trio.open_nursery() as nursery,
        ):

            async def interrupt() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(interrupt)
            try:
                code = await tail(client, options, out, err)
            except BrokenPipeError:  # the reader went away (| head): a normal end
                _silence(stdout)
            nursery.cancel_scope.cancel()
    return code


def _silence(stream: TextIO) -> None:
    """Point *stream*'s file descriptor at /dev/null so that the exit-time flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError):
        pass
