"""A small HTTP/2 server (asyncio + h2, TLS with ALPN h2) for forcing behaviours.

Hypercorn cannot be told to refuse a stream, send GOAWAY at a chosen
stream, lower MAX_CONCURRENT_STREAMS mid-connection or starve a client of
flow-control credit; this server can. It runs on its own thread and loop
(like the hypercorn fixtures), and records what it saw in `H2ServerStats`
so tests assert on the server's view: TCP connections, streams, peak
concurrency, resets received, bytes sent per stream.

Behaviour is chosen with `H2ServerConfig` (per server) and by path:

==========================  ==================================================
``/echo``                   reads the body; JSON: length, sha256, stream, conn,
                            headers (as received, pseudo-headers included)
``/bytes/{n}``              n pattern bytes, sent under flow control
``/slow?delay=S``           answers after S seconds
``/drip?chunks=N&delay=S``  headers now, then N 1 KiB chunks S apart
``/reset?code=C``           RST_STREAM with error code C after the head
``/settings?max_streams=M`` sends SETTINGS with MAX_CONCURRENT_STREAMS=M,
                            waits ``delay`` seconds, then answers
``/trailers``               body, then trailers ``x-checksum: abc123``
``/close``                  drops the TCP connection at once
==========================  ==================================================
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

_PATTERN = bytes(range(251))
START_TIMEOUT = 10.0


def pattern_bytes(n: int, offset: int = 0) -> bytes:
    """The bytes `/bytes/{n}` sends (from `offset`)."""
    start = offset % len(_PATTERN)
    repeats = (start + n) // len(_PATTERN) + 1
    return (_PATTERN * repeats)[start : start + n]


@dataclass(frozen=True)
class H2ServerConfig:
    max_concurrent_streams: int = 100
    initial_window_size: int = 65535  # our receive window per stream (client uploads)
    read_bodies: bool = True  # False: never acknowledge request bodies
    goaway_after: int | None = None  # first connection: GOAWAY after this many streams
    refuse_first: int = 0  # first connection: REFUSED_STREAM its first N streams
    # After this many streams answered on a connection, read nothing more and
    # answer nothing (PINGs included): a peer that silently went away.
    go_silent_after: int | None = None


@dataclass
class H2ServerStats:
    connections: int = 0
    streams: list[tuple[int, int, str]] = field(default_factory=list)  # (conn, id, path)
    peak_streams: int = 0
    resets_received: list[tuple[int, int, int]] = field(default_factory=list)
    refused: list[tuple[int, int]] = field(default_factory=list)
    ignored: list[tuple[int, int]] = field(default_factory=list)  # after GOAWAY
    sent: dict[tuple[int, int], int] = field(default_factory=dict)  # body bytes sent
    blocked: set[tuple[int, int]] = field(default_factory=set)  # waiting for credit
    received: dict[tuple[int, int], int] = field(default_factory=dict)  # body bytes

    def copy(self) -> H2ServerStats:
        return H2ServerStats(
            self.connections,
            list(self.streams),
            self.peak_streams,
            list(self.resets_received),
            list(self.refused),
            list(self.ignored),
            dict(self.sent),
            set(self.blocked),
            dict(self.received),
        )


class _Stream:
    def __init__(self, stream_id: int, headers: dict[str, str]) -> None:
        self.id = stream_id
        self.headers = headers
        self.body = bytearray()
        self.ended = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class _Connection:
    def __init__(
        self,
        server: H2Server,
        number: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.number = number
        self.reader = reader
        self.writer = writer
        config = server.config
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="latin-1")
        )
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: config.max_concurrent_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: config.initial_window_size,
            },
        )
        self.streams: dict[int, _Stream] = {}
        self.window = asyncio.Event()
        self.goaway_at: int | None = None
        self.seen = 0
        self.answered = 0  # streams answered (go_silent_after counts them)

    @property
    def first(self) -> bool:
        return self.number == 1

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def run(self) -> None:
        self.h2.initiate_connection()
        self.flush()
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                silent_after = self.server.config.go_silent_after
                if silent_after is not None and self.answered >= silent_after:
                    await asyncio.sleep(3600)  # a black hole until the server stops
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    self.flush()
                    break
                for event in events:
                    self.handle(event)
                self.flush()
        except (ConnectionError, OSError):
            pass
        finally:
            for st in self.streams.values():
                if st.task is not None:
                    st.task.cancel()
            self.writer.close()

    def handle(self, event: h2.events.Event) -> None:
        stats = self.server.stats
        if isinstance(event, h2.events.RequestReceived):
            headers = {str(k): str(v) for k, v in event.headers or []}
            sid = event.stream_id
            self.seen += 1
            with self.server.lock:
                stats.peak_streams = max(stats.peak_streams, self.h2.open_inbound_streams)
                stats.streams.append((self.number, sid, headers.get(":path", "")))
            config = self.server.config
            if self.goaway_at is not None and sid > self.goaway_at:
                with self.server.lock:
                    stats.ignored.append((self.number, sid))
                return
            if self.first and self.seen <= config.refuse_first:
                with self.server.lock:
                    stats.refused.append((self.number, sid))
                self.h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
                return
            new = self.streams[sid] = _Stream(sid, headers)
            new.task = asyncio.get_running_loop().create_task(self.respond(new))
            if self.first and config.goaway_after == self.seen:
                self.send_goaway(sid)
        elif isinstance(event, h2.events.DataReceived):
            receiving = self.streams.get(event.stream_id)
            key = (self.number, event.stream_id)
            with self.server.lock:
                stats.received[key] = stats.received.get(key, 0) + len(event.data or b"")
            if receiving is not None:
                receiving.body += event.data or b""
            if self.server.config.read_bodies:
                self.h2.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
        elif isinstance(event, h2.events.StreamEnded):
            ending = self.streams.get(event.stream_id)
            if ending is not None:
                ending.ended.set()
        elif isinstance(event, h2.events.StreamReset):
            with self.server.lock:
                stats.resets_received.append(
                    (self.number, event.stream_id, int(event.error_code or 0))
                )
            reset = self.streams.pop(event.stream_id, None)
            if reset is not None and reset.task is not None:
                reset.task.cancel()
            self.window.set()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self.window.set()

    def send_goaway(self, last_stream_id: int) -> None:
        # Written by hand: h2 would refuse to finish the processed streams
        # after its own GOAWAY.
        self.goaway_at = last_stream_id
        self.flush()
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = 0
        self.writer.write(frame.serialize())

    async def respond(self, st: _Stream) -> None:
        try:
            await self._respond(st)
        except (h2.exceptions.StreamClosedError, ConnectionError):
            pass
        finally:
            self.answered += 1
            self.streams.pop(st.id, None)
            if self.goaway_at is not None and not self.streams:
                self.writer.close()

    async def _respond(self, st: _Stream) -> None:
        path, _, query = st.headers.get(":path", "/").partition("?")
        args = dict(parse_qsl(query))
        if path == "/echo":
            await st.ended.wait()
            body = bytes(st.body)
            await self.send_json(st, {
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "stream": st.id,
                "conn": self.number,
                "headers": [[k, v] for k, v in st.headers.items()],
            })
        elif path.startswith("/bytes/"):
            n = int(path.rsplit("/", 1)[1])
            self.send_head(st, [("content-length", str(n))])
            await self.send_body(st, pattern_bytes(n), end=True)
        elif path == "/slow":
            await asyncio.sleep(float(args.get("delay", "1")))
            await self.send_json(st, {"stream": st.id, "conn": self.number})
        elif path == "/drip":
            self.send_head(st, [])
            for i in range(int(args.get("chunks", "3"))):
                await asyncio.sleep(float(args.get("delay", "0.1")))
                await self.send_body(st, pattern_bytes(1024, i * 1024), end=False)
            await self.send_body(st, b"", end=True)
        elif path == "/reset":
            self.send_head(st, [])
            self.h2.reset_stream(st.id, int(args.get("code", "2")))
            self.flush()
        elif path == "/settings":
            self.h2.update_settings(
                {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: int(args["max_streams"])}
            )
            self.flush()
            await asyncio.sleep(float(args.get("delay", "0")))
            await self.send_json(st, {"stream": st.id, "conn": self.number})
        elif path == "/close":
            transport = self.writer.transport
            transport.abort()
        elif path == "/trailers":
            self.send_head(st, [])
            await self.send_body(st, b"body before trailers\n", end=False)
            self.h2.send_headers(st.id, [("x-checksum", "abc123")], end_stream=True)
            self.flush()
        else:
            self.send_head(st, [], status=404)
            await self.send_body(st, b"", end=True)

    def send_head(self, st: _Stream, headers: list[tuple[str, str]], status: int = 200) -> None:
        self.h2.send_headers(st.id, [(":status", str(status)), *headers])
        self.flush()

    async def send_json(self, st: _Stream, data: Any) -> None:
        payload = json.dumps(data).encode()
        self.send_head(st, [("content-type", "application/json"),
                            ("content-length", str(len(payload)))])
        await self.send_body(st, payload, end=True)

    async def send_body(self, st: _Stream, data: bytes, *, end: bool) -> None:
        """Send under flow control, recording progress for the tests."""
        key = (self.number, st.id)
        stats = self.server.stats
        view = memoryview(data)
        while view:
            window = min(self.h2.local_flow_control_window(st.id), self.h2.max_outbound_frame_size)
            if window <= 0:
                with self.server.lock:
                    stats.blocked.add(key)
                self.window.clear()
                await self.window.wait()
                with self.server.lock:
                    stats.blocked.discard(key)
                continue
            piece = view[:window]
            self.h2.send_data(st.id, bytes(piece))
            self.flush()
            view = view[len(piece):]
            with self.server.lock:
                stats.sent[key] = stats.sent.get(key, 0) + len(piece)
            await self.writer.drain()
        if end:
            self.h2.end_stream(st.id)
            self.flush()


class H2Server:
    """The server; `start()` it, use `port`/`url`, read `stats`, `stop()` it."""

    def __init__(self, ssl_context: ssl.SSLContext, config: H2ServerConfig | None = None) -> None:
        self.config = config or H2ServerConfig()
        self.lock = threading.Lock()
        self._stats = H2ServerStats()
        self._ssl = ssl_context
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def stats(self) -> H2ServerStats:
        """Mutated on the server thread; tests should read `snapshot()`."""
        return self._stats

    def snapshot(self) -> H2ServerStats:
        with self.lock:
            return self._stats.copy()

    def start(self) -> H2Server:
        self._thread = threading.Thread(target=self._run, name="h2server", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError("h2 test server did not start")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._thread = None

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with self.lock:
                self._stats.connections += 1
                number = self._stats.connections
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await _Connection(self, number, reader, writer).run()
            finally:
                tasks.discard(task)

        server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=self._ssl)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def started(ssl_context: ssl.SSLContext, config: H2ServerConfig | None = None) -> Iterator[H2Server]:
    """A generator for fixtures: yields a running server, stops it afterwards."""
    server = H2Server(ssl_context, config).start()
    try:
        yield server
    finally:
        server.stop()
