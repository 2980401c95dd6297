"""Config validation: every mistake names the line, the key and what is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from feedstream.core.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
[server]
host = "127.0.0.1"
port = 8080
public_url = "http://127.0.0.1:8080"
backlog = 200

[defaults]
interval = 600
timeout = 15

[[feeds]]
id = "python-insider"
url = "https://blog.python.org/feeds/posts/default"
interval = 300

[[feeds]]
id = "hooks"
token = "s3cret-token"
secret = "hmac-key-123"
"""


def test_good_config() -> None:
    config = parse_config(GOOD)
    assert config.server.backlog == 200
    blog, hooks = config.feeds
    assert (blog.kind, blog.interval, blog.limits.timeout) == ("poll", 300, 15)
    assert (hooks.kind, hooks.interval, hooks.accepts_push) == ("push", 600, True)
    assert config.feed("hooks") is hooks and config.feed("nope") is None


def test_example_config_is_valid() -> None:
    config = load_config(ROOT / "feeds.example.toml")
    assert len(config.feeds) >= 4
    assert config.server.data_dir == ROOT / ".feedstream"  # relative to the file


def test_example_config_documents_every_key() -> None:
    from feedstream.core.config import _DEFAULT_KEYS, _SERVER_KEYS

    text = (ROOT / "feeds.example.toml").read_text()
    for key in sorted(_SERVER_KEYS | _DEFAULT_KEYS):
        assert re.search(rf"^#? ?{key} = ", text, re.MULTILINE), f"{key} is not in the example"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[server]\nport = "80"\n', ":3: server.port: must be a whole number, got '80'"),
        ("[server]\nport = 70000\n", ":3: server.port: must be between 0 and 65535"),
        ('[server]\nhots = "x"\n', ":3: server.hots: unknown key (did you mean 'host'?)"),
        ('[server]\npublic_url = "ftp://x"\n', "server.public_url: must be an absolute http"),
        ('[[feeds]]\nurl = "https://a.org/f"\n', ":2: feeds[0].id: missing"),
        ('[[feeds]]\nid = "Bad Id"\nurl = "https://a.org/f"\n', ":3: feeds[0].id: must be 1-64"),
        ('[[feeds]]\nid = "a"\n', "feeds[0].url: missing: a feed needs a url to poll, or a token"),
        (
            '[[feeds]]\nid = "a"\nurl = "javascript:alert(1)"\n',
            ":4: feeds[0].url: must be an absolute",
        ),
        (
            '[[feeds]]\nid = "a"\nurl = "https://a.org"\ninterval = 0\n',
            ":5: feeds[0].interval: must be between",
        ),
        ('[[feeds]]\nid = "a"\ntoken = "short"\n', ":4: feeds[0].token: must be at least 8"),
        (
            '[[feeds]]\nid = "a"\nurl = "https://a.org"\n[[feeds]]\nid = "a"\nurl = "https://b.org"\n',
            ":6: feeds[1].id: duplicate feed id 'a'",
        ),
        ("[defaults]\nmax_bytes = 1\n", ":3: defaults.max_bytes: must be between"),
        ("[server\n", "not valid TOML"),
        ('feeds = "x"\n', "feeds: must be an array of tables"),
        (
            '[[feeds]]\nid = "a"\nurl = "https://a.org"\ninterval = true\n',
            "feeds[0].interval: must be a number",
        ),
        ('[server]\ncors_origins = "*"\n', "server.cors_origins: must be a list of origins"),
        ('color = "blue"\n', "color: unknown key"),
        ('[server]\nrole = "both"\n', ":3: server.role: must be one of"),
        ('[server]\nlog = "postgres://h/1"\n', ':3: server.log: must be "sqlite" or a redis://'),
        ('[server]\nlog = "redis://h:99999/0"\n', ":3: server.log: has an invalid port"),
        ('[server]\nlog = "redis://h:6379/db1"\n', ":3: server.log: must be redis://host:port/db"),
        ("[server]\nlease_seconds = 1\n", ":3: server.lease_seconds: must be between"),
        ("[server]\nworkers = 65\n", ":3: server.workers: must be between"),
        ('[server]\nrole = "deliver"\nworkers = 2\n', ':4: server.workers: needs role = "all"'),
        (
            "[server]\nport = 9000\ningest_port = 9000\nworkers = 2\n",
            ":4: server.ingest_port: must differ from port",
        ),
        (
            '[[feeds]]\nid = "a"\nurl = "https://a.org"\ncategory = "   "\n',
            ":5: feeds[0].category: must be a non-empty string",
        ),
        (
            '[[feeds]]\nid = "a"\nurl = "https://a.org"\ncategory = 5\n',
            ":5: feeds[0].category: must be a non-empty string, got 5",
        ),
        (
            '[[feeds]]\nid = "a"\nurl = "https://a.org"\ncategory = "' + "x" * 65 + '"\n',
            ":5: feeds[0].category: must be at most 64 characters",
        ),
        (
            '[[feeds]]\nid = "a"\nurl = "https://a.org"\ncategory = "a\\nb"\n',
            ":5: feeds[0].category: must not contain control characters",
        ),
        ('[defaults]\ncategory = "news"\n', ":3: defaults.category: unknown key"),
    ],
)
def test_errors_name_line_key_and_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("\n" + text, source="feeds.toml")
    assert str(info.value).startswith("feeds.toml")
    assert message in str(info.value)


def test_category() -> None:
    config = parse_config(
        '[[feeds]]\nid = "a"\nurl = "https://a.org/f"\ncategory = "  News  "\n\n'
        '[[feeds]]\nid = "b"\nurl = "https://b.org/f"\n\n'
        '[[feeds]]\nid = "c"\ntoken = "push-token"\ncategory = "Ünïcode / Tech ✓"\n'
    )
    assert [feed.category for feed in config.feeds] == ["News", None, "Ünïcode / Tech ✓"]
    assert parse_config(f'[[feeds]]\nid = "a"\nurl = "https://a.org"\ncategory = "{"x" * 64}"\n')
    example = load_config(ROOT / "feeds.example.toml")
    assert {feed.id: feed.category for feed in example.feeds}["python-insider"] == "Python"


def test_scaling_keys() -> None:
    config = parse_config(
        '[server]\nrole = "ingest"\nlog = "redis://:secret@10.0.0.5:6380/2"\nlease_seconds = 10\n'
    )
    server = config.server
    assert (server.role, server.log, server.lease_seconds) == (
        "ingest",
        "redis://:secret@10.0.0.5:6380/2",
        10.0,
    )
    assert server.shared_log and not parse_config("").server.shared_log
    assert (parse_config("").server.role, parse_config("").server.workers) == ("all", 0)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path)
