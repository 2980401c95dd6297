"""Cursors and the ring of recent entries: pure, tested synchronously."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from feedstream.log.base import StoredEntry
from feedstream.log.cursors import Ring, format_cursor, parse_cursor


def stored(seq: int, feed: str = "a") -> StoredEntry:
    return StoredEntry(seq, format_cursor("db", seq), feed, "{}")


@given(st.integers(min_value=0, max_value=10**18 - 1))
def test_a_cursor_round_trips(seq: int) -> None:
    assert parse_cursor(format_cursor("db", seq), "db") == seq


def test_foreign_and_malformed_cursors_are_not_placed() -> None:
    for cursor in ("other-3", "db-", "db-x", "db--1", "db-1.5", "3", "", "db-" + "9" * 19):
        assert parse_cursor(cursor, "db") is None, cursor
    assert parse_cursor("a-b-7", "a-b") == 7  # the log id may hold a dash: the last one splits


def test_ring_keeps_the_newest_and_slices_by_seq() -> None:
    ring = Ring(3)
    assert ring.first_seq is None and ring.after(0, 5) == [] and ring.newest(5, None, 5) == []
    ring.extend([stored(i) for i in range(1, 6)])
    assert ring.first_seq == 3
    assert [e.seq for e in ring.after(3, 5)] == [4, 5]
    assert [e.seq for e in ring.after(0, 4)] == [3, 4]  # older than the ring: from its start
    assert ring.after(5, 5) == [] and ring.after(4, 3) == []


def test_newest_filters_and_stops_at_upto() -> None:
    ring = Ring(10)
    ring.extend([stored(i, "a" if i % 2 else "b") for i in range(1, 9)])
    assert [e.seq for e in ring.newest(3, None, 8)] == [6, 7, 8]
    assert [e.seq for e in ring.newest(2, {"a"}, 8)] == [5, 7]
    assert [e.seq for e in ring.newest(2, None, 4)] == [3, 4]
    assert ring.newest(2, None, 0) == []


@given(st.integers(1, 20), st.lists(st.integers(1, 30), max_size=30))
def test_ring_matches_a_plain_list(capacity: int, bursts: list[int]) -> None:
    ring, everything, seq = Ring(capacity), [], 0
    for size in bursts:
        burst = [stored(seq + i + 1) for i in range(size)]
        seq += size
        ring.extend(burst)
        everything.extend(burst)
        kept = everything[-capacity:]
        assert ring.first_seq == kept[0].seq
        assert ring.after(0, seq) == kept
        assert ring.newest(capacity, None, seq) == kept
