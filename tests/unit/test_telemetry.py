from __future__ import annotations

import asyncio
import logging

import pytest

from hyperhttp._exceptions import ReadTimeout
from hyperhttp.errors.retry import AttemptRecord, Outcome, RetryPolicy
from hyperhttp.errors.telemetry import ErrorTelemetry, emit
from hyperhttp.utils.backoff import ExponentialBackoff


def record(outcome: Outcome = "retry") -> AttemptRecord:
    pol = RetryPolicy(backoff_strategy=ExponentialBackoff(jitter=False), clock=lambda: 5.0)
    state = pol.begin("GET", "https://example.com/x")
    decision = pol.decide(state, ReadTimeout("slow"), body_replayable=True)
    assert decision.outcome == outcome
    return decision.record


class SyncTelemetry(ErrorTelemetry):
    def __init__(self) -> None:
        self.seen: list[tuple[AttemptRecord, str]] = []

    def record_attempt(self, retry_state: AttemptRecord, outcome: Outcome) -> None:
        self.seen.append((retry_state, outcome))


class AsyncTelemetry(ErrorTelemetry):
    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []

    async def record_attempt(self, retry_state: AttemptRecord, outcome: Outcome) -> None:
        await asyncio.sleep(0)
        self.seen.append((retry_state.attempt, outcome))


class RaisingTelemetry(ErrorTelemetry):
    def record_attempt(self, retry_state: AttemptRecord, outcome: Outcome) -> None:
        raise RuntimeError("exporter down")


class AsyncRaisingTelemetry(ErrorTelemetry):
    async def record_attempt(self, retry_state: AttemptRecord, outcome: Outcome) -> None:
        raise RuntimeError("async exporter down")


def test_base_class_does_nothing() -> None:
    assert ErrorTelemetry().record_attempt(record(), "retry") is None


async def test_emit_calls_a_sync_hook(loop_name: str) -> None:
    telemetry = SyncTelemetry()
    rec = record()
    await emit(telemetry, rec, "retry")
    assert telemetry.seen == [(rec, "retry")]
    assert rec.category == "TIMEOUT" and rec.url == "https://example.com/x"


async def test_emit_awaits_an_async_hook(loop_name: str) -> None:
    telemetry = AsyncTelemetry()
    await emit(telemetry, record(), "retry")
    assert telemetry.seen == [(1, "retry")]


async def test_emit_without_telemetry_is_a_no_op(loop_name: str) -> None:
    await emit(None, record(), "fail")
    await emit(ErrorTelemetry(), record(), "success")


@pytest.mark.parametrize("cls", [RaisingTelemetry, AsyncRaisingTelemetry])
async def test_emit_logs_and_swallows_hook_errors(
    loop_name: str, cls: type[ErrorTelemetry], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hyperhttp.errors.telemetry"):
        await emit(cls(), record(), "retry")
    [entry] = caplog.records
    assert entry.levelno == logging.WARNING
    assert cls.__name__ in entry.getMessage()
    assert "https://example.com/x" in entry.getMessage()
    assert entry.exc_info is not None and "exporter down" in str(entry.exc_info[1])


async def test_emit_lets_cancellation_through(loop_name: str) -> None:
    class Cancelling(ErrorTelemetry):
        async def record_attempt(self, retry_state: AttemptRecord, outcome: Outcome) -> None:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await emit(Cancelling(), record(), "retry")
