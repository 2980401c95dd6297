"""The command line, run as a user would: a real process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def feedstream(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedstream", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_help_documents_every_flag() -> None:
    top = feedstream("--help")
    assert top.returncode == 0
    for command in ("serve", "demo", "check", "tail"):
        assert command in top.stdout
    serve = feedstream("serve", "--help")
    for flag in ("--config", "--host", "--port", "--log-level"):
        assert flag in serve.stdout
    check = feedstream("check", "--help")
    assert check.returncode == 0
    for flag in ("--config", "--json", "--log-level"):
        assert flag in check.stdout
    tail = feedstream("tail", "--help")
    assert tail.returncode == 0
    for flag in ("--url", "--feeds", "--after", "--backlog", "--json", "--timeout"):
        assert flag in tail.stdout
    bad = feedstream("tail", "--url", "ftp://example.org")
    assert bad.returncode == 2 and "not an http:// or https:// URL" in bad.stderr


def test_config_error_exits_2_naming_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text(
        '[server]\nport = 8080\n\n[[feeds]]\nid = "a"\nurl = "https://a.org/f"\ninterval = "often"\n'
    )
    result = feedstream("serve", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}:7: feeds[0].interval: must be a number of seconds" in result.stderr
    assert "Traceback" not in result.stderr
    missing = feedstream("serve", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_bad_port_flag_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text('[[feeds]]\nid = "a"\ntoken = "token-1234"\n')
    assert feedstream("serve", "--config", str(config), "--port", "70000").returncode == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_answers_and_sigterm_releases_a_waiting_long_poll(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[[feeds]]\nid = "a"\ntoken = "token-1234"\n'
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "feedstream", "serve", "--config", str(config), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                cursor = httpx.get(f"{base}/api/entries", timeout=1).json()["cursor"]
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.05)
        with httpx.Client(timeout=30) as client:
            # Park a long-poll from a thread, then signal the server.
            answers: list[httpx.Response] = []
            waiter = threading.Thread(
                target=lambda: answers.append(
                    client.get(f"{base}/api/entries", params={"after": cursor, "timeout": 25})
                )
            )
            waiter.start()
            time.sleep(0.5)
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            waiter.join(timeout=10)
            assert answers and answers[0].status_code == 200
            assert answers[0].json() == {"cursor": cursor, "entries": [], "reset": False}
            assert time.monotonic() - sent < 2  # answered at once, not at its timeout
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_gc_policies() -> None:
    script = (
        "import gc; from feedstream.server import tune_gc, GC_THRESHOLDS; "
        "default = gc.get_threshold(); tune_gc('default'); assert gc.get_threshold() == default; "
        "tune_gc('tuned'); assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0; "
        "assert gc.isenabled(); tune_gc('off'); assert not gc.isenabled(); print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert result.stdout.strip() == "ok", result.stderr
