"""A hostile HTTP/1.1 server on loopback that misbehaves at the socket level.

:class:`HostileServer` is a raw ``trio.serve_tcp`` server on ``127.0.0.1:0``. Each path is
mapped to a *behaviour*: an async function that gets the connection after the request head was
read and does whatever it likes with it. The factories below cover the usual attacks on a
crawler: answering one byte a second (:func:`dribble`), never answering (:func:`silent`),
sending the head and stalling (:func:`stall`), an endless body (:func:`endless`), endless
headers (:func:`endless_headers`), raw bytes that are not HTTP (:func:`raw`), plus ordinary
responses (:func:`reply`) for the well-formed-but-evil cases (bombs, redirects, 429...).

Every connection serves one request and is closed afterwards (``Connection: close``), so a hit
is a connection. Each :class:`Hit` records when the request came and when the client went away
(``closed``), which is how the tests see that a cut-off fetch really released its socket.

Start it in a nursery (the pytest-trio ``nursery`` fixture cancels it at the end)::

    server = HostileServer()
    await nursery.start(server.run)
    server.routes["/slow"] = dribble(rss_document, every=1.0)
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

__all__ = [
    "Behaviour",
    "Connection",
    "Hit",
    "HostileServer",
    "dribble",
    "endless",
    "endless_headers",
    "head",
    "raw",
    "reply",
    "sequence",
    "silent",
    "stall",
]

MAX_REQUEST_HEAD = 64 * 1024
CHUNK = b"\0" * 65536  # sent again and again by endless(): no allocation per send

_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    404: "Not Found",
    410: "Gone",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Hit:
    method: str
    path: str  # without the query
    target: str  # as sent, query included
    headers: dict[str, str]  # lower-case names
    time: float  # trio time the request head was read
    closed: float | None = None  # trio time the client was seen gone (or the server closed)
    sent: int = 0  # bytes written to the client


class Connection:
    """What a behaviour gets: the stream, the request and a byte counter."""

    def __init__(self, stream: trio.SocketStream, hit: Hit) -> None:
        self.stream = stream
        self.hit = hit

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)
        self.hit.sent += len(data)

    async def wait_closed(self) -> None:
        """Read (and drop) whatever the client sends until it closes the connection."""
        while await self.stream.receive_some(65536):
            pass

    async def idle(self, seconds: float) -> bool:
        """Wait *seconds*; False as soon as the client closes the connection."""
        with trio.move_on_after(seconds):
            await self.wait_closed()
            return False
        return True


Behaviour = Callable[[Connection], Awaitable[None]]


class HostileServer:
    def __init__(self) -> None:
        self.routes: dict[str, Behaviour] = {}
        self.hits: list[Hit] = []
        self.port = 0
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """The host key feedstream's HostGate uses for this server (``fetch.host_of``)."""
        return f"127.0.0.1:{self.port}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=256)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def hits_for(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    async def wait_for_hits(self, path: str, count: int = 1) -> list[Hit]:
        """Wait until *path* was requested *count* times (bound it with a cancel scope)."""
        while len(hits := self.hits_for(path)) < count:
            await self._changed.wait()
        return hits

    async def wait_closed(self, hit: Hit) -> float:
        """Wait until the client of *hit* went away; return when (bound it with a cancel scope)."""
        while hit.closed is None:
            await self._changed.wait()
        return hit.closed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _handle(self, stream: trio.SocketStream) -> None:
        hit: Hit | None = None
        try:
            request = await _read_head(stream)
            if request is None:
                return
            hit = request
            self.hits.append(hit)
            self._notify()
            behaviour = self.routes.get(hit.path, reply(404, b"not found"))
            await behaviour(Connection(stream, hit))
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass  # the client hung up on us: that is what the tests want to see
        finally:
            if hit is not None:
                hit.closed = trio.current_time()
                self._notify()
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()


async def _read_head(stream: trio.SocketStream) -> Hit | None:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data or len(buffer) > MAX_REQUEST_HEAD:
            return None
        buffer += data
    lines = buffer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    path = target.split("?", 1)[0]
    return Hit(method, path, target, headers, trio.current_time())


def head(
    status: int = 200, headers: dict[str, str] | None = None, *, length: int | None = None
) -> bytes:
    """A response head; ``Content-Length`` only when *length* is given (else close-delimited)."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Whatever')}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if length is not None and not any(n.lower() == "content-length" for n in headers or {}):
        lines.append(f"Content-Length: {length}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --- behaviours ------------------------------------------------------------------------------


def reply(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> Behaviour:
    """An ordinary response, head and body in one write."""

    async def behaviour(conn: Connection) -> None:
        await conn.send(head(status, headers, length=len(body)) + body)

    return behaviour


def dribble(
    body: bytes,
    *,
    every: float = 1.0,
    headers: dict[str, str] | None = None,
    declare_length: bool = True,
) -> Behaviour:
    """Slowloris: the head at once, then the body one byte every *every* seconds."""

    async def behaviour(conn: Connection) -> None:
        await conn.send(head(200, headers, length=len(body) if declare_length else None))
        for index in range(len(body)):
            if not await conn.idle(every):
                return
            await conn.send(body[index : index + 1])

    return behaviour


def silent() -> Behaviour:
    """Accept, read the request, never answer; return when the client gives up."""
    return Connection.wait_closed


def stall(
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    length: int = 100_000,
    first: bytes = b"",
) -> Behaviour:
    """The head (promising *length* bytes) and *first* bytes of the body, then nothing."""

    async def behaviour(conn: Connection) -> None:
        await conn.send(head(status, headers, length=length) + first)
        await conn.wait_closed()

    return behaviour


def endless(
    headers: dict[str, str] | None = None,
    *,
    length: int | None = None,
    limit: float = math.inf,
) -> Behaviour:
    """A body that never ends (or ends after *limit* bytes), sent as fast as the client reads.

    Without *length* it is close-delimited (no Content-Length); with it, that length is
    declared, truthfully or not.
    """

    async def behaviour(conn: Connection) -> None:
        await conn.send(head(200, headers, length=length))
        sent = 0
        while sent < limit:
            await conn.send(CHUNK)
            sent += len(CHUNK)

    return behaviour


def endless_headers() -> Behaviour:
    """A status line followed by header lines that never end."""

    async def behaviour(conn: Connection) -> None:
        await conn.send(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Padding: " + b"a" * 1000 + b"\r\n"
        while True:
            await conn.send(line * 64)

    return behaviour


def raw(data: bytes, *, then_wait: bool = False) -> Behaviour:
    """Exactly *data* on the wire (HTTP or not), then close (or wait for the client to)."""

    async def behaviour(conn: Connection) -> None:
        await conn.send(data)
        if then_wait:
            await conn.wait_closed()

    return behaviour


def sequence(*behaviours: Behaviour) -> Behaviour:
    """The first request gets the first behaviour, the next the next...; the last one repeats."""
    calls = [0]

    async def behaviour(conn: Connection) -> None:
        index = min(calls[0], len(behaviours) - 1)
        calls[0] += 1
        await behaviours[index](conn)

    return behaviour
