"""`hyperhttp demo`: a self-contained tour on loopback.

1. One client, HTTP/2: many concurrent requests share one TCP connection.
2. One client, HTTP/1.1: the pool's cap holds at the server.
3. A fleet (when the coordinator is available): several worker processes
   with one coordinator never open more connections than the fleet cap,
   and a killed worker's slots come back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .server import STREAMS_PER_CONNECTION, DemoServer, demo_ca_path

Print = Callable[[str], None]


async def _burst(client: Any, url: str, count: int) -> tuple[float, set[str]]:
    started = time.perf_counter()
    responses = await asyncio.gather(*[client.get(url) for _ in range(count)])
    elapsed = time.perf_counter() - started
    bad = [r.status_code for r in responses if r.status_code != 200]
    if bad:
        raise RuntimeError(f"demo server answered {bad[:3]}")
    return elapsed, {r.http_version for r in responses}


async def single_client_part(server: DemoServer, say: Print, requests: int) -> None:
    import hyperhttp

    ca = demo_ca_path()
    say(f"server: {server.url} (HTTP/2 and HTTP/1.1 by ALPN)\n")

    server.counts.reset_peak()
    before = server.counts.accepted
    async with hyperhttp.Client(verify=ca) as client:
        elapsed, versions = await _burst(client, server.url + "/slow/0.05", requests)
        stats = client.get_pool_stats()
    say(f"1. HTTP/2: {requests} concurrent requests in {elapsed:.2f}s over {sorted(versions)}")
    say(f"   server accepted {server.counts.accepted - before} TCP connection(s) "
        f"(it allows {STREAMS_PER_CONNECTION} streams on each); client pool: {stats}")

    cap = 8
    server.counts.reset_peak()
    before = server.counts.accepted
    async with hyperhttp.Client(verify=ca, http2=False, max_connections=cap) as client:
        elapsed, versions = await _burst(client, server.url + "/slow/0.02", requests)
    say(f"2. HTTP/1.1 with max_connections={cap}: {requests} requests in {elapsed:.2f}s "
        f"over {sorted(versions)}")
    say(f"   server saw at most {server.counts.peak} open connection(s) at once "
        f"({server.counts.accepted - before} accepted in all): the cap held\n")


def run(*, requests: int = 200, workers: int = 4, cap: int = 6, fleet: bool = True,
        say: Print = print) -> int:
    server = DemoServer().start()
    try:
        asyncio.run(single_client_part(server, say, requests))
        if fleet:
            try:
                from .fleet import fleet_part
            except ImportError:
                say("3. fleet: the coordinator is not available in this build")
            else:
                return fleet_part(server, say, workers=workers, cap=cap, requests=requests)
    finally:
        server.stop()
    return 0
