"""Benchmark hyperhttp against its peers on a local nginx.

    python bench/run.py                 # full run, writes bench/RESULTS.md
    python bench/run.py --quick         # smoke run, ~2 minutes
    python bench/run.py --scenarios h1-tiny-64 --clients hyperhttp,aiohttp,raw --repeats 5

Everything runs on 127.0.0.1: nginx (CPU 0) and the upload sink are children
of this process and are stopped by pid at the end; every (client, scenario,
loop) run is a fresh subprocess pinned to CPU 1. A client that fails is
recorded with its error and the run goes on. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _external  # noqa: E402
import _fleet  # noqa: E402
from _raw import BUFFER as RAW_BUFFER  # noqa: E402
from _raw import WINDOW as RAW_WINDOW  # noqa: E402
from _report import markdown, rate, scenario_table, summarize  # noqa: E402
from _scenarios import (  # noqa: E402
    CLIENT_BY_NAME,
    CLIENTS,
    DOWNLOADS,
    LOOPS,
    MIB,
    SCENARIO_BY_NAME,
    SCENARIOS,
    Scenario,
    cells,
    set_downloads,
)
from _servers import TINY_BODY, Nginx, Sink, pin  # noqa: E402

PEER_DIR = HERE / ".peers" / "hyperhttp210"
PEER_SPEC = "hyperhttp==2.1.0"
LARGE_SIZE = 10 * MIB
APT_TOOLS = {"wrk": "wrk", "h2load": "nghttp2-client"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 repeat, 1 s runs, 256 MiB upload (~2 minutes)")
    p.add_argument("--scenarios", default=None,
                   help="comma list; default all runnable: " +
                   ",".join(s.name for s in SCENARIOS if s.runnable))
    p.add_argument("--clients", default=None,
                   help="comma list; default all: " + ",".join(c.name for c in CLIENTS))
    p.add_argument("--loops", default=",".join(LOOPS), help="comma list of asyncio,uvloop")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3)")
    p.add_argument("--duration", type=float, default=None, help="seconds per tiny run (3)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds (1)")
    p.add_argument("--upload-mib", type=int, default=None, help="upload size in MiB (1024)")
    p.add_argument("--downloads", type=int, default=DOWNLOADS,
                   help=f"files per download run ({DOWNLOADS}, the targets' scenario); "
                   "more shows the steady state past a fresh process's first buffers")
    p.add_argument("--raw-window", type=int, default=RAW_WINDOW, metavar="BYTES",
                   help=f"HTTP/1.1 raw clients start their receive windows at BYTES "
                   f"({RAW_WINDOW}, as hyperhttp; 0: the kernel's default)")
    p.add_argument("--raw-buffer", type=int, default=RAW_BUFFER, metavar="BYTES",
                   help=f"HTTP/1.1 raw and raw-pull read into a buffer of BYTES "
                   f"({RAW_BUFFER}, hyperhttp's largest)")
    p.add_argument("--md", default=None,
                   help="Markdown report path (default bench/RESULTS.md; none in --quick)")
    p.add_argument("--report-only", metavar="JSON", default=None,
                   help="rebuild the tables from a bench/results/*.json file; run nothing")
    p.add_argument("--no-install", action="store_true",
                   help="never apt-get/pip install missing tools; skip them instead")
    args = p.parse_args(argv)
    quick = args.quick
    args.repeats = args.repeats or (1 if quick else 3)
    args.duration = args.duration or (1.0 if quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
    args.upload_mib = args.upload_mib or (256 if quick else 1024)
    if args.downloads < 1:
        p.error(f"--downloads must be at least 1, not {args.downloads}")
    if args.raw_window < 0:
        p.error(f"--raw-window must be 0 or more, not {args.raw_window}")
    if args.raw_buffer < 128 * 1024:
        # raw-pull stops reading while less than 64 KiB of its buffer is free.
        p.error(f"--raw-buffer must be at least 131072, not {args.raw_buffer}")
    if args.md is None and not quick:
        args.md = str(HERE / "RESULTS.md")
    return args


def _pick(value: str | None, known: dict[str, Any], default: list[str]) -> list[str]:
    if value is None:
        return default
    names = [v.strip() for v in value.split(",") if v.strip()]
    for n in names:
        if n not in known:
            raise SystemExit(f"unknown name {n!r}; choose from {', '.join(known)}")
    return names


def ensure_tools(clients: list[str], install: bool) -> list[str]:
    """Install what is missing when allowed; return the clients we can run."""
    usable = []
    for name in clients:
        if name in APT_TOOLS and not shutil.which(name):
            if install and os.geteuid() == 0 and shutil.which("apt-get"):
                env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
                pkg = APT_TOOLS[name]
                if subprocess.run(["apt-get", "install", "-y", pkg], env=env).returncode:
                    subprocess.run(["apt-get", "update"], env=env)
                    subprocess.run(["apt-get", "install", "-y", pkg], env=env)
            if not shutil.which(name):
                print(f"skipping {name}: install it with `apt-get install -y {APT_TOOLS[name]}`")
                continue
        if name == "niquests" and not _has_module("niquests") and install:
            subprocess.run([sys.executable, "-m", "pip", "install", "niquests"])
        if name == "hyperhttp-2.1.0" and not (PEER_DIR / "hyperhttp").is_dir() and install:
            subprocess.run([sys.executable, "-m", "pip", "install", "--target", str(PEER_DIR),
                            PEER_SPEC])
        usable.append(name)
    return usable


def _has_module(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def make_files(work: Path, upload_mib: int) -> tuple[str, str]:
    """The upload file (incompressible, written in 1 MiB blocks) and a 100 KiB warm-up file."""
    big, warm = work / "upload.bin", work / "warm.bin"
    block = os.urandom(MIB)
    with open(big, "wb") as fh:
        for i in range(upload_mib):
            fh.write(block[i % 256:] + block[:i % 256])
    warm.write_bytes(os.urandom(100 * 1024))
    return str(big), str(warm)


class Harness:
    """Owns the servers and runs one (client, scenario, loop) at a time."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        two_cpus = len(os.sched_getaffinity(0)) >= 2 if hasattr(os, "sched_getaffinity") else False
        self.server_cpu = 0 if two_cpus else None
        self.client_cpu = 1 if two_cpus else None
        self.nginx = Nginx(work, self.server_cpu)
        self.sink = Sink(work, self.server_cpu)
        self.upload_file, self.warm_file = make_files(work, args.upload_mib)

    def url(self, sc: Scenario) -> str:
        if sc.kind == "upload":
            return f"http://127.0.0.1:{self.sink.port}{sc.path}"
        if sc.proto == "h1":
            return f"http://127.0.0.1:{self.nginx.h1_port}{sc.path}"
        return f"https://127.0.0.1:{self.nginx.h2_port}{sc.path}"

    def settings(self) -> dict[str, Any]:
        return {"cpu": self.client_cpu, "duration": self.args.duration,
                "warmup": self.args.warmup, "tiny_size": len(TINY_BODY),
                "large_size": LARGE_SIZE, "upload_file": self.upload_file}

    def fleet_settings(self, client: str, sc: Scenario) -> dict[str, Any]:
        return {**self.settings(), "url": self.url(sc), "ca": self.nginx.ca_path,
                "pythonpath": str(PEER_DIR if client == "hyperhttp-2.1.0" else HERE.parent),
                "status_port": self.nginx.h1_port, "work": str(self.work)}

    def worker(self, client: str, loop: str, sc: Scenario, kind: str | None = None) -> dict[str, Any]:
        cfg = {"client": client, "loop": loop, "kind": kind or sc.kind, "proto": sc.proto,
               "inflight": sc.inflight, "url": self.url(sc), "ca": self.nginx.ca_path,
               "warmup": self.args.warmup, "duration": self.args.duration, "count": sc.count,
               "size": LARGE_SIZE, "file": self.upload_file, "warm_file": self.warm_file,
               "cpu": self.client_cpu, "raw_window": self.args.raw_window,
               "raw_buffer": self.args.raw_buffer}
        env = dict(os.environ)
        # Their package first on the path so `import hyperhttp` finds 2.1.0;
        # for ours, this checkout (an editable install may point elsewhere).
        env["PYTHONPATH"] = str(PEER_DIR if client == "hyperhttp-2.1.0" else HERE.parent)
        timeout = self.args.warmup + self.args.duration + 180
        cmd = [sys.executable, str(HERE / "_worker.py"), json.dumps(cfg)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout:.0f}s"}
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line[7:])
                return self._check(client, sc, kind or sc.kind, result)
        return {"ok": False, "error": f"exit {proc.returncode}: {proc.stderr[-400:]}"}

    def _check(self, client: str, sc: Scenario, kind: str, r: dict[str, Any]) -> dict[str, Any]:
        """Refuse results that measured the wrong thing."""
        if not r.get("ok"):
            return r
        mod = str(r.get("module_file", ""))
        if client == "hyperhttp-2.1.0" and (".peers" not in mod or r.get("version") != "2.1.0"):
            return {"ok": False, "error": f"imported the wrong hyperhttp: {mod} {r.get('version')}"}
        if client == "hyperhttp" and ".peers" in mod:
            return {"ok": False, "error": f"imported the peer instead of ours: {mod}"}
        seen = str(r.get("http_version", ""))
        if kind != "probe" and sc.proto == "h2" and not seen.startswith("HTTP/2"):
            return {"ok": False, "error": f"negotiated {seen or 'nothing'}, not HTTP/2"}
        if kind == "tiny" and r["bytes"] != r["ops"] * len(TINY_BODY):
            return {"ok": False, "error": f"{r['bytes']} body bytes for {r['ops']} requests"}
        return r

    def run_one(self, client: str, loop: str, sc: Scenario) -> dict[str, Any]:
        server = self.sink if sc.kind == "upload" else self.nginx
        before = server.stats()
        if CLIENT_BY_NAME[client].external:
            try:
                result = _external.run(client, sc, self.url(sc), self.settings())
                result["ok"] = True
            except Exception as exc:  # recorded; the matrix goes on
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        elif sc.kind == "fleet":
            result = _fleet.run(client, loop, sc, self.fleet_settings(client, sc))
            result = self._check(client, sc, "tiny", result)
        else:
            result = self.worker(client, loop, sc)
        after = server.stats()
        # The fleet runner's own stub_status samples are not the client's.
        own_conns, own_requests = result.pop("sampler", (0, 0))
        overhead = server.stats_overhead
        result["server_conns"] = after[0] - before[0] - overhead - own_conns
        result["server_requests"] = after[1] - before[1] - overhead - own_requests
        result.update({"scenario": sc.name, "client": client, "loop": loop})
        return result


def machine_info(nginx_version: str, pinned: bool) -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": str(os.cpu_count()), "CPU": model,
            "kernel": platform.release(), "python": platform.python_version(),
            "nginx": nginx_version,
            "pinning": "nginx and the sink on CPU 0, clients on CPU 1"
            if pinned else "none (one CPU)"}


def versions(probes: dict[str, dict[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, info in probes.items():
        if info.get("ok"):
            out[name] = f"{info['version']} ({info['module_file']})"
        else:
            out[name] = f"unavailable: {info.get('error')}"
    for pkg in ("uvloop", "h2", "h11", "aiohttp", "httpx", "httpcore", "niquests",
                "urllib3-future"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out.setdefault(f"{pkg} (package)", importlib.metadata.version(pkg))
    for tool in ("wrk", "h2load"):
        out[tool] = _external.version(tool) if shutil.which(tool) else "missing"
    return out


def run_matrix(h: Harness, scenarios: list[Scenario], clients: list[str],
               loops: list[str], repeats: int) -> list[dict[str, Any]]:
    """Scenario by scenario; within one, repeats interleaved A B C A B C,
    the order rotated each repeat so no client always follows the same one."""
    records: list[dict[str, Any]] = []
    for sc in scenarios:
        if not sc.runnable:
            print(f"-- {sc.name}: not runnable yet")
            continue
        todo = cells(sc, clients, loops)
        print(f"== {sc.name}: {sc.description} ({len(todo)} cells x {repeats})", flush=True)
        for rep in range(repeats):
            shift = rep % max(len(todo), 1)
            for client, loop in todo[shift:] + todo[:shift]:
                rec = h.run_one(client, loop, sc)
                rec["repeat"] = rep
                records.append(rec)
                if rec.get("ok"):
                    shown = f"{rate(sc, rec):,.1f} {sc.unit}  conns={rec['server_conns']}"
                else:
                    shown = "ERROR " + str(rec.get("error"))[:200]
                print(f"   [{rep + 1}/{repeats}] {client:16s} {loop:8s} {shown}", flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        with open(args.report_only) as fh:
            saved = json.load(fh)
        records = saved["runs"]
        set_downloads(saved["meta"].get("downloads", DOWNLOADS))
        args.md = args.md if args.md is not None else str(HERE / "RESULTS.md")
        report(saved["meta"], summarize(records), records, args, save=False)
        return 0
    set_downloads(args.downloads)
    default_sc = [s.name for s in SCENARIOS if s.runnable]
    scenarios = [SCENARIO_BY_NAME[n] for n in _pick(args.scenarios, SCENARIO_BY_NAME, default_sc)]
    clients = ensure_tools(_pick(args.clients, CLIENT_BY_NAME, [c.name for c in CLIENTS]),
                           not args.no_install)
    loops = _pick(args.loops, {k: k for k in LOOPS}, list(LOOPS))
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="hyperhttp-bench-"))
    h: Harness | None = None
    try:
        h = Harness(args, work)
        h.nginx.start()
        h.sink.start()
        pin(h.client_cpu)  # keep this process off the server's CPU too
        probe_sc = SCENARIO_BY_NAME["h1-tiny-1"]
        probes = {c: h.worker(c, "asyncio", probe_sc, kind="probe")
                  for c in clients
                  if CLIENT_BY_NAME[c].role not in ("ceiling", "raw", "raw-protocol", "raw-pull")}
        for name, info in probes.items():
            print(f"   {name}: {info.get('version')} {info.get('module_file') or info.get('error')}")
        records = run_matrix(h, scenarios, clients, loops, args.repeats)
        meta = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "command": " ".join(["python bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
                "mode": "quick" if args.quick else "full", "repeats": args.repeats,
                "duration": args.duration, "warmup": args.warmup,
                "upload_mib": args.upload_mib, "downloads": args.downloads,
                "raw_window": args.raw_window, "raw_buffer": args.raw_buffer,
                "machine": machine_info(h.nginx.version, h.client_cpu is not None),
                "versions": versions(probes), "wall_seconds": round(time.monotonic() - started),
                "notes": notes(records)}
    finally:
        if h is not None:
            h.sink.stop()
            h.nginx.stop()
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(records)
    report(meta, summary, records, args)
    print(f"done in {meta['wall_seconds']} s")
    return 0


def notes(records: list[dict[str, Any]]) -> list[str]:
    out = []
    ours_h2 = [r for r in records if r["client"] == "hyperhttp" and r["scenario"].startswith("h2")]
    if ours_h2 and not all(r.get("ok") for r in ours_h2):
        out.append("hyperhttp's HTTP/2 support is in progress: its failed h2 runs are "
                   "recorded as errors below.")
    return out


def report(meta: dict[str, Any], summary: dict[str, list[dict[str, Any]]],
           records: list[dict[str, Any]], args: argparse.Namespace, save: bool = True) -> None:
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if save:
        with open(results / f"{stamp}-{meta['mode']}.json", "w") as fh:
            json.dump({"meta": meta, "summary": summary, "runs": records}, fh, indent=1)
        print(f"raw results: {results}/{stamp}-{meta['mode']}.json")
    for name, rows in summary.items():
        print(f"\n### {name}: {SCENARIO_BY_NAME[name].description}\n")
        print(scenario_table(SCENARIO_BY_NAME[name], rows))
    text = markdown(meta, summary)
    if args.md:
        Path(args.md).write_text(text)
        print(f"wrote {args.md}")


if __name__ == "__main__":
    sys.exit(main())
