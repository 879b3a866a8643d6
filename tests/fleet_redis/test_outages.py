"""Redis stopped and restarted mid-load; unreachable at start; breakers across hosts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from hyperhttp import CoordinatorError
from hyperhttp.shared import Coordinator
from tests.fleet.conftest import ConnCounter, WorkerProc, wait_for

from .conftest import RedisServer, backend_status

Spawn = Callable[..., list[WorkerProc]]
Hosts = Callable[..., Coordinator]


def _phase(counter: ConnCounter) -> tuple[int, int]:
    """The highest counts (per port, total) since the last call; starts a new phase."""
    with counter._lock:
        out = max(counter.max_per_port.values()), counter.max_total
        counter.max_per_port = dict.fromkeys(counter.max_per_port, 0)
        counter.max_total = 0
    return out


def test_redis_stopped_and_restarted_mid_load(
    hosts: Hosts, spawn_workers: Spawn, counter: ConnCounter, redis_server: RedisServer
) -> None:
    url = redis_server.url + "?lease_ttl=2&block=2"
    coords = [hosts(n, backend=url, max_connections=9, max_connections_per_host=6)
              for n in ("h1", "h2", "h3")]
    workers = [w for c in coords for w in spawn_workers(c.address, 1)]
    for c in coords:
        wait_for(lambda c=c: backend_status(c.address)["mode"] == "redis", timeout=5)
        wait_for(lambda c=c: backend_status(c.address)["hosts"] == 3, timeout=5)
    targets = [[f"127.0.0.1:{p}", p] for p in counter.ports]
    for i, w in enumerate(workers):
        w.send("churn", f"c{i}", targets, 6, 6.0)
    time.sleep(1.0)
    # Phase 1, Redis up: the caps hold exactly.
    assert _phase(counter) == (6, 9)
    redis_server.stop()
    start = time.monotonic()
    for c in coords:
        wait_for(lambda c=c: backend_status(c.address)["mode"] == "fallback", timeout=3)
    # No host blocked on Redis: each fell back within a short timeout.
    assert time.monotonic() - start < 2.5
    st = backend_status(coords[0].address)
    assert st["local_caps"] == [3, 2]  # 9 // 3 hosts, 6 // 3 hosts
    time.sleep(1.0)
    redis_server.start()  # same port, empty: every host re-acquires what it uses
    for c in coords:
        wait_for(lambda c=c: backend_status(c.address)["mode"] == "redis", timeout=5)
    # Phase 2, the outage: a host keeps what it had open and may open up to its
    # share, so the bound is cap + (hosts - 1) * share (docs/fleet-multihost.md).
    per_host, total = _phase(counter)
    assert per_host <= 6 + 2 * 2 and total <= 9 + 2 * 3, (per_host, total)
    time.sleep(1.0)  # rejoined: connections opened in fallback have closed by now
    _phase(counter)
    results = [w.expect("churned", f"c{i}", timeout=30) for i, w in enumerate(workers)]
    assert all(r[3] == [] for r in results), results
    assert sum(r[2] for r in results) > 100
    # Phase 3, Redis back: the caps hold exactly again.
    per_host, total = _phase(counter)
    assert per_host <= 6 and total <= 9, (per_host, total)
    # Back in Redis: the slots the hosts hold are there again.
    assert b":" in redis_server.command("DBSIZE")


def test_redis_unreachable_at_start_then_joins(
    hosts: Hosts, spawn_workers: Spawn, redis_server: RedisServer
) -> None:
    redis_server.stop()
    coord = hosts("h1", backend=redis_server.url, max_connections=4, max_connections_per_host=4)
    (w,) = spawn_workers(coord.address, 1)
    # Serving at once, alone (1 host seen): the whole caps, locally.
    for i in range(4):
        w.send("acquire", f"a{i}", "svc:80", 5, None)
        w.expect("granted", f"a{i}")
    w.send("acquire", "over", "svc:80", 0.3, None)
    assert w.expect("error", "over")[2] == "PoolTimeout"
    assert backend_status(coord.address)["mode"] == "fallback"
    redis_server.start()
    wait_for(lambda: backend_status(coord.address)["mode"] == "redis", timeout=5)
    # It declared its four connections to Redis: a second host finds the origin full.
    wait_for(lambda: backend_status(coord.address)["held"] == {"svc:80": 4}, timeout=5)
    other = hosts("h2", backend=redis_server.url, max_connections=4, max_connections_per_host=4)
    (w2,) = spawn_workers(other.address, 1)
    w2.send("acquire", "b", "svc:80", 0.8, None)
    assert w2.expect("error", "b")[2] == "PoolTimeout"
    w.send("release", "a0")
    w2.send("acquire", "b2", "svc:80", 5, None)
    w2.expect("granted", "b2")


def test_bad_backend_url_refuses_to_start(hosts: Hosts) -> None:
    with pytest.raises(CoordinatorError, match="unsupported backend"):
        hosts("h1", backend="http://127.0.0.1:1/")


def test_breaker_counts_failures_across_hosts_and_one_probe_fleet_wide(
    hosts: Hosts, spawn_workers: Spawn, redis_server: RedisServer
) -> None:
    url = redis_server.url
    a = hosts("h1", backend=url)
    b = hosts("h2", backend=url)
    (wa,) = spawn_workers(a.address, 1)
    (wb,) = spawn_workers(b.address, 1)
    for c in (a, b):
        wait_for(lambda c=c: backend_status(c.address)["mode"] == "redis", timeout=5)
    key = "api.example:443"
    for w in (wa, wb):
        w.send("breakers", 3, 1.0, 1)
        w.call("connect")  # connected, thresholds set
    wa.send("outcome", key, True, False)
    wa.send("outcome", key, True, False)
    time.sleep(0.3)
    assert wa.call("breaker", key)[2][0] == "closed"  # 2 failures: neither host alone opens
    wb.send("outcome", key, True, False)  # the third, on the other host
    for w in (wa, wb):
        wait_for(lambda w=w: w.call("breaker", key)[2][0] == "open", timeout=3)
    wait_for(lambda: wa.call("breaker", key)[2][0] == "half_open", timeout=3)
    wait_for(lambda: wb.call("breaker", key)[2][0] == "half_open", timeout=3)
    # Both hosts ask for the probe at once: exactly one gets it, fleet-wide.
    wa.send("probe", "pa", key)
    wb.send("probe", "pb", key)
    got = [wa.expect("probe", "pa")[2], wb.expect("probe", "pb")[2]]
    assert sorted(got) == [False, True], got
    winner = wa if got[0] else wb
    loser = wb if got[0] else wa
    winner.send("outcome", key, False, True)  # the probe succeeded: closed for every host
    for w in (winner, loser):
        wait_for(lambda w=w: w.call("breaker", key)[2][0] == "closed", timeout=3)


def test_an_unexpected_error_in_the_redis_loop_falls_back_and_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The coordinator's Redis loop caught only the errors it expected; any
    other (a reply of an unexpected shape, an error type the client library
    adds) ended it silently and left that host on per-host limits for good.
    Now it falls back, says what happened, and rejoins. (A plain loop, as in
    the coordinator process: the client library's first connect may read
    files, which the test loop's blocking guard would take for our code.)"""
    from types import SimpleNamespace

    from hyperhttp.shared._redis import RedisFleet

    class Host:
        config = SimpleNamespace(max_connections=4, max_connections_per_host=2)

        def _clock(self) -> float:
            return time.monotonic()

        def _publish_breaker(self, key: str, now: float) -> None:
            pass

        def _granted(self, grants: object) -> None:
            pass

    modes: list[str] = []

    async def scenario() -> None:
        fleet = RedisFleet(Host(), redis_server.url)  # type: ignore[arg-type]
        real_pass = fleet._pass
        failures = [KeyError("a reply without the field it should have")]

        async def flaky_pass() -> None:
            if failures:
                raise failures.pop()
            await real_pass()

        fleet._pass = flaky_pass  # type: ignore[method-assign]
        task = asyncio.ensure_future(fleet.run())
        try:
            async with asyncio.timeout(5):
                while failures or fleet.mode != "fallback":
                    await asyncio.sleep(0.005)
                modes.append(fleet.mode)
                while fleet.mode != "redis":
                    await asyncio.sleep(0.01)
                modes.append(fleet.mode)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await fleet.aclose()

    caplog.set_level(logging.ERROR, logger="hyperhttp.shared.coordinator")
    asyncio.run(scenario())
    assert modes == ["fallback", "redis"]
    [record] = caplog.records
    assert "unexpected KeyError; per-host limits until it is back" in record.getMessage()
