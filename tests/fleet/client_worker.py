"""A scriptable worker process driving real ``hyperhttp.Client`` objects.

    python -m tests.fleet.client_worker LOOP

Like `tests.fleet.worker`, but one level up: the process holds named
`hyperhttp.Client` instances (usually ``Client(coordinator=...)``) and sends
real HTTP requests, so a test sees the fleet through the pool, the dialer's
DNS cache and the client's breaker gate. Reads one JSON command per line on
stdin, writes JSON events on stdout:

    ["client", tag, name, kwargs]   -> ["client", tag, name]
        kwargs go to `hyperhttp.Client`; "breaker": {...} builds a
        `DomainCircuitBreakerManager` from those keywords
    ["load", tag, name, urls, tasks, per_task, seconds]
        -> ["loaded", tag, ok, errors]   tasks loop over urls until each sent
        per_task requests (or `seconds` ran out); ok counts 200 answers,
        errors the exception (or "status NNN") of every other
    ["get", tag, name, url]         -> ["got", tag, status | exception name, start, end]
        start/end: time.monotonic() (one clock for every process on Linux)
    ["info", tag, name]             -> ["info", tag, {...}]   fleet and pool state
    ["sockets", tag, ports]         -> ["sockets", tag, {port: open sockets}]
    ["close", tag, name]            -> ["closed", tag]
    ["exit"]

Every name ending in ".fleet.test" resolves to 127.0.0.1 through a patched
system resolver that counts its lookups (after a short delay, so concurrent
lookups in several processes overlap). Warnings of "hyperhttp.shared" are
counted, and every log record at WARNING goes to stderr too.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections.abc import Coroutine
from typing import Any

import uvloop

import hyperhttp
from hyperhttp._transport import dns as dns_module
from hyperhttp.errors.circuit_breaker import DomainCircuitBreakerManager
from hyperhttp.shared import _connect
from tests.fleet._jsonlines import emit, serve_commands
from tests.support.sockets import sockets_connected_to

FAKE_SUFFIX = ".fleet.test"
LOOKUP_DELAY = 0.2
MAX_ERRORS = 50

_real_resolver = dns_module.system_resolver
lookups: dict[str, int] = {}


async def counting_resolver(host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
    """The system resolver, except that it counts and knows the fake names."""
    lookups[host] = lookups.get(host, 0) + 1
    if host.endswith(FAKE_SUFFIX):
        await asyncio.sleep(LOOKUP_DELAY)
        return [(int(socket.AF_INET), ("127.0.0.1", port))]
    return await _real_resolver(host, port)


# DNSCache picks its default resolver when built: patch before any Client exists.
dns_module.system_resolver = counting_resolver


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())





def build_client(kwargs: dict[str, Any]) -> hyperhttp.Client:
    kwargs = dict(kwargs)
    breaker = kwargs.pop("breaker", None)
    if breaker is not None:
        kwargs["circuit_breaker_manager"] = DomainCircuitBreakerManager(**breaker)
    kwargs.setdefault("trust_env", False)
    kwargs.setdefault("http2", False)
    return hyperhttp.Client(**kwargs)


class Driver:
    def __init__(self) -> None:
        self.clients: dict[str, hyperhttp.Client] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.done = asyncio.Event()
        self.warnings = _Warnings()
        logging.getLogger("hyperhttp.shared").addHandler(self.warnings)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def load(self, tag: str, name: str, urls: list[str], tasks: int,
                   per_task: int, seconds: float) -> None:
        client = self.clients[name]
        deadline = time.monotonic() + seconds
        ok = 0
        errors: list[str] = []

        async def one(offset: int) -> None:
            nonlocal ok
            for i in range(per_task):
                if time.monotonic() >= deadline:
                    return
                try:
                    response = await client.get(urls[(offset + i) % len(urls)])
                except Exception as exc:
                    errors.append(type(exc).__name__)
                    continue
                if response.status_code == 200:
                    ok += 1
                else:
                    errors.append(f"status {response.status_code}")

        await asyncio.gather(*(one(n) for n in range(tasks)))
        emit("loaded", tag, ok, errors[:MAX_ERRORS])

    async def get(self, tag: str, name: str, url: str) -> None:
        start = time.monotonic()
        try:
            response = await self.clients[name].get(url)
            outcome: Any = response.status_code
        except Exception as exc:
            outcome = type(exc).__name__
        emit("got", tag, outcome, start, time.monotonic())

    def info(self, tag: str, name: str) -> None:
        client = self.clients[name]
        fleet: Any = client._fleet
        stats = client.get_pool_stats()
        emit("info", tag, {
            "connected": fleet.is_connected() if fleet is not None else None,
            "leases": len(fleet.leases_held) if fleet is not None else None,
            "caps": list(fleet.fallback_caps()) if fleet is not None else None,
            "open": sum(entry["total"] for entry in stats.values()),
            "stats": stats,
            "warnings": self.warnings.messages,
            "lookups": lookups,
            "spawned": len(_connect._SPAWNED),
        })

    async def close(self, tag: str, name: str) -> None:
        await self.clients.pop(name).aclose()
        emit("closed", tag)

    def command(self, cmd: list[Any]) -> None:
        op = cmd[0]
        if op == "client":
            self.clients[cmd[2]] = build_client(cmd[3])
            emit("client", cmd[1], cmd[2])
        elif op == "load":
            self.spawn(self.load(*cmd[1:]))
        elif op == "get":
            self.spawn(self.get(*cmd[1:]))
        elif op == "info":
            self.info(cmd[1], cmd[2])
        elif op == "sockets":
            emit("sockets", cmd[1], sockets_connected_to(cmd[2]))
        elif op == "close":
            self.spawn(self.close(cmd[1], cmd[2]))
        elif op == "exit":
            self.done.set()

    async def run(self) -> None:
        await serve_commands(self.command, self.done)
        for client in self.clients.values():
            await client.aclose()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(process)d %(name)s %(levelname)s %(message)s")
    factory = uvloop.new_event_loop if sys.argv[1] == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(Driver().run())


if __name__ == "__main__":
    main()
