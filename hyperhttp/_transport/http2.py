"""One HTTP/2 connection: drives h2 over a SocketStream, many streams at once.

Reading is event-driven: the SocketStream calls `_on_data` as bytes arrive,
h2 turns them into events, and each event is filed on its stream at once.
Request tasks and body consumers only wait on their own stream's future, so
no reader task and no task switch sits between the socket and a stream.

The stream table (slots, their states and the rules every change keeps) is
described in h2streams.py, with the per-stream transitions; the DATA and
request HEADERS fast paths (frames split here, plain DATA filed without h2;
request heads queued without h2's send_headers) in _proto/h2frames.py, the
response HEADERS one in _proto/h2heads.py; what each h2 event does in
h2events.py; request bodies go out in h2upload.py.
While several streams are in flight, what h2 queues for them is written
once per loop turn (`_flush_soon`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import h2.exceptions

from .._backends.stream import SocketStream
from .._config import Timeout
from .._exceptions import (
    ConnectTimeout,
    HyperHTTPError,
    LocalProtocolError,
    PoolClosed,
    PoolTimeout,
    ReadError,
    RemoteProtocolError,
    WriteError,
)
from .._models import Request, Response
from .._proto.h2frames import (
    FrameSplitter,
    acknowledge_data,
    has_queued,
    prune_if_closed,
    receive_data_fast,
    send_request_headers_fast,
)
from .._proto.h2heads import receive_headers_fast
from .._proto.http2 import (
    CONNECTION_WINDOW,
    STREAM_WINDOW,
    ErrorCodes,
    build_request_headers,
    new_client_connection,
    parse_response_head,
    parse_trailers,
)
from .h2events import H2Events
from .h2ping import IdlePinger
from .h2streams import H2Body, Stream, wait_for, wake
from .h2upload import send_body
from .signals import RequestNotProcessed

if TYPE_CHECKING:
    from .pool import Origin

# An idle connection is PINGed this often; no ACK within PING_TIMEOUT means
# the peer is gone (h2ping.py). Read when a connection is made.
IDLE_PING_INTERVAL = 30.0
PING_TIMEOUT = 10.0
# Answers h2 sends to the peer's own frames (PING and SETTINGS ACKs,
# RST_STREAM for frames on streams we reset) held unsent, once the peer has
# stopped reading, before we stop answering: a peer that keeps asking and
# reads nothing would grow our write buffer without end (RFC 9113 10.5).
# Uploads are not counted: they wait for the buffer to drain.
REPLY_BACKLOG_LIMIT = 4 * 1024 * 1024
MAX_STREAM_ID = 2**31 - 1


class HTTP2Connection(H2Events):
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
        fast_data: bool = True,
        fast_headers: bool = True,
    ) -> None:
        self.origin = origin
        self.peer = stream.peer
        self._stream = stream
        self._on_release = on_release
        self._loop = asyncio.get_running_loop()
        self._h2 = new_client_connection(
            stream_window=stream_window, connection_window=connection_window
        )
        self._streams: dict[int, Stream] = {}
        self._reserved = 0
        # Until the server's SETTINGS arrive (start() waits for them), assume
        # the RFC's recommended minimum.
        self._limit = 100
        self._settings_received = False
        self._settings_waiter: asyncio.Future[None] | None = None
        self._capacity_waiters: list[asyncio.Future[None]] = []
        self._blocked: set[Stream] = set()  # streams waiting for send window
        self._draining = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._goaway: tuple[int, int] | None = None  # (last_stream_id, error_code)
        self._ids_exhausted = False  # then _goaway is (MAX_STREAM_ID, 0): see _open_stream
        self._closed = False
        self._failure: HyperHTTPError | None = None
        self.idle_since = time.monotonic()
        self.requests_served = 0
        # Plain DATA frames skip h2 (see _proto/h2frames.py) unless this h2
        # lacks the internals that needs, or `fast_data` is False.
        self._frames = FrameSplitter(self._h2, enabled=fast_data)
        # Request HEADERS are queued without h2's send_headers (see
        # _proto/h2frames.py) unless `fast_headers` is False.
        self._fast_headers = fast_headers
        self._notify = False  # set while a read is filed: the pool should look again
        self._unsettled: list[Stream] = []  # streams holding views of the read being filed
        self._flush_scheduled = False
        self._pinger = IdlePinger(
            self._loop, self._send_ping, self._ping_unanswered,
            interval=IDLE_PING_INTERVAL, timeout=PING_TIMEOUT,
        )
        stream.on_data = self._on_data
        stream.one_read_per_turn = True  # let readers run between reads (uvloop)
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
        self._pinger.busy()

    def unreserve_stream(self) -> None:
        if self._reserved:
            self._reserved -= 1
            if self.is_idle():
                self.idle_since = time.monotonic()
                self._pinger.idle()
                if self._goaway is not None:
                    self._close_transport()
                    # The pool is inside its own bookkeeping: tell it afterwards.
                    self._loop.call_soon(self._on_release, self)

    # --- opening ------------------------------------------------------------
    async def start(self, timeout: Timeout, left: float | None = None) -> None:
        """Wait for the server's SETTINGS (our preface is already sent), so
        the first requests know its MAX_CONCURRENT_STREAMS. `left`: what is
        left of the connect timeout after dialling (default: all of it)."""
        if self._settings_received:
            return
        if self._closed:
            raise self._failure or ReadError(f"connection to {self.peer} is closed")
        fut = self._settings_waiter = self._loop.create_future()
        limit = timeout.connect
        try:
            await wait_for(self._loop, fut, limit if left is None else left)
            if self.is_idle():
                self._pinger.idle()
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
            st = self._open_stream(
                headers, request.stream.content_length == 0, request.method == "HEAD"
            )
        except BaseException:
            if self._reserved:
                self._reserved -= 1
            self._notify_pool()
            raise
        try:
            if not st.local_closed:
                await send_body(self, st, request, timeout.write)
            while st.head is None:
                if st.error is not None:
                    raise st.error
                if st.remote_closed:
                    raise RemoteProtocolError(
                        f"{self.peer} ended stream {st.id} without a response"
                    )
                await st.wait(self._loop, timeout.read, reading=True, peer=self.peer)
            status, fields = parse_response_head(st.head, self.peer)
        except BaseException:
            self.release(st)
            raise
        body = H2Body(self, st, timeout.read)
        response = Response(
            status, headers=fields, stream=body, request=request, http_version="HTTP/2"
        )
        body.response = response
        return response

    def _open_stream(
        self, headers: list[tuple[bytes, bytes]], end_stream: bool, head_request: bool = False
    ) -> Stream:
        self._pinger.busy()
        if self._closed or self._goaway is not None:
            why = "received GOAWAY" if not self._ids_exhausted else "has used all its stream ids"
            why = "is closed" if self._closed else why
            raise RequestNotProcessed(f"connection to {self.peer} {why}; request not sent")
        h2c = self._h2
        try:
            stream_id = h2c.get_next_available_stream_id()
            if not (
                self._fast_headers
                and send_request_headers_fast(h2c, stream_id, headers, end_stream)
            ):
                h2c.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.NoAvailableStreamIDError:
            # No new stream, as after a graceful GOAWAY naming the highest
            # id (RFC 9113 6.8): every stream already open is still processed
            # (and reset if abandoned); a real GOAWAY later replaces this.
            self._goaway = (MAX_STREAM_ID, 0)
            self._ids_exhausted = True
            raise RequestNotProcessed(
                f"connection to {self.peer} has used all its stream ids; request not sent"
            ) from None
        except h2.exceptions.TooManyStreamsError:
            raise RequestNotProcessed(
                f"{self.peer} allows no more concurrent streams; request not sent"
            ) from None
        except h2.exceptions.ProtocolError as exc:
            raise LocalProtocolError(f"request to {self.peer} is malformed: {exc}") from None
        st = Stream(stream_id, head_request=head_request)
        st.local_closed = end_stream
        if self._reserved:
            self._reserved -= 1
        self._streams[stream_id] = st
        self.requests_served += 1
        self._flush_soon(len(self._streams) > 1)
        return st

    # --- the response body --------------------------------------------------
    async def next_chunk(
        self, st: Stream, read_timeout: float | None, response: Response | None
    ) -> bytes:
        """The next piece of a response body; StopAsyncIteration at its end."""
        while True:
            chunks = st.chunks
            if chunks:
                # One chunk at a time, as received: joining the ones a slow
                # reader let pile up would copy them again into one large
                # allocation. Credit goes back for what is handed out.
                data = chunks.popleft()
                self._acknowledge(st, len(data) if chunks else None)
                return data
            if st.error is not None:
                self.release(st)
                raise st.error
            if st.remote_closed:
                if st.trailers is not None and response is not None:
                    response.trailers = parse_trailers(st.trailers)
                self.release(st)
                raise StopAsyncIteration
            try:
                await st.wait(self._loop, read_timeout, reading=True, peer=self.peer)
            except BaseException:
                self.release(st)
                raise

    def read_now(self, st: Stream, response: Response | None) -> bytes | None:
        """The whole body if the server ended the stream cleanly, the stream
        released (as at the end of `next_chunk`); else None, nothing taken."""
        if not st.remote_closed or st.error is not None:
            return None
        chunks = st.chunks
        data = b"".join(chunks)
        chunks.clear()
        if st.trailers is not None and response is not None:
            response.trailers = parse_trailers(st.trailers)
        self.release(st)  # gives the connection its credit for the bytes
        return data

    def _acknowledge(self, st: Stream, consumed: int | None = None) -> None:
        """Give the server credit for `consumed` bytes of the stream (None:
        all received so far, padding included)."""
        size = st.unacked if consumed is None else min(consumed, st.unacked)
        if size and not self._closed:
            st.unacked -= size
            # Credit goes out at once: the server may be waiting for it.
            credit = acknowledge_data(self._h2, size, st.id)
            self._flush_soon(len(self._streams) > 1 and not credit)

    # --- waiting --------------------------------------------------------------
    async def _wait_for_capacity(self, pool_timeout: float | None) -> None:
        fut = self._loop.create_future()
        self._capacity_waiters.append(fut)
        try:
            await wait_for(self._loop, fut, pool_timeout)
        except TimeoutError:
            raise PoolTimeout(
                f"{self.peer} lowered its stream limit and no stream ended within "
                f"{pool_timeout}s (pool timeout)"
            ) from None
        finally:
            if fut in self._capacity_waiters:
                self._capacity_waiters.remove(fut)

    # --- ending a stream ------------------------------------------------------
    def release(self, st: Stream) -> None:
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
            prune_if_closed(h2c, st.id)  # late frames on it: ignored, not fatal
            self._flush_soon(bool(self._streams))
        st.chunks.clear()
        self._blocked.discard(st)
        if not self._streams:
            self.idle_since = time.monotonic()
            if not self._reserved:
                self._pinger.idle()
        for fut in self._capacity_waiters:
            wake(fut)
        if self._goaway is not None and self.is_idle():
            self._close_transport()
        self._on_release(self)

    def _is_unprocessed(self, st: Stream) -> bool:
        return self._goaway is not None and st.id > self._goaway[0]

    def _notify_pool(self) -> None:
        if self._goaway is not None and self.is_idle():
            self._close_transport()
        self._on_release(self)

    # --- events from the socket -------------------------------------------------
    def _on_data(self) -> None:
        stream = self._stream
        # A view of the receive buffer: DATA payloads are copied out of it
        # once, per stream and read, by _settle (below, before returning).
        data = stream.read_view()
        if data and not self._closed:
            self._notify = False
            try:
                self._frames.feed(
                    data,
                    self._h2.max_inbound_frame_size,
                    self._receive_frames,
                    self._receive_fast,
                    self._receive_head_fast if self._fast_headers else None,
                )
            except h2.exceptions.ProtocolError as exc:
                self._settle()  # before _terminate releases the streams
                self._flush()  # h2 queued a GOAWAY naming the error
                self._terminate(
                    RemoteProtocolError(f"{self.peer} broke the HTTP/2 protocol: {exc}")
                )
                return
            finally:
                self._settle()  # whatever went wrong: no view outlives this call
            self._flush_replies()
            if self._notify and not self._closed:
                self._notify_pool()
        if stream.at_eof and not self._closed:
            self._terminate(None)

    def _settle(self) -> None:
        """Copy the DATA payloads filed from this read out of the receive
        buffer (views of it must not outlive the callback)."""
        unsettled = self._unsettled
        if unsettled:
            for st in unsettled:
                st.settle()
            unsettled.clear()

    def _receive_frames(self, data: bytes | memoryview) -> bool:
        """Hand complete frames (or any bytes, fast path off) to h2 and file
        its events; False once the connection is closed."""
        if self._dispatch(self._h2.receive_data(bytes(data))):
            self._notify = True
        return not self._closed

    def _receive_fast(
        self, stream_id: int, payloads: list[memoryview], length: int, end_stream: bool
    ) -> bool:
        """File a run of plain DATA frames of one stream without h2 when h2
        would only have accepted them; False: h2 must see them (it then
        takes the frames that are fine and refuses the first that is not)."""
        st = self._streams.get(stream_id)
        if (
            st is None
            or not st.is_taking_body()
            or not receive_data_fast(self._h2, stream_id, length, end_stream)
        ):
            return False
        if st.receive_views(payloads, length, end_stream):
            self._unsettled.append(st)
        return True

    def _receive_head_fast(self, stream_id: int, block: bytes, end_stream: bool) -> bool:
        """File a response head without h2's frame and event machinery when
        h2 would have accepted it; False: h2 must see the frame."""
        st = self._streams.get(stream_id)
        if st is None or st.head is not None or st.error is not None or st.remote_closed:
            return False
        fields = receive_headers_fast(self._h2, stream_id, block, end_stream)
        if fields is False:
            return False
        if isinstance(fields, bytes):  # a 1xx head: only a 101 needs anything
            if fields == b"101":
                self._refuse_switching(stream_id)
            return True
        st.receive_head(fields)
        if end_stream:
            st.receive_end(self.peer)
        return True

    # --- closing ---------------------------------------------------------------
    def _terminate(self, error: HyperHTTPError | None) -> None:
        """The connection is gone: fail every unfinished stream and tell the pool."""
        if self._closed:
            return
        goaway_code = 0 if self._goaway is None else self._goaway[1]
        # Some stream of this connection was answered earlier: a close before
        # any byte of this one may be the keep-alive race.
        reused = self.requests_served > len(self._streams)
        for st in self._streams.values():
            st.connection_lost(error, goaway_code=goaway_code, reused=reused, peer=self.peer)
        self._failure = error or ReadError(f"connection to {self.peer} was closed")
        if self._settings_waiter is not None and not self._settings_waiter.done():
            self._settings_waiter.set_exception(self._failure)
        self._close_transport()
        self._on_release(self)

    def _close_transport(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pinger.stop()
        if self._failure is None:
            self._failure = ReadError(f"connection to {self.peer} was closed")
        for st in self._streams.values():
            if st.error is None and not st.is_complete():
                st.error = self._failure
            wake(st.waiter)
        for fut in self._capacity_waiters:
            wake(fut)
        for fut in self._drain_waiters:
            wake(fut)
        self._stream.on_data = None
        self._stream.close()

    def call_when_closed(self, callback: Callable[[], None]) -> None:
        self._stream.call_when_closed(callback)

    def _send_ping(self, payload: bytes) -> None:
        if not self._closed:
            self._h2.ping(payload)
            self._flush()

    def _ping_unanswered(self, after: float) -> None:
        self._terminate(
            ReadError(f"{self.peer} did not answer a PING within {after:.3g}s: the connection "
                      "is gone")
        )

    def close_by_client(self) -> None:
        """The client is shutting down: streams in flight end with PoolClosed."""
        if not self._closed and self._failure is None:
            self._failure = PoolClosed(
                f"the client was closed while a request to {self.peer} was in flight"
            )
        self.close()

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

    def _flush_soon(self, others_in_flight: bool) -> None:
        """Write what h2 has queued: now when this is the only stream, else
        once at the end of this loop turn. Streams woken by one read then
        share one write (one TLS record, one syscall) instead of one each;
        every write still goes out in h2's order, and any `_flush` before
        then takes the queued bytes along."""
        if not others_in_flight:
            self._flush()
        elif not self._flush_scheduled and has_queued(self._h2):
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush_replies(self) -> None:
        """`_flush` after a read: what h2 queued then answers the peer's
        frames, and must not pile up while the peer reads none of it."""
        data = self._h2.data_to_send()
        if data and not self._closed:
            try:
                backlog = self._stream.write_reply(data)
            except WriteError as exc:
                self._terminate(exc)
                return
            if backlog > REPLY_BACKLOG_LIMIT:
                self._enhance_your_calm(backlog)

    def _enhance_your_calm(self, backlog: int) -> None:
        """The peer keeps sending frames that need an answer and reads
        none: GOAWAY(ENHANCE_YOUR_CALM) and close (RFC 9113 10.5). The
        GOAWAY goes behind the backlog, which closing drops: only a peer
        that reads by then sees it."""
        error = RemoteProtocolError(
            f"{self.peer} kept sending HTTP/2 frames that need an answer (PING, SETTINGS, "
            f"frames on reset streams) without reading the answers ({backlog} bytes "
            "unsent); closed the connection with ENHANCE_YOUR_CALM"
        )
        try:
            self._h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
            self._stream.write(self._h2.data_to_send())
        except (h2.exceptions.H2Error, WriteError):
            pass  # closing anyway
        self._terminate(error)

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and not self._closed:
            try:
                self._stream.write(data)
            except WriteError as exc:
                self._terminate(exc)

    def __repr__(self) -> str:
        state = "CLOSED" if self._closed else "GOAWAY" if self._goaway else "OPEN"
        state += " (no stream ids left)" if self._ids_exhausted else ""
        return (
            f"<HTTP2Connection {self.peer} {state} streams={len(self._streams)} "
            f"reserved={self._reserved} limit={self._limit} requests={self.requests_served}>"
        )
