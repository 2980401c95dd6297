"""Cursors and the in-memory ring of recent entries: pure data, no I/O.

A cursor is ``"<log id>-<seq>"``: the log id names the store that issued it, so a cursor from
another store (or garbage) is recognised as foreign instead of being misread as a position.
``seq`` counts entries densely from 1.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from feedstream.log.base import StoredEntry

__all__ = ["MAX_SEQ_DIGITS", "Ring", "format_cursor", "parse_cursor"]

MAX_SEQ_DIGITS = 18  # a longer number is not one of ours (and would not fit SQLite's INTEGER)


def format_cursor(log_id: str, seq: int) -> str:
    """The opaque cursor of entry *seq* in the log named *log_id*."""
    return f"{log_id}-{seq}"


def parse_cursor(cursor: str, log_id: str) -> int | None:
    """The seq of *cursor* if the log named *log_id* issued it, else None."""
    issuer, _, seq = cursor.rpartition("-")
    if issuer != log_id or not seq.isdigit() or len(seq) > MAX_SEQ_DIGITS:
        return None
    return int(seq)


class Ring:
    """The newest *capacity* entries, addressable by seq in O(1)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: list[StoredEntry] = []
        self._start = 0  # index of the oldest visible item

    def extend(self, items: Sequence[StoredEntry]) -> None:
        self._items.extend(items)
        self._start = max(0, len(self._items) - self.capacity)
        if self._start > self.capacity:  # compact now and then: amortized O(1)
            del self._items[: self._start]
            self._start = 0

    @property
    def first_seq(self) -> int | None:
        return self._items[self._start].seq if len(self._items) > self._start else None

    def after(self, seq: int, upto: int) -> list[StoredEntry]:
        """Visible items with a seq greater than *seq* and at most *upto*, oldest first."""
        first = self.first_seq
        if first is None or upto <= seq:
            return []
        return self._items[self._start + max(0, seq - first + 1) : self._start + upto - first + 1]

    def newest(self, limit: int, feeds: Collection[str] | None, upto: int) -> list[StoredEntry]:
        """The newest *limit* visible items up to seq *upto* (of *feeds*), oldest first."""
        found: list[StoredEntry] = []
        first = self.first_seq
        if first is None or upto < first:
            return found
        top = min(len(self._items) - 1, self._start + upto - first)
        for index in range(top, self._start - 1, -1):
            if len(found) >= limit:
                break
            item = self._items[index]
            if feeds is None or item.feed in feeds:
                found.append(item)
        found.reverse()
        return found
