"""The worker's view of the fleet DNS table: `SharedDNS` plus fleet-wide deduplication."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._protocol import Address as WireAddress
from ._protocol import DnsFailed, DnsStore, Resolve

if TYPE_CHECKING:
    from ._worker import WorkerBackend

__all__ = ["FleetDNSClient", "from_wire", "to_wire"]

log = logging.getLogger("hyperhttp.shared")

#: ``(family, sockaddr)`` as the dialer uses it.
Address = tuple[int, tuple[Any, ...]]
MAX_ADDRESSES = 16


def to_wire(addresses: list[Address]) -> list[WireAddress]:
    out: list[WireAddress] = []
    for family, sockaddr in addresses[:MAX_ADDRESSES]:
        host, port = str(sockaddr[0]), int(sockaddr[1])
        flow = int(sockaddr[2]) if len(sockaddr) > 2 else 0
        scope = int(sockaddr[3]) if len(sockaddr) > 3 else 0
        out.append((int(family), host, port, flow, scope))
    return out


def from_wire(addresses: list[WireAddress]) -> list[Address]:
    out: list[Address] = []
    for family, host, port, flow, scope in addresses:
        if family == socket.AF_INET6:
            out.append((family, (host, port, flow, scope)))
        else:
            out.append((family, (host, port)))
    return out


def _key(host: str, port: int) -> str:
    return f"{host.lower()}:{port}"


class FleetDNSClient:
    """DNS answers shared by the fleet; reads come from shared memory.

    Answers read from the table stay usable while the coordinator is away
    (until they expire), since the mapping outlives the connection."""

    def __init__(self, backend: WorkerBackend) -> None:
        self._backend = backend

    def __repr__(self) -> str:
        return f"<FleetDNSClient {self._backend.paths.socket}>"

    def lookup(self, host: str, port: int) -> tuple[list[Address], float] | None:
        """``(addresses, seconds_left)`` for a fresh shared answer, else None."""
        reader = self._backend.reader
        if reader is None:
            return None
        record = reader.dns(_key(host, port))
        if record is None:
            return None
        left = record.expires - self._backend._clock()
        if left <= 0 or not record.addresses:
            return None
        return from_wire(record.addresses), left

    def store(self, host: str, port: int, addresses: list[Address], ttl: float) -> None:
        """Publish an answer to the fleet (skipped if the table already has it)."""
        found = self.lookup(host, port)
        if found is not None and found[0] == addresses[:MAX_ADDRESSES]:
            return
        if addresses and ttl > 0 and len(host) <= 255:
            self._backend.send(DnsStore(host, port, to_wire(addresses), ttl))

    async def resolve(
        self, host: str, port: int, resolver: Callable[[str, int], Awaitable[list[Address]]]
    ) -> list[Address]:
        """Resolve `host` once for the fleet: wait for another worker's lookup
        in flight instead of asking `resolver` again."""
        found = self.lookup(host, port)
        if found is not None:
            return found[0]
        reply = None
        if len(host) <= 255 and await self._backend.ensure():
            def give_back(left_reply: Any) -> None:
                # We were told to resolve but left: let the waiters go ahead now.
                if left_reply[0] is None:
                    self._backend.send(DnsFailed(host, port))

            reply = await self._backend.request(
                "resolve", lambda req: Resolve(req, host, port), give_back)
        if reply is not None and reply[0] is not None:
            return from_wire(reply[0])
        ours = reply is not None  # the coordinator told us to go ahead
        try:
            addresses = await resolver(host, port)
        except BaseException:
            if ours:
                self._backend.send(DnsFailed(host, port))
            raise
        if addresses:
            ttl = self._backend.dns_ttl
            self._backend.send(DnsStore(host, port, to_wire(addresses), ttl))
        elif ours:
            self._backend.send(DnsFailed(host, port))
        return addresses
