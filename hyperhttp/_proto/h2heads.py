"""The HTTP/2 response HEADERS fast path (sans-I/O).

Every response starts with a HEADERS frame. h2 handles it through a frame
buffer, a frame object and its debug repr (computed even with logging off),
the connection and stream state machines with an event object per step,
and a dispatch of those events. `receive_headers_fast` takes a complete,
unpadded HEADERS frame without a priority block that opens the response
of one of our streams, and does to h2's state what h2 would:

1. Before anything changes it declines (returns False) unless the
   connection is open, the stream is ours, open on the server's side and
   still waiting for its response head. A declined frame goes to h2, which
   then does exactly what it always does, errors included.
2. It decodes the block with h2's own `_decode_headers`, on h2's decoder,
   so the HPACK dynamic table stays exactly h2's; a block h2 cannot decode
   fails with h2's exception after h2's GOAWAY is queued, as in h2.
3. A 1xx head goes through h2's own stream code unchanged; only its
   status goes back to the driver (which refuses a 101, see
   h2events.py). A final head makes h2's transitions in h2's
   order: head received (the stream's state does not change; the
   connection's cannot, h2's tables say so and are checked at import), the
   END_STREAM through h2's state machine, h2's Content-Length rule, then
   h2's inbound normalisation and validation of the fields (pseudo-headers
   first and known, exactly one :status, no connection-specific fields, no
   uppercase names, TE only "trailers", ...). Any ProtocolError on the way
   queues h2's GOAWAY and is raised, exactly as h2's `receive_data` does.

So the fast path refuses everything h2 refuses, with the same exception and
the same bytes queued for the server; what it saves is h2's frame and event
machinery. The one observable difference from handing every byte to h2 at
once is the one the DATA fast path has (see h2frames.py): frames before the
HEADERS frame are handed over, and their events filed, before it.

Nothing here touches a socket or the event loop.
"""

from __future__ import annotations

from typing import Any, Literal

import h2.connection
import h2.exceptions
import h2.stream
import h2.utilities

from .h2frames import FAST_HEADERS, prune_if_closed

_State = h2.stream.StreamState
_OPEN_STATES = frozenset({_State.OPEN, _State.HALF_CLOSED_LOCAL})
_CLIENT_OPEN = h2.connection.ConnectionState.CLIENT_OPEN
_RECV_END_STREAM = h2.stream.StreamInputs.RECV_END_STREAM
# What h2 builds for a response head received by a client (its
# `_build_hdr_validation_flags` for a ResponseReceived event).
_RESPONSE_HEAD = h2.utilities.HeaderValidationFlags(
    is_client=True, is_trailer=False, is_response_header=True, is_push_promise=False
)


def status_of(headers: Any) -> bytes:
    """The :status of a head h2 decoded and checked (exactly one; our
    connections decode fields as bytes, header_encoding None)."""
    return next((value for name, value in headers if name == b":status"), b"")


def _has_fast_head_internals() -> bool:
    # Everything below leans on h2 internals; an h2 that changed them makes
    # every HEADERS frame take h2's own path.
    try:
        conn_table = h2.connection.H2ConnectionStateMachine._transitions
        stream_table: Any = h2.stream._transitions
        recv_headers = h2.stream.StreamInputs.RECV_HEADERS
        received = h2.stream.H2StreamStateMachine.response_received
        conn = h2.connection.H2Connection()
        probe = h2.stream.H2Stream(1, conn.config, 65535, 65535)
        return (
            FAST_HEADERS
            # The connection takes a HEADERS frame without changing state.
            and conn_table[(_CLIENT_OPEN, h2.connection.ConnectionInputs.RECV_HEADERS)]
            == (None, _CLIENT_OPEN)
            # On an open stream a head only marks it received.
            and all(stream_table[(s, recv_headers)] == (received, s) for s in _OPEN_STATES)
            and callable(getattr(h2.connection, "_decode_headers", None))
            and callable(getattr(conn, "_terminate_connection", None))
            and callable(getattr(probe, "_initialize_content_length", None))
            and probe.state_machine.headers_received is None
            and probe.state_machine.client is None
        )
    except Exception:  # any failure means: use h2's own path
        return False


FAST_HEAD = _has_fast_head_internals()


def receive_headers_fast(
    conn: h2.connection.H2Connection, stream_id: int, block: bytes, end_stream: bool
) -> list[tuple[bytes, bytes]] | bytes | Literal[False]:
    """Take the header block of a complete, unpadded HEADERS frame without
    priority data, as h2's `receive_data` would.

    False: declined, nothing changed, h2 must see the frame. Bytes: taken,
    a 1xx head, and this is its :status. A list: taken, the response head's fields,
    checked as h2 checks them (and the stream ended if `end_stream`).
    Raises h2's ProtocolError (its GOAWAY queued) where h2 would.
    """
    stream = conn.streams.get(stream_id)
    if stream is not None and stream.closed:
        prune_if_closed(conn, stream_id)  # h2 then treats it as it should
        return False
    if (
        not FAST_HEAD
        or stream is None
        or conn.state_machine.state is not _CLIENT_OPEN
        or conn.config.header_encoding is not None
    ):
        return False
    machine = stream.state_machine
    if machine.state not in _OPEN_STATES or machine.headers_received or machine.client is not True:
        return False
    try:
        headers: Any = h2.connection._decode_headers(conn.decoder, block)
        if h2.utilities.is_informational_response(headers):
            stream.receive_headers(headers, end_stream, None)
            return status_of(headers)
        machine.headers_received = True  # h2's response_received, minus its event
        if end_stream:
            machine.process_input(_RECV_END_STREAM)
        stream._initialize_content_length(headers)
        return stream._process_received_headers(headers, _RESPONSE_HEAD, None)
    except h2.exceptions.ProtocolError as exc:
        conn._terminate_connection(exc.error_code)
        raise
