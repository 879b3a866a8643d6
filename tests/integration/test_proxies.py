"""Proxies end to end: routing, environment, NO_PROXY, credentials, errors, pooling.

Two kinds of proxy run on 127.0.0.1: our `RecordingProxy`
(tests/support/proxies.py), which shows exactly which bytes it received on
each client connection, and the real proxy.py from PyPI in a subprocess
(with Basic authentication, and with TLS on its listening side). Origins are
the shared hypercorn servers; ``https_server`` offers h2 and http/1.1 by
ALPN, ``https_h1_server`` only http/1.1.

The decision layer (parsing, NO_PROXY matching, the CONNECT head) has unit
tests in tests/unit/test_proxy_config.py; here every case goes through a
`Client` and real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import hyperhttp
from hyperhttp._transport.dns import Address, DNSCache
from hyperhttp.errors.retry import RetryPolicy
from hyperhttp.utils.backoff import ExponentialBackoff
from tests.support.certs import TestCerts
from tests.support.fixtures import RawServerFactory
from tests.support.proxies import ProxyPy, RecordingProxy, start_recording_proxy
from tests.support.raw import read_head
from tests.support.servers import ServerHandle

USER, PASSWORD = "alice", "pr0xy-s3cret"
USERINFO = f"{USER}:{PASSWORD}"
BASIC = "Basic " + base64.b64encode(USERINFO.encode()).decode()
PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")

ProxyFactory = Callable[..., RecordingProxy]


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine running the suite may have proxies configured; no test here
    # may depend on that.
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)


@pytest.fixture
def proxy_factory(certs: TestCerts) -> Iterator[ProxyFactory]:
    """``proxy_factory(tls=False, alpn=..., credentials=..., connect_status=...)``."""
    started: list[RecordingProxy] = []

    def factory(**kwargs: Any) -> RecordingProxy:
        proxy = start_recording_proxy(certs, **kwargs)
        started.append(proxy)
        return proxy

    yield factory
    errors = [e for p in started for e in p.handler_errors]
    for proxy in started:
        proxy.stop()
    assert errors == [], errors


@pytest.fixture
def recording_proxy(proxy_factory: ProxyFactory) -> RecordingProxy:
    return proxy_factory()


@pytest.fixture
def tls_proxy(proxy_factory: ProxyFactory) -> RecordingProxy:
    return proxy_factory(tls=True)


@pytest.fixture(scope="module")
def proxy_py(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyPy]:
    """proxy.py requiring Basic credentials USER:PASSWORD."""
    proxy = ProxyPy(tmp_path_factory.mktemp("proxy-py"), basic_auth=USERINFO).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def proxy_py_tls(tmp_path_factory: pytest.TempPathFactory, certs: TestCerts) -> Iterator[ProxyPy]:
    """proxy.py listening with TLS (the test server certificate)."""
    proxy = ProxyPy(tmp_path_factory.mktemp("proxy-py-tls"), certs=certs).start()
    yield proxy
    proxy.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _connect_head(host: str, port: int, auth: str | None = None) -> bytes:
    lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
    if auth is not None:
        lines.append(f"Proxy-Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _echo_headers(response: hyperhttp.Response) -> dict[str, str]:
    return {name: value for name, value in response.json()["headers"]}


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks5h", "socks4"])
def test_socks_proxy_is_refused_when_the_client_is_built(scheme: str) -> None:
    with pytest.raises(hyperhttp.InvalidURL, match="SOCKS") as caught:
        hyperhttp.Client(proxies=f"{scheme}://{USERINFO}@127.0.0.1:1080")
    assert PASSWORD not in str(caught.value)


def test_socks_proxy_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALL_PROXY", f"socks5://{USERINFO}@127.0.0.1:1080")
    with pytest.raises(hyperhttp.InvalidURL, match="ALL_PROXY") as caught:
        hyperhttp.Client()
    assert PASSWORD not in str(caught.value)
    hyperhttp.Client(trust_env=False)  # ignored entirely


async def test_one_proxy_url_serves_both_schemes(
    loop_name: str,
    recording_proxy: RecordingProxy,
    http_server: ServerHandle,
    https_server: ServerHandle,
    ca_pem_path: str,
) -> None:
    async with hyperhttp.Client(proxies=recording_proxy.url, verify=ca_pem_path) as client:
        plain = await client.get(http_server.url + "/echo")
        secure = await client.get(https_server.url + "/echo")
    assert (plain.status_code, secure.status_code) == (200, 200)
    methods = sorted(r.method for r in recording_proxy.requests)
    assert methods == ["CONNECT", "GET"]


async def test_per_scheme_dict_and_none_goes_direct(
    loop_name: str,
    recording_proxy: RecordingProxy,
    http_server: ServerHandle,
    https_server: ServerHandle,
    ca_pem_path: str,
) -> None:
    proxies = {"http": recording_proxy.url, "https": None}
    async with hyperhttp.Client(proxies=proxies, verify=ca_pem_path) as client:
        await client.get(https_server.url + "/echo")
        assert recording_proxy.connections == []
        await client.get(http_server.url + "/echo")
    assert [(r.method, r.target) for r in recording_proxy.requests] == [
        ("GET", http_server.url + "/echo")
    ]
    assert https_server.stats.requests == 1


async def test_explicit_proxies_override_the_environment(
    loop_name: str,
    monkeypatch: pytest.MonkeyPatch,
    proxy_factory: ProxyFactory,
    http_server: ServerHandle,
) -> None:
    from_env, explicit = proxy_factory(), proxy_factory()
    monkeypatch.setenv("HTTP_PROXY", from_env.url)
    monkeypatch.setenv("NO_PROXY", "*")  # replaced too: explicit proxies= is the whole truth
    async with hyperhttp.Client(proxies=explicit.url) as client:
        assert (await client.get(http_server.url + "/echo")).status_code == 200
    async with hyperhttp.Client(proxies={"http": None}) as client:
        assert (await client.get(http_server.url + "/echo")).status_code == 200
    assert len(explicit.requests) == 1
    assert from_env.connections == []
    assert http_server.stats.requests == 2


# --- environment ------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
async def test_environment_proxy_for_http_targets(
    loop_name: str,
    variable: str,
    monkeypatch: pytest.MonkeyPatch,
    recording_proxy: RecordingProxy,
    http_server: ServerHandle,
) -> None:
    monkeypatch.setenv(variable, recording_proxy.url)
    async with hyperhttp.Client() as client:
        response = await client.get(http_server.url + "/echo")
    assert response.status_code == 200
    assert [r.target for r in recording_proxy.requests] == [http_server.url + "/echo"]


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY"])
async def test_environment_proxy_for_https_targets(
    loop_name: str,
    variable: str,
    monkeypatch: pytest.MonkeyPatch,
    recording_proxy: RecordingProxy,
    https_server: ServerHandle,
    ca_pem_path: str,
) -> None:
    monkeypatch.setenv(variable, recording_proxy.url)
    async with hyperhttp.Client(verify=ca_pem_path) as client:
        response = await client.get(https_server.url + "/echo")
    assert response.status_code == 200
    assert [r.method for r in recording_proxy.requests] == ["CONNECT"]


async def test_https_proxy_variable_does_not_apply_to_http_targets(
    loop_name: str,
    monkeypatch: pytest.MonkeyPatch,
    recording_proxy: RecordingProxy,
    http_server: ServerHandle,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", recording_proxy.url)
    async with hyperhttp.Client() as client:
        assert (await client.get(http_server.url + "/echo")).status_code == 200
    assert recording_proxy.connections == []


async def test_trust_env_false_ignores_the_environment(
    loop_name: str,
    monkeypatch: pytest.MonkeyPatch,
    recording_proxy: RecordingProxy,
    http_server: ServerHandle,
    https_server: ServerHandle,
    ca_pem_path: str,
) -> None:
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(variable, recording_proxy.url)
    async with hyperhttp.Client(trust_env=False, verify=ca_pem_path) as client:
        await client.get(http_server.url + "/echo")
        await client.get(https_server.url + "/echo")
    assert recording_proxy.connections == []
    assert http_server.stats.requests == https_server.stats.requests == 1


# --- NO_PROXY -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "no_proxy",
    ["127.0.0.1", "127.0.0.0/8", "{port_entry}", "other.test, 127.0.0.1", "*", "example.com,*"],
)
async def test_no_proxy_bypasses_the_proxy(
    loop_name: str,
    no_proxy: str,
    monkeypatch: pytest.MonkeyPatch,
    recording_proxy: RecordingProxy,
    http_server: ServerHandle,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", recording_proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port_entry=f"127.0.0.1:{http_server.port}"))
    async with hyperhttp.Client() as client:
        response = await client.get(http_server.url + "/echo")
    assert response.json()["path"] == "/echo"
    assert recording_proxy.connections == []  # the proxy saw nothing at all


@pytest.mark.parametrize("no_proxy", ["127.0.0.1:{other}", "10.0.0.0/8", "::1/128", "localhost"])
async def test_no_proxy_entries_that_do_not_match_leave_the_proxy_in_place(
    loop_name: str,
    no_proxy: str,
    monkeypatch: pytest.MonkeyPatch,
    recording_proxy: RecordingProxy,
    http_server: ServerHandle,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", recording_proxy.url)
    monkeypatch.setenv("no_proxy", no_proxy.format(other=http_server.port + 1))
    async with hyperhttp.Client() as client:
        assert (await client.get(http_server.url + "/echo")).status_code == 200
    assert [r.target for r in recording_proxy.requests] == [http_server.url + "/echo"]


@pytest.mark.parametrize("no_proxy", ["::1", "[::1]", "::1/128", "::/0", "[::1]:{port}"])
async def test_no_proxy_ipv6_literals_and_ranges(
    loop_name: str,
    no_proxy: str,
    monkeypatch: pytest.MonkeyPatch,
    recording_proxy: RecordingProxy,
    http_server_ipv6: ServerHandle,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", recording_proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port=http_server_ipv6.port))
    async with hyperhttp.Client() as client:
        response = await client.get(http_server_ipv6.url + "/echo")
    assert response.status_code == 200
    assert recording_proxy.connections == []


@pytest.mark.parametrize(
    ("entry", "bypassed"),
    [("::1%{zone}", True), ("[::1%{zone}]:{port}", True), ("::1", True), ("::1%no-such-if0", False)],
)
async def test_no_proxy_ipv6_zones(
    loop_name: str,
    entry: str,
    bypassed: bool,
    monkeypatch: pytest.MonkeyPatch,
    recording_proxy: RecordingProxy,
    http_server_ipv6: ServerHandle,
) -> None:
    """A URL with a zone ([::1%25lo]) goes direct for an entry naming that
    zone or the bare address, and through the proxy for another zone."""
    zone = socket.if_indextoname(1)  # the loopback interface: "lo" on Linux
    port = http_server_ipv6.port
    monkeypatch.setenv("HTTP_PROXY", recording_proxy.url)
    monkeypatch.setenv("NO_PROXY", entry.format(zone=zone, port=port))
    url = f"http://[::1%25{zone}]:{port}/echo"
    async with hyperhttp.Client() as client:
        response = await client.get(url)
    if bypassed:
        assert response.json()["path"] == "/echo"
        assert recording_proxy.connections == []
    else:
        # The zone means something on this host only: the proxy gets the
        # address without it (RFC 6874 section 4).
        assert [r.target for r in recording_proxy.requests] == [f"http://[::1]:{port}/echo"]


@pytest.mark.parametrize(
    ("no_proxy", "bypassed"),
    [
        ("internal.test", {"internal.test", "svc.internal.test"}),
        (".internal.test", {"svc.internal.test"}),
        ("*.internal.test", {"svc.internal.test"}),
        ("svc.internal.test", {"svc.internal.test"}),
    ],
)
async def test_no_proxy_host_names_and_suffixes(
    loop_name: str,
    no_proxy: str,
    bypassed: set[str],
    monkeypatch: pytest.MonkeyPatch,
    recording_proxy: RecordingProxy,
    http_server: ServerHandle,
) -> None:
    # Made-up names resolve to the loopback server, for the client and the proxy.
    names = ("internal.test", "svc.internal.test", "internal.test.evil")

    async def resolver(host: str, port: int) -> list[Address]:
        return [(int(socket.AF_INET), ("127.0.0.1", port))]

    recording_proxy.hosts.update({name: "127.0.0.1" for name in names})
    monkeypatch.setenv("HTTP_PROXY", recording_proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    transport = hyperhttp.HTTPTransport(dns=DNSCache(resolver=resolver))
    async with hyperhttp.Client(transport=transport) as client:
        for name in names:
            response = await client.get(f"http://{name}:{http_server.port}/echo")
            assert response.json()["path"] == "/echo"
    proxied = {r.target.split("//")[1].split(":")[0] for r in recording_proxy.requests}
    assert proxied == set(names) - bypassed


# --- the routing table ----------------------------------------------------------------


async def test_http_target_via_http_proxy_uses_absolute_form(
    loop_name: str, recording_proxy: RecordingProxy, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(proxies=recording_proxy.url, http2=True) as client:
        response = await client.post(http_server.url + "/echo/x?q=1", content=b"payload")
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"  # plain HTTP over a proxy is always 1.1
    echoed = response.json()
    assert (echoed["path"], echoed["query"], echoed["body"]) == ("/echo/x", "q=1", "payload")
    (conn,) = recording_proxy.connections
    (request,) = conn.requests
    assert (request.method, request.target) == ("POST", http_server.url + "/echo/x?q=1")
    assert request.header_values("host") == [f"127.0.0.1:{http_server.port}"]
    assert request.header_values("proxy-authorization") == []
    assert conn.received.startswith(f"POST {http_server.url}/echo/x?q=1 HTTP/1.1\r\n".encode())
    assert conn.received.endswith(b"\r\n\r\npayload")


async def test_http_target_via_https_proxy(
    loop_name: str, tls_proxy: RecordingProxy, http_server: ServerHandle, ca_pem_path: str
) -> None:
    assert tls_proxy.url.startswith("https://localhost:")
    async with hyperhttp.Client(proxies=tls_proxy.url, verify=ca_pem_path) as client:
        first = await client.get(http_server.url + "/echo")
        second = await client.get(http_server.url + "/echo?again=1")
    assert first.http_version == second.http_version == "HTTP/1.1"
    # The proxy read plaintext after its TLS handshake: TLS was to the proxy.
    (conn,) = tls_proxy.connections
    assert [r.target for r in conn.requests] == [
        http_server.url + "/echo",
        http_server.url + "/echo?again=1",
    ]


async def test_https_target_via_http_proxy_is_http2_through_the_tunnel(
    loop_name: str, recording_proxy: RecordingProxy, https_server: ServerHandle, ca_pem_path: str
) -> None:
    async with hyperhttp.Client(proxies=recording_proxy.url, verify=ca_pem_path) as client:
        response = await client.get(https_server.url + "/echo?x=1")
    assert response.status_code == 200
    assert response.http_version == "HTTP/2"
    assert response.json()["http_version"] == "HTTP/2"
    assert response.json()["scheme"] == "https"
    (conn,) = recording_proxy.connections
    assert bytes(conn.received) == _connect_head("localhost", https_server.port)
    assert conn.tunnel == f"localhost:{https_server.port}"
    assert conn.tunnel_bytes > 0
    # The request itself only ever crossed the proxy encrypted.
    assert b"/echo" not in conn.received


async def test_https_target_http11_through_the_tunnel(
    loop_name: str, recording_proxy: RecordingProxy, https_server: ServerHandle, ca_pem_path: str
) -> None:
    async with hyperhttp.Client(
        proxies=recording_proxy.url, verify=ca_pem_path, http2=False
    ) as client:
        response = await client.get(https_server.url + "/echo")
    assert response.http_version == "HTTP/1.1"
    assert response.json()["http_version"] == "HTTP/1.1"
    assert [r.method for r in recording_proxy.requests] == ["CONNECT"]


async def test_https_target_via_https_proxy_tls_inside_tls(
    loop_name: str, tls_proxy: RecordingProxy, https_server: ServerHandle, ca_pem_path: str
) -> None:
    async with hyperhttp.Client(proxies=tls_proxy.url, verify=ca_pem_path) as client:
        responses = [await client.get(https_server.url + f"/echo?n={i}") for i in range(3)]
    assert [r.http_version for r in responses] == ["HTTP/2"] * 3
    assert [r.json()["query"] for r in responses] == ["n=0", "n=1", "n=2"]
    (conn,) = tls_proxy.connections
    assert bytes(conn.received) == _connect_head("localhost", https_server.port)
    assert conn.tunnel_bytes > 0


# --- proxy.py, a real forward proxy -------------------------------------------------------


async def test_proxy_py_with_basic_auth_forwards_and_tunnels(
    loop_name: str,
    proxy_py: ProxyPy,
    http_server: ServerHandle,
    https_h1_server: ServerHandle,
    ca_pem_path: str,
) -> None:
    async with hyperhttp.Client(proxies=proxy_py.url_with(USERINFO), verify=ca_pem_path) as client:
        plain = await client.get(http_server.url + "/echo?via=proxy.py")
        secure = await client.get(https_h1_server.url + "/echo")
    assert plain.status_code == secure.status_code == 200
    assert plain.json()["query"] == "via=proxy.py"
    assert plain.http_version == secure.http_version == "HTTP/1.1"
    assert "proxy-authorization" not in _echo_headers(secure)
    assert http_server.stats.requests == https_h1_server.stats.requests == 1


async def test_proxy_py_rejects_wrong_credentials(
    loop_name: str,
    proxy_py: ProxyPy,
    http_server: ServerHandle,
    https_h1_server: ServerHandle,
    ca_pem_path: str,
) -> None:
    bad = proxy_py.url_with(f"{USER}:wrong-{PASSWORD}")
    async with hyperhttp.Client(proxies=bad, verify=ca_pem_path) as client:
        with pytest.raises(hyperhttp.ProxyError) as caught:
            await client.get(https_h1_server.url + "/echo")
        # Forwarded plain HTTP: the proxy's 407 is an ordinary response.
        plain = await client.get(http_server.url + "/echo")
    assert caught.value.status_code == 407
    assert "rejected the credentials" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert plain.status_code == 407
    assert http_server.stats.requests == https_h1_server.stats.requests == 0


async def test_proxy_py_over_tls(
    loop_name: str,
    proxy_py_tls: ProxyPy,
    http_server: ServerHandle,
    https_server: ServerHandle,
    ca_pem_path: str,
) -> None:
    assert proxy_py_tls.url.startswith("https://")
    async with hyperhttp.Client(proxies=proxy_py_tls.url, verify=ca_pem_path) as client:
        plain = await client.get(http_server.url + "/echo")
        secure = await client.get(https_server.url + "/echo")
    assert plain.status_code == secure.status_code == 200
    assert plain.http_version == "HTTP/1.1"
    assert secure.http_version == "HTTP/2"


# --- credentials -----------------------------------------------------------------------


async def test_tunnel_credentials_go_only_on_the_connect_line(
    loop_name: str,
    proxy_factory: ProxyFactory,
    https_h1_server: ServerHandle,
    https_server: ServerHandle,
    ca_pem_path: str,
) -> None:
    proxy = proxy_factory(credentials=(USER, PASSWORD))
    async with hyperhttp.Client(proxies=proxy.url_with(USERINFO), verify=ca_pem_path) as client:
        h1 = await client.get(https_h1_server.url + "/echo")
        h2 = await client.get(https_server.url + "/echo")
    for response in (h1, h2):
        headers = _echo_headers(response)
        assert "proxy-authorization" not in headers
        assert all(PASSWORD not in v and USER not in v for v in headers.values())
    first, second = proxy.connections
    assert bytes(first.received) == _connect_head("localhost", https_h1_server.port, BASIC)
    assert bytes(second.received) == _connect_head("localhost", https_server.port, BASIC)
    assert PASSWORD.encode() not in first.received + second.received


async def test_forwarded_requests_carry_proxy_authorization_every_time(
    loop_name: str, proxy_factory: ProxyFactory, http_server: ServerHandle
) -> None:
    proxy = proxy_factory(credentials=(USER, PASSWORD))
    async with hyperhttp.Client(proxies=proxy.url_with(USERINFO)) as client:
        for _ in range(2):
            assert (await client.get(http_server.url + "/echo")).status_code == 200
    (conn,) = proxy.connections
    assert [r.header_values("proxy-authorization") for r in conn.requests] == [[BASIC], [BASIC]]
    assert [r.target for r in conn.requests] == [http_server.url + "/echo"] * 2
    assert PASSWORD.encode() not in conn.received
    assert f"{USER}@".encode() not in conn.received


async def test_hooks_never_see_the_forward_proxys_credential(
    loop_name: str, proxy_factory: ProxyFactory, http_server: ServerHandle
) -> None:
    # The Proxy-Authorization value rode in request.extensions, where a
    # response hook logging the request (or its extensions) printed it.
    proxy = proxy_factory(credentials=(USER, PASSWORD))
    seen: list[str] = []

    async def log(response: hyperhttp.Response) -> None:
        request = response.request
        seen.append(f"{request!r} {request.headers!r} {request.extensions!r}")

    async with hyperhttp.Client(
        proxies=proxy.url_with(USERINFO), event_hooks={"response": [log]}
    ) as client:
        for _ in range(2):  # a fresh proxy connection, then a reused one
            assert (await client.get(http_server.url + "/echo")).status_code == 200
    assert len(seen) == 2
    assert not [text for text in seen if BASIC.split()[1] in text or PASSWORD in text]
    (conn,) = proxy.connections
    assert [r.header_values("proxy-authorization") for r in conn.requests] == [[BASIC], [BASIC]]


@pytest.mark.parametrize("target", ["http", "https"])
async def test_redirect_from_a_forwarded_request_does_not_leak_proxy_state(
    loop_name: str,
    target: str,
    proxy_factory: ProxyFactory,
    http_server: ServerHandle,
    https_h1_server: ServerHandle,
    ca_pem_path: str,
) -> None:
    # Hop 1 is forwarded through the proxy (absolute-form, Proxy-Authorization).
    # Hop 2 goes direct (NO_PROXY) or through a CONNECT tunnel: its origin must
    # see an origin-form target and no proxy credentials.
    proxy = proxy_factory(credentials=(USER, PASSWORD))
    proxies = {"http": proxy.url_with(USERINFO), "https": proxy.url_with(USERINFO),
               "no_proxy": "localhost"}
    final = (
        f"http://localhost:{http_server.port}/echo"
        if target == "http"
        else f"https://127.0.0.1:{https_h1_server.port}/echo"
    )
    start = f"{http_server.url}/redirect-to?url={final}"
    async with hyperhttp.Client(
        proxies=proxies, verify=ca_pem_path, follow_redirects=True, max_redirects=3
    ) as client:
        response = await client.get(start)
    assert response.status_code == 200
    assert len(response.history) == 1
    assert response.json()["path"] == "/echo"
    assert "proxy-authorization" not in _echo_headers(response)


async def test_407_on_connect_without_credentials(
    loop_name: str,
    proxy_factory: ProxyFactory,
    https_server: ServerHandle,
    ca_pem_path: str,
) -> None:
    proxy = proxy_factory(credentials=(USER, PASSWORD))
    async with hyperhttp.Client(proxies=proxy.url, verify=ca_pem_path) as client:
        with pytest.raises(hyperhttp.ProxyError) as caught:
            await client.get(https_server.url + "/echo")
    assert caught.value.status_code == 407
    assert f"127.0.0.1:{proxy.port}" in str(caught.value)
    assert "no credentials were given" in str(caught.value)
    assert https_server.stats.requests == 0


@pytest.mark.parametrize("status", [403, 502, 301])
async def test_non_2xx_answer_to_connect_is_a_proxy_error(
    loop_name: str,
    status: int,
    proxy_factory: ProxyFactory,
    https_server: ServerHandle,
    ca_pem_path: str,
) -> None:
    proxy = proxy_factory(connect_status=status)
    async with hyperhttp.Client(proxies=proxy.url, verify=ca_pem_path) as client:
        with pytest.raises(hyperhttp.ProxyError) as caught:
            await client.get(https_server.url + "/echo")
        assert client.get_pool_stats() == {}  # the failed tunnel left nothing behind
    assert caught.value.status_code == status
    assert f"proxy http://127.0.0.1:{proxy.port}" in str(caught.value)
    assert https_server.stats.requests == 0


INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED"


@pytest.mark.parametrize("origin", ["https_server", "https_h1_server"])
async def test_bytes_after_the_200_to_connect_are_refused_not_read_as_the_origin(
    loop_name: str,
    origin: str,
    request: pytest.FixtureRequest,
    proxy_factory: ProxyFactory,
    ca_pem_path: str,
) -> None:
    # The origin cannot speak before our ClientHello: bytes right behind the
    # proxy's 200 are the proxy's (or anyone's on the cleartext hop), and
    # were handed to the caller as the verified origin's answer.
    server: ServerHandle = request.getfixturevalue(origin)
    proxy = proxy_factory(connect_answer=b"HTTP/1.1 200 Connection established\r\n\r\n" + INJECTED)
    async with hyperhttp.Client(proxies=proxy.url, verify=ca_pem_path) as client:
        with pytest.raises(hyperhttp.ProxyError) as caught:
            await client.get(server.url + "/echo")
        assert client.get_pool_stats() == {}
    assert str(caught.value) == (
        f"proxy http://127.0.0.1:{proxy.port} sent {len(INJECTED)} bytes after its 200 "
        "answer to CONNECT, before the TLS handshake; they cannot come from the origin, "
        "so the tunnel was refused"
    )
    assert server.stats.requests == 0


async def test_interim_answers_before_the_200_to_connect_are_skipped(
    loop_name: str, proxy_factory: ProxyFactory, https_server: ServerHandle, ca_pem_path: str
) -> None:
    # RFC 9110 15.2: a client parses any 1xx before the final answer. Sent a
    # byte at a time, so every split of the heads is met.
    proxy = proxy_factory(
        connect_answer=b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 Connection established\r\n\r\n",
        connect_drip=0.001,
    )
    async with hyperhttp.Client(proxies=proxy.url, verify=ca_pem_path) as client:
        response = await client.get(https_server.url + "/echo")
    assert response.status_code == 200
    assert response.http_version == "HTTP/2"
    assert [c.tunnel for c in proxy.connections] == [f"localhost:{https_server.port}"]


async def test_the_connect_timeout_bounds_the_whole_tunnel_setup(
    loop_name: str, proxy_factory: ProxyFactory, https_server: ServerHandle, ca_pem_path: str
) -> None:
    # A proxy dripping its 200 (a byte every 50 ms: 2 s in all) got a fresh
    # connect timeout for every read, and the TLS handshake another.
    proxy = proxy_factory(connect_drip=0.05)
    timeout = hyperhttp.Timeout(10.0, connect=0.5)
    loop = asyncio.get_running_loop()
    async with hyperhttp.Client(proxies=proxy.url, verify=ca_pem_path, timeout=timeout) as client:
        started = loop.time()
        with pytest.raises(hyperhttp.ProxyError) as caught:
            await client.post(https_server.url + "/echo", content=b"x")
        elapsed = loop.time() - started
        assert client.get_pool_stats() == {}
    assert 0.45 <= elapsed < 1.5
    assert str(caught.value) == (
        f"proxy http://127.0.0.1:{proxy.port} did not complete the CONNECT exchange within "
        "the connect timeout (0.5s)"
    )
    assert hyperhttp.errors.was_never_sent(caught.value)  # so even a POST may be retried


@pytest.mark.parametrize("how", ["reset", "silent"])
async def test_a_proxy_failing_during_connect_is_a_proxy_error_and_a_post_is_retried(
    loop_name: str, how: str, raw_server: RawServerFactory, ca_pem_path: str
) -> None:
    # A reset or a silent proxy came out as ReadError / ReadTimeout, which
    # the retry policy takes for "maybe sent": a POST that never left was
    # not retried.
    connects = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connects
        await read_head(reader)
        connects += 1
        if how == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            await asyncio.sleep(5)

    proxy = raw_server(handler)
    policy = RetryPolicy(max_retries=2, backoff_strategy=ExponentialBackoff(base=0.0))
    timeout = hyperhttp.Timeout(10.0, connect=0.3)
    async with hyperhttp.Client(
        proxies=f"http://{USERINFO}@127.0.0.1:{proxy.port}", verify=ca_pem_path, retry=policy,
        timeout=timeout,
    ) as client:
        with pytest.raises(hyperhttp.RetryError) as caught:
            await client.post("https://origin.test:8443/upload", content=b"payload")
        assert client.get_pool_stats() == {}
    assert connects == 3
    original = caught.value.original_exception
    assert isinstance(original, hyperhttp.ProxyError)
    message = str(original)
    assert f"proxy http://{USER}:[secure]@127.0.0.1:{proxy.port}" in message
    assert PASSWORD not in message
    assert ("during CONNECT" if how == "reset" else "connect timeout (0.3s)") in message


async def test_a_proxy_name_that_does_not_resolve_is_a_proxy_error(loop_name: str) -> None:
    async def resolver(host: str, port: int) -> list[Address]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    transport = hyperhttp.HTTPTransport(
        proxies=f"http://{USERINFO}@proxy.corp.test:3128", dns=DNSCache(resolver=resolver)
    )
    async with hyperhttp.Client(transport=transport) as client:
        for url in ("http://origin.test/", "https://origin.test/"):
            with pytest.raises(hyperhttp.ProxyError) as caught:
                await client.get(url)
            assert str(caught.value) == (
                f"could not reach proxy http://{USER}:[secure]@proxy.corp.test:3128 "
                "(DNSError): Name or service not known"
            )


async def test_tunnels_to_many_origins_leave_no_per_origin_state(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    # The connector kept a route per tunnelled origin, for ever: a crawler
    # behind a proxy grew without bound. Now one entry per configured proxy.
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    proxy = raw_server(refuse)
    transport = hyperhttp.HTTPTransport(proxies=f"http://127.0.0.1:{proxy.port}")
    async with hyperhttp.Client(transport=transport) as client:
        for i in range(50):
            with pytest.raises(hyperhttp.ProxyError):
                await client.get(f"https://origin{i}.test/")
        assert len(transport.connector.proxies) == 1
        assert client.get_pool_stats() == {}


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_unreachable_proxy_is_named_not_the_origin(
    loop_name: str, scheme: str, ca_pem_path: str
) -> None:
    port = _free_port()
    proxy = f"http://{USERINFO}@127.0.0.1:{port}"
    origin = f"{scheme}://origin.invalid:8443/echo"
    async with hyperhttp.Client(proxies=proxy, verify=ca_pem_path, connect_timeout=5) as client:
        with pytest.raises((hyperhttp.ProxyError, hyperhttp.ConnectError)) as caught:
            await client.get(origin)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "could not reach proxy" in message
    assert PASSWORD not in message and PASSWORD not in repr(caught.value)


async def test_credentials_never_reach_logs_errors_or_reprs(
    loop_name: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    proxy_factory: ProxyFactory,
    http_server: ServerHandle,
    https_server: ServerHandle,
    ca_pem_path: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    good = proxy_factory(credentials=(USER, PASSWORD))
    refusing = proxy_factory(connect_status=403)
    wrong = proxy_factory(credentials=(USER, "other"))
    monkeypatch.setenv("NO_PROXY", "not a valid entry!, 300.1.2.3/99")  # logs warnings
    texts: list[str] = []
    for proxy in (good.url_with(USERINFO), refusing.url_with(USERINFO),
                  wrong.url_with(USERINFO), f"http://{USERINFO}@127.0.0.1:{_free_port()}"):
        transport = hyperhttp.HTTPTransport(verify=ca_pem_path, proxies=proxy)
        async with hyperhttp.Client(transport=transport) as client:
            for url in (http_server.url + "/echo", https_server.url + "/echo"):
                try:
                    response = await client.get(url)
                    texts += [repr(response), response.text]
                except hyperhttp.HyperHTTPError as exc:
                    texts += [str(exc), repr(exc)]
            texts += [repr(client), repr(transport.proxies), str(client.get_pool_stats())]
    texts.append(caplog.text)
    assert len(good.requests) == 2
    joined = "\n".join(texts)
    assert PASSWORD not in joined
    assert BASIC.split()[1] not in joined
    assert "[secure]" in joined  # the proxy is still named, password masked


# --- pooling through proxies --------------------------------------------------------------


async def test_tunnels_are_pooled_per_proxy_and_origin(
    loop_name: str,
    recording_proxy: RecordingProxy,
    https_server: ServerHandle,
    https_h1_server: ServerHandle,
    ca_pem_path: str,
) -> None:
    async with hyperhttp.Client(proxies=recording_proxy.url, verify=ca_pem_path) as client:
        for _ in range(3):
            assert (await client.get(https_h1_server.url + "/echo")).status_code == 200
        await asyncio.gather(*(client.get(https_server.url + "/echo") for _ in range(5)))
        await client.get(https_h1_server.url + "/echo")
    tunnels = sorted(c.tunnel or "" for c in recording_proxy.connections)
    assert tunnels == sorted(
        [f"localhost:{https_h1_server.port}", f"localhost:{https_server.port}"]
    )
    assert https_h1_server.stats.connection_count == 1
    assert https_server.stats.connection_count == 1  # five streams multiplexed in one tunnel
    assert https_server.stats.requests == 5


async def test_same_origin_through_two_proxies_uses_two_tunnels(
    loop_name: str, proxy_factory: ProxyFactory, https_h1_server: ServerHandle, ca_pem_path: str
) -> None:
    first, second = proxy_factory(), proxy_factory()
    url = https_h1_server.url + "/echo"
    async with hyperhttp.Client(proxies=first.url, verify=ca_pem_path) as one, \
            hyperhttp.Client(proxies=second.url, verify=ca_pem_path) as two:
        for _ in range(2):
            await one.get(url)
            await two.get(url)
    assert len(first.connections) == len(second.connections) == 1
    assert https_h1_server.stats.connection_count == 2


async def test_forwarded_requests_share_one_proxy_connection(
    loop_name: str, recording_proxy: RecordingProxy, http_server: ServerHandle
) -> None:
    by_ip = http_server.url
    by_name = f"http://localhost:{http_server.port}"
    async with hyperhttp.Client(proxies=recording_proxy.url) as client:
        for base in (by_ip, by_name, by_ip):
            assert (await client.get(base + "/echo")).status_code == 200
        stats = client.get_pool_stats()
    (conn,) = recording_proxy.connections  # two origins, one connection to the proxy
    assert [r.target for r in conn.requests] == [
        by_ip + "/echo", by_name + "/echo", by_ip + "/echo"
    ]
    assert len(stats) == 1
    (label,) = stats
    assert f"127.0.0.1:{recording_proxy.port}" in label


async def test_concurrent_forwarded_requests_open_parallel_proxy_connections(
    loop_name: str, recording_proxy: RecordingProxy, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(proxies=recording_proxy.url, max_connections=2) as client:
        responses = await asyncio.gather(
            *(client.get(http_server.url + "/slow?delay=0.1") for _ in range(4))
        )
    assert [r.status_code for r in responses] == [200] * 4
    assert len(recording_proxy.connections) == 2  # capped by max_connections
    assert sum(len(c.requests) for c in recording_proxy.connections) == 4


# --- TLS to an https proxy with a caller's context ----------------------------------------


async def test_https_proxy_offering_h2_with_a_callers_ssl_context(
    loop_name: str,
    proxy_factory: ProxyFactory,
    http_server: ServerHandle,
    client_ssl_context: Any,
) -> None:
    # The hop to the proxy carries HTTP/1.1 (absolute-form or CONNECT). A
    # proxy whose TLS listener also accepts h2 must therefore either be
    # offered http/1.1 only, or be refused with a ProxyError that says why;
    # never a confusing protocol error from HTTP/1.1 bytes sent to an
    # HTTP/2 peer.
    proxy = proxy_factory(tls=True, alpn=("h2", "http/1.1"))
    async with hyperhttp.Client(proxies=proxy.url, ssl_context=client_ssl_context) as client:
        try:
            response = await client.get(http_server.url + "/echo")
        except hyperhttp.ProxyError as exc:
            assert "HTTP/2" in str(exc)
            assert f"localhost:{proxy.port}" in str(exc)
        else:
            assert response.status_code == 200
            assert [c.alpn for c in proxy.connections] == ["http/1.1"]


async def test_https_proxy_hop_offers_only_http11(
    loop_name: str, proxy_factory: ProxyFactory, http_server: ServerHandle, ca_pem_path: str
) -> None:
    proxy = proxy_factory(tls=True, alpn=("h2", "http/1.1"))
    async with hyperhttp.Client(proxies=proxy.url, verify=ca_pem_path) as client:
        assert (await client.get(http_server.url + "/echo")).status_code == 200
    assert [c.alpn for c in proxy.connections] == ["http/1.1"]
