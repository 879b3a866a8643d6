"""Fault-injecting HTTP/1.1 servers on loopback, for retry and breaker tests.

A `FaultServer` answers each request it reads with the next step of a
script, so one server can fail N times and then succeed ("flapping"), reset
mid-response, never answer, or send 503/429 with `Retry-After`. Requests
are numbered across connections; the last step repeats for ever. Every
request read is recorded (`attempts`, `requests`) and every TCP connection
accepted is counted (`accepted`), so a test can tell what reached the wire.

`refusing_port()` gives a port on 127.0.0.1 where connections are refused:
a socket bound but never listening, held for the block so no other process
can take the port meanwhile.

The servers are `tests.support.raw.RawServer`s (raw asyncio, own thread and
loop); handlers only append to lists and bump ints, which the test thread
reads, so no extra locking is needed beyond the GIL.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import struct
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from hyperhttp.errors.retry import AttemptRecord, Outcome, RetryPolicy
from hyperhttp.errors.telemetry import ErrorTelemetry
from hyperhttp.utils.backoff import ExponentialBackoff
from tests.support.raw import RawServer, read_head

MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Respond:
    """Answer with `status`, `headers` and `body`, after `delay` seconds."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass(frozen=True)
class Reset:
    """Write `partial` (maybe nothing), then reset the connection (RST).

    `partial` lets the reset land mid-head or mid-body; either way the
    request was read in full, so it reached the server.
    """

    partial: bytes = b""


@dataclass(frozen=True)
class Hang:
    """Read the request and never answer (until the client leaves)."""


Step = Respond | Reset | Hang

OK = Respond(200, body=b"ok")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server read it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int


class FaultServer:
    """An HTTP/1.1 server that follows `script`, one step per request.

    Use as a context manager (or `start()`/`stop()`). `url` is the base URL,
    `attempts` the number of requests read so far, `requests` what they held,
    `accepted` the TCP connections accepted.
    """

    def __init__(self, script: Sequence[Step], *, host: str = "127.0.0.1") -> None:
        if not script:
            raise ValueError("a script needs at least one step")
        self.script = tuple(script)
        self.requests: list[RecordedRequest] = []
        self._raw = RawServer(self._handle, host=host)

    def __repr__(self) -> str:
        return f"<FaultServer {self.url} attempts={self.attempts} accepted={self.accepted}>"

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> FaultServer:
        self._raw.start()
        return self

    def stop(self) -> None:
        self._raw.stop()
        if self._raw.handler_errors:
            raise RuntimeError(f"fault handler failed: {self._raw.handler_errors!r}")

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- questions ---------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._raw.url

    @property
    def port(self) -> int:
        return self._raw.port

    @property
    def host(self) -> str:
        return self._raw.host

    @property
    def accepted(self) -> int:
        """TCP connections accepted so far."""
        return self._raw.accepted

    @property
    def attempts(self) -> int:
        """Requests read so far (each one counted once its body is in)."""
        return len(self.requests)

    # -- serving -----------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = self._raw.accepted
        while True:
            request = await _read_request(reader, connection)
            if request is None:
                return
            index = min(len(self.requests), len(self.script) - 1)
            self.requests.append(request)
            step = self.script[index]
            if isinstance(step, Respond):
                if step.delay:
                    await asyncio.sleep(step.delay)
                writer.write(_render(step, head_only=request.method == "HEAD"))
                await writer.drain()
            elif isinstance(step, Reset):
                if step.partial:
                    writer.write(step.partial)
                    await writer.drain()
                reset(writer)
                return
            else:
                # Hold the request unanswered until the client closes.
                while await reader.read(65536):
                    pass
                return


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN (SO_LINGER with a zero timeout)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader, connection: int) -> RecordedRequest | None:
    head = await read_head(reader)
    if not head:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        length = int(headers.get("content-length", "0"))
        if length > MAX_BODY:
            raise ValueError(f"request body of {length} bytes is over the test limit")
        body = await reader.readexactly(length) if length else b""
    return RecordedRequest(method, target, headers, body, connection)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Skip trailers up to the blank line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            raise ValueError("chunked request body is over the test limit")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


_REASONS = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def _render(step: Respond, *, head_only: bool) -> bytes:
    lines = [f"HTTP/1.1 {step.status} {_REASONS.get(step.status, 'Status')}"]
    headers = {k.lower(): v for k, v in step.headers.items()}
    headers.setdefault("content-length", str(len(step.body)))
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + step.body


def flapping(failures: int, failure: Step | None = None, success: Step = OK) -> list[Step]:
    """A script that fails `failures` times (default 503), then succeeds for ever."""
    return [failure if failure is not None else Respond(503)] * failures + [success]


def http_date(epoch: float) -> str:
    """`epoch` as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT")."""
    return email.utils.formatdate(epoch, usegmt=True)


@contextmanager
def refusing_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port on `host` that refuses connections for the duration of the block."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.bind((host, 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def quick_policy(max_retries: int = 3, *, base: float = 0.001, **kwargs: object) -> RetryPolicy:
    """A `RetryPolicy` with tiny, predictable delays (no jitter): base, 2*base, ..."""
    backoff = ExponentialBackoff(base=base, factor=2.0, max_backoff=1.0, jitter=False)
    return RetryPolicy(max_retries=max_retries, backoff_strategy=backoff, **kwargs)  # type: ignore[arg-type]


class RecordingTelemetry(ErrorTelemetry):
    """Keeps every `(record, outcome)` pair the client reports."""

    def __init__(self) -> None:
        self.calls: list[tuple[AttemptRecord, Outcome]] = []

    def record_attempt(self, retry_state: AttemptRecord, outcome: Outcome) -> None:
        self.calls.append((retry_state, outcome))

    @property
    def outcomes(self) -> list[str]:
        return [outcome for _, outcome in self.calls]

    @property
    def records(self) -> list[AttemptRecord]:
        return [record for record, _ in self.calls]


__all__ = [
    "OK",
    "FaultServer",
    "Hang",
    "RecordedRequest",
    "RecordingTelemetry",
    "Reset",
    "Respond",
    "Step",
    "flapping",
    "http_date",
    "quick_policy",
    "refusing_port",
    "reset",
]
