"""HTTP/2 connections on loopback: hypercorn for ordinary traffic, our own
h2 server (tests/support/h2server.py) where a behaviour must be forced.

Every test builds the pieces directly (dial + HTTP2Connection, or a
ConnectionPool with a small connector), so none depends on the Client, and
asserts what the server saw where that is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import hyperhttp
from hyperhttp._backends.stream import SocketStream
from hyperhttp._config import Timeout
from hyperhttp._exceptions import (
    LocalProtocolError,
    ReadError,
    ReadTimeout,
    StreamReset,
    WriteTimeout,
)
from hyperhttp._models import Request, Response
from hyperhttp._tls import create_ssl_context
from hyperhttp._transport.dial import negotiated_alpn, open_connection
from hyperhttp._transport.dns import DNSCache
from hyperhttp._transport.http2 import HTTP2Connection
from hyperhttp._transport.pool import MAX_NOT_PROCESSED_RETRIES, ConnectionPool, Origin
from hyperhttp._transport.signals import RequestNotProcessed
from tests.support.app import pattern_bytes as app_pattern
from tests.support.certs import TestCerts
from tests.support.h2server import H2Server, H2ServerConfig, pattern_bytes
from tests.support.servers import ServerHandle

CANCEL = 0x8
MAX_STREAM_ID = 2**31 - 1
TIMEOUT = Timeout(10.0)
H2ServerFactory = Callable[..., H2Server]


@pytest.fixture
def h2server(certs: TestCerts) -> Iterator[H2ServerFactory]:
    started: list[H2Server] = []

    def factory(**config: Any) -> H2Server:
        server = H2Server(certs.server_ssl_context(alpn=("h2",)), H2ServerConfig(**config))
        started.append(server.start())
        return server

    yield factory
    for server in started:
        server.stop()


def origin(port: int) -> Origin:
    return ("https", "127.0.0.1", port, "")


async def dial(
    certs: TestCerts,
    port: int,
    on_release: Callable[[Any], None] = lambda conn: None,
    **options: Any,
) -> HTTP2Connection:
    ctx = create_ssl_context(verify=str(certs.ca_pem_path))
    transport, stream = await open_connection(
        "127.0.0.1",
        port,
        lambda: SocketStream(f"localhost:{port}"),
        dns=DNSCache(),
        ssl_context=ctx,
        server_hostname="localhost",
        connect_timeout=5.0,
    )
    assert negotiated_alpn(transport) == "h2"
    conn = HTTP2Connection(origin(port), stream, on_release, **options)
    await conn.start(TIMEOUT)
    return conn


def make_pool(certs: TestCerts, *, per_host: int | None = 1, **options: Any) -> ConnectionPool:
    async def connector(
        origin: Origin, timeout: Timeout, on_release: Callable[[Any], None]
    ) -> HTTP2Connection:
        return await dial(certs, origin[2], on_release, **options)

    return ConnectionPool(
        connector,
        max_connections_per_host=per_host,
        may_multiplex=lambda origin: True,
    )


async def fetch(
    pool: ConnectionPool, url: str, port: int, timeout: Timeout = TIMEOUT, **kwargs: Any
) -> tuple[Response, bytes]:
    method = kwargs.pop("method", "GET")
    response = await pool.handle_request(Request(method, url, **kwargs), origin(port), timeout)
    return response, await response.aread()


async def send(
    conn: HTTP2Connection, method: str, url: str, timeout: Timeout = TIMEOUT, **kwargs: Any
) -> Response:
    conn.reserve_stream()
    return await conn.handle_request(Request(method, url, **kwargs), timeout)


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def wait_until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    for _ in range(int(limit / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


# --- against hypercorn -------------------------------------------------------


async def test_get_is_http2_with_clean_headers(certs: TestCerts, https_server: ServerHandle) -> None:
    released: list[Any] = []
    conn = await dial(certs, https_server.port, released.append)
    try:
        response = await send(
            conn,
            "GET",
            f"{https_server.url}/echo?x=1",
            headers=[
                ("X-Custom", "  padded  "),
                ("Connection", "keep-alive, x-hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("Upgrade", "h2c"),
                ("TE", "gzip"),
            ],
        )
        body = json.loads(await response.aread())
    finally:
        conn.close()
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    assert body["http_version"] == "HTTP/2"
    names = [name for name, _ in body["headers"]]
    assert ["x-custom", "  padded  "] not in body["headers"]
    assert ["x-custom", "padded"] in body["headers"]
    for dropped in ("connection", "keep-alive", "proxy-connection", "upgrade", "te", "x-hop"):
        assert dropped not in names
    assert ["host", f"localhost:{https_server.port}"] in body["headers"]
    assert body["path"] == "/echo" and body["query"] == "x=1"
    assert released.count(conn) >= 1 and conn.active_streams() == 0


async def test_concurrent_requests_share_one_connection(
    certs: TestCerts, https_server: ServerHandle
) -> None:
    pool = make_pool(certs, per_host=None)
    try:
        results = await asyncio.gather(
            *(fetch(pool, f"{https_server.url}/slow?delay=0.2", https_server.port) for _ in range(30))
        )
    finally:
        pool.close()
    assert all(r.status_code == 200 and r.http_version == "HTTP/2" for r, _ in results)
    stats = https_server.stats
    assert stats.connection_count == 1
    assert stats.requests == 30
    assert stats.peak_in_flight > 10  # they really ran side by side


@contextlib.asynccontextmanager
async def slow_to_connect(port: int, delay: float) -> AsyncIterator[int]:
    """A TCP relay to 127.0.0.1:`port` that lets `delay` seconds pass
    before it connects on: every connection through it is that slow to
    open. Yields the relay's port."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    handlers: set[asyncio.Task[None]] = set()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        writers = [writer]
        try:
            await asyncio.sleep(delay)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(up_writer)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass  # the relay is closing: asyncio's stream server would log a cancelled handler
        finally:
            for each in writers:
                each.close()

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def test_requests_behind_the_first_dial_wait_as_long_as_the_dial_may_take(
    loop_name: str, certs: TestCerts, https_server: ServerHandle
) -> None:
    # The origin's first connection takes 0.3 s to open. The requests made
    # meanwhile wait for it (HTTP/2 will carry them all), and for that long:
    # a dial is bounded by the connect timeout, and a pool timeout of 50 ms
    # failed them with PoolTimeout although no connection was ever busy.
    async with slow_to_connect(https_server.port, 0.3) as port, hyperhttp.Client(
        ssl_context=certs.client_ssl_context(), trust_env=False,
        timeout=hyperhttp.Timeout(5.0, pool=0.05),
    ) as client:
        responses = await asyncio.gather(
            *(client.get(f"https://localhost:{port}/echo?n={i}") for i in range(5))
        )
    assert [r.status_code for r in responses] == [200] * 5
    assert {r.http_version for r in responses} == {"HTTP/2"}
    assert https_server.stats.connection_count == 1


async def test_a_waiter_behind_the_first_dial_still_times_out_past_the_connect_timeout(
    loop_name: str, certs: TestCerts, https_server: ServerHandle
) -> None:
    # Waiting for the dial is bounded too: by the connect timeout, which
    # also ends the dial itself; the error names the timeout that ran out.
    async with slow_to_connect(https_server.port, 2.0) as port, hyperhttp.Client(
        ssl_context=certs.client_ssl_context(), trust_env=False,
        timeout=hyperhttp.Timeout(5.0, connect=0.3, pool=0.05),
    ) as client:
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            *(client.get(f"https://localhost:{port}/echo") for _ in range(3)),
            return_exceptions=True,
        )
        waited = asyncio.get_running_loop().time() - started
    assert isinstance(results[0], hyperhttp.ConnectTimeout)
    for waiter in results[1:]:
        # Either it timed out waiting for that dial, or (the dial failed
        # first) it dialled itself and timed out there.
        if isinstance(waiter, hyperhttp.PoolTimeout):
            assert "did not open within 0.3s (connect timeout)" in str(waiter)
        else:
            assert isinstance(waiter, hyperhttp.ConnectTimeout), waiter
    assert 0.25 < waited < 1.5


async def test_large_bodies_both_ways(certs: TestCerts, https_server: ServerHandle) -> None:
    conn = await dial(certs, https_server.port)
    size = 5 * 1024 * 1024 + 7
    try:
        response = await send(conn, "GET", f"{https_server.url}/bytes/{size}?chunk=100000")
        assert await response.aread() == app_pattern(size)
        upload = bytes(range(256)) * (3 * 4096 + 1)
        response = await send(
            conn, "POST", f"{https_server.url}/echo", content=chunks_of(upload, 70_000)
        )
        echoed = json.loads(await response.aread())
    finally:
        conn.close()
    assert echoed["body_length"] == len(upload)
    assert echoed["body_sha256"] == hashlib.sha256(upload).hexdigest()
    assert ["transfer-encoding", "chunked"] not in echoed["headers"]
    assert https_server.stats.connection_count == 1


async def test_trailers_reach_the_caller(certs: TestCerts, https_server: ServerHandle) -> None:
    conn = await dial(certs, https_server.port)
    try:
        response = await send(
            conn, "GET", f"{https_server.url}/trailers?x-sum=42", headers={"TE": "trailers"}
        )
        body = await response.aread()
    finally:
        conn.close()
    assert body == b"body before trailers\n"
    assert response.trailers.get("x-sum") == "42"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Bad": "a\r\nInjected: 1"},
        {"X-Bad": "nul\x00"},
        {"Bad Name": "x"},
        {"X-Unicode": "snow ☃"},
    ],
)
async def test_invalid_headers_send_nothing(
    certs: TestCerts, https_server: ServerHandle, headers: dict[str, str]
) -> None:
    released: list[Any] = []
    conn = await dial(certs, https_server.port, released.append)
    try:
        before = len(released)
        with pytest.raises(LocalProtocolError):
            await send(conn, "GET", f"{https_server.url}/echo", headers=headers)
        assert conn.active_streams() == 0 and conn.is_available()
        assert released[before:] == [conn]
        response = await send(conn, "GET", f"{https_server.url}/echo")
        await response.aread()
    finally:
        conn.close()
    assert https_server.stats.requests == 1


# --- against our own h2 server ---------------------------------------------


async def test_max_concurrent_streams_is_respected(
    certs: TestCerts, h2server: H2ServerFactory
) -> None:
    server = h2server(max_concurrent_streams=2)
    pool = make_pool(certs)
    try:
        async with asyncio.timeout(20):
            results = await asyncio.gather(
                *(fetch(pool, f"{server.url}/slow?delay=0.05", server.port) for _ in range(10))
            )
    finally:
        pool.close()
    assert [r.status_code for r, _ in results] == [200] * 10
    stats = server.snapshot()
    assert stats.connections == 1
    assert len(stats.streams) == 10
    assert stats.peak_streams == 2


async def test_lowered_stream_limit_does_not_deadlock(
    certs: TestCerts, h2server: H2ServerFactory
) -> None:
    server = h2server(max_concurrent_streams=4)
    pool = make_pool(certs)
    try:
        async with asyncio.timeout(20):
            lower = fetch(pool, f"{server.url}/settings?max_streams=1&delay=0.2", server.port)
            rest = [fetch(pool, f"{server.url}/slow?delay=0.05", server.port) for _ in range(9)]
            results = await asyncio.gather(lower, *rest)
            # The new limit holds for what comes after.
            later = await asyncio.gather(
                *(fetch(pool, f"{server.url}/slow?delay=0.05", server.port) for _ in range(3))
            )
    finally:
        pool.close()
    assert [r.status_code for r, _ in [*results, *later]] == [200] * 13
    stats = server.snapshot()
    assert stats.connections == 1
    assert len(stats.streams) == 13


async def test_is_available_follows_the_server_limit(
    certs: TestCerts, h2server: H2ServerFactory
) -> None:
    server = h2server(max_concurrent_streams=3)
    conn = await dial(certs, server.port)
    try:
        conn.reserve_stream()
        conn.reserve_stream()
        assert conn.is_available()
        conn.unreserve_stream()
        conn.unreserve_stream()
        response = await send(conn, "GET", f"{server.url}/settings?max_streams=1")
        await response.aread()
        assert conn.is_available()
        conn.reserve_stream()
        assert not conn.is_available()
        conn.unreserve_stream()
        assert conn.is_available() and conn.is_idle()
    finally:
        conn.close()


async def test_raised_stream_limit_wakes_waiters(
    certs: TestCerts, h2server: H2ServerFactory
) -> None:
    server = h2server(max_concurrent_streams=1)
    pool = make_pool(certs)
    try:
        async with asyncio.timeout(20):
            # The first stream raises the limit and then holds its slot for a
            # while: the others can only overlap it if they were woken.
            # Without that wake-up the four would run only after it, four at once.
            raise_ = fetch(pool, f"{server.url}/settings?max_streams=5&delay=0.5", server.port)
            rest = [fetch(pool, f"{server.url}/slow?delay=0.2", server.port) for _ in range(4)]
            results = await asyncio.gather(raise_, *rest)
    finally:
        pool.close()
    assert [r.status_code for r, _ in results] == [200] * 5
    stats = server.snapshot()
    assert stats.connections == 1
    assert stats.peak_streams == 5


async def test_goaway_retries_unprocessed_streams(
    certs: TestCerts, h2server: H2ServerFactory
) -> None:
    server = h2server(goaway_after=3)
    pool = make_pool(certs)
    try:
        async with asyncio.timeout(20):
            results = await asyncio.gather(
                *(fetch(pool, f"{server.url}/slow?delay=0.1", server.port) for _ in range(10))
            )
    finally:
        pool.close()
    assert [r.status_code for r, _ in results] == [200] * 10
    served_on = [json.loads(body)["conn"] for _, body in results]
    stats = server.snapshot()
    assert stats.connections == 2
    assert served_on.count(1) == 3  # the processed streams finished after GOAWAY
    assert served_on.count(2) == 7
    assert len(stats.ignored) == 7


async def test_refused_stream_is_sent_again(certs: TestCerts, h2server: H2ServerFactory) -> None:
    server = h2server(refuse_first=1)
    pool = make_pool(certs)
    try:
        response, _ = await fetch(pool, f"{server.url}/echo", server.port)
    finally:
        pool.close()
    assert response.status_code == 200
    stats = server.snapshot()
    assert stats.refused == [(1, 1)]
    assert [sid for _, sid, _ in stats.streams] == [1, 3]
    assert stats.connections == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_refused_past_the_pools_resends_is_still_never_sent(
    certs: TestCerts, h2server: H2ServerFactory, method: str
) -> None:
    """The pool resends a refused stream a few times by itself. When that
    runs out, the error must still say 'never processed': the retry policy
    then sends even a POST again, as docs/resilience.md promises (it got a
    plain RemoteProtocolError and refused the POST as non-idempotent)."""
    from hyperhttp.errors.classify import was_never_sent
    from tests.support.faults import quick_policy

    server = h2server(refuse_first=MAX_NOT_PROCESSED_RETRIES + 1)
    async with hyperhttp.Client(ssl_context=certs.client_ssl_context(), trust_env=False) as client:
        with pytest.raises(hyperhttp.RequestNotProcessed, match="REFUSED_STREAM") as caught:
            await client.request(method, f"{server.url}/echo", content=b"payload")
        assert was_never_sent(caught.value)
    server = h2server(refuse_first=MAX_NOT_PROCESSED_RETRIES + 1)
    async with hyperhttp.Client(
        ssl_context=certs.client_ssl_context(), trust_env=False, retry=quick_policy(1)
    ) as client:
        response = await client.request(method, f"{server.url}/echo", content=b"payload")
    assert response.status_code == 200
    assert len(server.snapshot().refused) == MAX_NOT_PROCESSED_RETRIES + 1


async def test_reset_fails_only_its_stream(certs: TestCerts, h2server: H2ServerFactory) -> None:
    server = h2server()
    conn = await dial(certs, server.port)

    async def get(path: str) -> bytes:
        response = await send(conn, "GET", f"{server.url}{path}")
        return await response.aread()

    try:
        results = await asyncio.gather(
            get("/reset?code=2"), *(get("/slow?delay=0.1") for _ in range(3)),
            return_exceptions=True,
        )
        assert isinstance(results[0], StreamReset)
        assert results[0].error_code == 2
        assert "INTERNAL_ERROR" in str(results[0]) and "localhost" in str(results[0])
        assert all(isinstance(r, bytes) for r in results[1:])
        assert conn.is_available() and conn.active_streams() == 0
        await get("/echo")
    finally:
        conn.close()
    assert server.snapshot().connections == 1


async def test_tiny_windows_both_ways(certs: TestCerts, h2server: H2ServerFactory) -> None:
    server = h2server(initial_window_size=1024)
    conn = await dial(certs, server.port, stream_window=1024, connection_window=65535)
    size = 1024 * 1024
    upload = pattern_bytes(size, 3)
    try:
        async with asyncio.timeout(30):
            response = await send(conn, "POST", f"{server.url}/echo", content=upload)
            echoed = json.loads(await response.aread())
            response = await send(conn, "GET", f"{server.url}/bytes/{size}")
            downloaded = await response.aread()
    finally:
        conn.close()
    assert echoed["length"] == size
    assert echoed["sha256"] == hashlib.sha256(upload).hexdigest()
    assert downloaded == pattern_bytes(size)


async def test_server_that_never_reads_gives_write_timeout(
    certs: TestCerts, h2server: H2ServerFactory
) -> None:
    server = h2server(read_bodies=False)
    conn = await dial(certs, server.port)
    try:
        with pytest.raises(WriteTimeout, match="localhost"):
            await send(
                conn,
                "POST",
                f"{server.url}/echo",
                Timeout(10.0, write=0.3),
                content=b"x" * (1024 * 1024),
            )
        assert conn.active_streams() == 0 and not conn.is_closed()
        response = await send(conn, "GET", f"{server.url}/slow?delay=0")
        assert response.status_code == 200
        await response.aread()
        await wait_until(lambda: any(code == CANCEL for *_, code in server.snapshot().resets_received))
    finally:
        conn.close()
    stats = server.snapshot()
    assert stats.received[(1, 1)] <= 65535  # never more than the window was sent


async def test_slow_consumer_is_bounded_by_the_window(
    certs: TestCerts, h2server: H2ServerFactory
) -> None:
    server = h2server()
    window = 64 * 1024
    conn = await dial(certs, server.port, stream_window=window)
    size = 8 * 1024 * 1024
    try:
        response = await send(conn, "GET", f"{server.url}/bytes/{size}")
        body = response.stream.__aiter__()
        consumed = len(await body.__anext__())
        # Stop reading: the server must end up blocked on flow control.
        await wait_until(lambda: (1, 1) in server.snapshot().blocked)
        await asyncio.sleep(0.2)
        stats = server.snapshot()
        assert (1, 1) in stats.blocked
        assert stats.sent[(1, 1)] <= consumed + window
        received = [consumed]
        async for chunk in body:
            received.append(len(chunk))
        await response.aclose()
    finally:
        conn.close()
    assert sum(received) == size
    assert server.snapshot().sent[(1, 1)] == size


async def test_cancelling_one_request_resets_only_that_stream(
    certs: TestCerts, h2server: H2ServerFactory
) -> None:
    server = h2server()
    released: list[Any] = []
    conn = await dial(certs, server.port, released.append)

    async def get(path: str) -> bytes:
        response = await send(conn, "GET", f"{server.url}{path}")
        return await response.aread()

    try:
        before = len(released)
        victim = asyncio.ensure_future(get("/slow?delay=2"))
        others = [asyncio.ensure_future(get("/slow?delay=0.3")) for _ in range(3)]
        await wait_until(lambda: len(server.snapshot().streams) == 4)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        bodies = await asyncio.gather(*others)
        assert all(json.loads(b)["conn"] == 1 for b in bodies)
        await wait_until(lambda: (1, 1, CANCEL) in server.snapshot().resets_received)
        assert conn.active_streams() == 0 and conn.is_available()
        assert len(released) - before == 4  # once per stream
    finally:
        conn.close()


async def test_cancelling_while_reading_the_body(
    certs: TestCerts, h2server: H2ServerFactory
) -> None:
    server = h2server()
    conn = await dial(certs, server.port)
    first = asyncio.get_running_loop().create_future()

    async def read_slowly() -> None:
        response = await send(conn, "GET", f"{server.url}/drip?chunks=50&delay=0.05")
        async for _chunk in response.aiter_raw():
            if not first.done():
                first.set_result(None)

    try:
        reader = asyncio.ensure_future(read_slowly())
        sibling = asyncio.ensure_future(send(conn, "GET", f"{server.url}/slow?delay=0.3"))
        await first
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        response = await sibling
        assert response.status_code == 200
        await response.aread()
        await wait_until(lambda: (1, 1, CANCEL) in server.snapshot().resets_received)
        assert conn.active_streams() == 0 and conn.is_available()
    finally:
        conn.close()


async def test_stream_abandoned_after_ids_run_out_is_reset(
    certs: TestCerts, h2server: H2ServerFactory
) -> None:
    """Out of stream ids, the connection takes no new stream, but the
    streams already open are the server's to finish: one the caller
    abandons is reset (CANCEL), the other carries on, then it closes."""
    server = h2server()
    conn = await dial(certs, server.port)
    drip = f"{server.url}/drip?chunks=10&delay=0.05"
    try:
        await (await send(conn, "GET", f"{server.url}/echo")).aread()
        # Two ids left (MAX_STREAM_ID - 2 and MAX_STREAM_ID): 2**30 requests
        # are out of reach of a test.
        conn._h2.highest_outbound_stream_id = MAX_STREAM_ID - 4
        kept = await send(conn, "GET", drip)
        abandoned = await send(conn, "GET", drip)
        with pytest.raises(RequestNotProcessed, match="stream ids"):
            await send(conn, "GET", f"{server.url}/echo")
        assert not conn.is_available()

        await abandoned.aclose()
        await wait_until(lambda: (1, MAX_STREAM_ID, CANCEL) in server.snapshot().resets_received)
        assert len(await kept.aread()) == 10 * 1024
        await wait_until(conn.is_closed)  # after its last stream, as after GOAWAY
        assert (1, MAX_STREAM_ID - 2, CANCEL) not in server.snapshot().resets_received
    finally:
        conn.close()


async def test_read_timeout_fails_only_that_stream(
    certs: TestCerts, h2server: H2ServerFactory
) -> None:
    server = h2server()
    conn = await dial(certs, server.port)
    try:
        slow = send(conn, "GET", f"{server.url}/slow?delay=3", Timeout(10.0, read=0.2))
        quick = send(conn, "GET", f"{server.url}/slow?delay=0.05")
        results = await asyncio.gather(slow, quick, return_exceptions=True)
        assert isinstance(results[0], ReadTimeout)
        assert "stream 1" in str(results[0])
        assert isinstance(results[1], Response) and results[1].status_code == 200
        await results[1].aread()
        await wait_until(lambda: (1, 1, CANCEL) in server.snapshot().resets_received)
        assert conn.is_available()
    finally:
        conn.close()


async def test_dead_connection_is_replaced(certs: TestCerts, h2server: H2ServerFactory) -> None:
    server = h2server()
    pool = make_pool(certs)
    try:
        with pytest.raises(ReadError, match="localhost"):
            await fetch(pool, f"{server.url}/close", server.port)
        response, _ = await fetch(pool, f"{server.url}/echo", server.port)
        assert response.status_code == 200
        assert pool.total == 1
    finally:
        pool.close()
    assert server.snapshot().connections == 2


async def test_goaway_on_idle_connection_closes_it(
    certs: TestCerts, h2server: H2ServerFactory
) -> None:
    server = h2server(goaway_after=1)
    released: list[Any] = []
    conn = await dial(certs, server.port, released.append)
    try:
        response = await send(conn, "GET", f"{server.url}/echo")
        await response.aread()
        await wait_until(conn.is_closed)
        assert not conn.is_available() and not conn.is_alive_when_taken()
        assert released[-1] is conn
    finally:
        conn.close()
