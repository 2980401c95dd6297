"""Rules: validating [[rules]] tables and applying them to entries in order."""

from __future__ import annotations

import copy
import pickle
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedstream.core import query as query_module
from feedstream.core import rules as rules_module
from feedstream.core.query import EntryText, parse_query
from feedstream.core.rules import Rule, RuleError, RuleSet, apply_rules, parse_rules

ISSUE_RULES: list[dict[str, Any]] = [
    {
        "id": "no-sponsored",
        "query": 'tag:sponsored OR title:"sponsored post"',
        "action": "drop",
    },
    {
        "id": "security",
        "query": r"cve OR vulnerability OR /CVE-\d{4}-\d+/",
        "action": "highlight",
        "feeds": ["hn", "lwn"],
    },
    {"id": "python", "query": "python OR pypi", "action": "tag", "tag": "python"},
]


def entry(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "hn:1",
        "feed": "hn",
        "title": "Nothing special",
        "summary": None,
        "author": None,
        "tags": [],
        "url": "https://example.org/1",
        "content_html": None,
        "enclosures": [{"url": "https://example.org/a.mp3", "type": None, "length": None}],
    }
    base.update(values)
    return base


def rule(rule_id: str, text: str, action: Any = "highlight", **more: Any) -> Rule:
    return Rule(rule_id, parse_query(text), action, **more)


# --- parse_rules ---------------------------------------------------------------------------


def test_parses_the_issue_example() -> None:
    rules = parse_rules(ISSUE_RULES)
    assert [r.id for r in rules] == ["no-sponsored", "security", "python"]
    assert [r.action for r in rules] == ["drop", "highlight", "tag"]
    assert rules[0].query == parse_query('tag:sponsored OR title:"sponsored post"')
    assert rules[0].feeds is None and rules[0].tag is None
    assert rules[1].feeds == frozenset({"hn", "lwn"})
    assert rules[2].tag == "python"
    assert parse_rules([]) == []


def test_tag_whitespace_is_collapsed() -> None:
    [parsed] = parse_rules(
        [{"id": "t", "query": "x", "action": "tag", "tag": "  Machine \t learning "}]
    )
    assert parsed.tag == "Machine learning"


def fail(tables: list[Any]) -> RuleError:
    with pytest.raises(RuleError) as caught:
        parse_rules(tables)
    assert isinstance(caught.value, ValueError)
    return caught.value


def test_a_bad_query_names_rule_key_and_position() -> None:
    tables = [*ISSUE_RULES[:1], {"id": "security", "query": "title:security) x", "action": "drop"}]
    error = fail(tables)
    assert str(error) == "rules[1].query: unexpected ')' at 14 (rule 'security')"
    assert (error.index, error.rule_id, error.key, error.position) == (1, "security", "query", 14)
    assert error.reason == "unexpected ')' at 14"


def test_an_overlong_query() -> None:
    error = fail([{"id": "long", "query": "a " * 300, "action": "drop"}])
    assert str(error) == "rules[0].query: longer than 500 characters (rule 'long')"
    assert error.position == 500


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"query": "x", "action": "drop"}, "rules[0].id: missing (every rule needs an id)"),
        ({"id": "", "query": "x", "action": "drop"}, "rules[0].id: must be 1-64 characters of a-z, 0-9, '-' and '_', got ''"),
        ({"id": "Bad Id", "query": "x", "action": "drop"}, "rules[0].id: must be 1-64 characters of a-z, 0-9, '-' and '_', got 'Bad Id'"),
        ({"id": 5, "query": "x", "action": "drop"}, "rules[0].id: must be 1-64 characters of a-z, 0-9, '-' and '_', got 5"),
        ({"id": "a" * 65, "query": "x", "action": "drop"}, f"rules[0].id: must be 1-64 characters of a-z, 0-9, '-' and '_', got {'a' * 65!r}"),
        ({"id": "r", "action": "drop"}, "rules[0].query: missing (rule 'r')"),
        ({"id": "r", "query": ["x"], "action": "drop"}, "rules[0].query: must be a string, got ['x'] (rule 'r')"),
        ({"id": "r", "query": "", "action": "drop"}, "rules[0].query: empty at 0 (rule 'r')"),
        ({"id": "r", "query": "x"}, "rules[0].action: missing (one of 'drop', 'highlight', 'tag') (rule 'r')"),
        ({"id": "r", "query": "x", "action": "delete"}, "rules[0].action: must be one of 'drop', 'highlight', 'tag', got 'delete' (rule 'r')"),
        ({"id": "r", "query": "x", "action": "tag"}, "rules[0].tag: missing (action = \"tag\" needs the tag to add) (rule 'r')"),
        ({"id": "r", "query": "x", "action": "tag", "tag": " "}, "rules[0].tag: must be a non-empty string of at most 100 characters without control characters, got ' ' (rule 'r')"),
        ({"id": "r", "query": "x", "action": "tag", "tag": 3}, "rules[0].tag: must be a non-empty string of at most 100 characters without control characters, got 3 (rule 'r')"),
        ({"id": "r", "query": "x", "action": "tag", "tag": "a\x00b"}, "rules[0].tag: must be a non-empty string of at most 100 characters without control characters, got 'a\\x00b' (rule 'r')"),
        ({"id": "r", "query": "x", "action": "tag", "tag": "a" * 101}, f"rules[0].tag: must be a non-empty string of at most 100 characters without control characters, got {'a' * 101!r} (rule 'r')"),
        ({"id": "r", "query": "x", "action": "drop", "tag": "t"}, "rules[0].tag: only allowed with action = \"tag\", not 'drop' (rule 'r')"),
        ({"id": "r", "query": "x", "action": "drop", "feeds": []}, "rules[0].feeds: must be a non-empty list of feed ids, got [] (rule 'r')"),
        ({"id": "r", "query": "x", "action": "drop", "feeds": "hn"}, "rules[0].feeds: must be a non-empty list of feed ids, got 'hn' (rule 'r')"),
        ({"id": "r", "query": "x", "action": "drop", "feeds": ["hn", "Not A Feed"]}, "rules[0].feeds: must be a non-empty list of feed ids, got ['hn', 'Not A Feed'] (rule 'r')"),
        ({"id": "r", "query": "x", "action": "drop", "feed": ["hn"]}, "rules[0].feed: unknown key (did you mean 'feeds'?) (rule 'r')"),
        ({"id": "r", "query": "x", "action": "drop", "colour": "red"}, "rules[0].colour: unknown key (rule 'r')"),
    ],
)  # fmt: skip
def test_invalid_tables(table: dict[str, Any], message: str) -> None:
    error = fail([table])
    assert str(error) == message
    assert error.index == 0
    assert error.key == message.split(":")[0].removeprefix("rules[0].")
    assert error.position is None or error.key == "query"


def test_unknown_keys_are_reported_before_anything_else() -> None:
    error = fail([{"id": "BAD", "querry": "x"}])
    assert (error.key, error.rule_id) == ("querry", None)
    assert str(error) == "rules[0].querry: unknown key (did you mean 'query'?)"


def test_duplicate_ids() -> None:
    error = fail([*ISSUE_RULES, {"id": "python", "query": "x", "action": "drop"}])
    assert str(error) == "rules[3].id: duplicate rule id 'python' (rule 'python')"
    assert error.index == 3


def test_a_table_that_is_not_a_table() -> None:
    error = fail([ISSUE_RULES[0], "drop everything"])
    assert error.index == 1
    assert "must be a table" in str(error)


# --- apply_rules ---------------------------------------------------------------------------


def test_no_rules_still_marks_the_entry() -> None:
    original = entry()
    outcome = apply_rules(original, [])
    assert outcome.entry == {**original, "matched": [], "highlight": False}
    assert outcome.entry is not original
    assert (outcome.dropped, outcome.matched, outcome.dropped_by) == (False, (), None)


def test_the_issue_rules() -> None:
    rules = parse_rules(ISSUE_RULES)

    security = apply_rules(entry(title="Kernel CVE-2024-1234 fixed in Python"), rules)
    assert security.matched == ("security", "python")
    assert security.entry["matched"] == ["security", "python"]
    assert security.entry["highlight"] is True
    assert security.entry["tags"] == ["python"]
    assert not security.dropped

    elsewhere = apply_rules(entry(feed="lobsters", title="A vulnerability in PyPI"), rules)
    assert elsewhere.matched == ("python",)  # "security" only applies to hn and lwn
    assert elsewhere.entry["highlight"] is False

    sponsored = apply_rules(entry(title="Sponsored post: Python hosting", tags=["Ads"]), rules)
    assert sponsored.dropped and sponsored.dropped_by == "no-sponsored"
    assert sponsored.matched == ("no-sponsored",)  # evaluation stops at the drop
    assert sponsored.entry["matched"] == ["no-sponsored"]
    assert sponsored.entry["tags"] == ["Ads"]


def test_matched_ids_keep_rule_order() -> None:
    rules = [rule("c", "x"), rule("a", "y"), rule("b", "x y"), rule("z", "absent")]
    assert apply_rules(entry(title="x y"), rules).matched == ("c", "a", "b")
    assert apply_rules(entry(title="y"), rules).matched == ("a",)


def test_drop_after_other_rules_keeps_their_ids_and_stops() -> None:
    rules = [
        rule("hl", "x"),
        rule("tag", "x", "tag", tag="t"),
        rule("drop", "x", "drop"),
        rule("after", "x"),
    ]
    outcome = apply_rules(entry(title="x"), rules)
    assert outcome.dropped and outcome.dropped_by == "drop"
    assert outcome.matched == ("hl", "tag", "drop")
    assert outcome.entry["highlight"] is True
    assert outcome.entry["tags"] == ["t"]


def test_tags_are_added_once_in_order() -> None:
    rules = [
        rule("one", "x", "tag", tag="Python"),
        rule("two", "x", "tag", tag="security"),
        rule("three", "x", "tag", tag="python"),  # already added, in another case
        rule("four", "x", "tag", tag="News"),  # already on the entry
    ]
    outcome = apply_rules(entry(title="x", tags=["news", "Misc"]), rules)
    assert outcome.entry["tags"] == ["news", "Misc", "Python", "security"]
    assert outcome.matched == ("one", "two", "three", "four")


def test_tags_when_the_entry_has_none_or_junk() -> None:
    rules = [rule("t", "x", "tag", tag="t")]
    assert apply_rules({"title": "x"}, rules).entry["tags"] == ["t"]
    assert apply_rules({"title": "x", "tags": None}, rules).entry["tags"] == ["t"]
    assert apply_rules({"title": "x", "tags": ("a", 1)}, rules).entry["tags"] == ["a", 1, "t"]


def test_rules_see_the_entry_as_it_arrived() -> None:
    rules = [rule("tagger", "x", "tag", tag="later"), rule("reader", "tag:later", "drop")]
    outcome = apply_rules(entry(title="x"), rules)
    assert outcome.matched == ("tagger",)
    assert not outcome.dropped


def test_feed_restrictions() -> None:
    rules = [rule("only-hn", "x", feeds=frozenset({"hn"})), rule("all", "x")]
    assert apply_rules(entry(title="x"), rules).matched == ("only-hn", "all")
    assert apply_rules(entry(title="x", feed="lwn"), rules).matched == ("all",)
    assert apply_rules({"title": "x"}, rules).matched == ("all",)  # no feed at all
    assert apply_rules({"title": "x", "feed": ["hn"]}, rules).matched == ("all",)


def test_the_input_is_never_changed_and_every_key_is_kept() -> None:
    original = entry(title="x", tags=["a"], matched=["stale"], highlight=True, extra={"k": 1})
    snapshot = copy.deepcopy(original)
    rules = [rule("t", "x", "tag", tag="b"), rule("d", "x", "drop")]
    outcome = apply_rules(original, rules)
    assert original == snapshot
    assert outcome.entry["tags"] == ["a", "b"]
    assert outcome.entry["tags"] is not original["tags"]
    assert outcome.entry["matched"] == ["t", "d"]  # replaces an earlier value
    assert outcome.entry["highlight"] is False
    assert set(outcome.entry) == set(original)
    for key in original.keys() - {"tags", "matched", "highlight"}:
        assert outcome.entry[key] == original[key]


def test_an_entry_text_can_be_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = [rule(f"r{n}", f"word{n} OR title:/x{n}$/ OR tag:t{n}") for n in range(100)]
    rules.append(rule("hit", "title:/x$/"))
    calls: Counter[str] = Counter()
    extract = query_module._extract

    def counting_extract(entry: Any, name: str) -> tuple[str, ...]:
        calls[name] += 1
        return extract(entry, name)

    monkeypatch.setattr(query_module, "_extract", counting_extract)
    subject = entry(title="x")
    text = EntryText(subject)
    assert apply_rules(subject, rules, text=text).matched == ("hit",)
    assert parse_query("title:x").matches(text)  # a stream query reuses the same text
    assert set(calls) == {"title", "summary", "author", "tag"}
    assert max(calls.values()) == 1


# --- RuleSet: the rules' queries compiled together -----------------------------------------


def _reference(subject: dict[str, Any], rules: list[Rule]) -> tuple[tuple[str, ...], bool, bool]:
    """(matched, dropped, highlight) as apply_rules must answer: rule by rule, Query.matches."""
    matched: list[str] = []
    highlight = False
    for each in rules:
        if each.applies_to(subject.get("feed")) and each.query.matches(subject):
            matched.append(each.id)
            if each.action == "drop":
                return tuple(matched), True, highlight
            highlight = highlight or each.action == "highlight"
    return tuple(matched), False, highlight


_QUERIES = [
    "python", "python OR pypi", "title:python -tag:ads", '"hello world"', "tag:ads",
    "feed:hn", "url:example", "/py.hon/", "title:/^python$/", "content:/deep/ OR cve",
    r"/CVE-\d+/ -/ads/", "(a OR b) c", "-python", "author:jane", "tag:/^a/ OR summary:/b$/",
]  # fmt: skip
_TEXT = st.lists(
    st.sampled_from(["python", "pypi", "hello", "world", "ads", "a", "b", "c", "CVE-1", " ", "\n"]),
    max_size=6,
).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_QUERIES),
            st.sampled_from(["drop", "highlight", "tag"]),
            st.one_of(st.none(), st.sets(st.sampled_from(["hn", "lwn"]), min_size=1)),
        ),
        max_size=12,
    ),
    st.lists(
        st.fixed_dictionaries(
            {"title": _TEXT, "summary": _TEXT, "content_html": _TEXT, "author": _TEXT},
            optional={
                "feed": st.sampled_from(["hn", "lwn", "other"]),
                "tags": st.lists(_TEXT, max_size=3),
                "url": st.sampled_from(["https://example.org/ads", "https://other.org/"]),
            },
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_apply_rules_answers_as_the_rules_one_by_one(
    tables: list[tuple[str, str, set[str] | None]], entries: list[dict[str, Any]]
) -> None:
    rules = [
        Rule(f"r{n}", parse_query(text), action, f"t{n}" if action == "tag" else None,
             None if feeds is None else frozenset(feeds))  # type: ignore[arg-type]
        for n, (text, action, feeds) in enumerate(tables)
    ]  # fmt: skip
    for subject in entries:
        matched, dropped, highlight = _reference(subject, rules)
        for given_rules in (rules, RuleSet(rules), tuple(rules)):
            outcome = apply_rules(subject, given_rules)
            assert (outcome.matched, outcome.dropped) == (matched, dropped)
            assert outcome.entry["highlight"] is highlight


def test_a_rule_set_is_a_tuple_of_the_rules() -> None:
    rules = parse_rules(ISSUE_RULES)
    rule_set = RuleSet(rules)
    assert rule_set == tuple(rules) and isinstance(rule_set, tuple) and len(rule_set) == 3
    assert rule_set.queries.queries == tuple(r.query for r in rules)
    copied = pickle.loads(pickle.dumps(rule_set))  # compiled RE2 sets do not pickle: rebuilt
    assert type(copied) is RuleSet and copied == rule_set
    subject = entry(title="Python and CVE-2024-1", feed="hn")
    assert apply_rules(subject, copied).matched == ("security", "python")
    assert RuleSet() == () and apply_rules(subject, RuleSet()).matched == ()


def test_plain_rule_lists_are_compiled_once_and_again_when_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled: list[int] = []
    real = rules_module.QuerySet

    def counting(queries: Any) -> Any:
        query_set = real(queries)
        compiled.append(len(query_set))
        return query_set

    monkeypatch.setattr(rules_module, "QuerySet", counting)
    rules = [rule("a", "python"), rule("b", "title:/cve/")]
    subject = entry(title="Python CVE")
    for _ in range(3):
        assert apply_rules(subject, rules).matched == ("a", "b")
    assert compiled == [2]
    rules.append(rule("c", "nothing"))
    rules[0] = rule("a", "pypi")
    assert apply_rules(subject, rules).matched == ("b",)
    assert compiled == [2, 3]
    rule_set = RuleSet(rules)
    assert apply_rules(subject, rule_set).matched == ("b",)
    assert apply_rules(subject, rule_set).matched == ("b",)
    assert compiled == [2, 3, 3]  # a RuleSet is compiled when made, never again
