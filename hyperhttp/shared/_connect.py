"""Finding a coordinator: the worker-side factory, status and stop."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from .._exceptions import CoordinatorError
from ._launch import spawn
from ._protocol import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    FrameError,
    FrameReader,
    Hello,
    StatusQuery,
    StatusReply,
    decode_from_coordinator,
    encode,
)
from ._runtime import (
    RuntimePaths,
    check_private_dir,
    check_socket,
    ensure_private_dir,
    lock_is_held,
    paths_for,
)
from ._server import peer_credentials
from ._worker import WorkerBackend, socket_path_of

__all__ = ["ENV_VAR", "connect_backend", "fleet_status", "resolve_paths", "stop_coordinator"]

ENV_VAR = "HYPERHTTP_COORDINATOR"
STATUS_TIMEOUT = 3.0


def resolve_paths(
    coordinator: Any, *, runtime_dir: str | os.PathLike[str] | None = None
) -> tuple[RuntimePaths, bool]:
    """The paths `coordinator` designates, and whether it may be auto-started.

    True: ``$HYPERHTTP_COORDINATOR``, else the "default" coordinator (never
    started for you). "auto": the "default" coordinator, started if absent.
    A string or path: that socket."""
    if coordinator is True:
        env = os.environ.get(ENV_VAR)
        if env:
            return RuntimePaths.for_socket(socket_path_of(env)), False
        return paths_for("default", runtime_dir=runtime_dir), False
    if coordinator == "auto":
        return paths_for("default", runtime_dir=runtime_dir), True
    if isinstance(coordinator, str | os.PathLike):
        return RuntimePaths.for_socket(socket_path_of(coordinator)), False
    raise TypeError("coordinator= takes True, 'auto', or a coordinator address (socket path)")


def connect_backend(
    coordinator: Any,
    *,
    required: bool = False,
    local_caps: tuple[int | None, int | None] = (None, None),
    runtime_dir: str | os.PathLike[str] | None = None,
    auto_exit_when_idle: float | None = 300.0,
) -> WorkerBackend:
    """The worker-side `FleetBackend` for ``Client(coordinator=...)``.

    Nothing is contacted until first use. `local_caps` are the client's own
    ``(max_connections, max_connections_per_host)``: they bound the fallback
    limits, and an auto-started coordinator takes them as the fleet caps.
    With `required`, an unreachable coordinator raises `CoordinatorError`
    instead of falling back to per-process limits.
    """
    paths, auto = resolve_paths(coordinator, runtime_dir=runtime_dir)
    spawner = None
    if auto:
        def spawn_if_absent() -> None:
            # One check-and-start at a time in this process (several clients
            # may start at once); across processes the coordinator's flock
            # decides.
            with _SPAWN_LOCK:
                _spawn_if_absent()

        def _spawn_if_absent() -> None:
            ensure_private_dir(paths.directory, create=True)
            key = os.fspath(paths.socket)
            _reap_spawned()
            if key in _SPAWNED or lock_is_held(paths.lock):
                return  # this process already started one, or one runs: just connect
            _SPAWNED[key] = spawn(
                paths, max_connections=local_caps[0] if local_caps[0] else 200,
                max_connections_per_host=local_caps[1] if local_caps[1] else 32,
                dns_ttl=60.0, exit_when_idle=auto_exit_when_idle, detach=True,
            )

        async def spawner() -> None:
            # Directory checks, the lock probe and the process start block:
            # off the worker's loop.
            await asyncio.to_thread(spawn_if_absent)

    return WorkerBackend(paths, required=required, local_caps=local_caps, spawner=spawner)


# Coordinators this process auto-started, kept so they can be reaped (no zombies,
# no warnings about a Popen dropped while its process runs).
_SPAWNED: dict[str, subprocess.Popen[bytes]] = {}
_SPAWN_LOCK = threading.Lock()


def _reap_spawned() -> None:
    for key, proc in list(_SPAWNED.items()):
        if proc.poll() is not None:
            del _SPAWNED[key]


atexit.register(_reap_spawned)


def _connect_sync(paths: RuntimePaths) -> socket.socket:
    check_private_dir(paths.directory)
    check_socket(paths.socket)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(STATUS_TIMEOUT)
    try:
        sock.connect(os.fspath(paths.socket))
    except OSError as exc:
        sock.close()
        raise CoordinatorError(f"no coordinator answers at {paths.socket}: {exc}") from None
    return sock


def fleet_status(address: str | os.PathLike[str] | RuntimePaths) -> dict[str, object]:
    """The fleet state from a running coordinator: caps, leases per host and per
    worker pid, waiters, breaker states and DNS entries. Raises CoordinatorError."""
    paths = address if isinstance(address, RuntimePaths) else RuntimePaths.for_socket(
        socket_path_of(address))
    sock = _connect_sync(paths)
    try:
        sock.sendall(encode(Hello(PROTOCOL_VERSION, os.getpid(), "observer")))
        reader = FrameReader()
        sent_query = False
        deadline = time.monotonic() + STATUS_TIMEOUT
        while time.monotonic() < deadline:
            data, fds, _, _ = socket.recv_fds(sock, MAX_FRAME + 4, 2, socket.MSG_CMSG_CLOEXEC)
            for fd in fds:
                os.close(fd)
            if not data:
                break
            for body in reader.feed(data):
                msg = decode_from_coordinator(body)
                if not sent_query:
                    sock.sendall(encode(StatusQuery(1)))
                    sent_query = True
                elif isinstance(msg, StatusReply):
                    return dict(msg.status)
    except (OSError, FrameError) as exc:
        raise CoordinatorError(f"coordinator at {paths.socket} did not answer: {exc}") from None
    finally:
        sock.close()
    raise CoordinatorError(f"coordinator at {paths.socket} did not answer")


def coordinator_pid(paths: RuntimePaths) -> int:
    """The pid of the process serving `paths` (from SO_PEERCRED, no pid files)."""
    sock = _connect_sync(paths)
    try:
        return peer_credentials(sock)[0]
    finally:
        sock.close()


def stop_coordinator(address: str | os.PathLike[str] | RuntimePaths, timeout: float = 5.0) -> int:
    """SIGTERM the coordinator at `address` and wait until it is gone; returns its pid."""
    paths = address if isinstance(address, RuntimePaths) else RuntimePaths.for_socket(
        socket_path_of(address))
    pid = coordinator_pid(paths)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not lock_is_held(paths.lock):
            _reap(pid, max(deadline - time.monotonic(), 0.1))
            return pid
        time.sleep(0.02)
    raise CoordinatorError(f"coordinator pid {pid} did not stop within {timeout}s")


def _reap(pid: int, timeout: float) -> None:
    """If this process started the coordinator `pid`, wait for it to exit:
    its lock goes before the process does, and an unreaped child is a zombie."""
    from ._launch import _DETACHED

    for key, proc in list(_SPAWNED.items()):
        if proc.pid == pid:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
            if proc.poll() is not None:
                del _SPAWNED[key]
    for proc in list(_DETACHED):
        if proc.pid == pid:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
            if proc.poll() is not None:
                _DETACHED.remove(proc)


_ = Path
