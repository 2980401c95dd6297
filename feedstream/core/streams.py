"""Streams: named views of the entry log, each a query and optionally a set of feeds.

A configuration's ``[[streams]]`` tables become :class:`StreamConfig` objects through
:func:`parse_streams`, which validates every key and raises :class:`StreamError` naming the
stream (index and id), the key and, for a query, the position in it; the configuration loader
adds the file and line. A listener asks for a stream with ``?stream=<id>`` and sees only the
entries it matches (see :mod:`feedstream.log.views`, which evaluates each stream once per entry).

Stream ids have the shape of feed ids and must differ from every feed id, so that a page can
offer both side by side without confusion. Pure: no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from feedstream.core.query import Query, QueryError, parse_query
from feedstream.core.rules import RULE_ID_RE, TableError

__all__ = ["MAX_STREAM_TITLE_CHARS", "STREAM_KEYS", "StreamConfig", "StreamError", "parse_streams"]

STREAM_KEYS = frozenset({"id", "title", "query", "feeds"})
MAX_STREAM_TITLE_CHARS = 100


class StreamError(TableError):
    """A stream table that cannot be used (see :class:`~feedstream.core.rules.TableError`)."""

    table, kind = "streams", "stream"

    @property
    def stream_id(self) -> str | None:
        return self.item_id


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """One validated ``[[streams]]`` table."""

    id: str
    title: str
    query: Query
    feeds: frozenset[str] | None = None  # None: every feed

    def applies_to(self, feed: object) -> bool:
        return self.feeds is None or (isinstance(feed, str) and feed in self.feeds)

    def describe(self) -> dict[str, Any]:
        """What ``GET /api/streams`` shows of it: the query in its canonical spelling."""
        return {
            "id": self.id,
            "title": self.title,
            "query": str(self.query),
            "feeds": None if self.feeds is None else sorted(self.feeds),
        }


def parse_streams(
    tables: Sequence[Mapping[str, Any]], feed_ids: Collection[str]
) -> list[StreamConfig]:
    """Validate the ``[[streams]]`` tables against the configured *feed_ids*, in order."""
    streams: list[StreamConfig] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        if not isinstance(table, Mapping):
            raise StreamError(index, "", "must be a table ([[streams]])")
        stream = _parse_stream(index, table, feed_ids)
        if stream.id in seen:
            raise StreamError(index, "id", f"duplicate stream id {stream.id!r}", item_id=stream.id)
        seen.add(stream.id)
        streams.append(stream)
    return streams


def _parse_stream(index: int, table: Mapping[str, Any], feed_ids: Collection[str]) -> StreamConfig:
    raw_id = table.get("id")
    stream_id = raw_id if isinstance(raw_id, str) and RULE_ID_RE.fullmatch(raw_id) else None

    def fail(key: str, reason: str, position: int | None = None) -> StreamError:
        return StreamError(index, key, reason, item_id=stream_id, position=position)

    for key in table:
        if key not in STREAM_KEYS:
            hint = difflib.get_close_matches(str(key), sorted(STREAM_KEYS), n=1)
            raise fail(str(key), "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    if "id" not in table:
        raise fail("id", "missing (every stream needs an id)")
    if stream_id is None:
        raise fail("id", f"must be 1-64 characters of a-z, 0-9, '-' and '_', got {raw_id!r}")
    if stream_id in feed_ids:
        raise fail("id", f"{stream_id!r} is already a feed id; a stream needs an id of its own")

    title = table.get("title", stream_id)
    if not isinstance(title, str) or not title.strip():
        raise fail("title", f"must be a non-empty string, got {title!r}")
    title = " ".join(title.split())
    if len(title) > MAX_STREAM_TITLE_CHARS or any(ord(c) < 0x20 for c in title):
        raise fail("title", f"must be at most {MAX_STREAM_TITLE_CHARS} printable characters")

    if "query" not in table:
        raise fail("query", "missing")
    text = table["query"]
    if not isinstance(text, str):
        raise fail("query", f"must be a string, got {text!r}")
    try:
        query = parse_query(text)
    except QueryError as exc:
        raise fail("query", str(exc).removeprefix("query: "), exc.position) from None

    feeds = None
    if "feeds" in table:
        value = table["feeds"]
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(feed, str) and RULE_ID_RE.fullmatch(feed) for feed in value)
        ):
            raise fail("feeds", f"must be a non-empty list of feed ids, got {value!r}")
        for feed in value:
            if feed not in feed_ids:
                raise fail("feeds", f"unknown feed {feed!r} (not in [[feeds]])")
        feeds = frozenset(value)
    return StreamConfig(stream_id, title, query, feeds)
