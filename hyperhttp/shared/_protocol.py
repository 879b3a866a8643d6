"""The coordinator's wire protocol: typed msgspec structs in length-prefixed frames.

Pure: no sockets, no loop. A frame is a 4-byte big-endian length followed by
one msgpack-encoded tagged struct; a frame longer than `MAX_FRAME` is a
protocol violation. Every field is bounded (string lengths, list lengths,
integer ranges) by `msgspec.Meta`, so decoding a hostile frame either
yields a well-formed message or raises `FrameError`; nothing else is ever
built from peer bytes.

Worker to coordinator: `Hello` (first frame, answered by `Welcome` and the
shared table's file descriptor), `Declare`, `Acquire`, `Cancel`, `Release`,
`ShedDone`, `Outcomes`, `ProbeAcquire`, `Resolve`, `DnsStore`, `DnsFailed`,
`StatusQuery`.

Coordinator to worker: `Welcome`, `Granted`, `Shed`, `ProbeReply`,
`ResolveReply`, `StatusReply`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "MAX_FRAME",
    "PROTOCOL_VERSION",
    "Acquire",
    "Address",
    "Cancel",
    "Declare",
    "DnsFailed",
    "DnsStore",
    "FrameError",
    "FrameReader",
    "Granted",
    "Hello",
    "Outcomes",
    "ProbeAcquire",
    "ProbeReply",
    "Release",
    "Resolve",
    "ResolveReply",
    "Shed",
    "ShedDone",
    "StatusQuery",
    "StatusReply",
    "Welcome",
    "decode_from_coordinator",
    "decode_from_worker",
    "encode",
]

# The table the Welcome hands over is part of the protocol: 2 since its
# header record is kept twice (table layout 2, see _table.py).
PROTOCOL_VERSION = 2
MAX_FRAME = 64 * 1024
_HEADER = 4

# Outcome codes carried by `Outcomes.items`.
OUTCOME_SUCCESS = 0
OUTCOME_FAILURE = 1
OUTCOME_PROBE_SUCCESS = 2
OUTCOME_PROBE_FAILURE = 3
OUTCOME_PROBE_NEUTRAL = 4

Id = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
Count = Annotated[int, msgspec.Meta(ge=0, le=10**9)]
Pid = Annotated[int, msgspec.Meta(ge=0, le=2**31)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
# "host:port" with the host up to 253 chars (or a bracketed IPv6 literal with zone).
OriginStr = Annotated[str, msgspec.Meta(min_length=3, max_length=300)]
HostStr = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=86400.0 * 7)]
Reason = Annotated[str, msgspec.Meta(max_length=200)]
# (family, host, port, flowinfo, scope_id): the sockaddr of one resolved address.
Address = tuple[
    Annotated[int, msgspec.Meta(ge=0, le=255)],
    Annotated[str, msgspec.Meta(min_length=1, max_length=64)],
    Port,
    Annotated[int, msgspec.Meta(ge=0, le=2**32)],
    Annotated[int, msgspec.Meta(ge=0, le=2**32)],
]
Addresses = Annotated[list[Address], msgspec.Meta(max_length=16)]
OutcomeItem = tuple[OriginStr, Annotated[int, msgspec.Meta(ge=0, le=4)]]


class FrameError(Exception):
    """A frame that is too long, undecodable or of the wrong type."""


class _Msg(msgspec.Struct, tag_field="t", array_like=True, frozen=True, forbid_unknown_fields=True):
    pass


# --- worker to coordinator ----------------------------------------------------
class Hello(_Msg, tag="hello", frozen=True):
    """First frame of a connection; `role` "observer" is for status/stop tools."""

    version: Annotated[int, msgspec.Meta(ge=1, le=1000)]
    pid: Pid
    role: Literal["worker", "observer"] = "worker"


class Declare(_Msg, tag="declare", frozen=True):
    """Leases this worker already holds (sent after a coordinator restart)."""

    leases: Annotated[list[tuple[Id, OriginStr]], msgspec.Meta(max_length=512)]


class Acquire(_Msg, tag="acquire", frozen=True):
    """Ask for one connection slot to `origin`; answered by `Granted(req)`.

    `req` becomes the lease id once granted, so it is unique per worker."""

    req: Id
    origin: OriginStr


class Cancel(_Msg, tag="cancel", frozen=True):
    """Stop waiting for `Acquire(req)` (no-op if already granted)."""

    req: Id


class Release(_Msg, tag="release", frozen=True):
    """The connection of lease `lease` is closed."""

    lease: Id


class ShedDone(_Msg, tag="shed_done", frozen=True):
    """Answer to `Shed`: whether an idle connection was closed (its Release came first)."""

    shed: Id
    closed: bool


class Outcomes(_Msg, tag="outcomes", frozen=True):
    """A batch of breaker outcomes, with the thresholds of the sender's breakers."""

    failure_threshold: Annotated[int, msgspec.Meta(ge=1, le=10**6)]
    recovery_timeout: Seconds
    success_threshold: Annotated[int, msgspec.Meta(ge=1, le=10**6)]
    items: Annotated[list[OutcomeItem], msgspec.Meta(max_length=128)]


class ProbeAcquire(_Msg, tag="probe", frozen=True):
    """Ask to be the one half-open probe for breaker `key`."""

    req: Id
    key: OriginStr
    failure_threshold: Annotated[int, msgspec.Meta(ge=1, le=10**6)] = 5
    recovery_timeout: Seconds = 30.0
    success_threshold: Annotated[int, msgspec.Meta(ge=1, le=10**6)] = 2


class Resolve(_Msg, tag="resolve", frozen=True):
    """Ask who resolves `host`: answered with addresses or "go ahead"."""

    req: Id
    host: HostStr
    port: Port


class DnsStore(_Msg, tag="dns_store", frozen=True):
    """Publish an answer for `host:port`, valid for `ttl` seconds."""

    host: HostStr
    port: Port
    addresses: Addresses
    ttl: Seconds


class DnsFailed(_Msg, tag="dns_failed", frozen=True):
    """The lookup this worker was asked to run failed."""

    host: HostStr
    port: Port


class StatusQuery(_Msg, tag="status", frozen=True):
    req: Id


# --- coordinator to worker ----------------------------------------------------
class Welcome(_Msg, tag="welcome", frozen=True):
    """Answer to `Hello`; the table's file descriptor travels with it."""

    version: int
    epoch: int
    pid: int
    table_size: int
    max_connections: int | None
    max_connections_per_host: int | None
    dns_ttl: float
    heartbeat_interval: float


class Granted(_Msg, tag="granted", frozen=True):
    req: Id


class Shed(_Msg, tag="shed", frozen=True):
    """Close one idle connection to `origin` ("" means any origin), then answer `ShedDone`."""

    shed: Id
    origin: Annotated[str, msgspec.Meta(max_length=300)]


class ProbeReply(_Msg, tag="probe_reply", frozen=True):
    req: Id
    granted: bool


class ResolveReply(_Msg, tag="resolve_reply", frozen=True):
    """`addresses` None: resolve it yourself and `DnsStore` the answer."""

    req: Id
    addresses: Addresses | None
    ttl: Seconds = 0.0


class StatusReply(_Msg, tag="status_reply", frozen=True):
    """The fleet state as plain data (see `hyperhttp.shared.fleet_status`)."""

    req: Id
    status: dict[str, object]


ToCoordinator = (
    Hello
    | Declare
    | Acquire
    | Cancel
    | Release
    | ShedDone
    | Outcomes
    | ProbeAcquire
    | Resolve
    | DnsStore
    | DnsFailed
    | StatusQuery
)
ToWorker = Welcome | Granted | Shed | ProbeReply | ResolveReply | StatusReply

_encoder = msgspec.msgpack.Encoder()
_worker_decoder: msgspec.msgpack.Decoder[ToCoordinator] = msgspec.msgpack.Decoder(ToCoordinator)
_coordinator_decoder: msgspec.msgpack.Decoder[ToWorker] = msgspec.msgpack.Decoder(ToWorker)


def encode(msg: _Msg) -> bytes:
    """One frame: length prefix plus the encoded message."""
    body = _encoder.encode(msg)
    if len(body) > MAX_FRAME:
        raise FrameError(f"message of {len(body)} bytes exceeds the {MAX_FRAME} byte frame cap")
    return len(body).to_bytes(_HEADER, "big") + body


def decode_from_worker(body: bytes | memoryview) -> ToCoordinator:
    """Decode one frame body sent by a worker; raises `FrameError`."""
    try:
        return _worker_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FrameError(str(exc)) from None


def decode_from_coordinator(body: bytes | memoryview) -> ToWorker:
    """Decode one frame body sent by the coordinator; raises `FrameError`."""
    try:
        return _coordinator_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FrameError(str(exc)) from None


class FrameReader:
    """Splits a byte stream into frame bodies; rejects oversized frames early."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every complete frame body. Raises `FrameError`."""
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        while len(buf) >= _HEADER:
            size = int.from_bytes(buf[:_HEADER], "big")
            if size > MAX_FRAME or size == 0:
                raise FrameError(f"frame length {size} out of range")
            if len(buf) < _HEADER + size:
                break
            frames.append(bytes(buf[_HEADER : _HEADER + size]))
            del buf[: _HEADER + size]
        return frames

    @property
    def pending(self) -> int:
        """Bytes buffered towards an incomplete frame."""
        return len(self._buf)
