"""Cursors, the in-memory ring of recent entries and the reading rules over it: pure data, no
I/O.

A cursor is ``"<log id>-<seq>"``: the log id names the store that issued it, so a cursor from
another store (or garbage) is recognised as foreign instead of being misread as a position.
``seq`` counts entries densely from 1.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from feedstream.log.base import Page, Selection, StoredEntry

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
        self.folded_seq = 0  # the seq of the newest folded duplicate held (0: none yet)

    def extend(self, items: Sequence[StoredEntry]) -> None:
        for item in items:
            if item.duplicate:
                self.folded_seq = item.seq
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

    def newest(
        self,
        limit: int,
        feeds: Collection[str] | None,
        upto: int,
        *,
        duplicates: bool = False,
        test: Callable[[StoredEntry], bool] | None = None,
    ) -> list[StoredEntry]:
        """The newest *limit* visible items up to seq *upto* (of *feeds*, folded duplicates
        only if asked, accepted by *test*), oldest first."""
        found: list[StoredEntry] = []
        first = self.first_seq
        if first is None or upto < first:
            return found
        top = min(len(self._items) - 1, self._start + upto - first)
        for index in range(top, self._start - 1, -1):
            if len(found) >= limit:
                break
            item = self._items[index]
            if _shown(item, feeds, duplicates, test):
                found.append(item)
        found.reverse()
        return found


def _shown(
    item: StoredEntry,
    feeds: Collection[str] | None,
    duplicates: bool,
    test: Callable[[StoredEntry], bool] | None,
) -> bool:
    """Whether a filtered read shows *item*: the cheap checks first, the test last."""
    return (
        (feeds is None or item.feed in feeds)
        and (duplicates or not item.duplicate)
        and (test is None or test(item))
    )


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
        view: Selection | None = None,
    ) -> Page:
        duplicates, test = (False, None) if view is None else (view.duplicates, view.test)
        committed = self._head
        seq = None if after is None else parse_cursor(after, self._log_id)
        first = self._ring.first_seq
        oldest_known = first - 1 if first is not None else committed
        reset = after is not None and (seq is None or seq > committed or seq < oldest_known)
        if after is None or reset:  # a first page or a reset: everything readable
            entries = self._ring.newest(limit, feeds, committed, duplicates=duplicates, test=test)
            return Page(format_cursor(self._log_id, committed), entries, reset=reset)
        assert after is not None and seq is not None
        head = committed
        if upto is not None:
            shown = parse_cursor(upto, self._log_id)
            head = committed if shown is None else min(shown, committed)
        if seq >= head:  # nothing new in this view (a fresh cursor may be ahead of a round)
            return Page(after, ())
        pending = self._ring.after(seq, head)
        # The unfiltered read is a slice, as long as no folded duplicate is pending (one int
        # comparison): the filtered loop runs only for a filter, or while one is.
        if feeds is None and test is None and (duplicates or self._ring.folded_seq <= seq):
            taken = pending[:limit]
        else:
            taken = []
            for entry in pending:
                if _shown(entry, feeds, duplicates, test):
                    taken.append(entry)
                    if len(taken) == limit:
                        break
        # Resume after the last entry given; when the page is not full, every pending entry was
        # looked at, so the cursor moves to the head and skips what the filter left out.
        if len(taken) == limit and taken[-1].seq < head:
            return Page(format_cursor(self._log_id, taken[-1].seq), taken)
        return Page(format_cursor(self._log_id, head), taken)
