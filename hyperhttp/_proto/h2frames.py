"""The HTTP/2 DATA fast path (sans-I/O).

A response body arrives as DATA frames, by far the most common frame. h2
handles each through a frame object, a debug repr of it (computed even with
logging off), state-machine events and three copies of the payload. Here:

- `FrameSplitter` cuts the received bytes at frame boundaries and offers each
  plain DATA frame (complete, unpadded, outside a header block) to the
  driver; every other byte goes to h2, in order and in runs;
- `receive_data_fast` applies h2's rules for such a frame to h2's own state
  in a few attribute updates. Whenever the frame would break a rule, or the
  stream is anything but open, it declines, and the frame goes to h2, which
  then does exactly what it always does (errors included).

The one observable difference from handing every byte to h2 at once is that
the frames before a DATA frame are handed over (and their events filed)
before it, as if the bytes had arrived in two reads; see
tests/unit/test_h2_fast_path.py.

Nothing here touches a socket or the event loop.
"""

from __future__ import annotations

from collections.abc import Callable

import h2.connection
import h2.stream

_OPEN_STATES = frozenset({h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL})
_CLIENT_OPEN = h2.connection.ConnectionState.CLIENT_OPEN
_RECV_END_STREAM = h2.stream.StreamInputs.RECV_END_STREAM

_DATA, _HEADERS, _PUSH_PROMISE, _CONTINUATION = 0x0, 0x1, 0x5, 0x9
_END_STREAM, _END_HEADERS, _PADDED = 0x1, 0x4, 0x8


def _has_fast_data_internals() -> bool:
    # The h2 internals `receive_data_fast` updates are not public API: with
    # an h2 that lacks them every frame takes h2's own path.
    try:
        conn = h2.connection.H2Connection()
        probe = h2.stream.H2Stream(1, conn.config, 65535, 65535)
        return (
            hasattr(conn, "_inbound_flow_control_window_manager")
            and hasattr(probe, "_inbound_window_manager")
            and hasattr(probe._inbound_window_manager, "current_window_size")
            and hasattr(probe, "_expected_content_length")
            and hasattr(probe, "_actual_content_length")
        )
    except Exception:  # any failure means: use the slow path
        return False


FAST_DATA = _has_fast_data_internals()


def receive_data_fast(
    conn: h2.connection.H2Connection, stream_id: int, length: int, end_stream: bool
) -> bool:
    """Account for one unpadded DATA frame of `length` bytes the way h2's
    `receive_data` would; False (and nothing changed) when h2 must see it.

    The caller must know that the stream's response head was received (h2
    refuses DATA before it)."""
    stream = conn.streams.get(stream_id)
    if (
        stream is None
        or stream.state_machine.state not in _OPEN_STATES
        or conn.state_machine.state is not _CLIENT_OPEN
    ):
        return False
    conn_window = conn._inbound_flow_control_window_manager
    stream_window = stream._inbound_window_manager
    if conn_window.current_window_size < length or stream_window.current_window_size < length:
        return False  # a flow-control violation: h2 raises it
    actual = stream._actual_content_length + length
    expected = stream._expected_content_length
    if expected is not None and (actual > expected or (end_stream and actual != expected)):
        return False  # a body-length violation: h2 raises it
    conn_window.current_window_size -= length
    stream_window.current_window_size -= length
    stream._actual_content_length = actual
    if end_stream:
        stream.state_machine.process_input(_RECV_END_STREAM)
    return True


# on_frames(run) hands complete frames to h2; False: stop, the connection is gone.
FramesHandler = Callable[[bytes], bool]
# on_data(stream_id, payload, end_stream): True when the frame was taken.
DataHandler = Callable[[int, bytes, bool], bool]


class FrameSplitter:
    """Cuts the bytes received on one connection at HTTP/2 frame boundaries.

    `feed` offers every plain DATA frame to `on_data` and hands every other
    frame to `on_frames`, in order; a declined DATA frame goes to `on_frames`
    with the frames after it. The start of a frame whose end has not arrived
    is kept for the next `feed`. Disabled (h2 lacks the internals the fast
    path needs, or a frame too large for h2 arrived), it hands every byte to
    `on_frames` unchanged.
    """

    __slots__ = ("_in_header_block", "_partial", "enabled")

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled and FAST_DATA
        self._partial = b""
        self._in_header_block = False  # HEADERS seen, CONTINUATION expected

    def feed(
        self, data: bytes, max_frame: int, on_frames: FramesHandler, on_data: DataHandler
    ) -> None:
        if not self.enabled:
            on_frames(data)
            return
        if self._partial:
            data, self._partial = self._partial + data, b""
        size = len(data)
        start = pos = 0  # data[start:pos]: complete frames h2 has not seen yet
        while size - pos >= 9:
            length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
            if length > max_frame:
                # h2 refuses it (FRAME_SIZE_ERROR) once it has the header;
                # from here on h2 holds part of a frame, so it gets every byte.
                self.enabled = False
                on_frames(data[start:])
                return
            end = pos + 9 + length
            if end > size:
                break
            kind = data[pos + 3]
            flags = data[pos + 4]
            # Inside a header block h2 must see a DATA frame, to refuse it.
            if kind == _DATA and not flags & _PADDED and not self._in_header_block:
                if start < pos:  # earlier frames first: they may carry this stream's head
                    if not on_frames(data[start:pos]):
                        return
                    start = pos
                sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                if on_data(sid, data[pos + 9 : end], bool(flags & _END_STREAM)):
                    start = end
            elif kind in (_HEADERS, _PUSH_PROMISE, _CONTINUATION):
                self._in_header_block = not flags & _END_HEADERS
            pos = end
        if start < pos:
            on_frames(data[start:pos])
        if pos < size:
            self._partial = data[pos:]
