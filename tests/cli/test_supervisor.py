"""``feedstream serve --workers N``: the supervisor's pure parts, then real processes on loopback."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from feedstream.cli import supervisor
from feedstream.cli.logs import configure
from feedstream.cli.supervisor import (
    DELIVER_NICE,
    RESTART_MAX,
    Child,
    child_command,
    count_failures,
    describe_exit,
    ingest_port_for,
    local_host,
    open_listeners,
    restart_delay,
    url,
)
from tests.cli.test_cli import feedstream
from tests.support.helpers import (
    Supervised,
    deliver_pids,
    descendants,
    gone,
    supervisor_process,
)
from tests.support.redis import RedisServer, redis_server

AUTH = {"Authorization": "Bearer token-1234", "Content-Type": "application/feed+json"}


# -- the pure parts ---------------------------------------------------------------------------


def test_restart_backoff_doubles_while_failing_and_is_capped() -> None:
    delays = [restart_delay(failures) for failures in range(1, 10)]
    assert delays[:4] == [0.2, 0.4, 0.8, 1.6]
    assert delays == sorted(delays) and max(delays) == RESTART_MAX == delays[-1]
    assert restart_delay(10_000) == RESTART_MAX
    assert restart_delay(0) == 0.0
    assert count_failures(3, uptime=0.5) == 4  # dying at once: back off further
    assert count_failures(7, uptime=supervisor.STABLE_AFTER) == 1  # ran a while: start afresh


def test_exit_descriptions_name_the_code_or_the_signal() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(2) == "exit code 2"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_exit(-signal.SIGTERM) == "signal SIGTERM"


def test_ports_urls_and_child_command_lines() -> None:
    assert ingest_port_for(8080, None) == 8081
    assert ingest_port_for(8080, 9000) == 9000
    assert ingest_port_for(0, None) == 0  # any free port, not port 1
    assert url("127.0.0.1", 8080) == "http://127.0.0.1:8080"
    assert url("::1", 8080) == "http://[::1]:8080"
    assert local_host("0.0.0.0") == "127.0.0.1" and local_host("::") == "::1"
    assert local_host("10.0.0.5") == "10.0.0.5"
    command = child_command(
        Child("deliver-2", "deliver", 7, 8080),
        "/etc/feeds.toml",
        "127.0.0.1",
        log_level="debug",
        log_format="json",
        python="/usr/bin/python3",
    )
    assert command == [
        "/usr/bin/python3", "-m", "feedstream", "serve", "--config", "/etc/feeds.toml",
        "--role", "deliver", "--fd", "7", "--name", "deliver-2", "--host", "127.0.0.1",
        "--port", "8080", "--log-level", "debug", "--log-format", "json",
    ]  # fmt: skip


def test_listeners_share_one_port_with_reuseport_and_ingest_has_its_own() -> None:
    listeners = open_listeners("127.0.0.1", 0, None, 3)
    try:
        assert len(listeners.deliver) == 3 and listeners.port != 0
        assert {sock.getsockname()[1] for sock in listeners.deliver} == {listeners.port}
        for sock in listeners.deliver:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            assert sock.get_inheritable()
        assert listeners.ingest_port not in (0, listeners.port)
        for port in (listeners.port, listeners.ingest_port):  # listening already
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        # The ingest port is taken: opening fails (and leaves nothing bound on the deliver port).
        with pytest.raises(OSError):
            open_listeners("127.0.0.1", 0, listeners.ingest_port, 2)
    finally:
        listeners.close()
    with pytest.raises(ValueError):
        open_listeners("127.0.0.1", 0, None, 0)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_log_lines_name_the_process() -> None:
    out = io.StringIO()
    configure("info", "json", out, name="deliver-1")
    logging.getLogger("feedstream.test").info("hello")
    assert json.loads(out.getvalue())["process"] == "deliver-1"
    out = io.StringIO()
    configure("info", "text", out, name="ingest")
    logging.getLogger("feedstream.test").info("hello")
    assert " [ingest] feedstream.test: hello" in out.getvalue()
    out = io.StringIO()
    configure("info", "json", out)  # a lone process: no field
    logging.getLogger("feedstream.test").info("hello")
    assert "process" not in json.loads(out.getvalue())


def test_workers_with_a_single_role_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text('[[feeds]]\nid = "a"\ntoken = "token-1234"\n')
    result = feedstream("serve", "--config", str(config), "--workers", "2", "--role", "ingest")
    assert result.returncode == 2 and "--workers: needs role all" in result.stderr
    assert feedstream("serve", "--config", str(config), "--workers", "65").returncode == 2


# -- real processes -----------------------------------------------------------------------------


def write_config(tmp_path: Path, *feeds: str) -> Path:
    config = tmp_path / "feeds.toml"
    text = f'[server]\ndata_dir = "{tmp_path / "data"}"\n'
    for feed in feeds:
        text += f'[[feeds]]\nid = "{feed}"\ntoken = "token-1234"\n'
    config.write_text(text)
    return config


def item(key: str) -> bytes:
    return json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "T",
            "items": [{"id": key, "title": f"entry {key}", "content_text": "hi"}],
        }
    ).encode()


def push(sup: Supervised, feed: str, key: str) -> httpx.Response:
    return httpx.post(f"{sup.ingest}/api/push/{feed}", content=item(key), headers=AUTH, timeout=10)


def pinned(base: str, per_pid: int, processes: int = 2) -> dict[int, list[httpx.Client]]:
    """Keep-alive clients, *per_pid* on each of *processes* deliver processes (a connection
    stays with the process that accepted it)."""
    found: dict[int, list[httpx.Client]] = {}
    deadline = time.monotonic() + 20
    while len(found) < processes or any(len(c) < per_pid for c in found.values()):
        assert time.monotonic() < deadline, f"could not pin clients: {found}"
        client = httpx.Client(base_url=base, timeout=30)
        pid = int(client.get("/api/status").json()["pid"])
        if len(found.get(pid, [])) < per_pid:
            found.setdefault(pid, []).append(client)
        else:
            client.close()
    return found


def close_all(clients: dict[int, list[httpx.Client]]) -> None:
    for group in clients.values():
        for client in group:
            client.close()


def waiting(client: httpx.Client, at_least: int, timeout: float = 10) -> None:
    """Until the process behind *client* counts *at_least* parked listeners."""
    deadline = time.monotonic() + timeout
    while client.get("/api/status").json()["waiting"] < at_least:
        assert time.monotonic() < deadline, "the long-polls never parked"
        time.sleep(0.02)


def test_a_push_reaches_long_polls_on_both_deliver_processes_and_cursors_move_between_them(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, "a")
    with supervisor_process(config, tmp_path / "out.log", "--log-format", "json") as sup:
        clients = pinned(sup.deliver, per_pid=2)
        try:
            (pid_a, (poll_a, status_a)), (pid_b, (poll_b, status_b)) = clients.items()
            head = poll_a.get("/api/entries").json()["cursor"]
            answers: dict[int, httpx.Response] = {}

            def listen(pid: int, client: httpx.Client) -> None:
                answers[pid] = client.get("/api/entries", params={"after": head, "timeout": 20})

            threads = [
                threading.Thread(target=listen, args=(pid, poll))
                for pid, poll in ((pid_a, poll_a), (pid_b, poll_b))
            ]
            for thread in threads:
                thread.start()
            waiting(status_a, 1)
            waiting(status_b, 1)
            assert push(sup, "a", "1").status_code == 202
            for thread in threads:
                thread.join(timeout=10)
            assert set(answers) == {pid_a, pid_b}
            for answer in answers.values():
                assert [e["id"] for e in answer.json()["entries"]] == ["a:1"]
            # A cursor handed out by one process resumes on the other: nothing lost or repeated.
            cursor = answers[pid_a].json()["cursor"]
            assert answers[pid_b].json()["cursor"] == cursor
            for key in ("2", "3"):
                assert push(sup, "a", key).status_code == 202
            seen: list[str] = []
            deadline = time.monotonic() + 10
            while len(seen) < 2:
                assert time.monotonic() < deadline, seen
                page = poll_b.get("/api/entries", params={"after": cursor, "timeout": 5}).json()
                seen += [e["id"] for e in page["entries"]]
                cursor = page["cursor"]
            assert seen == ["a:2", "a:3"]
            while status_a.get("/api/status").json()["cursor"] != cursor:  # A follows the log
                assert time.monotonic() < deadline, "the other process never caught up"
                time.sleep(0.02)
            back = poll_a.get("/api/entries", params={"after": cursor, "timeout": 0}).json()
            assert back == {"cursor": cursor, "entries": [], "reset": False}
            # Ingest runs at the supervisor's priority, the deliver processes DELIVER_NICE below.
            ingest_pid = int(httpx.get(f"{sup.ingest}/api/status").json()["pid"])
            base = os.getpriority(os.PRIO_PROCESS, sup.process.pid)
            assert os.getpriority(os.PRIO_PROCESS, ingest_pid) == base
            for pid in (pid_a, pid_b):
                assert os.getpriority(os.PRIO_PROCESS, pid) == min(base + DELIVER_NICE, 19)
        finally:
            close_all(clients)
    events = [json.loads(line) for line in sup.output().splitlines() if line.startswith("{")]
    processes = {e.get("process") for e in events}
    assert processes == {"supervisor", "ingest", "deliver-1", "deliver-2"}, sup.output()


class Follower(threading.Thread):
    """A client that long-polls by cursor, reconnecting to the same URL when its server goes."""

    def __init__(self, base: str, client: httpx.Client, cursor: str, want: int) -> None:
        super().__init__(daemon=True)
        self.base, self.client, self.cursor, self.want = base, client, cursor, want
        self.seen: list[str] = []
        self.reconnects = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while len(self.seen) < self.want and not self.stop.is_set():
            params: dict[str, str | int] = {"after": self.cursor, "timeout": 5}
            try:
                page = self.client.get("/api/entries", params=params).json()
            except httpx.TransportError:
                self.client.close()
                self.client = httpx.Client(base_url=self.base, timeout=30)
                self.reconnects += 1
                time.sleep(0.05)
                continue
            assert page["reset"] is False
            self.seen += [entry["id"] for entry in page["entries"]]
            self.cursor = page["cursor"]
        self.client.close()


def test_a_killed_deliver_process_is_restarted_and_its_clients_resume_by_cursor(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, "a")
    with supervisor_process(config, tmp_path / "out.log") as sup:
        clients = pinned(sup.deliver, per_pid=3)
        (pid_a, [*polls_a, status_a]), (pid_b, [*polls_b, status_b]) = clients.items()
        head = status_a.get("/api/entries").json()["cursor"]
        keys = [str(n) for n in range(1, 7)]
        followers = [Follower(sup.deliver, c, head, len(keys)) for c in polls_a + polls_b]
        try:
            for follower in followers:
                follower.start()
            waiting(status_a, 2)
            waiting(status_b, 2)
            for key in keys[:2]:
                assert push(sup, "a", key).status_code == 202
            deadline = time.monotonic() + 10
            while any(len(f.seen) < 2 for f in followers):
                assert time.monotonic() < deadline, [f.seen for f in followers]
                time.sleep(0.02)
            waiting(status_a, 2)  # parked again
            status_a.close()
            signal_sent = time.monotonic()
            os.kill(pid_a, signal.SIGKILL)
            assert push(sup, "a", keys[2]).status_code == 202  # while it is down
            # The supervisor starts a new deliver process on the same port.
            now = deliver_pids(sup.deliver, 2, timeout=15)
            assert pid_a not in now and pid_b in now
            assert time.monotonic() - signal_sent < 10
            for key in keys[3:]:
                assert push(sup, "a", key).status_code == 202
            for follower in followers:
                follower.join(timeout=20)
            expected = [f"a:{key}" for key in keys]
            for follower in followers:
                assert follower.seen == expected  # each entry exactly once, in order
            assert sum(f.reconnects for f in followers[: len(polls_a)]) >= len(polls_a)
        finally:
            for follower in followers:
                follower.stop.set()
            close_all(clients)
    output = sup.output()
    assert f"(pid {pid_a}) exited with signal SIGKILL" in output, output


def test_sighup_reaches_every_child(tmp_path: Path) -> None:
    config = write_config(tmp_path, "a")
    with supervisor_process(config, tmp_path / "out.log") as sup:
        clients = pinned(sup.deliver, per_pid=1)
        try:
            assert push(sup, "b", "1").status_code == 404
            write_config(tmp_path, "a", "b")
            sup.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            for [client] in clients.values():  # each deliver process reloaded
                while [f["id"] for f in client.get("/api/feeds").json()] != ["a", "b"]:
                    assert time.monotonic() < deadline, "a deliver process did not reload"
                    time.sleep(0.05)
            while (answer := push(sup, "b", "1")).status_code == 404:  # and the ingest one
                assert time.monotonic() < deadline, "the ingest process did not reload"
                time.sleep(0.05)
            assert answer.status_code == 202
            for [client] in clients.values():
                page = client.get("/api/entries", params={"feeds": "b"}).json()
                while not page["entries"]:
                    assert time.monotonic() < deadline, "the pushed entry never arrived"
                    time.sleep(0.05)
                    page = client.get("/api/entries", params={"feeds": "b"}).json()
                assert [e["id"] for e in page["entries"]] == ["b:1"]
        finally:
            close_all(clients)
        assert sup.process.poll() is None  # SIGHUP stops nothing
    output = sup.output()
    assert "received SIGHUP, passing it on" in output
    assert output.count("reload: added b") == 3, output  # ingest and both deliver processes


def test_sigterm_stops_everything_answering_parked_long_polls(tmp_path: Path) -> None:
    config = write_config(tmp_path, "a")
    with supervisor_process(config, tmp_path / "out.log") as sup:
        clients = pinned(sup.deliver, per_pid=2)
        try:
            children = descendants(sup.process.pid)
            assert len(children) >= 3, children  # ingest, two deliver (and parse workers)
            head = next(iter(clients.values()))[0].get("/api/entries").json()["cursor"]
            answers: list[httpx.Response] = []
            threads = [
                threading.Thread(
                    target=lambda c=poll: answers.append(
                        c.get("/api/entries", params={"after": head, "timeout": 25})
                    )
                )
                for poll, _ in clients.values()
            ]
            for thread in threads:
                thread.start()
            for _, status in clients.values():
                waiting(status, 1)
            sent = time.monotonic()
            sup.process.send_signal(signal.SIGTERM)
            for thread in threads:
                thread.join(timeout=10)
            assert len(answers) == 2 and time.monotonic() - sent < 3  # answered at once
            for answer in answers:
                assert answer.status_code == 200 and answer.json()["entries"] == []
            assert sup.process.wait(timeout=10) == 0
            assert time.monotonic() - sent < 5
            deadline = time.monotonic() + 5
            while not all(gone(pid) for pid in children):
                assert time.monotonic() < deadline, [p for p in children if not gone(p)]
                time.sleep(0.05)
        finally:
            close_all(clients)
    output = sup.output()
    assert "received SIGTERM, stopping every process" in output
    assert "every process has stopped" in output and "killing" not in output


__all__ = ["redis_server"]  # the fixture


def test_workers_over_redis_deliver_a_push_to_both_processes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    config = write_config(tmp_path, "a")
    config.write_text(
        config.read_text().replace("[server]\n", f'[server]\nlog = "{redis_server.url}"\n')
    )
    with supervisor_process(config, tmp_path / "out.log") as sup:
        # Per process: one client for the long-poll, one for its status (a request made while
        # the long-poll is in flight would open a new connection, maybe to the other process).
        clients = pinned(sup.deliver, per_pid=2)
        try:
            polls = {pid: group[0] for pid, group in clients.items()}
            heads = {pid: poll.get("/api/entries").json()["cursor"] for pid, poll in polls.items()}
            answers: dict[int, httpx.Response] = {}

            def listen(pid: int) -> None:
                params = {"after": heads[pid], "timeout": 20}
                answers[pid] = polls[pid].get("/api/entries", params=params)

            threads = [threading.Thread(target=listen, args=(pid,)) for pid in polls]
            for thread in threads:
                thread.start()
            for group in clients.values():
                waiting(group[1], 1)
            assert answers == {}, "a long-poll was answered before the push"
            assert push(sup, "a", "1").status_code == 202
            for thread in threads:
                thread.join(timeout=15)
            assert {pid: [e["id"] for e in a.json()["entries"]] for pid, a in answers.items()} == {
                pid: ["a:1"] for pid in polls
            }
            assert not (tmp_path / "data" / "feedstream.sqlite3").exists()  # all in Redis
        finally:
            close_all(clients)
