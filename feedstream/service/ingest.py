"""The one ingest path: a document in, new entries out.

Polling, webhook pushes, WebSub deliveries and ``feedstream check`` all go through
:class:`Ingestor`: parse off the event loop within the feed's deadline (:meth:`examine`), then
append what is new to the log and count it (:meth:`ingest`).

On the way in (:meth:`Ingestor.ingest`):

* the ``[[rules]]`` run where the document is parsed, in the worker process
  (:func:`~feedstream.service.parsing.sift`): every entry gets ``matched`` and ``highlight``,
  tags are added, and what a ``drop`` rule matched is left out. A dropped entry's id is
  remembered by the log as seen (:meth:`~feedstream.log.base.Log.mark_seen`), so the next
  poll does not bring it back. The ids of each feed's last document, once the log has them
  (stored, or dropped and remembered), go with the next document to the worker, which skips
  them: a poll mostly repeats the last document, and rules run once per entry arriving, not
  once per poll;
* entries are folded (``[server] fold_duplicates``): the worker computes each entry's keys
  (canonical URL, title), and the :class:`~feedstream.core.fold.FoldIndex` here, a few dict
  look-ups per entry, gives an entry whose story another feed delivered in the last 48 hours
  its ``duplicate_of``; it is stored, and hidden from listeners who do not ask for duplicates.
  The index is rebuilt at start from the entries the log still holds (:meth:`rebuild_fold`).
* with ``[server] proxy_media``, the image URLs of each new entry (``content_html``, ``image``,
  image enclosures) become signed ``/media/`` paths, in the worker, after the rules
  (:func:`feedstream.core.media.proxy_entry`): once, as stored, so delivery never rewrites.

Two fast paths, named:

* a JSON body of at most :data:`INLINE_JSON_BYTES` is parsed right here on the event loop
  instead of in a worker. JSON parses in linear time (our own JSON Feed reader: no XML, no
  entities, no feedparser) and 4 KiB take about a millisecond at most, while a trip to a worker
  costs several scheduler passes, each a long one on a server busy with thousands of listeners.
  XML documents (what hubs and most webhooks send) always go to a worker.
* in the worker, the entries of an Atom or RSS document whose ids the log has (the feed's last
  document's, above) are cut out of the bytes before feedparser sees them
  (:mod:`feedstream.core.trim`, an expat scan of well under a millisecond): a WebSub "fat
  ping" is the whole feed for one new entry, and parsing and sanitizing the others was most of
  its cost. It is exact or not done: the entries left parse as they would in the whole
  document. The skipped ids come back (``Sifted.skipped``) and count as what they are,
  duplicates, listed by the feed (``_known``, :meth:`Ingestor.listed_ids`) and part of the
  document (:attr:`Ingested.entries`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import trio

from feedstream.core.config import FeedConfig
from feedstream.core.fold import FoldIndex, FoldKeys
from feedstream.core.media import MediaSigner
from feedstream.core.normalize import ParsedFeed
from feedstream.core.rules import Rule
from feedstream.log.base import Log, Offload
from feedstream.log.state import LogUnavailable
from feedstream.service.parsing import (
    Dropped,
    Sifted,
    examine,
    overran,
    parse_in_worker,
    parse_slots,
    parse_within,
    rule_spec,
    sift,
)
from feedstream.service.stats import Stats
from feedstream.websub.discovery import Discovery

logger = logging.getLogger(__name__)

__all__ = ["INLINE_JSON_BYTES", "Ingested", "Ingestor", "feed_entries"]

#: Pushed JSON up to this size is parsed on the event loop (the module's one fast path).
INLINE_JSON_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Ingested:
    """What one document gave: its parse, the entries new to the log, and its hub if asked."""

    parsed: ParsedFeed
    new: list[dict[str, Any]] = field(default_factory=list)
    discovery: Discovery | None = None
    dropped: int = 0  # entries of the document a rule dropped
    skipped: int = 0  # known entries cut out before parsing: duplicates, not in parsed.entries

    @property
    def entries(self) -> int:
        """How many entries the document gave (rules' drops aside), skipped ones included."""
        return len(self.parsed.entries) + self.skipped


class Ingestor:
    """Parses documents off the event loop and appends their new entries to *log*.

    Without a *log* (``feedstream check``) it only examines. *rules* apply to what is
    ingested (:meth:`set_rules` changes them); *fold* (None: off) folds duplicates across
    feeds; *clock* gives the time folding counts in (seconds since the epoch).
    """

    def __init__(
        self,
        log: Log | None,
        stats: Stats | None = None,
        *,
        parse: Offload = parse_in_worker,
        slots: trio.CapacityLimiter | None = None,
        rules: Sequence[Rule] = (),
        fold: FoldIndex | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log = log
        self.stats = stats or Stats()
        self.parse = parse
        self.slots = slots or parse_slots()
        self.fold = fold
        self.clock = clock
        self.rules: tuple[Rule, ...] = ()
        self._spec = rule_spec(())
        self._actions: dict[str, str] = {}  # rule id -> action, for counting (old ids kept)
        # Per feed: the ids of its last document the log has (see the module docstring).
        self._known: dict[str, frozenset[str]] = {}
        #: ``proxy_media``: image URLs of new entries become signed ``/media/`` paths, in the
        #: worker (:func:`~feedstream.service.parsing.sift`); set once the key is read.
        self.media: MediaSigner | None = None
        self.set_rules(rules)

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Apply *rules* to the entries ingested from now on (a reload)."""
        self.rules = tuple(rules)
        self._spec = rule_spec(self.rules)
        self._actions.update({rule.id: rule.action for rule in self.rules})

    def listed_ids(self) -> set[str]:
        """The ids each feed's last document listed (the log has them all): what feeds still
        list, whose memory retention keeps fresh (:mod:`feedstream.service.history`)."""
        return set().union(*self._known.values())

    async def examine(
        self,
        feed: FeedConfig,
        body: bytes,
        *,
        content_type: str | None,
        via: str,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[ParsedFeed, Discovery | None]:
        """Parse *body* for *feed* (relative links against *url*, the feed's own by default)
        within ``parse_timeout``; with *headers*, look for its WebSub hub too."""
        base = url or feed.url
        if headers is None and len(body) <= INLINE_JSON_BYTES and _is_json(content_type, body):
            return examine(body, feed, content_type, base, via)
        args = (body, feed, content_type, base, via, headers)
        examined = await parse_within(self.parse, self.slots, feed.limits, examine, *args)
        return examined or (overran(feed.limits), None)  # None: overran, the worker was killed

    async def ingest(
        self,
        feed: FeedConfig,
        body: bytes,
        *,
        content_type: str | None,
        via: str,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Ingested:
        """Parse (with the rules, see the module docstring), then append the entries to the
        log: ``new`` are those it lacked. A document that is not a feed (``parsed.error``)
        appends nothing.
        """
        sifted = await self._sift(feed, body, content_type, via, url, headers)
        if sifted.parsed.error:
            return Ingested(sifted.parsed, [], sifted.discovery)
        new = await self.append(
            feed,
            sifted.parsed,
            dropped=sifted.dropped,
            keys=sifted.keys,
            texts=sifted.texts,
            skipped=sifted.skipped,
        )
        skipped = len(sifted.skipped)
        return Ingested(sifted.parsed, new, sifted.discovery, len(sifted.dropped), skipped)

    async def _sift(
        self,
        feed: FeedConfig,
        body: bytes,
        content_type: str | None,
        via: str,
        url: str | None,
        headers: Mapping[str, str] | None,
    ) -> Sifted:
        base = url or feed.url
        known = self._known.get(feed.id, frozenset())
        fold = self.fold is not None
        args: tuple[Any, ...] = (body, feed, content_type, base, via, headers, self._spec, fold)
        args += (known,) if self.media is None else (known, self.media)
        if headers is None and len(body) <= INLINE_JSON_BYTES and _is_json(content_type, body):
            return sift(*args)
        sifted = await parse_within(self.parse, self.slots, feed.limits, sift, *args)
        return sifted or Sifted(overran(feed.limits))  # None: overran, the worker was killed

    async def append(
        self,
        feed: FeedConfig,
        parsed: ParsedFeed,
        *,
        dropped: Sequence[Dropped] = (),
        keys: Sequence[FoldKeys] = (),
        texts: Mapping[str, str] | None = None,
        skipped: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """Append what *parsed* holds for *feed* (folded by *keys*, one per entry, when
        folding is on; *texts*: content texts by entry id, for the log's search index);
        remember the *dropped*; return the new entries. *skipped*: the ids of the document's
        known entries cut out before parsing (the log has them): duplicates, and still
        listed by the feed."""
        assert self.log is not None, "an examine-only ingestor has no log"
        offered = feed_entries(feed, parsed)
        fold = self.fold
        if fold is not None and len(keys) == len(offered):
            now = self.clock()
            for entry, entry_keys in zip(offered, keys, strict=True):
                first = fold.check_keys(feed.id, entry["id"], entry_keys, now)
                if first is not None:
                    entry["duplicate_of"] = first  # our own dict, fresh from the parse
        new = await self.log.append(offered, texts=texts)
        self.stats.count_ingest(offered, new)
        if skipped:  # what appending them would have found: the log has them all
            self.stats.duplicates[feed.id] += len(skipped)
        for entry in new:
            if entry.get("duplicate_of") is not None:
                self.stats.folded[feed.id] += 1
            if entry.get("matched"):
                self.stats.count_rules(entry["matched"], self._actions)
        remembered = await self._remember(dropped) if dropped else ()
        # The log has every id offered now (new, or stored before) and the dropped ones it
        # remembered, and the skipped ones it had: the next document's repeats of them skip the
        # rules (or the parse).
        self._known[feed.id] = frozenset(
            [*(entry["id"] for entry in offered), *skipped, *remembered]
        )
        return new

    async def _remember(self, dropped: Sequence[Dropped]) -> list[str]:
        """Have the log remember dropped ids as seen; return those it holds now (best effort:
        when it cannot be reached, a rule drops them again next time)."""
        assert self.log is not None
        try:
            new = set(await self.log.mark_seen([(item.id, item.feed) for item in dropped]))
        except LogUnavailable as exc:
            logger.warning("could not remember %d dropped entries: %s", len(dropped), exc)
            return []
        for item in dropped:
            if item.id in new:
                self.stats.count_rules(item.matched, self._actions)
        return [item.id for item in dropped]

    async def rebuild_fold(self, log: Log, limit: int, offload: Offload) -> None:
        """Fill the fold index from the newest *limit* entries *log* holds (at start): those
        received within the index's window, oldest first. JSON is decoded in a thread."""
        if self.fold is None:
            return
        page = log.read(None, feeds=None, limit=limit)  # folded duplicates are left out
        texts = [entry.json for entry in page.entries]
        window = self.fold.window
        self.fold = await offload(_rebuilt, texts, window, self.fold.max_keys, self.clock())


def feed_entries(feed: FeedConfig, parsed: ParsedFeed) -> list[dict[str, Any]]:
    """The parsed entries as they go into the log: a configured feed title wins."""
    title = feed.title or parsed.title or feed.id
    if all(entry["feed_title"] == title for entry in parsed.entries):
        return parsed.entries
    return [dict(entry, feed_title=title) for entry in parsed.entries]


def _rebuilt(texts: Sequence[str], window: float, max_keys: int, now: float) -> FoldIndex:
    """A fold index of the stored entries *texts* (JSON, oldest first) received in *window*."""
    index = FoldIndex(window=window, max_keys=max_keys)
    for text in texts:
        try:
            entry = json.loads(text)
            received = datetime.fromisoformat(entry["received"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if now - received <= window and isinstance(entry.get("id"), str):
            index.add(
                str(entry.get("feed")), entry["id"], entry.get("url"), entry.get("title"), received
            )
    return index


def _is_json(content_type: str | None, body: bytes) -> bool:
    if content_type is not None:
        return content_type in ("application/feed+json", "application/json")
    return body.lstrip()[:1] in (b"{", b"[")
