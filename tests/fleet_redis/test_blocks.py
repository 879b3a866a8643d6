"""Block accounting (pure): ledger plans, the block-capped lease table, URL parsing, breakers."""

from __future__ import annotations

import pytest

from hyperhttp.errors.circuit_breaker import BreakerConfig
from hyperhttp.shared._protocol import OUTCOME_FAILURE, OUTCOME_PROBE_SUCCESS, OUTCOME_SUCCESS
from hyperhttp.shared._redis_blocks import (
    Ask,
    BlockLeaseTable,
    BlockLedger,
    fallback_caps,
    parse_backend,
)
from hyperhttp.shared._redis_breakers import RedisBreakers


def test_plan_asks_whole_blocks_for_what_waits() -> None:
    ledger = BlockLedger(4)
    asks, gives = ledger.plan({"a:1": (0, 1), "b:2": (3, 6)})
    assert asks == [Ask("a:1", 4, 1), Ask("b:2", 12, 9)] and gives == {}
    ledger.add("a:1", ["m1", "m2", "m3", "m4"])
    assert ledger.plan({"a:1": (1, 0)}) == ([], {})  # 3 spare: under two blocks, kept


def test_plan_gives_back_surplus_with_hysteresis_or_all_when_contended() -> None:
    ledger = BlockLedger(2)
    ledger.add("a:1", [f"m{i}" for i in range(7)])
    assert ledger.plan({"a:1": (2, 1)}) == ([], {"a:1": 2})  # surplus 4: keep one block
    assert ledger.plan({"a:1": (2, 1)}, contended={"a:1"}) == ([], {"a:1": 4})
    assert ledger.plan({}, all_contended=True) == ([], {"a:1": 7})
    assert ledger.plan({"a:1": (5, 1)}) == ([], {})  # surplus 1 < 2 blocks
    # Short on another origin: every spare slot goes back (the total may lack them).
    asks, gives = ledger.plan({"a:1": (5, 0), "b:1": (0, 1)})
    assert asks == [Ask("b:1", 2, 1)] and gives == {"a:1": 2}


def test_take_and_lose_keep_the_counts_exact() -> None:
    ledger = BlockLedger(4)
    ledger.add("a:1", ["x1", "x2", "x3"])
    ledger.add("b:1", ["y1"])
    assert ledger.take("a:1", 2) == ["x2", "x3"] and ledger.limit("a:1") == 1
    assert ledger.take("a:1", 5) == ["x1"] and ledger.holdings() == {"b:1": 1}
    assert ledger.take("zz:1", 1) == []
    ledger.add("a:1", ["x4"])
    assert ledger.lose({"y1", "nope"}) == {"b:1"}
    assert ledger.holdings() == {"a:1": 1} and ledger.total == 1
    assert ledger.take_all() == [("a:1", "x4")] and ledger.total == 0
    with pytest.raises(ValueError):
        BlockLedger(0)


def test_table_caps_are_the_slots_held() -> None:
    table = BlockLeaseTable(max_total=100, max_per_host=100)
    ledger = BlockLedger(2)
    table.use_ledger(ledger)
    table.add_conn(1)
    assert table.acquire(1, 1, "a:1") == []  # nothing held yet: waits
    assert table.demand() == {"a:1": (0, 1)}
    ledger.add("a:1", ["m1", "m2"])
    assert table.serve() == [(1, 1)]
    assert table.acquire(1, 2, "a:1") == [(1, 2)]
    assert table.acquire(1, 3, "a:1") == []
    assert table.demand() == {"a:1": (2, 1)}
    # Short but not refused by Redis: no shedding; refused (saturated): shed.
    assert table.plan_sheds() == []
    table.saturated.add("a:1")
    assert table.plan_sheds() == [(1, 1, "a:1")]
    # Slots lost in Redis: nothing new until under the holdings again.
    ledger.lose({"m1"})
    assert table.release(1, 1) == []
    assert table.release(1, 2) == [(1, 3)]
    # Fallback: fixed caps replace the ledger.
    table.use_local(*fallback_caps(6, 4, 3))
    assert (table.max_total, table.max_per_host) == (2, 1)
    assert table.acquire(1, 4, "b:1") == [(1, 4)]
    assert table.acquire(1, 5, "c:1") == []  # total share 2 reached


def test_fallback_caps() -> None:
    assert fallback_caps(200, 32, 3) == (66, 10)
    assert fallback_caps(2, 1, 5) == (1, 1)
    assert fallback_caps(None, 8, 0) == (None, 8)


def test_parse_backend() -> None:
    url = parse_backend("redis://:secret@10.0.0.5:6380/2?lease_ttl=2.5&block=8&fleet=api"
                        "&socket_keepalive=true")
    assert (url.fleet, url.lease_ttl, url.block) == ("api", 2.5, 8)
    assert url.redis_url == "redis://:secret@10.0.0.5:6380/2?socket_keepalive=true"
    assert url.display == "redis://10.0.0.5:6380/2"  # no password in logs
    default = parse_backend("redis://localhost", default_fleet="x")
    assert (default.fleet, default.lease_ttl, default.block) == ("x", 5.0, 4)
    for bad in ("http://h/", "redis://h?block=0", "redis://h?lease_ttl=0.01",
                "redis://h?fleet=a{b}", "redis://h?block=x"):
        with pytest.raises(ValueError):
            parse_backend(bad)


def test_breakers_overlay_remote_open_and_probe() -> None:
    cfg = BreakerConfig(failure_threshold=2, recovery_timeout=1.0, success_threshold=1)
    br = RedisBreakers()
    br.linked = True
    # Outcomes go to the outbox in order; the local open is flagged for Redis.
    br.outcome(1, "k:1", OUTCOME_SUCCESS, cfg, 0.0)
    br.outcome(1, "k:1", OUTCOME_FAILURE, cfg, 0.0)
    assert br.record("k:1", 0.0) is None
    br.outcome(1, "k:1", OUTCOME_FAILURE, cfg, 0.0)
    reports, results = br.take_outbox()
    assert reports["k:1"].codes == [0, 1, 1] and reports["k:1"].force_open and results == []
    # Another key opened by another host: open here too; outcomes are stale meanwhile.
    assert br.set_remote({"r:1": (5.0, False)}, 1.0) == {"r:1"}
    rec = br.record("r:1", 1.0)
    assert rec is not None and (rec.state, rec.open_until) == ("open", 5.0)
    assert br.outcome(2, "r:1", OUTCOME_FAILURE, cfg, 1.0) is False
    assert br.take_outbox() == ({}, [])
    # Half-open in Redis: this host's probe needs the Redis lock.
    rec = br.record("r:1", 6.0)
    assert rec is not None and (rec.state, rec.probe_busy) == ("half_open", False)
    assert br.acquire_probe(2, "r:1", cfg, 6.0) is True
    assert br.needs_remote_probe(2, "r:1", 6.0)
    br.remote_probe_won(2, "r:1")
    assert br.outcome(2, "r:1", OUTCOME_PROBE_SUCCESS, cfg, 6.5) is True
    _, results = br.take_outbox()
    assert [(r.key, r.verdict) for r in results] == [("r:1", "s")]
    # Redis closed it: it leaves the overlay and the local breaker resets.
    assert br.set_remote({}, 7.0) == {"r:1"}
    assert br.record("r:1", 7.0) is None
    # Unlinked: each host's own breakers rule.
    br.set_remote({"z:1": (9.0, True)}, 7.0)
    assert br.unlink() == {"z:1"} and br.record("z:1", 7.0) is None
