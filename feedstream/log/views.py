"""Streams and ad-hoc queries on the delivery side: which entries a listener asks to see.

A listener may ask for a configured stream (``?stream=<id>``), an ad-hoc query (``?q=``) and
folded duplicates (``?duplicates=include``). :class:`Views` turns that question into a
:class:`~feedstream.log.base.Selection` for the log's reads, and answers each selection's test
from per-entry caches, so that a query is evaluated **once per entry**, never once per listener:

* the configured streams an entry belongs to are computed together, the first time any
  listener's read looks at the entry, and kept as a frozenset of stream ids (one JSON decode
  and one :class:`~feedstream.core.query.EntryText`, shared by every stream's query);
* an ad-hoc query is parsed once per spelling (a bounded cache of parsed queries by the text
  asked) and keyed by its canonical text, so ``cve OR bug`` and ``cve  OR  bug`` share one
  selection and one cache of per-entry results; at most :data:`MAX_QUERIES` queries are
  remembered, the least recently asked going first.

Per-entry results are keyed by cursor (unique across a shared log's epochs) and bounded: the
oldest go first once a cache holds more than *capacity* entries, which is chosen above the
ring's size, so an entry the log can still serve is never evaluated twice.

A reader without a stream, a query or duplicates gets no selection at all (``None``): the
log's unfiltered read stays a slice. Everything here runs on the event loop, without I/O.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, MutableMapping, Sequence
from itertools import islice
from typing import Any, TypeVar

from feedstream.core.query import EntryText, Query, QueryError, parse_query
from feedstream.core.streams import StreamConfig
from feedstream.log.base import Selection, StoredEntry

logger = logging.getLogger(__name__)

__all__ = ["MAX_QUERIES", "UnknownStream", "Views"]

MAX_QUERIES = 64  # ad-hoc queries (and their per-entry results) remembered at once
MAX_SPELLINGS = 256  # query texts remembered with their parse (or their error)
TEXTS = 256  # decoded entries kept for queries evaluated one after another

_K = TypeVar("_K")
_V = TypeVar("_V")


class UnknownStream(LookupError):
    """``?stream=`` names no configured stream."""


def _bound(cache: MutableMapping[_K, _V], capacity: int) -> None:
    """Drop the oldest quarter-plus of *cache* once it holds more than *capacity* items
    (insertion order), so that trimming is amortized O(1) per insertion."""
    excess = len(cache) - capacity
    if excess > 0:
        for key in list(islice(cache, excess + capacity // 4)):
            del cache[key]


class Views:
    """The selections of one delivery process, over its configured *streams*."""

    def __init__(self, streams: Sequence[StreamConfig] = (), *, capacity: int = 4096) -> None:
        self.capacity = max(capacity, 64)
        self.evaluations = 0  # queries evaluated against entries (streams and ad hoc): tests
        self._streams: tuple[StreamConfig, ...] = ()
        self._by_id: dict[str, StreamConfig] = {}
        self._memberships: dict[str, frozenset[str]] = {}  # cursor -> ids of its streams
        self._texts: dict[str, EntryText] = {}  # cursor -> decoded entry, the newest TEXTS
        self._spellings: dict[str, Query | QueryError] = {}  # text asked -> parse
        self._results: dict[str, dict[str, bool]] = {}  # canonical query -> cursor -> match
        self._selections: dict[tuple[str | None, str | None, bool], Selection] = {}
        self.set_streams(streams)

    # -- configuration -----------------------------------------------------------------------

    @property
    def streams(self) -> tuple[StreamConfig, ...]:
        return self._streams

    def set_streams(self, streams: Sequence[StreamConfig]) -> None:
        """Use these streams from now on (a reload): memberships are computed afresh."""
        self._streams = tuple(streams)
        self._by_id = {stream.id: stream for stream in self._streams}
        self._memberships.clear()
        self._selections.clear()

    def describe(self) -> list[dict[str, Any]]:
        """``GET /api/streams``: id, title, query (canonical) and feeds of each stream."""
        return [stream.describe() for stream in self._streams]

    # -- selections --------------------------------------------------------------------------

    def select(
        self, *, stream: str | None = None, q: str | None = None, duplicates: bool = False
    ) -> Selection | None:
        """The selection for a listener's question; None for the plain one.

        Raises :class:`UnknownStream` or :class:`~feedstream.core.query.QueryError`.
        """
        if stream is None and q is None:
            return _WITH_DUPLICATES if duplicates else None
        if stream is not None and stream not in self._by_id:
            raise UnknownStream(stream)
        query = None if q is None else self.parse(q)
        canonical = None if query is None else str(query)
        key = (stream, canonical, duplicates)
        selection = self._selections.pop(key, None)  # re-inserted: most recently asked last
        if selection is None:
            selection = Selection(duplicates, key, self._test(stream, canonical, query))
        self._selections[key] = selection
        _bound(self._selections, MAX_QUERIES)
        return selection

    def parse(self, text: str) -> Query:
        """*text* parsed (cached by spelling); raises :class:`QueryError`."""
        parsed = self._spellings.get(text)
        if parsed is None:
            try:
                parsed = parse_query(text)
            except QueryError as exc:
                parsed = exc
            self._spellings[text] = parsed
            _bound(self._spellings, MAX_SPELLINGS)
        if isinstance(parsed, QueryError):
            raise parsed.with_traceback(None)  # the cached error: no traceback piling up
        return parsed

    def _test(
        self, stream: str | None, canonical: str | None, query: Query | None
    ) -> Callable[[StoredEntry], bool]:
        tests: list[Callable[[StoredEntry], bool]] = []
        if stream is not None:
            memberships = self._memberships_of

            def in_stream(entry: StoredEntry) -> bool:
                return stream in memberships(entry)

            tests.append(in_stream)
        if query is not None and canonical is not None:
            results = self._results.pop(canonical, None)
            if results is None:
                results = {}
            self._results[canonical] = results  # most recently asked last
            _bound(self._results, MAX_QUERIES)
            tests.append(self._matcher(query, results))
        if len(tests) == 1:
            return tests[0]
        first, second = tests
        return lambda entry: first(entry) and second(entry)

    def _matcher(self, query: Query, results: dict[str, bool]) -> Callable[[StoredEntry], bool]:
        capacity = self.capacity

        def matches(entry: StoredEntry) -> bool:
            found = results.get(entry.cursor)
            if found is None:
                self.evaluations += 1
                found = results[entry.cursor] = query.matches(self._text(entry))
                _bound(results, capacity)
            return found

        return matches

    # -- per entry ---------------------------------------------------------------------------

    def _memberships_of(self, entry: StoredEntry) -> frozenset[str]:
        """The ids of the configured streams *entry* belongs to, computed once per entry."""
        found = self._memberships.get(entry.cursor)
        if found is None:
            text: EntryText | None = None
            ids: list[str] = []
            for stream in self._streams:
                if not stream.applies_to(entry.feed):
                    continue
                if text is None:
                    text = self._text(entry)
                self.evaluations += 1
                if stream.query.matches(text):
                    ids.append(stream.id)
            found = self._memberships[entry.cursor] = frozenset(ids)
            _bound(self._memberships, self.capacity)
        return found

    def _text(self, entry: StoredEntry) -> EntryText:
        """The entry's searchable text, decoded once and kept while it is recent."""
        text = self._texts.get(entry.cursor)
        if text is None:
            try:
                data = json.loads(entry.json)
            except ValueError:
                logger.warning(
                    "views: entry %s is not valid JSON; it matches nothing", entry.cursor
                )
                data = {}
            text = self._texts[entry.cursor] = EntryText(data if isinstance(data, dict) else {})
            _bound(self._texts, TEXTS)
        return text


#: Every entry, folded duplicates included (``?duplicates=include`` alone).
_WITH_DUPLICATES = Selection(True, ("duplicates",))
