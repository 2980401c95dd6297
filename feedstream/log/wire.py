"""A page on the wire: the ``/api/entries`` JSON body and Server-Sent Events. Pure.

Each entry's JSON is stored once, already serialized (cursor included), so a body is a join of
stored strings, never a re-encoding; and each page is rendered once, however many listeners it
answers (the result is memoized on the page).
"""

from __future__ import annotations

import json

from feedstream.log.base import Page

__all__ = ["entries_body", "sse_events"]


def entries_body(page: Page) -> bytes:
    """``{"cursor": ..., "entries": [...], "reset": ...}``."""
    body = page.rendered.get("json")
    if body is None:
        items = ",".join(entry.json for entry in page.entries)
        reset = "true" if page.reset else "false"
        text = f'{{"cursor":{json.dumps(page.cursor)},"entries":[{items}],"reset":{reset}}}'
        body = page.rendered["json"] = text.encode()
    return body


def sse_events(page: Page) -> bytes:
    """The page as Server-Sent Events: ``reset`` first if it is one, then one per entry."""
    events = page.rendered.get("sse")
    if events is None:
        frames = []
        if page.reset:
            frames.append(f"event: reset\ndata: {json.dumps({'cursor': page.cursor})}\n\n")
        frames.extend(f"id: {e.cursor}\nevent: entry\ndata: {e.json}\n\n" for e in page.entries)
        events = page.rendered["sse"] = "".join(frames).encode()
    return events
