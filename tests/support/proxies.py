"""Forward proxies for the proxy tests: one of our own that records, and proxy.py.

`RecordingProxy` is a small HTTP/1.1 forward proxy served by a `RawServer`
(its own thread and loop, optionally TLS on the listening side). It forwards
absolute-form requests (``GET http://host:port/path``) over keep-alive
upstream connections, tunnels ``CONNECT host:port``, and records, per client
connection, every byte it read from the client before any tunnel began, the
request heads it parsed, the tunnel target and how many bytes went through
the tunnel. It can require credentials (answering 407) and can answer
CONNECT with a chosen status instead of tunnelling. A TLS listener offering
h2 behaves like an HTTP/2 server to a client that picks h2 by ALPN: it
sends its SETTINGS and a GOAWAY, and closes.

`ProxyPy` runs the real proxy.py from PyPI as a subprocess (``python -m
proxy``) on an ephemeral port, optionally with ``--basic-auth`` and with TLS
on its listening side; it is stopped by its own pid.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from tests.support.certs import TestCerts
from tests.support.raw import RawServer

MAX_HEAD = 64 * 1024
UPSTREAM_TIMEOUT = 10.0
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

_H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_GOAWAY_PROTOCOL_ERROR = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + bytes(7) + b"\x01"

# Hop-by-hop headers a forwarding proxy consumes instead of passing on.
_HOP_HEADERS = frozenset({"proxy-authorization", "proxy-connection", "keep-alive", "te"})


@dataclass
class ProxiedRequest:
    """One request head the proxy read from a client."""

    method: str
    target: str
    headers: list[tuple[str, str]]

    def header_values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [v for n, v in self.headers if n.lower() == lowered]


@dataclass
class ProxyConnectionRecord:
    """What one client connection brought to the proxy.

    `received` is every byte read from the client before a tunnel was set up
    (for a tunnel: the CONNECT head; for forwarding: all requests, bodies
    included). `tunnel` is ``host:port`` once a CONNECT succeeded, and
    `tunnel_bytes` counts the client's bytes relayed through it afterwards.
    `alpn` is the protocol the client and a TLS listener agreed on.
    """

    received: bytearray = field(default_factory=bytearray)
    requests: list[ProxiedRequest] = field(default_factory=list)
    tunnel: str | None = None
    tunnel_bytes: int = 0
    alpn: str | None = None  # chosen by ALPN on a TLS listener


class _Reader(Protocol):
    async def readline(self) -> bytes: ...

    async def readexactly(self, n: int) -> bytes: ...

    async def read(self, n: int = -1) -> bytes: ...


class _RecordingReader:
    """Reads from the client and writes down every byte read."""

    def __init__(self, reader: asyncio.StreamReader, record: ProxyConnectionRecord) -> None:
        self._reader = reader
        self._record = record
        self._buffer = bytearray()
        self.tunnelling = False

    async def _fill(self) -> bool:
        data = await self._reader.read(65536)
        if not data:
            return False
        if self.tunnelling:
            self._record.tunnel_bytes += len(data)
        else:
            self._record.received += data
        self._buffer += data
        return True

    async def read_head(self) -> bytes | None:
        """The next request head, or None at a clean EOF between requests."""
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > MAX_HEAD:
                raise ValueError("request head too large")
            if not await self._fill():
                if self._buffer:
                    raise asyncio.IncompleteReadError(bytes(self._buffer), None)
                return None
        end = self._buffer.index(b"\r\n\r\n") + 4
        head = bytes(self._buffer[:end])
        del self._buffer[:end]
        return head

    async def readline(self) -> bytes:
        while b"\n" not in self._buffer:
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self._buffer), None)
        end = self._buffer.index(b"\n") + 1
        line = bytes(self._buffer[:end])
        del self._buffer[:end]
        return line

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self._buffer), n)
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def read(self, n: int = -1) -> bytes:
        if not self._buffer and not await self._fill():
            return b""
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


def _parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError(f"bad start line {lines[0]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return parts[0], parts[1], headers


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


async def _relay_body(
    src: _Reader, dst: asyncio.StreamWriter, headers: Sequence[tuple[str, str]], *, until_eof: bool
) -> None:
    """Copy one message body (raw framing kept) from `src` to `dst`."""
    if (_header(headers, "transfer-encoding") or "").lower().endswith("chunked"):
        for _ in range(1_000_000):  # bounded: a test body never has this many chunks
            line = await src.readline()
            dst.write(line)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = await src.readline()
                    dst.write(trailer)
                    if trailer in (b"\r\n", b"\n"):
                        return
            dst.write(await src.readexactly(size + 2))
        raise ValueError("too many chunks")
    length = _header(headers, "content-length")
    if length is not None:
        dst.write(await src.readexactly(int(length)))
    elif until_eof:
        while data := await src.read(65536):
            dst.write(data)


async def _pipe(src: _Reader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        if dst.can_write_eof():
            try:
                dst.write_eof()
            except OSError:
                pass


class RecordingProxy:
    """A recording forward proxy; `start()` it, use `url`, `stop()` it.

    `credentials=("user", "pass")` answers 407 to any request without that
    Basic `Proxy-Authorization`; `connect_status=403` answers every CONNECT
    with that status; `hosts` maps names to the addresses the proxy dials.
    `connect_answer` replaces the bytes of a successful CONNECT's answer
    (the tunnel still follows), sent one byte every `connect_drip` seconds
    when that is set.
    """

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        connect_status: int | None = None,
        hosts: Mapping[str, str] | None = None,
        connect_answer: bytes = b"HTTP/1.1 200 Connection established\r\n\r\n",
        connect_drip: float = 0.0,
    ) -> None:
        self.credentials = credentials
        self.connect_status = connect_status
        self.connect_answer = connect_answer
        self.connect_drip = connect_drip
        self.hosts = dict(hosts or {"localhost": "127.0.0.1"})
        self._records: list[ProxyConnectionRecord] = []
        self._lock = threading.Lock()
        self._server: RawServer | None = None
        self._tls = False

    # --- lifecycle -----------------------------------------------------------
    def start(self, ssl_context: ssl.SSLContext | None = None) -> RecordingProxy:
        """Listen on 127.0.0.1 (TLS when `ssl_context` is given)."""
        self._tls = ssl_context is not None
        self._server = RawServer(self._handle, ssl_context=ssl_context).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` or, with TLS, ``https://localhost:PORT``."""
        return self.url_with()

    def url_with(self, userinfo: str = "") -> str:
        """The proxy URL with ``userinfo@`` (e.g. ``"user:pass"``) in it."""
        at = f"{userinfo}@" if userinfo else ""
        host = "localhost" if self._tls else "127.0.0.1"
        return f"{'https' if self._tls else 'http'}://{at}{host}:{self.port}"

    @property
    def handler_errors(self) -> list[BaseException]:
        return [] if self._server is None else list(self._server.handler_errors)

    # --- what it saw ----------------------------------------------------------
    @property
    def connections(self) -> list[ProxyConnectionRecord]:
        """One record per accepted client connection, in order."""
        with self._lock:
            return list(self._records)

    @property
    def requests(self) -> list[ProxiedRequest]:
        return [r for c in self.connections for r in c.requests]

    def reset(self) -> None:
        with self._lock:
            self._records.clear()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<RecordingProxy {where} connections={len(self.connections)}>"

    # --- serving -------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = ProxyConnectionRecord()
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            record.alpn = ssl_object.selected_alpn_protocol()
        with self._lock:
            self._records.append(record)
        if record.alpn == "h2":
            # Like a real HTTP/2 listener: its preface (empty SETTINGS), then
            # GOAWAY(PROTOCOL_ERROR) for whatever HTTP/1.1 the client sends.
            writer.write(_H2_SETTINGS + _H2_GOAWAY_PROTOCOL_ERROR)
            await writer.drain()
            return
        client = _RecordingReader(reader, record)
        upstreams: dict[tuple[str, int], tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        try:
            for _ in range(10_000):  # bounded keep-alive
                head = await client.read_head()
                if head is None:
                    return
                method, target, headers = _parse_head(head)
                record.requests.append(ProxiedRequest(method, target, headers))
                if not self._authorized(headers):
                    writer.write(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                        b'Proxy-Authenticate: Basic realm="test"\r\n'
                        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    await writer.drain()
                    return
                if method == "CONNECT":
                    await self._tunnel(client, writer, target, record)
                    return
                if not await self._forward(client, writer, method, target, headers, upstreams):
                    return
        finally:
            for _, upstream_writer in upstreams.values():
                upstream_writer.close()

    def _authorized(self, headers: Sequence[tuple[str, str]]) -> bool:
        if self.credentials is None:
            return True
        user, password = self.credentials
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return _header(headers, "proxy-authorization") == expected

    def _address(self, host: str, port: int) -> tuple[str, int]:
        host = host.strip("[]")
        return self.hosts.get(host, host), port

    async def _tunnel(
        self,
        client: _RecordingReader,
        writer: asyncio.StreamWriter,
        target: str,
        record: ProxyConnectionRecord,
    ) -> None:
        if self.connect_status is not None:
            writer.write(
                f"HTTP/1.1 {self.connect_status} Chosen By Test\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            return
        host, _, port = target.rpartition(":")
        try:
            async with asyncio.timeout(UPSTREAM_TIMEOUT):
                up_reader, up_writer = await asyncio.open_connection(
                    *self._address(host, int(port))
                )
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        record.tunnel = target
        client.tunnelling = True
        try:
            if self.connect_drip:
                for byte in self.connect_answer:
                    writer.write(bytes((byte,)))
                    await writer.drain()
                    await asyncio.sleep(self.connect_drip)
            else:
                writer.write(self.connect_answer)
            await asyncio.gather(_pipe(client, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def _forward(
        self,
        client: _RecordingReader,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        upstreams: dict[tuple[str, int], tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    ) -> bool:
        """Forward one absolute-form request; False when the client
        connection must end afterwards."""
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return False
        key = self._address(parts.hostname, parts.port or 80)
        if key not in upstreams:
            async with asyncio.timeout(UPSTREAM_TIMEOUT):
                upstreams[key] = await asyncio.open_connection(*key)
        up_reader, up_writer = upstreams[key]
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        kept = [(n, v) for n, v in headers if n.lower() not in _HOP_HEADERS]
        lines = [f"{method} {path} HTTP/1.1", *(f"{n}: {v}" for n, v in kept)]
        up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await _relay_body(client, up_writer, headers, until_eof=False)
        await up_writer.drain()
        async with asyncio.timeout(UPSTREAM_TIMEOUT):
            while True:
                response_head = await up_reader.readuntil(b"\r\n\r\n")
                writer.write(response_head)
                _, status, response_headers = _parse_head(response_head)
                if not status.startswith("1"):
                    break
            no_body = method == "HEAD" or status in ("204", "304")
            if not no_body:
                await _relay_body(up_reader, writer, response_headers, until_eof=True)
        await writer.drain()
        closing = (_header(response_headers, "connection") or "").lower() == "close"
        framed = no_body or _header(response_headers, "content-length") is not None or (
            _header(response_headers, "transfer-encoding") is not None
        )
        if closing or not framed:
            upstreams.pop(key)[1].close()
        return framed and not closing


def start_recording_proxy(
    certs: TestCerts | None = None,
    *,
    tls: bool = False,
    alpn: Sequence[str] = ("http/1.1",),
    credentials: tuple[str, str] | None = None,
    connect_status: int | None = None,
    connect_answer: bytes | None = None,
    connect_drip: float = 0.0,
) -> RecordingProxy:
    """A started `RecordingProxy`; with `tls`, it listens with the test
    server certificate (``https://localhost:PORT``) offering `alpn`."""
    context = None
    if tls:
        assert certs is not None, "TLS needs certs"
        context = certs.server_ssl_context(alpn=alpn)
    proxy = RecordingProxy(credentials=credentials, connect_status=connect_status,
                           connect_drip=connect_drip)
    if connect_answer is not None:
        proxy.connect_answer = connect_answer
    return proxy.start(context)


# --- proxy.py -------------------------------------------------------------------
class ProxyPy:
    """The proxy.py forward proxy in a subprocess, on 127.0.0.1 with an
    ephemeral port. `basic_auth="user:pass"` makes it require credentials;
    `certs` makes it listen with TLS (``https://localhost:PORT``)."""

    def __init__(
        self,
        workdir: Path,
        *,
        basic_auth: str | None = None,
        certs: TestCerts | None = None,
    ) -> None:
        self.workdir = workdir
        self.basic_auth = basic_auth
        self.tls = certs is not None
        self._certs = certs
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_with()

    def url_with(self, userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        host = "localhost" if self.tls else "127.0.0.1"
        return f"{'https' if self.tls else 'http'}://{at}{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> ProxyPy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_file = self.workdir / "port"
        port_file.unlink(missing_ok=True)
        args = [
            sys.executable, "-m", "proxy",
            "--hostname", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
            "--num-workers", "1", "--num-acceptors", "1",
            "--data-dir", str(self.workdir), "--log-level", "WARNING",
        ]
        if self.basic_auth is not None:
            args += ["--basic-auth", self.basic_auth]
        if self._certs is not None:
            args += [
                "--cert-file", str(self._certs.server_cert_path),
                "--key-file", str(self._certs.server_key_path),
            ]
        log = (self.workdir / "proxy.log").open("wb")
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        with log:
            self._process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            text = port_file.read_text() if port_file.exists() else ""
            if text.strip():
                self.port = int(text.split()[0])
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"proxy.py did not start: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        path = self.workdir / "proxy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Terminate by pid (SIGTERM, then SIGKILL if it lingers)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def __repr__(self) -> str:
        return f"<ProxyPy {self.url} pid={self.pid}>"
