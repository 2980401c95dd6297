"""Log output: one line per event, as text for people or JSON for log shippers.

Messages about a feed start with ``feed <id>:`` (grep-friendly in text) and carry the id as
``extra={"feed": ...}``, which the JSON format turns into a ``"feed"`` field. A traceback stays
inside its event: one JSON object per line, whatever happened.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["FORMATS", "JsonFormatter", "configure"]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: ``extra`` keys copied into JSON events when a record has them.
FIELDS = ("feed", "host")


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"[, "feed", "host", "exception"]}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        event: dict[str, Any] = {
            "time": f"{when}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                event[name] = value
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        return json.dumps(event, ensure_ascii=False, default=str)


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send log events at *level* and above to *stream* (stderr) in *fmt* (text or json)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries chatter at info (every httpx request); keep them to warnings and above.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
