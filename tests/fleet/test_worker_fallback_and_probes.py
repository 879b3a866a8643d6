"""Worker side: the fallback queue, the fleet probe under cancellation, and a
stopped coordinator (fleet.md §5 and §7, docs/fleet.md "What happens when
things fail"). Real coordinator and worker processes, loopback only."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from hyperhttp import PoolTimeout
from hyperhttp.shared import Coordinator, connect_backend
from hyperhttp.shared._protocol import ProbeReply, StatusQuery

from .conftest import WorkerProc, status, wait_for

Spawn = Callable[..., list[WorkerProc]]
Launch = Callable[..., Coordinator]
ORIGIN = "svc.fleet.test:443"
KEY = "upstream.fleet.test:443"


async def _until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


def _kill(coord: Coordinator) -> None:
    os.kill(coord.pid, signal.SIGKILL)
    coord.stop()  # reaps it


# --- 1. fallback: per-process limits, FIFO, no lost wake-up ---------------------------------
def test_fallback_serves_waiters_for_one_host_in_order(launch: Launch, spawn_workers: Spawn) -> None:
    coord = launch(max_connections=8, max_connections_per_host=1)
    (w,) = spawn_workers(coord.address, 1)
    w.send("acquire", "first", ORIGIN, 5, None)
    w.expect("granted", "first")
    _kill(coord)
    wait_for(lambda: w.info()["connected"] is False)
    assert w.info()["caps"] == [8, 1]
    # No timeout: a waiter that is never woken hangs (the test then fails on expect).
    tags = ["w1", "w2", "w3"]
    for tag in tags:
        w.send("acquire", tag, ORIGIN, None, None)
    assert not w.has("granted", wait=0.2)
    holder = "first"
    for i, tag in enumerate(tags):
        w.send("release", holder)
        w.expect("granted", tag, timeout=3)
        for later in tags[i + 1:]:
            assert not w.has("granted", later)  # one slot, handed on in arrival order
        holder = tag
    w.send("release", holder)
    w.expect("released", holder)
    assert w.info()["leases"] == 0


async def test_fallback_waiter_cancelled_after_its_wakeup_passes_the_slot_on(
    launch: Launch,
) -> None:
    coord = launch(max_connections_per_host=1)
    backend = connect_backend(coord.address)
    try:
        held = await backend.acquire(ORIGIN, timeout=2)
        _kill(coord)
        await _until(lambda: not backend.is_connected())
        b = asyncio.ensure_future(backend.acquire(ORIGIN, timeout=None))
        c = asyncio.ensure_future(backend.acquire(ORIGIN, timeout=None))
        await asyncio.sleep(0.05)
        backend.release(held)  # the slot goes to b ...
        b.cancel()  # ... whose request is cancelled before it runs
        lease = await asyncio.wait_for(c, 2)
        with pytest.raises(asyncio.CancelledError):
            await b
        assert backend.leases_held == {lease.id: ORIGIN}
        backend.release(lease)
        assert backend.leases_held == {}
    finally:
        await backend.aclose()


async def test_fallback_cancellation_storm_serves_everyone_in_order(launch: Launch) -> None:
    coord = launch(max_connections_per_host=1)
    backend = connect_backend(coord.address)
    rng = random.Random(7)
    served: list[int] = []
    errors: list[str] = []
    over_cap: list[int] = []

    async def one(i: int) -> None:
        try:
            lease = await backend.acquire(ORIGIN, timeout=2)
        except PoolTimeout:
            errors.append(f"{i}: PoolTimeout")
            return
        try:
            served.append(i)
            if len(backend.leases_held) != 1:
                over_cap.append(i)
            await asyncio.sleep(0)
        finally:
            backend.release(lease)

    try:
        first = await backend.acquire(ORIGIN, timeout=2)
        _kill(coord)
        await _until(lambda: not backend.is_connected())
        tasks = [asyncio.ensure_future(one(i)) for i in range(150)]
        await asyncio.sleep(0)
        backend.release(first)
        for _ in range(60):
            await asyncio.sleep(rng.random() * 0.002)
            rng.choice(tasks).cancel()
        _, pending = await asyncio.wait(tasks, timeout=5)
        assert not pending, "waiters stuck with a free slot"
        cancelled = {i for i, t in enumerate(tasks) if t.cancelled()}
        assert errors == []
        assert over_cap == []
        assert served == sorted(served)  # FIFO
        assert set(served) | cancelled == set(range(150))
        assert backend.leases_held == {}
        assert "local_waiting=0" in repr(backend)
    finally:
        await backend.aclose()


# --- 2. the fleet probe is never stranded by a cancelled request ------------------------------
async def _probe_from(worker: WorkerProc, within: float = 3.0) -> bool:
    """Ask `worker` for the probe until granted (the give-back is asynchronous)."""
    end = time.monotonic() + within
    while True:
        reply: list[Any] = await asyncio.to_thread(worker.call, "probe", KEY)
        if reply[2] or time.monotonic() > end:
            return bool(reply[2])
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("when", ["before_the_reply", "after_the_reply"])
async def test_a_probe_granted_to_a_cancelled_request_is_given_back(
    when: str, launch: Launch, spawn_workers: Spawn
) -> None:
    coord = launch()
    a = connect_backend(coord.address)
    a.configure_breakers(failure_threshold=1, recovery_timeout=0.3, success_threshold=1)
    task: asyncio.Future[bool] | None = None
    if when == "after_the_reply":
        on_message = a._on_message

        def cancel_on_reply(msg: Any) -> None:
            on_message(msg)  # the grant is in; its caller has not run yet
            if isinstance(msg, ProbeReply) and task is not None:
                task.cancel()

        a._on_message = cancel_on_reply  # type: ignore[method-assign]
    (b,) = await asyncio.to_thread(spawn_workers, coord.address, 1)
    b.send("breakers", 1, 0.3, 1)
    try:
        assert await a.ensure()
        a.record_outcome(KEY, True, False)  # opens the breaker fleet-wide
        await _until(lambda: a.breaker_state(KEY) == ("half_open", 0.0))
        if when == "before_the_reply":
            os.kill(coord.pid, signal.SIGSTOP)  # the ProbeAcquire stays unanswered
        try:
            task = asyncio.ensure_future(a.breaker_acquire_probe(KEY))
            await _until(lambda: task.done() or any(
                kind == "probe" for kind, _, _ in a._pending.values()))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            os.kill(coord.pid, signal.SIGCONT)
        # A round trip on a's channel: the coordinator has answered its ProbeAcquire.
        assert await a.request("status", StatusQuery) is not None
        assert await _probe_from(b), "the probe is stranded: the breaker stays shut"
        assert a.is_connected()
    finally:
        await a.aclose()


async def test_a_lookup_handed_to_a_cancelled_request_is_handed_back(
    launch: Launch, spawn_workers: Spawn
) -> None:
    """The coordinator told `a` to resolve, but `a` had left: the others must
    not wait for its answer (up to the coordinator's RESOLVE_TIMEOUT, 10 s)."""
    coord = launch()
    a = connect_backend(coord.address)
    (b,) = await asyncio.to_thread(spawn_workers, coord.address, 1)
    host = "gone.fleet.test"

    async def unused(host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
        raise AssertionError("the request was cancelled before it could resolve")

    try:
        assert await a.ensure()
        os.kill(coord.pid, signal.SIGSTOP)  # the Resolve stays unanswered
        try:
            task = asyncio.ensure_future(a.dns.resolve(host, 443, unused))
            await _until(lambda: any(kind == "resolve" for kind, _, _ in a._pending.values()))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            os.kill(coord.pid, signal.SIGCONT)
        assert await a.request("status", StatusQuery) is not None  # "go" came to a
        start = time.monotonic()
        b.send("resolve", "r", host, 443, 0.0)
        event = await asyncio.to_thread(b.expect, "resolved", "r", 5.0)
        assert event[2:] == [["127.0.0.9"], 1]  # b resolved it itself, at once
        assert time.monotonic() - start < 2.0
    finally:
        await a.aclose()


# --- 3. a stopped coordinator holds no request past the heartbeat -----------------------------
def test_a_stopped_coordinator_holds_no_probe_or_lookup_past_the_heartbeat(
    launch: Launch, spawn_workers: Spawn
) -> None:
    coord = launch()
    (w,) = spawn_workers(coord.address, 1)
    assert w.call("connect")[2] is True  # workers join lazily
    w.send("breakers", 1, 0.3, 1)
    w.send("outcome", KEY, True, False)
    wait_for(lambda: (w.call("breaker", KEY)[2] or [""])[0] == "half_open")
    os.kill(coord.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        w.send("probe", "p", KEY)
        w.send("resolve", "r", "stopped.fleet.test", 443, 0.0)
        # The worker falls back: its own breaker decides, it resolves itself.
        assert w.expect("probe", "p", timeout=8)[2] is True
        probe_took = time.monotonic() - start
        assert w.expect("resolved", "r", timeout=8)[2] == ["127.0.0.9"]
        resolve_took = time.monotonic() - start
        assert w.info()["connected"] is False
    finally:
        os.kill(coord.pid, signal.SIGCONT)
    assert probe_took < 4.0 and resolve_took < 4.0  # the heartbeat deadline is 3 s
    # Back: the worker rejoins, and the probe granted to its old connection is returned.
    wait_for(lambda: w.info()["connected"] is True, timeout=5)
    wait_for(lambda: not status(coord.address)["breakers"].get(KEY, {}).get("probe_in_flight"))
