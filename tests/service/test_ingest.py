"""The one ingest path: parse off the loop (or, small JSON, in place), append, count."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

from feedstream.core.config import FeedConfig, FetchLimits
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import Store
from feedstream.service.ingest import INLINE_JSON_BYTES, Ingestor
from feedstream.service.stats import Stats
from tests.support.documents import atom, json_feed
from tests.support.helpers import inline

FEED = FeedConfig(id="f", url="https://example.org/feed", token="t" * 16)


class Spy:
    """A parse offload that runs inline and records what it was asked to run."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.calls += 1
        return fn(*args)


def ingestor(tmp_path: Path, parse: Any = inline) -> Ingestor:
    store = Store(tmp_path / "db.sqlite3")
    log = SQLiteLog(store, store.snapshot(100), backlog=100, offload=inline)
    return Ingestor(log, Stats(), parse=parse, slots=trio.CapacityLimiter(1))


async def test_xml_goes_to_a_worker_and_small_json_is_parsed_in_place(tmp_path: Path) -> None:
    spy = Spy()
    ingest = ingestor(tmp_path, spy)
    done = await ingest.ingest(FEED, atom(("1", "One")), content_type=None, via="push")
    assert [e["title"] for e in done.new] == ["One"] and spy.calls == 1
    small = json_feed(("2", "Two"))
    assert len(small) <= INLINE_JSON_BYTES
    done = await ingest.ingest(FEED, small, content_type="application/feed+json", via="push")
    assert [e["title"] for e in done.new] == ["Two"] and spy.calls == 1  # the fast path
    large = json_feed(*((str(i), "x" * 100) for i in range(3, 60)))
    assert len(large) > INLINE_JSON_BYTES
    done = await ingest.ingest(FEED, large, content_type="application/feed+json", via="push")
    assert len(done.new) == 57 and spy.calls == 2
    assert {e["via"] for e in done.new} == {"push"}


async def test_duplicates_are_counted_and_not_returned(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    body = atom(("1", "One"), ("2", "Two"))
    assert len((await ingest.ingest(FEED, body, content_type=None, via="poll")).new) == 2
    again = await ingest.ingest(FEED, body, content_type=None, via="poll")
    # Both are known: cut out before parsing (the fast path), yet counted as before.
    assert again.new == [] and again.entries == 2 and again.skipped == 2
    assert ingest.stats.ingested == {("f", "poll"): 2}
    assert ingest.stats.duplicates == {"f": 2}


async def test_a_configured_title_wins(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    feed = FeedConfig(id="f", title="Mine", token="t" * 16)
    done = await ingest.ingest(feed, atom(("1", "One")), content_type=None, via="push")
    assert done.new[0]["feed_title"] == "Mine"


async def test_what_is_not_a_feed_appends_nothing(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    page = b"<!doctype html><html><head><title>Hi</title></head><body>no feed</body></html>"
    done = await ingest.ingest(FEED, page, content_type="text/html", via="push")
    assert done.parsed.error and done.new == []
    assert ingest.log is not None and ingest.log.counts() == {}


async def test_with_headers_the_hub_is_found_and_the_feed_links_are_reused(
    tmp_path: Path,
) -> None:
    ingest = ingestor(tmp_path)
    links = '<link rel="hub" href="https://hub.example/"/><link rel="self" href="/feed"/>'
    body = atom(("1", "One")).replace(b"<id>urn:feed</id>", b"<id>urn:feed</id>" + links.encode())
    done = await ingest.ingest(FEED, body, content_type=None, via="poll", url=FEED.url, headers={})
    assert done.discovery is not None
    assert done.discovery.hub_urls == ["https://hub.example/"]
    assert done.discovery.self_url == "https://example.org/feed"
    assert done.discovery.source == "feed"  # from the parse, not a second scan of the body


async def test_a_parse_that_overruns_is_refused_and_stores_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async def stuck(fn: Callable[..., Any], *args: Any) -> Any:
        await trio.sleep(3600)

    ingest = ingestor(tmp_path, stuck)
    feed = FeedConfig(id="f", token="t" * 16, limits=FetchLimits(parse_timeout=2))
    start = trio.current_time()
    done = await ingest.ingest(feed, atom(("1", "One")), content_type=None, via="push")
    assert trio.current_time() - start == 2
    assert done.parsed.error == "parsing took longer than 2 s; abandoned" and done.new == []


async def test_an_examine_only_ingestor_parses_without_a_log() -> None:
    examiner = Ingestor(None, parse=inline)
    parsed, discovery = await examiner.examine(
        FEED, atom(("1", "One")), content_type=None, via="poll"
    )
    assert [e["title"] for e in parsed.entries] == ["One"] and discovery is None


def newest_first(*numbers: int) -> bytes:
    """An Atom document as hubs push it: the whole feed, newest entry first."""
    entries = "".join(
        f"<entry><id>tag:x.example,2025:{n}</id><title>Post {n}</title>"
        f"<updated>2025-01-{n:02d}T00:00:00Z</updated>"
        f'<link href="https://x.example/{n}"/><content type="html">&lt;p&gt;{n}&lt;/p&gt;</content>'
        "</entry>"
        for n in sorted(numbers, reverse=True)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f'<title>X</title><link rel="hub" href="https://hub.example/"/>{entries}</feed>'
    ).encode()


async def test_a_fat_ping_parses_only_its_new_entry(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    first = await ingest.ingest(FEED, newest_first(1, 2, 3), content_type=None, via="push")
    assert len(first.new) == 3 and first.skipped == 0
    ids = {f"f:tag:x.example,2025:{n}" for n in (1, 2, 3, 4, 5)}
    second = await ingest.ingest(FEED, newest_first(1, 2, 3, 4), content_type=None, via="push")
    assert [e["title"] for e in second.new] == ["Post 4"]
    assert [e["title"] for e in second.parsed.entries] == ["Post 4"]  # the rest never parsed
    assert second.skipped == 3 and second.entries == 4
    assert ingest.listed_ids() == ids - {"f:tag:x.example,2025:5"}  # skipped ones still listed
    assert ingest.stats.duplicates == {"f": 3} and ingest.stats.ingested == {("f", "push"): 4}
    # The next document finds the skipped entries known still, and only its new one parsed.
    third = await ingest.ingest(FEED, newest_first(2, 3, 4, 5), content_type=None, via="push")
    assert [e["title"] for e in third.new] == ["Post 5"] and third.skipped == 3
    assert ingest.listed_ids() == ids - {"f:tag:x.example,2025:1"}  # what the feed lists now
    assert ingest.stats.duplicates == {"f": 6} and ingest.stats.ingested == {("f", "push"): 5}
    # What the log holds is what it would hold without the fast path.
    assert ingest.log is not None and ingest.log.counts() == {"f": 5}


def stored(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as appended, without what each log gives it (cursor, time received)."""
    return {key: value for key, value in entry.items() if key not in ("cursor", "received")}


async def test_without_the_fast_path_the_counts_are_the_same(tmp_path: Path) -> None:
    fast, slow = ingestor(tmp_path / "fast"), ingestor(tmp_path / "slow")
    documents = [newest_first(1, 2, 3), newest_first(1, 2, 3, 4), newest_first(2, 3, 4, 5)]
    for body in documents:
        done = await fast.ingest(FEED, body, content_type=None, via="push")
        slow._known.clear()  # nothing known: every entry parsed, the log finds the duplicates
        whole = await slow.ingest(FEED, body, content_type=None, via="push")
        assert [stored(e) for e in done.new] == [stored(e) for e in whole.new]
        assert done.entries == whole.entries == len(whole.parsed.entries)
    assert fast.stats.duplicates == slow.stats.duplicates
    assert fast.stats.ingested == slow.stats.ingested
