"""feedstream.web.requesthead: the short way reads exactly what h11 reads, or leaves it to h11.

Every head is read both ways: by :func:`plain_request` and by a fresh ``h11.Connection`` in the
server role. Whenever the short way answers, h11 must read the very same ``Request`` from the
same bytes, then the request's end, with nothing left over; whenever h11 refuses the bytes or
reads something else from them, the short way must have said None.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedstream.web.requesthead import (
    PLAIN_HEAD_MAX,
    LastHead,
    keeps_alive,
    plain_head,
    plain_request,
)

BROWSER = (
    b"GET /api/entries?after=1-5&timeout=30 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/120.0 Safari/537.36\r\nAccept: application/json, text/plain, */*\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Referer: http://127.0.0.1:8080/\r\nConnection: keep-alive\r\nSec-Fetch-Dest: empty\r\n"
    b"Sec-Fetch-Mode: cors\r\nSec-Fetch-Site: same-origin\r\n"
    b"Cookie: theme=dark; session=abcdefabcdefabcdefabcdef\r\n\r\n"
)


def h11_reads(data: bytes) -> h11.Request | None:
    """The Request h11 reads from *data* when *data* is one whole head with no body and nothing
    after it; None when h11 refuses it, wants more, or finds more than that."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    try:
        request = connection.next_event()
        if type(request) is not h11.Request:
            return None
        end = connection.next_event()
    except h11.RemoteProtocolError:
        return None
    if type(end) is not h11.EndOfMessage or connection.trailing_data[0]:
        return None
    return request


def same(short: h11.Request, long: h11.Request) -> bool:
    return (
        short.method == long.method
        and short.target == long.target
        and short.http_version == long.http_version
        and short.headers._full_items == long.headers._full_items
        and all(type(part) is bytes for item in short.headers._full_items for part in item)
    )


def check(data: bytes) -> h11.Request | None:
    """Both readers on *data*; the short way's result."""
    short = plain_request(data)
    if short is not None:
        long = h11_reads(data)
        assert long is not None, data
        assert same(short, long), (data, short, long)
    return short


PLAIN = [
    BROWSER,
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/stream HTTP/1.1\r\nhost: example.org\r\nLast-Event-ID: 1-2\r\n\r\n",
    b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://x/y HTTP/1.1\r\nHost: x\r\n\r\n",  # absolute form: h11 takes any target
    b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",  # h11 then ends keep-alive
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Spaces: \t a  b \t\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-Obs-Text: caf\xc3\xa9 \xff\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHOST: x\r\nAccept: a\r\naccept: b\r\n\r\n",
    b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n",  # no body headers: no body, as h11 reads it
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-Ctl: a\x01\x1c\x7fb\r\nX-Colon: a:b: c\r\nX-Blank: \t \r\n\r\n",
]

NOT_PLAIN = [
    b"GET /x HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET /x HTTP/1.1\r\n\r\n",  # no Host
    b"GET /x HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
    b"GET /x HTTP/1.1\nHost: x\n\n",  # bare LF: h11 reads it, the short way leaves it to h11
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n  b\r\n\r\n",  # obsolete line folding
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",  # pipelined
    b"GET /x HTTP/1.1\r\nHost: x\r\n",  # not whole yet
    b"\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-Cr: a\rb\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-Vt: a\x0bb\r\nX-Ff: c\x0cd\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-Lf: a\nb\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-\xc3\xa9: a\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nBad Name: a\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-Space : a\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"G@T /x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /x HTTP/2.0\r\nHost: x\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * PLAIN_HEAD_MAX + b"\r\n\r\n",
    b"",
]


@pytest.mark.parametrize("data", PLAIN)
def test_plain_heads_are_read_as_h11_reads_them(data: bytes) -> None:
    assert check(data) is not None


@pytest.mark.parametrize("data", NOT_PLAIN)
def test_other_heads_are_left_to_h11(data: bytes) -> None:
    assert check(data) is None


def test_the_request_is_h11s_own_event() -> None:
    """plain_request fills an h11.Request's slots itself (its constructor re-checks what the
    parse has checked); these are all the slots there are."""
    assert h11.Request.__slots__ == ("method", "headers", "target", "http_version")
    request = plain_request(BROWSER)
    assert type(request) is h11.Request and request == h11_reads(BROWSER)


def test_a_browser_re_poll_as_the_app_sees_it() -> None:
    request = check(BROWSER)
    assert request is not None
    assert request.method == b"GET" and request.target == b"/api/entries?after=1-5&timeout=30"
    assert request.headers[0] == (b"host", b"127.0.0.1:8080")
    assert request.headers.raw_items()[0] == (b"Host", b"127.0.0.1:8080")
    assert len(request.headers) == 11


# Generated heads: lines built from pieces that are valid, nearly valid and invalid, joined by
# CRLF or by something else, so that both readers meet the boundaries of the grammar.
_TOKENS = st.sampled_from(
    [b"Host", b"host", b"X-A", b"Accept", b"Content-Length", b"Upgrade", b"Expect",
     b"Connection", b"Transfer-Encoding", b"Bad Name", b"", b"X\x00", b"\xc3\xa9", b"a:b"]
)  # fmt: skip
_VALUES = st.one_of(
    st.sampled_from([b"x", b"", b" x ", b"\tx\t", b"a b", b"0", b"chunked", b"close", b"websocket",
                     b"100-continue", b"\xff", b"a\rb", b"a\nb", b"a\x00b", b"a\x0bb"]),
    st.binary(max_size=12),
)  # fmt: skip
_FIELDS = st.tuples(_TOKENS, st.sampled_from([b":", b": ", b" :", b""]), _VALUES).map(
    lambda parts: b"".join(parts)
)
_REQUEST_LINES = st.one_of(
    st.sampled_from(
        [b"GET / HTTP/1.1", b"GET /x?y=1 HTTP/1.1", b"HEAD / HTTP/1.1", b"CONNECT x:1 HTTP/1.1",
         b"GET / HTTP/1.0", b"GET  / HTTP/1.1", b"GET / HTTP/1.1 ", b"get / HTTP/1.1", b" GET / HTTP/1.1",
         b"GET /\xff HTTP/1.1", b"GET"]
    ),
    st.binary(max_size=20),
)  # fmt: skip
_BREAKS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\n "])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    parts = [draw(_REQUEST_LINES)]
    for field in draw(st.lists(_FIELDS, max_size=6)):
        parts += [draw(_BREAKS), field]
    end = draw(st.sampled_from([b"\r\n\r\n", b"\r\n\r\n", b"\n\n", b"\r\n", b"\r\n\r\nextra"]))
    return b"".join(parts) + end


@settings(max_examples=600, deadline=None)
@given(heads())
def test_generated_heads_read_alike(data: bytes) -> None:
    check(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(_FIELDS, max_size=6))
def test_generated_plain_shapes_read_alike(fields: list[bytes]) -> None:
    """Heads shaped as the short way takes them (CRLF lines, one Host), fields generated."""
    data = b"GET /x HTTP/1.1\r\nHost: x\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    check(data)


_NAMES = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    min_size=1,
    max_size=12,
).map(str.encode)
_SAFE_VALUES = st.binary(max_size=24).map(
    lambda value: value.translate(None, b"\x00\r\n\x0b\x0c")  # what h11 takes in a value
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_NAMES, st.sampled_from([b":", b": ", b":\t "]), _SAFE_VALUES)))
def test_every_plain_head_goes_the_short_way(fields: list[tuple[bytes, bytes, bytes]]) -> None:
    """Valid names, values of any byte h11 takes: the short way must take the head (unless a
    field is one that sends it to h11) and read it as h11 does."""
    data = b"GET /x HTTP/1.1\r\nHost: x\r\n"
    data += b"".join(name + colon + value + b"\r\n" for name, colon, value in fields) + b"\r\n"
    names = {name.lower() for name, _, _ in fields}
    if names & {b"host", b"content-length", b"transfer-encoding", b"expect", b"upgrade"}:
        return
    assert check(data) is not None, data


def as_head(
    request: h11.Request | None,
) -> tuple[bytes, bytes, tuple[tuple[bytes, bytes], ...]] | None:
    """What plain_head gives for what plain_request reads."""
    if request is None:
        return None
    return request.method, request.target, tuple((n, v) for _, n, v in request.headers._full_items)


def test_a_re_polls_repeated_header_lines_are_read_once() -> None:
    """plain_head with a connection's LastHead: a head whose header lines repeat the last
    plain head's (a re-poll: another target, the same headers) gets the same pairs without a
    second read; other lines are read afresh and remembered; a head that is not plain changes
    nothing."""
    last = LastHead()
    first = plain_head(BROWSER, last)
    assert first is not None and first == as_head(plain_request(BROWSER))
    assert last.pairs is first[2]
    again = BROWSER.replace(b"after=1-5", b"after=1-6")
    second = plain_head(again, last)
    assert second is not None and second[2] is first[2]
    assert second == as_head(h11_reads(again))
    other = BROWSER.replace(b"en-US", b"de-DE")
    third = plain_head(other, last)
    assert third is not None and third[2] is not first[2] and third == as_head(h11_reads(other))
    assert plain_head(other.replace(b"HTTP/1.1", b"HTTP/1.0"), last) is None
    assert plain_head(other.replace(b"GET ", b"CONNECT "), last) is None
    assert plain_head(other.replace(b"Host:", b"Host : "), last) is None
    assert last.pairs is third[2] and last.data is other


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PLAIN + NOT_PLAIN), max_size=8), st.lists(_FIELDS, max_size=4))
def test_reading_with_the_last_head_reads_alike(heads_: list[bytes], fields: list[bytes]) -> None:
    """Any sequence of heads (the same ones again, others, generated ones, targets that
    differ) read with one LastHead gives what plain_request reads from each on its own."""
    generated = b"GET /y HTTP/1.1\r\nHost: x\r\n" + b"".join(f + b"\r\n" for f in fields)
    retargeted = [h.replace(b" /", b" /z", 1) for h in heads_]
    last = LastHead()
    for data in [*heads_, generated + b"\r\n", *retargeted, *heads_]:
        assert plain_head(data, last) == as_head(plain_request(data))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"close", b"Close", b" CLOSE ", b"keep-alive", b"upgrade", b"", b"x"]),
        max_size=4,
    ),
    st.booleans(),
)
def test_keeps_alive_is_h11s_rule(tokens: list[bytes], split: bool) -> None:
    """keeps_alive over a plain head's pairs says what h11 says of the same request (after
    which h11 would close the connection)."""
    values = [b",".join(tokens)] if not split else tokens
    head = b"GET / HTTP/1.1\r\nHost: x\r\n"
    head += b"".join(b"Connection: " + value + b"\r\n" for value in values) + b"\r\n"
    request = h11_reads(head)
    pairs = as_head(plain_request(head))
    assert request is not None and pairs is not None
    assert keeps_alive(pairs[2]) is h11._connection._keep_alive(request)
