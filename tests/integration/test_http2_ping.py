"""PING keeps an idle HTTP/2 connection checked: a peer that went away
silently is found before a request is put on it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import hyperhttp
from hyperhttp._transport import http2
from tests.support.certs import TestCerts
from tests.support.h2server import H2Server, H2ServerConfig


@pytest.fixture
def fast_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http2, "IDLE_PING_INTERVAL", 0.1)
    monkeypatch.setattr(http2, "PING_TIMEOUT", 0.2)


@pytest.fixture
def silent_after_one(certs: TestCerts) -> Iterator[H2Server]:
    server = H2Server(certs.server_ssl_context(alpn=("h2",)), H2ServerConfig(go_silent_after=1))
    yield server.start()
    server.stop()


@pytest.fixture
def healthy(certs: TestCerts) -> Iterator[H2Server]:
    server = H2Server(certs.server_ssl_context(alpn=("h2",)))
    yield server.start()
    server.stop()


def _total(client: hyperhttp.Client) -> int:
    return sum(entry["total"] for entry in client.get_pool_stats().values())


async def test_a_silent_peer_is_found_by_ping_and_replaced(
    loop_name: str, fast_pings: None, silent_after_one: H2Server, certs: TestCerts
) -> None:
    server = silent_after_one
    async with hyperhttp.Client(verify=certs.ca_pem_path, timeout=5) as client:
        first = await client.get(server.url + "/echo")
        assert first.http_version == "HTTP/2"
        assert _total(client) == 1
        # The server now reads nothing: the idle PING goes unanswered and the
        # connection is dropped from the pool (0.1 s + 0.2 s, with margin).
        for _ in range(100):
            if _total(client) == 0:
                break
            await asyncio.sleep(0.02)
        assert _total(client) == 0, client.get_pool_stats()
        # The next request goes on a fresh connection at once, instead of
        # waiting out its read timeout on the dead one.
        second = await asyncio.wait_for(client.get(server.url + "/echo"), 2)
        assert second.status_code == 200
    assert server.stats.connections == 2


async def test_an_answering_peer_keeps_its_connection(
    loop_name: str, fast_pings: None, healthy: H2Server, certs: TestCerts
) -> None:
    async with hyperhttp.Client(verify=certs.ca_pem_path, timeout=5) as client:
        await client.get(healthy.url + "/echo")
        await asyncio.sleep(0.6)  # several PING rounds, each answered
        assert _total(client) == 1
        await client.get(healthy.url + "/echo")
    assert healthy.stats.connections == 1
