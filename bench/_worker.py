"""One benchmark run in a fresh process: one client, one scenario, one loop.

    python bench/_worker.py '<json config>'

prints one line `RESULT {json}` with what it measured: operations and bytes
in the measured window, its wall time, the CPU this process spent in that
window (getrusage), peak RSS, and which module implemented the client. Any
failure is reported in the same line as {"ok": false, "error": ...} so the
harness records it and goes on.

The module `hyperhttp` is whatever `import hyperhttp` finds: ours from the
editable install, or the PyPI 2.1.0 package when the harness puts its
--target directory first on PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import os
import resource
import ssl
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _raw import RawClient
from _scenarios import MEDIUM_PATH

Get = Callable[[str], Awaitable[int]]


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def peak_rss_kb() -> int:
    """Peak RSS of this process. VmHWM, not ru_maxrss: Linux carries the
    parent's high-water mark across fork+exec into ru_maxrss."""
    with contextlib.suppress(OSError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


class Driver:
    """What every client is driven through: open, get, download, upload, close."""

    name = "?"
    module: Any = None
    seen = ""  # protocol of the first response, e.g. "HTTP/2", to catch fallbacks

    async def open(self, cfg: dict[str, Any]) -> None:
        raise NotImplementedError

    async def get(self, url: str) -> int:
        raise NotImplementedError

    async def download(self, url: str) -> int:
        raise NotImplementedError

    async def upload(self, url: str, path: str) -> int:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class HyperDriver(Driver):
    """Ours and hyperhttp 2.1.0: the same API, so one driver; the only gap is
    that 2.1.0's `stream()` is a coroutine, ours an async context manager,
    and 2.1.0's `get()` leaves the body to `aread()` (ours reads it already,
    and `aread()` is then free)."""

    async def open(self, cfg: dict[str, Any]) -> None:
        self.module = importlib.import_module("hyperhttp")
        n = max(cfg["inflight"], 1)
        self.client = self.module.Client(
            http2=cfg["proto"] == "h2", verify=cfg["ca"], max_connections=n,
            max_keepalive_connections=n, timeout=120.0,
        )
        await self.client.__aenter__()

    async def get(self, url: str) -> int:
        r = await self.client.get(url)
        body = await r.aread()
        self.seen = self.seen or str(r.http_version)
        if r.status_code != 200:
            raise RuntimeError(f"status {r.status_code}")
        return len(body)

    async def download(self, url: str) -> int:
        ctx = self.client.stream("GET", url)
        n = 0
        if inspect.iscoroutine(ctx):
            r = await ctx
            self.seen = self.seen or str(r.http_version)
            try:
                async for chunk in r.aiter_raw():
                    n += len(chunk)
            finally:
                await r.aclose()
        else:
            async with ctx as r:
                self.seen = self.seen or str(r.http_version)
                async for chunk in r.aiter_raw():
                    n += len(chunk)
        return n

    async def upload(self, url: str, path: str) -> int:
        with open(path, "rb") as fh:
            r = await self.client.post(
                url, files={"file": ("big.bin", fh, "application/octet-stream")}
            )
            await r.aread()
        return int(r.status_code)

    async def close(self) -> None:
        await self.client.__aexit__(None, None, None)


class AiohttpDriver(Driver):
    async def open(self, cfg: dict[str, Any]) -> None:
        import aiohttp

        self.module = aiohttp
        ctx = ssl.create_default_context(cafile=cfg["ca"])
        conn = aiohttp.TCPConnector(limit=max(cfg["inflight"], 1), ssl=ctx)
        self.session = aiohttp.ClientSession(
            connector=conn, timeout=aiohttp.ClientTimeout(total=None, sock_read=120)
        )

    async def get(self, url: str) -> int:
        async with self.session.get(url) as r:
            body = await r.read()
            if r.version is not None and not self.seen:
                self.seen = f"HTTP/{r.version.major}.{r.version.minor}"
            if r.status != 200:
                raise RuntimeError(f"status {r.status}")
        return len(body)

    async def download(self, url: str) -> int:
        n = 0
        async with self.session.get(url) as r:
            async for chunk in r.content.iter_any():
                n += len(chunk)
        return n

    async def upload(self, url: str, path: str) -> int:
        import aiohttp

        with open(path, "rb") as fh:
            form = aiohttp.FormData()
            form.add_field("file", fh, filename="big.bin",
                           content_type="application/octet-stream")
            async with self.session.post(url, data=form) as r:
                await r.read()
                return r.status

    async def close(self) -> None:
        await self.session.close()


class HttpxDriver(Driver):
    async def open(self, cfg: dict[str, Any]) -> None:
        import httpx

        self.module = httpx
        n = max(cfg["inflight"], 1)
        self.client = httpx.AsyncClient(
            http2=cfg["proto"] == "h2", verify=ssl.create_default_context(cafile=cfg["ca"]),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            timeout=120.0,
        )

    async def get(self, url: str) -> int:
        r = await self.client.get(url)
        self.seen = self.seen or r.http_version
        if r.status_code != 200:
            raise RuntimeError(f"status {r.status_code}")
        return len(r.content)

    async def download(self, url: str) -> int:
        n = 0
        async with self.client.stream("GET", url) as r:
            self.seen = self.seen or r.http_version
            async for chunk in r.aiter_raw():
                n += len(chunk)
        return n

    async def upload(self, url: str, path: str) -> int:
        with open(path, "rb") as fh:
            r = await self.client.post(
                url, files={"file": ("big.bin", fh, "application/octet-stream")}
            )
        return r.status_code

    async def close(self) -> None:
        await self.client.aclose()


class NiquestsDriver(Driver):
    async def open(self, cfg: dict[str, Any]) -> None:
        import niquests

        self.module = niquests
        n = max(cfg["inflight"], 1)
        # HTTP/3 off: nothing listens on QUIC here and Alt-Svc is never sent.
        self.session = niquests.AsyncSession(
            pool_connections=4, pool_maxsize=n, disable_http3=True, timeout=120,
        )
        # A session-level verify= did not reach the TLS layer in 3.21; per request does.
        self.verify = cfg["ca"]

    async def get(self, url: str) -> int:
        r = await self.session.get(url, verify=self.verify)
        self.seen = self.seen or f"HTTP/{(r.http_version or 0) / 10:.1f}"
        if r.status_code != 200:
            raise RuntimeError(f"status {r.status_code}")
        return len(r.content or b"")

    async def download(self, url: str) -> int:
        n = 0
        r: Any = await self.session.get(url, stream=True, verify=self.verify)
        self.seen = self.seen or f"HTTP/{(r.http_version or 0) / 10:.1f}"
        try:
            async for chunk in await r.iter_raw(65536):
                n += len(chunk)
        finally:
            await r.close()
        return n

    async def upload(self, url: str, path: str) -> int:
        with open(path, "rb") as fh:
            r = await self.session.post(
                url, files={"file": ("big.bin", fh, "application/octet-stream")},
                verify=self.verify,
            )
        return int(r.status_code or 0)

    async def close(self) -> None:
        await self.session.close()


class RawDriver(Driver):
    plain = False  # raw-protocol: a plain asyncio.Protocol, bytes per read
    pull = False  # raw-pull: the requesting task takes the body (HTTP/1.1 only)

    async def open(self, cfg: dict[str, Any]) -> None:
        if cfg["proto"] == "h2":
            import _raw_h2

            self.module = _raw_h2
            self.client = _raw_h2.RawH2Client(cfg["url"], cfg["ca"], plain=self.plain)
            self.seen = "HTTP/2"
            return
        import _raw

        self.module = _raw
        self.client = RawClient(cfg["url"], plain=self.plain, pull=self.pull,
                                window=cfg.get("raw_window", _raw.WINDOW),
                                buffer=cfg.get("raw_buffer", _raw.BUFFER))
        self.seen = "HTTP/1.1"

    async def get(self, url: str) -> int:
        return await self.client.get(url)

    async def download(self, url: str) -> int:
        return await self.client.download(url)

    async def upload(self, url: str, path: str) -> int:
        return await self.client.upload(url, path)

    async def close(self) -> None:
        await self.client.aclose()


class RawProtocolDriver(RawDriver):
    plain = True


class RawPullDriver(RawDriver):
    pull = True


DRIVERS: dict[str, type[Driver]] = {
    "hyperhttp": HyperDriver,
    "hyperhttp-2.1.0": HyperDriver,
    "aiohttp": AiohttpDriver,
    "httpx": HttpxDriver,
    "niquests": NiquestsDriver,
    "raw": RawDriver,
    "raw-protocol": RawProtocolDriver,
    "raw-pull": RawPullDriver,
}


async def _watch(tasks: list[asyncio.Task[None]], seconds: float) -> None:
    """Sleep `seconds`, but raise at once if a load task failed."""
    done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    for t in done:
        if t.exception() is not None:
            raise t.exception()  # type: ignore[misc]


async def run_tiny(d: Driver, cfg: dict[str, Any]) -> dict[str, Any]:
    """`inflight` tasks loop on GET for warm-up + duration; counts are
    snapshotted at both edges so the window never sees ramp-up or drain."""
    url = cfg["url"]
    done = 0
    nbytes = 0
    stop = False

    async def one() -> None:
        nonlocal done, nbytes
        while not stop:
            got = await d.get(url)  # not `nbytes += await`: that loses updates
            nbytes += got
            done += 1

    tasks = [asyncio.create_task(one()) for _ in range(cfg["inflight"])]
    try:
        await _watch(tasks, cfg["warmup"])
        c0, b0, cpu0, t0 = done, nbytes, cpu_seconds(), time.perf_counter()
        await _watch(tasks, cfg["duration"])
        c1, b1, cpu1, t1 = done, nbytes, cpu_seconds(), time.perf_counter()
    finally:
        stop = True
        _, pending = await asyncio.wait(tasks, timeout=30)
        for t in pending:
            t.cancel()
    return {"ops": c1 - c0, "bytes": b1 - b0, "elapsed": t1 - t0, "cpu": cpu1 - cpu0}


def warm_url(url: str) -> str:
    """The 100 KiB file next to `url`, for a download slot's warm-up."""
    return url.rsplit("/", 1)[0] + MEDIUM_PATH


async def run_download(d: Driver, cfg: dict[str, Any]) -> dict[str, Any]:
    """Warm up with one 100 KiB download per slot, then `count` downloads of
    the large file, `inflight` at a time."""
    warm = warm_url(cfg["url"])
    await asyncio.gather(*(d.download(warm) for _ in range(cfg["inflight"])))
    remaining = cfg["count"]
    total = 0
    # Seconds per download: each slot's first (over HTTP/1.1 its connection's
    # first large body: TCP windows and receive buffers still small) apart
    # from the rest.
    first: list[float] = []
    later: list[float] = []

    async def one() -> None:
        nonlocal remaining, total
        took = first
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            got = await d.download(cfg["url"])
            took.append(time.perf_counter() - start)
            took = later
            if got != cfg["size"]:
                raise RuntimeError(f"downloaded {got} bytes, expected {cfg['size']}")
            total += got

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(cfg["inflight"])))
    cpu1, t1 = cpu_seconds(), time.perf_counter()
    return {"ops": cfg["count"], "bytes": total, "elapsed": t1 - t0, "cpu": cpu1 - cpu0,
            "first_s": sum(first) / len(first),
            "later_s": sum(later) / len(later) if later else None}


async def run_upload(d: Driver, cfg: dict[str, Any]) -> dict[str, Any]:
    """Warm up with a 100 KiB upload on the same connection, then one upload
    of the big file."""
    status = await d.upload(cfg["url"], cfg["warm_file"])
    if status != 200:
        raise RuntimeError(f"warm-up upload: status {status}")
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    status = await d.upload(cfg["url"], cfg["file"])
    cpu1, t1 = cpu_seconds(), time.perf_counter()
    if status != 200:
        raise RuntimeError(f"upload: status {status}")
    return {"ops": 1, "bytes": os.path.getsize(cfg["file"]), "elapsed": t1 - t0,
            "cpu": cpu1 - cpu0}


RUNNERS = {"tiny": run_tiny, "download": run_download, "upload": run_upload}


def describe(module: Any) -> dict[str, str]:
    version = getattr(module, "__version__", None)
    if version is None and getattr(module, "__name__", "") in ("_raw", "_raw_h2"):
        version = "-"
    return {"version": str(version), "module_file": str(getattr(module, "__file__", "?"))}


async def amain(cfg: dict[str, Any]) -> dict[str, Any]:
    d = DRIVERS[cfg["client"]]()
    await d.open(cfg)
    try:
        info = describe(d.module)
        if cfg["kind"] == "probe":
            return info
        out = await RUNNERS[cfg["kind"]](d, cfg)
        out.update(info)
        out["http_version"] = d.seen
        return out
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(d.close(), 10)


def run_and_report(cfg: dict[str, Any], amain_fn: Any) -> None:
    """Pin, run `amain_fn(cfg)` on the configured loop and print its result
    (or the failure) as one `RESULT {json}` line, peak RSS included."""
    if cfg.get("cpu") is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cfg["cpu"]})
    try:
        if cfg["loop"] == "uvloop":
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        else:
            runner = asyncio.Runner()
        with runner:
            result = runner.run(amain_fn(cfg))
        result["ok"] = True
    except BaseException as exc:  # report every failure, the harness goes on
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500],
                  "traceback": traceback.format_exc()[-3000:]}
    result["maxrss_kb"] = peak_rss_kb()
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    run_and_report(json.loads(sys.argv[1]), amain)


if __name__ == "__main__":
    main()
