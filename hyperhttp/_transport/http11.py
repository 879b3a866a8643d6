"""One HTTP/1.1 connection: drives our own parser (`_proto/h1.py`) over a
SocketStream.

Life of a connection (the pool owns it between requests):

    IDLE --handle_request--> ACTIVE --body read to the end, reusable--> IDLE
                               |
                               +--error, cancel, body abandoned, Connection: close,
                                  bytes past the response--> CLOSED

A connection is handed back to its pool exactly once per request, by
`_finish()`, whichever way the request ends: the body read to the end, the
response closed early, an exception or a cancellation. A response whose
body was not read to the end is never reused.

The request head was validated by the transport before a connection was
taken (`check_request_line`, `field_block`), so nothing here can refuse a
request after a connection was spent on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

from .._backends.stream import SocketStream
from .._config import Timeout
from .._content import EMPTY_BODY, BytesBody, RequestBody, close_body_iterator
from .._exceptions import LocalProtocolError, RemoteProtocolError, TransportError, WriteError
from .._headers import Headers
from .._models import Request, Response
from .._proto.h1 import NEED_DATA, Head, ResponseParser
from .._proto.h1_request import (
    CHUNKED_END,
    FieldBlock,
    encode_chunk,
    field_block,
    serialize_request_head,
)
from .signals import StaleConnection

if TYPE_CHECKING:
    from .pool import Origin

IDLE, ACTIVE, CLOSED = "IDLE", "ACTIVE", "CLOSED"

# A body this small goes out in the same write as the head.
_COALESCE = 64 * 1024
# The most a streamed body chunk takes from the receive buffer (which holds
# up to 128 KiB; it held up to 1 MiB when this was measured). Each chunk is
# a new `bytes`, and its size decides how glibc
# serves it. Chunks of up to 1 MiB cost a 10 MiB download 15% more CPU and
# 5 MiB more peak RSS: each was mapped afresh and page-faulted in. 128 KiB
# chunks sit just over glibc's default mmap and trim thresholds (128 KiB,
# plus the `bytes` header): unless a larger block freed earlier had raised
# them, the heap grew for a chunk and was trimmed when it was freed, over
# and over (brk up and down, the pages faulted in afresh each time). 100
# downloads of 10 MiB, 4 at a time: 3,650 page faults with 128 KiB chunks,
# 1,350 with 64 KiB ones, which come from the heap's free space whatever
# came before.
BODY_CHUNK = 64 * 1024


class HTTP11Connection:
    is_multiplexed = False
    http_version = "HTTP/1.1"

    def __init__(
        self,
        origin: Origin,
        stream: SocketStream,
        on_release: Callable[[HTTP11Connection], None],
        proxy_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.origin = origin
        self._stream = stream
        # A connection to a forward proxy: its Proxy-Authorization, sent
        # with every request. Kept here, never in a request's extensions,
        # where hooks and reprs would see the credential.
        self._proxy_fields = [(n, n.lower(), v) for n, v in proxy_headers]
        self._on_release = on_release
        self._parser = ResponseParser(where=stream.peer)
        self._state = IDLE
        self._body_done = False
        # The server answered before taking the whole request: the rest of
        # it is unsent, so the connection cannot carry another one.
        self._cut_short = False
        # A 2xx that came while sending and lets the exchange go on: the
        # rest of the request is still sent, then this is the answer.
        self._early_head: Head | None = None
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
        self._parser.start(request.method)
        try:
            try:
                if not self._send_small(request):
                    await self._send_request(request, timeout)
                elif self._stream.write_paused:
                    await self._drain(timeout.write)
            except _AnsweredEarly as early:
                self._cut_short = True
                head = early.head
            except WriteError as exc:
                # The server may have answered already (413, 401) and stopped
                # reading: that answer is more use to the caller than ours.
                head = await self._early_response(timeout.read, exc)
            else:
                parser = self._parser
                if self._early_head is not None:
                    head, self._early_head = self._early_head, None
                elif parser.has_unparsed:
                    head = await self._receive_head(timeout.read, reused)
                else:
                    # Nothing to parse yet (the usual case: a connection is
                    # reused only when its last response ended at the buffer's
                    # end): wait for the socket at once; a head that came whole
                    # needs no further coroutine.
                    stream = self._stream
                    waiter = stream.data_waiter(timeout.read)
                    if waiter is not None:
                        await waiter
                    data = stream.read_head_nowait()  # b"" at EOF: _receive_head says why
                    event = None
                    if data:
                        parser.feed(data)
                        event = parser.next_event()
                    head = (
                        event if isinstance(event, Head)
                        else await self._receive_head(timeout.read, reused, event)
                    )
        except BaseException:
            self._close()
            self._finish()
            raise
        body = _H1Body(self, timeout.read)
        response = Response._from_wire(
            head.status, Headers.from_raw(head.headers), body, request,
            head.http_version, head.reason,
        )
        body.response = response
        return response

    def _send_small(self, request: Request) -> bool:
        """Write a request that needs no await (no body, or a small one in
        memory, not through a proxy) and return True; else False, nothing
        written. The caller drains if the transport asks it to."""
        body = request.stream
        extensions = request.extensions
        if "target" in extensions or not (
            body is EMPTY_BODY or (type(body) is BytesBody and len(body.data) <= _COALESCE)
        ):
            return False
        block = _fields(request)
        body_length = body.content_length
        length = block.framing(body_length)
        if length is None:
            return False
        _, target, netloc = request.url.wire_parts()
        head = block.head(request.method, target, netloc, body_length)
        if length:
            self._check_length(len(body.data), length)
            head += body.data
        self._stream.write(head)
        return True

    async def _send_request(self, request: Request, timeout: Timeout) -> None:
        url = request.url
        body = request.stream
        block = _fields(request)
        length = block.framing(body.content_length)
        extensions = request.extensions
        if "target" in extensions:  # forwarded through a proxy: absolute form
            headers = request.headers.raw_items() + self._proxy_fields
            head = serialize_request_head(
                request.method, extensions["target"], headers,
                body_length=body.content_length, host=url.netloc,
            )
        else:
            head = block.head(request.method, url.target, url.netloc, body.content_length)
        stream = self._stream
        if length == 0:
            stream.write(head)
        elif isinstance(body, BytesBody) and length is not None and length <= _COALESCE:
            self._check_length(len(body.data), length)
            stream.write(head + body.data)
        else:
            stream.write(head)
            await self._send_body(request, length, timeout.write)
            return
        await self._drain(timeout.write)

    async def _send_body(self, request: Request, length: int | None, write_timeout: float | None) -> None:
        stream = self._stream
        sent = 0
        chunks = _chunks(request.stream, stream.gathers_writes)
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                # A run of pieces (see _chunks) goes to the socket in one call.
                run = chunk if isinstance(chunk, list) else (chunk,)
                if length is None:
                    stream.writelines(
                        encode_chunk(run[0]) if len(run) == 1
                        else [piece for one in run for piece in encode_chunk(one)]
                    )
                else:
                    sent += sum(map(len, run))
                    if sent > length:
                        self._check_length(sent, length)
                    if len(run) == 1:
                        stream.write(run[0])
                    else:
                        stream.writelines(run)
                del chunk, run
                await self._drain(write_timeout)
        finally:
            await close_body_iterator(chunks)
        if length is None:
            stream.write(CHUNKED_END)
        else:
            self._check_length(sent, length)
        await self._drain(write_timeout)

    def _check_length(self, sent: int, length: int) -> None:
        if sent != length:
            raise LocalProtocolError(
                f"request body to {self.peer} is {'longer' if sent > length else 'shorter'} "
                f"than its Content-Length ({sent} bytes sent, {length} declared)"
            )

    async def _drain(self, write_timeout: float | None) -> None:
        """Until the transport takes more of the request. A final response
        that comes meanwhile ends the sending (a server that answers 413 or
        401 and stops reading; RFC 9112 9.5): `_AnsweredEarly`. A 1xx does
        not. One write timeout covers the whole wait."""
        stream = self._stream
        if not stream.write_paused:
            return
        loop = asyncio.get_running_loop()
        deadline = None if write_timeout is None else loop.time() + write_timeout
        parser = self._parser
        while True:
            left = None if deadline is None else max(deadline - loop.time(), 0.0)
            # Watch for an answer until one came, or EOF (nothing more can).
            watch = self._early_head is None and not stream.at_eof
            await stream.drain(left, until_data=watch, limit=write_timeout)
            if not stream.write_paused:
                return
            data = stream.read_nowait() if watch else b""
            if data:
                parser.feed(data)
                event = parser.next_event()
                if isinstance(event, Head):
                    # Stop only when the server does not want the rest: an
                    # error, or it closes. A 2xx that keeps the connection
                    # may come from a server answering as it reads; the rest
                    # of the request is sent, its body waits in the parser.
                    if event.status >= 300 or not event.keep_alive:
                        raise _AnsweredEarly(event)
                    self._early_head = event

    async def _early_response(self, read_timeout: float | None, exc: WriteError) -> Head:
        """A response head the server sent before it stopped reading our
        body, or the write error when there is none."""
        if not self._stream.has_buffered_data() and not self._parser.has_unparsed:
            raise exc
        try:
            return await self._receive_head(read_timeout, reused=False)
        except TransportError:
            raise exc from None

    async def _receive_head(
        self, read_timeout: float | None, reused: bool, event: object = None
    ) -> Head:
        """Parse the response head; `event` is the parser's answer to bytes
        the caller already fed (None when it fed none)."""
        parser = self._parser
        stream = self._stream
        got_bytes = event is not None
        while True:
            if event is None:
                event = parser.next_event()
            if event is NEED_DATA:
                event = None
                data = await stream.read(read_timeout, head=True)
                if data:
                    got_bytes = True
                    parser.feed(data)
                    continue
                if not got_bytes:
                    if reused:
                        raise StaleConnection(
                            f"{self.peer} closed the kept-alive connection before responding"
                        )
                    raise RemoteProtocolError(
                        f"{self.peer} closed the connection without sending a response"
                    )
                parser.feed_eof()
                continue
            if isinstance(event, Head):
                return event
            raise RemoteProtocolError(f"unexpected event from {self.peer}: {event!r}")

    def _body_ended(self, event: object, body: _H1Body) -> None:
        trailers = getattr(event, "trailers", None)
        if trailers and body.response is not None:
            body.response.trailers = Headers.from_raw(trailers)
        # Response and body point at each other: break the cycle so both
        # are freed by reference counting, not by the garbage collector.
        body.response = None
        self._body_done = True

    async def next_chunk(self, read_timeout: float | None, body: _H1Body) -> bytes | None:
        """The next piece of body data, or None at the end."""
        parser = self._parser
        while True:
            left = parser.length_left()
            if left:
                # A Content-Length body and nothing of it in the parser: its
                # bytes go from the stream straight to the caller, counted
                # by the parser (no feed, event and take per chunk).
                stream = self._stream
                limit = left if left < BODY_CHUNK else BODY_CHUNK
                data = stream.read_nowait(limit)
                if not data:
                    waiter = stream.data_waiter(read_timeout)
                    if waiter is not None:
                        await waiter
                        data = stream.read_nowait(limit)
                if data:
                    if len(data) <= left:
                        parser.took(len(data))
                        return data
                    parser.feed(data)  # bytes given back by unread() came too
                    continue
                # EOF: the parser names the truncation (below).
            event = parser.next_event()
            if type(event) is bytes:
                return event
            if event is NEED_DATA:
                # The stream's future, not its read() coroutine: one frame
                # fewer per chunk of a large body.
                stream = self._stream
                waiter = stream.data_waiter(read_timeout)
                if waiter is not None:
                    await waiter
                data = stream.read_nowait(BODY_CHUNK) or await stream.read(read_timeout)
                if data:
                    parser.feed(data)
                else:
                    parser.feed_eof()
                continue
            self._body_ended(event, body)
            return None

    def read_now(self, body: _H1Body) -> bytes | None:
        """The whole body if all of it is already received (a small body
        that came with the head), else None with no byte lost: what the
        stream held is then the parser's."""
        parser = self._parser
        data = parser.take_body()
        if data is None and not parser.has_unparsed and self._stream.has_buffered_data():
            # The head was split off a large read (read_head_nowait).
            parser.feed(self._stream.read_nowait())
            data = parser.take_body()
        if data is not None:
            body.response = None  # see _body_ended
            self._body_done = True
        return data

    async def read_all(self, read_timeout: float | None, body: _H1Body) -> bytes:
        """The whole body. A small body that came with the head is already
        in the parser: it is returned without waiting on the socket."""
        chunks: list[bytes] = []
        while (chunk := await self.next_chunk(read_timeout, body)) is not None:
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def response_closed(self) -> None:
        """The response is done with: reuse the connection if the exchange
        ended cleanly (the parser says whether: Connection: close, a
        close-delimited body, or bytes past the response all forbid it),
        else close it; then give it back to the pool."""
        if self._state != ACTIVE:
            return
        if (
            self._body_done and self._parser.reusable and not self._cut_short
            and not self._stream.is_closed
        ):
            self._state = IDLE
            self.idle_since = time.monotonic()
            self._stream.shrink()
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

    def close_by_client(self) -> None:
        """The client is shutting down: a request in flight ends with PoolClosed."""
        if self._state != CLOSED:
            self._state = CLOSED
            self._stream.close(by_client=True)

    def call_when_closed(self, callback: Callable[[], None]) -> None:
        self._stream.call_when_closed(callback)

    def __repr__(self) -> str:
        return (
            f"<HTTP11Connection {self.peer} {self._state} "
            f"requests={self.requests_served}>"
        )


def _chunks(
    body: RequestBody, gathered: bool
) -> AsyncIterator[bytes] | AsyncIterator[list[bytes]]:
    """The body's chunks; or, when the transport writes a list without
    joining it (`gathered`) and the body can offer several pieces at once (a
    multipart encoder reading files), runs of pieces to write in one call."""
    offer: Callable[[], AsyncIterator[list[bytes]]] | None = getattr(body, "_aiter_runs", None)
    return offer() if gathered and offer is not None else aiter(body)


def _fields(request: Request) -> FieldBlock:
    """The request's fields as the transport checked them before taking a
    connection, else (a connection driven directly) checked here."""
    block = request.extensions.get("framing")
    if type(block) is FieldBlock:
        return block
    return field_block(request.headers.raw_items())


class _AnsweredEarly(Exception):
    """A final response head arrived while the request was being sent."""

    def __init__(self, head: Head) -> None:
        super().__init__()
        self.head = head


class _H1Body:
    """The response stream of one HTTP/1.1 exchange: its own async iterator
    (no async generator, which the loop would register and track)."""

    __slots__ = ("_conn", "_done", "_read_timeout", "response")

    def __init__(self, conn: HTTP11Connection, read_timeout: float | None) -> None:
        self._conn = conn
        self._read_timeout = read_timeout
        self._done = False
        self.response: Response | None = None

    def __aiter__(self) -> _H1Body:
        return self

    async def __anext__(self) -> bytes:
        if not self._done:
            chunk = await self._conn.next_chunk(self._read_timeout, self)
            if chunk is not None:
                return chunk
            self._done = True
        raise StopAsyncIteration

    async def read_all(self) -> bytes:
        self._done = True
        return await self._conn.read_all(self._read_timeout, self)

    def read_now(self) -> bytes | None:
        if self._done:
            return None
        got = self._conn.read_now(self)
        if got is not None:
            self._done = True
        return got

    async def aclose(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        self._done = True
        self.response = None  # see _body_ended: no cycle left for the collector
        self._conn.response_closed()
