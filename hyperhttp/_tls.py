"""TLS configuration: build the one `ssl.SSLContext` a client uses for every connection.

Building a context costs milliseconds (it parses a CA bundle), so a client
builds one when it is created and shares it across all its connections;
`create_ssl_context` is not meant for the per-request path. The default
verified contexts are built once per process and shared, because they are
the common case and are never mutated after construction.

This module only configures; the handshake itself happens in
``_transport/dial.py``.
"""

from __future__ import annotations

import functools
import os
import ssl
import sys
import types
import warnings

import certifi

__all__ = ["ALPN_HTTP1", "ALPN_HTTP2", "InsecureTLSWarning", "create_ssl_context"]

ALPN_HTTP2 = "h2"
ALPN_HTTP1 = "http/1.1"

VerifyTypes = bool | str | os.PathLike[str]
CertTypes = str | tuple[str, str] | tuple[str, str, str]


class InsecureTLSWarning(UserWarning):
    """TLS certificate verification was turned off with ``verify=False``."""


def create_ssl_context(
    *,
    verify: VerifyTypes = True,
    cert: CertTypes | None = None,
    ssl_context: ssl.SSLContext | None = None,
    http2: bool = True,
) -> ssl.SSLContext:
    """Build the client-side TLS context from the `Client` options.

    - ``verify=True``: verify certificates and host names against certifi's
      CA bundle.
    - ``verify="ca.pem"`` (file) or a directory of hashed CA certificates:
      verify against those CAs instead.
    - ``verify=False``: no certificate or host name checks (emits
      `InsecureTLSWarning`); for development only.
    - ``cert``: client certificate for mutual TLS: a PEM file holding cert
      and key, ``(cert_file, key_file)`` or ``(cert_file, key_file, password)``.
    - ``ssl_context``: used as given instead of ``verify``/``cert`` (passing
      either with it is an error); only its ALPN protocols are set, on the
      context itself (Python sets ALPN per context, not per connection), so
      clients with different ``http2`` values must not share one.

    ALPN offers ``h2`` then ``http/1.1``, or only ``http/1.1`` with
    ``http2=False``. Built contexts require TLS 1.2 or newer.
    """
    if isinstance(verify, ssl.SSLContext):
        raise TypeError(
            "verify= takes True, False or a CA bundle path, not an ssl.SSLContext: "
            "use ssl_context= to pass your own context"
        )
    if ssl_context is not None:
        if verify is not True or cert is not None:
            raise ValueError(
                "pass either ssl_context= or verify=/cert=, not both: "
                "configure verification and client certificates on the context"
            )
        ssl_context.set_alpn_protocols(_alpn_protocols(http2))
        return ssl_context
    if verify is True and cert is None:
        return _default_context(http2)
    if verify is False:
        ctx = _insecure_context()
    else:
        ctx = _verifying_context(None if verify is True else os.fspath(verify))
    if cert is not None:
        _load_client_cert(ctx, cert)
    ctx.set_alpn_protocols(_alpn_protocols(http2))
    return ctx


def _alpn_protocols(http2: bool) -> list[str]:
    return [ALPN_HTTP2, ALPN_HTTP1] if http2 else [ALPN_HTTP1]


@functools.lru_cache(maxsize=2)
def _default_context(http2: bool) -> ssl.SSLContext:
    ctx = _verifying_context(None)
    ctx.set_alpn_protocols(_alpn_protocols(http2))
    return ctx


def _verifying_context(path: str | None) -> ssl.SSLContext:
    """A verifying context trusting certifi's bundle, or the CA file/directory at ``path``."""
    if path is None:
        ctx = ssl.create_default_context(cafile=certifi.where())
    else:
        if os.path.isdir(path):
            ctx = ssl.create_default_context(capath=path)
        elif os.path.isfile(path):
            ctx = ssl.create_default_context(cafile=path)
        else:
            raise FileNotFoundError(f"verify={path!r}: no such CA bundle file or directory")
    _harden(ctx)
    return ctx


def _insecure_context() -> ssl.SSLContext:
    warnings.warn(
        "TLS certificate verification is disabled (verify=False): connections can be "
        "intercepted and read or altered by anyone on the network path; "
        "use this only for local development",
        InsecureTLSWarning,
        stacklevel=_caller_stacklevel(),
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # check_hostname must be cleared before verify_mode can be CERT_NONE.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _harden(ctx)
    return ctx


def _caller_stacklevel() -> int:
    """The `warnings.warn` stacklevel of the first frame outside hyperhttp.

    The warning should point at the user's ``Client(verify=False)`` line, however
    many of our own layers sit between it and this module.
    """
    level = 1
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("hyperhttp."):
        level += 1
        frame = frame.f_back
    return level


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # HTTP/2 forbids renegotiation (RFC 9113 section 9.2.1); HTTP/1.1 never needs it.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def _load_client_cert(ctx: ssl.SSLContext, cert: CertTypes) -> None:
    """Load the client certificate and key; failures name the files (never
    the password). A key that turns out encrypted with no password given
    fails at once: OpenSSL would otherwise prompt on the terminal."""
    keyfile: str | None
    password: str | None
    if isinstance(cert, str | os.PathLike):
        certfile, keyfile, password = os.fspath(cert), None, None
    elif len(cert) == 2:
        certfile, keyfile, password = cert[0], cert[1], None
    elif len(cert) == 3:
        certfile, keyfile, password = cert
    else:
        raise ValueError("cert must be a path, (cert, key) or (cert, key, password)")
    key = keyfile or certfile

    def no_password() -> str:
        raise ValueError(f"client key {key!r} is encrypted; pass cert=(cert, key, password)")

    try:
        ctx.load_cert_chain(certfile, keyfile, password=no_password if password is None else password)
    except ssl.SSLError as exc:
        raise ValueError(_cert_error(certfile, keyfile, exc)) from None
    except OSError as exc:
        path = _unreadable(certfile) or (_unreadable(keyfile) if keyfile else None) or certfile
        what = "certificate" if path == certfile else "key"
        raise type(exc)(exc.errno, f"cannot read client {what} file ({exc.strerror})", path) from None


def _cert_error(certfile: str, keyfile: str | None, exc: ssl.SSLError) -> str:
    """Why OpenSSL refused the pair: its own reason ("PEM lib") says nothing."""
    key = keyfile or certfile
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"client key {key!r} does not match client certificate {certfile!r}"
    if not _has_pem_certificate(certfile):
        return f"client certificate {certfile!r} is not a PEM certificate"
    if keyfile is None:
        return (
            f"client certificate file {certfile!r} holds no usable PEM key: "
            "pass cert=(cert, key) or cert=(cert, key, password)"
        )
    return (
        f"could not load client key {keyfile!r} for certificate {certfile!r}: "
        "wrong password or not a PEM key"
    )


def _unreadable(path: str) -> str | None:
    try:
        with open(path, "rb"):
            return None
    except OSError:
        return path


def _has_pem_certificate(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return b"-----BEGIN CERTIFICATE-----" in f.read()
    except OSError:
        return False
