"""Block accounting for a host coordinator whose caps come from Redis. Pure: no loop, no I/O.

Theory
------
With a Redis backend, the fleet-wide caps are semaphores in Redis (one per
origin, one for the total). A host coordinator does not ask Redis per
connection: it holds *slots* in blocks (`block` at a time) and its own
`LeaseTable` enforces what it holds, so the hot path stays local.

- A slot is one member of the origin's sorted set *and* of the global one
  (paired), so a host never holds total capacity without an origin to use
  it on, and the sum of a host's per-origin slots bounds its total.
- The local cap for an origin is the number of slots held for it
  (`BlockLedger.limit`); the local total cap is then implied.
- `BlockLedger.plan` compares holdings with demand (connections in use plus
  local waiters) per origin:
    * short by `need`: ask Redis for `need` rounded up to whole blocks
      (Redis may grant fewer, down to zero; `need` is what the fleet queue
      reserves for us, the rest is read-ahead);
    * over by a surplus: give back everything above demand if another host
      is waiting for the origin (or for the total), else only what exceeds
      one spare block once the surplus reaches two blocks (hysteresis, so a
      host at a steady load does not ask and give back every pass).
- Slots are fungible: giving back any `n` members leaves exactly the
  holdings the plan computed, and never drops below what is in use.
- Slots Redis reports as lost (expired during a partition, or Redis
  restarted) are dropped from the ledger; the table then stops granting on
  that origin until the host is back under its holdings.

`BlockLeaseTable` is the coordinator's `LeaseTable` with the caps taken from
a ledger (Redis mode) or from fixed per-host numbers (fallback mode, when
Redis is unreachable: the fleet cap divided by the hosts last seen).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._leases import LeaseTable, ShedRequest

__all__ = [
    "Ask",
    "BackendURL",
    "BlockLeaseTable",
    "BlockLedger",
    "fallback_caps",
    "parse_backend",
]

DEFAULT_BLOCK = 4
DEFAULT_LEASE_TTL = 5.0


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask Redis for up to `want` slots of `origin`; `need` of them are for waiters now."""

    origin: str
    want: int
    need: int


class BlockLedger:
    """The slots this host holds from Redis, per origin (member ids, as Redis named them)."""

    def __init__(self, block: int = DEFAULT_BLOCK) -> None:
        if block < 1:
            raise ValueError("block must be >= 1")
        self.block = block
        self._held: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"<BlockLedger block={self.block} held={self.total}>"

    @property
    def total(self) -> int:
        return sum(len(m) for m in self._held.values())

    def limit(self, origin: str) -> int:
        members = self._held.get(origin)
        return len(members) if members else 0

    def holdings(self) -> dict[str, int]:
        return {o: len(m) for o, m in sorted(self._held.items()) if m}

    def members(self) -> list[tuple[str, str]]:
        """Every (origin, member) held, for renewal."""
        return [(o, m) for o, ms in self._held.items() for m in ms]

    def add(self, origin: str, members: list[str]) -> None:
        if members:
            self._held.setdefault(origin, []).extend(members)

    def lose(self, members: set[str]) -> set[str]:
        """Forget members Redis no longer has; the origins that shrank."""
        shrunk = set()
        for origin, held in list(self._held.items()):
            kept = [m for m in held if m not in members]
            if len(kept) != len(held):
                shrunk.add(origin)
                self._set(origin, kept)
        return shrunk

    def take(self, origin: str, n: int) -> list[str]:
        """Remove `n` members of `origin` from the ledger (to give back) and return them."""
        held = self._held.get(origin, [])
        n = max(0, min(n, len(held)))
        if n == 0:
            return []
        out = held[len(held) - n:]
        self._set(origin, held[: len(held) - n])
        return out

    def take_all(self) -> list[tuple[str, str]]:
        out = self.members()
        self._held.clear()
        return out

    def _set(self, origin: str, members: list[str]) -> None:
        if members:
            self._held[origin] = members
        else:
            self._held.pop(origin, None)

    def plan(
        self,
        demand: dict[str, tuple[int, int]],
        *,
        contended: set[str] | frozenset[str] = frozenset(),
        all_contended: bool = False,
    ) -> tuple[list[Ask], dict[str, int]]:
        """What to ask for and how many to give back, per origin.

        `demand` maps origin -> (connections in use, local waiters). Gives are
        counts; take them with `take` before telling Redis.
        """
        asks: list[Ask] = []
        surplus_of: dict[str, int] = {}
        for origin in sorted(set(demand) | set(self._held)):
            used, waiting = demand.get(origin, (0, 0))
            wanted = used + waiting
            held = self.limit(origin)
            if wanted > held:
                need = wanted - held
                # Ask for what waits now, rounded up to whole blocks (read-ahead).
                want = math.ceil(need / self.block) * self.block
                asks.append(Ask(origin, want, need))
            elif held > wanted:
                surplus_of[origin] = held - wanted
        # Short somewhere ourselves: our spare slots elsewhere may be what the
        # total cap lacks, so they go back first (else idle holdings deadlock us).
        all_contended = all_contended or bool(asks)
        gives: dict[str, int] = {}
        for origin, surplus in surplus_of.items():
            if all_contended or origin in contended:
                gives[origin] = surplus
            elif surplus >= 2 * self.block:
                gives[origin] = surplus - self.block
        return asks, gives


def fallback_caps(
    max_total: int | None, max_per_host: int | None, hosts: int
) -> tuple[int | None, int | None]:
    """A host's share of the fleet caps while Redis is unreachable: cap // hosts (at least 1)."""
    hosts = max(1, hosts)
    total = None if max_total is None else max(1, max_total // hosts)
    per_host = None if max_per_host is None else max(1, max_per_host // hosts)
    return total, per_host


class BlockLeaseTable(LeaseTable):
    """A `LeaseTable` whose caps are the host's Redis holdings (or fixed fallback caps).

    In ledger mode an origin fits while its connections in use are fewer
    than the slots held for it. Shedding (asking a local holder for an idle
    connection) is planned only for origins Redis refused to grow
    (`saturated`): short holdings that one more block will fix must not
    close anybody's connection.
    """

    def __init__(self, *, max_total: int | None, max_per_host: int | None) -> None:
        super().__init__(max_total=max_total, max_per_host=max_per_host)
        self.fleet_caps = (max_total, max_per_host)
        self.ledger: BlockLedger | None = None
        self.saturated: set[str] = set()
        self._planning = False

    def use_ledger(self, ledger: BlockLedger) -> None:
        """Redis mode: the caps are what `ledger` holds."""
        self.ledger = ledger

    def use_local(self, max_total: int | None, max_per_host: int | None) -> None:
        """Fallback mode: fixed caps (the host's share of the fleet caps)."""
        self.ledger = None
        self.max_total = max_total
        self.max_per_host = max_per_host

    def demand(self) -> dict[str, tuple[int, int]]:
        """origin -> (connections in use, live local waiters)."""
        waiting: Counter[str] = Counter(w.origin for w in self._queue if w.live)
        out = {o: (n, waiting.get(o, 0)) for o, n in self._in_use.items() if n > 0}
        for origin, n in waiting.items():
            out.setdefault(origin, (0, n))
        return out

    def _blocking(self, origin: str) -> str | None:
        ledger = self.ledger
        if ledger is None:
            return super()._blocking(origin)
        if self._in_use[origin] >= ledger.limit(origin):
            if self._planning and origin not in self.saturated:
                return None  # more slots are on their way: nothing to shed
            return origin
        return None

    def plan_sheds(self) -> list[ShedRequest]:
        self._planning = True
        try:
            return super().plan_sheds()
        finally:
            self._planning = False


@dataclass(frozen=True, slots=True)
class BackendURL:
    """A parsed ``--backend`` URL: the Redis URL plus our own options."""

    redis_url: str
    fleet: str
    lease_ttl: float
    block: int

    @property
    def display(self) -> str:
        """The URL without credentials (for logs and status)."""
        parts = urlsplit(self.redis_url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_backend(url: str, *, default_fleet: str = "default") -> BackendURL:
    """Parse ``redis://host:port/db?fleet=NAME&lease_ttl=SECONDS&block=N``.

    `fleet` names the set of hosts that share caps (default: the
    coordinator's name); `lease_ttl` is how long a dead host's slots live
    (default 5 s); `block` is how many slots a host takes per Redis call
    (default 4). Other query options go to redis-py unchanged.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ValueError(f"unsupported backend {url!r}: expected redis://, rediss:// or unix://")
    ours = {"fleet": default_fleet, "lease_ttl": str(DEFAULT_LEASE_TTL),
            "block": str(DEFAULT_BLOCK)}
    rest = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ours:
            ours[key] = value
        else:
            rest.append((key, value))
    ttl = float(ours["lease_ttl"])
    block = int(ours["block"])
    if not 0.2 <= ttl <= 3600:
        raise ValueError("lease_ttl must be between 0.2 and 3600 seconds")
    if not 1 <= block <= 1024:
        raise ValueError("block must be between 1 and 1024")
    fleet = ours["fleet"]
    if not fleet or any(c in fleet for c in "{}|\r\n ") or len(fleet) > 100:
        raise ValueError(f"bad fleet name {fleet!r}")
    redis_url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
    return BackendURL(redis_url, fleet, ttl, block)
