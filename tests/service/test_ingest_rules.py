"""Rules and folding on the one ingest path: applied where the document is parsed, dropped ids
remembered, the same story from another feed stored as a duplicate, and counted."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from feedstream.core import search as search_module
from feedstream.core.config import FeedConfig
from feedstream.core.fold import FoldIndex
from feedstream.core.query import EntryText
from feedstream.core.rules import Rule, parse_rules
from feedstream.core.search import entry_content_text, translate
from feedstream.log.base import Selection
from feedstream.log.history import HistoryReader
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import Store
from feedstream.service.ingest import Ingestor
from feedstream.service.parsing import compiled_rules, rule_spec, sift
from feedstream.service.stats import Stats
from tests.support.documents import atom, json_feed
from tests.support.helpers import inline

A = FeedConfig(id="a", url="https://a.example/feed", token="t" * 16)
B = FeedConfig(id="b", url="https://b.example/feed", token="t" * 16)
EVERYTHING = Selection(duplicates=True, key="duplicates")

RULES = parse_rules(
    [
        {"id": "no-ads", "query": "tag:sponsored OR title:sponsored", "action": "drop"},
        {"id": "security", "query": "cve OR /CVE-\\d{4}-\\d+/", "action": "highlight"},
        {"id": "python", "query": "python", "action": "tag", "tag": "python"},
        {"id": "only-b", "query": "python", "action": "highlight", "feeds": ["b"]},
    ]
)


class Worker:
    """A parse offload that runs inline, but pickles what goes in and comes out, as a worker
    process would."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.calls += 1
        fn, args = pickle.loads(pickle.dumps((fn, args)))
        return pickle.loads(pickle.dumps(fn(*args)))


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_log(path: Path, clock: Clock) -> SQLiteLog:
    store = Store(path / "db.sqlite3")
    return SQLiteLog(store, store.snapshot(100), backlog=100, offload=inline, clock=clock)


def ingestor(
    path: Path,
    rules: Sequence[Rule] = RULES,
    *,
    fold: bool = True,
    clock: Clock | None = None,
    parse: Any = None,
) -> Ingestor:
    clock = clock or Clock()
    return Ingestor(
        open_log(path, clock),
        Stats(),
        parse=parse or Worker(),
        slots=trio.CapacityLimiter(1),
        rules=rules,
        fold=FoldIndex() if fold else None,
        clock=clock,
    )


def stored(ingest: Ingestor, view: Selection | None = EVERYTHING) -> list[dict[str, Any]]:
    assert ingest.log is not None
    page = ingest.log.read(None, feeds=None, limit=100, view=view)
    return [json.loads(e.json) for e in page.entries]


def feed_doc(*items: dict[str, Any]) -> bytes:
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "T", "items": items}
    return json.dumps(doc).encode()


async def test_rules_run_in_the_worker_and_shape_every_entry(tmp_path: Path) -> None:
    worker = Worker()
    ingest = ingestor(tmp_path, parse=worker)
    body = atom(("1", "Python 3.14 released"), ("2", "Fix for CVE-2024-3094"), ("3", "Weather"))
    done = await ingest.ingest(B, body, content_type=None, via="poll")
    assert worker.calls == 1
    got = {e["title"]: e for e in done.new}
    assert got["Python 3.14 released"]["matched"] == ["python", "only-b"]
    assert got["Python 3.14 released"]["tags"] == ["python"]
    assert got["Python 3.14 released"]["highlight"] is True
    assert got["Fix for CVE-2024-3094"]["matched"] == ["security"]
    assert got["Fix for CVE-2024-3094"]["highlight"] is True
    assert got["Weather"]["matched"] == [] and got["Weather"]["highlight"] is False
    assert all(e["duplicate_of"] is None for e in done.new)
    assert [e["title"] for e in stored(ingest)] == [e["title"] for e in done.new]
    assert ingest.stats.rule_matches == {
        ("python", "tag"): 1,
        ("only-b", "highlight"): 1,
        ("security", "highlight"): 1,
    }
    # A feed a rule does not name: that rule is skipped.
    other = await ingest.ingest(A, atom(("9", "python tips")), content_type=None, via="poll")
    assert other.new[0]["matched"] == ["python"] and other.new[0]["highlight"] is False


async def test_small_json_gets_the_rules_in_place(tmp_path: Path) -> None:
    worker = Worker()
    ingest = ingestor(tmp_path, parse=worker)
    body = json_feed(("1", "python"), ("2", "sponsored: buy"))
    done = await ingest.ingest(A, body, content_type="application/feed+json", via="push")
    assert worker.calls == 0
    assert [(e["title"], e["tags"]) for e in done.new] == [("python", ["python"])]
    assert done.dropped == 1


async def test_dropped_entries_are_never_stored_and_never_come_back(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    body = feed_doc(
        {"id": "1", "title": "Sponsored: a great deal", "content_text": "python", "tags": ["x"]},
        {"id": "2", "title": "Real news", "content_text": "x", "tags": ["sponsored"]},
        {"id": "3", "title": "Kept", "content_text": "x"},
    )
    done = await ingest.ingest(A, body, content_type="application/feed+json", via="poll")
    assert [e["title"] for e in done.new] == ["Kept"] and done.dropped == 2
    assert ingest.stats.rule_matches == {("no-ads", "drop"): 2}
    # The same document again: nothing new, nothing counted twice, no trip to the log.
    again = await ingest.ingest(A, body, content_type="application/feed+json", via="poll")
    assert again.new == [] and ingest.stats.rule_matches == {("no-ads", "drop"): 2}
    # Rules reloaded without the drop: the dropped ids stay seen (remembered by the log).
    ingest.set_rules([])
    later = await ingest.ingest(A, body, content_type="application/feed+json", via="poll")
    assert later.new == []
    assert [e["title"] for e in stored(ingest)] == ["Kept"]
    # ... and so does a new process on the same database.
    fresh = Ingestor(open_log(tmp_path, Clock()), Stats(), parse=Worker(), rules=[])
    assert (await fresh.ingest(A, body, content_type="application/feed+json", via="poll")).new == []


async def test_reloaded_rules_apply_to_entries_arriving_afterwards(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path, rules=[])
    await ingest.ingest(A, atom(("1", "python one")), content_type=None, via="poll")
    ingest.set_rules(RULES)
    done = await ingest.ingest(
        A, atom(("1", "python one"), ("2", "python two")), content_type=None, via="poll"
    )
    assert [e["title"] for e in done.new] == ["python two"]
    assert [e["matched"] for e in stored(ingest)] == [[], ["python"]]


async def test_the_same_story_from_another_feed_is_folded(tmp_path: Path) -> None:
    clock = Clock()
    ingest = ingestor(tmp_path, rules=[], clock=clock)
    story = {"url": "https://news.example/story?utm_source=a", "title": "Big story"}
    await ingest.ingest(
        A, feed_doc({"id": "s", **story}), content_type="application/feed+json", via="poll"
    )
    moved = dict(story, url="https://news.example/story/#comments")  # the same canonical URL
    done = await ingest.ingest(
        B, feed_doc({"id": "t", **moved}), content_type="application/feed+json", via="poll"
    )
    [folded] = done.new
    assert folded["duplicate_of"] == "a:s"
    assert ingest.stats.folded == {"b": 1}
    assert [e["id"] for e in stored(ingest, view=None)] == ["a:s"]  # not delivered by default
    assert [e["id"] for e in stored(ingest)] == ["a:s", "b:t"]
    # Within one feed, only dedup by id: another entry with the same URL is a new entry.
    same_feed = await ingest.ingest(
        A, feed_doc({"id": "s2", **story}), content_type="application/feed+json", via="poll"
    )
    assert same_feed.new[0]["duplicate_of"] is None
    # Polled again, the folded entry is a plain same-id duplicate.
    await ingest.ingest(
        B, feed_doc({"id": "t", **moved}), content_type="application/feed+json", via="poll"
    )
    assert ingest.stats.duplicates == {"b": 1} and ingest.stats.folded == {"b": 1}
    # After the 48 h window, the story is news again.
    clock.now += 49 * 3600
    late = await ingest.ingest(
        B, feed_doc({"id": "u", **story}), content_type="application/feed+json", via="poll"
    )
    assert late.new[0]["duplicate_of"] is None


async def test_titles_fold_when_there_is_no_url(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path, rules=[])
    title = "Parliament passes the new budget after long debate"
    for feed, key in ((A, "1"), (B, "2")):
        await ingest.ingest(
            feed,
            feed_doc({"id": key, "title": title}),
            content_type="application/feed+json",
            via="poll",
        )
    assert [e["duplicate_of"] for e in stored(ingest)] == [None, "a:1"]


async def test_folding_off(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path, rules=[], fold=False)
    story = {"url": "https://news.example/story", "title": "Big story"}
    for feed, key in ((A, "1"), (B, "2")):
        await ingest.ingest(
            feed, feed_doc({"id": key, **story}), content_type="application/feed+json", via="poll"
        )
    assert [e["duplicate_of"] for e in stored(ingest, view=None)] == [None, None]


async def test_the_fold_index_is_rebuilt_from_the_log_at_start(tmp_path: Path) -> None:
    clock = Clock()
    ingest = ingestor(tmp_path, rules=[], clock=clock)
    story = {"url": "https://news.example/story", "title": "Big story"}
    old = {"url": "https://news.example/old", "title": "Old story"}
    await ingest.ingest(
        A, feed_doc({"id": "o", **old}), content_type="application/feed+json", via="poll"
    )
    clock.now += 47 * 3600
    await ingest.ingest(
        A, feed_doc({"id": "s", **story}), content_type="application/feed+json", via="poll"
    )
    clock.now += 2 * 3600  # "o" is 49 h old now, "s" 2 h
    restarted = Ingestor(
        open_log(tmp_path, clock), Stats(), parse=Worker(), fold=FoldIndex(), clock=clock
    )
    assert restarted.log is not None
    await restarted.rebuild_fold(restarted.log, 100, inline)
    assert restarted.fold is not None and len(restarted.fold) == 1  # the URL of "s" (the
    # title is too short to fold by); "o" is older than the window
    done = await restarted.ingest(
        B,
        feed_doc({"id": "t", **story}, {"id": "p", **old}),
        content_type="application/feed+json",
        via="poll",
    )
    assert {e["id"]: e["duplicate_of"] for e in done.new} == {"b:t": "a:s", "b:p": None}


async def test_an_unreachable_log_does_not_fail_the_ingest_for_a_drop(tmp_path: Path) -> None:
    from feedstream.log.state import LogUnavailable

    ingest = ingestor(tmp_path)
    assert ingest.log is not None

    async def unreachable(items: object) -> list[str]:
        raise LogUnavailable("redis mark seen: gone")

    ingest.log.mark_seen = unreachable  # type: ignore[method-assign]
    body = feed_doc({"id": "1", "title": "sponsored"}, {"id": "2", "title": "kept"})
    done = await ingest.ingest(A, body, content_type="application/feed+json", via="poll")
    assert [e["title"] for e in done.new] == ["kept"] and done.dropped == 1


def test_rule_specs_round_trip_and_compile_once() -> None:
    spec = rule_spec(RULES)
    assert pickle.loads(pickle.dumps(spec)) == spec
    compiled = compiled_rules(spec)
    assert compiled == tuple(RULES) and compiled_rules(spec) is compiled


def test_sift_without_rules_or_folding_is_the_parse() -> None:
    sifted = sift(atom(("1", "One")), A, None, A.url, "poll", None, (), False)
    assert [e["title"] for e in sifted.parsed.entries] == ["One"]
    assert sifted.dropped == () and sifted.keys == ()
    broken = sift(b"<html>no</html>", A, "text/html", A.url, "poll", None, rule_spec(RULES), True)
    assert broken.parsed.error and broken.keys == ()


async def test_a_feeds_last_document_skips_the_rules_next_time(tmp_path: Path) -> None:
    seen: list[frozenset[str]] = []

    class Recording(Worker):
        async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
            seen.append(args[-1])  # the ids the log has already: no rules for them
            return await super().__call__(fn, *args)

    ingest = ingestor(tmp_path, parse=Recording())
    first = atom(("1", "python one"), ("2", "sponsored two"))  # "2" is dropped, remembered
    await ingest.ingest(A, first, content_type=None, via="poll")
    second = atom(("1", "python one"), ("2", "sponsored two"), ("3", "python three"))
    done = await ingest.ingest(A, second, content_type=None, via="poll")
    assert seen == [frozenset(), frozenset({"a:urn:1", "a:urn:2"})]
    assert [(e["title"], e["matched"]) for e in done.new] == [("python three", ["python"])]
    assert ingest.stats.rule_matches[("python", "tag")] == 2  # once per entry, not per poll


def test_sift_cuts_known_entries_out_or_passes_them_through() -> None:
    spec = rule_spec(RULES)
    body = atom(("1", "python one"), ("2", "Sponsored post"))
    known = frozenset({"a:urn:1", "a:urn:2"})
    sifted = sift(body, A, None, A.url, "poll", None, spec, True, known)
    assert sifted.parsed.entries == [] and sifted.skipped == ("a:urn:1", "a:urn:2")
    assert sifted.parsed.error is None and sifted.dropped == () and sifted.keys == ()
    # A document that is not cut (JSON Feed): the known entries pass through untouched.
    doc = feed_doc({"id": "1", "title": "python one"}, {"id": "2", "title": "Sponsored post"})
    sifted = sift(doc, A, None, A.url, "poll", None, spec, True, frozenset({"a:1", "a:2"}))
    assert [e["matched"] for e in sifted.parsed.entries] == [[], []] and sifted.skipped == ()
    assert sifted.dropped == () and sifted.keys == ((None, None), (None, None))
    fresh = sift(body, A, None, A.url, "poll", None, spec, True)
    assert [e["title"] for e in fresh.parsed.entries] == ["python one"]
    assert [d.id for d in fresh.dropped] == ["a:urn:2"] and fresh.skipped == ()


def test_the_content_text_is_worked_out_once_in_the_worker_for_rules_and_index() -> None:
    body = feed_doc(
        {"id": "1", "title": "one", "content_html": "<p>first <b>words</b></p>"},
        {"id": "2", "title": "two", "content_html": "<p>second</p><p>words &amp; more</p>"},
    )
    fresh = sift(body, A, None, A.url, "poll", None, rule_spec(RULES), True, frozenset({"a:1"}))
    [new] = [entry for entry in fresh.parsed.entries if entry["id"] == "a:2"]
    assert fresh.texts is not None and set(fresh.texts) == {new["id"]}  # not for what the log has
    assert fresh.texts[new["id"]] == entry_content_text(new) != ""
    # What the rules read of the content is the same whether it is handed over or worked out.
    given = EntryText(new, content_text=fresh.texts[new["id"]])
    assert given.values("content") == EntryText(new).values("content")
    assert EntryText({}, content_text="").values("content") == EntryText({}).values("content")


async def test_the_index_takes_the_workers_text_instead_of_working_it_out_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worked_out: list[str] = []
    real = search_module.sanitized_text

    def counting(html: str) -> str:
        worked_out.append(html)
        return real(html)

    monkeypatch.setattr(search_module, "sanitized_text", counting)
    ingest = ingestor(tmp_path, rules=[])
    doc = feed_doc({"id": "1", "title": "t", "content_html": "<p>the lighthouse keeper</p>"})
    done = await ingest.ingest(A, doc, content_type=None, via="poll")
    assert [e["id"] for e in done.new] == ["a:1"]
    # The parse worker (inline here, pickled both ways) worked the text out: the store did not.
    assert len(worked_out) == 1
    reader = HistoryReader(tmp_path / "db.sqlite3")
    try:
        page = reader.search(translate("lighthouse"), order="new", limit=5, cursor=None)
    finally:
        reader.close()
    assert [hit.entry["id"] for hit in page.hits] == ["a:1"]
