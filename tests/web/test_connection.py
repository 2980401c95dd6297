"""feedstream's connection loop (feedstream.web.connection and .worker) on loopback, edge cases.

Each test runs :func:`serve_connections` with a small raw ASGI app and talks to it over a real
TCP socket, so what is checked is what a client sees on the wire.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import logging
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import pytest
import trio
from hypercorn.events import Updated
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream

from feedstream.web import connection as connection_module
from feedstream.web.asgi import AFTER_ANSWER
from feedstream.web.connection import ServerConfig
from feedstream.web.worker import serve_connections

HEAD = (
    b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
    b"Accept: application/json\r\nAccept-Language: en-GB,en;q=0.9\r\n\r\n"
)


class App:
    """Answers ``/<text>`` with *text*; ``/park`` waits until released; ``/big`` streams 8 MiB;
    ``/boom`` raises; ``POST`` echoes the body's length. Records every request path."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.scopes: list[dict[str, Any]] = []
        self.release = trio.Event()
        self.parked = 0
        self.finished: list[str] = []
        self.changed = trio.Event()
        self.held = 0  # answers of /held whose task waits in the AFTER_ANSWER hook
        self.unhold = trio.Event()

    async def until(self, condition: Any) -> None:
        with trio.fail_after(5):
            while not condition():
                await self.changed.wait()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].replace("lifespan.", "lifespan.") + ".complete"
                await send({"type": kind})
                if message["type"] == "lifespan.shutdown":
                    return
        path = scope["path"]
        self.paths.append(path)
        # What the app is given, ports left out (each test server and client has its own).
        self.scopes.append({**scope, "client": scope["client"][0], "server": scope["server"][0]})
        if scope["method"] == "POST" and path == "/linger":
            # Answers, then keeps running a while: its ASGI call ends after the client has
            # sent its next request on the same connection.
            await self._answer(send, b"lingering")
            await trio.sleep(0.1)
        elif path == "/slow":  # yields a while before answering
            await trio.sleep(0.3)
            await self._answer(send, b"slow")
        elif scope["method"] == "POST":
            size = 0
            while True:
                message = await receive()
                size += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
            await self._answer(send, str(size).encode())
        elif path == "/park":
            self.parked += 1
            self._changed()
            await self.release.wait()
            await self._answer(send, b"released")
        elif path == "/big":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            chunk = b"x" * 65536
            try:
                for _ in range(128):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                self.finished.append(path)
                self._changed()
        elif path == "/held":  # answers, then its task waits in the AFTER_ANSWER hook
            token = AFTER_ANSWER.set(self._hold)
            try:
                await self._answer(send, b"held")
            finally:
                AFTER_ANSWER.reset(token)
        elif path == "/large":  # a whole answer of 256 KiB with its length
            await self._answer(send, bytes(range(256)) * 1024)
        elif path == "/boom":
            raise RuntimeError("boom")
        elif path == "/close-header":  # the app itself ends the connection (as when draining)
            headers = [(b"content-length", b"5"), (b"connection", b"close")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"close"})
        elif path == "/chunked":  # no content-length: h11 frames it
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"chunked"})
        elif path == "/nothing":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/liar":  # declares more than it sends
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"10")],
                }
            )
            await send({"type": "http.response.body", "body": b"ok"})
        elif path == "/inject":  # a header value with a line break in it
            headers = [(b"x-note", b"a\r\nset-cookie: evil=1"), (b"content-length", b"2")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"ok"})
        else:
            await self._answer(send, path[1:].encode())

    async def _hold(self) -> None:
        self.held += 1
        self._changed()
        with trio.CancelScope(shield=True):
            await self.unhold.wait()

    async def _answer(self, send: Any, body: bytes) -> None:
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serving(
    app: App, *, keep_alive: float = 75.0, header_timeout: float = 20.0, graceful: float = 3.0
) -> AsyncIterator[tuple[int, trio.Event]]:
    config = ServerConfig()
    config.bind = ["127.0.0.1:0"]
    config.keep_alive_timeout = keep_alive
    config.graceful_timeout = graceful
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(
            lambda task_status: serve_connections(
                app,
                config,
                shutdown_trigger=stop.wait,
                header_timeout=header_timeout,
                task_status=task_status,
            )
        )
        yield int(url.rsplit(":", 1)[1]), stop
        stop.set()


async def connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def read_answers(stream: trio.SocketStream, count: int) -> list[h11.Response | bytes]:
    """*count* whole answers (status line + body) parsed with h11, as [response, body, ...]."""
    client = h11.Connection(h11.CLIENT)
    out: list[h11.Response | bytes] = []
    body = b""

    def expect() -> None:  # what was sent is already on the wire: keep h11's states in step
        client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())

    expect()
    while len(out) < 2 * count:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            out.append(event)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append(body)
            body = b""
            if len(out) < 2 * count:
                client.start_next_cycle()
                expect()
        else:
            raise AssertionError(f"closed or paused before the answers: {event}")
    return out


async def closed_within(stream: trio.SocketStream, seconds: float) -> bytes:
    """Everything the server sends until it closes, which must happen within *seconds*."""
    data = b""
    with trio.fail_after(seconds):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


def test_hypercorn_internals() -> None:
    """What feedstream.web.connection relies on in hypercorn (pinned in pyproject.toml).

    When this fails, hypercorn changed underneath the connection loop: read the module's
    docstring and hypercorn's protocol/h11.py and http_stream.py before changing the pin.
    """
    installed = importlib.metadata.version("hypercorn")
    version = tuple(int(part) for part in re.findall(r"\d+", installed)[:2])
    assert (0, 17) <= version < (0, 19), installed
    parameters = list(inspect.signature(H11Protocol).parameters)
    assert parameters == [
        "app",
        "config",
        "context",
        "task_group",
        "connection_state",
        "ssl",
        "client",
        "server",
        "send",
    ]
    init = inspect.getsource(H11Protocol.__init__)
    assert "self.can_read = context.event_class()" in init
    events = inspect.getsource(H11Protocol._handle_events)
    assert re.search(
        r"h11\.PAUSED:\s+await self\.can_read\.clear\(\)\s+await self\.can_read\.wait\(\)", events
    )
    assert "Updated(idle=False)" in events
    recycle = inspect.getsource(H11Protocol._maybe_recycle)
    assert "self.context.terminated.is_set()" in recycle and "Updated(idle=True)" in recycle
    assert "await self.can_read.set()" in recycle
    assert "self.task_group.spawn_app(" in inspect.getsource(HTTPStream.handle)
    # _H11Protocol.stream_send redoes the Response branch, checking the headers itself and
    # handing them to h11 with _parsed=True.
    send = inspect.getsource(H11Protocol.stream_send)
    assert "keep_alive_max_requests" in send and 'response_headers("h11")' in send
    assert "_parsed" in inspect.signature(h11.Response).parameters
    assert h11._abnf.field_value and h11._abnf.field_name
    assert "await self._check_protocol(event)" in events
    assert Updated(idle=True).idle is True
    # Connection._answer_whole does what HTTPStream._send_closed and h11's send would do.
    closed = inspect.getsource(HTTPStream._send_closed)
    assert re.search(
        r"EndBody\(.*\)\)\s+self\.state = ASGIHTTPState\.CLOSED\s+"
        r"await self\.config\.log\.access\(self\.scope, self\.response, time\(\) - self\.start_time\)"
        r"\s+await self\.send\(StreamClosed\(stream_id=self\.stream_id\)\)",
        closed,
    ), closed
    body = inspect.getsource(HTTPStream.app_send)
    assert "self.response = message" in body and "build_and_validate_headers" in body
    h11_version = importlib.metadata.version("h11")
    assert (0, 14) <= tuple(int(part) for part in h11_version.split(".")[:2]) < (0, 17), h11_version
    send = inspect.getsource(h11.Connection.send_with_data_passthrough)
    assert "self._clean_up_response_headers_for_sending(event)" in send
    assert "self._process_event(self.our_role, event)" in send
    probe = h11.Connection(h11.SERVER)
    assert probe._cstate.keep_alive is True and probe.client_is_waiting_for_100_continue is False
    # Connection._take_plain does what H11Protocol._handle_events does with an h11.Request, and
    # _H11Protocol._create_stream what hypercorn's does for a request without Upgrade.
    assert re.search(
        r"h11\.Request\):\s+await self\.send\(Updated\(idle=False\)\)\s+"
        r"await self\._check_protocol\(event\)\s+await self\._create_stream\(event\)",
        events,
    ), events
    create = inspect.getsource(H11Protocol._create_stream)
    assert "headers = list(request.headers)" in create and "self.stream = HTTPStream(" in create
    assert (
        "self.keep_alive_requests += 1" in create and "await self.context.mark_request()" in create
    )
    # feedstream.web.requesthead builds the Request as h11's reader does, with h11's grammar.
    reader = inspect.getsource(h11._readers.maybe_read_from_IDLE_client)
    assert "request_line_re" in reader and "_decode_header_lines(lines[1:])" in reader
    assert "_parsed=True" in reader
    assert "header_field_re" in inspect.getsource(h11._readers._decode_header_lines)
    assert "self._process_event(self.their_role" in inspect.getsource(h11.Connection.next_event)
    # Connection._serve_directly: a target is ASCII (it decodes it as hypercorn's stream does),
    # and h11 turns keep-alive off by the request's own _keep_alive, which it checks first.
    assert h11._abnf.request_target == r"[\x21-\x7e]+"
    assert "_keep_alive(" in inspect.getsource(h11.Connection._process_event)
    handle = inspect.getsource(HTTPStream.handle)
    assert '"path": unquote(path.decode("ascii"))' in handle and '"extensions": {}' in handle


async def test_keep_alive_many_requests_on_one_connection() -> None:
    app = App()
    async with serving(app) as (port, _):
        stream = await connect(port)
        for i in range(20):
            await stream.send_all(HEAD % f"n{i}".encode())
            response, body = await read_answers(stream, 1)
            assert isinstance(response, h11.Response) and response.status_code == 200
            assert body == f"n{i}".encode()
    assert len(app.paths) == 20


async def test_an_answer_is_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []
    real_send, real_sendmsg = socket.socket.send, socket.socket.sendmsg

    class Recording(socket.socket):
        __slots__ = ()

        def send(self, data: Any, flags: int = 0) -> int:
            writes.append(bytes(data))
            return real_send(self, data, flags)

        def sendmsg(self, buffers: Any, *args: Any) -> int:
            writes.append(b"".join(buffers))
            return real_sendmsg(self, buffers, *args)

    real_init = connection_module.Connection.__init__

    def init(self: connection_module.Connection, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        self.sock.__class__ = Recording

    monkeypatch.setattr(connection_module.Connection, "__init__", init)
    app = App()
    async with serving(app) as (port, _):
        stream = await connect(port)
        for name in (b"one", b"two"):
            await stream.send_all(HEAD % name)
            await read_answers(stream, 1)
    assert len(writes) == 2  # head and body together, no empty write
    assert all(w.startswith(b"HTTP/1.1 200 ") for w in writes)
    assert writes[0].endswith(b"\r\n\r\none") and writes[1].endswith(b"\r\n\r\ntwo")


@pytest.mark.parametrize("taken", [3, 250, 100_000])
async def test_a_head_and_body_partly_taken_by_the_kernel_arrive_whole(
    monkeypatch: pytest.MonkeyPatch, taken: int
) -> None:
    """Connection._write sends a head and its body with one sendmsg; when the kernel takes only
    part of them (within the head, within the body), the rest follows in order."""
    real_send = socket.socket.send
    cut: list[int] = []

    class Partial(socket.socket):
        __slots__ = ()

        def sendmsg(self, buffers: Any, *args: Any) -> int:
            data = b"".join(buffers)
            cut.append(len(data))
            return real_send(self, data[:taken])

    real_init = connection_module.Connection.__init__

    def init(self: connection_module.Connection, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        self.sock.__class__ = Partial

    monkeypatch.setattr(connection_module.Connection, "__init__", init)
    body = bytes(range(256)) * 1024  # 256 KiB, each byte in its place
    async with serving(App()) as (port, _):
        stream = await connect(port)
        await stream.send_all(HEAD % b"first")  # one plain answer first
        await read_answers(stream, 1)
        await stream.send_all(HEAD % b"large")
        [response, received] = await read_answers(stream, 1)
    assert isinstance(response, h11.Response) and response.status_code == 200
    assert received == body
    assert cut[-1] > len(body) > taken  # the large answer went by sendmsg, cut short


FIXED_DATE = [(b"date", b"Thu, 03 Dec 2026 00:00:00 GMT")]
LAST = b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def _wire(request: bytes, app: App | None = None) -> bytes:
    """Everything a client reads for *request* followed by a last request that closes."""
    async with serving(App() if app is None else app) as (port, _):
        stream = await connect(port)
        await stream.send_all(request)
        await trio.sleep(0.05)  # the first answer first: no pipelining
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(LAST)
        return await closed_within(stream, 3)


class Routes:
    """Which way each request of a test server was read and answered, by its number on the
    connection (1 is the first): read ``"direct"`` (Connection._serve_directly), ``"plain"``
    (Connection._take_plain) or by h11 (not recorded); answered ``"direct"``
    (Connection._answer_directly), ``"whole"`` (Connection._answer_whole) or the long way (not
    recorded)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.read: dict[int, str] = {}
        self.answered: dict[int, str] = {}
        cls = connection_module.Connection
        for method, table, name in (
            ("_serve_directly", self.read, "direct"),
            ("_take_plain", self.read, "plain"),
        ):
            monkeypatch.setattr(cls, method, self._reader(getattr(cls, method), table, name))
        for method, name in (("_answer_directly", "direct"), ("_answer_whole", "whole")):
            monkeypatch.setattr(cls, method, self._answerer(getattr(cls, method), name))

    @staticmethod
    def _reader(real: Any, table: dict[int, str], name: str) -> Any:
        async def spy(self: connection_module.Connection, *args: Any) -> None:
            table[self._requests + 1] = name
            await real(self, *args)

        return spy

    def _answerer(self, real: Any, name: str) -> Any:
        answered = self.answered

        async def spy(self: connection_module.Connection, *args: Any) -> bool:
            taken: bool = await real(self, *args)
            if taken:
                answered[self._requests] = name
            return taken

        return spy

    def first(self) -> tuple[str, str]:
        return self.read.get(1, "h11"), self.answered.get(1, "long")


#: (request bytes, how its head is read, how its answer is written: see Routes)
ROUTES = [
    (HEAD % b"plain", "direct", "direct"),
    (HEAD % b"large", "direct", "direct"),
    (
        b"GET /pl%C3%A9in?q=%C3%A9&x= HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Obs: \xff\r\n\r\n",
        "direct",
        "direct",
    ),
    (b"DELETE /plain HTTP/1.1\r\nHost: x\r\n\r\n", "direct", "direct"),
    (HEAD % b"close-header", "direct", "whole"),  # the app says Connection: close
    (HEAD % b"chunked", "direct", "long"),
    (HEAD % b"nothing", "direct", "long"),
    (HEAD % b"liar", "direct", "long"),
    (HEAD % b"inject", "direct", "long"),
    (HEAD % b"boom", "direct", "long"),
    (HEAD % b"big", "direct", "long"),  # streamed
    (b"HEAD /plain HTTP/1.1\r\nHost: x\r\n\r\n", "direct", "long"),
    (b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "plain", "long"),
    (b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: x, Close\r\n\r\n", "plain", "long"),
    (b"GET /plain HTTP/1.0\r\nHost: x\r\n\r\n", "h11", "long"),
    (b"GET /plain HTTP/1.1\nHost: x\n\n", "h11", "whole"),
    (b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", "h11", "whole"),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", "h11", "whole"),
    (b"GET /x HTTP/1.1\r\n\r\n", "h11", "long"),  # no Host: h11's 400
    (b"GET /x HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "h11", "long"),
    (b"GET /up HTTP/1.1\r\nHost: x\r\nUpgrade: foo/1\r\n\r\n", "h11", "long"),
]


@pytest.mark.parametrize(("request_", "read", "answered"), ROUTES)
async def test_the_short_ways_are_the_long_ways_to_the_byte(
    monkeypatch: pytest.MonkeyPatch, request_: bytes, read: str, answered: str
) -> None:
    """Every short way of the connection loop against the long way (h11 reads every head,
    hypercorn's stream and h11 write every answer): the app must see the same scopes and the
    client read the same bytes. Run three times: every short way on, all but the direct one
    (Connection._serve_directly), and none. Each case also pins the way it takes with all
    on: a plain keep-alive request is served directly; whatever is not a plain whole answer
    (HEAD, no or a wrong content-length, 204, streamed, bad headers, an app error, a
    Connection: close) goes the long way from the first message that is not; every other
    head (HTTP/1.0, bare LF, a body, pipelined, no or two Hosts, an upgrade) goes h11's
    way. The closing request after it goes the plain way."""
    monkeypatch.setattr(ServerConfig, "response_headers", lambda self, protocol: list(FIXED_DATE))
    routes = Routes(monkeypatch)
    apps = [App(), App(), App()]
    direct = await _wire(request_, apps[0])
    assert routes.first() == (read, answered), (routes.read, routes.answered)
    if direct.endswith(b"last"):  # the server was still serving when the last came
        assert routes.read[max(routes.read)] == "plain", routes.read
    routes.read.clear()
    routes.answered.clear()
    cls = connection_module.Connection
    monkeypatch.setattr(cls, "_may_serve_directly", lambda self, protocol, request: False)
    plain = await _wire(request_, apps[1])
    assert "direct" not in {*routes.read.values(), *routes.answered.values()}
    monkeypatch.setattr(connection_module, "plain_head", lambda data, last: None)
    monkeypatch.setattr(cls, "_answer_whole", _never)
    slow = await _wire(request_, apps[2])
    assert direct == plain == slow
    assert apps[0].scopes == apps[1].scopes == apps[2].scopes
    assert slow.startswith(b"HTTP/1.")


async def test_the_request_that_reaches_keep_alive_max_requests_goes_hypercorns_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hypercorn closes a connection after ``keep_alive_max_requests`` requests, its last
    answer saying ``Connection: close``: that request is not served directly, the ones before
    it are, and the client reads what hypercorn alone writes."""
    monkeypatch.setattr(ServerConfig, "response_headers", lambda self, protocol: list(FIXED_DATE))
    monkeypatch.setattr(ServerConfig, "keep_alive_max_requests", 3)
    routes = Routes(monkeypatch)

    async def three() -> bytes:
        async with serving(App()) as (port, _):
            stream = await connect(port)
            for name in (b"a", b"b"):
                await stream.send_all(HEAD % name)
                await read_answers(stream, 1)
            await stream.send_all(HEAD % b"c")
            return await closed_within(stream, 3)

    direct = await three()
    assert routes.read == {1: "direct", 2: "direct", 3: "plain"}
    assert direct.lower().count(b"connection: close") == 1 and direct.endswith(b"c")
    monkeypatch.setattr(connection_module, "plain_head", lambda data, last: None)
    assert await three() == direct


async def test_server_names_are_checked_by_hypercorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``server_names`` set, hypercorn answers 404 to a request for another host: no
    request is served directly then."""
    monkeypatch.setattr(ServerConfig, "server_names", ["feeds.example"])
    routes = Routes(monkeypatch)
    async with serving(App()) as (port, _):
        stream = await connect(port)
        await stream.send_all(b"GET /a HTTP/1.1\r\nHost: feeds.example\r\n\r\n")
        [ok, body] = await read_answers(stream, 1)
        await stream.send_all(b"GET /b HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n")
        [refused, _] = await read_answers(stream, 1)
    assert isinstance(ok, h11.Response) and ok.status_code == 200 and body == b"a"
    assert isinstance(refused, h11.Response) and refused.status_code == 404
    assert routes.read == {1: "plain", 2: "plain"}


async def _never(self: connection_module.Connection, *args: Any) -> bool:
    return False


def test_heads_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    heads = connection_module._Heads()
    monkeypatch.setattr(connection_module._Heads, "MAX", 4)
    config = ServerConfig()
    for i in range(10):
        start = {"status": 200, "headers": [(b"x-n", str(i).encode()), (b"content-length", b"2")]}
        head = heads.get(start, 2, config)
        assert head is not None and head[1].startswith(b"HTTP/1.1 200 ")
        assert b"x-n: %d\r\n" % i in head[1]
        assert heads.get(start, 3, config) is None  # a body that is not the declared length
    assert len(heads._heads) <= 4


@pytest.fixture(params=["direct", "hypercorn"])
def ways(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with plain requests served directly, then through hypercorn's stream."""
    if request.param == "hypercorn":
        cls = connection_module.Connection
        monkeypatch.setattr(cls, "_may_serve_directly", lambda self, protocol, request: False)
    return str(request.param)


async def test_woken_together_every_answer_is_written_before_any_recycling(
    monkeypatch: pytest.MonkeyPatch, ways: str
) -> None:
    """A fan-out: parked requests released at once each write their answer, then yield, so
    that every answer is on the wire before any connection goes on to end its request
    (hypercorn's recycling of its stream, or the direct way's end) and read again; otherwise
    the last listener waits for all the others' whole steps."""
    events: list[str] = []
    real_write = connection_module.Connection._write
    real_idle = connection_module.Connection._idle

    async def write(self: connection_module.Connection, data: bytes, more: bytes = b"") -> None:
        if b"released" in data + more:
            events.append("write")
        await real_write(self, data, more)

    def recycle(self: connection_module.Connection) -> None:
        events.append("recycle")
        real_idle(self)

    monkeypatch.setattr(connection_module.Connection, "_write", write)
    monkeypatch.setattr(connection_module.Connection, "_idle", recycle)
    app = App()
    count = 8
    async with serving(app) as (port, _):
        streams = [await connect(port) for _ in range(count)]
        for stream in streams:
            await stream.send_all(HEAD % b"park")
        await app.until(lambda: app.parked == count)
        events.clear()
        app.release.set()
        for stream in streams:
            [_, body] = await read_answers(stream, 1)
            assert body == b"released"
    assert events[:count] == ["write"] * count, events
    assert events.count("recycle") == count


async def test_an_after_answer_hook_runs_once_the_answer_is_written_and_before_recycling(
    monkeypatch: pytest.MonkeyPatch, ways: str
) -> None:
    """An app's AFTER_ANSWER hook replaces the yield after the answer: the client has the
    whole answer while the hook waits, the request ends (the connection goes idle) only after
    it, and the next request on the connection is served without it."""
    recycled: list[int] = []
    real_idle = connection_module.Connection._idle

    def recycle(self: connection_module.Connection) -> None:
        recycled.append(app.held)
        real_idle(self)

    monkeypatch.setattr(connection_module.Connection, "_idle", recycle)
    app = App()
    async with serving(app) as (port, _):
        stream = await connect(port)
        await stream.send_all(HEAD % b"held")
        [_, body] = await read_answers(stream, 1)
        assert body == b"held"
        await app.until(lambda: app.held == 1)
        assert recycled == []  # held in the hook, after the write
        app.unhold.set()
        await stream.send_all(HEAD % b"next")
        [_, body] = await read_answers(stream, 1)
        assert body == b"next"
        assert recycled[0] == 1 and app.held == 1  # the hook ran for /held only


async def test_idle_connection_is_closed_after_keep_alive_timeout() -> None:
    async with serving(App(), keep_alive=0.3) as (port, _):
        stream = await connect(port)
        await stream.send_all(HEAD % b"a")
        await read_answers(stream, 1)
        started = trio.current_time()
        assert await closed_within(stream, 3) == b""
        assert trio.current_time() - started >= 0.25
        # A connection that never sends a byte gets the same deadline.
        silent = await connect(port)
        assert await closed_within(silent, 3) == b""


async def test_a_parked_request_outlives_the_keep_alive_timeout() -> None:
    app = App()
    async with serving(app, keep_alive=0.2) as (port, _):
        stream = await connect(port)
        await stream.send_all(HEAD % b"park")
        await trio.sleep(0.6)  # three idle timeouts: a request in flight is not idle
        app.release.set()
        _, body = await read_answers(stream, 1)
        assert body == b"released"


async def test_slowloris_head_is_cut_at_the_header_timeout() -> None:
    async with serving(App(), keep_alive=60, header_timeout=0.3) as (port, _):
        stream = await connect(port)
        started = trio.current_time()
        with trio.fail_after(5):
            for piece in (b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"X-A: 1\r\n"):
                await stream.send_all(piece)
                await trio.sleep(0.1)
            assert await closed_within(stream, 3) == b""
        assert 0.25 <= trio.current_time() - started < 2


async def test_oversized_head_is_refused() -> None:
    async with serving(App()) as (port, _):
        stream = await connect(port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000)
        answer = await closed_within(stream, 3)
        assert answer.startswith(b"HTTP/1.1 431 ") or answer.startswith(b"HTTP/1.1 400 ")


async def test_pipelined_requests_are_answered_in_order() -> None:
    app = App()
    async with serving(app) as (port, _):
        stream = await connect(port)
        await stream.send_all(HEAD % b"first" + HEAD % b"second" + HEAD % b"third")
        answers = await read_answers(stream, 3)
    assert answers[1::2] == [b"first", b"second", b"third"]


async def test_body_streamed_in_pieces_reaches_the_app() -> None:
    async with serving(App()) as (port, _):
        stream = await connect(port)
        await stream.send_all(
            b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + b"a" * 1000
        )
        for _ in range(299):
            await stream.send_all(b"b" * 1000)
        _, body = await read_answers(stream, 1)
        assert body == b"300000"
        # ... and the connection is reused for a request without a body.
        await stream.send_all(HEAD % b"after")
        assert (await read_answers(stream, 1))[1] == b"after"


async def test_an_app_still_running_after_its_answer_does_not_touch_the_next_request() -> None:
    async with serving(App()) as (port, _):
        stream = await connect(port)
        for _ in range(3):
            await stream.send_all(b"POST /linger HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
            assert (await read_answers(stream, 1))[1] == b"lingering"
            # The next request's app yields before answering, while the lingering call ends.
            await stream.send_all(HEAD % b"slow")
            response, body = await read_answers(stream, 1)
            assert isinstance(response, h11.Response) and response.status_code == 200
            assert body == b"slow"


async def test_expect_100_continue() -> None:
    async with serving(App()) as (port, _):
        stream = await connect(port)
        await stream.send_all(
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        with trio.fail_after(3):
            interim = await stream.receive_some(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        await stream.send_all(b"hello")
        assert (await read_answers(stream, 1))[1] == b"5"


async def test_app_error_is_a_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "feedstream.web.connection")
    async with serving(App()) as (port, _):
        stream = await connect(port)
        await stream.send_all(HEAD % b"boom")
        response, _body = await read_answers(stream, 1)
        assert isinstance(response, h11.Response) and response.status_code == 500
        assert "RuntimeError: boom" in caplog.text
        assert "boom" not in _body.decode() if isinstance(_body, bytes) else True


async def test_header_injection_by_the_app_is_refused() -> None:
    async with serving(App()) as (port, _):
        stream = await connect(port)
        await stream.send_all(HEAD % b"inject")
        answer = await closed_within(stream, 3)
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert b"evil" not in answer


async def test_date_header_is_current() -> None:
    async with serving(App()) as (port, _):
        stream = await connect(port)
        dates = []
        for _ in range(2):
            await stream.send_all(HEAD % b"d")
            response, _body = await read_answers(stream, 1)
            assert isinstance(response, h11.Response)
            dates.append(dict(response.headers)[b"date"])
            await trio.sleep(1.1)
    assert dates[0] != dates[1]


async def test_client_closing_mid_answer_leaves_the_server_serving() -> None:
    app = App()
    async with serving(app) as (port, _):
        for _ in range(3):
            stream = await connect(port)
            await stream.send_all(HEAD % b"big")
            await stream.receive_some(1000)  # the head and a little of the 8 MiB
            stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            await stream.aclose()  # a reset, with most of the answer unsent
        await app.until(lambda: len(app.finished) == 3)
        stream = await connect(port)
        await stream.send_all(HEAD % b"still")
        assert (await read_answers(stream, 1))[1] == b"still"


async def test_shutdown_closes_idle_connections_and_waits_for_answers_in_flight() -> None:
    app = App()
    async with serving(app, graceful=5) as (port, stop):
        idle = await connect(port)
        await idle.send_all(HEAD % b"x")
        await read_answers(idle, 1)
        parked = await connect(port)
        await parked.send_all(HEAD % b"park")
        await app.until(lambda: app.parked == 1)
        stop.set()
        assert await closed_within(idle, 1) == b""
        await trio.sleep(0.2)
        app.release.set()  # the parked answer still goes out, then the connection closes
        answer = await closed_within(parked, 3)
        # (closed_within: the server closes it after this answer, as it stops)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"released")


async def test_shutdown_cancels_what_outlasts_the_graceful_timeout() -> None:
    app = App()
    started = trio.current_time()
    async with serving(app, graceful=0.3) as (port, stop):
        parked = await connect(port)
        await parked.send_all(HEAD % b"park")
        await app.until(lambda: app.parked == 1)
        stop.set()
        # Never released: cut at the deadline with a 500 (as hypercorn), then closed.
        assert (await closed_within(parked, 3)).startswith(b"HTTP/1.1 500 ")
    assert trio.current_time() - started < 3


@pytest.mark.parametrize(
    "pair",
    [
        (b"x-a", b"1\r\nset-cookie: a=1"),
        (b"x-a", b"nul\x00byte"),
        (b"x a", b"space in the name"),
        (b"", b"empty name"),
        (b"x-a:", b"colon"),
    ],
)
def test_validate_refuses_what_h11_refuses(pair: tuple[bytes, bytes]) -> None:
    with pytest.raises(h11.LocalProtocolError):
        connection_module._validate([(b"content-type", b"text/plain"), pair])
    with pytest.raises(h11.LocalProtocolError):  # h11 itself, for comparison
        h11.Response(status_code=200, headers=[pair])
    assert pair not in connection_module._VALID_HEADERS


def test_validate_remembers_good_pairs_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_module, "_VALID_HEADERS", set())
    monkeypatch.setattr(connection_module, "_VALID_HEADERS_MAX", 3)
    connection_module._validate([(b"a", b"1"), (b"b", b"2")])
    assert {(b"a", b"1"), (b"b", b"2")} == connection_module._VALID_HEADERS
    connection_module._validate([(b"c", b"3"), (b"d", b"4")])
    assert len(connection_module._VALID_HEADERS) <= 3
