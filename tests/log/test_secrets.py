"""Secrets kept with the data: created once by whoever asks first, then the same everywhere."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from feedstream.core.media import KEY_BYTES
from feedstream.log.redis import connect
from feedstream.log.redissecrets import RedisSecrets
from feedstream.log.secrets import FileSecrets, MemorySecrets, SecretError, _read_or_create
from tests.support.helpers import inline
from tests.support.redis import RedisServer


async def test_file_secrets_are_created_once_and_kept(tmp_path: Path) -> None:
    first = await FileSecrets(tmp_path / "data", inline).secret("media_key")
    assert len(first) == KEY_BYTES
    path = tmp_path / "data" / "media_key.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert await FileSecrets(tmp_path / "data", inline).secret("media_key") == first  # a restart
    assert await FileSecrets(tmp_path / "data", inline).secret("other") != first
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["media_key.key", "other.key"]


def test_processes_racing_to_create_a_secret_agree(tmp_path: Path) -> None:
    path = tmp_path / "media_key.key"
    with ThreadPoolExecutor(16) as pool:
        keys = set(pool.map(lambda _: _read_or_create(path), range(64)))
    assert len(keys) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["media_key.key"]  # no temporary left


async def test_a_damaged_secret_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "media_key.key").write_text("not hex\n")
    with pytest.raises(SecretError, match=r"media_key\.key: not a key"):
        await FileSecrets(tmp_path, inline).secret("media_key")
    assert (tmp_path / "media_key.key").read_text() == "not hex\n"
    with pytest.raises(ValueError):
        await FileSecrets(tmp_path, inline).secret("../escape")


async def test_memory_secrets() -> None:
    secrets = MemorySecrets(given=b"x" * 32)
    assert await secrets.secret("given") == b"x" * 32
    made = await secrets.secret("made")
    assert len(made) == KEY_BYTES and await secrets.secret("made") == made


async def test_redis_secrets_are_set_once(redis_server: RedisServer) -> None:
    async with connect(redis_server.url) as client:
        first = await RedisSecrets(client, prefix="test").secret("media_key")
        assert len(first) == KEY_BYTES
        assert await RedisSecrets(client, prefix="test").secret("media_key") == first
        assert await client.get("test:secret:media_key") == first.hex()
        await client.set("test:secret:broken", "zz")
        with pytest.raises(SecretError, match="redis key test:secret:broken"):
            await RedisSecrets(client, prefix="test").secret("broken")
