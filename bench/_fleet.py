"""The fleet scenarios: several worker processes against one nginx.

Runner side (imported by run.py): `run(client, loop, scenario, settings)`
starts `scenario.workers` processes of this file, each one client with
`inflight / workers` tasks looping GET on the tiny path over HTTP/1.1, and
when `scenario.fleet_cap` is set, a `hyperhttp.shared.Coordinator` capping
the fleet at that many connections. Every worker opens its client and sends
one request, then waits for a common "GO" on stdin, so the warm-up and
measured windows of all workers start together. While they run, nginx's
stub_status "Active connections" is sampled on one keep-alive connection:
the most connections open at once at the server. The result has the keys of
a `_worker.py` result (ops, bytes, elapsed, cpu, maxrss_kb, ok, ...) summed
over the fleet: requests/s summed, CPU summed (the coordinator's included),
peak RSS the largest worker's. Every process started here is stopped by pid
before `run` returns, whatever happened.

Worker side: `python bench/_fleet.py '<json config>'` drives one client
through `_worker.py`'s drivers and `run_tiny`, and prints `READY`, then
`RESULT {json}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _scenarios import Scenario  # noqa: E402
from _servers import stop_process  # noqa: E402
from _worker import (  # noqa: E402
    DRIVERS,
    Driver,
    HyperDriver,
    describe,
    run_and_report,
    run_tiny,
)

READY_TIMEOUT = 60.0  # imports, client, first request (and coordinator link) per worker
SAMPLE_EVERY = 0.05  # seconds between stub_status samples
_ACTIVE = re.compile(rb"Active connections:\s*(\d+)")


# --- worker side --------------------------------------------------------------------------


class CoordinatedHyperDriver(HyperDriver):
    """Ours with `coordinator=`: the same client as `HyperDriver` plus the
    fleet arguments bench/fleet.py uses (a per-host cap equal to the
    per-process one, and a coordinator that must be reachable)."""

    async def open(self, cfg: dict[str, Any]) -> None:
        self.module = importlib.import_module("hyperhttp")
        n = max(cfg["inflight"], 1)
        self.client = self.module.Client(
            http2=False, verify=cfg["ca"], max_connections=n, max_connections_per_host=n,
            max_keepalive_connections=n, timeout=120.0,
            coordinator=cfg["coordinator"], coordinator_required=True,
        )
        await self.client.__aenter__()


async def _fleet_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    d: Driver = CoordinatedHyperDriver() if cfg.get("coordinator") else DRIVERS[cfg["client"]]()
    await d.open(cfg)
    try:
        await d.get(cfg["url"])  # connect (and reach the coordinator) before the common start
        print("READY", flush=True)
        go = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if go.strip() != "GO":
            raise RuntimeError("runner went away before GO")
        out = await run_tiny(d, cfg)
        out.update(describe(d.module))
        out["http_version"] = d.seen
        return out
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(d.close(), 10)


def worker_main(cfg: dict[str, Any]) -> None:
    run_and_report(cfg, _fleet_worker)


# --- runner side --------------------------------------------------------------------------


class _Proc:
    """One worker process and the lines it printed, read without blocking past a deadline."""

    def __init__(self, cmd: list[str], env: dict[str, str], stderr: IO[bytes]) -> None:
        self.stderr = stderr
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr, env=env, bufsize=0)
        self.buf = b""
        self.eof = False

    def line(self, deadline: float) -> str:
        """The next line, or "" at end of output or at the deadline."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return ""
            chunk = os.read(fd, 65536)
            self.buf += chunk
            self.eof = not chunk
        head, sep, self.buf = self.buf.partition(b"\n")
        if not sep:  # end of output without a newline
            head, self.buf = head + self.buf, b""
        return head.decode(errors="replace")

    def result(self, deadline: float) -> dict[str, Any]:
        while True:
            text = self.line(deadline)
            if text.startswith("RESULT "):
                parsed: dict[str, Any] = json.loads(text[7:])
                return parsed
            if not text and (self.eof or time.monotonic() >= deadline):
                return {"ok": False, "error": self.failure("no result")}

    def failure(self, what: str) -> str:
        code = self.proc.poll()
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace")[-400:]
        return f"{what} (exit {code}): {tail}" if tail else f"{what} (exit {code})"

    def go(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(b"GO\n")
            self.proc.stdin.flush()


class _Sampler:
    """nginx's "Active connections" on one keep-alive connection, so the
    samples add one accepted connection to the server's count, not one each."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None
        self.conns = 0  # connections this sampler opened (server_conns leaves them out)
        self.requests = 0
        self.peak = 0

    def sample(self) -> None:
        for _ in range(2):  # one retry on a fresh connection
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                    self.conn.connect()
                    self.conns += 1
                self.conn.request("GET", "/nginx_status")
                self.requests += 1
                text = self.conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                self.close()
                continue
            m = _ACTIVE.search(text)
            if m:
                # This sampler's own connection is one of the active ones.
                self.peak = max(self.peak, int(m.group(1)) - 1)
            return

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of another process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_hwm_kb(pid: int) -> int | None:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def _launch_coordinator(sc: Scenario, settings: dict[str, Any], run_dir: Path) -> Any:
    if str(ROOT) not in sys.path:  # this checkout, as for the hyperhttp workers
        sys.path.insert(0, str(ROOT))
    from hyperhttp.shared import Coordinator

    coord = Coordinator.launch(f"bench-{os.getpid()}", max_connections=sc.fleet_cap,
                               max_connections_per_host=sc.fleet_cap,
                               runtime_dir=run_dir / "coordinator")
    if settings.get("cpu") is not None:
        # Client-side machinery: on the clients' CPU, off the server's.
        with contextlib.suppress(OSError):
            os.sched_setaffinity(coord.pid, {settings["cpu"]})
    return coord


def run(client: str, loop: str, sc: Scenario, settings: dict[str, Any]) -> dict[str, Any]:
    """One fleet run; `settings` is the harness's settings() plus url, ca,
    pythonpath, status_port and work (see Harness.fleet_settings)."""
    sampler = _Sampler(settings["status_port"])
    procs: list[_Proc] = []
    run_dir = Path(tempfile.mkdtemp(prefix="fleet-", dir=settings["work"]))
    try:
        result = _run(client, loop, sc, settings, sampler, procs, run_dir)
    except Exception as exc:  # recorded; the matrix goes on
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        sampler.close()
        for p in procs:
            stop_process(p.proc, signal.SIGTERM)
            p.stderr.close()
            for pipe in (p.proc.stdin, p.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    result["sampler"] = (sampler.conns, sampler.requests)
    return result


def _run(client: str, loop: str, sc: Scenario, settings: dict[str, Any], sampler: _Sampler,
         procs: list[_Proc], run_dir: Path) -> dict[str, Any]:
    """Start the coordinator (if any) and the workers (into `procs`, which the
    caller stops), line them up, release them together and collect."""
    coord = _launch_coordinator(sc, settings, run_dir) if sc.fleet_cap else None
    try:
        cfg = {"client": client, "loop": loop, "proto": sc.proto, "url": settings["url"],
               "ca": settings["ca"], "inflight": sc.inflight // sc.workers,
               "warmup": settings["warmup"], "duration": settings["duration"],
               "cpu": settings["cpu"], "coordinator": coord.address if coord else None}
        env = dict(os.environ, PYTHONPATH=settings["pythonpath"])
        cmd = [sys.executable, str(HERE / "_fleet.py"), json.dumps(cfg)]
        for _ in range(sc.workers):
            err = tempfile.TemporaryFile(dir=run_dir)  # noqa: SIM115 (closed by run())
            procs.append(_Proc(cmd, env, err))
        deadline = time.monotonic() + READY_TIMEOUT
        for p in procs:
            line = p.line(deadline)
            if line != "READY":
                if line.startswith("RESULT "):
                    return dict(json.loads(line[7:]), ok=False)
                return {"ok": False, "error": p.failure(f"worker not ready: {line[:200]!r}")}
        for p in procs:
            p.go()
        coord_cpu = _watch(procs, settings, sampler, coord.pid if coord else None)
        deadline = time.monotonic() + 60
        results = [p.result(deadline) for p in procs]
        coord_hwm = _proc_hwm_kb(coord.pid) if coord else None
    finally:
        if coord is not None:
            coord.stop()
    out = _combine(results)
    out["peak_open_conns"] = sampler.peak
    if coord is not None:
        out["coord_cpu"] = coord_cpu
        out["coord_maxrss_kb"] = coord_hwm
        if out.get("ok") and coord_cpu is not None:
            out["cpu"] += coord_cpu
    return out


def _watch(procs: list[_Proc], settings: dict[str, Any], sampler: _Sampler,
           coord_pid: int | None) -> float | None:
    """Sample the server until every worker has exited (bounded); return the
    coordinator's CPU over the measured window, scaled to its exact length."""
    go = time.monotonic()
    start, stop = go + settings["warmup"], go + settings["warmup"] + settings["duration"]
    deadline = stop + 60
    edges: list[tuple[float, float | None]] = []
    while time.monotonic() < deadline and any(p.proc.poll() is None for p in procs):
        sampler.sample()
        now = time.monotonic()
        if coord_pid is not None and len(edges) < 2 and now >= (start, stop)[len(edges)]:
            edges.append((now, _proc_cpu(coord_pid)))
        time.sleep(SAMPLE_EVERY)
    if len(edges) < 2 or edges[0][1] is None or edges[1][1] is None or edges[1][0] <= edges[0][0]:
        return None
    span = edges[1][0] - edges[0][0]
    return (edges[1][1] - edges[0][1]) * float(settings["duration"]) / span


def _combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One worker-style result for the fleet: sums, and the largest RSS."""
    failed = [r for r in results if not r.get("ok")]
    if failed:
        return {"ok": False, "error": f"{len(failed)}/{len(results)} workers failed: "
                f"{failed[0].get('error')}"[:500], "traceback": failed[0].get("traceback")}
    mods = {(r.get("module_file"), r.get("version")) for r in results}
    if len(mods) != 1:
        return {"ok": False, "error": f"workers imported different clients: {sorted(map(str, mods))}"}
    ops = sum(int(r["ops"]) for r in results)
    rps = sum(r["ops"] / r["elapsed"] for r in results if r["elapsed"] > 0)
    return {
        "ok": True, "ops": ops, "bytes": sum(int(r["bytes"]) for r in results),
        # So that ops / elapsed is the summed rate of the workers.
        "elapsed": ops / rps if rps else 0.0,
        "cpu": sum(float(r["cpu"]) for r in results),
        "maxrss_kb": max(int(r["maxrss_kb"]) for r in results),
        "module_file": results[0].get("module_file"), "version": results[0].get("version"),
        "http_version": results[0].get("http_version"),
        "workers": [{k: r.get(k) for k in ("ops", "elapsed", "cpu", "maxrss_kb")}
                    for r in results],
    }


if __name__ == "__main__":
    worker_main(json.loads(sys.argv[1]))
