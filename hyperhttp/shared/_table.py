"""The shared table: DNS answers and breaker states that workers read without a round trip.

Pure apart from the buffer it is given (an `mmap` of the coordinator's
memfd, writable in the coordinator, read-only in workers).

Layout (little-endian)::

    0      header: magic "HHFLEET1", layout version, region geometry,
           then two seqlocked copies of one record (generation, epoch,
           heartbeat, workers, caps), written in turn
    4096   DNS region:     DNS_SLOTS slots of DNS_SLOT bytes
    ...    breaker region: BREAKER_SLOTS slots of BREAKER_SLOT bytes

    slot:  seq u32 | len u32 | crc32 u32 | key-hash u32 | payload (msgpack record)

Rules:
1. One writer (the coordinator); any number of readers in other processes.
2. Seqlock: the writer makes `seq` odd, writes the slot, makes `seq` even
   again. A reader copies the slot between two reads of `seq`; if they
   differ or are odd it retries (a bounded number of times, then reports a
   miss). The CRC over length and payload catches the rest: a torn copy is
   never decoded into a wrong answer.
3. A key lives in one of `PROBE` consecutive slots from `crc32(key)`; a
   reader looks at all of them (no tombstones needed). Each record carries
   its key, so a hash collision reads as a miss.
4. Readers memoise the decoded record per slot while `seq` is unchanged.
5. Times are `time.monotonic()` values, which are system-wide on Linux
   (CLOCK_MONOTONIC), so every process compares them directly.
6. The header record is written to its two copies in turn, each under its
   own seqlock, and a reader takes the copy of the higher generation. A
   coordinator killed (or stopped) in the middle of a write leaves that
   copy odd for good; the other still holds the write before, so workers
   go on reading its last heartbeat and worker count, not nothing (the
   count is what they share the caps by once the coordinator is gone).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any

import msgspec

from ._protocol import Address

__all__ = [
    "TABLE_SIZE",
    "BreakerRecord",
    "DnsRecord",
    "Header",
    "TableReader",
    "TableWriter",
]

MAGIC = b"HHFLEET1"
LAYOUT_VERSION = 2
HEADER_SIZE = 4096
DNS_SLOTS = 1024
DNS_SLOT = 1024
BREAKER_SLOTS = 512
BREAKER_SLOT = 256
PROBE = 8
DNS_OFFSET = HEADER_SIZE
BREAKER_OFFSET = DNS_OFFSET + DNS_SLOTS * DNS_SLOT
TABLE_SIZE = BREAKER_OFFSET + BREAKER_SLOTS * BREAKER_SLOT
READ_RETRIES = 8

_GEOMETRY = struct.Struct("<8sIIIII")  # magic, version, dns slots/size, breaker slots/size
_STATE_OFFSETS = (64, 128)  # the header record's two copies
# seq, generation, epoch, heartbeat, workers, max_conn, max_host (-1 = none)
_STATE = struct.Struct("<IQQdIqq")
# Both copies in one read, and both their seqs in one read.
_GAP = _STATE_OFFSETS[1] - _STATE_OFFSETS[0]
_STATES = struct.Struct(f"<{_STATE.format[1:]}{_GAP - _STATE.size}x{_STATE.format[1:]}")
_SEQS = struct.Struct(f"<I{_GAP - 4}xI")
_SLOT = struct.Struct("<IIII")  # seq, len, crc, key hash
_SEQ = struct.Struct("<I")


class DnsRecord(msgspec.Struct, array_like=True, frozen=True):
    key: str
    addresses: list[Address]
    expires: float


class BreakerRecord(msgspec.Struct, array_like=True, frozen=True):
    key: str
    state: str  # "open" (until `open_until`; half-open after) or "half_open"
    open_until: float
    probe_busy: bool


class Header(msgspec.Struct, frozen=True):
    epoch: int
    heartbeat: float
    workers: int
    max_connections: int | None
    max_connections_per_host: int | None


_encoder = msgspec.msgpack.Encoder()


class _Region:
    __slots__ = ("count", "offset", "size")

    def __init__(self, offset: int, count: int, size: int) -> None:
        self.offset = offset
        self.count = count
        self.size = size

    def slots_for(self, key_hash: int) -> range:
        return range(key_hash, key_hash + PROBE)

    def at(self, index: int) -> int:
        return self.offset + (index % self.count) * self.size


REGIONS = {
    "dns": _Region(DNS_OFFSET, DNS_SLOTS, DNS_SLOT),
    "breaker": _Region(BREAKER_OFFSET, BREAKER_SLOTS, BREAKER_SLOT),
}


def key_hash(key: str) -> int:
    # Stable across processes (Python's hash() is salted per process).
    return zlib.crc32(key.encode()) or 1


class TableWriter:
    """The coordinator's side: the only writer of the table."""

    def __init__(self, buf: Any, *, epoch: int) -> None:
        self._buf = buf
        self._epoch = epoch
        # Per region: slot position -> (key, priority); key -> slot position.
        self._occupant: dict[str, dict[int, tuple[str, float]]] = {r: {} for r in REGIONS}
        self._where: dict[str, dict[str, int]] = {r: {} for r in REGIONS}
        _GEOMETRY.pack_into(
            buf, 0, MAGIC, LAYOUT_VERSION, DNS_SLOTS, DNS_SLOT, BREAKER_SLOTS, BREAKER_SLOT
        )
        self._generation = 0
        for _ in _STATE_OFFSETS:  # both copies readable from the start
            self.set_state(
                heartbeat=0.0, workers=0, max_connections=None, max_connections_per_host=None
            )

    def set_state(
        self,
        *,
        heartbeat: float,
        workers: int,
        max_connections: int | None,
        max_connections_per_host: int | None,
    ) -> None:
        self._generation = gen = self._generation + 1
        # The other copy keeps the write before, whole. A copy's seq follows
        # from the generation: odd (2g - 1) while written, even (2g) after,
        # and higher at each of its writes (every other generation).
        buf, off = self._buf, _STATE_OFFSETS[gen & 1]
        seq = (2 * gen - 1) & 0xFFFFFFFF
        _SEQ.pack_into(buf, off, seq)
        _STATE.pack_into(
            buf, off, seq, gen, self._epoch, heartbeat, workers,
            -1 if max_connections is None else max_connections,
            -1 if max_connections_per_host is None else max_connections_per_host,
        )
        _SEQ.pack_into(buf, off, (2 * gen) & 0xFFFFFFFF)

    def put(self, region: str, key: str, record: msgspec.Struct, priority: float) -> bool:
        """Write `record` under `key`. When the key's window is full, the
        occupant of lowest priority is evicted if lower than `priority`.
        Returns False when the record did not fit (too big, or no room)."""
        reg = REGIONS[region]
        payload = _encoder.encode(record)
        if len(payload) > reg.size - _SLOT.size:
            return False
        where, occupant = self._where[region], self._occupant[region]
        pos = where.get(key)
        if pos is None:
            h = key_hash(key)
            window = [i % reg.count for i in reg.slots_for(h)]
            free = [i for i in window if i not in occupant]
            if free:
                pos = free[0]
            else:
                victim = min(window, key=lambda i: occupant[i][1])
                if occupant[victim][1] >= priority:
                    return False
                self.delete(region, occupant[victim][0])
                pos = victim
            where[key] = pos
        occupant[pos] = (key, priority)
        self._write(reg.at(pos), key_hash(key), payload)
        return True

    def delete(self, region: str, key: str) -> None:
        pos = self._where[region].pop(key, None)
        if pos is None:
            return
        del self._occupant[region][pos]
        self._write(REGIONS[region].at(pos), 0, b"")

    def _write(self, off: int, khash: int, payload: bytes) -> None:
        buf = self._buf
        seq = _SEQ.unpack_from(buf, off)[0]
        _SEQ.pack_into(buf, off, (seq + 1) & 0xFFFFFFFF | 1)  # odd: being written
        length = len(payload)
        crc = zlib.crc32(payload, zlib.crc32(length.to_bytes(4, "little")))
        buf[off + 4 : off + _SLOT.size] = struct.pack("<III", length, crc, khash)
        buf[off + _SLOT.size : off + _SLOT.size + length] = payload
        _SEQ.pack_into(buf, off, ((seq | 1) + 1) & 0xFFFFFFFF)  # even: stable

    def keys(self, region: str) -> list[str]:
        return sorted(self._where[region])


class _Memo:
    __slots__ = ("record", "seq")

    def __init__(self, seq: int, record: Any) -> None:
        self.seq = seq
        self.record = record


class TableReader:
    """A worker's side: lock-free, memoised reads of a read-only mapping."""

    def __init__(self, buf: Any) -> None:
        magic, version, dns_slots, dns_slot, brk_slots, brk_slot = _GEOMETRY.unpack_from(buf, 0)
        if (magic, version, dns_slots, dns_slot, brk_slots, brk_slot) != (
            MAGIC, LAYOUT_VERSION, DNS_SLOTS, DNS_SLOT, BREAKER_SLOTS, BREAKER_SLOT,
        ):
            raise ValueError("shared table has an unknown layout")
        if len(buf) < TABLE_SIZE:
            raise ValueError("shared table is too small")
        self._buf = buf
        self._memo: dict[tuple[str, int], _Memo] = {}
        self._decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {
            "dns": msgspec.msgpack.Decoder(DnsRecord),
            "breaker": msgspec.msgpack.Decoder(BreakerRecord),
        }

    def header(self) -> Header | None:
        """The coordinator's heartbeat record as last written whole (rule 6),
        or None if neither copy could be read cleanly."""
        buf = self._buf
        first = _STATE_OFFSETS[0]
        for _ in range(READ_RETRIES):
            a, b = _SEQS.unpack_from(buf, first)
            both = _STATES.unpack_from(buf, first)
            # A copy counts if its seq was even and did not move while read.
            a2, b2 = _SEQS.unpack_from(buf, first)
            ok_a = not a & 1 and a == a2
            ok_b = not b & 1 and b == b2
            if ok_a or ok_b:
                use_b = ok_b and (not ok_a or both[8] > both[1])
                _, _, epoch, heartbeat, workers, max_conn, max_host = (
                    both[7:] if use_b else both[:7]
                )
                return Header(
                    epoch, heartbeat, workers,
                    None if max_conn < 0 else max_conn, None if max_host < 0 else max_host,
                )
        return None

    def dns(self, key: str) -> DnsRecord | None:
        rec: DnsRecord | None = self._get("dns", key)
        return rec

    def breaker(self, key: str) -> BreakerRecord | None:
        rec: BreakerRecord | None = self._get("breaker", key)
        return rec

    def _get(self, region: str, key: str) -> Any:
        reg = REGIONS[region]
        h = key_hash(key)
        for i in reg.slots_for(h):
            pos = i % reg.count
            rec = self._read_slot(region, reg.at(pos), pos)
            if rec is not None and rec.key == key:
                return rec
        return None

    def _read_slot(self, region: str, off: int, pos: int) -> Any:
        buf = self._buf
        memo = self._memo.get((region, pos))
        for _ in range(READ_RETRIES):
            s1 = _SEQ.unpack_from(buf, off)[0]
            if s1 & 1:
                continue
            if memo is not None and memo.seq == s1:
                return memo.record
            raw = buf[off : off + REGIONS[region].size]
            if _SEQ.unpack_from(buf, off)[0] != s1:
                continue
            record: Any = self._decode(region, raw)
            self._memo[(region, pos)] = _Memo(s1, record)
            return record
        return None

    def _decode(self, region: str, raw: bytes) -> Any:
        # Decoded whatever key it holds: the memo serves every key probing this slot.
        _, length, crc, _hash = _SLOT.unpack_from(raw, 0)
        if length == 0 or length > len(raw) - _SLOT.size:
            return None
        payload = raw[_SLOT.size : _SLOT.size + length]
        if zlib.crc32(payload, zlib.crc32(length.to_bytes(4, "little"))) != crc:
            return None
        try:
            return self._decoders[region].decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None


def reader_for(buf: Any, on_error: Callable[[Exception], None] | None = None) -> TableReader | None:
    """A reader for `buf`, or None (reported to `on_error`) if its layout is unknown."""
    try:
        return TableReader(buf)
    except ValueError as exc:
        if on_error is not None:
            on_error(exc)
        return None
