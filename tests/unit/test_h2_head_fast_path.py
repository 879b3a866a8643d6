"""The response HEADERS fast path (hyperhttp/_proto/h2heads.py) against h2.

Two h2 connections live the same random history (requests opened, answers
valid and not, undecodable blocks, blocks that change the HPACK table,
resets, SETTINGS, GOAWAY, close); on one every response HEADERS frame is
offered to `receive_headers_fast` first and goes to h2 only if declined.
After every step both must show the same result (the head's fields, the
stream's end, or the exception: class, message, error code), queue the same
bytes for the server and hold the same h2 state, HPACK tables included.
Also the caches of request and response fields.
"""

from __future__ import annotations

import re
from typing import Any

import h2.events
import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperhttp._exceptions import LocalProtocolError, RemoteProtocolError
from hyperhttp._proto import http2 as http2_proto
from hyperhttp._proto.h2heads import FAST_HEAD, receive_headers_fast
from hyperhttp._proto.http2 import (
    build_request_headers,
    new_client_connection,
    parse_response_head,
)

from .test_h2_fast_path import (
    ANSWERS,
    OPS,
    PREFACE,
    Fields,
    Op,
    _control,
    _error,
    _h2_picture,
    _server,
    connected_pair,
    raw_frame,
    step_alike,
)

# Heads that index fields in the server's dynamic table, and ones that
# refer to entries the client does not have.
INDEXED: list[Fields] = [
    [(":status", "200"), ("x-custom", "abc"), ("server", "s")],
    [(":status", "404"), ("x-custom", "abc"), ("content-length", "0")],
]


def _normal(events: Any) -> Any:
    """h2's events as the driver files them (a caller sees no more)."""
    if not isinstance(events, list):
        return events  # an error
    out: list[Any] = []
    for event in events:
        if isinstance(event, h2.events.ResponseReceived):
            out.append(("head", event.stream_id, event.headers))
        elif isinstance(event, h2.events.StreamEnded):
            out.append(("end", event.stream_id))
        elif isinstance(event, h2.events.InformationalResponseReceived):
            out.append(("1xx", event.stream_id))
        else:
            out.append(repr(event))
    return out


def _receive(h2c: Any, wire: bytes, *, fast: bool) -> Any:
    """Server bytes (one HEADERS frame, or other frames): what is filed."""
    try:
        # Both sides receive on a pruned table, as in test_h2_fast_path's
        # `_apply`: h2 forgets closed streams at its next count of open ones
        # (which its own request path makes), and the client forgets one
        # when a head arrives for it (prune_if_closed). Without the count,
        # plain h2 keeps a stream closed by END_STREAM and takes a second
        # head on it as a connection error, where the client, like h2 after
        # its count, answers STREAM_CLOSED for that stream alone.
        h2c.open_outbound_streams  # noqa: B018 - the count prunes
        if fast and wire[3] == 1 and wire[4] & 0x2C == 0x4:
            sid = int.from_bytes(wire[5:9], "big") & 0x7FFFFFFF
            end = bool(wire[4] & 0x1)
            got = receive_headers_fast(h2c, sid, wire[9:], end)
            if isinstance(got, bytes):
                return [("1xx", sid)]
            if got is not False:
                return [("head", sid, got), *([("end", sid)] if end else [])]
        return _normal(h2c.receive_data(wire))
    except Exception as exc:
        return _error(exc)


def _picture(h2c: Any) -> Any:
    return (_h2_picture(h2c), vars(h2c.decoder.header_table).copy())


HEAD_OPS = st.one_of(
    OPS,
    st.tuples(st.just("indexed"), st.tuples(st.integers(0, 7), st.integers(0, 3))),
    st.tuples(st.just("garbage"), st.tuples(st.integers(0, 7), st.binary(max_size=12))),
)


ANSWER_OPS = st.tuples(
    st.sampled_from(["answer", "answer", "indexed", "garbage"]),
    st.tuples(st.integers(0, 7), st.integers(0, 2 * len(ANSWERS) - 1)),
).map(lambda op: (op[0], (op[1][0], bytes([op[1][1]]) * 3)) if op[0] == "garbage" else op)
OPENS = st.lists(
    st.tuples(st.just("open"), st.tuples(st.integers(0, 3), st.booleans())), min_size=1, max_size=4
)


@settings(max_examples=300, deadline=None)
@given(OPENS, st.lists(st.one_of(HEAD_OPS, ANSWER_OPS, ANSWER_OPS), min_size=1, max_size=14))
def test_response_headers_fast_path_matches_h2(opens: list[Op], ops: list[Op]) -> None:
    """Answers (mostly) to streams opened first, among any other history."""
    assert FAST_HEAD  # otherwise this compares h2 with itself
    ops = opens + ops
    slow, fast, server = connected_pair()
    opened: list[int] = []
    for op in ops:
        kind, arg = op
        wire = None
        if kind in ("answer", "indexed", "garbage"):
            index, shape = arg
            sid = opened[index % len(opened)] if opened else 1
            if kind == "answer":
                wire = _server(sid, ANSWERS[shape // 2], bool(shape & 1), server)
            elif kind == "indexed":
                wire = _server(sid, INDEXED[shape % 4 // 2], bool(shape & 1), server)
            else:
                wire = raw_frame(1, 0x5, sid, shape)
            step_alike(slow, fast, op, wire, opened, _picture,
                       got=(_receive(slow, wire, fast=False), _receive(fast, wire, fast=True)))
        else:
            op, wire = _control(op, opened)
            step_alike(slow, fast, op, wire, opened, _picture)


def _pair() -> tuple[Any, Any]:
    pair = new_client_connection(), new_client_connection()
    fields = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"), (b":authority", b"h")]
    for h2c in pair:
        h2c.receive_data(PREFACE)
        h2c.send_headers(1, fields, end_stream=True)
        h2c.data_to_send()
    return pair


def test_fast_path_is_taken_for_a_plain_head_and_declines_the_rest() -> None:
    slow, fast = _pair()
    block = hpack.Encoder().encode([(":status", "200"), ("content-length", "2")])
    before = _picture(fast)
    assert receive_headers_fast(fast, 3, block, False) is False  # no such stream
    assert _picture(fast) == before
    got = receive_headers_fast(fast, 1, block, False)
    assert got == [(b":status", b"200"), (b"content-length", b"2")]
    slow.receive_data(raw_frame(1, 0x4, 1, block))
    assert _picture(fast) == _picture(slow)
    # A second block is trailers: left to h2, nothing decoded.
    before = _picture(fast)
    assert receive_headers_fast(fast, 1, block, True) is False
    assert _picture(fast) == before
    # After our GOAWAY h2 refuses everything: so do we, before decoding.
    fast.close_connection()
    _, other = _pair()
    other.close_connection()
    assert receive_headers_fast(other, 1, block, False) is False


def test_a_1xx_head_is_taken_as_h2_takes_it_and_its_status_returned() -> None:
    # The driver refuses a 101 (HTTP/2 has none, RFC 9113 8.6) and passes
    # over the others: the fast path says which it was, and leaves h2 where
    # h2's own path would, the final head still to come.
    slow, fast = _pair()
    encoder_fast, encoder_slow = hpack.Encoder(), hpack.Encoder()
    for status in ("103", "101"):
        fields = [(":status", status)]
        assert receive_headers_fast(fast, 1, encoder_fast.encode(fields), False) == (
            status.encode()
        )
        events = slow.receive_data(raw_frame(1, 0x4, 1, encoder_slow.encode(fields)))
        assert [type(e).__name__ for e in events] == ["InformationalResponseReceived"]
        assert _picture(fast) == _picture(slow)
    final = [(":status", "200")]
    assert receive_headers_fast(fast, 1, encoder_fast.encode(final), True) == [
        (b":status", b"200")
    ]


def test_a_refused_head_queues_h2s_goaway() -> None:
    slow, fast = _pair()
    block = hpack.Encoder().encode([(":status", "200"), ("Upper", "1")])
    got_fast = _receive(fast, raw_frame(1, 0x4, 1, block), fast=True)
    got_slow = _receive(slow, raw_frame(1, 0x4, 1, block), fast=False)
    assert got_fast == got_slow and got_fast[0] == "ProtocolError"
    sent = fast.data_to_send()
    assert sent == slow.data_to_send() and sent[3] == 0x7  # GOAWAY


def test_parsed_heads_are_cached_but_never_shared() -> None:
    fields = [(b":status", b"200"), (b"x-a", b"1"), (b"set-cookie", b"a=1")]
    status, first = parse_response_head(list(fields), "p")
    first["x-a"] = "changed"
    again, second = parse_response_head(list(fields), "p")
    assert (status, again) == (200, 200)
    assert second is not first and second["x-a"] == "1" and second.get_list("set-cookie") == ["a=1"]
    assert (b"x-a", b"1") in http2_proto._RESPONSE_FIELDS
    assert (b"set-cookie", b"a=1") not in http2_proto._RESPONSE_FIELDS
    other_status, _ = parse_response_head([(b":status", b"404"), (b"x-a", b"1")], "p")
    assert other_status == 404  # the status is never taken from a cached field
    for bad in ([(b":status", b"2x0")], [(b"x-a", b"1")]):
        for _ in range(2):  # refused the second time as well: failures are not kept
            with pytest.raises(RemoteProtocolError):
                parse_response_head(bad, "p")


REQUEST_CASES = [
    ("GET", "/a", [("Accept", "accept", "*/*")]),
    ("GET", "/a", [("Accept", "accept", "*/*"), ("X-B", "x-b", " 1 ")]),
    ("POST", "/a", [("Authorization", "authorization", "Bearer s")]),
    ("GET", "/a", [("Cookie", "cookie", "a=1")]),
    ("GET", "/a", [("Connection", "connection", "x-h"), ("X-H", "x-h", "1"), ("TE", "te", "a")]),
    ("G T", "/a", []),
    ("GET", "/a b", []),
    ("GET", "/a", [("X-Bad", "x-bad", "a\nb")]),
    ("GET", "/a", [("X-Euro", "x-euro", "\u20ac")]),
]


def _uncached(args: tuple[Any, ...]) -> Any:
    http2_proto._REQUEST_FIELDS.clear()
    try:
        return build_request_headers(*args)
    except LocalProtocolError as exc:
        return exc


def test_request_heads_are_cached_but_never_shared_and_credentials_not_kept() -> None:
    cases = [(method, "https", "h:1", target, list(fields)) for method, target, fields in REQUEST_CASES]
    expected = [_uncached(args) for args in cases]
    http2_proto._REQUEST_FIELDS.clear()
    for _ in range(2):
        for args, want in zip(cases, expected, strict=True):
            if isinstance(want, LocalProtocolError):
                with pytest.raises(LocalProtocolError, match=re.escape(str(want))):
                    build_request_headers(*args)
                continue
            got = build_request_headers(*args)
            assert got == want and list(map(type, got)) == list(map(type, want))
            got.append((b"x-mutated", b"1"))  # the caller's own list
    # One set of fields serves every target and authority.
    fields = [("Accept", "accept", "*/*")]
    a = build_request_headers("GET", "https", "a:1", "/x", fields)
    b = build_request_headers("PUT", "http", "b:2", "/y?z", fields)
    assert a[:4] == [(b":method", b"GET"), (b":authority", b"a:1"), (b":scheme", b"https"), (b":path", b"/x")]
    assert b[:4] == [(b":method", b"PUT"), (b":authority", b"b:2"), (b":scheme", b"http"), (b":path", b"/y?z")]
    assert a[4:] == b[4:] == [(b"accept", b"*/*")]
    kept = " ".join(repr(key) for key in http2_proto._REQUEST_FIELDS)
    assert "Bearer s" not in kept and "a=1" not in kept


@pytest.mark.parametrize("status", [b"099", b"000", b"600", b"999"])
def test_a_status_outside_100_to_599_is_a_malformed_response(status: bytes) -> None:
    # h2 checks only that there is one :status: both of its paths file this
    # head (the fast path, the same as h2). Ours refuses it then, as the
    # HTTP/1.1 parser refuses a status below 100.
    slow, fast = _pair()
    block = hpack.Encoder().encode([(":status", status.decode())])
    assert receive_headers_fast(fast, 1, block, True) == [(b":status", status)]
    assert _normal(slow.receive_data(raw_frame(1, 0x5, 1, block)))[0] == (
        "head", 1, [(b":status", status)]
    )
    for _ in range(2):  # and again: a refused status is not cached
        with pytest.raises(
            RemoteProtocolError, match=re.escape(f"response from p has an invalid :status {status!r}")
        ):
            parse_response_head([(b":status", status)], "p")
    for edge in (b"100", b"599"):
        assert parse_response_head([(b":status", edge)], "p")[0] == int(edge)
