"""HTTP/2 uploads whose send window goes negative (RFC 9113 6.9.2).

A raw h2 server (a `RawServer` handler, TLS with ALPN h2 on 127.0.0.1)
takes the client's whole first window without giving credit, then lowers
SETTINGS_INITIAL_WINDOW_SIZE: the client's stream window drops below zero.
It then nudges both windows by a little (a wake that leaves the stream
still blocked) and, in the first test, later opens them wide. A client that
reads a negative window as "may send" drops the front of the body and spins
without yielding, freezing the loop.

The connection is built directly (as in test_http2.py), so the tests depend
on the HTTP/2 transport alone. A frozen loop cannot fire asyncio timeouts:
`Heartbeat` watches the loop from a thread and fails the test with a signal.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

import hyperhttp
from hyperhttp._backends.stream import SocketStream
from hyperhttp._config import Timeout
from hyperhttp._models import Request
from hyperhttp._tls import create_ssl_context
from hyperhttp._transport.dial import negotiated_alpn, open_connection
from hyperhttp._transport.dns import DNSCache
from hyperhttp._transport.http2 import HTTP2Connection
from tests.support.certs import TestCerts
from tests.support.fixtures import RawServerFactory
from tests.support.h2server import pattern_bytes
from tests.support.raw import RawServer

# Last resort should `Heartbeat` not stop a frozen loop.
pytestmark = pytest.mark.timeout(15)

WINDOW = 65_535  # the client's first stream and connection send windows
LOWERED = 16_384  # stream window then: WINDOW - WINDOW + (LOWERED - WINDOW) < 0
NUDGE = 1_024  # credit that wakes the client but leaves the stream window < 0
NUDGE_AFTER = 0.1
BODY = pattern_bytes(256 * 1024, 7)


@dataclass
class _Upload:
    """The server's view of the one upload; read across threads under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    body: bytearray = field(default_factory=bytearray)
    lowered_at: float | None = None  # time.monotonic(), shared with the test
    opened_at: float | None = None
    before_open: int | None = None  # bytes received when the windows opened
    acked: bool = False  # the client acknowledged the lowered SETTINGS

    def received(self) -> int:
        with self.lock:
            return len(self.body)


class LoweringServer:
    """`RawServer` handler: one HTTP/2 connection, one upload, answered
    with JSON (length, sha256, what it saw before opening the windows).
    `open_after=None` never opens them."""

    def __init__(self, open_after: float | None, nudge_every: float | None = None) -> None:
        self.open_after = open_after
        self.nudge_every = nudge_every  # keep nudging (never enough) at this pace
        self.upload = _Upload()
        self.lowered = threading.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        opener: asyncio.Task[None] | None = None
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    sid = self._handle(conn, event)
                    if sid is not None and opener is None:
                        opener = asyncio.create_task(self._open_later(conn, writer, sid))
                writer.write(conn.data_to_send())
        finally:
            if opener is not None:
                opener.cancel()

    def _handle(self, conn: h2.connection.H2Connection, event: h2.events.Event) -> int | None:
        """File `event`; its stream id when it used up the client's window."""
        up = self.upload
        if isinstance(event, h2.events.DataReceived):
            # No credit given back: the client's windows only shrink.
            with up.lock:
                up.body += event.data
                used_up = up.lowered_at is None and len(up.body) >= WINDOW
                if used_up:
                    up.lowered_at = time.monotonic()
            if used_up:
                conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: LOWERED})
                self.lowered.set()
                return int(event.stream_id)
            return None
        if isinstance(event, h2.events.SettingsAcknowledged) and up.lowered_at is not None:
            with up.lock:
                up.acked = True
        elif isinstance(event, h2.events.StreamEnded):
            with up.lock:
                body = bytes(up.body)
                answer = {
                    "length": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "lowered_at": up.lowered_at,
                    "opened_at": up.opened_at,
                    "before_open": up.before_open,
                    "acked": up.acked,
                }
            payload = json.dumps(answer).encode()
            sid = event.stream_id
            conn.send_headers(sid, [(":status", "200"), ("content-length", str(len(payload)))])
            conn.send_data(sid, payload, end_stream=True)
        return None

    async def _open_later(
        self, conn: h2.connection.H2Connection, writer: asyncio.StreamWriter, sid: int
    ) -> None:
        await asyncio.sleep(NUDGE_AFTER)
        conn.increment_flow_control_window(NUDGE)
        conn.increment_flow_control_window(NUDGE, sid)
        writer.write(conn.data_to_send())
        while self.nudge_every is not None:
            await asyncio.sleep(self.nudge_every)
            conn.increment_flow_control_window(NUDGE)
            conn.increment_flow_control_window(NUDGE, sid)
            writer.write(conn.data_to_send())
        if self.open_after is None:
            return
        await asyncio.sleep(self.open_after)
        with self.upload.lock:
            self.upload.before_open = len(self.upload.body)
            self.upload.opened_at = time.monotonic()
        conn.increment_flow_control_window(len(BODY))
        conn.increment_flow_control_window(len(BODY), sid)
        writer.write(conn.data_to_send())


async def dial(certs: TestCerts, port: int, **options: bool) -> HTTP2Connection:
    """An HTTP/2 connection to a raw server of the tests on 127.0.0.1;
    `options` go to HTTP2Connection (fast paths on or off)."""
    transport, stream = await open_connection(
        "127.0.0.1",
        port,
        lambda: SocketStream(f"localhost:{port}"),
        dns=DNSCache(),
        ssl_context=create_ssl_context(verify=str(certs.ca_pem_path)),
        server_hostname="localhost",
        connect_timeout=5.0,
    )
    assert negotiated_alpn(transport) == "h2"
    conn = HTTP2Connection(("https", "127.0.0.1", port, ""), stream, lambda conn: None, **options)
    await conn.start(Timeout(5.0))
    return conn


class Heartbeat:
    """Ticks every 10 ms on the loop under test. A watchdog thread signals
    the main thread (SIGUSR1; its handler raises) when the ticks stop for
    `stall` seconds: a frozen loop fires no asyncio timeout."""

    def __init__(self, stall: float = 2.0) -> None:
        self.stall = stall
        self.ticks = [time.monotonic()]
        self._done = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="heartbeat", daemon=True)
        self._task: asyncio.Task[None] | None = None
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    async def __aenter__(self) -> Heartbeat:
        self._previous = signal.signal(signal.SIGUSR1, self._frozen)
        self._task = asyncio.create_task(self._beat())
        self._watchdog.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._watchdog.join()
        assert self._task is not None
        self._task.cancel()
        signal.signal(signal.SIGUSR1, self._previous)

    async def _beat(self) -> None:
        while True:
            self.ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    def _watch(self) -> None:
        main = threading.main_thread().ident
        assert main is not None
        while not self._done.wait(0.1):
            if time.monotonic() - self.ticks[-1] > self.stall:
                signal.pthread_kill(main, signal.SIGUSR1)
                return

    def _frozen(self, signum: int, frame: FrameType | None) -> None:
        raise AssertionError(f"the event loop did not run for {self.stall}s")


def start(
    raw_server: RawServerFactory, open_after: float | None, nudge_every: float | None = None
) -> tuple[RawServer, LoweringServer]:
    handler = LoweringServer(open_after, nudge_every)
    return raw_server(handler, tls=True, alpn=("h2",)), handler


async def test_upload_waits_out_a_negative_window_and_sends_the_whole_body(
    certs: TestCerts, raw_server: RawServerFactory
) -> None:
    server, _ = start(raw_server, open_after=0.3)
    conn = await dial(certs, server.port)
    try:
        async with Heartbeat() as beat, asyncio.timeout(5):
            conn.reserve_stream()
            request = Request("POST", f"{server.url}/upload", content=BODY)
            response = await conn.handle_request(request, Timeout(5.0, write=2.0))
            answer = json.loads(await response.aread())
    finally:
        conn.close()
    assert response.status_code == 200
    assert answer["acked"], "the client never took the lowered window"
    assert answer["before_open"] == WINDOW  # nothing sent while negative
    assert answer["length"] == len(BODY)
    assert answer["sha256"] == hashlib.sha256(BODY).hexdigest()
    # The loop ran while the upload waited for the window to open.
    lowered, opened = answer["lowered_at"], answer["opened_at"]
    waited = [t for t in beat.ticks if lowered <= t <= opened]
    assert len(waited) >= 5, f"{len(waited)} heartbeats in {opened - lowered:.2f}s"
    assert not server.handler_errors


async def upload_until_write_timeout(certs: TestCerts, server: RawServer, write: float) -> float:
    """POST BODY with a write timeout of `write` seconds and require the
    WriteTimeout (naming that timeout) with the loop alive throughout;
    return how long it took."""
    conn = await dial(certs, server.port)
    began = time.monotonic()
    try:
        async with Heartbeat(), asyncio.timeout(5):
            conn.reserve_stream()
            request = Request("POST", f"{server.url}/upload", content=BODY)
            match = rf"for {write:.3g}s \(write timeout\)"
            with pytest.raises(hyperhttp.WriteTimeout, match=match):
                await conn.handle_request(request, Timeout(5.0, write=write))
    finally:
        conn.close()
    return time.monotonic() - began


async def test_window_left_negative_ends_in_write_timeout(
    certs: TestCerts, raw_server: RawServerFactory
) -> None:
    server, handler = start(raw_server, open_after=None)
    elapsed = await upload_until_write_timeout(certs, server, 0.3)
    assert handler.lowered.is_set()
    with handler.upload.lock:
        assert handler.upload.acked, "the client never took the lowered window"
    # The write timeout (restarted once by the nudge), not the 5s limit.
    assert elapsed < 2.0, f"gave up after {elapsed:.2f}s"
    assert handler.upload.received() == WINDOW  # nothing sent while negative
    assert not server.handler_errors


async def test_credit_that_never_lifts_the_window_does_not_restart_the_write_timeout(
    certs: TestCerts, raw_server: RawServerFactory
) -> None:
    """A server that keeps waking the stream with credit too small to make
    its window positive (1 KiB every 0.1 s against -49 KiB) must not hold
    the upload past its write timeout: each wake-up used to start it over."""
    server, handler = start(raw_server, open_after=None, nudge_every=0.1)
    elapsed = await upload_until_write_timeout(certs, server, 0.5)
    assert handler.lowered.is_set()
    assert elapsed < 2.0, f"gave up after {elapsed:.2f}s"
    assert handler.upload.received() == WINDOW  # nothing sent while negative
    assert not server.handler_errors
