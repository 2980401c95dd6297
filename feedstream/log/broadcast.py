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

A round wakes the long-polls parked when it starts :data:`ANSWER_GROUP` per scheduler pass,
oldest first, and each answers with the newest head the log has by its turn: an entry committed
while a round is under way reaches every listener the round has not answered yet. A listener's
clean-up and its re-poll wait at a *gate* (:meth:`hold`, awaited by the connection loop right
after the answer is written) until the round has answered everyone; the gate then opens in groups
of the same size, in the same order. So all the answers of a round leave first, other tasks (the
log's follower, a push being taken in) get a turn between groups, and listeners come back in the
order they were answered: each keeps its place from round to round, and waits one round for an
entry, not up to two. Streams (SSE producers) are woken :data:`WAKE_GROUP` per pass.

Listeners are woken for the round's head (:meth:`ready`), but read up to the newest published
head: a re-poll is held for the next round even when the head moved meanwhile (that is the
pacing), and still answered with everything visible when its turn comes.

A long-poll waits until a deadline of its own (hypercorn's trio worker does not report a client
that went away). The broadcaster keeps those deadlines itself (:class:`_Waiters`, swept by
:meth:`run`) rather than giving every wait a trio cancel scope: a re-poll is then a dict entry,
not a scope, its cancel status and two changes of trio's deadline heap.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from itertools import islice
from math import inf

import outcome
import trio

from feedstream.log.base import Log, Page, Selection

logger = logging.getLogger(__name__)

__all__ = ["TICK", "WAKE_GROUP", "Broadcaster"]

PAGE_CACHE = 4096  # distinct questions answered per head before the cache starts over
PACE_TICK = 0.005  # seconds between two looks at whether a round is over
PACE_QUIET = 0.05  # a round is over when nobody came back for this long
PACE_LIMIT = 10.0  # and at the latest after this long
#: Streaming waiters (SSE) woken per scheduler pass. Thousands of open streams woken at once
#: make one pass so long that every other task (a push being taken in) waits seconds for each
#: of its steps; in groups, pushes are acknowledged in between. Measured at 10,000 streams
#: (bench/fanout.py): groups of 32 beat 100 and 256 on fan-out and sustained delivery.
WAKE_GROUP = 32
#: Long-polls woken per scheduler pass in a round, and let through the gate per pass after it.
#: An answer is 50-100 µs of CPU, so a pass of a group is 5-10 ms: the log's follower and the
#: ingest path get a turn that often, and later groups read the entries committed meanwhile.
#: Measured at 10,000 listeners and 10 entries/s (bench/fanout.py): sustained delivery p99
#: 3.6 s with groups of 100, 4.6 s with 1,000 (the follower then sees news 0.5 s late) and
#: 4.7 s woken all at once.
ANSWER_GROUP = 100
#: Long-poll deadlines are kept in slots of this many seconds: a wait that times out ends at
#: most this late, never early.
TICK = 0.05


def _never_abort(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


_Question = tuple[str | None, frozenset[str] | None, int, str | None, Selection | None]


class _Waiters:
    """Parked long-polls in the order they parked, each until its own deadline.

    A ``ParkingLot`` whose waits may end by themselves: :meth:`park` returns True when the task
    was woken (:meth:`unpark`), False when its deadline passed (:meth:`expire`). Deadlines are
    rounded up to :data:`TICK`-second slots, a dict of tasks per slot and a heap of slot
    numbers: parking and waking are dict operations, and one heap entry serves every wait of a
    slot (thousands, when a round's re-polls come back together with the same timeout).
    :meth:`expire` must be called when the earliest slot is due (:attr:`next_at`); *on_earlier*
    is told when a park makes it earlier.
    """

    def __init__(self, on_earlier: Callable[[float], None]) -> None:
        self._parked: dict[trio.lowlevel.Task, int | None] = {}  # task: its slot; park order
        self._slots: dict[int, dict[trio.lowlevel.Task, None]] = {}
        self._heap: list[int] = []  # slot numbers in _slots, each once
        self._on_earlier = on_earlier

    def __len__(self) -> int:
        return len(self._parked)

    @property
    def next_at(self) -> float:
        """When the earliest slot is due (inf: no deadline is waiting)."""
        return self._heap[0] * TICK if self._heap else inf

    async def park(self, deadline: float = inf) -> bool:
        task = trio.lowlevel.current_task()
        slot = None
        if deadline < inf:
            slot = math.ceil(deadline / TICK)
            tasks = self._slots.get(slot)
            if tasks is None:
                earlier = not self._heap or slot < self._heap[0]
                tasks = self._slots[slot] = {}
                heapq.heappush(self._heap, slot)
                if earlier:
                    self._on_earlier(slot * TICK)
            tasks[task] = None
        self._parked[task] = slot

        def abort(_: object) -> trio.lowlevel.Abort:
            self._forget(task)
            return trio.lowlevel.Abort.SUCCEEDED

        woken: bool = await trio.lowlevel.wait_task_rescheduled(abort)
        return woken

    def _forget(self, task: trio.lowlevel.Task) -> None:
        slot = self._parked.pop(task)
        if slot is not None:
            tasks = self._slots.get(slot)
            if tasks is not None:
                tasks.pop(task, None)

    def unpark(self, count: int) -> list[trio.lowlevel.Task]:
        """Wake the *count* that parked first (their park returns True)."""
        tasks = list(islice(self._parked, count))
        for task in tasks:
            self._forget(task)
            trio.lowlevel.reschedule(task, outcome.Value(True))
        return tasks

    def unpark_all(self) -> None:
        self.unpark(len(self._parked))

    def expire(self, now: float) -> None:
        """End the waits whose deadline is *now* or before (their park returns False)."""
        heap = self._heap
        while heap and heap[0] * TICK <= now:
            for task in self._slots.pop(heapq.heappop(heap)):
                del self._parked[task]
                trio.lowlevel.reschedule(task, outcome.Value(False))


class Broadcaster:
    """Listeners' view of *log*: reads, waiting, and paced rounds.

    Without :meth:`run` (or with a zero *coalesce* window) every commit is published at once.
    """

    def __init__(self, log: Log, *, coalesce: float = 0.0) -> None:
        self.log = log
        self._coalesce = coalesce
        # Committed entries become visible in rounds: `_head` is what waiting readers see,
        # `_round_head` what the round under way wakes them for.
        self._head = self._round_head = log.head
        self._published_at = self._news_at = trio.current_time()
        self._waiters = _Waiters(self._earlier_deadline)  # long-polls: ANSWER_GROUP at a time
        self._streams = trio.lowlevel.ParkingLot()  # SSE producers: woken WAKE_GROUP at a time
        self._closed = False
        self._alarm: trio.CancelScope | None = None  # when the next long-poll times out
        # Pacing (see _absorbed): listeners that left a round, and came back asking again.
        self._left = self._returned = self._answered = 0
        self._returned_at = self._answered_at = 0.0
        self._dirty = trio.Event()  # set on news, for the publishing task
        # Listeners answered in the round under way, holding their clean-up (see hold()).
        self._gate: deque[trio.lowlevel.Task] = deque()
        self._gate_open = True
        self._answering = False  # is a round waking long-polls? (news then shows at once)
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
        return self._read(after, feeds, limit, None if fresh else self._head, view)

    def _read(
        self,
        after: str | None,
        feeds: Collection[str] | None,
        limit: int,
        upto: str | None,
        view: Selection | None,
    ) -> Page:
        key = (after, feeds if feeds is None else frozenset(feeds), limit, upto, view)
        page = self._pages.get(key)
        if page is None:
            if len(self._pages) >= PAGE_CACHE:
                self._pages.clear()
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
        """Whether the round under way has something for *after*, or the broadcaster is closed.

        ``True`` also counts the listener as leaving with news (this paces rounds too).
        """
        if self._closed:
            return True
        page = self._read(after, feeds, 1, self._round_head, view)
        if page.entries or page.reset:
            self._left += 1
            return True
        return False

    def changed(self, *, streaming: bool = False) -> Awaitable[object]:
        """Something to await that returns when what :meth:`ready` says may have changed.

        Parks right away: nothing runs between a caller's ready() and this, so no wake-up is
        missed.
        """
        return self._streams.park() if streaming else self._waiters.park()

    def changed_by(self, deadline: float) -> Awaitable[bool]:
        """:meth:`changed` for a long-poll that waits until *deadline* at the latest (trio's
        clock): True when woken, False when the deadline came first (at most :data:`TICK`
        late). The deadline is kept by :meth:`run`; without it, by a cancel scope."""
        if self._alarm is None:
            return self._park_in_scope(deadline)
        return self._waiters.park(deadline)

    async def _park_in_scope(self, deadline: float) -> bool:
        with trio.move_on_at(deadline):
            return await self._waiters.park()
        return False

    def _earlier_deadline(self, at: float) -> None:
        if self._alarm is not None and at < self._alarm.deadline:
            self._alarm.deadline = at

    def answered(self) -> None:
        """A listener woken by :meth:`wait` has had its answer sent (this paces rounds)."""
        self._answered += 1
        self._answered_at = trio.current_time()

    async def hold(self) -> None:
        """Wait here, right after a woken long-poll's answer is written, until the round has
        answered everyone (at once when no round is under way). Never raises ``Cancelled``:
        like a shielded checkpoint, a cancellation is delivered at the caller's next one.

        The connection loop awaits this in place of its single yield after an answer
        (:data:`feedstream.web.asgi.AFTER_ANSWER`), so the listener's clean-up and its next
        request come after every answer of the round, in the order the answers went.
        """
        if self._gate_open:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        self._gate.append(trio.lowlevel.current_task())
        await trio.lowlevel.wait_task_rescheduled(_never_abort)

    # -- publishing --------------------------------------------------------------------------

    def _news(self) -> None:
        """The log's head moved (called by the log, right after its commit)."""
        self._news_at = trio.current_time()
        self._pages.clear()  # fresh reads see more now
        if not self._coalescing:
            self._publish()
            return
        self._dirty.set()
        if self._answering:
            self._advance()  # the rest of the round under way answers with it too

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish in paced rounds, forever: one per burst of news within the window.

        The first commit of a burst starts the window; what is committed before it closes goes
        out in the same answers.
        """
        self._coalescing = self._coalesce > 0
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._expire_waits)
                task_status.started()
                while self._coalescing:
                    await self._dirty.wait()
                    await trio.sleep(self._coalesce)
                    self._dirty = trio.Event()
                    self._publish(wake=False)
                    await self._answer_round()
                    await self._absorbed()
                await trio.sleep_forever()  # long-polls still time out
        finally:
            self._coalescing = False
            self._publish()

    async def _expire_waits(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """End long-polls whose deadline passed (:meth:`changed_by`), in one task for all."""
        try:
            while True:
                # Nothing runs between expire() and the new scope: every park since is in it.
                with trio.CancelScope(deadline=self._waiters.next_at) as self._alarm:
                    task_status.started()
                    task_status = trio.TASK_STATUS_IGNORED  # started once
                    await trio.sleep_forever()
                self._waiters.expire(trio.current_time())
        finally:
            self._alarm = None

    def _publish(self, *, wake: bool = True) -> None:
        """Make the log's head visible: a new round. Unless told not to, wake every listener
        at once (without :meth:`run`, or when it stops)."""
        self._left = self._returned = self._answered = 0
        self._advance()
        self._round_head = self._head
        if wake:
            self._waiters.unpark_all()
            self._streams.unpark_all()

    def _advance(self) -> None:
        """Show what the log committed since the last look (the round's head stays)."""
        head = self.log.head
        if head != self._head:
            self._head = head
            self._published_at = self._news_at
            self._pages.clear()

    async def _answer_round(self) -> None:
        """Answer the long-polls parked now, :data:`ANSWER_GROUP` per pass (oldest first,
        each group seeing what was committed before its turn), then the streams; then open
        the gate, group by group in the same order."""
        self._gate_open = False
        self._answering = True
        try:
            await self._wake_in_groups(self._waiters, ANSWER_GROUP)
            await trio.lowlevel.checkpoint()  # the last group answers and reaches the gate
            await self._wake_in_groups(self._streams, WAKE_GROUP)
            self._answering = False
            self._gate_open = True
            while self._gate and not self._closed:
                self._release(ANSWER_GROUP)
                await trio.lowlevel.checkpoint()
        finally:
            self._answering = False
            self._open_gate()

    def _release(self, count: int) -> None:
        gate, reschedule = self._gate, trio.lowlevel.reschedule
        for _ in range(min(count, len(gate))):
            reschedule(gate.popleft())

    def _open_gate(self) -> None:
        self._gate_open = True
        self._release(len(self._gate))

    async def _wake_in_groups(self, lot: trio.lowlevel.ParkingLot | _Waiters, group: int) -> None:
        """Wake the listeners parked in *lot* now, *group* per scheduler pass (FIFO: those
        parking meanwhile, on the new head, stay parked)."""
        left = len(lot)
        while left > 0 and not self._closed:
            woken = lot.unpark(count=min(group, left))
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
        self._open_gate()
        self._waiters.unpark_all()
        self._streams.unpark_all()
