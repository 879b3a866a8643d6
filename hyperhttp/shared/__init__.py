"""Limits that hold across a fleet of worker processes.

A coordinator process holds the fleet-wide connection caps, the shared DNS
cache and circuit-breaker state; every worker's `Client(coordinator=...)`
asks it for a slot before opening a connection and reads DNS answers and
breaker states from shared memory. See ``docs/fleet.md``.

    from hyperhttp.shared import Coordinator

    coord = Coordinator.launch(max_connections=200, max_connections_per_host=32)
    ...  # workers: hyperhttp.Client(coordinator=coord.address)
    coord.stop()
"""

from __future__ import annotations

from ._backend import FleetBackend, Lease
from ._connect import ENV_VAR, connect_backend, fleet_status, stop_coordinator
from ._launch import Coordinator

__all__ = [
    "ENV_VAR",
    "Coordinator",
    "FleetBackend",
    "Lease",
    "connect_backend",
    "fleet_status",
    "stop_coordinator",
]
