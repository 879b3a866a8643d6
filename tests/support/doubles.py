"""Small stand-ins, inspectors and waits shared by several test modules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import hyperhttp
from hyperhttp._transport.pool import ConnectionPool


class ChunkStream:
    """A response stream that yields the given chunks; counts its aclose()."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed += 1


def pool_of(client: hyperhttp.Client) -> ConnectionPool:
    """The connection pool behind a client built with its default transport."""
    pool = client._transport.pool  # type: ignore[attr-defined]
    assert isinstance(pool, ConnectionPool)
    return pool


async def until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll `predicate` every 5 ms until it holds; AssertionError after `limit` s."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
