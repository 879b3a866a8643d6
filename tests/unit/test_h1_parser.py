"""Unit tests for hyperhttp._proto.h1: the response parser's events,
framing and reuse verdicts, its refusals, and the request serializer."""

from __future__ import annotations

import time

import h11
import pytest

from hyperhttp._exceptions import LocalProtocolError, RemoteProtocolError
from hyperhttp._headers import Headers
from hyperhttp._proto.h1 import NEED_DATA, End, Event, Head, ResponseParser
from hyperhttp._proto.h1_request import (
    CHUNKED_END,
    encode_chunk,
    request_framing,
    serialize_request_head,
)

TYPICAL = (
    b"HTTP/1.1 200 OK\r\nServer: test\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 13\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nHello, world!"
)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value\r\nHello\r\n8\r\n, world!\r\n0\r\nX-Checksum: abc\r\nX-Other:  1 2 \r\n\r\n"
)


def events(parser: ResponseParser, *pieces: bytes, eof: bool = False) -> list[Event]:
    """Feed the pieces one by one, collecting events up to End."""
    out: list[Event] = []
    queue = list(pieces)
    for _ in range(len(pieces) + 100_000):
        event = parser.next_event()
        if event is NEED_DATA:
            if queue:
                parser.feed(queue.pop(0))
                continue
            if eof and not parser._eof:
                parser.feed_eof()
                continue
            return out
        out.append(event)
        if isinstance(event, End):
            return out
    raise AssertionError("no end")


def parse(data: bytes | list[bytes], method: str = "GET", **kw: int) -> tuple[ResponseParser, list[Event]]:
    parser = ResponseParser(**kw)
    parser.start(method)
    pieces = [data] if isinstance(data, bytes) else data
    return parser, events(parser, *pieces, eof=False)


def body_of(evs: list[Event]) -> bytes:
    return b"".join(e for e in evs if isinstance(e, bytes))


def refused(data: bytes | list[bytes], method: str = "GET", *, eof: bool = True, **kw: int) -> str:
    parser = ResponseParser(**kw)
    parser.start(method)
    pieces = [data] if isinstance(data, bytes) else data
    with pytest.raises(RemoteProtocolError) as info:
        events(parser, *pieces, eof=eof)
    return str(info.value)


# --- accepted responses -------------------------------------------------------
def test_typical_response_events_fields_and_reuse() -> None:
    parser, evs = parse(TYPICAL)
    head, body, end = evs
    assert isinstance(head, Head) and isinstance(end, End)
    assert (head.status, head.reason, head.http_version, head.keep_alive) == (200, "OK", "HTTP/1.1", True)
    assert head.headers == [
        ("Server", "server", "test"),
        ("Content-Type", "content-type", "text/plain"),
        ("Content-Length", "content-length", "13"),
        ("Set-Cookie", "set-cookie", "a=1"),
        ("Set-Cookie", "set-cookie", "b=2"),
    ]
    assert Headers.from_raw(head.headers).get_list("set-cookie") == ["a=1", "b=2"]
    assert body == b"Hello, world!" and end.trailers == []
    assert parser.reusable and parser.trailing == b""


def test_body_is_the_received_object_when_a_read_is_all_body() -> None:
    parser = ResponseParser()
    parser.start("GET")
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert isinstance(parser.next_event(), Head)
    assert parser.next_event() is NEED_DATA
    chunk = b"0123456789"
    parser.feed(chunk)
    assert parser.next_event() is chunk  # zero copy
    assert isinstance(parser.next_event(), End)


def test_length_left_counts_a_body_taken_past_the_parser() -> None:
    """A Content-Length body the parser holds nothing of may be taken from
    the socket by the caller: `length_left()` says how much is to come,
    `took()` counts it, and the body then ends as if it had been fed."""
    parser = ResponseParser()
    parser.start("GET")
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123")
    assert isinstance(parser.next_event(), Head)
    assert parser.length_left() == 0  # four body bytes are in the parser
    assert parser.next_event() == b"0123"
    assert parser.length_left() == 6
    with pytest.raises(RuntimeError, match="took"):
        parser.took(7)  # past the end of the body
    with pytest.raises(RuntimeError, match="took"):
        parser.took(0)
    parser.took(4)
    assert parser.length_left() == 2
    parser.feed(b"89")  # held by the parser again: the caller may not take
    assert parser.length_left() == 0
    with pytest.raises(RuntimeError, match="took"):
        parser.took(2)
    assert parser.next_event() == b"89"
    assert isinstance(parser.next_event(), End)
    assert parser.reusable
    assert parser.length_left() == 0  # no body under way

    chunked = ResponseParser()
    chunked.start("GET")
    chunked.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(chunked.next_event(), Head)
    assert chunked.length_left() == 0  # only Content-Length bodies


def test_took_the_whole_body_ends_it() -> None:
    parser = ResponseParser()
    parser.start("GET")
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert isinstance(parser.next_event(), Head)
    parser.took(5)
    assert parser.length_left() == 0
    assert isinstance(parser.next_event(), End)
    assert parser.reusable


@pytest.mark.parametrize("data", [TYPICAL, CHUNKED])
def test_every_split_point_gives_the_same_result(data: bytes) -> None:
    _, whole = parse(data)
    expected = (whole[0].headers, body_of(whole), whole[-1].trailers)  # type: ignore[union-attr]
    for cut in range(1, len(data)):
        _, evs = parse([data[:cut], data[cut:]])
        assert (evs[0].headers, body_of(evs), evs[-1].trailers) == expected, cut  # type: ignore[union-attr]
    _, evs = parse([data[i : i + 1] for i in range(len(data))])  # byte by byte
    assert (evs[0].headers, body_of(evs), evs[-1].trailers) == expected  # type: ignore[union-attr]


def test_chunked_body_extensions_ignored_and_trailers_parsed() -> None:
    parser, evs = parse(CHUNKED)
    assert body_of(evs) == b"Hello, world!"
    end = evs[-1]
    assert isinstance(end, End)
    assert end.trailers == [("X-Checksum", "x-checksum", "abc"), ("X-Other", "x-other", "1 2")]
    assert parser.reusable


@pytest.mark.parametrize(
    ("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304), ("HEAD", 404)]
)
def test_no_body_for_head_204_304(method: str, status: int) -> None:
    data = b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status
    parser, evs = parse(data, method)
    assert [type(e) for e in evs] == [Head, End]
    assert parser.reusable


def test_informational_heads_are_skipped() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + TYPICAL
    _, evs = parse(data)
    assert isinstance(evs[0], Head) and evs[0].status == 200 and body_of(evs) == b"Hello, world!"


def test_close_delimited_body_ends_at_eof_and_forbids_reuse() -> None:
    parser = ResponseParser()
    parser.start("GET")
    evs = events(parser, b"HTTP/1.0 200 OK\r\n\r\nsome ", b"body", eof=False)
    assert isinstance(evs[0], Head) and not evs[0].keep_alive
    assert body_of(evs) == b"some body" and not isinstance(evs[-1], End)
    parser.feed_eof()
    assert isinstance(parser.next_event(), End)
    assert not parser.reusable


@pytest.mark.parametrize(
    ("head", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: Upgrade, CLOSE\r\nContent-Length: 0\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: closed\r\nContent-Length: 0\r\n", True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n", True),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n", False),
    ],
)
def test_keep_alive_rules(head: bytes, reusable: bool) -> None:
    body = b"0\r\n\r\n" if b"chunked" in head else b""
    parser, evs = parse(head + b"\r\n" + body)
    assert isinstance(evs[-1], End)
    assert parser.reusable is reusable


def test_bytes_past_the_end_forbid_reuse_and_are_kept() -> None:
    parser, _ = parse(TYPICAL + b"extra")
    assert not parser.reusable and parser.trailing == b"extra"


def test_connect_tunnel_bytes_are_trailing() -> None:
    parser, evs = parse(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01", "CONNECT")
    assert [type(e) for e in evs] == [Head, End]
    assert parser.trailing == b"\x16\x03\x01" and not parser.reusable


def test_parser_is_reused_across_responses() -> None:
    parser = ResponseParser()
    for _ in range(3):
        parser.start("GET")
        assert body_of(events(parser, TYPICAL)) == b"Hello, world!"
        assert parser.reusable


def test_lf_only_heads_and_normalised_framing_fields() -> None:
    data = (
        b"HTTP/1.1 200 OK\nContent-Length: 2\nContent-Length: 2, 2\n"
        b"Transfer-encoding-x: y\n\nhi"
    )
    _, evs = parse(data)
    assert evs[0].headers == [  # type: ignore[union-attr]
        ("Content-Length", "content-length", "2"),
        ("Transfer-encoding-x", "transfer-encoding-x", "y"),
    ]
    _, evs = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n")
    assert evs[0].headers == [("Transfer-Encoding", "transfer-encoding", "chunked")]  # type: ignore[union-attr]


def test_values_keep_inner_whitespace_and_obs_text() -> None:
    _, evs = parse(b"HTTP/1.1 200 \r\nA:\t x \t y\t \r\nB:\r\nC: \xe9\x01\r\nContent-Length: 0\r\n\r\n")
    head = evs[0]
    assert isinstance(head, Head) and head.reason == ""
    assert [v for _, _, v in head.headers] == ["x \t y", "", "\xe9\x01", "0"]


def test_head_exactly_at_the_limit_is_accepted() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: "
    data = head + b"v" * (1024 - len(head) - 4) + b"\r\n\r\n"
    assert len(data) == 1024
    _, evs = parse(data, max_head_size=1024)
    assert isinstance(evs[-1], End)
    assert "larger than 1023" in refused(data, max_head_size=1023)


# --- refusals -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "both Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"1" * 21 + b"\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
         "more than one Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\n folded\r\nA: 1\r\n\r\n", "obsolete line folding"),
        (b"HTTP/1.1 200 OK\r\nA B: 1\r\n\r\n", "invalid field name"),
        (b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "without a colon"),
        (b"HTTP/1.1 200 OK\r\nA: x\x00y\r\n\r\n", "invalid character in the value"),
        (b"HTTP/1.1 200 OK\r\nA: x\ry\r\n\r\n", "invalid character in the value"),
        (b"HTTP/2.0 200 OK\r\n\r\n", "unsupported HTTP version"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 200OK\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 200 O\x00K\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 099 Low\r\n\r\n", "invalid status code"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "101"),
        (b"\r\nHTTP/1.1 200 OK\r\n\r\n", "invalid status line"),
        (b"\x16\x03\x01\x02\x00", "expected a status line"),
        (b"http/1.1 200 OK\r\n\r\n", "invalid status line"),
        (b"http/1.1 200 OK\r\n", "expected a status line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk-size line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x00\r\nhello\r\n", "invalid chunk-size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiX\r\n", "not followed by CRLF"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA B: c\r\n\r\n", "invalid field name"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", "4 bytes missing"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "chunked response body"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "middle of the response head"),
        (b"", "without sending a response"),
    ],
)
def test_refusals_name_the_problem(data: bytes, message: str) -> None:
    assert message in refused(data)


def test_obsolete_line_folding_is_unfolded_into_one_space() -> None:
    # RFC 9112 5.2: a user agent MUST replace each obs-fold with SP.
    _, evs = parse(b"HTTP/1.1 200 OK\r\nA: 1\r\n \t folded\r\nB: 2\r\nContent-Length: 0\r\n\r\n")
    head = evs[0]
    assert isinstance(head, Head)
    assert [(n, v) for n, _, v in head.headers] == [
        ("A", "1 folded"), ("B", "2"), ("Content-Length", "0")
    ]


def test_junk_is_refused_before_a_head_is_complete() -> None:
    parser = ResponseParser()
    parser.start("GET")
    parser.feed(b"\x16\x03")  # a TLS record, never a CRLF CRLF: no need to wait
    with pytest.raises(RemoteProtocolError):
        parser.next_event()


@pytest.mark.parametrize("piece", [65536 + 10, 1000, 7])
def test_oversized_head_refused_whatever_the_pieces(piece: int) -> None:
    data = b"HTTP/1.1 200 OK\r\n" + b"X-Fill: " + b"v" * 70_000 + b"\r\n\r\n"
    pieces = [data[i : i + piece] for i in range(0, len(data), piece)]
    assert "larger than 65536" in refused(pieces, eof=False)


def test_oversized_trailers_refused() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " + b"v" * 2000 + b"\r\n\r\n"
    assert "trailer section is larger" in refused(data, max_head_size=1024)


def test_misuse_is_a_runtime_error() -> None:
    parser = ResponseParser()
    with pytest.raises(RuntimeError):
        parser.next_event()
    parser.start("GET")
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    parser.next_event()
    with pytest.raises(RuntimeError):
        parser.start("GET")  # mid-response
    parser.feed_eof()
    with pytest.raises(RuntimeError):
        parser.feed(b"x")


# --- requests -----------------------------------------------------------------
def read_request(data: bytes) -> h11.Request:
    server = h11.Connection(h11.SERVER)
    server.receive_data(data)
    event = server.next_event()
    assert isinstance(event, h11.Request)
    return event


def test_request_head_host_first_and_framing_added() -> None:
    headers = [("Accept", "accept", "*/*"), ("X-Long", "x-long", "a b\tc")]
    data = serialize_request_head("GET", "/p?q=1", headers, body_length=0, host="example.com:8080")
    assert data == (
        b"GET /p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nX-Long: a b\tc\r\n\r\n"
    )
    request = read_request(data)
    assert request.target == b"/p?q=1" and request.headers[0] == (b"host", b"example.com:8080")


def test_request_head_moves_a_given_host_first() -> None:
    headers = [("Accept", "accept", "*/*"), ("HOST", "host", "h.test")]
    data = serialize_request_head("GET", "/", headers, body_length=0, host="ignored")
    assert data.startswith(b"GET / HTTP/1.1\r\nHOST: h.test\r\nAccept: */*\r\n")
    assert b"ignored" not in data


@pytest.mark.parametrize(
    ("method", "body_length", "expected"),
    [
        ("POST", None, b"Transfer-Encoding: chunked\r\n"),
        ("POST", 0, b"Content-Length: 0\r\n"),
        ("PUT", 12, b"Content-Length: 12\r\n"),
        ("GET", 3, b"Content-Length: 3\r\n"),
        ("GET", 0, b""),
        ("DELETE", 0, b""),
    ],
)
def test_request_framing_added_like_request_does(method: str, body_length: int | None, expected: bytes) -> None:
    data = serialize_request_head(method, "/", [], body_length=body_length, host="h")
    assert data == f"{method} / HTTP/1.1\r\nHost: h\r\n".encode() + expected + b"\r\n"
    assert request_framing([], body_length) == body_length


def test_request_framing_given_in_headers_is_kept() -> None:
    headers = [("Content-Length", "content-length", "4")]
    data = serialize_request_head("POST", "/", headers, body_length=None, host="h")
    assert data.count(b"Content-Length") == 1 and b"Transfer-Encoding" not in data
    assert request_framing(headers, None) == 4
    te = [("Transfer-Encoding", "transfer-encoding", "chunked")]
    assert request_framing(te, 10) is None
    assert b"Content-Length" not in serialize_request_head("POST", "/", te, body_length=10, host="h")


@pytest.mark.parametrize(
    "headers",
    [
        [("Transfer-Encoding", "transfer-encoding", "gzip")],
        [("Transfer-Encoding", "transfer-encoding", "chunked")] * 2,
        [("Content-Length", "content-length", "x")],
        [("Content-Length", "content-length", "1"), ("Content-Length", "content-length", "2")],
        [("Host", "host", "a"), ("Host", "host", "b")],
    ],
)
def test_request_framing_refuses_what_h11_refused(headers: list[tuple[str, str, str]]) -> None:
    with pytest.raises(LocalProtocolError):
        request_framing(headers, 0)


def test_chunk_encoding_round_trips_through_h11() -> None:
    assert encode_chunk(b"") == []
    data = b"".join([
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        *encode_chunk(b"x" * 300), *encode_chunk(b"yz"), CHUNKED_END,
    ])
    piece = b"yz"
    assert encode_chunk(piece)[1] is piece  # the data itself, not a copy
    _, evs = parse(data)
    assert body_of(evs) == b"x" * 300 + b"yz"
    assert encode_chunk(b"x" * 300)[0] == b"12c\r\n"


# --- take_body: the whole Content-Length body at once ----------------------------
def _after_head(data: bytes, method: str = "GET") -> ResponseParser:
    parser = ResponseParser()
    parser.start(method)
    parser.feed(data)
    assert isinstance(parser.next_event(), Head)
    return parser


def test_take_body_returns_a_whole_buffered_body_and_ends_the_response() -> None:
    parser = _after_head(TYPICAL)
    assert parser.take_body() == b"Hello, world!"
    assert parser.reusable
    parser.start("GET")  # the next response may follow


def test_take_body_consumes_nothing_when_the_body_is_not_all_there() -> None:
    parser = _after_head(TYPICAL[:-3])
    assert parser.take_body() is None
    assert parser.next_event() == b"Hello, wor"
    parser.feed(b"ld!")
    assert parser.take_body() == b"ld!" and parser.reusable


@pytest.mark.parametrize(
    ("data", "method"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\n", "GET"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET"),
    ],
)
def test_take_body_of_an_empty_body(data: bytes, method: str) -> None:
    parser = _after_head(data, method)
    assert parser.take_body() == b"" and parser.reusable


def test_take_body_leaves_chunked_and_close_delimited_bodies_to_events() -> None:
    assert _after_head(CHUNKED).take_body() is None
    parser = _after_head(b"HTTP/1.1 200 OK\r\n\r\nuntil eof")
    assert parser.take_body() is None and parser.next_event() == b"until eof"


def test_take_body_with_bytes_past_the_response_forbids_reuse() -> None:
    parser = _after_head(TYPICAL + b"HTTP/1.1 200 OK\r\n")
    assert parser.take_body() == b"Hello, world!"
    assert not parser.reusable


# --- refusals that must stay cheap, and quote no secret ------------------------------

_RUN = 32_000  # a line of this size is well under the 64 KiB head limit


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nX:" + b" " * _RUN + b"\x00\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a" + b" " * _RUN + b"\x00\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX:" + b" \t" * _RUN + b"\r\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"a " * _RUN + b"\x00\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX:" + b" " * _RUN + b"\x00\r\n\r\n",
        # A chunk-size line costs less per space: a longer one shows it.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;" + b" " * 60_000
        + b"\x00\r\nhello\r\n",
    ],
    ids=["ows-then-nul", "value-then-spaces", "ows-then-cr", "words-then-nul", "trailer",
         "chunk-ext"],
)
def test_a_long_run_of_whitespace_before_a_bad_byte_is_refused_at_once(data: bytes) -> None:
    """A pattern in which two parts can both take the same spaces tries every
    split of the run: refusing such a line once took 9 s of CPU at 20 KB,
    with the event loop stopped. Each is refused in linear time now; the
    bound is generous (the fix takes milliseconds)."""
    started = time.perf_counter()
    message = refused(data)
    assert time.perf_counter() - started < 2.0
    assert "invalid" in message


def test_a_refused_field_line_is_named_not_quoted() -> None:
    """Values and lines that are not fields may carry a cookie or token."""
    secret = "sid-SECRET-4242"
    cookie = refused(f"HTTP/1.1 200 OK\r\nSet-Cookie: s={secret}\x00x\r\n\r\n".encode())
    assert secret not in cookie
    assert "invalid character in the value of field 'Set-Cookie' ('\\x00' at column 30" in cookie
    bare = refused(f"HTTP/1.1 200 OK\r\nA: 1\r\nX-Token {secret}\r\n\r\n".encode())
    assert secret not in bare
    assert "field line 2 without a colon" in bare
    name = refused(f"HTTP/1.1 200 OK\r\n{secret} x: 1\r\n\r\n".encode())
    assert secret not in name
    assert "invalid field name in field line 1: character ' ' at column 16" in name


def test_after_an_accepted_fold_the_line_at_fault_is_blamed() -> None:
    message = refused(b"HTTP/1.1 200 OK\r\nA: 1\r\n b\r\nNoColon\r\n\r\n")
    assert "field line 2 without a colon" in message
    assert "folding" not in message
