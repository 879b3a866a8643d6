"""Hypercorn serving `TestApp` in a background thread with its own event loop.

The test's loop (asyncio or uvloop) never runs server code, so a test that
blocks or cancels its loop cannot disturb the server, and one server can be
shared by the whole session. The listening socket is bound (port 0) and put
into listen state here, before hypercorn starts, so the port is known at once
and early connections simply wait in the backlog; it is handed to hypercorn as
``fd://N``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Mapping, Sequence
from typing import Any, cast

from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework

from tests.support.app import ServerStats, TestApp
from tests.support.certs import TestCerts

log = logging.getLogger("tests.support.hypercorn")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

# Defaults chosen for tests: idle keep-alive connections outlive any test, and
# stopping never waits long for a request a test abandoned.
DEFAULT_CONFIG: dict[str, Any] = {
    "keep_alive_timeout": 120.0,
    "keep_alive_max_requests": 100_000,
    "graceful_timeout": 1.0,
    "ssl_handshake_timeout": 10.0,
    "include_server_header": True,
    "include_date_header": True,
}


class ServerHandle:
    """A running hypercorn server; `url` is the base URL without a trailing slash."""

    def __init__(
        self,
        *,
        scheme: str,
        host: str,
        port: int,
        url_host: str,
        alpn: tuple[str, ...],
        require_client_cert: bool,
        app: TestApp,
    ) -> None:
        self.scheme = scheme
        self.host = host  # the address it listens on
        self.port = port
        self.url_host = url_host  # the name used in `url` (localhost for TLS)
        self.url = f"{scheme}://{url_host}:{port}"
        self.alpn = alpn
        self.require_client_cert = require_client_cert
        self.app = app
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<ServerHandle {self.url} alpn={list(self.alpn)} {state} {self.stats}>"

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> ServerStats:
        """Connections seen, requests, in-flight and peak in-flight since the last reset."""
        return self.app.stats.snapshot()

    def reset_stats(self) -> None:
        self.app.stats.reset()

    def stop(self) -> None:
        """Stop serving, close every connection and join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and thread.is_alive():
            loop.call_soon_threadsafe(self._begin_shutdown)
        thread.join(STOP_TIMEOUT)
        self._thread = None
        if thread.is_alive():
            raise RuntimeError(f"{self.url} did not stop within {STOP_TIMEOUT}s")
        if self._error is not None:
            raise RuntimeError(f"server {self.url} failed") from self._error

    def _begin_shutdown(self) -> None:
        if self.app.closing is not None:
            self.app.closing.set()
        if self._shutdown is not None:
            self._shutdown.set()

    def _start(self, config: Config) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(config,), name=f"hypercorn {self.url}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT) or self._error is not None:
            self.stop()
            raise RuntimeError(f"server {self.url} did not start")

    def _run(self, config: Config) -> None:
        try:
            with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
                runner.run(self._serve(config))
        except BaseException as exc:  # reported by stop(), never lost in the thread
            self._error = exc
            self._ready.set()

    async def _serve(self, config: Config) -> None:
        self._loop = asyncio.get_running_loop()
        self._shutdown = asyncio.Event()
        self.app.started = self._ready
        # TestApp types ASGI messages loosely; hypercorn's signature wants its TypedDicts.
        app = cast(ASGIFramework, self.app)
        await serve(app, config, shutdown_trigger=self._shutdown.wait, mode="asgi")


def start_server(
    certs: TestCerts | None = None,
    *,
    tls: bool = False,
    alpn: Sequence[str] = ("h2", "http/1.1"),
    require_client_cert: bool = False,
    host: str = "127.0.0.1",
    url_host: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> ServerHandle:
    """Start hypercorn on `host` with an ephemeral port and return its handle.

    With `tls`, `certs` must be given and the URL uses ``https://localhost``;
    `alpn` is what the server offers; `require_client_cert` turns on mutual
    TLS against the test CA. `config` overrides hypercorn `Config` attributes
    (e.g. ``{"h2_max_concurrent_streams": 2, "keep_alive_timeout": 0.5}``).
    """
    if (tls or require_client_cert) and certs is None:
        raise ValueError("TLS needs certs")
    tls = tls or require_client_cert
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if url_host is None:
        url_host = "localhost" if tls else (f"[{host}]" if family == socket.AF_INET6 else host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, 0))
        sock.listen(1024)
        port = sock.getsockname()[1]
    except BaseException:
        sock.close()
        raise
    handle = ServerHandle(
        scheme="https" if tls else "http",
        host=host,
        port=port,
        url_host=url_host,
        alpn=tuple(alpn) if tls else ("http/1.1",),
        require_client_cert=require_client_cert,
        app=TestApp(),
    )
    # hypercorn adopts the descriptor and closes it when it stops.
    hc_config = _make_config(f"fd://{sock.detach()}", certs if tls else None, alpn, config)
    if require_client_cert:
        assert certs is not None
        hc_config.ca_certs = str(certs.ca_pem_path)
        hc_config.verify_mode = ssl.CERT_REQUIRED
    handle._start(hc_config)
    return handle


def _make_config(
    bind: str,
    certs: TestCerts | None,
    alpn: Sequence[str],
    overrides: Mapping[str, Any] | None,
) -> Config:
    hc = Config()
    hc.bind = [bind]
    hc.accesslog = None
    hc.errorlog = log
    for name, value in {**DEFAULT_CONFIG, **(overrides or {})}.items():
        if not hasattr(hc, name):
            raise AttributeError(f"hypercorn Config has no {name!r}")
        setattr(hc, name, value)
    if certs is not None:
        hc.certfile = str(certs.server_cert_path)
        hc.keyfile = str(certs.server_key_path)
        hc.alpn_protocols = list(alpn)
    return hc
