"""HTTP/2 servers that abuse what the client must receive.

Raw servers (`RawServer` handlers over TLS with ALPN h2 on 127.0.0.1) that
write hand-built frames:

- a flood of frames h2 answers by itself (PING, SETTINGS, DATA on a stream
  the client reset) from a server that reads none of the answers: the
  client's write buffer must stay bounded, and the connection end with
  GOAWAY(ENHANCE_YOUR_CALM) (RFC 9113 10.5). An upload the server is slow
  to read must not be taken for that;
- a body shorter than its content-length, ended by a HEADERS frame (the
  head itself, or trailers): malformed, never accepted (RFC 9113 8.1.1),
  failing that stream only;
- padding-only DATA frames: padding counts against flow control (RFC 9113
  6.1) and must be credited back, or the windows run dry;
- a 101 (Switching Protocols), which HTTP/2 does not have (RFC 9113 8.6)
  and h2 passes on as any 1xx: that stream fails and is reset with
  PROTOCOL_ERROR, the others go on.

The connection is built directly (as in test_h2_negative_window.py);
`Heartbeat` fails a test whose loop freezes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import hpack
import pytest

import hyperhttp
from hyperhttp._config import Timeout
from hyperhttp._models import Request, Response
from hyperhttp._transport import http2 as http2_module
from hyperhttp._transport.http2 import HTTP2Connection
from tests.integration.test_h2_negative_window import Heartbeat, dial
from tests.support.certs import TestCerts
from tests.support.fixtures import RawServerFactory
from tests.support.raw import RawServer

pytestmark = pytest.mark.timeout(30)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
PROTOCOL_ERROR, ENHANCE_YOUR_CALM = 0x1, 0xB
STREAM_WINDOW = 4 * 1024 * 1024  # the client's receive window per stream
MiB = 1024 * 1024


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">BHBBL", n >> 16, n & 0xFFFF, kind, flags, stream_id) + payload


def parse_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(kind, flags, stream id, payload) of every whole frame in `data`."""
    out, pos = [], 0
    while len(data) - pos >= 9:
        length = int.from_bytes(data[pos : pos + 3], "big")
        end = pos + 9 + length
        if end > len(data):
            break
        sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        out.append((data[pos + 3], data[pos + 4], sid, data[pos + 9 : end]))
        pos = end
    return out


class Peer:
    """The server's side of one connection: frames in and out, HPACK."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()

    async def handshake(self) -> None:
        assert await self.reader.readexactly(len(PREFACE)) == PREFACE
        self.writer.write(frame(SETTINGS, 0, 0))

    async def frame(self) -> tuple[int, int, int, bytes]:
        head = await self.reader.readexactly(9)
        payload = await self.reader.readexactly(int.from_bytes(head[:3], "big"))
        return head[3], head[4], int.from_bytes(head[5:], "big") & 0x7FFFFFFF, payload

    async def requests(self, count: int) -> dict[int, dict[str, str]]:
        """The next `count` request heads (no CONTINUATION from this client)."""
        heads: dict[int, dict[str, str]] = {}
        while len(heads) < count:
            kind, flags, sid, payload = await self.frame()
            if kind == SETTINGS and not flags & ACK:
                self.writer.write(frame(SETTINGS, ACK, 0))
            elif kind == HEADERS:
                heads[sid] = {
                    str(n): str(v) for n, v in self.decoder.decode(payload, raw=False)
                }
        return heads

    def head(self, sid: int, fields: list[tuple[str, str]], end_stream: bool = False) -> bytes:
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        return frame(HEADERS, flags, sid, self.encoder.encode(fields))


async def request(
    conn: HTTP2Connection, url: str, method: str = "GET", timeout: Timeout | None = None,
    content: bytes | None = None,
) -> Response:
    conn.reserve_stream()
    return await conn.handle_request(
        Request(method, url, content=content), timeout or Timeout(5.0)
    )


# --- floods of frames the client must answer ------------------------------------
KERNEL_BUFFER = 64 * 1024  # SO_RCVBUF / SO_SNDBUF of the flood's two ends


@dataclass
class Flood:
    """`RawServer` handler: answer one request with a head, then write
    `unit(stream_id)` frames without reading, until the test says the
    client gave up (`client_gone`) or `limit` seconds pass; then read until
    the connection ends (`done`)."""

    unit: Callable[[int], bytes]
    reset_first: bool = False  # flood the stream only once the client reset it
    limit: float = 15.0
    client_gone: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    sent: int = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        try:
            await peer.handshake()
            (sid,) = await peer.requests(1)
            # The client's answers back up in kernel buffers before its own
            # write buffer: a small receive buffer here (and a small send
            # buffer there, see flood_until_calm) lets it reach the limit
            # after a few hundred thousand frames, not a million and more
            # (about 6 s of a 10 s budget on a 2-core machine).
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER
            )
            writer.write(peer.head(sid, [(":status", "200")]) + frame(DATA, 0, sid, b"x"))
            if self.reset_first:
                while (await peer.frame())[0] != RST_STREAM:
                    pass
            unit = self.unit(sid) * 2000
            began = time.monotonic()
            while time.monotonic() - began < self.limit and not self.client_gone.is_set():
                if writer.transport.get_write_buffer_size() < 256 * 1024:
                    writer.write(unit)
                    self.sent += len(unit)
                await asyncio.sleep(0.001)
            async with asyncio.timeout(10):
                while await reader.read(1 << 20):
                    pass
        finally:
            self.done.set()


async def watch_write_buffer(conn: HTTP2Connection, peak: list[int]) -> None:
    transport = conn._stream.transport
    assert transport is not None
    while not conn.is_closed():
        peak[0] = max(peak[0], transport.get_write_buffer_size())
        await asyncio.sleep(0.005)


async def flood_until_calm(
    conn: HTTP2Connection, flood: Flood, until_failed: Callable[[], Awaitable[object]]
) -> int:
    """Run `until_failed` (it must end in the calm-down error) while
    watching the client's write buffer; its peak."""
    peak = [0]
    last_write = [b""]
    transport = conn._stream.transport
    assert transport is not None
    transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_BUFFER
    )
    write = conn._stream.write

    def spy(data: bytes | bytearray | memoryview) -> None:
        last_write[0] = bytes(data)
        write(data)

    conn._stream.write = spy  # type: ignore[method-assign]
    began = time.monotonic()
    try:
        async with Heartbeat(stall=3.0), asyncio.timeout(12):
            watcher = asyncio.create_task(watch_write_buffer(conn, peak))
            try:
                with pytest.raises(hyperhttp.RemoteProtocolError) as caught:
                    await until_failed()
            finally:
                watcher.cancel()
    except TimeoutError:
        pytest.fail(f"still flooded after 12s; write buffer reached {peak[0] / MiB:.1f} MiB")
    flood.client_gone.set()
    message = str(caught.value)
    assert conn.peer in message and "ENHANCE_YOUR_CALM" in message, message
    assert "without reading" in message, message
    assert conn.is_closed()
    # The last bytes the client wrote: GOAWAY(ENHANCE_YOUR_CALM). It goes
    # behind the backlog, so this server, which reads nothing, never sees it.
    (goaway,) = parse_frames(last_write[0])
    assert goaway[0] == GOAWAY and int.from_bytes(goaway[3][4:8], "big") == ENHANCE_YOUR_CALM
    # ... but sees the connection end.
    assert await asyncio.to_thread(flood.done.wait, 5), "the server's connection did not end"
    assert time.monotonic() - began < 10
    return peak[0]


async def test_ping_flood_from_a_server_that_reads_nothing_is_cut_off(
    certs: TestCerts, raw_server: RawServerFactory
) -> None:
    flood = Flood(lambda sid: frame(PING, 0, 0, b"12345678"))
    server = raw_server(flood, tls=True, alpn=("h2",))
    conn = await dial(certs, server.port)
    try:
        response = await request(conn, f"{server.url}/", timeout=Timeout(20.0))
        peak = await flood_until_calm(conn, flood, response.aread)
    finally:
        conn.close()
    limit = http2_module.REPLY_BACKLOG_LIMIT
    # The limit, plus the transport's high mark and the answers to one read.
    assert peak <= limit + 2 * MiB, f"write buffer reached {peak / MiB:.1f} MiB"
    assert peak > limit // 2, "the flood never backed up: the test proves nothing"
    assert not server.handler_errors


@pytest.mark.parametrize("case", ["settings", "data_on_reset_stream"])
async def test_flood_of_other_answered_frames_is_cut_off(
    certs: TestCerts, raw_server: RawServerFactory, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    # These frames cost the client more to take than a PING: a lower limit
    # keeps the test short (the PING test runs with the real one).
    monkeypatch.setattr(http2_module, "REPLY_BACKLOG_LIMIT", 512 * 1024, raising=False)
    if case == "settings":
        flood = Flood(lambda sid: frame(SETTINGS, 0, 0))
    else:  # h2 answers each with RST_STREAM(STREAM_CLOSED)
        flood = Flood(lambda sid: frame(DATA, 0, sid), reset_first=True)
    server = raw_server(flood, tls=True, alpn=("h2",))
    conn = await dial(certs, server.port)
    try:
        response = await request(conn, f"{server.url}/", timeout=Timeout(20.0))

        async def until_failed() -> None:
            if case == "settings":
                await response.aread()
                return
            await response.aclose()  # the client resets the stream
            while not conn.is_closed():
                await asyncio.sleep(0.01)
            raise conn._failure or AssertionError("closed without a reason")

        peak = await flood_until_calm(conn, flood, until_failed)
    finally:
        conn.close()
    assert peak <= 512 * 1024 + 2 * MiB, f"write buffer reached {peak / MiB:.1f} MiB"
    assert not server.handler_errors


async def test_upload_to_a_server_slow_to_read_is_not_a_flood(
    certs: TestCerts, raw_server: RawServerFactory
) -> None:
    """Guard for the flood limit: an upload larger than it, written at once
    (the server's window allows it), waits for the server to read while the
    server PINGs; the connection must not be taken for a flood."""
    body = bytes(range(256)) * (48 * 1024)  # 12 MiB, well over the reply limit
    received = bytearray()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        await peer.handshake()
        big = 64 * MiB
        writer.write(
            frame(SETTINGS, 0, 0, struct.pack(">HL", 4, big - 1))
            + frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", big))
        )
        (sid,) = await peer.requests(1)
        await asyncio.sleep(0.5)  # reads nothing while the upload piles up
        writer.write(frame(PING, 0, 0, b"pingpong") * 5000)
        await asyncio.sleep(0.5)
        while True:
            kind, flags, stream_id, payload = await peer.frame()
            if kind == DATA and stream_id == sid:
                received.extend(payload)
                if flags & END_STREAM:
                    break
        writer.write(peer.head(sid, [(":status", "200")], end_stream=True))
        await writer.drain()
        await reader.read()

    server = raw_server(handler, tls=True, alpn=("h2",))
    conn = await dial(certs, server.port)
    try:
        async with Heartbeat(stall=3.0), asyncio.timeout(15):
            response = await request(conn, f"{server.url}/up", "POST", content=body)
            await response.aread()
    finally:
        conn.close()
    assert response.status_code == 200
    assert bytes(received) == body
    assert not server.handler_errors


# --- content-length against the body received -----------------------------------
MALFORMED = {"/cl-on-head", "/cl-then-trailers"}


async def serve_lengths(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Six requests on one connection, answered by path once all are in."""
    peer = Peer(reader, writer)
    await peer.handshake()
    heads = await peer.requests(6)
    cl10 = [(":status", "200"), ("content-length", "10")]
    out = b""
    for sid, head in sorted(heads.items()):
        path = head[":path"]
        if path == "/cl-on-head":  # END_STREAM on the head: 0 bytes, not 10
            out += peer.head(sid, cl10, end_stream=True)
        elif path == "/cl-then-trailers":  # 3 bytes, then trailers end it
            out += peer.head(sid, cl10) + frame(DATA, 0, sid, b"abc")
            out += peer.head(sid, [("x-checksum", "1")], end_stream=True)
        elif path == "/head":  # a HEAD: the length of what GET would send
            out += peer.head(sid, cl10, end_stream=True)
        elif path in ("/204", "/304"):
            fields = [(":status", path[1:]), ("content-length", "10")]
            out += peer.head(sid, fields, end_stream=True)
        else:  # a well-formed one, with trailers
            out += peer.head(sid, cl10) + frame(DATA, 0, sid, b"0123456789")
            out += peer.head(sid, [("x-checksum", "2")], end_stream=True)
    writer.write(out)
    await reader.read()


async def fetch(conn: HTTP2Connection, url: str, method: str) -> Response | Exception:
    try:
        response = await request(conn, url, method)
        await response.aread()
    except hyperhttp.HyperHTTPError as exc:
        return exc
    return response


@pytest.mark.parametrize("fast_headers", [True, False], ids=["fast_headers", "h2_headers"])
async def test_body_shorter_than_content_length_fails_only_its_stream(
    certs: TestCerts, raw_server: RawServerFactory, fast_headers: bool
) -> None:
    server = raw_server(serve_lengths, tls=True, alpn=("h2",))
    conn = await dial(certs, server.port, fast_headers=fast_headers)
    paths = [
        ("GET", "/cl-on-head"), ("GET", "/cl-then-trailers"), ("HEAD", "/head"),
        ("GET", "/204"), ("GET", "/304"), ("GET", "/fine"),
    ]
    try:
        async with Heartbeat(), asyncio.timeout(5):
            results = await asyncio.gather(
                *(fetch(conn, server.url + path, method) for method, path in paths)
            )
        assert not conn.is_closed(), "one malformed response must not end the connection"
    finally:
        conn.close()
    outcome = dict(zip([path for _, path in paths], results, strict=True))
    for path in MALFORMED:
        error = outcome[path]
        assert isinstance(error, hyperhttp.RemoteProtocolError), f"{path} accepted: {error!r}"
        received = "0" if path == "/cl-on-head" else "3"
        assert conn.peer in str(error), error
        assert f"after {received} bytes" in str(error) and "content-length says 10" in str(error)
    for path in ("/head", "/204", "/304"):
        response = outcome[path]
        assert isinstance(response, Response), f"{path}: {response!r}"
        assert response.content == b""
    fine = outcome["/fine"]
    assert isinstance(fine, Response), repr(fine)
    assert fine.content == b"0123456789"
    assert fine.trailers is not None and fine.trailers["x-checksum"] == "2"
    assert not server.handler_errors


# --- 101 Switching Protocols -------------------------------------------------------
@dataclass
class Switcher:
    """`RawServer` handler: two requests; /switch is answered with a 101
    (HTTP/2 has no protocol switch, RFC 9113 8.6), then a 200 and a body on
    the same stream, as a confused server might; /fine with a plain 200.
    Records the RST_STREAM codes the client sends, by stream."""

    resets: dict[int, list[int]] = field(default_factory=dict)
    switch: int = 0  # the stream answered with the 101

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        await peer.handshake()
        heads = await peer.requests(2)
        by_path = {head[":path"]: sid for sid, head in heads.items()}
        switch, fine = by_path["/switch"], by_path["/fine"]
        self.switch = switch
        writer.write(
            peer.head(switch, [(":status", "101")])
            + peer.head(switch, [(":status", "200")])
            + frame(DATA, END_STREAM, switch, b"switched")
            + peer.head(fine, [(":status", "200")])
            + frame(DATA, END_STREAM, fine, b"fine")
        )
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                kind, _, sid, payload = await peer.frame()
                if kind == RST_STREAM:
                    self.resets.setdefault(sid, []).append(int.from_bytes(payload, "big"))


@pytest.mark.parametrize("fast_headers", [True, False], ids=["fast_headers", "h2_headers"])
async def test_a_101_on_http2_fails_its_stream_and_resets_it(
    certs: TestCerts, raw_server: RawServerFactory, fast_headers: bool
) -> None:
    switcher = Switcher()
    server = raw_server(switcher, tls=True, alpn=("h2",))
    conn = await dial(certs, server.port, fast_headers=fast_headers)
    try:
        async with Heartbeat(), asyncio.timeout(5):
            switched, fine = await asyncio.gather(
                fetch(conn, server.url + "/switch", "GET"),
                fetch(conn, server.url + "/fine", "GET"),
            )
            assert not conn.is_closed(), "a 101 on one stream must not end the connection"
            # The reset reaches the server while the connection stays open.
            while not switcher.resets:
                await asyncio.sleep(0.01)
    finally:
        conn.close()
    assert isinstance(switched, hyperhttp.RemoteProtocolError), repr(switched)
    message = str(switched)
    assert "101 (Switching Protocols)" in message and conn.peer in message, message
    assert "RFC 9113" in message
    assert isinstance(fine, Response) and fine.content == b"fine", repr(fine)
    # PROTOCOL_ERROR first; h2 may then answer the frames that follow on
    # the reset stream with STREAM_CLOSED. The other stream is never reset.
    assert list(switcher.resets) == [switcher.switch], switcher.resets
    assert switcher.resets[switcher.switch][0] == PROTOCOL_ERROR, switcher.resets
    assert not server.handler_errors


# --- padding ----------------------------------------------------------------------
@dataclass
class Padder:
    """`RawServer` handler: one response whose stream window is spent on
    padding-only DATA frames; the rest of the body goes out only once
    the client gives credit for them, as any server honouring flow control
    would do."""

    credit: int = 0
    waited: float | None = None

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        await peer.handshake()
        (sid,) = await peer.requests(1)
        writer.write(peer.head(sid, [(":status", "200")]) + frame(DATA, 0, sid, b"first"))
        pad = frame(DATA, PADDED, sid, bytes([255]) + bytes(255))  # 256 bytes of window each
        writer.write(pad * ((STREAM_WINDOW - 5) // 256))
        began = time.monotonic()
        while self.credit < 1024:
            kind, _, stream_id, payload = await peer.frame()
            if kind == WINDOW_UPDATE and stream_id == sid:
                self.credit += int.from_bytes(payload, "big") & 0x7FFFFFFF
        self.waited = time.monotonic() - began
        writer.write(frame(DATA, END_STREAM, sid, b"last"))
        await reader.read()


async def test_padding_is_credited_back_at_once(
    certs: TestCerts, raw_server: RawServerFactory
) -> None:
    padder = Padder()
    server: RawServer = raw_server(padder, tls=True, alpn=("h2",))
    conn = await dial(certs, server.port)
    try:
        async with Heartbeat(), asyncio.timeout(8):
            response = await request(conn, f"{server.url}/", timeout=Timeout(5.0, read=3.0))
            body = await response.aread()
    finally:
        conn.close()
    assert body == b"firstlast"
    assert padder.waited is not None and padder.waited < 2.0
    assert not server.handler_errors

