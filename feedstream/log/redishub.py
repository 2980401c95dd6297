"""The WebSub hub's subscriptions in Redis (imported only when the log is in Redis).

Key (``<p>`` is the prefix, ``feedstream`` by default):

``<p>:hub``  hash: subscription key -> record, both opaque JSON texts owned by
             :mod:`feedstream.service.hub` (see :class:`~feedstream.log.hubstore.HubStore`)
"""

from __future__ import annotations

from feedstream.log.redisstate import DEFAULT_PREFIX, RedisClient, reachable

__all__ = ["RedisHubStore"]


class RedisHubStore:
    """:class:`~feedstream.log.hubstore.HubStore` in one Redis hash."""

    def __init__(self, client: RedisClient, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._key = f"{prefix}:hub"

    async def load(self) -> dict[str, str]:
        with reachable():
            rows = await self._client.hgetall(self._key)
        return {str(key): str(record) for key, record in rows.items()}

    async def save(self, key: str, record: str) -> None:
        with reachable():
            await self._client.hset(self._key, {key: record})

    async def delete(self, key: str) -> None:
        with reachable():
            await self._client.hdel(self._key, [key])
