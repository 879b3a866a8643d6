"""Resilience policies: error classification, retries, circuit breakers, telemetry.

The documented import paths are the submodules
(`hyperhttp.errors.retry.RetryPolicy`,
`hyperhttp.errors.circuit_breaker.DomainCircuitBreakerManager`,
`hyperhttp.errors.telemetry.ErrorTelemetry`); the names most often needed
are re-exported here too. Everything in this package is pure: no I/O, no
event loop, time and randomness injected.
"""

from __future__ import annotations

from .circuit_breaker import BreakerPermit, BreakerState, DomainCircuitBreakerManager
from .classify import ErrorCategory, classify, was_never_sent
from .retry import AttemptRecord, RetryDecision, RetryError, RetryPolicy, RetryState
from .telemetry import ErrorTelemetry

__all__ = [
    "AttemptRecord",
    "BreakerPermit",
    "BreakerState",
    "DomainCircuitBreakerManager",
    "ErrorCategory",
    "ErrorTelemetry",
    "RetryDecision",
    "RetryError",
    "RetryPolicy",
    "RetryState",
    "classify",
    "was_never_sent",
]
