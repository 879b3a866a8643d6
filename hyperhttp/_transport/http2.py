"""One HTTP/2 connection: drives h2 over a SocketStream, many streams at once.

Reading is event-driven: the SocketStream calls `_on_data` as bytes arrive,
h2 turns them into events, and each event is filed on its stream at once.
Request tasks and body consumers only wait on their own stream's future, so
no reader task and no task switch sits between the socket and a stream.

The stream table
----------------
Every request holds one *slot* of the connection from the moment the pool
reserves it until the moment it is released:

    RESERVED --handle_request--> OPEN --response head--> BODY --end--> RELEASED
       |                           |                       |
       +--unreserve_stream()       +--error, cancel, timeout, reset, GOAWAY--+

    RESERVED   counted in `_reserved` only; no stream id yet
    OPEN       in `_streams` under its id; sending the request, then
               waiting for the response head
    BODY       in `_streams`; the caller reads the body at its own pace
    RELEASED   out of `_streams`; `on_release(self)` has been called

Rules:
1. `_reserved + len(_streams)` is what counts against the server's
   SETTINGS_MAX_CONCURRENT_STREAMS; `is_available()` says yes only while it
   is below the limit, no GOAWAY was received and the connection is open.
   If the server lowers its limit, requests already holding a slot wait in
   `handle_request` until enough streams end (bounded by the pool timeout).
2. A reservation becomes a table entry synchronously (no await between
   taking the id and sending HEADERS), and every slot is given back in a
   `finally`/`except BaseException` by exactly one call of `_release`, which
   resets the stream on the wire if neither side finished it and hands its
   unconsumed bytes back to the connection window.
3. Events never remove streams; they only record facts on them (head, data,
   end, error) and wake the one task waiting on that stream. The stream's
   owner (the request task, then the body consumer) releases it.
4. Received data is acknowledged to the server only as the consumer takes
   it (h2 batches the WINDOW_UPDATEs), so an unread response is bounded by
   the stream window. Bytes of a released stream are acknowledged at once.
5. Whenever capacity may have grown (a stream released, SETTINGS raised the
   limit) or shrunk (GOAWAY), `on_release(self)` tells the pool, so its
   waiters are served or sent elsewhere (never stranded, httpx#1216).
6. After GOAWAY no stream is opened; streams above its last-stream-id fail
   with RequestNotProcessed (the pool resends them), the others finish, and
   the connection closes when the last one is released.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import h2.events
import h2.exceptions
import h2.settings

from .._backends.stream import SocketStream
from .._config import Timeout
from .._content import close_body_iterator
from .._exceptions import (
    ConnectTimeout,
    HyperHTTPError,
    LocalProtocolError,
    PoolTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    StreamReset,
    WriteError,
    WriteTimeout,
)
from .._models import Request, Response
from .._proto.http2 import (
    CONNECTION_WINDOW,
    STREAM_WINDOW,
    ErrorCodes,
    build_request_headers,
    error_name,
    new_client_connection,
    parse_response_head,
    parse_trailers,
    remote_stream_limit,
)
from .signals import RequestNotProcessed, StaleConnection

if TYPE_CHECKING:
    from .pool import Origin

_MAX_CONCURRENT = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
_INITIAL_WINDOW = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


async def _wait_for(
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


class _Stream:
    """What the connection knows of one stream; see the module docstring."""

    __slots__ = (
        "chunks",
        "error",
        "head",
        "id",
        "local_closed",
        "remote_closed",
        "saw_bytes",
        "trailers",
        "unacked",
        "waiter",
    )

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.head: list[tuple[bytes, bytes]] | None = None
        self.chunks: deque[bytes] = deque()
        self.unacked = 0  # flow-controlled bytes received, not yet consumed
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.local_closed = False  # we sent END_STREAM (or reset)
        self.remote_closed = False  # the server sent END_STREAM (or reset)
        self.saw_bytes = False
        self.error: HyperHTTPError | None = None
        self.waiter: asyncio.Future[None] | None = None


class HTTP2Connection:
    """An HTTP/2 connection to one origin, shared by concurrent requests."""

    is_multiplexed = True
    http_version = "HTTP/2"

    def __init__(
        self,
        origin: Origin,
        stream: SocketStream,
        on_release: Callable[[HTTP2Connection], None],
        *,
        stream_window: int = STREAM_WINDOW,
        connection_window: int = CONNECTION_WINDOW,
    ) -> None:
        self.origin = origin
        self.peer = stream.peer
        self._stream = stream
        self._on_release = on_release
        self._loop = asyncio.get_running_loop()
        self._h2 = new_client_connection(
            stream_window=stream_window, connection_window=connection_window
        )
        self._streams: dict[int, _Stream] = {}
        self._reserved = 0
        # Until the server's SETTINGS arrive (start() waits for them), assume
        # the RFC's recommended minimum.
        self._limit = 100
        self._settings_received = False
        self._settings_waiter: asyncio.Future[None] | None = None
        self._capacity_waiters: list[asyncio.Future[None]] = []
        self._blocked: set[_Stream] = set()  # streams waiting for send window
        self._draining = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._goaway: tuple[int, int] | None = None  # (last_stream_id, error_code)
        self._closed = False
        self._failure: HyperHTTPError | None = None
        self.idle_since = time.monotonic()
        self.requests_served = 0
        stream.on_data = self._on_data
        self._flush()
        if stream.has_buffered_data() or stream.at_eof:
            self._on_data()  # bytes that arrived before we were listening

    # --- questions the pool asks ------------------------------------------
    def is_idle(self) -> bool:
        return not self._streams and not self._reserved

    def is_closed(self) -> bool:
        return self._closed

    def is_available(self) -> bool:
        return (
            not self._closed
            and self._goaway is None
            and self._reserved + len(self._streams) < self._limit
        )

    def active_streams(self) -> int:
        return len(self._streams) + self._reserved

    def is_alive_when_taken(self) -> bool:
        """No round trip: a closed socket or a GOAWAY means no."""
        stream = self._stream
        return not (self._closed or self._goaway is not None or stream.is_closed or stream.at_eof)

    def has_expired(self, now: float, keepalive_expiry: float | None) -> bool:
        return (
            keepalive_expiry is not None
            and self.is_idle()
            and now - self.idle_since > keepalive_expiry
        )

    def reserve_stream(self) -> None:
        self._reserved += 1

    def unreserve_stream(self) -> None:
        if self._reserved:
            self._reserved -= 1
            if self.is_idle():
                self.idle_since = time.monotonic()
                if self._goaway is not None:
                    self._close_transport()
                    # The pool is inside its own bookkeeping: tell it afterwards.
                    self._loop.call_soon(self._on_release, self)

    # --- opening ------------------------------------------------------------
    async def start(self, timeout: Timeout) -> None:
        """Wait for the server's SETTINGS (our preface is already sent), so
        the first requests know its MAX_CONCURRENT_STREAMS."""
        if self._settings_received:
            return
        if self._closed:
            raise self._failure or ReadError(f"connection to {self.peer} is closed")
        fut = self._settings_waiter = self._loop.create_future()
        limit = timeout.connect
        try:
            await _wait_for(self._loop, fut, limit)
        except TimeoutError:
            self.close()
            raise ConnectTimeout(
                f"{self.peer} sent no HTTP/2 SETTINGS within {limit:.3g}s"
            ) from None
        except BaseException:
            self.close()
            raise
        finally:
            self._settings_waiter = None

    # --- the request --------------------------------------------------------
    async def handle_request(self, request: Request, timeout: Timeout) -> Response:
        url = request.url
        try:
            headers = build_request_headers(
                request.method, url.scheme, url.netloc, url.target, request.headers.raw_items()
            )
            while len(self._streams) >= self._limit and self._goaway is None and not self._closed:
                await self._wait_for_capacity(timeout.pool)
            st = self._open_stream(headers, request.stream.content_length == 0)
        except BaseException:
            if self._reserved:
                self._reserved -= 1
            self._notify_pool()
            raise
        try:
            if not st.local_closed:
                await self._send_body(st, request, timeout.write)
            while st.head is None:
                if st.error is not None:
                    raise st.error
                if st.remote_closed:
                    raise RemoteProtocolError(
                        f"{self.peer} ended stream {st.id} without a response"
                    )
                await self._wait(st, timeout.read, self._read_timeout)
            status, fields = parse_response_head(st.head, self.peer)
        except BaseException:
            self._release(st)
            raise
        body = _H2Body(self, st, timeout.read)
        response = Response(
            status, headers=fields, stream=body, request=request, http_version="HTTP/2"
        )
        body.response = response
        return response

    def _open_stream(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> _Stream:
        if self._closed or self._goaway is not None:
            why = "is closed" if self._closed else "received GOAWAY"
            raise RequestNotProcessed(f"connection to {self.peer} {why}; request not sent")
        h2c = self._h2
        try:
            stream_id = h2c.get_next_available_stream_id()
            h2c.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.NoAvailableStreamIDError:
            self._goaway = (0, 0)  # ids exhausted: behave as after GOAWAY
            raise RequestNotProcessed(
                f"connection to {self.peer} has used all its stream ids; request not sent"
            ) from None
        except h2.exceptions.TooManyStreamsError:
            raise RequestNotProcessed(
                f"{self.peer} allows no more concurrent streams; request not sent"
            ) from None
        except h2.exceptions.ProtocolError as exc:
            raise LocalProtocolError(f"request to {self.peer} is malformed: {exc}") from None
        st = _Stream(stream_id)
        st.local_closed = end_stream
        if self._reserved:
            self._reserved -= 1
        self._streams[stream_id] = st
        self.requests_served += 1
        self._flush()
        return st

    async def _send_body(self, st: _Stream, request: Request, write_timeout: float | None) -> None:
        chunks = aiter(request.stream)
        try:
            await self._send_chunks(st, chunks, write_timeout)
        finally:
            await close_body_iterator(chunks)

    async def _send_chunks(
        self, st: _Stream, chunks: AsyncIterator[bytes], write_timeout: float | None
    ) -> None:
        h2c = self._h2
        sid = st.id
        async for chunk in chunks:
            view = memoryview(chunk)
            while view:
                if st.error is not None:
                    raise st.error
                if st.remote_closed:
                    # The server answered before taking the whole body; it
                    # wants no more (RFC 9113 8.1). Stop; release resets it.
                    return
                try:
                    window = h2c.local_flow_control_window(sid)
                    frame = h2c.max_outbound_frame_size
                    if not window:
                        self._blocked.add(st)
                        try:
                            await self._wait(st, write_timeout, self._write_timeout)
                        finally:
                            self._blocked.discard(st)
                        continue
                    size = min(window, len(view))
                    for offset in range(0, size, frame):
                        h2c.send_data(sid, view[offset : min(offset + frame, size)])
                except h2.exceptions.H2Error as exc:
                    raise self._send_failure(st, exc) from None
                view = view[size:]
                self._flush()
                await self._drain(write_timeout)
        if not st.remote_closed and st.error is None:
            try:
                h2c.end_stream(sid)
            except h2.exceptions.H2Error as exc:
                raise self._send_failure(st, exc) from None
            st.local_closed = True
            self._flush()

    def _send_failure(self, st: _Stream, exc: h2.exceptions.H2Error) -> HyperHTTPError:
        if st.error is not None:
            return st.error
        if self._failure is not None:
            return self._failure
        return WriteError(f"cannot send stream {st.id} to {self.peer}: {exc}")

    # --- the response body --------------------------------------------------
    async def next_chunk(
        self, st: _Stream, read_timeout: float | None, response: Response | None
    ) -> bytes:
        """The next piece of a response body; StopAsyncIteration at its end."""
        while True:
            chunks = st.chunks
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._acknowledge(st)
                return data
            if st.error is not None:
                self._release(st)
                raise st.error
            if st.remote_closed:
                if st.trailers is not None and response is not None:
                    response.trailers = parse_trailers(st.trailers)
                self._release(st)
                raise StopAsyncIteration
            try:
                await self._wait(st, read_timeout, self._read_timeout)
            except BaseException:
                self._release(st)
                raise

    def _acknowledge(self, st: _Stream) -> None:
        size = st.unacked
        if size and not self._closed:
            st.unacked = 0
            self._h2.acknowledge_received_data(size, st.id)
            self._flush()

    # --- waiting --------------------------------------------------------------
    async def _wait(
        self, st: _Stream, timeout: float | None, on_timeout: Callable[[_Stream, float], Exception]
    ) -> None:
        fut = st.waiter = self._loop.create_future()
        try:
            await _wait_for(self._loop, fut, timeout)
        except TimeoutError:
            assert timeout is not None
            raise on_timeout(st, timeout) from None
        finally:
            st.waiter = None

    def _read_timeout(self, st: _Stream, timeout: float) -> Exception:
        return ReadTimeout(
            f"no data from {self.peer} on stream {st.id} for {timeout:.3g}s (read timeout)"
        )

    def _write_timeout(self, st: _Stream, timeout: float) -> Exception:
        return WriteTimeout(
            f"{self.peer} gave no flow-control credit for stream {st.id} in "
            f"{timeout:.3g}s (write timeout)"
        )

    async def _wait_for_capacity(self, pool_timeout: float | None) -> None:
        fut = self._loop.create_future()
        self._capacity_waiters.append(fut)
        try:
            await _wait_for(self._loop, fut, pool_timeout)
        except TimeoutError:
            raise PoolTimeout(
                f"{self.peer} lowered its stream limit and no stream ended within "
                f"{pool_timeout}s (pool timeout)"
            ) from None
        finally:
            if fut in self._capacity_waiters:
                self._capacity_waiters.remove(fut)

    async def _drain(self, timeout: float | None) -> None:
        # SocketStream keeps one drain waiter; streams writing at once share it.
        if not self._draining:
            self._draining = True
            try:
                await self._stream.drain(timeout)
            finally:
                self._draining = False
                waiters, self._drain_waiters = self._drain_waiters, []
                for fut in waiters:
                    _wake(fut)
            return
        fut = self._loop.create_future()
        self._drain_waiters.append(fut)
        try:
            await _wait_for(self._loop, fut, timeout)
        except TimeoutError:
            raise WriteTimeout(
                f"{self.peer} accepted no data for {timeout:.3g}s (write timeout)"
            ) from None
        if self._failure is not None:
            raise self._failure

    # --- ending a stream ------------------------------------------------------
    def _release(self, st: _Stream) -> None:
        """Take a stream out of the table, once (rule 2)."""
        if self._streams.pop(st.id, None) is None:
            return
        if not self._closed:
            h2c = self._h2
            unfinished = not (st.local_closed and st.remote_closed)
            if unfinished and not self._is_unprocessed(st):
                try:
                    h2c.reset_stream(st.id, ErrorCodes.CANCEL)
                except h2.exceptions.H2Error:
                    pass  # h2 already considers it closed
            if st.unacked:
                # Its bytes will never be read: give the connection credit back.
                h2c.acknowledge_received_data(st.unacked, st.id)
                st.unacked = 0
            self._flush()
        st.chunks.clear()
        self._blocked.discard(st)
        if not self._streams:
            self.idle_since = time.monotonic()
        for fut in self._capacity_waiters:
            _wake(fut)
        if self._goaway is not None and self.is_idle():
            self._close_transport()
        self._on_release(self)

    def _is_unprocessed(self, st: _Stream) -> bool:
        return self._goaway is not None and st.id > self._goaway[0]

    def _notify_pool(self) -> None:
        if self._goaway is not None and self.is_idle():
            self._close_transport()
        self._on_release(self)

    # --- events from the socket -------------------------------------------------
    def _on_data(self) -> None:
        stream = self._stream
        data = stream.read_nowait()
        if data and not self._closed:
            try:
                events = self._h2.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                self._flush()  # h2 queued a GOAWAY naming the error
                self._terminate(
                    RemoteProtocolError(f"{self.peer} broke the HTTP/2 protocol: {exc}")
                )
                return
            notify = self._dispatch(events)
            self._flush()
            if notify and not self._closed:
                self._notify_pool()
        if stream.at_eof and not self._closed:
            self._terminate(None)

    def _dispatch(self, events: list[h2.events.Event]) -> bool:
        """File each event on its stream; True when the pool should look again."""
        streams = self._streams
        notify = False
        ev = h2.events
        for event in events:
            if isinstance(event, ev.DataReceived):
                st = streams.get(event.stream_id)
                if st is None:  # released already: credit back at once (rule 4)
                    self._h2.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                    continue
                if event.data:
                    st.chunks.append(event.data)
                st.unacked += event.flow_controlled_length
                st.saw_bytes = True
                _wake(st.waiter)
            elif isinstance(event, ev.ResponseReceived):
                st = streams.get(event.stream_id)
                if st is not None:
                    st.head = event.headers
                    st.saw_bytes = True
                    _wake(st.waiter)
            elif isinstance(event, ev.StreamEnded):
                st = streams.get(event.stream_id)
                if st is not None:
                    st.remote_closed = True
                    _wake(st.waiter)
            elif isinstance(event, ev.TrailersReceived):
                st = streams.get(event.stream_id)
                if st is not None:
                    st.trailers = event.headers
            elif isinstance(event, ev.WindowUpdated):
                self._window_opened(event.stream_id)
            elif isinstance(event, ev.StreamReset):
                self._stream_reset(event)
            elif isinstance(event, ev.RemoteSettingsChanged):
                notify = self._settings_changed(event) or notify
            elif isinstance(event, ev.ConnectionTerminated):
                self._goaway_received(event)
                notify = True
            # Pings are answered by h2; informational responses, priority,
            # ALTSVC and unknown frames need nothing from us.
        return notify

    def _window_opened(self, stream_id: int | None) -> None:
        if not self._blocked:
            return
        if not stream_id:
            for st in self._blocked:
                _wake(st.waiter)
        else:
            one = self._streams.get(stream_id)
            if one is not None:
                _wake(one.waiter)

    def _stream_reset(self, event: h2.events.StreamReset) -> None:
        st = self._streams.get(event.stream_id or 0)
        if st is None:
            return
        code = int(event.error_code or 0)
        complete = st.remote_closed and st.head is not None
        st.local_closed = st.remote_closed = True
        if complete:
            pass  # the response is whole; the server only stops our upload
        elif code == ErrorCodes.REFUSED_STREAM and st.head is None:
            st.error = RequestNotProcessed(f"{self.peer} refused stream {st.id} (REFUSED_STREAM)")
        elif not event.remote_reset:
            st.error = RemoteProtocolError(
                f"{self.peer} sent an invalid response on stream {st.id}; "
                f"reset with {error_name(code)}"
            )
        else:
            st.error = StreamReset(
                f"{self.peer} reset stream {st.id} with {error_name(code)}", error_code=code
            )
        _wake(st.waiter)

    def _settings_changed(self, event: h2.events.RemoteSettingsChanged) -> bool:
        changed = event.changed_settings
        notify = False
        if _MAX_CONCURRENT in changed or not self._settings_received:
            old, self._limit = self._limit, remote_stream_limit(self._h2)
            if self._limit > old:
                for fut in self._capacity_waiters:
                    _wake(fut)
            notify = True
        if _INITIAL_WINDOW in changed:
            self._window_opened(0)
        if not self._settings_received:
            self._settings_received = True
            _wake(self._settings_waiter)
        return notify

    def _goaway_received(self, event: h2.events.ConnectionTerminated) -> None:
        last = event.last_stream_id or 0
        code = int(event.error_code or 0)
        self._goaway = (last, code)
        for st in self._streams.values():
            if st.id > last:
                st.error = RequestNotProcessed(
                    f"{self.peer} sent GOAWAY ({error_name(code)}) before processing "
                    f"stream {st.id}"
                )
                _wake(st.waiter)
        for fut in self._capacity_waiters:
            _wake(fut)

    # --- closing ---------------------------------------------------------------
    def _terminate(self, error: HyperHTTPError | None) -> None:
        """The connection is gone: fail every unfinished stream and tell the pool."""
        if self._closed:
            return
        goaway = self._goaway
        for st in self._streams.values():
            if st.error is not None or (st.remote_closed and st.head is not None):
                continue
            if error is not None:
                st.error = error
            elif goaway is not None and goaway[1]:
                st.error = RemoteProtocolError(
                    f"{self.peer} closed the connection after GOAWAY "
                    f"({error_name(goaway[1])}) with stream {st.id} unfinished"
                )
            elif not st.saw_bytes and self.requests_served > len(self._streams):
                st.error = StaleConnection(
                    f"{self.peer} closed the HTTP/2 connection before answering stream {st.id}"
                )
            else:
                st.error = ReadError(
                    f"{self.peer} closed the connection with stream {st.id} unfinished"
                )
            _wake(st.waiter)
        self._failure = error or ReadError(f"connection to {self.peer} was closed")
        if self._settings_waiter is not None and not self._settings_waiter.done():
            self._settings_waiter.set_exception(self._failure)
        self._close_transport()
        self._on_release(self)

    def _close_transport(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._failure is None:
            self._failure = ReadError(f"connection to {self.peer} was closed")
        for st in self._streams.values():
            if st.error is None and not (st.remote_closed and st.head is not None):
                st.error = self._failure
            _wake(st.waiter)
        for fut in self._capacity_waiters:
            _wake(fut)
        for fut in self._drain_waiters:
            _wake(fut)
        self._stream.on_data = None
        self._stream.close()

    def call_when_closed(self, callback: Callable[[], None]) -> None:
        self._stream.call_when_closed(callback)

    def close(self) -> None:
        """Close now: say GOAWAY (best effort) and drop the socket; streams
        still running fail with ReadError."""
        if self._closed:
            return
        try:
            self._h2.close_connection()
            self._flush()
        except h2.exceptions.H2Error:
            pass
        self._close_transport()
        self._on_release(self)

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and not self._closed:
            try:
                self._stream.write(data)
            except WriteError as exc:
                self._terminate(exc)

    def __repr__(self) -> str:
        state = "CLOSED" if self._closed else "GOAWAY" if self._goaway else "OPEN"
        return (
            f"<HTTP2Connection {self.peer} {state} streams={len(self._streams)} "
            f"reserved={self._reserved} limit={self._limit} requests={self.requests_served}>"
        )


class _H2Body:
    """The response stream of one HTTP/2 exchange (an async iterator)."""

    __slots__ = ("_conn", "_read_timeout", "_st", "response")

    def __init__(self, conn: HTTP2Connection, st: _Stream, read_timeout: float | None) -> None:
        self._conn = conn
        self._st = st
        self._read_timeout = read_timeout
        self.response: Response | None = None  # gets the trailers

    def __aiter__(self) -> _H2Body:
        return self

    async def __anext__(self) -> bytes:
        return await self._conn.next_chunk(self._st, self._read_timeout, self.response)

    async def aclose(self) -> None:
        self._conn._release(self._st)

