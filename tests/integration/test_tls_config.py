"""TLS on loopback: contexts from `create_ssl_context`, handshakes, ALPN, mutual TLS, start_tls.

Servers are ``asyncio.start_server(..., ssl=...)`` in the test's own loop, with
certificates from a trustme CA made for this module.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from hyperhttp._exceptions import ConnectError, ConnectTimeout, TLSError
from hyperhttp._tls import InsecureTLSWarning, create_ssl_context
from hyperhttp._transport.dial import negotiated_alpn, open_connection, start_tls
from hyperhttp._transport.dns import DNSCache

CLIENT_NAME = "client.hyperhttp.test"


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    server: trustme.LeafCert
    ca_path: Path
    client_cert_path: Path
    client_key_path: Path
    client_combined_path: Path
    client_encrypted_key_path: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    client = ca.issue_cert(CLIENT_NAME)
    ca_path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert_path = directory / "client.pem"
    cert_path.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    key_path = directory / "client-key.pem"
    client.private_key_pem.write_to_path(str(key_path))
    combined = directory / "client-combined.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(combined))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    encrypted = directory / "client-key-encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    return Pki(ca, server, ca_path, cert_path, key_path, combined, encrypted)


def server_context(
    pki: Pki,
    *,
    alpn: list[str] | None = None,
    require_client_cert: bool = False,
    max_tls12: bool = False,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.server.configure_cert(ctx)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        pki.ca.configure_trust(ctx)
    if max_tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@dataclass
class Seen:
    """What the server observed about its connections."""

    alpn: list[str | None]
    peer_certs: list[dict[str, Any]]


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start_echo_server(ssl_ctx: ssl.SSLContext | None) -> tuple[asyncio.Server, int, Seen]:
    seen = Seen([], [])

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            seen.alpn.append(ssl_object.selected_alpn_protocol())
            seen.peer_certs.append(ssl_object.getpeercert() or {})
        try:
            data = await reader.read(1024)
            writer.write(data)
            await writer.drain()
            await reader.read(1024)  # until the client closes
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=ssl_ctx)
    return server, server.sockets[0].getsockname()[1], seen


async def stop(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.05)  # let handler tasks finish closing their writers


class Client(asyncio.Protocol):
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.got_data: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if not self.got_data.done():
            self.got_data.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def connect(
    port: int, ctx: ssl.SSLContext | None, server_hostname: str | None = "localhost"
) -> tuple[asyncio.Transport, Client]:
    return await open_connection(
        "127.0.0.1",
        port,
        Client,
        dns=DNSCache(),
        ssl_context=ctx,
        server_hostname=server_hostname if ctx is not None else None,
        connect_timeout=5.0,
    )


async def roundtrip(transport: asyncio.Transport, protocol: Client, payload: bytes) -> bytes:
    transport.write(payload)
    await asyncio.wait_for(protocol.got_data, 5)
    return bytes(protocol.data)


async def hang_up(transport: asyncio.Transport, protocol: Client) -> None:
    transport.close()
    await asyncio.wait_for(protocol.lost, 5)


# ---- context construction (no network) -------------------------------------------


def test_default_context_verifies_and_is_shared() -> None:
    ctx = create_ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.get_ca_certs()  # certifi's bundle is loaded
    assert create_ssl_context() is ctx
    assert create_ssl_context(http2=False) is not ctx


def test_verify_false_warns_and_disables_checks() -> None:
    with pytest.warns(InsecureTLSWarning, match="verification is disabled") as record:
        ctx = create_ssl_context(verify=False)
    assert record[0].filename == __file__  # points at the caller, not at hyperhttp
    assert ctx.verify_mode == ssl.CERT_NONE
    assert not ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert issubclass(InsecureTLSWarning, UserWarning)


def test_missing_ca_bundle_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pem"):
        create_ssl_context(verify=str(tmp_path / "nope.pem"))


def test_ssl_context_with_verify_or_cert_is_rejected(pki: Pki) -> None:
    ctx = ssl.create_default_context()
    with pytest.raises(ValueError, match="not both"):
        create_ssl_context(ssl_context=ctx, cert=str(pki.client_combined_path))
    with pytest.raises(ValueError, match="not both"):
        create_ssl_context(ssl_context=ctx, verify=False)


def test_bad_cert_tuple_is_rejected(pki: Pki) -> None:
    bad = cast(Any, (str(pki.client_cert_path),))
    with pytest.raises(ValueError, match="cert must be"):
        create_ssl_context(verify=pki.ca_path, cert=bad)


def test_client_cert_load_errors_name_the_files_never_the_password(
    pki: Pki, tmp_path: Path
) -> None:
    cert, key = str(pki.client_cert_path), str(pki.client_encrypted_key_path)
    with pytest.raises(ValueError) as wrong:
        create_ssl_context(verify=pki.ca_path, cert=(cert, key, "not-the-password"))
    message = str(wrong.value)
    assert "wrong password or not a PEM key" in message
    assert cert in message and key in message
    assert "not-the-password" not in message and "s3cret" not in message

    for missing_key in (True, False):
        missing = str(tmp_path / "missing.pem")
        pair = (cert, missing, "s3cret") if missing_key else (missing, key, "s3cret")
        with pytest.raises(FileNotFoundError) as gone:
            create_ssl_context(verify=pki.ca_path, cert=pair)
        assert gone.value.filename == missing
        assert ("client key file" if missing_key else "client certificate file") in str(gone.value)
        assert "s3cret" not in str(gone.value)

    other_key = tmp_path / "other-key.pem"
    pki.server.private_key_pem.write_to_path(str(other_key))
    with pytest.raises(ValueError, match="does not match") as mismatch:
        create_ssl_context(verify=pki.ca_path, cert=(cert, str(other_key)))
    assert str(other_key) in str(mismatch.value) and cert in str(mismatch.value)


def test_encrypted_key_without_password_fails_at_once_without_prompting(pki: Pki) -> None:
    # In a child with no controlling terminal and nothing on stdin: before the
    # fix OpenSSL asked for a passphrase there (on a terminal: blocked forever).
    cert, key = str(pki.client_cert_path), str(pki.client_encrypted_key_path)
    code = (
        "from hyperhttp._tls import create_ssl_context\n"
        f"create_ssl_context(verify={str(pki.ca_path)!r}, cert=({cert!r}, {key!r}))\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        start_new_session=True,
    )
    out = (child.stdout + child.stderr).decode()
    assert child.returncode == 1, out
    assert f"ValueError: client key {key!r} is encrypted; pass cert=(cert, key, password)" in out
    assert "pass phrase" not in out


def test_verify_given_an_ssl_context_says_to_use_ssl_context() -> None:
    with pytest.raises(TypeError, match="use ssl_context="):
        create_ssl_context(verify=cast(Any, ssl.create_default_context()))


# ---- handshakes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_alpn", "http2", "expected"),
    [
        (["h2", "http/1.1"], True, "h2"),
        (["h2", "http/1.1"], False, "http/1.1"),
        (["http/1.1"], True, "http/1.1"),
        (None, True, None),
    ],
)
async def test_alpn_negotiation(
    loop_name: str, pki: Pki, server_alpn: list[str] | None, http2: bool, expected: str | None
) -> None:
    server, port, seen = await start_echo_server(server_context(pki, alpn=server_alpn))
    try:
        ctx = create_ssl_context(verify=str(pki.ca_path), http2=http2)
        transport, protocol = await connect(port, ctx)
        assert negotiated_alpn(transport) == expected
        assert await roundtrip(transport, protocol, b"hello") == b"hello"
        await hang_up(transport, protocol)
        assert seen.alpn == [expected]
    finally:
        await stop(server)


async def test_verify_accepts_path_objects_and_ip_hostnames(loop_name: str, pki: Pki) -> None:
    server, port, _ = await start_echo_server(server_context(pki))
    try:
        ctx = create_ssl_context(verify=pki.ca_path)
        # No server_hostname: the IP literal itself is checked against the cert's IP SAN.
        transport, protocol = await connect(port, ctx, server_hostname=None)
        assert negotiated_alpn(transport) is None
        await hang_up(transport, protocol)
    finally:
        await stop(server)


async def test_untrusted_ca_is_tls_error(loop_name: str, pki: Pki) -> None:
    server, port, _ = await start_echo_server(server_context(pki))
    try:
        with pytest.raises(TLSError) as caught:
            await connect(port, create_ssl_context())  # certifi does not know our CA
        message = str(caught.value)
        assert "certificate verify failed" in message
        assert f"127.0.0.1:{port}" in message
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    finally:
        await stop(server)


async def test_hostname_mismatch_is_tls_error(loop_name: str, pki: Pki) -> None:
    server, port, _ = await start_echo_server(server_context(pki))
    try:
        ctx = create_ssl_context(verify=str(pki.ca_path))
        with pytest.raises(TLSError, match=r"(?i)hostname mismatch"):
            await connect(port, ctx, server_hostname="other.example")
    finally:
        await stop(server)


async def test_verify_false_connects_to_untrusted_server(loop_name: str, pki: Pki) -> None:
    server, port, _ = await start_echo_server(server_context(pki))
    try:
        with pytest.warns(InsecureTLSWarning):
            ctx = create_ssl_context(verify=False)
        transport, protocol = await connect(port, ctx, server_hostname="other.example")
        assert await roundtrip(transport, protocol, b"x") == b"x"
        await hang_up(transport, protocol)
    finally:
        await stop(server)


async def test_user_ssl_context_gets_alpn(loop_name: str, pki: Pki) -> None:
    server, port, _ = await start_echo_server(server_context(pki, alpn=["h2", "http/1.1"]))
    try:
        mine = ssl.create_default_context(cafile=str(pki.ca_path))
        ctx = create_ssl_context(ssl_context=mine)
        assert ctx is mine
        transport, protocol = await connect(port, ctx)
        assert negotiated_alpn(transport) == "h2"
        await hang_up(transport, protocol)
    finally:
        await stop(server)


@pytest.mark.parametrize("form", ["pair", "combined", "encrypted"])
async def test_mutual_tls(loop_name: str, pki: Pki, form: str) -> None:
    server, port, seen = await start_echo_server(server_context(pki, require_client_cert=True))
    cert: str | tuple[str, str] | tuple[str, str, str]
    if form == "pair":
        cert = (str(pki.client_cert_path), str(pki.client_key_path))
    elif form == "combined":
        cert = str(pki.client_combined_path)
    else:
        cert = (str(pki.client_cert_path), str(pki.client_encrypted_key_path), "s3cret")
    try:
        ctx = create_ssl_context(verify=str(pki.ca_path), cert=cert)
        transport, protocol = await connect(port, ctx)
        assert await roundtrip(transport, protocol, b"me") == b"me"
        await hang_up(transport, protocol)
        assert seen.peer_certs[0]["subjectAltName"] == (("DNS", CLIENT_NAME),)
    finally:
        await stop(server)


async def test_missing_client_cert_is_tls_error(loop_name: str, pki: Pki) -> None:
    # TLS 1.2, so the server's rejection arrives during the handshake, not after it.
    # The server may get its alert out (TLSError) or just reset (ConnectError): either
    # way the message says the handshake with this host failed.
    ctx_server = server_context(pki, require_client_cert=True, max_tls12=True)
    server, port, seen = await start_echo_server(ctx_server)
    try:
        with pytest.raises((TLSError, ConnectError)) as caught:
            await connect(port, create_ssl_context(verify=str(pki.ca_path)))
        assert f"127.0.0.1:{port}" in str(caught.value)
        assert "TLS handshake" in str(caught.value)
        assert seen.peer_certs == []
    finally:
        await stop(server)


# ---- start_tls: TLS through a tunnel, and TLS inside TLS ------------------------------


async def start_relay(origin_port: int, ssl_ctx: ssl.SSLContext | None) -> asyncio.Server:
    """A byte pipe to the origin, like a proxy after CONNECT; TLS-terminating if ssl_ctx."""

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            dst.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", origin_port)
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    return await asyncio.start_server(relay, "127.0.0.1", 0, ssl=ssl_ctx)


@pytest.mark.parametrize("proxy_tls", [False, True], ids=["plain-tunnel", "tls-in-tls"])
async def test_start_tls_through_a_tunnel(loop_name: str, pki: Pki, proxy_tls: bool) -> None:
    origin, origin_port, seen = await start_echo_server(server_context(pki, alpn=["http/1.1"]))
    relay = await start_relay(origin_port, server_context(pki, alpn=["h2"]) if proxy_tls else None)
    relay_port = relay.sockets[0].getsockname()[1]
    try:
        outer_ctx = create_ssl_context(verify=str(pki.ca_path)) if proxy_tls else None
        transport, protocol = await connect(relay_port, outer_ctx)
        assert negotiated_alpn(transport) == ("h2" if proxy_tls else None)
        inner_ctx = create_ssl_context(verify=str(pki.ca_path))
        tls_transport = await start_tls(transport, protocol, inner_ctx, "localhost", timeout=5.0)
        assert negotiated_alpn(tls_transport) == "http/1.1"
        assert await roundtrip(tls_transport, protocol, b"tunnelled") == b"tunnelled"
        assert seen.alpn == ["http/1.1"]  # the origin, not the relay, did this handshake
        await hang_up(tls_transport, protocol)
    finally:
        await stop(relay)
        await stop(origin)


async def test_start_tls_failure_is_tls_error_and_closes(loop_name: str, pki: Pki) -> None:
    origin, origin_port, _ = await start_echo_server(server_context(pki))
    relay = await start_relay(origin_port, None)
    try:
        transport, protocol = await connect(relay.sockets[0].getsockname()[1], None)
        with pytest.raises(TLSError, match="certificate verify failed"):
            await start_tls(transport, protocol, create_ssl_context(), "localhost", timeout=5.0)
        await asyncio.wait_for(protocol.lost, 5)
        assert transport.is_closing()
    finally:
        await stop(relay)
        await stop(origin)


async def test_start_tls_timeout(loop_name: str, pki: Pki) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers the ClientHello; waits for the client to go
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        transport, protocol = await connect(server.sockets[0].getsockname()[1], None)
        ctx = create_ssl_context(verify=str(pki.ca_path))
        started = asyncio.get_running_loop().time()
        with pytest.raises(ConnectTimeout, match=r"localhost.*timed out"):
            await start_tls(transport, protocol, ctx, "localhost", timeout=0.3)
        assert asyncio.get_running_loop().time() - started < 2.0
        assert transport.is_closing()
    finally:
        await stop(server)
