"""Several ingest nodes, one feed: the lease decides who polls, the shared state carries on.

The nodes share an in-memory lease table and state store here (the Redis implementations are
tested against a real Redis in tests/log); time is trio's virtual clock.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import trio
import trio.testing

from feedstream.core.config import FeedConfig
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.state import LogUnavailable
from feedstream.log.store import FeedState, Store, Subscription
from feedstream.service.fetch import HostGate
from feedstream.service.poller import PollContext, hold_feed
from tests.service.test_poller import EPOCH, Recorder, atom
from tests.support.helpers import inline

LEASE = 30.0
FEED = FeedConfig(id="f", url="https://a.test/feed", interval=60)


class SharedLeases:
    """One lease table for every node; claims expire on the virtual clock."""

    def __init__(self) -> None:
        self.holders: dict[str, tuple[str, float]] = {}
        self.down = False

    def node(self, name: str) -> NodeLeases:
        return NodeLeases(self, name)


@dataclasses.dataclass
class NodeLeases:
    table: SharedLeases
    name: str

    async def claim(self, feed_id: str) -> bool:
        if self.table.down:
            raise LogUnavailable("down")
        now = trio.current_time()
        holder = self.table.holders.get(feed_id)
        if holder is None or holder[0] == self.name or holder[1] <= now:
            self.table.holders[feed_id] = (self.name, now + LEASE)
            return True
        return False

    async def release(self, feed_id: str) -> None:
        if self.table.holders.get(feed_id, ("",))[0] == self.name:
            del self.table.holders[feed_id]


class SharedState:
    """The fetch state every node reads and writes."""

    def __init__(self) -> None:
        self.feeds: dict[str, FeedState] = {}

    async def feed_states(self) -> dict[str, FeedState]:
        return {k: dataclasses.replace(v) for k, v in self.feeds.items()}

    async def save_feed_state(self, state: FeedState) -> None:
        self.feeds[state.id] = dataclasses.replace(state)

    async def subscriptions(self) -> dict[str, Subscription]:
        return {}

    async def save_subscription(self, subscription: Subscription) -> None:
        pass

    async def delete_subscription(self, feed_id: str) -> None:
        pass


def context(
    client: httpx.AsyncClient, log: SQLiteLog, store: Store, state: SharedState, leases: NodeLeases
) -> PollContext:
    """A node's poll context on virtual time, sharing *state* and a lease table."""
    return PollContext(
        client, log, store, HostGate(total=2, per_host=2, gap=0), inline,
        lambda: EPOCH + trio.current_time(), lambda: 0.5, parse=inline,
        state=state, leases=leases, lease_seconds=LEASE,
    )  # fmt: skip


def answer(request: httpx.Request, n: int) -> httpx.Response:
    if request.headers.get("if-none-match") == '"v1"':
        return httpx.Response(304)
    return httpx.Response(200, content=atom("a", "b"), headers={"ETag": '"v1"'})


async def test_one_node_polls_and_another_takes_over_within_a_lease(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    leases, state = SharedLeases(), SharedState()
    store = Store(tmp_path / "db.sqlite3")
    log = SQLiteLog(store, store.snapshot(10), backlog=10, offload=inline)
    seen: dict[str, list[tuple[float, str | None]]] = {"a": [], "b": []}

    def node(name: str) -> tuple[httpx.AsyncClient, PollContext]:
        def handler(request: httpx.Request) -> httpx.Response:
            seen[name].append((trio.current_time(), request.headers.get("if-none-match")))
            return answer(request, 0)

        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        return client, context(client, log, store, state, leases.node(name))

    (client_a, a), (client_b, b) = node("a"), node("b")
    async with client_a, client_b, trio.open_nursery() as nursery:
        scope_a = trio.CancelScope()

        async def run_a() -> None:
            with scope_a:
                await hold_feed(FEED, a)

        nursery.start_soon(run_a)
        await trio.testing.wait_all_tasks_blocked()
        await nursery.start(hold_feed, FEED, b)
        await trio.sleep(125)  # between renewals (every 10 s) and polls: no ties to order
        assert [t for t, _ in seen["a"]] == [0, 60, 120] and seen["b"] == []
        died = trio.current_time()
        expires = leases.holders["f"][1]
        scope_a.cancel()  # node a dies (its lease is not released: it just stops)
        leases.holders["f"] = ("a", expires)
        await trio.sleep(expires - died + LEASE / 3)
        assert leases.holders["f"][0] == "b"  # within one lease (and one renewal period)
        await trio.sleep(90)
        nursery.cancel_scope.cancel()
    # b kept a's schedule (next poll due 60 s after a's last, at 180 s), not a poll at takeover.
    assert [t for t, _ in seen["b"]][:2] == [180, 240], seen
    # b carried a's conditional-GET state: its first request revalidated a's ETag.
    assert seen["b"][0][1] == '"v1"'
    assert log.counts() == {"f": 2}  # two entries, stored once whoever polled


async def test_losing_the_lease_stops_polling(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    leases, state = SharedLeases(), SharedState()
    store = Store(tmp_path / "db.sqlite3")
    log = SQLiteLog(store, store.snapshot(10), backlog=10, offload=inline)
    recorder = Recorder(answer)
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        ctx = context(client, log, store, state, leases.node("a"))
        async with trio.open_nursery() as nursery:
            await nursery.start(hold_feed, FEED, ctx)
            await trio.sleep(1)
            assert recorder.times() == [0]
            leases.holders["f"] = ("b", trio.current_time() + 1000)  # someone else's now
            await trio.sleep(LEASE / 3 + 1)
            leases.down = True  # and the store goes away: nothing polls, nothing crashes
            await trio.sleep(300)
            nursery.cancel_scope.cancel()
    assert recorder.times() == [0]
