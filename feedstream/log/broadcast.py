"""Delivery in rounds, above any log backend: what listeners see, when they are woken.

The :class:`Broadcaster` watches a :class:`~feedstream.log.base.Log` and publishes its head to
listeners in **rounds**. A burst of appends within the coalescing window goes out as one round,
from the broadcaster's own task, so an appender never waits for the window. The next round
starts once the listeners answered in the last one have come back (see :meth:`_absorbed`):
unpaced, under a load the server cannot keep up with, every new entry would start another wave
of answers and re-polls before the last was through. A client that does not wait (``fresh``)
always sees everything the log holds.

Listeners asking the same question (cursor, filter, selection, limit) while the published head
stays put share one :class:`~feedstream.log.base.Page`, so a fan-out renders each answer once.

Long-polls are woken all at once each round (their answers then leave soonest, their clean-up
comes after); streams (SSE producers) :data:`WAKE_GROUP` per scheduler pass, so that other work
(a push being taken in) gets its turn in between.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Collection, Mapping

import trio

from feedstream.log.base import Log, Page, Selection

logger = logging.getLogger(__name__)

__all__ = ["WAKE_GROUP", "Broadcaster"]

PAGE_CACHE = 4096  # distinct questions answered per head before the cache starts over
PACE_TICK = 0.005  # seconds between two looks at whether a round is over
PACE_QUIET = 0.05  # a round is over when nobody came back for this long
PACE_LIMIT = 10.0  # and at the latest after this long
#: Streaming waiters (SSE) woken per scheduler pass. Thousands of open streams woken at once
#: make one pass so long that every other task (a push being taken in) waits seconds for each
#: of its steps; in groups, pushes are acknowledged in between. Long-polls are woken all at
#: once: their answers then leave soonest, and their clean-up comes after. Measured at 10,000
#: streams (bench/fanout.py): groups of 32 beat 100 and 256 on fan-out and sustained delivery.
WAKE_GROUP = 32

_Question = tuple[str | None, frozenset[str] | None, int, bool, Selection | None]


class Broadcaster:
    """Listeners' view of *log*: reads, waiting, and paced rounds.

    Without :meth:`run` (or with a zero *coalesce* window) every commit is published at once.
    """

    def __init__(self, log: Log, *, coalesce: float = 0.0) -> None:
        self.log = log
        self._coalesce = coalesce
        # Committed entries become visible in rounds: `_head` is what waiting readers see.
        self._head = log.head
        self._published_at = self._news_at = trio.current_time()
        self._waiters = trio.lowlevel.ParkingLot()  # long-polls: woken all at once each round
        self._streams = trio.lowlevel.ParkingLot()  # SSE producers: woken WAKE_GROUP at a time
        self._closed = False
        # Pacing (see _absorbed): listeners that left a round, and came back asking again.
        self._left = self._returned = self._answered = 0
        self._returned_at = self._answered_at = 0.0
        self._dirty = trio.Event()  # set on news, for the publishing task
        self._coalescing = False  # is run() publishing?
        # Answers for the current head, by question: listeners asking the same share one page.
        self._pages: dict[_Question, Page] = {}
        log.watch(self._news)

    @property
    def cursor(self) -> str:
        """The published head: what a waiting listener has been shown."""
        return self._head

    @property
    def committed_at(self) -> float:
        """When (``trio.current_time()``) the published head was committed."""
        return self._published_at

    @property
    def closed(self) -> bool:
        return self._closed

    def counts(self) -> Mapping[str, int]:
        return self.log.counts()

    # -- reading -----------------------------------------------------------------------------

    def read(
        self,
        after: str | None,
        *,
        feeds: Collection[str] | None,
        limit: int,
        fresh: bool = False,
        view: Selection | None = None,
    ) -> Page:
        """Entries after *after* (newest *limit* when None), as of the last round.

        *fresh* reads (a client that will not wait) see everything the log holds. *view*
        selects entries beyond the feed filter (see :class:`~feedstream.log.base.Selection`).
        """
        key = (after, feeds if feeds is None else frozenset(feeds), limit, fresh, view)
        page = self._pages.get(key)
        if page is None:
            if len(self._pages) >= PAGE_CACHE:
                self._pages.clear()
            upto = None if fresh else self._head
            page = self._pages[key] = self.log.read(
                after, feeds=feeds, limit=limit, upto=upto, view=view
            )
        return page

    def refresh(self) -> None:
        """What a view means changed (streams reloaded): answer afresh from now on."""
        self._pages.clear()

    async def wait(
        self,
        after: str | None,
        *,
        feeds: Collection[str] | None,
        streaming: bool = False,
        view: Selection | None = None,
    ) -> None:
        """Return as soon as :meth:`read` has something for *after* (or on close).

        Never returns by itself otherwise: the caller bounds it with a cancel scope. It is
        :meth:`asking`, then :meth:`ready` / :meth:`changed` in a loop; the long-poll runs that
        loop itself, so that each parked listener keeps one coroutine frame less alive.
        """
        if after is None:
            return
        self.asking()
        while not self.ready(after, feeds=feeds, view=view):
            await self.changed(streaming=streaming)

    def asking(self) -> None:
        """A listener starts waiting (most likely right after its last answer): paces rounds."""
        if not self._closed:
            self._returned += 1
            self._returned_at = trio.current_time()

    def ready(
        self, after: str, *, feeds: Collection[str] | None, view: Selection | None = None
    ) -> bool:
        """Whether :meth:`read` has something for *after* now, or the broadcaster is closed.

        ``True`` also counts the listener as leaving with news (this paces rounds too).
        """
        if self._closed:
            return True
        page = self.read(after, feeds=feeds, limit=1, view=view)
        if page.entries or page.reset:
            self._left += 1
            return True
        return False

    def changed(self, *, streaming: bool = False) -> Awaitable[None]:
        """Something to await that returns when what :meth:`ready` says may have changed.

        Parks right away: nothing runs between a caller's ready() and this, so no wake-up is
        missed.
        """
        return (self._streams if streaming else self._waiters).park()

    def answered(self) -> None:
        """A listener woken by :meth:`wait` has had its answer sent (this paces rounds)."""
        self._answered += 1
        self._answered_at = trio.current_time()

    # -- publishing --------------------------------------------------------------------------

    def _news(self) -> None:
        """The log's head moved (called by the log, right after its commit)."""
        self._news_at = trio.current_time()
        self._pages.clear()  # fresh reads see more now
        if self._coalescing:
            self._dirty.set()
        else:
            self._publish()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish in paced rounds, forever: one per burst of news within the window.

        The first commit of a burst starts the window; what is committed before it closes goes
        out in the same answers.
        """
        self._coalescing = self._coalesce > 0
        task_status.started()
        try:
            while self._coalescing:
                await self._dirty.wait()
                await trio.sleep(self._coalesce)
                self._dirty = trio.Event()
                self._publish(streams=False)
                await self._wake_streams()
                await self._absorbed()
        finally:
            self._coalescing = False
            self._publish()

    def _publish(self, *, streams: bool = True) -> None:
        """Make the log's head visible and wake the long-polls (and, unless told not to, the
        streams): a new round."""
        self._left = self._returned = self._answered = 0
        head = self.log.head
        if head != self._head:
            self._head = head
            self._published_at = self._news_at
            self._pages.clear()
        self._waiters.unpark_all()
        if streams:
            self._streams.unpark_all()

    async def _wake_streams(self) -> None:
        """Wake the streams parked now, :data:`WAKE_GROUP` per scheduler pass (FIFO: those
        parking meanwhile, on the new head, stay parked)."""
        left = len(self._streams)
        while left > 0 and not self._closed:
            woken = self._streams.unpark(count=min(WAKE_GROUP, left))
            if not woken:
                return
            left -= len(woken)
            await trio.lowlevel.checkpoint()

    async def _absorbed(self) -> None:
        """Wait until the listeners the last round answered have come back (most of them).

        Paced, each listener gets one answer per round with everything published since its
        last. With few listeners a round is over in milliseconds and pacing costs nothing.

        A round is over when nine in ten of those who left are back; or when nine in ten have
        been answered and nobody has come back for :data:`PACE_QUIET` s (a closed page never
        comes back, and hypercorn does not tell us it went: its answer still goes out); or
        after :data:`PACE_LIMIT` s.
        """
        started = trio.current_time()
        while not self._closed:
            await trio.sleep(PACE_TICK)
            now = trio.current_time()
            answered = self._answered >= 0.9 * self._left
            last = max(started, self._returned_at, self._answered_at)
            quiet = answered and now - last >= PACE_QUIET
            if self._returned >= 0.9 * self._left or quiet or now - started >= PACE_LIMIT:
                break

    def close(self) -> None:
        """Answer every waiter now (shutdown); later waits return at once."""
        self._closed = True
        self._waiters.unpark_all()
        self._streams.unpark_all()
