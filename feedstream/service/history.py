"""The stored history: retention, its figures, and search.

:class:`History` is created by the :class:`~feedstream.service.runtime.Runtime` for a log kept
in SQLite (every role: a deliver process reads the same database file), and with the Redis log
for each process that writes it, over a copy of the whole log of its own
(:class:`~feedstream.service.mirror.HistoryMirror`, run by :meth:`History.run`).
:meth:`History.run` is one of the runtime's long-lived tasks. Every :data:`MEASURE_PERIOD`,
and after new entries (at most every :data:`NEWS_GAP`), it measures the history (entries, the
oldest, the database's size: a few index look-ups in a worker thread) for ``/api/status`` and
``/metrics``; on the roles that write the log (``all``, ``ingest``) it also runs the retention
pass, at the first tick and then every :data:`RETENTION_PERIOD`:

1. delete the entries stored more than ``[server] retain_days`` ago (0: no age limit) or beyond
   the newest ``retain_entries`` (0: no count limit), oldest first, :data:`BATCH` per
   transaction (:meth:`~feedstream.log.store.Store.retire`), each batch in a worker thread, so
   the writer waits for one batch at most and the event loop never;
2. keep the deleted ids: they move to the store's ``retired`` table, so a feed still listing an
   old entry does not bring it back. The ids each feed's last document listed (the ingestor
   knows them) are marked as seen now; an id no feed has listed for ``retain_days`` +
   :data:`FORGET_MARGIN_DAYS` days (:data:`FORGET_MARGIN_DAYS` alone when ``retain_days`` is 0)
   is forgotten, in batches too;
3. give the freed pages back to the file system with incremental vacuum, a few MiB per step.

The full-text index is merged here too, on the writing roles: appends and deletions only add
segments (the store turns FTS5's automatic merging off, see
:data:`~feedstream.log.store.FTS_OPTIONS`), and :meth:`History.merge` merges them in steps of
about :data:`MERGE_PAGES` pages, each its own transaction in a worker thread, after new entries
(at most every :data:`MERGE_GAP`), after each retention batch and at the end of a pass.

The ring the live delivery reads from is not touched: an entry retention deleted stays in the
ring until newer ones push it out, so cursors and catch-up behave exactly as before.

Search (:meth:`History.search`) runs on a :class:`~feedstream.log.history.HistoryReader`'s own
connections, at most :data:`SEARCHES_AT_ONCE` at a time, each in a worker thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from feedstream.core.search import (
    SearchRequest,
    format_search_cursor,
    parse_search_cursor,
)
from feedstream.core.times import format_rfc3339
from feedstream.log.base import Offload
from feedstream.log.history import HistoryReader, SearchPage, SearchTimeout
from feedstream.log.store import HistoryFigures, Store
from feedstream.service.mirror import HistoryMirror
from feedstream.service.periodic import Periodic

logger = logging.getLogger(__name__)

__all__ = [
    "BATCH",
    "FORGET_MARGIN_DAYS",
    "MEASURE_PERIOD",
    "RETENTION_PERIOD",
    "SEARCHES_AT_ONCE",
    "History",
    "RetentionPass",
]

MEASURE_PERIOD = 30.0  # seconds between two measurements of the history
NEWS_GAP = 1.0  # seconds: after new entries, measured again at most this often
RETENTION_PERIOD = 900.0  # seconds between two retention passes
BATCH = 100  # entries (or forgotten ids) per transaction (see docs/history-and-search.md)
VACUUM_PAGES = 512  # pages given back per incremental vacuum step (2 MiB of 4 KiB pages)
MERGE_PAGES = 64  # full-text index leaf pages (about 4 KiB) merged per step (transaction)
MERGE_GAP = 1.0  # seconds: after new entries, the index is merged at most this often
FORGET_MARGIN_DAYS = 30.0
TOUCH_EVERY = 86_400.0  # a listed retired id's "seen" time is rewritten at most once a day
SEARCHES_AT_ONCE = 2  # searches running at once (each holds a reader connection and a thread)
MIRROR_WAIT = 2.0  # seconds a first page waits at most for the copy of a shared log to catch up
DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class RetentionPass:
    """What one retention pass did."""

    at: float  # when it started (Unix seconds)
    deleted: int  # entries
    batches: int
    forgotten: int  # retired ids no feed lists any more
    seconds: float  # how long it took (trio clock)

    def describe(self) -> dict[str, Any]:
        return {
            "at": format_rfc3339(self.at),
            "deleted": self.deleted,
            "batches": self.batches,
            "forgotten_ids": self.forgotten,
            "seconds": round(self.seconds, 3),
        }


class History:
    """The history of the SQLite log in *store*: measured, trimmed (when *writer*), searched.

    *head* gives the log's newest seq now (entries appended since the last measurement are
    counted without asking SQLite); *listed* the ids feeds list right now (see the module
    docstring); *clock* the wall-clock time retention counts in.
    """

    def __init__(
        self,
        store: Store,
        *,
        retain_days: float,
        retain_entries: int,
        writer: bool,
        offload: Offload = trio.to_thread.run_sync,
        head: Callable[[], int] | None = None,
        watch: Callable[[Callable[[], None]], None] | None = None,
        listed: Callable[[], Collection[str]] | None = None,
        clock: Callable[[], float] | None = None,
        reader: HistoryReader | None = None,
        mirror: HistoryMirror | None = None,
    ) -> None:
        if mirror is not None:  # a copy of the shared log: its head and news are the copy's
            head, watch = (lambda: mirror.head), mirror.watch
        self.store = store
        self.mirror = mirror
        self.retain_days = retain_days
        self.retain_entries = retain_entries
        self.writer = writer
        self._offload = offload
        self._head = head
        self._listed = listed
        self._now = clock or time.time
        self.reader = reader or HistoryReader(store.path, connections=SEARCHES_AT_ONCE)
        self._searches = trio.CapacityLimiter(self.reader.connections)
        self.figures: HistoryFigures | None = None
        self.last_pass: RetentionPass | None = None
        self.deleted_total = 0  # entries deleted by retention since start
        self.searches: dict[str, int] = {"ok": 0, "timeout": 0}
        self._news = trio.Event()
        self._unmerged = trio.Event()  # new segments in the index since the last merge
        self.merge_steps = 0  # index merge steps that found work, since the start
        if watch is not None:
            watch(self._told)  # called on the loop when the log's head moved

    def _told(self) -> None:
        self._news.set()
        self._unmerged.set()

    @property
    def log_id(self) -> str:
        return self.store.log_id

    @property
    def retaining(self) -> bool:
        """Whether there is any limit to apply (and this process applies it)."""
        return self.writer and (self.retain_days > 0 or self.retain_entries > 0)

    # -- the task ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Measure now and every :data:`MEASURE_PERIOD`; on a writer, retain at the first tick
        and every :data:`RETENTION_PERIOD` (until cancelled). With a :class:`HistoryMirror`,
        it runs here too (started first: the copy resumes before the first measurement)."""
        async with trio.open_nursery() as nursery:
            if self.mirror is not None:
                await nursery.start(self.mirror.run)
            await self.measure()
            task_status.started()
            nursery.start_soon(self._measure_news)
            if self.writer:
                nursery.start_soon(self._merge_news)
            next_pass = -math.inf
            async for tick in Periodic(MEASURE_PERIOD):
                if self.retaining and tick.woke >= next_pass:
                    next_pass = tick.woke + RETENTION_PERIOD
                    try:
                        await self.retain()
                    except Exception:  # a full disk, a locked database: try again next time
                        logger.exception("history: the retention pass failed; retrying later")
                else:
                    await self.measure()

    async def _measure_news(self) -> None:
        """Measure again once new entries came (at most every :data:`NEWS_GAP` seconds)."""
        while True:
            await self._news.wait()
            self._news = trio.Event()
            await self.measure()
            await trio.sleep(NEWS_GAP)

    async def _merge_news(self) -> None:
        """Merge the index's new segments once new entries came (at most every
        :data:`MERGE_GAP` seconds), and once at the start."""
        self._unmerged.set()
        while True:
            await self._unmerged.wait()
            self._unmerged = trio.Event()
            try:
                await self.merge()
            except Exception:  # a locked database: the next news tries again
                logger.exception("history: merging the search index failed; retrying later")
            await trio.sleep(MERGE_GAP)

    async def merge(self) -> int:
        """Merge the full-text index's segments in bounded steps (:data:`MERGE_PAGES` each, a
        transaction of its own in a worker thread: the writer waits for one step at most)
        until no level needs it; how many steps found work."""
        steps = 0
        while await self._offload(self.store.merge_step, MERGE_PAGES):
            steps += 1
            self.merge_steps += 1
            await trio.lowlevel.checkpoint()  # between two steps, the loop runs others
        return steps

    async def measure(self) -> HistoryFigures:
        figures: HistoryFigures = await self._offload(self.store.history_figures)
        self.figures = figures
        return figures

    async def retain(self) -> RetentionPass:
        """One retention pass (see the module docstring); measures afterwards."""
        started, now = trio.current_time(), self._now()
        before = now - self.retain_days * DAY if self.retain_days > 0 else None
        deleted = batches = 0
        while True:
            retired = await self._offload(
                partial(
                    self.store.retire,
                    before=before,
                    keep=self.retain_entries,
                    batch=BATCH,
                    now=now,
                )
            )
            deleted += retired.deleted
            batches += 1 if retired.deleted else 0
            if retired.deleted and await self._offload(self.store.merge_step, MERGE_PAGES):
                self.merge_steps += 1  # the deletions' index segments, merged as they come
            await trio.lowlevel.checkpoint()  # between two batches, the loop runs others
            if not retired.more:
                break
        await self.merge()
        listed = list(self._listed()) if self._listed is not None else []
        if listed:
            await self._offload(self.store.touch_retired, listed, now, now - TOUCH_EVERY)
        forget_before = now - (max(self.retain_days, 0.0) + FORGET_MARGIN_DAYS) * DAY
        forgotten = 0
        while True:
            count: int = await self._offload(self.store.forget, forget_before, BATCH)
            forgotten += count
            await trio.lowlevel.checkpoint()
            if count < BATCH:
                break
        free = 1
        while free > 0:
            free = await self._offload(self.store.vacuum_step, VACUUM_PAGES)
            await trio.lowlevel.checkpoint()
        done = RetentionPass(now, deleted, batches, forgotten, trio.current_time() - started)
        self.last_pass = done
        self.deleted_total += deleted
        if deleted or forgotten:
            logger.info(
                "history: retention deleted %d entries in %d batches, forgot %d ids, %.2f s",
                deleted,
                batches,
                forgotten,
                done.seconds,
            )
        await self.measure()
        return done

    # -- figures -----------------------------------------------------------------------------

    def entries(self) -> int | None:
        """Entries stored now: the last measurement, plus what was appended since."""
        figures = self.figures
        if figures is None:
            return None
        appended = max(0, self._head() - figures.head) if self._head is not None else 0
        return figures.entries + appended

    def status(self) -> dict[str, Any]:
        """The ``history`` object of ``/api/status``."""
        figures = self.figures
        oldest = figures.oldest_at if figures is not None else None
        return {
            "entries": self.entries(),
            "oldest": format_rfc3339(oldest) if oldest is not None else None,
            "database_bytes": figures.database_bytes if figures is not None else None,
            "free_bytes": figures.free_bytes if figures is not None else None,
            "retain_days": self.retain_days,
            "retain_entries": self.retain_entries,
            "retention": "here" if self.writer else "on the ingest process",
            "last_retention": self.last_pass.describe() if self.last_pass is not None else None,
            "search": True,
            "copy": self.mirror.status() if self.mirror is not None else None,
        }

    # -- search ------------------------------------------------------------------------------

    async def search(self, request: SearchRequest) -> dict[str, Any]:
        """One page of ``GET /api/search``, as its JSON object.

        Raises :class:`~feedstream.core.search.SearchError` for a ``before`` cursor of another
        query or database, :class:`~feedstream.log.history.SearchTimeout` past the budget.
        """
        plan, order = request.plan, request.order
        cursor = None
        if request.before is not None:
            cursor = parse_search_cursor(request.before, self.log_id, plan, order)
        search = partial(self.reader.search, plan, order=order, limit=request.limit, cursor=cursor)
        if self.mirror is not None and cursor is None:  # what was just appended is found
            with trio.move_on_after(MIRROR_WAIT):
                await self.mirror.caught_up()
        async with self._searches:
            try:
                page: SearchPage = await self._offload(search)
            except SearchTimeout:
                self.searches["timeout"] += 1
                raise
        self.searches["ok"] += 1
        return {
            "query": plan.key,
            "order": order,
            "results": [
                {
                    "entry": hit.entry,
                    "title_html": hit.title_html,
                    "snippet_html": hit.snippet_html,
                    "score": hit.score if order == "rank" else None,
                }
                for hit in page.hits
            ],
            "before": (
                format_search_cursor(self.log_id, plan, order, page.next)
                if page.next is not None
                else None
            ),
        }

    def close(self) -> None:
        self.reader.close()
