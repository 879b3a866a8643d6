"""The servers under load: nginx (static files, HTTP/1.1 and HTTP/2) and the
upload sink, each a child process we start and stop by pid.

nginx runs from a generated config in a temporary directory, in the
foreground (`daemon off;`), with one worker pinned to CPU 0. Its stub_status
counters (accepted connections, requests) are read before and after every
run, so each result records the connections and requests the server saw.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from _scenarios import MIB

HERE = Path(__file__).resolve().parent
TINY_BODY = b"Hello, world!"  # 13 bytes

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
{user}
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    # Long-lived connections: the server must never close one mid-run.
    keepalive_requests 1000000;
    keepalive_timeout 3600s;
    {h2_extra}
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    types {{ text/plain txt; application/octet-stream bin; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{h1_port} backlog=4096;
        root {work}/www;
        location = /nginx_status {{ stub_status; }}
    }}
    server {{
        listen 127.0.0.1:{h2_port} ssl{h2_listen} backlog=4096;
        {h2_on}
        ssl_certificate {work}/server.pem;
        ssl_certificate_key {work}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:1m;
        root {work}/www;
    }}
}}
"""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cpu: int | None) -> None:
    """Pin the calling process to one CPU when the machine has it."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    with contextlib.suppress(OSError):
        if cpu in os.sched_getaffinity(0):
            os.sched_setaffinity(0, {cpu})


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a child we started, by its pid: polite signal, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def ensure_nginx() -> str:
    """Path of the nginx binary, installing the Debian package when we can."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("nginx missing: running apt-get install -y nginx", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(["apt-get", "install", "-y", "nginx"], env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=False)
            subprocess.run(["apt-get", "install", "-y", "nginx"], env=env, check=False)
        found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if found:
            return found
    raise SystemExit("nginx is required: run `apt-get update && apt-get install -y nginx` as root")


def nginx_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr
    m = re.search(r"nginx/([\d.]+)", out)
    return m.group(1) if m else out.strip()


class Nginx:
    """An nginx master with one worker, serving /tiny.txt, /100k.bin, /10m.bin."""

    stats_overhead = 1  # each stub_status query is itself a connection and a request

    def __init__(self, work: Path, cpu: int | None) -> None:
        self.work = work
        self.cpu = cpu
        self.binary = ensure_nginx()
        self.version = nginx_version(self.binary)
        self.h1_port = free_port()
        self.h2_port = free_port()
        self.ca_path = str(work / "ca.pem")
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_files(self) -> None:
        import trustme

        www = self.work / "www"
        www.mkdir(parents=True, exist_ok=True)
        (self.work / "tmp").mkdir(exist_ok=True)
        (www / "tiny.txt").write_bytes(TINY_BODY)
        (www / "100k.bin").write_bytes(os.urandom(100 * 1024))
        with open(www / "10m.bin", "wb") as fh:
            fh.write(os.urandom(10 * MIB))
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(self.ca_path)
        cert.private_key_pem.write_to_path(str(self.work / "server.key"))
        cert.cert_chain_pems[0].write_to_path(str(self.work / "server.pem"))
        for p in cert.cert_chain_pems[1:]:
            with open(self.work / "server.pem", "ab") as fh:
                fh.write(p.bytes())
        # Workers drop to an unprivileged user when started as root: they
        # must be able to read the temp dir that mkdtemp made 0700.
        for path in [self.work, www, *www.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)

    def _config(self) -> str:
        major, minor, patch = (int(x) for x in [*self.version.split("."), "0", "0"][:3])
        new_h2 = (major, minor, patch) >= (1, 25, 1)  # `http2 on;` appeared in 1.25.1
        return NGINX_CONF.format(
            work=self.work,
            user="user root;" if os.geteuid() == 0 else "",
            h1_port=self.h1_port,
            h2_port=self.h2_port,
            h2_listen="" if new_h2 else " http2",
            h2_on="http2 on;" if new_h2 else "",
            h2_extra="",
        )

    def start(self) -> None:
        self._write_files()
        conf = self.work / "nginx.conf"
        conf.write_text(self._config())
        cmd = [self.binary, "-p", str(self.work), "-c", str(conf), "-e", str(self.work / "error.log")]
        cpu = self.cpu
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=lambda: pin(cpu))
        try:
            wait_port(self.h1_port)
            wait_port(self.h2_port)
        except RuntimeError:
            self.stop()
            log = (self.work / "error.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"nginx did not start:\n{log}") from None

    def stats(self) -> tuple[int, int]:
        """(accepted connections, requests) so far, this query's own included:
        the run between two queries saw `after - before - 1` of each."""
        conn = http.client.HTTPConnection("127.0.0.1", self.h1_port, timeout=10)
        try:
            conn.request("GET", "/nginx_status", headers={"Connection": "close"})
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        m = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.M)
        if not m:
            raise RuntimeError(f"unexpected stub_status output: {text!r}")
        return int(m.group(1)), int(m.group(3))

    def stop(self) -> None:
        # SIGQUIT: graceful shutdown of master and worker.
        if self.proc is not None:
            stop_process(self.proc, signal.SIGQUIT)


class Sink:
    """The upload sink (`_sink.py`): reads whole request bodies, answers after."""

    stats_overhead = 0  # the sink leaves its /stats queries out of the counts

    def __init__(self, work: Path, cpu: int | None) -> None:
        self.work = work
        self.cpu = cpu
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, str(HERE / "_sink.py"), "--port", str(self.port)]
        if self.cpu is not None:
            cmd += ["--cpu", str(self.cpu)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        wait_port(self.port)

    def stats(self) -> tuple[int, int]:
        """(connections that carried an upload, uploads completed)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/stats")
            data = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        return int(data["connections"]), int(data["requests"])

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
