"""``[[rules]]``, ``[[streams]]`` and ``fold_duplicates`` in the config: parsed, or an error
naming the file, the line, the key and (for a query) the position."""

from __future__ import annotations

import pytest

from feedstream.core.config import Config, ConfigError, compare, parse_config
from feedstream.core.streams import StreamError, parse_streams

FEEDS = """
[[feeds]]
id = "hn"
url = "https://news.example/rss"

[[feeds]]
id = "lwn"
url = "https://lwn.example/rss"
"""

GOOD = (
    FEEDS
    + """
[server]
fold_duplicates = false

[[rules]]
id = "no-sponsored"
query = 'tag:sponsored OR title:"sponsored post"'
action = "drop"

[[rules]]
id = "security"
query = 'cve OR vulnerability OR /CVE-\\d{4}-\\d+/'
action = "highlight"
feeds = ["hn", "lwn"]

[[rules]]
id = "python"
query = "python OR pypi"
action = "tag"
tag = "python"

[[streams]]
id = "security"
title = "Security"
query = "(cve OR vulnerability) -tag:sponsored"
feeds = ["hn"]

[[streams]]
id = "everything-python"
query = "python"
"""
)


def test_rules_and_streams_are_parsed_in_order() -> None:
    config = parse_config(GOOD)
    assert [rule.id for rule in config.rules] == ["no-sponsored", "security", "python"]
    assert [rule.action for rule in config.rules] == ["drop", "highlight", "tag"]
    assert config.rules[1].feeds == frozenset({"hn", "lwn"})
    assert config.rules[2].tag == "python"
    security, python = config.streams
    assert (security.id, security.title, security.feeds) == ("security", "Security", {"hn"})
    assert str(security.query) == "(cve OR vulnerability) -tag:sponsored"
    assert (python.title, python.feeds) == ("everything-python", None)  # the id by default
    assert python.describe() == {
        "id": "everything-python",
        "title": "everything-python",
        "query": "python",
        "feeds": None,
    }
    assert config.server.fold_duplicates is False
    assert parse_config(FEEDS).server.fold_duplicates is True  # the default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[rules]]\nid = "sec"\nquery = "cve OR (vuln"\naction = "highlight"\n',
            "feeds.toml:12: rules[0].query: unclosed '(' at 7 (rule 'sec')",
        ),
        (
            '[[rules]]\nid = "sec"\nquery = "a )"\naction = "highlight"\n',
            "feeds.toml:12: rules[0].query: unexpected ')' at 2 (rule 'sec')",
        ),
        (
            '[[rules]]\nid = "sec"\nquery = "a"\naction = "explode"\n',
            ":13: rules[0].action: must be one of 'drop', 'highlight', 'tag', got 'explode'",
        ),
        (
            '[[rules]]\nquery = "a"\naction = "drop"\n',
            ":10: rules[0].id: missing (every rule needs an id)",
        ),
        (
            '[[rules]]\nid = "t"\nquery = "a"\naction = "tag"\n',
            "rules[0].tag: missing (action = \"tag\" needs the tag to add) (rule 't')",
        ),
        (
            '[[rules]]\nid = "x"\nquery = "a"\naction = "drop"\nfeeds = ["nope"]\n',
            ":14: rules[0].feeds: unknown feed 'nope' (not in [[feeds]]) (rule 'x')",
        ),
        (
            '[[rules]]\nid = "x"\nquery = "a"\naction = "drop"\n'
            '[[rules]]\nid = "x"\nquery = "b"\naction = "drop"\n',
            ":15: rules[1].id: duplicate rule id 'x'",
        ),
        (
            '[[rules]]\nid = "x"\nquery = "a"\naction = "drop"\ncolour = "red"\n',
            ":14: rules[0].colour: unknown key",
        ),
        (
            '[[streams]]\nid = "s"\nquery = "title:/a(/"\n',
            ":12: streams[0].query: invalid regex (missing ): a() at 6 (stream 's')",
        ),
        ('[[streams]]\nid = "hn"\nquery = "a"\n', ":11: streams[0].id: 'hn' is already a feed id"),
        (
            '[[streams]]\nid = "s"\nquery = "a"\nfeeds = ["nope"]\n',
            ":13: streams[0].feeds: unknown feed 'nope' (not in [[feeds]]) (stream 's')",
        ),
        (
            '[[streams]]\nid = "s"\nquery = "a"\n[[streams]]\nid = "s"\nquery = "b"\n',
            ":14: streams[1].id: duplicate stream id 's'",
        ),
        ('[[streams]]\nid = "s"\n', "streams[0].query: missing (stream 's')"),
        ('[[streams]]\nid = "s"\nquery = "a"\ntitle = ""\n', ":13: streams[0].title: must be"),
        ('[[streams]]\nid = "Bad Id"\nquery = "a"\n', ":11: streams[0].id: must be 1-64"),
        ("[server]\nfold_duplicates = 1\n", ":11: server.fold_duplicates: must be true or false"),
    ],
)
def test_errors_name_the_file_line_key_and_position(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(FEEDS + "\n" + text, source="feeds.toml")
    assert str(info.value).startswith("feeds.toml"), str(info.value)
    assert message in str(info.value), str(info.value)


def test_rules_and_streams_must_be_arrays_of_tables() -> None:
    for name in ("rules", "streams"):
        with pytest.raises(ConfigError, match=rf"^feeds.toml:2: {name}: must be an array of"):
            parse_config(f'\n{name} = "x"\n' + FEEDS, source="feeds.toml")


def test_a_long_query_is_refused_with_its_limit() -> None:
    text = f'[[streams]]\nid = "s"\nquery = "{"a " * 300}"\n'
    with pytest.raises(ConfigError, match=r"streams\[0\]\.query: longer than 500 characters"):
        parse_config(FEEDS + text, source="feeds.toml")


def test_parse_streams_without_a_config() -> None:
    with pytest.raises(StreamError) as info:
        parse_streams([{"id": "s", "query": "a", "fedds": []}], {"a"})
    assert str(info.value) == "streams[0].fedds: unknown key (did you mean 'feeds'?) (stream 's')"
    assert parse_streams([], ()) == []


def test_compare_notices_rules_and_streams() -> None:
    old = parse_config(GOOD)
    same = compare(old, parse_config(GOOD))
    assert (same.rules_changed, same.streams_changed) == (False, False)
    fewer = parse_config(GOOD.replace('id = "python"', 'id = "py"'))
    changes = compare(old, fewer)
    assert (changes.rules_changed, changes.streams_changed) == (True, False)
    summary = changes.summary()
    assert summary["rules_changed"] is True and summary["streams_changed"] is False
    assert compare(old, Config(feeds=old.feeds)).streams_changed is True
    off = compare(parse_config(FEEDS), parse_config(FEEDS + "[server]\nfold_duplicates = false\n"))
    assert off.restart_needed == ("fold_duplicates",)
