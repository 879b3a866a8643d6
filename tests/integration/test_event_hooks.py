"""Event hooks through the Client, against real servers on loopback.

Request hooks fire once per network attempt just before the transport;
response hooks once per attempt after the head is parsed. Retries,
redirects and digest round trips are separate attempts. What a request hook
changes is checked at the server (`/echo`, or a raw server that records
every request head), and every failing hook is checked for leaks.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import hyperhttp
from hyperhttp import DigestAuth, Request, Response
from hyperhttp._content import BytesBody
from hyperhttp.errors.retry import RetryPolicy
from hyperhttp.utils.backoff import ExponentialBackoff
from tests.support.digest_server import DigestServer
from tests.support.fixtures import RawServerFactory
from tests.support.raw import read_head
from tests.support.servers import ServerHandle

NO_WAIT = ExponentialBackoff(base=0.001, max_backoff=0.001, jitter=False)
RETRY_503 = RetryPolicy(max_retries=3, status_force_list=[503], backoff_strategy=NO_WAIT)
SECRET_KEY = "test-secret"
# `event_hooks=` takes lists of any callables; a literal of narrower lists
# would not type-check against it (list is invariant).
Hooks = dict[str, list[Callable[[Any], Any]]]


class HookBoom(Exception):
    """What the failing hooks raise."""


@pytest.fixture(scope="module")
def digest_server() -> Iterator[DigestServer]:
    with DigestServer() as srv:
        yield srv


def seen(response: Response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        out.setdefault(name, []).append(value)
    return out


def pool_is_idle(client: hyperhttp.Client) -> bool:
    return all(
        entry.get("in_use", 0) == 0 and entry.get("streams", 0) == 0
        for entry in client.get_pool_stats().values()
    )


class Flaky:
    """A keep-alive raw handler: 503 for the first `failures` requests, then
    200 "ok". Records every request's headers (lower-cased names)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[dict[str, str]] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_head(reader)
            if not head:
                return
            headers: dict[str, str] = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if length:
                await reader.readexactly(length)
            self.requests.append(headers)
            if len(self.requests) <= self.failures:
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()


class Recorder:
    """Hooks that record what they saw, one sync and one async of each kind."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def sync_request(self, request: Request) -> None:
        self.events.append(("sync-request", str(request.url)))

    async def async_request(self, request: Request) -> None:
        await asyncio.sleep(0)
        self.events.append(("async-request", str(request.url)))

    def sync_response(self, response: Response) -> None:
        self.events.append(("sync-response", str(response.status_code)))

    async def async_response(self, response: Response) -> None:
        await asyncio.sleep(0)
        self.events.append(("async-response", str(response.status_code)))

    def hooks(self) -> Hooks:
        return {
            "request": [self.sync_request, self.async_request],
            "response": [self.async_response, self.sync_response],
        }

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


# --- basics -----------------------------------------------------------------------


async def test_sync_and_async_hooks_are_awaited_in_order(
    loop_name: str, http_server: ServerHandle
) -> None:
    rec = Recorder()
    url = http_server.url + "/echo"
    async with hyperhttp.Client(event_hooks=rec.hooks(), http2=False) as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert rec.events == [
        ("sync-request", url),
        ("async-request", url),
        ("async-response", "200"),
        ("sync-response", "200"),
    ]


async def test_header_and_url_mutations_reach_the_server(
    loop_name: str, http_server: ServerHandle
) -> None:
    def inject_trace(request: Request) -> None:
        request.headers["X-Trace-Id"] = "trace-1"
        del request.headers["user-agent"]

    async def shadow(request: Request) -> None:
        # Feature-flag style routing: rewrite the outgoing URL at runtime.
        if request.url.path == "/old":
            request.url = request.url.copy_with(path="/echo/new")

    hooks: Hooks = {"request": [inject_trace, shadow]}
    async with hyperhttp.Client(event_hooks=hooks, http2=False) as client:
        response = await client.get(http_server.url + "/old")
    assert response.status_code == 200
    assert response.json()["path"] == "/echo/new"
    headers = seen(response)
    assert headers["x-trace-id"] == ["trace-1"]
    assert "user-agent" not in headers
    assert response.request.url.path == "/echo/new"


@pytest.mark.parametrize("h2", [False, True])
async def test_body_replaced_by_a_hook_reaches_the_server(
    loop_name: str, https_server: ServerHandle, client_ssl_context: Any, h2: bool
) -> None:
    def wrap_body(request: Request) -> None:
        request.replace_body(BytesBody(b"{" + request.content + b"}"))
        request.headers["X-Signed"] = hashlib.sha256(request.content).hexdigest()

    hooks: Hooks = {"request": [wrap_body]}
    async with hyperhttp.Client(
        event_hooks=hooks, http2=h2, ssl_context=client_ssl_context
    ) as client:
        response = await client.post(https_server.url + "/echo", content=b"payload")
    body = response.json()
    assert body["http_version"] == ("HTTP/2" if h2 else "HTTP/1.1")
    assert body["body"] == "{payload}"
    assert body["body_length"] == 9
    headers = seen(response)
    assert headers["x-signed"] == [hashlib.sha256(b"{payload}").hexdigest()]
    if not h2:
        assert headers["content-length"] == ["9"]


async def test_event_hooks_are_writable_on_a_live_client(
    loop_name: str, http_server: ServerHandle
) -> None:
    calls: list[str] = []

    def my_new_hook(request: Request) -> None:
        calls.append(request.url.path)
        request.headers["X-Scoped"] = "1"

    url = http_server.url + "/echo"
    async with hyperhttp.Client(http2=False) as client:
        assert client.event_hooks == {"request": [], "response": []}
        before = await client.get(url)
        client.event_hooks["request"].append(my_new_hook)
        during = [await client.get(url + "/a"), await client.get(url + "/b")]
        assert client.event_hooks["request"].pop() is my_new_hook
        after = await client.get(url)
        client.event_hooks["response"] = [lambda r: calls.append(f"resp {r.status_code}")]
        await client.get(url)
    assert calls == ["/echo/a", "/echo/b", "resp 200"]
    assert "x-scoped" not in seen(before) and "x-scoped" not in seen(after)
    assert all(seen(r)["x-scoped"] == ["1"] for r in during)


def test_unknown_hook_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event hook"):
        hyperhttp.Client(event_hooks={"requests": []})


def test_constructor_copies_the_hook_lists() -> None:
    hooks: list[Callable[[Any], Any]] = []
    client = hyperhttp.Client(event_hooks={"request": hooks})
    client.event_hooks["request"].append(print)
    assert hooks == []
    client.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_response_hooks_fire_after_the_head_before_the_body(
    loop_name: str, http_server: ServerHandle, stream: bool
) -> None:
    observed: list[tuple[int, bool, bool, str]] = []

    def inspect(response: Response) -> None:
        try:
            has_body = response.content is not None
        except hyperhttp.StreamConsumed:
            has_body = False
        observed.append((
            response.status_code,
            has_body,
            response.is_stream_consumed,
            response.request.url.path,
        ))

    url = http_server.url + "/slow-body?chunks=3&delay=0.05&size=10"
    async with hyperhttp.Client(event_hooks={"response": [inspect]}, http2=False) as client:
        if stream:
            async with client.stream("GET", url) as response:
                assert observed == [(200, False, False, "/slow-body")]
                body = await response.aread()
        else:
            response = await client.get(url)
            body = response.content
        assert pool_is_idle(client)
    assert observed == [(200, False, False, "/slow-body")]
    assert len(body) == 30


async def test_response_hook_may_read_the_body(loop_name: str, http_server: ServerHandle) -> None:
    sizes: list[int] = []

    async def record_size(response: Response) -> None:
        sizes.append(len(await response.aread()))

    async with hyperhttp.Client(event_hooks={"response": [record_size]}, http2=False) as client:
        response = await client.get(http_server.url + "/bytes/1000")
        assert pool_is_idle(client)
    assert sizes == [1000]
    assert len(response.content) == 1000


# --- hooks fire per network attempt ------------------------------------------------------


async def test_hooks_fire_on_every_retry(loop_name: str, raw_server: RawServerFactory) -> None:
    flaky = Flaky(failures=2)
    server = raw_server(flaky)
    attempts = itertools.count(1)

    def number_attempt(request: Request) -> None:
        request.headers["X-Attempt"] = str(next(attempts))

    statuses: list[int] = []
    hooks = {"request": [number_attempt], "response": [lambda r: statuses.append(r.status_code)]}
    async with hyperhttp.Client(event_hooks=hooks, retry=RETRY_503) as client:
        response = await client.get(server.url + "/things")
        assert pool_is_idle(client)
    assert response.status_code == 200 and response.content == b"ok"
    assert statuses == [503, 503, 200]
    assert [r["x-attempt"] for r in flaky.requests] == ["1", "2", "3"]


async def test_hooks_fire_on_every_redirect_hop(
    loop_name: str, http_server: ServerHandle
) -> None:
    rec = Recorder()
    async with hyperhttp.Client(
        event_hooks=rec.hooks(), follow_redirects=True, http2=False
    ) as client:
        response = await client.get(http_server.url + "/redirect/2")
    assert response.status_code == 200
    requested = [url for kind, url in rec.events if kind == "sync-request"]
    assert [u.removeprefix(http_server.url) for u in requested] == [
        "/redirect/2", "/redirect/1", "/echo",
    ]
    answered = [code for kind, code in rec.events if kind == "sync-response"]
    assert answered == ["302", "302", "200"]
    assert rec.kinds()[:4] == ["sync-request", "async-request", "async-response", "sync-response"]


async def test_hooks_fire_on_every_digest_round_trip(
    loop_name: str, digest_server: DigestServer
) -> None:
    sent_auth: list[bool] = []
    statuses: list[int] = []

    def request_hook(request: Request) -> None:
        sent_auth.append("authorization" in request.headers)

    hooks = {"request": [request_hook], "response": [lambda r: statuses.append(r.status_code)]}
    auth = DigestAuth("Mufasa", "Circle of Life")
    async with hyperhttp.Client(auth=auth, event_hooks=hooks) as client:
        first = await client.get(digest_server.url + "/x?alg=SHA-256")
        second = await client.get(digest_server.url + "/y?alg=SHA-256")
    assert (first.status_code, second.status_code) == (200, 200)
    # Request hooks run after the auth flow set its header on each attempt.
    assert sent_auth == [False, True, True]
    assert statuses == [401, 200, 200]


# --- request signing: a fresh signature on every attempt -------------------------------


def make_signer(now: Callable[[], datetime.datetime]) -> Callable[[Request], None]:
    """The spec's AWS-SigV4-ish sketch with its clock injected."""

    def sign_aws(request: Request) -> None:
        ts = now().strftime("%Y%m%dT%H%M%SZ")
        request.headers["x-amz-date"] = ts
        canonical = f"{request.method}\n{request.url.target}\n{ts}"
        sig = hmac.new(SECRET_KEY.encode(), canonical.encode(), hashlib.sha256).hexdigest()
        request.headers["Authorization"] = f"AWS4-HMAC-SHA256 Signature={sig}"

    return sign_aws


def expected_signature(method: str, target: str, ts: str) -> str:
    canonical = f"{method}\n{target}\n{ts}"
    sig = hmac.new(SECRET_KEY.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Signature={sig}"


async def test_signing_hook_re_signs_every_retry(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    flaky = Flaky(failures=2)
    server = raw_server(flaky)
    start = datetime.datetime(2024, 5, 1, 12, 0, 0)
    ticks = itertools.count()
    sign_aws = make_signer(lambda: start + datetime.timedelta(seconds=next(ticks)))
    async with hyperhttp.Client(event_hooks={"request": [sign_aws]}, retry=RETRY_503) as client:
        response = await client.put(server.url + "/bucket/key?x=1", content=b"data")
    assert response.status_code == 200
    dates = [r["x-amz-date"] for r in flaky.requests]
    assert dates == ["20240501T120000Z", "20240501T120001Z", "20240501T120002Z"]
    signatures = [r["authorization"] for r in flaky.requests]
    assert len(set(signatures)) == 3
    assert signatures == [expected_signature("PUT", "/bucket/key?x=1", ts) for ts in dates]


async def test_signing_hook_re_signs_every_redirect_hop(
    loop_name: str, http_server: ServerHandle
) -> None:
    ticks = itertools.count()
    start = datetime.datetime(2024, 5, 1, 12, 0, 0)
    sign_aws = make_signer(lambda: start + datetime.timedelta(seconds=next(ticks)))
    async with hyperhttp.Client(
        event_hooks={"request": [sign_aws]}, follow_redirects=True, http2=False
    ) as client:
        response = await client.get(http_server.url + "/redirect/1")
    headers = seen(response)
    assert headers["x-amz-date"] == ["20240501T120001Z"]
    assert headers["authorization"] == [expected_signature("GET", "/echo", "20240501T120001Z")]


# --- a failing hook aborts the request with its own exception, leaking nothing ----------


def _raiser(boom: HookBoom, is_async: bool) -> Callable[[Any], Any]:
    def sync_hook(_: Any) -> None:
        raise boom

    async def async_hook(_: Any) -> None:
        await asyncio.sleep(0)
        raise boom

    return async_hook if is_async else sync_hook


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_request_hook_exception_aborts_the_request(
    loop_name: str, http_server: ServerHandle, is_async: bool
) -> None:
    boom = HookBoom("request hook failed")
    hook = _raiser(boom, is_async)
    url = http_server.url + "/echo"
    async with hyperhttp.Client(http2=False) as client:
        await client.get(url)  # one idle connection in the pool
        requests_before = http_server.stats.requests
        client.event_hooks["request"].append(hook)
        with pytest.raises(HookBoom) as info:
            await client.get(url)
        assert info.value is boom
        with pytest.raises(HookBoom):
            async with client.stream("GET", url):
                pass
        assert http_server.stats.requests == requests_before  # never went out
        assert pool_is_idle(client)
        client.event_hooks["request"].remove(hook)
        response = await client.get(url)
        assert response.status_code == 200
        assert pool_is_idle(client)
        assert len(http_server.stats.connections) == 1


@pytest.mark.parametrize("h2", [False, True], ids=["h1", "h2"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_response_hook_exception_aborts_and_releases(
    loop_name: str, https_server: ServerHandle, client_ssl_context: Any, is_async: bool, h2: bool
) -> None:
    boom = HookBoom("response hook failed")
    hook = _raiser(boom, is_async)
    url = https_server.url + "/bytes/100000"
    async with hyperhttp.Client(ssl_context=client_ssl_context, http2=h2) as client:
        client.event_hooks["response"].append(hook)
        with pytest.raises(HookBoom) as info:
            await client.get(url)
        assert info.value is boom
        with pytest.raises(HookBoom):
            async with client.stream("GET", url):
                pass
        assert pool_is_idle(client)
        client.event_hooks["response"].clear()
        response = await client.get(url)
        assert len(response.content) == 100000
        assert response.http_version == ("HTTP/2" if h2 else "HTTP/1.1")
        assert pool_is_idle(client)


async def test_raise_for_status_in_a_response_hook(
    loop_name: str, http_server: ServerHandle
) -> None:
    hooks: Hooks = {"response": [Response.raise_for_status]}
    async with hyperhttp.Client(event_hooks=hooks, http2=False) as client:
        with pytest.raises(hyperhttp.HTTPStatusError) as info:
            await client.get(http_server.url + "/status/404")
        assert info.value.response.status_code == 404
        assert pool_is_idle(client)
        assert (await client.get(http_server.url + "/echo")).status_code == 200


async def test_hook_exception_on_a_retry_is_the_hooks_own(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    flaky = Flaky(failures=1)
    server = raw_server(flaky)
    boom = HookBoom("second attempt refused")
    calls = itertools.count(1)

    def fail_on_second_attempt(request: Request) -> None:
        if next(calls) == 2:
            raise boom

    hooks: Hooks = {"request": [fail_on_second_attempt]}
    async with hyperhttp.Client(event_hooks=hooks, retry=RETRY_503) as client:
        with pytest.raises(HookBoom) as info:
            await client.get(server.url + "/x")
        assert info.value is boom
        assert pool_is_idle(client)
    assert len(flaky.requests) == 1


async def test_hook_exception_is_not_retried(
    loop_name: str, http_server: ServerHandle
) -> None:
    calls: list[int] = []

    def failing(request: Request) -> None:
        calls.append(1)
        raise HookBoom("no")

    # Even a policy that retries unclassified failures must not retry a hook's.
    policy = RetryPolicy(
        max_retries=3, retry_categories=["UNKNOWN", "TRANSIENT"], backoff_strategy=NO_WAIT
    )
    async with hyperhttp.Client(event_hooks={"request": [failing]}, retry=policy) as client:
        with pytest.raises(HookBoom):
            await client.get(http_server.url + "/echo")
    assert calls == [1]


async def test_hook_exception_during_digest_round_trip(
    loop_name: str, digest_server: DigestServer
) -> None:
    def fail_when_answering(request: Request) -> None:
        if "authorization" in request.headers:
            raise HookBoom("refused to sign")

    auth = DigestAuth("Mufasa", "Circle of Life")
    hooks: Hooks = {"request": [fail_when_answering]}
    async with hyperhttp.Client(auth=auth, event_hooks=hooks) as client:
        with pytest.raises(HookBoom):
            await client.get(digest_server.url + "/x")
        assert pool_is_idle(client)
        client.event_hooks["request"].clear()
        assert (await client.get(digest_server.url + "/x")).status_code == 200


# --- a hook's exception is the caller's, not the host's --------------------------


@pytest.fixture
def refused_port() -> Iterator[int]:
    from tests.support.faults import refusing_port

    with refusing_port() as port:
        yield port


async def test_a_hooks_own_network_error_is_not_retried_and_keeps_its_identity(
    loop_name: str, refused_port: int
) -> None:
    """A response hook that calls a sidecar of its own and gets ConnectError:
    that is not the request's failure. Taken for one, the POST the server had
    already answered went out again (ConnectError looks 'never sent')."""
    from tests.support.faults import OK, FaultServer, RecordingTelemetry, quick_policy

    async def audit(response: Response) -> None:
        async with hyperhttp.Client(trust_env=False) as sidecar:
            await sidecar.get(f"http://127.0.0.1:{refused_port}/audit")

    telemetry = RecordingTelemetry()
    with FaultServer([OK]) as server:
        async with hyperhttp.Client(
            trust_env=False, retry=quick_policy(3, retry_non_idempotent=True),
            telemetry=telemetry, event_hooks={"response": [audit]},
        ) as client:
            with pytest.raises(hyperhttp.ConnectError) as caught:
                await client.post(server.url + "/orders", content=b"one order")
            assert str(refused_port) in str(caught.value)
            assert server.attempts == 1
            assert pool_is_idle(client)
    assert telemetry.outcomes == ["fail"]
    assert telemetry.records[0].exception is caught.value


async def test_raise_for_status_as_a_hook_is_not_a_retry_trigger(loop_name: str) -> None:
    from tests.support.faults import FaultServer, Respond, quick_policy

    with FaultServer([Respond(503)]) as server:
        async with hyperhttp.Client(
            trust_env=False, retry=quick_policy(3),
            event_hooks={"response": [Response.raise_for_status]},
        ) as client:
            with pytest.raises(hyperhttp.HTTPStatusError):
                await client.get(server.url + "/")
            assert server.attempts == 1


@pytest.mark.parametrize("where", ["request", "response"])
async def test_a_failing_hook_does_not_count_against_the_host(
    loop_name: str, refused_port: int, where: str
) -> None:
    """A signing hook whose token endpoint is down raised ConnectError: the
    API's breaker opened though the API was never contacted, and later
    calls got CircuitBreakerOpen instead of the hook's error."""
    from hyperhttp.errors.circuit_breaker import DomainCircuitBreakerManager
    from tests.support.faults import OK, FaultServer

    async def needs_token(subject: Any) -> None:
        async with hyperhttp.Client(trust_env=False) as tokens:
            await tokens.get(f"http://127.0.0.1:{refused_port}/token")

    breakers = DomainCircuitBreakerManager(failure_threshold=1, recovery_timeout=60.0)
    with FaultServer([OK]) as server:
        async with hyperhttp.Client(
            trust_env=False, circuit_breaker_manager=breakers,
            event_hooks={where: [needs_token]},
        ) as client:
            for _ in range(3):
                with pytest.raises(hyperhttp.ConnectError):
                    await client.get(server.url + "/")
            key = breakers.key_for(server.host, server.port)
            assert breakers.state(key) == "closed"
            assert server.attempts == (0 if where == "request" else 3)
