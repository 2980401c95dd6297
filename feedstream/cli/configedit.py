"""Adding feeds to a config file without disturbing a byte of what is already in it.

``feedstream import`` and ``feedstream add`` write to the operator's own ``feeds.toml``, with
its comments, alignment and order. The rules:

* **Append, don't rewrite.** The feeds of a config are an array of tables (``[[feeds]]``, see
  :mod:`feedstream.core.config`), and a ``[[feeds]]`` header at the end of a file adds one more
  element wherever the others are. So the new tables are rendered with tomlkit (which quotes
  and escapes values correctly) and appended after the existing text, which is kept byte for
  byte, line endings included (a CRLF file gets CRLF tables). Only a file that lists its feeds
  as an inline array (``feeds = [{...}]``) is edited through tomlkit's document model, which
  keeps the rest of it as it was too.
* **Validate the whole result** with :func:`feedstream.core.config.parse_config`, exactly as the
  server will read it: a result that would not load is never written, and the
  :class:`~feedstream.core.config.ConfigError` names its line.
* **Write atomically**: a temporary file next to the config (same file system), flushed and
  fsynced, given the original's permissions, then ``os.replace``. A reader (or the server
  reloading on SIGHUP) sees the old file or the new one, never half of one. A file that changed
  between reading and writing is not overwritten. A symlinked config is written through the link.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomlkit
import tomlkit.items
from tomlkit.exceptions import ParseError as TomlParseError

from feedstream.core.config import Config, ConfigError, parse_config

logger = logging.getLogger(__name__)

__all__ = ["Edit", "NewFeed", "append_feeds", "apply_edit", "plan_edit", "render_feeds"]


@dataclass(frozen=True, slots=True)
class NewFeed:
    """A feed to add: the keys written to its ``[[feeds]]`` table (None: left out)."""

    id: str
    url: str
    title: str | None = None
    category: str | None = None

    def table(self) -> tomlkit.items.Table:
        table = tomlkit.table()
        for key in ("id", "url", "title", "category"):
            value = getattr(self, key)
            if value is not None:
                table.add(key, value)
        return table


@dataclass(frozen=True, slots=True)
class Edit:
    """A validated edit of the file at :attr:`path`, not yet written."""

    path: Path  # the file written (a symlink's target)
    before: bytes
    after: bytes
    config: Config  # what the server will read from :attr:`after`


def render_feeds(feeds: Sequence[NewFeed], newline: str = "\n") -> str:
    """``[[feeds]]`` tables for *feeds*, one blank line between them."""
    document = tomlkit.document()
    tables = tomlkit.aot()
    for feed in feeds:
        tables.append(feed.table())
    document.append("feeds", tables)
    return tomlkit.dumps(document).replace("\n", newline)


def append_feeds(text: str, feeds: Sequence[NewFeed]) -> str:
    """*text* with *feeds* added; the existing text is kept as it is (see the module docstring).

    Raises :class:`ConfigError` when *text* is not TOML at all.
    """
    if not feeds:
        return text
    try:
        document = tomlkit.parse(text)
    except TomlParseError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    listed = document.get("feeds")
    if isinstance(listed, tomlkit.items.Array):
        for feed in feeds:
            inline = tomlkit.inline_table()
            inline.update(feed.table().unwrap())
            listed.append(inline)
        return tomlkit.dumps(document)
    newline = "\r\n" if "\r\n" in text else "\n"
    prefix = text
    if prefix and not prefix.endswith("\n"):
        prefix += newline
    if prefix.strip() and not prefix.endswith(newline * 2):
        prefix += newline
    return prefix + render_feeds(feeds, newline)


def plan_edit(path: str | Path, feeds: Sequence[NewFeed]) -> Edit:
    """Read the config at *path*, add *feeds*, validate the whole result; write nothing.

    Raises :class:`ConfigError` (naming the file and line) when the file cannot be read or
    the result would not load.
    """
    target = Path(os.path.realpath(path))
    shown = str(path)
    try:
        before = target.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc}") from None
    try:
        text = before.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc}") from None
    try:
        after = append_feeds(text, feeds)
    except ConfigError as exc:
        raise ConfigError(f"{shown}: {exc}") from None
    config = parse_config(after, source=shown)
    return Edit(target, before, after.encode("utf-8"), config)


def apply_edit(edit: Edit) -> None:
    """Write :attr:`Edit.after` in place of the file, atomically, if the file is unchanged."""
    try:
        current = edit.path.read_bytes()
        mode = stat.S_IMODE(edit.path.stat().st_mode)
    except OSError as exc:
        raise ConfigError(f"{edit.path}: cannot read: {exc}") from None
    if current != edit.before:
        raise ConfigError(f"{edit.path}: changed while it was being edited; nothing written")
    descriptor, temporary = tempfile.mkstemp(
        dir=edit.path.parent, prefix=f".{edit.path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(edit.after)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, edit.path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logger.info("wrote %s (%d bytes)", edit.path, len(edit.after))
