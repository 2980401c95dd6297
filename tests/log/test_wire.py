"""Pages on the wire: the long-poll's JSON body and Server-Sent Events, rendered once."""

from __future__ import annotations

import json

from feedstream.log.base import Page, StoredEntry
from feedstream.log.wire import entries_body, sse_events

ENTRY = StoredEntry(7, "db-7", "a", '{"id":"a:1","title":"caf\u00e9 \\"quoted\\"","cursor":"db-7"}')


def test_the_body_joins_stored_json_as_is() -> None:
    page = Page("db-7", [ENTRY])
    body = entries_body(page)
    assert json.loads(body) == {
        "cursor": "db-7",
        "entries": [{"id": "a:1", "title": 'café "quoted"', "cursor": "db-7"}],
        "reset": False,
    }
    assert entries_body(page) is body  # rendered once, whoever asks again


def test_a_reset_page() -> None:
    assert json.loads(entries_body(Page("abc-1", (), reset=True))) == {
        "cursor": "abc-1",
        "entries": [],
        "reset": True,
    }


def test_sse_frames_a_reset_then_each_entry_with_its_cursor_as_id() -> None:
    page = Page("db-7", [ENTRY], reset=True)
    events = sse_events(page).decode()
    reset, entry, tail = events.split("\n\n")
    assert reset == 'event: reset\ndata: {"cursor": "db-7"}'
    assert entry == f"id: db-7\nevent: entry\ndata: {ENTRY.json}"
    assert tail == ""
    assert sse_events(page) is sse_events(page)
    assert sse_events(Page("db-7", ())) == b""


def test_equal_pages_compare_equal_whatever_was_rendered() -> None:
    one, two = Page("db-7", (ENTRY,)), Page("db-7", (ENTRY,))
    entries_body(one)
    assert one == two
