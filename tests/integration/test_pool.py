"""The connection pool against a real keep-alive server that counts open
TCP connections: caps, FIFO fairness, keep-alive limits and expiry, dead
connections, and cancellation at every await never stranding a slot."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

import hyperhttp
from hyperhttp.errors.retry import RetryPolicy
from tests.support.raw import RawServer, read_head
from tests.support.servers import ServerHandle
from tests.support.sockets import sockets_connected_to as count_sockets


class Counting:
    """Open-connection counter shared between the server thread and the test."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.peak = 0
        self.accepted = 0
        self.order: list[str] = []

    def enter(self) -> None:
        with self.lock:
            self.open += 1
            self.accepted += 1
            self.peak = max(self.peak, self.open)

    def leave(self) -> None:
        with self.lock:
            self.open -= 1


def keepalive_handler(
    counts: Counting,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]:
    """Serve requests on one connection until the client closes it.
    `/delay/<seconds>/<tag>` waits, records <tag> and answers `tag`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The client resets a connection it gives up before it dials the next,
        # but this loop may run the new accept before the old EOF callback.
        # Yield first so the count follows the order the kernel saw.
        await asyncio.sleep(0.002)
        if reader.at_eof():
            writer.close()
            return  # dropped by the client before it was ever counted
        counts.enter()
        try:
            while True:
                try:
                    head = await read_head(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if not head:
                    return
                target = head.split(b" ", 2)[1].decode()
                parts = target.strip("/").split("/")
                tag = ""
                if parts[0] == "delay":
                    # Wait, but notice at once if the client goes away, so
                    # `open` counts connections that are open, not handlers
                    # still asleep on a connection the client already closed.
                    closed = asyncio.ensure_future(reader.read(1))
                    done, _ = await asyncio.wait(
                        [closed], timeout=float(parts[1])
                    )
                    if done:
                        return
                    closed.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await closed
                    tag = parts[2] if len(parts) > 2 else ""
                with counts.lock:
                    counts.order.append(tag)
                body = tag.encode() or b"ok"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        finally:
            counts.leave()
            writer.close()

    return handler


@pytest.fixture
def counting_server() -> tuple[RawServer, Counting]:
    counts = Counting()
    server = RawServer(keepalive_handler(counts)).start()  # type: ignore[arg-type]
    yield server, counts  # type: ignore[misc]
    server.stop()


def _totals(client: hyperhttp.Client) -> tuple[int, int]:
    stats = client.get_pool_stats()
    return (
        sum(s["in_use"] for s in stats.values()),
        sum(s["total"] for s in stats.values()),
    )


async def test_global_cap_holds_at_the_server(counting_server: tuple[RawServer, Counting]) -> None:
    server, counts = counting_server
    async with hyperhttp.Client(max_connections=4, timeout=10) as client:
        results = await asyncio.gather(
            *[client.get(f"{server.url}/delay/0.02/{i}") for i in range(40)]
        )
    assert [r.text for r in results] == [str(i) for i in range(40)]
    assert counts.peak <= 4
    assert counts.accepted == 4  # the four connections were reused, not re-opened


async def test_per_host_cap(counting_server: tuple[RawServer, Counting]) -> None:
    server, counts = counting_server
    async with hyperhttp.Client(max_connections=10, max_connections_per_host=2) as client:
        await asyncio.gather(*[client.get(f"{server.url}/delay/0.02") for _ in range(12)])
    assert counts.peak == 2


async def test_waiters_are_served_first_come_first_served(
    counting_server: tuple[RawServer, Counting],
) -> None:
    server, counts = counting_server
    async with hyperhttp.Client(max_connections=1) as client:
        first = asyncio.ensure_future(client.get(f"{server.url}/delay/0.1/first"))
        await asyncio.sleep(0.02)
        tasks = []
        for i in range(10):
            tasks.append(asyncio.ensure_future(client.get(f"{server.url}/delay/0/{i}")))
            await asyncio.sleep(0)  # each request queues before the next is made
        await asyncio.gather(first, *tasks)
    assert counts.order == ["first"] + [str(i) for i in range(10)]


async def test_fifo_across_hosts_and_idle_connections_make_room(
    counting_server: tuple[RawServer, Counting],
) -> None:
    server, counts = counting_server
    # Two origins on one server: 127.0.0.1 and localhost. With a global cap
    # of one, the idle connection to the first must be closed to let the
    # second through.
    other = server.url.replace("127.0.0.1", "localhost")
    async with hyperhttp.Client(max_connections=1) as client:
        await client.get(f"{server.url}/delay/0/a")
        assert _totals(client) == (0, 1)
        r = await asyncio.wait_for(client.get(f"{other}/delay/0/b"), 5)
        assert r.text == "b"
        stats = client.get_pool_stats()
        assert sum(s["total"] for s in stats.values()) == 1
    assert counts.peak == 1


async def test_keepalive_cap_and_expiry(counting_server: tuple[RawServer, Counting]) -> None:
    server, counts = counting_server
    async with hyperhttp.Client(
        max_connections=10, max_keepalive_connections=2, keepalive_expiry=0.2
    ) as client:
        await asyncio.gather(*[client.get(f"{server.url}/delay/0.05") for _ in range(6)])
        in_use, total = _totals(client)
        assert in_use == 0 and total == 2  # four closed on release, two kept
        await asyncio.sleep(0.3)
        await client.get(f"{server.url}/delay/0")
        # Both expired idle connections were dropped; one new connection serves.
        assert _totals(client) == (0, 1)
    assert counts.accepted == 7


async def test_dead_idle_connection_is_replaced_silently(raw_server: Callable[..., RawServer]) -> None:
    served = 0

    async def close_after_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_head(reader)
        served += 1
        # Claims keep-alive, then closes: the next request must not fail.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = raw_server(close_after_each)
    async with hyperhttp.Client() as client:
        for _ in range(3):
            r = await client.get(server.url + "/")
            assert r.text == "ok"
            await asyncio.sleep(0.05)  # let the close arrive: detected when taken
    assert served == 3
    assert server.accepted == 3


async def test_stale_connection_race_retried_for_idempotent(
    raw_server: Callable[..., RawServer],
) -> None:
    async def close_on_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_head(reader)  # the reused connection's next request...
        writer.close()  # ...is dropped without a byte of response

    server = raw_server(close_on_second)
    async with hyperhttp.Client() as client:
        assert (await client.get(server.url + "/")).text == "ok"
        # Sent at once, before the close can be seen: the race. GET is retried.
        assert (await client.get(server.url + "/")).text == "ok"
        assert (await client.get(server.url + "/")).text == "ok"
        with pytest.raises(hyperhttp.RemoteProtocolError, match="closed"):
            await client.post(server.url + "/", content=b"x")


def sockets_connected_to(port: int) -> int:
    """Sockets this process holds whose peer is `port`."""
    return count_sockets([port])[port]


async def test_cancellation_storm_leaves_no_stranded_slot(
    counting_server: tuple[RawServer, Counting],
) -> None:
    """Requests cancelled at random points: the client never holds more
    sockets than the cap, and afterwards nothing is stranded.

    The cap is measured on the client's side, as open sockets whose peer is
    the server: the sandbox's network stack delivers a closed connection's
    FIN asynchronously, so the server can see a new connection before the
    close of the one it replaced, and its own count overshoots by closes in
    flight. The tests above, with no cancellation, check the server's count.
    """
    server, _ = counting_server
    rng = random.Random(1234)
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, sockets_connected_to(server.port))
            await asyncio.sleep(0.001)

    sampler = asyncio.ensure_future(sample())
    try:
        await _storm(server, rng, lambda: sockets_connected_to(server.port))
    finally:
        sampler.cancel()
    assert 0 < peak <= 5


async def _storm(server: RawServer, rng: random.Random, probe: Callable[[], int]) -> None:
    peak = 0
    async with hyperhttp.Client(max_connections=5, timeout=10) as client:

        async def one(i: int) -> None:
            if i % 3 == 0:
                async with client.stream("GET", f"{server.url}/delay/0.01/{i}") as r:
                    await asyncio.sleep(rng.uniform(0, 0.02))
                    await r.aread()
            else:
                await client.get(f"{server.url}/delay/{rng.uniform(0, 0.03):.3f}/{i}")

        for _ in range(5):
            tasks = [asyncio.ensure_future(one(i)) for i in range(60)]
            await asyncio.sleep(rng.uniform(0, 0.03))
            for task in tasks:
                if rng.random() < 0.5:
                    task.cancel()
                    peak = max(peak, probe())
                    await asyncio.sleep(rng.uniform(0, 0.004))
            await asyncio.gather(*tasks, return_exceptions=True)
            in_use, total = _totals(client)
            assert in_use == 0, client.get_pool_stats()
            assert total <= 5
        # The whole capacity is usable again: five requests run at once.
        results = await asyncio.wait_for(
            asyncio.gather(*[client.get(f"{server.url}/delay/0.1/x") for _ in range(5)]), 5
        )
        assert all(r.status_code == 200 for r in results)
    assert peak <= 5


async def test_cancelled_waiter_gives_back_what_it_was_handed(
    counting_server: tuple[RawServer, Counting],
) -> None:
    server, _ = counting_server
    async with hyperhttp.Client(max_connections=1) as client:
        holder = asyncio.ensure_future(client.get(f"{server.url}/delay/0.05"))
        await asyncio.sleep(0.01)
        waiter = asyncio.ensure_future(client.get(f"{server.url}/delay/0"))
        await asyncio.sleep(0.01)
        await holder  # hands the connection to the waiter...
        waiter.cancel()  # ...which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert _totals(client)[0] == 0
        r = await asyncio.wait_for(client.get(f"{server.url}/delay/0"), 2)
        assert r.status_code == 200


async def test_pool_timeout(counting_server: tuple[RawServer, Counting]) -> None:
    server, _ = counting_server
    async with hyperhttp.Client(max_connections=1) as client:
        async with client.stream("GET", f"{server.url}/delay/0"):
            with pytest.raises(hyperhttp.PoolTimeout, match="pool timeout"):
                await client.get(
                    f"{server.url}/delay/0", timeout=hyperhttp.Timeout(5, pool=0.1)
                )
        assert (await client.get(f"{server.url}/delay/0")).status_code == 200


async def test_connect_failure_releases_the_slot() -> None:
    async with hyperhttp.Client(max_connections=1, timeout=2) as client:
        for _ in range(3):
            with pytest.raises(hyperhttp.ConnectError):
                await client.get("http://127.0.0.1:1/")
        assert client.get_pool_stats() == {}


async def test_closing_the_client_fails_waiters(counting_server: tuple[RawServer, Counting]) -> None:
    server, _ = counting_server
    client = hyperhttp.Client(max_connections=1)
    holder = asyncio.ensure_future(client.get(f"{server.url}/delay/0.2"))
    await asyncio.sleep(0.02)
    waiter = asyncio.ensure_future(client.get(f"{server.url}/delay/0"))
    await asyncio.sleep(0.02)
    await client.aclose()
    with pytest.raises(hyperhttp.PoolClosed):
        await waiter
    with pytest.raises(hyperhttp.HyperHTTPError):
        await holder
    with pytest.raises(hyperhttp.PoolClosed, match="closed"):
        await client.get(f"{server.url}/delay/0")


@pytest.mark.parametrize("origin", ["http_server", "https_server"])
async def test_requests_in_flight_when_the_client_closes_get_pool_closed(
    loop_name: str, origin: str, request: pytest.FixtureRequest, ca_pem_path: str
) -> None:
    # They got "server closed the connection without sending a response"
    # (HTTP/1.1) or a ReadError: the server was blamed for our own close,
    # and a retry policy answered it by sending the request again.
    server: ServerHandle = request.getfixturevalue(origin)
    policy = RetryPolicy(max_retries=3)
    client = hyperhttp.Client(verify=ca_pem_path, retry=policy, timeout=10)

    async def streamed() -> int:
        async with client.stream("GET", f"{server.url}/slow-body?chunks=20&delay=0.1") as r:
            return sum([len(chunk) async for chunk in r.aiter_bytes()])

    try:
        await client.get(f"{server.url}/echo")  # a kept-alive connection to reuse
        waiting = asyncio.ensure_future(client.get(f"{server.url}/slow?delay=5"))
        reading = asyncio.ensure_future(streamed())
        await asyncio.sleep(0.4)  # the head requested; the body half sent
        served = server.stats.requests
    finally:
        await client.aclose()
    for task in (waiting, reading):
        with pytest.raises(hyperhttp.PoolClosed) as caught:
            await task
        assert str(caught.value) == (
            f"the client was closed while a request to {urlsplit(server.url).netloc} was in flight"
        )
    await asyncio.sleep(0.1)
    assert server.stats.requests == served  # nothing was sent again


async def test_newest_idle_connection_is_reused_and_oldest_evicted(
    raw_server: Callable[..., RawServer],
) -> None:
    """Idle connections are a stack for reuse (the newest is the warmest)
    and a queue for eviction (the longest idle goes first when another
    origin needs the slot)."""
    ids = iter(range(1, 100))
    closed: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = next(ids)
        try:
            while head := await read_head(reader):
                delay = float(head.split(b" ", 2)[1].decode().strip("/") or 0)
                await asyncio.sleep(delay)
                body = str(conn_id).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        closed.append(conn_id)
        writer.close()

    server = raw_server(handler)
    other = server.url.replace("127.0.0.1", "localhost")
    async with hyperhttp.Client(max_connections=3, timeout=10) as client:
        released: list[str] = []

        async def one(delay: float) -> None:
            released.append((await client.get(f"{server.url}/{delay}")).text)

        await asyncio.gather(one(0.05), one(0.15), one(0.25))  # idle, oldest first
        assert sorted(released) == ["1", "2", "3"]
        assert (await client.get(f"{server.url}/0")).text == released[-1]
        assert (await client.get(f"{other}/0")).text == "4"
        for _ in range(100):
            if closed:
                break
            await asyncio.sleep(0.01)
        assert closed == [int(released[0])]
        assert _totals(client) == (0, 3)
