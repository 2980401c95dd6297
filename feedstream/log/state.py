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

    async def subscription(self, feed_id: str) -> Subscription | None:
        """*feed_id*'s subscription as stored now (``None``: it has none)."""
        ...

    async def subscription_by_token(self, token: str) -> Subscription | None:
        """The subscription whose callback token is *token*, as stored now (``None``: none)."""
        ...

    async def save_subscription(self, subscription: Subscription) -> None: ...

    async def delete_subscription(self, feed_id: str) -> None: ...

    async def replace_subscription(
        self, feed_id: str, expected: Subscription | None, new: Subscription | None
    ) -> bool:
        """Compare and set, atomically: store *new* as *feed_id*'s subscription (``None``:
        delete it) only if the stored one equals *expected* (``None``: there is none).

        False when another writer changed it in between (nothing is written then: read it
        again and decide again). ValueError when another feed has *new*'s callback token.
        This is how several nodes sharing the store update one subscription without losing
        each other's changes (a verification taken by one node, a renewal sent by another).
        """
        ...


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

    async def subscription(self, feed_id: str) -> Subscription | None:
        found: Subscription | None = await self._offload(self.store.subscription, feed_id)
        return found

    async def subscription_by_token(self, token: str) -> Subscription | None:
        found: Subscription | None = await self._offload(self.store.subscription_by_token, token)
        return found

    async def save_subscription(self, subscription: Subscription) -> None:
        await self._offload(self.store.save_subscription, subscription)

    async def delete_subscription(self, feed_id: str) -> None:
        await self._offload(self.store.delete_subscription, feed_id)

    async def replace_subscription(
        self, feed_id: str, expected: Subscription | None, new: Subscription | None
    ) -> bool:
        done: bool = await self._offload(self.store.replace_subscription, feed_id, expected, new)
        return done


class LocalLeases:
    """Every claim granted: one ingest process polls every feed."""

    async def claim(self, feed_id: str) -> bool:
        return True

    async def release(self, feed_id: str) -> None:
        return None
