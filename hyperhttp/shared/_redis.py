"""The Redis backend of a host coordinator: fleet-wide caps and breakers across machines.

Theory
------
Each machine runs its own coordinator for its own workers, unchanged; with
``backend="redis://..."`` that coordinator takes its share of the fleet
caps from Redis. `RedisFleet` is the one task that talks to Redis:

    joining ──first answer──► redis ──error / timeout──► fallback
                                ▲                           │
                                └──── answer to a ping ◄────┘

- *Leases.* The local `BlockLeaseTable` enforces the slots this host holds
  (see `_redis_blocks`). After any lease event the server pokes this task,
  which compares holdings with demand and asks Redis for blocks or gives
  them back, one script call per origin that changed. Held slots are
  renewed every `lease_ttl / 3`; a host that dies stops renewing, and its
  slots expire after `lease_ttl`.
- *Breakers.* Outcomes are flushed to Redis in batches, and the keys Redis
  holds open are polled (see `_redis_breakers`).
- *Redis unreachable.* Every call has a short deadline (`OP_TIMEOUT`); the
  first failure switches to fallback: the table enforces cap // hosts last
  seen, one warning is logged, and the task pings Redis until it answers.
  Then it renews what it still holds (slots that survived are kept) and asks
  for what its current use needs, which may exceed its share for a moment
  (see docs/fleet-multihost.md for the overshoot bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..errors.circuit_breaker import BreakerConfig
from . import _redis_lua as lua
from ._protocol import ProbeAcquire, ProbeReply
from ._redis_blocks import BlockLeaseTable, BlockLedger, fallback_caps, parse_backend
from ._redis_breakers import RedisBreakers

if TYPE_CHECKING:
    from ._server import CoordinatorServer, _Channel

__all__ = ["RedisFleet"]

log = logging.getLogger("hyperhttp.shared.coordinator")

OP_TIMEOUT = 0.5          # no Redis call may hold anything up longer than this
RETRY_INTERVAL = 0.05     # re-ask while local waiters are short of slots
RECONNECT_INTERVAL = 0.25
BREAKER_POLL = 0.1
BREAKER_KEEP_MS = 60_000  # a breaker's failure count / open state outlives its last event this long
PROBE_TTL_MS = 10_000     # a probing host that dies frees the probe after this


class RedisFleet:
    """The Redis side of one host coordinator (owned by `CoordinatorServer`)."""

    def __init__(self, server: CoordinatorServer, url: str, *, fleet: str = "default") -> None:
        self.server = server
        self.url = parse_backend(url, default_fleet=fleet)
        self.prefix = f"hh:{{{self.url.fleet}}}:"
        self.host = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        cfg = server.config
        self.caps = (cfg.max_connections, cfg.max_connections_per_host)
        self.table = BlockLeaseTable(max_total=self.caps[0], max_per_host=self.caps[1])
        self.ledger = BlockLedger(self.url.block)
        self.table.use_ledger(self.ledger)
        self.breakers = RedisBreakers()
        self.mode = "joining"
        self.hosts = 1
        self.contended: set[str] = set()
        self.all_contended = False
        self.starved = False
        self._warned = False
        self._wake = asyncio.Event()
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_renew = 0.0
        self._next_poll = 0.0

    def __repr__(self) -> str:
        return f"<RedisFleet {self.url.display} {self.mode} host={self.host} {self.ledger}>"

    # --- plumbing --------------------------------------------------------------------
    def _connect(self) -> None:
        self._client = aioredis.Redis.from_url(
            self.url.redis_url, decode_responses=True, socket_timeout=OP_TIMEOUT,
            socket_connect_timeout=OP_TIMEOUT, retry_on_timeout=False,
            health_check_interval=0,
        )
        self._scripts = {name: self._client.register_script(getattr(lua, name))
                         for name in ("ACQUIRE", "RENEW", "RELEASE", "LEAVE", "BREAKER_REPORT",
                                      "BREAKER_PROBE", "BREAKER_RESULT", "BREAKER_POLL")}

    async def _call(self, name: str, *args: object) -> Any:
        async with asyncio.timeout(OP_TIMEOUT):
            return await self._scripts[name](keys=[self.prefix], args=[self.prefix, *args])

    def poke(self) -> None:
        """A lease event happened: re-plan soon (called by the server, synchronous)."""
        self._wake.set()

    def _now(self) -> float:
        return self.server._clock()

    # --- the loop ----------------------------------------------------------------------
    async def run(self) -> None:
        self._connect()
        while True:
            try:
                await self._step()
            except Exception as exc:
                # Anything else (a reply of a shape this code did not expect,
                # an error type the client library added) must not end the
                # loop, or this host would stay on per-host limits for good
                # with nothing said: fall back, say what, and try again.
                if self.mode != "fallback":
                    log.error("Redis at %s: unexpected %s; per-host limits until it is back",
                              self.url.display, type(exc).__name__, exc_info=True)
                self._fall_back(exc)
                await asyncio.sleep(RECONNECT_INTERVAL)

    async def _step(self) -> None:
        """One turn of `run`: join, or one pass and the wait for the next."""
        if self.mode != "redis" and not await self._try_join():
            # Not on lease events: an outage must not turn into a ping per connection.
            await asyncio.sleep(RECONNECT_INTERVAL)
            return
        try:
            await self._pass()
        except (RedisError, OSError, TimeoutError) as exc:
            self._fall_back(exc)
            return
        now = self._now()
        delay = min(self._next_renew, self._next_poll) - now
        if self.starved:
            delay = min(delay, RETRY_INTERVAL)
        self._wake.clear()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _try_join(self) -> bool:
        try:
            async with asyncio.timeout(OP_TIMEOUT):
                await self._client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            if self.mode == "joining":
                self._fall_back(exc)
            return False
        self.mode = "redis"
        self.table.use_ledger(self.ledger)
        self.breakers.linked = True
        self._next_renew = self._next_poll = 0.0
        if self._warned:
            log.warning("Redis at %s is back: fleet-wide caps again", self.url.display)
        self._warned = False
        return True

    def _fall_back(self, exc: BaseException) -> None:
        if self.mode != "fallback":
            total, per_host = fallback_caps(*self.caps, self.hosts)
            if not self._warned:
                log.warning("Redis at %s unreachable (%s): per-host limits max_connections=%s "
                            "max_connections_per_host=%s (fleet caps // %s hosts) until it is back",
                            self.url.display, type(exc).__name__, total, per_host, self.hosts)
                self._warned = True
            self.mode = "fallback"
            self.table.use_local(total, per_host)
            self.starved = False
            now = self._now()
            for key in self.breakers.unlink():
                self.server._publish_breaker(key, now)
            self.server._granted(self.table.serve())

    async def _pass(self) -> None:
        now = self._now()
        if now >= self._next_renew:
            await self._renew()
            self._next_renew = now + self.url.lease_ttl / 3
        await self._flush_breakers()
        if now >= self._next_poll:
            await self._poll_breakers()
            self._next_poll = now + BREAKER_POLL
        await self._allocate()

    # --- leases ---------------------------------------------------------------------------
    async def _renew(self) -> None:
        pairs = [x for pair in self.ledger.members() for x in pair]
        ttl_ms = int(self.url.lease_ttl * 1000)
        reply = await self._call("RENEW", self.host, ttl_ms, ttl_ms, *pairs)
        self.hosts = max(1, int(reply[0]))
        self.all_contended = bool(int(reply[1]))
        nlost = int(reply[2])
        lost = set(reply[3:3 + nlost])
        self.contended = set(reply[3 + nlost:])
        if lost:
            shrunk = self.ledger.lose(lost)
            log.warning("lost %s slots in Redis (expired or Redis restarted) on %s",
                        len(lost), ", ".join(sorted(shrunk)))

    async def _allocate(self) -> None:
        asks, gives = self.ledger.plan(self.table.demand(), contended=self.contended,
                                       all_contended=self.all_contended)
        if gives:
            pairs: list[str] = []
            for origin, n in gives.items():
                for member in self.ledger.take(origin, n):
                    pairs += [origin, member]
            await self._call("RELEASE", *pairs)
        starved = False
        cap_total, cap_host = (-1 if c is None else c for c in self.caps)
        ttl_ms = int(self.url.lease_ttl * 1000)
        for ask in asks:
            reply = await self._call("ACQUIRE", self.host, ask.origin, ask.want, ask.need,
                                     cap_host, cap_total, ttl_ms, ttl_ms)
            granted = int(reply[0])
            self.ledger.add(ask.origin, [str(m) for m in reply[1:]])
            if granted < ask.need:
                starved = True
                self.table.saturated.add(ask.origin)
            else:
                self.table.saturated.discard(ask.origin)
            if granted:
                self.server._granted(self.table.serve())
        self.starved = starved
        if not asks:
            self.table.saturated.clear()

    # --- breakers ----------------------------------------------------------------------------
    async def _flush_breakers(self) -> None:
        reports, results = self.breakers.take_outbox()
        for key, rep in reports.items():
            cfg = rep.config
            await self._call("BREAKER_REPORT", key, cfg.failure_threshold,
                             int(cfg.recovery_timeout * 1000), BREAKER_KEEP_MS,
                             int(rep.force_open), *rep.codes)
            self._next_poll = 0.0  # learn the result at once
        for res in results:
            cfg = res.config
            await self._call("BREAKER_RESULT", res.key, self.host, res.verdict,
                             cfg.success_threshold, int(cfg.recovery_timeout * 1000),
                             BREAKER_KEEP_MS)
            self._next_poll = 0.0

    async def _poll_breakers(self) -> None:
        reply = await self._call("BREAKER_POLL")
        now = self._now()
        redis_now = int(reply[0])
        view: dict[str, tuple[float, bool]] = {}
        for i in range(1, len(reply) - 2, 3):
            until_ms = int(reply[i + 1])
            view[str(reply[i])] = (now + (until_ms - redis_now) / 1000, bool(int(reply[i + 2])))
        for key in self.breakers.set_remote(view, now):
            self.server._publish_breaker(key, now)

    def probe(self, ch: _Channel, msg: ProbeAcquire, config: BreakerConfig) -> None:
        """Answer a worker's ProbeAcquire: one probe per host locally, one fleet-wide via Redis."""
        now = self._now()
        granted = self.breakers.acquire_probe(ch.conn, msg.key, config, now)
        if not granted or self.mode != "redis" or not self.breakers.needs_remote_probe(
                ch.conn, msg.key, now):
            ch.send(ProbeReply(msg.req, granted))
            self.server._publish_breaker(msg.key, now)
            return
        task = asyncio.get_running_loop().create_task(self._remote_probe(ch, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _remote_probe(self, ch: _Channel, msg: ProbeAcquire) -> None:
        try:
            code = int(await self._call("BREAKER_PROBE", msg.key, self.host, PROBE_TTL_MS))
        except (RedisError, OSError, TimeoutError):
            code = 1  # Redis gone: the local breaker decides, as in fallback
        now = self._now()
        if ch.closed:
            if code == 2:
                self.breakers.remote_probe_won(ch.conn, msg.key)
                self.breakers.drop(ch.conn, now)
            return
        if code == 2:
            self.breakers.remote_probe_won(ch.conn, msg.key)
        elif code == 0:
            self.breakers.remote_probe_lost(ch.conn, msg.key, now)
        ch.send(ProbeReply(msg.req, code != 0))
        self.server._publish_breaker(msg.key, now)

    # --- lifecycle -------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """A clean stop: give every slot back and leave the fleet (best effort, bounded)."""
        for task in list(self._tasks):
            task.cancel()
        if self._client is None:
            return
        if self.mode == "redis":
            pairs = [x for pair in self.ledger.take_all() for x in pair]
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                if pairs:
                    await self._call("RELEASE", *pairs)
                await self._call("LEAVE", self.host, *self.table.demand())
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(OP_TIMEOUT):
                await self._client.aclose()

    def status(self) -> dict[str, object]:
        now = self._now()
        return {
            "kind": "redis",
            "url": self.url.display,
            "fleet": self.url.fleet,
            "mode": self.mode,
            "host": self.host,
            "hosts": self.hosts,
            "block": self.url.block,
            "lease_ttl": self.url.lease_ttl,
            "held": self.ledger.holdings(),
            "held_total": self.ledger.total,
            "saturated": sorted(self.table.saturated),
            "local_caps": list(self.table.fleet_caps if self.mode == "redis"
                               else (self.table.max_total, self.table.max_per_host)),
            "breakers": self.breakers.remote_snapshot(now),
        }
