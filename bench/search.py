"""History search benchmark: N stored entries, search latency, size, and one retention pass.

1. **Fill.** A fresh database made by feedstream's own ``Store`` (its schema: entries, the FTS5
   index, retired ids), then filled directly with ``executemany`` in transactions of
   ``--batch`` rows (the log's one-row-at-a-time insert path would take an hour for a million):
   N entries of 500 feeds, each a few hundred words (150 to 400, about 250 on average) of
   feed-like text drawn from a synthetic 60,000-word vocabulary with a Zipf distribution
   (exponent 1.07, as word frequencies in English), HTML paragraphs, a title, a summary (the
   first words, as the normalizer makes it), an author and two or three tags. The index gets
   exactly what ``feedstream.core.search.search_text`` makes of each entry (checked on a sample).
   Entries are stored one second apart, so that the oldest 10 % can be made old.
2. **Size**: the database file per 100,000 entries, and per table (``dbstat``).
3. **Search latency**: ``--queries`` searches through feedstream's ``HistoryReader`` (the code
   ``GET /api/search`` runs, snippets and highlights included; 20 results a page), one at a
   time, mixed: a common word (ranked, and newest first), a mid-frequency word, a rare word, a
   two-word phrase taken from a stored entry, a word with a ``feed:`` filter, a word minus
   another, and paging (three more pages with ``before``). p50 / p99 per kind and overall; the
   database is warm (it was just written: the OS page cache holds it on a machine with enough
   memory, which is what a running server sees).
4. **Retention**: the oldest ``--retire`` fraction (10 %) is made older than ``retain_days``
   and one real retention pass runs (``feedstream.service.history.History.retain``: batches of
   100 in worker threads, forgetting, incremental vacuum) while a writer appends one entry every
   20 ms through the real ``SQLiteLog``: the pass's time, batches, the longest batch (the
   longest the writer can wait), the writer's append latency during the pass (and alone, in
   the 10 s before it), and the size after.

Nothing here listens on a port. Prints figures, asserts nothing.

    .venv/bin/python bench/search.py                        # 1,000,000 entries (minutes)
    .venv/bin/python bench/search.py --entries 100000 --queries 200
    .venv/bin/python bench/search.py --db /tmp/fs.sqlite3   # keep the database, reuse it
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import multiprocessing
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from feedstream.core.search import COLUMNS, feed_token, search_text, translate  # noqa: E402
from feedstream.log.history import HistoryReader  # noqa: E402
from feedstream.log.store import Store  # noqa: E402

T0 = 1_700_000_000.0  # the first entry's storage time; entry n is stored at T0 + n seconds
FEEDS = 500
VOCABULARY = 60_000
ZIPF = 1.07
POOL = 4_000_000  # Zipf draws, from which each entry's text is a random window
SYLLABLES = [c + v for c in "bdfkglmnprstvz" for v in "aeiou"] + ["an", "en", "or", "st", "tr"]


# -- the text ----------------------------------------------------------------------------------


def vocabulary(size: int) -> list[str]:
    """*size* distinct pronounceable words, shortest first (the most frequent are short)."""
    words: list[str] = []
    seen: set[str] = set()
    for length in itertools.count(1):
        for combo in itertools.product(SYLLABLES, repeat=length):
            word = "".join(combo)
            if word not in seen:
                seen.add(word)
                words.append(word)
                if len(words) == size:
                    return words
    raise AssertionError("unreachable")


class Text:
    """Zipf-distributed words: a pool of draws, and windows of it."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary(VOCABULARY)
        weights = [1 / (rank**ZIPF) for rank in range(1, VOCABULARY + 1)]
        cumulative = list(itertools.accumulate(weights))
        self.pool = self.rng.choices(self.words, cum_weights=cumulative, k=POOL)
        self.tags = self.words[200:500]
        self.authors = [f"{a.capitalize()} {b.capitalize()}" for a, b in zip(
            self.words[1000:3000], self.words[3000:5000], strict=True)]  # fmt: skip

    def run(self, rng: random.Random, count: int) -> list[str]:
        start = rng.randrange(0, POOL - count)
        return self.pool[start : start + count]


def entries(text: Text, count: int, first: int = 1) -> Iterator[tuple[Any, ...]]:
    """``(entries row, index row, entry)`` for seqs *first* .. *first* + *count* - 1 (the same
    entries whoever makes them: the random numbers are seeded by *first*)."""
    rng = random.Random(first)
    for seq in range(first, first + count):
        words = text.run(rng, rng.randint(150, 400))
        cuts = sorted(rng.sample(range(20, len(words) - 20), 3))
        paragraphs = [
            " ".join(words[a:b]) for a, b in zip([0, *cuts], [*cuts, len(words)], strict=True)
        ]
        title_words = text.run(rng, rng.randint(5, 10))
        title = " ".join(title_words).capitalize()
        summary = " ".join(words[:40]) + "…"
        feed = f"feed{seq % FEEDS}"
        at = T0 + seq
        stamp = dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        entry = {
            "id": f"{feed}:https://{feed}.example/posts/{seq}",
            "cursor": f"bench000-{seq}",
            "feed": feed,
            "feed_title": f"Feed number {seq % FEEDS}",
            "title": title,
            "url": f"https://{feed}.example/posts/{seq}",
            "author": rng.choice(text.authors),
            "published": stamp,
            "updated": None,
            "summary": summary,
            "content_html": "".join(f"<p>{p}</p>" for p in paragraphs),
            "tags": rng.sample(text.tags, rng.randint(2, 3)),
            "enclosures": [],
            "image": None,
            "via": "poll",
            "received": stamp,
            "matched": [],
            "highlight": False,
            "duplicate_of": None,
        }
        data = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
        tags = "\n".join(entry["tags"])
        indexed = (title, summary, " ".join(paragraphs), entry["author"], tags, feed_token(feed))
        yield (seq, entry["id"], feed, at, data), (seq, *indexed), entry


# -- 1. fill -------------------------------------------------------------------------------------

_TEXT: Text | None = None  # a generating process's vocabulary and pool (inherited by fork)


def _chunk(first: int, count: int) -> list[tuple[Any, ...]]:
    """Rows for seqs *first* .. (in a child process: generating overlaps inserting)."""
    assert _TEXT is not None
    made = enumerate(entries(_TEXT, count, first))
    return [(row, indexed, entry if index < 50 else None) for index, (row, indexed, entry) in made]


def fill(path: Path, count: int, batch: int, text: Text) -> float:
    Store(path).close()  # feedstream's schema, incremental vacuum, log id
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")  # a bulk load: no WAL of several GB
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1048576")  # 1 GiB
    db.execute("UPDATE meta SET value = 'bench000' WHERE key = 'log_id'")
    columns = ", ".join(COLUMNS)
    marks = ", ".join("?" for _ in COLUMNS)
    insert_fts = f"INSERT INTO entries_fts(rowid, {columns}) VALUES (?, {marks})"
    started = time.perf_counter()
    global _TEXT
    _TEXT = text
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        chunks = [(first, min(batch, count - first + 1)) for first in range(1, count + 1, batch)]
        pending = [pool.submit(_chunk, *chunk) for chunk in chunks[:2]]
        upcoming = iter(chunks[2:])
        for done in range(0, count, batch):
            rows = pending.pop(0).result()
            if (following := next(upcoming, None)) is not None:
                pending.append(pool.submit(_chunk, *following))
            insert(db, rows, insert_fts, check=done == 0)
            merge(db)
            elapsed = time.perf_counter() - started
            filled = done + len(rows)
            print(f"\r  filled {filled:,} / {count:,} ({filled / elapsed:,.0f}/s)", end="",
                  file=sys.stderr, flush=True)  # fmt: skip
    print(file=sys.stderr)
    db.execute(
        "INSERT OR REPLACE INTO feed_counts(feed, entries) "
        "SELECT feed, COUNT(*) FROM entries GROUP BY feed"
    )
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    return time.perf_counter() - started


def insert(
    db: sqlite3.Connection, rows: list[tuple[Any, ...]], insert_fts: str, check: bool
) -> None:
    if check:  # the index holds what the store would index
        for _, indexed, entry in rows[:50]:
            assert search_text(entry) == indexed[1:], "index text differs from search_text"
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO entries(seq, id, feed, at, data) VALUES (?, ?, ?, ?, ?)",
        [row for row, _, _ in rows],
    )
    db.executemany(insert_fts, [indexed for _, indexed, _ in rows])
    db.execute("COMMIT")


def merge(db: sqlite3.Connection) -> None:
    """Merge the index's new segments as the server's history task does after new entries
    (``Store.merge_step`` until it finds no work: appends and deletes do not merge)."""
    from feedstream.service.history import MERGE_PAGES

    while True:
        before = db.total_changes
        db.execute("INSERT INTO entries_fts(entries_fts, rank) VALUES ('merge', ?)", (MERGE_PAGES,))
        if db.total_changes - before < 2:
            return


def store_count(db: sqlite3.Connection) -> int:
    """Entries stored (one contiguous range of seqs)."""
    first, last = db.execute(
        "SELECT (SELECT MIN(seq) FROM entries), (SELECT MAX(seq) FROM entries)"
    ).fetchone()
    return 0 if first is None else int(last) - int(first) + 1


# -- 2. size -------------------------------------------------------------------------------------


def sizes(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        ).fetchall()
    except sqlite3.OperationalError:  # SQLite built without dbstat
        rows = []
    finally:
        db.close()
    return {str(name): int(size) for name, size in rows}


# -- 3. search ---------------------------------------------------------------------------------


def word_ranks(text: Text) -> dict[str, list[str]]:
    words = text.words
    return {
        "common": words[:20],  # each in most entries
        "mid": words[1_000:3_000],  # in a few percent of them
        "rare": words[30_000:60_000],  # in a few hundred or fewer
    }


def queries(text: Text, count: int, path: Path) -> list[tuple[str, str, str, int]]:
    """``(kind, query, order, pages)``: a mix in fixed proportions, shuffled."""
    rng = random.Random(11)
    ranks = word_ranks(text)
    db = sqlite3.connect(path)
    top = int(db.execute("SELECT MAX(seq) FROM entries").fetchone()[0])

    def phrase() -> str:
        seq = rng.randint(1, top)
        row = db.execute(
            "SELECT content FROM entries_fts WHERE rowid >= ? LIMIT 1", (seq,)
        ).fetchone()
        words = row[0].split()
        at = rng.randrange(0, len(words) - 1)
        return f'"{words[at]} {words[at + 1]}"'

    mix: list[tuple[str, Callable[[], tuple[str, str, int]]]] = [
        ("common word", lambda: (rng.choice(ranks["common"]), "rank", 1)),
        ("common word, newest", lambda: (rng.choice(ranks["common"]), "new", 1)),
        ("mid word", lambda: (rng.choice(ranks["mid"]), "rank", 1)),
        ("rare word", lambda: (rng.choice(ranks["rare"]), "rank", 1)),
        ("phrase", lambda: (phrase(), "rank", 1)),
        ("feed: filter",
         lambda: (f"{rng.choice(ranks['mid'])} feed:feed{rng.randrange(FEEDS)}", "rank", 1)),
        ("word -word",
         lambda: (f"{rng.choice(ranks['mid'])} -{rng.choice(ranks['common'])}", "rank", 1)),
        ("paging (before)", lambda: (rng.choice(ranks["mid"]), "rank", 4)),
    ]  # fmt: skip
    out = []
    for index in range(count):
        kind, make = mix[index % len(mix)]
        query, order, pages = make()
        out.append((kind, query, order, pages))
    db.close()
    rng.shuffle(out)
    return out


def measure_search(path: Path, mix: list[tuple[str, str, str, int]]) -> dict[str, Any]:
    reader = HistoryReader(path, connections=1, budget=120.0)
    timings: dict[str, list[float]] = {}
    results: dict[str, list[int]] = {}
    # One query first, untimed: the connection's first statements read the schema.
    reader.search(translate("warm"), order="rank", limit=20, cursor=None)
    for kind, query, order, pages in mix:
        plan = translate(query)
        cursor = None
        for page_number in range(pages):
            started = time.perf_counter()
            page = reader.search(plan, order=order, limit=20, cursor=cursor)
            elapsed = time.perf_counter() - started
            if page_number or pages == 1:  # paging: the pages after the first
                timings.setdefault(kind, []).append(elapsed)
                results.setdefault(kind, []).append(len(page.hits))
            cursor = page.next
            if cursor is None:
                break
    reader.close()
    return {"timings": timings, "results": results}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- 4. retention ------------------------------------------------------------------------------


def retention(path: Path, fraction: float, text: Text, batch: int = 0) -> dict[str, Any]:
    import trio

    from feedstream.log.sqlite import SQLiteLog
    from feedstream.service import history as history_module
    from feedstream.service.history import History

    if batch:
        history_module.BATCH = batch
    batch = history_module.BATCH

    store = Store(path)
    first, last = store._db.execute(
        "SELECT (SELECT MIN(seq) FROM entries), (SELECT MAX(seq) FROM entries)"
    ).fetchone()
    count = last - first + 1
    delete = int(count * fraction)
    cutoff_at = T0 + first + delete  # the first `delete` entries are older than this
    retain_days = 30.0
    now = cutoff_at + retain_days * 86_400.0
    batch_times: list[float] = []
    merge_times: list[float] = []

    async def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                name = getattr(fn, "func", fn).__name__
                if name == "retire":
                    batch_times.append(time.perf_counter() - started)
                elif name == "merge_step":
                    merge_times.append(time.perf_counter() - started)

        return await trio.to_thread.run_sync(run)

    before = store.history_figures()
    appends: list[float] = []
    baseline: list[float] = []

    async def main() -> Any:
        log = SQLiteLog(store, store.snapshot(100), backlog=100, clock=lambda: now)
        history = History(store, retain_days=retain_days, retain_entries=0, writer=True,
                          offload=timed, clock=lambda: now, watch=log.watch)  # fmt: skip
        fresh = (entry for _, _, entry in entries(text, 10**9, first=last + 1))
        done = trio.Event()

        async def writer() -> None:
            while not done.is_set():
                item = next(fresh)
                item["id"] += "-new"
                started = time.perf_counter()
                await log.append([item])
                appends.append(time.perf_counter() - started)
                await trio.sleep(0.02)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            # The server's history task merges the index after new entries (appends do not).
            nursery.start_soon(history._merge_news)
            await trio.sleep(10)  # the writer alone first: its usual append latency
            baseline.extend(appends)
            appends.clear()
            started = time.perf_counter()
            result = await history.retain()
            elapsed = time.perf_counter() - started
            done.set()
            nursery.cancel_scope.cancel()
        history.close()
        return result, elapsed

    result, elapsed = trio.run(main)
    after = store.history_figures()
    store.close()
    return {
        "deleted": result.deleted,
        "expected": delete,
        "batches": result.batches,
        "batch": batch,
        "seconds": elapsed,
        "batch_p50": statistics.median(batch_times) if batch_times else 0.0,
        "batch_max": max(batch_times) if batch_times else 0.0,
        "merge_steps": len(merge_times),
        "merge_p50": statistics.median(merge_times) if merge_times else 0.0,
        "merge_max": max(merge_times) if merge_times else 0.0,
        "appends": len(appends),
        "baseline_p50": statistics.median(baseline) if baseline else 0.0,
        "baseline_p99": percentile(baseline, 0.99) if baseline else 0.0,
        "append_p50": statistics.median(appends) if appends else 0.0,
        "append_p99": percentile(appends, 0.99) if appends else 0.0,
        "append_max": max(appends) if appends else 0.0,
        "bytes_before": before.database_bytes,
        "bytes_after": after.database_bytes,
        "entries_after": after.entries,
    }


# -- the report ---------------------------------------------------------------------------------


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def report(args: argparse.Namespace, figures: dict[str, Any]) -> str:
    count = figures["entries"]
    total = figures["bytes"]
    lines = [
        f"feedstream history search benchmark, "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine   {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}",
        f"data      {count:,} entries of {FEEDS} feeds, 150-400 words each (Zipf over "
        f"{VOCABULARY:,} words), filled in {figures['fill_seconds']:.0f} s"
        if figures["fill_seconds"] is not None
        else f"data      {count:,} entries (an existing database)",
        "",
        f"size      {mib(total)} in all: {mib(total / count * 100_000)} per 100,000 entries",
    ]
    parts = figures["sizes"]
    if parts:
        fts = sum(size for name, size in parts.items() if name.startswith("entries_fts"))
        lines.append(
            f"          entries (JSON) {mib(parts.get('entries', 0))}, full-text index "
            f"{mib(fts)}, other {mib(total - parts.get('entries', 0) - fts)}"
        )
    lines += ["", f"search    {sum(len(t) for t in figures['search']['timings'].values())} "
              "requests of 20 results, one at a time (ms)",
              f"          {'kind':<22} {'n':>4} {'p50':>8} {'p99':>8} {'max':>8}  "
              "results/page"]  # fmt: skip
    every: list[float] = []
    for kind, values in figures["search"]["timings"].items():
        every += values
        found = figures["search"]["results"][kind]
        lines.append(
            f"          {kind:<22} {len(values):>4} {percentile(values, 0.5) * 1000:>8.1f} "
            f"{percentile(values, 0.99) * 1000:>8.1f} {max(values) * 1000:>8.1f}  "
            f"{statistics.mean(found):.1f}"
        )
    lines.append(
        f"          {'all':<22} {len(every):>4} {percentile(every, 0.5) * 1000:>8.1f} "
        f"{percentile(every, 0.99) * 1000:>8.1f} {max(every) * 1000:>8.1f}"
    )
    kept = figures.get("retention")
    if kept:
        lines += [
            "",
            f"retention one pass deleting {kept['deleted']:,} entries (the oldest "
            f"{args.retire:.0%}) in {kept['seconds']:.1f} s: {kept['batches']} batches of "
            f"{kept['batch']}, "
            f"{kept['batch_p50'] * 1000:.0f} ms median, {kept['batch_max'] * 1000:.0f} ms longest",
            f"          index merge steps (transactions of their own): {kept['merge_steps']}, "
            f"{kept['merge_p50'] * 1000:.1f} ms median, {kept['merge_max'] * 1000:.0f} ms longest",
            f"          then incremental vacuum; database {mib(kept['bytes_before'])} -> "
            f"{mib(kept['bytes_after'])}",
            f"          a writer appending every 20 ms meanwhile: {kept['appends']} appends, "
            f"p50 {kept['append_p50'] * 1000:.1f} ms, p99 {kept['append_p99'] * 1000:.1f} ms, "
            f"max {kept['append_max'] * 1000:.1f} ms (alone, before the pass: p50 "
            f"{kept['baseline_p50'] * 1000:.1f} ms, p99 {kept['baseline_p99'] * 1000:.1f} ms)",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries (1,000,000)")
    parser.add_argument("--queries", type=int, default=400, help="search requests (400)")
    parser.add_argument("--batch", type=int, default=20_000, help="rows per fill transaction")
    parser.add_argument("--retire", type=float, default=0.1, help="fraction retention deletes")
    parser.add_argument("--db", type=Path, help="keep the database here (reused if it exists)")
    parser.add_argument("--no-retention", action="store_true", help="skip the retention pass")
    parser.add_argument("--retention-batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = parser.parse_args()
    if args.entries < 1000 or args.queries < 8 or not 0 < args.retire < 1:
        parser.error("--entries >= 1000, --queries >= 8, 0 < --retire < 1")
    text = Text(seed=5)
    with tempfile.TemporaryDirectory(prefix="feedstream-search-") as scratch:
        path = args.db or Path(scratch) / "feedstream.sqlite3"
        fill_seconds = None
        if not path.exists():
            print(f"filling {args.entries:,} entries...", file=sys.stderr, flush=True)
            fill_seconds = fill(path, args.entries, args.batch, text)
        db = sqlite3.connect(path)
        count = store_count(db)
        total = int(db.execute("PRAGMA page_count").fetchone()[0]) * int(
            db.execute("PRAGMA page_size").fetchone()[0]
        )
        db.close()
        print("measuring sizes...", file=sys.stderr, flush=True)
        parts = sizes(path)
        print(f"searching ({args.queries} requests)...", file=sys.stderr, flush=True)
        searched = measure_search(path, queries(text, args.queries, path))
        figures: dict[str, Any] = {"entries": count, "bytes": total, "sizes": parts,
                                   "fill_seconds": fill_seconds, "search": searched}  # fmt: skip
        if not args.no_retention:
            print("one retention pass...", file=sys.stderr, flush=True)
            figures["retention"] = retention(path, args.retire, text, args.retention_batch)
    print(report(args, figures))
    if args.json:
        print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
