"""Differential tests: hyperhttp._proto.h1 against h11 plus the checks of
hyperhttp._proto.http11 (what the connection did before), on generated
valid responses and on mutated or deliberately broken ones, fed to both in
the same random pieces. Both must accept with the same status, fields, body,
trailers and leftover bytes, or both must refuse; the only allowed
difference is a refusal by us that is one of the divergences listed in the
h1 module docstring, and then only when the input has that feature.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from itertools import pairwise

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperhttp._exceptions import RemoteProtocolError
from hyperhttp._proto.h1 import End, Head, NeedData, ResponseParser
from hyperhttp._proto.http11 import MAX_HEAD_SIZE, check_response_head, new_client_connection

# Sized so the whole file runs in ~10 s on an idle core.
MANY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EACH = settings(max_examples=8, deadline=None)


@dataclass(frozen=True)
class Outcome:
    status: int
    version: str
    fields: list[tuple[bytes, bytes]]  # (lower-case name, value)
    body: bytes
    trailers: list[tuple[bytes, bytes]]
    trailing: bytes
    reusable: bool | None  # None: not compared (HTTP/1.0, divergence 5)


Result = Outcome | str  # a str is a refusal: the error message


def run_h11(method: str, pieces: list[bytes]) -> Result:
    conn = new_client_connection()
    headers = [("Host", "example.com")]
    if method == "POST":
        headers.append(("Content-Length", "0"))
    conn.send(h11.Request(method=method, target="/", headers=headers))
    conn.send(h11.EndOfMessage())
    head: h11.Response | None = None
    body = b""
    eof = False
    feed = iter(pieces)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                piece = next(feed, b"")
                eof = not piece
                conn.receive_data(piece)
            elif isinstance(event, h11.InformationalResponse):
                check_response_head(event, "h11")
            elif isinstance(event, h11.Response):
                check_response_head(event, "h11")
                head = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return f"h11 event {event!r}"
    except (h11.RemoteProtocolError, RemoteProtocolError) as exc:
        return str(exc)
    assert head is not None
    trailing = conn.trailing_data[0]
    reusable = (
        conn.our_state is h11.DONE and conn.their_state is h11.DONE and not trailing and not eof
    )
    version = head.http_version.decode()
    return Outcome(
        head.status_code,
        f"HTTP/{version}",
        [(n, v) for n, v in head.headers],
        body,
        [(n, v) for n, v in event.headers],
        trailing,
        reusable if version == "1.1" else None,
    )


def run_ours(method: str, pieces: list[bytes], max_head_size: int = MAX_HEAD_SIZE) -> Result:
    parser = ResponseParser(max_head_size=max_head_size)
    parser.start(method)
    head: Head | None = None
    body = b""
    feed = iter(pieces)
    try:
        while True:
            event = parser.next_event()
            if isinstance(event, NeedData):
                piece = next(feed, b"")
                if piece:
                    parser.feed(piece)
                else:
                    parser.feed_eof()
            elif isinstance(event, Head):
                assert head is None
                head = event
            elif isinstance(event, bytes):
                assert head is not None and event
                body += event
            else:
                assert isinstance(event, End)
                break
    except RemoteProtocolError as exc:
        return str(exc)
    assert head is not None

    def encode(fields: list[tuple[str, str, str]]) -> list[tuple[bytes, bytes]]:
        for name, lower, _ in fields:
            assert lower == name.lower()
        return [(lower.encode("latin-1"), v.encode("latin-1")) for _, lower, v in fields]

    return Outcome(
        head.status,
        head.http_version,
        encode(head.headers),
        body,
        encode(event.trailers),
        parser.trailing,
        parser.reusable if head.http_version == "HTTP/1.1" else None,
    )


_FOLD = re.compile(rb"\n[ \t]")
_BARE_CR_OR_NUL = re.compile(rb"\x00|\r(?!\n)")


def allowed_divergence(ours: str, theirs: Outcome, data: bytes) -> bool:
    """We refused and h11 (+ checks) accepted: is it a documented divergence
    that this input actually exhibits?"""
    if "obsolete line folding" in ours:
        return _FOLD.search(data) is not None  # divergence 1
    if "unsupported HTTP version" in ours:
        return theirs.version not in ("HTTP/1.0", "HTTP/1.1")  # divergence 2
    if "invalid chunk-size line" in ours:
        return b";" in data and _BARE_CR_OR_NUL.search(data) is not None  # divergence 3
    return False


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points) if b > a]


def compare(method: str, data: bytes, cuts: list[int]) -> tuple[Result, Result]:
    pieces = split(data, cuts)
    ours = run_ours(method, pieces)
    theirs = run_h11(method, pieces)
    if isinstance(ours, str) and isinstance(theirs, Outcome):
        assert allowed_divergence(ours, theirs, data), (ours, theirs, data)
    elif isinstance(ours, Outcome) and isinstance(theirs, Outcome):
        assert ours == theirs, data
    else:
        assert isinstance(ours, str) == isinstance(theirs, str), (ours, theirs, data)
    # The same answer whatever the pieces: one read must agree with many
    # (bytes past the end are only seen if they came with the last read).
    whole = run_ours(method, [data])
    assert isinstance(whole, str) == isinstance(ours, str), (whole, ours, data)
    if isinstance(ours, Outcome):
        assert isinstance(whole, Outcome)
        assert replace(whole, trailing=b"", reusable=None) == replace(ours, trailing=b"", reusable=None)
    return ours, theirs


# --- generators -------------------------------------------------------------
TOKEN = st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}", fullmatch=True)
VALUE_CHARS = st.sampled_from(
    [chr(c) for c in range(0x21, 0x7F)] + [" ", "\t", "\x01", "\x7f", "\x80", "\xa0", "\xff"]
)
FIELD_VALUE = st.text(VALUE_CHARS, max_size=20).map(lambda v: v.strip(" \t"))
OWS = st.sampled_from(["", " ", "  ", "\t", " \t"])
FRAMING = {"content-length", "transfer-encoding", "connection"}


@st.composite
def field_lines(draw: st.DrawFn, eol: str, *, max_fields: int = 8) -> list[str]:
    names = draw(st.lists(TOKEN.filter(lambda n: n.lower() not in FRAMING), max_size=max_fields))
    if names and draw(st.booleans()):
        names.append(draw(st.sampled_from(names)))  # a repeated field
    return [f"{n}:{draw(OWS)}{draw(FIELD_VALUE)}{draw(OWS)}{eol}" for n in names]


@st.composite
def chunked_body(draw: st.DrawFn, body: bytes, eol: str) -> bytes:
    out = []
    pos = 0
    while pos < len(body):
        size = draw(st.integers(1, max(1, len(body) - pos)))
        chunk = body[pos : pos + size]
        pos += size
        digits = draw(st.sampled_from(["%x", "%X", "%04x"])) % len(chunk)
        ext = draw(st.sampled_from(["", ";a=b", ";x", '; q="1"', ";a=b;c"]))
        ows = draw(st.sampled_from(["", " ", "\t"]))
        out.append(f"{digits}{ext}{ows}\r\n".encode() + chunk + b"\r\n")
    out.append(draw(st.sampled_from([b"0\r\n", b"000\r\n", b"0;end=1\r\n"])))
    trailers = draw(field_lines(eol, max_fields=3))
    out.append("".join(trailers).encode("latin-1") + eol.encode())
    return b"".join(out)


@st.composite
def responses(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid response: (request method, bytes), optionally after 1xx heads,
    optionally followed by extra bytes."""
    method = draw(st.sampled_from(["GET", "GET", "HEAD", "POST"]))
    eol = draw(st.sampled_from(["\r\n", "\r\n", "\r\n", "\n"]))
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"]))
    status = draw(st.sampled_from([200, 200, 201, 204, 206, 301, 304, 404, 500, 599]))
    reason = draw(st.one_of(st.none(), st.text(VALUE_CHARS, max_size=12)))
    status_line = f"HTTP/{version} {status}" + ("" if reason is None else f" {reason}")
    lines = draw(field_lines(eol))
    body = draw(st.binary(max_size=120))
    framing = draw(st.sampled_from(["length", "length", "chunked", "none"]))
    raw_body = b""
    if framing == "length":
        cl = str(len(body))
        lines.insert(
            draw(st.integers(0, len(lines))),
            draw(st.sampled_from(["Content-Length: {}", "content-length:{}", "CONTENT-LENGTH: 0{}"]))
            .format(cl) + eol,
        )
        if draw(st.integers(0, 5)) == 0:  # the same length said twice
            lines.append(draw(st.sampled_from(["Content-Length: {}", "Content-Length: {0}, {0}"])).format(
                ("0" + cl) if "CONTENT-LENGTH: 0" in "".join(lines) else cl) + eol)
        raw_body = body
    elif framing == "chunked":
        lines.insert(
            draw(st.integers(0, len(lines))),
            draw(st.sampled_from(["Transfer-Encoding: chunked", "transfer-encoding:Chunked"])) + eol,
        )
        raw_body = draw(chunked_body(body, eol))
    else:
        raw_body = body
    connection = draw(st.sampled_from([None, "keep-alive", "close", "Keep-Alive, Upgrade", "x"]))
    if connection is not None:
        lines.append(f"Connection: {connection}{eol}")
    prelude = ""
    if draw(st.integers(0, 4)) == 0:
        informational = draw(st.sampled_from([100, 102, 103]))
        prelude = f"HTTP/1.1 {informational} Info{eol}" + "".join(draw(field_lines(eol, max_fields=2))) + eol
    head = (prelude + status_line + eol + "".join(lines) + eol).encode("latin-1")
    data = head + raw_body
    if framing != "none" and draw(st.integers(0, 6)) == 0:
        data += draw(st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"garbage", b"\r\n"]))
    return method, data


CUTS = st.lists(st.integers(0, 10_000), max_size=8)
INTERESTING = [b"\x00", b"\r", b"\n", b" ", b"\t", b":", b"0", b"f", b"a", b"\x80", b";", b"\x0b", b","]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    method, data = draw(responses())
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        if not buf:
            break
        at = draw(st.integers(0, len(buf) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "byte"]))
        if op == "flip":
            buf[at : at + 1] = draw(st.sampled_from(INTERESTING))
        elif op == "insert":
            buf[at:at] = draw(st.sampled_from(INTERESTING))
        elif op == "delete":
            del buf[at]
        elif op == "truncate":
            del buf[at:]
        else:
            buf[at] = draw(st.integers(0, 255))
    return method, bytes(buf)


# --- the tests ----------------------------------------------------------------
@FAST
@given(responses(), CUTS)
def test_valid_responses_are_accepted_alike(case: tuple[str, bytes], cuts: list[int]) -> None:
    method, data = case
    ours, theirs = compare(method, data, cuts)
    # A valid response is accepted by both (only data past its end may be off).
    assert isinstance(theirs, Outcome), (theirs, data)
    assert isinstance(ours, Outcome)


@MANY
@given(mutated(), CUTS)
def test_mutated_responses_are_judged_alike(case: tuple[str, bytes], cuts: list[int]) -> None:
    compare(*case, cuts)


BROKEN_HEADS = [
    "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    "Content-Length: 5\r\nContent-Length: 6\r\n",
    "Content-Length: 5, 6\r\n",
    "Content-Length: 5,\r\n",
    "Content-Length: -5\r\n",
    "Content-Length: 0x5\r\n",
    "Content-Length: 1_0\r\n",
    "Content-Length: +5\r\n",
    "Content-Length: \xb2\r\n",
    "Content-Length: 123456789012345678901\r\n",
    "Content-Length:\r\n",
    "Transfer-Encoding: gzip\r\n",
    "Transfer-Encoding: gzip, chunked\r\n",
    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    "Bad Name: x\r\n",
    "Bad@Name: x\r\n",
    ": empty name\r\n",
    "No-Colon\r\n",
    "Nul: a\x00b\r\n",
    "Cr: a\rb\r\n",
    "Vt: a\x0bb\r\n",
    "Ff: a\x0cb\r\n",
]


@pytest.mark.parametrize("fields", BROKEN_HEADS)
@EACH
@given(st.binary(max_size=12), CUTS)
def test_broken_framing_and_fields_are_refused(fields: str, tail: bytes, cuts: list[int]) -> None:
    data = f"HTTP/1.1 200 OK\r\n{fields}\r\n".encode("latin-1") + b"5\r\nhello\r\n0\r\n\r\n" + tail
    ours, theirs = compare("GET", data, cuts)
    assert isinstance(ours, str) and isinstance(theirs, str)


BAD_CHUNKS = [
    b"g\r\n", b"\r\n", b"-1\r\n", b" 5\r\n", b"5 x\r\n", b"5\n",
    b"000000000000000000005\r\nhello\r\n0\r\n\r\n",  # 21 digits
    b"5\r\nhelloXX0\r\n\r\n", b"5\r\nhello\r\r0\r\n\r\n", b"5\r\nhello\n\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nBad Trailer: x\r\n\r\n",
    b"5\r\nhello\r\n0\r\nTransfer-Encoding: gzip\r\n\r\n",
]


@pytest.mark.parametrize("chunks", BAD_CHUNKS)
@EACH
@given(CUTS)
def test_bad_chunk_framing_is_refused(chunks: bytes, cuts: list[int]) -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    ours, theirs = compare("GET", data, cuts)
    assert isinstance(ours, str) and isinstance(theirs, str)


@FEW
@given(st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 100 Continue\r\n"]),
       st.integers(1, 3), st.booleans(), CUTS)
def test_oversized_heads_are_refused_in_one_piece_or_many(
    status: bytes, fields: int, one_piece: bool, cuts: list[int]
) -> None:
    # Well past the limit, so the exact accounting of either side is moot.
    filler = b"".join(b"X-Fill-%d: %s\r\n" % (i, b"v" * 30_000) for i in range(fields + 2))
    data = status + filler + b"Content-Length: 0\r\n\r\n"
    ours, theirs = compare("GET", data, [] if one_piece else cuts + list(range(0, len(data), 4096)))
    assert isinstance(ours, str) and isinstance(theirs, str)


@FAST
@given(responses(), st.integers(0, 10_000), CUTS)
def test_truncated_responses_are_judged_alike(
    case: tuple[str, bytes], at: int, cuts: list[int]
) -> None:
    method, data = case
    compare(method, data[: at % (len(data) + 1)], cuts)
