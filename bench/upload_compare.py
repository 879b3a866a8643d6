"""Multipart file upload: hyperhttp vs aiohttp vs httpx.

Each client uploads the same sparse file (1 GiB by default) as one
multipart file part to the HTTP/1.1 sink of bench/upload_memory.py (a
separate process that reads every byte and discards it), each run in a
fresh process on the default asyncio loop, after one small warm-up upload
on the same connection. Reported per client: throughput (body bytes the
sink counted / seconds until the response arrived) and peak RSS (VmRSS
sampled every 20 ms) minus RSS after the warm-up; median of `--runs`.

The file is sparse so the disk plays no part: this measures what the client
costs per byte (reads, framing, writes), on loopback, which is noisy; the
ratios between clients matter more than the absolute numbers.

Run: python3 bench/upload_compare.py [--size-gib 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any

from upload_memory import RssSampler, machine, rss_bytes, sink_process, sparse_file

CLIENTS = ("hyperhttp", "aiohttp", "httpx")


async def with_hyperhttp(url: str, path: str) -> tuple[int, float, int, int]:
    import hyperhttp

    async with hyperhttp.Client(http2=False, timeout=600.0) as client:
        (await client.post(url, files={"f": ("w.bin", b"x" * 1024)})).raise_for_status()
        idle = rss_bytes()
        with RssSampler() as sampler:
            started = time.perf_counter()
            response = await client.post(url, files={"f": pathlib.Path(path)})
            elapsed = time.perf_counter() - started
        response.raise_for_status()
        return int(response.text), elapsed, idle, sampler.peak


async def with_aiohttp(url: str, path: str) -> tuple[int, float, int, int]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        warm = aiohttp.FormData()
        warm.add_field("f", b"x" * 1024, filename="w.bin")
        async with session.post(url, data=warm) as response:
            response.raise_for_status()
            await response.read()
        idle = rss_bytes()
        with open(path, "rb") as fh, RssSampler() as sampler:
            form = aiohttp.FormData()
            form.add_field("f", fh, filename="big.bin", content_type="application/octet-stream")
            started = time.perf_counter()
            async with session.post(url, data=form) as response:
                response.raise_for_status()
                text = await response.text()
            elapsed = time.perf_counter() - started
        return int(text), elapsed, idle, sampler.peak


async def with_httpx(url: str, path: str) -> tuple[int, float, int, int]:
    import httpx

    async with httpx.AsyncClient(timeout=600.0) as client:
        (await client.post(url, files={"f": ("w.bin", b"x" * 1024)})).raise_for_status()
        idle = rss_bytes()
        with open(path, "rb") as fh, RssSampler() as sampler:
            started = time.perf_counter()
            response = await client.post(url, files={"f": ("big.bin", fh)})
            elapsed = time.perf_counter() - started
        response.raise_for_status()
        return int(response.text), elapsed, idle, sampler.peak


Result = tuple[int, float, int, int]  # body bytes, seconds, idle RSS, peak RSS
RUNNERS: dict[str, Callable[[str, str], Coroutine[Any, Any, Result]]] = {
    "hyperhttp": with_hyperhttp,
    "aiohttp": with_aiohttp,
    "httpx": with_httpx,
}


def client_main(name: str, url: str, path: str) -> None:
    sent, seconds, idle, peak = asyncio.run(RUNNERS[name](url, path))
    print(json.dumps({"bytes": sent, "seconds": seconds, "idle_rss": idle, "peak_rss": peak}))


def one_run(name: str, url: str, path: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--client", name, "--url", url, "--file", path]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def orchestrate(size_gib: float, runs: int) -> None:
    size = int(size_gib * 2**30)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CLIENTS}
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/big.bin"
        sparse_file(path, size)
        with sink_process(None) as (h1_port, _):
            url = f"http://127.0.0.1:{h1_port}/upload"
            for _ in range(runs):  # interleaved, so drift hits every client alike
                for name in CLIENTS:
                    r = one_run(name, url, path)
                    if r["bytes"] < size:
                        raise SystemExit(f"{name}: the sink got {r['bytes']} of {size} bytes")
                    results[name].append(r)
    summary = {}
    for name, rs in results.items():
        summary[name] = {
            "mb_s": statistics.median(r["bytes"] / r["seconds"] / 1e6 for r in rs),
            "peak_over_idle": statistics.median(r["peak_rss"] - r["idle_rss"] for r in rs),
            "peak": statistics.median(r["peak_rss"] for r in rs),
            "all_mb_s": [round(r["bytes"] / r["seconds"] / 1e6) for r in rs],
        }
    base = summary["hyperhttp"]
    print(f"{size_gib:g} GiB sparse file, multipart upload over HTTP/1.1, median of {runs}")
    print("| client | MB/s (runs) | vs hyperhttp | peak RSS | peak - idle | vs hyperhttp |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        print(
            f"| {name} | {s['mb_s']:.0f} ({', '.join(map(str, s['all_mb_s']))}) | "
            f"{s['mb_s'] / base['mb_s']:.2f}x | {s['peak'] / 2**20:.1f} MiB | "
            f"{s['peak_over_idle'] / 2**20:.1f} MiB | "
            f"{s['peak_over_idle'] / max(base['peak_over_idle'], 1):.2f}x |"
        )
    print(f"machine: {machine()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--client", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args.client, args.url, args.file)
    else:
        orchestrate(args.size_gib, args.runs)


if __name__ == "__main__":
    main()
