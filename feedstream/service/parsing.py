"""Parsing off the event loop: worker processes, one slot per core, a deadline per document.

Parsing a feed is CPU work (feedparser, nh3) that would hold the event loop and, with it, every
listener; it runs in trio-parallel worker processes. :func:`examine` is the function a worker
runs: parse, and (for WebSub) find the hub, in one trip. :func:`sift` is what the ingest path
has it run: the entries the log has cut out of the document first (:mod:`feedstream.core.trim`),
then :func:`examine`, then the ``[[rules]]`` over every entry and the entries' fold keys, so
that neither costs the event loop anything.

Rules travel to a worker as a :data:`RuleSpec`, plain strings (canonical query texts), and each
worker process parses a rule set once and keeps it (:func:`compiled_rules`, a
:class:`~feedstream.core.rules.RuleSet` with its queries compiled together): compiled RE2
patterns do not pickle, and compiling a hundred rules for every document would cost more than
applying them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import trio
import trio_parallel

from feedstream.core.config import FeedConfig, FetchLimits
from feedstream.core.fold import FoldKeys, fold_keys
from feedstream.core.media import MediaSigner, proxy_entry
from feedstream.core.normalize import ParsedFeed
from feedstream.core.query import EntryText, parse_query
from feedstream.core.rules import Action, Rule, RuleSet, apply_rules
from feedstream.core.search import entry_content_text
from feedstream.core.trim import parse_skipping_known
from feedstream.log.base import Offload
from feedstream.websub.discovery import Discovery, discover

__all__ = [
    "Dropped",
    "RuleSpec",
    "Sifted",
    "compiled_rules",
    "examine",
    "overran",
    "parse_in_worker",
    "parse_slots",
    "parse_within",
    "rule_spec",
    "sift",
]

#: A rule set as plain data: ``(id, canonical query, action, tag, feeds)`` per rule, in order.
RuleSpec = tuple[tuple[str, str, str, str | None, tuple[str, ...] | None], ...]

_T = TypeVar("_T")


async def parse_in_worker(fn: Callable[..., Any], *args: Any) -> Any:
    """Run *fn* in a trio-parallel worker process; killed if the caller stops waiting."""
    return await trio_parallel.run_sync(fn, *args, kill_on_cancel=True)


def parse_slots() -> trio.CapacityLimiter:
    """One slot per core: how many documents are parsed at once."""
    return trio.CapacityLimiter(os.cpu_count() or 2)


def overran(limits: FetchLimits) -> ParsedFeed:
    return ParsedFeed.failure(f"parsing took longer than {limits.parse_timeout:g} s; abandoned")


async def parse_within(
    parse: Offload,
    slots: trio.CapacityLimiter,
    limits: FetchLimits,
    fn: Callable[..., _T],
    *args: Any,
) -> _T | None:
    """``fn(*args)`` through *parse*, for at most ``limits.parse_timeout`` s; None if it overran.

    The clock starts once one of the *slots* is ours: time spent queueing behind other
    documents (a burst of pushes on a busy server) is not the document's fault, and must not
    turn a good one into a rejected one.
    """
    async with slots:
        with trio.move_on_after(limits.parse_timeout):
            result: _T = await parse(fn, *args)
            return result
    return None


def examine(
    body: bytes,
    feed: FeedConfig,
    content_type: str | None,
    url: str | None,
    via: str,
    headers: Mapping[str, str] | None = None,
) -> tuple[ParsedFeed, Discovery | None]:
    """Parse a document and, given the *headers* it came with, look for its WebSub hub.

    Discovery runs whether or not the body is a feed (a topic may be an HTML page); when it is
    one, the hubs and self URL the parser found stand in for a second scan of the body. A pure
    function of its arguments: what a worker process runs.
    """
    parsed, discovery, _ = _examine(body, feed, content_type, url, via, headers, frozenset())
    return parsed, discovery


def _examine(
    body: bytes,
    feed: FeedConfig,
    content_type: str | None,
    url: str | None,
    via: str,
    headers: Mapping[str, str] | None,
    known: frozenset[str],
) -> tuple[ParsedFeed, Discovery | None, tuple[str, ...]]:
    """:func:`examine`, the entries whose id is in *known* cut out before parsing where that
    is exact (:func:`~feedstream.core.trim.parse_skipping_known`); their ids come third."""
    parsed, skipped = parse_skipping_known(
        body,
        feed_id=feed.id,
        known=known,
        base_url=url,
        content_type=content_type,
        via=via,
        max_entries=feed.limits.max_entries,
    )
    if headers is None or url is None:
        return parsed, None, skipped
    links = None if parsed.error else (parsed.hubs, parsed.self_url)
    return parsed, discover(headers, body, content_type, url, feed_links=links), skipped


def rule_spec(rules: Sequence[Rule]) -> RuleSpec:
    """*rules* as plain, picklable, hashable data (see :func:`compiled_rules`)."""
    return tuple(
        (
            rule.id,
            str(rule.query),
            rule.action,
            rule.tag,
            None if rule.feeds is None else tuple(sorted(rule.feeds)),
        )
        for rule in rules
    )


@functools.lru_cache(maxsize=8)
def compiled_rules(spec: RuleSpec) -> RuleSet:
    """The rules of *spec*, parsed and compiled once per process (a canonical query parses back
    equal); a :class:`RuleSet` is a tuple of the rules."""
    return RuleSet(
        Rule(
            rule_id,
            parse_query(text),
            cast(Action, action),
            tag,
            None if feeds is None else frozenset(feeds),
        )
        for rule_id, text, action, tag, feeds in spec
    )


@dataclass(frozen=True, slots=True)
class Dropped:
    """An entry a rule dropped: never stored; its id is remembered as seen."""

    id: str
    feed: str
    matched: tuple[str, ...]  # the rules that matched it, the dropping one last


@dataclass(frozen=True, slots=True)
class Sifted:
    """What :func:`sift` made of a document: the parse (its entries the kept ones, rules
    applied), the hub, the dropped entries, and each kept entry's fold keys (in the order of
    the entries; empty when folding is off)."""

    parsed: ParsedFeed
    discovery: Discovery | None = None
    dropped: tuple[Dropped, ...] = ()
    keys: tuple[FoldKeys, ...] = ()
    #: The words of each kept entry's content (``entry_content_text``), by entry id, for the
    #: entries the log does not have yet: worked out here once for the rules and the search
    #: index both, instead of again in the process that writes the log.
    texts: Mapping[str, str] | None = None
    #: The ids of the known entries cut out of the document before it was parsed (in document
    #: order, once per entry): the log has them, and they are not in ``parsed.entries``.
    skipped: tuple[str, ...] = ()


def sift(
    body: bytes,
    feed: FeedConfig,
    content_type: str | None,
    url: str | None,
    via: str,
    headers: Mapping[str, str] | None,
    rules: RuleSpec,
    fold: bool,
    known: frozenset[str] = frozenset(),
    media: MediaSigner | None = None,
) -> Sifted:
    """:func:`examine`, then the rules (in order) over every entry, then the fold keys of the
    entries kept, then (with *media*: ``proxy_media``) their image URLs rewritten to signed
    ``/media/`` paths (:func:`~feedstream.core.media.proxy_entry`). A pure function of its
    arguments: what a worker process runs.

    Entries whose id is in *known* (the log has them already: a feed's next poll mostly repeats
    its last document, a WebSub hub pushes the whole feed for one new entry) are, the fast
    path, cut out of the document before it is parsed at all
    (:func:`~feedstream.core.trim.parse_skipping_known`: exact, or not done), and their ids
    returned as ``skipped``; those it cannot cut are passed through untouched, without rules
    or fold keys: the log will find them duplicates, and rules apply to entries arriving,
    once. The others' content text is worked out once here, for the rules and for the log's
    search index (``texts``).
    """
    parsed, discovery, skipped = _examine(body, feed, content_type, url, via, headers, known)
    if parsed.error or not parsed.entries:
        return Sifted(parsed, discovery, skipped=skipped)
    texts = {
        entry["id"]: entry_content_text(entry)
        for entry in parsed.entries
        if entry["id"] not in known
    }
    kept: list[dict[str, Any]] = []
    dropped: list[Dropped] = []
    if rules:
        active = compiled_rules(rules)
        for entry in parsed.entries:
            if entry["id"] in known:
                kept.append(entry)
                continue
            text = EntryText(entry, content_text=texts[entry["id"]])
            outcome = apply_rules(entry, active, text=text)
            if outcome.dropped:
                dropped.append(Dropped(entry["id"], entry["feed"], outcome.matched))
            else:
                kept.append(outcome.entry)
        parsed = replace(parsed, entries=kept)
    keys: tuple[FoldKeys, ...] = ()
    if fold:
        keys = tuple(
            (None, None) if e["id"] in known else fold_keys(e["url"], e["title"])
            for e in parsed.entries
        )
    if media is not None:
        proxied = [e if e["id"] in known else proxy_entry(e, media) for e in parsed.entries]
        parsed = replace(parsed, entries=proxied)
    return Sifted(parsed, discovery, tuple(dropped), keys, texts, skipped)
