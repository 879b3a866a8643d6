"""One HTTP/1.1 connection: drives h11 over a SocketStream.

Life of a connection (the pool owns it between requests):

    IDLE --handle_request--> ACTIVE --body read to the end, both sides DONE--> IDLE
                               |
                               +--error, cancel, body abandoned, Connection: close--> CLOSED

A connection is handed back to its pool exactly once per request, by
`_finish()`, whichever way the request ends: the body read to the end, the
response closed early, an exception or a cancellation. A response whose
body was not read to the end is never reused.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import h11

from .._backends.stream import SocketStream
from .._config import Timeout
from .._content import close_body_iterator
from .._exceptions import (
    LocalProtocolError,
    RemoteProtocolError,
    TransportError,
    WriteError,
)
from .._headers import Headers
from .._models import Request, Response
from .._proto.http11 import check_response_head, new_client_connection
from .signals import StaleConnection

if TYPE_CHECKING:
    from .pool import Origin

IDLE, ACTIVE, CLOSED = "IDLE", "ACTIVE", "CLOSED"


class HTTP11Connection:
    is_multiplexed = False
    http_version = "HTTP/1.1"

    def __init__(
        self,
        origin: Origin,
        stream: SocketStream,
        on_release: Callable[[HTTP11Connection], None],
    ) -> None:
        self.origin = origin
        self._stream = stream
        self._on_release = on_release
        self._h11 = new_client_connection()
        self._state = IDLE
        self._body_done = False
        self.idle_since = time.monotonic()
        self.requests_served = 0
        self.peer = stream.peer

    # --- questions the pool asks ------------------------------------------
    def is_idle(self) -> bool:
        return self._state == IDLE

    def is_closed(self) -> bool:
        return self._state == CLOSED

    def is_available(self) -> bool:
        return self._state == IDLE

    def active_streams(self) -> int:
        return 1 if self._state == ACTIVE else 0

    def is_alive_when_taken(self) -> bool:
        """Liveness check, done only when a connection leaves the idle set."""
        return self._state == IDLE and not self._stream.is_dead_when_idle()

    def reserve_stream(self) -> None:
        """Only multiplexed connections count stream reservations."""

    def unreserve_stream(self) -> None:
        """Only multiplexed connections count stream reservations."""

    def has_expired(self, now: float, keepalive_expiry: float | None) -> bool:
        return (
            self._state == IDLE
            and keepalive_expiry is not None
            and now - self.idle_since > keepalive_expiry
        )

    # --- the request --------------------------------------------------------
    async def handle_request(self, request: Request, timeout: Timeout) -> Response:
        assert self._state == IDLE, self._state
        self._state = ACTIVE
        self._body_done = False
        reused = self.requests_served > 0
        self.requests_served += 1
        try:
            try:
                await self._send_request(request, timeout)
            except WriteError as exc:
                # The server may have answered already (413, 401) and stopped
                # reading: that answer is more use to the caller than ours.
                event = await self._early_response(timeout.read, exc)
            else:
                event = await self._receive_head(timeout.read, reused)
        except BaseException:
            self._close()
            self._finish()
            raise
        headers = Headers.from_raw(
            [(n.decode("latin-1"), n.decode("latin-1"), v.decode("latin-1"))
             for n, v in event.headers]
        )
        return Response(
            event.status_code,
            headers=headers,
            stream=_H11Body(self, timeout.read),
            request=request,
            http_version="HTTP/1.1" if event.http_version == b"1.1" else "HTTP/1.0",
            reason_phrase=event.reason.decode("latin-1", errors="replace"),
        )

    async def _send_request(self, request: Request, timeout: Timeout) -> None:
        # The head was validated by the transport before a connection was
        # taken (validate_request_head), so these encodings cannot fail.
        url = request.url
        method = request.method.encode("ascii")
        target = url.target.encode("ascii")
        raw_headers = [
            (n.encode("latin-1"), v.encode("latin-1")) for n, _, v in request.headers.raw_items()
        ]
        if "host" not in request.headers:
            raw_headers.insert(0, (b"Host", url.netloc.encode("ascii")))
        extensions = request.extensions
        if "target" in extensions:
            target = extensions["target"]
            raw_headers.extend(
                (n.encode("latin-1"), v.encode("latin-1"))
                for n, v in extensions.get("proxy_headers", ())
            )
        stream = self._stream
        try:
            data = self._h11.send(h11.Request(method=method, target=target, headers=raw_headers))
            body = request.stream
            if body.content_length == 0:
                tail = self._h11.send(h11.EndOfMessage())
                stream.write((data or b"") + (tail or b""))
                await stream.drain(timeout.write)
                return
            stream.write(data or b"")
            chunks = aiter(body)
            try:
                async for chunk in chunks:
                    if chunk:
                        out = self._h11.send(h11.Data(data=chunk))
                        if out:
                            stream.write(out)
                            await stream.drain(timeout.write)
            finally:
                await close_body_iterator(chunks)
            tail = self._h11.send(h11.EndOfMessage())
            if tail:
                stream.write(tail)
            await stream.drain(timeout.write)
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(f"request to {self.peer} is malformed: {exc}") from None

    async def _early_response(self, read_timeout: float | None, exc: WriteError) -> h11.Response:
        """A response head the server sent before it stopped reading our
        body, or the write error when there is none."""
        if not self._stream.has_buffered_data() and not self._h11.trailing_data[0]:
            raise exc
        try:
            return await self._receive_head(read_timeout, reused=False)
        except TransportError:
            raise exc from None

    async def _receive_head(self, read_timeout: float | None, reused: bool) -> h11.Response:
        conn = self._h11
        got_bytes = False
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise RemoteProtocolError(
                    f"malformed response from {self.peer}: {exc}"
                ) from None
            if event is h11.NEED_DATA:
                data = await self._stream.read(read_timeout)
                if not data and not got_bytes:
                    if reused:
                        raise StaleConnection(
                            f"{self.peer} closed the kept-alive connection before responding"
                        )
                    raise RemoteProtocolError(
                        f"{self.peer} closed the connection without sending a response"
                    )
                got_bytes = got_bytes or bool(data)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                check_response_head(event, self.peer)
                continue
            if isinstance(event, h11.Response):
                check_response_head(event, self.peer)
                return event
            if isinstance(event, h11.ConnectionClosed):
                if reused and not got_bytes:
                    raise StaleConnection(
                        f"{self.peer} closed the kept-alive connection before responding"
                    )
                raise RemoteProtocolError(
                    f"{self.peer} closed the connection without sending a response"
                )
            raise RemoteProtocolError(f"unexpected event from {self.peer}: {event!r}")

    async def iter_body(self, read_timeout: float | None) -> AsyncIterator[bytes]:
        conn = self._h11
        stream = self._stream
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise RemoteProtocolError(
                    f"malformed response body from {self.peer}: {exc}"
                ) from None
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.read(read_timeout))
            elif isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._body_done = True
                return
            else:
                raise RemoteProtocolError(
                    f"{self.peer} closed the connection before the response body ended"
                )

    # --- ending a request ---------------------------------------------------
    def response_closed(self) -> None:
        """The response is done with: reuse the connection if the exchange
        ended cleanly, else close it; then give it back to the pool."""
        if self._state != ACTIVE:
            return
        conn = self._h11
        if (
            self._body_done
            and conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and not self._stream.is_closed
            # Bytes the server sent past the end of its response, already in
            # h11's buffer, would be read as the next response: never reuse.
            and not conn.trailing_data[0]
        ):
            conn.start_next_cycle()
            self._state = IDLE
            self.idle_since = time.monotonic()
        else:
            self._close()
        self._finish()

    def _finish(self) -> None:
        self._on_release(self)

    def _close(self) -> None:
        self._state = CLOSED
        self._stream.close()

    def close(self) -> None:
        if self._state != CLOSED:
            self._close()

    def call_when_closed(self, callback: Callable[[], None]) -> None:
        self._stream.call_when_closed(callback)

    def __repr__(self) -> str:
        return (
            f"<HTTP11Connection {self.peer} {self._state} "
            f"requests={self.requests_served}>"
        )


class _H11Body:
    """The response stream of one HTTP/1.1 exchange."""

    __slots__ = ("_conn", "_read_timeout")

    def __init__(self, conn: HTTP11Connection, read_timeout: float | None) -> None:
        self._conn = conn
        self._read_timeout = read_timeout

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._conn.iter_body(self._read_timeout)

    async def aclose(self) -> None:
        self._conn.response_closed()
