"""``[server]`` keys of private and long-running deployments (access control, the media proxy,
retention): defaults, accepted values, and every mistake naming the line and the key."""

from __future__ import annotations

import pytest

from feedstream.core.config import ConfigError, ServerConfig, parse_config

FEEDS = '\n[[feeds]]\nid = "hn"\nurl = "https://news.example/rss"\n'
TOKEN = "r" * 16


def server(lines: str) -> ServerConfig:
    return parse_config("[server]\n" + lines + FEEDS, source="f.toml").server


def test_defaults_are_an_open_server_keeping_90_days() -> None:
    s = parse_config(FEEDS).server
    assert (s.read_token, s.trusted_proxy_header, s.trusted_proxies) == (None, None, ())
    assert s.private is False
    assert (s.proxy_media, s.media_allow_private) == (False, False)
    assert (s.media_max_bytes, s.media_cache_bytes) == (5 << 20, 256 << 20)
    assert (s.retain_days, s.retain_entries) == (90.0, 0)


def test_every_key_set() -> None:
    s = server(
        f'read_token = "{TOKEN}"\ntrusted_proxy_header = "X-Forwarded-User"\n'
        'trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]\nproxy_media = true\n'
        "media_max_bytes = 2048\nmedia_cache_bytes = 0\nmedia_allow_private = true\n"
        "retain_days = 7.5\nretain_entries = 100000\n"
    )
    assert s.read_token == TOKEN and s.private
    assert s.trusted_proxy_header == "X-Forwarded-User"
    assert s.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8", "::1/128")
    assert (s.proxy_media, s.media_max_bytes, s.media_cache_bytes) == (True, 2048, 0)
    assert s.media_allow_private is True
    assert (s.retain_days, s.retain_entries) == (7.5, 100_000)


def test_a_trusted_proxy_alone_makes_the_server_private() -> None:
    s = server('trusted_proxy_header = "Remote-User"\ntrusted_proxies = ["127.0.0.1/32"]\n')
    assert s.private and s.read_token is None


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('read_token = "short"', "f.toml:2: server.read_token: must be at least 16 characters"),
        ('read_token = "has a space in it!!"', "server.read_token: must be printable characters"),
        ("read_token = 12", "server.read_token:"),
        ('trusted_proxy_header = "X Forwarded"', "server.trusted_proxy_header: must be an HTTP"),
        (
            'trusted_proxy_header = "X-Forwarded-User"',
            "f.toml:2: server.trusted_proxy_header: needs trusted_proxies",
        ),
        ('trusted_proxies = ["localhost"]', "server.trusted_proxies: 'localhost' is not an IP"),
        ('trusted_proxies = "127.0.0.1"', "server.trusted_proxies: must be a list"),
        ("proxy_media = 1", "server.proxy_media:"),
        ("media_max_bytes = 10", "server.media_max_bytes: must be between"),
        ("retain_days = -1", "f.toml:2: server.retain_days: must be between 0 and 36500"),
        ('retain_entries = "many"', "server.retain_entries:"),
    ],
)
def test_mistakes_name_the_line_and_key(lines: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        server(lines + "\n")
    assert message in str(caught.value)
