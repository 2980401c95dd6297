"""History search over the store: found by a word of the content, highlighted safely, ranked,
filtered, and paged through 10,000 entries without a duplicate or a gap."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from feedstream.core.search import SearchCursor, SearchError, SearchRequest, translate
from feedstream.log.history import HistoryReader, SearchPage, SearchTimeout
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import Store
from feedstream.service.history import History
from tests.support.helpers import entry, inline

MANY = 10_000
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def render(seq: int, item: dict[str, Any]) -> str:
    return json.dumps(dict(item, cursor=f"x-{seq}"))


def fill(store: Store, items: list[dict[str, Any]], batch: int = 1000) -> None:
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        store.insert_new([(e["id"], e["feed"], e) for e in chunk], render)


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, HistoryReader]]:
    """10,000 entries of two feeds; every one holds "common" a varying number of times (so
    bm25 scores differ, and tie too), every 100th the word "rare"."""
    path = tmp_path_factory.mktemp("many") / "db.sqlite3"
    store = Store(path)
    rng = random.Random(7)
    items = []
    for i in range(MANY):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))
        common = " common" * (1 + i % 5)
        rare = " rare" if i % 100 == 0 else ""
        items.append(
            entry(
                "even" if i % 2 == 0 else "odd",
                str(i),
                title=f"Entry {i}",
                content_html=f"<p>{words}{common}{rare}</p>",
                url=f"https://example.org/{'news' if i % 3 == 0 else 'blog'}/{i}",
            )
        )
    fill(store, items)
    reader = HistoryReader(path)
    yield store, reader
    reader.close()
    store.close()


def all_pages(reader: HistoryReader, query: str, order: str, limit: int) -> Iterator[SearchPage]:
    plan = translate(query)
    cursor: SearchCursor | None = None
    while True:
        page = reader.search(plan, order=order, limit=limit, cursor=cursor)
        yield page
        if page.next is None:
            return
        cursor = page.next


@pytest.mark.parametrize("order", ["rank", "new"])
def test_paging_through_ten_thousand_entries(many: tuple[Store, HistoryReader], order: str) -> None:
    _, reader = many
    pages = list(all_pages(reader, "common", order, 100))
    seqs = [hit.seq for page in pages for hit in page.hits]
    assert len(pages) == MANY // 100
    assert all(len(page.hits) == 100 for page in pages)
    assert len(seqs) == len(set(seqs)) == MANY  # every entry once, none twice
    if order == "new":
        assert seqs == sorted(seqs, reverse=True)
    else:  # most relevant first; among equal scores, the newest first
        keys = [(hit.score, -hit.seq) for page in pages for hit in page.hits]
        assert keys == sorted(keys)
        assert len({hit.score for page in pages for hit in page.hits}) > 5
    # The order is stable: paging again, with other page sizes, gives the same sequence.
    again = [hit.seq for page in all_pages(reader, "common", order, 333) for hit in page.hits]
    assert again == seqs


def test_ranking_goes_window_by_window_newest_first(many: tuple[Store, HistoryReader]) -> None:
    """Ranked within windows of the newest N matches, then the next window: every match once,
    each window in rank order, the windows newest first."""
    store, _ = many
    reader = HistoryReader(store.path, rank_window=1000)
    hits = [hit for page in all_pages(reader, "common feed:odd", "rank", 90) for hit in page.hits]
    assert {hit.entry["feed"] for hit in hits} == {"odd"}
    seqs = [hit.seq for hit in hits]
    assert len(seqs) == len(set(seqs)) == MANY // 2
    newest_first = sorted(seqs, reverse=True)
    for start in range(0, len(hits), 1000):
        window = hits[start : start + 1000]
        assert {hit.seq for hit in window} == set(newest_first[start : start + 1000])
        keys = [(hit.score, -hit.seq) for hit in window]
        assert keys == sorted(keys)
    reader.close()


def test_entries_added_while_paging_stay_out_of_later_pages(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    fill(store, [entry("a", str(i), title=f"word {i}") for i in range(30)])
    reader = HistoryReader(store.path)
    plan = translate("word")
    first = reader.search(plan, order="new", limit=10, cursor=None)
    fill(store, [entry("a", f"late{i}", title="word late") for i in range(5)])
    rest = reader.search(plan, order="new", limit=100, cursor=first.next)
    seqs = [h.seq for h in first.hits] + [h.seq for h in rest.hits]
    assert seqs == list(range(30, 0, -1)) and rest.next is None
    fresh = reader.search(plan, order="new", limit=5, cursor=None)
    assert [h.entry["title"] for h in fresh.hits] == ["word late"] * 5
    reader.close()


def test_a_word_of_the_content_finds_the_entry_highlighted(
    many: tuple[Store, HistoryReader],
) -> None:
    _, reader = many
    page = reader.search(translate("rare"), order="rank", limit=100, cursor=None)
    assert sorted(hit.entry["title"] for hit in page.hits) == sorted(
        f"Entry {i}" for i in range(0, MANY, 100)
    )
    hit = page.hits[0]
    assert "<mark>rare</mark>" in hit.snippet_html
    assert hit.title_html == hit.entry["title"]  # no match in the title: no mark


def test_filters_and_fields(many: tuple[Store, HistoryReader]) -> None:
    _, reader = many

    def titles(query: str) -> set[str]:
        pages = all_pages(reader, query, "new", 100)
        return {hit.entry["title"] for page in pages for hit in page.hits}

    rare = {f"Entry {i}" for i in range(0, MANY, 100)}
    assert titles("rare feed:even") == rare  # every 100th is even
    assert titles("rare feed:odd") == set()
    assert titles("rare -feed:even") == set()
    assert titles("rare url:org/news") == {f"Entry {i}" for i in range(0, MANY, 300)}
    assert titles("rare (feed:odd OR feed:even)") == rare
    assert titles("rare (url:org/news OR url:org/nothing)") == {
        f"Entry {i}" for i in range(0, MANY, 300)
    }
    assert titles("feed:odd") == {f"Entry {i}" for i in range(1, MANY, 2)}  # a feed's history
    assert titles('title:"entry 500"') == {"Entry 500"}
    assert titles("title:rare") == set()
    assert titles("rare -title:100 -title:200") == rare - {"Entry 100", "Entry 200"}


def test_html_in_entries_never_reaches_the_marks(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    hostile = entry(
        "a",
        "x",
        title='<img src=x onerror="alert(1)"> needle',
        summary="<b>needle</b> & friends",
        content_html="<p>a &lt;script&gt;alert(2)&lt;/script&gt; needle</p>",
    )
    fill(store, [hostile])
    reader = HistoryReader(store.path)
    (hit,) = reader.search(translate("needle"), order="rank", limit=5, cursor=None).hits
    assert hit.title_html == ("&lt;img src=x onerror=&quot;alert(1)&quot;&gt; <mark>needle</mark>")
    assert hit.snippet_html == "&lt;b&gt;<mark>needle</mark>&lt;/b&gt; &amp; friends"
    content = reader.search(translate("content:alert"), order="rank", limit=5, cursor=None)
    assert content.hits[0].snippet_html == (
        "a &lt;script&gt;<mark>alert</mark>(2)&lt;/script&gt; needle"
    )
    reader.close()


def test_ranking_prefers_the_title_and_folded_duplicates_are_not_found(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    fill(
        store,
        [
            entry("a", "body", title="Nothing", content_html="<p>kestrel kestrel here</p>"),
            entry("a", "title", title="Kestrel spotted", content_html="<p>a bird</p>"),
            entry("b", "dup", title="Kestrel spotted", duplicate_of="a:title"),
        ],
    )
    reader = HistoryReader(store.path)
    page = reader.search(translate("kestrel"), order="rank", limit=10, cursor=None)
    assert [hit.entry["id"] for hit in page.hits] == ["a:title", "a:body"]
    assert page.hits[0].score < page.hits[1].score < 0
    assert page.hits[0].title_html == "<mark>Kestrel</mark> spotted"
    reader.close()


def test_a_search_over_its_budget_is_abandoned(many: tuple[Store, HistoryReader]) -> None:
    store, _ = many
    slow = HistoryReader(store.path, budget=0.0)
    with pytest.raises(SearchTimeout, match="longer than 0 s"):
        slow.search(translate("common"), order="rank", limit=10, cursor=None)
    # The connection is fine afterwards (the handler is reset, the transaction ended).
    slow.budget = 10.0
    assert slow.search(translate("rare"), order="new", limit=1, cursor=None).hits
    slow.close()


async def test_the_service_answers_json_with_opaque_cursors(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    log = SQLiteLog(store, store.snapshot(5), backlog=5, offload=inline)
    await log.append([entry("a", str(i), title=f"gizmo {i}") for i in range(7)])
    history = History(store, retain_days=0, retain_entries=0, writer=True, offload=inline)
    plan = translate("gizmo")
    first = await history.search(SearchRequest(plan, "new", 5, None))
    assert first["query"] == "gizmo" and first["order"] == "new"
    assert [r["entry"]["title"] for r in first["results"]] == [
        f"gizmo {i}" for i in (6, 5, 4, 3, 2)
    ]
    assert first["results"][0]["title_html"] == "<mark>gizmo</mark> 6"
    assert first["results"][0]["score"] is None
    second = await history.search(SearchRequest(plan, "new", 5, first["before"]))
    assert [r["entry"]["title"] for r in second["results"]] == ["gizmo 1", "gizmo 0"]
    assert second["before"] is None
    with pytest.raises(SearchError, match="before: not a cursor of this search"):
        await history.search(SearchRequest(translate("other"), "new", 5, first["before"]))
    assert history.searches == {"ok": 2, "timeout": 0}
    history.close()


async def test_searches_run_in_threads_off_the_loop(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    fill(store, [entry("a", "1", title="thread test")])
    history = History(store, retain_days=0, retain_entries=0, writer=False)  # real threads
    async with trio.open_nursery() as nursery:
        results: list[dict[str, Any]] = []

        async def one() -> None:
            results.append(
                await history.search(SearchRequest(translate("thread"), "rank", 5, None))
            )

        for _ in range(5):
            nursery.start_soon(one)
    assert [len(r["results"]) for r in results] == [1] * 5
    history.close()
