"""One HTTP/1.1 connection: a lean trio loop around hypercorn's protocol classes.

hypercorn's trio worker (``hypercorn/trio/tcp_server.py`` with ``worker_context.py``) pays, on
every keep-alive request, for work that is not HTTP: it restarts an idle-timer *task* (a lock and
a ``nursery.start``) and stops it again, spawns a task for the app, writes head, body and an
empty ``b""`` separately (each write taking a lock, a shielded cancel scope and a
``send_all``), and wraps every read in ``fail_after(inf)``. For a long-poll answer those costs
are most of the CPU (issue #14, ``docs/hypercorn-notes.md``). This module keeps hypercorn's
HTTP layer (``H11Protocol`` and ``HTTPStream`` over h11: parsing, validation, keep-alive
recycling, error answers) and replaces only the loop around it:

* **One deadline per connection, no timer task.** The read loop runs in one cancel scope whose
  deadline moves: ``keep_alive`` after each answer, none while a request is in flight, and a
  shorter ``header_timeout`` once the first bytes of a request head have come (slowloris). The
  idle deadlines are set on the scope only when the loop has to wait for bytes: a client whose
  next request is already there (a re-poll) moves no deadline at all.
* **The app runs in the connection's own task** when the request has no body (every long-poll,
  every page load): hypercorn calls ``task_group.spawn_app`` as the request head is parsed; this
  class is that task group, so it keeps the call and runs it when h11 has the whole request and
  hypercorn would wait for the answer (``can_read.wait()``, through this module's ``_CanRead``).
  No task is spawned for it, and a parked long-poll is one task, not two. A request with a body
  (pushes, admin POSTs) gets a task as with hypercorn, so the body streams to it with
  back-pressure and limits hold.
* **One write per answer.** Everything the app sends within one ``send`` call is gathered and
  written at once, and the head waits for the first body chunk: a whole answer is one
  ``socket.send``. Empty writes are dropped. A write tries the socket first and only waits
  (``wait_writable``) when the kernel buffer is full; there is no lock unless two tasks write.
* **A whole answer the short way.** A head is kept back until the next message; when that is
  the last body and the case is plain (HTTP/1.1 keep-alive, a ``content-length`` that matches),
  :meth:`Connection._answer_whole` writes a head encoded once per distinct set of headers with
  the body, and moves hypercorn's and h11's states as the four events of the long way would
  (``docs/hypercorn-notes.md`` §10). Every listener of a round gets the same head.
* **A plain request head the short way.** When a read brings exactly one whole keep-alive
  ``GET``-like head and nothing else (what a re-polling client sends each round),
  :func:`feedstream.web.requesthead.plain_request` reads it with h11's own grammar in one pass
  and :meth:`Connection._take_plain` moves h11 and hypercorn as their readers would; anything
  else is read by h11 as before (``docs/hypercorn-notes.md`` §11).
* **A plain request served directly.** A plain head on a keep-alive connection whose answer
  comes whole (a head, then one last body its ``content-length`` matches: every long-poll
  answer) never reaches h11 or hypercorn: :meth:`Connection._serve_directly` gives the app the
  scope hypercorn's stream would build and writes the answer with the cached head; both
  libraries stay in the ``IDLE`` state a request and its answer would take them back to. An
  answer that is not plain (``HEAD``, streamed, no or a wrong length, ``Connection: close``,
  an app error) is handed to them at its first such message, with their state moved to
  where the long way would have it (``docs/hypercorn-notes.md`` §13).
* **Answers first, housekeeping after.** A whole answer is written as soon as h11 ends its
  message, then the task yields once before hypercorn recycles the stream: listeners woken
  together (a fan-out) all have their answers on the wire before any of them goes on. An app
  may put its own wait in place of that yield (:data:`feedstream.web.asgi.AFTER_ANSWER`): the
  broadcaster holds a round's listeners there until the whole round is answered.

Only plain HTTP/1.1 is served (feedstream terminates no TLS; a WebSocket upgrade or h2c is
refused by the app's 404 / answered in HTTP/1.1). The hypercorn internals this relies on are
checked by ``tests/web/test_connection.py::test_hypercorn_internals`` and the version is pinned
in ``pyproject.toml``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from math import inf
from typing import Any
from urllib.parse import unquote

import h11
import trio
from h11._abnf import field_name, field_value
from h11._connection import _keep_alive
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.events import Request, Response, StreamClosed
from hypercorn.protocol.h11 import STREAM_ID, H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.typing import ConnectionState
from hypercorn.utils import UnexpectedMessageError, build_and_validate_headers

from feedstream.web.asgi import AFTER_ANSWER
from feedstream.web.requesthead import LastHead, PlainHead, keeps_alive, plain_head, plain_request

logger = logging.getLogger(__name__)

__all__ = ["HEADER_TIMEOUT", "MAX_RECV", "Connection", "ServerConfig", "Terminated"]

MAX_RECV = 2**16
HEADER_TIMEOUT = 20.0  # seconds from the first byte of a request head to its end

App = Callable[[Any, Any, Any], Awaitable[None]]
AppSend = Callable[[Any], Awaitable[None]]


class Terminated:
    """Set once the server stops taking requests (hypercorn's ``context.terminated``)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class _Inbox:
    """The ASGI ``receive`` of a request without a body: never blocks a put."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._waiter: trio.Event | None = None

    async def put(self, message: Any) -> None:
        self.put_nowait(message)

    def put_nowait(self, message: Any) -> None:
        self._items.append(message)
        if self._waiter is not None:
            self._waiter.set()

    async def receive(self) -> Any:
        while not self._items:
            self._waiter = trio.Event()
            await self._waiter.wait()
        return self._items.popleft()


class _CanRead:
    """hypercorn's ``can_read`` event, which also runs a kept app call when it is waited on."""

    __slots__ = ("_connection", "_event", "_set")

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._set = False
        self._event: trio.Event | None = None

    async def clear(self) -> None:
        self._set = False
        self._event = None

    async def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._connection.kept is not None:
            await self._connection.run_kept()
        if not self._set:
            self._event = event = trio.Event()
            await event.wait()


class _Direct:
    """The ASGI ``send`` of a request served directly (:meth:`Connection._serve_directly`).

    A head is kept until the next message; when that is a last body making a plain whole
    answer, the answer is written directly. Any other message hands the request to h11 and
    hypercorn (:meth:`Connection._go_long`), which then take it and every message after it,
    as if they had had the request from the start.
    """

    __slots__ = (
        "_connection",
        "_long",
        "_start",
        "done",
        "head",
        "inbox",
        "scope",
        "started_at",
    )

    def __init__(self, connection: Connection, head: bytes, scope: Any, inbox: _Inbox) -> None:
        self._connection = connection
        self.head = head  # the request head's bytes: read again if it goes the long way
        self.scope = scope
        self.inbox = inbox
        self.started_at = time.time()
        self.done = False
        self._start: Any = None
        self._long: AppSend | None = None

    async def __call__(self, message: Any) -> None:
        connection = self._connection
        if self._long is not None:
            await connection._send_from_app(self._long, message)
            return
        if self.done:  # answered directly: the app is finished with it, as with hypercorn
            if message is not None:
                raise UnexpectedMessageError(ASGIHTTPState.CLOSED, message["type"])
            return
        start = self._start
        if message is not None:
            kind = message["type"]
            if start is None:
                if kind == "http.response.start" and not message.get("trailers", False):
                    self._start = message
                    return
            elif kind == "http.response.body" and await connection._answer_directly(
                self, start, message
            ):
                self._start = None
                self.done = True
                return
        # Not a plain whole answer: h11 and hypercorn take the request from here.
        self._start = None
        self._long = long = await connection._go_long(self)
        if start is not None:
            await connection._send_from_app(long, start)
        await connection._send_from_app(long, message)


class Connection:
    """Serve one accepted socket until either side closes it (see the module docstring).

    The object is also what hypercorn's protocol classes are given as their *context* and
    *task group*; it owns the socket and closes it when :meth:`run` returns.
    """

    def __init__(
        self,
        app: App,
        config: HypercornConfig,
        sock: socket.socket,
        state: dict[str, Any],
        terminated: Terminated,
        *,
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        self.app = app
        self.config = config
        self.sock = sock
        self.terminated = terminated
        self.header_timeout = header_timeout
        self._state = state
        self.idle = True
        self.closed = False
        self.kept: tuple[App, Any, _Inbox, AppSend] | None = None
        self._nursery: trio.Nursery | None = None
        self._scope = trio.CancelScope()
        self._reading = False
        self._hold = 0
        self._buffer: list[bytes] = []
        self._write_lock = trio.Lock()
        self._requests = 0
        self._head_deadline = inf
        self._idle_deadline = inf  # keep-alive: when the connection became idle + the timeout
        self._protocol: _H11Protocol | None = None
        self._start: tuple[AppSend, Any] | None = None  # a head kept back by _send_from_app
        self._adopting: _Inbox | None = None  # see _go_long
        self._last_head = LastHead()  # the last plain head, read (see plain_head)

    # -- what hypercorn's protocol classes call (WorkerContext and TaskGroup) ------------------

    def event_class(self) -> _CanRead:
        return _CanRead(self)

    async def mark_request(self) -> None:
        pass  # no max_requests: a worker is never recycled by request count

    @staticmethod
    async def sleep(seconds: float) -> None:
        await trio.sleep(seconds)

    @staticmethod
    def time() -> float:
        return trio.current_time()

    async def spawn_app(self, app: App, config: HypercornConfig, scope: Any, send: AppSend) -> Any:
        if self._adopting is not None:  # the app runs already (Connection._go_long)
            return self._adopting.put
        if scope["type"] == "http" and not _has_body(scope["headers"]):
            inbox = _Inbox()
            self.kept = (app, scope, inbox, send)
            return inbox.put
        assert self._nursery is not None
        put, receive = trio.open_memory_channel[Any](config.max_app_queue_size)
        send_ = partial(self._send_from_app, send)
        self._nursery.start_soon(self._call_app, app, scope, receive.receive, send_)
        return put.send

    def spawn(self, func: Callable[..., Awaitable[None]], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(func, *args)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        sock = self.sock
        try:
            client = _address(sock.getpeername)
            server = _address(sock.getsockname)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                protocol = _H11Protocol(
                    self.app,  # type: ignore[arg-type]
                    self.config,
                    self,  # type: ignore[arg-type]
                    self,  # type: ignore[arg-type]
                    ConnectionState(self._state.copy()),
                    False,
                    client,
                    server,
                    self._protocol_send,
                )
                self._protocol = protocol
                self._idle_deadline = trio.current_time() + self.config.keep_alive_timeout
                with self._scope:
                    await self._read(protocol)
                await protocol.handle(Closed())
        except* OSError:
            pass  # the peer went away (reset, or gone before we looked at it)
        except* Exception:
            logger.exception("connection failed; closed")
        finally:
            self._close_socket()

    async def _read(self, protocol: H11Protocol) -> None:
        sock = self.sock
        while not self.closed:
            try:
                data = sock.recv(MAX_RECV)
            except BlockingIOError:
                if self.idle:
                    if self.terminated.is_set():
                        return
                    # Waiting between requests: the keep-alive or the head's deadline holds.
                    deadline = min(self._idle_deadline, self._head_deadline)
                    if self._scope.deadline != deadline:
                        self._scope.deadline = deadline
                self._reading = True
                try:
                    await trio.lowlevel.wait_readable(sock)
                finally:
                    self._reading = False
                continue
            except OSError:
                return
            requests = self._requests
            between = self._between_requests(protocol)
            head = plain_head(data, self._last_head) if between else None
            if head is None:
                await protocol.handle(RawData(data))
            elif self._may_serve_directly(protocol, head):
                await self._serve_directly(protocol, data, head)
            else:
                await self._take_plain(protocol, data)
            if self.kept is not None:  # a whole request that h11 did not pause on: answer it
                await self.run_kept()
            if not data:
                return
            # Bytes of a request head and no request yet: it must end soon (slowloris).
            partial_head = self.idle and self._requests == requests and not self.closed
            if partial_head and self._head_deadline == inf:
                self._head_deadline = trio.current_time() + self.header_timeout

    def _between_requests(self, protocol: H11Protocol) -> bool:
        """Whether the next bytes read start a request with nothing before them: the last
        request's stream is recycled and h11 waits for a new one, its buffer empty."""
        h11_connection = protocol.connection
        return (
            protocol.stream is None
            and type(h11_connection) is h11.Connection
            and h11_connection.their_state is h11.IDLE
            and h11_connection.our_state is h11.IDLE
            and not h11_connection._receive_buffer
            and not self.terminated.is_set()
        )

    async def _take_plain(self, protocol: H11Protocol, data: bytes) -> None:
        """Take a plain request head *data*, read the short way
        (:func:`~feedstream.web.requesthead.plain_request`), as h11 and hypercorn take it.

        Every layer moves as in the long way: h11's state with the same ``Request`` (what its
        ``next_event`` does after reading it), hypercorn's protocol as its ``_handle_events``
        does with a request (``Updated``, a new stream, the app's call kept), and that same
        loop reads the request's end from h11 (a body of length 0).
        """
        request = plain_request(data)
        assert request is not None  # plain_head read it
        h11_connection = protocol.connection
        assert isinstance(h11_connection, h11.Connection)  # as _between_requests found it
        h11_connection._process_event(h11.CLIENT, request)
        await protocol.send(Updated(idle=False))
        await protocol._check_protocol(request)
        await protocol._create_stream(request)
        await protocol._handle_events()

    # -- a request served directly -------------------------------------------------------------

    def _may_serve_directly(self, protocol: H11Protocol, head: PlainHead) -> bool:
        """Whether a plain request (*head*) may be served without h11 and hypercorn (see
        :meth:`_serve_directly`): it keeps the connection alive, it is not the one that
        reaches ``keep_alive_max_requests`` (whose answer says ``Connection: close``), and no
        ``server_names`` are checked."""
        return (
            protocol.keep_alive_requests + 1 < self.config.keep_alive_max_requests
            and not self.config.server_names
            and keeps_alive(head[2])
        )

    async def _serve_directly(self, protocol: H11Protocol, data: bytes, head: PlainHead) -> None:
        """Serve a plain bodyless request (*data*, read as *head*) with neither h11 nor
        hypercorn when its answer is whole, the common case: the app gets the scope
        hypercorn's ``HTTPStream`` would build, and :class:`_Direct` is its ``send``.

        A whole answer (a head, then one last body that its ``content-length`` matches, on
        HTTP/1.1 keep-alive) goes out as one write with the cached head, as
        :meth:`_answer_whole` writes it; then the connection is idle again. h11's and
        hypercorn's states never move: a request and its answer take both from ``IDLE`` back
        to ``IDLE``, as ``start_next_cycle`` does. Per request that leaves out hypercorn's
        stream and its events, the ``Updated`` round trips, h11's four state transitions and
        its recycling (``docs/hypercorn-notes.md`` §13).

        Any other answer (``HEAD``, no body or a streamed one, ``Connection: close``, an app
        error) goes the long way from its first message that is not plain
        (:meth:`_go_long`): h11 and hypercorn are then brought to where the long way would
        have them, and take every message from there.
        """
        self._busy()
        protocol.keep_alive_requests += 1
        # An ASCII target: h11's grammar for it (request_target) is visible ASCII characters.
        method, target, pairs = head
        path, _, query_string = target.partition(b"?")
        # HTTPStream.handle's scope, to the key (tests/web/test_connection.py compares them).
        scope = {
            "type": "http",
            "http_version": "1.1",
            "asgi": {"spec_version": "2.1", "version": "3.0"},
            "method": method.decode("ascii").upper(),
            "scheme": "http",
            "path": unquote(path.decode("ascii")),
            "raw_path": path,
            "query_string": query_string,
            "root_path": self.config.root_path,
            "headers": list(pairs),
            "client": protocol.client,
            "server": protocol.server,
            "state": protocol.connection_state.copy(),
            "extensions": {},
        }
        inbox = _Inbox()
        inbox.put_nowait({"type": "http.request", "body": b"", "more_body": False})
        direct = _Direct(self, data, scope, inbox)
        await self._call_app(self.app, scope, inbox.receive, direct)

    async def _answer_directly(self, direct: _Direct, start: Any, message: Any) -> bool:
        """Write *direct*'s whole answer (*start* and its last body *message*) if it is plain
        (as :meth:`_answer_whole` has it, and keeping the connection alive); False, having
        done nothing, when it is not."""
        body = self._last_body(message)
        if body is None or direct.scope["method"] == "HEAD":
            return False
        head = _HEADS.get(start, len(body), self.config)
        if head is None or not _keep_alive(head[0]):
            return False
        await self._write(head[1], body)
        await _after_answer()
        await self.config.log.access(direct.scope, start, time.time() - direct.started_at)
        # The request is over, as hypercorn's recycling would end it (Updated(idle=True); a
        # server shutting down closes the connection instead, as there).
        if self.terminated.is_set():
            self.closed = True
        else:
            self._idle()
        direct.inbox.put_nowait({"type": "http.disconnect"})
        return True

    def _last_body(self, message: Any) -> bytes | None:
        """The body of *message* when it ends a whole answer that may go out as one write
        with its head: a last, non-empty ``bytes`` body, with nothing of this connection's
        held back or gathered, and the connection open."""
        body = message.get("body", b"")
        if (
            message.get("more_body", False)
            or type(body) is not bytes
            or not body
            or self._hold
            or self._buffer
            or self.closed
        ):
            return None
        return body

    async def _go_long(self, direct: _Direct) -> AppSend:
        """Bring h11 and hypercorn to where the long way would have them with *direct*'s
        request read and its app running, and return the stream's ``send``: every message
        from the first one that is not plain goes there (through :meth:`_send_from_app`)."""
        protocol = self._protocol
        assert protocol is not None
        request = plain_request(direct.head)
        assert request is not None  # plain_head read it
        h11_connection = protocol.connection
        assert isinstance(h11_connection, h11.Connection)
        h11_connection._process_event(h11.CLIENT, request)
        protocol.keep_alive_requests -= 1  # _create_stream counts the request
        self._adopting = direct.inbox  # what spawn_app hands the stream: the app runs already
        try:
            await protocol._create_stream(request)
        finally:
            self._adopting = None
        stream = protocol.stream
        assert type(stream) is HTTPStream
        stream.start_time = direct.started_at
        # The request's end (no body), which the app was given already.
        end = h11_connection.next_event()
        assert type(end) is h11.EndOfMessage, end
        return stream.app_send

    async def _protocol_send(self, event: Event) -> None:
        kind = type(event)
        if kind is RawData:
            data = event.data  # type: ignore[attr-defined]
            if data:
                if self._hold:
                    self._buffer.append(data)
                else:
                    await self._write(data)
            elif self._buffer:
                # h11's end of a message with a Content-Length (nothing to write): the answer
                # is whole, so it goes out now, before hypercorn's recycling of the stream;
                # then one yield. Woken together (a fan-out), every listener's answer is then
                # on the wire before any of them does the rest of its step (recycling, the
                # next read), which roughly halves the time to the last answer.
                await self._flush()
                await _after_answer()
        elif kind is Updated:
            if event.idle:  # type: ignore[attr-defined]
                self._idle()
            else:
                self._busy()
        elif kind is Closed:
            if self._buffer:
                await self._flush()
            self.closed = True
            if self._reading:
                self._scope.cancel()

    def _busy(self) -> None:
        """A request has begun: no deadline while it is served."""
        self.idle = False
        self._requests += 1
        self._head_deadline = inf
        if self._scope.deadline != inf:
            self._scope.deadline = inf

    def _idle(self) -> None:
        """The last request is answered: the keep-alive deadline holds from now, applied by
        _read if it has to wait for the next request (a client that has sent it already, a
        long-poll's re-poll, costs no deadline change)."""
        self.idle = True
        self._idle_deadline = trio.current_time() + self.config.keep_alive_timeout

    def close_if_idle(self) -> None:
        """Shutting down: end the connection now if it waits for a request (see :meth:`_read`
        for one that is finishing an answer)."""
        if self.idle and self._reading:
            self._scope.cancel()

    # -- running the app -----------------------------------------------------------------------

    async def run_kept(self) -> None:
        """Run the app call kept by :meth:`spawn_app`, in this task."""
        assert self.kept is not None
        app, scope, inbox, app_send = self.kept
        self.kept = None
        await self._call_app(app, scope, inbox.receive, partial(self._send_from_app, app_send))

    async def _call_app(self, app: App, scope: Any, receive: Any, send: AppSend) -> None:
        # *send* is bound to this request (its stream): an app task may still be finishing
        # (its last send(None)) when the connection has moved on to the next request.
        try:
            await app(scope, receive, send)
        except* Exception:
            # As hypercorn: logged, answered 500 if nothing was sent; a Cancelled goes on.
            logger.exception("error in the ASGI app on %s %s", scope.get("method"), scope["path"])
        finally:
            await send(None)

    async def _send_from_app(self, app_send: AppSend, message: Any) -> None:
        """The app's ``send``: hypercorn's, with what it writes gathered into one write.

        A response head is kept back until the next message: when that is the whole body, the
        answer may take :meth:`_answer_whole`'s short way; anything else sends the head first.
        """
        kept = self._start
        if kept is not None:
            self._start = None
            kept_send, start = kept
            if (
                kept_send is app_send
                and message is not None
                and message["type"] == "http.response.body"
                and await self._answer_whole(app_send, start, message)
            ):
                return
            await self._send_to_stream(kept_send, start)
        elif (
            message is not None
            and message["type"] == "http.response.start"
            and not message.get("trailers", False)
        ):
            self._start = (app_send, message)
            return
        await self._send_to_stream(app_send, message)

    async def _send_to_stream(self, app_send: AppSend, message: Any) -> None:
        self._hold += 1
        try:
            await app_send(message)
        finally:
            self._hold -= 1
        if self._buffer and not self._hold:
            if message is not None and message["type"] == "http.response.start":
                return  # the head goes with the first body chunk
            await self._flush()

    async def _answer_whole(self, app_send: AppSend, start: Any, message: Any) -> bool:
        """Send a whole answer (*start* and its last body *message*) the short way, if it can.

        hypercorn would pass it down as four events (``Response``, ``Body``, ``EndBody``,
        ``StreamClosed``), each through its HTTP stream, its protocol and h11's serializer, to
        come out as three writes that this class gathers into one. Most answers are alike
        (every listener woken by a commit gets the same page with the same headers), so the
        head is encoded once per distinct set of headers (:class:`_Heads`) and the answer goes
        out as one write of head and body. The state every layer keeps is moved exactly as the
        long way would: h11's through its own state machine with the same events, hypercorn's
        stream to ``CLOSED`` with its access log line, then ``StreamClosed`` as usual.

        Only the plain case is taken (HTTP/1.1 keep-alive, not HEAD, a final status with a body,
        a ``content-length`` that matches it); anything else returns False and goes the long
        way.
        """
        protocol = self._protocol
        stream = getattr(app_send, "__self__", None)
        body = self._last_body(message)
        if (
            body is None
            or protocol is None
            or type(stream) is not HTTPStream
            or stream.state is not ASGIHTTPState.REQUEST
            or protocol.keep_alive_requests >= self.config.keep_alive_max_requests
        ):
            return False
        h11_connection = protocol.connection
        if (
            h11_connection.our_state is not h11.SEND_RESPONSE
            or h11_connection.their_state is not h11.DONE
            or h11_connection.their_http_version != b"1.1"
            or h11_connection.client_is_waiting_for_100_continue
            or not h11_connection._cstate.keep_alive
            or stream.scope["method"] in ("HEAD", "CONNECT")  # answers without a body
        ):
            return False
        head = _HEADS.get(start, len(body), self.config)
        if head is None:
            return False
        response, encoded = head
        # h11's state, as sending Response, Data and EndOfMessage would leave it (the writers,
        # which only encode, are what is skipped).
        h11_connection._process_event(h11.SERVER, response)
        h11_connection._process_event(h11.SERVER, _END_OF_MESSAGE)
        stream.response = start
        stream.state = ASGIHTTPState.CLOSED
        await self._write(encoded, body)
        await _after_answer()
        await self.config.log.access(stream.scope, start, time.time() - stream.start_time)
        await protocol.stream_send(StreamClosed(stream_id=stream.stream_id))
        return True

    # -- writing -------------------------------------------------------------------------------

    async def _flush(self) -> None:
        buffer = self._buffer
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        buffer.clear()
        await self._write(data)

    async def _write(self, data: bytes, more: bytes = b"") -> None:
        """Write *data*, then *more*: a head and its body go in one ``sendmsg``, not copied
        into one buffer first (a sustained answer's body is tens of KiB)."""
        if self.closed:
            return
        lock = self._write_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            view: bytes | memoryview = data
            if more:
                try:
                    sent = self.sock.sendmsg((data, more))
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._broken()
                    return
                if sent == len(data) + len(more):
                    return
                if sent < len(data):  # rare: the kernel buffer took less than the head
                    view = data[sent:] + more
                else:
                    view = memoryview(more)[sent - len(data) :]
                    await trio.lowlevel.wait_writable(self.sock)
            while True:
                try:
                    sent = self.sock.send(view)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._broken()
                    return
                if sent == len(view):
                    return
                view = memoryview(view)[sent:]
                await trio.lowlevel.wait_writable(self.sock)
        finally:
            lock.release()

    def _broken(self) -> None:
        """The peer is gone: stop reading and writing (the loop then tells the protocol)."""
        self.closed = True
        self._buffer.clear()
        if self._reading:
            self._scope.cancel()

    def _close_socket(self) -> None:
        sock = self.sock
        if sock.fileno() < 0:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        trio.lowlevel.notify_closing(sock)
        sock.close()


class ServerConfig(HypercornConfig):
    """hypercorn's ``Config`` with its ``Date`` header made once a second, not per answer."""

    _date_second = -1
    _date_headers: list[tuple[bytes, bytes]] = []

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        second = int(time.time())
        if second != self._date_second:
            self._date_headers = super().response_headers(protocol)
            self._date_second = second
        return list(self._date_headers)


_FIELD_NAME = re.compile(field_name.encode("ascii"))  # h11's own header grammar
_FIELD_VALUE = re.compile(field_value.encode("ascii"))
_VALID_HEADERS: set[tuple[bytes, bytes]] = set()  # pairs that passed them, reused per answer
_VALID_HEADERS_MAX = 4096


def _validate(headers: list[tuple[bytes, bytes]]) -> None:
    """h11's check of response header names and values (no CR/LF, no NUL...), with the pairs
    already seen remembered: an answer's headers are nearly always the previous answer's."""
    for pair in headers:
        if pair not in _VALID_HEADERS:
            name, value = pair
            if _FIELD_NAME.fullmatch(name) is None:
                raise h11.LocalProtocolError(f"illegal header name {name!r}")
            if _FIELD_VALUE.fullmatch(value) is None:
                raise h11.LocalProtocolError(f"illegal header value {value!r}")
            if len(_VALID_HEADERS) >= _VALID_HEADERS_MAX:
                _VALID_HEADERS.clear()
            _VALID_HEADERS.add(pair)


def _checked_response(headers: list[tuple[bytes, bytes]], status: int) -> h11.Response:
    """The ``h11.Response`` for *headers* (app's and server's), checked by :func:`_validate`
    and handed to h11 as parsed, so that h11 does not run its regexes over them again."""
    _validate(headers)
    return h11.Response(headers=headers, status_code=status, _parsed=True)


async def _after_answer() -> None:
    """What a request's task does right after its whole answer is written: the app's own wait
    (:data:`~feedstream.web.asgi.AFTER_ANSWER`, a round's gate) or a single yield."""
    hold = AFTER_ANSWER.get()
    if hold is None:
        await trio.lowlevel.cancel_shielded_checkpoint()
    else:
        await hold()


_SCRATCH_REQUEST = b"GET / HTTP/1.1\r\nhost: feedstream\r\n\r\n"
_END_OF_MESSAGE = h11.EndOfMessage()
_Head = tuple[h11.Response, bytes, int]  # the h11 event, its encoding, the declared length


class _Heads:
    """Encoded response heads for :meth:`Connection._answer_whole`, by status and headers.

    An entry is the ``h11.Response`` that the long way would hand to h11 (the app's headers,
    then hypercorn's ``Date``), the bytes h11 encodes it to, and the body length its
    ``content-length`` declares; or None when such an answer must go the long way (no single
    content-length, a status without a body, headers h11 refuses). The bytes come from h11
    itself, on a scratch connection in the state of the real one (a keep-alive HTTP/1.1 GET),
    so they are the long way's to the byte. The date changes every second, so the table is
    emptied when it is full rather than kept in order.
    """

    MAX = 256

    def __init__(self) -> None:
        self._heads: dict[Any, _Head | None] = {}

    def get(
        self, start: Any, length: int, config: HypercornConfig
    ) -> tuple[h11.Response, bytes] | None:
        extra = config.response_headers("h11")
        try:
            key = (start["status"], tuple(start.get("headers", ())), tuple(extra))
            head = self._heads[key]
        except KeyError:
            if len(self._heads) >= self.MAX:
                self._heads.clear()
            head = self._heads[key] = self._encode(start, extra)
        except TypeError:  # an unhashable header (a bytearray...): the long way
            return None
        if head is None or head[2] != length:
            return None
        return head[0], head[1]

    @staticmethod
    def _encode(start: Any, extra: list[tuple[bytes, bytes]]) -> _Head | None:
        status = start["status"]
        if type(status) is not int or status < 200 or status in (204, 304):
            return None
        try:
            headers = [*build_and_validate_headers(start.get("headers", [])), *extra]
            response = _checked_response(headers, status)
        except (h11.LocalProtocolError, ValueError, TypeError, IndexError):
            return None  # the long way raises it to the app, as hypercorn does
        lengths = [value for name, value in response.headers if name == b"content-length"]
        if len(lengths) != 1 or any(name == b"transfer-encoding" for name, _ in response.headers):
            return None
        scratch = h11.Connection(h11.SERVER)
        scratch.receive_data(_SCRATCH_REQUEST)
        while scratch.next_event() is not h11.NEED_DATA:
            pass
        return response, scratch.send(response), int(lengths[0])


_HEADS = _Heads()


class _H11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol with less work per request.

    * A response head's headers are checked against h11's grammar through :func:`_validate`,
      which remembers the pairs it has passed, and handed to h11 as checked (``_parsed=True``);
      h11 would otherwise run its two regexes over every header of every answer.
    * No HTTP/2 upgrade check (a pass over the request headers): this loop serves HTTP/1.1
      only, and a server may ignore ``Upgrade: h2c``; a ``PRI *`` preface fails h11's parse.
    """

    async def stream_send(self, event: Any) -> None:
        if type(event) is Response and event.status_code >= 200:
            headers = [*event.headers, *self.config.response_headers("h11")]
            if self.keep_alive_requests >= self.config.keep_alive_max_requests:
                headers.append((b"connection", b"close"))
            await self._send_h11_event(_checked_response(headers, event.status_code))
        else:
            await super().stream_send(event)

    async def _check_protocol(self, event: h11.Request) -> None:
        pass

    async def _create_stream(self, request: h11.Request) -> None:
        """hypercorn's, with its pass over the headers made on h11's own lists: its check for
        a WebSocket upgrade and the scope's ``(name, value)`` list (h11 names are lower-case
        tokens already). A request with an ``Upgrade`` header goes to hypercorn's own."""
        items = request.headers._full_items
        if self.config.h11_pass_raw_headers or any(name == b"upgrade" for _, name, _ in items):
            await super()._create_stream(request)
            return
        self.stream = HTTPStream(
            self.app,
            self.config,
            self.context,
            self.task_group,
            self.ssl,
            self.client,
            self.server,
            self.stream_send,
            STREAM_ID,
        )
        await self.stream.handle(
            Request(
                stream_id=STREAM_ID,
                headers=[(name, value) for _, name, value in items],
                http_version=request.http_version.decode(),
                method=request.method.decode("ascii").upper(),
                raw_path=request.target,
                state=self.connection_state,
            )
        )
        self.keep_alive_requests += 1
        await self.context.mark_request()


def _has_body(headers: Any) -> bool:
    for name, value in headers:
        if name == b"content-length":
            if value.strip() not in (b"0", b""):
                return True
        elif name == b"transfer-encoding":
            return True
    return False


def _address(getter: Callable[[], Any]) -> tuple[str, int] | None:
    try:
        address = getter()
    except OSError as exc:
        if exc.errno in (errno.ENOTCONN, errno.EINVAL):
            return None
        raise
    if isinstance(address, tuple):
        return (address[0], address[1])
    return None
