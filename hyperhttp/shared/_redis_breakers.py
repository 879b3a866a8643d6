"""Breakers fleet-wide across hosts: the host's ledger plus what Redis says. Pure.

Theory
------
Each host coordinator keeps its `FleetBreakers` (its own workers' outcomes,
settled at once, as without Redis). On top of it, `RedisBreakers` keeps:

- an *outbox* of what Redis must hear: ordinary outcomes per key (in order,
  so Redis counts consecutive failures over all hosts), "this host opened
  the key", and probe results. The driver (`_redis`) flushes it, a batch
  per pass, so a request costs no Redis call of its own;
- an *overlay* of the keys Redis says are not closed (open until a time,
  or half-open with or without a probe in flight), refreshed by polling.

Rules:
1. A key is published to the workers as the more closed of the two views:
   open in Redis means open here, whatever the local count.
2. While Redis has a key open or half-open, ordinary outcomes are stale
   (as in one process) and are neither counted here nor sent.
3. Half-open admits one probe fleet-wide: the local ledger admits one per
   host, then the driver takes a probe lock in Redis (SET NX with expiry);
   losing it gives the local permit back. The probe's outcome settles both.
4. A key that leaves the overlay (another host's probe closed it) resets
   the local breaker too, so every host closes together.
5. Without Redis the overlay is emptied and each host's own breakers rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors.circuit_breaker import BreakerConfig, BreakerState, Verdict
from ._protocol import (
    OUTCOME_FAILURE,
    OUTCOME_PROBE_FAILURE,
    OUTCOME_PROBE_SUCCESS,
    OUTCOME_SUCCESS,
)
from ._state import FleetBreakers
from ._table import BreakerRecord

__all__ = ["BreakerReport", "ProbeResult", "RedisBreakers"]

MAX_PENDING_CODES = 1024  # per key per flush: later ones only repeat the verdict


@dataclass(slots=True)
class BreakerReport:
    """Outcomes of ordinary attempts on one key since the last flush (1 = failure)."""

    config: BreakerConfig
    codes: list[int] = field(default_factory=list)
    force_open: bool = False


@dataclass(frozen=True, slots=True)
class ProbeResult:
    key: str
    verdict: str  # "s", "f" or "n"
    config: BreakerConfig


class RedisBreakers(FleetBreakers):
    def __init__(self) -> None:
        super().__init__()
        self.linked = False
        # key -> (open until, on our monotonic clock; probe busy somewhere)
        self.remote: dict[str, tuple[float, bool]] = {}
        self.reports: dict[str, BreakerReport] = {}
        self.results: list[ProbeResult] = []
        self.remote_probes: dict[str, int] = {}  # key -> conn holding the Redis probe lock

    def __repr__(self) -> str:
        return f"<RedisBreakers remote={len(self.remote)} linked={self.linked}>"

    # --- outcomes --------------------------------------------------------------------
    def outcome(self, conn: int, key: str, code: int, config: BreakerConfig, now: float) -> bool:
        if code >= OUTCOME_PROBE_SUCCESS and self.remote_probes.get(key) == conn:
            del self.remote_probes[key]
            verdict = ("s" if code == OUTCOME_PROBE_SUCCESS
                       else "f" if code == OUTCOME_PROBE_FAILURE else "n")
            self.results.append(ProbeResult(key, verdict, config))
            if verdict == "f":
                self.remote[key] = (now + config.recovery_timeout, False)
            elif key in self.remote:
                self.remote[key] = (self.remote[key][0], False)
            super().outcome(conn, key, code, config, now)
            return True
        if key in self.remote and code < OUTCOME_PROBE_SUCCESS:
            return False  # rule 2: stale while the fleet has it open
        before = self._state_of(key, now)
        changed = super().outcome(conn, key, code, config, now)
        if self.linked and code in (OUTCOME_SUCCESS, OUTCOME_FAILURE):
            report = self.reports.get(key)
            if report is None:
                report = self.reports[key] = BreakerReport(config)
            report.config = config
            if len(report.codes) < MAX_PENDING_CODES:
                report.codes.append(1 if code == OUTCOME_FAILURE else 0)
            if before is BreakerState.CLOSED and self._state_of(key, now) is BreakerState.OPEN:
                report.force_open = True
        return changed

    def _state_of(self, key: str, now: float) -> BreakerState:
        breaker = self._breakers.get(key)
        return BreakerState.CLOSED if breaker is None else breaker.state(now)

    def take_outbox(self) -> tuple[dict[str, BreakerReport], list[ProbeResult]]:
        reports, self.reports = self.reports, {}
        results, self.results = self.results, []
        return reports, results

    # --- probes ----------------------------------------------------------------------
    def needs_remote_probe(self, conn: int, key: str, now: float) -> bool:
        """After a local grant: must the Redis probe lock be taken too?"""
        if not self.linked:
            return False
        if key in self.remote:
            return True
        probe = self._probes.get(key)
        return probe is not None and probe[0] == conn

    def remote_probe_won(self, conn: int, key: str) -> None:
        self.remote_probes[key] = conn

    def remote_probe_lost(self, conn: int, key: str, now: float) -> None:
        """The Redis lock is someone else's: give the local permit back."""
        probe = self._probes.get(key)
        if probe is not None and probe[0] == conn:
            del self._probes[key]
            breaker = self._breakers.get(key)
            if breaker is not None:
                breaker.settle(probe[1], Verdict.NEUTRAL, now)
        until, _ = self.remote.get(key, (now, True))
        self.remote[key] = (until, True)

    def drop(self, conn: int, now: float) -> list[str]:
        changed = super().drop(conn, now)
        for key, owner in list(self.remote_probes.items()):
            if owner == conn:
                del self.remote_probes[key]
                config = self._breakers[key].config if key in self._breakers else BreakerConfig()
                self.results.append(ProbeResult(key, "n", config))
                changed.append(key)
        return changed

    # --- the Redis view ----------------------------------------------------------------
    def set_remote(self, view: dict[str, tuple[float, bool]], now: float) -> set[str]:
        """Replace the overlay with a fresh poll; the keys whose published state may change."""
        changed = {k for k in set(view) | set(self.remote) if view.get(k) != self.remote.get(k)}
        for key in set(self.remote) - set(view):
            # Rule 4: closed fleet-wide (by another host's probe): close here too.
            self._breakers.pop(key, None)
            self._probes.pop(key, None)
            self.remote_probes.pop(key, None)
        self.remote = dict(view)
        return changed

    def unlink(self) -> set[str]:
        """Redis is gone: each host's own breakers rule (rule 5)."""
        self.linked = False
        changed = set(self.remote)
        self.remote.clear()
        self.remote_probes.clear()
        self.reports.clear()
        self.results.clear()
        return changed

    def record(self, key: str, now: float) -> BreakerRecord | None:
        local = super().record(key, now)
        remote = self.remote.get(key)
        if remote is None:
            return local
        until, busy = remote
        if until > now:
            if local is not None and local.state == "open":
                until = max(until, local.open_until)
            return BreakerRecord(key, "open", until, False)
        if local is not None and local.state == "open" and local.open_until > now:
            return local
        busy = busy or key in self.remote_probes or (local is not None and local.probe_busy)
        return BreakerRecord(key, "half_open", 0.0, busy)

    def remote_snapshot(self, now: float) -> dict[str, dict[str, object]]:
        return {
            key: {"state": "open" if until > now else "half_open",
                  "remaining": round(max(0.0, until - now), 3), "probe_in_flight": busy}
            for key, (until, busy) in sorted(self.remote.items())
        }
