"""The coordinator's breaker and DNS ledgers. Pure: time comes in as `now`.

Breakers
--------
One `CircuitBreaker` (the same pure state machine a single process uses)
per "host:port" key, fed by every worker's batched outcomes:

- Outcomes of ordinary attempts count only while the breaker is CLOSED
  (the coordinator admits and settles them at once); while OPEN or
  HALF_OPEN they are stale and change nothing, as in one process.
- HALF_OPEN admits exactly one probe fleet-wide: `acquire_probe` is a
  lease of capacity 1 held by the worker connection that asked. Its
  outcome settles it; if that connection drops first, the probe is
  released (neutral), so the slot is never stranded.
- The thresholds are the sender's (`failure_threshold`, ...), carried by
  each message, so the coordinator needs no breaker configuration.
- A breaker closed and clean is forgotten; only non-closed breakers are
  published to the shared table.

DNS
---
Answers live until min(their ttl, `dns_ttl`). A `Resolve` for a name that
nobody is resolving makes the asker the resolver ("go"); askers arriving
while it runs wait and get its answer. If it fails, disconnects or takes
longer than `RESOLVE_TIMEOUT`, every waiter is told to go ahead itself.

An answer is taken only from a connection told to "go" for that name and
not yet answered (a late one, after `RESOLVE_TIMEOUT`, still counts). A
`DnsStore` for a name the sender asked about but was not told to resolve
(a duplicate: workers re-publish what they were answered) changes nothing;
one for a name it never asked about is a `LeaseViolation` (the server drops
the sender), so no connection can plant answers for the fleet.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

from ..errors.circuit_breaker import (
    BreakerConfig,
    BreakerPermit,
    BreakerState,
    CircuitBreaker,
    CircuitBreakerOpen,
    Verdict,
)
from ._leases import LeaseViolation
from ._protocol import (
    OUTCOME_FAILURE,
    OUTCOME_PROBE_FAILURE,
    OUTCOME_PROBE_NEUTRAL,
    OUTCOME_PROBE_SUCCESS,
    OUTCOME_SUCCESS,
    Address,
)
from ._table import BreakerRecord, DnsRecord

__all__ = ["RESOLVE_TIMEOUT", "FleetBreakers", "FleetDNS"]

RESOLVE_TIMEOUT = 10.0
MAX_BREAKERS = 4096
MAX_DNS = 4096
# Per connection: names it must answer (beyond this it resolves unshared),
# and names it asked about (older ones are forgotten first).
MAX_ASKED_PER_CONN = 1024
MAX_KNOWN_PER_CONN = 4096

_VERDICT = {
    OUTCOME_SUCCESS: Verdict.SUCCESS,
    OUTCOME_FAILURE: Verdict.FAILURE,
    OUTCOME_PROBE_SUCCESS: Verdict.SUCCESS,
    OUTCOME_PROBE_FAILURE: Verdict.FAILURE,
    OUTCOME_PROBE_NEUTRAL: Verdict.NEUTRAL,
}


class FleetBreakers:
    def __init__(self) -> None:
        self._breakers: dict[str, CircuitBreaker] = {}
        self._probes: dict[str, tuple[int, BreakerPermit]] = {}
        self._next_id = itertools.count(1).__next__

    def __repr__(self) -> str:
        return f"<FleetBreakers keys={len(self._breakers)} probes={len(self._probes)}>"

    def _get(self, key: str, config: BreakerConfig) -> CircuitBreaker | None:
        breaker = self._breakers.get(key)
        if breaker is None:
            if len(self._breakers) >= MAX_BREAKERS:
                return None
            breaker = self._breakers[key] = CircuitBreaker(key, config, self._next_id)
        elif breaker.config != config:
            breaker.config = config
        return breaker

    def outcome(self, conn: int, key: str, code: int, config: BreakerConfig, now: float) -> bool:
        """Apply one outcome; True if the key's published state may have changed."""
        verdict = _VERDICT[code]
        probe = self._probes.get(key)
        if code >= OUTCOME_PROBE_SUCCESS and probe is not None and probe[0] == conn:
            del self._probes[key]
            breaker = self._breakers.get(key)
            if breaker is not None:
                breaker.settle(probe[1], verdict, now)
                self._forget_if_clean(key, breaker)
            return True
        if verdict is Verdict.NEUTRAL:
            return False
        breaker = self._get(key, config)
        if breaker is None or breaker.state(now) is not BreakerState.CLOSED:
            return False  # stale: only the probe decides once it has opened
        breaker.settle(breaker.acquire(now), verdict, now)
        self._forget_if_clean(key, breaker)
        return True

    def acquire_probe(self, conn: int, key: str, config: BreakerConfig, now: float) -> bool:
        """Admit `conn` as the one probe of `key` (True), or refuse (False)."""
        breaker = self._breakers.get(key)
        if breaker is None or breaker.state(now) is BreakerState.CLOSED:
            return True  # nothing to probe: an ordinary attempt
        if breaker.config != config:
            breaker.config = config
        try:
            permit = breaker.acquire(now)
        except CircuitBreakerOpen:
            return False
        self._probes[key] = (conn, permit)
        return True

    def drop(self, conn: int, now: float) -> list[str]:
        """Release the probes `conn` held; the keys whose state changed."""
        changed = []
        for key, (owner, permit) in list(self._probes.items()):
            if owner == conn:
                del self._probes[key]
                breaker = self._breakers.get(key)
                if breaker is not None:
                    breaker.settle(permit, Verdict.NEUTRAL, now)
                changed.append(key)
        return changed

    def _forget_if_clean(self, key: str, breaker: CircuitBreaker) -> None:
        if breaker.is_pristine:
            del self._breakers[key]

    def record(self, key: str, now: float) -> BreakerRecord | None:
        """What the shared table should hold for `key` (None: closed, nothing)."""
        breaker = self._breakers.get(key)
        if breaker is None:
            return None
        snap = breaker.snapshot(now)
        if snap.state is BreakerState.CLOSED:
            return None
        if snap.state is BreakerState.OPEN:
            return BreakerRecord(key, "open", now + snap.remaining, False)
        return BreakerRecord(key, "half_open", 0.0, snap.probe_in_flight)

    def snapshot(self, now: float) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for key, breaker in sorted(self._breakers.items()):
            snap = breaker.snapshot(now)
            out[key] = {
                "state": snap.state.value,
                "remaining": round(snap.remaining, 3),
                "failures": snap.consecutive_failures,
                "successes": snap.consecutive_successes,
                "probe_in_flight": snap.probe_in_flight,
                "times_opened": snap.times_opened,
            }
        return out


class _Inflight:
    __slots__ = ("owner", "started", "waiters")

    def __init__(self, owner: int, started: float) -> None:
        self.owner = owner
        self.started = started
        self.waiters: list[tuple[int, int]] = []


DnsKey = tuple[str, int]
# (conn, req, addresses or None = go ahead, ttl)
DnsReply = tuple[int, int, list[Address] | None, float]


class FleetDNS:
    def __init__(self, *, dns_ttl: float) -> None:
        self.dns_ttl = dns_ttl
        self._entries: dict[DnsKey, tuple[list[Address], float]] = {}
        self._inflight: dict[DnsKey, _Inflight] = {}
        self._asked: dict[int, set[DnsKey]] = {}  # told "go", answer due
        self._known: dict[int, OrderedDict[DnsKey, None]] = {}  # asked about

    @staticmethod
    def table_key(host: str, port: int) -> str:
        return f"{host.lower()}:{port}"

    def resolve(self, conn: int, req: int, host: str, port: int, now: float) -> list[DnsReply]:
        key = (host.lower(), port)
        known = self._known.setdefault(conn, OrderedDict())
        known[key] = None
        known.move_to_end(key)
        if len(known) > MAX_KNOWN_PER_CONN:
            known.popitem(last=False)
        entry = self._entries.get(key)
        if entry is not None and entry[1] > now:
            return [(conn, req, entry[0], entry[1] - now)]
        if len(self._asked.get(conn, ())) >= MAX_ASKED_PER_CONN:
            return [(conn, req, None, 0.0)]  # resolve it, unshared: its answer is not taken
        running = self._inflight.get(key)
        if running is not None and now - running.started < RESOLVE_TIMEOUT:
            running.waiters.append((conn, req))
            return []
        self._inflight[key] = _Inflight(conn, now)
        return [self._go(conn, req, key)]

    def _go(self, conn: int, req: int, key: DnsKey) -> DnsReply:
        """Tell `conn` to resolve `key` itself; its answer is then welcome."""
        self._asked.setdefault(conn, set()).add(key)
        return (conn, req, None, 0.0)

    def store(
        self, conn: int, host: str, port: int, addresses: list[Address], ttl: float, now: float
    ) -> tuple[DnsRecord | None, list[DnsReply]]:
        """Record `conn`'s answer; the table record to publish and the waiters to answer.

        Raises `LeaseViolation` (before any change) for a name `conn` never asked about."""
        key = (host.lower(), port)
        asked = self._asked.get(conn)
        if asked is None or key not in asked:
            if key in self._known.get(conn, ()):
                return None, []  # a duplicate of what it was answered: changes nothing
            raise LeaseViolation(f"unsolicited DNS answer for {host[:80]!r}")
        asked.discard(key)
        ttl = min(ttl, self.dns_ttl)
        running = self._inflight.pop(key, None)
        waiters = running.waiters if running is not None else []
        if ttl <= 0 or not addresses:
            return None, [self._go(c, r, key) for c, r in waiters]
        if key not in self._entries and len(self._entries) >= MAX_DNS:
            self.expire(now)
            if len(self._entries) >= MAX_DNS:
                return None, [(c, r, addresses, ttl) for c, r in waiters]
        self._entries[key] = (addresses, now + ttl)
        record = DnsRecord(self.table_key(*key), addresses, now + ttl)
        return record, [(c, r, addresses, ttl) for c, r in waiters]

    def failed(self, conn: int, host: str, port: int) -> list[DnsReply]:
        key = (host.lower(), port)
        self._asked.get(conn, set()).discard(key)
        running = self._inflight.get(key)
        if running is None or running.owner != conn:
            return []
        del self._inflight[key]
        return [self._go(c, r, key) for c, r in running.waiters]

    def drop(self, conn: int) -> list[DnsReply]:
        self._asked.pop(conn, None)
        self._known.pop(conn, None)
        out: list[DnsReply] = []
        for key, running in list(self._inflight.items()):
            if running.owner == conn:
                del self._inflight[key]
                out.extend(self._go(c, r, key) for c, r in running.waiters if c != conn)
            else:
                running.waiters = [(c, r) for c, r in running.waiters if c != conn]
        return out

    def expire(self, now: float) -> tuple[list[str], list[DnsReply]]:
        """Forget stale answers and give up on slow resolvers."""
        gone = [k for k, (_, exp) in self._entries.items() if exp <= now]
        for key in gone:
            del self._entries[key]
        out: list[DnsReply] = []
        for key, running in list(self._inflight.items()):
            if now - running.started >= RESOLVE_TIMEOUT:
                del self._inflight[key]
                out.extend(self._go(c, r, key) for c, r in running.waiters)
        return [self.table_key(*k) for k in gone], out

    def snapshot(self, now: float) -> dict[str, dict[str, object]]:
        return {
            self.table_key(*key): {
                "addresses": [a[1] for a in addrs],
                "expires_in": round(exp - now, 3),
            }
            for key, (addrs, exp) in sorted(self._entries.items())
            if exp > now
        }
