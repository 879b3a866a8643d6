"""HTTP/1.1 fast paths against a raw peer: a head parsed straight from the
first read, a body taken without an await when it came with the head, and
receive buffers handed from one bulk transfer to the next. Each must give
the same bytes, and the same connection reuse, however the peer splits its
writes."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable

import pytest

import hyperhttp
from hyperhttp._backends import stream as stream_module
from hyperhttp._transport.http11 import BODY_CHUNK
from tests.support.raw import RawServer, read_head

# (pieces the server writes, with a short pause between them; expected body)
SPLITS: list[tuple[list[bytes], bytes]] = [
    ([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"], b"hello"),
    ([b"HTTP/1.1 200 OK\r\nConte", b"nt-Length: 5\r\n\r\nworld"], b"world"),
    ([b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n", b"later!"], b"later!"),
    ([b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhal", b"ves"], b"halves"),
    ([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], b""),
    ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"], b"abc"),
    ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", b"c\r\n0\r\n\r\n"], b"abc"),
    ([b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], b"ok"),
]


async def test_splits_of_head_and_body_on_one_connection(
    raw_server: Callable[..., RawServer],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for pieces, _ in SPLITS:
            await read_head(reader)
            for i, piece in enumerate(pieces):
                if i:
                    await asyncio.sleep(0.02)  # a separate read on the client
                writer.write(piece)
                await writer.drain()
        await reader.read()

    server = raw_server(handler)
    async with hyperhttp.Client() as client:
        for _, body in SPLITS:
            response = await client.get(server.url + "/")
            assert response.status_code == 200
            assert response.content == body
            assert response.is_closed
        # Every response ended cleanly: all of them on the first connection.
        assert [s["total"] for s in client.get_pool_stats().values()] == [1]
    assert server.accepted == 1


async def test_head_cut_short_then_closed_is_an_error(raw_server: Callable[..., RawServer]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")
        await writer.drain()
        writer.close()

    server = raw_server(handler)
    async with hyperhttp.Client() as client:
        try:
            await client.get(server.url + "/")
        except hyperhttp.RemoteProtocolError as exc:
            assert "middle of the response head" in str(exc)
        else:
            raise AssertionError("a truncated head must fail")


async def test_large_bodies_through_reused_receive_buffers(
    raw_server: Callable[..., RawServer],
) -> None:
    """Bulk bodies grow receive buffers, which idle connections hand to the
    next transfer: every body must still arrive byte for byte, on kept-alive
    connections, and the kept spares stay bounded."""
    size = 3 * 1024 * 1024 + 17

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_head(reader)
            if not head:
                return
            target = head.split(b" ", 2)[1]
            body = b"tiny body!" if target == b"/small" else _body_for(target, size)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            writer.write(body)
            await writer.drain()

    server = raw_server(handler)
    async with hyperhttp.Client(max_connections=6) as client:

        async def one(i: int) -> None:
            target = f"/{i}"
            expected = hashlib.sha256(_body_for(target.encode(), size)).hexdigest()
            if i % 2:
                response = await client.get(server.url + target)
                got = response.content
            else:
                parts = []
                async with client.stream("GET", server.url + target) as response:
                    async for chunk in response.aiter_raw():
                        parts.append(chunk)
                got = b"".join(parts)
            assert hashlib.sha256(got).hexdigest() == expected
            small = await client.get(server.url + "/small")
            assert small.content == b"tiny body!"

        for batch in range(3):
            await asyncio.gather(*(one(batch * 6 + i) for i in range(6)))
        assert len(stream_module._SPARE) <= stream_module._SPARE_MAX
    assert server.accepted <= 6


async def _stream_into(parts: list[bytes], client: hyperhttp.Client, url: str) -> None:
    """Stream a GET of `url`, appending each raw chunk to `parts` as it comes
    (what came before an error stays there for the caller)."""
    async with client.stream("GET", url) as response:
        async for chunk in response.aiter_raw():
            parts.append(chunk)


def _body_for(target: bytes, size: int) -> bytes:
    """Distinct bytes per target: stale bytes from another transfer show."""
    seed = hashlib.sha256(target).digest()
    block = (seed * (4096 // len(seed) + 1))[:4096]
    data = (block * (size // len(block) + 1))[:size]
    return data[:-64] + seed * 2


def test_one_parser_across_responses_keeps_each_response_its_own() -> None:
    """A connection's parser serves response after response: identical heads
    must each give a header list of their own and the body framing of
    *their* request (HEAD has no body), and a head differing by one byte is
    judged afresh, and refused when invalid."""
    from hyperhttp._proto.h1 import End, Head, ResponseParser

    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n"
    parser = ResponseParser()
    seen: list[list[tuple[str, str, str]]] = []
    for method, wire, body in [
        ("GET", head + b"hello", b"hello"),
        ("HEAD", head, b""),
        ("GET", head + b"again", b"again"),
        ("GET", head.replace(b"X-A: 1", b"X-A: 2") + b"other", b"other"),
        ("GET", head + b"fifth", b"fifth"),
    ]:
        parser.start(method)
        parser.feed(wire)
        event = parser.next_event()
        assert isinstance(event, Head)
        assert event.status == 200 and event.keep_alive
        seen.append(event.headers)
        got = b""
        while not isinstance(event := parser.next_event(), End):
            assert isinstance(event, bytes)
            got += event
        assert got == body
        assert parser.reusable
    assert [h[-1][2] for h in seen] == ["1", "1", "1", "2", "1"]
    seen[0].append(("X-B", "x-b", "mutated"))  # a caller's list is its own
    assert len(seen[2]) == 2 and len(seen[4]) == 2
    # A head that differs by one byte and is invalid is refused, right after
    # valid ones.
    parser.start("GET")
    parser.feed(head.replace(b"Content-Length: 5", b"Content-Length: 5x"))
    try:
        parser.next_event()
    except hyperhttp.RemoteProtocolError:
        pass
    else:
        raise AssertionError("an invalid Content-Length must be refused")


class _Sink(asyncio.Transport):
    """A transport that accepts nothing: the stream is fed by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        assert not self.paused
        self.paused = True

    def resume_reading(self) -> None:
        assert self.paused
        self.paused = False


async def test_read_head_nowait_splits_the_head_off_a_large_read() -> None:
    """Behind a head, a large body stays in the buffer for the next read
    (so it is copied out once); a small response, a read without a blank
    line and bytes given back all come out whole, in order."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 40000\r\n\r\n"
    body = bytes(range(256)) * 156 + b"x" * 64
    stream = stream_module.SocketStream("peer")
    stream.connection_made(_Sink())
    stream.data_received(head + body)
    assert stream.read_head_nowait() == head
    assert stream.read_nowait() == body
    small = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    stream.data_received(small)
    assert stream.read_head_nowait() == small
    no_blank_line = b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 20000
    stream.data_received(no_blank_line)
    assert stream.read_head_nowait() == no_blank_line
    stream.data_received(head + body)
    stream.unread(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert stream.read_head_nowait() == b"HTTP/1.1 100 Continue\r\n\r\n" + head + body
    assert stream.read_nowait() == b""


async def test_large_bodies_behind_their_heads_in_one_write(
    raw_server: Callable[..., RawServer],
) -> None:
    """Heads and large bodies sent in one write (as a server with the file
    at hand does), after a 1xx and chunked too: read whole and streamed,
    byte for byte, and all on one kept-alive connection."""
    big = _body_for(b"/big", 300_000)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (big[:70_000], big[70_000:]))
    responses = [
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
        % (len(big), big),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n",
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            for wire in responses:
                await read_head(reader)
                writer.write(wire)
                await writer.drain()
        await reader.read()

    server = raw_server(handler)
    async with hyperhttp.Client() as client:
        for _ in responses:
            response = await client.get(server.url + "/")
            assert response.status_code == 200 and response.content == big
        for _ in responses:
            parts: list[bytes] = []
            await _stream_into(parts, client, server.url + "/")
            assert b"".join(parts) == big
            assert max(len(part) for part in parts) <= BODY_CHUNK
        assert [s["total"] for s in client.get_pool_stats().values()] == [1]
    assert server.accepted == 1


async def test_read_nowait_limit_takes_from_the_front_and_resumes_at_half() -> None:
    """A limited read leaves the rest buffered, in order; a transport paused
    on a full buffer resumes once less than half of it is unread (and not
    at every read)."""
    stream = stream_module.SocketStream("peer")
    sink = _Sink()
    stream.connection_made(sink)
    data = bytes(range(256)) * (stream_module.HIGH_WATER // 256)
    stream.data_received(data)
    assert sink.paused  # the buffer is full of unread bytes
    got = []
    while len(b"".join(got)) < len(data) // 2:
        assert sink.paused
        got.append(stream.read_nowait(100_000))
        assert len(got[-1]) == 100_000
    assert not sink.paused
    got.append(stream.read_nowait())
    assert b"".join(got) == data
    assert stream.read_nowait(10) == b""


async def test_one_read_per_turn_pauses_a_second_read_until_the_next_turn() -> None:
    """uvloop reads a socket up to 32 times per turn of the loop; a reader
    that files every read at once (HTTP/2) asks for a pause after the
    second, lifted on the next turn, but not while the buffer is full."""
    stream = stream_module.SocketStream("peer")
    sink = _Sink()
    stream.connection_made(sink)
    stream.one_read_per_turn = True
    stream.on_data = stream.read_nowait  # take every read, as HTTP/2 does
    stream.data_received(b"a" * 100)
    assert not sink.paused
    stream.data_received(b"b" * 100)
    assert sink.paused  # a second read in the same turn
    await asyncio.sleep(0)
    assert not sink.paused  # the next turn
    stream.data_received(b"c" * 100)
    assert not sink.paused
    # Paused on a full buffer too: the turn does not lift that pause.
    stream.on_data = None
    stream.data_received(b"d" * stream_module.HIGH_WATER)
    assert sink.paused
    await asyncio.sleep(0)
    assert sink.paused
    assert stream.read_nowait().startswith(b"d")
    assert not sink.paused


async def test_a_streamed_body_ends_at_its_length_with_a_stray_answer_behind_it(
    raw_server: Callable[..., RawServer],
) -> None:
    """A large Content-Length body goes from the receive buffer straight to
    the caller, the parser only counting it. A stray response written
    right behind it, in the same write, must neither join the body nor be
    the answer to the next request on that connection."""
    big = _body_for(b"/stray", 400_000)
    stray = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await read_head(reader):
            if head.startswith(b"GET /big "):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big))
                writer.write(big[:150_000])
                await writer.drain()
                await asyncio.sleep(0.02)  # the rest in later reads
                writer.write(big[150_000:] + stray)
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nREAL!")
            await writer.drain()

    server = raw_server(handler)
    async with hyperhttp.Client(http2=False) as client:
        parts: list[bytes] = []
        await _stream_into(parts, client, server.url + "/big")
        assert b"".join(parts) == big
        assert max(len(part) for part in parts) <= BODY_CHUNK
        second = await client.get(server.url + "/next")
        assert second.content == b"REAL!"
    assert server.accepted == 2


async def test_a_large_body_cut_short_while_streamed_names_what_is_missing(
    raw_server: Callable[..., RawServer],
) -> None:
    """The connection closes 100,000 bytes short of a streamed body's
    Content-Length, after the body's bytes have been going to the caller
    straight from the receive buffer: an error saying how much is missing,
    and what did arrive is handed over first."""
    big = _body_for(b"/short", 300_000)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big))
        writer.write(big[:200_000])
        await writer.drain()
        writer.close()

    server = raw_server(handler)
    async with hyperhttp.Client(http2=False) as client:
        parts: list[bytes] = []
        with pytest.raises(hyperhttp.RemoteProtocolError) as caught:
            await _stream_into(parts, client, server.url + "/")
        assert b"".join(parts) == big[:200_000]
        assert "100000 bytes missing" in str(caught.value)
        assert f"127.0.0.1:{server.port}" in str(caught.value)
        # The broken connection is closed and gone from the pool, not held.
        assert all(s["in_use"] == 0 for s in client.get_pool_stats().values())
        assert sum(s["total"] for s in client.get_pool_stats().values()) == 0


def test_a_growing_stream_takes_the_smallest_kept_buffer_that_fits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kept receive buffers: a growth takes the smallest that is large
    enough and leaves smaller ones kept; when as many are kept as may be,
    a larger buffer given back takes the place of the smallest. No buffer
    is handed out twice, though kept buffers of equal size and content
    (all zeros here) are alike to every comparison but identity."""
    kept: list[bytearray] = []
    monkeypatch.setattr(stream_module, "_SPARE", kept)
    small, middle, large = bytearray(64 * 1024), bytearray(256 * 1024), bytearray(1024 * 1024)
    kept.extend([large, small, middle])
    got = stream_module._spare_buffer(100 * 1024)
    assert got is middle
    assert [id(b) for b in kept] == [id(large), id(small)]
    assert stream_module._spare_buffer(2 * 1024 * 1024) not in (large, small)
    assert len(kept) == 2
    twins = [bytearray(64 * 1024) for _ in range(stream_module._SPARE_MAX - 2)]
    for twin in twins:
        stream_module._keep_spare(twin)
    assert len(kept) == stream_module._SPARE_MAX
    stream_module._keep_spare(middle)  # full: it replaces one 64 KiB buffer
    assert len(kept) == stream_module._SPARE_MAX
    assert sorted(len(b) for b in kept) == [64 * 1024] * 2 + [256 * 1024, 1024 * 1024]
    stream_module._keep_spare(bytearray(16 * 1024))  # smaller than all kept: dropped
    assert 16 * 1024 not in {len(b) for b in kept}
    handed = [stream_module._spare_buffer(32 * 1024) for _ in range(stream_module._SPARE_MAX)]
    assert len({id(b) for b in handed}) == len(handed)  # each buffer once
    assert kept == []


async def test_a_bulk_transfer_grows_the_receive_buffer_fourfold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reads that fill the buffer quadruple it, up to HIGH_WATER: two
    fresh buffers from MIN_BUFFER, not three."""
    monkeypatch.setattr(stream_module, "_SPARE", [])  # grow afresh, not from kept buffers
    sizes = []
    for growth in range(4):
        stream = stream_module.SocketStream("peer")
        stream.connection_made(_Sink())
        stream_module._SPARE.clear()
        for _ in range(growth + 1):
            view = stream.get_buffer(-1)
            stream.buffer_updated(len(view))
            stream.read_nowait()
        sizes.append(len(stream.get_buffer(-1)))
    assert sizes == [64 * 1024, 128 * 1024, 128 * 1024, 128 * 1024]
    assert stream_module.MIN_BUFFER == 16 * 1024
    assert stream_module.HIGH_WATER == 128 * 1024


def test_loops_in_two_threads_share_the_kept_buffers_safely(
    raw_server: Callable[..., RawServer],
) -> None:
    """The kept receive buffers are one list per process: clients on loops
    in two threads grow, give back and take buffers at the same time, and
    every body must still arrive byte for byte (a buffer handed to two
    connections at once would mix their bytes)."""
    size = 2 * 1024 * 1024 + 5

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await read_head(reader):
            body = _body_for(head.split(b" ", 2)[1], size)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            writer.write(body)
            await writer.drain()

    server = raw_server(handler)
    failures: list[BaseException] = []

    async def downloads(thread: int) -> None:
        async with hyperhttp.Client(http2=False, max_connections=4) as client:
            for round_ in range(3):
                targets = [f"/t{thread}-r{round_}-{i}" for i in range(4)]
                bodies = await asyncio.gather(*(_streamed(client, server.url + t) for t in targets))
                for target, body in zip(targets, bodies, strict=True):
                    assert body == _body_for(target.encode(), size), target

    def run(thread: int) -> None:
        try:
            asyncio.run(downloads(thread))
        except BaseException as exc:  # reported by the test thread below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    kept = stream_module._SPARE
    assert len(kept) <= stream_module._SPARE_MAX
    assert len({id(b) for b in kept}) == len(kept)


async def _streamed(client: hyperhttp.Client, url: str) -> bytes:
    parts: list[bytes] = []
    await _stream_into(parts, client, url)
    return b"".join(parts)
