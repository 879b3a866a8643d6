"""Hostile input: the sender is dropped, nothing else changes, the coordinator serves on."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from hyperhttp import CoordinatorError, PoolTimeout
from hyperhttp.shared import Coordinator, connect_backend
from hyperhttp.shared._protocol import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    Acquire,
    Hello,
    Welcome,
    encode,
)
from hyperhttp.shared._table import TABLE_SIZE

from .conftest import WorkerProc, is_dropped, joined, status, wait_for

Spawn = Callable[..., list[WorkerProc]]


def _is_dropped(sock: socket.socket) -> bool:
    try:
        return is_dropped(sock)
    finally:
        sock.close()


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


_raw = msgspec.msgpack.encode
BAD_FRAMES = {
    "oversized length": (MAX_FRAME + 1).to_bytes(4, "big") + b"x" * 64,
    "zero length": b"\0\0\0\0",
    "not msgpack": _frame(b"\xc1\xc1\xc1"),
    "unknown tag": _frame(_raw(["launch_missiles", 1])),
    "coordinator-only message": _frame(encode(Welcome(1, 1, 1, 1, None, None, 1.0, 1.0))[4:]),
    "negative id": _frame(_raw(["acquire", -1, "svc:1"])),
    "id out of range": _frame(_raw(["acquire", 2**63, "svc:1"])),
    "wrong field type": _frame(_raw(["acquire", "one", "svc:1"])),
    "malformed origin": _frame(_raw(["acquire", 1, "no port here"])),
    "port out of range": _frame(_raw(["acquire", 1, "svc:99999"])),
    "origin too long": _frame(_raw(["acquire", 1, "a" * 400 + ":1"])),
    "extra fields": _frame(_raw(["release", 1, 2, 3])),
    "second hello": _frame(encode(Hello(PROTOCOL_VERSION, 1))[4:]),
    "bad thresholds": _frame(_raw(["outcomes", 0, 1.0, 1, [["svc:1", 1]]])),
    "too many outcomes": _frame(_raw(["outcomes", 1, 1.0, 1, [["svc:1", 1]] * 200])),
    "reused request id": encode(Acquire(7, "svc:1")) + encode(Acquire(7, "svc:1")),
}


def test_bad_frames_drop_the_sender_and_change_nothing(
    launch: Callable[..., Coordinator], spawn_workers: Spawn
) -> None:
    coord = launch(max_connections=4, max_connections_per_host=2)
    (w,) = spawn_workers(coord.address, 1)
    w.send("acquire", "held", "svc:1", 5, None)
    w.expect("granted", "held")
    w.send("outcome", "svc:9", True, False)
    wait_for(lambda: "svc:9" in status(coord.address)["breakers"])
    before = status(coord.address)
    fields = ("leases", "waiting", "per_host", "breakers", "dns")
    for name, payload in BAD_FRAMES.items():
        sock = joined(coord.address)
        sock.sendall(payload)
        assert _is_dropped(sock), name
        # A dropped sender that held a lease (the "reused request id" case)
        # gets it reclaimed after DEAD_HOLDER_GRACE (0.15 s), not at once:
        # compare once that has passed, within a second.
        with contextlib.suppress(AssertionError):
            wait_for(
                lambda: all(status(coord.address)[f] == before[f] for f in fields), timeout=1.0
            )
        after = status(coord.address)
        for field in fields:
            assert after[field] == before[field], (name, field)
        assert [x["pid"] for x in after["workers"]] == [w.pid], name
    # Still serving: the honest worker gets its second slot, then waits for a third.
    w.send("acquire", "more", "svc:1", 5, None)
    w.expect("granted", "more")


def test_handshake_must_start_with_hello(launch: Callable[..., Coordinator]) -> None:
    coord = launch()
    for payload in (
        _frame(_raw(["acquire", 1, "svc:1"])), b"\xff\xff\xff\xff", b"GET / HTTP/1.1\r\n\r\n",
        encode(Hello(PROTOCOL_VERSION - 1, os.getpid())),  # a worker of an older build
    ):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(3.0)
        sock.connect(coord.address)
        sock.sendall(payload)
        assert _is_dropped(sock)
    assert status(coord.address)["workers"] == []


_OTHER_UID = r"""
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
os.setegid(65534)
os.seteuid(65534)          # the peer credentials the coordinator sees
libc.setfsuid(0)           # but keep root's file access to reach the 0700 directory
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(3)
sock.connect(sys.argv[1])
from hyperhttp.shared._protocol import PROTOCOL_VERSION, Hello, encode
try:
    sock.sendall(encode(Hello(PROTOCOL_VERSION, os.getpid())))
    data = sock.recv(100)
except (ConnectionResetError, BrokenPipeError):
    data = b""
print("dropped" if data == b"" else "served")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to impersonate another uid")
def test_peer_with_another_uid_is_refused(
    launch: Callable[..., Coordinator], capfd: pytest.CaptureFixture[str]
) -> None:
    coord = launch()
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _OTHER_UID, coord.address], capture_output=True, text=True,
        timeout=20, cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert out.stdout.strip() == "dropped", out.stderr
    assert status(coord.address)["workers"] == []
    coord.stop()
    assert "refused a peer with uid 65534" in capfd.readouterr().err


def test_symlinked_or_open_runtime_dirs_are_refused(short_tmp: Path) -> None:
    real = short_tmp / "real"
    real.mkdir(mode=0o700)
    link = short_tmp / "link"
    link.symlink_to(real)
    with pytest.raises(CoordinatorError, match="symlink"):
        Coordinator.launch(runtime_dir=link)
    shared = short_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(CoordinatorError, match="mode 777"):
        Coordinator.launch(runtime_dir=shared)
    assert not (shared / "coordinator.sock").exists()


async def test_worker_refuses_a_socket_in_an_open_directory(loop_name: str, short_tmp: Path) -> None:
    coord = Coordinator.launch(runtime_dir=short_tmp / "c")
    try:
        os.chmod(short_tmp / "c", 0o755)
        backend = connect_backend(coord.address, required=True)
        with pytest.raises(CoordinatorError, match="mode 755"):
            await backend.acquire("svc:1", timeout=1)
        await backend.aclose()
        os.chmod(short_tmp / "c", 0o700)
    finally:
        coord.stop()


class _AlienCoordinator:
    """Speaks our protocol version but hands over a table of an unknown
    layout (all zeros): what a worker would meet from a coordinator of a
    build whose table changed without the protocol version changing."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700)
        self.address = str(directory / "coordinator.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.address)
        os.chmod(self.address, 0o600)
        self.listener.listen(8)
        self.table = os.memfd_create("alien-table")
        os.ftruncate(self.table, TABLE_SIZE)
        self.served = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        welcome = Welcome(PROTOCOL_VERSION, 1, os.getpid(), TABLE_SIZE, 8, 4, 60.0, 0.25)
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # closed
            with sock:
                sock.settimeout(3)
                with contextlib.suppress(OSError):
                    sock.recv(MAX_FRAME)  # the Hello
                    socket.send_fds(sock, [encode(welcome)], [self.table])
                    self.served += 1
                    sock.recv(MAX_FRAME)  # until the worker hangs up

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)
        os.close(self.table)


async def test_a_table_of_unknown_layout_is_no_coordinator(
    loop_name: str, short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alien = _AlienCoordinator(short_tmp / "alien")
    try:
        required = connect_backend(alien.address, required=True)
        with pytest.raises(CoordinatorError, match="unknown layout") as caught:
            await required.acquire("svc:1", timeout=1)
        assert alien.address in str(caught.value)
        assert not required.is_connected()
        await required.aclose()
        # Not required: one warning, then per-process limits (no fleet caps
        # were ever learnt, so the client's own).
        caplog.clear()
        backend = connect_backend(alien.address, local_caps=(3, 2))
        with caplog.at_level(logging.WARNING, logger="hyperhttp.shared"):
            leases = [await backend.acquire("svc:1", timeout=1) for _ in range(2)]
            with pytest.raises(PoolTimeout):
                await backend.acquire("svc:1", timeout=0.1)
        assert not backend.is_connected()
        assert backend.fallback_caps() == (3, 2)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "unknown layout" in warnings[0], warnings
        for lease in leases:
            backend.release(lease)
        await backend.aclose()
        assert alien.served >= 2
    finally:
        alien.close()


def test_socket_and_table_are_private(launch: Callable[..., Coordinator]) -> None:
    coord = launch()
    st = os.lstat(coord.address)
    assert st.st_mode & 0o777 == 0o600
    assert os.lstat(Path(coord.address).parent).st_mode & 0o777 == 0o700
    # The table arrives as a read-only descriptor: it cannot be mapped writable.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(3)
    sock.connect(coord.address)
    sock.sendall(encode(Hello(PROTOCOL_VERSION, os.getpid())))
    _, fds, _, _ = socket.recv_fds(sock, MAX_FRAME + 4, 2)
    try:
        import mmap

        with pytest.raises(PermissionError):
            mmap.mmap(fds[0], 4096, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        with pytest.raises(OSError):
            os.write(fds[0], b"x")
    finally:
        for fd in fds:
            os.close(fd)
        sock.close()


_ = ctypes
