"""The fleet part of the tour: a coordinator, several worker processes, one
server that counts connections, and a worker killed mid-flight."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .server import DemoServer, demo_ca_path

Print = Callable[[str], None]

RUN_SECONDS = 4.0
KILL_AT = 1.5


def _leases_by_pid(status: dict[str, Any]) -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in status.get("workers", []) or []:
        if isinstance(entry, dict):
            out[int(entry.get("pid", 0))] = int(entry.get("leases", 0))
    return out


def fleet_part(server: DemoServer, say: Print, *, workers: int, cap: int, requests: int) -> int:
    from ..shared import Coordinator, fleet_status

    ca = demo_ca_path()
    concurrency = max(4, requests // 20)
    with tempfile.TemporaryDirectory(prefix="hyperhttp-demo-") as runtime:
        os.chmod(runtime, 0o700)
        coord = Coordinator.launch(
            "demo", max_connections=cap, max_connections_per_host=cap, runtime_dir=runtime
        )
        procs: list[subprocess.Popen[str]] = []
        try:
            say(f"3. A fleet: {workers} worker processes, each a Client(max_connections={cap}, "
                f"coordinator=...) over HTTP/1.1, {concurrency} tasks each.")
            say(f"   Alone they could open {workers * cap} connections; the coordinator "
                f"(pid {coord.pid}) holds the fleet to {cap}.")
            server.counts.reset_peak()
            started = time.monotonic()
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "hyperhttp._demo.worker", coord.address, server.url,
                     ca, str(RUN_SECONDS), str(concurrency), str(cap)],
                    stdout=subprocess.PIPE, text=True,
                )
                for _ in range(workers)
            ]
            victim = procs[0]  # replaced by the worker holding most leases at KILL_AT
            killed = False
            while any(p.poll() is None for p in procs) and time.monotonic() - started < 30:
                time.sleep(0.5)
                elapsed = time.monotonic() - started
                with contextlib.suppress(Exception):
                    leases = _leases_by_pid(fleet_status(coord.address))
                    held = sum(leases.values())
                    say(f"   t={elapsed:4.1f}s  server: {server.counts.open} open, peak "
                        f"{server.counts.peak} (cap {cap}); fleet leases {held} "
                        f"by pid {dict(sorted(leases.items()))}")
                if not killed and elapsed >= KILL_AT:
                    leases = _leases_by_pid(fleet_status(coord.address))
                    by_pid = {p.pid: p for p in procs if p.poll() is None}
                    holder = max(by_pid, key=lambda pid: leases.get(pid, 0), default=victim.pid)
                    victim = by_pid.get(holder, victim)
                    victim_leases = leases.get(victim.pid, 0)
                    os.kill(victim.pid, signal.SIGKILL)
                    killed = True
                    kill_time = time.monotonic()
                    say(f"   SIGKILL worker {victim.pid}, which held {victim_leases} lease(s)")
                    while time.monotonic() - kill_time < 2:
                        leases = _leases_by_pid(fleet_status(coord.address))
                        if leases.get(victim.pid, 0) == 0:
                            back = (time.monotonic() - kill_time) * 1000
                            say(f"   its slots came back to the fleet after {back:.0f} ms")
                            break
                        time.sleep(0.01)
            totals = {"ok": 0, "failed": 0}
            for proc in procs:
                if proc is victim:
                    continue
                out, _ = proc.communicate(timeout=30)
                line = out.strip().splitlines()[-1] if out.strip() else "{}"
                for key, value in json.loads(line).items():
                    totals[key] = totals.get(key, 0) + int(value)
            held = server.counts.peak <= cap
            say(f"   survivors served {totals['ok']} requests ({totals['failed']} failed); "
                f"the server never saw more than {server.counts.peak} connections at once: "
                f"{'the fleet cap held' if held else 'THE CAP WAS EXCEEDED'}")
            return 0 if held and totals["failed"] == 0 else 1
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
            coord.stop()
