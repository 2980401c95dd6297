"""The shared log backend: entries in one Redis stream, any number of stateless nodes.

Every node appends with one Lua script (dedup, sequence, ``XADD``, counts: atomic, so two nodes
racing on the same entry store it once) and tails the stream (``XREAD BLOCK`` from the last ID
it has seen) into a local ring of the newest ``backlog`` entries. Reads answer from that ring
(the rules are :class:`~feedstream.log.cursors.RingReader`'s, the same as SQLite's), so they
keep answering while Redis is away; appends then fail with
:class:`~feedstream.log.state.LogUnavailable`.

Cursors are ``<epoch>-<seq>``: *seq* is the stream ID ``<seq>-0`` the script gave the entry, and
*epoch* a random token in ``<prefix>:epoch``, created by the first node that finds it missing.
A Redis that restarted empty has no epoch: the next node creates another, and every cursor of
the old one reads as a ``reset`` (which hands out a cursor of the new one). A cursor older than
the retained history is a reset too. The tail notices a new epoch (it looks at least once per
block timeout) and reloads its ring. ``docs/redis.md`` has the key layout and the advice on
persistence.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import coredis
import trio
from coredis.response.types import StreamEntry
from coredis.retry import NoRetryPolicy

from feedstream.core.backoff import backoff_delay
from feedstream.core.times import format_rfc3339
from feedstream.log.base import StoredEntry
from feedstream.log.cursors import Ring, RingReader, format_cursor
from feedstream.log.redisstate import (
    DEFAULT_PREFIX,
    Keys,
    LuaScript,
    RedisClient,
    RedisLeases,
    RedisState,
    reachable,
)
from feedstream.log.state import LogUnavailable

logger = logging.getLogger(__name__)

__all__ = ["BLOCK_SECONDS", "RedisBackend", "RedisLog", "connect", "open_redis"]

#: How long one ``XREAD BLOCK`` waits for news: also how often the tail looks at the epoch.
BLOCK_SECONDS = 1.0
#: Bounds of a single command's reply (a blocked XREAD included), and of connecting.
STREAM_TIMEOUT = 10.0
CONNECT_TIMEOUT = 2.0
#: The tail's reconnection backoff: from this many seconds, doubling up to the cap, +-50 %.
RECONNECT_BASE = 0.05
RECONNECT_CAP = 5.0

# A missing epoch means a Redis that lost its data (or an operator who rebuilt the log): the
# first script to notice makes a new one, and starts the stream, the sequence and the counts
# over. The ids stay (after an empty restart there are none), so dedup outlives a rebuild.
_ENSURE_EPOCH = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch, 'NX')
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[5])
end
"""

_APPEND = LuaScript(
    """
-- KEYS: epoch, seq, stream, ids, counts
-- ARGV: a new epoch token (used if there is none), retention, then per entry: id, feed, and
--       its JSON in two parts, before and after the cursor's value
"""
    + _ENSURE_EPOCH
    + """
local new = {}
for i = 3, #ARGV, 4 do
  if redis.call('SADD', KEYS[4], ARGV[i]) == 1 then
    local seq = redis.call('INCR', KEYS[2])
    local cursor = epoch .. '-' .. string.format('%d', seq)
    local data = ARGV[i + 2] .. cursor .. ARGV[i + 3]
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], string.format('%d-0', seq),
               'feed', ARGV[i + 1], 'epoch', epoch, 'data', data)
    redis.call('HINCRBY', KEYS[5], ARGV[i + 1], 1)
    new[#new + 1] = (i - 3) / 4
    new[#new + 1] = seq
  end
end
return {epoch, new}
"""
)

# Ids a rule dropped join the ids the append script deduplicates by: the entry is never stored,
# and a later append of it is a duplicate. Returns the ids that were not there.
_MARK_SEEN = LuaScript(
    """
-- KEYS: ids; ARGV: the ids to remember
local new = {}
for i = 1, #ARGV do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    new[#new + 1] = ARGV[i]
  end
end
return new
"""
)

_SNAPSHOT = LuaScript(
    """
-- KEYS: epoch, seq, stream, ids (unused), counts; ARGV: a new epoch token, how many entries
"""
    + _ENSURE_EPOCH
    + """
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local recent = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[2])
return {epoch, seq, recent, redis.call('HGETALL', KEYS[5])}
"""
)

_Outcome = Literal["ok", "epoch", "gap"]


def _render(item: dict[str, Any]) -> tuple[str, str]:
    """*item*'s JSON as the SQLite backend stores it, in two parts: before and after the
    cursor's value (the script puts it in between). The cursor stays where *item* has the key
    (normalized entries have it, second), or comes last."""
    keys = list(item)
    at = keys.index("cursor") if "cursor" in item else len(keys)
    head = {key: item[key] for key in keys[:at]}
    tail = {key: item[key] for key in keys[at + 1 :]}
    before = _dumps(head)[:-1] + ("," if head else "") + '"cursor":"'
    after = '"' + ("," + _dumps(tail)[1:] if tail else "}")
    return before, after


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _parse(raw: Any) -> tuple[str, StoredEntry]:
    """``(epoch, entry)`` of one stream entry, as XREAD/XRANGE or a script return it."""
    if isinstance(raw, StreamEntry):
        identifier, fields = raw.identifier, dict(raw.field_values)
    else:  # [id, [field, value, ...]] from a script
        identifier, flat = raw[0], raw[1]
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
    seq = int(str(identifier).partition("-")[0])
    epoch = str(fields["epoch"])
    feed, data = str(fields["feed"]), str(fields["data"])
    return epoch, StoredEntry(seq, format_cursor(epoch, seq), feed, data)


class RedisLog(RingReader):
    """The :class:`~feedstream.log.base.Log` kept in a Redis stream shared by every node.

    Open it with :meth:`open` (it reads the newest entries), then keep it current with
    :meth:`run` in a nursery (``await nursery.start(log.run)``).
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        backlog: int,
        retention: int | None = None,
        keys: Keys | None = None,
        clock: Callable[[], float] | None = None,
        block: float = BLOCK_SECONDS,
    ) -> None:
        self._client = client
        self._backlog = backlog
        #: What ``MAXLEN ~`` keeps in the stream (at least the backlog each ring holds).
        self.retention = max(backlog, retention or backlog)
        self._keys = keys or Keys()
        self._now = clock or time.time
        self._block = block
        self._log_id = ""  # the epoch, once read
        self._ring = Ring(backlog)
        self._head = 0
        self._counts: dict[str, int] = {}
        self._watchers: list[Callable[[], None]] = []
        self._closed = False
        self._available = False
        self._sync_lock = trio.Lock()
        self._changed = trio.Event()

    @classmethod
    async def open(
        cls,
        client: RedisClient,
        *,
        backlog: int,
        retention: int | None = None,
        keys: Keys | None = None,
        clock: Callable[[], float] | None = None,
        block: float = BLOCK_SECONDS,
    ) -> RedisLog:
        """A log over *client*, loaded with the newest entries (LogUnavailable if Redis cannot
        be reached)."""
        log = cls(client, backlog=backlog, retention=retention, keys=keys, clock=clock, block=block)
        await log.reload("opened")
        return log

    # -- reading (the rules are RingReader's) ------------------------------------------------

    @property
    def epoch(self) -> str:
        """The epoch this node's ring belongs to (the issuer part of its cursors)."""
        return self._log_id

    @property
    def head_seq(self) -> int:
        """The seq of the newest entry this node knows of (what :attr:`head` names)."""
        return self._head

    def counts(self) -> Mapping[str, int]:
        return self._counts

    @property
    def available(self) -> bool:
        return self._available

    def watch(self, callback: Callable[[], None]) -> None:
        self._watchers.append(callback)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once *predicate* holds, looking again whenever the head, the epoch or the
        availability changed (for whoever waits on the log's state: /healthz, tests)."""
        while not predicate():
            await self._changed.wait()

    def close(self) -> None:
        self._closed = True

    # -- writing -----------------------------------------------------------------------------

    async def append(
        self, entries: Sequence[Mapping[str, Any]], *, texts: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        # *texts* are not kept: the history's copy indexes from the stream (service.mirror).
        if not entries:
            return []
        received = format_rfc3339(self._now())
        items: list[tuple[dict[str, Any], str, str]] = []
        args: list[str | int] = [secrets.token_hex(4), self.retention]
        for entry in entries:
            item = dict(entry, received=received)
            before, after = _render(item)
            args += [str(entry["id"]), str(entry["feed"]), before, after]
            items.append((item, before, after))
        try:
            with reachable("redis append"):
                epoch, new = await _APPEND(self._client, self._script_keys(), args)
        except LogUnavailable:
            self._set_available(False)
            raise
        self._set_available(True)
        epoch = str(epoch)
        stored: list[StoredEntry] = []
        result: list[dict[str, Any]] = []
        for index, seq in zip(new[::2], new[1::2], strict=True):
            item, before, after = items[int(index)]
            cursor = item["cursor"] = format_cursor(epoch, int(seq))
            data = before + cursor + after  # as the script stored it
            stored.append(StoredEntry(int(seq), cursor, str(item["feed"]), data))
            result.append(item)
        if stored:
            logger.debug("redis log: %d new entries, last %s", len(stored), stored[-1].cursor)
            await self._readable(epoch, stored)
        return result

    async def mark_seen(self, items: Sequence[tuple[str, str]]) -> list[str]:
        if not items:
            return []
        try:
            with reachable("redis mark seen"):
                new = await _MARK_SEEN(self._client, [self._keys.ids], [i for i, _ in items])
        except LogUnavailable:
            self._set_available(False)
            raise
        self._set_available(True)
        return [str(entry_id) for entry_id in new or ()]

    async def _readable(self, epoch: str, stored: list[StoredEntry]) -> None:
        """Make what this node just stored readable here before the append returns."""
        outcome = self._accept(epoch, stored)
        if outcome == "gap":  # others appended in between and the tail has not brought it yet
            with reachable("redis read"):
                await self._fill(stored[-1].seq)
        elif outcome == "epoch":
            await self.reload("the epoch changed")

    async def stream_after(self, seq: int, count: int) -> list[tuple[str, StoredEntry]]:
        """``(epoch, entry)`` of up to *count* entries of the stream after *seq*, oldest first,
        read from Redis (not the ring): for a copy that follows the whole log (the history of
        an ingest node, :mod:`feedstream.service.mirror`). Raises
        :class:`~feedstream.log.state.LogUnavailable` when Redis cannot be reached."""
        with reachable("redis read"):
            raw = await self._client.xrange(self._keys.stream, f"{seq + 1}-0", "+", count=count)
        return [_parse(item) for item in raw]

    # -- following the stream ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tail the stream until cancelled: new entries into the ring, the watchers told once
        per batch; a new epoch reloads the ring; a lost connection is retried with backoff
        while reads answer from the ring."""
        task_status.started()
        failures = 0
        looked = trio.current_time()
        while True:
            try:
                with reachable("redis tail"):
                    if failures or trio.current_time() - looked >= self._block:
                        looked = trio.current_time()  # at least once per block timeout
                        if await self._client.get(self._keys.epoch) != self._log_id:
                            await self.reload("the epoch changed")
                    await self._follow()
            except LogUnavailable as exc:
                failures = await self._lost(failures, exc)
                continue
            if failures:
                logger.info("redis log: connected again after %d failed attempts", failures)
                failures = 0
            self._set_available(True)

    async def _follow(self) -> None:
        """One ``XREAD BLOCK`` from the head (an explicit ID: ``$`` would lose what came
        between two reads) into the ring."""
        reply = await self._client.xread(
            {self._keys.stream: f"{self._head}-0"},
            count=self._backlog,
            block=max(1, round(self._block * 1000)),
        )
        for raw in (reply or {}).values():
            batch = [_parse(item) for item in raw]
            epochs = {epoch for epoch, _ in batch}
            epoch = batch[0][0] if len(epochs) == 1 else ""
            outcome = self._accept(epoch, [entry for _, entry in batch])
            if outcome == "epoch":
                await self.reload("the epoch changed")
            elif outcome == "gap":  # trimmed past us: contiguity, not MAXLEN arithmetic
                await self.reload("fell behind the retained history")

    async def _lost(self, failures: int, exc: LogUnavailable) -> int:
        """Redis went away (again): say so, wait a jittered while; the new failure count."""
        failures += 1
        if failures == 1:
            logger.warning("redis log: %s; reads answer from memory until it is back", exc)
        self._set_available(False)
        await trio.sleep(
            backoff_delay(
                failures, random.random(), base=RECONNECT_BASE, cap=RECONNECT_CAP, spread=(0.5, 1.5)
            )
        )
        return failures

    def _accept(self, epoch: str, entries: Sequence[StoredEntry]) -> _Outcome:
        """Extend the ring with the entries after the head; "epoch" if they belong to another
        epoch, "gap" if they do not follow the head (nothing taken then)."""
        if epoch != self._log_id:
            return "epoch"
        fresh = [entry for entry in entries if entry.seq > self._head]
        if not fresh:
            return "ok"
        if fresh[0].seq != self._head + 1:
            return "gap"
        self._ring.extend(fresh)
        self._head = fresh[-1].seq
        for entry in fresh:
            self._counts[entry.feed] = self._counts.get(entry.feed, 0) + 1
        self._tell()
        return "ok"

    async def _fill(self, upto: int) -> None:
        """Read the stream from the head to *upto* into the ring (reload if it is not there)."""
        async with self._sync_lock:
            if self._head >= upto:
                return
            raw = await self._client.xrange(self._keys.stream, f"{self._head + 1}-0", f"{upto}-0")
            batch = [_parse(item) for item in raw]
            if not batch or len({epoch for epoch, _ in batch}) != 1:
                outcome: _Outcome = "gap"
            else:
                outcome = self._accept(batch[0][0], [entry for _, entry in batch])
        if outcome != "ok" or self._head < upto:
            await self.reload("the stream moved on")

    async def reload(self, why: str) -> None:
        """Start the ring over from the newest entries in Redis (in whatever epoch it is now)."""
        async with self._sync_lock:
            with reachable("redis read"):
                reply = await _SNAPSHOT(
                    self._client, self._script_keys(), [secrets.token_hex(4), self._backlog]
                )
            epoch, seq, recent, counts = str(reply[0]), int(reply[1]), reply[2], reply[3]
            entries = [entry for e, entry in map(_parse, reversed(recent)) if e == epoch]
            # Keep the contiguous tail ending at the head, so that seq arithmetic holds.
            start = len(entries)
            while start > 0 and entries[start - 1].seq == (
                seq if start == len(entries) else entries[start].seq - 1
            ):
                start -= 1
            pairs: list[tuple[Any, Any]] = (
                list(counts.items())
                if isinstance(counts, Mapping)
                else list(zip(counts[::2], counts[1::2], strict=True))
            )
            changed = epoch != self._log_id or seq != self._head
            if self._log_id and epoch != self._log_id:
                logger.warning("redis log: %s: epoch %s -> %s", why, self._log_id, epoch)
            elif self._log_id:
                logger.info("redis log: %s: reloaded at %s-%d", why, epoch, seq)
            self._log_id = epoch
            self._ring = Ring(self._backlog)
            self._ring.extend(entries[start:])
            self._head = seq
            self._counts = {str(feed): int(count) for feed, count in pairs}
            self._available = True
            if changed:
                self._tell()
            self._signal()

    def _script_keys(self) -> list[str]:
        k = self._keys
        return [k.epoch, k.seq, k.stream, k.ids, k.counts]

    def _set_available(self, available: bool) -> None:
        if available != self._available:
            self._available = available
            self._signal()

    def _tell(self) -> None:
        """The head moved: call the watchers (unless closed)."""
        if not self._closed:
            for callback in self._watchers:
                callback()
        self._signal()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


@dataclass(frozen=True, slots=True)
class RedisBackend:
    """What :func:`open_redis` yields: the log, the shared state, the polling leases."""

    log: RedisLog
    state: RedisState
    leases: RedisLeases
    client: RedisClient


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[RedisClient]:
    """A coredis client for *url* (``redis://host:port/db``), open for as long as the block
    runs. No retries inside the client: an append that could not be stored fails at once."""
    client: RedisClient = coredis.Redis.from_url(
        url,
        decode_responses=True,
        retry_policy=NoRetryPolicy(),
        connect_timeout=CONNECT_TIMEOUT,
        stream_timeout=STREAM_TIMEOUT,
    )
    try:
        async with client:
            yield client
    except BaseExceptionGroup as group:
        # The client's pool runs a task group, which wraps whatever the block raised: hand a
        # lone error (LogUnavailable, an assertion, trio.Cancelled) on as itself.
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from None
        raise


@asynccontextmanager
async def open_redis(
    url: str,
    *,
    backlog: int,
    lease_seconds: float = 30.0,
    prefix: str = DEFAULT_PREFIX,
    retention: int | None = None,
) -> AsyncIterator[RedisBackend]:
    """The Redis backend at *url*, open for as long as the block runs.

    Raises :class:`LogUnavailable` if Redis cannot be reached at the start. The caller keeps
    the log current with ``await nursery.start(backend.log.run)``.
    """
    keys = Keys(prefix)
    async with connect(url) as client:
        log = await RedisLog.open(client, backlog=backlog, retention=retention, keys=keys)
        try:
            yield RedisBackend(
                log,
                RedisState(client, keys),
                RedisLeases(client, lease_seconds, keys=keys),
                client,
            )
        finally:
            log.close()
