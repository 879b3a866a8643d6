"""Keeping an idle HTTP/2 connection checked with PING.

A pooled HTTP/2 connection can sit idle for minutes, and a peer that went
away silently (a NAT that dropped the mapping, a host that died) sends no
FIN: the next request on it would wait out its read timeout. So while a
connection carries no stream, it is PINGed every `interval` seconds; an ACK
proves it alive, and no ACK within `timeout` declares it dead, after which
the pool drops it and the next request opens a fresh one.

Rules:
1. A PING is due only while the connection is idle; becoming busy cancels
   the next one, but not one already sent (its ACK still decides).
2. At most one PING is outstanding; an ACK with other data is ignored.
3. `stop()` (the connection closed) cancels everything; nothing fires after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class IdlePinger:
    __slots__ = ("_count", "_idle", "_interval", "_loop", "_on_dead", "_outstanding",
                 "_send", "_stopped", "_timeout", "_timer")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[bytes], None],
        on_dead: Callable[[float], None],
        *,
        interval: float | None,
        timeout: float,
    ) -> None:
        self._loop = loop
        self._send = send
        self._on_dead = on_dead
        self._interval = interval
        self._timeout = timeout
        self._timer: asyncio.TimerHandle | None = None
        self._outstanding: bytes | None = None
        self._idle = False
        self._stopped = False
        self._count = 0

    def idle(self) -> None:
        """The connection has no stream now: PING it after `interval`."""
        self._idle = True
        if self._timer is None and not self._stopped and self._interval is not None:
            self._timer = self._loop.call_later(self._interval, self._due)

    def busy(self) -> None:
        """A stream started: no PING is due while it runs (rule 1)."""
        self._idle = False
        if self._outstanding is None and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def acked(self, data: bytes) -> None:
        if self._outstanding is None or data != self._outstanding:
            return  # not ours (rule 2)
        self._outstanding = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._idle:
            self.idle()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _due(self) -> None:
        self._timer = None
        if self._stopped or not self._idle:
            return
        self._count += 1
        payload = self._count.to_bytes(8, "big")
        self._outstanding = payload
        self._timer = self._loop.call_later(self._timeout, self._expired)
        self._send(payload)

    def _expired(self) -> None:
        self._timer = None
        if not self._stopped and self._outstanding is not None:
            self._on_dead(self._timeout)
