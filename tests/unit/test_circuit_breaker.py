from __future__ import annotations

import asyncio
import math

import pytest

from hyperhttp._exceptions import (
    CircuitBreakerOpen,
    ConnectError,
    HyperHTTPError,
    LocalProtocolError,
    PoolTimeout,
    ReadTimeout,
    TLSError,
)
from hyperhttp.errors.circuit_breaker import (
    DEFAULT_COUNTED_CATEGORIES,
    BreakerPermit,
    BreakerState,
    CircuitBreaker,
    DomainCircuitBreakerManager,
    Verdict,
    origin_key,
    verdict_for,
)
from hyperhttp.errors.classify import ErrorCategory

KEY = "api.example.com:443"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manager(clock: FakeClock, **kwargs: object) -> DomainCircuitBreakerManager:
    opts: dict[str, object] = {
        "failure_threshold": 3,
        "recovery_timeout": 10.0,
        "success_threshold": 2,
        "clock": clock,
    }
    opts.update(kwargs)
    return DomainCircuitBreakerManager(**opts)  # type: ignore[arg-type]


def fail(cb: DomainCircuitBreakerManager, key: str = KEY, times: int = 1) -> None:
    for _ in range(times):
        cb.record(cb.acquire(key), ConnectError("refused"))


def open_breaker(cb: DomainCircuitBreakerManager) -> None:
    fail(cb, times=cb.config.failure_threshold)
    assert cb.state(KEY) == "open"


def test_documented_defaults() -> None:
    cb = DomainCircuitBreakerManager()
    assert cb.config.failure_threshold == 5
    assert cb.config.recovery_timeout == 30.0
    assert cb.config.success_threshold == 2
    assert (
        cb.config.counted_categories
        == DEFAULT_COUNTED_CATEGORIES
        == {
            ErrorCategory.CONNECTION,
            ErrorCategory.TIMEOUT,
            ErrorCategory.SERVER,
            ErrorCategory.TRANSIENT,
        }
    )


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"failure_threshold": 0}, ValueError),
        ({"failure_threshold": 2.5}, TypeError),
        ({"success_threshold": 0}, ValueError),
        ({"recovery_timeout": -1.0}, ValueError),
        ({"recovery_timeout": math.inf}, ValueError),
        ({"recovery_timeout": "30"}, TypeError),
        ({"counted_categories": ["NOPE"]}, ValueError),
        ({"counted_categories": "TIMEOUT"}, TypeError),
        ({"clock": 1.0}, TypeError),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        DomainCircuitBreakerManager(**kwargs)  # type: ignore[arg-type]


def test_unknown_key_is_closed_and_admits() -> None:
    cb = manager(FakeClock())
    assert cb.state(KEY) == "closed"
    assert cb.state(KEY) is BreakerState.CLOSED
    permit = cb.acquire(KEY)
    assert permit.key == KEY and not permit.is_probe
    cb.record(permit, None)
    assert cb.snapshot() == {}  # clean breakers are forgotten


def test_opens_after_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    cb = manager(clock)
    fail(cb, times=2)
    assert cb.state(KEY) == "closed"
    fail(cb)
    assert cb.state(KEY) == "open"
    with pytest.raises(CircuitBreakerOpen) as info:
        cb.acquire(KEY)
    assert info.value.host == KEY
    assert info.value.remaining == pytest.approx(10.0)
    assert isinstance(info.value, HyperHTTPError)
    clock.now += 4
    with pytest.raises(CircuitBreakerOpen) as info:
        cb.acquire(KEY)
    assert info.value.remaining == pytest.approx(6.0)
    assert cb.remaining(KEY) == pytest.approx(6.0)


def test_success_resets_the_failure_count() -> None:
    cb = manager(FakeClock())
    fail(cb, times=2)
    cb.record(cb.acquire(KEY), 200)
    fail(cb, times=2)
    assert cb.state(KEY) == "closed"
    assert cb.snapshot()[KEY].consecutive_failures == 2
    fail(cb)
    assert cb.state(KEY) == "open"


def test_a_response_is_a_success_unless_its_status_is_counted() -> None:
    cb = manager(FakeClock())
    fail(cb, times=2)
    cb.record(cb.acquire(KEY), 404)  # the host answered: it is alive
    assert cb.snapshot() == {}
    for status in (500, 502, 503):
        cb.record(cb.acquire(KEY), status)
    assert cb.state(KEY) == "open"


def test_a_nonstandard_status_is_a_sign_of_life_and_settles_the_probe() -> None:
    """LinkedIn's 999 made `record` raise ValueError, so the half-open probe
    was never settled and the host refused every request for ever."""
    clock = FakeClock()
    cb = manager(clock, success_threshold=1)
    fail(cb, times=2)
    cb.record(cb.acquire(KEY), 999)
    assert cb.snapshot() == {}  # count reset, breaker forgotten
    open_breaker(cb)
    clock.now += 10.0
    cb.record(cb.acquire(KEY), 600)
    assert cb.state(KEY) == "closed"


def test_uncounted_categories_neither_count_nor_reset() -> None:
    cb = manager(FakeClock())
    fail(cb, times=2)
    for outcome in (
        TLSError("bad cert"),
        LocalProtocolError("bad header"),
        PoolTimeout("our pool is full"),
        ValueError("bug in a hook"),
        asyncio.CancelledError(),
        ErrorCategory.CLIENT,
    ):
        cb.record(cb.acquire(KEY), outcome)
    assert cb.snapshot()[KEY].consecutive_failures == 2
    fail(cb)
    assert cb.state(KEY) == "open"


def test_rate_limited_response_is_a_sign_of_life() -> None:
    cb = manager(FakeClock())
    fail(cb, times=2)
    cb.record(cb.acquire(KEY), 429)
    assert cb.snapshot() == {}  # count reset, breaker forgotten


def test_counted_categories_are_configurable() -> None:
    cb = manager(FakeClock(), counted_categories=["TLS"], failure_threshold=1)
    cb.record(cb.acquire(KEY), ConnectError("refused"))
    assert cb.state(KEY) == "closed"
    cb.record(cb.acquire(KEY), TLSError("bad cert"))
    assert cb.state(KEY) == "open"


def test_keys_are_independent() -> None:
    cb = manager(FakeClock())
    fail(cb, times=3)
    other = "api.example.com:8443"
    cb.record(cb.acquire(other), None)
    assert cb.state(other) == "closed"
    assert cb.state(KEY) == "open"
    assert origin_key("API.example.com", 443) == KEY
    assert origin_key("::1", 8080) == "[::1]:8080"
    assert DomainCircuitBreakerManager.key_for("[::1]", 80) == "[::1]:80"


def test_exactly_one_probe_after_recovery_timeout() -> None:
    clock = FakeClock()
    cb = manager(clock)
    open_breaker(cb)
    clock.now += 10.0
    assert cb.state(KEY) == "half_open"  # the next caller would be the probe
    probe = cb.acquire(KEY)
    assert probe.is_probe
    for _ in range(3):
        with pytest.raises(CircuitBreakerOpen) as info:
            cb.acquire(KEY)
        assert info.value.remaining == 0.0
    assert cb.snapshot()[KEY].probe_in_flight


async def test_two_concurrent_acquirers_get_one_probe(loop_name: str) -> None:
    clock = FakeClock()
    cb = manager(clock)
    open_breaker(cb)
    clock.now += 11.0
    admitted: list[BreakerPermit] = []
    refused: list[CircuitBreakerOpen] = []
    gate = asyncio.Event()

    async def caller() -> None:
        await gate.wait()
        try:
            permit = cb.acquire(KEY)
        except CircuitBreakerOpen as exc:
            refused.append(exc)
            return
        admitted.append(permit)
        await asyncio.sleep(0)  # the probe's request is in flight
        cb.record(permit, 200)

    tasks = [asyncio.create_task(caller()) for _ in range(2)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    assert len(admitted) == 1 and len(refused) == 1
    assert admitted[0].is_probe


def test_probes_in_sequence_close_the_breaker() -> None:
    clock = FakeClock()
    cb = manager(clock)
    open_breaker(cb)
    clock.now += 10.0
    cb.record(cb.acquire(KEY), 200)
    assert cb.state(KEY) == "half_open"
    assert cb.snapshot()[KEY].consecutive_successes == 1
    second = cb.acquire(KEY)
    assert second.is_probe
    cb.record(second, None)
    assert cb.state(KEY) == "closed"
    assert not cb.acquire(KEY).is_probe


def test_failed_probe_reopens_for_another_timeout() -> None:
    clock = FakeClock()
    cb = manager(clock)
    open_breaker(cb)
    clock.now += 10.0
    cb.record(cb.acquire(KEY), 200)
    probe = cb.acquire(KEY)
    clock.now += 1.0
    cb.record(probe, ReadTimeout("slow"))
    assert cb.state(KEY) == "open"
    assert cb.remaining(KEY) == pytest.approx(10.0)
    assert cb.snapshot()[KEY].times_opened == 2
    clock.now += 9.9
    with pytest.raises(CircuitBreakerOpen):
        cb.acquire(KEY)
    clock.now += 0.1
    assert cb.acquire(KEY).is_probe
    assert cb.snapshot()[KEY].consecutive_successes == 0  # the count started over


def test_released_probe_frees_the_slot() -> None:
    clock = FakeClock()
    cb = manager(clock)
    open_breaker(cb)
    clock.now += 10.0
    probe = cb.acquire(KEY)
    cb.release(probe)  # cancelled before an outcome
    assert cb.state(KEY) == "half_open"
    again = cb.acquire(KEY)
    assert again.is_probe
    cb.record(again, asyncio.CancelledError())  # a cancellation reads as a release
    assert cb.acquire(KEY).is_probe


def test_neutral_probe_outcome_frees_the_slot_without_closing() -> None:
    clock = FakeClock()
    cb = manager(clock, success_threshold=1)
    open_breaker(cb)
    clock.now += 10.0
    cb.record(cb.acquire(KEY), TLSError("bad cert"))
    assert cb.state(KEY) == "half_open"
    cb.record(cb.acquire(KEY), 200)
    assert cb.state(KEY) == "closed"


def test_a_probe_counts_once() -> None:
    clock = FakeClock()
    cb = manager(clock, success_threshold=2)
    open_breaker(cb)
    clock.now += 10.0
    probe = cb.acquire(KEY)
    cb.record(probe, 200)
    cb.record(probe, 200)  # settled twice by mistake
    assert cb.state(KEY) == "half_open"
    assert cb.snapshot()[KEY].consecutive_successes == 1


def test_stale_permits_do_not_move_the_breaker() -> None:
    clock = FakeClock()
    cb = manager(clock)
    in_flight = [cb.acquire(KEY) for _ in range(5)]
    for permit in in_flight[:3]:
        cb.record(permit, ConnectError("refused"))
    assert cb.state(KEY) == "open"
    # Requests that started before it opened cannot close it...
    cb.record(in_flight[3], 200)
    assert cb.state(KEY) == "open"
    clock.now += 10.0
    probe = cb.acquire(KEY)
    # ...nor decide the probe's verdict.
    cb.record(in_flight[4], ReadTimeout("slow"))
    assert cb.state(KEY) == "half_open"
    cb.record(probe, 200)
    assert cb.snapshot()[KEY].consecutive_successes == 1


def test_failures_beyond_the_threshold_open_once() -> None:
    clock = FakeClock()
    cb = manager(clock)
    permits = [cb.acquire(KEY) for _ in range(10)]
    for permit in permits:
        cb.record(permit, ConnectError("refused"))
    snap = cb.snapshot()[KEY]
    assert snap.times_opened == 1
    assert snap.in_flight == 0
    assert snap.remaining == pytest.approx(10.0)


def test_forgotten_key_ignores_its_old_permits() -> None:
    clock = FakeClock()
    cb = manager(clock)
    old = cb.acquire(KEY)
    cb.reset(KEY)
    fail(cb, times=2)
    cb.record(old, ConnectError("refused"))  # would be the third failure
    assert cb.state(KEY) == "closed"
    cb.reset()
    assert cb.snapshot() == {}


def test_snapshot_and_repr() -> None:
    clock = FakeClock()
    cb = manager(clock)
    fail(cb, times=3)
    permit = cb.acquire("other:80")
    snap = cb.snapshot()
    assert list(snap) == [KEY, "other:80"]
    assert snap[KEY].state == "open"
    assert snap["other:80"].in_flight == 1
    cb.release(permit)
    assert "not_closed=1" in repr(cb)


def test_pure_breaker_takes_time_as_an_argument() -> None:
    from hyperhttp.errors.circuit_breaker import BreakerConfig

    breaker = CircuitBreaker(KEY, BreakerConfig(failure_threshold=1, recovery_timeout=5.0))
    breaker.settle(breaker.acquire(now=0.0), Verdict.FAILURE, now=1.0)
    assert breaker.state(now=5.9) == "open"
    assert breaker.remaining(now=2.0) == pytest.approx(4.0)
    assert breaker.state(now=6.0) == "half_open"
    assert "open" in repr(breaker)


@pytest.mark.parametrize(
    ("outcome", "verdict"),
    [
        (None, Verdict.SUCCESS),
        (200, Verdict.SUCCESS),
        (404, Verdict.SUCCESS),
        (429, Verdict.SUCCESS),
        (600, Verdict.SUCCESS),
        (999, Verdict.SUCCESS),
        (500, Verdict.FAILURE),
        (503, Verdict.FAILURE),
        (ConnectError("x"), Verdict.FAILURE),
        (ReadTimeout("x"), Verdict.FAILURE),
        (PoolTimeout("x"), Verdict.NEUTRAL),
        (CircuitBreakerOpen("h:1", 1.0), Verdict.NEUTRAL),
        (TLSError("x"), Verdict.NEUTRAL),
        (asyncio.CancelledError(), Verdict.NEUTRAL),
        (KeyboardInterrupt(), Verdict.NEUTRAL),
        (ErrorCategory.SERVER, Verdict.FAILURE),
        (ErrorCategory.CLIENT, Verdict.NEUTRAL),
    ],
    ids=repr,
)
def test_verdicts(outcome: object, verdict: Verdict) -> None:
    assert verdict_for(outcome, DEFAULT_COUNTED_CATEGORIES) is verdict  # type: ignore[arg-type]
