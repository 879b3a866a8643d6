"""The request-head cache of hyperhttp._proto.h1_request: a set of header
fields is checked and serialised once, and what comes out is what the
uncached path (h11 as the reader) would see, whatever was cached before."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperhttp._exceptions import LocalProtocolError
from hyperhttp._proto import h1_request
from hyperhttp._proto.h1_request import check_request_line, field_block

Field = tuple[str, str, str]


def fields(*pairs: tuple[str, str]) -> list[Field]:
    return [(n, n.lower(), v) for n, v in pairs]


def read_request(data: bytes) -> tuple[h11.Request, bytes]:
    server = h11.Connection(h11.SERVER)
    server.receive_data(data)
    event = server.next_event()
    assert isinstance(event, h11.Request)
    body = b""
    while True:
        nxt = server.next_event()
        if isinstance(nxt, h11.Data):
            body += nxt.data
        else:
            assert nxt is h11.NEED_DATA or isinstance(nxt, h11.EndOfMessage)
            return event, body


def test_same_fields_give_the_same_block_and_changed_ones_another() -> None:
    a = fields(("Accept", "*/*"), ("X-Token", "one"))
    assert field_block(a) is field_block(list(a))
    other = field_block(fields(("Accept", "*/*"), ("X-Token", "two")))
    assert other is not field_block(a)
    assert b"X-Token: two\r\n" in other.lines and b"one" not in other.lines


def test_one_block_serves_every_target_host_and_body_length() -> None:
    block = field_block(fields(("Accept", "*/*")))
    get = block.head("GET", "/a?x=1", "a.test:8080", 0)
    assert get == b"GET /a?x=1 HTTP/1.1\r\nHost: a.test:8080\r\nAccept: */*\r\n\r\n"
    post = block.head("POST", "/b", "b.test", 5) + b"hello"
    request, body = read_request(post)
    assert request.target == b"/b" and (b"host", b"b.test") in request.headers
    assert (b"content-length", b"5") in request.headers and body == b"hello"
    chunked = block.head("PUT", "/c", "c.test", None)
    assert chunked.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert block.framing(5) == 5 and block.framing(None) is None


def test_declared_framing_wins_over_the_body_length() -> None:
    block = field_block(fields(("Content-Length", "4")))
    assert block.framing(None) == 4 and block.framing(10) == 4
    head = block.head("POST", "/", "h", None)
    assert head.count(b"Content-Length") == 1 and b"Transfer-Encoding" not in head
    te = field_block(fields(("Transfer-Encoding", "chunked")))
    assert te.framing(10) is None
    assert b"Content-Length" not in te.head("POST", "/", "h", 10)


def test_a_given_host_goes_first_and_the_url_host_is_not_added() -> None:
    block = field_block(fields(("Accept", "*/*"), ("HOST", "h.test")))
    head = block.head("GET", "/", "ignored", 0)
    assert head.startswith(b"GET / HTTP/1.1\r\nHOST: h.test\r\nAccept: */*\r\n")
    assert b"ignored" not in head


@pytest.mark.parametrize(
    "bad",
    [
        fields(("X-A", "ok"), ("X-B", "evil\r\nInjected: 1")),
        fields(("Bad Name", "v")),
        fields(("Transfer-Encoding", "gzip")),
        fields(("Host", "a"), ("Host", "b")),
        fields(("Content-Length", "1"), ("Content-Length", "2")),
    ],
)
def test_a_bad_field_is_refused_even_next_to_cached_ones(bad: list[Field]) -> None:
    field_block(fields(("X-A", "ok")))  # the good field is known now
    with pytest.raises(LocalProtocolError):
        field_block(bad)
    with pytest.raises(LocalProtocolError):  # and nothing refused was cached
        field_block(bad)


@pytest.mark.parametrize(("method", "target"), [("GE T", "/"), ("GET", "/a b"), ("GET", ""), ("GET", "/\x00")])
def test_bad_request_lines_are_refused_every_time(method: str, target: str) -> None:
    for _ in range(2):
        with pytest.raises(LocalProtocolError):
            check_request_line(method, target)


def test_caches_stay_bounded() -> None:
    for i in range(h1_request._CACHE_MAX * 2 + 10):
        field_block(fields(("X-Request-Id", str(i))))
        check_request_line("GET", f"/{i}")
    assert len(h1_request._BLOCKS) <= h1_request._CACHE_MAX
    assert len(h1_request._VALID_FIELDS) <= h1_request._CACHE_MAX
    assert len(h1_request._VALID_LINES) <= h1_request._CACHE_MAX


_names = st.sampled_from(["Accept", "X-Id", "Host", "User-Agent", "content-length", "Cookie"])
_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    history=st.lists(st.lists(st.tuples(_names, _values), max_size=4), max_size=6),
    pairs=st.lists(st.tuples(_names, _values), max_size=5),
    body_length=st.one_of(st.none(), st.integers(0, 50)),
)
def test_cached_heads_read_back_like_the_fields_given(
    history: list[list[tuple[str, str]]],
    pairs: list[tuple[str, str]],
    body_length: int | None,
) -> None:
    """Whatever was cached before, a head either is refused or, read by h11,
    carries exactly the fields given (Host first, framing as declared)."""
    for earlier in history:
        try:
            field_block(fields(*earlier))
        except LocalProtocolError:
            pass
    given_fields = fields(*pairs)
    try:
        block = field_block(given_fields)
    except LocalProtocolError:
        return
    length = block.framing(body_length)
    head = block.head("POST", "/t", "u.test", body_length)
    body = b"x" * (length or 0)
    try:
        request, received = read_request(head + body + (b"0\r\n\r\n" if length is None else b""))
    except h11.RemoteProtocolError:
        pytest.fail(f"h11 refused a head we accepted: {head!r}")
    seen = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers]
    assert seen[0][0] == "host"
    sent = [(lower, value.strip(" \t")) for _, lower, value in given_fields]
    # h11 merges repeated equal Content-Length fields into one, as it should.
    lengths = [f for f in sent if f[0] == "content-length"]
    sent = [f for f in sent if f[0] != "content-length"] + lengths[:1]
    framing_added = [f for f in seen if f[0] in ("content-length", "transfer-encoding")]
    expected = [f for f in sent if f[0] == "host"] or [("host", "u.test")]
    expected += [f for f in sent if f[0] != "host"]
    rest = [f for f in seen if f not in framing_added or f in sent]
    assert sorted(rest) == sorted(expected)
    assert received == body
