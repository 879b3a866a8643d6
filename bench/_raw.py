"""The physical limit for a Python client: a minimal HTTP/1.1 client on
asyncio's protocols. Keep-alive, one request per connection at a time (no
pipelining), Content-Length responses only, bodies counted and dropped, no
header parsing beyond the status and Content-Length. Anything a real client
does beyond this is overhead the ratios to "raw" make visible.

Three front-ends share the head parsing (the first two share the counting too):

- ``raw``: `asyncio.BufferedProtocol` reading into one preallocated buffer.
  No allocation and no copy per read: the kernel's own copy is the only one.
- ``raw-protocol``: a plain `asyncio.Protocol`, the issue's "minimal raw
  asyncio.Protocol client". The loop hands it a new `bytes` per read, as it
  does for aiohttp: an allocation per read and, on uvloop, a copy.
- ``raw-pull``: the least a client whose caller pulls the body must do.
  Both front-ends above count a body inside the loop's read callback, so no
  task runs until the response is complete. A client with an async-iterator
  body (`aiter_raw()`, `iter_any()`) cannot: each read wakes the caller's
  task, which takes the bytes buffered so far. Here the socket is read into
  one reused buffer and the requesting task takes everything buffered at
  each wake-up, as `bytes` of at most 64 KiB (one copy, one future per
  wait), and nothing else. Pieces stay below glibc's 128 KiB mmap
  threshold: taking all that is buffered as one `bytes` made every
  wake-up after a large read map, fault in and unmap fresh memory, and
  its first downloads 1.7-2x slower.

The HTTP/2 scenarios get the first two front-ends from `_raw_h2.py`.

The sockets are tuned as hyperhttp tunes its own, so the limit stays a
limit: each starts with a 2 MiB receive window (hyperhttp's
`_RECEIVE_WINDOW_START`, hyperhttp/_transport/dial.py), and raw and
raw-pull read into a 128 KiB buffer (its `HIGH_WATER`,
hyperhttp/_backends/stream.py). On loopback these two settings decide
large downloads: untuned, the raw clients downloaded 10 MiB bodies at a
third to a half of the speed. `RawClient(window=0, buffer=1024 * 1024)`
(run.py's `--raw-window 0 --raw-buffer 1048576`) gives the untuned ones:
the kernel's default window and the 1 MiB buffer they had before.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import cast
from urllib.parse import urlsplit


class _Counting(asyncio.BaseProtocol):
    """The response counting both front-ends share."""

    def __init__(self) -> None:
        super().__init__()  # the front-end's, when it has one
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.need = -1  # body bytes still expected; -1 while reading the head
        self.got = 0
        self.length = 0  # the Content-Length of the response being read
        self.waiter: asyncio.Future[int] | None = None
        self.writable: asyncio.Future[None] | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def take_head(self, data: bytes | memoryview) -> int | None:
        """Add `data` to the response head; once the head is complete, the
        body length (the head's Content-Length) and how many bytes of `data`
        came after the head, else None. -1: no Content-Length."""
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.head[:end]).lower()
        extra = len(self.head) - end - 4
        self.head.clear()
        idx = head.find(b"\r\ncontent-length:")
        if idx < 0:
            self._done(ValueError("raw client needs Content-Length"))
            return -1
        line_end = head.find(b"\r\n", idx + 2)
        self.length = int(head[idx + 17:line_end if line_end > 0 else len(head)])
        return extra

    def received(self, data: bytes | memoryview, nbytes: int) -> None:
        if self.need < 0:
            extra = self.take_head(data[:nbytes])
            if extra is None or extra < 0:
                return
            self.need = self.length - extra
            self.got = extra
        else:
            self.need -= nbytes
            self.got += nbytes
        if self.need == 0:
            self.need = -1
            self._done(None)

    def _done(self, exc: BaseException | None) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(self.got)
            else:
                waiter.set_exception(exc)

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed")
        self._done(self.lost)
        self.resume_writing()

    async def roundtrip(self, request: bytes) -> int:
        if self.lost is not None or self.transport is None:
            raise ConnectionResetError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


WINDOW = 2 * 1024 * 1024  # receive window each socket starts with (0: the kernel's)
BUFFER = 128 * 1024  # the raw and raw-pull receive buffer


class OneBuffer(asyncio.BufferedProtocol):
    """Front-end: reads into one preallocated buffer, no allocation per
    chunk received, and hands each read to `received()`."""

    SIZE = BUFFER

    def __init__(self) -> None:
        super().__init__()
        self.buffer = memoryview(bytearray(self.SIZE))

    def received(self, data: bytes | memoryview, nbytes: int) -> None:
        raise NotImplementedError

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.received(self.buffer, nbytes)


class BytesPerRead(asyncio.Protocol):
    """Front-end: takes the `bytes` the loop allocates for each read."""

    def received(self, data: bytes | memoryview, nbytes: int) -> None:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        self.received(data, len(data))


class _Conn(_Counting, OneBuffer):
    pass


class _PlainConn(_Counting, BytesPerRead):
    pass


class _PullConn(_Counting, asyncio.BufferedProtocol):
    """raw-pull: reads go into one reused buffer (`BUFFER`, hyperhttp's
    largest); at each wake-up the requesting task takes everything buffered,
    as `bytes` of at most `PIECE` bytes. Reading pauses while less than
    64 KiB of the buffer is free."""

    SIZE = BUFFER
    MIN_FREE = 64 * 1024
    PIECE = 64 * 1024  # what the caller gets per `bytes`, as hyperhttp's chunks

    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray(self.SIZE)
        self.view = memoryview(self.buf)
        self.start = 0  # unread body bytes are buf[start:end]
        self.end = 0
        self.in_body = False
        self.wake: asyncio.Future[None] | None = None
        self.paused = False

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.start == self.end:
            self.start = self.end = 0
        elif self.SIZE - self.end < self.MIN_FREE:  # move the unread bytes to the front
            unread = self.end - self.start
            self.buf[:unread] = self.view[self.start:self.end]
            self.start, self.end = 0, unread
        return self.view[self.end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.in_body:
            self.end += nbytes
        else:
            extra = self.take_head(self.view[self.end:self.end + nbytes])
            if extra is None:
                return
            if extra < 0:  # no Content-Length: take_head failed the exchange
                self._wake()
                return
            self.in_body = True
            self.start = self.end + nbytes - extra
            self.end += nbytes
        if self.SIZE - (self.end - self.start) < self.MIN_FREE and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        wake, self.wake = self.wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._wake()

    async def roundtrip(self, request: bytes) -> int:
        if self.lost is not None or self.transport is None:
            raise ConnectionResetError("connection closed")
        loop = asyncio.get_running_loop()
        # Fails (only) with what ends the exchange: a head without
        # Content-Length, or the connection lost.
        failed = self.waiter = loop.create_future()
        self.in_body = False
        self.transport.write(request)
        got = 0
        while True:
            if self.in_body:
                while self.end > self.start:
                    cut = min(self.end, self.start + self.PIECE)
                    chunk = self.view[self.start:cut].tobytes()  # what the caller gets
                    self.start = cut
                    got += len(chunk)
                    del chunk
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                if got >= self.length:
                    if got > self.length:
                        raise ValueError("raw client: bytes past the response body")
                    self.in_body = False
                    self.waiter = None
                    return got
            if failed.done():
                failed.result()  # raises
            self.wake = loop.create_future()
            await self.wake


class RawClient:
    """A tiny pool of connections to one host; same driver shape as the others."""

    def __init__(
        self, url: str, *, plain: bool = False, pull: bool = False, window: int = WINDOW,
        buffer: int = BUFFER,
    ) -> None:
        """`window`: start each socket's receive window at that many bytes, as
        hyperhttp does on Linux (0: the kernel's default). `buffer`: the
        receive buffer of raw and raw-pull (raw-protocol reads into the
        loop's own)."""
        protocol: type[_Counting] = _PullConn if pull else _PlainConn if plain else _Conn
        if buffer != BUFFER and not plain:
            protocol = type(protocol.__name__, (protocol,), {"SIZE": buffer})
        self.protocol = protocol
        self.window = window
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError("the raw client speaks cleartext HTTP/1.1 only")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.idle: list[_Counting] = []
        self.all: list[_Counting] = []
        self.requests: dict[str, bytes] = {}

    async def _acquire(self) -> _Counting:
        while self.idle:
            conn = self.idle.pop()
            if conn.lost is None:
                return conn
        loop = asyncio.get_running_loop()
        if self.window:
            # hyperhttp's way (dial._start_receive_window): a low mark that
            # large makes Linux size the buffer for it; then back to 1 byte.
            family, _, _, _, addr = (
                await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            )[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, self.window)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
                await loop.sock_connect(sock, addr)
            except BaseException:
                sock.close()
                raise
            _, proto = await loop.create_connection(self.protocol, sock=sock)
        else:
            _, proto = await loop.create_connection(self.protocol, self.host, self.port)
        self.all.append(proto)
        return proto

    def _request(self, path: str) -> bytes:
        req = self.requests.get(path)
        if req is None:
            req = (f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                   "User-Agent: raw\r\nAccept: */*\r\n\r\n").encode()
            self.requests[path] = req
        return req

    async def get(self, url: str) -> int:
        path = url.split("/", 3)[3] if url.count("/") >= 3 else ""
        conn = await self._acquire()
        n = await conn.roundtrip(self._request("/" + path))
        self.idle.append(conn)
        return n

    download = get

    async def upload(self, url: str, path: str, chunk: int = 1024 * 1024) -> int:
        """POST the file at `path` as multipart/form-data with Content-Length."""
        target = "/" + url.split("/", 3)[3]
        boundary = "rawboundary7b4e1c0f"
        pre = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
               f"filename=\"{os.path.basename(path)}\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        post = f"\r\n--{boundary}--\r\n".encode()
        length = len(pre) + os.path.getsize(path) + len(post)
        head = (f"POST {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {length}\r\n\r\n").encode()
        conn = await self._acquire()
        assert conn.transport is not None
        conn.waiter = asyncio.get_running_loop().create_future()
        conn.transport.write(head + pre)
        with open(path, "rb", buffering=0) as fh:
            while data := fh.read(chunk):
                if conn.writable is not None:
                    await conn.writable
                if conn.lost is not None:
                    raise conn.lost
                conn.transport.write(data)
        conn.transport.write(post)
        await conn.waiter
        self.idle.append(conn)
        return 200

    async def aclose(self) -> None:
        for conn in self.all:
            if conn.transport is not None:
                conn.transport.close()
