"""What the fleet coordinator costs: throughput, acquire latency, reuse.

1. Throughput of a fleet of worker processes (default 4), each one
   `hyperhttp.Client` on uvloop with `--concurrency` tasks sending GET
   /tiny.txt to one nginx (HTTP/1.1, keep-alive) for `--seconds`:
   - "alone":    no coordinator, each worker capped at `concurrency` connections;
   - "fleet":    `Client(coordinator=...)` with a fleet cap at least the whole
                 demand (workers x concurrency), so the coordinator never makes
                 anyone wait: what it costs by itself;
   - "fleet, contended": a fleet cap of half the demand, so workers queue
                 fleet-wide and connections are handed over between processes.
   Requests/s summed over the workers (what nginx counted agrees).
2. Coordinator acquire latency: `backend.acquire` + `release` cycles in one
   worker process (no contention), p50 / p99 / max.
3. Reuse: N requests on one warm keep-alive connection, counting every frame
   the worker's coordinator channel sends (`Link.send`): expected 0.

Run: python3 bench/fleet.py [--workers 4] [--concurrency 16] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# --- worker side (runs in its own process) ---------------------------------------------


async def _load(cfg: dict[str, Any]) -> dict[str, Any]:
    import hyperhttp

    kwargs: dict[str, Any] = {"max_connections": cfg["cap"], "max_connections_per_host": cfg["cap"]}
    if cfg["address"]:
        kwargs["coordinator"] = cfg["address"]
        kwargs["coordinator_required"] = True
    ok = errors = 0
    async with hyperhttp.Client(http2=False, trust_env=False, timeout=30.0, **kwargs) as client:
        await client.get(cfg["url"])  # connect to the coordinator, warm up
        start = time.perf_counter()
        deadline = start + cfg["seconds"]

        async def one() -> None:
            nonlocal ok, errors
            while time.perf_counter() < deadline:
                try:
                    response = await client.get(cfg["url"])
                    ok += response.status_code == 200
                except hyperhttp.HyperHTTPError:
                    errors += 1

        await asyncio.gather(*(one() for _ in range(cfg["concurrency"])))
        elapsed = time.perf_counter() - start
    return {"ok": ok, "errors": errors, "seconds": elapsed}


async def _latency(cfg: dict[str, Any]) -> dict[str, Any]:
    from hyperhttp.shared import connect_backend

    backend = connect_backend(cfg["address"], required=True)
    samples: list[float] = []
    try:
        for i in range(cfg["cycles"] + 200):
            t = time.perf_counter()
            lease = await backend.acquire("bench.invalid:443", timeout=5.0)
            dt = time.perf_counter() - t
            backend.release(lease)
            if i >= 200:  # the first cycles connect and warm up
                samples.append(dt)
    finally:
        await backend.aclose()
    samples.sort()
    q = statistics.quantiles(samples, n=100)
    return {"p50_us": q[49] * 1e6, "p99_us": q[98] * 1e6, "max_us": samples[-1] * 1e6,
            "cycles": len(samples)}


async def _reuse(cfg: dict[str, Any]) -> dict[str, Any]:
    import hyperhttp
    from hyperhttp.shared import _links

    sent: list[str] = []
    original = _links.Link.send

    def counting_send(self: _links.Link, msg: Any) -> None:
        sent.append(type(msg).__name__)
        original(self, msg)

    _links.Link.send = counting_send  # type: ignore[method-assign]
    async with hyperhttp.Client(coordinator=cfg["address"], coordinator_required=True,
                                http2=False, trust_env=False) as client:
        await client.get(cfg["url"])  # opens the connection: Acquire
        await asyncio.sleep(0.05)
        warm = list(sent)
        for _ in range(cfg["requests"]):
            response = await client.get(cfg["url"])
            assert response.status_code == 200
        await asyncio.sleep(0.05)  # anything batched would have gone by now
        during = sent[len(warm):]
        stats = client.get_pool_stats()
    return {"warmup_frames": warm, "frames_during": during, "requests": cfg["requests"],
            "connections": sum(e["total"] for e in stats.values())}


def worker_main(cfg: dict[str, Any]) -> None:
    import uvloop

    job = {"load": _load, "latency": _latency, "reuse": _reuse}[cfg["job"]]
    result = uvloop.run(job(cfg))
    print(json.dumps(result), flush=True)


# --- driver ---------------------------------------------------------------------------------


def _run_workers(cfgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    procs = [
        subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(cfg)],
                         stdout=subprocess.PIPE, env=env, text=True)
        for cfg in cfgs
    ]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise SystemExit(f"worker failed with status {proc.returncode}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _throughput(nginx: Any, address: str | None, args: argparse.Namespace,
                cap: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{nginx.h1_port}/tiny.txt"
    before = nginx.stats()
    cfg = {"job": "load", "url": url, "address": address, "cap": cap,
           "concurrency": args.concurrency, "seconds": args.seconds}
    results = _run_workers([cfg] * args.workers)
    after = nginx.stats()
    ok = sum(r["ok"] for r in results)
    seconds = max(r["seconds"] for r in results)
    return {"rps": ok / seconds, "ok": ok, "errors": sum(r["errors"] for r in results),
            "nginx_connections": after[0] - before[0] - 1,
            "nginx_requests": after[1] - before[1] - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--reuse-requests", type=int, default=1000)
    args = parser.parse_args()
    if args.worker:
        worker_main(json.loads(args.worker))
        return

    sys.path.insert(0, str(HERE))
    from _servers import Nginx

    from hyperhttp.shared import Coordinator

    demand = args.workers * args.concurrency
    print(f"# machine: {platform.platform()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="hhbench-") as work:
        nginx = Nginx(Path(work) / "nginx", cpu=None)
        (Path(work) / "nginx").mkdir()
        nginx.start()
        try:
            rows: dict[str, list[dict[str, Any]]] = {"alone": [], "fleet": [],
                                                     "fleet, contended": []}
            for run in range(args.runs):
                rows["alone"].append(_throughput(nginx, None, args, args.concurrency))
                for label, cap in (("fleet", demand), ("fleet, contended", demand // 2)):
                    with Coordinator.launch(f"bench{run}{cap}", max_connections=cap,
                                            max_connections_per_host=cap,
                                            runtime_dir=Path(work) / f"c{run}-{cap}") as coord:
                        rows[label].append(_throughput(nginx, coord.address, args,
                                                       args.concurrency))
            base = statistics.median(r["rps"] for r in rows["alone"])
            print(f"\n{args.workers} workers x {args.concurrency} tasks, {args.seconds:g} s, "
                  f"median of {args.runs} runs (runs interleaved)\n")
            print("| mode | fleet cap | requests/s | vs alone | each run | errors "
                  "| nginx connections |")
            print("|---|---|---|---|---|---|---|")
            for label, cap in (("alone", None), ("fleet", demand),
                               ("fleet, contended", demand // 2)):
                rps = statistics.median(r["rps"] for r in rows[label])
                conns = statistics.median(r["nginx_connections"] for r in rows[label])
                errors = sum(r["errors"] for r in rows[label])
                each = ", ".join(f"{r['rps']:,.0f}" for r in rows[label])
                print(f"| {label} | {cap or '-'} | {rps:,.0f} | {rps / base:.2f} | {each} "
                      f"| {errors} | {conns:,.0f} |")

            with Coordinator.launch("benchlat", runtime_dir=Path(work) / "lat",
                                    max_connections=None, max_connections_per_host=None) as coord:
                (lat,) = _run_workers([{"job": "latency", "address": coord.address,
                                        "cycles": args.cycles}])
                print(f"\nacquire latency over {lat['cycles']} acquire/release cycles: "
                      f"p50 {lat['p50_us']:.0f} us, p99 {lat['p99_us']:.0f} us, "
                      f"max {lat['max_us']:.0f} us")
                (reuse,) = _run_workers([{
                    "job": "reuse", "address": coord.address, "requests": args.reuse_requests,
                    "url": f"http://127.0.0.1:{nginx.h1_port}/tiny.txt"}])
                print(f"reuse: warm-up sent {reuse['warmup_frames']}; then "
                      f"{reuse['requests']} requests on {reuse['connections']} warm "
                      f"connection(s) sent {len(reuse['frames_during'])} frames to the "
                      f"coordinator {reuse['frames_during']}")
        finally:
            nginx.stop()


if __name__ == "__main__":
    main()
