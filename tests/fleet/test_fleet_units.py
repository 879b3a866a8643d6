"""Pure parts of the fleet: frames, the shared table's seqlock, the lease table."""

from __future__ import annotations

import mmap
import struct

import msgspec
import pytest

from hyperhttp.shared._leases import LeaseTable, LeaseViolation
from hyperhttp.shared._protocol import (
    MAX_FRAME,
    Acquire,
    FrameError,
    FrameReader,
    Granted,
    decode_from_coordinator,
    decode_from_worker,
    encode,
)
from hyperhttp.shared._table import (
    DNS_OFFSET,
    TABLE_SIZE,
    BreakerRecord,
    DnsRecord,
    TableReader,
    TableWriter,
)


def test_frames_round_trip_and_split_anywhere() -> None:
    data = encode(Acquire(5, "a.test:443")) + encode(Acquire(6, "b.test:80"))
    for cut in range(len(data) + 1):
        reader = FrameReader()
        bodies = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert [decode_from_worker(b) for b in bodies] == [
            Acquire(5, "a.test:443"), Acquire(6, "b.test:80")]


def test_frame_bounds_and_direction_are_enforced() -> None:
    with pytest.raises(FrameError):
        FrameReader().feed((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(FrameError):
        decode_from_worker(encode(Granted(1))[4:])  # a coordinator message from a worker
    with pytest.raises(FrameError):
        decode_from_coordinator(encode(Acquire(1, "a:1"))[4:])
    with pytest.raises(FrameError):
        decode_from_worker(msgspec.msgpack.encode(["acquire", 1, "x" * 301]))


def _table() -> tuple[TableWriter, TableReader, mmap.mmap]:
    buf = mmap.mmap(-1, TABLE_SIZE)
    return TableWriter(buf, epoch=7), TableReader(buf), buf


def test_table_reads_what_the_writer_wrote_and_memoises() -> None:
    writer, reader, _ = _table()
    rec = DnsRecord("a.test:443", [(2, "192.0.2.1", 443, 0, 0)], 100.0)
    assert writer.put("dns", rec.key, rec, rec.expires)
    assert reader.dns("a.test:443") == rec
    assert reader.dns("a.test:443") is reader.dns("a.test:443")  # memoised while seq unchanged
    assert reader.dns("b.test:443") is None
    writer.put("breaker", "b:1", BreakerRecord("b:1", "open", 5.0, False), 1.0)
    assert reader.breaker("b:1") == BreakerRecord("b:1", "open", 5.0, False)
    writer.delete("breaker", "b:1")
    assert reader.breaker("b:1") is None
    header = reader.header()
    assert header is not None and header.epoch == 7


def test_torn_or_in_progress_slots_read_as_misses() -> None:
    writer, reader, buf = _table()
    rec = DnsRecord("a.test:443", [(2, "192.0.2.1", 443, 0, 0)], 100.0)
    writer.put("dns", rec.key, rec, rec.expires)
    off = next(DNS_OFFSET + i * 1024 for i in range(1024)
               if struct.unpack_from("<I", buf, DNS_OFFSET + i * 1024 + 4)[0])
    seq = struct.unpack_from("<I", buf, off)[0]
    # A write in progress (odd seq) is never decoded.
    struct.pack_into("<I", buf, off, seq + 1)
    assert reader.dns(rec.key) is None
    # A torn payload with an even seq fails the CRC, never decodes into a wrong answer.
    buf[off + 30] ^= 0xFF
    struct.pack_into("<I", buf, off, seq + 2)
    assert reader.dns(rec.key) is None


class _WriterKilled(Exception):
    pass


class _DiesMidWrite:
    """Stands in for the header's struct: writes the first `keep` bytes of
    the record, then "dies", as a coordinator SIGKILLed mid-write does
    (its seq stays odd for good)."""

    def __init__(self, real: struct.Struct, keep: int) -> None:
        self.real = real
        self.keep = keep

    def pack_into(self, buf: mmap.mmap, off: int, *values: object) -> None:
        buf[off : off + self.keep] = self.real.pack(*values)[: self.keep]
        raise _WriterKilled


@pytest.mark.parametrize("keep", [0, 4, 20, 36])
def test_header_survives_a_writer_killed_mid_write(
    keep: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hyperhttp.shared import _table as table_module

    writer, reader, _ = _table()
    caps = {"max_connections": 8, "max_connections_per_host": 4}
    for workers in (1, 2, 3):
        writer.set_state(heartbeat=float(workers), workers=workers, **caps)
        header = reader.header()
        assert header is not None and (header.workers, header.heartbeat) == (workers, workers)
    # The next write makes its copy's seq odd, writes part of the record and
    # dies there: readers keep getting the last whole record, not nothing
    # (a worker then shares the caps by 3 workers, not by what it saw at join).
    monkeypatch.setattr(table_module, "_STATE", _DiesMidWrite(table_module._STATE, keep))
    with pytest.raises(_WriterKilled):
        writer.set_state(heartbeat=9.0, workers=1, **caps)
    monkeypatch.undo()
    for _ in range(3):
        header = reader.header()
        assert header is not None
        assert (header.epoch, header.heartbeat, header.workers) == (7, 3.0, 3)
        assert (header.max_connections, header.max_connections_per_host) == (8, 4)


def test_full_window_evicts_lower_priority_only() -> None:
    writer, reader, _ = _table()
    keys = [f"h{i}.test:1" for i in range(5000)]
    stored = [k for k in keys if writer.put("dns", k, DnsRecord(k, [], 1.0), 1.0)]
    assert len(stored) < len(keys)  # windows filled up
    late = keys[-1]
    assert writer.put("dns", late, DnsRecord(late, [], 9.0), 9.0)  # higher priority wins a slot
    assert reader.dns(late) == DnsRecord(late, [], 9.0)


def test_lease_table_fifo_caps_and_drop() -> None:
    t = LeaseTable(max_total=3, max_per_host=2)
    for c in (1, 2, 3):
        t.add_conn(c)
    assert t.acquire(1, 10, "a:1") == [(1, 10)]
    assert t.acquire(1, 11, "a:1") == [(1, 11)]
    assert t.acquire(2, 20, "a:1") == []          # per-host cap
    assert t.acquire(3, 30, "b:1") == [(3, 30)]   # other host not blocked by a's waiter
    assert t.acquire(3, 31, "b:1") == []          # total cap
    assert t.release(1, 10) == [(2, 20)]          # oldest fitting waiter first
    assert t.drop(2) == [(3, 31)]                 # a dropped conn returns everything
    assert (t.total, t.waiting) == (3, 0)
    with pytest.raises(LeaseViolation):
        t.acquire(3, 30, "b:1")                   # reused id
    assert t.release(3, 999) == []                # unknown release changes nothing


def test_lease_table_grace_and_declarations() -> None:
    t = LeaseTable(max_total=2, max_per_host=2)
    t.granting = False
    t.add_conn(1)
    t.add_conn(2)
    t.declare(1, 5, "a:1")
    t.declare(1, 6, "a:1")
    t.declare(1, 7, "a:1")                        # recorded beyond the cap: it exists
    assert t.acquire(2, 1, "a:1") == []
    assert t.open_gate() == []
    assert t.release(1, 5) == []                  # 2 still held: at the cap
    assert t.release(1, 6) == [(2, 1)]


def test_shed_planning_asks_each_holder_once() -> None:
    t = LeaseTable(max_total=10, max_per_host=1)
    for c in (1, 2):
        t.add_conn(c)
    t.acquire(1, 1, "a:1")
    t.acquire(2, 1, "a:1")
    plan = t.plan_sheds()
    assert [(conn, origin) for conn, _, origin in plan] == [(1, "a:1")]
    assert t.plan_sheds() == []                   # one in flight is enough
    t.shed_done(1, plan[0][1], closed=False)
    assert t.plan_sheds() == []                   # tried: not asked again until reset
    t.reset_tried()
    assert [(c, o) for c, _, o in t.plan_sheds()] == [(1, "a:1")]
