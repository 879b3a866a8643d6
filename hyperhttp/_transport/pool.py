"""The connection pool: origins to connections, caps, FIFO waiters, expiry.

Theory
------
Every connection the pool knows of is in exactly one of these places:

    connecting   a slot reserved for a dial in progress (counts toward caps)
    idle         no request on it: an HTTP/1.1 connection in its origin's
                 idle list, or an HTTP/2 connection with no stream open or
                 reserved (it stays in its origin's `mux` list, where a
                 request takes a stream on it as on a busy one)
    in use       an HTTP/1.1 connection carrying one request, or an HTTP/2
                 connection with streams open or reserved (up to its peer's
                 MAX_CONCURRENT_STREAMS)

Every idle connection of every origin is also in `_idle`, longest idle
first: it enters when its last request or stream ends (`_release`), and
leaves when a request takes it (`_try_acquire`) or when it is forgotten.
Only the pool reserves streams, so nothing else can make it busy.

Caps: `max_connections` bounds connecting + idle + in use over all origins;
`max_connections_per_host` bounds them per origin; `max_keepalive` bounds
the HTTP/1.1 idle list per origin (an excess connection is closed on
release). Idle HTTP/2 connections are bounded by `keepalive_expiry` and
rule 3 only, as docs/connections.md says: with `max_keepalive=0` an HTTP/2
connection would otherwise be redialled for every request.

Rules:
1. Every change of this state is synchronous (no await between a test and
   the change it justifies), and every reservation is undone in a
   `finally`/`except BaseException`, so a cancellation at any await
   strands nothing. A connection is forgotten before it is closed: an
   HTTP/2 connection reports its close to `_release` at once, which must
   then find nothing to do (no walk of the waiters inside a walk).
2. Waiters queue in one FIFO across all origins. Whenever the state
   changes, `_serve_waiters()` walks the queue in order and serves every
   waiter that can now be served; a newcomer goes through the same walk
   first, so it never overtakes an older waiter that could use the same
   resource.
3. An idle connection never blocks a waiter: when the global cap is
   reached, the longest-idle connection of any origin (HTTP/1.1 or HTTP/2,
   the first in `_idle`, O(1)) is closed to make room; when the per-host
   cap is reached, an idle HTTP/2 connection of that origin that cannot
   take a stream (its server allows none) is closed and a new one dialled.
   An HTTP/2 connection's last stream ending goes through `_release`,
   which walks the waiters, so a waiter blocked on a cap evicts it then; a
   stream open or reserved keeps it from eviction.
4. Liveness and expiry are checked only when an idle connection is taken
   (an HTTP/2 connection: only while no stream is open or reserved on it,
   so a busy one never pays for them); expiry also by a sweep at most once
   a second.
5. A waiter that is handed a connection and cancelled before it resumes
   gives the connection straight back.
6. While a dial that may turn out HTTP/2 is in flight for an origin, further
   requests to that origin wait for it instead of dialling in parallel; if
   it is HTTP/2 they share it, if not they dial their own. They wait as
   long as that dial may take (the connect timeout), not only the pool
   timeout: no connection is busy, one is being opened for them.
7. With a fleet backend, a dial first takes a fleet lease for "host:port"
   (waiting FIFO across the fleet) and the lease lives exactly as long as
   the connection: `_forget` returns it. The fleet may ask this pool to
   close an idle connection for a waiter elsewhere (`_shed_idle`). A
   request on a reused connection never talks to the fleet.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._config import Timeout
from .._exceptions import PoolClosed, PoolTimeout, RemoteProtocolError
from .._models import Request, Response
from .signals import RequestNotProcessed, StaleConnection

if TYPE_CHECKING:
    from ..shared._backend import FleetBackend, Lease

Origin = tuple[str, str, int, str]  # scheme, host, port, proxy key ("" when direct)

MAX_NOT_PROCESSED_RETRIES = 3
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class PoolConnection(Protocol):
    origin: Origin
    is_multiplexed: bool

    def is_idle(self) -> bool: ...
    def is_closed(self) -> bool: ...
    def is_available(self) -> bool: ...
    def active_streams(self) -> int: ...
    def is_alive_when_taken(self) -> bool: ...
    def has_expired(self, now: float, keepalive_expiry: float | None) -> bool: ...
    async def handle_request(self, request: Request, timeout: Timeout) -> Response: ...
    def close(self) -> None: ...
    def close_by_client(self) -> None: ...
    def call_when_closed(self, callback: Callable[[], None]) -> None: ...
    def reserve_stream(self) -> None: ...
    def unreserve_stream(self) -> None: ...


ReleaseCallback = Callable[[Any], None]
Connector = Callable[[Origin, Timeout, ReleaseCallback], Awaitable[PoolConnection]]

_CONNECT = "connect"  # acquisition outcome: a reserved slot to dial


class _Host:
    __slots__ = ("connecting", "conns", "http1_only", "idle", "mux", "probing")

    def __init__(self) -> None:
        self.conns: set[PoolConnection] = set()
        # Idle HTTP/1.1 connections, oldest first: a dict as an ordered set,
        # so taking the newest, finding the oldest and dropping any one are
        # all O(1) (STYLE §14).
        self.idle: dict[PoolConnection, None] = {}
        self.mux: list[PoolConnection] = []
        self.connecting = 0
        self.probing = 0
        # Set once a dial to this origin negotiated HTTP/1.1: stop waiting
        # for an HTTP/2 probe before dialling in parallel.
        self.http1_only = False

    def size(self) -> int:
        return len(self.conns) + self.connecting


class _Waiter:
    __slots__ = ("future", "origin")

    def __init__(self, origin: Origin, future: asyncio.Future[Any]) -> None:
        self.origin = origin
        self.future = future


def fleet_key(origin: Origin) -> str:
    """The upstream a connection for `origin` really opens: "host:port"."""
    host, port = origin[1], origin[2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def origin_label(origin: Origin) -> str:
    _scheme, host, port, via = origin
    label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{label} via {via}" if via else label


class ConnectionPool:
    def __init__(
        self,
        connector: Connector,
        *,
        max_connections: int | None = 100,
        max_connections_per_host: int | None = None,
        max_keepalive_connections: int | None = 20,
        keepalive_expiry: float | None = 120.0,
        may_multiplex: Callable[[Origin], bool] = lambda origin: False,
        fleet: FleetBackend | None = None,
    ) -> None:
        self._connector = connector
        self._max = max_connections
        self._max_host = max_connections_per_host
        self._max_keepalive = max_keepalive_connections
        self._expiry = keepalive_expiry
        self._may_multiplex = may_multiplex
        self._hosts: dict[Origin, _Host] = {}
        # Every idle connection, longest idle first (see Theory).
        self._idle: dict[PoolConnection, _Host] = {}
        self._total = 0
        self._waiters: deque[_Waiter] = deque()
        self._closed = False
        self._last_sweep = time.monotonic()
        self._fleet = fleet
        self._leases: dict[PoolConnection, Lease] = {}
        self._shed_owed: dict[str, int] = {}  # fleet key ("" = any) -> connections owed
        self._dialing: Counter[str] = Counter()  # fleet key -> leases held while dialling
        if fleet is not None:
            fleet.set_shed_handler(self._shed_idle)

    # --- public -------------------------------------------------------------
    async def handle_request(self, request: Request, origin: Origin, timeout: Timeout) -> Response:
        """Send on a pooled connection. A request the server provably did not
        process goes out again on another connection, a few times at most;
        after a keep-alive race only idempotent requests with a replayable
        body are sent again, once."""
        stale_retried = False
        for _ in range(MAX_NOT_PROCESSED_RETRIES + 1):
            # Fast path: nobody waiting, an idle connection (or a free slot)
            # taken without the `_acquire` coroutine.
            got = None if self._waiters or self._closed else self._try_acquire(origin)
            if got is None:
                conn = await self._acquire(origin, timeout)
            elif got is _CONNECT:
                conn = await self._connect(origin, timeout)
            else:
                assert not isinstance(got, str)
                conn = got
            try:
                return await conn.handle_request(request, timeout)
            except StaleConnection as exc:
                replayable = request.stream.is_replayable
                if stale_retried or request.method not in IDEMPOTENT or not replayable:
                    raise RemoteProtocolError(str(exc)) from None
                stale_retried = True
            except RequestNotProcessed as exc:
                last = exc
                if not request.stream.is_replayable:
                    raise  # still 'not processed': the caller may send it anew
        # Still never processed: the retry policy may resend it, any method.
        raise RequestNotProcessed(
            f"{last} (gave up after {MAX_NOT_PROCESSED_RETRIES} retries)"
        ) from None

    def stats(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for origin, host in self._hosts.items():
            if not host.size():
                continue
            streams = sum(c.active_streams() for c in host.mux)
            idle = len(host.idle) + sum(1 for c in host.mux if c.active_streams() == 0)
            entry = {"idle": idle, "in_use": len(host.conns) - idle, "total": host.size()}
            if host.mux:
                entry["streams"] = streams
            if host.connecting:
                entry["connecting"] = host.connecting
            out[origin_label(origin)] = entry
        return out

    @property
    def total(self) -> int:
        return self._total

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.future.done())

    def close(self) -> None:
        """Close every connection and fail every waiter; the pool is unusable after."""
        self._closed = True
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(PoolClosed("the client was closed"))
        self._waiters.clear()
        for host in self._hosts.values():
            for conn in list(host.conns):
                self._forget(host, conn)
                # Requests still running fail with PoolClosed: our doing,
                # not the server's, and nothing a retry should answer.
                conn.close_by_client()

    # --- acquisition ----------------------------------------------------------
    async def _acquire(self, origin: Origin, timeout: Timeout) -> PoolConnection:
        if self._closed:
            raise PoolClosed("the client is closed; no new requests can be sent")
        if self._waiters:
            self._serve_waiters()
        got = None if self._waiters_ahead(origin) else self._try_acquire(origin)
        if got is None:
            got = await self._wait(origin, timeout)
        if got is _CONNECT:
            return await self._connect(origin, timeout)
        assert not isinstance(got, str)
        return got

    def _waiters_ahead(self, origin: Origin) -> bool:
        # Only waiters for the same origin can want what this newcomer would
        # take from that origin; other origins were served by the walk.
        return any(w.origin == origin and not w.future.done() for w in self._waiters)

    def _try_acquire(self, origin: Origin) -> PoolConnection | str | None:
        host = self._hosts.get(origin)
        if host is None:
            host = self._hosts[origin] = _Host()
        for conn in host.mux:
            if conn.is_available():
                # Expiry and liveness only for one with no stream open or
                # reserved (rule 4): a busy connection never pays for them.
                if conn.is_idle() and (
                    conn.has_expired(time.monotonic(), self._expiry)
                    or not conn.is_alive_when_taken()
                ):
                    self._discard(host, conn)
                    return self._try_acquire(origin)  # host.mux changed: look again
                conn.reserve_stream()
                self._idle.pop(conn, None)
                return conn
        idle = host.idle
        while idle:
            conn, _ = idle.popitem()  # the newest: warmest, least likely expired
            self._idle.pop(conn, None)
            if conn.has_expired(time.monotonic(), self._expiry) or not conn.is_alive_when_taken():
                self._discard(host, conn)
                continue
            return conn
        probe = self._may_multiplex(origin) and not host.http1_only
        if probe and host.probing:
            return None
        if (
            self._max_host is not None
            and host.size() >= self._max_host
            and not self._evict_unusable_mux(host)
        ):
            return None
        if self._max is not None and self._total >= self._max and not self._evict_idle():
            return None
        host.connecting += 1
        self._total += 1
        if probe:
            host.probing += 1
        return _CONNECT

    def _evict_unusable_mux(self, host: _Host) -> bool:
        """At the per-host cap, close an idle HTTP/2 connection of this origin
        to free its slot (rule 3). `_try_acquire` took any that could carry a
        stream, so one still idle here cannot: its server allows no stream
        (MAX_CONCURRENT_STREAMS 0) or it is closing."""
        for conn in host.mux:
            if conn.is_idle():
                self._discard(host, conn)
                return True
        return False

    def _evict_idle(self) -> bool:
        """Close the longest-idle connection of any origin to free a slot."""
        idle = self._idle
        while idle:
            conn, host = next(iter(idle.items()))
            if conn.is_idle() or conn.is_closed():
                self._discard(host, conn)  # HTTP/2: GOAWAY, then the socket
                return True
            # Busy without the pool knowing would break the Theory: whatever
            # the cause, never close streams in flight over it.
            del idle[conn]
        return False

    async def _wait(self, origin: Origin, timeout: Timeout) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._waiters.append(_Waiter(origin, fut))
        limit, behind_dial = timeout.pool, False
        host = self._hosts.get(origin)
        if limit is not None and host is not None and host.probing:
            # Not waiting for a busy connection but for the origin's first,
            # being dialled for all to share (HTTP/2): as long as that dial
            # may take, which the connect timeout bounds.
            connect = timeout.connect
            if connect is None or connect > limit:
                limit, behind_dial = connect, True
        handle = None
        if limit is not None:
            handle = loop.call_later(
                limit, self._expire_waiter, fut, origin, limit, behind_dial
            )
        try:
            return await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._give_back(origin, fut.result())
            elif not fut.done():
                fut.cancel()
            raise
        finally:
            if handle is not None:
                handle.cancel()

    def _expire_waiter(
        self, fut: asyncio.Future[Any], origin: Origin, after: float, behind_dial: bool
    ) -> None:
        if fut.done():
            return
        if behind_dial:
            message = (
                f"the connection to {origin_label(origin)} that this request waited "
                f"for did not open within {after:.3g}s (connect timeout)"
            )
        else:
            message = (
                f"no connection to {origin_label(origin)} became free within "
                f"{after:.3g}s (pool timeout)"
            )
        fut.set_exception(PoolTimeout(message))

    def _give_back(self, origin: Origin, got: Any) -> None:
        if got is _CONNECT:
            self._unreserve(origin, self._hosts[origin])
            self._serve_waiters()
            return
        if got.is_multiplexed:
            got.unreserve_stream()
        self._release(got)  # files it as idle if that was its last stream

    def _unreserve(self, origin: Origin, host: _Host) -> None:
        host.connecting -= 1
        self._total -= 1
        if host.probing and self._may_multiplex(origin) and not host.http1_only:
            host.probing -= 1

    async def _connect(self, origin: Origin, timeout: Timeout) -> PoolConnection:
        host = self._hosts[origin]
        lease = None
        key = fleet_key(origin)
        try:
            if self._fleet is not None:
                lease = await self._fleet.acquire(key, timeout=timeout.pool)
                # Held but not yet open: still counts when the fleet asks us
                # to shed (the next connection to finish is then given up).
                self._dialing[key] += 1
            try:
                conn = await self._connector(origin, timeout, self._release)
            finally:
                if lease is not None:
                    self._dialing[key] -= 1
                    if not self._dialing[key]:
                        del self._dialing[key]
        except BaseException:
            if lease is not None and self._fleet is not None:
                self._fleet.release(lease)
            self._unreserve(origin, host)
            self._serve_waiters()
            raise
        if lease is not None:
            self._leases[conn] = lease
        host.connecting -= 1
        if host.probing and self._may_multiplex(origin) and not host.http1_only:
            host.probing -= 1
        if not conn.is_multiplexed and self._may_multiplex(origin):
            host.http1_only = True
        if self._closed:
            self._total -= 1
            conn.close()
            self._return_lease(conn)
            raise PoolClosed("the client was closed while connecting")
        host.conns.add(conn)
        if conn.is_multiplexed:
            host.mux.append(conn)
            conn.reserve_stream()
        self._serve_waiters()
        return conn

    # --- release ----------------------------------------------------------------
    def _release(self, conn: PoolConnection) -> None:
        """Called by a connection when a request on it has ended."""
        host = self._hosts.get(conn.origin)
        if host is None or conn not in host.conns:
            return
        if conn.is_closed():
            self._forget(host, conn)
        elif self._shed_owed and self._pay_shed_debt(host, conn):
            pass  # closed for the fleet
        elif conn.is_multiplexed:
            # Stays open; idle once its last stream ended (kept in place if
            # it already was: a repeated report does not make it younger).
            if conn.is_idle():
                self._idle.setdefault(conn, host)
        elif self._closed or (
            self._max_keepalive is not None and len(host.idle) >= self._max_keepalive
        ):
            self._discard(host, conn)
        elif conn.is_idle() and conn not in host.idle:
            host.idle[conn] = None
            self._idle[conn] = host
        now = time.monotonic()
        if now - self._last_sweep >= 1.0:
            self._sweep(now)
        if self._waiters:
            self._serve_waiters()

    def _discard(self, host: _Host, conn: PoolConnection) -> None:
        self._forget(host, conn)  # first: see rule 1
        conn.close()

    def _forget(self, host: _Host, conn: PoolConnection) -> None:
        if conn in host.conns:
            host.conns.discard(conn)
            self._total -= 1
            self._return_lease(conn)
        host.idle.pop(conn, None)
        self._idle.pop(conn, None)
        if conn in host.mux:
            host.mux.remove(conn)

    def _return_lease(self, conn: PoolConnection) -> None:
        """Give the fleet its slot back once the socket is really closed, so
        no other process can open a connection while this one still exists."""
        lease = self._leases.pop(conn, None)
        fleet = self._fleet
        if lease is not None and fleet is not None:
            conn.call_when_closed(lambda: fleet.release(lease))

    def _shed_idle(self, key: str) -> bool:
        """The fleet asks for a connection to `key` ("" = any) to be closed,
        so that an older waiter in another process can open its own.

        An idle one is closed now. When every one is busy, the next one to
        finish its request is closed instead of being handed to a local
        waiter: local waiters then queue at the fleet behind the older
        remote one, which keeps the fleet-wide FIFO (fleet.md, rule 2)."""
        busy = 0
        for origin, host in self._hosts.items():
            if key and fleet_key(origin) != key:
                continue
            if host.idle:
                self._discard(host, next(iter(host.idle)))
                return True
            for conn in host.mux:
                if conn.is_idle():
                    self._discard(host, conn)
                    return True
            busy += len(host.conns)
        # A lease still being dialled will be a connection in a moment: it
        # can pay the debt too. Without it a worker asked while dialling
        # said "nothing" and the fleet waited for the coordinator's next
        # retry (250 ms) to move on.
        busy += sum(n for k, n in self._dialing.items() if not key or k == key)
        owed = self._shed_owed.get(key, 0)
        if owed >= busy:
            return False
        self._shed_owed[key] = owed + 1
        return True

    def _pay_shed_debt(self, host: _Host, conn: PoolConnection) -> bool:
        """Close `conn`, just freed, if the fleet is owed a connection."""
        if not self._shed_owed or not conn.is_idle():
            return False
        for key in (fleet_key(conn.origin), ""):
            owed = self._shed_owed.get(key, 0)
            if owed:
                if owed == 1:
                    del self._shed_owed[key]
                else:
                    self._shed_owed[key] = owed - 1
                self._discard(host, conn)
                return True
        return False

    def _sweep(self, now: float) -> None:
        """Drop expired idle connections and closed multiplexed ones; at most
        once a second (the caller checks `_last_sweep`)."""
        self._last_sweep = now
        for host in self._hosts.values():
            for conn in [c for c in host.idle if c.has_expired(now, self._expiry)]:
                self._discard(host, conn)
            for conn in [c for c in host.mux if c.is_closed()]:
                self._forget(host, conn)
            for conn in [c for c in host.mux if c.has_expired(now, self._expiry)]:
                self._discard(host, conn)

    def _serve_waiters(self) -> None:
        waiters = self._waiters
        if not waiters:
            return
        remaining: deque[_Waiter] = deque()
        while waiters:
            waiter = waiters.popleft()
            if waiter.future.done():
                continue
            got = self._try_acquire(waiter.origin)
            if got is None:
                remaining.append(waiter)
            else:
                waiter.future.set_result(got)
        self._waiters = remaining

    def __repr__(self) -> str:
        return (
            f"<ConnectionPool total={self._total} waiting={self.waiting} "
            f"origins={len(self._hosts)} closed={self._closed}>"
        )
