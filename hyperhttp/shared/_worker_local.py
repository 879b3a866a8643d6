"""Per-process slots while the coordinator is away: a FIFO queue with hand-off.

Rules
-----
- Waiters queue per origin in arrival order, each with a sequence number:
  when a slot frees, the oldest waiter anywhere whose origin fits the caps
  goes first (a full host never holds up a waiter for another host).
- A newcomer takes a slot at once only if nobody waits for its origin and
  the caps allow it; otherwise it queues behind the others.
- A freed slot is *handed over*: the lease is held on the waiter's behalf
  and the waiter is taken off the queue before it wakes. A woken waiter
  never re-checks, re-queues or races a newcomer.
- A waiter that leaves (cancel, timeout) is taken off its queue. If a slot
  was handed to it before it ran, it gives the lease back, which serves
  the next waiter: no wake-up is lost and no slot leaks. A grant that beat
  the waiter's own deadline is kept.
- `fail_all` ends every wait with an exception (mode change, close).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable

from ._backend import Lease

__all__ = ["LocalQueue"]

_Waiter = tuple[int, "asyncio.Future[Lease]"]


class LocalQueue:
    """FIFO waiters for per-process slots; see the module docstring.

    `fits(origin)` says whether the caps allow one more lease to `origin`,
    `grant(origin)` records one and returns it, `give_back(lease)` returns
    a lease (and calls `serve()` again)."""

    def __init__(
        self,
        *,
        fits: Callable[[str], bool],
        grant: Callable[[str], Lease],
        give_back: Callable[[Lease], None],
    ) -> None:
        self._fits = fits
        self._grant = grant
        self._give_back = give_back
        self._queues: dict[str, deque[_Waiter]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def __repr__(self) -> str:
        return f"<LocalQueue origins={len(self._queues)} waiting={len(self)}>"

    def has_waiters(self) -> bool:
        return bool(self._queues)

    def try_take(self, origin: str) -> Lease | None:
        """A lease at once, if nobody waits for `origin` and the caps allow it."""
        if origin in self._queues or not self._fits(origin):
            return None
        return self._grant(origin)

    async def wait(self, origin: str, timeout: float | None) -> Lease:
        """Queue for a slot to `origin`; TimeoutError after `timeout` seconds."""
        fut: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        waiter = (next(self._seq), fut)
        self._queues.setdefault(origin, deque()).append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except BaseException as exc:
            self._remove(origin, waiter)
            lease = _handed(fut)
            if lease is None:
                raise
            if isinstance(exc, TimeoutError):
                return lease  # the hand-over beat the deadline: keep it
            self._give_back(lease)  # cancelled after the hand-over: pass it on
            raise
        finally:
            self._remove(origin, waiter)

    def serve(self) -> None:
        """Hand free slots to the oldest waiters that fit."""
        while True:
            best: tuple[int, str] | None = None
            for origin, queue in list(self._queues.items()):
                while queue and queue[0][1].done():  # left; its task has not run yet
                    queue.popleft()
                if not queue:
                    del self._queues[origin]
                elif (best is None or queue[0][0] < best[0]) and self._fits(origin):
                    best = (queue[0][0], origin)
            if best is None:
                return
            origin = best[1]
            queue = self._queues[origin]
            _, fut = queue.popleft()
            if not queue:
                del self._queues[origin]
            fut.set_result(self._grant(origin))

    def fail_all(self, error: Callable[[], BaseException]) -> None:
        """End every wait with `error()`."""
        queues, self._queues = self._queues, {}
        for queue in queues.values():
            for _, fut in queue:
                if not fut.done():
                    fut.set_exception(error())
                    fut.exception()  # retrieved: a waiter that left must not warn

    def _remove(self, origin: str, waiter: _Waiter) -> None:
        queue = self._queues.get(origin)
        if queue is None:
            return
        try:
            queue.remove(waiter)
        except ValueError:
            return  # handed a slot, or already gone
        if not queue:
            del self._queues[origin]


def _handed(fut: asyncio.Future[Lease]) -> Lease | None:
    if fut.done() and not fut.cancelled() and fut.exception() is None:
        return fut.result()
    return None
