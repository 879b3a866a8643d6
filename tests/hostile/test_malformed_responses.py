"""Hostile servers: malformed, oversize, truncated and silent responses.

Each raw server misbehaves on its first connection only and answers every
later request correctly. So after each failure the test checks that the
error names the peer, that the pool holds nothing in use, and that the very
same client can then talk to the very same origin (on a new connection).
"""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import Awaitable, Callable

import pytest

import hyperhttp
from hyperhttp import _decoders as decoders
from hyperhttp._backends.stream import MIN_BUFFER
from tests.support.fixtures import RawServerFactory
from tests.support.raw import RawServer, canned, read_head

GOOD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Misbehaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class BadThenGood:
    """A raw handler: `bad` answers the first connection's first request;
    every later connection gets correct keep-alive answers."""

    def __init__(self, bad: Misbehaviour) -> None:
        self.bad = bad
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = self.connections == 1
        while True:
            head = await read_head(reader)
            if not head:
                return
            if first:
                await self.bad(reader, writer)
                return  # RawServer closes the connection
            writer.write(GOOD)
            await writer.drain()


def sends(*pieces: bytes, pause: bool = False) -> Misbehaviour:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            if pause:
                await asyncio.sleep(0)

    return bad


def big_head_lines(total: int) -> list[bytes]:
    lines = [b"HTTP/1.1 200 OK\r\n"]
    size = len(lines[0])
    i = 0
    while size < total:
        line = b"X-Pad-%d: %s\r\n" % (i, b"a" * 100)
        lines.append(line)
        size += len(line)
        i += 1
    lines.append(b"Content-Length: 2\r\n\r\nok")
    return lines


OVERSIZE = big_head_lines(70 * 1024)

MALFORMED: dict[str, Misbehaviour] = {
    "content-length-and-chunked": sends(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    ),
    "differing-content-lengths": sends(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    ),
    "non-numeric-content-length": sends(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nabc"),
    "negative-content-length": sends(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
    "bad-chunk-size": sends(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    ),
    "head-over-64k-one-write": sends(b"".join(OVERSIZE)),
    "head-over-64k-many-writes": sends(*OVERSIZE, pause=True),
    "truncated-body": sends(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10),
    "truncated-chunked-body": sends(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    ),
    "garbage-status-line": sends(b"garbage\r\n\r\n"),
    "non-numeric-status": sends(b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n"),
    "header-without-colon": sends(b"HTTP/1.1 200 OK\r\nnot a header\r\nContent-Length: 0\r\n\r\n"),
    "head-cut-off": sends(b"HTTP/1.1 200 OK\r\nContent-Len"),
    "closed-without-answer": sends(),
}


def peer(server: RawServer) -> str:
    return f"127.0.0.1:{server.port}"


def assert_pool_clean(client: hyperhttp.Client) -> None:
    for entry in client.get_pool_stats().values():
        assert entry["in_use"] == 0, client.get_pool_stats()
        assert entry.get("connecting", 0) == 0, client.get_pool_stats()


async def assert_recovers(client: hyperhttp.Client, server: RawServer) -> None:
    response = await client.get(server.url + "/after")
    assert response.status_code == 200
    assert response.content == b"ok"
    assert_pool_clean(client)
    assert server.accepted == 2, "the failed connection was reused or a request was resent"


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_malformed_response_is_remote_protocol_error(
    loop_name: str, raw_server: RawServerFactory, name: str
) -> None:
    server = raw_server(BadThenGood(MALFORMED[name]))
    async with hyperhttp.Client(http2=False, timeout=5.0) as client:
        with pytest.raises(hyperhttp.RemoteProtocolError) as caught:
            await client.get(server.url + "/bad")
        assert peer(server) in str(caught.value)
        assert_pool_clean(client)
        await assert_recovers(client, server)


@pytest.mark.parametrize("name", ["truncated-body", "truncated-chunked-body", "bad-chunk-size"])
async def test_malformed_body_while_streaming(
    loop_name: str, raw_server: RawServerFactory, name: str
) -> None:
    server = raw_server(BadThenGood(MALFORMED[name]))
    async with hyperhttp.Client(http2=False, timeout=5.0) as client:
        async with client.stream("GET", server.url + "/bad") as response:
            assert response.status_code == 200
            with pytest.raises(hyperhttp.RemoteProtocolError) as caught:
                async for _ in response.aiter_bytes():
                    pass
        assert peer(server) in str(caught.value)
        assert_pool_clean(client)
        await assert_recovers(client, server)


async def test_head_just_under_the_limit_is_accepted(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    lines = big_head_lines(60 * 1024)
    server = raw_server(BadThenGood(sends(b"".join(lines))))
    async with hyperhttp.Client(http2=False, timeout=5.0) as client:
        response = await client.get(server.url + "/big")
        assert response.status_code == 200
        assert response.content == b"ok"
        assert len(response.headers.get_list("x-pad-0")) == 1


async def test_server_never_answers_is_read_timeout(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)  # stop() cancels this

    server = raw_server(BadThenGood(silent))
    async with hyperhttp.Client(http2=False, timeout=hyperhttp.Timeout(5, read=0.2)) as client:
        with pytest.raises(hyperhttp.ReadTimeout) as caught:
            await client.get(server.url + "/bad")
        assert peer(server) in str(caught.value)
        assert_pool_clean(client)
        await assert_recovers(client, server)


async def test_server_stalls_mid_body_is_read_timeout(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(30)

    server = raw_server(BadThenGood(stall))
    async with hyperhttp.Client(http2=False, timeout=hyperhttp.Timeout(5, read=0.2)) as client:
        with pytest.raises(hyperhttp.ReadTimeout):
            await client.get(server.url + "/bad")
        assert_pool_clean(client)
        await assert_recovers(client, server)


async def test_bytes_after_the_response_make_the_connection_unusable(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    # Extra bytes after a complete response are not a response to anything:
    # that connection must not carry the next request.
    async def extra(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GOOD + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
        await writer.drain()
        while await reader.read(65536):
            pass

    server = raw_server(BadThenGood(extra))
    async with hyperhttp.Client(http2=False, timeout=5.0) as client:
        first = await client.get(server.url + "/first")
        assert first.content == b"ok"
        await asyncio.sleep(0.05)  # let the smuggled bytes arrive
        second = await client.get(server.url + "/second")
        assert second.content == b"ok"
        assert server.accepted == 2


async def test_bytes_still_in_the_kernel_after_a_response_are_not_the_next_answer(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    """The same stray response, but no pause, and the real response exactly
    fills the first receive buffer: the default loop reads once per turn, so
    the stray bytes are still in the kernel when the response is complete and
    the connection goes back to the pool. Reusing it would hand them to the
    next request as its answer (they did, before the pool polled such a
    socket)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %05d\r\n\r\n"
    length = MIN_BUFFER - len(head % 0)
    exact = head % length + b"a" * length
    assert len(exact) == MIN_BUFFER

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        while head_seen := await read_head(reader):
            if answered == 0 and server.accepted == 1:
                writer.write(exact + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
            else:
                path = head_seen.split(b" ")[1]
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))
            answered += 1
            await writer.drain()

    server = raw_server(handler)
    async with hyperhttp.Client(http2=False, timeout=5.0) as client:
        first = await client.get(server.url + "/first")
        assert len(first.content) == length
        second = await client.get(server.url + "/second")
        third = await client.get(server.url + "/third")
    assert (second.content, third.content) == (b"/second", b"/third")
    assert server.accepted == 2


async def test_bytes_that_came_while_the_loop_was_busy_are_not_the_next_answer(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    """A HEAD answered, then (a buggy server) a stray response 20 ms later,
    while the caller's loop is busy with synchronous work: the loop has not
    read the socket when the next request takes the pooled connection, so
    the stray bytes are only in the kernel. They must not be its answer."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head_seen := await read_head(reader):
            if head_seen.startswith(b"HEAD "):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.02)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nREAL!")
            await writer.drain()

    server = raw_server(handler)
    async with hyperhttp.Client(http2=False, timeout=5.0) as client:
        assert (await client.head(server.url + "/x")).status_code == 200
        time.sleep(0.15)  # the loop busy with synchronous work: the point of the test
        second = await client.get(server.url + "/real")
    assert second.content == b"REAL!"
    assert server.accepted == 2


async def test_a_close_that_came_while_the_loop_was_busy_is_seen_before_reuse(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    """The server closes an idle keep-alive connection after 20 ms while the
    caller's loop is busy: the FIN is only in the kernel. A POST must go out
    on a new connection, not into the closed one (where it fails and, not
    being idempotent, may not be retried)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(GOOD)
        await writer.drain()
        await asyncio.sleep(0.02)  # its keep-alive timeout

    server = raw_server(handler)
    async with hyperhttp.Client(http2=False, timeout=5.0) as client:
        assert (await client.get(server.url + "/first")).content == b"ok"
        time.sleep(0.15)  # the loop busy with synchronous work: the point of the test
        response = await client.post(server.url + "/second", content=b"data")
    assert response.content == b"ok"
    assert server.accepted == 2


async def test_errors_after_an_interim_answer_or_in_the_coding_say_what_and_where(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    """A 100 Continue then close is not 'no response'; a broken gzip body
    names the server it came from, as every other error does."""
    interim = raw_server(BadThenGood(sends(b"HTTP/1.1 100 Continue\r\n\r\n")))
    packed = gzip.compress(b"hello" * 100)[:-8]  # the trailer cut off
    truncated = raw_server(BadThenGood(sends(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(packed), packed)
    )))
    async with hyperhttp.Client(http2=False, timeout=5.0) as client:
        with pytest.raises(hyperhttp.RemoteProtocolError) as caught:
            await client.get(interim.url + "/")
        message = str(caught.value)
        assert "after an interim (1xx) response" in message and "127.0.0.1" in message
        with pytest.raises(hyperhttp.DecodingError) as decoding:
            await client.get(truncated.url + "/")
        assert str(decoding.value) == (
            "response body from 127.0.0.1: gzip: compressed body is truncated"
        )


async def test_deflate_body_with_bytes_after_its_end(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    """Bytes after the end of a deflate stream (a CRLF, padding, junk) are
    ignored, as after gzip. They used to spin the loop for ever, past every
    timeout."""
    body = zlib.compress(b"hello") + b"\r\n" + bytes(8) + b"junk"
    server = raw_server(canned(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body), close=False, repeat=True,
    ))
    async with hyperhttp.Client(http2=False, timeout=5.0) as client:
        assert (await client.get(server.url + "/")).content == b"hello"
        async with client.stream("GET", server.url + "/") as response:
            assert [line async for line in response.aiter_lines()] == ["hello"]
        assert_pool_clean(client)
    assert server.accepted == 1  # each body was read to its end and the connection reused


NO_BODY = {
    "HEAD": ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"),
    "304": ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000000\r\n\r\n"),
    "HEAD-gzip": (
        "HEAD", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1000000\r\n\r\n"
    ),
}


@pytest.mark.parametrize(("method", "answer"), list(NO_BODY.values()), ids=list(NO_BODY))
async def test_max_response_size_ignores_the_length_of_a_response_without_body(
    loop_name: str, raw_server: RawServerFactory, method: str, answer: bytes
) -> None:
    server = raw_server(canned(answer, close=False, repeat=True))
    async with hyperhttp.Client(http2=False, timeout=5.0, max_response_size=1000) as client:
        for _ in range(2):
            response = await client.request(method, server.url + "/")
            assert response.content == b""
            assert response.headers["content-length"] == "1000000"
        assert_pool_clean(client)
    assert server.accepted == 1


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 100\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Encoding: br\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\nContent-Encoding: zstd\r\n\r\n"),
        ("GET", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip, br\r\nContent-Length: 0\r\n\r\n"),
    ],
    ids=["HEAD-br", "304-br", "204-zstd", "empty-gzip-br"],
)
async def test_no_body_needs_no_br_or_zstd_package(
    loop_name: str,
    raw_server: RawServerFactory,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    answer: bytes,
) -> None:
    monkeypatch.setattr(decoders, "_brotli", lambda: None)
    monkeypatch.setattr(decoders, "_zstandard", lambda: None)
    server = raw_server(canned(answer))
    async with hyperhttp.Client(http2=False, timeout=5.0) as client:
        response = await client.request(method, server.url + "/")
    assert response.content == b""


async def test_a_body_in_br_without_the_package_is_a_decoding_error(
    loop_name: str, raw_server: RawServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decoders, "_brotli", lambda: None)
    server = raw_server(canned(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 4\r\n\r\n\x0b\x02\x80x"
    ))
    async with hyperhttp.Client(http2=False, timeout=5.0) as client:
        with pytest.raises(hyperhttp.DecodingError, match=r"127\.0\.0\.1: br: .*hyperhttp\[brotli\]"):
            await client.get(server.url + "/")
