"""Each timeout through the Client raises its own exception class, promptly.

Only short timeouts (well under a second) are used; the peers are real
loopback sockets: hypercorn's `/slow` endpoints, a raw server that never
reads, and a listener whose accept queue is full (a black hole for SYNs).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

import hyperhttp
from tests.support.fixtures import RawServerFactory
from tests.support.servers import ServerHandle

TIMEOUT_CLASSES = (
    hyperhttp.ConnectTimeout,
    hyperhttp.ReadTimeout,
    hyperhttp.WriteTimeout,
    hyperhttp.PoolTimeout,
)


def assert_only(exc: BaseException, expected: type[BaseException]) -> None:
    """`exc` is `expected` and none of the other timeout classes."""
    assert isinstance(exc, expected)
    assert isinstance(exc, hyperhttp.TimeoutException)
    for other in TIMEOUT_CLASSES:
        if other is not expected:
            assert not isinstance(exc, other), f"{type(exc).__name__} is also {other.__name__}"


def nothing_in_use(client: hyperhttp.Client) -> bool:
    return all(entry.get("in_use", 0) == 0 for entry in client.get_pool_stats().values())


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A 127.0.0.1 port whose full accept queue silently drops every SYN."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.settimeout(5)
        filler.connect(listener.getsockname())
        yield listener.getsockname()[1]
    finally:
        filler.close()
        listener.close()


async def test_read_timeout_waiting_for_head(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client:
        started = time.monotonic()
        with pytest.raises(hyperhttp.ReadTimeout) as caught:
            await client.get(
                http_server.url + "/slow", params={"delay": 3},
                timeout=hyperhttp.Timeout(5, read=0.2),
            )
        assert time.monotonic() - started < 1.5
        assert_only(caught.value, hyperhttp.ReadTimeout)
        assert http_server.url.removeprefix("http://") in str(caught.value)
        assert "0.2s (read timeout)" in str(caught.value)
        assert nothing_in_use(client)
        # The client still works afterwards.
        assert (await client.get(http_server.url + "/echo")).status_code == 200


async def test_read_timeout_between_body_chunks(
    loop_name: str, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(http2=False, timeout=hyperhttp.Timeout(5, read=0.2)) as client:
        with pytest.raises(hyperhttp.ReadTimeout):
            await client.get(http_server.url + "/slow-body", params={"chunks": 3, "delay": 2})
        assert nothing_in_use(client)


async def test_pool_timeout(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False, max_connections=1) as client:
        async with client.stream(
            "GET", http_server.url + "/slow-body", params={"chunks": 2, "delay": 0.05}
        ) as held:
            assert held.status_code == 200
            started = time.monotonic()
            with pytest.raises(hyperhttp.PoolTimeout) as caught:
                await client.get(
                    http_server.url + "/echo", timeout=hyperhttp.Timeout(5, pool=0.2)
                )
            assert 0.15 <= time.monotonic() - started < 1.5
            assert_only(caught.value, hyperhttp.PoolTimeout)
            assert http_server.url.removeprefix("http://") in str(caught.value)
            await held.aread()
        # The held connection went back; the slot is usable again.
        response = await client.get(http_server.url + "/echo", timeout=hyperhttp.Timeout(5, pool=0.2))
        assert response.status_code == 200
    # The request that timed out in the pool never reached the server.
    assert http_server.stats.requests == 2
    assert http_server.stats.connection_count == 1


async def test_connect_timeout(loop_name: str, black_hole: int) -> None:
    async with hyperhttp.Client(http2=False) as client:
        started = time.monotonic()
        with pytest.raises(hyperhttp.ConnectTimeout) as caught:
            await client.get(
                f"http://127.0.0.1:{black_hole}/", timeout=hyperhttp.Timeout(5, connect=0.3)
            )
        assert 0.25 <= time.monotonic() - started < 2.0
        assert_only(caught.value, hyperhttp.ConnectTimeout)
        assert f"127.0.0.1:{black_hole}" in str(caught.value)
        assert client.get_pool_stats() == {}


async def test_connect_timeout_from_client_argument(loop_name: str, black_hole: int) -> None:
    async with hyperhttp.Client(http2=False, timeout=5.0, connect_timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(hyperhttp.ConnectTimeout):
            await client.get(f"http://127.0.0.1:{black_hole}/")
        assert time.monotonic() - started < 2.0


async def test_write_timeout(loop_name: str, raw_server: RawServerFactory) -> None:
    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)  # stop() cancels this

    server = raw_server(never_reads)
    body = b"x" * (32 * 1024 * 1024)  # far more than both socket buffers hold
    async with hyperhttp.Client(http2=False) as client:
        started = time.monotonic()
        with pytest.raises(hyperhttp.WriteTimeout) as caught:
            await client.post(
                server.url + "/upload", content=body, timeout=hyperhttp.Timeout(5, write=0.3)
            )
        assert time.monotonic() - started < 2.0
        assert_only(caught.value, hyperhttp.WriteTimeout)
        assert f"127.0.0.1:{server.port}" in str(caught.value)
        assert client.get_pool_stats() == {}
