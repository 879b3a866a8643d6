"""Shared pytest fixtures: certificates, hypercorn servers and raw servers.

All fixtures are synchronous (servers run on their own threads and loops).
The hypercorn servers start once per session; the per-test fixtures
(`http_server`, `https_server`, ...) hand out the shared server after
resetting its stats, so ``server.stats`` counts only what the test did.

==================  ====================================================
certs               `TestCerts`: CA, server cert (localhost, 127.0.0.1,
                    ::1) and client cert, as PEM files
ca_pem_path         the CA PEM file path (str)
client_ssl_context  a fresh client `ssl.SSLContext` trusting the CA
mtls_client_ssl_context  same, also presenting the client certificate
http_server         cleartext HTTP/1.1 (h2c prior knowledge also works)
https_server        TLS, ALPN h2 + http/1.1, ``https://localhost:PORT``
https_h1_server     TLS, ALPN http/1.1 only
mtls_server         TLS (h2 + http/1.1) requiring a client cert from the CA
http_server_ipv6    cleartext on ::1, ``http://[::1]:PORT``
server_factory      ``server_factory(tls=..., config={...})``: a private
                    hypercorn server (see `start_server`), stopped after
                    the test
raw_server          ``raw_server(handler, tls=False)``: a started
                    `RawServer`, stopped after the test
==================  ====================================================
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from tests.support.certs import TestCerts
from tests.support.raw import RawHandler, RawServer
from tests.support.servers import ServerHandle, start_server

ServerFactory = Callable[..., ServerHandle]
RawServerFactory = Callable[..., RawServer]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCerts:
    return TestCerts.create(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def ca_pem_path(certs: TestCerts) -> str:
    return str(certs.ca_pem_path)


@pytest.fixture
def client_ssl_context(certs: TestCerts) -> ssl.SSLContext:
    # Per test: clients may set ALPN or options on the context they are given.
    return certs.client_ssl_context()


@pytest.fixture
def mtls_client_ssl_context(certs: TestCerts) -> ssl.SSLContext:
    return certs.client_ssl_context(with_client_cert=True)


def _session_server(certs: TestCerts, **kwargs: Any) -> Iterator[ServerHandle]:
    handle = start_server(certs, **kwargs)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def _http_server_session(certs: TestCerts) -> Iterator[ServerHandle]:
    yield from _session_server(certs)


@pytest.fixture(scope="session")
def _https_server_session(certs: TestCerts) -> Iterator[ServerHandle]:
    yield from _session_server(certs, tls=True, alpn=("h2", "http/1.1"))


@pytest.fixture(scope="session")
def _https_h1_server_session(certs: TestCerts) -> Iterator[ServerHandle]:
    yield from _session_server(certs, tls=True, alpn=("http/1.1",))


@pytest.fixture(scope="session")
def _mtls_server_session(certs: TestCerts) -> Iterator[ServerHandle]:
    yield from _session_server(certs, tls=True, require_client_cert=True)


@pytest.fixture(scope="session")
def _http_server_ipv6_session(certs: TestCerts) -> Iterator[ServerHandle]:
    yield from _session_server(certs, host="::1")


def _fresh(handle: ServerHandle) -> ServerHandle:
    handle.reset_stats()
    return handle


@pytest.fixture
def http_server(_http_server_session: ServerHandle) -> ServerHandle:
    return _fresh(_http_server_session)


@pytest.fixture
def https_server(_https_server_session: ServerHandle) -> ServerHandle:
    return _fresh(_https_server_session)


@pytest.fixture
def https_h1_server(_https_h1_server_session: ServerHandle) -> ServerHandle:
    return _fresh(_https_h1_server_session)


@pytest.fixture
def mtls_server(_mtls_server_session: ServerHandle) -> ServerHandle:
    return _fresh(_mtls_server_session)


@pytest.fixture
def http_server_ipv6(_http_server_ipv6_session: ServerHandle) -> ServerHandle:
    return _fresh(_http_server_ipv6_session)


@pytest.fixture
def server_factory(certs: TestCerts) -> Iterator[ServerFactory]:
    """Start private hypercorn servers (same arguments as `start_server`, minus certs)."""
    started: list[ServerHandle] = []

    def factory(**kwargs: Any) -> ServerHandle:
        handle = start_server(certs, **kwargs)
        started.append(handle)
        return handle

    yield factory
    for handle in reversed(started):
        handle.stop()


@pytest.fixture
def raw_server(certs: TestCerts) -> Iterator[RawServerFactory]:
    """Start `RawServer`s for this test: ``raw_server(handler, tls=False, alpn=(...), host=...)``."""
    started: list[RawServer] = []

    def factory(
        handler: RawHandler,
        *,
        tls: bool = False,
        alpn: Sequence[str] = ("http/1.1",),
        host: str = "127.0.0.1",
    ) -> RawServer:
        context = certs.server_ssl_context(alpn=alpn) if tls else None
        server = RawServer(handler, host=host, ssl_context=context).start()
        started.append(server)
        return server

    yield factory
    for server in reversed(started):
        server.stop()
