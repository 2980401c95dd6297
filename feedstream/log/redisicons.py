"""Feed icons in Redis, shared by every node (imported only when the log is in Redis).

Keys (``<p>`` is the prefix, ``feedstream`` by default):

``<p>:icons``       hash: feed id -> :class:`~feedstream.log.icons.IconRecord` as JSON
``<p>:iconimages``  hash: feed id -> ``{"media_type", "etag", "body"}`` as JSON, the body in
                    base64 (the client decodes replies as text)

An image is written before its record, and read with its own media type and ETag.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict

from feedstream.log.icons import IconRecord, StoredImage
from feedstream.log.redisstate import DEFAULT_PREFIX, RedisClient, reachable

__all__ = ["RedisIcons"]


class RedisIcons:
    """:class:`~feedstream.log.icons.IconStore` in two Redis hashes."""

    def __init__(self, client: RedisClient, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._records = f"{prefix}:icons"
        self._images = f"{prefix}:iconimages"

    async def icons(self) -> dict[str, IconRecord]:
        with reachable():
            rows = await self._client.hgetall(self._records)
        return {feed_id: IconRecord(**json.loads(text)) for feed_id, text in rows.items()}

    async def image(self, feed_id: str) -> StoredImage | None:
        with reachable():
            text = await self._client.hget(self._images, feed_id)
        if text is None:
            return None
        try:
            data = json.loads(text)
            return StoredImage(data["media_type"], data["etag"], base64.b64decode(data["body"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None

    async def save(self, record: IconRecord, body: bytes | None) -> None:
        with reachable():
            if record.media_type is None:
                await self._client.hdel(self._images, [record.feed_id])
            elif body is not None:
                image = {
                    "media_type": record.media_type,
                    "etag": record.etag,
                    "body": base64.b64encode(body).decode("ascii"),
                }
                await self._client.hset(self._images, {record.feed_id: json.dumps(image)})
            text = json.dumps(asdict(record), ensure_ascii=False, separators=(",", ":"))
            await self._client.hset(self._records, {record.feed_id: text})
