"""The coordinator's lease table: fleet-wide connection caps, FIFO waiters, shedding.

Pure: no loop, no sockets, no clock. The server feeds it events and sends
what it returns.

Theory
------
A *lease* is the right to hold one open connection to one origin
("host:port"). It belongs to one worker connection (`conn`, an int the
server assigns per accepted socket) and is named by the worker's own id
(`req` of the `Acquire` that won it), so ids never clash across workers and
survive a coordinator restart unchanged.

    waiting ──grant──► held ──release / conn dropped──► gone
       └──cancel / conn dropped──► gone

Caps: `max_per_host` bounds held leases per origin; `max_total` bounds
them over all origins.

Rules:
1. Waiters form one FIFO for the whole fleet. After every change the queue
   is walked in order and each waiter that fits is granted, so nobody is
   overtaken by a later waiter for the same resource. A waiter held back by
   its host's cap does not block later waiters for other hosts.
2. A dropped connection (EOF, kill, protocol violation) returns every lease
   it held and withdraws its waiters, all in one step.
3. Declared leases (re-sent by workers after a coordinator restart) are
   recorded even beyond the caps: the connections exist (see `declare_all`).
   While `granting` is False (the grace period after a start) nothing new
   is granted, so declarations land before new grants.
4. Shedding: a waiter blocked by a cap has the coordinator ask one holder at
   a time (`Shed`) to close an idle connection on the blocking resource
   (its origin for the per-host cap, "" = any origin for the total cap).
   A holder that had none is not asked again for that resource until
   `reset_tried()` (the server calls it periodically), which bounds the
   message rate.
5. Protocol misuse (a reused request id, too many waiters) raises
   `LeaseViolation` before any change; the server then drops the sender.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

__all__ = ["Grant", "LeaseTable", "LeaseViolation", "ShedRequest"]

MAX_WAITERS_PER_CONN = 10_000
MAX_LEASES_PER_CONN = 100_000
SHED_SCAN = 64  # blocked waiters looked at when planning sheds

Grant = tuple[int, int]  # (conn, req)
ShedRequest = tuple[int, int, str]  # (conn, shed id, origin or "")


class LeaseViolation(ValueError):
    """A worker broke the lease protocol; the message changed nothing."""


@dataclass(slots=True)
class _Waiter:
    conn: int
    req: int
    origin: str
    live: bool = True


@dataclass(slots=True)
class _Holder:
    leases: dict[int, str] = field(default_factory=dict)
    waiting: dict[int, _Waiter] = field(default_factory=dict)


class LeaseTable:
    def __init__(self, *, max_total: int | None, max_per_host: int | None) -> None:
        self.max_total = max_total
        self.max_per_host = max_per_host
        self.granting = True
        self.total = 0
        self._in_use: Counter[str] = Counter()
        self._holders: dict[int, _Holder] = {}
        self._queue: deque[_Waiter] = deque()
        self._sheds: dict[int, tuple[int, str]] = {}
        self._tried: dict[str, set[int]] = {}
        self._next_shed = 1

    def __repr__(self) -> str:
        return (
            f"<LeaseTable held={self.total} waiting={self.waiting} "
            f"origins={len(self._in_use)} conns={len(self._holders)}>"
        )

    # --- questions -------------------------------------------------------------
    @property
    def waiting(self) -> int:
        return sum(len(h.waiting) for h in self._holders.values())

    def in_use(self, origin: str) -> int:
        return self._in_use[origin]

    def held_by(self, conn: int) -> dict[int, str]:
        holder = self._holders.get(conn)
        return dict(holder.leases) if holder else {}

    def snapshot(self) -> dict[str, object]:
        waiting: Counter[str] = Counter(
            w.origin for h in self._holders.values() for w in h.waiting.values()
        )
        return {
            "leases": self.total,
            "waiting": sum(waiting.values()),
            "per_host": {o: n for o, n in sorted(self._in_use.items()) if n},
            "waiting_per_host": dict(sorted(waiting.items())),
            "sheds_in_flight": len(self._sheds),
        }

    def per_conn(self, conn: int) -> tuple[int, int]:
        holder = self._holders.get(conn)
        return (len(holder.leases), len(holder.waiting)) if holder else (0, 0)

    # --- commands ----------------------------------------------------------------
    def add_conn(self, conn: int) -> None:
        self._holders.setdefault(conn, _Holder())

    def declare(self, conn: int, lease: int, origin: str) -> list[Grant]:
        """Record one lease `conn` already holds, with no cap check (see `declare_all`)."""
        holder = self._holder(conn)
        if lease in holder.leases or lease in holder.waiting:
            raise LeaseViolation(f"lease {lease} declared twice")
        if len(holder.leases) >= MAX_LEASES_PER_CONN:
            raise LeaseViolation("too many leases")
        self._hold(holder, lease, origin)
        return []

    def declare_all(self, conn: int, leases: list[tuple[int, str]]) -> None:
        """Record leases `conn` already holds (rule 3), all or none; a
        lease declared twice, or more than MAX_LEASES_PER_CONN in all, raises
        `LeaseViolation` before any change.

        Not bounded by the caps: a coordinator restarted with lower caps
        meets workers holding more than one worker may now be granted, and
        those connections exist. Refusing the declaration would leave them
        uncounted while others were granted up to the new caps; counted,
        they hold grants back (and are shed) until the fleet is under."""
        holder = self._holder(conn)
        ids = [lease for lease, _ in leases]
        if len(set(ids)) != len(ids) or any(
            i in holder.leases or i in holder.waiting for i in ids
        ):
            raise LeaseViolation("lease declared twice")
        if len(holder.leases) + len(ids) > MAX_LEASES_PER_CONN:
            raise LeaseViolation(f"declares more than {MAX_LEASES_PER_CONN} leases")
        for lease, origin in leases:
            self._hold(holder, lease, origin)

    def acquire(self, conn: int, req: int, origin: str) -> list[Grant]:
        holder = self._holder(conn)
        if req in holder.leases or req in holder.waiting:
            raise LeaseViolation(f"request id {req} reused")
        if len(holder.waiting) >= MAX_WAITERS_PER_CONN:
            raise LeaseViolation("too many waiting requests")
        if len(holder.leases) >= MAX_LEASES_PER_CONN:
            raise LeaseViolation("too many leases")
        waiter = _Waiter(conn, req, origin)
        holder.waiting[req] = waiter
        self._queue.append(waiter)
        return self.serve()

    def cancel(self, conn: int, req: int) -> list[Grant]:
        holder = self._holders.get(conn)
        waiter = holder.waiting.pop(req, None) if holder else None
        if waiter is None:
            return []  # already granted (its Release follows) or unknown
        waiter.live = False
        return self.serve()

    def release(self, conn: int, lease: int) -> list[Grant]:
        holder = self._holders.get(conn)
        origin = holder.leases.pop(lease, None) if holder else None
        if origin is None:
            return []  # unknown: released twice, or never held; changes nothing
        self._unhold(origin)
        return self.serve()

    def drop(self, conn: int) -> list[Grant]:
        """The connection is gone: every lease it held returns, its waiters leave."""
        holder = self._holders.pop(conn, None)
        if holder is None:
            return []
        for origin in holder.leases.values():
            self._unhold(origin)
        for waiter in holder.waiting.values():
            waiter.live = False
        for shed, (owner, _) in list(self._sheds.items()):
            if owner == conn:
                del self._sheds[shed]
        for tried in self._tried.values():
            tried.discard(conn)
        return self.serve()

    def open_gate(self) -> list[Grant]:
        """End the grace period: grants may start."""
        self.granting = True
        return self.serve()

    def serve(self) -> list[Grant]:
        """Grant, in FIFO order, every waiter that now fits (rule 1)."""
        if not self.granting or not self._queue:
            return []
        grants: list[Grant] = []
        keep: deque[_Waiter] = deque()
        for waiter in self._queue:
            if not waiter.live:
                continue
            if self._blocking(waiter.origin) is None:
                holder = self._holders[waiter.conn]
                del holder.waiting[waiter.req]
                waiter.live = False
                self._hold(holder, waiter.req, waiter.origin)
                grants.append((waiter.conn, waiter.req))
            else:
                keep.append(waiter)
        self._queue = keep
        return grants

    # --- shedding (rule 4) ----------------------------------------------------------
    def plan_sheds(self) -> list[ShedRequest]:
        """Which holders to ask for an idle connection, given the blocked waiters."""
        if not self.granting:
            return []
        needed: Counter[str] = Counter()
        for scanned, waiter in enumerate(self._queue):
            if scanned >= SHED_SCAN:
                break
            if waiter.live:
                resource = self._blocking(waiter.origin)
                if resource is not None:
                    needed[resource] += 1
        in_flight: Counter[str] = Counter(res for _, res in self._sheds.values())
        busy = {(conn, res) for conn, res in self._sheds.values()}
        out: list[ShedRequest] = []
        for resource, count in needed.items():
            deficit = count - in_flight[resource]
            if deficit <= 0:
                continue
            tried = self._tried.setdefault(resource, set())
            for conn in self._candidates(resource):
                if deficit <= 0:
                    break
                if conn in tried or (conn, resource) in busy:
                    continue
                shed = self._next_shed
                self._next_shed += 1
                self._sheds[shed] = (conn, resource)
                out.append((conn, shed, resource))
                deficit -= 1
        return out

    def shed_done(self, conn: int, shed: int, closed: bool) -> None:
        entry = self._sheds.get(shed)
        if entry is None or entry[0] != conn:
            return
        del self._sheds[shed]
        if not closed:
            self._tried.setdefault(entry[1], set()).add(conn)

    def reset_tried(self) -> None:
        self._tried.clear()

    # --- internals ------------------------------------------------------------------
    def _holder(self, conn: int) -> _Holder:
        holder = self._holders.get(conn)
        if holder is None:
            raise LeaseViolation("unknown connection")
        return holder

    def _blocking(self, origin: str) -> str | None:
        """The resource whose cap keeps `origin` from a new lease, or None if it fits."""
        if self.max_per_host is not None and self._in_use[origin] >= self.max_per_host:
            return origin
        if self.max_total is not None and self.total >= self.max_total:
            return ""
        return None

    def _candidates(self, resource: str) -> list[int]:
        """Holders worth asking, those with most leases on the resource first."""
        counts: list[tuple[int, int]] = []
        for conn, holder in self._holders.items():
            if resource:
                n = sum(1 for o in holder.leases.values() if o == resource)
            else:
                n = len(holder.leases)
            if n:
                counts.append((-n, conn))
        return [conn for _, conn in sorted(counts)]

    def _hold(self, holder: _Holder, lease: int, origin: str) -> None:
        holder.leases[lease] = origin
        self._in_use[origin] += 1
        self.total += 1

    def _unhold(self, origin: str) -> None:
        self.total -= 1
        self._in_use[origin] -= 1
        if self._in_use[origin] <= 0:
            del self._in_use[origin]
