"""A real gunicorn fleet: uvicorn workers, the `hyperhttp.shared.gunicorn`
hooks, and an app calling an upstream through ``Client(coordinator=True)``.

The upstream (`HTTPCounter`) counts open connections as the server sees
them: with 3 workers, each allowed 100 connections of its own, the fleet
cap is what holds. Stopping the master (SIGTERM, by pid) stops the
coordinator with it (``on_exit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import hyperhttp
from hyperhttp import CoordinatorError
from hyperhttp.shared import fleet_status, stop_coordinator

from .conftest import ROOT, status, wait_for
from .test_client_fleet import HTTPCounter

WORKERS = 3
FLEET_CAP = 4
FLEET_CAP_PER_HOST = 3

CONF = """\
from hyperhttp.shared.gunicorn import fleet_hooks

on_starting, on_exit = fleet_hooks(
    name="gtest", max_connections={cap}, max_connections_per_host={per_host})
bind = "127.0.0.1:{port}"
workers = {workers}
worker_class = "uvicorn_worker.UvicornWorker"
graceful_timeout = 5
"""


@pytest.fixture
def upstream() -> Iterator[HTTPCounter]:
    server = HTTPCounter(1)
    try:
        yield server
    finally:
        server.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _stop_master(master: subprocess.Popen[bytes]) -> None:
    """After a failure: stop gunicorn by pid, politely first, so its workers
    and its coordinator go too; then SIGKILL whatever of ours is left."""
    if master.poll() is not None:
        return
    workers = _children(master.pid)
    master.send_signal(signal.SIGTERM)
    try:
        master.wait(10)
    except subprocess.TimeoutExpired:
        master.kill()
        master.wait(5)
    for pid in workers:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def _drive(url: str, tasks: int, each: int) -> list[dict[str, int]]:
    # No keep-alive: each request is a new connection, which spreads them
    # over the workers.
    async with hyperhttp.Client(trust_env=False, http2=False, timeout=30.0,
                                max_connections=tasks, max_keepalive_connections=0) as client:
        async def one() -> list[dict[str, int]]:
            out = []
            for _ in range(each):
                response = await client.get(url)
                assert response.status_code == 200, response.status_code
                out.append(json.loads(response.content))
            return out

        batches = await asyncio.gather(*(one() for _ in range(tasks)))
    return [item for batch in batches for item in batch]


def test_gunicorn_fleet_holds_the_cap_and_stops_its_coordinator(
    short_tmp: Path, upstream: HTTPCounter
) -> None:
    xdg = short_tmp / "xdg"
    xdg.mkdir(mode=0o700)
    address = os.fspath(xdg / "hyperhttp" / "gtest" / "coordinator.sock")
    port = _free_port()
    conf = short_tmp / "gunicorn.conf.py"
    conf.write_text(CONF.format(cap=FLEET_CAP, per_host=FLEET_CAP_PER_HOST, port=port,
                                workers=WORKERS))
    env = dict(os.environ)
    env.update(XDG_RUNTIME_DIR=str(xdg), FLEET_UPSTREAM=f"127.0.0.1:{upstream.ports[0]}",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("HYPERHTTP_COORDINATOR", None)
    log = open(short_tmp / "gunicorn.log", "wb")  # noqa: SIM115
    master = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(conf), "tests.fleet.gunicorn_app:app"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    coordinator_pid = None
    try:
        def serving() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return True
            return False

        wait_for(serving, timeout=20.0, interval=0.05)

        def all_booted() -> bool:
            text = (short_tmp / "gunicorn.log").read_text(errors="replace")
            return text.count("Application startup complete") >= WORKERS

        wait_for(all_booted, timeout=20.0, interval=0.05)
        coordinator_pid = int(status(address)["pid"])
        answers = asyncio.run(_drive(f"http://127.0.0.1:{port}/", tasks=24, each=5))
        assert len(answers) == 120 and all(a["upstream"] == 200 for a in answers)
        pids = {a["pid"] for a in answers}
        assert len(pids) >= 2, pids  # several workers served, each with its own client
        # Counted by the upstream: the fleet cap, never the workers' own 100 each.
        assert upstream.max_per_port[upstream.ports[0]] == FLEET_CAP_PER_HOST
        assert upstream.max_total <= FLEET_CAP
        st = status(address)
        assert pids <= {w["pid"] for w in st["workers"]}
        assert st["leases"] <= FLEET_CAP_PER_HOST and st["waiting"] == 0

        master.send_signal(signal.SIGTERM)
        assert master.wait(20) == 0
        wait_for(lambda: not _alive(coordinator_pid), timeout=5.0)
        with pytest.raises(CoordinatorError):
            fleet_status(address)
    finally:
        _stop_master(master)
        log.close()
        if coordinator_pid is not None and _alive(coordinator_pid):
            with contextlib.suppress(CoordinatorError):
                stop_coordinator(address)
