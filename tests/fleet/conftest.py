"""Fixtures for fleet tests: coordinators, scriptable worker processes, a counting server.

All synchronous (servers and workers run in their own threads/processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperhttp.shared import Coordinator, fleet_status

ROOT = Path(__file__).resolve().parents[2]
EVENT_TIMEOUT = 15.0


@pytest.fixture
def launch(short_tmp: Path) -> Iterator[Callable[..., Coordinator]]:
    """``launch(**caps)``: a coordinator in a private directory, stopped after the test."""
    started: list[Coordinator] = []

    def start(**kwargs: Any) -> Coordinator:
        kwargs.setdefault("runtime_dir", short_tmp / "coord")
        coord = Coordinator.launch(**kwargs)
        started.append(coord)
        return coord

    yield start
    for coord in started:
        coord.stop()


class WorkerProc:
    """One `tests.fleet.worker` process, driven by JSON lines."""

    def __init__(self, address: str, loop: str, *, required: bool = False) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        args = [sys.executable, "-m", "tests.fleet.worker", address, loop]
        if required:
            args.append("required")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env
        )
        self.pid = self.proc.pid
        self.events: queue.Queue[list[Any]] = queue.Queue()
        self.backlog: list[list[Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __repr__(self) -> str:
        return f"<WorkerProc pid={self.pid}>"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))

    def wait_ready(self) -> WorkerProc:
        self.expect("ready")
        return self

    def send(self, *cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def expect(self, kind: str, tag: Any = None, timeout: float = EVENT_TIMEOUT) -> list[Any]:
        """The first event of `kind` (and `tag`), waiting up to `timeout` seconds."""
        def matches(ev: list[Any]) -> bool:
            return ev[0] == kind and (tag is None or (len(ev) > 1 and ev[1] == tag))

        for ev in self.backlog:
            if matches(ev):
                self.backlog.remove(ev)
                return ev
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self}: no {kind} {tag} within {timeout}s; saw {self.backlog}")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if matches(ev):
                return ev
            self.backlog.append(ev)

    def has(self, kind: str, tag: Any = None, wait: float = 0.0) -> bool:
        try:
            self.expect(kind, tag, timeout=wait)
        except AssertionError:
            return False
        return True

    def call(self, op: str, *args: Any, timeout: float = EVENT_TIMEOUT) -> list[Any]:
        tag = f"{op}-{time.monotonic_ns()}"
        self.send(op, tag, *args)
        reply = {"info": "info", "breaker": "breaker", "probe": "probe", "connect": "connected"}
        return self.expect(reply[op], tag, timeout)

    def info(self) -> dict[str, Any]:
        _, _, connected, leases, warnings, caps = self.call("info")
        return {"connected": connected, "leases": leases, "warnings": warnings, "caps": caps}

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send("exit")
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@pytest.fixture
def spawn_workers() -> Iterator[Callable[..., list[WorkerProc]]]:
    """``spawn_workers(address, n, required=False)``: n ready workers, loops alternating."""
    procs: list[WorkerProc] = []

    def spawn(address: str, n: int, *, required: bool = False) -> list[WorkerProc]:
        batch = [
            WorkerProc(address, "uvloop" if i % 2 else "asyncio", required=required)
            for i in range(n)
        ]
        procs.extend(batch)
        return [w.wait_ready() for w in batch]

    yield spawn
    for w in procs:
        w.close()


class ConnCounter:
    """A TCP server on several ports that counts open connections as the server sees them.

    At each accept, connections whose peer already closed (EOF or RST pending)
    are pruned first, so the count is "open right now", not "not yet noticed".
    """

    def __init__(self, ports: int) -> None:
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._listeners: list[socket.socket] = []
        self.ports: list[int] = []
        for _ in range(ports):
            ls = socket.socket()
            ls.bind(("127.0.0.1", 0))
            ls.listen(1024)
            ls.setblocking(False)
            self._listeners.append(ls)
            self.ports.append(ls.getsockname()[1])
            self._sel.register(ls, selectors.EVENT_READ, "listen")
        self._open: dict[socket.socket, int] = {}
        self.max_per_port = dict.fromkeys(self.ports, 0)
        self.max_total = 0
        self.accepted = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _prune(self) -> None:
        for sock in list(self._open):
            try:
                data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        if self._open.pop(sock, None) is not None:
            self._sel.unregister(sock)
            sock.close()

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(self._timeout()):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data == "listen":
                    self._accept(sock)
                else:
                    self._read(sock)
            self._tick()

    # Hooks for a server that also speaks (see HTTPCounter in test_client_fleet).
    def _timeout(self) -> float:
        return 0.05

    def _tick(self) -> None:
        """Called after each select round, in the server thread."""

    def _opened(self, conn: socket.socket) -> None:
        """A connection was accepted and counted (lock held)."""

    def _received(self, sock: socket.socket, data: bytes) -> None:
        """Bytes arrived on a counted connection (lock held); ignored here."""

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        with self._lock:
            if data:
                self._received(sock, data)
            else:
                self._drop(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            with self._lock:
                self._prune()
                port = listener.getsockname()[1]
                self._open[conn] = port
                self._sel.register(conn, selectors.EVENT_READ, "conn")
                self.accepted += 1
                now = [p for p in self._open.values() if p == port]
                self.max_per_port[port] = max(self.max_per_port[port], len(now))
                self.max_total = max(self.max_total, len(self._open))
                self._opened(conn)

    def open_now(self) -> int:
        with self._lock:
            self._prune()
            return len(self._open)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        for sock in [*self._open, *self._listeners]:
            sock.close()
        self._sel.close()


@pytest.fixture
def counter() -> Iterator[ConnCounter]:
    server = ConnCounter(2)
    try:
        yield server
    finally:
        server.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> float:
    """Poll until `predicate()`; returns the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - start


def status(address: str) -> dict[str, Any]:
    return fleet_status(address)


def joined(address: str) -> socket.socket:
    """A raw socket past the coordinator's handshake (Hello sent, the
    table's fd received and closed), to speak the protocol by hand."""
    from hyperhttp.shared._protocol import MAX_FRAME, PROTOCOL_VERSION, Hello, encode

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(3.0)
    sock.connect(address)
    sock.sendall(encode(Hello(PROTOCOL_VERSION, os.getpid())))
    _, fds, _, _ = socket.recv_fds(sock, MAX_FRAME + 4, 2)
    for fd in fds:
        os.close(fd)
    assert len(fds) == 1
    return sock


def is_dropped(sock: socket.socket, wait: float | None = None) -> bool:
    """Whether the coordinator closed `sock` (read to EOF or reset) within
    `wait` seconds (default: the socket's own timeout)."""
    if wait is not None:
        sock.settimeout(wait)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
