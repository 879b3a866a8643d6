"""The worker-side interface a fleet backend offers the pool and the client.

The connection pool and the `Client` hold one object implementing
`FleetBackend` when ``Client(coordinator=...)`` is given. The Unix-socket
coordinator (`hyperhttp.shared`) is one implementation; a backend for
fleets across machines (Redis) can be another, without touching the pool.

Cost rule: only opening a connection (`acquire`) and closing one
(`release`) talk to the backend; breaker outcomes are batched; breaker and
DNS reads come from shared memory. A request on a reused keep-alive
connection costs nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._transport.dns import Address, SharedDNS

__all__ = ["FleetBackend", "FleetDNSBackend", "Lease"]


@dataclass(frozen=True, slots=True)
class Lease:
    """The fleet's leave to hold one open connection to `origin` ("host:port")."""

    id: int
    origin: str


class FleetDNSBackend(Protocol):
    """`SharedDNS` plus a fleet-deduplicated lookup."""

    def lookup(self, host: str, port: int) -> tuple[list[Address], float] | None: ...

    def store(self, host: str, port: int, addresses: list[Address], ttl: float) -> None: ...

    async def resolve(
        self, host: str, port: int, resolver: Callable[[str, int], Awaitable[list[Address]]]
    ) -> list[Address]:
        """Resolve once for the whole fleet: if another worker is resolving
        `host` right now, wait for its answer instead of asking the resolver."""
        ...


class FleetBackend(Protocol):
    """What a worker's pool and client use of a fleet coordinator."""

    dns: FleetDNSBackend

    async def acquire(self, origin: str, *, timeout: float | None) -> Lease:
        """Wait (FIFO, fleet-wide) for a slot to open a new connection to `origin`.

        Raises `PoolTimeout` when `timeout` runs out, `CoordinatorError` when the
        coordinator is required and unreachable. Cancellation-safe: a slot
        granted to a cancelled caller is given back."""
        ...

    def release(self, lease: Lease) -> None:
        """The connection of `lease` is closed (synchronous, fire-and-forget, idempotent)."""
        ...

    def set_shed_handler(self, handler: Callable[[str], bool]) -> None:
        """`handler(origin)` closes one idle connection to `origin` ("" = any origin)
        and returns True if it closed one; the fleet calls it for waiters elsewhere."""
        ...

    def configure_breakers(
        self, *, failure_threshold: int, recovery_timeout: float, success_threshold: int
    ) -> None:
        """The thresholds the fleet applies to this worker's outcomes and probes."""
        ...

    def breaker_state(self, key: str) -> tuple[str, float] | None:
        """("closed"|"open"|"half_open", seconds left open), read from shared memory.

        None when the fleet cannot say (not connected): use the local breaker."""
        ...

    async def breaker_acquire_probe(self, key: str) -> bool:
        """In half-open, True for exactly one caller fleet-wide (the probe).

        True as well when not connected: the local breaker decides then."""
        ...

    def record_outcome(self, key: str, failed: bool | None, probe: bool) -> None:
        """An attempt on `key` ended: failed True/False, None for neutral
        (only meaningful for a probe: frees the probe slot). Batched."""
        ...

    async def ensure(self) -> bool:
        """Join the fleet now if not yet joined (workers join lazily); True
        while connected. Raises `CoordinatorError` when required and absent."""
        ...

    def is_connected(self) -> bool: ...

    async def aclose(self) -> None: ...


if TYPE_CHECKING:
    # The DNS half must satisfy the dialer's SharedDNS protocol.
    def _check(dns: FleetDNSBackend) -> SharedDNS:
        return dns
