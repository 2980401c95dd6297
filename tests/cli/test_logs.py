"""Log output: text with the feed id in the message, or one JSON object per line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from feedstream.cli.logs import configure

logger = logging.getLogger("feedstream.test")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_feed_and_keep_tracebacks_inside_the_event() -> None:
    out = io.StringIO()
    configure("info", "json", out)
    logger.info("feed %s: %d new entries", "news", 3, extra={"feed": "news"})
    logger.debug("not shown at info")
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        logger.exception("feed %s: unexpected error", "news", extra={"feed": "news"})
    logger.warning("host %s paused", "a.org:443", extra={"host": "a.org:443"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first == {
        "time": first["time"],
        "level": "info",
        "logger": "feedstream.test",
        "message": "feed news: 3 new entries",
        "feed": "news",
    }
    assert first["time"].endswith("Z") and len(first["time"]) == len("2026-01-01T00:00:00.000Z")
    assert second["level"] == "error" and second["feed"] == "news"
    assert "ValueError: broken\nacross lines" in second["exception"]
    assert third["host"] == "a.org:443" and "feed" not in third


def test_text_lines_and_quiet_libraries() -> None:
    out = io.StringIO()
    configure("debug", "text", out)
    logger.info("feed %s: gone (410)", "old", extra={"feed": "old"})
    logging.getLogger("httpx").info("HTTP Request: GET ...")
    [line] = out.getvalue().splitlines()
    assert line.endswith("INFO    feedstream.test: feed old: gone (410)")
    with pytest.raises(ValueError, match="text, json"):
        configure("info", "xml")
