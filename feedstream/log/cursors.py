"""Cursors, the in-memory ring of recent entries and the reading rules over it: pure data, no
I/O.

A cursor is ``"<log id>-<seq>"``: the log id names the store that issued it, so a cursor from
another store (or garbage) is recognised as foreign instead of being misread as a position.
``seq`` counts entries densely from 1.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from feedstream.log.base import Page, StoredEntry

__all__ = ["MAX_SEQ_DIGITS", "Ring", "RingReader", "format_cursor", "parse_cursor"]

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


class RingReader:
    """How a backend answers reads: from its :class:`Ring`, never from its store.

    A backend sets ``_log_id`` (the issuer part of its cursors), ``_ring`` and ``_head`` (the seq
    of the newest readable entry) and keeps them current; :meth:`read` and :attr:`head` are the
    :class:`~feedstream.log.base.Log` reading rules, the same for every backend.
    """

    _log_id: str
    _ring: Ring
    _head: int

    @property
    def head(self) -> str:
        return format_cursor(self._log_id, self._head)

    def read(
        self,
        after: str | None,
        *,
        feeds: Collection[str] | None,
        limit: int,
        upto: str | None = None,
    ) -> Page:
        committed = self._head
        seq = None if after is None else parse_cursor(after, self._log_id)
        first = self._ring.first_seq
        oldest_known = first - 1 if first is not None else committed
        reset = after is not None and (seq is None or seq > committed or seq < oldest_known)
        if after is None or reset:  # a first page or a reset: everything readable
            entries = self._ring.newest(limit, feeds, committed)
            return Page(format_cursor(self._log_id, committed), entries, reset=reset)
        assert after is not None and seq is not None
        head = committed
        if upto is not None:
            shown = parse_cursor(upto, self._log_id)
            head = committed if shown is None else min(shown, committed)
        if seq >= head:  # nothing new in this view (a fresh cursor may be ahead of a round)
            return Page(after, ())
        pending = self._ring.after(seq, head)
        if feeds is None:
            taken = pending[:limit]
        else:
            taken = []
            for entry in pending:
                if entry.feed in feeds:
                    taken.append(entry)
                    if len(taken) == limit:
                        break
        # Resume after the last entry given; when the page is not full, every pending entry was
        # looked at, so the cursor moves to the head and skips what the filter left out.
        if len(taken) == limit and taken[-1].seq < head:
            return Page(format_cursor(self._log_id, taken[-1].seq), taken)
        return Page(format_cursor(self._log_id, head), taken)
