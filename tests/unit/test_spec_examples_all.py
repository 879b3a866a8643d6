"""Every code example of the specification, run as printed.

Covers advanced-features.txt (HTTP/2, connection pooling, proxies, file
uploads, retries, circuit breaker, telemetry, TLS, DNS and Happy Eyeballs,
user agent) and the code block of basic-usage.md. The "Event hooks" and
"Authentication" examples run in test_spec_examples_auth_hooks.py.

Each example is the specification's text, unchanged, compiled with
top-level ``await`` and run in a namespace (`run_example`). The example
hosts are made local without touching the text:

- **Real network** for what depends on it (HTTP/2, pooling, proxies, TLS,
  DNS, uploads, user agent): the system resolver is replaced, so
  ``example.com``, ``api.example.com``, ``secure.example.com`` and
  ``proxy.corp`` resolve to servers on 127.0.0.1 (port 443 and 80 mapped to
  their ephemeral ports). The HTTPS servers present a certificate for those
  names from the test CA. A `Client` built without ``verify=`` or
  ``ssl_context=`` trusts the test CA instead of certifi; everything else
  is the client exactly as the example configured it.
- **MockTransport** for the resilience examples (retries, breaker,
  telemetry), where a scripted server (503s, refused connections) makes the
  behaviour visible; `ExampleNet.handler` answers every request then.

The one textual change: the absolute path ``/path/to/ca-bundle.pem`` is
replaced by a file in the test's temporary directory. Files the examples
name by relative path (``./report.pdf``, ``client-cert.pem``) are created in
a temporary working directory. After each run the test checks what the
example was meant to achieve (what the servers and proxy saw, what came back).
"""

from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import inspect
import pathlib
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import hyperhttp
import hyperhttp._transport.dns as dns_module
from hyperhttp._transport.dns import Address
from hyperhttp.errors.retry import RetryPolicy
from hyperhttp.utils.backoff import ExponentialBackoff
from tests.support import servers as servers_module
from tests.support.app import TestApp
from tests.support.certs import TestCerts
from tests.support.proxies import RecordingProxy
from tests.support.servers import ServerHandle, start_server

# --- the examples, verbatim ----------------------------------------------------------

HTTP2_TOGGLE = '''
client = hyperhttp.Client(http2=True)   # default
client = hyperhttp.Client(http2=False)  # force HTTP/1.1 only
'''

HTTP2_GATHER = '''
async with hyperhttp.Client() as client:
    responses = await asyncio.gather(
        client.get("https://example.com/api/1"),
        client.get("https://example.com/api/2"),
        client.get("https://example.com/api/3"),
    )
'''

POOL = '''
client = hyperhttp.Client(
    max_connections=200,           # global cap across all hosts
    max_keepalive_connections=32,  # per-host keepalive cap
    keepalive_expiry=120.0,        # seconds an idle connection is kept around
)
'''

POOL_STATS = '''
stats = client.get_pool_stats()
# {"example.com:443": {"idle": 4, "in_use": 2, "total": 6}, ...}
'''

PROXY_SINGLE = '''
# Single proxy for both http and https targets.
async with hyperhttp.Client(proxies="http://proxy.corp:3128") as client:
    await client.get("https://api.example.com/things")
'''

PROXY_PER_SCHEME = '''
# Per-scheme routing, with basic auth baked into the URL.
async with hyperhttp.Client(
    proxies={
        "http":  "http://user:pass@proxy.corp:3128",
        "https": "http://user:pass@proxy.corp:3128",
    },
) as client:
    ...
'''

PROXY_HTTP_ONLY = '''
# Only proxy http://; send https:// direct.
async with hyperhttp.Client(
    proxies={"http": "http://proxy.corp:3128", "https": None},
) as client:
    ...
'''

UPLOAD_QUICK = '''
import pathlib, hyperhttp

async with hyperhttp.Client() as client:
    r = await client.post(
        "https://api.example.com/upload",
        data={"user": "alice", "note": "quarterly report"},
        files={
            "avatar": ("me.png", b"\\x89PNG...", "image/png"),
            "report": pathlib.Path("./report.pdf"),
        },
    )
'''

UPLOAD_ENCODER = '''
from hyperhttp import Client, MultipartEncoder, MultipartFile

encoder = MultipartEncoder([
    ("user", "alice"),
    ("file", MultipartFile(path="./big.bin", content_type="application/octet-stream")),
], chunk_size=2 * 1024 * 1024)

async with Client() as client:
    await client.post("https://example.com/upload", content=encoder)
'''

RETRY_POLICY = '''
from hyperhttp import Client
from hyperhttp.errors.retry import RetryPolicy
from hyperhttp.utils.backoff import ExponentialBackoff

retry_policy = RetryPolicy(
    max_retries=5,
    retry_categories=["TRANSIENT", "TIMEOUT", "SERVER"],
    status_force_list=[429, 500, 502, 503, 504],
    backoff_strategy=ExponentialBackoff(
        base=0.1,         # initial delay (seconds)
        factor=2.0,       # multiplier per attempt
        max_backoff=30.0, # cap on any single wait
        jitter=True,
    ),
    respect_retry_after=True,
)

async with Client(retry=retry_policy) as client:
    response = await client.get("https://api.example.com/things")
'''

RETRY_DECORRELATED = '''
from hyperhttp.utils.backoff import DecorrelatedJitterBackoff

retry_policy = RetryPolicy(
    max_retries=5,
    backoff_strategy=DecorrelatedJitterBackoff(base=0.1, max_backoff=10.0),
)
'''

RETRY_PER_REQUEST = '''
await client.post(url, json=payload, retry=False)
'''

CIRCUIT_BREAKER = '''
from hyperhttp.errors.circuit_breaker import DomainCircuitBreakerManager

cb = DomainCircuitBreakerManager(
    failure_threshold=5,     # consecutive failures before opening
    recovery_timeout=30.0,   # seconds before allowing a probe request
    success_threshold=2,     # consecutive successes to fully close again
)

async with Client(circuit_breaker_manager=cb) as client:
    try:
        response = await client.get("https://api.example.com/things")
    except hyperhttp.CircuitBreakerOpen as e:
        print(f"{e.host} unhealthy for another {e.remaining:.1f}s")
'''

TELEMETRY = '''
from hyperhttp.errors.telemetry import ErrorTelemetry

class MyTelemetry(ErrorTelemetry):
    def record_attempt(self, retry_state, outcome):
        # outcome is "success" | "retry" | "fail"
        ...

async with Client(telemetry=MyTelemetry()) as client:
    ...
'''

TLS_CONTEXT = '''
import ssl

ctx = ssl.create_default_context()
ctx.load_cert_chain("client-cert.pem", "client-key.pem")

client = hyperhttp.Client(ssl_context=ctx)
'''

TLS_TOGGLES = '''
hyperhttp.Client(verify=False)                       # skip verification (dev only)
hyperhttp.Client(verify="/path/to/ca-bundle.pem")    # custom CA bundle
hyperhttp.Client(cert=("client.pem", "client.key"))  # mutual TLS
'''

DNS_HAPPY_EYEBALLS = '''
client = hyperhttp.Client(
    happy_eyeballs_delay=0.25,  # seconds to wait before racing the other family
    connect_timeout=10.0,
)
'''

USER_AGENT = '''
client = hyperhttp.Client(user_agent="my-service/1.2.3")
'''

# basic-usage.md, "Client": a sketch of the API (placeholders such as `{...}`
# and `b"..." | async_iterable`), so it is checked against the code rather
# than executed: see test_basic_usage_client_sketch.
BASIC_USAGE_CLIENT = '''
async with hyperhttp.Client(
    base_url="https://api.example.com",   # joined with relative request URLs
    headers={...}, cookies={...}, params={...},
    auth=None, timeout=30.0,              # float or hyperhttp.Timeout(connect=, read=, write=, pool=)
    follow_redirects=False, max_redirects=20,
    http2=True, verify=True, cert=None, ssl_context=None,
    proxies=None, trust_env=True,
    max_connections=100, max_keepalive_connections=20, keepalive_expiry=120.0,
    connect_timeout=10.0, happy_eyeballs_delay=0.25,
    retry=None, circuit_breaker_manager=None, telemetry=None,
    event_hooks=None, user_agent=None,
    max_response_size=None,               # bytes; larger bodies raise ResponseTooLarge
    coordinator=None,                     # see fleet.md
    transport=None,                       # e.g. hyperhttp.MockTransport(handler) in users' tests
) as client:
    r = await client.get(url, params=..., headers=..., cookies=..., auth=..., timeout=..., follow_redirects=..., retry=...)
    r = await client.post(url, content=b"..." | async_iterable, data={...}, files={...}, json=obj)
    # also put, patch, delete, head, options, request(method, url, ...)
'''

CA_BUNDLE_PATH = "/path/to/ca-bundle.pem"
EXAMPLE_NAMES = ("example.com", "api.example.com", "secure.example.com")
PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")

# --- the local stand-in for the example hosts ----------------------------------------


class ExampleApp(TestApp):
    """The test app, answering any path it has no endpoint for as /echo does
    (the echoed `path` is still the path requested), so /things and /api/1
    behave like a real API's endpoints."""

    __test__ = False
    KNOWN = ("/echo", "/upload", "/slow", "/status/", "/bytes/")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(self.KNOWN):
            scope = {**scope, "path": "/echo" + scope["path"]}
        await super().__call__(scope, receive, send)


@dataclass(frozen=True)
class ExampleServers:
    https: ServerHandle  # TLS, ALPN h2 + http/1.1
    mtls: ServerHandle  # TLS, requires a client certificate from the test CA
    http: ServerHandle  # cleartext HTTP/1.1
    certs: TestCerts  # the test CA; server certificate for EXAMPLE_NAMES


@pytest.fixture(scope="module")
def example_servers(
    certs: TestCerts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExampleServers]:
    directory = tmp_path_factory.mktemp("example-certs")
    leaf = certs.ca.issue_cert(*EXAMPLE_NAMES, "localhost", common_name="example.com")
    chain, key = directory / "example-chain.pem", directory / "example-key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    example_certs = dataclasses.replace(certs, server_cert_path=chain, server_key_path=key)
    started: list[ServerHandle] = []
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(servers_module, "TestApp", ExampleApp)
            for kwargs in ({"tls": True}, {"require_client_cert": True}, {}):
                started.append(start_server(example_certs, **kwargs))  # type: ignore[arg-type]
        https, mtls, http = started
        yield ExampleServers(https=https, mtls=mtls, http=http, certs=example_certs)
    finally:
        for handle in started:
            handle.stop()


@dataclass
class ExampleNet:
    """The world the examples run in; see the module docstring."""

    servers: ExampleServers
    real_client: type[hyperhttp.Client]
    routes: dict[tuple[str, int], list[Address]] = field(default_factory=dict)
    lookups: list[tuple[str, int]] = field(default_factory=list)
    made: list[dict[str, Any]] = field(default_factory=list)  # kwargs of each Client()
    clients: list[hyperhttp.Client] = field(default_factory=list)
    responses: list[hyperhttp.Response] = field(default_factory=list)
    handler: Callable[[hyperhttp.Request], Any] | None = None

    def dispatch(self, request: hyperhttp.Request) -> Any:
        assert self.handler is not None
        return self.handler(request)

    def route(self, name: str, port: int, *addresses: Address) -> None:
        self.routes[(name, port)] = list(addresses)

    async def resolve(self, host: str, port: int) -> list[Address]:
        self.lookups.append((host, port))
        try:
            return list(self.routes[(host.lower(), port)])
        except KeyError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None

    async def close_clients(self) -> None:
        for client in self.clients:
            await client.aclose()


def v4(port: int) -> Address:
    return (int(socket.AF_INET), ("127.0.0.1", port))


@pytest.fixture
def net(
    example_servers: ExampleServers, monkeypatch: pytest.MonkeyPatch
) -> ExampleNet:
    """Every `hyperhttp.Client` built while the test runs lives in `ExampleNet`."""
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)
    for handle in (example_servers.https, example_servers.mtls, example_servers.http):
        handle.reset_stats()
    local = ExampleNet(example_servers, hyperhttp.Client)
    for name in ("example.com", "api.example.com"):
        local.route(name, 443, v4(example_servers.https.port))
        local.route(name, 80, v4(example_servers.http.port))
    local.route("secure.example.com", 443, v4(example_servers.mtls.port))
    monkeypatch.setattr(dns_module, "system_resolver", local.resolve)
    ca = str(example_servers.certs.ca_pem_path)
    real_client = hyperhttp.Client

    class LocalClient(real_client):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: Any) -> None:
            local.made.append(dict(kwargs))
            if local.handler is not None:
                kwargs.setdefault("transport", hyperhttp.MockTransport(local.dispatch))
            elif "verify" not in kwargs and "ssl_context" not in kwargs:
                kwargs["verify"] = ca  # the test CA stands in for certifi's
            super().__init__(**kwargs)
            self.event_hooks["response"].append(local.responses.append)
            local.clients.append(self)

    monkeypatch.setattr(hyperhttp, "Client", LocalClient)
    return local


async def run_example(source: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run an example as a module body with top-level await; its names stay in `namespace`."""
    code = compile(source, "<spec example>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)  # our own constant example text
    if asyncio.iscoroutine(result):
        await result
    return namespace


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def header(echo: dict[str, Any], name: str) -> str | None:
    values = [v for k, v in echo["headers"] if k == name]
    return values[0] if values else None


# --- HTTP/2 -----------------------------------------------------------------------------


async def test_http2_toggle_example(loop_name: str, net: ExampleNet) -> None:
    await run_example(HTTP2_TOGGLE, {"hyperhttp": hyperhttp})
    assert [made.get("http2") for made in net.made] == [True, False]
    h2_default, h1_only = net.clients
    try:
        r2 = await h2_default.get("https://api.example.com/things")
        r1 = await h1_only.get("https://api.example.com/things")
    finally:
        await net.close_clients()
    assert (r2.http_version, r2.json()["http_version"]) == ("HTTP/2", "HTTP/2")
    assert (r1.http_version, r1.json()["http_version"]) == ("HTTP/1.1", "HTTP/1.1")


async def test_http2_gather_example(loop_name: str, net: ExampleNet) -> None:
    ns = await run_example(HTTP2_GATHER, {"hyperhttp": hyperhttp, "asyncio": asyncio})
    responses = ns["responses"]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.http_version for r in responses] == ["HTTP/2"] * 3
    assert [r.json()["path"] for r in responses] == ["/api/1", "/api/2", "/api/3"]
    stats = net.servers.https.stats
    assert stats.requests == 3
    assert stats.connection_count == 1  # three streams, one TCP connection
    assert net.lookups == [("example.com", 443)]
    assert ns["client"].is_closed


# --- connection pooling ---------------------------------------------------------------


async def test_pool_examples(loop_name: str, net: ExampleNet) -> None:
    ns = await run_example(POOL, {"hyperhttp": hyperhttp})
    client = ns["client"]
    try:
        await run_example(POOL_STATS, ns)
        assert ns["stats"] == {}
        await asyncio.gather(*(client.get(f"https://example.com/api/{i}") for i in range(3)))
        async with contextlib.AsyncExitStack() as stack:
            # Two streamed HTTP/1.1 responses whose bodies are still to come.
            url = "http://example.com/slow-body?chunks=1&delay=0.05"
            streams = [await stack.enter_async_context(client.stream("GET", url)) for _ in "ab"]
            await run_example(POOL_STATS, ns)
            busy = ns["stats"]
            for r in streams:
                await r.aread()
        await run_example(POOL_STATS, ns)
        settled = ns["stats"]
    finally:
        await net.close_clients()
    h2_entry = {"idle": 1, "in_use": 0, "total": 1, "streams": 0}
    assert busy == {
        "example.com:443": h2_entry, "example.com:80": {"idle": 0, "in_use": 2, "total": 2}
    }
    assert settled == {
        "example.com:443": h2_entry, "example.com:80": {"idle": 2, "in_use": 0, "total": 2}
    }
    assert net.servers.https.stats.connection_count == 1
    assert net.servers.http.stats.connection_count == 2


# --- proxies ----------------------------------------------------------------------------


class MappedProxy(RecordingProxy):
    """A recording proxy that dials the example hosts where `ExampleNet` put them."""

    def __init__(self, net: ExampleNet, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net = net

    def _address(self, host: str, port: int) -> tuple[str, int]:
        return self.net.routes[(host, port)][0][1][:2]


@pytest.fixture
def proxy_for(net: ExampleNet) -> Iterator[Callable[..., MappedProxy]]:
    """``proxy_for(credentials=None)``: start a proxy answering as proxy.corp:3128."""
    started: list[MappedProxy] = []

    def start(**kwargs: Any) -> MappedProxy:
        proxy = MappedProxy(net, **kwargs)
        proxy.start()
        started.append(proxy)
        net.route("proxy.corp", 3128, v4(proxy.port))
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


async def test_proxy_single_example(
    loop_name: str, net: ExampleNet, proxy_for: Callable[..., MappedProxy]
) -> None:
    proxy = proxy_for()
    await run_example(PROXY_SINGLE, {"hyperhttp": hyperhttp})
    [(connect,)] = [c.requests for c in proxy.connections]
    assert (connect.method, connect.target) == ("CONNECT", "api.example.com:443")
    [response] = net.responses
    assert response.status_code == 200
    assert response.http_version == "HTTP/2"  # h2 end to end through the tunnel
    assert response.json()["path"] == "/things"
    assert net.servers.https.stats.requests == 1


async def test_proxy_per_scheme_example(
    loop_name: str, net: ExampleNet, proxy_for: Callable[..., MappedProxy]
) -> None:
    proxy = proxy_for(credentials=("user", "pass"))
    await run_example(PROXY_PER_SCHEME, {"hyperhttp": hyperhttp})
    # The example's block is `...`: send a request of each scheme with its configuration.
    async with hyperhttp.Client(**net.made[0]) as client:
        tunnelled = await client.get("https://api.example.com/things")
        forwarded = await client.get("http://api.example.com/things")
    assert (tunnelled.status_code, forwarded.status_code) == (200, 200)
    seen = proxy.requests
    assert [(r.method, r.target) for r in seen] == [
        ("CONNECT", "api.example.com:443"),
        ("GET", "http://api.example.com/things"),
    ]
    assert all(r.header_values("Proxy-Authorization") == [basic("user", "pass")] for r in seen)
    # Credentials go to the proxy only, never to the origin.
    assert header(tunnelled.json(), "proxy-authorization") is None
    assert header(forwarded.json(), "proxy-authorization") is None


async def test_proxy_http_only_example(
    loop_name: str, net: ExampleNet, proxy_for: Callable[..., MappedProxy]
) -> None:
    proxy = proxy_for()
    await run_example(PROXY_HTTP_ONLY, {"hyperhttp": hyperhttp})
    async with hyperhttp.Client(**net.made[0]) as client:
        direct = await client.get("https://api.example.com/things")
        proxied = await client.get("http://api.example.com/things")
    assert [(r.method, r.target) for r in proxy.requests] == [
        ("GET", "http://api.example.com/things")
    ]
    assert direct.status_code == proxied.status_code == 200
    assert net.servers.https.stats.requests == 1
    assert net.servers.http.stats.requests == 1


# --- file uploads -----------------------------------------------------------------------


def parts_by_name(upload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {part["name"]: part for part in upload["parts"]}


async def test_upload_examples(
    loop_name: str, net: ExampleNet, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    report = b"%PDF-1.4\n" + bytes(range(256)) * 600
    big = bytes(range(251)) * (3 * 1024 * 1024 // 251 + 7)
    pathlib.Path("report.pdf").write_bytes(report)
    pathlib.Path("big.bin").write_bytes(big)

    ns = await run_example(UPLOAD_QUICK, {})
    first = ns["r"].json()
    assert first["complete"] and first["error"] is None
    assert first["content_length"] == first["body_bytes"]  # framed by Content-Length
    assert first["transfer_encoding"] is None
    assert [p["name"] for p in first["parts"]] == ["user", "note", "avatar", "report"]
    parts = parts_by_name(first)
    assert parts["note"]["value"] == "quarterly report"
    assert parts["avatar"]["filename"] == "me.png"
    assert parts["avatar"]["content_type"] == "image/png"
    assert parts["report"]["filename"] == "report.pdf"
    assert parts["report"]["content_type"] == "application/pdf"
    assert parts["report"]["sha256"] == hashlib.sha256(report).hexdigest()

    ns = await run_example(UPLOAD_ENCODER, {})
    [response] = net.responses[1:]
    second = response.json()
    assert second["complete"] and second["content_length"] == second["body_bytes"]
    assert second["content_type"] == ns["encoder"].content_type
    assert [p["name"] for p in second["parts"]] == ["user", "file"]
    assert parts_by_name(second)["user"]["value"] == "alice"
    file_part = parts_by_name(second)["file"]
    assert (file_part["filename"], file_part["size"]) == ("big.bin", len(big))
    assert file_part["sha256"] == hashlib.sha256(big).hexdigest()
    assert file_part["content_type"] == "application/octet-stream"


# --- retries, circuit breaker, telemetry (answered by MockTransport) ------------------


class Scripted:
    """A scripted server: each request takes the next step of `script` (a
    status code to answer, or an exception to raise); 200 once it runs out."""

    def __init__(self, *script: int | BaseException) -> None:
        self.script = list(script)
        self.seen: list[hyperhttp.Request] = []

    def __call__(self, request: hyperhttp.Request) -> hyperhttp.Response:
        self.seen.append(request)
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, BaseException):
            raise step
        return hyperhttp.Response(step, json={"attempt": len(self.seen)})


async def test_retry_policy_example(loop_name: str, net: ExampleNet) -> None:
    net.handler = server = Scripted(503, 502)
    ns = await run_example(RETRY_POLICY, {})
    assert ns["response"].status_code == 200
    assert ns["response"].json() == {"attempt": 3}
    assert [str(r.url) for r in server.seen] == ["https://api.example.com/things"] * 3
    policy = ns["retry_policy"]
    assert policy.max_retries == 5
    assert policy.status_force_list == frozenset({429, 500, 502, 503, 504})


async def test_retry_decorrelated_example(loop_name: str, net: ExampleNet) -> None:
    net.handler = Scripted()
    ns = await run_example(RETRY_DECORRELATED, await run_example(RETRY_POLICY, {}))
    policy = ns["retry_policy"]
    assert isinstance(policy.backoff_strategy, ns["DecorrelatedJitterBackoff"])
    assert policy.max_retries == 5
    net.handler = server = Scripted(hyperhttp.ConnectError("connection refused"))
    async with hyperhttp.Client(retry=policy) as client:
        response = await client.get("https://api.example.com/things")
    assert response.json() == {"attempt": 2}
    assert len(server.seen) == 2


async def test_retry_per_request_example(loop_name: str, net: ExampleNet) -> None:
    # The example's `client`: one whose policy would retry this POST (by
    # default a POST that may have reached the server is never sent again).
    net.handler = Scripted()
    ns = await run_example(RETRY_POLICY, {})
    policy = dataclasses.replace(ns["retry_policy"], retry_non_idempotent=True)
    net.handler = server = Scripted(503, 503)
    async with hyperhttp.Client(retry=policy) as client:
        ns.update(client=client, url="https://api.example.com/things", payload={"n": 1})
        retried = await client.post(ns["url"], json=ns["payload"])
        assert retried.json() == {"attempt": 3}
        net.handler = server = Scripted(503, 503)
        await run_example(RETRY_PER_REQUEST, ns)
    assert len(server.seen) == 1
    assert net.responses[-1].status_code == 503
    assert server.seen[0].content == b'{"n":1}'


async def test_circuit_breaker_example(
    loop_name: str, net: ExampleNet, capsys: pytest.CaptureFixture[str]
) -> None:
    page = {"Client": hyperhttp.Client, "hyperhttp": hyperhttp}  # imported earlier on the page
    net.handler = Scripted()
    ns = await run_example(CIRCUIT_BREAKER, page)
    assert ns["response"].status_code == 200
    assert capsys.readouterr().out == ""
    # The host starts refusing connections: five failures open the breaker.
    net.handler = refusing = Scripted(*[hyperhttp.ConnectError("refused")] * 5)
    async with hyperhttp.Client(circuit_breaker_manager=ns["cb"]) as client:
        for _ in range(5):
            with pytest.raises(hyperhttp.ConnectError):
                await client.get("https://api.example.com/things")
    # The example's request now fails fast, without reaching the host.
    _, found, block = CIRCUIT_BREAKER.partition("async with")
    assert found
    await run_example(found + block, ns)
    out = capsys.readouterr().out
    assert re.fullmatch(r"api\.example\.com:443 unhealthy for another (29\.\d|30\.0)s\n", out)
    assert len(refusing.seen) == 5


async def test_telemetry_example(loop_name: str, net: ExampleNet) -> None:
    net.handler = Scripted()
    ns = await run_example(TELEMETRY, {"Client": hyperhttp.Client})
    [client] = net.clients
    assert isinstance(client.telemetry, ns["MyTelemetry"])
    assert isinstance(client.telemetry, ns["ErrorTelemetry"])
    calls: list[tuple[int, str, int | None]] = []

    example_class: Any = ns["MyTelemetry"]

    class Recording(example_class):  # type: ignore[misc]
        def record_attempt(self, retry_state: Any, outcome: Any) -> Any:
            calls.append((retry_state.attempt, outcome, retry_state.status_code))
            return super().record_attempt(retry_state, outcome)

    net.handler = Scripted(503)
    policy = RetryPolicy(max_retries=2, backoff_strategy=ExponentialBackoff(base=0.001))
    async with hyperhttp.Client(telemetry=Recording(), retry=policy) as client:
        await client.get("https://api.example.com/things")
    assert calls == [(1, "retry", 503), (2, "success", 200)]


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture
def tls_files(
    example_servers: ExampleServers, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> pathlib.Path:
    """The files the TLS examples name, in the working directory."""
    certs = example_servers.certs
    monkeypatch.chdir(tmp_path)
    for name in ("client-cert.pem", "client.pem"):
        (tmp_path / name).write_bytes(certs.client_cert_path.read_bytes())
    for name in ("client-key.pem", "client.key"):
        (tmp_path / name).write_bytes(certs.client_key_path.read_bytes())
    (tmp_path / "ca-bundle.pem").write_bytes(certs.ca_pem_path.read_bytes())
    return tmp_path


async def test_tls_ssl_context_example(
    loop_name: str, net: ExampleNet, tls_files: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ssl.create_default_context() trusts the system store: make that the test CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files / "ca-bundle.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tls_files))
    ns = await run_example(TLS_CONTEXT, {"hyperhttp": hyperhttp})
    client = ns["client"]
    try:
        r = await client.get("https://secure.example.com/whoami")  # requires a client cert
    finally:
        await client.aclose()
    assert (r.status_code, r.http_version) == (200, "HTTP/2")
    assert net.servers.mtls.stats.requests == 1
    # The same server turns away a client without the certificate.
    async with hyperhttp.Client(verify=str(tls_files / "ca-bundle.pem")) as plain:
        with pytest.raises(hyperhttp.TransportError):
            await plain.get("https://secure.example.com/whoami")


async def test_tls_toggles_example(
    loop_name: str, net: ExampleNet, tls_files: pathlib.Path
) -> None:
    source = TLS_TOGGLES.replace(CA_BUNDLE_PATH, str(tls_files / "ca-bundle.pem"))
    assert source != TLS_TOGGLES
    with pytest.warns(hyperhttp.InsecureTLSWarning, match="verify=False"):
        await run_example(source, {"hyperhttp": hyperhttp})
    insecure, custom_ca, mutual = net.clients
    net.route("wrong.example.net", 443, v4(net.servers.https.port))
    try:
        # verify=False: neither the CA nor the name is checked.
        unchecked = await insecure.get("https://wrong.example.net/things")
        # verify=<bundle>: the server's certificate chains to that CA.
        verified = await custom_ca.get("https://api.example.com/things")
        with pytest.raises(hyperhttp.TLSError, match=r"wrong\.example\.net"):
            await custom_ca.get("https://wrong.example.net/things")
        # cert=(cert, key): accepted by a server that requires a client certificate.
        mutual_tls = await mutual.get("https://secure.example.com/things")
    finally:
        await net.close_clients()
    assert unchecked.status_code == verified.status_code == mutual_tls.status_code == 200
    assert net.servers.mtls.stats.requests == 1
    # Without the bundle, the test CA is unknown (certifi's store).
    async with net.real_client() as default:
        with pytest.raises(hyperhttp.TLSError, match="certificate verify failed"):
            await default.get("https://api.example.com/things")


# --- DNS and Happy Eyeballs, user agent ---------------------------------------------


async def test_dns_happy_eyeballs_example(loop_name: str, net: ExampleNet) -> None:
    ns = await run_example(DNS_HAPPY_EYEBALLS, {"hyperhttp": hyperhttp})
    client = ns["client"]
    assert client.timeout.connect == 10.0
    assert client.timeout.read == 30.0
    # A dual-stack name whose IPv6 address refuses: the IPv4 one is raced in.
    with socket.socket(socket.AF_INET6) as refusing:
        refusing.bind(("::1", 0))  # bound, never listening: connections are refused
        v6 = (int(socket.AF_INET6), ("::1", refusing.getsockname()[1], 0, 0))
        net.route("api.example.com", 80, v6, v4(net.servers.http.port))
        try:
            # Two connections (the server closes each), one lookup.
            for path in ("/one", "/two"):
                r = await client.get(f"http://api.example.com{path}", headers={"Connection": "close"})
                assert r.status_code == 200
        finally:
            await client.aclose()
    assert net.servers.http.stats.connection_count == 2
    assert net.lookups == [("api.example.com", 80)]


async def test_user_agent_example(loop_name: str, net: ExampleNet) -> None:
    ns = await run_example(USER_AGENT, {"hyperhttp": hyperhttp})
    client = ns["client"]
    try:
        custom = await client.get("https://api.example.com/things")
    finally:
        await client.aclose()
    async with hyperhttp.Client() as default_client:
        default = await default_client.get("https://api.example.com/things")
    assert header(custom.json(), "user-agent") == "my-service/1.2.3"
    assert header(default.json(), "user-agent") == f"hyperhttp/{hyperhttp.__version__}"


# --- basic-usage.md ----------------------------------------------------------------------


def _sketch_calls() -> dict[str, ast.Call]:
    tree = ast.parse(BASIC_USAGE_CLIENT.strip())
    calls: dict[str, ast.Call] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            calls.setdefault(node.func.attr, node)
    return calls


def test_basic_usage_client_sketch_matches_the_code() -> None:
    """The sketch shows every Client option with its default: each must be a
    parameter of `Client.__init__` with exactly that default."""
    compile(BASIC_USAGE_CLIENT, "<basic-usage>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    parameters = inspect.signature(hyperhttp.Client.__init__).parameters
    shown = _sketch_calls()["Client"].keywords
    assert len(shown) == 27
    for keyword in shown:
        assert keyword.arg is not None and keyword.arg in parameters, keyword.arg
        value = keyword.value
        if keyword.arg == "base_url" or isinstance(value, ast.Set):
            continue  # an example value or a `{...}` placeholder, not a default
        assert ast.literal_eval(value) == parameters[keyword.arg].default, keyword.arg


async def test_basic_usage_call_shapes_run(loop_name: str, net: ExampleNet) -> None:
    """Every keyword the sketch passes to get() and post() does what it says,
    and the other verbs it names exist and send their method."""
    seen: list[hyperhttp.Request] = []

    def handler(request: hyperhttp.Request) -> hyperhttp.Response:
        seen.append(request)
        if request.url.path == "/moved":
            return hyperhttp.Response(302, headers={"Location": "/landed"})
        return hyperhttp.Response(200, text="ok")

    net.handler = handler
    calls = _sketch_calls()
    get_args = {k.arg: k.value for k in calls["get"].keywords}
    post_args = {k.arg: k.value for k in calls["post"].keywords}
    assert set(get_args) == {
        "params", "headers", "cookies", "auth", "timeout", "follow_redirects", "retry"
    }
    assert set(post_args) == {"content", "data", "files", "json"}

    async def chunks() -> Any:
        yield b"streamed "
        yield b"body"

    async with hyperhttp.Client(base_url="https://api.example.com") as client:
        r = await client.get(
            "/moved", params={"q": "1"}, headers={"X-A": "b"}, cookies={"c": "d"},
            auth=("u", "p"), timeout=5.0, follow_redirects=True, retry=False,
        )
        assert [str(x.url) for x in (*r.history, r)] == [
            "https://api.example.com/moved?q=1", "https://api.example.com/landed"
        ]
        sent = seen[0]
        assert sent.headers["x-a"] == "b" and sent.headers["cookie"] == "c=d"
        assert sent.headers["authorization"] == basic("u", "p")
        assert sent.extensions["timeout"] == hyperhttp.Timeout(5.0)
        bodies = [
            {"content": b"raw"}, {"content": chunks()}, {"data": {"k": "v"}},
            {"files": {"f": ("a.txt", b"file")}}, {"json": {"k": [1]}},
        ]
        for kwargs in bodies:
            await client.post("/p", **kwargs)
        for verb in ("put", "patch", "delete", "head", "options"):
            await getattr(client, verb)("/v")
        await client.request("TRACE", "/v")
    posted = seen[2:7]
    assert posted[0].content == b"raw"
    assert posted[1].headers["transfer-encoding"] == "chunked"
    assert posted[2].content == b"k=v"
    assert posted[3].headers["content-type"].startswith("multipart/form-data; boundary=")
    assert (posted[4].headers["content-type"], posted[4].content) == (
        "application/json", b'{"k":[1]}'
    )
    assert [x.method for x in seen[7:]] == ["PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]


# --- our own pages ------------------------------------------------------------------------

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
PAGES = ("index.md", "basic-usage.md", "http2.md", "connections.md")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", PAGES)
def test_documentation_examples_compile(page: str) -> None:
    blocks = PYTHON_BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))
    assert blocks
    for block in blocks:
        compile(block, f"<{page}>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
