"""Sending a request body on an HTTP/2 stream (the connection is in
http2.py).

The body goes out in DATA frames as the server's flow-control windows
allow: a stream without send window (zero, or negative after the server
lowered SETTINGS_INITIAL_WINDOW_SIZE) waits, bounded by the write timeout,
until a WINDOW_UPDATE or SETTINGS change wakes it; after each piece the
socket's write buffer is drained, streams writing at once sharing one drain.
If the server answers before taking the whole body, sending stops there
(RFC 9113 8.1) and releasing the stream resets it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import h2.exceptions

from .._content import close_body_iterator
from .._exceptions import HyperHTTPError, WriteError, WriteTimeout
from .h2streams import Stream, wait_for, wake

if TYPE_CHECKING:
    from .._models import Request
    from .http2 import HTTP2Connection


async def send_body(
    conn: HTTP2Connection, st: Stream, request: Request, write_timeout: float | None
) -> None:
    """Send `request`'s body on `st` and end the stream."""
    chunks = aiter(request.stream)
    try:
        await _send_chunks(conn, st, chunks, write_timeout)
    finally:
        await close_body_iterator(chunks)


async def _send_chunks(
    conn: HTTP2Connection, st: Stream, chunks: AsyncIterator[bytes], write_timeout: float | None
) -> None:
    h2c = conn._h2
    sid = st.id
    loop = conn._loop
    # While the stream cannot send: when the write timeout runs out. Held
    # across wake-ups that open no window (credit for other streams, or too
    # little to lift a negative window), or they would restart it for ever.
    deadline: float | None = None
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
                # <= 0, not == 0: a server lowering SETTINGS_INITIAL_WINDOW_SIZE
                # can leave the window negative (RFC 9113 6.9.2); still blocked.
                if window <= 0:
                    left = None
                    if write_timeout is not None:
                        now = loop.time()
                        if deadline is None:
                            deadline = now + write_timeout
                        left = max(deadline - now, 0.0)
                    conn._blocked.add(st)
                    try:
                        await st.wait(
                            loop, left, reading=False, peer=conn.peer, limit=write_timeout
                        )
                    finally:
                        conn._blocked.discard(st)
                    continue
                deadline = None
                size = min(window, len(view))
                for offset in range(0, size, frame):
                    h2c.send_data(sid, view[offset : min(offset + frame, size)])
            except h2.exceptions.H2Error as exc:
                raise _send_failure(conn, st, exc) from None
            view = view[size:]
            conn._flush()
            await drain(conn, write_timeout)
    if not st.remote_closed and st.error is None:
        try:
            h2c.end_stream(sid)
        except h2.exceptions.H2Error as exc:
            raise _send_failure(conn, st, exc) from None
        st.local_closed = True
        conn._flush()


def _send_failure(
    conn: HTTP2Connection, st: Stream, exc: h2.exceptions.H2Error
) -> HyperHTTPError:
    if st.error is not None:
        return st.error
    if conn._failure is not None:
        return conn._failure
    return WriteError(f"cannot send stream {st.id} to {conn.peer}: {exc}")


async def drain(conn: HTTP2Connection, timeout: float | None) -> None:
    """Until the socket's write buffer is below its limit."""
    # SocketStream keeps one drain waiter; streams writing at once share it.
    if not conn._draining:
        conn._draining = True
        try:
            await conn._stream.drain(timeout)
        finally:
            conn._draining = False
            waiters, conn._drain_waiters = conn._drain_waiters, []
            for fut in waiters:
                wake(fut)
        return
    fut = conn._loop.create_future()
    conn._drain_waiters.append(fut)
    try:
        await wait_for(conn._loop, fut, timeout)
    except TimeoutError:
        raise WriteTimeout(
            f"{conn.peer} accepted no data for {timeout:.3g}s (write timeout)"
        ) from None
    if conn._failure is not None:
        raise conn._failure
