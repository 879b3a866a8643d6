"""The circuit breaker through the Client, against fault-injecting servers.

Recovery is driven by an injected clock (`FakeClock`), except one test that
uses a real 0.2 s recovery timeout.
"""

from __future__ import annotations

import asyncio

import pytest

import hyperhttp
from hyperhttp.errors.circuit_breaker import BreakerState, DomainCircuitBreakerManager
from tests.support.faults import (
    OK,
    FaultServer,
    Hang,
    RecordingTelemetry,
    Reset,
    Respond,
    quick_policy,
    refusing_port,
)

DOWN = Respond(503, body=b"down")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def client(**kwargs: object) -> hyperhttp.Client:
    return hyperhttp.Client(trust_env=False, **kwargs)  # type: ignore[arg-type]


def key(server: FaultServer) -> str:
    return f"{server.host}:{server.port}"


async def open_breaker(c: hyperhttp.Client, url: str, times: int) -> None:
    for _ in range(times):
        response = await c.get(url)
        assert response.status_code == 503


# --- closed -> open ----------------------------------------------------------------


async def test_spec_example_opens_and_fails_fast(loop_name: str) -> None:
    cb = DomainCircuitBreakerManager(
        failure_threshold=5,
        recovery_timeout=30.0,
        success_threshold=2,
    )
    with FaultServer([DOWN]) as server:
        async with client(circuit_breaker_manager=cb) as c:
            await open_breaker(c, server.url + "/things", 5)
            assert cb.state(key(server)) is BreakerState.OPEN
            try:
                await c.get(server.url + "/things")
            except hyperhttp.CircuitBreakerOpen as e:
                message = f"{e.host} unhealthy for another {e.remaining:.1f}s"
                error = e
            else:
                pytest.fail("the open breaker let a request through")
        assert server.attempts == 5
    # The host the user asked for, with the port the breaker tracks.
    assert error.host == f"127.0.0.1:{server.port}"
    assert message.startswith(f"127.0.0.1:{server.port} unhealthy for another ")
    assert 29.0 < error.remaining <= 30.0
    assert isinstance(error, hyperhttp.HyperHTTPError)


async def test_open_breaker_takes_no_connection_or_pool_slot(loop_name: str) -> None:
    cb = DomainCircuitBreakerManager(failure_threshold=2, recovery_timeout=30.0)
    fired: list[str] = []
    with FaultServer([DOWN]) as server:
        async with client(
            circuit_breaker_manager=cb, event_hooks={"request": [lambda r: fired.append("req")]}
        ) as c:
            await open_breaker(c, server.url + "/", 2)
            stats = c.get_pool_stats()
            accepted, attempts, hooks = server.accepted, server.attempts, len(fired)
            for _ in range(3):
                with pytest.raises(hyperhttp.CircuitBreakerOpen):
                    await c.get(server.url + "/")
            # Refused before the pool: nothing new on the wire or in the pool,
            # and no request hook ran for an attempt that never happened.
            await asyncio.sleep(0.05)
            assert server.accepted == accepted
            assert server.attempts == attempts
            assert c.get_pool_stats() == stats
            assert len(fired) == hooks


async def test_connection_refusals_open_the_breaker(loop_name: str) -> None:
    cb = DomainCircuitBreakerManager(failure_threshold=3, recovery_timeout=30.0)
    with refusing_port() as port:
        async with client(circuit_breaker_manager=cb) as c:
            for _ in range(3):
                with pytest.raises(hyperhttp.ConnectError):
                    await c.get(f"http://127.0.0.1:{port}/")
            with pytest.raises(hyperhttp.CircuitBreakerOpen) as caught:
                await c.get(f"http://127.0.0.1:{port}/")
    assert caught.value.host == f"127.0.0.1:{port}"


async def test_timeouts_open_the_breaker(loop_name: str) -> None:
    cb = DomainCircuitBreakerManager(failure_threshold=2, recovery_timeout=30.0)
    with FaultServer([Hang()]) as server:
        async with client(
            circuit_breaker_manager=cb, timeout=hyperhttp.Timeout(5.0, read=0.1)
        ) as c:
            for _ in range(2):
                with pytest.raises(hyperhttp.ReadTimeout):
                    await c.get(server.url + "/")
            with pytest.raises(hyperhttp.CircuitBreakerOpen):
                await c.get(server.url + "/")
        assert server.attempts == 2


async def test_resets_mid_body_open_the_breaker(loop_name: str) -> None:
    # The head arrives, then the connection is cut: the host is failing,
    # even though a status line was seen.
    cb = DomainCircuitBreakerManager(failure_threshold=2, recovery_timeout=30.0)
    cut = Reset(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
    with FaultServer([cut]) as server:
        async with client(circuit_breaker_manager=cb) as c:
            for _ in range(2):
                with pytest.raises(hyperhttp.ReadError):
                    await c.get(server.url + "/")
            with pytest.raises(hyperhttp.CircuitBreakerOpen):
                await c.get(server.url + "/")
        assert server.attempts == 2


async def test_only_consecutive_counted_failures_open_it(loop_name: str) -> None:
    cb = DomainCircuitBreakerManager(failure_threshold=3, recovery_timeout=30.0)
    # 429 (RATE_LIMIT) and 404 (CLIENT) are not counted; a 200 resets the count.
    script = [DOWN, DOWN, OK, DOWN, DOWN, Respond(429), Respond(404), Respond(500)]
    with FaultServer(script) as server:
        async with client(circuit_breaker_manager=cb) as c:
            statuses = [(await c.get(server.url + "/")).status_code for _ in range(7)]
            assert statuses == [503, 503, 200, 503, 503, 429, 404]
            assert cb.state(key(server)) is BreakerState.CLOSED
            # The 404 was a success (the host answered): 500 alone does not open it.
            assert (await c.get(server.url + "/")).status_code == 500
            assert cb.state(key(server)) is BreakerState.CLOSED


async def test_custom_counted_categories(loop_name: str) -> None:
    cb = DomainCircuitBreakerManager(
        failure_threshold=2, recovery_timeout=30.0, counted_categories=["RATE_LIMIT"]
    )
    with FaultServer([DOWN, DOWN, Respond(429)]) as server:
        async with client(circuit_breaker_manager=cb) as c:
            for _ in range(4):
                await c.get(server.url + "/")
            assert cb.state(key(server)) is BreakerState.OPEN
        # 503s were not counted; the two 429s (requests 3 and 4) were.
        assert server.attempts == 4


async def test_breakers_are_per_host_and_port(loop_name: str) -> None:
    cb = DomainCircuitBreakerManager(failure_threshold=2, recovery_timeout=30.0)
    with FaultServer([DOWN]) as sick, FaultServer([OK]) as healthy:
        async with client(circuit_breaker_manager=cb) as c:
            await open_breaker(c, sick.url + "/", 2)
            with pytest.raises(hyperhttp.CircuitBreakerOpen):
                await c.get(sick.url + "/")
            # Same host, another port: unaffected.
            assert sick.host == healthy.host and sick.port != healthy.port
            assert (await c.get(healthy.url + "/")).status_code == 200
            # "localhost" is a different host key from "127.0.0.1".
            other_name = f"http://localhost:{sick.port}/"
            assert (await c.get(other_name)).status_code == 503
    assert set(cb.snapshot()) >= {key(sick)}
    assert key(healthy) not in cb.snapshot()


# --- open -> half-open -> closed / open --------------------------------------------


async def test_after_recovery_exactly_one_probe_goes_through(loop_name: str) -> None:
    clock = FakeClock()
    cb = DomainCircuitBreakerManager(
        failure_threshold=2, recovery_timeout=30.0, success_threshold=2, clock=clock
    )
    slow_ok = Respond(200, body=b"ok", delay=0.1)
    with FaultServer([DOWN, DOWN, slow_ok]) as server:
        async with client(circuit_breaker_manager=cb) as c:
            await open_breaker(c, server.url + "/", 2)
            clock.advance(29.0)
            with pytest.raises(hyperhttp.CircuitBreakerOpen) as caught:
                await c.get(server.url + "/")
            assert caught.value.remaining == pytest.approx(1.0)
            clock.advance(1.5)
            results = await asyncio.gather(
                c.get(server.url + "/probe"), c.get(server.url + "/probe"),
                return_exceptions=True,
            )
            responses = [r for r in results if isinstance(r, hyperhttp.Response)]
            refused = [r for r in results if isinstance(r, hyperhttp.CircuitBreakerOpen)]
            assert len(responses) == 1 and len(refused) == 1
            assert refused[0].remaining == 0.0
            assert server.attempts == 3
            # One success of the two needed: still half-open, one probe at a time.
            assert cb.state(key(server)) is BreakerState.HALF_OPEN
            assert (await c.get(server.url + "/")).status_code == 200
            assert cb.state(key(server)) is BreakerState.CLOSED
            # Closed again: concurrent requests all pass.
            closed = await asyncio.gather(*(c.get(server.url + "/") for _ in range(3)))
            assert [r.status_code for r in closed] == [200] * 3
        assert server.attempts == 7


async def test_failed_probe_reopens_the_breaker(loop_name: str) -> None:
    clock = FakeClock()
    cb = DomainCircuitBreakerManager(
        failure_threshold=2, recovery_timeout=10.0, success_threshold=1, clock=clock
    )
    with FaultServer([DOWN, DOWN, DOWN, OK]) as server:
        async with client(circuit_breaker_manager=cb) as c:
            await open_breaker(c, server.url + "/", 2)
            clock.advance(10.0)
            assert (await c.get(server.url + "/")).status_code == 503  # the probe
            with pytest.raises(hyperhttp.CircuitBreakerOpen) as caught:
                await c.get(server.url + "/")
            assert caught.value.remaining == pytest.approx(10.0)
            assert server.attempts == 3
            clock.advance(10.0)
            assert (await c.get(server.url + "/")).status_code == 200
            assert cb.state(key(server)) is BreakerState.CLOSED
        assert server.attempts == 4


async def test_real_short_recovery_timeout(loop_name: str) -> None:
    cb = DomainCircuitBreakerManager(
        failure_threshold=1, recovery_timeout=0.2, success_threshold=1
    )
    with FaultServer([DOWN, OK]) as server:
        async with client(circuit_breaker_manager=cb) as c:
            await open_breaker(c, server.url + "/", 1)
            with pytest.raises(hyperhttp.CircuitBreakerOpen) as caught:
                await c.get(server.url + "/")
            assert 0.0 < caught.value.remaining <= 0.2
            await asyncio.sleep(0.25)
            assert (await c.get(server.url + "/")).status_code == 200
            assert cb.state(key(server)) is BreakerState.CLOSED


# --- with retries ------------------------------------------------------------------


async def test_every_retry_is_counted_and_the_open_breaker_stops_retries(
    loop_name: str,
) -> None:
    cb = DomainCircuitBreakerManager(failure_threshold=3, recovery_timeout=30.0)
    telemetry = RecordingTelemetry()
    with FaultServer([DOWN]) as server:
        async with client(
            retry=quick_policy(5), circuit_breaker_manager=cb, telemetry=telemetry
        ) as c:
            with pytest.raises(hyperhttp.CircuitBreakerOpen) as caught:
                await c.get(server.url + "/")
        # Attempts 1-3 reached the server and opened the breaker; attempt 4
        # was refused locally, and no more retries were made.
        assert server.attempts == 3
    assert caught.value.host == key(server)
    assert telemetry.outcomes[:3] == ["retry", "retry", "retry"]


async def test_retry_through_a_half_open_breaker(loop_name: str) -> None:
    clock = FakeClock()
    cb = DomainCircuitBreakerManager(
        failure_threshold=2, recovery_timeout=5.0, success_threshold=1, clock=clock
    )
    with FaultServer([DOWN, DOWN, OK]) as server:
        async with client(circuit_breaker_manager=cb) as c:
            await open_breaker(c, server.url + "/", 2)
            clock.advance(5.0)
            response = await c.get(server.url + "/", retry=quick_policy(3))
            assert response.status_code == 200
            assert cb.state(key(server)) is BreakerState.CLOSED
        assert server.attempts == 3


async def test_flapping_host_with_retries_keeps_the_breaker_closed(loop_name: str) -> None:
    cb = DomainCircuitBreakerManager(failure_threshold=3, recovery_timeout=30.0)
    with FaultServer([DOWN, DOWN, OK] * 3) as server:
        async with client(retry=quick_policy(3), circuit_breaker_manager=cb) as c:
            for _ in range(3):
                assert (await c.get(server.url + "/")).status_code == 200
            assert cb.state(key(server)) is BreakerState.CLOSED
        assert server.attempts == 9


# --- every permit is settled, once -------------------------------------------------


def pool_in_use(c: hyperhttp.Client) -> int:
    return sum(stats["in_use"] for stats in c.get_pool_stats().values())


def half_open_breaker(clock: FakeClock) -> DomainCircuitBreakerManager:
    return DomainCircuitBreakerManager(
        failure_threshold=1, recovery_timeout=10.0, success_threshold=1, clock=clock
    )


@pytest.mark.parametrize("streamed", [False, True], ids=["get", "stream"])
async def test_a_nonstandard_status_is_a_success_that_settles_the_probe(
    loop_name: str, streamed: bool
) -> None:
    """LinkedIn's 999 (the HTTP/1.1 parser takes any three digits) raised
    ValueError out of the breaker: the probe was stranded, every later
    request got CircuitBreakerOpen, and a streamed response stayed in use."""
    clock = FakeClock()
    cb = half_open_breaker(clock)
    with FaultServer([DOWN, Respond(999, body=b"denied"), OK]) as server:
        async with client(circuit_breaker_manager=cb) as c:
            await open_breaker(c, server.url + "/", 1)
            clock.advance(10.0)
            if streamed:
                async with c.stream("GET", server.url + "/probe") as response:
                    assert response.status_code == 999
                    assert await response.aread() == b"denied"
            else:
                response = await c.get(server.url + "/probe")
                assert (response.status_code, response.content) == (999, b"denied")
            assert pool_in_use(c) == 0
            assert cb.state(key(server)) is BreakerState.CLOSED
            assert (await c.get(server.url + "/")).status_code == 200
        assert server.attempts == 3


class VerdictBug(Exception):
    pass


async def test_a_probe_is_settled_and_its_response_closed_when_the_verdict_fails(
    loop_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong while the outcome is judged, the permit is settled
    (here: released) and the streamed response goes back to the pool."""
    import hyperhttp._breaker_gate as gate_module
    import hyperhttp.errors.circuit_breaker as breaker_module

    def broken(outcome: object, counted: object) -> object:
        raise VerdictBug("cannot judge")

    clock = FakeClock()
    cb = half_open_breaker(clock)
    with FaultServer([DOWN, OK]) as server:
        async with client(circuit_breaker_manager=cb) as c:
            await open_breaker(c, server.url + "/", 1)
            clock.advance(10.0)
            with monkeypatch.context() as patch:
                patch.setattr(gate_module, "verdict_for", broken)
                patch.setattr(breaker_module, "verdict_for", broken)
                with pytest.raises(VerdictBug):
                    async with c.stream("GET", server.url + "/probe"):
                        pytest.fail("a response whose verdict failed was handed out")
            assert pool_in_use(c) == 0
            snapshot = cb.snapshot()[key(server)]
            assert (snapshot.in_flight, snapshot.probe_in_flight) == (0, False)
            # The probe slot is free: the next request is the next probe.
            assert (await c.get(server.url + "/")).status_code == 200
            assert cb.state(key(server)) is BreakerState.CLOSED
        assert server.attempts == 3


async def test_a_probe_is_settled_when_closing_a_rejected_response_fails(
    loop_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A response hook raised and closing the response raised too: the
    probe used to be left in flight, refusing the host for ever."""
    clock = FakeClock()
    cb = half_open_breaker(clock)
    real_aclose = hyperhttp.Response.aclose

    async def failing_aclose(self: hyperhttp.Response) -> None:
        await real_aclose(self)
        raise OSError("close failed")

    def reject(response: hyperhttp.Response) -> None:
        raise VerdictBug("hook says no")

    with FaultServer([DOWN, OK]) as server:
        async with client(circuit_breaker_manager=cb) as c:
            await open_breaker(c, server.url + "/", 1)
            clock.advance(10.0)
            c.event_hooks["response"].append(reject)
            with monkeypatch.context() as patch:
                patch.setattr(hyperhttp.Response, "aclose", failing_aclose)
                with pytest.raises(OSError, match="close failed"):
                    await c.get(server.url + "/probe")
            c.event_hooks["response"].clear()
            assert pool_in_use(c) == 0
            # The host answered (a hook's verdict is the caller's): the probe
            # succeeded and closed the breaker.
            assert cb.state(key(server)) is BreakerState.CLOSED
            assert (await c.get(server.url + "/")).status_code == 200
        assert server.attempts == 3
