"""``[hub]`` (feedstream's own WebSub hub) and the output feed names: every mistake names the
line, the key and what is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from feedstream.core.config import (
    DEFAULT_HUB_MAX_LEASE,
    DEFAULT_HUB_MIN_LEASE,
    ConfigError,
    HubConfig,
    compare,
    parse_config,
)
from feedstream.websub import hub as websub_hub

ROOT = Path(__file__).resolve().parents[2]

SERVER = '[server]\npublic_url = "http://127.0.0.1:8080"\n\n'
FEEDS = '[[feeds]]\nid = "hn"\nurl = "https://news.example/rss"\n\n'


def test_hub_defaults_off() -> None:
    config = parse_config(FEEDS)
    assert config.hub == HubConfig()
    assert (config.hub.enabled, config.hub.allow_private_callbacks) == (False, False)
    assert (config.hub.min_lease, config.hub.max_lease) == (3600, 864000)


def test_hub_defaults_match_the_rules() -> None:
    assert DEFAULT_HUB_MIN_LEASE == websub_hub.DEFAULT_MIN_LEASE
    assert DEFAULT_HUB_MAX_LEASE == websub_hub.DEFAULT_MAX_LEASE


def test_hub_enabled() -> None:
    text = (
        SERVER
        + FEEDS
        + (
            "[hub]\nenabled = true\nmin_lease = 60\nmax_lease = 7200\nallow_private_callbacks = true\n"
        )
    )
    hub = parse_config(text).hub
    assert hub == HubConfig(
        enabled=True, min_lease=60, max_lease=7200, allow_private_callbacks=True
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (FEEDS + "[hub]\nenabled = true\n", ":6: hub.enabled: needs server.public_url"),
        (SERVER + "[hub]\nenabled = 1\n", ":5: hub.enabled: must be true or false, got 1"),
        (
            SERVER + "[hub]\nenable = true\n",
            ":5: hub.enable: unknown key (did you mean 'enabled'?)",
        ),
        (SERVER + "[hub]\nmin_lease = 10\n", ":5: hub.min_lease: must be between 60 and"),
        (SERVER + "[hub]\nmax_lease = 1.5\n", ":5: hub.max_lease: must be a whole number"),
        (
            SERVER + "[hub]\nmin_lease = 7200\nmax_lease = 3600\n",
            ":5: hub.min_lease: must be at most max_lease (3600)",
        ),
        ("hub = 1\n" + SERVER, "feeds.toml:1: hub: must be a table ([hub])"),
    ],
)
def test_hub_mistakes(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="feeds.toml")
    assert message in str(info.value), str(info.value)
    assert str(info.value).startswith("feeds.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[feeds]]\nid = "all"\nurl = "https://a.example/rss"\n',
            "feeds.toml:2: feeds[0].id: 'all' is reserved (/feeds/all.atom is every feed)",
        ),
        (
            FEEDS + '[[streams]]\nid = "all"\nquery = "a"\n',
            "feeds.toml:6: streams[0].id: 'all' is reserved",
        ),
        (
            FEEDS + '[[streams]]\nid = "hn"\nquery = "a"\n',
            "feeds.toml:6: streams[0].id: 'hn' is already a feed id",
        ),
    ],
)
def test_output_feed_names_are_unambiguous(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="feeds.toml")
    assert message in str(info.value), str(info.value)


def test_a_hub_change_needs_a_restart() -> None:
    old = parse_config(SERVER + FEEDS)
    new = parse_config(SERVER + FEEDS + "[hub]\nenabled = true\n")
    assert compare(old, new).restart_needed == ("hub",)
    assert compare(old, old).restart_needed == ()


def test_example_config_documents_the_hub() -> None:
    from feedstream.core.config import _HUB_KEYS

    text = (ROOT / "feeds.example.toml").read_text()
    assert re.search(r"^# \[hub\]", text, re.MULTILINE)
    for key in sorted(_HUB_KEYS):
        assert re.search(rf"^#? ?{key} = ", text, re.MULTILINE), f"{key} is not in the example"
    uncommented = re.sub(
        r"^# (\[hub\]|enabled|min_lease|max_lease|allow_private)", r"\1", text, flags=re.MULTILINE
    )
    example = parse_config(uncommented.replace("# public_url", "public_url"))
    assert example.hub == HubConfig()
