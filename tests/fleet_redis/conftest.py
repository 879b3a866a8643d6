"""Fixtures for the Redis backend: a real redis-server on loopback, host coordinators.

redis-server is installed with apt-get when it is missing (once per session,
bounded in time); each test that needs it gets its own server on a free
port, started as a child process and stopped by its pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperhttp.shared import Coordinator
from tests.fleet.conftest import (
    ConnCounter,
    WorkerProc,
)

INSTALL_TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True,
                       timeout=INSTALL_TIMEOUT, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], env=env, check=True,
                       timeout=INSTALL_TIMEOUT, stdout=subprocess.DEVNULL)
        found = shutil.which("redis-server")
    assert found is not None, "redis-server could not be installed"
    return found


class RedisServer:
    """One redis-server child process on 127.0.0.1, restartable on the same port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
             "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.ping():
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """One command in RESP, the raw reply (enough for ZCARD, DBSIZE...)."""
        payload = f"*{len(args)}\r\n".encode()
        for a in args:
            payload += f"${len(a.encode())}\r\n{a}\r\n".encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(payload)
            return s.recv(65536)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis_server(redis_binary: str, short_tmp: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary, short_tmp)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hosts(short_tmp: Path) -> Iterator[Callable[..., Coordinator]]:
    """``hosts(name, **kwargs)``: a coordinator in its own runtime dir (one "machine")."""
    started: list[Coordinator] = []

    def start(name: str, **kwargs: Any) -> Coordinator:
        coord = Coordinator.launch(runtime_dir=short_tmp / name, **kwargs)
        started.append(coord)
        return coord

    yield start
    for coord in started:
        coord.stop()


@pytest.fixture
def spawn_workers() -> Iterator[Callable[..., list[WorkerProc]]]:
    procs: list[WorkerProc] = []

    def spawn(address: str, n: int) -> list[WorkerProc]:
        batch = [WorkerProc(address, "uvloop" if i % 2 else "asyncio") for i in range(n)]
        procs.extend(batch)
        return [w.wait_ready() for w in batch]

    yield spawn
    for w in procs:
        w.close()


@pytest.fixture
def counter() -> Iterator[ConnCounter]:
    server = ConnCounter(2)
    try:
        yield server
    finally:
        server.close()


def backend_status(address: str) -> dict[str, Any]:
    from hyperhttp.shared import fleet_status

    st = fleet_status(address)
    backend = st.get("backend")
    assert isinstance(backend, dict)
    return backend


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
