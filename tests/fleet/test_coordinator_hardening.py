"""The coordinator keeps the caps through restarts, lost runtime files and lying peers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hyperhttp import CoordinatorError
from hyperhttp.shared import Coordinator
from hyperhttp.shared._protocol import (
    Acquire,
    Declare,
    DnsStore,
    Resolve,
    ResolveReply,
    StatusQuery,
    decode_from_coordinator,
    encode,
)

from .conftest import ConnCounter, WorkerProc, is_dropped, joined, status, wait_for

Spawn = Callable[..., list[WorkerProc]]


def _reply(sock: socket.socket) -> object:
    head = sock.recv(4, socket.MSG_WAITALL)
    return decode_from_coordinator(sock.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL))


# --- restarts --------------------------------------------------------------------------------
def test_a_clean_restart_keeps_the_cap(
    launch: Callable[..., Coordinator], spawn_workers: Spawn, counter: ConnCounter
) -> None:
    """Workers keep their connections through a clean stop too: the new
    coordinator waits for their declarations before granting anything."""
    coord = launch(max_connections=10, max_connections_per_host=2)
    port = counter.ports[0]
    origin = f"127.0.0.1:{port}"
    (a,) = spawn_workers(coord.address, 1)
    for i in range(2):
        a.send("acquire", f"h{i}", origin, 5, port)
        a.expect("granted", f"h{i}")
    coord.stop()  # SIGTERM: a clean stop
    time.sleep(1.5)  # the worker's reconnect backoff grows to its longest meanwhile
    coord2 = launch(max_connections=10, max_connections_per_host=2)
    newcomer = joined(coord2.address)  # asks before the worker is back
    newcomer.sendall(encode(Acquire(1, origin)))
    newcomer.settimeout(3.0)  # past the grace period
    with pytest.raises(TimeoutError):
        _reply(newcomer)  # never granted: the worker's two were declared first
    newcomer.close()
    assert a.info()["connected"] is True
    assert status(coord2.address)["per_host"] == {origin: 2}
    assert counter.max_per_port[port] == 2


def test_the_first_start_at_a_path_has_no_grace(launch: Callable[..., Coordinator]) -> None:
    coord = launch()
    assert status(coord.address)["grace"] is False


# --- the runtime directory ------------------------------------------------------------------
def test_a_removed_runtime_dir_is_taken_back(
    launch: Callable[..., Coordinator], spawn_workers: Spawn, short_tmp: Path
) -> None:
    coord = launch(max_connections=10, max_connections_per_host=2)
    (w,) = spawn_workers(coord.address, 1)
    for i in range(2):
        w.send("acquire", f"h{i}", "svc:1", 5, None)
        w.expect("granted", f"h{i}")
    shutil.rmtree(short_tmp / "coord")
    wait_for(lambda: os.path.lexists(coord.address), timeout=3)
    with pytest.raises(CoordinatorError):
        Coordinator.launch(runtime_dir=short_tmp / "coord", max_connections_per_host=2, timeout=5)
    st = status(coord.address)
    assert st["pid"] == coord.pid
    assert st["per_host"] == {"svc:1": 2}
    assert w.info()["connected"] is True


def test_a_replaced_coordinator_steps_down_and_leaves_the_socket(
    launch: Callable[..., Coordinator], short_tmp: Path
) -> None:
    old = launch()
    os.kill(old.pid, signal.SIGSTOP)  # cannot notice anything until resumed
    try:
        shutil.rmtree(short_tmp / "coord")
        new = Coordinator.launch(runtime_dir=short_tmp / "coord", timeout=5)
    finally:
        os.kill(old.pid, signal.SIGCONT)
    try:
        wait_for(lambda: not old.is_running(), timeout=3)  # stepped down by itself
        assert os.path.lexists(new.address)
        assert status(new.address)["pid"] == new.pid
    finally:
        new.stop()


# --- unsolicited messages -----------------------------------------------------------------------
def test_an_unsolicited_dns_answer_drops_the_sender(
    launch: Callable[..., Coordinator], spawn_workers: Spawn
) -> None:
    coord = launch()
    evil = joined(coord.address)
    evil.sendall(encode(DnsStore("api.internal", 443, [(2, "203.0.113.66", 443, 0, 0)], 3600.0)))
    assert is_dropped(evil, 1.0)
    evil.close()
    assert status(coord.address)["dns"] == {}
    (w,) = spawn_workers(coord.address, 1)
    w.send("resolve", "r", "api.internal", 443, 0.0)
    assert w.expect("resolved", "r")[2] == ["127.0.0.9"]


def test_only_the_asked_resolver_is_heard(launch: Callable[..., Coordinator]) -> None:
    coord = launch()
    resolver = joined(coord.address)
    resolver.sendall(encode(Resolve(1, "api.internal", 443)))
    reply = _reply(resolver)
    assert isinstance(reply, ResolveReply) and reply.addresses is None  # "go ahead"
    # Another connection that also asked, but was not asked to resolve.
    waiter = joined(coord.address)
    waiter.sendall(encode(Resolve(1, "api.internal", 443)))
    waiter.sendall(encode(DnsStore("api.internal", 443, [(2, "203.0.113.66", 443, 0, 0)], 60.0)))
    resolver.sendall(encode(DnsStore("api.internal", 443, [(2, "127.0.0.9", 443, 0, 0)], 60.0)))
    # The waiter is answered by the resolver; its own copy of an answer changes nothing.
    reply = _reply(waiter)
    assert isinstance(reply, ResolveReply) and reply.addresses == [(2, "127.0.0.9", 443, 0, 0)]
    assert not is_dropped(waiter, wait=0.3)
    assert status(coord.address)["dns"]["api.internal:443"]["addresses"] == ["127.0.0.9"]
    stranger = joined(coord.address)
    stranger.sendall(encode(DnsStore("api.internal", 443, [(2, "203.0.113.66", 443, 0, 0)], 60.0)))
    assert is_dropped(stranger, 1.0)
    assert status(coord.address)["dns"]["api.internal:443"]["addresses"] == ["127.0.0.9"]
    for sock in (resolver, waiter, stranger):
        sock.close()


def test_a_late_declaration_drops_the_sender(
    launch: Callable[..., Coordinator], spawn_workers: Spawn
) -> None:
    coord = launch(max_connections=100, max_connections_per_host=4)
    evil = joined(coord.address)
    evil.sendall(encode(StatusQuery(1)))
    evil.sendall(encode(Declare([(i, "svc.internal:443") for i in range(1, 5)])))
    assert is_dropped(evil, 1.0)
    evil.close()
    wait_for(lambda: status(coord.address)["leases"] == 0, timeout=1)
    (w,) = spawn_workers(coord.address, 1)
    w.send("acquire", "a", "svc.internal:443", 2, None)
    w.expect("granted", "a")


def test_a_declaration_first_thing_is_rejoining(launch: Callable[..., Coordinator]) -> None:
    # Even beyond the caps: after a restart with lower caps, a worker may
    # really hold more than one worker may now be granted.
    coord = launch(max_connections=100, max_connections_per_host=4)
    sock = joined(coord.address)
    sock.sendall(encode(Declare([(i, "svc.internal:443") for i in range(1, 7)])))
    wait_for(lambda: status(coord.address)["per_host"] == {"svc.internal:443": 6}, timeout=2)
    assert not is_dropped(sock, wait=0.2)
    sock.close()
