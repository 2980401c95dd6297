"""Transitional: the names the WebSub subscriber still imports from here (removed once it
imports them from :mod:`feedstream.log.base` and :mod:`feedstream.core.times`)."""

from feedstream.log.base import Offload
from feedstream.log.sqlite import SQLiteLog, format_time

__all__ = ["Offload", "SQLiteCursorLog", "format_time"]
SQLiteCursorLog = SQLiteLog  # transitional alias, see the module docstring
