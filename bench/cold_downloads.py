"""Cold-start downloads: rounds of first downloads on fresh connections.

    python bench/cold_downloads.py [--clients hyperhttp,raw-pull,raw] [--rounds 15]
                                   [--loop uvloop|asyncio] [--rcvwin-start BYTES]

Each client runs in a fresh process pinned to one CPU, nginx on the other.
A round opens a fresh client (so fresh connections), warms each of its 4
slots with one 100 KiB download, then times 4 concurrent 10 MiB downloads
over HTTP/1.1 cleartext. Each is its connection's first large body: the
`first ms` column of the h1-download tables, measured on its own. Round 0
also carries the process's first use of its receive buffers (the page
faults column); the later rounds show what a long-running process pays for
a new connection. Printed per client: round 0, the median of the later
rounds, CPU time and minor page faults for each.

On Linux hyperhttp sizes each new socket's receive buffer for a window of
2 MiB from the start (`_RECEIVE_WINDOW_START` in
hyperhttp/_transport/dial.py, which says why), and the raw clients do the
same (bench/_raw.py). `--rcvwin-start BYTES` is an experiment, not a
hyperhttp option: in hyperhttp's process only, it sets that start to BYTES,
and 0 leaves the kernel's default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _worker  # noqa: E402
from _servers import Nginx  # noqa: E402
from run import PEER_DIR  # noqa: E402

SLOTS = 4
SIZE = 10 * 1024 * 1024


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _set_receive_window_start(nbytes: int) -> None:
    """The experiment: another start for hyperhttp's receive windows (0: the kernel's)."""
    from hyperhttp._transport import dial

    if nbytes:
        dial._RECEIVE_WINDOW_START = nbytes
    else:
        dial._SETS_RECEIVE_WINDOW = False


async def rounds(cfg: dict[str, Any]) -> dict[str, Any]:
    """The child: `cfg["rounds"]` rounds, each on a fresh client."""
    if cfg["rcvwin_start"] is not None and cfg["client"] == "hyperhttp":
        _set_receive_window_start(cfg["rcvwin_start"])
    warm = _worker.warm_url(cfg["url"])
    walls: list[float] = []
    cpus: list[float] = []
    faults: list[int] = []
    for _ in range(cfg["rounds"]):
        driver = _worker.DRIVERS[cfg["client"]]()
        await driver.open(cfg)
        try:
            await asyncio.gather(*(driver.download(warm) for _ in range(SLOTS)))
            f0, c0, t0 = _minor_faults(), _worker.cpu_seconds(), time.perf_counter()
            got = await asyncio.gather(*(driver.download(cfg["url"]) for _ in range(SLOTS)))
            t1, c1, f1 = time.perf_counter(), _worker.cpu_seconds(), _minor_faults()
        finally:
            await driver.close()
        if any(n != SIZE for n in got):
            raise RuntimeError(f"downloaded {got} bytes, expected {SIZE} each")
        walls.append(t1 - t0)
        cpus.append(c1 - c0)
        faults.append(f1 - f0)
    return {"walls": walls, "cpus": cpus, "faults": faults}


def run_client(client: str, nginx: Nginx, args: argparse.Namespace) -> dict[str, Any]:
    cfg = {
        "client": client, "loop": args.loop, "proto": "h1", "inflight": SLOTS,
        "url": f"http://127.0.0.1:{nginx.h1_port}/10m.bin", "ca": nginx.ca_path,
        "rounds": args.rounds, "rcvwin_start": args.rcvwin_start, "cpu": 1 if args.pin else None,
    }
    # As in run.py: the PyPI package's directory first, so `import hyperhttp`
    # finds 2.1.0 there.
    env = dict(os.environ, PYTHONPATH=str(PEER_DIR if client == "hyperhttp-2.1.0" else HERE.parent))
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(cfg)],
            capture_output=True, text=True, env=env, timeout=300,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "no result within 300 s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    return {"ok": False, "error": (proc.stderr or "no result")[-500:]}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _worker.run_and_report(json.loads(sys.argv[2]), rounds)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="hyperhttp,raw-pull,raw")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--rcvwin-start", type=int, default=None, metavar="BYTES",
                        help="experiment: start hyperhttp's receive windows at BYTES (0: the kernel's default)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin nginx and the clients to separate CPUs")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (round 0 and a later one)")
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = [c for c in clients if c not in _worker.DRIVERS]
    if unknown:
        parser.error(f"unknown client(s) {', '.join(unknown)}; known: {', '.join(_worker.DRIVERS)}")
    if "hyperhttp-2.1.0" in clients and not (PEER_DIR / "hyperhttp").is_dir():
        parser.error("hyperhttp-2.1.0 is not installed yet: `python bench/run.py` installs it")
    with tempfile.TemporaryDirectory(prefix="hh-cold-") as work:
        nginx = Nginx(Path(work), 0 if args.pin else None)
        nginx.start()
        try:
            print(f"{SLOTS} first downloads of 10 MiB per round, HTTP/1.1, {args.loop}, "
                  f"{args.rounds} rounds" + (
                      "" if args.rcvwin_start is None
                      else f", hyperhttp's receive windows start at {args.rcvwin_start or 'the kernel default'}"
                  ))
            print(f"{'client':16s} {'round 0 ms':>10s} {'cpu':>6s} {'faults':>7s}   "
                  f"{'later ms':>9s} {'cpu':>6s} {'faults':>7s}")
            for client in clients:
                r = run_client(client, nginx, args)
                if not r.get("ok"):
                    print(f"{client:16s} FAILED: {r.get('error')}")
                    continue
                later = slice(1, None)
                print(f"{client:16s} {r['walls'][0] * 1e3:10.1f} {r['cpus'][0] * 1e3:6.1f} "
                      f"{r['faults'][0]:7d}   "
                      f"{statistics.median(r['walls'][later]) * 1e3:9.1f} "
                      f"{statistics.median(r['cpus'][later]) * 1e3:6.1f} "
                      f"{statistics.median(r['faults'][later]):7.0f}")
        finally:
            nginx.stop()


if __name__ == "__main__":
    main()
