"""Server secrets in Redis, shared by every node (imported only when the log is in Redis).

Key (``<p>`` is the prefix, ``feedstream`` by default):

``<p>:secret:<name>``  string: the secret in hex, set once with ``SET NX`` (the first node to
                       ask creates it; every other node, and every restart, reads that one)

See :mod:`feedstream.log.secrets`.
"""

from __future__ import annotations

import coredis

from feedstream.log.redisstate import DEFAULT_PREFIX, RedisClient, reachable
from feedstream.log.secrets import check_name, new_secret, parse_secret

__all__ = ["RedisSecrets"]


class RedisSecrets:
    """:class:`~feedstream.log.secrets.SecretStore` in Redis strings."""

    def __init__(self, client: RedisClient, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix

    async def secret(self, name: str) -> bytes:
        check_name(name)
        key = f"{self._prefix}:secret:{name}"
        text = None
        while text is None:  # None: removed between the two commands (by hand); set it again
            with reachable():
                await self._client.set(key, new_secret(), condition=coredis.PureToken.NX)
                text = await self._client.get(key)
        return parse_secret(str(text), f"redis key {key}")
