"""``feedstream serve --workers N``: one ingest process and N deliver processes on one machine.

The supervisor binds every listening socket itself and hands each child its own, so the ports
stay open (connections wait in the backlog) while a child restarts:

* ``ingest`` (polling, pushes, WebSub, the SQLite log's writes) on ``server.host:ingest_port``
  (default ``port + 1``; with ``port = 0``, any free port);
* ``deliver-1`` .. ``deliver-N`` (the page and the listeners, following the log) on
  ``server.host:port``, each on its *own* socket with ``SO_REUSEPORT``: the kernel spreads new
  connections over the N sockets (hypercorn's own workers share one socket, which wakes every
  worker for each connection and balances badly).

Each child is ``python -m feedstream serve --config C --role R --fd FD --name NAME``. The ingest
process starts first; the deliver processes once it answers ``/healthz`` (it creates the
database). A child that exits is restarted after a short backoff that doubles while it keeps
failing, capped at :data:`RESTART_MAX`. SIGTERM or SIGINT is passed on to every child as SIGTERM
(each answers its parked long-polls and closes within its graceful timeout); whatever still runs
after :data:`STOP_TIMEOUT` is killed; the supervisor then exits 0. SIGHUP is passed on to every
child, which reloads the config file. Deliver processes run :data:`DELIVER_NICE` nicer than
the ingest process, so that pushes are taken in first when both want the same core.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from functools import partial

import httpx
import trio

from feedstream.core.config import Config

logger = logging.getLogger(__name__)

__all__ = [
    "DELIVER_NICE",
    "RESTART_MAX",
    "STOP_TIMEOUT",
    "Child",
    "Listeners",
    "child_command",
    "count_failures",
    "describe_exit",
    "ingest_port_for",
    "open_listeners",
    "restart_delay",
    "run",
    "supervise",
]

RESTART_MIN = 0.2  # seconds before the first restart of a child that exited
RESTART_MAX = 5.0  # the cap: a child that keeps dying is restarted at most this often
STABLE_AFTER = 10.0  # a child that ran this long starts its failure count afresh
STOP_TIMEOUT = 10.0  # after SIGTERM, children still running this much later are killed
LISTEN_BACKLOG = 4096  # as hypercorn's (feedstream.web.server)
HEALTH_TIMEOUT = 1.0  # per /healthz request while waiting for the ingest process
#: Deliver processes run this much nicer than ingest (and its parse workers): sharing cores
#: with deliver processes busy answering thousands of listeners, a push is taken in (parsed,
#: stored, acknowledged) first. Ingest needs a few percent of a core; delivery gets the rest.
DELIVER_NICE = 5


# -- the pure parts ---------------------------------------------------------------------------


def ingest_port_for(port: int, ingest_port: int | None) -> int:
    """The ingest process's port: ``ingest_port``, else ``port + 1``, else (port 0) any free one."""
    if ingest_port is not None:
        return ingest_port
    return port + 1 if port else 0


def restart_delay(failures: int) -> float:
    """Seconds to wait before restarting a child that has exited *failures* times in a row."""
    if failures <= 0:
        return 0.0
    return min(RESTART_MAX, RESTART_MIN * float(1 << min(failures - 1, 16)))


def count_failures(failures: int, uptime: float) -> int:
    """The failure count after a child exits having run *uptime* seconds."""
    return 1 if uptime >= STABLE_AFTER else failures + 1


def describe_exit(returncode: int) -> str:
    """``exit code 1`` or ``signal SIGKILL`` (a negative *returncode* is a signal)."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


@dataclass(frozen=True)
class Child:
    """One supervised process: its name (``ingest``, ``deliver-1``...), role, socket and port."""

    name: str
    role: str
    fd: int
    port: int


def child_command(
    child: Child,
    config_path: str,
    host: str,
    *,
    log_level: str,
    log_format: str,
    python: str = sys.executable,
) -> list[str]:
    """The command line that runs *child* on its inherited socket."""
    return [
        python, "-m", "feedstream", "serve",
        "--config", config_path,
        "--role", child.role,
        "--fd", str(child.fd),
        "--name", child.name,
        "--host", host,
        "--port", str(child.port),
        "--log-level", log_level,
        "--log-format", log_format,
    ]  # fmt: skip


def url(host: str, port: int) -> str:
    """``http://host:port``, brackets around an IPv6 address."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def local_host(host: str) -> str:
    """Where this machine reaches a server bound to *host* (a wildcard means loopback)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _lower_priority(pid: int, by: int) -> None:
    """Make *pid* *by* nicer than the supervisor (a lower priority needs no privilege)."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, min(os.getpriority(os.PRIO_PROCESS, 0) + by, 19))
    except OSError as exc:  # gone already (its exit is reported), or a restricted system
        logger.debug("could not lower the priority of pid %d: %s", pid, exc)


# -- sockets ----------------------------------------------------------------------------------


@dataclass
class Listeners:
    """The supervisor's listening sockets: one for ingest, one per deliver process."""

    ingest: socket.socket
    deliver: list[socket.socket]

    @property
    def port(self) -> int:
        return int(self.deliver[0].getsockname()[1])

    @property
    def ingest_port(self) -> int:
        return int(self.ingest.getsockname()[1])

    def close(self) -> None:
        for sock in (self.ingest, *self.deliver):
            sock.close()


def _listener(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def open_listeners(host: str, port: int, ingest_port: int | None, workers: int) -> Listeners:
    """Bind and listen: *workers* ``SO_REUSEPORT`` sockets on *port* (the first one resolves
    port 0, the others join it) and one on the ingest port (see :func:`ingest_port_for`)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    deliver: list[socket.socket] = []
    try:
        deliver.append(_listener(host, port, reuse_port=True))
        resolved = int(deliver[0].getsockname()[1])
        for _ in range(workers - 1):
            deliver.append(_listener(host, resolved, reuse_port=True))
        ingest = _listener(host, ingest_port_for(port, ingest_port), reuse_port=False)
    except BaseException:
        for sock in deliver:
            sock.close()
        raise
    return Listeners(ingest, deliver)


# -- running the children ---------------------------------------------------------------------


@dataclass
class Supervisor:
    config_path: str
    host: str
    log_level: str
    log_format: str
    children: list[Child]
    stopping: trio.Event = field(default_factory=trio.Event)
    running: dict[str, trio.Process] = field(default_factory=dict)

    def command(self, child: Child) -> list[str]:
        return child_command(
            child,
            self.config_path,
            self.host,
            log_level=self.log_level,
            log_format=self.log_format,
        )

    def send(self, signum: signal.Signals) -> None:
        for name, process in list(self.running.items()):
            if process.returncode is None:
                logger.debug("%s to %s (pid %d)", signum.name, name, process.pid)
                process.send_signal(signum)

    def stop(self) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            self.send(signal.SIGTERM)

    async def handle_signals(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    logger.info("received SIGHUP, passing it on to every process")
                    self.send(signal.SIGHUP)
                elif not self.stopping.is_set():
                    logger.info("received %s, stopping every process", name)
                    self.stop()
                else:
                    logger.warning("received %s again, killing every process", name)
                    self.send(signal.SIGKILL)

    async def enforce_stop(self) -> None:
        """Once stopping, kill whatever still runs after :data:`STOP_TIMEOUT`."""
        await self.stopping.wait()
        await trio.sleep(STOP_TIMEOUT)
        for name, process in list(self.running.items()):
            logger.warning("%s (pid %d) still running, killing it", name, process.pid)
        self.send(signal.SIGKILL)

    async def keep(self, child: Child) -> None:
        """Run *child*, restarting it whenever it exits, until the supervisor stops."""
        failures = 0
        while not self.stopping.is_set():
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                self.command(child),
                pass_fds=(child.fd,),
                process_group=0,  # Ctrl-C in a terminal reaches the supervisor only
            )
            self.running[child.name] = process
            if child.role == "deliver":
                _lower_priority(process.pid, DELIVER_NICE)
            logger.info("%s started (pid %d)", child.name, process.pid)
            if self.stopping.is_set():  # stopped while it was being started
                process.send_signal(signal.SIGTERM)
            try:
                await process.wait()
            finally:
                if process.returncode is None:  # cancelled: do not leave it behind
                    process.kill()
                    with trio.CancelScope(shield=True):
                        await process.wait()
                del self.running[child.name]
            uptime = trio.current_time() - started
            how = describe_exit(process.returncode or 0)
            if self.stopping.is_set():
                logger.info("%s (pid %d) stopped: %s", child.name, process.pid, how)
                return
            failures = count_failures(failures, uptime)
            delay = restart_delay(failures)
            logger.warning(
                "%s (pid %d) exited with %s after %.1f s; restarting in %.1f s",
                child.name, process.pid, how, uptime, delay,
            )  # fmt: skip
            with trio.move_on_after(delay):
                await self.stopping.wait()

    async def wait_healthy(self, base: str) -> None:
        """Return once *base*/healthz answers 200, or the supervisor stops."""
        waited = 0
        async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT) as client:
            while not self.stopping.is_set():
                try:
                    if (await client.get(f"{base}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                waited += 1
                if waited % 100 == 0:
                    logger.warning("still waiting for the ingest process at %s", base)
                with trio.move_on_after(0.1):
                    await self.stopping.wait()


async def supervise(
    config: Config,
    config_path: str,
    workers: int,
    *,
    log_level: str = "info",
    log_format: str = "text",
    task_status: trio.TaskStatus[tuple[int, int]] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run the ingest process and *workers* deliver processes until SIGTERM or SIGINT; 0."""
    server = config.server
    listeners = open_listeners(server.host, server.port, server.ingest_port, workers)
    try:
        ingest = Child("ingest", "ingest", listeners.ingest.fileno(), listeners.ingest_port)
        delivers = [
            Child(f"deliver-{index}", "deliver", sock.fileno(), listeners.port)
            for index, sock in enumerate(listeners.deliver, 1)
        ]
        supervisor = Supervisor(
            config_path, server.host, log_level, log_format, [ingest, *delivers]
        )
        deliver_url, ingest_url = url(server.host, listeners.port), url(server.host, ingest.port)
        print(
            f"feedstream: deliver on {deliver_url} ({workers} process{'es' if workers > 1 else ''}"
            f"), ingest on {ingest_url} (pushes, WebSub); supervisor pid {os.getpid()}",
            flush=True,
        )
        async with trio.open_nursery() as outer:
            await outer.start(supervisor.handle_signals)
            outer.start_soon(supervisor.enforce_stop)
            async with trio.open_nursery() as kids:
                kids.start_soon(supervisor.keep, ingest)
                await supervisor.wait_healthy(url(local_host(server.host), ingest.port))
                if not supervisor.stopping.is_set():
                    logger.info("ingest is up; starting %d deliver process(es)", workers)
                    for child in delivers:
                        kids.start_soon(supervisor.keep, child)
                task_status.started((listeners.port, listeners.ingest_port))
            outer.cancel_scope.cancel()
        logger.info("every process has stopped")
    finally:
        listeners.close()
    return 0


def run(config: Config, config_path: str, workers: int, log_level: str, log_format: str) -> int:
    """``trio.run`` of :func:`supervise` (what ``feedstream serve --workers`` calls)."""
    path = os.path.abspath(config_path)  # the children may resolve it elsewhere
    return trio.run(
        partial(supervise, config, path, workers, log_level=log_level, log_format=log_format)
    )
