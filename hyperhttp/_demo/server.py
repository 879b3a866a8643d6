"""The demo's embedded HTTPS server: HTTP/2 (h2) and HTTP/1.1 (h11) on one
TLS port chosen by ALPN, with a certificate for localhost that ships with
the package for this demo only (`demo-ca.pem` verifies it).

It counts what a server operator would: TCP connections open now, the
peak, and the total accepted, so the demo can show that a client (or a
fleet) never opened more than its cap. Loopback only.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass, field
from importlib import resources

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h11

BODY = b"hello, fleet\n"
STREAMS_PER_CONNECTION = 100


def demo_ca_path() -> str:
    return str(resources.files("hyperhttp._demo") / "demo-ca.pem")


def _server_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(resources.files("hyperhttp._demo") / "demo-server.pem"))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


@dataclass
class ServerCounts:
    open: int = 0
    peak: int = 0
    accepted: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def opened(self) -> None:
        with self.lock:
            self.open += 1
            self.accepted += 1
            self.peak = max(self.peak, self.open)

    def closed(self) -> None:
        with self.lock:
            self.open -= 1

    def served(self) -> None:
        with self.lock:
            self.requests += 1

    def reset_peak(self) -> None:
        with self.lock:
            self.peak = self.open


def _answer(path: str) -> tuple[int, bytes]:
    """`/` and `/hello` answer at once; `/slow/<seconds>` after a pause."""
    if path in ("/", "/hello") or path.startswith("/slow/"):
        return 200, BODY
    return 404, b""


def _delay(path: str) -> float:
    if not path.startswith("/slow/"):
        return 0.0
    try:
        return min(max(float(path.rsplit("/", 1)[1]), 0.0), 5.0)
    except ValueError:
        return 0.0


async def _serve_h11(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: ServerCounts
) -> None:
    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            if not data:
                return
            continue
        if isinstance(event, h11.Request):
            path = event.target.decode("ascii", "replace")
            while not isinstance(conn.next_event(), h11.EndOfMessage):
                data = await reader.read(65536)
                if not data:
                    return
                conn.receive_data(data)
            await asyncio.sleep(_delay(path))
            status, body = _answer(path)
            headers = [("content-length", str(len(body))), ("content-type", "text/plain")]
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
            writer.write(conn.send(h11.Data(data=body)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            counts.served()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed):
            return


async def _serve_h2(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: ServerCounts
) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.local_settings = h2.settings.Settings(
        client=False,
        initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: STREAMS_PER_CONNECTION},
    )
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    tasks: set[asyncio.Task[None]] = set()

    async def respond(stream_id: int, path: str) -> None:
        await asyncio.sleep(_delay(path))
        status, body = _answer(path)
        conn.send_headers(
            stream_id,
            [(":status", str(status)), ("content-length", str(len(body))),
             ("content-type", "text/plain")],
        )
        conn.send_data(stream_id, body, end_stream=True)
        writer.write(conn.data_to_send())
        counts.served()

    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    path = dict(event.headers).get(b":path", b"/").decode("ascii", "replace")
                    task = asyncio.ensure_future(respond(event.stream_id, path))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return
            writer.write(conn.data_to_send())
            await writer.drain()
    finally:
        for task in tasks:
            task.cancel()


class DemoServer:
    """Runs in a thread with its own loop; `url` is `https://localhost:PORT`."""

    def __init__(self) -> None:
        self.counts = ServerCounts()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def start(self) -> DemoServer:
        self._thread = threading.Thread(target=self._run, name="demo-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("demo server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(
            self._on_connection, "127.0.0.1", 0, ssl=_server_context(), backlog=1024
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.counts.opened()
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if alpn == "h2":
                await _serve_h2(reader, writer, self.counts)
            else:
                await _serve_h11(reader, writer, self.counts)
        except (OSError, h11.ProtocolError, h2.exceptions.ProtocolError, ssl.SSLError):
            pass
        finally:
            self.counts.closed()
            writer.close()
