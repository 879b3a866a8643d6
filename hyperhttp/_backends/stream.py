"""The one piece of code that touches a socket: an `asyncio.BufferedProtocol`
that buffers what arrives and lets one reader pull it with a timeout.

It works the same on the default asyncio loop and on uvloop, and avoids
the StreamReader/StreamWriter layer (two objects, a lock and a copy per
read). The socket is read straight into one receive buffer per stream,
reused for the life of the connection (a plain Protocol gets a new `bytes`
per socket read, and joining those cost a second copy and, on large
bodies, allocator churn and a high peak RSS). Reads return whatever is
buffered as one `bytes`. The buffer starts at `MIN_BUFFER` and quadruples
while socket reads fill it (bulk transfer) up to `HIGH_WATER`; when that
much is buffered unread the transport stops reading, so a slow consumer of
a large body holds at most that much in memory, and no read returns more.
(The kernel's receive buffer holds the rest of what the sender may send:
see `_RECEIVE_WINDOW_START` in `_transport/dial.py`.)
A reader that takes every read as it comes (HTTP/2) can ask for at most
two reads per turn of the loop (`one_read_per_turn`), so the tasks that
consume what it filed run in between.

Errors come out as hyperhttp exceptions naming the peer: ReadError,
ReadTimeout, WriteError, WriteTimeout.
"""

from __future__ import annotations

import asyncio
import select
import threading
from typing import Any

from .._exceptions import PoolClosed, ReadError, ReadTimeout, WriteError, WriteTimeout

# Largest receive buffer: unread bytes held at most. 128 KiB, not the 1 MiB
# of before: together with the kernel window `dial` now starts with, 20
# downloads of 10 MiB from a local nginx (bench/run.py h1-download, uvloop)
# ran 3.5 times as fast, on half the client CPU per download. Neither
# alone gained much; with that window, 512 KiB and 1 MiB buffers were
# no faster than before and 256 KiB only in some runs. (Probably the cache:
# 128 KiB stays in it between the kernel's copy in and ours out; not
# measured here.) HTTP/2 over TLS, bound by decryption, measured the same.
HIGH_WATER = 128 * 1024
MIN_BUFFER = 16 * 1024  # what an idle connection keeps
_MIN_FREE = 4 * 1024  # offer at least this much to a socket read
_SPLIT_HEAD = 16 * 1024  # read_head_nowait() splits the head off beyond this
# Grown receive buffers given back by streams gone idle, for the next bulk
# transfer to take instead of growing its own: a fresh large bytearray is
# zeroed and page-faulted in again, which cost a 10 MiB download as much as
# copying it out. At most _SPARE_MAX are kept, the largest given back (one
# list per process, under a lock: loops in several threads may share it).
_SPARE: list[bytearray] = []
_SPARE_MAX = 4
_SPARE_LOCK = threading.Lock()


def _spare_buffer(size: int) -> bytearray:
    """The smallest kept buffer of at least `size` bytes, else a new one.
    Smaller kept buffers stay kept, for smaller growths."""
    with _SPARE_LOCK:
        best = -1
        for i, buf in enumerate(_SPARE):
            if len(buf) >= size and (best < 0 or len(buf) < len(_SPARE[best])):
                best = i
        if best >= 0:
            return _SPARE.pop(best)  # by position: no comparing of contents
    return bytearray(size)


def _keep_spare(buf: bytearray) -> None:
    """Keep a grown buffer for a later transfer; when as many are kept as
    may be, it takes the place of the smallest one if it is larger."""
    with _SPARE_LOCK:
        if len(_SPARE) < _SPARE_MAX:
            _SPARE.append(buf)
            return
        smallest = min(range(len(_SPARE)), key=lambda i: len(_SPARE[i]))
        if len(_SPARE[smallest]) < len(buf):
            _SPARE[smallest] = buf


def _closed_by_client(peer: str) -> PoolClosed:
    return PoolClosed(f"the client was closed while a request to {peer} was in flight")


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class SocketStream(asyncio.BufferedProtocol):
    """A buffered, pull-based byte stream over one transport."""

    def __init__(self, peer: str = "") -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        # Received bytes not yet read are self._buf[self._start:self._end];
        # bytes given back by unread() come before them.
        self._buf = bytearray(MIN_BUFFER)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._front = b""
        self._grow = False
        # A poll object for this stream's socket (see is_dead_when_idle).
        self._poller: select.poll | None = None
        self._eof = False
        self._closed = False
        self._exc: BaseException | None = None
        # Set by close(by_client=True): reads and writes then raise
        # PoolClosed, not the errors of a peer that went away.
        self._closed_by_client = False
        self._read_waiter: asyncio.Future[None] | None = None
        # Several writers (HTTP/2 streams) may wait for the buffer at once.
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        # Bytes `write_reply` put in the write buffer since it went over its
        # high mark (the peer stopped taking them); 0 once it drains.
        self._paused_replies = 0
        self._drain_on_data = False  # a drain(until_data=True) is waiting
        self._read_paused = False  # full of unread bytes: resumed as they are read
        # Set by a reader that files every read at once (HTTP/2): take at
        # most two reads per turn of the loop. uvloop (libuv) reads a socket
        # up to 32 times in one turn; HTTP/2 bodies then piled up unread
        # (up to the flow-control windows) before their readers ran.
        self.one_read_per_turn = False
        self._turn = 0  # reads this turn: 0, 1, or 2 = paused until the next
        # Called with no argument when data or EOF arrives while nobody
        # reads (HTTP/2 uses it to process frames as they come).
        self.on_data: Any = None
        self._close_callbacks: list[Any] = []
        self._lost = False
        # One timer per stream for read timeouts, re-armed lazily: a read
        # only moves the deadline; the timer, when it fires, either expires
        # the read still waiting or sets itself for the deadline now due.
        # (A timer per read cost a handle and a heap push and pop each.)
        self._read_deadline: float | None = None
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_timer_at = 0.0
        self._read_timeout = 0.0  # what the waiting read asked for, for its message

    # --- asyncio.Protocol callbacks ---------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        end = self._end
        if self._start == end and end:
            self._start = self._end = end = 0  # all read: start over at the front
        if self._grow or len(self._buf) - end < _MIN_FREE:
            end = self._make_room()
        return self._view if end == 0 else self._view[end:]

    def buffer_updated(self, nbytes: int) -> None:
        end = self._end = self._end + nbytes
        cap = len(self._buf)
        if end == cap:
            if cap < HIGH_WATER:
                self._grow = True  # the read filled what we offered: offer more
            elif (
                cap - (end - self._start) < _MIN_FREE
                and not self._read_paused
                and self.transport is not None
            ):
                # Full of unread bytes: wait for the reader (read_nowait resumes).
                self._read_paused = True
                if self._turn != 2:  # else paused already, for the turn
                    self.transport.pause_reading()
        waiter = self._read_waiter  # _wake() inlined: this runs once per socket read
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.on_data is not None:
            self.on_data()
        if self._drain_on_data:
            self._wake_drainers()
        if self.one_read_per_turn:
            self._count_turn()

    def _count_turn(self) -> None:
        turn = self._turn
        if turn == 0:
            self._turn = 1
            self._loop.call_soon(self._turn_over)
        elif turn == 1 and self.transport is not None and not self._closed:
            self._turn = 2
            if not self._read_paused:  # else paused already, on a full buffer
                self.transport.pause_reading()

    def _turn_over(self) -> None:
        paused = self._turn == 2
        self._turn = 0
        if paused and not self._read_paused:
            self._resume_reading()

    def _resume_reading(self) -> None:
        transport = self.transport
        if transport is not None and not self._closed and not transport.is_closing():
            transport.resume_reading()

    def _drained(self) -> None:
        """Unread bytes were taken: read again if the buffer had stopped it."""
        self._read_paused = False
        if self._turn != 2:
            self._resume_reading()

    def _make_room(self) -> int:
        """Move unread bytes to the front, into a larger buffer when reads
        fill it or unread bytes take half of it; return the new end."""
        start, end = self._start, self._end
        used = end - start
        cap = len(self._buf)
        want = cap
        if cap < HIGH_WATER:
            if self._grow:
                # Reads fill it: a bulk transfer. Quadrupling reaches the
                # full size in two steps from MIN_BUFFER, so fewer fresh
                # buffers are zeroed and faulted in on the way.
                want = min(cap * 4, HIGH_WATER)
            elif used > cap // 2:
                want = cap * 2
        while want - used < _MIN_FREE:
            want *= 2  # only when the transport reads on while paused
        self._grow = False
        if want == cap:
            if start:
                self._buf[0:used] = self._view[start:end]
        else:
            buf = _spare_buffer(want)
            buf[0:used] = self._view[start:end]
            self._buf = buf
            self._view = memoryview(buf)
        self._start = 0
        self._end = used
        return used

    def data_received(self, data: bytes) -> None:
        """For a transport that does not use the buffered interface."""
        view = memoryview(data)
        while view:
            target = self.get_buffer(len(view))
            n = min(len(target), len(view))
            target[:n] = view[:n]
            self.buffer_updated(n)
            view = view[n:]

    def shrink(self) -> None:
        """Drop a receive buffer grown by a large body, if it is empty:
        connections waiting in the pool keep `MIN_BUFFER` each."""
        if len(self._buf) > MIN_BUFFER and self._start == self._end:
            _keep_spare(self._buf)
            self._buf = bytearray(MIN_BUFFER)
            self._view = memoryview(self._buf)
            self._start = self._end = 0
            self._grow = False

    def eof_received(self) -> bool | None:
        self._eof = True
        _wake(self._read_waiter)
        if self._drain_on_data:
            self._wake_drainers()
        if self.on_data is not None:
            self.on_data()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._eof = True
        self._lost = True
        self._cancel_read_timer()
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
        self._paused_replies = 0
        self._wake_drainers()

    # --- reading ----------------------------------------------------------
    def read_nowait(self, limit: int | None = None) -> bytes:
        """Everything buffered now (b"" when nothing is), or only its first
        `limit` bytes; the rest stays buffered for the next read."""
        start, end = self._start, self._end
        if start == end:
            if not self._front:
                return b""
            data = b""
        elif limit is not None and end - start > limit and not self._front:
            cut = self._start = start + limit
            if self._read_paused and end - cut < len(self._buf) // 2:
                self._drained()
            return self._view[start:cut].tobytes()
        else:
            data = self._view[start:end].tobytes()
            self._start = self._end = 0
        if self._front:
            data, self._front = self._front + data, b""
        if self._read_paused:
            self._drained()
        return data

    def read_view(self) -> bytes | memoryview:
        """Everything buffered now, as `read_nowait()`, but as a view of the
        receive buffer when it can be: no copy. The view is valid only
        until the caller returns to the loop (the next socket read writes
        over it), so this is for an `on_data` callback that copies out
        what it keeps before returning."""
        start, end = self._start, self._end
        if self._front or start == end:
            return self.read_nowait()
        self._start = self._end = 0
        if self._read_paused:
            self._drained()
        return self._view[start:end]

    def read_head_nowait(self) -> bytes:
        """Like `read_nowait()`, but when much is buffered (a large body
        right behind a response head), only the bytes through the first
        blank line: the body then leaves the buffer in one copy, not in
        one copy here and another when the parser cuts the head off."""
        start, end = self._start, self._end
        if end - start <= _SPLIT_HEAD or self._front:
            return self.read_nowait()
        cut = self._buf.find(b"\r\n\r\n", start, end)
        if cut < 0:
            return self.read_nowait()
        cut += 4
        self._start = cut
        return self._view[start:cut].tobytes()

    async def read(self, timeout: float | None, head: bool = False) -> bytes:
        """Return buffered bytes, waiting up to `timeout` for some;
        b"" means the peer closed its side. `head`: a response head is
        expected (see `read_head_nowait`)."""
        while True:
            waiter = self.data_waiter(timeout)
            if waiter is None:
                if self._end > self._start or self._front:
                    return self.read_head_nowait() if head else self.read_nowait()
                return self._eof_result()
            await waiter

    def data_waiter(self, timeout: float | None) -> asyncio.Future[None] | None:
        """None when bytes or EOF are in already; else a future that is
        done when some arrive, or fails with ReadTimeout after `timeout`
        seconds without any. (`read()` without its coroutine, for a caller
        that then takes the bytes with `read_nowait()`.)"""
        if self._end > self._start or self._front or self._eof:
            return None
        loop = self._loop
        waiter: asyncio.Future[None] = loop.create_future()
        self._read_waiter = waiter
        if timeout is None:
            self._read_deadline = None
        else:
            deadline = self._read_deadline = loop.time() + timeout
            self._read_timeout = timeout
            if self._read_timer is None or self._read_timer_at > deadline:
                self._set_read_timer(deadline)
        return waiter

    def _set_read_timer(self, when: float) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._read_timer_at = when
        self._read_timer = self._loop.call_at(when, self._on_read_timer)

    def _on_read_timer(self) -> None:
        self._read_timer = None
        deadline = self._read_deadline
        waiter = self._read_waiter
        if deadline is None or waiter is None or waiter.done():
            return  # no read waiting: the next one arms the timer again
        if self._loop.time() >= deadline:
            waiter.set_exception(
                ReadTimeout(f"no data from {self.peer} for {self._read_timeout:.3g}s (read timeout)")
            )
        else:
            self._set_read_timer(deadline)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _eof_result(self) -> bytes:
        if self._closed_by_client:
            raise _closed_by_client(self.peer)
        if self._exc is not None:
            raise ReadError(f"connection to {self.peer} failed: {self._exc}") from None
        return b""

    def unread(self, data: bytes) -> None:
        """Put bytes back at the front (a parser read past its message)."""
        if data:
            self._front = data + self._front

    # --- writing ----------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed or self.transport is None or self.transport.is_closing():
            if self._closed_by_client:
                raise _closed_by_client(self.peer)
            raise WriteError(f"connection to {self.peer} is closed; cannot send")
        self.transport.write(data)

    def write_reply(self, data: bytes) -> int:
        """`write()`, for bytes the peer's own frames made us send (HTTP/2
        PING and SETTINGS ACKs, RST_STREAM): returns how many such bytes
        went into the write buffer since it passed its high mark, 0 while
        it is below. A peer that keeps asking and reads nothing makes that
        grow without end; the caller decides when to stop it."""
        self.write(data)
        if not self._write_paused:
            return 0
        self._paused_replies += len(data)
        return self._paused_replies

    @property
    def gathers_writes(self) -> bool:
        """True when `writelines()` hands its pieces to the socket in one
        call without joining them first: uvloop, TLS, and asyncio's socket
        transport from Python 3.12 (before, it copied them into one bytes)."""
        transport = self.transport
        return (
            transport is not None
            and type(transport).writelines is not asyncio.WriteTransport.writelines
        )

    def writelines(self, data: list[bytes]) -> None:
        if self._closed or self.transport is None or self.transport.is_closing():
            if self._closed_by_client:
                raise _closed_by_client(self.peer)
            raise WriteError(f"connection to {self.peer} is closed; cannot send")
        self.transport.writelines(data)

    async def drain(
        self, timeout: float | None, *, until_data: bool = False, limit: float | None = None
    ) -> None:
        """Wait until the transport's write buffer is below its high mark.
        `until_data`: return as well when bytes or EOF arrive (the caller
        then checks `write_paused`). `limit`: the configured timeout to name,
        when `timeout` is what is left of it."""
        if self._closed:
            if self._closed_by_client:
                raise _closed_by_client(self.peer)
            raise WriteError(f"connection to {self.peer} was closed while sending")
        if not self._write_paused:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        self._drain_on_data = until_data
        handle = None if timeout is None else self._loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            shown = timeout if limit is None else limit
            raise WriteTimeout(
                f"{self.peer} accepted no data for {shown:.3g}s (write timeout)"
            ) from None
        finally:
            self._drain_on_data = False
            if waiter in self._drain_waiters:
                self._drain_waiters.remove(waiter)
            if handle is not None:
                handle.cancel()
        if self._closed:
            if self._closed_by_client:
                raise _closed_by_client(self.peer)
            raise WriteError(f"connection to {self.peer} was closed while sending")

    # --- state --------------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def write_paused(self) -> bool:
        """True while the transport's write buffer is over its high mark
        (`drain()` would wait)."""
        return self._write_paused

    @property
    def at_eof(self) -> bool:
        return self._eof

    def has_buffered_data(self) -> bool:
        return self._end > self._start or bool(self._front)

    def is_dead_when_idle(self) -> bool:
        """For a connection with no request in flight: closed, half-closed or
        holding bytes nobody asked for all mean it cannot be reused. Bytes
        or a FIN still in the kernel count too: the loop may not have read
        the socket since the response ended (a loop busy with other work, or
        the default loop's one read per turn), and the next request would
        take those bytes for its answer, or be sent into a closed
        connection. So the socket is polled, once per reuse."""
        if self._closed or self._eof or self.has_buffered_data():
            return True
        transport = self.transport
        if transport is None or transport.is_closing():
            return True
        poller = self._poller
        if poller is None:
            sock = transport.get_extra_info("socket")
            fd = sock.fileno() if sock is not None else -1
            if fd < 0:
                return False  # no socket to ask (a test double): trust the flags
            poller = self._poller = select.poll()
            poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))

    def get_extra_info(self, name: str) -> Any:
        return None if self.transport is None else self.transport.get_extra_info(name)

    def call_when_closed(self, callback: Any) -> None:
        """Run `callback()` once the socket is really closed (the fleet hands
        a connection's slot to another process only then)."""
        if self._lost or self.transport is None:
            self._loop.call_soon(callback)
        else:
            self._close_callbacks.append(callback)

    def close(self, by_client: bool = False) -> None:
        """Close at once (abort: no lingering TLS close_notify wait).
        `by_client`: the client is shutting down; a read or write still
        running raises PoolClosed."""
        self._cancel_read_timer()
        if by_client and not self._closed:
            self._closed_by_client = True
            self._eof = True  # a waiting read ends now, with PoolClosed
        if self.transport is not None and not self._closed:
            self._closed = True
            self.transport.abort()
            _wake(self._read_waiter)
            self._wake_drainers()

    def close_gracefully(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
