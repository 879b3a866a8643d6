"""The worker backend in the test process itself (runs on asyncio and uvloop)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from hyperhttp import PoolTimeout
from hyperhttp.shared import Coordinator, connect_backend, fleet_status, stop_coordinator
from hyperhttp.shared._runtime import paths_for


async def _until(predicate: object, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_cancelled_and_timed_out_waiters_strand_nothing(
    loop_name: str, short_tmp: Path
) -> None:
    coord = Coordinator.launch(runtime_dir=short_tmp / "c", max_connections_per_host=1)
    backend = connect_backend(coord.address)
    try:
        held = await backend.acquire("svc:1", timeout=1)
        with pytest.raises(PoolTimeout):
            await backend.acquire("svc:1", timeout=0.1)
        # Cancel waiters at many points, including while their grant is in flight.
        for i in range(30):
            waiter = asyncio.ensure_future(backend.acquire("svc:1", timeout=5))
            await asyncio.sleep(0)
            if i % 2:
                backend.release(held)
                await asyncio.sleep(0.0005 * (i % 5))
                waiter.cancel()
                try:
                    held = await waiter
                except asyncio.CancelledError:
                    held = await backend.acquire("svc:1", timeout=2)
            else:
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
        await _until(lambda: fleet_status(coord.address)["waiting"] == 0)
        st = fleet_status(coord.address)
        assert st["leases"] == 1 and st["per_host"] == {"svc:1": 1}
        assert backend.leases_held == {held.id: "svc:1"}
        backend.release(held)
        backend.release(held)  # idempotent
        await _until(lambda: fleet_status(coord.address)["leases"] == 0)
    finally:
        await backend.aclose()
        coord.stop()


async def test_auto_starts_one_coordinator_guarded_by_its_lock(
    loop_name: str, short_tmp: Path
) -> None:
    runtime = short_tmp / "auto"
    backends = [
        connect_backend("auto", runtime_dir=runtime, local_caps=(10, 3), auto_exit_when_idle=30)
        for _ in range(3)
    ]
    try:
        leases = await asyncio.gather(*(b.acquire("svc:1", timeout=10) for b in backends))
        assert all(b.is_connected() for b in backends)
        st = fleet_status(paths_for("default", runtime_dir=runtime))
        assert st["max_connections"] == 10 and st["max_connections_per_host"] == 3
        assert st["leases"] == 3
        assert {w["pid"] for w in st["workers"]} == {os.getpid()}
        for b, lease in zip(backends, leases, strict=True):
            b.release(lease)
    finally:
        for b in backends:
            await b.aclose()
        stop_coordinator(paths_for("default", runtime_dir=runtime))


async def test_forked_child_drops_the_inherited_channel(loop_name: str, short_tmp: Path) -> None:
    coord = Coordinator.launch(runtime_dir=short_tmp / "c")
    backend = connect_backend(coord.address)
    try:
        lease = await backend.acquire("svc:1", timeout=2)
        pid = os.fork()
        if pid == 0:  # the child: must hold no copy of the parent's socket
            code = 0 if not backend.is_connected() and backend.leases_held == {} else 1
            os.kill(os.getpid(), signal.SIGSTOP)  # stay alive, holding whatever it inherited
            os._exit(code)
        try:
            await backend.aclose()
            # The parent closed its channel: the coordinator sees EOF although the
            # stopped child still exists, so the child held no copy of the socket.
            await _until(lambda: fleet_status(coord.address)["leases"] == 0)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert lease.origin == "svc:1"
    finally:
        await backend.aclose()
        coord.stop()


async def test_the_table_counts_a_joining_worker_at_once(loop_name: str, short_tmp: Path) -> None:
    """A worker that loses the coordinator shares the fleet caps by the
    worker count it read last from the table (fallback_caps), so a worker
    that joined must be counted there at once, not at the next heartbeat
    tick (250 ms)."""
    coord = Coordinator.launch(runtime_dir=short_tmp / "c", max_connections=8,
                               max_connections_per_host=4)
    a = connect_backend(coord.address)
    b = connect_backend(coord.address)
    try:
        a_lease = await a.acquire("svc:1", timeout=2)
        b_lease = await b.acquire("svc:1", timeout=2)  # answered after b was counted
        assert a.reader is not None
        header = a.reader.header()
        assert header is not None and header.workers == 2
        a.release(a_lease)
        b.release(b_lease)
    finally:
        await b.aclose()
        await a.aclose()
        coord.stop()
