"""Opening the log and the state behind it: the SQLite database in ``data_dir``, or Redis.

:func:`open_backend` is the one place that knows which backend a config names and which part
of it a role uses: an ``all`` or ``ingest`` process writes the log; a ``deliver`` process only
reads, following a log that another process (SQLite) or any ingest node (Redis) writes.

The stored history (search, retention) is the SQLite log's own database; with the Redis log,
each process that writes the log keeps a copy of its own in ``data_dir/history.sqlite3``
(:class:`~feedstream.service.mirror.HistoryMirror`), and a deliver node has none.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from feedstream.core.config import ServerConfig
from feedstream.log.base import Log, Offload
from feedstream.log.follower import SQLiteFollower
from feedstream.log.hubstore import FILE_NAME as HUB_FILE
from feedstream.log.hubstore import HubStore, SQLiteHubStore
from feedstream.log.icons import FILE_NAME as ICONS_FILE
from feedstream.log.icons import IconStore, SQLiteIcons
from feedstream.log.secrets import FileSecrets, SecretStore
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.state import Leases, LocalLeases, SQLiteState, StateStore
from feedstream.log.store import Store
from feedstream.service.mirror import FILE_NAME as HISTORY_FILE
from feedstream.service.mirror import HistoryMirror

logger = logging.getLogger(__name__)

__all__ = ["Backend", "open_backend"]


@dataclass(frozen=True, slots=True)
class Backend:
    """What a process works with: the log, the fetch and WebSub state, the polling leases."""

    log: Log
    state: StateStore
    leases: Leases
    #: A long-lived task keeping :attr:`log` current (a follower, a tail), for ``nursery.start``.
    follow: Callable[..., Awaitable[Any]] | None = None
    store: Store | None = None  # the SQLite store, when that is the backend
    where: str = ""  # for the log: where the data is
    icons: IconStore | None = None  # the feeds' icons
    hub: HubStore | None = None  # the WebSub hub's subscriptions (asked for with ``hub=True``)
    secrets: SecretStore | None = None  # keys created once (the media proxy's ``media_key``)
    #: The database of the stored history (search, retention): the SQLite log's store, or a
    #: Redis-log writer's own copy; None on a Redis deliver node.
    history: Store | None = None
    mirror: HistoryMirror | None = None  # fills :attr:`history` from the Redis log


@asynccontextmanager
async def open_backend(
    server: ServerConfig, offload: Offload, *, hub: bool = False
) -> AsyncIterator[Backend]:
    """The backend *server* names, open for as long as the block runs; with *hub*, a store
    for the WebSub hub's subscriptions too (a hash in Redis, else ``data_dir/hub.sqlite3``)."""
    if server.shared_log:
        from feedstream.log.redis import open_redis  # coredis is only imported when used
        from feedstream.log.redishub import RedisHubStore
        from feedstream.log.redisicons import RedisIcons
        from feedstream.log.redissecrets import RedisSecrets

        async with open_redis(
            server.log, backlog=server.backlog, lease_seconds=server.lease_seconds
        ) as redis:
            copy: Store | None = None
            if server.role != "deliver":  # the writers keep the history, each a copy
                copy = await offload(Store, server.data_dir / HISTORY_FILE)
            try:
                yield Backend(
                    redis.log,
                    redis.state,
                    redis.leases,
                    follow=redis.log.run,
                    where=_safe(server.log),
                    icons=RedisIcons(redis.client),
                    hub=RedisHubStore(redis.client) if hub else None,
                    secrets=RedisSecrets(redis.client),
                    history=copy,
                    mirror=(
                        HistoryMirror(copy, redis.log, offload=offload)
                        if copy is not None
                        else None
                    ),
                )
            finally:
                if copy is not None:
                    copy.close()
        return
    store: Store = await offload(Store, server.data_dir / "feedstream.sqlite3")
    icons: SQLiteIcons | None = None
    hubs: SQLiteHubStore | None = None
    try:
        icons = await offload(SQLiteIcons, server.data_dir / ICONS_FILE, offload)
        if hub:
            hubs = await offload(SQLiteHubStore, server.data_dir / HUB_FILE, offload)
        snapshot = await offload(store.snapshot, server.backlog)
        log: SQLiteLog
        follow = None
        if server.role == "deliver":
            log = follower = SQLiteFollower(
                store, snapshot, backlog=server.backlog, offload=offload
            )
            follow = follower.run
        else:
            log = SQLiteLog(store, snapshot, backlog=server.backlog, offload=offload)
        try:
            yield Backend(
                log,
                SQLiteState(store, offload),
                LocalLeases(),
                follow=follow,
                store=store,
                where=str(server.data_dir),
                icons=icons,
                hub=hubs,
                secrets=FileSecrets(server.data_dir, offload),
                history=store,
            )
        finally:
            log.close()
    finally:
        if hubs is not None:
            hubs.close()
        if icons is not None:
            icons.close()
        store.close()


def _safe(url: str) -> str:
    """*url* without a password, for logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{host}" if credentials or at else url
