"""A request head read the short way: the very ``h11.Request`` that h11 would read, or None.

A parked long-poll's client comes back with the same kind of request every round: a keep-alive
``GET`` whose whole head arrives in one read, some 500 bytes in a dozen lines. h11 reads it in
pure Python, one layer per line: a receive buffer cut into ``bytearray`` lines, a ``validate``
call and a ``groupdict`` per line, a generator for obsolete line folding, then a second pass
that lower-cases the names. At 10,000 listeners that is a good part of every re-poll
(``docs/hypercorn-notes.md`` §11).

:func:`plain_request` reads such a head by h11's own grammar (its compiled request-line
expression; for the header lines the same rules checked with bytes methods, a few C calls per
line) and builds the ``Request`` that h11's reader builds (names lower-cased, raw names kept,
values without their blanks). It takes only the plain case, and returns None for everything
else, which then goes to h11 as before:

* the bytes are exactly one whole head: they end with the blank line and hold no other, and
  every line ends with CRLF (h11 also takes a bare LF; the short way leaves that to it);
* ``HTTP/1.1``, not ``CONNECT``, exactly one ``Host``;
* no header that frames a body or changes the protocol (``Content-Length``,
  ``Transfer-Encoding``, ``Expect``, ``Upgrade``): h11 and hypercorn handle those;
* at most :data:`PLAIN_HEAD_MAX` bytes.

:func:`plain_head` reads the same heads for the connection's direct way, which needs no
``Request``: the method, the target and the ``(name, value)`` pairs hypercorn would put in the
scope, with a connection's repeated header lines read once (:class:`LastHead`);
:func:`keeps_alive` is h11's keep-alive rule over those pairs.

So a head either goes the short way and yields what h11 would have yielded, or goes h11's way;
``tests/web/test_requesthead.py`` holds both readers to that, over hand-picked and generated
heads. Pure: bytes in, an event out, no I/O.
"""

from __future__ import annotations

import h11
from h11._headers import Headers
from h11._readers import request_line_re

__all__ = ["PLAIN_HEAD_MAX", "LastHead", "PlainHead", "keeps_alive", "plain_head", "plain_request"]

#: Longer heads (big cookies) go to h11: it is the rare case and h11 reads it the same.
PLAIN_HEAD_MAX = 16384
_END = b"\r\n\r\n"
#: Lower-cased names that send a head to h11: body framing, 100-continue, protocol switches.
_NOT_PLAIN = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade"))
#: h11's ``token`` (a header name), as the bytes ``translate`` deletes.
_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_OWS = b" \t"


#: What the direct way needs of a plain head: method, target and the ``(name, value)`` pairs
#: (names lower-case, values without their blanks), as h11 and hypercorn would give them.
PlainHead = tuple[bytes, bytes, tuple[tuple[bytes, bytes], ...]]


class LastHead:
    """A connection's last plain head read by :func:`plain_head`: its bytes, where its header
    lines start, and the pairs they read to.

    A client's next request nearly always repeats its header lines byte for byte (a re-poll
    differs in its target only), and the same bytes read the same: the next head is then
    checked by its request line alone and gets the same (immutable) pairs. What is kept is
    what a parked request holds anyway (its head, its headers), once per connection.
    """

    __slots__ = ("data", "pairs", "start")

    def __init__(self) -> None:
        self.data = b""
        self.start = 0
        self.pairs: tuple[tuple[bytes, bytes], ...] = ()


def plain_request(data: bytes) -> h11.Request | None:
    """The ``h11.Request`` that h11 reads from *data* when *data* is exactly one plain request
    head (see the module docstring); None otherwise, when only h11 may read it.
    """
    line = _request_line(data)
    if line is None:
        return None
    start, method, target, version = line
    items = _header_items(data[start : -len(_END)])
    if items is None:
        return None
    return _request(method, target, version, Headers(items))


def plain_head(data: bytes, last: LastHead) -> PlainHead | None:
    """What :func:`plain_request` reads from *data*, as a :data:`PlainHead`, or None when it
    reads nothing. Header lines that repeat *last*'s are not read again; a new plain head is
    remembered in *last*.
    """
    line = _request_line(data)
    if line is None:
        return None
    start, method, target, _ = line
    known = last.data
    if len(data) - start == len(known) - last.start and data.endswith(known[last.start :]):
        pairs = last.pairs
    else:
        items = _header_items(data[start : -len(_END)])
        if items is None:
            return None
        pairs = last.pairs = tuple([(name, value) for _, name, value in items])
    last.data, last.start = data, start
    return method, target, pairs


def keeps_alive(pairs: tuple[tuple[bytes, bytes], ...]) -> bool:
    """Whether an HTTP/1.1 request with these headers keeps the connection alive: h11's own
    rule (``_keep_alive`` over ``get_comma_header``): no ``close`` among the comma-separated
    tokens of its ``Connection`` headers."""
    for name, value in pairs:
        if name == b"connection" and b"close" in [t.strip() for t in value.lower().split(b",")]:
            return False
    return True


def _request_line(data: bytes) -> tuple[int, bytes, bytes, bytes] | None:
    """Where the header lines start, and the method, target and version, when *data* may be
    a plain head by its size, its end and its request line."""
    if len(data) > PLAIN_HEAD_MAX or not data.endswith(_END):
        return None
    line_end = data.find(b"\r\n")
    match = request_line_re.fullmatch(data, 0, line_end)
    if match is None:
        return None
    method, target, version = match.group("method", "target", "http_version")
    if version != b"1.1" or method == b"CONNECT":
        return None
    return line_end + 2, method, target, version


def _header_items(block: bytes) -> list[tuple[bytes, bytes, bytes]] | None:
    """h11's ``(raw name, name, value)`` triples of a plain head's header lines (*block*,
    without the blank line), or None when they are not a plain head's.

    h11's header grammar (``h11._abnf.header_field``) is a token, a colon, optional blanks, a
    value and optional blanks, where the value is runs of bytes other than NUL and ASCII
    whitespace (space, tab, CR, LF, VT, FF) separated by spaces and tabs. Checked here with
    bytes methods rather than a regular expression per line: no NUL, VT or FF anywhere, no CR
    or LF but the line ends, each name all token bytes, each value stripped of its blanks.
    """
    lines = block.split(b"\r\n")
    if (
        not block
        or block.count(b"\r") != len(lines) - 1
        or block.count(b"\n") != len(lines) - 1
        or b"\x00" in block
        or b"\x0b" in block
        or b"\x0c" in block
    ):
        return None  # no Host, a bare CR or LF (or a blank line: a body, a second head)
    items: list[tuple[bytes, bytes, bytes]] = []
    hosts = 0
    for line in lines:
        raw_name, colon, value = line.partition(b":")
        if not colon or not raw_name or raw_name.translate(None, _TOKEN):
            return None  # no colon, no name, or a name with a blank, a bracket, a byte > 127...
        name = raw_name.lower()
        if name in _NOT_PLAIN:
            return None
        if name == b"host":
            hosts += 1
        items.append((raw_name, name, value.strip(_OWS)))
    if hosts != 1:
        return None
    return items


def _request(method: bytes, target: bytes, version: bytes, headers: Headers) -> h11.Request:
    """``h11.Request(..., _parsed=True)`` without its checks, which the caller has made: the
    request line matched h11's grammar (method and target included) and there is one Host.
    (The constructor's own count of Hosts walks h11's ``Headers`` item by item.)"""
    request = object.__new__(h11.Request)
    object.__setattr__(request, "method", method)
    object.__setattr__(request, "target", target)
    object.__setattr__(request, "http_version", version)
    object.__setattr__(request, "headers", headers)
    return request
