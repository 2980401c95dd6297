"""The query language: parsing, canonical text, errors with positions, and evaluation."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedstream.core import query as query_module
from feedstream.core.query import (
    FIELDS,
    MAX_DEPTH,
    MAX_QUERY_CHARS,
    And,
    EntryText,
    Node,
    Not,
    Or,
    Query,
    QueryError,
    QuerySet,
    Regex,
    Term,
    parse_query,
    unparse,
)

ENTRY: dict[str, Any] = {
    "id": "hn:1",
    "cursor": None,
    "feed": "HN",
    "feed_title": "Hacker News",
    "title": "Straße works: the C++ guide to CVE-2024-1234, naïve edition",
    "url": "https://Example.com/Posts/42?ref=rss",
    "author": "Jane Q. Doe",
    "published": None,
    "updated": None,
    "summary": "Hello world. A node.js e-mail client for _private use.",
    "content_html": "<p>Deep <b>dive</b> into kernels &amp; compilers</p><script>x()</script>",
    "tags": ["Machine Learning", "Security"],
    "enclosures": [],
    "image": None,
    "via": "poll",
    "received": None,
}


def w(text: str, field: str | None = None) -> Term:
    return Term(field, text)


def phrase(text: str, field: str | None = None) -> Term:
    return Term(field, text, quoted=True)


def matches(text: str, entry: dict[str, Any] = ENTRY) -> bool:
    return parse_query(text).matches(entry)


# --- Parsing -------------------------------------------------------------------------------


def test_words_are_anded_and_or_binds_looser() -> None:
    assert parse_query("a b OR c").root == Or((And((w("a"), w("b"))), w("c")))
    assert parse_query("a OR b c").root == Or((w("a"), And((w("b"), w("c")))))
    assert parse_query("a OR b OR c").root == Or((w("a"), w("b"), w("c")))


def test_parentheses_group() -> None:
    assert parse_query("(a OR b) c").root == And((Or((w("a"), w("b"))), w("c")))
    assert parse_query("((a))").root == w("a")
    assert parse_query("a(b)").root == And((w("a"), w("b")))


def test_explicit_and_is_the_same_as_a_space() -> None:
    assert parse_query("a AND b") == parse_query("a b")
    assert parse_query("a AND b OR c") == parse_query("a b OR c")


def test_operators_only_in_upper_case() -> None:
    assert parse_query("a or b").root == And((w("a"), w("or"), w("b")))
    assert parse_query('a "OR" b').root == And((w("a"), phrase("OR"), w("b")))
    assert parse_query("title:OR").root == w("OR", "title")


def test_negations() -> None:
    assert parse_query("-a").root == Not(w("a"))
    assert parse_query("-title:a").root == Not(w("a", "title"))
    assert parse_query('-"a b"').root == Not(phrase("a b"))
    assert parse_query("-(a OR b)").root == Not(Or((w("a"), w("b"))))
    assert parse_query("--a").root == Not(Not(w("a")))
    assert parse_query("-/x/").root == Not(Regex(None, "x"))
    assert parse_query("e-mail").root == w("e-mail")  # a '-' inside a word is the word's


def test_fields() -> None:
    for name in sorted(FIELDS):
        assert parse_query(f"{name}:x").root == w("x", name)
    assert parse_query("Title:X").root == w("X", "title")
    assert parse_query('tag:"machine learning"').root == phrase("machine learning", "tag")
    assert parse_query("url:/a\\/b/").root == Regex("url", "a/b")
    assert parse_query("url:https://x.example/a").root == w("https://x.example/a", "url")
    assert parse_query("12:30").root == w("12:30")  # no field name before the colon


def test_phrase_escapes_and_other_backslashes() -> None:
    assert parse_query(r'"say \"hi\""').root == phrase('say "hi"')
    assert parse_query(r'"a\\b"').root == phrase("a\\b")
    assert parse_query(r'"C:\dir"').root == phrase("C:\\dir")


def test_regex_slash_escape_and_backslashes_kept() -> None:
    assert parse_query(r"/a\/b/").root == Regex(None, "a/b")
    assert parse_query(r"/CVE-\d{4}/").root == Regex(None, r"CVE-\d{4}")
    assert parse_query(r"/a\\/").root == Regex(None, "a\\\\")


def test_regexes_are_compiled_once_at_parse_time(monkeypatch: pytest.MonkeyPatch) -> None:
    query = parse_query(r"/cve-\d+/ OR title:/guide/")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled during evaluation")

    monkeypatch.setattr(query_module.re2, "compile", refuse)
    assert query.matches(ENTRY)
    assert query.matches({"title": "a guide"})


def test_query_is_hashable_and_equal_by_structure() -> None:
    assert parse_query("a  b") == parse_query("a b")
    assert hash(parse_query("/x/ y")) == hash(parse_query("/x/   y"))
    assert parse_query("a b") != parse_query("b a")
    assert parse_query("a") != parse_query('"a"')


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a   AND b", "a b"),
        ("(a)", "a"),
        ("Title:X", "title:X"),
        ("(a OR b) (c d)", "(a OR b) (c d)"),
        ("(a OR b) OR c", "(a OR b) OR c"),
        ("a b OR c", "a b OR c"),
        ("-(a b)", "-(a b)"),
        ('"say \\"hi\\""', '"say \\"hi\\""'),
        (r"/a\/b/", r"/a\/b/"),
        (r'tag:"a\\b"', r'tag:"a\\b"'),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    query = parse_query(text)
    assert str(query) == unparse(query) == canonical
    assert parse_query(canonical) == query


# --- Errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("title:security) x", "query: unexpected ')' at 14", 14),
        (")", "query: unexpected ')' at 0", 0),
        ("a (b", "query: unclosed '(' at 2", 2),
        ("", "query: empty at 0", 0),
        ("   ", "query: empty at 0", 0),
        ('a "b c', "query: unclosed '\"' at 2", 2),
        ("x /ab", "query: unclosed '/' at 2", 2),
        ("x /a\\/", "query: unclosed '/' at 2", 2),
        ("a foo:bar", "query: unknown field 'foo' at 2", 2),
        ("a /(x/", "query: invalid regex (missing ): (x) at 2", 2),
        ("title:/a{2,1}/", "query: invalid regex (invalid repetition size: {2,1}) at 6", 6),
        ("a //", "query: empty regex at 2", 2),
        ('a ""', "query: empty phrase at 2", 2),
        ('a "  "', "query: empty phrase at 2", 2),
        ("a OR", "query: 'OR' needs a term after it at 2", 2),
        ("a OR OR b", "query: 'OR' needs a term after it at 2", 2),
        ("(a OR) b", "query: 'OR' needs a term after it at 3", 3),
        ("OR a", "query: 'OR' needs a term before it at 0", 0),
        ("a (OR b)", "query: 'OR' needs a term before it at 3", 3),
        ("a AND", "query: 'AND' needs a term after it at 2", 2),
        ("AND a", "query: 'AND' needs a term before it at 0", 0),
        ("a - b", "query: expected a term after '-' at 2", 2),
        ("a -", "query: expected a term after '-' at 2", 2),
        ("(a -)", "query: expected a term after '-' at 3", 3),
        ("a ()", "query: empty parentheses at 2", 2),
        ("a title:", "query: expected a value after 'title:' at 8", 8),
        ("title: x", "query: expected a value after 'title:' at 6", 6),
        ("title:-x", "query: put '-' before the field: -title:... at 6", 6),
        ('"a"b', "query: unexpected 'b' (a space is missing) at 3", 3),
        ("/a/b", "query: unexpected 'b' (a space is missing) at 3", 3),
    ],
)
def test_errors_name_the_position(text: str, message: str, position: int) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(text)
    assert str(caught.value) == message
    assert caught.value.position == position
    assert isinstance(caught.value, ValueError)


def test_length_cap() -> None:
    longest = "a " * (MAX_QUERY_CHARS // 2 - 1) + "ab"
    assert len(longest) == MAX_QUERY_CHARS
    assert isinstance(parse_query(longest).root, And)
    with pytest.raises(QueryError) as caught:
        parse_query(longest + "c")
    assert str(caught.value) == "query: longer than 500 characters"
    assert caught.value.position == MAX_QUERY_CHARS


def test_depth_cap() -> None:
    assert parse_query("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH).root == w("a")
    assert parse_query("-" * MAX_DEPTH + "a").root is not None
    with pytest.raises(QueryError) as caught:
        parse_query("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    assert str(caught.value) == f"query: nested deeper than {MAX_DEPTH} levels at {MAX_DEPTH}"
    with pytest.raises(QueryError) as caught:
        parse_query("x " + "-(" * 20 + "a" + ")" * 20)
    assert caught.value.position == 2 + MAX_DEPTH  # the 33rd level: the 17th "-"


def test_regexes_have_a_memory_budget() -> None:
    with pytest.raises(QueryError, match=r"invalid regex \(pattern too large"):
        parse_query(r"/\pL{1000}/")


def test_nodes_refuse_what_the_parser_never_makes() -> None:
    for make in (
        lambda: Term("nope", "x"),
        lambda: Term(None, "a b"),
        lambda: Term(None, "-a"),
        lambda: Term(None, "OR"),
        lambda: Term(None, "title:x"),
        lambda: Term(None, "  ", quoted=True),
        lambda: Regex(None, ""),
        lambda: Regex(None, "("),
        lambda: And((w("a"),)),
        lambda: Or(()),
    ):
        with pytest.raises(ValueError):
            make()


# --- Evaluation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # bare words: whole words of title, summary, author and tags, case-insensitive
        ("guide", True),
        ("GUIDE", True),
        ("gui", False),
        ("jane", True),
        ("learning", True),
        ("security", True),
        ("hello", True),
        ("deep", False),  # content is not searched without a field
        ("hn", False),  # nor the feed
        ("example", False),  # nor the URL
        # Unicode: case folding and NFKC
        ("strasse", True),
        ("STRAẞE", True),
        ("NAÏVE", True),
        ("naive", False),
        ("ﬁle", False),
        # words with punctuation keep whole-word edges
        ("c++", True),
        ("c+", False),
        ("node.js", True),
        ("node", True),
        ("e-mail", True),
        ("_private", True),
        ("private", False),
        ("cve-2024-1234", True),
        ("cve-2024-123", False),
        ("2024", True),
        # AND, OR, NOT
        ("guide hello", True),
        ("guide absent", False),
        ("absent OR hello", True),
        ("absent OR missing", False),
        ("-absent", True),
        ("-guide", False),
        ("guide -(absent OR jane)", False),
        ("guide AND -absent", True),
        ("--guide", True),
        # phrases: whole words in order, within one value
        ('"hello world"', True),
        ('"HELLO   World"', True),
        ('"world hello"', False),
        ('"hello wor"', False),
        ('"the c++ guide"', True),
        ('"world a node"', False),  # "world." - the dot is in between
        ('"doe machine"', False),  # never across two values (author, tag)
        ('"jane q"', True),
        # fields
        ("title:guide", True),
        ("summary:guide", False),
        ("summary:hello", True),
        ("author:doe", True),
        ('author:"jane q. doe"', True),
        ("title:jane", False),
        ("content:dive", True),
        ('content:"deep dive into"', True),
        ("content:b", False),  # markup is not text
        ("content:x", False),  # nor script content
        ("content:&", True),  # entities are decoded
        ('content:"kernels & compilers"', True),
        ("tag:security", True),
        ("tag:SECURITY", True),
        ("tag:machine", False),  # a whole tag
        ('tag:"machine learning"', True),
        ('tag:"Machine   Learning"', True),
        ("feed:hn", True),
        ("feed:h", False),
        ("feed:hacker", False),
        ("url:example.com/posts", True),
        ("url:POSTS/4", True),
        ("url:ref=rss", True),
        ("url:other.example", False),
        # regexes: case-insensitive, original text, ^ and $ per value
        (r"/cve-\d{4}-\d+/", True),
        (r"/CVE-\d{5}/", False),
        ("/straße/", True),
        ("/strasse/", False),  # regexes see the original text, not the folded one
        ("/^hello/", True),
        ("/^jane q. doe$/", True),
        ("/^security$/", True),
        ("/^machine learning$/", True),
        ("/guide$/", False),
        ("/edition$/", True),
        ("title:/^straße/", True),
        ("summary:/^straße/", False),
        ("tag:/^learn/", False),
        ("tag:/learn/", True),
        ("feed:/^hn$/", True),
        ("url:/posts\\/\\d+/", True),
        ("content:/deep dive/", True),
        ("author:/doe$/", True),
        ("-/guide/ OR hello", True),
    ],
)
def test_evaluation(text: str, expected: bool) -> None:
    assert matches(text) is expected


def test_folding_compatibility_characters() -> None:
    assert matches("file", {"title": "A ﬁle system"})
    assert matches("ﬁle", {"title": "the FILE"})
    assert matches("\uff46\uff55\uff4c\uff4c", {"title": "full width"})


def test_scripts_beyond_ascii() -> None:
    entry = {"title": "Привет, МИР! Ελληνικά ΣΊΣΥΦΟΣ", "summary": "नमस्ते दुनिया", "tags": ["日本語"]}
    assert matches("мир", entry)
    assert not matches("ми", entry)
    assert matches("σίσυφος", entry)  # final sigma folds
    assert matches("नमस्ते", entry)  # combining marks: not \w, still a whole word
    assert matches('"नमस्ते दुनिया"', entry)
    assert matches("日本語", entry)


def test_a_word_repeated_only_inside_longer_words_does_not_match() -> None:
    assert not matches("c++", {"title": "abc++ and c++x and c+++"})
    assert matches("c++", {"title": "abc++ and c++x, (c++)"})
    assert matches("$5", {"title": "costs $5."})
    assert not matches(".net", {"title": "asp.net"})
    assert matches(".net", {"title": "the .net runtime"})
    assert not matches('"hello world"', {"title": "ohello world"})


def test_arbitrary_entry_shapes_never_raise() -> None:
    query = parse_query('a OR title:"b c" OR tag:x OR feed:y OR url:z OR content:w OR /v/')
    for entry in (
        {},
        {"title": None, "tags": None, "feed": 3, "url": ["x"], "content_html": 5},
        {"tags": "x", "title": b"a"},
        {"tags": [None, 1, "", "  ", "X"]},
        {"content_html": "", "summary": "   "},
    ):
        query.matches(entry)
    assert query.matches({"tags": [None, 1, "X"]})
    assert not query.matches({"tags": "x"})  # a string is not a list of tags


def test_lone_surrogates_in_entries() -> None:
    entry = {"title": "bad \ud800 text", "tags": ["\udfff"]}
    assert parse_query("/bad/ text").matches(entry)
    assert not parse_query("/good/").matches(entry)


def test_regex_matching_is_linear() -> None:
    query = parse_query("/(a+)+$/ OR /(x|x)*y/")
    entry = {"title": "a" * 50_000 + "!", "summary": "x" * 50_000}
    started = time.perf_counter()
    assert not query.matches(entry)
    assert time.perf_counter() - started < 1.0  # backtracking would take longer than the universe


def test_entry_text_computes_each_field_once(monkeypatch: pytest.MonkeyPatch) -> None:
    extracted: Counter[str] = Counter()
    folded: Counter[str] = Counter()
    extract, fold = query_module._extract, query_module._fold

    def counting_extract(entry: Any, name: str) -> tuple[str, ...]:
        extracted[name] += 1
        return extract(entry, name)

    def counting_fold(text: str) -> str:
        folded[text] += 1
        return fold(text)

    query = parse_query(
        'zzz OR title:zzz OR title:"zzz yyy" OR title:/zzz/ OR "zzz yyy" OR /zzz/ OR tag:zzz '
        'OR tag:/zzz/ OR content:zzz OR content:/zzz/ OR content:"z z" OR yyy OR url:zzz '
        "OR feed:zzz OR -feed:hn"
    )
    monkeypatch.setattr(query_module, "_extract", counting_extract)
    monkeypatch.setattr(query_module, "_fold", counting_fold)
    assert not query.matches(ENTRY)
    assert extracted == Counter(
        {name: 1 for name in ("title", "summary", "author", "tag", "content", "url", "feed")}
    )
    # each value folded once: title, summary, author, 2 tags, content, url, feed
    assert sum(folded.values()) == 8
    assert all(count == 1 for count in folded.values())


def test_one_entry_text_serves_many_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: Counter[str] = Counter()
    extract = query_module._extract

    def counting_extract(entry: Any, name: str) -> tuple[str, ...]:
        calls[name] += 1
        return extract(entry, name)

    monkeypatch.setattr(query_module, "_extract", counting_extract)
    queries = [parse_query(f"word{n} OR title:/x{n}/ OR content:c{n}") for n in range(100)]
    text = EntryText(ENTRY)
    assert not any(query.matches(text) for query in queries)
    assert max(calls.values()) == 1
    assert set(calls) == {"title", "summary", "author", "tag", "content"}


def test_entry_text_pieces() -> None:
    text = EntryText(ENTRY)
    assert text.values("tag") == ("Machine Learning", "Security")
    assert text.values("content") == ("Deep dive into kernels & compilers",)
    assert text.folded("author") == "jane q. doe"
    assert text.folded(None).split("\n")[-2:] == ["machine learning", "security"]
    assert {"machine", "learning", "jane", "c"} <= text.tokens(None)
    assert text.folded_values("tag") == frozenset({"machine learning", "security"})
    assert text.encoded("tag") == b"Machine Learning\nSecurity"
    assert EntryText({}).folded_values("tag") == frozenset()


# --- Properties ----------------------------------------------------------------------------

_FIELD = st.sampled_from([None, *sorted(FIELDS)])
_BARE = st.from_regex(r"[a-zA-Z0-9äß_][a-zA-Z0-9äß_.+'\"/:-]{0,6}", fullmatch=True).filter(
    lambda word: word not in ("OR", "AND") and not query_module._FIELD_PREFIX.match(word)
)
_PHRASE = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=8
).filter(lambda value: bool(query_module._fold(value)))
_PATTERN = st.sampled_from(
    [r"a.c", r"^x", r"x$", r"CVE-\d{4}", "a/b", "[/]+", r"\\", r"\\/", "(?i)é", r"\pL+", "a|b"]
)
_LEAF = st.one_of(
    st.builds(Term, _FIELD, _BARE),
    st.builds(lambda field, text: Term(field, text, quoted=True), _FIELD, _PHRASE),
    st.builds(Regex, _FIELD, _PATTERN),
)


def _nodes(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    several = st.lists(children, min_size=2, max_size=4).map(tuple)
    return st.one_of(st.builds(Not, children), st.builds(And, several), st.builds(Or, several))


_NODE: st.SearchStrategy[Node] = st.recursive(_LEAF, _nodes, max_leaves=8)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_NODE)
def test_random_asts_round_trip(node: Node) -> None:
    query = Query(node)
    text = str(query)
    if len(text) <= MAX_QUERY_CHARS:
        assert parse_query(text) == query
        assert str(parse_query(text)) == text


_QUERYISH = st.lists(
    st.sampled_from(
        ["a", "é", "OR", "AND", "(", ")", "-", '"', "/", "\\", " ", "title:", "tag:", "foo:",
         '"a b"', "/a/", "/(/", "c++", ":", "\t", "\ud800", "\x00"]
    ),
    max_size=30,
).map("".join)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=600), _QUERYISH))
def test_the_parser_raises_only_query_errors(text: str) -> None:
    try:
        query = parse_query(text)
    except QueryError as exc:
        assert 0 <= exc.position <= len(text)
        assert str(exc).startswith("query: ")
    else:
        assert parse_query(str(query)) == query


_VALUE = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=30),
    st.lists(st.one_of(st.text(max_size=10), st.none()), max_size=4),
)
_ENTRY = st.dictionaries(
    st.sampled_from(["title", "summary", "author", "tags", "feed", "url", "content_html", "x"]),
    _VALUE,
)


@settings(max_examples=300, deadline=None)
@given(_QUERYISH, _ENTRY)
def test_evaluation_never_raises(text: str, entry: dict[str, Any]) -> None:
    try:
        query = parse_query(text)
    except QueryError:
        return
    result = query.matches(entry)
    assert result is query.matches(EntryText(entry))
    assert Query(Not(query.root)).matches(entry) is not result


# --- QuerySet: many queries compiled together ----------------------------------------------

# A small vocabulary shared by the queries and the entries below, so that terms often match.
_VOCAB = ["a", "b", "abc", "c++", "c+", "straße", "STRASSE", "x-y", "node.js", "ﬁle", "é", "Hn"]
_SET_PATTERN = st.sampled_from(
    [r"a.c", r"^a", r"b$", r"^a$", r"\bc\+", r"\pL+", "(?i)é", "(?-i)STRASSE", "ss|ß", "[/]",
     "x*", "^$", r"\b", r"(?s)\n", r"\Aa", r"b\z", r"^\s", r"(?-m:^b)", r"[^\x00-\x7f]"]
)  # fmt: skip
_SET_LEAF = st.one_of(
    st.builds(Term, _FIELD, st.sampled_from(_VOCAB)),
    st.builds(
        lambda field, words: Term(field, " ".join(words), quoted=True),
        _FIELD,
        st.lists(st.sampled_from(_VOCAB), min_size=1, max_size=3),
    ),
    st.builds(Regex, _FIELD, _SET_PATTERN),
)
_SET_NODE: st.SearchStrategy[Node] = st.recursive(_SET_LEAF, _nodes, max_leaves=6)
_SET_TEXT = st.lists(st.sampled_from([*_VOCAB, " ", "\n", ", ", "/"]), max_size=6).map("".join)
_SET_ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "title": _SET_TEXT,
        "summary": _SET_TEXT,
        "author": _SET_TEXT,
        "tags": st.lists(st.one_of(_SET_TEXT, st.sampled_from(_VOCAB), st.none()), max_size=3),
        "feed": st.sampled_from(["hn", "Hn", "a", "b"]),
        "url": _SET_TEXT.map(lambda text: "https://example.org/" + text),
        "content_html": _SET_TEXT.map(lambda text: f"<p>{text}</p>"),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(_SET_NODE, _NODE), min_size=1, max_size=8), st.lists(_SET_ENTRY, max_size=3)
)
def test_a_query_set_answers_as_each_query_does(
    nodes: list[Node], entries: list[dict[str, Any]]
) -> None:
    queries = [Query(node) for node in nodes]
    query_set = QuerySet(queries)
    assert len(query_set) == len(queries) and query_set.queries == tuple(queries)
    for entry in [*entries, ENTRY, {}]:
        expected = [index for index, query in enumerate(queries) if query.matches(entry)]
        assert query_set.matching(entry) == expected
        assert query_set.matching(EntryText(entry)) == expected
        matches = query_set.evaluator(entry)  # in any order, each index any number of times
        for index in reversed(range(len(queries))):
            assert matches(index) is (index in expected)
            assert matches(index) is (index in expected)
        # candidates(): every matching query is among them, in order, and they evaluate alike
        matches, candidates = query_set.candidates(entry)
        assert candidates == sorted(set(candidates)) and set(expected) <= set(candidates)
        assert [index for index in candidates if matches(index)] == expected


def test_candidates_leave_out_the_queries_with_no_term_found() -> None:
    queries = [parse_query(q) for q in ("python", "rust OR go", "-sponsored", "title:trio rust")]
    query_set = QuerySet(queries)
    matches, candidates = query_set.candidates({"title": "Trio and Python", "summary": "x"})
    # "rust OR go" has no term in the entry: never evaluated; "-sponsored" is true without
    # any term found, so it always is; "title:trio rust" has one of its terms found
    assert candidates == [0, 2, 3]
    assert [index for index in candidates if matches(index)] == [0, 2]
    assert query_set.candidates({})[1] == [2]


@settings(max_examples=100, deadline=None)
@given(st.lists(_SET_ENTRY, min_size=1, max_size=3))
def test_regex_sets_out_of_memory_search_one_by_one(entries: list[dict[str, Any]]) -> None:
    """Whether an RE2 set fails to compile (too little memory) or its DFA fails on a search
    (its match list lacks the sentinel), the regexes are searched one by one, same answers."""

    class FailingSet:
        def Match(self, text: bytes) -> None:  # re2.Set spells it so
            return None  # what re2.Set.Match answers when RE2::Set::Match fails

    regexes = [Regex("title", pattern) for pattern in ("a.c", r"\bb\b", "x*", "ß|ss")]
    groups = [
        query_module._Regexes("title", regexes, [10, 11, 12, 13], max_mem=m)
        for m in (1_000, 100_000)
    ]
    assert groups[0].set is None and groups[1].set is not None
    failing = query_module._Regexes("title", regexes, [10, 11, 12, 13])
    failing.set = FailingSet()
    for entry in [*entries, ENTRY]:
        text = EntryText(entry)
        expected = {10 + i for i, regex in enumerate(regexes) if regex.matches(text)}
        for group in [*groups, failing]:
            assert set(group.test(text)) - {-1} == expected


def test_regexes_of_a_scope_are_searched_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = [
        parse_query(f"/zz{n}\\b/ OR title:/yy{n}$/ OR content:/ww{n}\\b/") for n in range(50)
    ]
    query_set = QuerySet(queries)
    searched: Counter[str] = Counter()
    monkeypatch.setattr(Regex, "matches", lambda self, text: searched.update([self.pattern]))
    entry = {**ENTRY, "title": "yy7", "summary": "zz3 and zz40", "content_html": "<p>ww12</p>"}
    assert query_set.matching(entry) == [3, 7, 12, 40]
    assert not searched  # no regex searched on its own: one RE2 set per scope
    assert sum(isinstance(group, query_module._Regexes) for group in query_set._groups) == 3


def test_shared_terms_are_tested_once_per_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: Counter[str] = Counter()
    contains = query_module._contains_words

    def counting(haystack: str, needle: str) -> bool:
        calls[needle] += 1
        return contains(haystack, needle)

    monkeypatch.setattr(query_module, "_contains_words", counting)
    queries = [parse_query(f'"hello world" word{n} OR "Hello  World" -x{n}') for n in range(100)]
    query_set = QuerySet(queries)
    assert query_set.matching(ENTRY) == list(range(100))
    assert calls == Counter({"hello world": 1})


def test_a_query_set_is_lazy_and_computes_each_field_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extracted: Counter[str] = Counter()
    extract = query_module._extract

    def counting_extract(entry: Any, name: str) -> tuple[str, ...]:
        extracted[name] += 1
        return extract(entry, name)

    monkeypatch.setattr(query_module, "_extract", counting_extract)
    queries = [
        parse_query(f"nothing{n} content:/x{n}/ OR title:/zzz{n}/ OR tag:z{n}") for n in range(30)
    ]
    queries.append(parse_query("feed:nope (url:/a/ OR url:b)"))
    assert QuerySet(queries).matching(ENTRY) == []
    # the content, url and feed regexes are behind terms that failed: never extracted
    assert extracted == Counter({name: 1 for name in ("title", "summary", "author", "tag", "feed")})
    # a regex is also searched in the scope's text as Query.matches does
    evaluated = parse_query("/(?-i)Straße/ -/^doe/ tag:/^security$/ -/^jane q\\. doe$/")
    assert not evaluated.matches(ENTRY) and QuerySet([evaluated]).matching(ENTRY) == []
    evaluated = parse_query("/(?-i)Straße/ -/^doe/ tag:/^security$/ /^jane q\\. doe$/")
    assert evaluated.matches(ENTRY) and QuerySet([evaluated]).matching(ENTRY) == [0]


def test_a_query_set_searches_linearly() -> None:
    query_set = QuerySet([parse_query("/(a+)+$/"), parse_query("/(x|x)*y/"), parse_query("/a/")])
    entry = {"title": "a" * 50_000 + "!", "summary": "x" * 50_000}
    started = time.perf_counter()
    assert query_set.matching(entry) == [2]
    assert time.perf_counter() - started < 1.0
