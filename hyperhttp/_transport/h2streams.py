"""The stream table of an HTTP/2 connection: the life of one stream's slot.

Every request holds one *slot* of the connection (`HTTP2Connection` in
http2.py) from the moment the pool reserves it until the moment it is
released:

    RESERVED --handle_request--> OPEN --response head--> BODY --end--> RELEASED
       |                           |                       |
       +--unreserve_stream()       +--error, cancel, timeout, reset, GOAWAY--+

    RESERVED   counted in `_reserved` only; no stream id yet
    OPEN       a `Stream` in `_streams` under its id; sending the request,
               then waiting for the response head
    BODY       in `_streams`; the caller reads the body at its own pace
    RELEASED   out of `_streams`; `on_release(conn)` has been called

Rules:
1. `_reserved + len(_streams)` is what counts against the server's
   SETTINGS_MAX_CONCURRENT_STREAMS; `is_available()` says yes only while it
   is below the limit, no GOAWAY was received and the connection is open.
   If the server lowers its limit, requests already holding a slot wait in
   `handle_request` until enough streams end (bounded by the pool timeout).
2. A reservation becomes a table entry synchronously (no await between
   taking the id and sending HEADERS), and every slot is given back in a
   `finally`/`except BaseException` by exactly one call of `release`, which
   resets the stream on the wire if neither side finished it and hands its
   unconsumed bytes back to the connection window.
3. Events never remove streams; they only record facts on them (head, data,
   end, error: the `receive_*` methods below) and wake the one task waiting
   on that stream. The stream's owner (the request task, then the body
   consumer, `H2Body`) releases it.
4. Received data is acknowledged to the server only as the consumer takes
   it (h2 batches the WINDOW_UPDATEs), so an unread response is bounded by
   the stream window. Bytes of a released stream, and padding (never handed
   to a consumer, but counted by flow control), are acknowledged at once.
5. Whenever capacity may have grown (a stream released, SETTINGS raised the
   limit) or shrunk (GOAWAY), `on_release(conn)` tells the pool, so its
   waiters are served or sent elsewhere (never stranded, httpx#1216).
6. After GOAWAY no stream is opened; streams above its last-stream-id fail
   with RequestNotProcessed (the pool resends them), the others finish, and
   the connection closes when the last one is released.
7. A stream is *complete* once it has its head and the server ended it;
   nothing that happens to the connection afterwards fails it. A body
   shorter than its content-length fails it when it ends (RFC 9113 8.1.1).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from .._exceptions import (
    HyperHTTPError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    StreamReset,
    WriteTimeout,
)
from .._proto.http2 import ErrorCodes, error_name
from .signals import RequestNotProcessed, StaleConnection

if TYPE_CHECKING:
    from .._models import Response
    from .http2 import HTTP2Connection

Fields = list[tuple[bytes, bytes]]


def wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


async def wait_for(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None], timeout: float | None
) -> None:
    """Await `fut`; TimeoutError after `timeout` seconds (None: no limit).
    Cheaper than asyncio.wait_for: no task, one timer."""
    handle = None if timeout is None else loop.call_later(timeout, _expire, fut)
    try:
        await fut
    finally:
        if handle is not None:
            handle.cancel()


class Stream:
    """What the connection knows of one stream; see the module docstring."""

    __slots__ = (
        "chunks",
        "error",
        "head",
        "head_request",
        "id",
        "local_closed",
        "pending",
        "received",
        "remote_closed",
        "saw_bytes",
        "trailers",
        "unacked",
        "waiter",
    )

    def __init__(self, stream_id: int, *, head_request: bool = False) -> None:
        self.id = stream_id
        self.head_request = head_request  # a HEAD: no body, whatever content-length says
        self.head: Fields | None = None
        self.chunks: deque[bytes] = deque()
        # DATA payloads of the read being processed, as views of the receive
        # buffer: `settle()` copies them into one `bytes` in `chunks` before
        # the connection returns to the loop.
        self.pending: list[memoryview] | None = None
        self.unacked = 0  # body bytes received, not yet consumed
        self.received = 0  # body bytes received in all, for the content-length check
        self.trailers: Fields | None = None
        self.local_closed = False  # we sent END_STREAM (or reset)
        self.remote_closed = False  # the server sent END_STREAM (or reset)
        self.saw_bytes = False
        self.error: HyperHTTPError | None = None
        self.waiter: asyncio.Future[None] | None = None

    def is_complete(self) -> bool:
        """Head received and ended by the server (rule 7)."""
        return self.remote_closed and self.head is not None

    def is_taking_body(self) -> bool:
        """Head received, body still open and nothing went wrong: a plain
        DATA frame can be filed without h2 (the DATA fast path)."""
        return (
            self.head is not None
            and self.trailers is None
            and self.error is None
            and not self.remote_closed
        )

    async def wait(
        self, loop: asyncio.AbstractEventLoop, timeout: float | None, *, reading: bool,
        peer: str, limit: float | None = None,
    ) -> None:
        """Until an event wakes this stream. After `timeout` seconds:
        ReadTimeout, or WriteTimeout when not `reading` (waiting for the
        server's flow-control credit). `limit`: the configured timeout to
        name, when `timeout` is what is left of it."""
        fut = self.waiter = loop.create_future()
        try:
            await wait_for(loop, fut, timeout)
        except TimeoutError:
            assert timeout is not None
            shown = timeout if limit is None else limit
            if reading:
                raise ReadTimeout(
                    f"no data from {peer} on stream {self.id} for {shown:.3g}s (read timeout)"
                ) from None
            raise WriteTimeout(
                f"{peer} gave stream {self.id} no flow-control window to send in for "
                f"{shown:.3g}s (write timeout)"
            ) from None
        finally:
            self.waiter = None

    def receive_head(self, headers: Fields) -> None:
        self.head = headers
        self.saw_bytes = True
        wake(self.waiter)

    def receive_views(self, payloads: list[memoryview], length: int, end_stream: bool) -> bool:
        """File plain DATA payloads (`length` bytes in all) that are views of
        the receive buffer; True when they are this stream's first of the
        read (the connection must then `settle()` it before it returns to
        the loop)."""
        first = False
        if length:
            pending = self.pending
            if pending is None:
                self.pending = payloads
                first = True
            else:
                pending.extend(payloads)
        self.unacked += length
        self.received += length
        self.saw_bytes = True
        if end_stream:
            self.remote_closed = True
        wake(self.waiter)
        return first

    def settle(self) -> None:
        """Copy the payloads of this read out of the receive buffer, into
        one `bytes`: the only copy a received byte gets."""
        pending = self.pending
        if pending is not None:
            self.pending = None
            self.chunks.append(pending[0].tobytes() if len(pending) == 1 else b"".join(pending))

    def receive_data(self, data: bytes, end_stream: bool) -> None:
        """File a DATA payload; its padding is the connection's to credit."""
        if self.pending is not None:
            self.settle()  # payloads filed earlier in this read come first
        if data:
            self.chunks.append(data)
            self.unacked += len(data)
            self.received += len(data)
        self.saw_bytes = True
        if end_stream:
            self.remote_closed = True
        wake(self.waiter)

    def receive_end(self, peer: str) -> None:
        """The server ended the stream. h2 checks the body against its
        content-length only when a DATA frame ends it; after a HEADERS
        frame with END_STREAM (the head itself, or trailers) that is ours."""
        self.remote_closed = True
        if self.head is not None and self.error is None:
            self._check_length(peer)
        wake(self.waiter)

    def _check_length(self, peer: str) -> None:
        # A body that differs from its content-length makes the response
        # malformed; a client must not accept it (RFC 9113 8.1.1). A HEAD
        # response, a 204 and a 304 have none whatever it says.
        assert self.head is not None
        if self.head_request:
            return
        for name, value in self.head:
            if name == b":status":
                if value == b"204" or value == b"304":
                    return
            elif name == b"content-length":
                # h2 refused the head already if it is not digits, or if
                # several disagree.
                declared = int(value)
                if declared != self.received:
                    self.error = RemoteProtocolError(
                        f"{peer} ended stream {self.id} after {self.received} bytes of "
                        f"body, but its content-length says {declared}: malformed response"
                    )
                return

    def receive_reset(self, code: int, *, remote: bool, peer: str, why: str = "") -> None:
        """The stream was reset, by the server (`remote`) or by us (h2, or
        the driver) because the server broke a rule on it; `why`: which."""
        complete = self.is_complete()
        self.local_closed = self.remote_closed = True
        if complete:
            pass  # the response is whole; the server only stops our upload
        elif code == ErrorCodes.REFUSED_STREAM and self.head is None:
            self.error = RequestNotProcessed(f"{peer} refused stream {self.id} (REFUSED_STREAM)")
        elif not remote:
            self.error = RemoteProtocolError(
                f"{peer} sent an invalid response on stream {self.id}"
                f"{f' ({why})' if why else ''}; reset with {error_name(code)}"
            )
        else:
            self.error = StreamReset(
                f"{peer} reset stream {self.id} with {error_name(code)}", error_code=code
            )
        wake(self.waiter)

    def not_processed(self, why: str) -> None:
        """The server said it will not process this stream (GOAWAY)."""
        self.error = RequestNotProcessed(f"{why} before processing stream {self.id}")
        wake(self.waiter)

    def connection_lost(
        self, error: HyperHTTPError | None, *, goaway_code: int, reused: bool, peer: str
    ) -> None:
        """The connection closed (with `error`, or None for a plain close by
        the server) under this stream; a complete or failed one is kept."""
        if self.error is not None or self.is_complete():
            return
        if error is not None:
            self.error = error
        elif goaway_code:
            self.error = RemoteProtocolError(
                f"{peer} closed the connection after GOAWAY "
                f"({error_name(goaway_code)}) with stream {self.id} unfinished"
            )
        elif not self.saw_bytes and reused:
            self.error = StaleConnection(
                f"{peer} closed the HTTP/2 connection before answering stream {self.id}"
            )
        else:
            self.error = ReadError(f"{peer} closed the connection with stream {self.id} unfinished")
        wake(self.waiter)


class H2Body:
    """The response stream of one HTTP/2 exchange (an async iterator); it
    owns the stream's slot once the head is returned (rule 3)."""

    __slots__ = ("_conn", "_read_timeout", "_st", "response")

    def __init__(self, conn: HTTP2Connection, st: Stream, read_timeout: float | None) -> None:
        self._conn = conn
        self._st = st
        self._read_timeout = read_timeout
        self.response: Response | None = None  # gets the trailers

    def __aiter__(self) -> H2Body:
        return self

    async def __anext__(self) -> bytes:
        return await self._conn.next_chunk(self._st, self._read_timeout, self.response)

    def read_now(self) -> bytes | None:
        """The whole body if the server has sent all of it (a small body
        that came with the head), the stream then released; else None with
        nothing consumed."""
        return self._conn.read_now(self._st, self.response)

    async def read_all(self) -> bytes:
        """The whole body, without an iterator per chunk."""
        conn, st, timeout, response = self._conn, self._st, self._read_timeout, self.response
        chunks: list[bytes] = []
        try:
            while True:
                chunks.append(await conn.next_chunk(st, timeout, response))
        except StopAsyncIteration:
            pass
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def aclose(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        self._conn.release(self._st)
        # Response.stream is this body: drop the way back, or every response
        # is a reference cycle left to the garbage collector.
        self.response = None
