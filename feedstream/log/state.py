"""What the ingest side keeps besides entries: per-feed fetch state, WebSub subscriptions and,
with several ingest nodes, who polls which feed.

:class:`StateStore` is the interface (the SQLite store in ``data_dir`` behind
:class:`SQLiteState`, or Redis for several machines); :class:`Leases` hands out the right to
poll a feed, so that each polled feed is polled by exactly one node at a time. With one ingest
process (SQLite) :class:`LocalLeases` grants every claim.
"""

from __future__ import annotations

from typing import Protocol

import trio

from feedstream.log.base import Offload
from feedstream.log.store import FeedState, Store, Subscription

__all__ = [
    "Leases",
    "LocalLeases",
    "LogUnavailable",
    "SQLiteState",
    "StateStore",
]


class LogUnavailable(Exception):
    """The shared store cannot be reached now: nothing was stored; try again later."""


class StateStore(Protocol):
    """Per-feed fetch state and WebSub subscriptions (every method may raise
    :class:`LogUnavailable`)."""

    async def feed_states(self) -> dict[str, FeedState]: ...

    async def save_feed_state(self, state: FeedState) -> None: ...

    async def subscriptions(self) -> dict[str, Subscription]: ...

    async def save_subscription(self, subscription: Subscription) -> None: ...

    async def delete_subscription(self, feed_id: str) -> None: ...


class Leases(Protocol):
    """Time-limited claims on polling a feed, one holder at a time."""

    async def claim(self, feed_id: str) -> bool:
        """Take or renew this node's lease on *feed_id*; False when another node holds it."""
        ...

    async def release(self, feed_id: str) -> None:
        """Give the lease up (if this node holds it)."""
        ...


class SQLiteState:
    """:class:`StateStore` over the SQLite :class:`Store`, its calls run by *offload*."""

    def __init__(self, store: Store, offload: Offload = trio.to_thread.run_sync) -> None:
        self.store = store
        self._offload = offload

    async def feed_states(self) -> dict[str, FeedState]:
        states: dict[str, FeedState] = await self._offload(self.store.feed_states)
        return states

    async def save_feed_state(self, state: FeedState) -> None:
        await self._offload(self.store.save_feed_state, state)

    async def subscriptions(self) -> dict[str, Subscription]:
        subscriptions: dict[str, Subscription] = await self._offload(self.store.subscriptions)
        return subscriptions

    async def save_subscription(self, subscription: Subscription) -> None:
        await self._offload(self.store.save_subscription, subscription)

    async def delete_subscription(self, feed_id: str) -> None:
        await self._offload(self.store.delete_subscription, feed_id)


class LocalLeases:
    """Every claim granted: one ingest process polls every feed."""

    async def claim(self, feed_id: str) -> bool:
        return True

    async def release(self, feed_id: str) -> None:
        return None
