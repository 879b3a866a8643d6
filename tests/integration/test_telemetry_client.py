"""Telemetry through the Client: one `record_attempt` per network attempt."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

import hyperhttp
from hyperhttp.errors.circuit_breaker import DomainCircuitBreakerManager
from hyperhttp.errors.classify import ErrorCategory
from hyperhttp.errors.retry import AttemptRecord, Outcome, RetryPolicy, RetryReason
from hyperhttp.errors.telemetry import ErrorTelemetry
from hyperhttp.utils.backoff import ExponentialBackoff
from tests.support.faults import (
    OK,
    FaultServer,
    RecordingTelemetry,
    Reset,
    Respond,
    flapping,
    quick_policy,
    refusing_port,
)

TELEMETRY_LOGGER = "hyperhttp.errors.telemetry"


def client(**kwargs: object) -> hyperhttp.Client:
    return hyperhttp.Client(trust_env=False, **kwargs)  # type: ignore[arg-type]


def counting_clock() -> itertools.count[float]:
    """A monotonic clock that reads 0, 1, 2...: one tick per reading."""
    return itertools.count(0.0, 1.0)


async def test_spec_example_subclass(loop_name: str) -> None:
    seen: list[str] = []

    class MyTelemetry(ErrorTelemetry):
        def record_attempt(self, retry_state, outcome):  # type: ignore[no-untyped-def]
            # outcome is "success" | "retry" | "fail"
            seen.append(outcome)

    with FaultServer([OK]) as server:
        async with client(telemetry=MyTelemetry()) as c:
            await c.get(server.url + "/")
    assert seen == ["success"]


async def test_every_attempt_is_reported_with_its_fields(loop_name: str) -> None:
    telemetry = RecordingTelemetry()
    ticks = counting_clock()
    policy = RetryPolicy(
        max_retries=3,
        backoff_strategy=ExponentialBackoff(base=0.001, factor=2.0, jitter=False),
        clock=ticks.__next__,
    )
    with FaultServer(flapping(2)) as server:
        url = f"http://alice:s3cret@127.0.0.1:{server.port}/items?page=2"
        async with client(retry=policy, telemetry=telemetry) as c:
            response = await c.get(url)
        assert response.status_code == 200
        # The credentials went out as Basic auth, and never into telemetry.
        assert server.requests[0].headers["authorization"].startswith("Basic ")
    assert telemetry.outcomes == ["retry", "retry", "success"]
    first, second, last = telemetry.records
    assert [r.attempt for r in telemetry.records] == [1, 2, 3]
    for record in telemetry.records:
        assert record.method == "GET"
        assert record.url == f"http://127.0.0.1:{server.port}/items?page=2"
        assert "alice" not in record.url and "s3cret" not in record.url
        assert record.exception is None
    assert (first.status_code, first.category, first.delay) == (503, ErrorCategory.TRANSIENT, 0.001)
    assert (second.status_code, second.delay) == (503, 0.002)
    assert first.reason is RetryReason.RETRYABLE_STATUS
    assert (last.status_code, last.category, last.delay) == (200, None, None)
    # The clock is read once when the request begins and once per attempt.
    assert [r.elapsed for r in telemetry.records] == [1.0, 2.0, 3.0]


async def test_exception_attempts_are_reported(loop_name: str) -> None:
    telemetry = RecordingTelemetry()
    with refusing_port() as port:
        async with client(retry=quick_policy(1), telemetry=telemetry) as c:
            with pytest.raises(hyperhttp.RetryError) as caught:
                await c.post(f"http://127.0.0.1:{port}/submit", content=b"x")
    assert telemetry.outcomes == ["retry", "fail"]
    retry, fail = telemetry.records
    assert isinstance(retry.exception, hyperhttp.ConnectError)
    assert retry.category is ErrorCategory.CONNECTION
    assert retry.status_code is None
    assert retry.delay == pytest.approx(0.001)
    assert (fail.attempt, fail.method, fail.delay) == (2, "POST", None)
    assert fail.reason is RetryReason.RETRIES_EXHAUSTED
    assert fail.exception is caught.value.original_exception
    assert retry.elapsed <= fail.elapsed


async def test_telemetry_without_a_retry_policy(loop_name: str) -> None:
    telemetry = RecordingTelemetry()
    with FaultServer([Respond(404), Reset()]) as server:
        async with client(telemetry=telemetry) as c:
            assert (await c.get(server.url + "/")).status_code == 404
            with pytest.raises(hyperhttp.ReadError):
                await c.get(server.url + "/")
    assert telemetry.outcomes == ["success", "fail"]
    accepted, failed = telemetry.records
    assert (accepted.status_code, accepted.category) == (404, ErrorCategory.CLIENT)
    assert isinstance(failed.exception, hyperhttp.ReadError)
    assert failed.category is ErrorCategory.TRANSIENT


async def test_exhausted_status_retries_end_with_fail(loop_name: str) -> None:
    telemetry = RecordingTelemetry()
    with FaultServer([Respond(429)]) as server:
        async with client(retry=quick_policy(2), telemetry=telemetry) as c:
            assert (await c.get(server.url + "/")).status_code == 429
    assert telemetry.outcomes == ["retry", "retry", "fail"]
    assert telemetry.records[-1].status_code == 429
    assert telemetry.records[-1].category is ErrorCategory.RATE_LIMIT


@pytest.mark.parametrize("streamed", [False, True], ids=["get", "stream"])
async def test_a_nonstandard_status_is_reported_as_accepted(
    loop_name: str, streamed: bool
) -> None:
    """LinkedIn's 999 passes the HTTP/1.1 parser; the policy used to raise
    ValueError classifying it, failing the request that had an answer."""
    telemetry = RecordingTelemetry()
    with FaultServer([Respond(999, body=b"denied")]) as server:
        async with client(retry=quick_policy(3), telemetry=telemetry) as c:
            if streamed:
                async with c.stream("GET", server.url + "/") as response:
                    assert await response.aread() == b"denied"
            else:
                response = await c.get(server.url + "/")
                assert response.content == b"denied"
            assert response.status_code == 999
            assert all(s["in_use"] == 0 for s in c.get_pool_stats().values())
        assert server.attempts == 1
    assert telemetry.outcomes == ["success"]
    [record] = telemetry.records
    assert (record.status_code, record.category) == (999, None)
    assert record.reason is RetryReason.STATUS_ACCEPTED


class HookBoom(Exception):
    pass


@pytest.mark.parametrize("where", ["request", "response"])
@pytest.mark.parametrize("error_type", [hyperhttp.ConnectError, HookBoom])
async def test_a_failing_hook_is_reported_as_hook_failed(
    loop_name: str, where: str, error_type: type[Exception]
) -> None:
    """The reason used to be made up by the policy: `body_not_replayable`
    for a hook's ConnectError, `category_not_retryable` for its own."""
    error = error_type("the hook's own failure")

    def hook(subject: object) -> None:
        raise error

    telemetry = RecordingTelemetry()
    with FaultServer([OK]) as server:
        async with client(
            retry=quick_policy(3), telemetry=telemetry, event_hooks={where: [hook]}
        ) as c:
            with pytest.raises(error_type) as caught:
                await c.get(server.url + "/")
        assert caught.value is error
        assert server.attempts == (0 if where == "request" else 1)
    assert telemetry.outcomes == ["fail"]
    [record] = telemetry.records
    assert record.reason is RetryReason.HOOK_FAILED
    assert record.exception is error
    assert record.delay is None


async def test_async_telemetry_is_awaited_before_the_next_attempt(loop_name: str) -> None:
    events: list[str] = []

    class AsyncTelemetry(ErrorTelemetry):
        async def record_attempt(
            self, retry_state: AttemptRecord, outcome: Outcome
        ) -> None:
            await asyncio.sleep(0.01)
            events.append(f"telemetry {retry_state.attempt} {outcome}")

    def on_request(request: hyperhttp.Request) -> None:
        events.append("request")

    with FaultServer(flapping(1)) as server:
        async with client(
            retry=quick_policy(2),
            telemetry=AsyncTelemetry(),
            event_hooks={"request": [on_request]},
        ) as c:
            assert (await c.get(server.url + "/")).status_code == 200
    assert events == ["request", "telemetry 1 retry", "request", "telemetry 2 success"]


class Broken(ErrorTelemetry):
    def record_attempt(self, retry_state: AttemptRecord, outcome: Outcome) -> None:
        raise RuntimeError("metrics exporter is down")


class BrokenAsync(ErrorTelemetry):
    async def record_attempt(
        self, retry_state: AttemptRecord, outcome: Outcome
    ) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("metrics exporter is down")


@pytest.mark.parametrize("telemetry", [Broken(), BrokenAsync()], ids=["sync", "async"])
async def test_a_failing_telemetry_is_logged_and_never_breaks_the_request(
    loop_name: str, telemetry: ErrorTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=TELEMETRY_LOGGER)
    with FaultServer(flapping(1)) as server:
        async with client(retry=quick_policy(2), telemetry=telemetry) as c:
            # Success path: the retry still happens and the answer comes back.
            assert (await c.get(server.url + "/")).status_code == 200
            assert server.attempts == 2
    with refusing_port() as port:
        async with client(telemetry=telemetry) as c:
            # Failure path: the request's own exception surfaces, not the hook's.
            with pytest.raises(hyperhttp.ConnectError):
                await c.get(f"http://127.0.0.1:{port}/")
    records = [r for r in caplog.records if r.name == TELEMETRY_LOGGER]
    assert len(records) == 3
    assert all(r.levelno == logging.WARNING for r in records)
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in records)


async def test_a_request_stopped_by_the_breaker_mid_retries_ends_with_fail(
    loop_name: str,
) -> None:
    # Attempt 2 reports "retry" (another attempt follows); when the breaker
    # then refuses that attempt, telemetry must still learn how the request
    # ended, or a consumer counting final outcomes loses it.
    telemetry = RecordingTelemetry()
    cb = DomainCircuitBreakerManager(failure_threshold=2, recovery_timeout=30.0)
    with FaultServer([Respond(503)]) as server:
        async with client(
            retry=quick_policy(5), circuit_breaker_manager=cb, telemetry=telemetry
        ) as c:
            with pytest.raises(hyperhttp.CircuitBreakerOpen):
                await c.get(server.url + "/")
        assert server.attempts == 2
    assert telemetry.outcomes == ["retry", "retry", "fail"]
    last = telemetry.records[-1]
    assert isinstance(last.exception, hyperhttp.CircuitBreakerOpen)
    assert last.category is ErrorCategory.CIRCUIT_OPEN


async def test_cancelled_in_slow_telemetry_a_streamed_response_gives_its_connection_back(
    loop_name: str,
) -> None:
    """A stream's response exists before telemetry hears of it; cancelled
    while an async `record_attempt` waits, nobody holds that response, so
    the client must close it rather than keep the connection."""
    entered = asyncio.Event()

    class Slow(ErrorTelemetry):
        async def record_attempt(self, retry_state: AttemptRecord, outcome: Outcome) -> None:
            entered.set()
            await asyncio.sleep(30)

    with FaultServer([Respond(200)]) as server:
        timeout = hyperhttp.Timeout(5.0, pool=1.0)
        async with client(telemetry=Slow(), max_connections=1, timeout=timeout) as c:

            async def streamed() -> None:
                async with c.stream("GET", server.url + "/"):
                    pytest.fail("cancelled in telemetry: no response is given out")

            task = asyncio.ensure_future(streamed())
            await asyncio.wait_for(entered.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            stats = c.get_pool_stats()
            assert all(entry.get("in_use", 0) == 0 for entry in stats.values()), stats
