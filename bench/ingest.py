"""Ingest benchmark: N changing feeds polled by the real feedstream server for T seconds.

1. A loopback origin (stdlib ``ThreadingHTTPServer`` in a child process, so that it does not
   share this process's GIL) serves N feeds, RSS 2.0 and Atom alternating. Each document holds
   the newest ``--entries`` entries (HTML content with paragraphs, links, an image, a list;
   about 1.4 KB each) and gains ``--new`` entries every ``--interval`` seconds, each feed at its
   own phase, with an ETag (unchanged documents get 304).
2. Parse overhead, before the server starts and in this process: the same kind of documents
   through bare ``feedparser.parse`` and through feedstream's whole normalize path
   (``feedstream.core.normalize.parse_feed``: feedparser + normalizing + nh3), median time per
   document, and the ratio.
3. The real server (``feedstream.web.server.serve``, in-process, on trio) polls the N feeds every
   ``--interval`` seconds. After a warm-up (every feed's first document ingested), for
   ``--seconds`` seconds: entries ingested per second (from the cursor log), polls answered by
   the origin (200 / 304), this process's CPU time, and event-loop lag measured by a heartbeat
   task in the server's own trio loop that sleeps 10 ms and records how late it wakes.

All feeds live on one origin (one host:port), so the per-host politeness (``host_gap``,
``per_host_fetches``) is relaxed to the global cap; the global cap (``max_fetches`` = 10) is
kept. Nothing leaves 127.0.0.1.

With ``--rules N`` (say 100), the cost of ``[[rules]]``: N rules, half of them RE2 regexes, the
rest words, phrases and fields, most matching nothing and some matching often (highlight and
tag actions). Step 2 then also times the worker's whole ingest function
(``feedstream.service.parsing.sift``: parse, rules, fold keys) on the same documents without
rules and with the N rules, and reports the overhead per entry; step 3 runs twice, without and
with the rules, and reports CPU per entry ingested counting the parse worker processes too.

    .venv/bin/python bench/ingest.py                       # 50 feeds, 30 s
    .venv/bin/python bench/ingest.py --feeds 200 --seconds 60 --interval 5
    .venv/bin/python bench/ingest.py --rules 100           # rules overhead, and both runs
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.utils import formatdate
from functools import partial
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
_TEXT = (
    "feed stream poll entry parse trio nursery cursor backlog listener publish update release "
    "python server client socket buffer deadline timeout gzip redirect etag cache header body "
    "atom rss json sanitize link image paragraph quote list code value number field title the "
    "a of to and in is for on with as by at from that this it be are was"
)
WORDS = _TEXT.split()


# -- the documents ----------------------------------------------------------------------------


def entry_html(feed: int, seq: int) -> str:
    """About 1.2 KB of ordinary blog HTML: paragraphs, links, an image, a list, a quote."""
    rnd = random.Random(feed * 1_000_003 + seq)
    paragraphs = []
    for number in range(3):
        words = " ".join(rnd.choice(WORDS) for _ in range(32))
        paragraphs.append(
            f'<p>{words.capitalize()} <a href="/posts/{seq}/ref{number}">see {number}</a> '
            f"&amp; <em>{rnd.choice(WORDS)}</em>.</p>"
        )
    return (
        "".join(paragraphs)
        + f'<p><img src="/img/{seq}.png" alt="figure {seq}" width="640" height="360"></p>'
        + f"<ul><li>{rnd.choice(WORDS)}</li><li>value <code>x = {seq}</code></li></ul>"
        + f"<blockquote><p>{' '.join(rnd.choice(WORDS) for _ in range(12))}</p></blockquote>"
    )


def document(
    feed: int, head: int, *, entries: int, start: float, spacing: float, origin: str
) -> tuple[bytes, str]:
    """Feed *feed* when its newest entry is *head*: (body, content type). Newest first."""
    seqs = range(head, max(head - entries, 0), -1)
    base = f"{origin}/feed/{feed}"
    if feed % 2 == 0:
        items = "".join(
            f"<item><title>Feed {feed} entry {seq}: {WORDS[seq % len(WORDS)]}</title>"
            f"<link>{origin}/posts/{feed}/{seq}</link>"
            f'<guid isPermaLink="false">feed-{feed}-{seq}</guid>'
            f"<pubDate>{formatdate(start + seq * spacing, usegmt=True)}</pubDate>"
            f"<author>author{seq % 7}@example.org (Author {seq % 7})</author>"
            f"<category>{WORDS[seq % 11]}</category><category>{WORDS[seq % 13]}</category>"
            f"<description>Summary of entry {seq} of feed {feed}.</description>"
            f"<content:encoded><![CDATA[{entry_html(feed, seq)}]]></content:encoded></item>"
            for seq in seqs
        )
        body = (
            '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" '
            'xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>'
            f"<title>Bench feed {feed}</title><link>{base}</link>"
            f"<description>Feed {feed}</description>{items}</channel></rss>"
        )
        return body.encode(), "application/rss+xml; charset=utf-8"
    stamp = dt.datetime.fromtimestamp(start + head * spacing, dt.UTC)
    entries_xml = "".join(
        f"<entry><id>urn:bench:{feed}:{seq}</id>"
        f"<title>Feed {feed} entry {seq}: {WORDS[seq % len(WORDS)]}</title>"
        f'<link rel="alternate" href="{origin}/posts/{feed}/{seq}"/>'
        f"<published>{_rfc3339(start + seq * spacing)}</published>"
        f"<updated>{_rfc3339(start + seq * spacing)}</updated>"
        f"<author><name>Author {seq % 7}</name></author>"
        f'<category term="{WORDS[seq % 11]}"/>'
        f"<summary>Summary of entry {seq} of feed {feed}.</summary>"
        f'<content type="html">{escape(entry_html(feed, seq), quote=False)}</content></entry>'
        for seq in seqs
    )
    body = (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        f'<title>Bench feed {feed}</title><id>urn:bench:{feed}</id><link href="{base}"/>'
        f"<updated>{stamp.strftime('%Y-%m-%dT%H:%M:%SZ')}</updated>{entries_xml}</feed>"
    )
    return body.encode(), "application/atom+xml; charset=utf-8"


def _rfc3339(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the origin (runs in a child process) ------------------------------------------------------


def run_origin(settings: dict[str, Any]) -> None:
    """Serve the feeds until stdin closes; answer "stats" on stdin with a JSON line."""
    feeds, entries = settings["feeds"], settings["entries"]
    interval, new = settings["interval"], settings["new"]
    start = time.time()
    spacing = interval / new
    counts = {"200": 0, "304": 0, "other": 0, "bytes": 0}
    lock = threading.Lock()
    cache: dict[tuple[int, int], tuple[bytes, str]] = {}

    def head_of(feed: int) -> int:
        phase = interval * feed / feeds  # each feed changes at its own moment
        return entries + int((time.time() - start + phase) / interval) * new

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: httpx reuses its connections

        def do_GET(self) -> None:
            parts = self.path.split("/")
            if len(parts) != 3 or parts[1] != "feed" or not parts[2].isdigit():
                self._answer(404, b"not found", "text/plain", None, "other")
                return
            feed = int(parts[2])
            head = head_of(feed)
            etag = f'"{feed}-{head}"'
            if self.headers.get("If-None-Match") == etag:
                self._answer(304, b"", None, etag, "304")
                return
            key = (feed, head)
            with lock:
                cached = cache.get(key)
            if cached is None:
                origin = f"http://{HOST}:{self.server.server_address[1]}"
                cached = document(
                    feed, head, entries=entries, start=start, spacing=spacing, origin=origin
                )
                with lock:
                    cache.pop((feed, head - new), None)
                    cache[key] = cached
            self._answer(200, cached[0], cached[1], etag, "200")

        def _answer(
            self, status: int, body: bytes, kind: str | None, etag: str | None, count: str
        ) -> None:
            self.send_response(status)
            if kind:
                self.send_header("Content-Type", kind)
            if etag:
                self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)
            with lock:
                counts[count] += 1
                counts["bytes"] += len(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Origin(ThreadingHTTPServer):
        request_queue_size = 1024
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):  # a poller hung up: fine
                super().handle_error(request, client_address)

    server = Origin((HOST, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            with lock:
                print(json.dumps(counts), flush=True)
    server.shutdown()


class OriginProcess:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--origin", json.dumps(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.port = int(json.loads(self.proc.stdout.readline())["port"])
        self.url = f"http://{HOST}:{self.port}"

    def stats(self) -> dict[str, int]:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- rules ------------------------------------------------------------------------------------


def make_rules(count: int) -> list[dict[str, Any]]:
    """*count* rule tables, every other one a regex; a few match often, most never."""
    tables: list[dict[str, Any]] = []
    for index in range(count):
        word = WORDS[index % len(WORDS)]
        other = WORDS[(index * 7 + 3) % len(WORDS)]
        if index % 2:  # RE2, in the default scope or a field
            queries = [
                f"/\\b{word}[0-9]{{3,}}\\b/",
                f"title:/entry [0-9]+: {word}$/",
                f"/(?:{word}|{other})-[a-z]+-[0-9]+/",
                f"url:/posts\\/[0-9]+\\/{index}{index}[0-9]/",
                f"content:/{word} {other} {word}/",
            ]
        else:  # words, phrases, fields
            queries = [
                f"{word}{index} OR {other}{index}",
                f'"{word} {other} {word}"',
                f"title:{word} tag:{other}",
                f"author:nobody{index} OR feed:nothing{index}",
                f"({word}x OR {other}y) -tag:{word}",
            ]
        query = queries[(index // 2) % len(queries)]
        table: dict[str, Any] = {"id": f"rule{index:03d}", "query": query}
        if index % 10 == 4:
            table.update(action="tag", tag=f"t{index}")
        else:
            table["action"] = "highlight"
        tables.append(table)
    return tables


def children_cpu() -> float:
    """CPU seconds used so far by this process's live descendants (the parse workers), from
    /proc: getrusage counts children only once they have exited."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0

    def walk(pid: int) -> None:
        nonlocal total
        for listing in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                children = [int(c) for c in listing.read_text().split()]
            except OSError:
                continue
            for child in children:
                try:
                    fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
                walk(child)

    walk(os.getpid())
    return total


# -- parse overhead ----------------------------------------------------------------------------


def parse_overhead(args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per document: bare feedparser, feedparser as feedstream calls it, full."""
    import feedparser

    from feedstream.core.normalize import parse_feed

    origin = "http://127.0.0.1:8000"
    start = time.time()
    spacing = args.interval / args.new
    docs = [
        document(
            feed,
            args.entries + round_ * args.new,
            entries=args.entries,
            start=start,
            spacing=spacing,
            origin=origin,
        )
        for feed in range(2)
        for round_ in range(args.overhead_docs // 2)
    ]

    def bare(body: bytes, kind: str) -> object:
        return feedparser.parse(io.BytesIO(body))

    def core(body: bytes, kind: str) -> object:
        return feedparser.parse(
            io.BytesIO(body),
            response_headers={"content-type": kind},
            sanitize_html=False,
            resolve_relative_uris=False,
        )

    def full(body: bytes, kind: str) -> object:
        parsed = parse_feed(
            body, feed_id="bench", base_url=f"{origin}/feed/0", content_type=kind, via="poll"
        )
        assert parsed.error is None and len(parsed.entries) == args.entries
        return parsed

    timings: dict[str, list[float]] = {"bare": [], "core": [], "full": []}
    functions = {"bare": bare, "core": core, "full": full}
    if args.rules:
        from feedstream.core.config import FeedConfig
        from feedstream.core.rules import parse_rules
        from feedstream.service.parsing import rule_spec, sift

        feed = FeedConfig(id="bench", url=f"{origin}/feed/0")
        spec = rule_spec(parse_rules(make_rules(args.rules)))
        # A poll repeats the last document but for its --new newest entries: the ids the log
        # has already go to the worker, which skips them (see feedstream.service.ingest).
        known: dict[bytes, frozenset[str]] = {}
        for body, kind in docs:
            sifted = sift(body, feed, kind, feed.url, "poll", None, (), False)
            ids = [entry["id"] for entry in sifted.parsed.entries]  # oldest first
            known[body] = frozenset(ids[: -args.new])

        def sift_plain(body: bytes, kind: str) -> object:
            return sift(body, feed, kind, feed.url, "poll", None, (), True)

        def sift_rules(body: bytes, kind: str) -> object:
            return sift(body, feed, kind, feed.url, "poll", None, spec, True)

        def sift_plain_poll(body: bytes, kind: str) -> object:
            return sift(body, feed, kind, feed.url, "poll", None, (), True, known[body])

        def sift_rules_poll(body: bytes, kind: str) -> object:
            return sift(body, feed, kind, feed.url, "poll", None, spec, True, known[body])

        extra = {
            "sift_plain": sift_plain,
            "sift_rules": sift_rules,
            "sift_plain_poll": sift_plain_poll,
            "sift_rules_poll": sift_rules_poll,
        }
        timings.update({name: [] for name in extra})
        functions.update(extra)
    for body, kind in docs:
        for function in functions.values():
            function(body, kind)  # warm caches
    for _ in range(args.repeat):
        for body, kind in docs:
            for name, function in functions.items():  # interleaved: same conditions for all
                began = time.perf_counter()
                function(body, kind)
                timings[name].append(time.perf_counter() - began)
    result = {name: statistics.median(values) for name, values in timings.items()}
    result["doc_bytes"] = statistics.mean(len(body) for body, _ in docs)
    result["docs"] = len(docs)
    return result


# -- the ingest run ----------------------------------------------------------------------------


def quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def ingest(
    args: argparse.Namespace, origin: OriginProcess, data_dir: Path, rules: int = 0
) -> dict[str, Any]:
    import trio

    from feedstream.core.config import Config, FeedConfig, ServerConfig
    from feedstream.core.rules import parse_rules
    from feedstream.service.runtime import Runtime
    from feedstream.web.server import serve

    feeds = tuple(
        FeedConfig(id=f"feed{i:04d}", url=f"{origin.url}/feed/{i}", interval=args.interval)
        for i in range(args.feeds)
    )
    config = Config(
        server=ServerConfig(
            host=HOST,
            port=0,
            data_dir=data_dir,
            backlog=1000,
            max_fetches=10,
            per_host_fetches=10,  # every feed is on the one origin: see the module docstring
            host_gap=0.0,
        ),
        feeds=feeds,
        source="<bench>",
        rules=tuple(parse_rules(make_rules(rules))),
    )
    runtime = Runtime(config)
    stop = trio.Event()
    lags: list[float] = []
    measuring = False

    async def heartbeat() -> None:
        while True:
            began = trio.current_time()
            await trio.sleep(0.010)
            if measuring:
                lags.append(trio.current_time() - began - 0.010)

    def total() -> int:
        return sum(runtime.log.counts().values())

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, config, runtime=runtime, shutdown_trigger=stop.wait))
        async with trio.open_nursery() as beating:
            beating.start_soon(heartbeat)
            warm_began = trio.current_time()
            with trio.fail_after(max(60.0, 4 * args.interval)):
                while True:
                    counts = runtime.log.counts()
                    if all(counts.get(feed.id, 0) >= args.entries for feed in feeds):
                        break
                    await trio.sleep(0.05)
            warm_up = trio.current_time() - warm_began
            stats_before = await trio.to_thread.run_sync(origin.stats)
            entries_before = total()
            usage_before = resource.getrusage(resource.RUSAGE_SELF)
            workers_before = children_cpu()
            began = trio.current_time()
            measuring = True
            await trio.sleep(args.seconds)
            measuring = False
            elapsed = trio.current_time() - began
            usage_after = resource.getrusage(resource.RUSAGE_SELF)
            workers_after = children_cpu()
            entries_after = total()
            stats_after = await trio.to_thread.run_sync(origin.stats)
            loop_lag = runtime.lag.stats()
            recent = runtime.log.read(None, feeds=None, limit=1000).entries
            beating.cancel_scope.cancel()
        stop.set()  # graceful shutdown of the server
    cpu = (usage_after.ru_utime - usage_before.ru_utime) + (
        usage_after.ru_stime - usage_before.ru_stime
    )
    lags.sort()
    return {
        "warm_up": warm_up,
        "elapsed": elapsed,
        "entries": entries_after - entries_before,
        "ok": stats_after["200"] - stats_before["200"],
        "not_modified": stats_after["304"] - stats_before["304"],
        "bytes": stats_after["bytes"] - stats_before["bytes"],
        "cpu": cpu,
        "worker_cpu": workers_after - workers_before,
        "rules": rules,
        "matched": sum('"matched":[]' not in entry.json for entry in recent) / len(recent),
        "lag": {
            "samples": len(lags),
            "p50": quantile(lags, 0.50),
            "p99": quantile(lags, 0.99),
            "max": lags[-1] if lags else math.nan,
        },
        "monitor": loop_lag,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# -- report ------------------------------------------------------------------------------------


def versions() -> str:
    from importlib.metadata import version

    names = ("feedstream", "feedparser", "nh3", "httpx", "trio", "hypercorn")
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except Exception:
            found.append(f"{name} ?")
    return ", ".join(found)


def rule_rows(
    args: argparse.Namespace,
    overhead: dict[str, float],
    run: dict[str, Any],
    ruled: dict[str, Any],
) -> list[tuple[str, str, str]]:
    """What ``--rules`` adds: the worker's ingest function with and without the rules, and the
    two server runs' CPU per entry (this process and the parse workers)."""
    plain, with_rules = overhead["sift_plain"], overhead["sift_rules"]
    per_entry = (with_rules - plain) / args.entries
    plain_poll, rules_poll = overhead["sift_plain_poll"], overhead["sift_rules_poll"]
    per_new = (rules_poll - plain_poll) / args.new

    def cpu_per_entry(result: dict[str, Any]) -> float:
        return (result["cpu"] + result["worker_cpu"]) / max(result["entries"], 1)

    base, more = cpu_per_entry(run), cpu_per_entry(ruled)
    return [
        (
            "worker ingest (sift), all new: no rules",
            f"{plain * 1000:.2f} ms/doc",
            f"parse + fold keys, {plain / args.entries * 1e6:.0f} µs per entry",
        ),
        (
            f"worker ingest (sift), all new: {args.rules} rules",
            f"{with_rules * 1000:.2f} ms/doc",
            f"+{per_entry * 1e6:.1f} µs per entry (+{(with_rules / plain - 1) * 100:.1f} %), "
            f"{args.rules // 2} of them regexes",
        ),
        (
            f"  a poll ({args.new} new of {args.entries}): no rules",
            f"{plain_poll * 1000:.2f} ms/doc",
            "the other entries skipped by id",
        ),
        (
            f"  a poll ({args.new} new of {args.entries}): {args.rules} rules",
            f"{rules_poll * 1000:.2f} ms/doc",
            f"+{per_new * 1e6:.1f} µs per new entry (+{(rules_poll / plain_poll - 1) * 100:.1f} "
            "% per document)",
        ),
        (
            "server run without rules: CPU",
            f"{run['cpu'] / run['elapsed']:.2f} + {run['worker_cpu'] / run['elapsed']:.2f}",
            f"cores (this process + parse workers); {base * 1e6:.0f} µs per entry ingested",
        ),
        (
            f"server run with {args.rules} rules: CPU",
            f"{ruled['cpu'] / ruled['elapsed']:.2f} + {ruled['worker_cpu'] / ruled['elapsed']:.2f}",
            f"cores; {more * 1e6:.0f} µs per entry ingested ({(more / base - 1) * 100:+.1f} %); "
            f"{ruled['entries'] / ruled['elapsed']:,.1f} entries/s; "
            f"{ruled['matched'] * 100:.0f} % of entries matched a rule",
        ),
        (
            f"  event-loop lag p99 with {args.rules} rules",
            f"{ruled['lag']['p99'] * 1000:.2f} ms",
            f"without: {run['lag']['p99'] * 1000:.2f} ms",
        ),
    ]


def report(
    args: argparse.Namespace,
    overhead: dict[str, float],
    run: dict[str, Any],
    ruled: dict[str, Any] | None = None,
) -> str:
    offered = args.feeds * args.new / args.interval
    polls = run["ok"] + run["not_modified"]
    seconds = run["elapsed"]
    lag = run["lag"]
    ratio = overhead["full"] / overhead["bare"]
    rows = [
        ("entries ingested / s", f"{run['entries'] / seconds:,.1f}", f"offered {offered:,.1f}"),
        (
            "polls / s (200 + 304)",
            f"{polls / seconds:,.1f}",
            f"scheduled {args.feeds / args.interval:,.1f}; {run['ok']} x 200, "
            f"{run['not_modified']} x 304, {run['bytes'] / seconds / 1e6:.2f} MB/s",
        ),
        (
            "feedstream CPU",
            f"{run['cpu'] / seconds:.2f} cores",
            f"{run['cpu'] * 1000 / max(run['ok'], 1):.1f} ms per 200 answer",
        ),
        ("parse: bare feedparser.parse", f"{overhead['bare'] * 1000:.2f} ms/doc", "defaults"),
        (
            "parse: feedparser as feedstream calls it",
            f"{overhead['core'] * 1000:.2f} ms/doc",
            "sanitize_html / resolve_relative_uris off",
        ),
        (
            "parse: feedstream parse_feed (full)",
            f"{overhead['full'] * 1000:.2f} ms/doc",
            f"x{ratio:.2f} of bare feedparser, x{overhead['full'] / overhead['core']:.2f} "
            "of feedparser as called",
        ),
        (
            "event-loop lag p50 / p99 / max",
            f"{lag['p50'] * 1000:.2f} / {lag['p99'] * 1000:.2f} / {lag['max'] * 1000:.2f} ms",
            f"{lag['samples']} beats of 10 ms",
        ),
        (
            "  (server's own LagMonitor)",
            f"{run['monitor']['p50_ms']:.2f} / {run['monitor']['p99_ms']:.2f} / "
            f"{run['monitor']['max_ms']:.2f} ms",
            "100 ms period, last 600 beats",
        ),
        ("max RSS (this process)", f"{run['max_rss_mib']:.0f} MiB", ""),
    ]
    if ruled is not None:
        rows += rule_rows(args, overhead, run, ruled)
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"feedstream ingest benchmark, {now}",
        f"machine   {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}",
        f"versions  {versions()}",
        f"workload  {args.feeds} feeds (RSS/Atom alternating) on one loopback origin "
        f"(stdlib ThreadingHTTPServer, child process), {args.entries} entries per document "
        f"(~{overhead['doc_bytes'] / 1024:.0f} KiB), {args.new} new entries per feed every "
        f"{args.interval:g} s, polled every {args.interval:g} s",
        f"measured  {seconds:.1f} s after a {run['warm_up']:.1f} s warm-up (every feed's first "
        f"document in); parse figures: median of {args.repeat} x {overhead['docs']:.0f} documents",
        "",
        f"{'metric'.ljust(width)}  {'value'.rjust(value_width)}  note",
        f"{'-' * width}  {'-' * value_width}  {'-' * 30}",
    ]
    lines += [
        f"{name.ljust(width)}  {value.rjust(value_width)}  {note}" for name, value, note in rows
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=50, help="feeds to poll (default 50)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured run (default 30)")
    parser.add_argument(
        "--interval", type=float, default=2.0, help="poll interval = change interval (default 2)"
    )
    parser.add_argument("--new", type=int, default=5, help="new entries per change (default 5)")
    parser.add_argument("--entries", type=int, default=50, help="entries per document (50)")
    parser.add_argument(
        "--overhead-docs", type=int, default=20, help="documents for the parse figures (20)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="parses of each document (5)")
    parser.add_argument(
        "--rules",
        type=int,
        default=0,
        help="also measure N [[rules]] (half regex): the worker's cost per entry, and a second "
        "server run with them (default 0: no rules)",
    )
    parser.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    parser.add_argument("--origin", help=argparse.SUPPRESS)  # internal: run as the origin
    args = parser.parse_args()
    if args.origin:
        run_origin(json.loads(args.origin))
        return
    if args.feeds < 1 or args.seconds <= 0 or args.interval <= 0 or args.new < 1:
        parser.error("--feeds, --seconds, --interval and --new must be positive")
    if args.rules < 0:
        parser.error("--rules must be 0 or more")

    import trio

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print("measuring parse overhead...", file=sys.stderr, flush=True)
    overhead = parse_overhead(args)
    settings = {
        "feeds": args.feeds,
        "entries": args.entries,
        "interval": args.interval,
        "new": args.new,
    }
    origin = OriginProcess(settings)
    try:
        with tempfile.TemporaryDirectory(prefix="feedstream-bench-") as data_dir:
            print(
                f"ingesting from {args.feeds} feeds for {args.seconds:g} s...",
                file=sys.stderr,
                flush=True,
            )
            run = trio.run(ingest, args, origin, Path(data_dir) / "plain")
        ruled = None
        if args.rules:
            with tempfile.TemporaryDirectory(prefix="feedstream-bench-") as data_dir:
                print(
                    f"again with {args.rules} rules for {args.seconds:g} s...",
                    file=sys.stderr,
                    flush=True,
                )
                ruled = trio.run(ingest, args, origin, Path(data_dir) / "rules", args.rules)
    finally:
        origin.close()
    print(report(args, overhead, run, ruled))
    if args.json:
        print(json.dumps({"overhead": overhead, "run": run, "ruled": ruled}, indent=2))


if __name__ == "__main__":
    main()
