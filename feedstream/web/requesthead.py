"""A request head read the short way: the very ``h11.Request`` that h11 would read, or None.

A parked long-poll's client comes back with the same kind of request every round: a keep-alive
``GET`` whose whole head arrives in one read, some 500 bytes in a dozen lines. h11 reads it in
pure Python, one layer per line: a receive buffer cut into ``bytearray`` lines, a ``validate``
call and a ``groupdict`` per line, a generator for obsolete line folding, then a second pass
that lower-cases the names. At 10,000 listeners that is a good part of every re-poll
(``docs/hypercorn-notes.md`` §11).

:func:`plain_request` reads such a head with h11's own grammar (its compiled request-line and
header-field expressions, each line matched once) and builds the ``Request`` the way h11's reader
does (``_parsed=True``, names lower-cased, raw names kept). It takes only the plain case, and
returns None for everything else, which then goes to h11 as before:

* the bytes are exactly one whole head: they end with the blank line and hold no other, and
  every line ends with CRLF (h11 also takes a bare LF; the short way leaves that to it);
* ``HTTP/1.1``, not ``CONNECT``, exactly one ``Host``;
* no header that frames a body or changes the protocol (``Content-Length``,
  ``Transfer-Encoding``, ``Expect``, ``Upgrade``): h11 and hypercorn handle those;
* at most :data:`PLAIN_HEAD_MAX` bytes.

So a head either goes the short way and yields what h11 would have yielded, or goes h11's way;
``tests/web/test_requesthead.py`` holds both readers to that, over hand-picked and generated
heads. Pure: bytes in, an event out, no I/O.
"""

from __future__ import annotations

import h11
from h11._headers import Headers
from h11._readers import header_field_re, request_line_re

__all__ = ["PLAIN_HEAD_MAX", "plain_request"]

#: Longer heads (big cookies) go to h11: it is the rare case and h11 reads it the same.
PLAIN_HEAD_MAX = 16384
_END = b"\r\n\r\n"
#: Lower-cased names that send a head to h11: body framing, 100-continue, protocol switches.
_NOT_PLAIN = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade"))


def plain_request(data: bytes) -> h11.Request | None:
    """The ``h11.Request`` that h11 reads from *data* when *data* is exactly one plain request
    head (see the module docstring); None otherwise, when only h11 may read it."""
    if len(data) > PLAIN_HEAD_MAX or not data.endswith(_END):
        return None
    lines = data[: -len(_END)].split(b"\r\n")
    match = request_line_re.fullmatch(lines[0])
    if match is None:
        return None
    method, target, version = match.group("method", "target", "http_version")
    if version != b"1.1" or method == b"CONNECT":
        return None
    items: list[tuple[bytes, bytes, bytes]] = []
    hosts = 0
    for index in range(1, len(lines)):
        field = header_field_re.fullmatch(lines[index])
        if field is None:  # an empty line (a second head, a body), a fold, a bare CR or LF...
            return None
        raw_name, value = field.group("field_name", "field_value")
        name = raw_name.lower()
        if name in _NOT_PLAIN:
            return None
        if name == b"host":
            hosts += 1
        items.append((raw_name, name, value))
    if hosts != 1:
        return None
    return h11.Request(
        method=method, target=target, headers=Headers(items), http_version=version, _parsed=True
    )
