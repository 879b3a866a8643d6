"""A raw asyncio TCP server for broken and hostile peers.

`RawServer(handler)` runs ``await handler(reader, writer)`` for every accepted
connection, on its own loop in a background thread, so a handler can send
anything at all (truncated heads, bad framing, stalls). `canned` builds the
common handler: read one request, write fixed bytes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable

log = logging.getLogger("tests.support.raw")

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
MAX_HEAD = 1 << 20

# Peers going away is the normal end of a hostile exchange, not a handler bug.
_PEER_GONE = (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


class RawServer:
    """Serve `handler` on ``host`` (ephemeral port) until `stop`.

    Pass an `ssl.SSLContext` as `ssl_context` to speak TLS (the URL then uses
    ``https://localhost``). `accepted` counts connections; exceptions a handler
    raises (other than the peer going away) are kept in `handler_errors`.
    """

    def __init__(
        self,
        handler: RawHandler,
        *,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.host = host
        self.ssl_context = ssl_context
        self.port = 0
        self.handler_errors: list[BaseException] = []
        self._accepted = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def __repr__(self) -> str:
        return f"<RawServer {self.url if self.port else self.host} accepted={self.accepted}>"

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def url(self) -> str:
        """Base URL: ``https://localhost:PORT`` with TLS, else the bound address."""
        if self.ssl_context is not None:
            name = "localhost"
        else:
            name = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{name}:{self.port}"

    @property
    def accepted(self) -> int:
        """How many TCP connections have been accepted so far."""
        with self._lock:
            return self._accepted

    def start(self) -> RawServer:
        self._thread = threading.Thread(target=self._run, name="raw server", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT) or self._error is not None:
            self.stop()
            raise RuntimeError("raw server did not start") from self._error
        return self

    def stop(self) -> None:
        """Stop accepting, abort every open connection and cancel the handlers."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and thread.is_alive():
            loop.call_soon_threadsafe(self._begin_stop)
        thread.join(STOP_TIMEOUT)
        self._thread = None
        if thread.is_alive():
            raise RuntimeError(f"raw server {self.url} did not stop")
        if self._error is not None:
            raise RuntimeError("raw server failed") from self._error

    def __enter__(self) -> RawServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _begin_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
                runner.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(
            self._on_connection,
            self.host,
            0,
            ssl=self.ssl_context,
            ssl_handshake_timeout=10.0 if self.ssl_context is not None else None,
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for writer in self._writers:
                writer.transport.abort()
            self._writers.clear()
            await server.wait_closed()
            await asyncio.sleep(0)  # let the aborted transports run connection_lost

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        with self._lock:
            self._accepted += 1
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self.handler(reader, writer)
        except asyncio.CancelledError:
            pass  # stop() cancels handlers still running
        except _PEER_GONE:
            pass
        except Exception as exc:
            log.exception("raw handler failed")
            self.handler_errors.append(exc)
        finally:
            self._tasks.discard(task)
            # A graceful close (FIN, or close_notify with TLS) so the peer reads
            # everything written; stop() aborts whatever is still closing.
            writer.close()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """Read one request head, up to and including the blank line (b"" at EOF)."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return b""


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


class CannedHandler:
    """A `RawHandler` that answers requests with fixed bytes; see `canned`."""

    def __init__(self, response: bytes, *, close: bool, delay: float, repeat: bool) -> None:
        self.response = response
        self.close = close
        self.delay = delay
        self.repeat = repeat
        self.requests: list[bytes] = []  # every request head (and body) read, in order

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_head(reader)
            if not head:
                return
            length = _content_length(head)
            body = await reader.readexactly(length) if length else b""
            self.requests.append(head + body)
            if self.delay:
                await asyncio.sleep(self.delay)
            writer.write(self.response)
            await writer.drain()
            if self.close:
                return  # RawServer closes the connection when the handler returns
            if not self.repeat:
                # Hold the connection open until the peer leaves or the server stops.
                while await reader.read(65536):
                    pass
                return


def canned(
    response: bytes, *, close: bool = True, delay: float = 0.0, repeat: bool = False
) -> CannedHandler:
    """A handler that reads a request head (and a Content-Length body), then writes `response`.

    `delay` waits that many seconds before writing. `close=True` closes the
    connection right after writing. With ``close=False`` the connection stays
    open: until the peer closes it (``repeat=False``) or answering every further
    request on it with the same bytes (``repeat=True``). The handler's
    `requests` list records what each request sent.
    """
    return CannedHandler(response, close=close, delay=delay, repeat=repeat)
