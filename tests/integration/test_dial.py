"""Dialing on loopback: Happy Eyeballs racing, failures, timeouts and cancellation.

Destinations are built from real loopback sockets:

- a *listener* accepts connections (the kernel completes the handshake from
  the accept queue; nobody needs to call accept);
- a *refuser* is a bound socket that is not listening: a connect gets RST,
  i.e. ECONNREFUSED, at once, and holding the socket keeps the port unused;
- a *black hole* is a listener with ``backlog=0`` whose single queue slot is
  taken by a filler connection that is never accepted. Linux then drops every
  further SYN (the accept queue is full), so a connect hangs for the SYN
  retransmission time (seconds), exactly like an unreachable address.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from hyperhttp._exceptions import ConnectError, ConnectTimeout, DNSError
from hyperhttp._transport import dial as dial_module
from hyperhttp._transport.dial import connect_happy_eyeballs, open_connection
from hyperhttp._transport.dns import Address, DNSCache
from tests.support.certs import TestCerts
from tests.support.fixtures import RawServerFactory

V4 = int(socket.AF_INET)
V6 = int(socket.AF_INET6)


class Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def close(transport: asyncio.Transport, protocol: Sink) -> None:
    transport.close()
    await asyncio.wait_for(protocol.lost, 5)


class Endpoints:
    """Loopback sockets made for one test, all closed at teardown."""

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []

    def _socket(self, family: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        self._sockets.append(sock)
        return sock

    def listener(self, family: int) -> Address:
        sock = self._socket(family)
        sock.bind((_loopback(family), 0))
        sock.listen(16)
        return (family, sock.getsockname())

    def refuser(self, family: int) -> Address:
        sock = self._socket(family)
        sock.bind((_loopback(family), 0))
        return (family, sock.getsockname())

    def black_hole(self, family: int) -> Address:
        sock = self._socket(family)
        sock.bind((_loopback(family), 0))
        sock.listen(0)
        filler = self._socket(family)
        filler.settimeout(5)
        filler.connect(sock.getsockname())
        return (family, sock.getsockname())

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


def _loopback(family: int) -> str:
    return "::1" if family == V6 else "127.0.0.1"


@pytest.fixture
def endpoints() -> Iterator[Endpoints]:
    made = Endpoints()
    yield made
    made.close()


def resolving(name: str, addresses: list[Address]) -> DNSCache:
    async def resolver(host: str, port: int) -> list[Address]:
        if host != name:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return addresses

    return DNSCache(resolver=resolver)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def settle() -> None:
    # Closing callbacks run on the next loop iterations.
    for _ in range(5):
        await asyncio.sleep(0.01)


async def dial(
    host: str, port: int, dns: DNSCache, **kwargs: Any
) -> tuple[asyncio.Transport, Sink]:
    options: dict[str, Any] = {"ssl_context": None, "connect_timeout": 5.0}
    options.update(kwargs)
    return await open_connection(host, port, Sink, dns=dns, **options)


@pytest.mark.parametrize("family", [V4, V6], ids=["ipv4", "ipv6"])
async def test_connects_to_ip_literal(loop_name: str, endpoints: Endpoints, family: int) -> None:
    _, sockaddr = endpoints.listener(family)
    host = "127.0.0.1" if family == V4 else "::1"
    transport, protocol = await dial(host, sockaddr[1], DNSCache())
    try:
        assert protocol.transport is transport
        assert transport.get_extra_info("peername")[:2] == sockaddr[:2]
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        await close(transport, protocol)


def _tcp_rmem_max() -> int:
    """tcp_rmem's largest value (its three are: least, default, largest)."""
    with open("/proc/sys/net/ipv4/tcp_rmem") as f:
        return int(f.read().split()[2])


@pytest.mark.parametrize("family", [V4, V6], ids=["ipv4", "ipv6"])
async def test_receive_buffer_starts_raised_and_reads_wake_for_one_byte(
    loop_name: str, family: int
) -> None:
    """On Linux, a new socket's receive buffer starts at least at
    _RECEIVE_WINDOW_START, the window it is sized for (the kernel's default
    is tcp_rmem's middle value), and the low mark used to get there is back
    at 1 byte: a reply of 2 bytes wakes the reader."""
    if not sys.platform.startswith("linux"):
        assert not dial_module._SETS_RECEIVE_WINDOW
        return
    start = dial_module._RECEIVE_WINDOW_START
    # The kernel takes at most half of tcp_rmem's largest value as a low mark.
    want = min(start, _tcp_rmem_max() // 2)
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.bind((_loopback(family), 0))
        listener.listen(1)
        host = "127.0.0.1" if family == V4 else "::1"
        transport, protocol = await open_connection(
            host, listener.getsockname()[1], _Reader,
            dns=DNSCache(), ssl_context=None, connect_timeout=5.0,
        )
        try:
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= want
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
            server, _ = listener.accept()
            with server:
                server.sendall(b"ok")
                assert await asyncio.wait_for(protocol.first_data, 5) == b"ok"
        finally:
            await close(transport, protocol)
    finally:
        listener.close()


class _Reader(Sink):
    def __init__(self) -> None:
        super().__init__()
        self.first_data: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if not self.first_data.done():
            self.first_data.set_result(data)


class _RefusingSocket:
    """A socket whose SO_RCVLOWAT calls fail as told (a seccomp filter or a
    kernel without the option); no real peer can produce this."""

    def __init__(self, refuse_first: bool, refuse_reset: bool) -> None:
        self.refuse = [refuse_first, refuse_reset]
        self.lowat = 1

    def setsockopt(self, level: int, name: int, value: int) -> None:
        assert (level, name) == (socket.SOL_SOCKET, socket.SO_RCVLOWAT)
        if self.refuse.pop(0):
            raise PermissionError(1, "Operation not permitted")
        self.lowat = value


def test_receive_buffer_left_alone_when_the_option_is_refused() -> None:
    sock = _RefusingSocket(refuse_first=True, refuse_reset=False)
    dial_module._start_receive_window(cast(socket.socket, sock))
    assert sock.lowat == 1 and sock.refuse == [False]  # no reset attempted either


def test_receive_buffer_reset_refused_fails_the_attempt() -> None:
    """A low mark stuck at the start window would make every read wait for that much:
    the error comes out (the attempt then fails and closes the socket)."""
    sock = _RefusingSocket(refuse_first=False, refuse_reset=True)
    with pytest.raises(PermissionError):
        dial_module._start_receive_window(cast(socket.socket, sock))


async def test_bracketed_ipv6_literal(loop_name: str, endpoints: Endpoints) -> None:
    _, sockaddr = endpoints.listener(V6)
    transport, protocol = await dial("[::1]", sockaddr[1], DNSCache())
    assert transport.get_extra_info("peername")[0] == "::1"
    await close(transport, protocol)


async def test_refused_ipv6_falls_back_to_ipv4_at_once(
    loop_name: str, endpoints: Endpoints
) -> None:
    good = endpoints.listener(V4)
    dns = resolving("dual.test", [good, endpoints.refuser(V6)])
    started = time.monotonic()
    # A long stagger: only the immediate-on-failure rule can make this fast.
    transport, protocol = await dial("dual.test", 443, dns, happy_eyeballs_delay=5.0)
    assert time.monotonic() - started < 2.0
    assert transport.get_extra_info("peername") == good[1]
    await close(transport, protocol)


async def test_refused_ipv4_with_ipv6_listening(loop_name: str, endpoints: Endpoints) -> None:
    good = endpoints.listener(V6)
    dns = resolving("dual.test", [endpoints.refuser(V4), good])
    transport, protocol = await dial("dual.test", 443, dns)
    assert transport.get_extra_info("peername")[:2] == good[1][:2]
    await close(transport, protocol)


async def test_stalled_ipv6_loses_to_ipv4_after_the_delay(
    loop_name: str, endpoints: Endpoints
) -> None:
    good = endpoints.listener(V4)
    dns = resolving("dual.test", [good, endpoints.black_hole(V6)])
    started = time.monotonic()
    transport, protocol = await dial("dual.test", 443, dns, happy_eyeballs_delay=0.3)
    elapsed = time.monotonic() - started
    assert transport.get_extra_info("peername") == good[1]
    # IPv4 was not tried before the stagger ran out, and then won promptly.
    assert 0.29 <= elapsed < 1.5
    await close(transport, protocol)


async def test_zero_delay_races_both_families_at_once(loop_name: str, endpoints: Endpoints) -> None:
    good = endpoints.listener(V4)
    dns = resolving("dual.test", [good, endpoints.black_hole(V6), endpoints.black_hole(V6)])
    started = time.monotonic()
    transport, protocol = await dial("dual.test", 443, dns, happy_eyeballs_delay=0)
    assert time.monotonic() - started < 0.25
    assert transport.get_extra_info("peername") == good[1]
    await close(transport, protocol)


async def test_losing_attempts_are_closed(loop_name: str, endpoints: Endpoints) -> None:
    # Warm up the loop so lazily created loop fds do not count.
    transport, protocol = await dial("127.0.0.1", endpoints.listener(V4)[1][1], DNSCache())
    await close(transport, protocol)
    good = endpoints.listener(V4)
    dns = resolving("dual.test", [good, endpoints.black_hole(V6), endpoints.black_hole(V6)])
    before = open_fds()
    transport, protocol = await dial("dual.test", 443, dns, happy_eyeballs_delay=0)
    await settle()
    # Exactly one new fd: the winner's. Both stalled IPv6 attempts were closed.
    assert len(open_fds() - before) == 1
    await close(transport, protocol)
    await settle()
    assert open_fds() <= before


async def test_all_refused_names_host_and_every_address(
    loop_name: str, endpoints: Endpoints
) -> None:
    v6, v4 = endpoints.refuser(V6), endpoints.refuser(V4)
    dns = resolving("dual.test", [v4, v6])
    with pytest.raises(ConnectError) as caught:
        await dial("dual.test", 8443, dns, happy_eyeballs_delay=0.05)
    message = str(caught.value)
    assert "dual.test:8443" in message
    assert f"[::1]:{v6[1][1]}" in message
    assert f"127.0.0.1:{v4[1][1]}" in message
    assert message.count("refused") == 2
    cause = caught.value.__cause__
    assert isinstance(cause, ExceptionGroup)
    assert all(isinstance(e, ConnectionRefusedError) for e in cause.exceptions)


async def test_refused_ip_literal(loop_name: str, endpoints: Endpoints) -> None:
    port = endpoints.refuser(V4)[1][1]
    with pytest.raises(ConnectError, match=rf"127\.0\.0\.1:{port}.*refused"):
        await dial("127.0.0.1", port, DNSCache())


async def test_dns_failure_is_dns_error(loop_name: str) -> None:
    with pytest.raises(DNSError, match=r"nx\.test"):
        await dial("nx.test", 443, resolving("other.test", []))


async def test_connect_timeout_names_target_and_leaks_nothing(
    loop_name: str, endpoints: Endpoints
) -> None:
    transport, protocol = await dial("127.0.0.1", endpoints.listener(V4)[1][1], DNSCache())
    await close(transport, protocol)
    dns = resolving("slow.test", [endpoints.black_hole(V6), endpoints.black_hole(V4)])
    before = open_fds()
    started = time.monotonic()
    with pytest.raises(ConnectTimeout, match=r"slow\.test:443"):
        await dial("slow.test", 443, dns, connect_timeout=0.3, happy_eyeballs_delay=0.05)
    assert 0.29 <= time.monotonic() - started < 1.5
    await settle()
    assert open_fds() <= before


async def test_connect_timeout_covers_slow_dns(loop_name: str) -> None:
    async def stuck(host: str, port: int) -> list[Address]:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    with pytest.raises(ConnectTimeout):
        await dial("stuck.test", 443, DNSCache(resolver=stuck), connect_timeout=0.1)


async def test_cancellation_mid_connect_closes_every_socket(
    loop_name: str, endpoints: Endpoints
) -> None:
    transport, protocol = await dial("127.0.0.1", endpoints.listener(V4)[1][1], DNSCache())
    await close(transport, protocol)
    holes = [endpoints.black_hole(V6), endpoints.black_hole(V4), endpoints.black_hole(V6)]
    dns = resolving("holes.test", holes)
    before = open_fds()
    task = asyncio.create_task(dial("holes.test", 443, dns, happy_eyeballs_delay=0.02))
    await asyncio.sleep(0.2)
    # All three attempts are in flight, each holding a socket.
    assert len(open_fds() - before) == 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settle()
    assert open_fds() <= before


async def test_cancellation_during_tls_handshake_closes_socket(
    loop_name: str, endpoints: Endpoints
) -> None:
    import ssl

    # A TCP listener that never answers the ClientHello: the handshake stalls.
    silent = endpoints.listener(V4)
    transport, protocol = await dial("127.0.0.1", endpoints.listener(V4)[1][1], DNSCache())
    await close(transport, protocol)
    before = open_fds()
    ctx = ssl.create_default_context()
    task = asyncio.create_task(
        dial("127.0.0.1", silent[1][1], DNSCache(), ssl_context=ctx, connect_timeout=None)
    )
    await asyncio.sleep(0.2)
    assert len(open_fds() - before) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settle()
    assert open_fds() <= before


async def test_cancelled_after_the_tls_handshake_the_socket_stays_its_transports(
    loop_name: str, raw_server: RawServerFactory, certs: TestCerts
) -> None:
    """Cancelled when the handshake is done but before the dial returns,
    asyncio starts a graceful TLS shutdown: that transport still has the
    socket. Closing the socket under it freed its fd for the next socket,
    and the next dial failed with "File descriptor N is used by transport"
    (or one fd was polled by two transports). The dial now aborts what it
    made and leaves closing the socket to it."""

    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = raw_server(idle, tls=True)
    ctx = ssl.create_default_context(cafile=str(certs.ca_pem_path))
    dialing: list[asyncio.Task[Any]] = []

    class CancelsItsDial(Sink):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            dialing[0].cancel()  # handshake done; the dial has not returned

    # A first dial: what the loop opens once (uvloop keeps a spare fd) is
    # then open before the count starts.
    transport, protocol = await dial("localhost", server.port, DNSCache(), ssl_context=ctx)
    await close(transport, protocol)
    before = open_fds()
    for _ in range(3):
        task = asyncio.create_task(open_connection(
            "localhost", server.port, CancelsItsDial, dns=DNSCache(), ssl_context=ctx,
            connect_timeout=5.0,
        ))
        dialing[:] = [task]
        with pytest.raises(asyncio.CancelledError):
            await task
    # The next dials get fresh fds; none collides with a transport still open.
    for _ in range(3):
        transport, protocol = await dial("localhost", server.port, DNSCache(), ssl_context=ctx)
        await close(transport, protocol)
    await settle()
    assert open_fds() <= before


async def test_tls_handshake_timeout_is_connect_timeout(
    loop_name: str, endpoints: Endpoints
) -> None:
    import ssl

    silent = endpoints.listener(V4)
    with pytest.raises(ConnectTimeout, match=r"127\.0\.0\.1:\d+"):
        await dial(
            "127.0.0.1",
            silent[1][1],
            DNSCache(),
            ssl_context=ssl.create_default_context(),
            connect_timeout=0.3,
        )


async def test_race_rejects_bad_arguments(loop_name: str) -> None:
    with pytest.raises(ValueError):
        await connect_happy_eyeballs([(V4, ("127.0.0.1", 1))], delay=-1, target="x:1")
    with pytest.raises(ConnectError, match="no addresses"):
        await connect_happy_eyeballs([], delay=0.1, target="x:1")
