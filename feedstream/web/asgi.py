"""Small ASGI helpers shared by the raw ASGI apps (the delivery layer, the demo publisher)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["ASGIApp", "Receive", "Scope", "Send", "answer_lifespan"]

# ASGI's own types, kept loose: hypercorn and Quart each declare stricter TypedDict unions.
Scope = Any
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """Run a ``lifespan`` scope for an app that needs no start-up or shutdown work."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return
