"""The offline demo: the page has something to show within seconds, from every source."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import httpx
import trio

from feedstream.cli.demo import run_demo


async def test_demo_fills_within_ten_seconds(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(run_demo, str(tmp_path), "127.0.0.1", 0, 1.0))
        seen: set[str] = set()
        kinds: set[str] = set()
        async with httpx.AsyncClient(base_url=url, timeout=15) as client:
            with trio.fail_after(10):
                page = (await client.get("/api/entries")).json()
                while True:
                    for entry in page["entries"]:
                        seen.add(entry["feed"])
                        kinds.add(entry["via"])
                    if len(seen) == 4:
                        break
                    params = {"after": page["cursor"], "timeout": 5}
                    page = (await client.get("/api/entries", params=params)).json()
            feeds = (await client.get("/api/feeds")).json()
            index = await client.get("/")
        nursery.cancel_scope.cancel()
    assert seen == {"demo-atom", "demo-rss", "demo-json", "demo-push"}
    assert kinds == {"poll", "push"}
    assert all(feed["last_error"] is None for feed in feeds)
    assert index.status_code == 200
