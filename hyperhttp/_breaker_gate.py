"""The circuit-breaker gate of one attempt, and joining a fleet.

With a coordinator the fleet's breaker state decides and outcomes are
reported to it; without one, or while it is unreachable, the manager's own
breaker does. Kept apart from the Client: the breaker module is pure and
synchronous, the fleet worker is about the coordinator link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._exceptions import CircuitBreakerOpen
from .errors.circuit_breaker import DomainCircuitBreakerManager, Verdict, verdict_for
from .errors.classify import ErrorCategory

__all__ = ["NOT_SENT", "breaker_gate", "join_fleet"]

# The outcome a breaker gets for an attempt a request hook stopped before it
# went out: not an exception or status, so neither success nor failure.
NOT_SENT = object()


class _Gate:
    """Settles one attempt's permit with the attempt's outcome, exactly once.

    A second call does nothing. An outcome whose verdict cannot be worked
    out settles the permit as neutral before the error goes on, so a
    half-open probe is never stranded (a stranded probe refuses every later
    request to its host for ever).
    """

    __slots__ = ("_counted", "_report", "settled")

    def __init__(
        self, report: Callable[[Verdict], None], counted: frozenset[ErrorCategory]
    ) -> None:
        self._report = report
        self._counted = counted
        self.settled = False

    def __call__(self, outcome: Any) -> None:
        if self.settled:
            return
        self.settled = True
        try:
            verdict = verdict_for(outcome, self._counted)
        except BaseException:
            self._report(Verdict.NEUTRAL)
            raise
        self._report(verdict)

    def __repr__(self) -> str:
        return f"<_Gate settled={self.settled}>"


async def breaker_gate(
    fleet: Any, breaker: DomainCircuitBreakerManager, key: str
) -> Callable[[Any], None]:
    """Admit one attempt to `key` or raise CircuitBreakerOpen; return the
    function that settles it with the attempt's outcome.

    With a coordinator the fleet's breaker state decides (read from
    shared memory; a half-open probe is one lease fleet-wide) and
    outcomes are reported to it; without one, or while it is
    unreachable, the local breaker decides."""
    fleet_state = fleet.breaker_state(key) if fleet is not None else None
    if fleet_state is None and fleet is not None and await fleet.ensure():
        # The worker joins the fleet lazily: on its first request the
        # shared state is unread until it connects.
        fleet_state = fleet.breaker_state(key)
    counted = breaker.config.counted_categories
    if fleet_state is None:
        permit = breaker.acquire(key)
        return _Gate(lambda verdict: breaker.settle(permit, verdict), counted)
    state, remaining = fleet_state
    if state == "open":
        raise CircuitBreakerOpen(key, remaining)
    probe = False
    if state == "half_open":
        probe = await fleet.breaker_acquire_probe(key)
        if not probe:
            raise CircuitBreakerOpen(key, 0.0)

    def report(verdict: Verdict) -> None:
        failed = None if verdict is Verdict.NEUTRAL else verdict is Verdict.FAILURE
        fleet.record_outcome(key, failed, probe)

    return _Gate(report, counted)


def join_fleet(
    coordinator: Any,
    required: bool,
    local_caps: tuple[int | None, int | None],
    breakers: DomainCircuitBreakerManager | None,
) -> Any:
    """The fleet backend for `coordinator=` (None without one). The
    breaker settings go to the fleet so every worker trips at the same
    counts."""
    if coordinator is None or coordinator is False:
        if required:
            raise ValueError("coordinator_required=True needs coordinator=")
        return None
    from .shared._connect import connect_backend

    fleet = connect_backend(coordinator, required=required, local_caps=local_caps)
    if breakers is not None:
        cfg = breakers.config
        fleet.configure_breakers(
            failure_threshold=cfg.failure_threshold,
            recovery_timeout=cfg.recovery_timeout,
            success_threshold=cfg.success_threshold,
        )
    return fleet
