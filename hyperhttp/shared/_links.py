"""A worker's socket to the coordinator: the handshake and the framed channel."""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import socket
from collections.abc import Callable
from typing import Any, cast

from .._exceptions import CoordinatorError
from ._protocol import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    FrameError,
    FrameReader,
    Hello,
    Welcome,
    decode_from_coordinator,
    encode,
)
from ._runtime import RuntimePaths, check_private_dir, check_socket

__all__ = ["HANDSHAKE_TIMEOUT", "FramedProtocol", "Link", "handshake"]

HANDSHAKE_TIMEOUT = 3.0

log_name = "hyperhttp.shared"


class FramedProtocol(asyncio.Protocol):
    """A Unix-socket channel of length-prefixed msgspec frames, either end.

    Subclasses say what a frame body means (`handle_frame`, which decodes
    it for its direction) and what a frame they cannot accept does
    (`bad_frame`, called for the exceptions in `BAD_FRAME`); once `closed`
    is set nothing more is read.
    """

    BAD_FRAME: tuple[type[Exception], ...] = (FrameError,)

    def __init__(self) -> None:
        self._reader = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            for body in self._reader.feed(data):
                self.handle_frame(body)
                if self.closed:
                    return
        except self.BAD_FRAME as exc:
            self.bad_frame(exc)

    def handle_frame(self, body: bytes) -> None:
        raise NotImplementedError

    def bad_frame(self, exc: Exception) -> None:
        raise NotImplementedError


class Link(FramedProtocol):
    """The framed channel after the handshake; hands decoded messages to `on_message`."""

    def __init__(self, on_message: Callable[[Any], None], on_lost: Callable[[Link], None]) -> None:
        super().__init__()
        self._on_message = on_message
        self._on_lost = on_lost
        self.fd = -1

    def __repr__(self) -> str:
        return f"<Link fd={self.fd} {'closed' if self.closed else 'open'}>"

    def handle_frame(self, body: bytes) -> None:
        self._on_message(decode_from_coordinator(body))

    def bad_frame(self, exc: Exception) -> None:
        # A coordinator speaking nonsense is as good as gone.
        self.close()
        self._on_lost(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(self)

    def send(self, msg: Any) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(encode(msg))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def detach_fd(self) -> None:
        """After fork, in the child: point our fd at /dev/null so the child
        holds no reference to the socket, while the number stays taken until
        the stale transport object closes it."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            os.dup2(null, self.fd, inheritable=False)
            os.close(null)
        self.closed = True
        self.transport = None


async def handshake(
    paths: RuntimePaths,
    on_message: Callable[[Any], None],
    on_lost: Callable[[Link], None],
) -> tuple[Link, Welcome, mmap.mmap]:
    """Connect, say Hello, receive Welcome and the table fd; raises CoordinatorError."""
    check_private_dir(paths.directory)
    check_socket(paths.socket)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            await loop.sock_connect(sock, os.fspath(paths.socket))
            sock.send(encode(Hello(PROTOCOL_VERSION, os.getpid())))
            welcome, fd, extra = await _receive_welcome(loop, sock)
    except (OSError, TimeoutError, FrameError) as exc:
        sock.close()
        raise CoordinatorError(f"cannot join the fleet coordinator at {paths.socket}: {exc}") from None
    try:
        mapping = mmap.mmap(fd, welcome.table_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except (OSError, ValueError) as exc:
        sock.close()
        raise CoordinatorError(f"cannot map the fleet table: {exc}") from None
    finally:
        os.close(fd)
    link = Link(on_message, on_lost)
    link.fd = sock.fileno()
    try:
        await loop.create_unix_connection(lambda: link, sock=sock)
    except OSError as exc:
        sock.close()
        mapping.close()
        raise CoordinatorError(f"cannot join the fleet coordinator: {exc}") from None
    if extra:
        link.data_received(extra)
    return link, welcome, mapping


async def _receive_welcome(
    loop: asyncio.AbstractEventLoop, sock: socket.socket
) -> tuple[Welcome, int, bytes]:
    buf = bytearray()
    fds: list[int] = []
    try:
        while True:
            await _readable(loop, sock)
            try:
                data, got, _, _ = socket.recv_fds(sock, MAX_FRAME + 4, 2, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                continue
            fds.extend(got)
            if not data:
                raise ConnectionResetError("the coordinator closed the connection")
            buf += data
            if len(buf) >= 4:
                size = int.from_bytes(buf[:4], "big")
                if size == 0 or size > MAX_FRAME:
                    raise FrameError("bad frame from coordinator")
                if len(buf) >= 4 + size:
                    msg = decode_from_coordinator(bytes(buf[4 : 4 + size]))
                    if not isinstance(msg, Welcome) or msg.version != PROTOCOL_VERSION:
                        raise FrameError("coordinator did not welcome us")
                    if len(fds) != 1:
                        raise FrameError("coordinator sent no table")
                    return msg, fds.pop(), bytes(buf[4 + size :])
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        await fut
    finally:
        loop.remove_reader(sock.fileno())
