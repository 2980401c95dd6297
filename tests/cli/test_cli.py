"""The command line, run as a user would: a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]


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


@contextmanager
def server_process(config: Path, port: int, *flags: str) -> Iterator[subprocess.Popen[str]]:
    """``feedstream serve`` as a real process, up and answering; killed if still running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "feedstream", "serve", "--config", str(config), "--port", str(port),
         *flags],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def park(
    client: httpx.Client, base: str, cursor: str
) -> tuple[threading.Thread, list[httpx.Response]]:
    """A long-poll waiting in a thread; returns once the server counts it as waiting."""
    answers: list[httpx.Response] = []
    params = {"after": cursor, "timeout": 25}
    waiter = threading.Thread(
        target=lambda: answers.append(client.get(f"{base}/api/entries", params=params))
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while httpx.get(f"{base}/api/status").json()["waiting"] < 1:
        assert time.monotonic() < deadline, "the long-poll never parked"
        time.sleep(0.02)
    return waiter, answers


def test_serve_answers_and_sigterm_releases_a_waiting_long_poll(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[[feeds]]\nid = "a"\ntoken = "token-1234"\n'
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with server_process(config, port) as process, httpx.Client(timeout=30) as client:
        cursor = client.get(f"{base}/api/entries").json()["cursor"]
        waiter, answers = park(client, base, cursor)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        waiter.join(timeout=10)
        assert answers and answers[0].status_code == 200
        assert answers[0].json() == {"cursor": cursor, "entries": [], "reset": False}
        assert answers[0].headers["connection"] == "close"  # do not re-send on this one
        assert time.monotonic() - sent < 2  # answered at once, not at its timeout
        assert process.wait(timeout=10) == 0


def test_sighup_adds_and_removes_feeds_while_a_long_poll_stays_connected(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    head = f'[server]\ndata_dir = "{tmp_path / "data"}"\n'
    config.write_text(head + '[[feeds]]\nid = "a"\ntoken = "token-1234"\n')
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer token-1234", "Content-Type": "application/feed+json"}
    item = b'{"version": "https://jsonfeed.org/version/1.1", "title": "B", "items": [{"id": "b1", "title": "hello from b", "content_text": "hi"}]}'
    with (
        server_process(config, port, "--log-format", "json") as process,
        httpx.Client(timeout=30) as client,
    ):
        cursor = client.get(f"{base}/api/entries").json()["cursor"]
        waiter, answers = park(client, base, cursor)
        config.write_text(head + '[[feeds]]\nid = "b"\ntoken = "token-1234"\n')
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while [f["id"] for f in client.get(f"{base}/api/feeds").json()] != ["b"]:
            assert time.monotonic() < deadline, "the reload never happened"
            time.sleep(0.02)
        assert answers == [] and client.get(f"{base}/api/status").json()["waiting"] == 1
        assert client.post(f"{base}/api/push/a", content=item, headers=auth).status_code == 404
        assert client.post(f"{base}/api/push/b", content=item, headers=auth).status_code == 202
        waiter.join(timeout=10)
        [answer] = answers
        assert [e["title"] for e in answer.json()["entries"]] == ["hello from b"]
        config.write_text(head + "[[feeds]]\nid = 'b'\ninterval = 'often'\n")
        process.send_signal(signal.SIGHUP)  # a broken config is logged and changes nothing
        deadline = time.monotonic() + 10
        failed = 'feedstream_config_reloads_total{result="error"} 1.0'
        while failed not in client.get(f"{base}/metrics").text:
            assert time.monotonic() < deadline, "the second reload never happened"
            time.sleep(0.02)
        assert [f["id"] for f in client.get(f"{base}/api/feeds").json()] == ["b"]
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=10)[0]
    events = [json.loads(line) for line in output.splitlines()]  # every line is one JSON event
    messages = [e["message"] for e in events]
    assert any(m.startswith("reload: added b, removed a") for m in messages), messages
    assert any(
        e["level"] == "error" and "feeds.toml:" in e["message"] and "interval" in e["message"]
        for e in events
    ), messages
    pushed = [e for e in events if e.get("feed") == "b" and "push accepted" in e["message"]]
    assert pushed and pushed[0]["logger"] == "feedstream.service.runtime"
