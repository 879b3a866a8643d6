"""Connection caps across real worker processes: caps, FIFO, shedding, killed workers."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from hyperhttp.shared import Coordinator

from .conftest import ConnCounter, WorkerProc, status, wait_for

Spawn = Callable[..., list[WorkerProc]]


def test_caps_hold_server_side_with_many_workers(
    launch: Callable[..., Coordinator], spawn_workers: Spawn, counter: ConnCounter
) -> None:
    coord = launch(max_connections=5, max_connections_per_host=3)
    workers = spawn_workers(coord.address, 4)
    targets = [[f"127.0.0.1:{p}", p] for p in counter.ports]
    for i, w in enumerate(workers):
        w.send("churn", f"c{i}", targets, 8, 2.0)
    results = [w.expect("churned", f"c{i}", timeout=30) for i, w in enumerate(workers)]
    assert all(r[3] == [] for r in results), results
    done = sum(r[2] for r in results)
    assert done > 100, results  # the fleet did real work through the coordinator
    # Counted by the server: never above the caps, and the caps were reached.
    assert max(counter.max_per_port.values()) == 3, counter.max_per_port
    assert counter.max_total <= 5, counter.max_total
    st = status(coord.address)
    assert st["leases"] == 0 and st["waiting"] == 0


def test_waiters_are_served_fifo_across_processes(
    launch: Callable[..., Coordinator], spawn_workers: Spawn
) -> None:
    coord = launch(max_connections=10, max_connections_per_host=1)
    a, b, c, d = spawn_workers(coord.address, 4)
    a.send("acquire", "a", "svc:80", 10, None)
    a.expect("granted", "a")
    for n, w in enumerate((b, c, d), start=1):
        w.send("acquire", w.pid, "svc:80", 10, None)
        wait_for(lambda n=n: status(coord.address)["waiting"] == n)
    order = [b, c, d]
    holder, holder_tag = a, "a"
    for i, nxt in enumerate(order):
        holder.send("release", holder_tag)
        nxt.expect("granted", nxt.pid)
        for later in order[i + 1 :]:
            assert not later.has("granted", later.pid, wait=0.2)
        holder, holder_tag = nxt, nxt.pid
    d.send("release", d.pid)
    wait_for(lambda: status(coord.address)["leases"] == 0)


def test_idle_connection_elsewhere_is_shed_for_a_waiter(
    launch: Callable[..., Coordinator], spawn_workers: Spawn, counter: ConnCounter
) -> None:
    coord = launch(max_connections=10, max_connections_per_host=1)
    a, b = spawn_workers(coord.address, 2)
    port = counter.ports[0]
    origin = f"127.0.0.1:{port}"
    a.send("acquire", "x", origin, 10, port)
    a.expect("granted", "x")
    a.send("idle", "x")
    start = time.monotonic()
    b.send("acquire", "y", origin, 5, port)
    b.expect("granted", "y", timeout=5)
    assert time.monotonic() - start < 1.0
    assert a.expect("shed")[1:] == [origin, True]
    assert counter.max_per_port[port] == 1
    st = status(coord.address)
    assert st["per_host"] == {origin: 1}


def test_busy_connections_are_not_shed(
    launch: Callable[..., Coordinator], spawn_workers: Spawn
) -> None:
    coord = launch(max_connections=10, max_connections_per_host=1)
    a, b = spawn_workers(coord.address, 2)
    a.send("acquire", "x", "svc:1", 10, None)
    a.expect("granted", "x")
    b.send("acquire", "y", "svc:1", 0.6, None)
    assert a.expect("shed")[1:] == ["svc:1", False]  # asked, had nothing idle
    assert b.expect("error", "y")[2] == "PoolTimeout"
    assert status(coord.address)["leases"] == 1


def test_sigkilled_workers_slots_come_back_within_a_second(
    launch: Callable[..., Coordinator], spawn_workers: Spawn, counter: ConnCounter
) -> None:
    coord = launch(max_connections=6, max_connections_per_host=3)
    (survivor,) = spawn_workers(coord.address, 1)
    assert survivor.call("connect")[2] is True
    port = counter.ports[0]
    origin = f"127.0.0.1:{port}"
    rng = random.Random(1234)
    rounds = 0
    while rounds < 20:
        victims = spawn_workers(coord.address, 4)
        for v in victims:
            rounds += 1
            # Leases held, one waiting, and a kill at a random moment among them.
            for i in range(4):
                v.send("acquire", f"k{i}", origin, 10, port)
            if rounds % 2:
                # Every other round: certainly holding the host's 3 slots, 1 waiting.
                for i in range(3):
                    v.expect("granted", f"k{i}")
                wait_for(lambda: status(coord.address)["waiting"] == 1)
                assert status(coord.address)["leases"] == 3
            time.sleep(rng.random() * 0.03)
            v.kill()
            took = wait_for(lambda: status(coord.address)["leases"] == 0, timeout=2.0)
            assert took < 1.0
            st = status(coord.address)
            assert st["waiting"] == 0 and st["per_host"] == {}
            assert [w["pid"] for w in st["workers"]] == [survivor.pid]
        # The survivor can still take every slot for the host: nothing leaked.
        for i in range(3):
            survivor.send("acquire", f"s{rounds}-{i}", origin, 2, None)
        for i in range(3):
            survivor.expect("granted", f"s{rounds}-{i}")
        for i in range(3):
            survivor.send("release", f"s{rounds}-{i}")
        wait_for(lambda: status(coord.address)["leases"] == 0)
    assert counter.max_per_port[port] <= 3
