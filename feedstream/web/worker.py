"""Serving an ASGI app on trio with :class:`~feedstream.web.connection.Connection`.

The shape of hypercorn's ``worker_serve`` (``hypercorn/trio/run.py``), which it replaces for
plain HTTP/1.1: the app's lifespan starts first and ends last; the listening sockets come from
hypercorn's own ``Config`` (``host:port``, ``unix:``, ``fd://`` for the ``--workers``
supervisor's ``SO_REUSEPORT`` sockets); on the shutdown trigger the server stops accepting, closes
the connections that wait for a request, and gives the ones with a request in flight
``graceful_timeout`` seconds before they are cancelled.

The accept loop takes every connection the kernel has queued on one wake-up (up to
:data:`ACCEPT_BATCH`), where ``trio.serve_listeners`` takes one per ``accept`` call, and it
sleeps briefly when the process is out of file descriptors instead of spinning (as trio does).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.utils import repr_socket_addr

from feedstream.web.connection import HEADER_TIMEOUT, App, Connection, Terminated

logger = logging.getLogger(__name__)

__all__ = ["ACCEPT_BATCH", "serve_connections"]

ACCEPT_BATCH = 256  # connections taken per wake-up of a listening socket
CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
SKIPPED_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}  # that one connection only
CAPACITY_SLEEP = 0.1


async def serve_connections(
    app: App,
    config: HypercornConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    header_timeout: float = HEADER_TIMEOUT,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *app* on *config*'s binds until *shutdown_trigger* returns; hand back the URLs."""
    state: dict[str, Any] = {}
    lifespan = Lifespan(ASGIWrapper(app), config, state)  # type: ignore[arg-type]
    terminated = Terminated()
    connections: set[Connection] = set()

    async def connection(sock: socket.socket) -> None:
        handler = Connection(app, config, sock, state, terminated, header_timeout=header_timeout)
        connections.add(handler)
        try:
            await handler.run()
        finally:
            connections.discard(handler)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        listeners = config.create_sockets().insecure_sockets
        binds = []
        for listener in listeners:
            listener.listen(config.backlog)
            listener.setblocking(False)
            binds.append(f"http://{repr_socket_addr(listener.family, listener.getsockname())}")
        async with trio.open_nursery() as connection_nursery:
            try:
                async with trio.open_nursery() as accept_nursery:
                    for listener in listeners:
                        accept_nursery.start_soon(accept, listener, connection_nursery, connection)
                    task_status.started(binds)
                    await shutdown_trigger()
                    accept_nursery.cancel_scope.cancel()
            finally:
                for listener in listeners:
                    trio.lowlevel.notify_closing(listener)
                    listener.close()
                terminated.set()
                for handler in list(connections):
                    handler.close_if_idle()
                connection_nursery.cancel_scope.deadline = (
                    trio.current_time() + config.graceful_timeout
                )
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def accept(
    listener: socket.socket,
    nursery: trio.Nursery,
    handler: Callable[[socket.socket], Awaitable[None]],
) -> None:
    """Accept connections on *listener* forever, each served by *handler* in *nursery*."""
    tcp = listener.family in (socket.AF_INET, socket.AF_INET6)
    while True:
        await trio.lowlevel.wait_readable(listener)
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in SKIPPED_ERRNOS:
                    continue
                if exc.errno in CAPACITY_ERRNOS:
                    logger.error("cannot accept a connection (%s); retrying shortly", exc)
                    await trio.sleep(CAPACITY_SLEEP)
                    break
                raise
            sock.setblocking(False)
            if tcp:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(handler, sock)
