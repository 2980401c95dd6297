"""``feedstream query``: the stored entries a query matches, and what the rules would do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from feedstream.cli.commands import main
from feedstream.cli.query import evaluate, pointer, render_text
from feedstream.core.query import QueryError, parse_query
from feedstream.core.rules import parse_rules
from feedstream.log.sqlite import SQLiteLog
from feedstream.log.store import Store
from tests.support.helpers import entry, inline

CONFIG = """
[server]
data_dir = "data"

[[feeds]]
id = "hn"
url = "https://news.example/rss"

[[feeds]]
id = "lwn"
url = "https://lwn.example/rss"

[[rules]]
id = "no-ads"
query = "tag:sponsored"
action = "drop"

[[rules]]
id = "security"
query = "cve OR vulnerability"
action = "highlight"
feeds = ["lwn"]

[[rules]]
id = "python"
query = "python"
action = "tag"
tag = "python"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "feeds.toml"
    path.write_text(CONFIG)
    return path


def store_entries(path: Path) -> None:
    async def fill() -> None:
        store = Store(path / "data" / "feedstream.sqlite3")
        log = SQLiteLog(store, store.snapshot(100), backlog=100, offload=inline)
        await log.append(
            [
                entry("hn", "1", title="Python 3.14 is out", url="https://a.example/1"),
                entry("lwn", "2", title="A CVE in OpenSSL", tags=["security"]),
                entry("hn", "3", title="A vulnerability, sponsored", tags=["sponsored"]),
                entry("lwn", "4", title="Python and a CVE", duplicate_of="hn:1"),
                entry("hn", "5", title="Weather"),
            ]
        )
        store.close()

    trio.run(fill)


def test_matching_entries_newest_first(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_entries(config.parent)
    assert main(["query", "--config", str(config), "cve OR python"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[2] for line in lines[:3]] == [
        "Python and a CVE",
        "A CVE in OpenSSL",
        "Python 3.14 is out",
    ]
    assert lines[0].endswith("(duplicate of hn:1)")
    assert "https://a.example/1" in lines[2]
    assert lines[3] == "3 of 5 stored entries match"
    assert main(["query", "-c", str(config), "--limit", "1", "cve"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "2 of 5 stored entries match, 1 shown (--limit)"
    ]


def test_json_and_rules(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_entries(config.parent)
    assert main(["query", "-c", str(config), "--json", "--rules", "cve OR vulnerability"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [(e["title"], e["rules"]) for e in found] == [
        (
            "Python and a CVE",
            {
                "matched": ["security", "python"],
                "dropped_by": None,
                "highlight": True,
                "tags_added": ["python"],
            },
        ),
        (
            "A vulnerability, sponsored",
            {"matched": ["no-ads"], "dropped_by": "no-ads", "highlight": False, "tags_added": []},
        ),
        (
            "A CVE in OpenSSL",
            {"matched": ["security"], "dropped_by": None, "highlight": True, "tags_added": []},
        ),
    ]
    assert main(["query", "-c", str(config), "--rules"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        "    rules: security (highlight), python (tag +python) -> kept, highlighted, tagged python"
        in out
    )
    assert "    rules: no-ads (drop) -> dropped by no-ads" in out
    assert "    rules: none match" in out
    assert out[-4:] == [
        "5 of 5 stored entries match",
        "rule no-ads (drop): matches 1 of 5",
        "rule security (highlight): matches 2 of 5",
        "rule python (tag 'python'): matches 2 of 5",
    ]


def test_a_bad_query_exits_2_with_its_position(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_entries(config.parent)
    assert main(["query", "-c", str(config), "cve OR (python"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "feedstream: query: unclosed '(' at 7",
        "  cve OR (python",
        "         ^",
    ]
    assert main(["query", "-c", str(config)]) == 2
    assert "give a query, or --rules" in capsys.readouterr().err


def test_a_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "feeds.toml"
    path.write_text(CONFIG.replace('query = "python"', 'query = "python)"'))
    for command in (["query", "-c", str(path), "x"], ["check", "--config", str(path)]):
        assert main(command) == 2
        assert "feeds.toml:26: rules[2].query: unexpected ')' at 6 (rule 'python')" in (
            capsys.readouterr().err
        )


def test_nothing_stored_yet_exits_1(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "-c", str(config), "x"]) == 1
    assert "no database at" in capsys.readouterr().err
    assert not (config.parent / "data" / "feedstream.sqlite3").exists()


def test_pure_parts() -> None:
    with pytest.raises(QueryError) as info:
        parse_query("a OR")
    assert pointer("a OR", info.value) == "  a OR\n    ^"
    rules = parse_rules([{"id": "r", "query": "x", "action": "highlight"}])
    verdicts = evaluate([entry("f", "1", title="x"), entry("f", "2")], None, rules, with_rules=True)
    assert [v.matched for v in verdicts] == [("r",), ()]
    text = render_text(verdicts, rules, with_rules=False, total=2, limit=10)
    assert text.splitlines()[-1] == "2 of 2 stored entries match"
