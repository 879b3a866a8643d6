"""Per-host circuit breakers.

Theory
======

Each "host:port" key has one breaker, a small state machine:

    CLOSED ──failure_threshold consecutive counted failures──► OPEN
    OPEN ──first acquire after recovery_timeout──► HALF_OPEN (that caller is the probe)
    HALF_OPEN ──probe succeeds, success_threshold-th success in a row──► CLOSED
    HALF_OPEN ──probe succeeds, fewer so far──► HALF_OPEN (next caller is the next probe)
    HALF_OPEN ──probe fails──► OPEN (for another recovery_timeout)
    HALF_OPEN ──probe released or neutral──► HALF_OPEN (the probe slot is free again)

Admission (`acquire`, before any connection or pool slot is taken):

- CLOSED admits everyone.
- OPEN refuses with `CircuitBreakerOpen(key, remaining)` until
  `recovery_timeout` has passed since it opened.
- HALF_OPEN admits exactly one probe at a time; everyone else is refused
  with `remaining=0.0` (the verdict is due as soon as the probe ends).
  Probes run one after another: `success_threshold` probes must succeed in
  sequence before the breaker closes.

Every outcome (`record`) is one of three verdicts:

- success: `None`, or a response whose status is not in a counted category.
  Any response proves the host is alive, a 404 as much as a 200, and so
  does a status outside 400-599 (a non-standard 999 has no category).
- failure: an exception, status or category in `counted_categories`
  (default CONNECTION, TIMEOUT, SERVER, TRANSIENT).
- neutral: everything else, and `release`. Uncounted exception categories
  (TLS, CLIENT, PROTOCOL, DNS...) neither count nor reset the count: they
  say nothing about whether the host is healthy. A `PoolTimeout` is neutral
  too (our own pool was full), and so is any BaseException that is not an
  Exception, such as a cancellation.

A success resets the consecutive-failure count; a neutral leaves it.

Permits and generations: every admitted attempt gets a `BreakerPermit`
stamped with the breaker's generation. The generation changes on every
transition and every probe granted; an outcome whose permit is from another
generation is stale and changes nothing. Hence requests in flight when the
breaker opened can neither close it nor keep it open, only the probe decides
in HALF_OPEN, and a probe counts once. Each permit must be settled exactly
once, by `record` or by `release` (an attempt that ended without an
outcome, e.g. cancelled), so a half-open probe slot is never stranded.

The transitions live in `CircuitBreaker`, a pure class that takes `now` as an
argument and holds one key's state; `DomainCircuitBreakerManager` is a thin
map of keys to breakers with a clock, so a coordinator process can run the
same class for a fleet. All methods are synchronous: between two awaits of
the client nothing else can interleave.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from .._exceptions import CircuitBreakerOpen, PoolClosed, PoolTimeout
from .classify import ErrorCategory, classify, parse_categories, status_category

DEFAULT_COUNTED_CATEGORIES: frozenset[ErrorCategory] = frozenset(
    {
        ErrorCategory.CONNECTION,
        ErrorCategory.TIMEOUT,
        ErrorCategory.SERVER,
        ErrorCategory.TRANSIENT,
    }
)

# Failures that say nothing about the remote host.
_NOT_THE_HOSTS_FAULT: tuple[type[BaseException], ...] = (
    PoolTimeout,
    PoolClosed,
    CircuitBreakerOpen,
)

Outcome = BaseException | int | ErrorCategory | None


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Verdict(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


def verdict_for(outcome: Outcome, counted: frozenset[ErrorCategory]) -> Verdict:
    """How an attempt's outcome bears on its host's health (see module doc)."""
    if outcome is None:
        return Verdict.SUCCESS
    if isinstance(outcome, ErrorCategory):
        return Verdict.FAILURE if outcome in counted else Verdict.NEUTRAL
    if isinstance(outcome, int) and not isinstance(outcome, bool):
        category = status_category(outcome)
        return Verdict.FAILURE if category is not None and category in counted else Verdict.SUCCESS
    if not isinstance(outcome, Exception) or isinstance(outcome, _NOT_THE_HOSTS_FAULT):
        return Verdict.NEUTRAL
    return Verdict.FAILURE if classify(outcome) in counted else Verdict.NEUTRAL


def origin_key(host: str, port: int) -> str:
    """The breaker key of an origin: "host:port", IPv6 literals bracketed."""
    host = host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Validated thresholds shared by every breaker of a manager."""

    failure_threshold: int = 5
    recovery_timeout: float = 30.0
    success_threshold: int = 2
    counted_categories: frozenset[ErrorCategory] = DEFAULT_COUNTED_CATEGORIES

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "success_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        timeout = self.recovery_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"recovery_timeout must be a number, got {type(timeout).__name__}")
        if not math.isfinite(timeout) or timeout < 0:
            raise ValueError(f"recovery_timeout must be a finite number >= 0, got {timeout!r}")
        object.__setattr__(self, "recovery_timeout", float(timeout))
        object.__setattr__(
            self,
            "counted_categories",
            parse_categories(self.counted_categories, name="counted_categories"),
        )


@dataclass(frozen=True, slots=True)
class BreakerPermit:
    """Leave to make one attempt; settle it with `record` or `release`."""

    key: str
    generation: int
    is_probe: bool = False


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """One breaker's state, for stats and logs."""

    key: str
    state: BreakerState
    consecutive_failures: int
    consecutive_successes: int
    remaining: float
    in_flight: int
    probe_in_flight: bool
    times_opened: int


class CircuitBreaker:
    """One key's state machine. Pure: time comes in as `now`."""

    __slots__ = (
        "_born",
        "_failures",
        "_generation",
        "_in_flight",
        "_next_id",
        "_opened_at",
        "_probe_in_flight",
        "_state",
        "_successes",
        "_times_opened",
        "config",
        "key",
    )

    def __init__(
        self, key: str, config: BreakerConfig, next_id: Callable[[], int] | None = None
    ) -> None:
        self.key = key
        self.config = config
        self._next_id = next_id if next_id is not None else itertools.count(1).__next__
        self._generation = self._next_id()
        # Permits older than this breaker belong to an earlier one for the key.
        self._born = self._generation
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._in_flight = 0
        self._times_opened = 0

    def __repr__(self) -> str:
        return (
            f"<CircuitBreaker {self.key} {self._state.value} failures={self._failures} "
            f"successes={self._successes} in_flight={self._in_flight}>"
        )

    # -- questions ---------------------------------------------------------

    def state(self, now: float) -> BreakerState:
        """The state a caller would meet now: OPEN past its timeout reads as
        HALF_OPEN, since the next acquire would be the probe."""
        if self._state is BreakerState.OPEN and self.remaining(now) <= 0.0:
            return BreakerState.HALF_OPEN
        return self._state

    def remaining(self, now: float) -> float:
        """Seconds until an OPEN breaker lets a probe through (0 otherwise)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.config.recovery_timeout - now)

    @property
    def is_pristine(self) -> bool:
        """Closed, no failures counted, nothing in flight: safe to forget."""
        return self._state is BreakerState.CLOSED and self._failures == 0 and self._in_flight == 0

    def snapshot(self, now: float) -> BreakerSnapshot:
        return BreakerSnapshot(
            key=self.key,
            state=self.state(now),
            consecutive_failures=self._failures,
            consecutive_successes=self._successes,
            remaining=self.remaining(now),
            in_flight=self._in_flight,
            probe_in_flight=self._probe_in_flight,
            times_opened=self._times_opened,
        )

    # -- commands ----------------------------------------------------------

    def acquire(self, now: float) -> BreakerPermit:
        """Admit one attempt or raise `CircuitBreakerOpen`."""
        if self._state is BreakerState.OPEN:
            remaining = self.remaining(now)
            if remaining > 0.0:
                raise CircuitBreakerOpen(self.key, remaining)
            self._enter(BreakerState.HALF_OPEN)
        if self._state is BreakerState.HALF_OPEN:
            if self._probe_in_flight:
                raise CircuitBreakerOpen(self.key, 0.0)
            self._probe_in_flight = True
            self._generation = self._next_id()
            self._in_flight += 1
            return BreakerPermit(self.key, self._generation, is_probe=True)
        self._in_flight += 1
        return BreakerPermit(self.key, self._generation)

    def settle(self, permit: BreakerPermit, verdict: Verdict, now: float) -> None:
        """Apply the verdict on an attempt made under `permit`."""
        if permit.key != self.key or permit.generation < self._born:
            return  # not ours: from a breaker since forgotten
        self._in_flight = max(0, self._in_flight - 1)
        if permit.generation != self._generation:
            return  # stale: the breaker moved on since this permit was issued
        if self._state is BreakerState.HALF_OPEN:
            self._settle_probe(permit, verdict, now)
        elif self._state is BreakerState.CLOSED:
            if verdict is Verdict.SUCCESS:
                self._failures = 0
            elif verdict is Verdict.FAILURE:
                self._failures += 1
                if self._failures >= self.config.failure_threshold:
                    self._open(now)

    def _settle_probe(self, permit: BreakerPermit, verdict: Verdict, now: float) -> None:
        if not permit.is_probe:
            return
        self._probe_in_flight = False
        # A new generation either way, so this probe cannot be settled twice.
        if verdict is Verdict.FAILURE:
            self._open(now)
        elif verdict is Verdict.SUCCESS:
            self._successes += 1
            if self._successes >= self.config.success_threshold:
                self._enter(BreakerState.CLOSED)
            else:
                self._generation = self._next_id()
        else:
            self._generation = self._next_id()

    def _open(self, now: float) -> None:
        self._enter(BreakerState.OPEN)
        self._opened_at = now
        self._times_opened += 1

    def _enter(self, state: BreakerState) -> None:
        self._state = state
        self._generation = self._next_id()
        self._failures = 0
        self._successes = 0
        self._probe_in_flight = False


class DomainCircuitBreakerManager:
    """Circuit breakers per "host:port", sharing one set of thresholds.

    `acquire(key)` before an attempt (raises `CircuitBreakerOpen`), then
    `record(permit, outcome)` with the response status or the exception
    (None for success), or `release(permit)` if the attempt ended without an
    outcome. Breakers that are closed, clean and idle are forgotten, so
    memory follows the number of unhealthy or busy hosts.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        success_threshold: int = 2,
        counted_categories: Iterable[str | ErrorCategory] = DEFAULT_COUNTED_CATEGORIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        self.config = BreakerConfig(
            failure_threshold=failure_threshold,
            recovery_timeout=recovery_timeout,
            success_threshold=success_threshold,
            counted_categories=parse_categories(counted_categories, name="counted_categories"),
        )
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        # One id sequence for all keys: a forgotten key's old permits never
        # match the generation of the breaker that replaces it.
        self._next_id = itertools.count(1).__next__

    def __repr__(self) -> str:
        opened = sum(
            1 for b in self._breakers.values() if b.state(self._clock()) is not BreakerState.CLOSED
        )
        return f"<DomainCircuitBreakerManager keys={len(self._breakers)} not_closed={opened}>"

    @staticmethod
    def key_for(host: str, port: int) -> str:
        """The key of an origin, "host:port" (IPv6 literals bracketed)."""
        return origin_key(host, port)

    def acquire(self, key: str) -> BreakerPermit:
        """Admit one attempt to `key`, or raise `CircuitBreakerOpen`."""
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(key, self.config, self._next_id)
        return breaker.acquire(self._clock())

    def record(self, permit: BreakerPermit, outcome: Outcome) -> None:
        """Settle `permit` with how the attempt ended.

        `outcome` is None for success, the response status code, the
        exception raised (cancellations count as a release), or an
        `ErrorCategory` (counted categories fail, others are neutral).
        """
        self.settle(permit, verdict_for(outcome, self.config.counted_categories))

    def release(self, permit: BreakerPermit) -> None:
        """Settle `permit` without an outcome (the attempt was abandoned)."""
        self.settle(permit, Verdict.NEUTRAL)

    def settle(self, permit: BreakerPermit, verdict: Verdict) -> None:
        """Settle `permit` with a verdict already worked out (`verdict_for`)."""
        breaker = self._breakers.get(permit.key)
        if breaker is None:
            return
        breaker.settle(permit, verdict, self._clock())
        if breaker.is_pristine:
            del self._breakers[permit.key]

    def state(self, key: str) -> BreakerState:
        """The state of `key`: "closed", "open" or "half_open" (a str enum)."""
        breaker = self._breakers.get(key)
        return BreakerState.CLOSED if breaker is None else breaker.state(self._clock())

    def remaining(self, key: str) -> float:
        """Seconds before `key` lets a probe through (0.0 if not open)."""
        breaker = self._breakers.get(key)
        return 0.0 if breaker is None else breaker.remaining(self._clock())

    def snapshot(self) -> dict[str, BreakerSnapshot]:
        """State of every tracked key; keys absent are closed and clean."""
        now = self._clock()
        return {key: b.snapshot(now) for key, b in sorted(self._breakers.items())}

    def reset(self, key: str | None = None) -> None:
        """Forget `key` (or every key): it starts closed and clean again."""
        if key is None:
            self._breakers.clear()
        else:
            self._breakers.pop(key, None)


__all__ = [
    "DEFAULT_COUNTED_CATEGORIES",
    "BreakerConfig",
    "BreakerPermit",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "CircuitBreakerOpen",
    "DomainCircuitBreakerManager",
    "ErrorCategory",
    "Verdict",
    "origin_key",
    "verdict_for",
]
