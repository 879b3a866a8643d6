"""The coordinator process: one single-threaded loop, the only writer of fleet state.

Startup: make and check the private runtime directory, take the lifetime
flock (a second coordinator for the same directory stops here), create the
shared table (a memfd), bind the 0600 Unix socket, then serve (see
`_endpoint` for the lock and socket, and what happens if they vanish).

Grace period: workers keep their connections through any outage of the
coordinator, clean or not, and re-declare them when they rejoin. So every
start waits `GRACE` seconds before granting anything new, unless the lock
file shows no coordinator ever served this path (then no worker holds
anything granted here).

Declarations: a worker sends `Declare` first thing on a new connection, and
only then; a `Declare` after any other message, or from an observer, gets
the sender dropped.

Per accepted socket: check `SO_PEERCRED` (another uid is dropped at once),
read `Hello` (bounded time and size), answer `Welcome` with a read-only fd of
the table (SCM_RIGHTS), then hand the socket to a `_Channel` protocol. Every
frame is decoded into a typed message and applied; a frame that is oversized,
undecodable, of the wrong type, or misuses the protocol gets its sender
dropped before it changes anything. A dropped or closed socket returns every
lease and probe it held (see `_leases` and `_state`).

A timer writes the heartbeat into the table, ends the grace period, expires
DNS answers and re-plans idle-connection shedding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import re
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors.circuit_breaker import BreakerConfig
from ._endpoint import Endpoint
from ._leases import Grant, LeaseTable, LeaseViolation
from ._links import FramedProtocol
from ._protocol import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    Acquire,
    Cancel,
    Declare,
    DnsFailed,
    DnsStore,
    FrameError,
    Granted,
    Hello,
    Outcomes,
    ProbeAcquire,
    ProbeReply,
    Release,
    Resolve,
    ResolveReply,
    Shed,
    ShedDone,
    StatusQuery,
    StatusReply,
    Welcome,
    decode_from_worker,
    encode,
)
from ._runtime import RuntimePaths
from ._state import DnsReply, FleetBreakers, FleetDNS
from ._table import TABLE_SIZE, TableWriter

if TYPE_CHECKING:
    from ._redis import RedisFleet

__all__ = ["CoordinatorServer", "ServerConfig"]

log = logging.getLogger("hyperhttp.shared.coordinator")
# How long a killed worker's slots wait before they are handed on: the
# upstream must first see its connections close. Well inside fleet.md's
# "reclaimed within a second".
DEAD_HOLDER_GRACE = 0.15
# Longer than a worker's longest wait between reconnect attempts (1.5 s:
# BACKOFF_MAX with jitter), so every rejoining worker declares in time.
GRACE = 2.0

_ORIGIN = re.compile(r"^(\[[0-9A-Za-z:.%_-]+\]|[^\s\[\]/:@]+):\d{1,5}$")
_MAX_WRITE_BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How one coordinator runs; see `Coordinator.launch` for the meaning of each field."""

    paths: RuntimePaths
    max_connections: int | None = 200
    max_connections_per_host: int | None = 32
    dns_ttl: float = 60.0
    grace: float | None = None  # None: GRACE, or 0 on the first start at this path
    heartbeat_interval: float = 0.25
    exit_when_idle: float | None = None
    handshake_timeout: float = 2.0
    backend: str | None = None  # "redis://...": fleet caps and breakers shared across hosts


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


class _Channel(FramedProtocol):
    """One worker's socket, after the handshake."""

    BAD_FRAME = (FrameError, LeaseViolation)

    def __init__(self, server: CoordinatorServer, conn: int, pid: int, role: str) -> None:
        super().__init__()
        self.server = server
        self.conn = conn
        self.pid = pid
        self.role = role
        # Declarations are welcome only before anything else (see the module docstring).
        self.declaring = role == "worker"

    def __repr__(self) -> str:
        return f"<_Channel conn={self.conn} pid={self.pid} {self.role}>"

    def handle_frame(self, body: bytes) -> None:
        self.server.handle(self, decode_from_worker(body))

    def bad_frame(self, exc: Exception) -> None:
        self.kick(str(exc))

    def eof_received(self) -> bool | None:
        return False  # close our side too: the worker is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.dropped(self)

    def send(self, msg: Any) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(encode(msg))
        if self.transport.get_write_buffer_size() > _MAX_WRITE_BUFFER:
            self.kick("not reading its messages")

    def kick(self, reason: str) -> None:
        """Drop this worker for breaking the protocol; the bad frame changed nothing."""
        if self.closed:
            return
        log.warning("dropping worker pid %s: %s", self.pid, reason[:200])
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class CoordinatorServer:
    def __init__(self, config: ServerConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self.leases = LeaseTable(
            max_total=config.max_connections, max_per_host=config.max_connections_per_host
        )
        self.breakers = FleetBreakers()
        self.dns = FleetDNS(dns_ttl=config.dns_ttl)
        self.remote: RedisFleet | None = None
        if config.backend:
            from ._redis import RedisFleet

            self.remote = RedisFleet(self, config.backend)
            self.leases, self.breakers = self.remote.table, self.remote.breakers
        self._channels: dict[int, _Channel] = {}
        self._next_conn = 1
        self._started = clock()
        self._idle_since: float | None = self._started
        self._stop = asyncio.Event()
        self._epoch = time.time_ns()
        self._table_fd = -1
        self._ro_fd = -1
        self._table: mmap.mmap | None = None
        self._writer: TableWriter | None = None
        self._endpoint = Endpoint(config.paths)
        self._accept: asyncio.Task[None] | None = None
        self._grace_until = self._started
        self._handshakes: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<CoordinatorServer {self.config.paths.socket} workers={self.workers} {self.leases}>"

    @property
    def workers(self) -> int:
        return sum(1 for ch in self._channels.values() if ch.role == "worker")

    @property
    def address(self) -> str:
        return str(self.config.paths.socket)

    # --- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        """Take the directory, lock, table and socket (synchronous; raises CoordinatorError)."""
        self._endpoint.open()
        grace = self.config.grace
        if grace is None:
            grace = 0.0 if self._endpoint.first_start else GRACE
        self._grace_until = self._clock() + grace
        self.leases.granting = grace <= 0
        self._open_table()
        self._write_heartbeat()

    def _open_table(self) -> None:
        try:
            fd = os.memfd_create("hyperhttp-fleet", os.MFD_CLOEXEC)
        except (AttributeError, OSError):
            path = self.config.paths.directory / "table"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
            os.unlink(path)  # the descriptor is all anyone needs
        os.ftruncate(fd, TABLE_SIZE)
        self._table_fd = fd
        self._table = mmap.mmap(fd, TABLE_SIZE)
        # Workers get a read-only descriptor: they cannot map it writable.
        self._ro_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        self._writer = TableWriter(self._table, epoch=self._epoch)

    async def serve(self, ready: Callable[[str], None] | None = None) -> None:
        """Serve until `stop()` or SIGTERM/SIGINT; `open()` first."""
        if self._endpoint.listener is None:
            self.open()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)
        self._start_accepting()
        ticker = loop.create_task(self._tick_loop())
        fleet = loop.create_task(self.remote.run()) if self.remote is not None else None
        if ready is not None:
            ready(self.address)
        log.info("coordinator %s ready (pid %s)", self.address, os.getpid())
        try:
            await self._stop.wait()
        finally:
            ticker.cancel()
            tasks: list[asyncio.Task[None]] = [ticker]
            if self._accept is not None:
                self._accept.cancel()
                tasks.append(self._accept)
            if fleet is not None:
                fleet.cancel()
                tasks.append(fleet)
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.remote is not None:
                await self.remote.aclose()
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._endpoint.close()  # our socket only, never a successor's
        for ch in list(self._channels.values()):
            ch.closed = True
            if ch.transport is not None:
                ch.transport.abort()
        for fd in (self._ro_fd, self._table_fd):
            if fd >= 0:
                os.close(fd)
        self._ro_fd = self._table_fd = -1

    # --- accepting ----------------------------------------------------------------------
    def _start_accepting(self) -> None:
        listener = self._endpoint.listener
        assert listener is not None
        if self._accept is not None:
            self._accept.cancel()
        self._accept = asyncio.get_running_loop().create_task(self._accept_loop(listener))

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and friends: back off, keep serving
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._handshake(sock))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            sock.setblocking(False)
            pid, uid, _ = peer_credentials(sock)
            if uid != os.getuid():
                log.warning("refused a peer with uid %s (pid %s): not our uid", uid, pid)
                sock.close()
                return
            async with asyncio.timeout(self.config.handshake_timeout):
                hello = await _read_frame(loop, sock)
            if not isinstance(hello, Hello) or hello.version != PROTOCOL_VERSION:
                raise FrameError("first message must be a Hello of our protocol version")
            conn = self._next_conn
            self._next_conn += 1
            welcome = Welcome(
                version=PROTOCOL_VERSION, epoch=self._epoch, pid=os.getpid(),
                table_size=TABLE_SIZE, max_connections=self.config.max_connections,
                max_connections_per_host=self.config.max_connections_per_host,
                dns_ttl=self.config.dns_ttl, heartbeat_interval=self.config.heartbeat_interval,
            )
            socket.send_fds(sock, [encode(welcome)], [self._ro_fd])
        except asyncio.IncompleteReadError as exc:
            # Closed before saying anything (a liveness probe) is benign; cut short is not.
            (log.debug if not exc.partial else log.warning)("handshake cut short: %s", exc)
            sock.close()
            return
        except (OSError, FrameError, TimeoutError) as exc:
            log.warning("handshake failed: %s", exc)
            sock.close()
            return
        # Registered before the transport exists: its first frames may come at once.
        channel = _Channel(self, conn, pid, hello.role)
        self._channels[conn] = channel
        self.leases.add_conn(conn)
        self._idle_since = None
        # Counted in the table before any of its frames is read (so before
        # any grant): a worker's fallback share depends on that count.
        self._write_heartbeat()
        try:
            await loop.connect_accepted_socket(lambda: channel, sock)
        except OSError as exc:
            log.warning("handshake failed: %s", exc)
            sock.close()
            self.dropped(channel)

    # --- messages --------------------------------------------------------------------------
    def handle(self, ch: _Channel, msg: Any) -> None:
        """Apply one decoded message from `ch` (raises LeaseViolation before any change)."""
        conn, now = ch.conn, self._clock()
        if isinstance(msg, Declare):
            self._declare(ch, msg)
            return
        ch.declaring = False
        if isinstance(msg, Acquire):
            _check_origin(msg.origin)
            self._granted(self.leases.acquire(conn, msg.req, msg.origin))
        elif isinstance(msg, Release):
            self._granted(self.leases.release(conn, msg.lease))
        elif isinstance(msg, Cancel):
            self._granted(self.leases.cancel(conn, msg.req))
        elif isinstance(msg, ShedDone):
            self.leases.shed_done(conn, msg.shed, msg.closed)
            self._plan_sheds()
        elif isinstance(msg, Outcomes):
            config = _breaker_config(msg.failure_threshold, msg.recovery_timeout,
                                     msg.success_threshold)
            for key, _ in msg.items:
                _check_origin(key)
            for key, code in msg.items:
                if self.breakers.outcome(conn, key, code, config, now):
                    self._publish_breaker(key, now)
        elif isinstance(msg, ProbeAcquire):
            config = _breaker_config(msg.failure_threshold, msg.recovery_timeout,
                                     msg.success_threshold)
            _check_origin(msg.key)
            if self.remote is not None:
                self.remote.probe(ch, msg, config)
                return
            granted = self.breakers.acquire_probe(conn, msg.key, config, now)
            ch.send(ProbeReply(msg.req, granted))
            self._publish_breaker(msg.key, now)
        else:
            self._handle_rest(ch, msg, now)

    def _declare(self, ch: _Channel, msg: Declare) -> None:
        if not ch.declaring:
            raise LeaseViolation("Declare is only accepted first thing on a worker's connection")
        for _, origin in msg.leases:
            _check_origin(origin)
        self.leases.declare_all(ch.conn, msg.leases)

    def _handle_rest(self, ch: _Channel, msg: Any, now: float) -> None:
        conn = ch.conn
        if isinstance(msg, Resolve):
            self._answer_dns(self.dns.resolve(conn, msg.req, msg.host, msg.port, now))
        elif isinstance(msg, DnsStore):
            record, replies = self.dns.store(conn, msg.host, msg.port, msg.addresses, msg.ttl, now)
            if record is not None and self._writer is not None:
                self._writer.put("dns", record.key, record, record.expires)
            self._answer_dns(replies)
        elif isinstance(msg, DnsFailed):
            self._answer_dns(self.dns.failed(conn, msg.host, msg.port))
        elif isinstance(msg, StatusQuery):
            ch.send(StatusReply(msg.req, self.status()))
        else:
            raise LeaseViolation(f"unexpected {type(msg).__name__} message")

    def dropped(self, ch: _Channel) -> None:
        if self._channels.pop(ch.conn, None) is None:
            return
        now = self._clock()
        if self.leases.held_by(ch.conn):
            # A worker gone while holding connections (killed: a clean close
            # releases first). The kernel closed its sockets, but the upstream
            # server sees those closes a moment later; handing the slots on at
            # once let the server count the dead worker's connections and
            # their replacements together (cap + held, measured by the demo).
            asyncio.get_running_loop().call_later(
                DEAD_HOLDER_GRACE, self._reclaim, ch.conn
            )
        else:
            self._granted(self.leases.drop(ch.conn))
        for key in self.breakers.drop(ch.conn, now):
            self._publish_breaker(key, now)
        self._answer_dns(self.dns.drop(ch.conn))
        if not self._channels:
            self._idle_since = now
        self._write_heartbeat()

    def _reclaim(self, conn: int) -> None:
        self._granted(self.leases.drop(conn))
        self._write_heartbeat()

    def _granted(self, grants: list[Grant]) -> None:
        for conn, req in grants:
            ch = self._channels.get(conn)
            if ch is not None:
                ch.send(Granted(req))
        if self.remote is not None:
            self.remote.poke()
        self._plan_sheds()

    def _plan_sheds(self) -> None:
        for conn, shed, origin in self.leases.plan_sheds():
            ch = self._channels.get(conn)
            if ch is not None:
                ch.send(Shed(shed, origin))

    def _answer_dns(self, replies: list[DnsReply]) -> None:
        for conn, req, addresses, ttl in replies:
            ch = self._channels.get(conn)
            if ch is not None:
                ch.send(ResolveReply(req, addresses, ttl))

    def _publish_breaker(self, key: str, now: float) -> None:
        if self._writer is None:
            return
        record = self.breakers.record(key, now)
        if record is None:
            self._writer.delete("breaker", key)
        elif not self._writer.put("breaker", key, record, now):
            log.warning("shared table full: breaker %s not published", key)

    # --- timer ----------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            self.tick()

    def tick(self) -> None:
        now = self._clock()
        ep = self._endpoint
        if ep.listener is not None and not ep.is_intact() and not self._take_path_back():
            return
        if not self.leases.granting and now >= self._grace_until:
            self._granted(self.leases.open_gate())
        gone, replies = self.dns.expire(now)
        if self._writer is not None:
            for key in gone:
                self._writer.delete("dns", key)
        self._answer_dns(replies)
        self.leases.reset_tried()
        self._plan_sheds()
        self._write_heartbeat()
        idle = self.config.exit_when_idle
        if idle is not None and self._idle_since is not None and now - self._idle_since > idle:
            log.info("no workers for %.0fs: exiting", idle)
            self.stop()

    def _take_path_back(self) -> bool:
        """Our socket or lock file vanished or was replaced: serve it again, or step down."""
        if self._endpoint.reclaim():
            log.warning("coordinator files at %s were removed: re-created them", self.address)
            self._start_accepting()
            return True
        log.warning("coordinator files at %s were taken over: stopping", self.address)
        self.stop()
        return False

    def _write_heartbeat(self) -> None:
        if self._writer is not None:
            self._writer.set_state(
                heartbeat=self._clock(), workers=self.workers,
                max_connections=self.config.max_connections,
                max_connections_per_host=self.config.max_connections_per_host,
            )

    def status(self) -> dict[str, object]:
        """The fleet state: caps, leases per host and per worker, waiters, breakers, DNS."""
        now = self._clock()
        workers = []
        for ch in sorted(self._channels.values(), key=lambda c: c.conn):
            if ch.role != "worker":
                continue
            held = self.leases.held_by(ch.conn)
            per_host: dict[str, int] = {}
            for origin in held.values():
                per_host[origin] = per_host.get(origin, 0) + 1
            leases, waiting = self.leases.per_conn(ch.conn)
            workers.append({"pid": ch.pid, "leases": leases, "waiting": waiting,
                            "per_host": dict(sorted(per_host.items()))})
        return {
            "pid": os.getpid(),
            "address": self.address,
            "epoch": self._epoch,
            "uptime": round(now - self._started, 3),
            "grace": not self.leases.granting,
            "max_connections": self.config.max_connections,
            "max_connections_per_host": self.config.max_connections_per_host,
            "dns_ttl": self.config.dns_ttl,
            **self.leases.snapshot(),
            "workers": workers,
            "breakers": self.breakers.snapshot(now),
            "dns": self.dns.snapshot(now),
            **({"backend": self.remote.status()} if self.remote is not None else {}),
        }


def _check_origin(origin: str) -> None:
    if not _ORIGIN.match(origin) or int(origin.rsplit(":", 1)[1]) > 65535:
        raise LeaseViolation(f"malformed origin {origin[:80]!r}")


def _breaker_config(failures: int, recovery: float, successes: int) -> BreakerConfig:
    try:
        return BreakerConfig(failure_threshold=failures, recovery_timeout=recovery,
                             success_threshold=successes)
    except (TypeError, ValueError) as exc:
        raise LeaseViolation(f"bad breaker thresholds: {exc}") from None


async def _read_frame(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> Any:
    head = await _recv_exact(loop, sock, 4)
    size = int.from_bytes(head, "big")
    if size == 0 or size > MAX_FRAME:
        raise FrameError(f"frame length {size} out of range")
    return decode_from_worker(await _recv_exact(loop, sock, size))


async def _recv_exact(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    # Exact-size reads: nothing past the Hello is consumed before the
    # channel protocol takes over the socket.
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(buf), n)
        buf += chunk
    return bytes(buf)
