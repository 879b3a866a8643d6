"""Test certificates: one trustme CA, a server certificate and a client certificate.

The server certificate is valid for ``localhost``, ``127.0.0.1`` and ``::1``.
Everything is written as PEM files into one directory, because both hypercorn
and `ssl.SSLContext.load_cert_chain` want paths.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_IDENTITIES = ("localhost", "127.0.0.1", "::1")
CLIENT_IDENTITY = "client.hyperhttp.test"


@dataclass(frozen=True, slots=True)
class TestCerts:
    """Paths of the PEM files for one CA, its server cert and its client cert."""

    __test__ = False  # not a pytest test class, despite the name

    ca: trustme.CA
    directory: Path
    ca_pem_path: Path
    server_cert_path: Path  # leaf followed by its chain
    server_key_path: Path
    client_cert_path: Path
    client_key_path: Path

    @classmethod
    def create(cls, directory: Path) -> TestCerts:
        """Make a fresh CA and certificates, and write them under `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="hyperhttp test CA")
        server = ca.issue_cert(*SERVER_IDENTITIES, common_name="localhost")
        client = ca.issue_cert(CLIENT_IDENTITY, common_name=CLIENT_IDENTITY)
        paths = {
            "ca_pem_path": directory / "ca.pem",
            "server_cert_path": directory / "server-chain.pem",
            "server_key_path": directory / "server-key.pem",
            "client_cert_path": directory / "client-chain.pem",
            "client_key_path": directory / "client-key.pem",
        }
        ca.cert_pem.write_to_path(str(paths["ca_pem_path"]))
        _write_chain(server, paths["server_cert_path"])
        server.private_key_pem.write_to_path(str(paths["server_key_path"]))
        _write_chain(client, paths["client_cert_path"])
        client.private_key_pem.write_to_path(str(paths["client_key_path"]))
        return cls(ca=ca, directory=directory, **paths)

    def client_ssl_context(
        self,
        *,
        with_client_cert: bool = False,
        alpn: Sequence[str] | None = None,
    ) -> ssl.SSLContext:
        """A fresh client context that trusts only the test CA.

        `with_client_cert` loads the client certificate (for mutual TLS);
        `alpn` sets the offered protocols (left unset by default, so the
        client under test decides).
        """
        ctx = ssl.create_default_context(cafile=str(self.ca_pem_path))
        if with_client_cert:
            ctx.load_cert_chain(str(self.client_cert_path), str(self.client_key_path))
        if alpn is not None:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def server_ssl_context(
        self,
        *,
        alpn: Sequence[str] = ("h2", "http/1.1"),
        require_client_cert: bool = False,
    ) -> ssl.SSLContext:
        """A server context presenting the `localhost` certificate (for raw servers)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.server_cert_path), str(self.server_key_path))
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        if require_client_cert:
            ctx.load_verify_locations(cafile=str(self.ca_pem_path))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def _write_chain(leaf: trustme.LeafCert, path: Path) -> None:
    path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
