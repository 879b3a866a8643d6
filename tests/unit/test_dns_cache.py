"""DNSCache: TTL, LRU bound, IP literals, lookup dedup, cancellation, failures, RFC 8305 order."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from hyperhttp._exceptions import DNSError
from hyperhttp._transport.dns import (
    Address,
    DNSCache,
    ip_literal_addresses,
    order_for_happy_eyeballs,
)

V4 = int(socket.AF_INET)
V6 = int(socket.AF_INET6)


def v4(ip: str, port: int = 443) -> Address:
    return (V4, (ip, port))


def v6(ip: str, port: int = 443) -> Address:
    return (V6, (ip, port, 0, 0))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeResolver:
    """Answers from a table, counting calls; optionally blocks until released."""

    def __init__(self, answers: dict[str, list[Address]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, int]] = []
        self.gate: asyncio.Event | None = None
        self.error: OSError | None = None

    async def __call__(self, host: str, port: int) -> list[Address]:
        self.calls.append((host, port))
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return list(self.answers.get(host, [v4("192.0.2.1", port)]))


# ---- pure helpers ---------------------------------------------------------------


def test_order_interleaves_families_ipv6_first() -> None:
    addrs = [
        v4("192.0.2.1"),
        v4("192.0.2.2"),
        v4("192.0.2.3"),
        v6("2001:db8::1"),
        v6("2001:db8::2"),
    ]
    assert order_for_happy_eyeballs(addrs) == [
        v6("2001:db8::1"),
        v4("192.0.2.1"),
        v6("2001:db8::2"),
        v4("192.0.2.2"),
        v4("192.0.2.3"),
    ]


def test_order_first_family_count_and_dedup() -> None:
    addrs = [
        v6("2001:db8::1"),
        v6("2001:db8::1"),
        v6("2001:db8::2"),
        v6("2001:db8::3"),
        v4("192.0.2.1"),
    ]
    assert order_for_happy_eyeballs(addrs, first_family_count=2) == [
        v6("2001:db8::1"),
        v6("2001:db8::2"),
        v4("192.0.2.1"),
        v6("2001:db8::3"),
    ]


def test_order_single_family_keeps_resolver_order() -> None:
    addrs = [v4("192.0.2.9"), v4("192.0.2.1"), v4("192.0.2.9")]
    assert order_for_happy_eyeballs(addrs) == [v4("192.0.2.9"), v4("192.0.2.1")]
    with pytest.raises(ValueError):
        order_for_happy_eyeballs(addrs, first_family_count=0)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", (V4, ("127.0.0.1", 80))),
        ("::1", (V6, ("::1", 80, 0, 0))),
        ("[::1]", (V6, ("::1", 80, 0, 0))),
        ("[2001:DB8:0::1]", (V6, ("2001:db8::1", 80, 0, 0))),
        ("fe80::1%1", (V6, ("fe80::1", 80, 0, 1))),
    ],
)
def test_ip_literals_are_parsed(host: str, expected: tuple[int, tuple[Any, ...]]) -> None:
    assert ip_literal_addresses(host, 80) == [expected]


def test_names_are_not_literals() -> None:
    assert ip_literal_addresses("example.com", 80) is None
    assert ip_literal_addresses("127.0.0.1.example", 80) is None
    with pytest.raises(DNSError, match="zone"):
        ip_literal_addresses("fe80::1%no-such-interface-zz", 80)


def test_invalid_configuration_is_rejected() -> None:
    with pytest.raises(ValueError):
        DNSCache(ttl=-1)
    with pytest.raises(ValueError):
        DNSCache(max_entries=-1)


# ---- cache behaviour ------------------------------------------------------------


async def test_answer_is_cached_until_ttl_expires(loop_name: str) -> None:
    clock, resolver = FakeClock(), FakeResolver()
    cache = DNSCache(ttl=30.0, resolver=resolver, clock=clock)
    first = await cache.resolve("example.com", 443)
    assert first == [v4("192.0.2.1")]
    clock.now += 29.9
    assert await cache.resolve("EXAMPLE.com", 443) == first
    assert len(resolver.calls) == 1
    assert cache.snapshot() == {"example.com:443": {"addresses": ["192.0.2.1"], "expires_in": 0.1}}
    clock.now += 0.2
    assert cache.snapshot() == {}
    await cache.resolve("example.com", 443)
    assert len(resolver.calls) == 2
    # A different port is a different entry.
    await cache.resolve("example.com", 80)
    assert resolver.calls[-1] == ("example.com", 80)


async def test_returned_list_is_a_copy(loop_name: str) -> None:
    cache = DNSCache(resolver=FakeResolver(), clock=FakeClock())
    got = await cache.resolve("example.com", 443)
    got.clear()
    assert await cache.resolve("example.com", 443) == [v4("192.0.2.1")]


async def test_ttl_zero_disables_caching(loop_name: str) -> None:
    resolver = FakeResolver()
    cache = DNSCache(ttl=0, resolver=resolver, clock=FakeClock())
    await cache.resolve("example.com", 443)
    await cache.resolve("example.com", 443)
    assert len(resolver.calls) == 2
    assert len(cache) == 0


async def test_lru_bound_evicts_least_recently_used(loop_name: str) -> None:
    resolver = FakeResolver()
    cache = DNSCache(max_entries=2, resolver=resolver, clock=FakeClock())
    await cache.resolve("a.test", 1)
    await cache.resolve("b.test", 1)
    await cache.resolve("a.test", 1)  # hit: a becomes most recent
    await cache.resolve("c.test", 1)  # evicts b
    assert len(cache) == 2
    assert set(cache.snapshot()) == {"a.test:1", "c.test:1"}
    calls = len(resolver.calls)
    await cache.resolve("a.test", 1)
    assert len(resolver.calls) == calls
    await cache.resolve("b.test", 1)
    assert len(resolver.calls) == calls + 1


async def test_ip_literals_bypass_resolver_and_cache(loop_name: str) -> None:
    resolver = FakeResolver()
    cache = DNSCache(resolver=resolver, clock=FakeClock())
    assert await cache.resolve("127.0.0.1", 8080) == [v4("127.0.0.1", 8080)]
    assert await cache.resolve("::1", 8080) == [(V6, ("::1", 8080, 0, 0))]
    assert await cache.resolve("[::1]", 8080) == [(V6, ("::1", 8080, 0, 0))]
    assert resolver.calls == []
    assert len(cache) == 0


async def test_results_are_ordered_for_happy_eyeballs(loop_name: str) -> None:
    resolver = FakeResolver({"dual.test": [v4("192.0.2.1"), v4("192.0.2.2"), v6("2001:db8::1")]})
    cache = DNSCache(resolver=resolver, clock=FakeClock())
    assert await cache.resolve("dual.test", 443) == [
        v6("2001:db8::1"),
        v4("192.0.2.1"),
        v4("192.0.2.2"),
    ]


async def test_concurrent_lookups_share_one_resolver_call(loop_name: str) -> None:
    resolver = FakeResolver()
    resolver.gate = asyncio.Event()
    cache = DNSCache(resolver=resolver, clock=FakeClock())
    waiters = [asyncio.create_task(cache.resolve("example.com", 443)) for _ in range(20)]
    await asyncio.sleep(0)
    assert "inflight=1" in repr(cache)
    resolver.gate.set()
    results = await asyncio.gather(*waiters)
    assert len(resolver.calls) == 1
    assert all(r == [v4("192.0.2.1")] for r in results)
    assert "inflight=0" in repr(cache)


async def test_cancelled_waiter_does_not_cancel_shared_lookup(loop_name: str) -> None:
    resolver = FakeResolver()
    resolver.gate = asyncio.Event()
    cache = DNSCache(resolver=resolver, clock=FakeClock())
    first = asyncio.create_task(cache.resolve("example.com", 443))
    second = asyncio.create_task(cache.resolve("example.com", 443))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    assert first.cancelled()
    resolver.gate.set()
    assert await asyncio.wait_for(second, 5) == [v4("192.0.2.1")]
    assert len(resolver.calls) == 1
    # The answer was cached even though its first asker gave up.
    assert "example.com:443" in cache.snapshot()


async def test_lookup_finishes_and_caches_when_every_waiter_left(loop_name: str) -> None:
    resolver = FakeResolver()
    resolver.gate = asyncio.Event()
    cache = DNSCache(resolver=resolver, clock=FakeClock())
    only = asyncio.create_task(cache.resolve("example.com", 443))
    await asyncio.sleep(0)
    only.cancel()
    resolver.gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert "example.com:443" in cache.snapshot()
    assert "inflight=0" in repr(cache)


async def test_failure_reaches_every_waiter_and_is_not_cached(loop_name: str) -> None:
    resolver = FakeResolver()
    resolver.gate = asyncio.Event()
    resolver.error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    cache = DNSCache(resolver=resolver, clock=FakeClock())
    waiters = [asyncio.create_task(cache.resolve("nx.test", 443)) for _ in range(3)]
    await asyncio.sleep(0)
    resolver.gate.set()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert len(resolver.calls) == 1
    for outcome in outcomes:
        assert isinstance(outcome, DNSError)
        assert "nx.test" in str(outcome)
        assert "Name or service not known" in str(outcome)
    assert len(cache) == 0
    resolver.error = None
    assert await cache.resolve("nx.test", 443) == [v4("192.0.2.1")]
    assert len(resolver.calls) == 2


async def test_empty_answer_is_an_error(loop_name: str) -> None:
    cache = DNSCache(resolver=FakeResolver({"empty.test": []}), clock=FakeClock())
    with pytest.raises(DNSError, match=r"empty\.test"):
        await cache.resolve("empty.test", 443)


async def test_clear_forgets_entries_and_inflight_results(loop_name: str) -> None:
    resolver = FakeResolver()
    cache = DNSCache(resolver=resolver, clock=FakeClock())
    await cache.resolve("a.test", 1)
    resolver.gate = asyncio.Event()
    pending = asyncio.create_task(cache.resolve("b.test", 1))
    await asyncio.sleep(0)
    cache.clear()
    resolver.gate.set()
    await pending
    assert len(cache) == 0


class FakeShared:
    def __init__(self) -> None:
        self.table: dict[tuple[str, int], tuple[list[Address], float]] = {}
        self.stored: list[tuple[str, int, list[Address], float]] = []
        self.broken = False

    def lookup(self, host: str, port: int) -> tuple[list[Address], float] | None:
        if self.broken:
            raise ConnectionError("coordinator gone")
        return self.table.get((host, port))

    def store(self, host: str, port: int, addresses: list[Address], ttl: float) -> None:
        if self.broken:
            raise ConnectionError("coordinator gone")
        self.stored.append((host, port, addresses, ttl))


async def test_shared_table_serves_and_receives_answers(loop_name: str) -> None:
    clock, resolver, shared = FakeClock(), FakeResolver(), FakeShared()
    shared.table[("fleet.test", 443)] = ([v4("198.51.100.7")], 5.0)
    cache = DNSCache(ttl=60.0, resolver=resolver, clock=clock, shared=shared)
    assert await cache.resolve("fleet.test", 443) == [v4("198.51.100.7")]
    assert resolver.calls == []
    # Cached locally only for what the shared entry had left.
    assert cache.snapshot()["fleet.test:443"]["expires_in"] == 5.0
    await cache.resolve("own.test", 443)
    assert shared.stored == [("own.test", 443, [v4("192.0.2.1")], 60.0)]
    shared.broken = True
    assert await cache.resolve("other.test", 443) == [v4("192.0.2.1")]


async def test_system_resolver_resolves_localhost_names(loop_name: str) -> None:
    cache = DNSCache()
    addresses = await cache.resolve("localhost", 8080)
    assert addresses
    assert {sockaddr[0] for _, sockaddr in addresses} <= {"127.0.0.1", "::1"}
    assert all(sockaddr[1] == 8080 for _, sockaddr in addresses)
