"""Small shared test helpers (no fixtures: those live in conftest.py)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from feedstream.core.normalize import ENTRY_KEYS


async def inline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """An offload that runs the function right here (for tests on virtual time)."""
    return fn(*args, **kwargs)


def entry(feed: str, key: str, **fields: Any) -> dict[str, Any]:
    """A normalized entry with every key present."""
    data: dict[str, Any] = dict.fromkeys(ENTRY_KEYS)
    data.update(id=f"{feed}:{key}", feed=feed, title=key, tags=[], enclosures=[], via="push")
    data.update(fields)
    return data


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text as ``{(sample name, labels): value}``, read with prometheus-client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value; a missing series is a KeyError naming it."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        raise KeyError(f"no sample {name}{labels}")
    return samples[key]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
