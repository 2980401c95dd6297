"""History search, the pure part: query translation to FTS5, indexed text, marks, cursors."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from feedstream.core.httprules import ApiError
from feedstream.core.search import (
    COLUMNS,
    DEFAULT_LIMIT,
    MARK_CLOSE,
    MARK_OPEN,
    MAX_INDEXED_CHARS,
    MAX_LIMIT,
    SearchCursor,
    SearchError,
    SearchPlan,
    feed_token,
    format_search_cursor,
    marked_html,
    parse_search_cursor,
    parse_search_request,
    search_text,
    translate,
)
from tests.support.helpers import entry

#: A term without a field: every column (no filter).
A = ""


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("python", f'{A}"python"'),
        ("python pypi", f'({A}"python" AND {A}"pypi")'),
        ("python AND pypi", f'({A}"python" AND {A}"pypi")'),
        ("python OR pypi", f'({A}"python" OR {A}"pypi")'),
        ("(python OR pypi) release", f'(({A}"python" OR {A}"pypi") AND {A}"release")'),
        ('"open source"', f'{A}"open source"'),
        ("python -snake", f'({A}"python" NOT {A}"snake")'),
        ("python -snake -monty", f'({A}"python" NOT ({A}"snake" OR {A}"monty"))'),
        ('python -"flying circus"', f'({A}"python" NOT {A}"flying circus")'),
        ("python -(a OR b)", f'({A}"python" NOT ({A}"a" OR {A}"b"))'),
        ("python -(a -b)", f'({A}"python" NOT ({A}"a" NOT {A}"b"))'),
        ("x --y", f'({A}"x" AND {A}"y")'),  # a double negation is the term
        ("title:python", 'title : "python"'),
        ('title:"a b" OR tag:ml', '(title : "a b" OR tags : "ml")'),
        ("summary:x content:y author:ann", '(summary : "x" AND content : "y" AND author : "ann")'),
        ("C++", f'{A}"C++"'),  # punctuation separates words in the index: the word "c"
        ("STRASSE", f'{A}"STRASSE"'),
        ("ﬁle", f'{A}"file"'),  # NFKC, as stream queries fold
        ("feed:news", 'feed : "zzf6e657773"'),  # one token: the hex of the id
        ("feed:NEWS x", f'(feed : "zzf6e657773" AND {A}"x")'),
        ("x OR feed:a-b", f'({A}"x" OR feed : "zzf612d62")'),
        ("x -feed:news", f'({A}"x" NOT feed : "zzf6e657773")'),
    ],
)
def test_queries_translate_to_quoted_fts5(query: str, match: str) -> None:
    plan = translate(query)
    assert plan.match == match and plan.where == "" and plan.params == ()


def test_a_feed_id_is_one_token() -> None:
    assert feed_token("news") == "zzf6e657773" and feed_token("News") == feed_token("news")
    assert feed_token("a-b") != feed_token("a_b") != feed_token("ab")
    assert feed_token("a-b").isalnum()


@pytest.mark.parametrize(
    "query",
    [
        'NEAR "x"',
        '"a"" OR ""b"',
        'title:"x y" ^start',
        "col:",
        "a*",
        '"unbalanced \\" quote"',
        "{title}",
        "x AND y OR z NOT w",
    ],
)
def test_user_text_never_becomes_fts5_syntax(query: str) -> None:
    """Whatever is typed, the MATCH expression is valid FTS5 (every term quoted)."""
    try:
        plan = translate(query)
    except SearchError:
        return  # refused with a reason: fine too
    with _fts() as db:
        db.execute("SELECT count(*) FROM t WHERE t MATCH ?", (plan.match,)).fetchone()


def test_quotes_inside_a_phrase_are_doubled() -> None:
    assert translate('"say \\"hi\\""').match == f'{A}"say ""hi"""'


URL = "instr(lower(COALESCE(json_extract(e.data, '$.url'), '')), ?) > 0"


def test_url_is_a_sql_filter_with_placeholders() -> None:
    plan = translate("python feed:news -url:Example.org")
    assert plan.match == f'({A}"python" AND feed : "zzf6e657773")'
    assert plan.where == f"NOT ({URL})" and plan.params == ("example.org",)
    either = translate("python (url:a OR url:b)")
    assert either.where == f"(({URL}) OR ({URL}))" and either.params == ("a", "b")


def test_a_filter_value_is_a_parameter_never_sql() -> None:
    plan = translate("""x url:"a' OR 1=1 --" """)
    assert "1=1" not in plan.where and plan.params == ("a' or 1=1 --",)


def test_the_key_is_the_canonical_query() -> None:
    assert translate("  python   OR   pypi ").key == "python OR pypi"
    assert translate("title:x").key == "title:x"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "query: empty at 0"),
        ("a (", "query: expected a term at 3"),
        ("nope:x", "query: unknown field 'nope' at 0"),
        ("/cve-\\d+/", "/cve-\\d+/: regular expressions cannot be searched in the history"),
        ("python title:/x/", "title:/x/: regular expressions cannot be searched"),
        ("-python", "a search needs a word or phrase that is not excluded"),
        ("a OR -b", "-b: a negation needs a word or phrase to subtract from"),
        ("url:x.org", "a search needs a word, a phrase or feed: (url: only narrows it)"),
        ("python OR url:x.org", "url: only narrows a search"),
        ("-(python url:x.org) x", "url: only narrows a search"),
        ("++", "++: no letter or digit to search for"),
        ('"..."', '"...": no letter or digit to search for'),
    ],
)
def test_what_does_not_translate_says_why(query: str, reason: str) -> None:
    with pytest.raises(SearchError) as caught:
        translate(query)
    assert caught.value.reason.startswith(reason)


def test_search_text_is_the_indexed_columns() -> None:
    item = entry(
        "news",
        "1",
        title="Hello\x02 world",
        summary="A summary",
        content_html="<p>Some <b>bold</b> text &amp; more</p><p>next</p>",
        author="Ann",
        tags=["machine learning", "ai", 3],
    )
    text = search_text(item)
    assert text is not None and len(text) == len(COLUMNS)
    title, summary, content, author, tags, feed = text
    assert title == "Hello  world"  # a control character (our marks are some) is removed
    assert summary == "A summary" and author == "Ann"
    assert content == "Some bold text & more next"
    assert tags == "machine learning\nai"
    assert feed == feed_token("news")


def test_a_folded_duplicate_is_not_indexed_and_long_content_is_cut() -> None:
    assert search_text(entry("b", "1", duplicate_of="a:1")) is None
    long = search_text(entry("b", "2", content_html="<p>" + "word " * 40_000 + "</p>"))
    assert long is not None and len(long[2]) <= MAX_INDEXED_CHARS
    assert long[2].endswith("word")
    assert search_text(entry("b", "3", title=None, summary=None)) == ("", "", "", "", "", "zzf62")


def test_marks_become_mark_elements_and_everything_else_is_escaped() -> None:
    o, c = MARK_OPEN, MARK_CLOSE
    assert marked_html(f"a {o}<b>{c} & {o}x{c}") == "a <mark>&lt;b&gt;</mark> &amp; <mark>x</mark>"
    assert marked_html(f'"{o}q') == "&quot;<mark>q</mark>"  # unclosed: closed
    assert marked_html(f"{c}a{o}{o}b{c}{c}") == "a<mark>b</mark>"  # strays: dropped
    assert marked_html(None) == "" and marked_html("") == ""
    assert marked_html("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_cursors_round_trip_and_belong_to_one_search() -> None:
    plan = translate("python")
    cursor = SearchCursor(head=1000, seq=42, score=-3.25e-7, top=900, floor=17)
    text = format_search_cursor("abcd1234", plan, "rank", cursor)
    assert parse_search_cursor(text, "abcd1234", plan, "rank") == cursor
    assert "|" not in text and "=" not in text  # URL-safe, opaque
    newest = format_search_cursor("abcd1234", plan, "new", SearchCursor(9, 5))
    assert parse_search_cursor(newest, "abcd1234", plan, "new") == SearchCursor(9, 5)
    for log_id, other, order in (
        ("other000", plan, "rank"),  # another database
        ("abcd1234", translate("pypi"), "rank"),  # another query
        ("abcd1234", plan, "new"),  # another order
    ):
        with pytest.raises(SearchError, match="before: not a cursor of this search"):
            parse_search_cursor(text, log_id, other, order)


@pytest.mark.parametrize("garbage", ["", "x", "%%%", "czE=" * 80, "czF8eHx5fDF8Mnwz", "AAAA"])
def test_garbage_cursors_are_refused(garbage: str) -> None:
    with pytest.raises(SearchError):
        parse_search_cursor(garbage, "abcd1234", SearchPlan('"x"', key="x"), "rank")


def test_request_arguments() -> None:
    asked = parse_search_request({"q": " python "})
    assert (asked.limit, asked.order, asked.before) == (DEFAULT_LIMIT, "rank", None)
    assert asked.plan.match == f'{A}"python"'
    asked = parse_search_request({"q": "x", "limit": str(MAX_LIMIT), "order": "new", "before": "c"})
    assert (asked.limit, asked.order, asked.before) == (MAX_LIMIT, "new", "c")
    for args, reason in (
        ({}, "q: a search query is required"),
        ({"q": "  "}, "q: a search query is required"),
        ({"q": "x", "limit": "0"}, "limit: a whole number from 1 to 100"),
        ({"q": "x", "limit": "101"}, "limit: a whole number from 1 to 100"),
        ({"q": "x", "limit": "-1"}, "limit:"),
        ({"q": "x", "limit": "9" * 40}, "limit:"),
        ({"q": "x", "order": "best"}, "order: one of rank, new"),
        ({"q": "/x/"}, "/x/: regular expressions"),
    ):
        with pytest.raises(ApiError) as caught:
            parse_search_request(args)
        assert caught.value.status == 400 and caught.value.reason.startswith(reason)


# The MATCH expressions are checked against a real FTS5 table: the pure module produces text
# SQLite must accept (sqlite3 is a test dependency here, never an import of the core).
@pytest.fixture
def fts() -> Iterator[sqlite3.Connection]:
    with _fts() as db:
        yield db


class _fts:
    def __enter__(self) -> sqlite3.Connection:
        self.db = sqlite3.connect(":memory:")
        columns = ", ".join(COLUMNS)
        self.db.execute(
            f"CREATE VIRTUAL TABLE t USING fts5({columns}, tokenize='unicode61 remove_diacritics 2')"
        )
        news, blog = feed_token("news"), feed_token("my-blog")
        rows = [
            (
                "Python 3.14",
                "release notes",
                "the snake is not here",
                "Ann",
                "python\nrelease",
                news,
            ),
            ("Café society", "C++ and you", "hello, world", "Bob", "machine learning", blog),
            ("Monty", "flying circus", "python sketches", "Ann", "comedy", news),
        ]
        self.db.executemany(f"INSERT INTO t({columns}) VALUES (?, ?, ?, ?, ?, ?)", rows)
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.close()


@pytest.mark.parametrize(
    ("query", "rowids"),
    [
        ("python", [1, 3]),
        ("title:python", [1]),
        ("python -snake", [3]),
        ("python -comedy", [1]),
        ("cafe", [2]),  # diacritics folded
        ('"hello world"', [2]),  # punctuation between words is no obstacle in the index
        ("c++", [2]),
        ("tag:learning", [2]),
        ("author:ann -monty", [1]),
        ("(snake OR circus) ann", [1, 3]),
        ("python feed:news", [1, 3]),
        ("feed:my-blog", [2]),
        ("feed:my", []),  # a whole id, never part of one
        ("python -feed:news", []),
        ("news", []),  # a feed id is not a word of the text: feed:news is
        ("feed:news OR cafe", [1, 2, 3]),
    ],
)
def test_translations_find_what_they_should(
    fts: sqlite3.Connection, query: str, rowids: list[int]
) -> None:
    match = translate(query).match
    found = [
        row[0]
        for row in fts.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY rowid", (match,))
    ]
    assert found == rowids
