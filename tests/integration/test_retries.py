"""Retries through the Client, against fault-injecting loopback servers.

Every delay is tiny (a backoff base of a millisecond, Retry-After capped at
50 ms) or computed from an injected wall clock; the only real waits are
read and pool timeouts of a tenth of a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Generator

import pytest

import hyperhttp
from hyperhttp.errors.retry import RetryPolicy, RetryReason
from hyperhttp.utils.backoff import ExponentialBackoff
from tests.support.faults import (
    OK,
    FaultServer,
    Hang,
    RecordingTelemetry,
    Reset,
    Respond,
    flapping,
    http_date,
    quick_policy,
    refusing_port,
)

# The response head is cut off: the request was read in full, so it reached
# the server, but no response can be parsed.
RESET_MID_HEAD = Reset(b"HTTP/1.1 200 OK\r\nContent-Le")
# The head is complete, the body is cut short.
RESET_MID_BODY = Reset(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
SHORT_READ = hyperhttp.Timeout(5.0, read=0.1)


def client(**kwargs: object) -> hyperhttp.Client:
    return hyperhttp.Client(trust_env=False, **kwargs)  # type: ignore[arg-type]


# --- opting in ---------------------------------------------------------------------


async def test_retries_are_off_without_a_policy(loop_name: str) -> None:
    with FaultServer(flapping(1)) as server:
        async with client() as c:
            response = await c.get(server.url + "/")
        assert response.status_code == 503
        assert server.attempts == 1


async def test_status_in_force_list_is_retried_until_success(loop_name: str) -> None:
    with FaultServer(flapping(2, Respond(503, body=b"busy"))) as server:
        async with client(retry=quick_policy(3)) as c:
            response = await c.get(server.url + "/thing")
        assert response.status_code == 200
        assert response.text == "ok"
        assert server.attempts == 3
        assert [r.target for r in server.requests] == ["/thing"] * 3


async def test_last_response_is_returned_when_status_retries_run_out(loop_name: str) -> None:
    with FaultServer([Respond(503, body=b"still down")]) as server:
        async with client(retry=quick_policy(2)) as c:
            response = await c.get(server.url + "/")
            # No exception: the caller gets the last 503, body readable.
            assert response.status_code == 503
            assert response.text == "still down"
        assert server.attempts == 3


async def test_status_outside_the_force_list_is_final(loop_name: str) -> None:
    # 500 is not in the default force list; 404 never is.
    with FaultServer([Respond(500), Respond(404), OK]) as server:
        async with client(retry=quick_policy(3)) as c:
            assert (await c.get(server.url + "/")).status_code == 500
            assert (await c.get(server.url + "/")).status_code == 404
        assert server.attempts == 2


async def test_custom_force_list(loop_name: str) -> None:
    with FaultServer(flapping(1, Respond(500))) as server:
        async with client(retry=quick_policy(1, status_force_list=[500])) as c:
            assert (await c.get(server.url + "/")).status_code == 200
        assert server.attempts == 2


async def test_per_request_retry_false_and_other_policy(loop_name: str) -> None:
    with FaultServer([Respond(503)]) as server:
        async with client(retry=quick_policy(3)) as c:
            response = await c.get(server.url + "/", retry=False)
            assert response.status_code == 503
            assert server.attempts == 1
            response = await c.get(server.url + "/", retry=quick_policy(1))
            assert response.status_code == 503
            assert server.attempts == 1 + 2
            # The client default still applies to the next call.
            await c.get(server.url + "/")
            assert server.attempts == 3 + 4


async def test_per_request_policy_on_a_client_without_one(loop_name: str) -> None:
    with FaultServer(flapping(1)) as server:
        async with client() as c:
            response = await c.post(server.url + "/", content=b"x", retry=quick_policy(1))
        # A 503 is an answer, but POST is not idempotent: not re-sent.
        assert response.status_code == 503
        assert server.attempts == 1


# --- Retry-After -------------------------------------------------------------------


async def test_retry_after_seconds_is_capped_by_max_backoff(loop_name: str) -> None:
    telemetry = RecordingTelemetry()
    policy = RetryPolicy(
        max_retries=1,
        backoff_strategy=ExponentialBackoff(base=0.001, max_backoff=0.05, jitter=False),
    )
    script = flapping(1, Respond(503, headers={"Retry-After": "1"}))
    with FaultServer(script) as server:
        async with client(retry=policy, telemetry=telemetry) as c:
            started = time.monotonic()
            response = await c.get(server.url + "/")
            took = time.monotonic() - started
        assert response.status_code == 200
        assert telemetry.records[0].delay == pytest.approx(0.05)
        # The client really slept the capped delay, and not the full second.
        assert 0.045 <= took < 0.9


async def test_retry_after_zero_overrides_the_backoff(loop_name: str) -> None:
    telemetry = RecordingTelemetry()
    policy = RetryPolicy(
        max_retries=1,
        backoff_strategy=ExponentialBackoff(base=0.5, max_backoff=1.0, jitter=False),
    )
    with FaultServer(flapping(1, Respond(429, headers={"Retry-After": "0"}))) as server:
        async with client(retry=policy, telemetry=telemetry) as c:
            started = time.monotonic()
            assert (await c.get(server.url + "/")).status_code == 200
            assert time.monotonic() - started < 0.4
        assert telemetry.records[0].delay == 0.0
        assert server.attempts == 2


@pytest.mark.parametrize("status", [503, 429])
async def test_retry_after_http_date(loop_name: str, status: int) -> None:
    now = 1_700_000_000.0
    telemetry = RecordingTelemetry()
    policy = RetryPolicy(
        max_retries=1,
        backoff_strategy=ExponentialBackoff(base=0.5, max_backoff=1.0, jitter=False),
        wall_clock=lambda: now - 0.03,  # the date is 30 ms in the future
    )
    date = http_date(now)
    with FaultServer(flapping(1, Respond(status, headers={"Retry-After": date}))) as server:
        async with client(retry=policy, telemetry=telemetry) as c:
            assert (await c.get(server.url + "/")).status_code == 200
        assert telemetry.records[0].delay == pytest.approx(0.03)
        assert server.attempts == 2


async def test_retry_after_ignored_when_not_respected(loop_name: str) -> None:
    telemetry = RecordingTelemetry()
    policy = quick_policy(1, respect_retry_after=False)
    with FaultServer(flapping(1, Respond(503, headers={"Retry-After": "1"}))) as server:
        async with client(retry=policy, telemetry=telemetry) as c:
            assert (await c.get(server.url + "/")).status_code == 200
    assert telemetry.records[0].delay == pytest.approx(0.001)


# --- which exception surfaces -------------------------------------------------------


async def test_first_failure_surfaces_the_typed_exception(loop_name: str) -> None:
    with refusing_port() as port:
        async with client() as c:
            with pytest.raises(hyperhttp.ConnectError) as caught:
                await c.get(f"http://127.0.0.1:{port}/")
        assert not isinstance(caught.value, hyperhttp.RetryError)
        # A policy that declines to retry surfaces it unwrapped too.
        async with client(retry=quick_policy(0)) as c:
            with pytest.raises(hyperhttp.ConnectError):
                await c.get(f"http://127.0.0.1:{port}/")


async def test_retry_error_after_retries_wraps_the_last_failure(loop_name: str) -> None:
    telemetry = RecordingTelemetry()
    with refusing_port() as port:
        async with client(retry=quick_policy(2), telemetry=telemetry) as c:
            with pytest.raises(hyperhttp.RetryError) as caught:
                await c.get(f"http://127.0.0.1:{port}/x")
    error = caught.value
    assert error.attempts == 3
    assert isinstance(error.original_exception, hyperhttp.ConnectError)
    assert error.__cause__ is error.original_exception
    # The last attempt's exception, not the first one's.
    assert error.original_exception is telemetry.records[-1].exception
    assert len(error.history) == 3
    # Also importable where the spec says.
    from hyperhttp.errors.retry import RetryError

    assert isinstance(error, RetryError)


async def test_read_timeout_first_then_retry_error(loop_name: str) -> None:
    with FaultServer([Hang()]) as server:
        async with client(timeout=SHORT_READ) as c:
            with pytest.raises(hyperhttp.ReadTimeout):
                await c.get(server.url + "/")
        assert server.attempts == 1
        async with client(timeout=SHORT_READ, retry=quick_policy(1)) as c:
            with pytest.raises(hyperhttp.RetryError) as caught:
                await c.get(server.url + "/")
        assert isinstance(caught.value.original_exception, hyperhttp.ReadTimeout)
        assert caught.value.attempts == 2
        assert server.attempts == 1 + 2


async def test_flapping_connection_resets_are_retried_for_get(loop_name: str) -> None:
    with FaultServer([Reset(), RESET_MID_HEAD, OK]) as server:
        async with client(retry=quick_policy(3)) as c:
            response = await c.get(server.url + "/")
        assert response.text == "ok"
        assert server.attempts == 3


async def test_reset_mid_body_is_retried_for_get(loop_name: str) -> None:
    # The head arrived, then the body was cut. With stream=False the client
    # reads the body itself, so the failure belongs to the attempt and an
    # idempotent GET should be sent again.
    with FaultServer([RESET_MID_BODY, OK]) as server:
        async with client(retry=quick_policy(2)) as c:
            response = await c.get(server.url + "/")
        assert response.text == "ok"
        assert server.attempts == 2


# --- safety: what may be sent twice ------------------------------------------------------


async def test_post_that_may_have_arrived_is_not_resent(loop_name: str) -> None:
    telemetry = RecordingTelemetry()
    with FaultServer([RESET_MID_HEAD, OK]) as server:
        async with client(retry=quick_policy(3), telemetry=telemetry) as c:
            with pytest.raises(hyperhttp.ReadError) as caught:
                await c.post(server.url + "/pay", content=b"once")
        assert not isinstance(caught.value, hyperhttp.RetryError)
        assert server.attempts == 1
    assert telemetry.outcomes == ["fail"]
    assert telemetry.records[0].reason is RetryReason.METHOD_NOT_RETRYABLE


async def test_post_timeout_is_not_resent(loop_name: str) -> None:
    with FaultServer([Hang(), OK]) as server:
        async with client(retry=quick_policy(3), timeout=SHORT_READ) as c:
            with pytest.raises(hyperhttp.ReadTimeout):
                await c.post(server.url + "/", content=b"x")
        assert server.attempts == 1


@pytest.mark.parametrize(
    "policy",
    [quick_policy(3, retry_non_idempotent=True), quick_policy(3, retry_methods=["GET", "POST"])],
    ids=["retry_non_idempotent", "retry_methods"],
)
async def test_post_is_resent_when_the_policy_says_so(
    loop_name: str, policy: RetryPolicy
) -> None:
    with FaultServer([RESET_MID_HEAD, OK]) as server:
        async with client(retry=policy) as c:
            response = await c.post(server.url + "/", content=b"payload")
        assert response.text == "ok"
        assert [r.body for r in server.requests] == [b"payload", b"payload"]


async def test_post_that_never_left_is_retried(loop_name: str) -> None:
    with refusing_port() as port:
        async with client(retry=quick_policy(2)) as c:
            with pytest.raises(hyperhttp.RetryError) as caught:
                await c.post(f"http://127.0.0.1:{port}/", content=b"x")
    assert caught.value.attempts == 3
    assert isinstance(caught.value.original_exception, hyperhttp.ConnectError)


async def test_post_that_timed_out_in_the_pool_is_retried(loop_name: str) -> None:
    telemetry = RecordingTelemetry()
    policy = RetryPolicy(
        max_retries=20,
        backoff_strategy=ExponentialBackoff(base=0.02, factor=1.0, jitter=False),
    )
    timeout = hyperhttp.Timeout(5.0, pool=0.05)
    with FaultServer([OK]) as server:
        async with client(
            retry=policy, telemetry=telemetry, max_connections=1, timeout=timeout
        ) as c, c.stream("GET", server.url + "/held") as held:
            # The only connection is busy: the POST waits in the pool, times
            # out there, and is retried until the GET lets the connection go.
            async def release_soon() -> None:
                await asyncio.sleep(0.15)
                await held.aclose()

            releaser = asyncio.create_task(release_soon())
            response = await c.post(server.url + "/post", content=b"body")
            await releaser
        assert response.status_code == 200
        assert [r.method for r in server.requests] == ["GET", "POST"]
    posts = [(r, outcome) for r, outcome in telemetry.calls if r.method == "POST"]
    assert len(posts) >= 2
    assert all(isinstance(r.exception, hyperhttp.PoolTimeout) for r, _ in posts[:-1])
    assert [outcome for _, outcome in posts] == ["retry"] * (len(posts) - 1) + ["success"]


async def _one_use_body() -> AsyncIterator[bytes]:
    yield b"chunk-1;"
    yield b"chunk-2"


async def test_single_use_body_is_not_resent(loop_name: str) -> None:
    telemetry = RecordingTelemetry()
    policy = quick_policy(3, retry_non_idempotent=True)
    with FaultServer([RESET_MID_HEAD, OK]) as server:
        async with client(retry=policy, telemetry=telemetry) as c:
            with pytest.raises(hyperhttp.ReadError):
                await c.post(server.url + "/", content=_one_use_body())
        assert [r.body for r in server.requests] == [b"chunk-1;chunk-2"]
    assert telemetry.records[0].reason is RetryReason.BODY_NOT_REPLAYABLE


async def test_single_use_body_that_never_left_is_retried(loop_name: str) -> None:
    # Refused before a byte went out: the body was never started, which the
    # policy counts as replayable ("a stream not started yet").
    telemetry = RecordingTelemetry()
    with refusing_port() as port:
        async with client(retry=quick_policy(2), telemetry=telemetry) as c:
            with pytest.raises(hyperhttp.RetryError) as caught:
                await c.post(f"http://127.0.0.1:{port}/", content=_one_use_body())
    assert caught.value.attempts == 3
    assert telemetry.outcomes == ["retry", "retry", "fail"]


# --- every attempt is a full attempt ---------------------------------------------------


class CountingAuth(hyperhttp.Auth):
    """Stamps each run of the flow with its number."""

    def __init__(self) -> None:
        self.runs = 0

    def auth_flow(
        self, request: hyperhttp.Request
    ) -> Generator[hyperhttp.Request, hyperhttp.Response, None]:
        self.runs += 1
        request.headers["Authorization"] = f"Token run-{self.runs}"
        yield request


async def test_each_attempt_runs_hooks_and_auth(loop_name: str) -> None:
    seen: list[str] = []

    def on_request(request: hyperhttp.Request) -> None:
        seen.append("request")
        request.headers["X-Attempt"] = str(seen.count("request"))

    async def on_response(response: hyperhttp.Response) -> None:
        seen.append(f"response {response.status_code}")

    auth = CountingAuth()
    with FaultServer(flapping(2)) as server:
        async with client(
            retry=quick_policy(3),
            auth=auth,
            event_hooks={"request": [on_request], "response": [on_response]},
        ) as c:
            assert (await c.get(server.url + "/")).status_code == 200
        assert server.attempts == 3
        assert [r.headers["x-attempt"] for r in server.requests] == ["1", "2", "3"]
        assert [r.headers["authorization"] for r in server.requests] == [
            "Token run-1", "Token run-2", "Token run-3",
        ]
    assert auth.runs == 3
    assert seen == ["request", "response 503"] * 2 + ["request", "response 200"]


async def test_retried_connections_are_not_leaked(loop_name: str) -> None:
    with FaultServer([Reset(), Respond(503, body=b"busy"), OK]) as server:
        async with client(retry=quick_policy(3)) as c:
            assert (await c.get(server.url + "/")).status_code == 200
            stats = c.get_pool_stats()
        assert all(entry.get("in_use", 0) == 0 for entry in stats.values())
        assert server.attempts == 3
