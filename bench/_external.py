"""The server's own ceiling: native load generators (wrk for HTTP/1.1 by
duration, h2load for HTTP/2 and for counted downloads and the upload), each a
child process pinned to the client CPU, its CPU time and peak RSS taken from
wait4() on its pid.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from typing import Any

from _scenarios import Scenario
from _servers import pin

_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def available(name: str) -> str | None:
    return shutil.which(name)


def version(name: str) -> str:
    try:
        if name == "wrk":
            out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
            m = re.search(r"wrk (\S+)", out.stdout + out.stderr)
        else:
            out = subprocess.run([name, "--version"], capture_output=True, text=True, timeout=10)
            m = re.search(r"nghttp2/(\S+)", out.stdout + out.stderr)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    return m.group(1) if m else "?"


def _run_wait4(cmd: list[str], cpu: int | None, timeout: float) -> tuple[str, float, int, float]:
    t0 = time.perf_counter()
    out_path = f"/tmp/bench-ext-{os.getpid()}.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=lambda: pin(cpu))
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"{cmd[0]} did not finish within {timeout:.0f}s")
            time.sleep(0.02)
    wall = time.perf_counter() - t0
    with open(out_path, "rb") as fh:
        text = fh.read().decode(errors="replace")
    os.unlink(out_path)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {text[-500:]}")
    return text, ru.ru_utime + ru.ru_stime, int(ru.ru_maxrss), wall


def _finished(text: str) -> float:
    m = re.search(r"finished in ([\d.]+)(s|ms|us)", text)
    if not m:
        raise RuntimeError(f"cannot parse h2load output: {text[-500:]}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _succeeded(text: str) -> int:
    m = re.search(r"(\d+) succeeded", text)
    if not m:
        raise RuntimeError(f"cannot parse h2load output: {text[-500:]}")
    return int(m.group(1))


def run(tool: str, sc: Scenario, url: str, settings: dict[str, Any]) -> dict[str, Any]:
    """One ceiling run; the same result keys as a Python worker's."""
    cpu, duration, warmup = settings["cpu"], settings["duration"], settings["warmup"]
    timeout = duration + warmup + 120
    if tool == "wrk":
        cmd = ["wrk", "-t1", f"-c{sc.inflight}", f"-d{max(1, round(duration))}s", url]
        text, cpu_s, rss, _ = _run_wait4(cmd, cpu, timeout)
        m = re.search(r"(\d+) requests in ([\d.]+)(s|ms|us)", text)
        if not m:
            raise RuntimeError(f"cannot parse wrk output: {text[-500:]}")
        ops, elapsed = int(m.group(1)), float(m.group(2)) * _UNITS[m.group(3)]
        if "Non-2xx" in text or "Socket errors" in text:
            raise RuntimeError(f"wrk saw errors: {text[-300:]}")
        nbytes = ops * settings["tiny_size"]
    elif sc.kind == "tiny":  # h2load, HTTP/2: one connection, `inflight` streams
        cmd = ["h2load", "-t1", "-c1", f"-m{sc.inflight}", "-D", str(int(max(duration, 1))),
               f"--warm-up-time={max(int(warmup), 1)}", url]
        text, cpu_s, rss, _ = _run_wait4(cmd, cpu, timeout)
        ops, elapsed = _succeeded(text), _finished(text)
        nbytes = ops * settings["tiny_size"]
    elif sc.kind == "download":
        conns = ["--h1", f"-c{sc.inflight}", "-m1"] if sc.proto == "h1" else ["-c1", f"-m{sc.inflight}"]
        cmd = ["h2load", "-t1", f"-n{sc.count}", *conns, url]
        text, cpu_s, rss, _ = _run_wait4(cmd, cpu, timeout)
        ops, elapsed = _succeeded(text), _finished(text)
        nbytes = ops * settings["large_size"]
    else:  # upload: the raw file as the body (h2load does not do multipart)
        cmd = ["h2load", "--h1", "-t1", "-n1", "-c1", "-d", settings["upload_file"], url]
        text, cpu_s, rss, _ = _run_wait4(cmd, cpu, timeout)
        ops, elapsed = _succeeded(text), _finished(text)
        nbytes = os.path.getsize(settings["upload_file"])
    if ops == 0:
        raise RuntimeError(f"{tool} completed no request: {text[-500:]}")
    return {"ops": ops, "bytes": nbytes, "elapsed": elapsed, "cpu": cpu_s,
            "maxrss_kb": rss, "version": version(tool), "module_file": available(tool) or "?",
            "cpu_whole_run": True}
