"""Microbenchmark: hyperhttp's HTTP/2 client against a canned h2 server.

    python3 bench/h2_micro.py [--seconds S] [--inflight 1,64] [--loop uvloop]
                              [--repeats R] [--download-mib N] [--profile FILE]

The server runs in a separate process (pinned to CPU 0 when there are two
or more CPUs; the client goes to CPU 1). It is a few dozen lines of raw
HTTP/2 framing over TLS (ALPN h2), not h2: it answers every request HEADERS
with one precomputed HEADERS frame and one 13-byte DATA frame, so it costs
a few µs per request and the client is what is measured. A second port
serves `--download-mib` MiB per request in 8 KiB DATA frames (as nginx
sends them) under the client's flow-control windows.

Each case runs `inflight` tasks looping GET (body read) for a short warm-up
and then `--seconds`; it reports requests/s and the client's CPU time (user
+ system, whole process) per request. The download case runs 4 downloads
at a time and reports MB/s and CPU ms per MiB. Medians over `--repeats`.
Everything is bounded (durations, subprocess timeout) and on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `--tree DIR` imports hyperhttp from another checkout (before/after runs).
_TREE = sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv[:-1] else str(ROOT)
sys.path.insert(0, _TREE)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BODY = b"Hello, world!"
# HPACK, static table only (no dynamic state): :status 200 (index 8),
# content-length "13" and content-type "text/plain" as literals without
# indexing, with indexed names (28 and 31).
RESPONSE_BLOCK = (
    b"\x88" + b"\x0f\x0d\x02" + str(len(BODY)).encode() + b"\x0f\x10\x0a" + b"text/plain"
)
DL_BLOCK = b"\x88" + b"\x0f\x10\x18" + b"application/octet-stream"


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    head = len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big")
    return head + payload


# --- the server (child process) ----------------------------------------------
class _ServerProto(asyncio.Protocol):
    """One client connection: canned answers, flow control for downloads."""

    def __init__(self, download: int) -> None:
        self.download = download  # 0: tiny responses
        self.buf = bytearray()
        self.preface = False
        self.transport: Any = None
        self.conn_window = 65535
        self.initial_window = 65535
        self.max_frame = 16384
        self.pending: dict[int, list[int]] = {}  # stream -> [remaining, window]

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # MAX_CONCURRENT_STREAMS 128 (as nginx), a large receive window.
        settings = struct.pack(">HI", 3, 128) + struct.pack(">HI", 4, 1 << 20)
        transport.write(frame(4, 0, 0, settings))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.preface:
            if len(buf) < len(PREFACE):
                return
            del buf[: len(PREFACE)]
            self.preface = True
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 9:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            if n - pos < 9 + length:
                break
            kind = buf[pos + 3]
            flags = buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[pos + 9 : pos + 9 + length])
            pos += 9 + length
            if kind == 1:  # HEADERS: answer it
                if self.download:
                    out.append(frame(1, 4, sid, DL_BLOCK))
                    self.pending[sid] = [self.download, self.initial_window]
                else:
                    out.append(frame(1, 4, sid, RESPONSE_BLOCK))
                    out.append(frame(0, 1, sid, BODY))
            elif kind == 4 and not flags & 1:  # SETTINGS
                for i in range(0, length, 6):
                    ident, value = struct.unpack(">HI", payload[i : i + 6])
                    if ident == 4:
                        delta = value - self.initial_window
                        self.initial_window = value
                        for st in self.pending.values():
                            st[1] += delta
                    elif ident == 5:
                        self.max_frame = value
                out.append(frame(4, 1, 0))
            elif kind == 6 and not flags & 1:  # PING
                out.append(frame(6, 1, 0, payload))
            elif kind == 8:  # WINDOW_UPDATE
                inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
                if sid == 0:
                    self.conn_window += inc
                elif sid in self.pending:
                    self.pending[sid][1] += inc
            elif kind == 3:  # RST_STREAM
                self.pending.pop(sid, None)
        del buf[:pos]
        if self.pending:
            self._send_data(out)
        if out:
            self.transport.writelines(out)

    def _send_data(self, out: list[bytes]) -> None:
        # 8 KiB frames, as nginx sends them (its http2_chunk_size).
        chunk = b"x" * min(self.max_frame, 8192)
        for sid in list(self.pending):
            st = self.pending[sid]
            while st[0] and st[1] > 0 and self.conn_window > 0:
                size = min(st[0], st[1], self.conn_window, len(chunk))
                st[0] -= size
                st[1] -= size
                self.conn_window -= size
                out.append(frame(0, 0 if st[0] else 1, sid, chunk[:size]))
            if not st[0]:
                del self.pending[sid]


def serve(cert: str, key: str, port_file: str, download: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tiny = await loop.create_server(lambda: _ServerProto(0), "127.0.0.1", 0, ssl=ctx)
        big = await loop.create_server(lambda: _ServerProto(download), "127.0.0.1", 0, ssl=ctx)
        ports = [s.sockets[0].getsockname()[1] for s in (tiny, big)]
        Path(port_file).write_text(f"{ports[0]} {ports[1]}")
        await asyncio.sleep(3600)  # the parent stops us by pid

    asyncio.run(main())


# --- the client (this process) -------------------------------------------------
def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def run_tiny(url: str, ca: str, inflight: int, seconds: float) -> tuple[float, float]:
    import hyperhttp

    async with hyperhttp.Client(
        http2=True, verify=ca, max_connections=inflight, timeout=30.0
    ) as client:
        count = 0
        stop = False

        async def one() -> None:
            nonlocal count
            while not stop:
                r = await client.get(url)
                body = await r.aread()
                assert r.http_version == "HTTP/2" and body == BODY, (r.http_version, body)
                count += 1

        tasks = [asyncio.create_task(one()) for _ in range(inflight)]
        await asyncio.sleep(min(0.5, seconds / 2))  # warm-up
        c0, t0, cpu0 = count, time.perf_counter(), _cpu()
        await asyncio.sleep(seconds)
        c1, t1, cpu1 = count, time.perf_counter(), _cpu()
        stop = True
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    n = c1 - c0
    return n / (t1 - t0), (cpu1 - cpu0) / max(n, 1) * 1e6


async def run_download(url: str, ca: str, mib: int, count: int) -> tuple[float, float]:
    import hyperhttp

    async with hyperhttp.Client(http2=True, verify=ca, max_connections=4, timeout=30.0) as client:

        async def one() -> int:
            n = 0
            async with client.stream("GET", url) as r:
                async for chunk in r.aiter_raw():
                    n += len(chunk)
            return n

        await one()  # warm-up (connection, TLS)
        t0, cpu0 = time.perf_counter(), _cpu()
        sem = asyncio.Semaphore(4)

        async def limited() -> int:
            async with sem:
                return await one()

        sizes = await asyncio.wait_for(asyncio.gather(*(limited() for _ in range(count))), 120)
        t1, cpu1 = time.perf_counter(), _cpu()
    assert all(s == mib << 20 for s in sizes), sizes
    total = sum(sizes)
    return total / (t1 - t0) / 1e6, (cpu1 - cpu0) / (total / (1 << 20)) * 1e3


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {cpu})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--inflight", default="1,64")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--download-mib", type=int, default=10, help="0: no download case")
    parser.add_argument("--downloads", type=int, default=12)
    parser.add_argument("--profile", help="cProfile the client; stats written to this file")
    parser.add_argument("--tree", default=str(ROOT), help="import hyperhttp from this checkout")
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _pin(0)
        serve(args.serve[0], args.serve[1], args.serve[2], int(args.serve[3]))
        return

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {n: os.path.join(tmp, n) for n in ("ca.pem", "cert.pem", "key.pem", "ports")}
        ca.cert_pem.write_to_path(paths["ca.pem"])
        cert.cert_chain_pems[0].write_to_path(paths["cert.pem"])
        cert.private_key_pem.write_to_path(paths["key.pem"])
        server = subprocess.Popen([
            sys.executable, __file__, "--serve", paths["cert.pem"], paths["key.pem"],
            paths["ports"], str(args.download_mib << 20),
        ])
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(paths["ports"]) or not Path(paths["ports"]).read_text():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("h2 server did not start")
                time.sleep(0.05)
            tiny_port, big_port = map(int, Path(paths["ports"]).read_text().split())
            _pin(1)
            _run_cases(args, paths["ca.pem"], tiny_port, big_port)
        finally:
            server.terminate()
            server.wait(10)


def _run_cases(args: argparse.Namespace, ca: str, tiny_port: int, big_port: int) -> None:
    if args.loop == "uvloop":
        import uvloop

        runner: Any = uvloop.run
    else:
        runner = asyncio.run
    url = f"https://127.0.0.1:{tiny_port}/tiny.txt"
    cases = [int(x) for x in args.inflight.split(",") if x]
    results: dict[str, list[tuple[float, float]]] = {}
    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
    for _ in range(args.repeats):
        for n in cases:
            if prof:
                prof.enable()
            rate = runner(run_tiny(url, ca, n, args.seconds))
            if prof:
                prof.disable()
            results.setdefault(f"tiny, {n:>2} in flight", []).append(rate)
        if args.download_mib:
            dl = f"https://127.0.0.1:{big_port}/big.bin"
            if prof:
                prof.enable()
            rate = runner(run_download(dl, ca, args.download_mib, args.downloads))
            if prof:
                prof.disable()
            results.setdefault(f"download {args.download_mib} MiB x4", []).append(rate)
    import hyperhttp

    print(f"hyperhttp HTTP/2 micro: {hyperhttp.__file__}")
    print(f"({args.loop}, {args.repeats} repeats, medians)")
    for name, rows in results.items():
        rate = statistics.median(r[0] for r in rows)
        cost = statistics.median(r[1] for r in rows)
        unit = ("MB/s", "CPU ms/MiB") if name.startswith("download") else ("req/s", "CPU µs/req")
        print(f"  {name:<24} {rate:>10,.0f} {unit[0]:<6} {cost:>8.1f} {unit[1]}")
    if prof:
        prof.dump_stats(args.profile)
        print(f"profile written to {args.profile}")


if __name__ == "__main__":
    main()
