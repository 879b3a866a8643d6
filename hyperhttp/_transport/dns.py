"""Name resolution for dialing: a bounded-TTL, LRU-bounded, deduplicating DNS cache.

How an answer is found, in order:

1. IP literals (``127.0.0.1``, ``::1``, ``[::1]``, ``fe80::1%eth0``) are turned
   into an address directly. They never reach a resolver and are never cached.
2. A fresh entry in the local cache (keyed by ``(host, port)``) is returned.
3. If a *shared* store is configured (the fleet coordinator's table), a fresh
   entry there is copied into the local cache and returned.
4. Otherwise one lookup runs for the name. Every caller asking for the same
   name while it runs waits for that one lookup (no thundering herd). The
   lookup runs in its own task: a waiter that is cancelled stops waiting, but
   the lookup carries on for the others. A successful answer is cached for
   ``ttl`` seconds (getaddrinfo gives no TTL, so the bound is ours) and
   published to the shared store; a failure is raised to every waiter as
   `DNSError` and is not cached.

Answers are returned in Happy Eyeballs order (RFC 8305 section 4): duplicates
dropped, IPv6 first, families interleaved, resolver order kept within a
family. The ordering and cache bookkeeping are plain functions of their inputs
and an injected clock, so they test without a network.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

from .._exceptions import DNSError

__all__ = [
    "Address",
    "DNSCache",
    "DNSCacheEntry",
    "Resolver",
    "SharedDNS",
    "ip_literal_addresses",
    "order_for_happy_eyeballs",
    "system_resolver",
]

logger = logging.getLogger("hyperhttp.dns")

#: One resolved destination: ``(family, sockaddr)``, as ``loop.sock_connect`` takes it.
Address = tuple[int, tuple[Any, ...]]
#: ``resolver(host, port)`` returns the addresses of ``host`` (any order) or raises OSError.
Resolver = Callable[[str, int], Awaitable[list[Address]]]


class SharedDNS(Protocol):
    """A DNS table shared between processes (the fleet coordinator provides one).

    Both calls are synchronous because the fleet reads shared memory without a
    round trip. Errors they raise are logged and ignored: the cache then
    behaves as if there were no shared table.
    """

    def lookup(self, host: str, port: int) -> tuple[list[Address], float] | None:
        """Return ``(addresses, seconds_left)`` for a fresh entry, else None."""
        ...

    def store(self, host: str, port: int, addresses: list[Address], ttl: float) -> None:
        """Publish a fresh answer, valid for ``ttl`` seconds."""
        ...


class DNSCacheEntry(TypedDict):
    """One row of `DNSCache.snapshot()`."""

    addresses: list[str]
    expires_in: float


async def system_resolver(host: str, port: int) -> list[Address]:
    """Resolve with the running loop's ``getaddrinfo`` (a thread-pool call)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(int(family), tuple(sockaddr)) for family, _, _, _, sockaddr in infos]


def ip_literal_addresses(host: str, port: int) -> list[Address] | None:
    """The address of an IP literal host, or None when ``host`` is a name.

    Accepts IPv4, IPv6 with or without brackets, and IPv6 with a zone
    (``fe80::1%eth0`` or ``%2``). Raises `DNSError` for an unknown zone.
    """
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return [(int(socket.AF_INET), (str(ip), port))]
    scope_id = 0
    if ip.scope_id:
        scope = ip.scope_id
        try:
            scope_id = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
        except OSError as exc:
            raise DNSError(f"unknown IPv6 zone {scope!r} in {host!r}") from exc
    bare = literal.split("%", 1)[0]
    return [(int(socket.AF_INET6), (str(ipaddress.IPv6Address(bare)), port, 0, scope_id))]


def order_for_happy_eyeballs(
    addresses: Iterable[Address], *, first_family_count: int = 1
) -> list[Address]:
    """Order addresses for connection racing (RFC 8305 section 4).

    Duplicates are dropped. IPv6 comes first, then the families alternate:
    ``first_family_count`` IPv6 addresses, one IPv4, one IPv6, ... Within a
    family the resolver's order (RFC 6724 sorting by getaddrinfo) is kept.
    Families other than IPv4/IPv6 follow the IPv4 ones.
    """
    if first_family_count < 1:
        raise ValueError("first_family_count must be at least 1")
    seen: set[Address] = set()
    v6: list[Address] = []
    rest: list[Address] = []
    for addr in addresses:
        if addr in seen:
            continue
        seen.add(addr)
        (v6 if addr[0] == socket.AF_INET6 else rest).append(addr)
    if not v6 or not rest:
        return v6 or rest
    ordered = v6[:first_family_count]
    tail_v6 = v6[first_family_count:]
    for i in range(max(len(tail_v6), len(rest))):
        if i < len(rest):
            ordered.append(rest[i])
        if i < len(tail_v6):
            ordered.append(tail_v6[i])
    return ordered


@dataclass(slots=True, frozen=True)
class _Entry:
    addresses: tuple[Address, ...]
    expires_at: float


class DNSCache:
    """Caches resolved addresses per ``(host, port)`` for dialing.

    ``ttl`` bounds how long an answer is reused (0 disables caching but keeps
    deduplication); ``max_entries`` bounds the table, evicting the least
    recently used name. ``resolver`` and ``clock`` are injectable for tests;
    ``shared`` plugs in a cross-process table (see `SharedDNS`).
    One cache is meant to live as long as its client.
    """

    def __init__(
        self,
        *,
        ttl: float = 60.0,
        max_entries: int = 1024,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedDNS | None = None,
    ) -> None:
        if ttl < 0:
            raise ValueError("ttl must be >= 0")
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self._ttl = ttl
        self._max_entries = max_entries
        self._resolver: Resolver = resolver if resolver is not None else system_resolver
        self._clock = clock
        self._shared = shared
        self._entries: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._inflight: dict[tuple[str, int], asyncio.Task[list[Address]]] = {}
        # Bumped by clear(): a lookup started before clear() must not refill the table.
        self._generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"<DNSCache entries={len(self._entries)}/{self._max_entries} "
            f"inflight={len(self._inflight)} ttl={self._ttl}>"
        )

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Addresses of ``host`` in Happy Eyeballs order; raises `DNSError`."""
        literal = ip_literal_addresses(host, port)
        if literal is not None:
            return literal
        key = (host.lower(), port)
        cached = self.get_cached(host, port)
        if cached is not None:
            return cached
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._lookup(key, self._generation))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._lookup_done, key))
        # shield: cancelling this waiter must not cancel the lookup other waiters share.
        addresses = await asyncio.shield(task)
        return list(addresses)

    def get_cached(self, host: str, port: int) -> list[Address] | None:
        """A fresh cached answer (local table, then the shared one), else None."""
        key = (host.lower(), port)
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires_at > now:
                self._entries.move_to_end(key)
                return list(entry.addresses)
            del self._entries[key]
        if self._shared is not None:
            try:
                found = self._shared.lookup(*key)
            except Exception:
                logger.debug("shared DNS lookup failed for %s", key[0], exc_info=True)
                return None
            if found is not None and found[0] and found[1] > 0:
                addresses = order_for_happy_eyeballs(found[0])
                self._store(key, addresses, min(found[1], self._ttl), now)
                return addresses
        return None

    def snapshot(self) -> dict[str, DNSCacheEntry]:
        """Fresh entries as ``{"host:port": {"addresses": [...], "expires_in": s}}``."""
        now = self._clock()
        return {
            f"{host}:{port}": {
                "addresses": [str(sockaddr[0]) for _, sockaddr in entry.addresses],
                "expires_in": round(entry.expires_at - now, 3),
            }
            for (host, port), entry in self._entries.items()
            if entry.expires_at > now
        }

    def clear(self) -> None:
        """Forget every cached answer (lookups in flight still answer their waiters)."""
        self._entries.clear()
        self._generation += 1

    async def _lookup(self, key: tuple[str, int], generation: int) -> list[Address]:
        host, port = key
        try:
            fleet_resolve = getattr(self._shared, "resolve", None)
            if fleet_resolve is not None:
                # One lookup for the whole fleet: another worker's may answer.
                raw = await fleet_resolve(host, port, self._resolver)
            else:
                raw = await self._resolver(host, port)
        except DNSError:
            raise
        except (OSError, UnicodeError, ValueError) as exc:
            # gaierror/OSError from getaddrinfo; UnicodeError for names IDNA rejects.
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise DNSError(f"could not resolve {host!r}: {reason}") from exc
        addresses = order_for_happy_eyeballs(raw)
        if not addresses:
            raise DNSError(f"could not resolve {host!r}: no addresses returned")
        if generation == self._generation:
            self._store(key, addresses, self._ttl, self._clock())
        if self._shared is not None and self._ttl > 0:
            try:
                self._shared.store(host, port, addresses, self._ttl)
            except Exception:
                logger.debug("shared DNS store failed for %s", host, exc_info=True)
        return addresses

    def _lookup_done(self, key: tuple[str, int], task: asyncio.Task[list[Address]]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        # Mark the outcome as seen: if every waiter was cancelled nobody else will.
        if not task.cancelled():
            task.exception()

    def _store(
        self, key: tuple[str, int], addresses: list[Address], ttl: float, now: float
    ) -> None:
        if ttl <= 0 or self._max_entries == 0:
            return
        self._entries[key] = _Entry(tuple(addresses), now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
