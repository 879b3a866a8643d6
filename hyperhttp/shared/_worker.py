"""The worker side: a `FleetBackend` talking to a coordinator over its Unix socket.

Theory
------
The backend is in one of three modes:

    unconnected ──first use──► connected ──EOF / stale heartbeat──► fallback
                                   ▲                                    │
                                   └──────── reconnect (backoff) ◄──────┘

- It connects lazily, on the first call that needs the coordinator, and an
  after-fork hook forgets everything a child inherited, so a copy of the
  socket can never hide a dead worker's EOF from the coordinator.
- Every lease the worker holds is recorded here (`id -> origin`) whatever
  the mode. In fallback, leases are granted locally under per-process caps
  (fleet cap // workers last seen); on reconnect every held lease, local or
  not, is re-declared, so a restarted coordinator rebuilds its table.
- Waiters move between modes: losing the coordinator sends its waiters to
  the local queue; regaining it sends local waiters to the coordinator.
  Either way a waiter keeps its deadline.
- In fallback, waiters queue FIFO in `LocalQueue` (`_worker_local`), which
  hands a freed slot over instead of waking a waiter to race for it.
- A grant that arrives for a caller that already left (timeout, cancel)
  is released at once, so no slot is ever stranded. The same holds for
  request-replies: a probe granted to a caller that left is settled
  neutral, a DNS "go" is handed back, whether the reply came before or
  after the caller left.
- No wait on the coordinator outlives its heartbeat: every wait wakes when
  the heartbeat would go stale and, if it has, falls back (a stopped
  coordinator answers nothing and closes nothing).
- Reads (breaker state, DNS) come from the read-only shared table, with no
  message. Breaker outcomes are batched per loop iteration.
- One warning per outage, logged on "hyperhttp.shared".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import mmap
import os
import random
import socket
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .._exceptions import CoordinatorError, PoolClosed, PoolTimeout
from ..errors.circuit_breaker import BreakerConfig
from ._backend import Lease
from ._links import Link, handshake
from ._protocol import (
    Acquire,
    Cancel,
    Declare,
    Granted,
    ProbeReply,
    Release,
    ResolveReply,
    Shed,
    ShedDone,
    StatusReply,
)
from ._runtime import RuntimePaths
from ._table import TableReader
from ._worker_breakers import FleetBreakerClient
from ._worker_dns import FleetDNSClient
from ._worker_local import LocalQueue

__all__ = ["WorkerBackend"]

log = logging.getLogger("hyperhttp.shared")

DECLARE_CHUNK = 256
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0
SPAWN_WAIT = 10.0

_BACKENDS: weakref.WeakSet[WorkerBackend] = weakref.WeakSet()


class _Reroute(Exception):
    """Internal: the mode changed under a waiter; it tries again in the new mode."""


class WorkerBackend:
    """A `FleetBackend` for one worker process; see the module docstring."""

    def __init__(
        self,
        paths: RuntimePaths,
        *,
        required: bool,
        local_caps: tuple[int | None, int | None] = (None, None),
        spawner: Callable[[], Awaitable[None]] | None = None,
        stale_after: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.paths = paths
        self.required = required
        self.local_caps = local_caps
        self._spawner = spawner
        self._stale_after = stale_after
        self._clock = clock
        self._jitter = jitter
        self.dns = FleetDNSClient(self)
        self.breakers = FleetBreakerClient(self)
        self._shed_handler: Callable[[str], bool] | None = None
        self._reset_state()
        self._closed = False
        _BACKENDS.add(self)

    def _reset_state(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: Link | None = None
        self.reader: TableReader | None = None
        self._mapping: mmap.mmap | None = None
        self._epoch: int | None = None
        self._fleet_caps: tuple[int | None, int | None] | None = None
        self.dns_ttl = 60.0
        self._workers_seen = 1
        self._ids = itertools.count(1)
        self._leases: dict[int, str] = {}
        self._per_host: Counter[str] = Counter()
        self._pending: dict[int, tuple[str, asyncio.Future[Any], str]] = {}
        # Requests whose caller left before the reply: req -> give-back for the reply.
        self._orphans: dict[int, Callable[[Any], object]] = {}
        self._local = LocalQueue(fits=self._fits_locally, grant=self._grant_local,
                                 give_back=self.release)
        self._connecting: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._tried = False
        self._warned = False
        self._last_error = ""
        self.breakers.reset()

    def __repr__(self) -> str:
        mode = "connected" if self._link else ("fallback" if self._tried else "unconnected")
        return (
            f"<WorkerBackend {self.paths.socket} {mode} leases={len(self._leases)} "
            f"pending={len(self._pending)} local_waiting={len(self._local)}>"
        )

    # --- questions ------------------------------------------------------------------
    def is_connected(self) -> bool:
        return self._link is not None and not self._link.closed

    @property
    def leases_held(self) -> dict[int, str]:
        return dict(self._leases)

    def fallback_caps(self) -> tuple[int | None, int | None]:
        """Per-process caps while the coordinator is away: fleet cap // workers last seen."""
        if self._fleet_caps is None:
            return self.local_caps
        n = max(1, self._workers_seen)
        out: list[int | None] = []
        for fleet, local in zip(self._fleet_caps, self.local_caps, strict=True):
            share = None if fleet is None else max(1, fleet // n)
            out.append(share if local is None else (local if share is None else min(share, local)))
        return out[0], out[1]

    # --- connection management ------------------------------------------------------------
    async def ensure(self) -> bool:
        """Connect on first use; True while connected. Raises CoordinatorError if required."""
        if self._closed:
            raise PoolClosed("the fleet backend is closed")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._adopt_loop(loop)
        link = self._link
        if link is not None and self._heartbeat_stale():
            self._lost(link, "its heartbeat stopped")
        if self._link is not None:
            return True
        if not self._tried:
            if self._connecting is None:
                self._connecting = loop.create_task(self._first_connect())
            await asyncio.shield(self._connecting)
        if self._link is None and self.required:
            raise CoordinatorError(
                f"fleet coordinator at {self.paths.socket} is not reachable"
                + (f": {self._last_error}" if self._last_error else "")
            )
        return self._link is not None

    def _adopt_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not None:
            # Used from a new loop (the old one is gone): start afresh, quietly.
            self._forget(close_link=True)
        self._loop = loop

    async def _first_connect(self) -> None:
        try:
            try:
                await self._connect()
            except CoordinatorError as exc:
                if self._spawner is None:
                    raise
                log.info("no fleet coordinator at %s (%s): starting one", self.paths.socket, exc)
                await self._spawner()
                await self._connect_soon(SPAWN_WAIT)
        except CoordinatorError as exc:
            self._tried = True
            self._last_error = str(exc)
            self._warn(f"fleet coordinator unavailable ({exc})")
            if not self.required:
                self._start_reconnect()
            return
        self._tried = True

    async def _connect(self) -> None:
        link, welcome, mapping = await handshake(self.paths, self._on_message, self._on_lost)
        if self._closed:
            link.close()
            mapping.close()
            return
        try:
            reader = TableReader(mapping)
        except ValueError as exc:  # a coordinator of another build: as good as none
            link.close()
            mapping.close()
            raise CoordinatorError(
                f"cannot use the table of the fleet coordinator at {self.paths.socket}: {exc}"
            ) from None
        old_mapping = self._mapping
        self._link = link
        self._mapping = mapping
        self.reader = reader
        self._epoch = welcome.epoch
        self._fleet_caps = (welcome.max_connections, welcome.max_connections_per_host)
        self.dns_ttl = welcome.dns_ttl
        if old_mapping is not None:
            with contextlib.suppress(BufferError):
                old_mapping.close()
        items = list(self._leases.items())
        for i in range(0, len(items), DECLARE_CHUNK):
            link.send(Declare(items[i : i + DECLARE_CHUNK]))
        if self._warned:
            log.info("rejoined fleet coordinator at %s (%d leases re-declared)",
                     self.paths.socket, len(items))
        self._warned = False
        self._update_workers()
        self._local.fail_all(_Reroute)

    async def _connect_soon(self, within: float) -> None:
        deadline = self._clock() + within
        while True:
            try:
                await self._connect()
                return
            except CoordinatorError:
                if self._clock() >= deadline:
                    raise
            await asyncio.sleep(0.02)

    def _start_reconnect(self) -> None:
        if self._reconnecting is None and not self._closed and self._loop is not None:
            self._reconnecting = self._loop.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = BACKOFF_FIRST
        try:
            while not self._closed and self._link is None:
                await asyncio.sleep(delay * (0.5 + self._jitter()))
                delay = min(delay * 2, BACKOFF_MAX)
                try:
                    await self._connect()
                except CoordinatorError as exc:
                    self._last_error = str(exc)
        finally:
            self._reconnecting = None

    def _heartbeat_stale(self) -> bool:
        reader = self.reader
        header = reader.header() if reader is not None else None
        return header is not None and self._clock() - header.heartbeat > self._stale_after

    def _until_stale(self) -> float:
        """Seconds until the heartbeat goes stale unless it moves on: how long
        a wait on the coordinator may last before looking again."""
        reader = self.reader
        header = reader.header() if reader is not None else None
        if header is None:
            return 0.05  # a torn read: look again shortly
        left = header.heartbeat + self._stale_after - self._clock() + 0.01
        return min(self._stale_after, max(0.01, left))

    def _update_workers(self) -> None:
        header = self.reader.header() if self.reader is not None else None
        if header is not None and header.workers > 0:
            self._workers_seen = header.workers

    def _on_lost(self, link: Link) -> None:
        self._lost(link, "its connection closed")


    def _lost(self, link: Link, why: str) -> None:
        if link is not self._link:
            return
        self._update_workers()
        self._link = None
        self._last_error = f"connection lost ({why})"
        link.close()
        caps = self.fallback_caps()
        self._warn(f"lost the fleet coordinator ({why}); using per-process limits "
                   f"max_connections={caps[0]} max_connections_per_host={caps[1]}")
        pending, self._pending = self._pending, {}
        self._orphans.clear()  # the coordinator returns their probes on the disconnect
        for kind, fut, _ in pending.values():
            if not fut.done():
                if kind == "acquire":
                    fut.set_exception(_Reroute())
                else:
                    fut.set_result(None)
        self.breakers.drop_unsent()
        self._start_reconnect()

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s", message)

    # --- messages from the coordinator -------------------------------------------------------
    def _on_message(self, msg: Any) -> None:
        if isinstance(msg, Granted):
            self._on_granted(msg.req)
        elif isinstance(msg, Shed):
            closed = False
            if self._shed_handler is not None:
                try:
                    closed = bool(self._shed_handler(msg.origin))
                except Exception:
                    log.exception("shed handler failed")
            if self._link is not None:
                self._link.send(ShedDone(msg.shed, closed))
        elif isinstance(msg, ProbeReply):
            self._settle(msg.req, msg.granted)
        elif isinstance(msg, ResolveReply):
            self._settle(msg.req, (msg.addresses, msg.ttl))
        elif isinstance(msg, StatusReply):
            self._settle(msg.req, msg.status)

    def _on_granted(self, req: int) -> None:
        entry = self._pending.pop(req, None)
        origin = entry[2] if entry is not None else None
        if entry is None or entry[1].done():
            # The caller left (Cancel crossed the grant): give it straight back.
            if self._link is not None:
                self._link.send(Release(req))
            return
        assert origin is not None
        self._hold(req, origin)
        entry[1].set_result(Lease(req, origin))

    def _settle(self, req: int, value: Any) -> None:
        entry = self._pending.pop(req, None)
        if entry is not None and not entry[1].done():
            entry[1].set_result(value)
            return
        give_back = self._orphans.pop(req, None)
        if give_back is not None:
            give_back(value)  # the caller left before its reply came

    async def request(
        self, kind: str, build: Callable[[int], Any],
        give_back: Callable[[Any], object] | None = None,
    ) -> Any:
        """Send `build(req)` and wait for its reply (None if the coordinator is lost,
        or its heartbeat stopped). If the caller leaves, `give_back(reply)` gets the
        reply instead, now or when it comes."""
        link = self._link
        if link is None:
            return None
        req = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req] = (kind, fut, "")
        link.send(build(req))
        try:
            return await self._reply(link, fut)
        except BaseException:
            if self._pending.pop(req, None) is not None:
                fut.cancel()
                if give_back is not None:
                    self._orphans[req] = give_back
            elif (give_back is not None and fut.done() and not fut.cancelled()
                  and fut.exception() is None and fut.result() is not None):
                give_back(fut.result())  # the reply came, the caller did not take it
            raise

    async def _reply(self, link: Link, fut: asyncio.Future[Any]) -> Any:
        while not fut.done() and self._link is link:
            await asyncio.wait({fut}, timeout=self._until_stale())
            if not fut.done() and self._link is link and self._heartbeat_stale():
                self._lost(link, "its heartbeat stopped")  # settles fut with None
        return fut.result() if fut.done() else None

    def send(self, msg: Any) -> bool:
        if self._link is None:
            return False
        self._link.send(msg)
        return True

    # --- leases -----------------------------------------------------------------------------
    async def acquire(self, origin: str, *, timeout: float | None) -> Lease:
        """Wait for a fleet slot to open a connection to `origin`; see `FleetBackend`."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            connected = await self.ensure()
            try:
                if connected:
                    return await self._acquire_remote(origin, deadline, timeout)
                return await self._acquire_local(origin, deadline, timeout)
            except _Reroute:
                continue

    async def _acquire_remote(self, origin: str, deadline: float | None, timeout: float | None) -> Lease:
        loop = asyncio.get_running_loop()
        link = self._link
        assert link is not None
        req = next(self._ids)
        fut: asyncio.Future[Lease] = loop.create_future()
        self._pending[req] = ("acquire", fut, origin)
        link.send(Acquire(req, origin))
        try:
            while not fut.done():
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise _timeout(origin, timeout)
                wait = self._until_stale()
                await asyncio.wait({fut}, timeout=wait if left is None else min(left, wait))
                if not fut.done() and self._link is link and self._heartbeat_stale():
                    self._lost(link, "its heartbeat stopped")
            return fut.result()
        except BaseException:
            if self._pending.pop(req, None) is not None:
                self.send(Cancel(req))
            elif fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())
            raise

    async def _acquire_local(self, origin: str, deadline: float | None, timeout: float | None) -> Lease:
        lease = self._local.try_take(origin)
        if lease is not None:
            return lease
        left = None if deadline is None else deadline - asyncio.get_running_loop().time()
        if left is not None and left <= 0:
            raise _timeout(origin, timeout)
        try:
            return await self._local.wait(origin, left)  # _Reroute if we reconnect
        except TimeoutError:
            raise _timeout(origin, timeout) from None

    def _fits_locally(self, origin: str) -> bool:
        total_cap, host_cap = self.fallback_caps()
        if host_cap is not None and self._per_host[origin] >= host_cap:
            return False
        return total_cap is None or len(self._leases) < total_cap

    def _grant_local(self, origin: str) -> Lease:
        lease = Lease(next(self._ids), origin)
        self._hold(lease.id, origin)
        return lease

    def _hold(self, lease_id: int, origin: str) -> None:
        self._leases[lease_id] = origin
        self._per_host[origin] += 1

    def release(self, lease: Lease) -> None:
        """The connection of `lease` closed; idempotent."""
        origin = self._leases.pop(lease.id, None)
        if origin is None:
            return
        self._per_host[origin] -= 1
        if self._per_host[origin] <= 0:
            del self._per_host[origin]
        if self._link is not None:
            self._link.send(Release(lease.id))
        elif self._local.has_waiters():
            self._local.serve()

    def set_shed_handler(self, handler: Callable[[str], bool]) -> None:
        self._shed_handler = handler

    # --- breakers: see _worker_breakers ----------------------------------------------------------
    def configure_breakers(
        self, *, failure_threshold: int, recovery_timeout: float, success_threshold: int
    ) -> None:
        self.breakers.config = BreakerConfig(
            failure_threshold=failure_threshold, recovery_timeout=recovery_timeout,
            success_threshold=success_threshold,
        )

    def breaker_state(self, key: str) -> tuple[str, float] | None:
        return self.breakers.state(key)

    async def breaker_acquire_probe(self, key: str) -> bool:
        return await self.breakers.acquire_probe(key)

    def record_outcome(self, key: str, failed: bool | None, probe: bool) -> None:
        self.breakers.record(key, failed, probe)

    def flush_outcomes(self) -> None:
        self.breakers.flush()

    # --- lifecycle ------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the channel; the coordinator returns whatever this worker still held."""
        if self._closed:
            return
        self.flush_outcomes()
        self._closed = True
        for task in (self._reconnecting, self._connecting):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        link, self._link = self._link, None
        if link is not None:
            link.close()
        for _, fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(PoolClosed("the fleet backend was closed"))
                fut.exception()
        self._pending.clear()
        self._orphans.clear()
        self._local.fail_all(lambda: PoolClosed("the fleet backend was closed"))

    def _forget(self, *, close_link: bool) -> None:
        """Drop every trace of the current connection without talking to anyone."""
        link = self._link
        if link is not None:
            link.detach_fd()
            if close_link:
                with contextlib.suppress(Exception):
                    link.close()
        mapping = self._mapping
        self._reset_state()
        if mapping is not None:
            with contextlib.suppress(BufferError, ValueError):
                mapping.close()

    def _after_fork_in_child(self) -> None:
        # The child owns none of the parent's connections, tasks or socket.
        self._forget(close_link=False)


def _timeout(origin: str, timeout: float | None) -> PoolTimeout:
    return PoolTimeout(
        f"no connection slot to {origin} became free fleet-wide within {timeout:.3g}s "
        "(pool timeout)" if timeout is not None else f"no connection slot to {origin}"
    )


def _after_fork() -> None:
    for backend in list(_BACKENDS):
        backend._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork)


def socket_path_of(address: str | os.PathLike[str]) -> Path:
    text = os.fspath(address)
    if text.startswith("unix:"):
        text = text[5:]
    if not os.path.isabs(text):
        raise CoordinatorError(f"coordinator address must be an absolute socket path: {text!r}")
    return Path(text)


_ = socket  # socket errors are handled in _links
