"""A scriptable fleet worker: ``python -m tests.fleet.worker ADDRESS LOOP [required]``.

Reads one JSON command per line on stdin and writes JSON events on stdout,
so a test drives several real worker processes against one coordinator:

    ["acquire", tag, origin, timeout, port|null]  -> ["granted", tag, lease_id] | ["error", tag, name]
        (with a port, also opens a real TCP connection to 127.0.0.1:port and keeps it)
    ["release", tag]                              -> ["released", tag]
    ["idle", tag]         the lease's connection is idle: the shed handler may close it
    ["churn", tag, [[origin, port], ...], tasks, seconds] -> ["churned", tag, count, errors]
    ["resolve", tag, host, port, delay]           -> ["resolved", tag, addresses, own_lookups]
    ["outcome", key, failed, probe] / ["breakers", f, r, s] (configure)
    ["breaker", tag, key]                         -> ["breaker", tag, state|null]
    ["probe", tag, key]                           -> ["probe", tag, bool]
    ["info", tag]   -> ["info", tag, connected, leases, warnings, caps]
    ["exit"]
Unsolicited: ["shed", origin, closed] whenever the coordinator asks to shed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from typing import Any

import uvloop

from hyperhttp.shared import Lease, connect_backend
from tests.fleet._jsonlines import emit, serve_commands


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.warnings.append(record.getMessage())



class Worker:
    def __init__(self, address: str, required: bool) -> None:
        self.backend = connect_backend(address, required=required, local_caps=(None, None))
        self.leases: dict[str, Lease] = {}
        self.writers: dict[str, asyncio.StreamWriter] = {}
        self.idle: list[str] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.own_lookups = 0
        self.counter = _Count()
        logging.getLogger("hyperhttp.shared").addHandler(self.counter)
        self.backend.set_shed_handler(self.shed)
        self.done = asyncio.Event()

    def shed(self, origin: str) -> bool:
        for tag in list(self.idle):
            lease = self.leases.get(tag)
            if lease is not None and (origin in ("", lease.origin)):
                self.idle.remove(tag)
                self.close(tag)
                emit("shed", origin, True)
                return True
        emit("shed", origin, False)
        return False

    def close(self, tag: str) -> None:
        writer = self.writers.pop(tag, None)
        lease = self.leases.pop(tag, None)
        if writer is not None:
            writer.transport.abort()
        if lease is None:
            return
        if writer is None:
            self.backend.release(lease)
            return
        # As the pool does: hand the slot back only once the socket is really
        # closed (the loop closes it a turn after abort), or another worker
        # may connect while this connection still exists.
        task = asyncio.ensure_future(self._release_when_closed(writer, lease))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _release_when_closed(self, writer: asyncio.StreamWriter, lease: Any) -> None:
        try:
            await writer.wait_closed()
        except OSError:
            pass
        self.backend.release(lease)

    async def acquire(self, tag: str, origin: str, timeout: float | None, port: int | None) -> None:
        try:
            lease = await self.backend.acquire(origin, timeout=timeout)
        except Exception as exc:
            emit("error", tag, type(exc).__name__)
            return
        self.leases[tag] = lease
        if port is not None:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            self.writers[tag] = writer
        emit("granted", tag, lease.id)

    async def churn(self, tag: str, targets: list[list[Any]], tasks: int, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        count = 0
        errors: list[str] = []

        async def one() -> None:
            nonlocal count
            while loop.time() < end:
                origin, port = random.choice(targets)
                try:
                    lease = await self.backend.acquire(origin, timeout=10.0)
                except Exception as exc:
                    errors.append(type(exc).__name__)
                    continue
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    await asyncio.sleep(random.random() * 0.01)
                    writer.transport.abort()
                    # Release only once the socket is really closed (uvloop closes
                    # the fd a loop iteration after abort()), as the pool does.
                    await writer.wait_closed()
                finally:
                    self.backend.release(lease)
                count += 1

        await asyncio.gather(*(one() for _ in range(tasks)))
        emit("churned", tag, count, errors)

    async def resolve(self, tag: str, host: str, port: int, delay: float) -> None:
        async def resolver(h: str, p: int) -> list[tuple[int, tuple[Any, ...]]]:
            self.own_lookups += 1
            await asyncio.sleep(delay)
            return [(2, ("127.0.0.9", p))]

        addrs = await self.backend.dns.resolve(host, port, resolver)
        emit("resolved", tag, [a[1][0] for a in addrs], self.own_lookups)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def command(self, cmd: list[Any]) -> None:
        op = cmd[0]
        b = self.backend
        if op == "acquire":
            self.spawn(self.acquire(cmd[1], cmd[2], cmd[3], cmd[4]))
        elif op == "release":
            self.close(cmd[1])
            emit("released", cmd[1])
        elif op == "idle":
            self.idle.append(cmd[1])
        elif op == "churn":
            self.spawn(self.churn(cmd[1], cmd[2], cmd[3], cmd[4]))
        elif op == "resolve":
            self.spawn(self.resolve(cmd[1], cmd[2], cmd[3], cmd[4]))
        elif op == "outcome":
            b.record_outcome(cmd[1], cmd[2], cmd[3])
        elif op == "breakers":
            b.configure_breakers(failure_threshold=cmd[1], recovery_timeout=cmd[2],
                                 success_threshold=cmd[3])
        elif op == "breaker":
            emit("breaker", cmd[1], b.breaker_state(cmd[2]))
        elif op == "probe":
            async def probe(tag: str, key: str) -> None:
                emit("probe", tag, await b.breaker_acquire_probe(key))
            self.spawn(probe(cmd[1], cmd[2]))
        elif op == "info":
            async def info(tag: str) -> None:
                connected = b.is_connected()
                emit("info", tag, connected, len(b.leases_held), self.counter.warnings,
                     list(b.fallback_caps()))
            self.spawn(info(cmd[1]))
        elif op == "connect":
            async def connect(tag: str) -> None:
                try:
                    emit("connected", tag, await b.ensure())
                except Exception as exc:
                    emit("error", tag, type(exc).__name__)
            self.spawn(connect(cmd[1]))
        elif op == "exit":
            self.done.set()

    async def run(self) -> None:
        await serve_commands(self.command, self.done)
        await self.backend.aclose()


def main() -> None:
    address, loop_name = sys.argv[1], sys.argv[2]
    required = len(sys.argv) > 3 and sys.argv[3] == "required"
    factory = uvloop.new_event_loop if loop_name == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(Worker(address, required).run())


if __name__ == "__main__":
    main()
