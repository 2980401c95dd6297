"""Transitional: the names the WebSub subscriber still imports from here (removed once it
imports them from :mod:`feedstream.log.base` and :mod:`feedstream.core.times`)."""

from feedstream.core.times import format_rfc3339 as format_time
from feedstream.log.base import Offload
from feedstream.log.sqlite import SQLiteLog

__all__ = ["Offload", "SQLiteCursorLog", "format_time"]
SQLiteCursorLog = SQLiteLog  # transitional alias, see the module docstring
