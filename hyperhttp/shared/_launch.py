"""Starting and stopping coordinator processes (always with `subprocess`, never fork)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import hyperhttp

from .._exceptions import CoordinatorError
from ._runtime import RuntimePaths, check_name, paths_for

__all__ = ["Coordinator", "coordinator_command", "spawn"]

READY_TIMEOUT = 15.0
_DETACHED: list[subprocess.Popen[bytes]] = []
STOP_TIMEOUT = 5.0


def _cap(value: int | None) -> str:
    return "none" if value is None else str(int(value))


def coordinator_command(
    paths: RuntimePaths,
    *,
    max_connections: int | None,
    max_connections_per_host: int | None,
    dns_ttl: float,
    exit_when_idle: float | None = None,
    ready_fd: int | None = None,
    backend: str | None = None,
) -> list[str]:
    """The argv that runs a coordinator in the foreground."""
    cmd = [
        sys.executable, "-m", "hyperhttp.shared",
        "--socket", os.fspath(paths.socket),
        "--max-connections", _cap(max_connections),
        "--max-connections-per-host", _cap(max_connections_per_host),
        "--dns-ttl", repr(float(dns_ttl)),
    ]
    if exit_when_idle is not None:
        cmd += ["--exit-when-idle", repr(float(exit_when_idle))]
    if ready_fd is not None:
        cmd += ["--ready-fd", str(ready_fd)]
    if backend is not None:
        cmd += ["--backend", backend]
    return cmd


def _child_env() -> dict[str, str]:
    # The child must import this very hyperhttp, even when it runs from a checkout.
    env = dict(os.environ)
    root = str(Path(hyperhttp.__file__).resolve().parent.parent)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    return env


def spawn(
    paths: RuntimePaths,
    *,
    max_connections: int | None,
    max_connections_per_host: int | None,
    dns_ttl: float,
    exit_when_idle: float | None = None,
    detach: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a coordinator without waiting for it (used by auto-spawning workers)."""
    cmd = coordinator_command(
        paths, max_connections=max_connections, max_connections_per_host=max_connections_per_host,
        dns_ttl=dns_ttl, exit_when_idle=exit_when_idle,
    )
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=_child_env(), start_new_session=detach, close_fds=True,
    )


class Coordinator:
    """A coordinator process started by `launch` (or found by `attach`)."""

    def __init__(self, paths: RuntimePaths, pid: int, process: subprocess.Popen[bytes] | None):
        self._paths = paths
        self._pid = pid
        self._process = process

    def __repr__(self) -> str:
        return f"<Coordinator {self.address} pid={self.pid} {'running' if self.is_running() else 'stopped'}>"

    @classmethod
    def launch(
        cls,
        name: str = "default",
        *,
        max_connections: int | None = 200,
        max_connections_per_host: int | None = 32,
        dns_ttl: float = 60.0,
        runtime_dir: str | os.PathLike[str] | None = None,
        socket_path: str | os.PathLike[str] | None = None,
        timeout: float = READY_TIMEOUT,
        detach: bool = False,
        backend: str | None = None,
    ) -> Coordinator:
        """Start a coordinator in a background process and return once it serves.

        `max_connections` caps open connections fleet-wide over all hosts,
        `max_connections_per_host` per "host:port" (None: no cap); `dns_ttl`
        bounds how long a shared DNS answer lives. One coordinator runs per
        name (or runtime directory) per user; launching a second raises
        `CoordinatorError`. `detach` puts it in its own session (it survives
        the launcher's terminal). `backend` ("redis://host:6379/0") shares the
        caps and breakers with the coordinators of other hosts through Redis
        (see docs/fleet-multihost.md); this coordinator still serves only
        the workers of its own host.
        """
        check_name(name)
        for value, label in ((max_connections, "max_connections"),
                             (max_connections_per_host, "max_connections_per_host")):
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"{label} must be a positive int or None")
        if dns_ttl < 0:
            raise ValueError("dns_ttl must be >= 0")
        paths = paths_for(name, runtime_dir=runtime_dir, socket_path=socket_path)
        r, w = os.pipe()
        try:
            cmd = coordinator_command(
                paths, max_connections=max_connections,
                max_connections_per_host=max_connections_per_host, dns_ttl=dns_ttl, ready_fd=w,
                backend=backend,
            )
            proc = subprocess.Popen(
                # stderr is inherited: the coordinator's log goes where the launcher's goes.
                cmd, stdin=subprocess.DEVNULL, pass_fds=(w,), start_new_session=detach,
                env=_child_env(), close_fds=True,
            )
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        try:
            line = _read_ready(r, timeout)
        finally:
            os.close(r)
        if not line.startswith("ready "):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            detail = line.removeprefix("error ").strip() or f"exit status {proc.returncode}"
            raise CoordinatorError(f"coordinator did not start: {detail}")
        return cls(paths, proc.pid, proc)

    @property
    def address(self) -> str:
        """What workers pass as ``Client(coordinator=...)`` (the socket path)."""
        return os.fspath(self._paths.socket)

    @property
    def pid(self) -> int:
        return self._pid

    def detach(self) -> Coordinator:
        """Let the coordinator outlive this handle (the CLI's ``start``); stop it by pid."""
        if self._process is not None:
            _DETACHED.append(self._process)  # reaped at exit, never dropped while running
            self._process = None
        return self

    def is_running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        try:
            os.kill(self._pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the coordinator (SIGTERM, then SIGKILL after `timeout`). Idempotent."""
        if not self.is_running():
            self._reap()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGTERM)
        if not self._wait(timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            self._wait(timeout)
        self._reap()

    def _wait(self, timeout: float) -> bool:
        if self._process is not None:
            try:
                self._process.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                return True
            time.sleep(0.02)
        return False

    def _reap(self) -> None:
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(0.5)

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _read_ready(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()
