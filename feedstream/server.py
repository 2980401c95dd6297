"""Serving the app with hypercorn's trio worker, and stopping it gracefully.

:func:`serve` is what ``feedstream serve`` runs and what the integration tests start in their own
nursery (``await nursery.start(serve, config)`` hands back the bound URLs, so port 0 works).
Shutdown (SIGINT, SIGTERM or the *shutdown_trigger*) first answers every waiting long-poll with
what it has, so clients resume by cursor at once, then lets hypercorn close the connections
within its graceful timeout.
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from .app import create_app
from .config import Config
from .runtime import Runtime

logger = logging.getLogger(__name__)

__all__ = ["serve", "wait_for_signal"]

GRACEFUL_TIMEOUT = 3.0

#: Garbage-collector thresholds once serving: generation 0 is collected every 50,000 net
#: allocations instead of 700, and a full collection is rarer. With 10,000 parked long-polls a
#: full collection walks every waiting task; at the default thresholds the collector ran several
#: of those per fan-out and took most of its time (measured in bench/fanout.py).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc(policy: str) -> None:
    """Apply the garbage-collector *policy* once start-up is done.

    ``tuned`` (default) moves everything alive now (modules, config, the app) out of the
    collector's sight with ``gc.freeze()`` and raises the thresholds; ``default`` leaves
    Python's settings; ``off`` disables automatic collection (cyclic garbage then leaks: for
    measurements only).
    """
    if policy == "default":
        return
    gc.collect()
    gc.freeze()
    if policy == "off":
        gc.disable()
    else:
        gc.set_threshold(*GC_THRESHOLDS)
    logger.debug("gc policy %s: %d objects frozen, thresholds %s", policy, gc.get_freeze_count(),
                 gc.get_threshold())  # fmt: skip


async def wait_for_signal() -> None:
    """Return on the first SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logger.info("received %s, shutting down", signal.Signals(signum).name)
            return


async def serve(
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = wait_for_signal,
    runtime: Runtime | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *config* until *shutdown_trigger* returns (or the task is cancelled)."""
    runtime = runtime or Runtime(config)
    app = create_app(config, runtime)
    hconfig = HypercornConfig()
    host = config.server.host
    hconfig.bind = [
        f"[{host}]:{config.server.port}" if ":" in host else f"{host}:{config.server.port}"
    ]
    hconfig.graceful_timeout = GRACEFUL_TIMEOUT
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    hconfig.keep_alive_timeout = 75  # longer than a long-poll, so connections are reused
    hconfig.backlog = 4096

    async def trigger() -> None:
        if shutdown_trigger is None:
            await trio.sleep_forever()
        else:
            await shutdown_trigger()
        runtime.drain()  # answer waiting long-polls now, before hypercorn drains connections

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(hypercorn_serve, app, hconfig, shutdown_trigger=trigger)
        )
        tune_gc(config.server.gc)
        task_status.started(binds)
