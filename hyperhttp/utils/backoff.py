"""Backoff strategies: how long to wait before retry number *n*.

Strategies are immutable values holding no per-request state, so one can be
shared by every task. `delay(attempt, previous_delay)` is given everything it
needs: the retry number (1 for the first retry) and the delay actually slept
before the previous retry (None before the first). Randomness is injected
with `rng=`: a `random.Random`-like object (anything with `.random()`) or a
zero-argument callable returning a float in [0, 1); by default the module
`random` functions are used.

Every delay is in [0, max_backoff].
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class SupportsRandom(Protocol):
    """Anything with a `random()` method, such as `random.Random`."""

    def random(self) -> float: ...


RandomSource = SupportsRandom | Callable[[], float]


@runtime_checkable
class BackoffStrategy(Protocol):
    """What `RetryPolicy` needs from a backoff strategy."""

    @property
    def max_backoff(self) -> float:
        """Cap on any single wait, in seconds (also caps Retry-After)."""
        ...

    def delay(self, attempt: int, previous_delay: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        ...


def _unit_random(rng: RandomSource | None) -> Callable[[], float]:
    if rng is None:
        return random.random
    method = getattr(rng, "random", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    if callable(rng):
        return rng
    raise TypeError("rng must be a random.Random-like object or a callable returning a float")


def _check_number(name: str, value: object, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}")
    return number


def _check_attempt(attempt: int) -> None:
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise TypeError(f"attempt must be an int, got {type(attempt).__name__}")
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")


def _draw(unit: Callable[[], float]) -> float:
    # A misbehaving source must not produce a delay outside the bounds.
    value = float(unit())
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"rng returned {value!r}, expected a float in [0, 1)")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ExponentialBackoff:
    """Exponential backoff with optional *full* jitter.

    The ceiling for retry `n` is `min(max_backoff, base * factor ** (n - 1))`.
    With `jitter=True` the delay is drawn uniformly from [0, ceiling] ("full
    jitter"): it spreads a crowd of clients best and does the least total
    work of the common variants (equal jitter keeps a floor of half the
    ceiling, which brings back some of the synchronised bursts jitter is
    meant to break). With `jitter=False` the delay is the ceiling itself.
    """

    base: float = 0.1
    factor: float = 2.0
    max_backoff: float = 30.0
    jitter: bool = True
    rng: RandomSource | None = field(default=None, repr=False, compare=False)
    _unit: Callable[[], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", _check_number("base", self.base))
        object.__setattr__(self, "factor", _check_number("factor", self.factor, minimum=1.0))
        object.__setattr__(self, "max_backoff", _check_number("max_backoff", self.max_backoff))
        if not isinstance(self.jitter, bool):
            raise TypeError(f"jitter must be a bool, got {type(self.jitter).__name__}")
        object.__setattr__(self, "_unit", _unit_random(self.rng))

    def ceiling(self, attempt: int) -> float:
        """The largest delay retry `attempt` can get."""
        _check_attempt(attempt)
        try:
            raw = self.base * self.factor ** (attempt - 1)
        except OverflowError:
            return self.max_backoff
        return min(self.max_backoff, raw)

    def delay(self, attempt: int, previous_delay: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        ceiling = self.ceiling(attempt)
        if not self.jitter:
            return ceiling
        return min(ceiling, ceiling * _draw(self._unit))


@dataclass(frozen=True, slots=True, kw_only=True)
class DecorrelatedJitterBackoff:
    """Decorrelated jitter: each delay is drawn from [base, 3 * previous].

    `delay = min(max_backoff, uniform(base, max(base, 3 * previous_delay)))`,
    with `previous_delay` taken as `base` before the first retry. The
    previous delay comes from the caller (the retry state), so the strategy
    itself holds nothing that changes. Delays stay within [base, max_backoff].
    """

    base: float = 0.1
    max_backoff: float = 10.0
    rng: RandomSource | None = field(default=None, repr=False, compare=False)
    _unit: Callable[[], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        base = _check_number("base", self.base)
        cap = _check_number("max_backoff", self.max_backoff)
        if base > cap:
            raise ValueError(f"base ({base}) must not exceed max_backoff ({cap})")
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "max_backoff", cap)
        object.__setattr__(self, "_unit", _unit_random(self.rng))

    def delay(self, attempt: int, previous_delay: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        _check_attempt(attempt)
        previous = self.base if previous_delay is None else previous_delay
        if not math.isfinite(previous) or previous < self.base:
            # A Retry-After may have replaced the last delay with a shorter one.
            previous = self.base
        upper = min(self.max_backoff, previous * 3.0)
        upper = max(self.base, upper)
        return min(upper, self.base + (upper - self.base) * _draw(self._unit))


__all__ = [
    "BackoffStrategy",
    "DecorrelatedJitterBackoff",
    "ExponentialBackoff",
    "RandomSource",
    "SupportsRandom",
]
