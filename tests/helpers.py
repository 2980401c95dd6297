"""Small shared test helpers (no fixtures: those live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from feedstream.normalize import ENTRY_KEYS


async def inline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """An offload that runs the function right here (for tests on virtual time)."""
    return fn(*args, **kwargs)


def entry(feed: str, key: str, **fields: Any) -> dict[str, Any]:
    """A normalized entry with every key present."""
    data: dict[str, Any] = dict.fromkeys(ENTRY_KEYS)
    data.update(id=f"{feed}:{key}", feed=feed, title=key, tags=[], enclosures=[], via="push")
    data.update(fields)
    return data
