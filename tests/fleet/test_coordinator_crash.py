"""The coordinator dies: workers fall back, warn once, rejoin, and the new one rebuilds."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from hyperhttp.shared import Coordinator

from .conftest import ConnCounter, WorkerProc, status, wait_for

Spawn = Callable[..., list[WorkerProc]]


def test_sigkill_coordinator_fallback_then_rejoin(
    launch: Callable[..., Coordinator], spawn_workers: Spawn, counter: ConnCounter
) -> None:
    coord = launch(max_connections=8, max_connections_per_host=4)
    a, b = spawn_workers(coord.address, 2)
    p1, p2 = counter.ports
    o1, o2 = f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"
    for w in (a, b):
        for i in range(2):
            w.send("acquire", f"h{i}", o1, 5, p1)
        for i in range(2):
            w.expect("granted", f"h{i}")
    assert status(coord.address)["per_host"] == {o1: 4}

    os.kill(coord.pid, signal.SIGKILL)
    coord.stop()  # reaps it
    # Per-process caps now: 8 // 2 workers = 4 total, 4 // 2 = 2 per host.
    for w in (a, b):
        w.send("acquire", "over", o1, 0.5, None)
        assert w.expect("error", "over")[2] == "PoolTimeout"
        w.send("acquire", "other", o2, 5, p2)
        w.expect("granted", "other")
        info = w.info()
        assert info["connected"] is False
        assert info["caps"] == [4, 2]
        assert info["leases"] == 3
        assert len(info["warnings"]) == 1 and "per-process limits" in info["warnings"][0]
    assert counter.max_per_port[p1] == 4

    # A new coordinator (same directory): workers rejoin and re-declare what they hold.
    coord2 = launch(max_connections=8, max_connections_per_host=4)
    wait_for(lambda: all(w.info()["connected"] for w in (a, b)), timeout=5)
    st = status(coord2.address)
    assert st["leases"] == 6
    assert st["per_host"] == {o1: 4, o2: 2}
    assert sorted(w["pid"] for w in st["workers"]) == sorted([a.pid, b.pid])
    # The rebuilt table is enforced: o1 is full fleet-wide, o2 has room for 2 more.
    a.send("acquire", "full", o1, 0.5, None)
    assert a.expect("error", "full")[2] == "PoolTimeout"
    b.send("acquire", "room", o2, 5, None)
    b.expect("granted", "room")
    for w in (a, b):
        assert len(w.info()["warnings"]) == 1  # one outage, one warning


def test_required_coordinator_raises_instead_of_falling_back(
    launch: Callable[..., Coordinator], spawn_workers: Spawn
) -> None:
    coord = launch(max_connections=8, max_connections_per_host=4)
    (w,) = spawn_workers(coord.address, 1, required=True)
    w.send("acquire", "ok", "svc:1", 5, None)
    w.expect("granted", "ok")
    coord.stop()
    wait_for(lambda: w.info()["connected"] is False)
    w.send("acquire", "down", "svc:1", 5, None)
    assert w.expect("error", "down")[2] == "CoordinatorError"


def test_nothing_running_falls_back_with_one_warning(
    short_tmp: object, spawn_workers: Spawn
) -> None:
    address = f"{short_tmp}/nobody/coordinator.sock"
    (w,) = spawn_workers(address, 1)
    for i in range(3):
        w.send("acquire", f"x{i}", "svc:1", 5, None)
        w.expect("granted", f"x{i}")
    info = w.info()
    assert info["connected"] is False and info["leases"] == 3
    assert len(info["warnings"]) == 1
    (r,) = spawn_workers(address, 1, required=True)
    r.send("acquire", "x", "svc:1", 5, None)
    assert r.expect("error", "x")[2] == "CoordinatorError"
