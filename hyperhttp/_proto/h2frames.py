"""The HTTP/2 DATA and request HEADERS fast paths (sans-I/O).

A response body arrives as DATA frames, by far the most common frame. h2
handles each through a frame object, a debug repr of it (computed even with
logging off), state-machine events and three copies of the payload. Here:

- `FrameSplitter` cuts the received bytes at frame boundaries and offers each
  plain DATA frame (complete, unpadded, outside a header block) and each
  plain HEADERS frame (a whole header block; see h2heads.py) to the driver;
  every other byte goes to h2, in order and in runs;
- `receive_data_fast` applies h2's rules for such a frame to h2's own state
  in a few attribute updates. Whenever the frame would break a rule, or the
  stream is anything but open, it declines, and the frame goes to h2, which
  then does exactly what it always does (errors included).

Opening a request stream, h2 re-encodes header names and values it is given
as bytes already, builds frame objects, and counts its open streams by
walking all of them (pruning the closed ones) on every request.
`send_request_headers_fast` does what h2's `send_headers` does to h2's state
for a new client stream, and queues the same frame bytes; the walk (and its
pruning) is left to h2, which does it whenever the fast path declines,
at the latest once `_PRUNE_AT` streams are kept. Streams opened this way
also remember which received header blocks passed h2's checks
(`_CheckedStream`), so a response head seen before is not checked again.

The one observable difference from handing every byte to h2 at once is that
the frames before a DATA or HEADERS frame are handed over (and their events
filed) before it, as if the bytes had arrived in two reads; see
tests/unit/test_h2_fast_path.py.

`FrameSplitter` is also stricter than h2, with the fast paths on or off,
where h2 would wait for bytes that should never come or accept what it
should not (RFC 9113): the server's first frame must be a SETTINGS frame
(3.4; an HTTP/1.x answer is named as such), a frame header over our
SETTINGS_MAX_FRAME_SIZE is refused when its 9 bytes arrive (4.2; h2 waits
for the whole frame, up to 16 MiB), and so is a header block larger than
any block that decodes within our SETTINGS_MAX_HEADER_LIST_SIZE (see
`_BLOCK_FACTOR`). Each queues h2's GOAWAY and raises h2's ProtocolError
family, as h2 does for the errors it finds itself.

Nothing here touches a socket or the event loop.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import h2.connection
import h2.exceptions
import h2.stream
import h2.utilities

_OPEN_STATES = frozenset({h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL})
_CLIENT_OPEN = h2.connection.ConnectionState.CLIENT_OPEN
_SEND_HEADERS_CONN = h2.connection.ConnectionInputs.SEND_HEADERS
_STREAM_OPEN = h2.stream.StreamState.OPEN
_STREAM_HALF_CLOSED = h2.stream.StreamState.HALF_CLOSED_LOCAL
_RECV_END_STREAM = h2.stream.StreamInputs.RECV_END_STREAM

_DATA, _HEADERS, _PUSH_PROMISE, _CONTINUATION = 0x0, 0x1, 0x5, 0x9
_SETTINGS = 0x4
_END_STREAM, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x4, 0x8, 0x20
_ACK = 0x1
_BLOCK_FRAMES = frozenset({_HEADERS, _PUSH_PROMISE, _CONTINUATION})
_FRAME_NAMES = {
    0x0: "DATA", 0x1: "HEADERS", 0x2: "PRIORITY", 0x3: "RST_STREAM", 0x4: "SETTINGS",
    0x5: "PUSH_PROMISE", 0x6: "PING", 0x7: "GOAWAY", 0x8: "WINDOW_UPDATE", 0x9: "CONTINUATION",
}
# The largest header block (HEADERS or PUSH_PROMISE and its CONTINUATION
# frames, padding included) that can decode to a header list within our
# limit is under 4 times that limit plus a little: an HPACK field costs at
# most about 9 bytes plus 3.75 per octet of name and value (30-bit Huffman
# codes) and counts 32 plus 1 per octet; the rest is two table size updates,
# one padding (255) and one priority block. A larger block can only be
# abuse (a flood of size updates, say, which hpack takes one by one): it is
# refused as soon as its frames exceed that size, before any is decoded.
_BLOCK_FACTOR = 4
_BLOCK_SLACK = 1024


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


def _has_fast_headers_internals() -> bool:
    # Likewise for `send_request_headers_fast`.
    try:
        conn = h2.connection.H2Connection()
        probe = h2.stream.H2Stream(1, conn.config, 65535, 65535)
        machine = probe.state_machine
        stream_table: Any = h2.stream._transitions
        conn_table = h2.connection.H2ConnectionStateMachine._transitions
        state, inputs = h2.stream.StreamState, h2.stream.StreamInputs
        return (
            isinstance(getattr(conn, "_data_to_send", None), bytearray)
            and isinstance(getattr(conn, "_closed_streams", None), dict)
            and hasattr(probe, "closed_by")
            and isinstance(getattr(conn, "highest_outbound_stream_id", None), int)
            and hasattr(probe, "_authority")
            and hasattr(probe, "request_method")
            and hasattr(probe, "max_outbound_frame_size")
            and callable(getattr(probe, "_process_received_headers", None))
            # The transitions the fast path makes itself (see there).
            and conn_table[(_CLIENT_OPEN, _SEND_HEADERS_CONN)] == (None, _CLIENT_OPEN)
            and stream_table[(state.IDLE, inputs.SEND_HEADERS)]
            == (h2.stream.H2StreamStateMachine.request_sent, state.OPEN)
            and stream_table[(state.OPEN, inputs.SEND_END_STREAM)]
            == (None, state.HALF_CLOSED_LOCAL)
            and (machine.client, machine.headers_sent) == (None, None)
        )
    except Exception:  # any failure means: use h2's own path
        return False


FAST_HEADERS = _has_fast_headers_internals()
# h2 keeps closed streams in `conn.streams` until it next counts its open
# ones; the fast path, which does not count, hands over to h2 at this size.
_PRUNE_AT = 128
# Where h2's connection state machine takes a client's HEADERS without an
# event (its process_input below makes the transition, as h2's would).
_SENDING_STATES = frozenset({h2.connection.ConnectionState.IDLE, _CLIENT_OPEN})
_FRAME_HEAD = struct.Struct(">BHBBL")


# Received header blocks that passed h2's normalisation and checks, by
# (validation flags, fields, field types): both are pure functions of those.
_CHECKED: dict[tuple[object, ...], tuple[Any, ...]] = {}
_CHECKED_SIZE = 128


class _CheckedStream(h2.stream.H2Stream):
    """h2's stream, taking the result of h2's checks of a received header
    block from `_CHECKED` when the same block passed them before (servers
    send one response head many times). A block that fails is never kept:
    h2 refuses it again, the same way."""

    def _process_received_headers(
        self, headers: Any, header_validation_flags: Any, header_encoding: Any
    ) -> list[Any]:
        if header_encoding is not None or type(headers) is not list:
            return super()._process_received_headers(
                headers, header_validation_flags, header_encoding
            )
        config = self.config
        key = (
            header_validation_flags,
            config.normalize_inbound_headers,
            config.validate_inbound_headers,
            tuple(headers),
            tuple(map(type, headers)),
        )
        hit = _CHECKED.get(key)
        if hit is not None:
            return list(hit)
        out = super()._process_received_headers(headers, header_validation_flags, header_encoding)
        if len(_CHECKED) >= _CHECKED_SIZE:
            _CHECKED.clear()
        _CHECKED[key] = tuple(out)
        return out


def has_queued(conn: h2.connection.H2Connection) -> bool:
    """Whether h2 has bytes for `data_to_send()` (True when this h2 lacks
    the internals to tell)."""
    return bool(conn._data_to_send) if FAST_HEADERS else True


def acknowledge_data(conn: h2.connection.H2Connection, size: int, stream_id: int) -> bool:
    """h2's `acknowledge_received_data`; True when it queued a WINDOW_UPDATE
    (or, with an h2 lacking the internals to tell, may have)."""
    before = len(conn._data_to_send) if FAST_HEADERS else -1
    conn.acknowledge_received_data(size, stream_id)
    return before < 0 or len(conn._data_to_send) != before


def _frame_head(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    return _FRAME_HEAD.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id)


def send_request_headers_fast(
    conn: h2.connection.H2Connection,
    stream_id: int,
    headers: list[tuple[bytes, bytes]],
    end_stream: bool,
) -> bool:
    """Open client stream `stream_id` with `headers` as h2's `send_headers`
    would: the same state changes, the same frames queued in
    `data_to_send()`. False (and nothing changed) when h2 must do it.

    `headers` must hold bytes only (h2 would pass them through unchanged)
    and the connection must have outbound validation and normalisation off.
    """
    config = conn.config
    streams = conn.streams
    if (
        not FAST_HEADERS
        or not config.client_side
        or config.validate_outbound_headers
        or config.normalize_outbound_headers
        or conn.state_machine.state not in _SENDING_STATES
        or conn.max_outbound_frame_size <= 0
        or not headers
        or stream_id in streams
        or stream_id <= conn.highest_outbound_stream_id
        or not stream_id % 2
        # h2 counts the open streams among these and refuses the one past
        # the peer's limit: below it, h2 could only have accepted.
        or len(streams) + 1 > min(conn.remote_settings.max_concurrent_streams, _PRUNE_AT)
    ):
        return False
    if conn.state_machine.state is not _CLIENT_OPEN:
        # The first stream opens the connection; later ones leave it as it
        # is, without an event (checked against h2's table at import).
        conn.state_machine.process_input(_SEND_HEADERS_CONN)
    # What h2's _begin_new_stream does once its checks (above) pass.
    stream = _CheckedStream(
        stream_id,
        config=config,
        inbound_window_size=conn.local_settings.initial_window_size,
        outbound_window_size=conn.remote_settings.initial_window_size,
    )
    stream.max_outbound_frame_size = conn.max_outbound_frame_size
    streams[stream_id] = stream
    conn.highest_outbound_stream_id = stream_id
    # h2's stream transitions for SEND_HEADERS (request_sent: IDLE to OPEN,
    # its event dropped by h2 too) and, once the block is coded,
    # SEND_END_STREAM (OPEN to HALF_CLOSED_LOCAL); checked at import.
    machine = stream.state_machine
    machine.client = machine.headers_sent = True
    machine.state = _STREAM_OPEN
    block = conn.encoder.encode(headers)
    if end_stream:
        machine.state = _STREAM_HALF_CLOSED
    # h2 takes the first :authority and :method; ours lead the block.
    one, two = headers[0], headers[1] if len(headers) > 1 else (b"", b"")
    if stream._authority is None:
        stream._authority = (
            two[1]
            if two[0] == b":authority" and one[0] != b":authority"
            else next((v for n, v in headers if n == b":authority"), None)
        )
    stream.request_method = (
        one[1] if one[0] == b":method" else next((v for n, v in headers if n == b":method"), None)
    )
    size = stream.max_outbound_frame_size or 0
    first, rest = block[:size], block[size:]
    flags = (_END_STREAM if end_stream else 0) | (0 if rest else _END_HEADERS)
    out = [_frame_head(len(first), _HEADERS, flags, stream_id), first]
    while rest:
        piece, rest = rest[:size], rest[size:]
        out += (_frame_head(len(piece), _CONTINUATION, 0 if rest else _END_HEADERS, stream_id), piece)
    conn._data_to_send += b"".join(out)
    return True


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


def prune_if_closed(conn: h2.connection.H2Connection, stream_id: int) -> None:
    """Forget a closed stream now, as h2 does for all of them when it next
    counts its open streams (which the fast paths leave to it).

    h2 answers frames on a pruned stream by how it closed (ignored after our
    RST_STREAM, as RFC 9113 section 5.1 requires); while a closed stream is
    still kept, h2 takes an informational HEADERS frame on it as a
    connection error. So a late 1xx on a stream we reset would otherwise
    tear down every other stream of the connection."""
    stream = conn.streams.get(stream_id)
    if FAST_HEADERS and stream is not None and stream.closed:
        del conn.streams[stream_id]
        conn._closed_streams[stream_id] = stream.closed_by


# on_frames(run) hands complete frames to h2 (a slice of what `feed` got:
# a view when that was one); False: stop, the connection is gone.
FramesHandler = Callable[[Any], bool]
# on_data(stream_id, payloads, length, end_stream): True when the frames were
# taken. One call per run of consecutive plain DATA frames of one stream;
# `payloads` are views of the bytes received (the taker copies them out),
# `length` their total, `end_stream` the last frame's flag.
DataHandler = Callable[[int, list[memoryview], int, bool], bool]
# on_headers(stream_id, block, end_stream): likewise, for a whole header block
# (always `bytes`).
HeadersHandler = Callable[[int, bytes, bool], bool]


class FrameSplitter:
    """Cuts the bytes received on one connection at HTTP/2 frame boundaries.

    `feed` offers every plain DATA frame to `on_data`, every plain HEADERS
    frame (a whole header block: END_HEADERS, no padding, no priority) to
    `on_headers`, and hands every other frame to `on_frames`, in order; a
    declined frame goes to `on_frames` with the frames after it. The start
    of a frame whose end has not arrived is kept for the next `feed`.
    Disabled (h2 lacks the internals the fast path needs), it hands every
    byte to `on_frames` unchanged.

    Either way it reads every frame header, and refuses what the module
    docstring lists: h2's ProtocolError raised, h2's GOAWAY queued on `conn`
    (the connection the bytes are for; without it, nothing is queued).
    """

    __slots__ = (
        "_block", "_conn", "_in_header_block", "_max_block", "_max_list", "_partial", "_preface",
        "_skip", "enabled",
    )

    def __init__(
        self, conn: h2.connection.H2Connection | None = None, *, enabled: bool = True
    ) -> None:
        self.enabled = enabled and FAST_DATA
        self._conn = conn
        self._partial = b""
        self._in_header_block = False  # HEADERS seen, CONTINUATION expected
        self._block = 0  # payload bytes of the header block so far
        # What we told the server (h2 applies the same limit when decoding).
        default = h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE
        limit = (conn.local_settings.max_header_list_size if conn else None) or default
        self._max_list = limit
        self._max_block = _BLOCK_FACTOR * limit + _BLOCK_SLACK
        self._preface = True  # the server's first frame header is still to come
        self._skip = 0  # disabled: bytes of the current frame still to come

    def feed(
        self,
        data: bytes | memoryview,
        max_frame: int,
        on_frames: FramesHandler,
        on_data: DataHandler,
        on_headers: HeadersHandler | None = None,
    ) -> None:
        """Split `data` and hand it on; raises h2's ProtocolError family, with
        h2's GOAWAY queued, for what h2 or the checks here refuse."""
        try:
            if self._preface and not self._check_preface(data):
                self._partial += bytes(data)  # under 9 bytes so far
                if not self.enabled:
                    on_frames(data)
                return
            if not self.enabled:
                self._scan(data, max_frame)
                on_frames(data)
            else:
                self._feed(data, max_frame, on_frames, on_data, on_headers)
        except h2.exceptions.NoSuchStreamError as exc:
            # h2's message is the bare stream id.
            raise h2.exceptions.ProtocolError(
                f"sent a frame on stream {exc.stream_id}, which was never opened"
            ) from exc

    def _feed(
        self,
        data: bytes | memoryview,
        max_frame: int,
        on_frames: FramesHandler,
        on_data: DataHandler,
        on_headers: HeadersHandler | None,
    ) -> None:
        begin = 0
        partial = self._partial
        if partial:
            # Finish the frame the last read cut, from the front of this one:
            # a copy of that frame only, not of the whole read.
            self._partial = b""
            header = partial if len(partial) >= 9 else partial + data[: 9 - len(partial)]
            if len(header) < 9:
                self._partial = header
                return
            need = 9 + ((header[0] << 16) | (header[1] << 8) | header[2]) - len(partial)
            if need > len(data):
                data = partial + data  # still cut (or too large: the loop says so)
            else:
                if not self._frames(partial + data[:need], 0, max_frame, on_frames, on_data, on_headers):
                    return
                begin = need
        self._frames(data, begin, max_frame, on_frames, on_data, on_headers)

    def _check_preface(self, data: bytes | memoryview) -> bool:
        """False while the server's first frame header is incomplete; raises
        unless it is a SETTINGS frame (RFC 9113 section 3.4)."""
        head = self._partial + bytes(data[:64])
        if len(head) < 9:
            return False
        self._preface = False
        if head.startswith(b"HTTP/"):
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            raise self._refuse(
                h2.exceptions.ProtocolError(f"answered in HTTP/1.x, not HTTP/2: {line!r}")
            )
        if head[3] != _SETTINGS or head[4] & _ACK:
            what = "a SETTINGS ACK" if head[3] == _SETTINGS else _describe(head, 0)
            raise self._refuse(
                h2.exceptions.ProtocolError(
                    f"began with {what}, not its SETTINGS (RFC 9113 section 3.4)"
                )
            )
        return True

    def _refuse(self, error: h2.exceptions.ProtocolError) -> h2.exceptions.ProtocolError:
        # As h2 does for the errors it finds: a GOAWAY naming the error.
        if self._conn is not None:
            self._conn.close_connection(error.error_code)
        return error

    def _too_large(self, data: bytes | memoryview, pos: int, max_frame: int) -> Exception:
        length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
        return self._refuse(
            h2.exceptions.FrameTooLargeError(
                f"sent {_describe(data, pos)} of {length} bytes, over the "
                f"SETTINGS_MAX_FRAME_SIZE of {max_frame} we advertised"
            )
        )

    def _header_block(self, data: bytes | memoryview, pos: int, length: int, flags: int) -> None:
        """Count a HEADERS, PUSH_PROMISE or CONTINUATION frame of `length`
        payload bytes into its header block; raises once the block is larger
        than any we could accept (see `_BLOCK_FACTOR`)."""
        block = self._block + length
        if block > self._max_block:
            raise self._refuse(
                h2.exceptions.DenialOfServiceError(
                    f"sent a header block of {block} bytes so far, up to {_describe(data, pos)}: "
                    f"more than any that decodes within the SETTINGS_MAX_HEADER_LIST_SIZE "
                    f"of {self._max_list} we advertised"
                )
            )
        self._in_header_block = not flags & _END_HEADERS
        self._block = block if self._in_header_block else 0

    def _scan(self, data: bytes | memoryview, max_frame: int) -> None:
        """Disabled: check every frame header in `data` (bytes h2 is about to
        get unchanged), following frames across reads."""
        size = len(data)
        pos = self._skip  # where the next frame header starts in `data`
        partial = self._partial
        if partial:  # a frame header cut by the last read (so `pos` is 0)
            head = partial + bytes(data[: 9 - len(partial)])
            if len(head) < 9:
                self._partial = head
                return
            self._partial = b""
            pos = 9 - len(partial) + self._check_header(head, 0, max_frame)
        while size - pos >= 9:
            pos += 9 + self._check_header(data, pos, max_frame)
        if pos < size:
            self._partial = bytes(data[pos:])
            self._skip = 0
        else:
            self._skip = pos - size

    def _check_header(self, data: bytes | memoryview, pos: int, max_frame: int) -> int:
        """The payload length of the frame whose header is at `data[pos]`,
        checked as `_frames` checks it."""
        length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
        if length > max_frame:
            raise self._too_large(data, pos, max_frame)
        if data[pos + 3] in _BLOCK_FRAMES:
            self._header_block(data, pos, length, data[pos + 4])
        return length

    def _frames(
        self,
        data: bytes | memoryview,
        pos: int,
        max_frame: int,
        on_frames: FramesHandler,
        on_data: DataHandler,
        on_headers: HeadersHandler | None,
    ) -> bool:
        """Split `data[pos:]`; False when a handler said the connection is
        gone (stop). DATA payloads go out as views of `data`, not copies."""
        size = len(data)
        start = pos  # data[start:pos]: complete frames h2 has not seen yet
        view = memoryview(data)
        while size - pos >= 9:
            length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
            if length > max_frame:
                # h2 would wait for all of it (up to 16 MiB) before refusing.
                if start < pos and not on_frames(data[start:pos]):
                    return False
                raise self._too_large(data, pos, max_frame)
            end = pos + 9 + length
            if end > size:
                break
            kind = data[pos + 3]
            flags = data[pos + 4]
            # Inside a header block h2 must see a DATA frame, to refuse it.
            if kind == _DATA and not flags & _PADDED and not self._in_header_block:
                if start < pos:  # earlier frames first: they may carry this stream's head
                    if not on_frames(data[start:pos]):
                        return False
                    start = pos
                sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                # The run of plain DATA frames of this stream that follows,
                # up to one that ends it: offered in one call (a server
                # sends a large body as a run of 8-16 KiB frames).
                payloads = [view[pos + 9 : end]]
                total = length
                while not flags & _END_STREAM and size - end >= 9:
                    length = (data[end] << 16) | (data[end + 1] << 8) | data[end + 2]
                    after = end + 9 + length
                    if (
                        after > size
                        or length > max_frame
                        or data[end + 3] != _DATA
                        or data[end + 4] & _PADDED
                        or int.from_bytes(data[end + 5 : end + 9], "big") & 0x7FFFFFFF != sid
                    ):
                        break
                    flags = data[end + 4]
                    payloads.append(view[end + 9 : after])
                    total += length
                    end = after
                if on_data(sid, payloads, total, bool(flags & _END_STREAM)):
                    start = end
            elif (
                kind == _HEADERS
                and on_headers is not None
                and flags & (_END_HEADERS | _PADDED | _PRIORITY) == _END_HEADERS
                and not self._in_header_block
                and length <= self._max_block
            ):
                if start < pos:
                    if not on_frames(data[start:pos]):
                        return False
                    start = pos
                sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                if on_headers(sid, bytes(data[pos + 9 : end]), bool(flags & _END_STREAM)):
                    start = end
            elif kind in _BLOCK_FRAMES:
                self._header_block(data, pos, length, flags)
            pos = end
        if start < pos and not on_frames(data[start:pos]):
            return False
        if pos < size:
            self._partial = bytes(data[pos:])  # `data` may be a view of a reused buffer
        return True


def _describe(data: bytes | memoryview, pos: int) -> str:
    """'a PING frame on stream 0' for the frame header at `data[pos]`."""
    kind = data[pos + 3]
    name = _FRAME_NAMES.get(kind, f"type 0x{kind:x}")
    sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
    return f"a {name} frame on stream {sid}"
