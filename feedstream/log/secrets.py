"""Server secrets kept with the data: random keys created once, then the same for every process.

A secret is created the first time any process asks for it and never changes afterwards, so
every node and every restart agrees (the media proxy's ``media_key``: a URL signed by one
deliver process is verified by another, and still after a restart).

* :class:`FileSecrets`: one file per secret in ``data_dir`` (``<name>.key``, the key in hex,
  mode 0600), for the SQLite log: every process on the machine shares ``data_dir``. The file is
  written whole under a temporary name and then linked into place, which fails if another
  process got there first; the loser reads the winner's key. Nothing is ever half-written.
* :class:`feedstream.log.redissecrets.RedisSecrets`: one key per secret, set with ``SET NX``,
  for the Redis log (several machines).
* :class:`MemorySecrets`: for tests.

Losing a secret (deleting the file, or the Redis key) only makes the URLs signed with it
invalid: a new one is created at the next start.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Protocol

from feedstream.core.media import KEY_BYTES
from feedstream.log.base import Offload

__all__ = [
    "FileSecrets",
    "MemorySecrets",
    "SecretError",
    "SecretStore",
    "check_name",
    "new_secret",
    "parse_secret",
]

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_HEX = re.compile(r"[0-9a-f]{32,128}")


class SecretError(Exception):
    """A stored secret cannot be read (damaged); it is never replaced silently."""


class SecretStore(Protocol):
    """Where secrets live (every method may raise :class:`~feedstream.log.state.LogUnavailable`
    on a shared store)."""

    async def secret(self, name: str) -> bytes:
        """The secret *name*: :data:`~feedstream.core.media.KEY_BYTES` random bytes, created
        by whichever process asks first."""
        ...


def new_secret() -> str:
    """A fresh secret, as stored: hex text."""
    return os.urandom(KEY_BYTES).hex()


def parse_secret(text: str, where: str) -> bytes:
    """The bytes of a stored secret; :class:`SecretError` naming *where* if it is damaged."""
    text = text.strip()
    if not _HEX.fullmatch(text) or len(text) % 2:
        raise SecretError(f"{where}: not a key (expected hex); remove it to make a new one")
    return bytes.fromhex(text)


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad secret name {name!r}")


class MemorySecrets:
    """Secrets in a dict (tests; a process of its own)."""

    def __init__(self, **known: bytes) -> None:
        self._known = dict(known)

    async def secret(self, name: str) -> bytes:
        check_name(name)
        if name not in self._known:
            self._known[name] = bytes.fromhex(new_secret())
        return self._known[name]


class FileSecrets:
    """One file per secret in *directory* (see the module docstring); file I/O through
    *offload*."""

    def __init__(self, directory: Path, offload: Offload) -> None:
        self._directory = directory
        self._offload = offload

    async def secret(self, name: str) -> bytes:
        check_name(name)
        path = self._directory / f"{name}.key"
        key: bytes = await self._offload(_read_or_create, path)
        return key


def _read(path: Path) -> bytes:
    return parse_secret(path.read_text(encoding="ascii", errors="replace"), str(path))


def _read_or_create(path: Path) -> bytes:
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(new_secret() + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another process created it first
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return _read(path)
