"""Benchmark: the Redis-backed coordinator against the single-host one.

    python3 bench/fleet_redis.py [--seconds S] [--iterations N]

Needs `redis-server` on PATH and the `redis` package. Starts its own
redis-server on a free loopback port (no persistence) and stops it by pid.

1. Acquire latency, one in-process worker, acquire + release of one lease
   (no socket opened), N times: "warm" reuses one origin (the host already
   holds a block, so nothing goes to Redis), "cold" uses a new origin each
   time (every acquire waits for a block from Redis).
2. Fleet throughput: 6 worker processes churning (acquire, connect to a
   loopback TCP server, close, release) for S seconds, 6 tasks each, caps
   24 total / 12 per origin over 2 origins: on one coordinator, and on
   three Redis-backed coordinators with 2 workers each. Reports cycles/s
   and the highest connection counts the server saw.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hyperhttp.shared import Coordinator, connect_backend  # noqa: E402
from tests.fleet.conftest import ConnCounter, WorkerProc  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found (apt-get install -y redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit("redis-server did not start")


async def latency(address: str, n: int, cold: bool) -> list[float]:
    backend = connect_backend(address, required=True, local_caps=(None, None))
    await backend.ensure()  # type: ignore[attr-defined]
    out = []
    try:
        for i in range(n):
            origin = f"cold{i}:80" if cold else "warm:80"
            t0 = time.perf_counter()
            lease = await backend.acquire(origin, timeout=5.0)
            out.append(time.perf_counter() - t0)
            backend.release(lease)
            if cold:
                await asyncio.sleep(0)  # let the release reach the coordinator
    finally:
        await backend.aclose()
    return out


def fmt(samples: list[float]) -> str:
    s = sorted(samples)
    p50 = statistics.median(s) * 1e6
    p99 = s[int(len(s) * 0.99) - 1] * 1e6
    return f"p50 {p50:7.1f} µs   p99 {p99:7.1f} µs"


def churn(addresses: list[str], per_host: int, seconds: float) -> tuple[float, int, int]:
    counter = ConnCounter(2)
    workers = [WorkerProc(a, "uvloop") for a in addresses for _ in range(per_host)]
    try:
        for w in workers:
            w.wait_ready()
        targets = [[f"127.0.0.1:{p}", p] for p in counter.ports]
        for i, w in enumerate(workers):
            w.send("churn", f"c{i}", targets, 6, seconds)
        done = [w.expect("churned", f"c{i}", timeout=seconds + 30) for i, w in enumerate(workers)]
        total = sum(d[2] for d in done)
        return total / seconds, max(counter.max_per_port.values()), counter.max_total
    finally:
        for w in workers:
            w.close()
        counter.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hhb", dir="/tmp"))
    redis_proc, url = start_redis(tmp)
    coords: list[Coordinator] = []
    try:
        caps = {"max_connections": 24, "max_connections_per_host": 12}
        single = Coordinator.launch(runtime_dir=tmp / "single", **caps)
        coords.append(single)
        hosts = [Coordinator.launch(runtime_dir=tmp / f"h{i}", backend=url, **caps)
                 for i in range(3)]
        coords += hosts
        time.sleep(0.5)
        print(f"acquire + release latency, {args.iterations} iterations, one worker")
        for label, addr in (("single host", single.address), ("redis", hosts[0].address)):
            for cold in (False, True):
                n = args.iterations if not cold else min(args.iterations, 500)
                samples = asyncio.run(latency(addr, n, cold))
                print(f"  {label:12} {'cold' if cold else 'warm'}  {fmt(samples)}")
        print(f"fleet throughput, {args.seconds}s, 6 workers x 6 tasks, caps 24 / 12 per origin")
        for label, addrs, per in (("single host", [single.address], 6),
                                  ("redis 3 hosts", [h.address for h in hosts], 2)):
            rate, per_origin, total = churn(addrs, per, args.seconds)
            print(f"  {label:14} {rate:8.0f} cycles/s   server saw max {per_origin} per origin, "
                  f"{total} total")
    finally:
        for c in coords:
            c.stop()
        redis_proc.send_signal(signal.SIGTERM)
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
