"""Opening connections: DNS, Happy Eyeballs racing, TLS handshake.

`open_connection` is the one way the transport layer gets a socket:

    resolve (DNSCache) -> race TCP connects (RFC 8305) -> wrap in a transport,
    TLS handshake + ALPN if an SSL context is given

all of it bounded by one ``connect_timeout``. Each TCP socket gets
TCP_NODELAY and, on Linux, a larger receive window to start with
(`_RECEIVE_WINDOW_START` says why).

The connection race is ours rather than ``loop.create_connection(
happy_eyeballs_delay=...)`` because uvloop does not implement that option.
Rules of the race:

- attempts start in the order of the address list (IPv6 first, families
  interleaved); the next attempt starts ``happy_eyeballs_delay`` seconds
  after the previous one, or at once when an attempt fails;
- the first attempt to connect wins; every other attempt is cancelled and
  its socket closed;
- each attempt closes its own socket on any failure or cancellation, and
  the race closes any winner it does not return, so a caller cancelled at
  any await leaks no file descriptor.

This module is the boundary where foreign errors become ours: OSError ->
`ConnectError`, ssl.SSLError -> `TLSError`, timeouts -> `ConnectTimeout`,
resolution failures -> `DNSError` (raised by the cache).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from .._exceptions import ConnectError, ConnectTimeout, TLSError
from .dns import Address, DNSCache

__all__ = ["connect_happy_eyeballs", "negotiated_alpn", "open_connection", "start_tls"]

P = TypeVar("P", bound=asyncio.BaseProtocol)


async def open_connection(
    host: str,
    port: int,
    protocol_factory: Callable[[], P],
    *,
    dns: DNSCache,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None = None,
    connect_timeout: float | None,
    happy_eyeballs_delay: float = 0.25,
) -> tuple[asyncio.Transport, P]:
    """Connect to ``host:port`` and return the transport and its protocol.

    With ``ssl_context`` the TLS handshake (with ALPN) is done before
    returning; ``server_hostname`` defaults to ``host`` and is used for SNI
    and certificate matching. ``connect_timeout`` (None: no limit) bounds
    resolution, connecting and the handshake together.

    Raises `DNSError`, `ConnectError`, `ConnectTimeout` or `TLSError`.
    """
    target = _target(host, port)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(connect_timeout) as deadline:
            addresses = await dns.resolve(host, port)
            sock = await connect_happy_eyeballs(
                addresses, delay=happy_eyeballs_delay, target=target
            )
            when = deadline.when()
            remaining = None if when is None else max(when - loop.time(), 0.001)
            hostname = None
            if ssl_context is not None:
                # An IPv6 zone ("fe80::1%eth0") is for routing, not part of
                # the name the certificate is checked against.
                hostname = (server_hostname or _strip_brackets(host)).split("%", 1)[0]
            return await _wrap_socket(
                loop, sock, protocol_factory, ssl_context, hostname, remaining, target
            )
    except TimeoutError:
        raise ConnectTimeout(f"timed out after {connect_timeout}s connecting to {target}") from None


async def connect_happy_eyeballs(
    addresses: Sequence[Address], *, delay: float, target: str
) -> socket.socket:
    """Race non-blocking TCP connects over ``addresses``; return the winning socket.

    ``delay`` is the stagger between attempts (0 starts all at once). Raises
    `ConnectError` naming ``target`` and every address's error if none connects.
    """
    if delay < 0:
        raise ValueError("happy_eyeballs_delay must be >= 0")
    if not addresses:
        raise ConnectError(f"could not connect to {target}: no addresses")
    loop = asyncio.get_running_loop()
    pending: dict[asyncio.Task[socket.socket], Address] = {}
    errors: list[tuple[Address, OSError]] = []
    upcoming = iter(addresses)
    exhausted = False
    winner: socket.socket | None = None
    try:
        while winner is None:
            if not exhausted:
                addr = next(upcoming, None)
                if addr is None:
                    exhausted = True
                else:
                    pending[loop.create_task(_attempt(loop, addr))] = addr
                    # With no stagger, start every attempt before waiting on any.
                    if delay == 0:
                        continue
            if not pending:
                break
            done, _ = await asyncio.wait(
                pending,
                timeout=None if exhausted else delay,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done:
                exc = task.exception()
                if exc is None:
                    # Other finished winners stay in `pending` and are closed below.
                    winner = task.result()
                    del pending[task]
                    break
                addr = pending.pop(task)
                if not isinstance(exc, OSError):
                    raise exc
                errors.append((addr, exc))
    finally:
        try:
            await _abandon(pending)
        except BaseException:
            if winner is not None:
                winner.close()
            raise
    if winner is not None:
        return winner
    summary = "; ".join(f"{_format_address(a)}: {_reason(e)}" for a, e in errors)
    raise ConnectError(f"could not connect to {target}: {summary}") from ExceptionGroup(
        f"every connection attempt to {target} failed", [e for _, e in errors]
    )


async def start_tls(
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    ssl_context: ssl.SSLContext,
    server_hostname: str,
    *,
    timeout: float | None,
) -> asyncio.Transport:
    """Upgrade an open connection to TLS; return the new transport.

    Used inside proxy CONNECT tunnels. ``protocol`` keeps receiving data but
    must write through the returned transport from now on; it gets no new
    ``connection_made``. Works on asyncio and uvloop, including TLS inside
    TLS (an HTTPS proxy). On failure the connection is closed and
    `TLSError`, `ConnectError` or `ConnectTimeout` is raised.
    """
    loop = asyncio.get_running_loop()
    target = _strip_brackets(server_hostname).split("%", 1)[0]  # no IPv6 zone
    handshake_timeout = None if timeout is None else max(timeout, 0.001)
    started = loop.time()
    try:
        async with asyncio.timeout(timeout):
            try:
                tls_transport = await loop.start_tls(
                    transport,
                    protocol,
                    ssl_context,
                    server_hostname=target,
                    ssl_handshake_timeout=handshake_timeout,
                )
            except BaseException as exc:
                transport.close()
                if isinstance(exc, OSError):
                    elapsed = loop.time() - started
                    raise _handshake_error(exc, target, elapsed, handshake_timeout) from exc
                raise
    except TimeoutError:
        raise ConnectTimeout(f"TLS handshake with {target} timed out after {timeout}s") from None
    if tls_transport is None:
        raise ConnectError(f"connection to {target} closed during TLS handshake")
    return tls_transport


def negotiated_alpn(transport: asyncio.BaseTransport) -> str | None:
    """The ALPN protocol the server chose (``"h2"``, ``"http/1.1"``), or None."""
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    return ssl_object.selected_alpn_protocol()


# The receive window a new TCP socket can offer from the start on Linux:
# 2 MiB (the kernel sizes its receive buffer at 4 MiB to allow it), against
# tcp_rmem's usual default of 128 KiB, which allows a window of about
# 95 KiB. Autotuning stays on: it grows the buffer further, but only while
# the reader keeps up with the sender within a round trip. On loopback and
# sidecar links a round trip takes microseconds, and there a fresh
# connection's window often stayed small for its whole first large body.
# Worse, on loopback the window updates our reads send are handled on our
# own CPU, and there they make the sender's socket send what it had queued:
# a window-limited connection made the client do both ends' TCP work.
# Measured with `bench/run.py --scenarios h1-download` (20 downloads of
# 10 MiB from nginx, 4 at a time, uvloop), together with the smaller
# `HIGH_WATER`: 11,155 MB/s against 3,140 MB/s with a 256 KiB window and
# 1 MiB buffers, 0.9 ms of client CPU per download against 1.9 ms. In
# `bench/cold_downloads.py` four first downloads in a fresh process took
# 4.6-4.7 ms in 5 of 6 runs (13.7 in one), against 14.5-16.0. Smaller
# windows did less: 1 MiB only in some runs, 256 KiB (the value before)
# never. The bench's raw clients get the same two settings (bench/_raw.py).
# The cost is kernel memory for a reader that stalls from a body's first
# byte: the sender can fill the window, so such a connection holds 4.2 MB in
# the kernel (`ss -tm`) and 128 KiB of ours, where it held 0.47 MB and 1 MiB
# before. A connection that once read fast can hold as much or more by
# autotuning alone (up to tcp_rmem's maximum: 6 MiB by default, 32 MiB on
# the machine measured), and the kernel's tcp_mem limits bound the total.
_RECEIVE_WINDOW_START = 2 * 1024 * 1024
_SETS_RECEIVE_WINDOW = sys.platform.startswith("linux") and hasattr(socket, "SO_RCVLOWAT")


def _start_receive_window(sock: socket.socket) -> None:
    """Size `sock`'s receive buffer for a window of `_RECEIVE_WINDOW_START`
    and leave autotuning on. Setting SO_RCVBUF would turn autotuning off.
    Instead, a SO_RCVLOWAT value makes Linux grow the buffer so that a
    window that large fits (about twice the value), so that the low mark can
    be met; the mark then goes back to 1 byte. (A kernel that does not grow
    it leaves its default: nothing is lost.)"""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, _RECEIVE_WINDOW_START)
    except OSError:
        return  # refused (a sandbox's seccomp, say): the kernel's default buffer
    # A failure here fails the attempt: left at 2 MiB, reads would wait for that much.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


async def _attempt(loop: asyncio.AbstractEventLoop, addr: Address) -> socket.socket:
    family, sockaddr = addr
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if _SETS_RECEIVE_WINDOW:
                _start_receive_window(sock)
        await loop.sock_connect(sock, sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


async def _abandon(pending: dict[asyncio.Task[socket.socket], Address]) -> None:
    """Cancel unfinished attempts and close every socket they produced."""
    for task in pending:
        task.cancel()
    try:
        if pending:
            # A cancelled attempt closes its own socket; waiting makes that happen
            # now. If we are cancelled while waiting, they still do so when they run.
            await asyncio.wait(pending)
    finally:
        for task in pending:
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().close()


async def _wrap_socket(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    protocol_factory: Callable[[], P],
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    handshake_timeout: float | None,
    target: str,
) -> tuple[asyncio.Transport, P]:
    started = loop.time()
    made: list[P] = []

    def factory() -> P:
        protocol = protocol_factory()
        made.append(protocol)
        return protocol

    try:
        if ssl_context is None:
            return await loop.create_connection(factory, sock=sock)
        return await loop.create_connection(
            factory,
            sock=sock,
            ssl=ssl_context,
            server_hostname=server_hostname,
            ssl_handshake_timeout=handshake_timeout,
        )
    except BaseException as exc:
        if isinstance(exc, ValueError | TypeError) and not isinstance(exc, OSError):
            # Refused before the loop took the socket (a certificate error
            # is an OSError and a ValueError: the handshake had it).
            sock.close()
            raise
        # The loop's transport has the socket and closes it itself. Never
        # close it here: cancelled once the TLS handshake is done, asyncio
        # starts a graceful TLS shutdown that keeps the socket registered
        # (up to 30 s), and its fd, freed under it, went to the next socket
        # ("File descriptor N is used by transport", or worse, one
        # connection polled by two transports). Abort what connected instead.
        for protocol in made:
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.abort()
        if not isinstance(exc, OSError):
            raise
        if ssl_context is None:
            raise ConnectError(f"could not connect to {target}: {_reason(exc)}") from exc
        elapsed = loop.time() - started
        raise _handshake_error(exc, target, elapsed, handshake_timeout) from exc


def _handshake_error(
    exc: OSError, target: str, elapsed: float, limit: float | None
) -> ConnectError | ConnectTimeout | TLSError:
    """Translate a failed TLS handshake; the loop's own handshake timer counts as a timeout."""
    if limit is not None and elapsed >= limit and not isinstance(exc, ssl.SSLError):
        return ConnectTimeout(f"TLS handshake with {target} timed out after {limit:.3g}s")
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return TLSError(f"TLS handshake with {target} failed: certificate verify failed: {detail}")
    if isinstance(exc, ssl.SSLError):
        return TLSError(f"TLS handshake with {target} failed: {exc.reason or exc}")
    return ConnectError(f"connection to {target} failed during TLS handshake: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    # asyncio's sock_connect puts "Connect call failed (addr)" in strerror; the
    # errno's own text ("Connection refused") says more.
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    if str(exc):
        return str(exc)
    # Both loops raise bare ConnectionResetError() and friends when a peer drops us.
    code = _BARE_ERRNO.get(type(exc))
    return os.strerror(code) if code is not None else type(exc).__name__


_BARE_ERRNO: dict[type[BaseException], int] = {
    ConnectionResetError: errno.ECONNRESET,
    ConnectionAbortedError: errno.ECONNABORTED,
    ConnectionRefusedError: errno.ECONNREFUSED,
    BrokenPipeError: errno.EPIPE,
}


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _target(host: str, port: int) -> str:
    bare = _strip_brackets(host)
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def _format_address(addr: Address) -> str:
    family, sockaddr = addr
    if family == socket.AF_INET6:
        return f"[{sockaddr[0]}]:{sockaddr[1]}"
    if family == socket.AF_INET:
        return f"{sockaddr[0]}:{sockaddr[1]}"
    return str(sockaddr)
