from __future__ import annotations

import dataclasses
import math
import random

import pytest

from hyperhttp.utils.backoff import (
    BackoffStrategy,
    DecorrelatedJitterBackoff,
    ExponentialBackoff,
)


class SequenceRng:
    """A `random.Random` stand-in replaying fixed values."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.calls = 0

    def random(self) -> float:
        value = self.values[self.calls % len(self.values)]
        self.calls += 1
        return value


# -- ExponentialBackoff -------------------------------------------------------


def test_exponential_without_jitter_doubles_then_caps() -> None:
    backoff = ExponentialBackoff(base=0.1, factor=2.0, max_backoff=1.0, jitter=False)
    delays = [backoff.delay(n, None) for n in range(1, 8)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_exponential_factor_is_used() -> None:
    backoff = ExponentialBackoff(base=1.0, factor=3.0, max_backoff=100.0, jitter=False)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == pytest.approx([1.0, 3.0, 9.0, 27.0])


def test_full_jitter_scales_the_ceiling_by_the_draw() -> None:
    rng = SequenceRng(0.0, 0.5, 0.25)
    backoff = ExponentialBackoff(base=1.0, factor=2.0, max_backoff=30.0, rng=rng)
    assert backoff.delay(1) == 0.0
    assert backoff.delay(2) == pytest.approx(1.0)  # half of 2.0
    assert backoff.delay(3) == pytest.approx(1.0)  # a quarter of 4.0
    assert rng.calls == 3


def test_full_jitter_stays_within_zero_and_the_ceiling() -> None:
    backoff = ExponentialBackoff(base=0.1, factor=2.0, max_backoff=5.0, rng=random.Random(7))
    seen = []
    for attempt in range(1, 40):
        ceiling = min(5.0, 0.1 * 2.0 ** (attempt - 1))
        for _ in range(20):
            delay = backoff.delay(attempt)
            assert 0.0 <= delay <= ceiling
            seen.append(delay / ceiling)
    # Full jitter, not equal jitter: draws land in the lower half too.
    assert min(seen) < 0.1
    assert max(seen) > 0.9


def test_jitter_with_draw_near_one_never_exceeds_cap() -> None:
    backoff = ExponentialBackoff(base=10.0, max_backoff=10.0, rng=lambda: 0.9999999999)
    assert backoff.delay(5) <= 10.0


def test_huge_attempt_does_not_overflow() -> None:
    backoff = ExponentialBackoff(base=0.1, factor=2.0, max_backoff=30.0, jitter=False)
    assert backoff.delay(100_000) == 30.0
    assert backoff.ceiling(5000) == 30.0


def test_callable_rng_is_accepted() -> None:
    backoff = ExponentialBackoff(base=2.0, max_backoff=30.0, rng=lambda: 0.5)
    assert backoff.delay(1) == pytest.approx(1.0)


def test_base_zero_gives_zero_delays() -> None:
    backoff = ExponentialBackoff(base=0.0, jitter=False)
    assert backoff.delay(10) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"base": -0.1}, ValueError),
        ({"base": math.nan}, ValueError),
        ({"base": "0.1"}, TypeError),
        ({"base": True}, TypeError),
        ({"factor": 0.5}, ValueError),
        ({"factor": math.inf}, ValueError),
        ({"max_backoff": -1.0}, ValueError),
        ({"max_backoff": math.inf}, ValueError),
        ({"jitter": 1}, TypeError),
        ({"rng": 42}, TypeError),
    ],
)
def test_exponential_rejects_bad_arguments(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        ExponentialBackoff(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_is_one_based(attempt: int) -> None:
    with pytest.raises(ValueError, match="1-based"):
        ExponentialBackoff().delay(attempt)
    with pytest.raises(ValueError, match="1-based"):
        DecorrelatedJitterBackoff().delay(attempt)


def test_rng_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="rng returned"):
        ExponentialBackoff(rng=lambda: 1.5).delay(1)
    with pytest.raises(ValueError, match="rng returned"):
        DecorrelatedJitterBackoff(rng=lambda: -0.1).delay(1)


def test_exponential_is_immutable_and_comparable() -> None:
    backoff = ExponentialBackoff()
    with pytest.raises(dataclasses.FrozenInstanceError):
        backoff.base = 1.0  # type: ignore[misc]
    assert backoff == ExponentialBackoff(rng=random.Random(1))  # rng does not compare
    assert backoff != ExponentialBackoff(max_backoff=5.0)
    assert hash(backoff) == hash(ExponentialBackoff())


def test_defaults_match_the_documentation() -> None:
    exp = ExponentialBackoff()
    assert (exp.base, exp.factor, exp.max_backoff, exp.jitter) == (0.1, 2.0, 30.0, True)
    dec = DecorrelatedJitterBackoff()
    assert (dec.base, dec.max_backoff) == (0.1, 10.0)


# -- DecorrelatedJitterBackoff -----------------------------------------------


def test_decorrelated_first_delay_is_between_base_and_three_base() -> None:
    assert DecorrelatedJitterBackoff(base=0.1, rng=lambda: 0.0).delay(1, None) == 0.1
    top = DecorrelatedJitterBackoff(base=0.1, rng=lambda: 1.0).delay(1, None)
    assert top == pytest.approx(0.3)


def test_decorrelated_grows_from_the_previous_delay() -> None:
    backoff = DecorrelatedJitterBackoff(base=0.1, max_backoff=10.0, rng=lambda: 1.0)
    assert backoff.delay(2, 1.0) == pytest.approx(3.0)
    assert backoff.delay(3, 3.0) == pytest.approx(9.0)
    assert backoff.delay(4, 9.0) == 10.0  # capped
    half = DecorrelatedJitterBackoff(base=1.0, max_backoff=10.0, rng=lambda: 0.5)
    assert half.delay(2, 2.0) == pytest.approx(1.0 + (6.0 - 1.0) / 2)


def test_decorrelated_chain_stays_in_bounds() -> None:
    backoff = DecorrelatedJitterBackoff(base=0.05, max_backoff=2.0, rng=random.Random(3))
    for _ in range(50):
        previous: float | None = None
        for attempt in range(1, 30):
            delay = backoff.delay(attempt, previous)
            upper = min(2.0, 3 * (previous if previous is not None else 0.05))
            assert 0.05 <= delay <= max(0.05, upper)
            previous = delay


def test_decorrelated_holds_no_state_between_calls() -> None:
    backoff = DecorrelatedJitterBackoff(base=0.1, max_backoff=10.0, rng=lambda: 1.0)
    first = backoff.delay(2, 1.0)
    backoff.delay(3, 5.0)
    assert backoff.delay(2, 1.0) == first


def test_decorrelated_treats_a_short_previous_delay_as_base() -> None:
    backoff = DecorrelatedJitterBackoff(base=1.0, max_backoff=10.0, rng=lambda: 1.0)
    # e.g. a Retry-After of 0 replaced the last delay
    assert backoff.delay(3, 0.0) == pytest.approx(3.0)
    assert backoff.delay(3, math.nan) == pytest.approx(3.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 5.0, "max_backoff": 1.0},
        {"base": -1.0},
        {"max_backoff": math.nan},
    ],
)
def test_decorrelated_rejects_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DecorrelatedJitterBackoff(**kwargs)  # type: ignore[arg-type]


def test_both_satisfy_the_strategy_protocol() -> None:
    assert isinstance(ExponentialBackoff(), BackoffStrategy)
    assert isinstance(DecorrelatedJitterBackoff(), BackoffStrategy)
    assert not isinstance(object(), BackoffStrategy)
