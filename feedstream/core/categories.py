"""Categories of feeds: what ``?category=`` resolves to, and which config changes are only a
feed's category (so that a reload regroups the feed without restarting its poller).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from feedstream.core.config import FeedConfig

__all__ = ["feed_categories", "only_category_changed"]


def feed_categories(feeds: Iterable[FeedConfig]) -> dict[str, frozenset[str]]:
    """Each category of *feeds* and the ids of its feeds (feeds without one are in none)."""
    members: dict[str, set[str]] = {}
    for feed in feeds:
        if feed.category is not None:
            members.setdefault(feed.category, set()).add(feed.id)
    return {name: frozenset(ids) for name, ids in members.items()}


def only_category_changed(old: FeedConfig | None, new: FeedConfig) -> bool:
    """Whether *new* differs from *old* in its ``category`` and in nothing else: nothing the
    poller, the parser or WebSub read."""
    return old is not None and old != new and replace(old, category=new.category) == new
