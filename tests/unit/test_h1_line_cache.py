"""The caches of the HTTP/1.1 response parser: whole heads and field lines
seen before skip the parsing, and nothing a fresh parser refuses is
accepted because a head, a line or its framing was cached by an earlier
response."""

from __future__ import annotations

import pytest

from hyperhttp import _urls
from hyperhttp._exceptions import LocalProtocolError, RemoteProtocolError
from hyperhttp._proto import h1_fields, h1_request
from hyperhttp._proto.h1 import End, Head, ResponseParser
from hyperhttp._proto.h1_request import serialize_request_head
from hyperhttp._urls import URL

from .test_h1_parser import parse, refused


def head_of(data: bytes) -> Head:
    _, evs = parse(data)
    head = evs[0]
    assert isinstance(head, Head) and isinstance(evs[-1], End)
    return head


def test_lines_seen_before_give_the_same_fields() -> None:
    data = b"HTTP/1.1 200 OK\r\nServer: cache-test\r\nX-A:  spaced value \t\r\nContent-Length: 2\r\n\r\nok"
    first = head_of(data).headers
    assert "Server: cache-test" in h1_fields._KNOWN_LINES and "Content-Length: 2" in h1_fields._KNOWN_FRAMING
    assert head_of(data).headers == first == [
        ("Server", "server", "cache-test"),
        ("X-A", "x-a", "spaced value"),
        ("Content-Length", "content-length", "2"),
    ]


def test_a_case_or_value_change_is_not_mistaken_for_a_cached_line() -> None:
    head_of(b"HTTP/1.1 200 OK\r\nX-Case: one\r\nContent-Length: 0\r\n\r\n")
    fields = head_of(b"HTTP/1.1 200 OK\r\nx-case: One\r\nContent-Length: 0\r\n\r\n").headers
    assert fields[0] == ("x-case", "x-case", "One")


@pytest.mark.parametrize(
    ("framing", "message"),
    [
        (b"Content-Length: 3\r\nContent-Length: 4\r\n", "conflicting Content-Length"),
        (b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "both Content-Length and Transfer-Encoding"),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "more than one Transfer-Encoding"),
    ],
)
def test_cached_framing_lines_are_still_checked_together(framing: bytes, message: str) -> None:
    # Every line below was accepted (and cached) in a response of its own.
    for line in framing.split(b"\r\n")[:-1]:
        extra = b"0\r\n\r\n" if b"chunked" in line else b"x" * int(line.rsplit(b" ", 1)[1])
        parse(b"HTTP/1.1 200 OK\r\n" + line + b"\r\n\r\n" + extra)
    assert message in refused(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\nabcd")


def test_folded_and_bare_lf_heads_take_the_exact_path() -> None:
    head_of(b"HTTP/1.1 200 OK\r\nX-Fold: a\r\nContent-Length: 0\r\n\r\n")
    folded = head_of(b"HTTP/1.1 200 OK\r\nX-Fold: a\r\n  b\r\nContent-Length: 0\r\n\r\n")
    assert folded.headers[0] == ("X-Fold", "x-fold", "a b")
    bare = head_of(b"HTTP/1.1 200 OK\nX-Fold: a\nContent-Length: 0\n\n")
    assert bare.headers[0] == ("X-Fold", "x-fold", "a")


def test_a_bad_line_is_refused_whatever_was_cached() -> None:
    head_of(b"HTTP/1.1 200 OK\r\nX-Bad: fine\r\nContent-Length: 0\r\n\r\n")
    assert "malformed" in refused(b"HTTP/1.1 200 OK\r\nX-Bad: fi\x00ne\r\nContent-Length: 0\r\n\r\n")
    assert "malformed" in refused(b"HTTP/1.1 200 OK\r\nX Bad: fine\r\nContent-Length: 0\r\n\r\n")


def test_the_cache_stays_bounded_and_long_lines_are_not_kept() -> None:
    for i in range(h1_fields._KNOWN_LINES_MAX + 50):
        head_of(b"HTTP/1.1 200 OK\r\nX-Id: %d\r\nContent-Length: 0\r\n\r\n" % i)
    assert len(h1_fields._KNOWN_LINES) <= h1_fields._KNOWN_LINES_MAX
    long_line = "X-Long: " + "v" * (h1_fields._KNOWN_LINE_LEN + 1)
    head_of(b"HTTP/1.1 200 OK\r\n" + long_line.encode() + b"\r\nContent-Length: 0\r\n\r\n")
    assert long_line not in h1_fields._KNOWN_LINES


def test_parser_instances_share_nothing_but_the_cache() -> None:
    a, b = ResponseParser(), ResponseParser()
    a.start("GET")
    b.start("HEAD")
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    a.feed(data + b"hello")
    b.feed(data)
    assert isinstance(a.next_event(), Head) and a.next_event() == b"hello"
    assert isinstance(b.next_event(), Head) and isinstance(b.next_event(), End)
    with pytest.raises(RemoteProtocolError):
        c = ResponseParser()
        c.start("GET")
        c.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
        c.next_event()


def test_a_bare_cr_before_the_line_end_is_refused() -> None:
    """Found by the h11 differential test: a line ending in CR CR LF must
    not pass as a field line once split on CRLF."""
    assert "malformed" in refused(b"HTTP/1.1 200 OK\r\nX-A: 0 \r\r\nContent-Length: 0\r\n\r\n")
    assert "X-A: 0 \r" not in h1_fields._KNOWN_LINES


def test_a_head_seen_before_gives_equal_fields_in_a_list_of_its_own() -> None:
    data = b"HTTP/1.1 203 Cached\r\nServer: head-cache\r\nContent-Length: 2\r\n\r\nok"
    first = head_of(data)
    assert data[:-4].decode() in h1_fields._KNOWN_HEADS
    again = head_of(data)
    assert (again.status, again.reason, again.headers) == (203, "Cached", first.headers)
    # Headers adopts the list and may change it: a later response must not see that.
    assert again.headers is not first.headers
    first.headers.append(("X-Added", "x-added", "1"))
    assert head_of(data).headers == [
        ("Server", "server", "head-cache"), ("Content-Length", "content-length", "2"),
    ]


def test_an_informational_head_is_never_cached() -> None:
    """A cached entry is always a final head: a 1xx must still be skipped
    the second time it is seen."""
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
    for _ in range(2):
        _, evs = parse(data)
        assert [type(e) for e in evs] == [Head, bytes, End] and evs[0].status == 200
    assert "HTTP/1.1 100 Continue\r\n" not in h1_fields._KNOWN_HEADS


def test_a_cached_head_is_framed_by_each_request_and_connection_header() -> None:
    """What depends on the request (HEAD, CONNECT) is decided per parse."""
    data = b"HTTP/1.1 200 OK\r\nX-Per: request\r\nContent-Length: 3\r\n\r\n"
    head_of(data + b"abc")
    cases = (
        ("HEAD", b"", [Head, End], True),
        ("GET", b"abc", [Head, bytes, End], True),
        ("CONNECT", b"abc", [Head, End], False),  # a tunnel: "abc" is not the body
    )
    for method, body, events, reusable in cases:
        p = ResponseParser()
        p.start(method)
        p.feed(data + body)
        got = [p.next_event() for _ in events]
        assert [type(e) for e in got] == events and p.reusable is reusable, method
    closing = data.replace(b"X-Per: request", b"Connection: close")
    for _ in range(2):
        p = ResponseParser()
        p.start("GET")
        p.feed(closing + b"abc")
        assert p.next_event().keep_alive is False  # type: ignore[union-attr]


def test_a_refused_head_stays_refused_and_is_not_kept() -> None:
    bad = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    assert refused(bad) == refused(bad)
    assert not any("Content-Length: 4" in text for text in h1_fields._KNOWN_HEADS)


def test_the_head_cache_stays_bounded_and_long_heads_are_not_kept() -> None:
    for i in range(h1_fields._KNOWN_HEADS_MAX + 50):
        head_of(b"HTTP/1.1 200 OK\r\nX-Head: %d\r\nContent-Length: 0\r\n\r\n" % i)
    assert 0 < len(h1_fields._KNOWN_HEADS) <= h1_fields._KNOWN_HEADS_MAX
    long_head = b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * h1_fields._KNOWN_HEAD_LEN + b"\r\nContent-Length: 0\r\n\r\n"
    head_of(long_head)
    assert long_head[:-2].decode() not in h1_fields._KNOWN_HEADS


def test_a_set_cookie_is_kept_in_no_process_wide_cache() -> None:
    """A session cookie must not outlive its response in the parser's
    caches (docs/performance.md: credentials are not kept)."""
    data = b"HTTP/1.1 200 OK\r\nSet-Cookie: session=s3cr3t-value\r\nContent-Length: 0\r\n\r\n"
    for _ in range(2):
        assert head_of(data).headers[0] == ("Set-Cookie", "set-cookie", "session=s3cr3t-value")
    cached = [*h1_fields._KNOWN_HEADS, *h1_fields._KNOWN_LINES, *h1_fields._KNOWN_FRAMING]
    assert not [text for text in cached if "s3cr3t" in text]


def test_request_credentials_are_kept_in_no_process_wide_cache() -> None:
    """The request side caches checked field blocks and parsed URLs for the
    whole process: an Authorization or Cookie value, or a URL password, must
    not stay there after the request (a gateway forwards many users' tokens)."""
    fields = [
        ("Host", "api.example", "api.example"),
        ("Authorization", "authorization", "Bearer tok-s3cr3t"),
        ("Accept", "accept", "*/*"),
        ("Cookie", "cookie", "sid=ck-s3cr3t"),
        ("Cookie", "cookie", "b=2"),
    ]
    for _ in range(2):
        head = serialize_request_head("GET", "/", fields, body_length=0, host=None)
        # Host first; credentials after the other fields, same-name order kept.
        assert head == (
            b"GET / HTTP/1.1\r\nHost: api.example\r\nAccept: */*\r\n"
            b"Authorization: Bearer tok-s3cr3t\r\nCookie: sid=ck-s3cr3t\r\nCookie: b=2\r\n\r\n"
        )
    kept = [*h1_request._BLOCKS, *h1_request._VALID_FIELDS]
    assert not [entry for entry in kept if "s3cr3t" in repr(entry)]
    with pytest.raises(LocalProtocolError):
        serialize_request_head("GET", "/", [("Cookie", "cookie", "a\r\nX: 1")],
                               body_length=None, host="h")
    for _ in range(2):
        URL("https://alice:pw-s3cr3t@api.example/x")
    assert not [text for text in _urls._PARSED if "s3cr3t" in text]
