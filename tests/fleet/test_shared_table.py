"""DNS answers and breaker states shared through the coordinator's table."""

from __future__ import annotations

import time
from collections.abc import Callable

from hyperhttp.shared import Coordinator

from .conftest import WorkerProc, status, wait_for

Spawn = Callable[..., list[WorkerProc]]


def test_one_dns_lookup_per_name_per_ttl_fleet_wide(
    launch: Callable[..., Coordinator], spawn_workers: Spawn
) -> None:
    coord = launch(dns_ttl=1.0)
    workers = spawn_workers(coord.address, 3)
    for w in workers:
        assert w.call("connect")[2] is True
    # Concurrent lookups of one name: one resolver call in the whole fleet.
    for w in workers:
        w.send("resolve", "r1", "fleet.test", 443, 0.3)
    replies = [w.expect("resolved", "r1") for w in workers]
    assert all(r[2] == ["127.0.0.9"] for r in replies)
    assert sum(r[3] for r in replies) == 1
    # Later lookups are served from shared memory.
    for w in workers:
        w.send("resolve", "r2", "fleet.test", 443, 0.0)
    assert sum(w.expect("resolved", "r2")[3] for w in workers) == 1
    assert "fleet.test:443" in status(coord.address)["dns"]
    # After dns_ttl the name is looked up again, once.
    time.sleep(1.1)
    wait_for(lambda: status(coord.address)["dns"] == {})
    for w in workers:
        w.send("resolve", "r3", "fleet.test", 443, 0.2)
    # (each worker reports its own running total: 1 from the first round, +1 now)
    assert sum(w.expect("resolved", "r3")[3] for w in workers) == 2


def test_breaker_counts_fleet_wide_and_lets_one_probe_through(
    launch: Callable[..., Coordinator], spawn_workers: Spawn
) -> None:
    coord = launch()
    workers = spawn_workers(coord.address, 3)
    key = "down.test:443"
    for w in workers:
        w.send("breakers", 3, 0.6, 1)
        assert w.call("connect")[2] is True
        assert w.call("breaker", key)[2] == ["closed", 0.0]
    # One failure from each worker: 3 in a row fleet-wide opens it for everyone.
    for w in workers[:2]:
        w.send("outcome", key, True, False)
    wait_for(lambda: status(coord.address)["breakers"].get(key, {}).get("failures") == 2)
    assert all(w.call("breaker", key)[2] == ["closed", 0.0] for w in workers)
    workers[2].send("outcome", key, True, False)
    wait_for(lambda: workers[0].call("breaker", key)[2][0] == "open")
    for w in workers:
        state, remaining = w.call("breaker", key)[2]
        assert state == "open" and 0.0 < remaining <= 0.6
    # Stale outcomes while open change nothing.
    workers[0].send("outcome", key, False, False)
    time.sleep(0.7)
    assert all(w.call("breaker", key)[2] == ["half_open", 0.0] for w in workers)
    # Half-open: exactly one probe fleet-wide.
    for w in workers:
        w.send("probe", "p", key)
    granted = [w.expect("probe", "p")[2] for w in workers]
    assert granted.count(True) == 1
    prober = workers[granted.index(True)]
    assert status(coord.address)["breakers"][key]["probe_in_flight"] is True
    prober.send("outcome", key, False, True)  # the probe succeeded
    wait_for(lambda: all(w.call("breaker", key)[2] == ["closed", 0.0] for w in workers))
    assert key not in status(coord.address)["breakers"]


def test_probe_of_a_killed_worker_is_released(
    launch: Callable[..., Coordinator], spawn_workers: Spawn
) -> None:
    coord = launch()
    a, b = spawn_workers(coord.address, 2)
    key = "flaky.test:80"
    for w in (a, b):
        w.send("breakers", 1, 0.2, 1)
        assert w.call("connect")[2] is True
    a.send("outcome", key, True, False)
    wait_for(lambda: b.call("breaker", key)[2][0] == "open")
    time.sleep(0.25)
    a.send("probe", "p", key)
    assert a.expect("probe", "p")[2] is True
    b.send("probe", "p", key)
    assert b.expect("probe", "p")[2] is False
    a.kill()
    wait_for(lambda: not status(coord.address)["breakers"][key]["probe_in_flight"])
    b.send("probe", "p2", key)
    assert b.expect("probe", "p2")[2] is True
