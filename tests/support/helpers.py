"""Small shared test helpers (no fixtures: those live in conftest.py)."""

from __future__ import annotations

import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from feedstream.core.normalize import ENTRY_KEYS


async def inline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """An offload that runs the function right here (for tests on virtual time)."""
    return fn(*args, **kwargs)


def entry(feed: str, key: str, **fields: Any) -> dict[str, Any]:
    """A normalized entry with every key present."""
    data: dict[str, Any] = dict.fromkeys(ENTRY_KEYS)
    data.update(id=f"{feed}:{key}", feed=feed, title=key, tags=[], enclosures=[], via="push")
    data.update(matched=[], highlight=False)  # as the ingest path leaves an entry no rule matched
    data.update(fields)
    return data


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text as ``{(sample name, labels): value}``, read with prometheus-client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value; a missing series is a KeyError naming it."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        raise KeyError(f"no sample {name}{labels}")
    return samples[key]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that does not print every request."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """A whole answer: *status*, *headers*, ``Content-Length`` and *body*."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ThreadedServer(http.server.ThreadingHTTPServer):
    """A stdlib HTTP server on a free loopback port, serving from a thread of its own (for
    tests that talk to real feedstream processes synchronously)."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def address(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()


# -- feedstream serve --workers as a real process ---------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
STARTED = re.compile(r"deliver on (http://\S+) .*ingest on (http://\S+) ")


@dataclass
class Supervised:
    """A running ``feedstream serve --workers N``: the supervisor and where its children listen."""

    process: subprocess.Popen[bytes]
    deliver: str  # base URL of the deliver processes (one port, N sockets)
    ingest: str  # base URL of the ingest process
    log: Path  # the supervisor's and its children's output

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def descendants(pid: int) -> list[int]:
    """Every process below *pid* (Linux /proc), children first."""
    found: list[int] = []
    # A child is listed under the thread that started it (trio starts processes in a thread).
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            text = children.read_text()
        except OSError:
            continue
        for child in map(int, text.split()):
            found += [child, *descendants(child)]
    return found


def gone(pid: int) -> bool:
    """Whether *pid* has exited (a zombie nobody reaps counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def deliver_pids(base: str, count: int, timeout: float = 20) -> set[int]:
    """Open fresh connections to *base* until *count* different deliver processes answered."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < count:
        assert time.monotonic() < deadline, f"only deliver processes {pids} answered"
        try:
            status = httpx.get(f"{base}/api/status", timeout=1).json()
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        assert status["role"] == "deliver", status
        pids.add(int(status["pid"]))
    return pids


@contextmanager
def supervisor_process(
    config: Path, log: Path, *flags: str, workers: int = 2
) -> Iterator[Supervised]:
    """``feedstream serve --workers N --port 0`` as a real process, once every child answers;
    stopped (SIGTERM, then SIGKILL for it and whatever it started) if still running."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "feedstream", "serve", "--config", str(config), "--port", "0",
             "--workers", str(workers), *flags],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 20
        while not (found := STARTED.search(log.read_text(errors="replace"))):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the supervisor printed no start line"
            time.sleep(0.02)
        supervised = Supervised(process, found[1], found[2], log)
        deliver_pids(supervised.deliver, workers)
        assert httpx.get(f"{supervised.ingest}/healthz", timeout=5).status_code == 200
        started.update(descendants(process.pid))
        yield supervised
    finally:
        started.update(descendants(process.pid))
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in started:
            if not gone(pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
