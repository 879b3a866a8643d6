"""Client memory while uploading a huge file: idle RSS vs peak RSS.

Uploads a sparse file (4 GiB by default, made with truncate, so the disk is
not the bottleneck) as a multipart `files=` part to a sink in a separate
process, and reports the uploading process's RSS before the upload (after a
warm-up request, so the connection and TLS are set up) and at its peak
(VmRSS sampled every 20 ms, and ru_maxrss). A client that buffers the body
shows a peak near the file size; a streaming one a small constant above idle.

The sink (also used by bench/upload_compare.py) is a raw asyncio server that
reads every body to the end, discarding it, and only then answers 200 with
the byte count: HTTP/1.1 (Content-Length or chunked) on plain TCP, HTTP/2
(h2, TLS with ALPN) with its windows opened wide.

Run: python3 bench/upload_memory.py [--size-gib 4] [--protocols h1,h2] [--loop uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import pathlib
import platform
import resource
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

MAX_HEAD = 64 * 1024
H2_WINDOW = 16 * 1024 * 1024


# --------------------------------------------------------------------------- sink


class H1Sink(asyncio.Protocol):
    """Reads HTTP/1.1 requests (Content-Length or chunked bodies) and discards them."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = "head"
        self.left = 0  # body bytes (or current chunk bytes) still to come
        self.count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.state == "body" and not self.buf:
            take = min(self.left, len(data))  # fast path: no copy of the body
            self.count += take
            self.left -= take
            data = data[take:]
            if self.left == 0:
                self._answer()
            if not data:
                return
        self.buf += data
        while self._step():
            pass

    def _step(self) -> bool:
        buf = self.buf
        if self.state == "head":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    assert self.transport is not None
                    self.transport.abort()
                return False
            head = bytes(buf[:end]).lower()
            del buf[: end + 4]
            self.count = 0
            if b"transfer-encoding: chunked" in head:
                self.state = "size"
            else:
                length = 0
                for line in head.split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.state, self.left = "body", length
                if length == 0:
                    self._answer()
            return True
        if self.state == "body":
            take = min(self.left, len(buf))
            self.count += take
            self.left -= take
            del buf[:take]
            if self.left == 0:
                self._answer()
                return True
            return False
        if self.state in ("size", "trailer"):
            end = buf.find(b"\r\n")
            if end < 0:
                return False
            line = bytes(buf[:end])
            del buf[: end + 2]
            if self.state == "trailer":
                if not line:
                    self._answer()
                return True
            self.left = int(line.split(b";")[0], 16)
            self.state = "chunk" if self.left else "trailer"
            return True
        # "chunk": `left` bytes of data, then CRLF
        if self.left:
            take = min(self.left, len(buf))
            self.count += take
            self.left -= take
            del buf[:take]
            if self.left:
                return False
        if len(buf) < 2:
            return False
        del buf[:2]
        self.state = "size"
        return True

    def _answer(self) -> None:
        assert self.transport is not None
        body = str(self.count).encode()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        self.state = "head"


class H2Sink(asyncio.Protocol):
    """Reads HTTP/2 request bodies, returning flow-control credit at once."""

    def __init__(self) -> None:
        import h2.config
        import h2.connection

        self.transport: asyncio.Transport | None = None
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.counts: dict[int, int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import h2.settings

        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: H2_WINDOW})
        self.conn.increment_flow_control_window(H2_WINDOW)
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        import h2.events

        assert self.transport is not None
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.counts[event.stream_id] = 0
            elif isinstance(event, h2.events.DataReceived):
                self.counts[event.stream_id] += len(event.data)
                self.conn.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
            elif isinstance(event, h2.events.StreamEnded):
                body = str(self.counts.pop(event.stream_id)).encode()
                self.conn.send_headers(
                    event.stream_id,
                    [(b":status", b"200"), (b"content-length", str(len(body)).encode())],
                )
                self.conn.send_data(event.stream_id, body, end_stream=True)
        self.transport.write(self.conn.data_to_send())


def run_sink(cert_dir: str | None, ports: Any) -> None:
    """Sink process: HTTP/1.1 on one port, HTTP/2 over TLS on another."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        h1 = await loop.create_server(H1Sink, "127.0.0.1", 0)
        h2_port = 0
        if cert_dir is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(f"{cert_dir}/server.pem", f"{cert_dir}/server.key")
            ctx.set_alpn_protocols(["h2"])
            h2 = await loop.create_server(H2Sink, "127.0.0.1", 0, ssl=ctx)
            h2_port = h2.sockets[0].getsockname()[1]
        ports.put((h1.sockets[0].getsockname()[1], h2_port))
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a test dependency
        asyncio.run(main())


@contextmanager
def sink_process(cert_dir: str | None) -> Iterator[tuple[int, int]]:
    """Start the sink in its own process; yield its (h1 port, h2 port)."""
    ctx = multiprocessing.get_context("spawn")
    ports: Any = ctx.Queue()
    proc = ctx.Process(target=run_sink, args=(cert_dir, ports), daemon=True)
    proc.start()
    try:
        yield ports.get(timeout=30)
    finally:
        proc.terminate()
        proc.join(10)


def make_certs(directory: str) -> str:
    """A throwaway CA and a localhost certificate; returns the CA's PEM path."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.private_key_pem.write_to_path(f"{directory}/server.key")
    leaf.cert_chain_pems[0].write_to_path(f"{directory}/server.pem")
    for extra in leaf.cert_chain_pems[1:]:
        with open(f"{directory}/server.pem", "ab") as fh:
            fh.write(extra.bytes())
    ca.cert_pem.write_to_path(f"{directory}/ca.pem")
    return f"{directory}/ca.pem"


def sparse_file(path: str, size: int) -> None:
    with open(path, "wb") as fh:
        fh.truncate(size)


# --------------------------------------------------------------------------- client side


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class RssSampler:
    """Samples this process's VmRSS from a thread (the loop may be busy)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


async def hyperhttp_upload(url: str, path: str, ca: str | None, http2: bool) -> dict[str, Any]:
    import hyperhttp

    verify: bool | str = ca if ca is not None else True
    async with hyperhttp.Client(http2=http2, verify=verify, timeout=600.0) as client:
        warm = await client.post(url, files={"f": ("w.bin", b"x" * 1024)})
        warm.raise_for_status()
        idle = rss_bytes()
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with RssSampler() as sampler:
            started = time.perf_counter()
            response = await client.post(url, files={"f": pathlib.Path(path)})
            elapsed = time.perf_counter() - started
        response.raise_for_status()
        return {
            "http_version": response.http_version,
            "sink_bytes": int(response.text),
            "seconds": elapsed,
            "idle_rss": idle,
            "peak_rss_sampled": sampler.peak,
            "ru_maxrss_before": maxrss_before,
            "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }


def client_main(args: argparse.Namespace) -> None:
    upload = hyperhttp_upload(args.url, args.file, args.ca, args.http2)
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(upload)
    else:
        result = asyncio.run(upload)
    print(json.dumps(result))


def machine() -> str:
    cpu = "?"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs, "
        f"{mem:.0f} GiB RAM, Python {platform.python_version()}"
    )


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def orchestrate(args: argparse.Namespace) -> None:
    size = int(args.size_gib * 2**30)
    protocols = args.protocols.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        ca = make_certs(tmp)
        path = f"{tmp}/big.bin"
        sparse_file(path, size)
        with sink_process(tmp) as (h1_port, h2_port):
            for proto in protocols:
                url = (
                    f"http://127.0.0.1:{h1_port}/upload"
                    if proto == "h1"
                    else f"https://localhost:{h2_port}/upload"
                )
                cmd = [sys.executable, __file__, "--client", "--url", url, "--file", path,
                       "--loop", args.loop]
                if proto == "h2":
                    cmd += ["--ca", ca, "--http2"]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"{proto} client failed:\n{proc.stderr}")
                out = proc.stdout
                r = json.loads(out.strip().splitlines()[-1])
                body_over = r["sink_bytes"] - size
                print(
                    f"{proto} ({args.loop}): {r['http_version']} sent {r['sink_bytes']} bytes "
                    f"(file + {body_over} bytes of multipart framing) in {r['seconds']:.2f}s "
                    f"({r['sink_bytes'] / r['seconds'] / 1e6:.0f} MB/s); "
                    f"idle RSS {mib(r['idle_rss'])}, peak RSS (sampled) "
                    f"{mib(r['peak_rss_sampled'])}, ru_maxrss {mib(r['ru_maxrss'])} "
                    f"(before upload {mib(r['ru_maxrss_before'])}); "
                    f"peak - idle = {mib(r['peak_rss_sampled'] - r['idle_rss'])}"
                )
    print(f"machine: {machine()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-gib", type=float, default=4.0)
    parser.add_argument("--protocols", default="h1,h2")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the client's event loop (the sink always runs on uvloop)")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--http2", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
