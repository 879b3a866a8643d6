"""Idle HTTP/2 connections the pool must not keep using, against our h2 server.

- An idle HTTP/2 connection past `keepalive_expiry` is closed when a request
  would take it, not reused; a busy one is shared however old it is.
- An idle HTTP/2 connection whose server allows no streams
  (MAX_CONCURRENT_STREAMS 0) gives up its `max_connections_per_host` slot
  to a new connection; while a stream is open on it, it is never closed.

The server (tests/support/h2server.py) answers `/echo` with the number of the
TCP connection it came on, so each test reads which connection was used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

import hyperhttp
from hyperhttp._transport.pool import PoolConnection
from tests.support.certs import TestCerts
from tests.support.doubles import pool_of, until
from tests.support.h2server import H2Server, started

POOL_TIMEOUT = 2.0
BOUND = 10.0


@pytest.fixture
def server(certs: TestCerts) -> Iterator[H2Server]:
    yield from started(certs.server_ssl_context(alpn=("h2",)))


def make_client(certs: TestCerts, **options: Any) -> hyperhttp.Client:
    return hyperhttp.Client(
        verify=str(certs.ca_pem_path),
        trust_env=False,
        timeout=hyperhttp.Timeout(BOUND, pool=POOL_TIMEOUT),
        **options,
    )


def only_connection(client: hyperhttp.Client) -> PoolConnection:
    [conn] = [c for host in pool_of(client)._hosts.values() for c in host.conns]
    return conn


# --- keepalive_expiry --------------------------------------------------------------


async def test_idle_h2_connection_past_keepalive_expiry_is_not_reused(
    certs: TestCerts, server: H2Server
) -> None:
    async with make_client(certs, keepalive_expiry=0.3) as client:
        first = await client.get(server.url + "/echo")
        assert first.http_version == "HTTP/2" and first.json()["conn"] == 1
        old = only_connection(client)
        await asyncio.sleep(0.6)  # idle for twice the expiry

        second = await client.get(server.url + "/echo")
        assert second.json()["conn"] == 2  # a new connection, not the expired one
        assert old.is_closed()
        assert pool_of(client).total == 1
        third = await client.get(server.url + "/echo")
        assert third.json()["conn"] == 2  # the new one is reused while fresh
    assert server.snapshot().connections == 2


async def test_busy_h2_connection_is_shared_past_keepalive_expiry(
    certs: TestCerts, server: H2Server
) -> None:
    client = make_client(certs, keepalive_expiry=0.1)
    drip = server.url + "/drip?chunks=8&delay=0.08"
    async with client, client.stream("GET", drip) as slow:
        await asyncio.sleep(0.3)  # older than the expiry, but carrying a stream
        shared = await client.get(server.url + "/echo")
        assert shared.json()["conn"] == 1
        assert len(await slow.aread()) == 8 * 1024
    assert server.snapshot().connections == 1


# --- MAX_CONCURRENT_STREAMS 0 under max_connections_per_host ---------------------------


async def test_idle_h2_connection_allowing_no_streams_gives_up_its_host_slot(
    certs: TestCerts, server: H2Server
) -> None:
    async with make_client(certs, max_connections_per_host=1) as client:
        first = await client.get(server.url + "/settings?max_streams=0")
        assert first.json()["conn"] == 1
        old = only_connection(client)
        assert old.is_idle() and not old.is_available()

        started_at = time.monotonic()
        second = await client.get(server.url + "/echo")
        assert time.monotonic() - started_at < POOL_TIMEOUT / 2  # not waited out
        assert second.json()["conn"] == 2
        assert old.is_closed()
        assert pool_of(client).total == 1
    assert server.snapshot().connections == 2


async def test_busy_h2_connection_allowing_no_streams_is_waited_for(
    certs: TestCerts, server: H2Server
) -> None:
    """The limit drops to 0 while a stream is open: a second request waits
    for that stream to end (the connection is not closed under it), then
    gets a new connection at once."""
    async with make_client(certs, max_connections_per_host=1) as client:
        holder = asyncio.ensure_future(
            client.get(server.url + "/settings?max_streams=0&delay=0.4")
        )
        await until(lambda: any(host.conns for host in pool_of(client)._hosts.values()))
        old = only_connection(client)
        await until(lambda: not old.is_available())  # the server's SETTINGS arrived
        waiter = asyncio.ensure_future(client.get(server.url + "/echo"))
        await until(lambda: pool_of(client).waiting == 1)
        assert not holder.done()

        first = await asyncio.wait_for(holder, BOUND)
        assert first.json()["conn"] == 1  # finished on the connection it started on
        second = await asyncio.wait_for(waiter, BOUND)
        assert second.json()["conn"] == 2
        assert old.is_closed()
        assert pool_of(client).total == 1
    assert server.snapshot().connections == 2
