"""An idle HTTP/2 connection under the global cap, against hypercorn.

With `max_connections` reached, an HTTP/2 connection with no stream open or
reserved is idle like an idle HTTP/1.1 one: a waiter for another origin
closes it to make room (pool rule 3), at once or as soon as its last stream
ends, and never while a stream is in flight or reserved. Waiters across
origins are still served first come, first served. Closing the client
empties the pool's statistics.

The HTTP/2 server is one hypercorn with two origins, ``localhost:P`` and
``127.0.0.1:P`` (its certificate names both); the HTTP/1.1 one is cleartext.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import hyperhttp
from hyperhttp._transport.pool import ConnectionPool
from tests.support.doubles import pool_of, until
from tests.support.servers import ServerHandle

POOL_TIMEOUT = 3.0
BOUND = 10.0  # no test waits longer than this for anything


def make_client(ca_pem_path: str, pool: float | None = POOL_TIMEOUT) -> hyperhttp.Client:
    return hyperhttp.Client(
        max_connections=1,
        verify=ca_pem_path,
        trust_env=False,
        timeout=hyperhttp.Timeout(BOUND, pool=pool),
    )


def label(server: ServerHandle, host: str | None = None) -> str:
    return f"{host or server.url_host}:{server.port}"


def by_ip(server: ServerHandle) -> str:
    """The same server as another origin."""
    return f"{server.scheme}://127.0.0.1:{server.port}"


IDLE_H1 = {"idle": 1, "in_use": 0, "total": 1}
IDLE_H2 = {"idle": 1, "in_use": 0, "total": 1, "streams": 0}


def start_in_order(
    client: hyperhttp.Client, order: list[str], name: str, url: str
) -> asyncio.Future[hyperhttp.Response]:
    """GET `url` in a task that adds `name` to `order` when it is done."""
    task = asyncio.ensure_future(client.get(url))
    task.add_done_callback(lambda _: order.append(name))
    return task


class CapWatch:
    """Samples the pool's total while a test runs: the cap must hold."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.peak = 0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.pool.total)
            await asyncio.sleep(0.002)

    async def stop(self) -> int:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.peak


@pytest.fixture
def h2_one_stream(server_factory: Callable[..., ServerHandle]) -> Iterator[ServerHandle]:
    """HTTP/2 that allows one stream at a time per connection."""
    yield server_factory(tls=True, config={"h2_max_concurrent_streams": 1})


# --- (a) idle: evicted at once ----------------------------------------------------------


@pytest.mark.parametrize("other", ["h1", "h2"])
@pytest.mark.parametrize("pool_timeout", [POOL_TIMEOUT, None])
async def test_idle_h2_connection_makes_room_for_another_origin(
    https_server: ServerHandle,
    http_server: ServerHandle,
    ca_pem_path: str,
    other: str,
    pool_timeout: float | None,
) -> None:
    async with make_client(ca_pem_path, pool=pool_timeout) as client:
        first = await client.get(https_server.url + "/echo")
        assert first.http_version == "HTTP/2"
        assert client.get_pool_stats() == {label(https_server): IDLE_H2}

        if other == "h1":
            url, expect = http_server.url, {label(http_server): IDLE_H1}
        else:
            url, expect = by_ip(https_server), {label(https_server, "127.0.0.1"): IDLE_H2}
        started = time.monotonic()
        # Bounded even with no pool timeout: the unfixed pool waited forever.
        second = await asyncio.wait_for(client.get(url + "/echo"), 2 * POOL_TIMEOUT)
        elapsed = time.monotonic() - started

        assert second.status_code == 200
        assert elapsed < POOL_TIMEOUT / 3, elapsed  # evicted, not waited out
        assert client.get_pool_stats() == expect  # the HTTP/2 connection is gone
        assert pool_of(client).total == 1


# --- (b) busy: waited for, never stolen --------------------------------------------------


async def test_busy_h2_connection_is_waited_for_not_stolen(
    https_server: ServerHandle, http_server: ServerHandle, ca_pem_path: str
) -> None:
    async with make_client(ca_pem_path) as client:
        pool = pool_of(client)
        watch = CapWatch(pool)
        done: dict[str, float] = {}

        def start(name: str, url: str) -> asyncio.Future[hyperhttp.Response]:
            task = asyncio.ensure_future(client.get(url))
            task.add_done_callback(lambda _: done.setdefault(name, time.monotonic()))
            return task

        slow = start("slow", https_server.url + "/slow?delay=0.3")
        await until(lambda: client.get_pool_stats().get(label(https_server), {}).get("streams") == 1)
        other = start("other", http_server.url + "/echo")
        await until(lambda: pool.waiting == 1)
        # A second stream on the busy connection: when the first ends, the
        # connection is still in use and must not be closed under it.
        shared = start("shared", https_server.url + "/slow?delay=0.6")
        await until(lambda: client.get_pool_stats()[label(https_server)].get("streams") == 2)

        assert (await asyncio.wait_for(slow, BOUND)).json() == {"delay": 0.3}
        await asyncio.sleep(0.05)  # room for a wrong eviction to happen
        assert not other.done()
        assert client.get_pool_stats() == {
            label(https_server): {"idle": 0, "in_use": 1, "total": 1, "streams": 1}
        }
        assert pool.waiting == 1

        assert (await asyncio.wait_for(shared, BOUND)).json() == {"delay": 0.6}
        response = await asyncio.wait_for(other, BOUND)
        assert response.status_code == 200
        assert done["shared"] <= done["other"] < done["shared"] + POOL_TIMEOUT / 3
        assert client.get_pool_stats() == {label(http_server): IDLE_H1}
        assert await watch.stop() == 1
    # Both streams went over one connection: the second shared it.
    assert https_server.stats.connection_count == 1


# --- (c) FIFO across origins ---------------------------------------------------------------


async def test_fifo_across_origins_through_idle_h2_connections(
    https_server: ServerHandle, http_server: ServerHandle, ca_pem_path: str
) -> None:
    """Each waiter in turn needs the single slot; two of the hand-overs are
    by an HTTP/2 connection going idle (its last stream ending)."""
    async with make_client(ca_pem_path) as client:
        pool = pool_of(client)
        watch = CapWatch(pool)
        order: list[str] = []

        h2_a, h2_b = https_server.url, by_ip(https_server)
        tasks = [start_in_order(client, order, "holder", h2_a + "/slow?delay=0.4")]
        await until(lambda: pool.total == 1 and bool(client.get_pool_stats()))
        for name, url in [("h1-1", http_server.url), ("h2-b", h2_b), ("h1-2", http_server.url)]:
            tasks.append(start_in_order(client, order, name, url + "/echo"))
            await until(lambda: pool.waiting == len(tasks) - 1)  # queued in order

        responses = await asyncio.wait_for(asyncio.gather(*tasks), BOUND)
        assert all(r.status_code == 200 for r in responses)
        assert order == ["holder", "h1-1", "h2-b", "h1-2"]
        assert await watch.stop() == 1
        assert client.get_pool_stats() == {label(http_server): IDLE_H1}


@pytest.mark.parametrize("first", ["same-origin", "other-origin"])
async def test_fifo_between_a_stream_waiter_and_a_slot_waiter(
    h2_one_stream: ServerHandle, http_server: ServerHandle, ca_pem_path: str, first: str
) -> None:
    """One stream per connection: a waiter for the HTTP/2 origin needs the
    busy connection's stream, one for another origin needs the slot. When
    the stream ends, the older waiter wins. A stream reserved for the first
    is never closed by the second; the second never jumps the first."""
    server = h2_one_stream
    async with make_client(ca_pem_path) as client:
        pool = pool_of(client)
        watch = CapWatch(pool)
        order: list[str] = []

        holder = start_in_order(client, order, "holder", server.url + "/slow?delay=0.4")
        await until(lambda: client.get_pool_stats().get(label(server), {}).get("streams") == 1)
        waiters = [("same", server.url), ("other", http_server.url)]
        if first == "other-origin":
            waiters.reverse()
        tasks = [holder]
        for name, url in waiters:
            tasks.append(start_in_order(client, order, name, url + "/echo"))
            await until(lambda: pool.waiting == len(tasks) - 1)  # queued in order

        responses = await asyncio.wait_for(asyncio.gather(*tasks), BOUND)
        assert all(r.status_code == 200 for r in responses)
        assert order == ["holder"] + [name for name, _ in waiters]
        assert await watch.stop() == 1
    # Served first, the same-origin waiter shares the holder's connection;
    # served after the other origin, it needs a connection of its own.
    assert server.stats.connection_count == (1 if first == "same-origin" else 2)


# --- (d) statistics after close ------------------------------------------------------------


async def test_stats_are_empty_after_close(
    https_server: ServerHandle, http_server: ServerHandle, ca_pem_path: str
) -> None:
    client = hyperhttp.Client(verify=ca_pem_path, trust_env=False, timeout=BOUND)
    try:
        await client.get(https_server.url + "/echo")
        await asyncio.gather(*[client.get(http_server.url + "/slow?delay=0.05") for _ in range(3)])
        stats: dict[str, Any] = client.get_pool_stats()
        assert stats[label(https_server)]["total"] == 1
        assert stats[label(http_server)] == {"idle": 3, "in_use": 0, "total": 3}
    finally:
        await client.aclose()
    assert client.get_pool_stats() == {}
    pool = pool_of(client)
    assert pool.total == 0
    assert "total=0 " in repr(pool) and "closed=True" in repr(pool)
