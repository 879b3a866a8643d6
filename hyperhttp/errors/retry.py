"""Retry policy: whether and when to send a request again.

A `RetryPolicy` is an immutable value, validated when built and shared by
every task. Each request carries its own `RetryState`; after every attempt
the client asks the policy for a `RetryDecision`, which holds the verdict,
the delay, the `AttemptRecord` for telemetry and the next state:

    state = policy.begin(method, redacted_url)
    while True:
        try:
            response = await send()
        except HyperHTTPError as exc:
            decision = policy.decide(state, exc, sent=..., body_replayable=...)
            await emit(telemetry, decision.record, decision.outcome)
            if not decision.retry:
                error = decision.error_to_raise(exc)
                if error is exc:
                    raise
                raise error from exc
        else:
            decision = policy.decide(state, response.status_code, body_replayable=...,
                                     retry_after=response.headers.get("retry-after"))
            await emit(telemetry, decision.record, decision.outcome)
            if not decision.retry:
                return response
            await response.aclose()
        await sleep(decision.delay)
        state = decision.next_state

Rules `decide` applies, in order:

1. A response whose status is not in `status_force_list` is final
   (outcome "success"); an exception whose category is not in
   `retry_categories` is final (outcome "fail").
2. A request that may have reached the server (`sent` and not
   `was_never_sent(exc)`; a response always reached it) is re-sent only when
   its method is in `retry_methods` (idempotent methods by default) or
   `retry_non_idempotent` is set.
3. The body must be replayable (`body_replayable`: no body, bytes, or a
   stream not started yet).
4. At most `max_retries` retries follow the first attempt.
5. The delay is the backoff strategy's, or, for a response with a valid
   `Retry-After` when `respect_retry_after`, that value capped by the
   strategy's `max_backoff`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from .._exceptions import HyperHTTPError, RetryError
from ..utils.backoff import BackoffStrategy, ExponentialBackoff
from .classify import (
    ErrorCategory,
    classify,
    parse_categories,
    status_category,
    was_never_sent,
)

Outcome = Literal["success", "retry", "fail"]

IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Failures that are usually over by the next attempt. DNS is included: the
# request never left, and resolver hiccups (SERVFAIL, timeouts) are common.
DEFAULT_RETRY_CATEGORIES: frozenset[ErrorCategory] = frozenset(
    {
        ErrorCategory.CONNECTION,
        ErrorCategory.DNS,
        ErrorCategory.TIMEOUT,
        ErrorCategory.TRANSIENT,
    }
)
# 429/503 are the server asking us to come back later (often with
# Retry-After); 502/504 are a gateway failing to reach a backend. 500 is left
# out: it is usually a deterministic bug that a retry only repeats.
DEFAULT_STATUS_FORCE_LIST: frozenset[int] = frozenset({429, 502, 503, 504})

_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# The three HTTP-date forms of RFC 9110 section 5.6.7, parsed by hand:
# email.utils would import socket, and strptime's month names follow the
# locale. Weekday names are not checked against the date.
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_TIME = r"(?P<H>\d\d):(?P<M>\d\d):(?P<S>\d\d)"
_HTTP_DATES = (
    # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    re.compile(
        rf"[a-z]{{3}}, (?P<d>\d\d?) (?P<b>[a-z]{{3}}) (?P<Y>\d{{4}}) {_TIME} gmt", re.I | re.A
    ),
    # rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
    re.compile(
        rf"[a-z]{{6,9}}, (?P<d>\d\d)-(?P<b>[a-z]{{3}})-(?P<y>\d\d) {_TIME} gmt", re.I | re.A
    ),
    # asctime-date: Sun Nov  6 08:49:37 1994
    re.compile(rf"[a-z]{{3}} (?P<b>[a-z]{{3}}) +(?P<d>\d\d?) {_TIME} (?P<Y>\d{{4}})", re.I | re.A),
)


class RetryReason(StrEnum):
    """Why `decide` said what it said."""

    RETRYABLE_ERROR = "retryable_error"
    RETRYABLE_STATUS = "retryable_status"
    STATUS_ACCEPTED = "status_accepted"
    CATEGORY_NOT_RETRYABLE = "category_not_retryable"
    METHOD_NOT_RETRYABLE = "method_not_retryable"
    BODY_NOT_REPLAYABLE = "body_not_replayable"
    RETRIES_EXHAUSTED = "retries_exhausted"
    HOOK_FAILED = "hook_failed"
    """An event hook raised: the request ends with the hook's exception,
    never retried. Recorded by the client; `decide` never gives it."""


def parse_retry_after(
    value: str | bytes | None, now: float | Callable[[], float] | None = None
) -> float | None:
    """Seconds to wait according to a `Retry-After` header value.

    Accepts delay-seconds ("120", leniently "1.5") and an HTTP-date in any of
    the three RFC 9110 forms; `now` is the current wall-clock time in epoch
    seconds, or a clock returning it, read only for the date form (default
    `time.time`). A date in
    the past gives 0.0, and delay-seconds too long for a float give
    infinity. Returns None for a missing, negative or unparsable value,
    which the caller then ignores.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    text = value.strip()
    if not text:
        return None
    if _DELAY_SECONDS.fullmatch(text):
        # Digits too many for a float are still a valid, very long delay:
        # infinity, which the policy caps at max_backoff like any other.
        return float(text)
    if now is None:
        current = time.time()
    elif callable(now):
        current = now()
    else:
        current = now
    when = _parse_http_date(text, current)
    if when is None:
        return None
    return max(0.0, when - current)


def _parse_http_date(text: str, now: float) -> float | None:
    """Epoch seconds of an HTTP-date, or None if `text` is not one."""
    for pattern in _HTTP_DATES:
        match = pattern.fullmatch(text)
        if match is not None:
            break
    else:
        return None
    fields = match.groupdict()
    month = _MONTHS.get(fields["b"].lower())
    if month is None:
        return None
    if fields.get("Y") is not None:
        year = int(fields["Y"])
    else:
        # RFC 9110: a two-digit year more than 50 years ahead is in the past.
        this_year = datetime.fromtimestamp(now, tz=UTC).year
        year = 2000 + int(fields["y"])
        while year > this_year + 50:
            year -= 100
    try:
        when = datetime(
            year,
            month,
            int(fields["d"]),
            int(fields["H"]),
            int(fields["M"]),
            int(fields["S"]),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return when.timestamp()


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """What happened in one attempt: handed to telemetry, kept in history.

    `url` is already redacted of credentials. `exception` or `status_code`
    says how the attempt ended; `category` is None for a response that is
    no failure (1xx-3xx, or a non-standard status above 599).
    `delay` is the wait before the next attempt (None when none follows);
    `elapsed` counts seconds since the first attempt began.
    """

    attempt: int
    method: str
    url: str
    outcome: Outcome
    reason: RetryReason
    category: ErrorCategory | None
    exception: BaseException | None
    status_code: int | None
    delay: float | None
    elapsed: float


@dataclass(frozen=True, slots=True)
class RetryState:
    """One request's progress through its attempts; never mutated.

    `attempt` is the number (1-based) of the attempt now under way;
    `previous_delay` the wait slept before it (None for the first);
    `history` the records of the attempts before it.
    """

    method: str
    url: str
    started_at: float
    attempt: int = 1
    previous_delay: float | None = None
    history: tuple[AttemptRecord, ...] = ()

    @property
    def retries_done(self) -> int:
        return self.attempt - 1


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """The verdict on one attempt.

    `retry` says whether to send again after sleeping `delay` seconds, and
    `next_state` is then the state to carry (None when not retrying).
    `record` describes the attempt for telemetry; `history` holds every
    record so far, this one included.
    """

    retry: bool
    reason: RetryReason
    delay: float
    category: ErrorCategory | None
    record: AttemptRecord
    history: tuple[AttemptRecord, ...]
    next_state: RetryState | None

    @property
    def outcome(self) -> Outcome:
        return self.record.outcome

    @property
    def attempts(self) -> int:
        return self.record.attempt

    def error_to_raise(self, exc: BaseException) -> BaseException:
        """The exception the client raises when it gives up on `exc`.

        The original exception after a single attempt; a `RetryError`
        wrapping it once at least one retry has run.
        """
        if self.record.attempt <= 1:
            return exc
        message = (
            f"{self.record.method} {self.record.url} failed after "
            f"{self.record.attempt} attempts: {type(exc).__name__}: {exc}"
        )
        request = exc.request if isinstance(exc, HyperHTTPError) and exc.has_request else None
        return RetryError(
            message,
            original_exception=exc,
            attempts=self.record.attempt,
            request=request,
            history=self.history,
        )


def _statuses(value: Iterable[int]) -> frozenset[int]:
    if isinstance(value, str | bytes):
        raise TypeError("status_force_list must be a collection of ints")
    result: set[int] = set()
    for status in value:
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"status must be an int, got {type(status).__name__}")
        if not 400 <= status <= 599:
            raise ValueError(f"status_force_list holds {status}; only 400-599 can be retried")
        result.add(status)
    return frozenset(result)


def _methods(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str | bytes):
        raise TypeError("retry_methods must be a collection of method names, not one string")
    result: set[str] = set()
    for method in value:
        if not isinstance(method, str) or not _TOKEN.fullmatch(method):
            raise ValueError(f"invalid HTTP method {method!r} in retry_methods")
        result.add(method.upper())
    return frozenset(result)


@dataclass(frozen=True, init=False, repr=False)
class RetryPolicy:
    """When and how to retry. Immutable; one instance serves every task.

    - `max_retries`: retries after the first attempt (0 disables retrying).
    - `retry_categories`: exception categories to retry, as `ErrorCategory`
      or their names (default CONNECTION, DNS, TIMEOUT, TRANSIENT).
    - `status_force_list`: response statuses to retry (default 429, 502,
      503, 504).
    - `backoff_strategy`: delays between attempts (default
      `ExponentialBackoff()`).
    - `respect_retry_after`: honour a response's `Retry-After`, capped by
      the strategy's `max_backoff` (default True).
    - `retry_methods`: methods re-sent after they may have reached the
      server (default the idempotent ones: GET HEAD OPTIONS PUT DELETE
      TRACE). A request that never left may always be retried.
    - `retry_non_idempotent`: re-send any method (default False).
    - `clock`: monotonic clock for elapsed times; `wall_clock`: epoch clock
      for HTTP-date `Retry-After` values.
    """

    max_retries: int
    retry_categories: frozenset[ErrorCategory]
    status_force_list: frozenset[int]
    backoff_strategy: BackoffStrategy
    respect_retry_after: bool
    retry_methods: frozenset[str]
    retry_non_idempotent: bool
    clock: Callable[[], float] = field(repr=False, compare=False)
    wall_clock: Callable[[], float] = field(repr=False, compare=False)

    def __init__(
        self,
        *,
        max_retries: int = 3,
        retry_categories: Iterable[str | ErrorCategory] = DEFAULT_RETRY_CATEGORIES,
        status_force_list: Iterable[int] = DEFAULT_STATUS_FORCE_LIST,
        backoff_strategy: BackoffStrategy | None = None,
        respect_retry_after: bool = True,
        retry_methods: Iterable[str] = IDEMPOTENT_METHODS,
        retry_non_idempotent: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int):
            raise TypeError(f"max_retries must be an int, got {type(max_retries).__name__}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff_strategy is None:
            backoff_strategy = ExponentialBackoff()
        elif not isinstance(backoff_strategy, BackoffStrategy):
            raise TypeError("backoff_strategy needs a delay() method and a max_backoff")
        for name, flag in (
            ("respect_retry_after", respect_retry_after),
            ("retry_non_idempotent", retry_non_idempotent),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        if not callable(clock) or not callable(wall_clock):
            raise TypeError("clock and wall_clock must be callables returning seconds")
        values = {
            "max_retries": max_retries,
            "retry_categories": parse_categories(retry_categories, name="retry_categories"),
            "status_force_list": _statuses(status_force_list),
            "backoff_strategy": backoff_strategy,
            "respect_retry_after": respect_retry_after,
            "retry_methods": _methods(retry_methods),
            "retry_non_idempotent": retry_non_idempotent,
            "clock": clock,
            "wall_clock": wall_clock,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        categories = ",".join(sorted(self.retry_categories))
        statuses = ",".join(str(s) for s in sorted(self.status_force_list))
        methods = "*" if self.retry_non_idempotent else ",".join(sorted(self.retry_methods))
        return (
            f"RetryPolicy(max_retries={self.max_retries}, retry_categories=[{categories}], "
            f"status_force_list=[{statuses}], methods=[{methods}], "
            f"backoff_strategy={self.backoff_strategy!r}, "
            f"respect_retry_after={self.respect_retry_after})"
        )

    def begin(self, method: str, url: str) -> RetryState:
        """The state of a request's first attempt. `url` must be redacted."""
        return RetryState(method=method.upper(), url=url, started_at=self.clock())

    def allows_resend(self, method: str) -> bool:
        """Whether a request that may have reached the server can be re-sent."""
        return self.retry_non_idempotent or method.upper() in self.retry_methods

    def decide(
        self,
        state: RetryState,
        failure: BaseException | int,
        *,
        body_replayable: bool,
        sent: bool = True,
        retry_after: str | bytes | None = None,
    ) -> RetryDecision:
        """Judge the attempt `state` describes, which ended with `failure`.

        `failure` is the exception raised or the response status received.
        `sent` is False when the client knows the request never left (it is
        also inferred from the exception, see `was_never_sent`);
        `body_replayable` whether the body can be sent again in full;
        `retry_after` the response's `Retry-After` header, if any.
        """
        if not isinstance(failure, BaseException):
            if isinstance(failure, bool) or not isinstance(failure, int):
                raise TypeError(f"failure must be an exception or a status code, not {failure!r}")
            return self._decide_status(state, failure, body_replayable, retry_after)
        category = classify(failure)
        if category not in self.retry_categories:
            return self._final(state, failure, category, RetryReason.CATEGORY_NOT_RETRYABLE)
        possibly_sent = sent and not was_never_sent(failure)
        blocked = self._blocked(state, possibly_sent=possibly_sent, replayable=body_replayable)
        if blocked is not None:
            return self._final(state, failure, category, blocked)
        delay = self.backoff_strategy.delay(state.attempt, state.previous_delay)
        return self._again(state, failure, category, RetryReason.RETRYABLE_ERROR, delay)

    def _decide_status(
        self,
        state: RetryState,
        status: int,
        body_replayable: bool,
        retry_after: str | bytes | None,
    ) -> RetryDecision:
        if status not in self.status_force_list:
            category = status_category(status)
            record = self._record(state, "success", RetryReason.STATUS_ACCEPTED, category, status)
            return RetryDecision(
                retry=False,
                reason=RetryReason.STATUS_ACCEPTED,
                delay=0.0,
                category=category,
                record=record,
                history=(*state.history, record),
                next_state=None,
            )
        # Built policies list only 400-599; should a subclass list more (a
        # crawler retrying LinkedIn's 999), file it as HTTPStatusError would.
        category = status_category(status) or ErrorCategory.CLIENT
        blocked = self._blocked(state, possibly_sent=True, replayable=body_replayable)
        if blocked is not None:
            return self._final(state, status, category, blocked)
        delay = self._status_delay(state, retry_after)
        return self._again(state, status, category, RetryReason.RETRYABLE_STATUS, delay)

    def _blocked(
        self, state: RetryState, *, possibly_sent: bool, replayable: bool
    ) -> RetryReason | None:
        if possibly_sent and not self.allows_resend(state.method):
            return RetryReason.METHOD_NOT_RETRYABLE
        if not replayable:
            return RetryReason.BODY_NOT_REPLAYABLE
        if state.retries_done >= self.max_retries:
            return RetryReason.RETRIES_EXHAUSTED
        return None

    def _status_delay(self, state: RetryState, retry_after: str | bytes | None) -> float:
        if self.respect_retry_after and retry_after is not None:
            seconds = parse_retry_after(retry_after, now=self.wall_clock)
            if seconds is not None:
                return min(seconds, self.backoff_strategy.max_backoff)
        return self.backoff_strategy.delay(state.attempt, state.previous_delay)

    def _record(
        self,
        state: RetryState,
        outcome: Outcome,
        reason: RetryReason,
        category: ErrorCategory | None,
        failure: BaseException | int,
        delay: float | None = None,
    ) -> AttemptRecord:
        exception: BaseException | None = None
        status: int | None = None
        if isinstance(failure, BaseException):
            exception = failure
        else:
            status = failure
        return AttemptRecord(
            attempt=state.attempt,
            method=state.method,
            url=state.url,
            outcome=outcome,
            reason=reason,
            category=category,
            exception=exception,
            status_code=status,
            delay=delay,
            elapsed=max(0.0, self.clock() - state.started_at),
        )

    def _final(
        self,
        state: RetryState,
        failure: BaseException | int,
        category: ErrorCategory,
        reason: RetryReason,
    ) -> RetryDecision:
        record = self._record(state, "fail", reason, category, failure)
        return RetryDecision(
            retry=False,
            reason=reason,
            delay=0.0,
            category=category,
            record=record,
            history=(*state.history, record),
            next_state=None,
        )

    def _again(
        self,
        state: RetryState,
        failure: BaseException | int,
        category: ErrorCategory,
        reason: RetryReason,
        delay: float,
    ) -> RetryDecision:
        delay = max(0.0, delay)
        record = self._record(state, "retry", reason, category, failure, delay)
        history = (*state.history, record)
        next_state = replace(
            state, attempt=state.attempt + 1, previous_delay=delay, history=history
        )
        return RetryDecision(
            retry=True,
            reason=reason,
            delay=delay,
            category=category,
            record=record,
            history=history,
            next_state=next_state,
        )


__all__ = [
    "DEFAULT_RETRY_CATEGORIES",
    "DEFAULT_STATUS_FORCE_LIST",
    "IDEMPOTENT_METHODS",
    "AttemptRecord",
    "ErrorCategory",
    "Outcome",
    "RetryDecision",
    "RetryError",
    "RetryPolicy",
    "RetryReason",
    "RetryState",
    "parse_retry_after",
]
