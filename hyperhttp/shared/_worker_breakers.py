"""The worker's view of the fleet breakers: shared state, the one probe, outcomes.

Rules
-----
- State is read from the shared table, with no message; None while not
  connected, and the client's own breaker decides then.
- Half-open admits one probe fleet-wide, asked for with a request-reply
  that never outlives the coordinator's heartbeat (`WorkerBackend.request`).
  Not connected, or lost on the way: True, the local breaker decides.
- A probe granted to a caller that left (cancelled, before or after the
  grant arrived) is settled neutral at once: the fleet admits one probe,
  so one stranded grant would keep the breaker shut for every worker.
- Outcomes are batched per loop iteration and dropped while not connected:
  a coordinator that comes back starts from what it hears next.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..errors.circuit_breaker import BreakerConfig
from ._protocol import (
    OUTCOME_FAILURE,
    OUTCOME_PROBE_FAILURE,
    OUTCOME_PROBE_NEUTRAL,
    OUTCOME_PROBE_SUCCESS,
    OUTCOME_SUCCESS,
    Outcomes,
    ProbeAcquire,
)

if TYPE_CHECKING:
    from ._worker import WorkerBackend

__all__ = ["FleetBreakerClient"]

OUTCOME_BATCH = 128


class FleetBreakerClient:
    """Fleet breaker reads, probes and outcomes for one `WorkerBackend`."""

    def __init__(self, backend: WorkerBackend) -> None:
        self._backend = backend
        self.config = BreakerConfig()
        self.reset()

    def reset(self) -> None:
        """Forget unsent outcomes (after a fork or on a new loop); keeps the config."""
        self._outcomes: list[tuple[str, int]] = []
        self._flush_handle: asyncio.Handle | None = None

    def __repr__(self) -> str:
        return f"<FleetBreakerClient unsent={len(self._outcomes)}>"

    def state(self, key: str) -> tuple[str, float] | None:
        backend = self._backend
        reader = backend.reader
        if backend._link is None or reader is None:
            return None
        record = reader.breaker(key)
        if record is None:
            return ("closed", 0.0)
        if record.state == "open":
            left = record.open_until - backend._clock()
            return ("open", left) if left > 0 else ("half_open", 0.0)
        return ("half_open", 0.0)

    async def acquire_probe(self, key: str) -> bool:
        backend = self._backend
        if not await backend.ensure():
            return True
        cfg = self.config

        def give_back(granted: Any) -> None:
            if granted:
                self.record(key, None, probe=True)

        granted = await backend.request("probe", lambda req: ProbeAcquire(
            req, key, cfg.failure_threshold, cfg.recovery_timeout, cfg.success_threshold),
            give_back)
        return True if granted is None else bool(granted)

    def record(self, key: str, failed: bool | None, probe: bool) -> None:
        backend = self._backend
        if backend._link is None:
            return
        if probe:
            code = (OUTCOME_PROBE_NEUTRAL if failed is None
                    else OUTCOME_PROBE_FAILURE if failed else OUTCOME_PROBE_SUCCESS)
        elif failed is None:
            return
        else:
            code = OUTCOME_FAILURE if failed else OUTCOME_SUCCESS
        self._outcomes.append((key, code))
        if len(self._outcomes) >= OUTCOME_BATCH:
            self.flush()
        elif self._flush_handle is None and backend._loop is not None:
            self._flush_handle = backend._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_handle = None
        batch, self._outcomes = self._outcomes, []
        cfg = self.config
        if batch:
            self._backend.send(Outcomes(cfg.failure_threshold, cfg.recovery_timeout,
                                        cfg.success_threshold, batch))

    def drop_unsent(self) -> None:
        """The coordinator is gone: what it did not hear it will not need."""
        self._outcomes.clear()
