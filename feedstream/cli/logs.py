"""Log output: one line per event, as text for people or JSON for log shippers.

Messages about a feed start with ``feed <id>:`` (grep-friendly in text) and carry the id as
``extra={"feed": ...}``, which the JSON format turns into a ``"feed"`` field. A traceback stays
inside its event: one JSON object per line, whatever happened.

Under ``serve --workers N`` several processes write to one stream: each is configured with a
*name* (``supervisor``, ``ingest``, ``deliver-1``...), which the text format puts after the level
and the JSON format gives as a ``"process"`` field.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["FORMATS", "JsonFormatter", "ProcessName", "configure"]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
NAMED_TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(process_name)s] %(name)s: %(message)s"
#: ``extra`` keys copied into JSON events when a record has them.
FIELDS = ("feed", "host")


class ProcessName(logging.Filter):
    """Stamps every record passing a handler with ``process_name`` (the process's role name)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.process_name = name

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_name = self.process_name
        return True


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"[, "process", "feed", "host", "exception"]}``."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        event: dict[str, Any] = {
            "time": f"{when}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        process = getattr(record, "process_name", None)
        if process is not None:
            event["process"] = process
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                event[name] = value
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        return json.dumps(event, ensure_ascii=False, default=str)


def configure(
    level: str = "info", fmt: str = "text", stream: TextIO | None = None, name: str | None = None
) -> None:
    """Send log events at *level* and above to *stream* (stderr) in *fmt* (text or json),
    each naming the process *name* when given."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    text = logging.Formatter(TEXT_FORMAT if name is None else NAMED_TEXT_FORMAT)
    handler.setFormatter(JsonFormatter() if fmt == "json" else text)
    if name is not None:
        handler.addFilter(ProcessName(name))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries chatter at info (every httpx request); keep them to warnings and above.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
