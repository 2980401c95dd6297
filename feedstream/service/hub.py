"""The WebSub hub of feedstream's own output feeds: the trio shell around
:mod:`feedstream.websub.hub`, which decides everything (what a request means, what a
verification must echo, what an answer does to a subscription); this module performs it.

* :meth:`Hub.request` takes a ``POST /websub/hub`` form and answers at once: ``202`` with the
  verification of intent started in the background, or a 4xx with a reason (and, for a topic
  this server does not publish, a ``hub.mode=denied`` GET to the callback).
* :meth:`Hub.follow` watches the log (:meth:`~feedstream.log.base.Log.watch`, the hook the
  broadcaster uses) and, per batch of appended entries, renders each subscribed topic's
  document once (:func:`feedstream.core.publish.render`, only that topic's new entries) and
  hands it to every active subscriber of the topic.
* Each subscriber has a task and a bounded queue (:data:`QUEUE_SIZE` documents; a full queue
  drops the new document and counts it): a slow or dead callback only ever delays itself.
  Attempts run under one global :class:`trio.CapacityLimiter` (:data:`CONCURRENCY`), each
  bounded by :data:`TIMEOUT`, and start one per scheduler pass (an entry's hundred requests
  never share the event loop's passes with a push all at once); retries wait outside the
  limiter. Nothing here is awaited by
  ingestion: :meth:`publish` never blocks.
* Requests to callbacks: httpx, no redirects, the response body never read beyond
  :data:`MAX_RESPONSE_BYTES` (the challenge's check), and :class:`PinnedTransport`: the callback's
  host is resolved once, every address must be public (unless ``allow_private``: see
  :func:`~feedstream.service.discover.is_public_address`), and the connection goes to the very
  address that was checked (the name still goes in ``Host`` and TLS SNI, and the certificate
  is checked against it). This closes the DNS-rebinding gap that
  :class:`~feedstream.service.discover.PublicOnlyTransport` documents (it resolves twice).
* Subscriptions (pending, active, failing) are written to a
  :class:`~feedstream.log.hubstore.HubStore` on every change and read back by :meth:`run`;
  pending ones whose verification was cut by a restart are dropped (the subscriber asks
  again). Expired subscriptions are removed by a sweep every :data:`SWEEP_INTERVAL`.
* :func:`run_hub` is how the runtime starts it (``[hub] enabled``): a client of its own, then
  :meth:`Hub.run` and :meth:`Hub.follow` under one task.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import random
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from feedstream.core.config import Config
from feedstream.core.publish import FeedInfo, authority_of, render
from feedstream.core.times import format_rfc3339
from feedstream.log.base import Log, Selection, StoredEntry
from feedstream.log.hubstore import HubStore
from feedstream.log.state import Leases, LogUnavailable
from feedstream.service.discover import Resolver, is_public_address
from feedstream.websub.hub import (
    DeliveryOutcome,
    HubMode,
    HubRequest,
    HubSettings,
    HubState,
    HubSubscription,
    Refusal,
    Topic,
    after_delivery,
    challenge_echoed,
    classify_delivery,
    denial_url,
    distribution_headers,
    is_expired,
    merge_stored,
    needs_saving,
    new_challenge,
    parse_request,
    topic_of,
    verification_url,
    verified,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CONCURRENCY",
    "HUB_LEASE",
    "QUEUE_SIZE",
    "TIMEOUT",
    "Hub",
    "PinnedTransport",
    "PrivateCallbackError",
    "Select",
    "run_hub",
]

CONCURRENCY = 32  # requests to callbacks in flight at once, all subscribers together
QUEUE_SIZE = 16  # documents waiting per subscriber
TIMEOUT = 10.0  # seconds for one request to a callback, connection included
MAX_RESPONSE_BYTES = 4096  # read of a callback's answer (the challenge); the rest is dropped
SWEEP_INTERVAL = 60.0  # seconds between looks for expired subscriptions
BATCH = 500  # entries read per round of news
#: The lease (:class:`~feedstream.log.state.Leases`) of the one hub that distributes when
#: several ingest nodes share a log: not a feed id (those have no ``:``).
HUB_LEASE = ":hub"
RELOAD_INTERVAL = 2.0  # seconds between reads of a shared store's subscriptions (at most)

Select = Callable[[str], tuple[frozenset[str] | None, Selection | None] | None]
"""An output feed's name -> (feed filter, selection), None when nothing is published so."""


async def _resolve(host: str, port: int) -> list[str]:
    with contextlib.suppress(ValueError):  # an address: nothing to look up (no thread)
        return [str(ipaddress.ip_address(host))]
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    except OSError as exc:
        raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
    return [str(info[4][0]) for info in infos]


class PrivateCallbackError(httpx.ConnectError):
    """The callback's host has an address the hub may not contact."""


class PinnedTransport(httpx.AsyncBaseTransport):
    """Resolves the host once, checks every address, and connects to the checked one.

    The request goes to the address, so a connection pool would key its connections by the
    address alone: a kept-alive connection made (and its certificate checked) for one host
    would carry a request for another host that shares the address. Each host therefore gets
    a pool of its own (at most :data:`HOST_POOLS` kept, the least recently used idle ones
    closed beyond that). A transport given as *inner* (tests) serves every host.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        allow_private: bool = False,
        resolve: Resolver | None = None,
    ) -> None:
        self._inner = inner
        self._pools: OrderedDict[tuple[str, str, int], httpx.AsyncBaseTransport] = OrderedDict()
        self._busy: Counter[tuple[str, str, int]] = Counter()  # responses not closed yet
        self._allow_private = allow_private
        self._resolve = resolve or _resolve

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        addresses = await self._resolve(host, port)
        if not addresses:
            raise httpx.ConnectError(f"cannot resolve {host}", request=request)
        if not self._allow_private:
            for address in addresses:
                if not is_public_address(address):
                    raise PrivateCallbackError(
                        f"refusing {host}: {address} is not a public address", request=request
                    )
        request.url = request.url.copy_with(host=addresses[0].split("%", 1)[0])
        request.extensions = {**request.extensions, "sni_hostname": host}
        if self._inner is not None:
            return await self._inner.handle_async_request(request)
        key = (request.url.scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            await self._prune()
            pool = self._pools[key] = httpx.AsyncHTTPTransport(retries=0, limits=POOL_LIMITS)
        self._pools.move_to_end(key)
        self._busy[key] += 1
        try:
            response = await pool.handle_async_request(request)
        except BaseException:
            self._busy[key] -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Counted(response.stream, self._busy, key)
        return response

    async def _prune(self) -> None:
        """Close the least recently used idle pools beyond :data:`HOST_POOLS`."""
        for key in list(self._pools):
            if len(self._pools) < HOST_POOLS:
                return
            if not self._busy[key]:
                del self._busy[key]
                await self._pools.pop(key).aclose()

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()


HOST_POOLS = 64  # callback hosts whose connections PinnedTransport keeps
#: Connections per callback host: as many kept alive as can be in use (many subscribers often
#: share one host; httpx's default keeps 20, and every request beyond reconnects).
POOL_LIMITS = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)


class _Counted(httpx.AsyncByteStream):
    """A response body that counts its pool's open responses down when closed."""

    def __init__(
        self,
        stream: httpx.AsyncByteStream,
        busy: Counter[tuple[str, str, int]],
        key: tuple[str, str, int],
    ) -> None:
        self._stream = stream
        self._busy = busy
        self._key = key
        self._open = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._busy[self._key] -= 1
        await self._stream.aclose()


@dataclass(frozen=True, slots=True)
class _Job:
    topic: Topic
    topic_url: str
    body: bytes


def _dumps(sub: HubSubscription) -> str:
    return json.dumps(asdict(sub), ensure_ascii=False, separators=(",", ":"))


def _loads(text: str) -> HubSubscription | None:
    try:
        data = json.loads(text)
        data["state"] = HubState(data["state"])
        return HubSubscription(**data)
    except (ValueError, TypeError, KeyError):
        return None


def _key(topic: str, callback: str) -> str:
    return json.dumps([topic, callback], ensure_ascii=False, separators=(",", ":"))


class Hub:
    """The hub: subscriptions, verification, distribution (see the module docstring)."""

    def __init__(
        self,
        settings: HubSettings,
        store: HubStore,
        client: httpx.AsyncClient,
        *,
        select: Select,
        wall_clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        concurrency: int = CONCURRENCY,
        queue_size: int = QUEUE_SIZE,
        timeout: float = TIMEOUT,
        leases: Leases | None = None,
        lease_seconds: float = 30.0,
    ) -> None:
        self.settings = settings
        self._leases = leases
        self._reload_every = min(RELOAD_INTERVAL, lease_seconds / 3)
        #: Whether this hub distributes: always alone; with *leases* (a store shared by
        #: several ingest nodes), only while it holds :data:`HUB_LEASE`.
        self.leading = leases is None
        self._store = store
        self._client = client
        self._select = select
        self._now = wall_clock
        self._jitter = jitter
        self._limiter = trio.CapacityLimiter(concurrency)
        self._starting = trio.Lock()  # see _post: one request starts per scheduler pass
        self._queue_size = queue_size
        self._timeout = timeout
        self.subs: dict[tuple[str, str], HubSubscription] = {}
        self._queues: dict[tuple[str, str], trio.MemorySendChannel[_Job]] = {}
        self._saved_at: dict[tuple[str, str], float] = {}  # when each record was last written
        self._nursery: trio.Nursery | None = None
        self.ended: Counter[str] = Counter()  # subscriptions ended, by end state
        self.deliveries: Counter[str] = Counter()  # attempts by outcome: ok, gone, error, dropped
        self.verifications: Counter[str] = Counter()  # ok, failed, denied
        host = urlsplit(settings.public_url).hostname
        self._authority = authority_of(host)

    # -- lifetime ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the stored subscriptions and serve until cancelled."""
        for key, text in (await self._store.load()).items():
            sub = _loads(text)
            if sub is None or sub.state is HubState.PENDING:
                await self._store.delete(key)  # unreadable, or a verification cut short
                continue
            self.subs[sub.key] = sub
            self._saved_at[sub.key] = self._now()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._sweep)
            if self._leases is not None:
                await nursery.start(self._lead, self._leases)
            task_status.started()
            await trio.sleep_forever()

    async def _lead(
        self, leases: Leases, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """With a shared store: distribute only while holding :data:`HUB_LEASE` (renewed
        every :attr:`_reload_every` seconds), and read the subscriptions other nodes wrote
        as often. Given up on the way out, so that another node takes over at once."""
        try:
            while True:
                try:
                    held = await leases.claim(HUB_LEASE)
                    await self.reload()
                except LogUnavailable as exc:
                    logger.warning("hub: the shared store is unreachable: %s", exc)
                    held = False
                if held is not self.leading:
                    logger.info("hub: %s distributing", "now" if held else "no longer")
                    self.leading = held
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
                await trio.sleep(self._reload_every)
        finally:
            if self.leading:
                self.leading = False
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(2),
                    contextlib.suppress(LogUnavailable),
                ):
                    await leases.release(HUB_LEASE)

    async def reload(self) -> None:
        """Read the subscriptions back from the store (:func:`merge_stored`): those made,
        renewed or ended through another node sharing it."""
        stored = {}
        for text in (await self._store.load()).values():
            if (sub := _loads(text)) is not None:
                stored[sub.key] = sub
        merged = merge_stored(self.subs, stored)
        for key in self.subs.keys() - merged.keys():
            if (queue := self._queues.pop(key, None)) is not None:
                queue.close()
            self._saved_at.pop(key, None)
        self.subs = merged

    def counts(self) -> dict[str, int]:
        """Subscriptions held, by state (every stored state listed)."""
        counts = dict.fromkeys((HubState.PENDING, HubState.ACTIVE, HubState.FAILING), 0)
        for sub in self.subs.values():
            counts[sub.state] += 1
        return {state.value: count for state, count in counts.items()}

    async def _put(self, sub: HubSubscription) -> None:
        self.subs[sub.key] = sub
        self._saved_at[sub.key] = self._now()
        await self._store.save(_key(*sub.key), _dumps(sub))

    async def _drop(self, key: tuple[str, str], state: HubState) -> None:
        if self.subs.pop(key, None) is not None:
            self.ended[state.value] += 1
        self._saved_at.pop(key, None)
        queue = self._queues.pop(key, None)
        if queue is not None:
            queue.close()
        await self._store.delete(_key(*key))

    async def _sweep(self) -> None:
        while True:
            now = self._now()
            for key, sub in list(self.subs.items()) if self.leading else ():
                if is_expired(sub, now):
                    logger.info("hub: subscription of %s to %s expired", sub.callback, sub.topic)
                    await self._drop(key, HubState.EXPIRED)
            await trio.sleep(SWEEP_INTERVAL)

    # -- subscription requests ---------------------------------------------------------------

    async def request(self, form: Any) -> tuple[int, str]:
        """Answer a ``POST /websub/hub``: (202, "") or (4xx, reason); the rest in background."""
        assert self._nursery is not None, "run() first"
        parsed = parse_request(form, self.settings, _Names(self._select))
        if isinstance(parsed, Refusal):
            if parsed.deny_callback is not None and parsed.topic_url is not None:
                self.verifications["denied"] += 1
                url = denial_url(parsed.deny_callback, parsed.topic_url, parsed.reason)
                self._nursery.start_soon(self._get, url)
            return parsed.status, parsed.reason
        if (
            parsed.mode is HubMode.SUBSCRIBE
            and (parsed.topic_url, parsed.callback) not in self.subs
        ):
            pending = HubSubscription(
                topic=parsed.topic_url,
                callback=parsed.callback,
                state=HubState.PENDING,
                lease_seconds=parsed.lease_seconds,
                expires_at=self._now() + parsed.lease_seconds,
                created_at=self._now(),
            )
            await self._put(pending)
        self._nursery.start_soon(self._verify, parsed)
        return 202, ""

    async def _get(self, url: str) -> tuple[int, bytes] | None:
        """A GET to a callback: (status, at most MAX_RESPONSE_BYTES of the body), or None."""
        try:
            async with self._limiter:
                # Requests start one per scheduler pass, not all at once: an entry queues a
                # document for every subscriber, and a hundred requests woken together would
                # each take their steps (~1.5 ms of CPU in httpx per request) in the same
                # passes, holding a push or a long-poll sharing this event loop for the whole
                # burst. Staggered, a few are ever runnable at once; a request waiting for its
                # answer (a hanging callback) holds a place in the limiter only.
                async with self._starting:
                    await trio.lowlevel.checkpoint()
                with trio.fail_after(self._timeout):
                    async with self._client.stream("GET", url) as response:
                        body = b""
                        async for chunk in response.aiter_raw():
                            body += chunk
                            if len(body) > MAX_RESPONSE_BYTES:
                                break
                        return response.status_code, body[: MAX_RESPONSE_BYTES + 1]
        except (httpx.HTTPError, httpx.StreamError, trio.TooSlowError) as exc:
            logger.info("hub: GET %s failed: %s", urlsplit(url).netloc, exc)
            return None

    async def _verify(self, request: HubRequest) -> None:
        challenge = new_challenge()
        answer = await self._get(verification_url(request, challenge))
        key = (request.topic_url, request.callback)
        existing = self.subs.get(key)
        if answer is None or not challenge_echoed(answer[0], answer[1], challenge):
            self.verifications["failed"] += 1
            logger.info("hub: %s of %s not confirmed", request.mode, request.callback)
            if existing is not None and existing.state is HubState.PENDING:
                await self._drop(key, HubState.FAILED)
            return  # an active subscription stays as it was
        self.verifications["ok"] += 1
        new = verified(request, existing, self._now())
        if new is None:
            await self._drop(key, HubState.GONE)
        else:
            await self._put(new)
        logger.info("hub: %s of %s to %s verified", request.mode, request.callback, key[0])

    # -- content distribution ----------------------------------------------------------------

    def topics(self) -> set[str]:
        """The topic URLs with a subscriber to deliver to."""
        return {t for (t, _), s in self.subs.items() if s.state is not HubState.PENDING}

    def publish(self, topic_url: str, body: bytes) -> int:
        """Queue *body* (the topic's document) for every active or failing subscriber of
        *topic_url*; never blocks. Returns how many got it queued."""
        assert self._nursery is not None, "run() first"
        topic = topic_of(topic_url, self.settings.public_url)
        if topic is None:
            return 0
        job = _Job(topic, topic_url, body)
        queued = 0
        for key, sub in list(self.subs.items()):
            if key[0] != topic_url or sub.state is HubState.PENDING:
                continue
            queue = self._queues.get(key)
            if queue is None:
                queue, out = trio.open_memory_channel[_Job](self._queue_size)
                self._queues[key] = queue
                self._nursery.start_soon(self._deliver_loop, key, out)
            try:
                queue.send_nowait(job)
                queued += 1
            except trio.WouldBlock:
                self.deliveries["dropped"] += 1
                logger.warning("hub: %s is behind; a document was dropped", sub.callback)
        return queued

    async def _deliver_loop(
        self, key: tuple[str, str], jobs: trio.MemoryReceiveChannel[_Job]
    ) -> None:
        async with jobs:
            async for job in jobs:
                if key not in self.subs:
                    return
                await self._deliver(key, job)

    async def _deliver(self, key: tuple[str, str], job: _Job) -> None:
        first, attempt = self._now(), 1
        while (sub := self.subs.get(key)) is not None:
            headers = distribution_headers(
                job.topic, job.topic_url, self.settings.hub_url, job.body, sub.secret
            )
            status, error = await self._post(sub.callback, headers, job.body)
            step = after_delivery(
                sub,
                status,
                attempt=attempt,
                first_attempt=first,
                now=self._now(),
                jitter=self._jitter(),
                error=error,
            )
            if step.sub is None:
                self.deliveries["gone"] += 1
                logger.info("hub: %s answered 410; subscription ended", sub.callback)
                await self._drop(key, HubState.GONE)
                return
            ok = classify_delivery(status) is DeliveryOutcome.OK
            self.deliveries["ok" if ok else "error"] += 1
            if step.sub.state is not sub.state:
                logger.warning("hub: %s is now %s", sub.callback, step.sub.state)
            saved_at = self._saved_at.get(key, 0.0)
            if needs_saving(sub, step.sub, saved_at=saved_at, now=self._now()):
                await self._put(step.sub)
            else:
                self.subs[key] = step.sub  # in memory; written with the next change
            if step.retry_in is None:
                return
            await trio.sleep(step.retry_in)
            attempt += 1

    async def _post(
        self, url: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> tuple[int | None, str | None]:
        try:
            async with self._limiter:
                # Requests start one per scheduler pass, not all at once: an entry queues a
                # document for every subscriber, and a hundred requests woken together would
                # each take their steps (~1.5 ms of CPU in httpx per request) in the same
                # passes, holding a push or a long-poll sharing this event loop for the whole
                # burst. Staggered, a few are ever runnable at once; a request waiting for its
                # answer (a hanging callback) holds a place in the limiter only.
                async with self._starting:
                    await trio.lowlevel.checkpoint()
                with trio.fail_after(self._timeout):
                    async with self._client.stream(
                        "POST", url, headers=list(headers), content=body
                    ) as response:
                        return response.status_code, None  # the body is never read
        except (httpx.HTTPError, httpx.StreamError, trio.TooSlowError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:200]

    async def follow(
        self, log: Log, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Distribute what is appended to *log* from now on, until cancelled."""
        news = trio.Event()

        def moved() -> None:
            news.set()

        log.watch(moved)
        cursor = log.head
        task_status.started()
        while True:
            await news.wait()
            news = trio.Event()
            while True:
                page = log.read(cursor, feeds=None, limit=BATCH, view=Selection(duplicates=True))
                cursor = page.cursor
                if not page.entries:
                    break
                if not page.reset and self.leading:  # another node's hub distributes
                    self.distribute(page.entries)

    def distribute(self, entries: Sequence[StoredEntry]) -> None:
        """Render each subscribed topic's new *entries* once and queue it to its subscribers."""
        root = self.settings.public_url.rstrip("/")
        for url in sorted(self.topics()):
            topic = topic_of(url, self.settings.public_url)
            chosen = None if topic is None else self._select(topic.name)
            if topic is None or chosen is None:
                continue
            feeds, view = chosen
            picked = [e for e in entries if _selects(e, feeds, view)]
            decoded = [d for e in reversed(picked) if (d := _decoded(e.json)) is not None]
            if not decoded:
                continue
            title = _title(topic.name, decoded)
            info = FeedInfo(
                name=topic.name,
                title=title,
                self_url=url,
                home_url=f"{root}/",
                authority=self._authority,
                source_url=f"{root}/feeds/{{feed}}.atom",
                hub_url=self.settings.hub_url,
            )
            self.publish(url, render(topic.format, info, decoded))

    def describe(self) -> list[dict[str, Any]]:
        """``GET /api/hub``: every subscription held, by topic then callback; secrets never
        (only whether there is one)."""
        return [
            {
                "topic": sub.topic,
                "callback": sub.callback,
                "state": sub.state.value,
                "lease_seconds": sub.lease_seconds,
                "expires_at": format_rfc3339(sub.expires_at),
                "created_at": format_rfc3339(sub.created_at),
                "signed": sub.secret is not None,
                "failures": sub.failures,
                "last_delivery": _time(sub.last_delivery),
                "last_error": sub.last_error,
            }
            for _, sub in sorted(self.subs.items())
        ]


def _time(value: float | None) -> str | None:
    return None if value is None else format_rfc3339(value)


async def run_hub(
    config: Config,
    store: HubStore,
    log: Log,
    select: Select,
    *,
    leases: Leases | None = None,
    task_status: trio.TaskStatus[Hub] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the hub of *config* (``[hub]``, ``server.public_url``) until cancelled: its own
    client (:class:`PinnedTransport`, no redirects), its subscriptions loaded from *store*, and
    every entry appended to *log* distributed. Started, it hands the :class:`Hub` back.

    *leases*: the store is shared by several ingest nodes (Redis); one hub distributes, the
    others take subscription requests and stand by (see :meth:`Hub._lead`)."""
    public_url = config.server.public_url
    if public_url is None:
        raise ValueError("the hub needs server.public_url")
    settings = HubSettings(public_url, config.hub.min_lease, config.hub.max_lease)
    transport = PinnedTransport(allow_private=config.hub.allow_private_callbacks)
    async with httpx.AsyncClient(transport=transport, follow_redirects=False) as client:
        hub = Hub(
            settings,
            store,
            client,
            select=select,
            leases=leases,
            lease_seconds=config.server.lease_seconds,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            await nursery.start(hub.follow, log)
            logger.info("hub: serving %s with %d subscriptions", settings.hub_url, len(hub.subs))
            task_status.started(hub)


def _selects(entry: StoredEntry, feeds: Collection[str] | None, view: Selection | None) -> bool:
    if feeds is not None and entry.feed not in feeds:
        return False
    if entry.duplicate and not (view is not None and view.duplicates):
        return False
    return view is None or view.test is None or view.test(entry)


def _decoded(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _title(name: str, entries: Sequence[Mapping[str, Any]]) -> str:
    if name == "all":
        return "feedstream: every feed"
    return str(next((e["feed_title"] for e in entries if e.get("feed_title")), name))


class _Names:
    """The output feed names *select* publishes, as a container ``parse_request`` can use."""

    def __init__(self, select: Select) -> None:
        self._select = select

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._select(name) is not None
