from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

import hyperhttp._exceptions as exc_module
from hyperhttp._exceptions import (
    ConnectError,
    ConnectTimeout,
    DNSError,
    LocalProtocolError,
    PoolTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    StreamReset,
    TLSError,
)
from hyperhttp.errors.classify import REFUSED_STREAM, ErrorCategory
from hyperhttp.errors.retry import (
    DEFAULT_RETRY_CATEGORIES,
    DEFAULT_STATUS_FORCE_LIST,
    IDEMPOTENT_METHODS,
    RetryDecision,
    RetryError,
    RetryPolicy,
    RetryReason,
    RetryState,
    parse_retry_after,
)
from hyperhttp.utils.backoff import DecorrelatedJitterBackoff, ExponentialBackoff

URL = "https://api.example.com/things"
NOW = 1_700_000_000.0  # wall clock used for HTTP-date Retry-After


class FakeClock:
    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def policy(**kwargs: object) -> RetryPolicy:
    defaults: dict[str, object] = {
        "backoff_strategy": ExponentialBackoff(base=0.1, factor=2.0, jitter=False),
        "wall_clock": lambda: NOW,
    }
    defaults.update(kwargs)
    return RetryPolicy(**defaults)  # type: ignore[arg-type]


def run(
    pol: RetryPolicy,
    failures: list[BaseException | int],
    method: str = "GET",
    **kwargs: object,
) -> list[RetryDecision]:
    """Feed attempt outcomes to the policy the way the client loop does."""
    state = pol.begin(method, URL)
    decisions = []
    for failure in failures:
        opts: dict[str, object] = {"body_replayable": True}
        opts.update(kwargs)
        decision = pol.decide(state, failure, **opts)  # type: ignore[arg-type]
        decisions.append(decision)
        if not decision.retry:
            break
        assert decision.next_state is not None
        state = decision.next_state
    return decisions


# -- parse_retry_after --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 5 ", 5.0),
        ("1.5", 1.5),
        (b"7", 7.0),
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("1e3", None),
        ("inf", None),
        ("nan", None),
        (b"\xff", None),
        ("Mon, 32 Nov 1994 08:49:37 GMT", None),
        # Valid delay-seconds, beyond a float.
        pytest.param("9" * 400, float("inf"), id="400-digits"),
    ],
)
def test_parse_retry_after_values(value: str | bytes | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_http_date_forms() -> None:
    future = datetime.fromtimestamp(NOW + 90, tz=UTC)
    imf = format_datetime(future, usegmt=True)
    assert parse_retry_after(imf, NOW) == pytest.approx(90.0)
    rfc850 = future.strftime("%A, %d-%b-%y %H:%M:%S GMT")
    assert parse_retry_after(rfc850, NOW) == pytest.approx(90.0)
    asctime = future.strftime("%a %b %d %H:%M:%S %Y")
    assert parse_retry_after(asctime, NOW) == pytest.approx(90.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0),
        ("sun, 06 nov 1994 08:49:37 gmt", 784111777.0),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0),
        ("Sun Nov  6 08:49:37 1994", 784111777.0),
        ("Sun Nov 16 08:49:37 1994", 784975777.0),
    ],
)
def test_parse_retry_after_absolute_dates(value: str, expected: float) -> None:
    # `now` at the epoch makes the result the date's own timestamp.
    assert parse_retry_after(value, 0.0) == expected


def test_rfc850_two_digit_year() -> None:
    # NOW is in 2023: "28" is 2028, but "80" would be more than 50 years
    # ahead, so it is 1980 (in the past: retry at once).
    assert parse_retry_after("Saturday, 01-Jan-28 00:00:00 GMT", NOW) == 1830297600.0 - NOW
    assert parse_retry_after("Tuesday, 01-Jan-80 00:00:00 GMT", NOW) == 0.0
    assert parse_retry_after("Tuesday, 01-Jan-80 00:00:00 GMT", 0.0) == 315532800.0


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Foo 1994 08:49:37 GMT",  # no such month
        "Sun, 31 Feb 1994 08:49:37 GMT",  # no such day
        "Sun, 06 Nov 1994 25:49:37 GMT",  # no such hour
        "Sun, 06 Nov 1994 08:49:37 +0100",  # not an HTTP-date
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",  # non-ASCII digits
        "1994-11-06T08:49:37Z",
    ],
)
def test_parse_retry_after_rejects_malformed_dates(value: str) -> None:
    assert parse_retry_after(value, 0.0) is None


def test_parse_retry_after_date_in_the_past_means_now() -> None:
    past = format_datetime(datetime.fromtimestamp(NOW - 3600, tz=UTC), usegmt=True)
    assert parse_retry_after(past, NOW) == 0.0


def test_parse_retry_after_reads_the_clock_only_for_dates() -> None:
    calls = []

    def clock() -> float:
        calls.append(1)
        return NOW

    assert parse_retry_after("3", clock) == 3.0
    assert calls == []
    future = format_datetime(datetime.fromtimestamp(NOW + 10, tz=UTC), usegmt=True)
    assert parse_retry_after(future, clock) == pytest.approx(10.0)
    assert calls == [1]


# -- construction and immutability --------------------------------------------


def test_defaults_are_documented_values() -> None:
    pol = RetryPolicy()
    assert pol.max_retries == 3
    assert pol.retry_categories == DEFAULT_RETRY_CATEGORIES
    assert {
        ErrorCategory.CONNECTION,
        ErrorCategory.DNS,
        ErrorCategory.TIMEOUT,
        ErrorCategory.TRANSIENT,
    } == DEFAULT_RETRY_CATEGORIES
    assert pol.status_force_list == DEFAULT_STATUS_FORCE_LIST == {429, 502, 503, 504}
    assert pol.retry_methods == IDEMPOTENT_METHODS
    assert {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"} == IDEMPOTENT_METHODS
    assert pol.respect_retry_after is True
    assert pol.retry_non_idempotent is False
    assert isinstance(pol.backoff_strategy, ExponentialBackoff)


def test_documented_example_builds() -> None:
    pol = RetryPolicy(
        max_retries=5,
        retry_categories=["TRANSIENT", "TIMEOUT", "SERVER"],
        status_force_list=[429, 500, 502, 503, 504],
        backoff_strategy=ExponentialBackoff(base=0.1, factor=2.0, max_backoff=30.0, jitter=True),
        respect_retry_after=True,
    )
    assert pol.retry_categories == {
        ErrorCategory.TRANSIENT,
        ErrorCategory.TIMEOUT,
        ErrorCategory.SERVER,
    }
    assert 500 in pol.status_force_list
    other = RetryPolicy(
        max_retries=5, backoff_strategy=DecorrelatedJitterBackoff(base=0.1, max_backoff=10.0)
    )
    assert other.backoff_strategy.max_backoff == 10.0
    assert "TRANSIENT" in repr(pol) and "429,500,502,503,504" in repr(pol)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_retries": -1}, ValueError),
        ({"max_retries": 2.0}, TypeError),
        ({"max_retries": True}, TypeError),
        ({"retry_categories": ["TRANSIENT", "NOPE"]}, ValueError),
        ({"retry_categories": "TIMEOUT"}, TypeError),
        ({"status_force_list": [200]}, ValueError),
        ({"status_force_list": [600]}, ValueError),
        ({"status_force_list": ["503"]}, TypeError),
        ({"retry_methods": ["GET", "BAD METHOD"]}, ValueError),
        ({"retry_methods": "GET"}, TypeError),
        ({"backoff_strategy": 1.0}, TypeError),
        ({"respect_retry_after": "yes"}, TypeError),
        ({"retry_non_idempotent": 1}, TypeError),
        ({"clock": 3.0}, TypeError),
    ],
)
def test_bad_values_are_refused(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        RetryPolicy(5)  # type: ignore[call-arg]


def test_policy_is_immutable() -> None:
    pol = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        pol.max_retries = 10  # type: ignore[misc]
    with pytest.raises(AttributeError):
        pol.retry_categories.add(ErrorCategory.TLS)  # type: ignore[attr-defined]
    assert pol == RetryPolicy()
    assert hash(pol) == hash(RetryPolicy())


def test_state_and_decision_are_immutable() -> None:
    pol = policy()
    state = pol.begin("get", URL)
    decision = pol.decide(state, ReadTimeout("slow"), body_replayable=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.attempt = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.delay = 0.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.record.attempt = 5  # type: ignore[misc]
    assert state.attempt == 1 and state.history == ()


# -- decisions ---------------------------------------------------------------


def test_retryable_error_then_exhaustion() -> None:
    decisions = run(policy(max_retries=3), [ReadTimeout("slow")] * 10)
    assert [d.retry for d in decisions] == [True, True, True, False]
    assert [d.outcome for d in decisions] == ["retry", "retry", "retry", "fail"]
    assert decisions[-1].reason is RetryReason.RETRIES_EXHAUSTED
    assert [d.delay for d in decisions[:3]] == pytest.approx([0.1, 0.2, 0.4])
    assert [d.record.attempt for d in decisions] == [1, 2, 3, 4]
    assert len(decisions[-1].history) == 4
    assert decisions[-1].history[0].delay == pytest.approx(0.1)
    assert decisions[-1].record.delay is None


def test_max_retries_zero_never_retries() -> None:
    [decision] = run(policy(max_retries=0), [ConnectError("refused")])
    assert not decision.retry
    assert decision.reason is RetryReason.RETRIES_EXHAUSTED


def test_category_not_in_policy_is_final() -> None:
    pol = policy(retry_categories=["TRANSIENT"])
    [decision] = run(pol, [ReadTimeout("slow")])
    assert not decision.retry
    assert decision.reason is RetryReason.CATEGORY_NOT_RETRYABLE
    assert decision.category is ErrorCategory.TIMEOUT
    assert decision.outcome == "fail"


@pytest.mark.parametrize(
    "exc",
    [TLSError("bad cert"), LocalProtocolError("bad header"), ValueError("bug")],
    ids=repr,
)
def test_default_policy_does_not_retry_hopeless_errors(exc: BaseException) -> None:
    [decision] = run(policy(), [exc])
    assert not decision.retry
    assert decision.reason is RetryReason.CATEGORY_NOT_RETRYABLE


def test_idempotent_method_is_retried_after_it_may_have_been_sent() -> None:
    for method in ("GET", "put", "DELETE", "HEAD", "OPTIONS", "TRACE"):
        [decision, *_] = run(policy(), [ReadError("reset")], method=method, sent=True)
        assert decision.retry, method


def test_non_idempotent_sent_request_is_not_retried() -> None:
    for method in ("POST", "PATCH"):
        [decision] = run(policy(), [ReadError("reset")], method=method, sent=True)
        assert not decision.retry
        assert decision.reason is RetryReason.METHOD_NOT_RETRYABLE


def test_non_idempotent_retried_when_allowed() -> None:
    decisions = run(
        policy(retry_non_idempotent=True), [ReadError("reset"), 200], method="POST", sent=True
    )
    assert decisions[0].retry
    decisions = run(policy(retry_methods=["GET", "POST"]), [ReadError("reset"), 200], method="POST")
    assert decisions[0].retry
    [decision] = run(policy(retry_methods=["GET"]), [ReadError("reset")], method="PUT")
    assert decision.reason is RetryReason.METHOD_NOT_RETRYABLE


@pytest.mark.parametrize(
    "exc",
    [
        ConnectError("refused"),
        ConnectTimeout("slow"),
        DNSError("nx"),
        PoolTimeout("full"),
        StreamReset("refused", error_code=REFUSED_STREAM),
    ],
    ids=repr,
)
def test_never_sent_post_may_be_retried(exc: BaseException) -> None:
    # Even if the client could not tell, the exception proves it never left.
    [decision, *_] = run(policy(), [exc], method="POST", sent=True)
    assert decision.retry


def test_client_says_never_sent() -> None:
    # e.g. an HTTP/2 stream above the GOAWAY's last-stream-id
    [decision, *_] = run(policy(), [RemoteProtocolError("goaway")], method="POST", sent=False)
    assert decision.retry
    [decision] = run(policy(), [RemoteProtocolError("goaway")], method="POST", sent=True)
    assert not decision.retry


def test_non_replayable_body_is_never_resent() -> None:
    [decision] = run(policy(), [ConnectError("refused")], method="PUT", body_replayable=False)
    assert not decision.retry
    assert decision.reason is RetryReason.BODY_NOT_REPLAYABLE
    [decision] = run(policy(), [503], method="PUT", body_replayable=False)
    assert decision.reason is RetryReason.BODY_NOT_REPLAYABLE


def test_status_force_list() -> None:
    decisions = run(policy(), [503, 502, 200])
    assert [d.retry for d in decisions] == [True, True, False]
    assert decisions[0].reason is RetryReason.RETRYABLE_STATUS
    assert decisions[-1].reason is RetryReason.STATUS_ACCEPTED
    assert decisions[-1].outcome == "success"
    assert decisions[-1].category is None
    assert decisions[0].record.status_code == 503
    assert decisions[0].record.exception is None


def test_status_outside_force_list_is_returned_as_is() -> None:
    for status in (500, 404, 200, 301):
        [decision] = run(policy(), [status])
        assert not decision.retry
        assert decision.outcome == "success"
    [decision] = run(policy(), [500])
    assert decision.category is ErrorCategory.SERVER


@pytest.mark.parametrize("status", [600, 999])
def test_nonstandard_status_is_accepted_without_a_category(status: int) -> None:
    # LinkedIn's 999: the host answered, nothing failed (it used to raise ValueError).
    [decision] = run(policy(), [status])
    assert not decision.retry
    assert decision.reason is RetryReason.STATUS_ACCEPTED
    assert decision.outcome == "success"
    assert decision.category is None
    assert decision.record.status_code == status


def test_forced_nonstandard_status_gets_a_category_instead_of_raising() -> None:
    # Validation keeps 600-999 out of status_force_list; a subclass that
    # lets one in must still get decisions, filed as HTTPStatusError would.
    pol = policy(max_retries=1)
    object.__setattr__(pol, "status_force_list", frozenset({999}))
    decisions = run(pol, [999, 999])
    assert [d.outcome for d in decisions] == ["retry", "fail"]
    assert [d.category for d in decisions] == [ErrorCategory.CLIENT] * 2
    assert decisions[-1].reason is RetryReason.RETRIES_EXHAUSTED


def test_forced_status_on_post_is_not_retried() -> None:
    [decision] = run(policy(), [503], method="POST")
    assert decision.reason is RetryReason.METHOD_NOT_RETRYABLE
    assert decision.outcome == "fail"


def test_forced_status_exhausts() -> None:
    decisions = run(policy(max_retries=2), [503] * 5)
    assert [d.outcome for d in decisions] == ["retry", "retry", "fail"]
    assert decisions[-1].reason is RetryReason.RETRIES_EXHAUSTED


def test_retry_after_seconds_replaces_backoff() -> None:
    [decision, *_] = run(policy(), [429, 200], retry_after="4")
    assert decision.delay == 4.0
    assert decision.next_state is not None
    assert decision.next_state.previous_delay == 4.0


def test_retry_after_date_uses_the_wall_clock() -> None:
    date = format_datetime(datetime.fromtimestamp(NOW + 12, tz=UTC), usegmt=True)
    [decision, *_] = run(policy(), [503, 200], retry_after=date)
    assert decision.delay == pytest.approx(12.0)


@pytest.mark.parametrize("value", ["3600", "9" * 20, "9" * 400], ids=["3600", "20-digits", "400-digits"])
def test_retry_after_is_capped_by_max_backoff(value: str) -> None:
    # 400 digits overflow a float: still "wait very long", capped, never the
    # short backoff (they were taken for garbage before).
    pol = policy(backoff_strategy=ExponentialBackoff(max_backoff=5.0, jitter=False))
    [decision, *_] = run(pol, [503, 200], retry_after=value)
    assert decision.delay == 5.0


@pytest.mark.parametrize("value", ["garbage", "-3", ""])
def test_bad_retry_after_falls_back_to_backoff(value: str) -> None:
    [decision, *_] = run(policy(), [503, 200], retry_after=value)
    assert decision.delay == pytest.approx(0.1)


def test_retry_after_ignored_when_not_respected() -> None:
    [decision, *_] = run(policy(respect_retry_after=False), [503, 200], retry_after="4")
    assert decision.delay == pytest.approx(0.1)


def test_decorrelated_backoff_gets_the_previous_delay() -> None:
    pol = policy(
        backoff_strategy=DecorrelatedJitterBackoff(base=0.1, max_backoff=10.0, rng=lambda: 1.0),
        max_retries=5,
    )
    decisions = run(pol, [ReadTimeout("slow")] * 6)
    assert [d.delay for d in decisions[:5]] == pytest.approx([0.3, 0.9, 2.7, 8.1, 10.0])


def test_record_carries_what_telemetry_needs() -> None:
    clock = FakeClock(50.0)
    pol = policy(clock=clock)
    state = pol.begin("get", URL)
    clock.now = 52.5
    err = ReadTimeout("slow")
    decision = pol.decide(state, err, body_replayable=True)
    record = decision.record
    assert record.attempt == 1
    assert record.method == "GET"
    assert record.url == URL
    assert record.category is ErrorCategory.TIMEOUT
    assert record.exception is err
    assert record.status_code is None
    assert record.delay == pytest.approx(0.1)
    assert record.elapsed == pytest.approx(2.5)
    assert record.outcome == "retry"


def test_first_failure_surfaces_the_original_exception() -> None:
    err = ReadTimeout("slow")
    [decision] = run(policy(retry_categories=["SERVER"]), [err])
    assert decision.error_to_raise(err) is err


def test_retry_error_after_retries() -> None:
    errors: list[BaseException | int] = [ReadTimeout("a"), ReadTimeout("b"), ReadTimeout("c")]
    decisions = run(policy(max_retries=2), errors)
    last = decisions[-1]
    raised = last.error_to_raise(errors[-1])  # type: ignore[arg-type]
    assert isinstance(raised, RetryError)
    assert raised.original_exception is errors[-1]
    assert raised.attempts == 3
    assert [r.attempt for r in raised.history] == [1, 2, 3]
    assert URL in str(raised)
    assert RetryError is exc_module.RetryError


def test_decide_refuses_nonsense() -> None:
    pol = policy()
    state = pol.begin("GET", URL)
    with pytest.raises(TypeError):
        pol.decide(state, "503", body_replayable=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pol.decide(state, True, body_replayable=True)


def test_state_is_independent_of_the_policy() -> None:
    pol = policy()
    state = pol.begin("GET", URL)
    decision = pol.decide(state, ReadTimeout("slow"), body_replayable=True)
    assert isinstance(decision.next_state, RetryState)
    assert decision.next_state.attempt == 2
    assert state.attempt == 1  # the old state is untouched
    # Deciding on the same state again gives the same answer.
    again = pol.decide(state, ReadTimeout("slow"), body_replayable=True)
    assert again.delay == decision.delay and again.record.attempt == 1


async def test_one_policy_shared_by_concurrent_tasks(loop_name: str) -> None:
    pol = policy(max_retries=4)
    before = repr(pol)

    async def request(n_failures: int) -> list[int]:
        state = pol.begin("GET", f"{URL}/{n_failures}")
        attempts = []
        for i in range(10):
            outcome: BaseException | int = ReadTimeout("x") if i < n_failures else 200
            decision = pol.decide(state, outcome, body_replayable=True)
            attempts.append(decision.record.attempt)
            if not decision.retry:
                break
            await asyncio.sleep(0)  # let the other tasks interleave
            assert decision.next_state is not None
            state = decision.next_state
        return attempts

    results = await asyncio.gather(*(request(n) for n in (0, 1, 2, 3, 6)))
    assert results == [[1], [1, 2], [1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4, 5]]
    assert repr(pol) == before


def test_policy_modules_are_pure() -> None:
    # Import the policy modules on their own (not via the package __init__,
    # which loads the client) and check they pull in no I/O machinery.
    code = (
        "import sys, types\n"
        "pkg = types.ModuleType('hyperhttp'); pkg.__path__ = ['hyperhttp']\n"
        "sys.modules['hyperhttp'] = pkg\n"
        "import hyperhttp.errors, hyperhttp.utils.backoff\n"
        "bad = sorted({'asyncio', 'socket', 'ssl', 'selectors'} & set(sys.modules))\n"
        "print(','.join(bad))\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
