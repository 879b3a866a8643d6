"""HTTP/2 protocol rules on top of h2 (sans-I/O).

h2 does the framing, HPACK, stream states and flow-control accounting; this
module adds what h2 leaves to its callers:

- our client settings: server push off, large receive windows (a slow
  consumer is still bounded: see `STREAM_WINDOW`), a bounded header list;
- the request head: pseudo-headers first in RFC 9113 order, connection-
  specific fields dropped, names lower-cased and checked, values checked
  for CR, LF and NUL. Because every outbound header block is built here, h2's
  own outbound validation and normalisation are switched off (they would
  repeat the same work per request); inbound validation stays on;
- the response head and trailers turned into `Headers`;
- a state machine that lets streams the server promised to finish after a
  GOAWAY finish (h2 refuses every frame once it has seen GOAWAY, h2#1199).

Nothing here touches a socket or the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
from hpack import Encoder, NeverIndexedHeaderTuple
from hpack.table import HeaderTable

from .._exceptions import LocalProtocolError, RemoteProtocolError
from .._headers import Headers
from .h1_request import check_request_line
from .h2hpack import FastDecoder

# Receive windows. The per-stream window bounds what one unread response can
# make us buffer; the connection window is larger so that a few stalled
# streams cannot starve their siblings of connection-level credit.
STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_FRAME_SIZE = 64 * 1024
MAX_HEADER_LIST_SIZE = 64 * 1024
# A server that sets no MAX_CONCURRENT_STREAMS allows "unlimited"; we cap it.
MAX_STREAMS_CAP = 1000
DEFAULT_WINDOW = 65535

_SettingCodes = h2.settings.SettingCodes
ErrorCodes = h2.errors.ErrorCodes

# Fields that describe one hop of an HTTP/1.1 connection; RFC 9113 8.2.2
# forbids them in HTTP/2. "host" becomes :authority; "te" is handled apart.
_CONNECTION_SPECIFIC = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"}
)
# Kept out of the HPACK dynamic table, so a compression oracle cannot guess them.
_NEVER_INDEXED = frozenset({"authorization", "proxy-authorization"})

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]")
_BAD_AUTHORITY = re.compile(r"[\x00-\x20\x7f/?#@]")

RawHeaders = list[tuple[bytes, bytes]]

# Header blocks remembered per connection and direction; a client sends and
# receives few distinct ones, and the cache is emptied when it fills.
_HPACK_CACHE_SIZE = 128


class _CountingTable(HeaderTable):
    """hpack's dynamic table, counting its changes: a cached header block is
    valid only while the table it was coded against is unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        # An entry larger than the table empties it: no change if it is empty
        # already (nginx indexes every field in a table it set to size 0).
        if self.dynamic_entries or 32 + len(name) + len(value) <= self._maxsize:
            self.generation += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.generation += 1
        # hpack clears `resized` when the size is set again to its current
        # value, and its encoder then drops a size update still owed to the
        # peer (0 then 256 then 256: the peer never hears of 256). Keep it owed.
        owed = self.resized
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]
        self.resized = self.resized or owed


class _CachingEncoder(Encoder):
    """hpack's encoder, remembering blocks whose encoding left the table
    unchanged (every field found in it, nothing inserted or evicted).
    Encoding the same request head again would give the same bytes, so
    they are reused while the table's generation is the same."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _CountingTable()
        self._blocks: dict[tuple[object, ...], tuple[int, bytes]] = {}

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table = self.header_table
        if not isinstance(headers, list) or not isinstance(table, _CountingTable):
            return super().encode(headers, huffman)
        # The field types are part of the key: a never-indexed field must
        # not reuse a block that indexed an equal plain field.
        key = (huffman, *headers, *map(type, headers))
        # A pending size change puts a table size update at the start of the
        # next block only: such a block is neither taken from nor put in the
        # cache (a copy would repeat the update).
        resized = table.resized
        hit = self._blocks.get(key)
        generation = table.generation
        if hit is not None and hit[0] == generation and not resized:
            return hit[1]
        block = super().encode(headers, huffman)
        if table.generation == generation and not resized:
            if len(self._blocks) >= _HPACK_CACHE_SIZE:
                self._blocks.clear()
            self._blocks[key] = (generation, block)
        return block


class _CachingDecoder(FastDecoder):
    """hpack's decoder (sped up: see h2hpack.py), remembering the fields of
    blocks whose decoding left the table unchanged (servers often send one
    response head many times, some without the dynamic table)."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _CountingTable()
        self._fields: dict[tuple[bytes, bool], tuple[int, int, list[Any]]] = {}

    def decode(self, data: bytes, raw: bool = False) -> Any:
        table = self.header_table
        if type(data) is not bytes or not isinstance(table, _CountingTable):
            return super().decode(data, raw)
        key = (data, raw)
        limit = self.max_header_list_size
        hit = self._fields.get(key)
        generation = table.generation
        if hit is not None and hit[0] == generation and hit[1] == limit:
            self._assert_valid_table_size()  # our advertised size may have shrunk
            return list(hit[2])
        fields = super().decode(data, raw)
        if table.generation == generation:
            if len(self._fields) >= _HPACK_CACHE_SIZE:
                self._fields.clear()
            self._fields[key] = (generation, limit, list(fields))
        return fields


def new_client_connection(
    *,
    stream_window: int = STREAM_WINDOW,
    connection_window: int = CONNECTION_WINDOW,
    max_frame_size: int = MAX_FRAME_SIZE,
) -> h2.connection.H2Connection:
    """An h2 client connection with our settings, its preface queued in
    `data_to_send()`."""
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=True,
        normalize_inbound_headers=True,
    )
    conn = h2.connection.H2Connection(config=config)
    # Nothing has been coded yet: swap in the caching coders, keeping the
    # limits h2 gave the decoder.
    decoder = _CachingDecoder()
    decoder.max_header_list_size = conn.decoder.max_header_list_size
    decoder.max_allowed_table_size = conn.decoder.max_allowed_table_size
    conn.encoder, conn.decoder = _CachingEncoder(), decoder
    conn.state_machine = _GoawayTolerantStateMachine()
    conn.local_settings = h2.settings.Settings(
        client=True,
        initial_values={
            _SettingCodes.ENABLE_PUSH: 0,
            _SettingCodes.MAX_CONCURRENT_STREAMS: 100,
            _SettingCodes.INITIAL_WINDOW_SIZE: stream_window,
            _SettingCodes.MAX_FRAME_SIZE: max_frame_size,
            _SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
        },
    )
    conn.initiate_connection()
    # h2 applies the frame size it parses with once per receive_data call, so
    # a large frame arriving in the same read as the SETTINGS ACK would be
    # refused; accept our advertised size from the start.
    conn.max_inbound_frame_size = max_frame_size
    if connection_window > DEFAULT_WINDOW:
        conn.increment_flow_control_window(connection_window - DEFAULT_WINDOW)
    return conn


def remote_stream_limit(conn: h2.connection.H2Connection) -> int:
    """How many streams the server lets us open at once (capped)."""
    return min(conn.remote_settings.max_concurrent_streams, MAX_STREAMS_CAP)


# The regular fields of request heads, checked and encoded, by the fields
# they come from: a client sends the same fields (its defaults, a token)
# with request after request, to many targets. Each request adds its
# pseudo-header fields. Bounded; emptied when full; fields carrying
# credentials are not kept in this process-wide cache.
_REQUEST_FIELDS: dict[
    tuple[tuple[str, str, str], ...], tuple[str | None, tuple[tuple[bytes, bytes], ...]]
] = {}
_FIELDS_CACHE_SIZE = 1024


def build_request_headers(
    method: str,
    scheme: str,
    authority: str,
    target: str,
    fields: Iterable[tuple[str, str, str]],
) -> RawHeaders:
    """The header block of a request, validated; raises LocalProtocolError
    (nothing has been sent then).

    `fields` are (name, lower-cased name, value) triples. A Host field
    replaces `authority`; connection-specific fields are dropped, and so are
    the fields a Connection field names; TE is sent only as "trailers".
    """
    items = fields if isinstance(fields, list) else list(fields)
    key = tuple(items)
    known = _REQUEST_FIELDS.get(key)
    if known is None:
        known = _request_fields(items)
        if not any(lower in _NEVER_INDEXED or lower == "cookie" for _, lower, _ in items):
            if len(_REQUEST_FIELDS) >= _FIELDS_CACHE_SIZE:
                _REQUEST_FIELDS.clear()
            _REQUEST_FIELDS[key] = known
    host, regular = known
    if host is not None:
        authority = host
    # The transport's check (once per distinct method and target; stricter
    # than HTTP/2 needs: a non-ASCII target is refused here too).
    check_request_line(method, target)
    if not authority or _BAD_AUTHORITY.search(authority):
        raise LocalProtocolError(f"invalid :authority {authority!r}; nothing was sent")
    try:
        out: RawHeaders = [
            (b":method", method.encode("ascii")),
            (b":authority", authority.encode("ascii")),
            (b":scheme", scheme.encode("ascii")),
            (b":path", target.encode("ascii")),
        ]
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(
            f"request head has a character that HTTP/2 cannot carry: {exc.reason}; "
            "nothing was sent"
        ) from None
    out.extend(regular)
    return out


def _request_fields(
    items: list[tuple[str, str, str]],
) -> tuple[str | None, tuple[tuple[bytes, bytes], ...]]:
    """(the Host field's value or None, the regular fields checked and
    encoded) for `build_request_headers`."""
    host: str | None = None
    hop_by_hop: set[str] = set()
    for _, lower, value in items:
        if lower == "host":
            host = value.strip()
        elif lower == "connection":
            hop_by_hop.update(t.strip().lower() for t in value.split(","))
    out: RawHeaders = []
    try:
        for name, lower, value in items:
            if lower in _CONNECTION_SPECIFIC or lower in hop_by_hop:
                continue
            # Checked as given: str.lower() maps some non-ASCII letters to ASCII.
            if not _TOKEN.fullmatch(name):
                raise LocalProtocolError(f"invalid header name {name!r}; nothing was sent")
            if _BAD_VALUE.search(value):
                raise LocalProtocolError(
                    f"header {lower!r} has CR, LF or NUL in its value; nothing was sent"
                )
            value = value.strip(" \t")
            if lower == "te":
                if "trailers" not in (t.strip().lower() for t in value.split(",")):
                    continue
                value = "trailers"
            if lower in _NEVER_INDEXED or (lower == "cookie" and len(value) < 20):
                out.append(NeverIndexedHeaderTuple(lower.encode("ascii"), value.encode("latin-1")))
            else:
                out.append((lower.encode("ascii"), value.encode("latin-1")))
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(
            f"request head has a character that HTTP/2 cannot carry: {exc.reason}; "
            "nothing was sent"
        ) from None
    return host, tuple(out)


# Response fields seen before, decoded: servers repeat most of their fields
# response after response (the HPACK decoder even hands back the same
# objects for indexed ones). Bounded; emptied when full; long values and
# Set-Cookie are not kept.
_RESPONSE_FIELDS: dict[tuple[bytes, bytes], tuple[str, str, str]] = {}
_STATUSES: dict[bytes, int] = {}


def parse_response_head(headers: Iterable[tuple[bytes, bytes]], peer: str) -> tuple[int, Headers]:
    """Status code and fields of a response head (h2 has validated it)."""
    status = 0
    items: list[tuple[str, str, str]] = []
    known = _RESPONSE_FIELDS
    for field in headers:
        item = known.get(field)
        if item is None:
            name, value = field
            if name[:1] == b":":
                if name == b":status":
                    status = _STATUSES.get(value) or _status(value, peer)
                continue
            text = name.decode("latin-1")
            item = (text, text, value.decode("latin-1"))
            if len(value) <= 200 and text != "set-cookie":
                if len(known) >= _FIELDS_CACHE_SIZE:
                    known.clear()
                known[(name, value)] = item
        items.append(item)
    if not status:
        raise RemoteProtocolError(f"response from {peer} has no :status")
    return status, Headers.from_raw(items)


def parse_trailers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    items = [
        (n.decode("latin-1"), n.decode("latin-1"), v.decode("latin-1"))
        for n, v in headers
        if n[:1] != b":"
    ]
    return Headers.from_raw(items)


def _status(value: bytes, peer: str) -> int:
    # h2 checks only that :status is there; RFC 9110 15 gives codes 100-599.
    if len(value) != 3 or not value.isdigit() or not 100 <= int(value) <= 599:
        raise RemoteProtocolError(f"response from {peer} has an invalid :status {value!r}")
    code = _STATUSES[value] = int(value)  # at most 500 distinct values
    return code


def error_name(code: int) -> str:
    """`INTERNAL_ERROR (0x2)` for an HTTP/2 error code."""
    try:
        return f"{ErrorCodes(code).name} (0x{code:x})"
    except ValueError:
        return f"error 0x{code:x}"


class _GoawayTolerantStateMachine(h2.connection.H2ConnectionStateMachine):
    """h2's connection state machine, except that a received GOAWAY leaves
    the connection open.

    h2 moves to CLOSED on GOAWAY and then rejects every later frame, even
    those of streams at or below the GOAWAY's last-stream-id, which the
    server promised to complete (RFC 9113 6.8; h2 issue #1199). That can
    happen inside the very `receive_data` call that carried the GOAWAY, so
    it cannot be undone afterwards. Staying open is safe because the driver
    opens no new stream on a connection that has seen GOAWAY.
    """

    def process_input(self, input_: h2.connection.ConnectionInputs) -> list[h2.events.Event]:
        if (
            input_ is h2.connection.ConnectionInputs.RECV_GOAWAY
            and self.state is h2.connection.ConnectionState.CLIENT_OPEN
        ):
            return []
        return super().process_input(input_)
