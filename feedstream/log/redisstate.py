"""What the ingest nodes share in Redis besides the log: feed states, WebSub subscriptions and
the polling leases; and the small pieces every Redis module here uses (key names, scripts run
by EVALSHA, the mapping of "Redis cannot be reached" to :class:`LogUnavailable`).

Key layout (``<p>`` is the prefix, ``feedstream`` by default; see ``docs/redis.md``):

``<p>:feeds``   hash: feed id -> :class:`FeedState` as JSON
``<p>:subs``    hash: feed id -> :class:`Subscription` as JSON
``<p>:tokens``  hash: callback token -> feed id (keeps tokens unique, like SQLite's UNIQUE;
               finds the row a hub's callback is about, on any node)
``<p>:lease:<feed id>``  string: the node id holding the right to poll the feed (and to keep
               its WebSub subscription), with a TTL

Subscriptions are changed by several nodes (the lease holder, and whichever node takes a hub's
callback), so besides plain saves there is a compare-and-set
(:meth:`RedisState.replace_subscription`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import coredis
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import NoScriptError, ReadOnlyError, ResponseError

from feedstream.log.state import LogUnavailable
from feedstream.log.store import FeedState, Subscription

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PREFIX",
    "Keys",
    "LuaScript",
    "RedisClient",
    "RedisLeases",
    "RedisState",
    "reachable",
]

DEFAULT_PREFIX = "feedstream"

#: The client every Redis module here works with: replies decoded to str.
RedisClient = coredis.Redis[str]


@dataclass(frozen=True, slots=True)
class Keys:
    """Every key feedstream uses in Redis, under one *prefix*."""

    prefix: str = DEFAULT_PREFIX

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def stream(self) -> str:
        return f"{self.prefix}:log"

    @property
    def ids(self) -> str:
        return f"{self.prefix}:ids"

    @property
    def counts(self) -> str:
        return f"{self.prefix}:counts"

    @property
    def feeds(self) -> str:
        return f"{self.prefix}:feeds"

    @property
    def subscriptions(self) -> str:
        return f"{self.prefix}:subs"

    @property
    def tokens(self) -> str:
        return f"{self.prefix}:tokens"

    def lease(self, feed_id: str) -> str:
        return f"{self.prefix}:lease:{feed_id}"


@contextmanager
def reachable(what: str = "redis") -> Iterator[None]:
    """Turn "Redis cannot be reached" (refused, lost, timed out, loading, a read-only replica)
    into :class:`LogUnavailable`; every other error (and trio.Cancelled) passes unchanged."""
    try:
        yield
    except (RedisConnectionError, ReadOnlyError, TimeoutError, OSError) as exc:
        raise LogUnavailable(f"{what}: {exc}") from exc


class LuaScript:
    """A Lua script run by EVALSHA, loaded again when the server answers NOSCRIPT (a restart,
    SCRIPT FLUSH, a failover)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self, client: RedisClient, keys: Sequence[str], args: Sequence[str | int]
    ) -> Any:
        try:
            return await client.evalsha(self.sha, keys, args)
        except NoScriptError:
            logger.debug("redis: loading script %s", self.sha)
            await client.script_load(self.source)
            return await client.evalsha(self.sha, keys, args)


_SAVE_SUBSCRIPTION = LuaScript("""
-- KEYS: subscriptions, tokens; ARGV: feed id, token, subscription JSON
local owner = redis.call('HGET', KEYS[2], ARGV[2])
if owner and owner ~= ARGV[1] then
  return redis.error_reply('TOKEN callback token already used by another feed')
end
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local token = cjson.decode(old)['token']
  if token ~= ARGV[2] then redis.call('HDEL', KEYS[2], token) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 1
""")

_DELETE_SUBSCRIPTION = LuaScript("""
-- KEYS: subscriptions, tokens; ARGV: feed id
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
local token = cjson.decode(old)['token']
if redis.call('HGET', KEYS[2], token) == ARGV[1] then redis.call('HDEL', KEYS[2], token) end
return redis.call('HDEL', KEYS[1], ARGV[1])
""")

_REPLACE_SUBSCRIPTION = LuaScript("""
-- KEYS: subscriptions, tokens; ARGV: feed id, expected JSON ('': no row), new JSON ('': delete),
-- new token. Compare and set: the stored row must equal the expected one, field by field (so
-- that the same values written with other number formatting still compare equal).
local function same(a, b)
  for k, v in pairs(a) do if b[k] ~= v then return false end end
  for k, _ in pairs(b) do if a[k] == nil then return false end end
  return true
end
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if old then return 0 end
elseif not old or not same(cjson.decode(old), cjson.decode(ARGV[2])) then
  return 0
end
local old_token = old and cjson.decode(old)['token']
if ARGV[3] == '' then
  if old then
    if redis.call('HGET', KEYS[2], old_token) == ARGV[1] then
      redis.call('HDEL', KEYS[2], old_token)
    end
    redis.call('HDEL', KEYS[1], ARGV[1])
  end
  return 1
end
local owner = redis.call('HGET', KEYS[2], ARGV[4])
if owner and owner ~= ARGV[1] then
  return redis.error_reply('TOKEN callback token already used by another feed')
end
if old_token and old_token ~= ARGV[4] then redis.call('HDEL', KEYS[2], old_token) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[1])
return 1
""")

_BY_TOKEN = LuaScript("""
-- KEYS: tokens, subscriptions; ARGV: token. The row of the feed holding the token.
local feed = redis.call('HGET', KEYS[1], ARGV[1])
if not feed then return false end
return redis.call('HGET', KEYS[2], feed)
""")

_RENEW = LuaScript("""
-- KEYS: lease; ARGV: node id, ttl in ms. Compare and PEXPIRE: only the holder renews.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
""")

_RELEASE = LuaScript("""
-- KEYS: lease; ARGV: node id. Compare and DEL: only the holder releases.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""")


@contextmanager
def _unique_token(feed_id: str) -> Iterator[None]:
    """Redis unreachable -> LogUnavailable; a token held by another feed -> ValueError."""
    try:
        with reachable():
            yield
    except ResponseError as exc:
        if "TOKEN" not in str(exc):
            raise
        raise ValueError(f"subscription of {feed_id}: callback token already used") from exc


def _dumps(value: Any) -> str:
    return json.dumps(asdict(value), ensure_ascii=False, separators=(",", ":"))


class RedisState:
    """:class:`~feedstream.log.state.StateStore` in Redis hashes, shared by every node."""

    def __init__(self, client: RedisClient, keys: Keys | None = None) -> None:
        self._client = client
        self._keys = keys or Keys()

    async def feed_states(self) -> dict[str, FeedState]:
        with reachable():
            rows = await self._client.hgetall(self._keys.feeds)
        return {feed_id: FeedState(**json.loads(text)) for feed_id, text in rows.items()}

    async def save_feed_state(self, state: FeedState) -> None:
        with reachable():
            await self._client.hset(self._keys.feeds, {state.id: _dumps(state)})

    async def subscriptions(self) -> dict[str, Subscription]:
        with reachable():
            rows = await self._client.hgetall(self._keys.subscriptions)
        return {feed_id: Subscription(**json.loads(text)) for feed_id, text in rows.items()}

    async def subscription(self, feed_id: str) -> Subscription | None:
        with reachable():
            text = await self._client.hget(self._keys.subscriptions, feed_id)
        return None if text is None else Subscription(**json.loads(text))

    async def subscription_by_token(self, token: str) -> Subscription | None:
        keys = [self._keys.tokens, self._keys.subscriptions]
        with reachable():
            text = await _BY_TOKEN(self._client, keys, [token])
        if not text:
            return None
        found = Subscription(**json.loads(text))
        return found if found.token == token else None

    async def save_subscription(self, subscription: Subscription) -> None:
        """Insert or replace *subscription*; ValueError if another feed has its token."""
        keys = [self._keys.subscriptions, self._keys.tokens]
        args = [subscription.feed_id, subscription.token, _dumps(subscription)]
        with _unique_token(subscription.feed_id):
            await _SAVE_SUBSCRIPTION(self._client, keys, args)

    async def replace_subscription(
        self, feed_id: str, expected: Subscription | None, new: Subscription | None
    ) -> bool:
        """Compare and set (one script): see
        :meth:`~feedstream.log.state.StateStore.replace_subscription`."""
        keys = [self._keys.subscriptions, self._keys.tokens]
        args = [
            feed_id,
            "" if expected is None else _dumps(expected),
            "" if new is None else _dumps(new),
            "" if new is None else new.token,
        ]
        with _unique_token(feed_id):
            return bool(await _REPLACE_SUBSCRIPTION(self._client, keys, args))

    async def delete_subscription(self, feed_id: str) -> None:
        keys = [self._keys.subscriptions, self._keys.tokens]
        with reachable():
            await _DELETE_SUBSCRIPTION(self._client, keys, [feed_id])


class RedisLeases:
    """:class:`~feedstream.log.state.Leases` in Redis: one key per polled feed, holding the id
    of the node that polls it, expiring after *ttl* seconds unless renewed.

    A claim is ``SET key node NX PX ttl``, or renewing it when this node already holds it (a
    compare-and-PEXPIRE script); a release is a compare-and-DEL, so that a node whose lease
    expired and went to another never removes the other's.
    """

    def __init__(
        self,
        client: RedisClient,
        ttl: float = 30.0,
        *,
        keys: Keys | None = None,
        node: str | None = None,
    ) -> None:
        self._client = client
        self._keys = keys or Keys()
        self.ttl_ms = max(1, round(ttl * 1000))
        #: This process, as lease holders are named: random, so a restarted node is another.
        self.node = node or secrets.token_hex(8)

    async def claim(self, feed_id: str) -> bool:
        key = self._keys.lease(feed_id)
        with reachable():
            if await self._client.set(
                key, self.node, condition=coredis.PureToken.NX, px=self.ttl_ms
            ):
                return True
            return bool(await _RENEW(self._client, [key], [self.node, self.ttl_ms]))

    async def release(self, feed_id: str) -> None:
        with reachable():
            await _RELEASE(self._client, [self._keys.lease(feed_id)], [self.node])

    async def holder(self, feed_id: str) -> str | None:
        """The node holding *feed_id*'s lease now, if any (for tests and diagnostics)."""
        with reachable():
            return await self._client.get(self._keys.lease(feed_id))
