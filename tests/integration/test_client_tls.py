"""TLS and name resolution through the Client, against loopback servers.

The servers present a certificate for localhost, 127.0.0.1 and ::1 from a
test CA that no system bundle trusts. Name resolution is injected with a
`DNSCache(resolver=...)` handed to an `HTTPTransport`, so a made-up name can
resolve to both loopback families without touching real DNS.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator

import pytest

import hyperhttp
from hyperhttp._tls import InsecureTLSWarning
from hyperhttp._transport.dns import Address, DNSCache
from tests.support.certs import TestCerts
from tests.support.servers import ServerHandle

V4 = int(socket.AF_INET)
V6 = int(socket.AF_INET6)


# --- verification ----------------------------------------------------------------


async def test_verify_with_ca_bundle(
    loop_name: str, https_h1_server: ServerHandle, ca_pem_path: str
) -> None:
    async with hyperhttp.Client(http2=False, verify=ca_pem_path) as client:
        response = await client.get(https_h1_server.url + "/echo")
    assert response.status_code == 200
    assert response.json()["scheme"] == "https"
    assert response.http_version == "HTTP/1.1"


async def test_default_verification_rejects_the_test_ca(
    loop_name: str, https_h1_server: ServerHandle
) -> None:
    async with hyperhttp.Client(http2=False) as client:
        with pytest.raises(hyperhttp.TLSError) as caught:
            await client.get(https_h1_server.url + "/echo")
        assert "localhost" in str(caught.value)
        assert client.get_pool_stats() == {}
    assert https_h1_server.stats.requests == 0


async def test_wrong_host_name_is_rejected(
    loop_name: str, https_h1_server: ServerHandle, ca_pem_path: str
) -> None:
    # The certificate names localhost, 127.0.0.1 and ::1; a made-up name
    # resolving to the same address must still fail host name checking.
    async def resolver(host: str, port: int) -> list[Address]:
        return [(V4, ("127.0.0.1", port))]

    transport = hyperhttp.HTTPTransport(
        http2=False, verify=ca_pem_path, dns=DNSCache(resolver=resolver)
    )
    async with hyperhttp.Client(transport=transport) as client:
        with pytest.raises(hyperhttp.TLSError, match=r"impostor\.test"):
            await client.get(f"https://impostor.test:{https_h1_server.port}/echo")


async def test_verify_false_works_and_warns(loop_name: str, https_h1_server: ServerHandle) -> None:
    with pytest.warns(InsecureTLSWarning, match="verify=False"):
        client = hyperhttp.Client(http2=False, verify=False)
    async with client:
        response = await client.get(https_h1_server.url + "/echo")
    assert response.status_code == 200


async def test_mutual_tls_with_cert_pair(
    loop_name: str, mtls_server: ServerHandle, certs: TestCerts
) -> None:
    async with hyperhttp.Client(
        http2=False,
        verify=str(certs.ca_pem_path),
        cert=(str(certs.client_cert_path), str(certs.client_key_path)),
    ) as client:
        response = await client.get(mtls_server.url + "/echo")
    assert response.status_code == 200
    assert mtls_server.stats.requests == 1


async def test_mutual_tls_without_cert_fails(
    loop_name: str, mtls_server: ServerHandle, ca_pem_path: str
) -> None:
    async with hyperhttp.Client(http2=False, verify=ca_pem_path) as client:
        with pytest.raises(hyperhttp.TransportError):
            await client.get(mtls_server.url + "/echo")
        assert all(e.get("in_use", 0) == 0 for e in client.get_pool_stats().values())
    assert mtls_server.stats.requests == 0


async def test_ssl_context_argument(
    loop_name: str, https_h1_server: ServerHandle, client_ssl_context: ssl.SSLContext
) -> None:
    async with hyperhttp.Client(http2=False, ssl_context=client_ssl_context) as client:
        response = await client.get(https_h1_server.url + "/echo")
    assert response.status_code == 200


async def test_ssl_context_with_client_cert_for_mtls(
    loop_name: str, mtls_server: ServerHandle, mtls_client_ssl_context: ssl.SSLContext
) -> None:
    async with hyperhttp.Client(http2=False, ssl_context=mtls_client_ssl_context) as client:
        response = await client.get(mtls_server.url + "/echo")
    assert response.status_code == 200


@pytest.mark.parametrize("use_context", [False, True], ids=["verify", "ssl_context"])
async def test_http2_false_offers_only_http11(
    loop_name: str, https_server: ServerHandle, ca_pem_path: str,
    client_ssl_context: ssl.SSLContext, use_context: bool,
) -> None:
    # The server prefers h2; with http2=False the client must not offer it.
    if use_context:
        client_ssl_context.set_alpn_protocols(["h2", "http/1.1"])
        client = hyperhttp.Client(http2=False, ssl_context=client_ssl_context)
    else:
        client = hyperhttp.Client(http2=False, verify=ca_pem_path)
    async with client:
        response = await client.get(https_server.url + "/echo")
        assert response.http_version == "HTTP/1.1"
        assert response.json()["http_version"] == "HTTP/1.1"
        second = await client.get(https_server.url + "/echo")
        assert second.json()["client"] == response.json()["client"]
    assert https_server.stats.connection_count == 1


async def test_shared_ssl_context_never_makes_an_http2_false_client_speak_http2(
    loop_name: str, https_server: ServerHandle, client_ssl_context: ssl.SSLContext
) -> None:
    # ALPN lives on the context: building the second client makes it offer
    # h2 for the first one too. The first must refuse HTTP/2, not speak it.
    h1_only = hyperhttp.Client(http2=False, ssl_context=client_ssl_context, trust_env=False)
    h2_too = hyperhttp.Client(ssl_context=client_ssl_context, trust_env=False)
    async with h1_only, h2_too:
        with pytest.raises(hyperhttp.TLSError) as caught:
            await h1_only.get(https_server.url + "/echo")
        message = str(caught.value)
        assert "http2=False" in message and "ssl_context" in message and "h2" in message
        assert h1_only.get_pool_stats() == {}  # the connection was closed, not kept
        response = await h2_too.get(https_server.url + "/echo")
        assert response.http_version == "HTTP/2"
    assert https_server.stats.requests == 1  # only h2_too's request reached the server


# --- DNS and Happy Eyeballs through the Client ----------------------------------


class Sockets:
    def __init__(self) -> None:
        self.made: list[socket.socket] = []

    def refuser(self, family: int) -> Address:
        """A bound, non-listening socket: connecting to it is refused at once."""
        sock = socket.socket(family, socket.SOCK_STREAM)
        self.made.append(sock)
        sock.bind(("::1" if family == V6 else "127.0.0.1", 0))
        return (family, sock.getsockname())

    def black_hole(self, family: int) -> Address:
        """A listener whose full accept queue drops every SYN: connects hang."""
        sock = socket.socket(family, socket.SOCK_STREAM)
        filler = socket.socket(family, socket.SOCK_STREAM)
        self.made += [sock, filler]
        sock.bind(("::1" if family == V6 else "127.0.0.1", 0))
        sock.listen(0)
        filler.settimeout(5)
        filler.connect(sock.getsockname())
        return (family, sock.getsockname())


@pytest.fixture
def sockets() -> Iterator[Sockets]:
    made = Sockets()
    yield made
    for sock in made.made:
        sock.close()


def dual_stack_client(addresses: list[Address], delay: float) -> tuple[hyperhttp.Client, list[str]]:
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[Address]:
        lookups.append(host)
        if host != "dual.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return addresses

    transport = hyperhttp.HTTPTransport(
        http2=False, dns=DNSCache(resolver=resolver), happy_eyeballs_delay=delay
    )
    return hyperhttp.Client(transport=transport), lookups


async def test_stalled_ipv6_falls_back_to_ipv4(
    loop_name: str, http_server: ServerHandle, sockets: Sockets
) -> None:
    good: Address = (V4, ("127.0.0.1", http_server.port))
    client, lookups = dual_stack_client([sockets.black_hole(V6), good], delay=0.2)
    async with client:
        started = time.monotonic()
        response = await client.get(f"http://dual.test:{http_server.port}/echo")
        assert 0.15 <= time.monotonic() - started < 2.0
        assert response.json()["client"].startswith("127.0.0.1:")
        assert ["host", f"dual.test:{http_server.port}"] in response.json()["headers"]
        # Pooled by name: the second request reuses the connection, no new lookup.
        await client.get(f"http://dual.test:{http_server.port}/echo")
        assert client.get_pool_stats() == {
            f"dual.test:{http_server.port}": {"idle": 1, "in_use": 0, "total": 1}
        }
    assert lookups == ["dual.test"]
    assert http_server.stats.connection_count == 1


async def test_refused_ipv6_falls_back_at_once(
    loop_name: str, http_server: ServerHandle, sockets: Sockets
) -> None:
    good: Address = (V4, ("127.0.0.1", http_server.port))
    client, _ = dual_stack_client([sockets.refuser(V6), good], delay=5.0)
    async with client:
        started = time.monotonic()
        response = await client.get(f"http://dual.test:{http_server.port}/echo")
        assert time.monotonic() - started < 2.0
    assert response.status_code == 200


async def test_ipv6_answers_when_ipv4_does_not(
    loop_name: str, http_server_ipv6: ServerHandle, sockets: Sockets
) -> None:
    good: Address = (V6, ("::1", http_server_ipv6.port, 0, 0))
    client, _ = dual_stack_client([sockets.black_hole(V4), good], delay=0.2)
    async with client:
        response = await client.get(f"http://dual.test:{http_server_ipv6.port}/echo")
    assert response.json()["client"].startswith("[::1]:")


async def test_unknown_name_is_dns_error(loop_name: str) -> None:
    client, lookups = dual_stack_client([], delay=0.1)
    async with client:
        with pytest.raises(hyperhttp.DNSError, match=r"nx\.test"):
            await client.get("http://nx.test/")
        assert client.get_pool_stats() == {}
    assert lookups == ["nx.test"]


async def test_every_address_failing_is_connect_error(
    loop_name: str, sockets: Sockets
) -> None:
    client, _ = dual_stack_client([sockets.refuser(V6), sockets.refuser(V4)], delay=0.05)
    async with client:
        with pytest.raises(hyperhttp.ConnectError, match=r"dual\.test"):
            await client.get("http://dual.test:8080/")
        assert client.get_pool_stats() == {}
