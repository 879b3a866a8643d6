"""The one piece of code that touches a socket: an `asyncio.Protocol` that
buffers what arrives and lets one reader pull it with a timeout.

It works the same on the default asyncio loop and on uvloop, and avoids
the StreamReader/StreamWriter layer (two objects, a lock and a copy per
read). Reads return whatever is buffered as one `bytes`; when the buffer
passes a high-water mark the transport stops reading, so a slow consumer
of a large body holds at most that much in memory.

Errors come out as hyperhttp exceptions naming the peer: ReadError,
ReadTimeout, WriteError, WriteTimeout.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from .._exceptions import ReadError, ReadTimeout, WriteError, WriteTimeout

HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class SocketStream(asyncio.Protocol):
    """A buffered, pull-based byte stream over one transport."""

    def __init__(self, peer: str = "") -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._closed = False
        self._exc: BaseException | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        # Several writers (HTTP/2 streams) may wait for the buffer at once.
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._read_paused = False
        # Called with no argument when data or EOF arrives while nobody
        # reads (HTTP/2 uses it to process frames as they come).
        self.on_data: Any = None
        self._close_callbacks: list[Any] = []
        self._lost = False

    # --- asyncio.Protocol callbacks ---------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        _wake(self._read_waiter)
        if self.on_data is not None:
            self.on_data()

    def eof_received(self) -> bool | None:
        self._eof = True
        _wake(self._read_waiter)
        if self.on_data is not None:
            self.on_data()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._eof = True
        self._lost = True
        # asyncio closes the socket right after this returns, in the same
        # callback: run the callbacks on the next turn, once it is closed.
        for callback in self._close_callbacks:
            self._loop.call_soon(callback)
        self._close_callbacks.clear()
        if exc is not None:
            self._exc = exc
        _wake(self._read_waiter)
        self._wake_drainers()
        if self.on_data is not None:
            self.on_data()

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            _wake(waiter)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drainers()

    # --- reading ----------------------------------------------------------
    def read_nowait(self) -> bytes:
        """Everything buffered now (b"" when nothing is)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        if chunks:
            chunks.clear()
        self._size = 0
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    async def read(self, timeout: float | None) -> bytes:
        """Return buffered bytes, waiting up to `timeout` for some;
        b"" means the peer closed its side."""
        while True:
            if self._chunks:
                return self.read_nowait()
            if self._eof:
                return self._eof_result()
            waiter = self._loop.create_future()
            self._read_waiter = waiter
            handle = None if timeout is None else self._loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            except TimeoutError:
                raise ReadTimeout(
                    f"no data from {self.peer} for {timeout:.3g}s (read timeout)"
                ) from None
            finally:
                self._read_waiter = None
                if handle is not None:
                    handle.cancel()

    def _eof_result(self) -> bytes:
        if self._exc is not None:
            raise ReadError(f"connection to {self.peer} failed: {self._exc}") from None
        return b""

    def unread(self, data: bytes) -> None:
        """Put bytes back at the front (a parser read past its message)."""
        if data:
            self._chunks.appendleft(data)
            self._size += len(data)

    # --- writing ----------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed or self.transport is None or self.transport.is_closing():
            raise WriteError(f"connection to {self.peer} is closed; cannot send")
        self.transport.write(data)

    def writelines(self, data: list[bytes]) -> None:
        if self._closed or self.transport is None or self.transport.is_closing():
            raise WriteError(f"connection to {self.peer} is closed; cannot send")
        self.transport.writelines(data)

    async def drain(self, timeout: float | None) -> None:
        """Wait until the transport's write buffer is below its high mark."""
        if self._closed:
            raise WriteError(f"connection to {self.peer} was closed while sending")
        if not self._write_paused:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        handle = None if timeout is None else self._loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            raise WriteTimeout(
                f"{self.peer} accepted no data for {timeout:.3g}s (write timeout)"
            ) from None
        finally:
            if waiter in self._drain_waiters:
                self._drain_waiters.remove(waiter)
            if handle is not None:
                handle.cancel()
        if self._closed:
            raise WriteError(f"connection to {self.peer} was closed while sending")

    # --- state --------------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def at_eof(self) -> bool:
        return self._eof

    def has_buffered_data(self) -> bool:
        return bool(self._chunks)

    def is_dead_when_idle(self) -> bool:
        """For a connection with no request in flight: closed, half-closed or
        holding bytes nobody asked for all mean it cannot be reused."""
        return self._closed or self._eof or bool(self._chunks) or (
            self.transport is not None and self.transport.is_closing()
        )

    def get_extra_info(self, name: str) -> Any:
        return None if self.transport is None else self.transport.get_extra_info(name)

    def call_when_closed(self, callback: Any) -> None:
        """Run `callback()` once the socket is really closed (the fleet hands
        a connection's slot to another process only then)."""
        if self._lost or self.transport is None:
            self._loop.call_soon(callback)
        else:
            self._close_callbacks.append(callback)

    def close(self) -> None:
        """Close at once (abort: no lingering TLS close_notify wait)."""
        if self.transport is not None and not self._closed:
            self._closed = True
            self.transport.abort()
            _wake(self._read_waiter)
            self._wake_drainers()

    def close_gracefully(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
