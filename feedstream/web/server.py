"""Serving the app on trio (hypercorn's HTTP layer, feedstream's connection loop), and stopping it
gracefully.

:func:`serve` is what ``feedstream serve`` runs and what the integration tests start in their own
nursery (``await nursery.start(serve, config)`` hands back the bound URLs, so port 0 works).
Shutdown (SIGINT, SIGTERM or the *shutdown_trigger*) first answers every waiting long-poll with
what it has, so clients resume by cursor at once, then lets hypercorn close the connections
within its graceful timeout.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable

import trio

from feedstream.core.config import Config, ConfigError
from feedstream.service.gcpolicy import manage_gc
from feedstream.service.runtime import ReloadUnavailable, Runtime
from feedstream.web.app import create_app
from feedstream.web.connection import ServerConfig
from feedstream.web.worker import serve_connections

logger = logging.getLogger(__name__)

__all__ = ["serve", "wait_for_signal"]

GRACEFUL_TIMEOUT = 3.0


async def wait_for_signal() -> None:
    """Return on the first SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logger.info("received %s, shutting down", signal.Signals(signum).name)
            return


async def reload_on_sighup(
    runtime: Runtime, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Reload the config on every SIGHUP; a broken config is logged and changes nothing."""
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            logger.info("received SIGHUP, reloading %s", runtime.config.source)
            try:
                await runtime.reload()
            except (ConfigError, ReloadUnavailable) as exc:
                logger.error("reload failed, nothing changed: %s", exc)


async def serve(
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = wait_for_signal,
    runtime: Runtime | None = None,
    loader: Callable[[], Config] | None = None,
    fd: int | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *config* until *shutdown_trigger* returns (or the task is cancelled).

    With a *loader* (which re-reads the config file), SIGHUP and ``POST /api/admin/reload``
    reload the feeds. With *fd*, serve on that inherited listening socket instead of binding
    ``server.host``/``port`` (how the ``--workers`` supervisor hands each process its own
    ``SO_REUSEPORT`` socket).
    """
    runtime = runtime or Runtime(config, loader=loader)
    app = create_app(config, runtime)
    hconfig = ServerConfig()
    host = config.server.host
    hconfig.bind = [
        f"[{host}]:{config.server.port}" if ":" in host else f"{host}:{config.server.port}"
    ]
    if fd is not None:
        hconfig.bind = [f"fd://{fd}"]
    hconfig.graceful_timeout = GRACEFUL_TIMEOUT
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    hconfig.keep_alive_timeout = 75  # longer than a long-poll, so connections are reused
    hconfig.backlog = 4096
    hconfig.include_server_header = False  # no banner; one header less on every answer

    async def trigger() -> None:
        if shutdown_trigger is None:
            await trio.sleep_forever()
        else:
            await shutdown_trigger()
        runtime.drain()  # answer waiting long-polls now, before hypercorn drains connections

    async def run_server(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await serve_connections(app, hconfig, shutdown_trigger=trigger, task_status=task_status)
        nursery.cancel_scope.cancel()  # served and drained: stop the service and the rest

    # One owner for every lifetime (the shape of hypercorn's worker_serve): the service starts
    # first, the server once it runs; the server stops first, then the service with it.
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        binds = await nursery.start(run_server)
        if loader is not None and hasattr(signal, "SIGHUP"):
            await nursery.start(reload_on_sighup, runtime)
        await nursery.start(manage_gc, config.server.gc, runtime.stats)
        task_status.started(binds)
