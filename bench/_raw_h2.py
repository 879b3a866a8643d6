"""The physical limit for a Python HTTP/2 client: the least code that can
fetch a body over HTTP/2 with TLS, on asyncio's protocols.

One TLS connection (ALPN h2), many streams on it. No h2 library and no HPACK
decoder: a request is a HEADERS frame whose block is built once per path
(static-table indices and literals without indexing), a response is judged
by the first byte of its header block (0x88, the static entry for
":status: 200", which is how nginx sends it), and DATA is counted and
dropped. The windows are opened once to 2^31-1 and the connection window is
topped up after every GiB. SETTINGS and PING get their ACKs; anything else
the server may send (GOAWAY, RST_STREAM, a header block that is not a plain
200, padding, PUSH_PROMISE) ends the run with an error rather than being
handled. Anything a real client does beyond this is overhead the ratios to
"raw" make visible; TLS itself is not, since no HTTP/2 client can skip it.

Front-ends as in `_raw.py`: ``raw`` reads through `asyncio.BufferedProtocol`
into one reused buffer, ``raw-protocol`` takes the loop's `bytes` per read.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from typing import cast
from urllib.parse import urlsplit

from _raw import BytesPerRead, OneBuffer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_WINDOW = 2**31 - 1
TOP_UP = 1 << 30  # connection-window bytes consumed before one WINDOW_UPDATE

DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0x9
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8

_HEADER = struct.Struct(">HBBBL")  # 24-bit length as H+B, type, flags, stream id


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _HEADER.pack(n >> 8, n & 0xFF, kind, flags, stream) + payload


def _literal(index: int, value: bytes) -> bytes:
    """A literal header field without indexing, name from the static table."""
    if index >= 15 or len(value) >= 127:
        raise ValueError("the raw client keeps header blocks to one-byte prefixes")
    return bytes((index, len(value))) + value


class _Frames(asyncio.BaseProtocol):
    """One HTTP/2 connection; `received()` walks the frames of each read."""

    def __init__(self) -> None:
        super().__init__()  # the front-end's, when it has one
        self.transport: asyncio.Transport | None = None
        self.partial = bytearray()  # a frame header, or a non-DATA frame, split across reads
        self.skip = 0  # DATA payload bytes still to count and drop
        self.skip_stream = 0
        self.skip_end = False
        self.streams: dict[int, list[int]] = {}  # id -> [bytes so far]
        self.waiters: dict[int, asyncio.Future[int]] = {}
        self.next_id = 1
        self.consumed = 0
        self.lost: BaseException | None = None

    # -- asyncio callbacks --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        settings = struct.pack(">HLHL", 0x2, 0, 0x4, MAX_WINDOW)  # no push; stream window
        self.transport.write(PREFACE + _frame(SETTINGS, 0, 0, settings)
                             + _frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", MAX_WINDOW - 65535)))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed"))

    # -- frames ---------------------------------------------------------------

    def received(self, data: bytes | memoryview, nbytes: int) -> None:
        pos = 0
        if self.skip:
            pos = min(self.skip, nbytes)
            self._count(pos)
        while self.partial and pos < nbytes:
            # A frame split across reads: complete its header, then (for a
            # control frame) its payload, copying only those bytes.
            have = len(self.partial)
            want = 9 if have < 9 else 9 + ((self.partial[0] << 16) | (self.partial[1] << 8)
                                           | self.partial[2])
            take = min(want - have, nbytes - pos)
            self.partial += data[pos:pos + take]
            pos += take
            if len(self.partial) < want:
                return
            if want == 9:
                hi, lo, kind, flags, stream = _HEADER.unpack_from(self.partial)
                if kind != DATA:
                    continue  # go round again for the payload
                self.partial.clear()
                if not self._start_data((hi << 8) | lo, flags, stream):
                    return
                take = min(self.skip, nbytes - pos)
                self._count(take)
                pos += take
            else:
                _, _, kind, flags, stream = _HEADER.unpack_from(self.partial)
                payload = bytes(self.partial[9:])
                self.partial.clear()
                self._control(kind, flags, stream & 0x7FFFFFFF, payload)
        unpack = _HEADER.unpack_from
        while nbytes - pos >= 9:
            hi, lo, kind, flags, stream = unpack(data, pos)
            length = (hi << 8) | lo
            if kind == DATA:
                pos += 9
                if not self._start_data(length, flags, stream):
                    return
                take = min(length, nbytes - pos)
                self._count(take)
                pos += take
                continue
            if nbytes - pos - 9 < length:
                break
            self._control(kind, flags, stream & 0x7FFFFFFF, bytes(data[pos + 9:pos + 9 + length]))
            pos += 9 + length
        if pos < nbytes:
            self.partial += data[pos:nbytes]

    def _start_data(self, length: int, flags: int, stream: int) -> bool:
        if flags & PADDED:
            self._fail(ValueError("raw client: padded DATA"))
            return False
        self.skip, self.skip_stream = length, stream & 0x7FFFFFFF
        self.skip_end = bool(flags & END_STREAM)
        return True

    def _count(self, n: int) -> None:
        """`n` bytes of the current DATA payload arrived."""
        self.skip -= n
        self.consumed += n
        counts = self.streams.get(self.skip_stream)
        if counts is not None:
            counts[0] += n
        if self.skip == 0:
            if self.skip_end:
                self._finish(self.skip_stream)
            if self.consumed >= TOP_UP:
                assert self.transport is not None
                self.transport.write(_frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", self.consumed)))
                self.consumed = 0

    def _control(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        assert self.transport is not None
        if kind == HEADERS:
            if not flags & END_HEADERS or flags & PADDED or payload[:1] != b"\x88":
                return self._fail(ValueError(f"raw client: stream {stream} did not answer "
                                             "a plain 200 in one frame"))
            if flags & END_STREAM:
                self._finish(stream)
        elif kind == SETTINGS:
            if not flags & ACK:
                self.transport.write(_frame(SETTINGS, ACK, 0))
        elif kind == PING:
            if not flags & ACK:
                self.transport.write(_frame(PING, ACK, 0, payload))
        elif kind in (GOAWAY, RST_STREAM, PUSH_PROMISE, CONTINUATION):
            self._fail(ConnectionError(f"raw client: frame type {kind} on stream {stream}"))
        # WINDOW_UPDATE and PRIORITY: nothing to do, the client sends only headers.

    def _finish(self, stream: int) -> None:
        counts = self.streams.pop(stream, None)
        waiter = self.waiters.pop(stream, None)
        if waiter is not None and counts is not None and not waiter.done():
            waiter.set_result(counts[0])

    def _fail(self, exc: BaseException) -> None:
        self.lost = exc
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_exception(exc)
        self.waiters.clear()
        if self.transport is not None:
            self.transport.close()

    # -- requests -------------------------------------------------------------

    async def request(self, block: bytes) -> int:
        if self.lost is not None or self.transport is None:
            raise ConnectionResetError("connection closed")
        stream, self.next_id = self.next_id, self.next_id + 2
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiters[stream] = waiter
        self.streams[stream] = [0]
        self.transport.write(_frame(HEADERS, END_STREAM | END_HEADERS, stream, block))
        return await waiter


class _Conn(_Frames, OneBuffer):
    pass


class _PlainConn(_Frames, BytesPerRead):
    pass


class RawH2Client:
    """One HTTP/2 connection to one host; same driver shape as `RawClient`."""

    def __init__(self, url: str, ca: str, *, plain: bool = False) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise ValueError("the raw HTTP/2 client speaks HTTP/2 over TLS only")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 443
        self.authority = parts.netloc.encode()
        self.protocol: type[_Frames] = _PlainConn if plain else _Conn
        self.ssl = ssl.create_default_context(cafile=ca)
        self.ssl.set_alpn_protocols(["h2"])
        self.conn: _Frames | None = None
        self.lock = asyncio.Lock()
        self.blocks: dict[str, bytes] = {}

    async def _connection(self) -> _Frames:
        conn = self.conn
        if conn is not None and conn.lost is None:
            return conn
        async with self.lock:
            if self.conn is None or self.conn.lost is not None:
                transport, proto = await asyncio.get_running_loop().create_connection(
                    self.protocol, self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host,
                )
                sslobj = transport.get_extra_info("ssl_object")
                if sslobj is None or sslobj.selected_alpn_protocol() != "h2":
                    transport.close()
                    raise ConnectionError("the server did not select h2 over ALPN")
                self.conn = proto
            return self.conn

    def _block(self, url: str) -> bytes:
        block = self.blocks.get(url)
        if block is None:
            path = "/" + (url.split("/", 3)[3] if url.count("/") >= 3 else "")
            # :method GET (static 2), :scheme https (static 7), :path, :authority
            block = b"\x82\x87" + _literal(4, path.encode()) + _literal(1, self.authority)
            self.blocks[url] = block
        return block

    async def get(self, url: str) -> int:
        conn = await self._connection()
        return await conn.request(self._block(url))

    download = get

    async def aclose(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()
