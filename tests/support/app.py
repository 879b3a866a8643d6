"""The ASGI application every loopback test server runs.

Written straight against ASGI (no framework) so that header order, body
chunking and trailers are exactly what the endpoint says. Works on HTTP/1.1
and HTTP/2 under hypercorn. Endpoints:

==============================  ===============================================
``/echo[/...]`` any method      JSON: method, path, query, http_version, scheme,
                                headers ([name, value], lowercased, in order),
                                body_length, body_sha256, body (latin-1, only
                                when under 64 KiB, else null), client
                                ("host:port", one per TCP connection)
``/status/{code}``              that status; short text body (none for
                                204/304); ``retry_after=N`` adds Retry-After;
                                ``body=0`` sends an empty body
``/redirect/{n}``               302 chain /redirect/n-1 ... /echo; query kept;
                                ``absolute=1`` absolute Locations,
                                ``status=30x`` another status
``/redirect-to?url=&status=``   Location = url (default status 302)
``/cookies/set?k=v&...``        Set-Cookie k=v; Path=/ (``redirect=1``: 302 to
                                /cookies); ``/cookies/delete?k`` expires k
``/cookies``                    JSON {"cookies": {...}, "cookie_headers": [...]}
``/gzip /deflate /br /zstd``    compressed JSON; ``stream=1`` sends it in chunks
                                without Content-Length; ``pad=N`` makes it
                                bigger; ``/deflate?raw=1`` raw deflate
``/bytes/{n}?chunk=K``          `pattern_bytes(n)` with Content-Length
``/stream-bytes/{n}?chunk=K``   same bytes, no Content-Length (chunked on h1)
``/slow?delay=S``               answers after S seconds
``/slow-body?chunks=N&delay=S``  headers at once, then N chunks of ``size``
                                bytes of the pattern, S seconds before each
``/json``                       `FIXED_JSON`
``/text?charset=&text=``        `TEXT_SAMPLE` (or ``text``) in that charset
``/headers?Name=value``         sets those response headers (repeats kept)
``/upload``                     multipart/form-data parsed by python-multipart
``/trailers``                   HTTP/2 with ``te: trailers``: body then
                                trailers (query pairs, or a default pair)
``/_stats``                     this server's `ServerStats` as JSON
==============================  ===============================================
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import threading
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import brotli
import zstandard
from python_multipart.multipart import MultipartParser, parse_options_header

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

ECHO_BODY_LIMIT = 64 * 1024
MAX_DELAY = 60.0
MAX_BYTES = 256 * 1024 * 1024
_PATTERN = bytes(range(251))  # prime length, so chunk-boundary slips change the bytes
FIXED_JSON: dict[str, Any] = {
    "name": "hyperhttp",
    "numbers": [1, 2, 3],
    "nested": {"ok": True, "none": None, "pi": 3.14159},
    "unicode": "snow ☃ café",
}
TEXT_SAMPLE = "naïve café, Grüße"  # encodable in latin-1, cp1252, utf-8, utf-16
DEFAULT_TRAILERS: Headers = [(b"x-trailer-one", b"1"), (b"x-checksum", b"abc123")]
TRAILERS_BODY = b"body before trailers\n"


def pattern_bytes(n: int, offset: int = 0) -> bytes:
    """The `n` deterministic bytes that /bytes, /stream-bytes and /slow-body send."""
    start = offset % len(_PATTERN)
    repeats = (start + n) // len(_PATTERN) + 1
    return (_PATTERN * repeats)[start : start + n]


@dataclass(frozen=True, slots=True)
class ServerStats:
    """A snapshot of what one server has seen since its last reset."""

    connections: frozenset[tuple[str, int]]  # distinct client (host, port): TCP connections
    requests: int
    in_flight: int
    peak_in_flight: int

    @property
    def connection_count(self) -> int:
        return len(self.connections)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["connections"] = sorted([host, port] for host, port in self.connections)
        return data


class StatsRecorder:
    """Thread-safe counters: written on the server's loop, read by the test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: set[tuple[str, int]] = set()
        self._requests = 0
        self._in_flight = 0
        self._peak = 0

    def request_started(self, client: tuple[str, int] | None) -> None:
        with self._lock:
            if client is not None:
                self._connections.add((client[0], client[1]))
            self._requests += 1
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)

    def request_finished(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def snapshot(self) -> ServerStats:
        with self._lock:
            return ServerStats(
                frozenset(self._connections), self._requests, self._in_flight, self._peak
            )

    def reset(self) -> None:
        """Forget connections and requests; requests still running stay counted."""
        with self._lock:
            self._connections.clear()
            self._requests = 0
            self._peak = self._in_flight


class Request:
    """One ASGI HTTP request, with the helpers the endpoints share."""

    def __init__(self, app: TestApp, scope: Scope, receive: Receive, send: Send) -> None:
        self.app = app
        self.scope = scope
        self.receive = receive
        self.send = send
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: list[tuple[str, str]] = parse_qsl(
            scope["query_string"].decode("latin-1"), keep_blank_values=True
        )
        self.body_done = False
        self.disconnected = False

    # -- request side -----------------------------------------------------

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return bytes(value)
        return None

    def header_values(self, name: bytes) -> list[bytes]:
        return [bytes(v) for k, v in self.scope["headers"] if k == name]

    def arg(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return default

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        raw = self.arg(name)
        value = default if raw is None else float(raw)
        if not low <= value <= high:
            raise ValueError(f"{name} must be within [{low}, {high}]")
        return value

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the request body as it arrives."""
        while not self.body_done:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = self.body_done = True
                return
            self.body_done = not message.get("more_body", False)
            body = message.get("body", b"")
            if body:
                yield bytes(body)

    async def drain(self) -> None:
        async for _ in self.chunks():
            pass

    async def pause(self, delay: float) -> bool:
        """Sleep `delay` seconds; False if the client left or the server is stopping."""
        await self.drain()
        if self.disconnected:
            return False
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(asyncio.sleep(delay, True))]
        if self.app.closing is not None:
            waiters.append(asyncio.ensure_future(self.app.closing.wait()))
        waiters.append(asyncio.ensure_future(self.receive()))  # resolves only on disconnect
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return waiters[0] in done and waiters[0].result() is True

    # -- response side ----------------------------------------------------

    async def start(self, status: int, headers: Headers, *, trailers: bool = False) -> None:
        message: Message = {"type": "http.response.start", "status": status, "headers": headers}
        if trailers:
            message["trailers"] = True
        await self.send(message)

    async def body(self, data: bytes, *, more: bool = False) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str | None = "text/plain; charset=utf-8",
        headers: Headers | None = None,
    ) -> None:
        all_headers = list(headers or [])
        if content_type is not None and (body or status not in (204, 304)):
            all_headers.append((b"content-type", content_type.encode("latin-1")))
        if status not in (204, 304) and not 100 <= status < 200:
            all_headers.append((b"content-length", str(len(body)).encode()))
        await self.start(status, all_headers)
        await self.body(body)

    async def json(self, data: Any, *, status: int = 200, headers: Headers | None = None) -> None:
        payload = json.dumps(data, ensure_ascii=False).encode("utf-8")
        await self.respond(status, payload, content_type="application/json", headers=headers)

    async def error(self, status: int, detail: str) -> None:
        await self.json({"error": detail}, status=status)

    def base_url(self) -> str:
        host = (self.header(b"host") or b"").decode("latin-1")
        return f"{self.scope['scheme']}://{host}"


Handler = Callable[[Request], Awaitable[None]]


class TestApp:
    """The ASGI callable; one instance per server, holding that server's stats."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.stats = StatsRecorder()
        # Created on the server's loop at lifespan startup; set when stopping so
        # slow endpoints give up at once instead of holding the shutdown.
        self.closing: asyncio.Event | None = None
        self.started: threading.Event | None = None  # set once lifespan startup is done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        finished = trailers = False

        def finish() -> None:
            nonlocal finished
            if not finished:
                finished = True
                self.stats.request_finished()

        async def counted_send(message: Message) -> None:
            # Leave "in flight" before the last byte goes out, so a client that
            # has read the whole response never sees its request still counted.
            nonlocal trailers
            kind = message["type"]
            if kind == "http.response.start":
                trailers = bool(message.get("trailers", False))
            elif kind == "http.response.body":
                if not message.get("more_body", False) and not trailers:
                    finish()
            elif kind == "http.response.trailers" and not message.get("more_trailers", False):
                finish()
            await send(message)

        request = Request(self, scope, receive, counted_send)
        client = scope.get("client")
        self.stats.request_started(tuple(client) if client else None)
        try:
            handler = _route(request.path)
            if handler is None:
                await request.error(404, f"no route for {request.path}")
                return
            try:
                await handler(request)
            except ValueError as exc:  # bad query parameter; the response has not started
                await request.error(400, str(exc))
        finally:
            finish()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.closing = asyncio.Event()
                await send({"type": "lifespan.startup.complete"})
                if self.started is not None:
                    self.started.set()
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


# -- endpoints ---------------------------------------------------------------


def _client_text(client: Sequence[Any] | None) -> str | None:
    if not client:
        return None
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def echo(req: Request) -> None:
    digest = hashlib.sha256()
    kept = bytearray()
    length = 0
    async for chunk in req.chunks():
        digest.update(chunk)
        length += len(chunk)
        if length < ECHO_BODY_LIMIT:
            kept += chunk
    await req.json(
        {
            "method": req.method,
            "path": bytes(req.scope.get("raw_path") or req.path.encode()).decode("latin-1"),
            "query": req.scope["query_string"].decode("latin-1"),
            "http_version": f"HTTP/{req.scope['http_version']}",
            "scheme": req.scope["scheme"],
            "headers": [
                [k.decode("latin-1"), v.decode("latin-1")] for k, v in req.scope["headers"]
            ],
            "body_length": length,
            "body_sha256": digest.hexdigest(),
            "body": kept.decode("latin-1") if length < ECHO_BODY_LIMIT else None,
            "client": _client_text(req.scope.get("client")),
        }
    )


async def status(req: Request) -> None:
    code = int(req.path.rsplit("/", 1)[1])
    if not 200 <= code <= 599:
        raise ValueError("status must be within 200-599")
    await req.drain()
    headers: Headers = []
    retry_after = req.arg("retry_after")
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode("latin-1")))
    body = b""
    if code not in (204, 304) and req.arg("body") != "0":
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Custom"
        body = f"{code} {phrase}\n".encode()
    await req.respond(code, body, headers=headers)


async def redirect(req: Request) -> None:
    n = int(req.path.rsplit("/", 1)[1])
    if not 1 <= n <= 100:
        raise ValueError("n must be within 1-100")
    await req.drain()
    target = f"/redirect/{n - 1}" if n > 1 else "/echo"
    if req.scope["query_string"]:
        target += "?" + req.scope["query_string"].decode("latin-1")
    if req.arg("absolute") in ("1", "true"):
        target = req.base_url() + target
    code = int(req.arg("status", "302") or 302)
    await req.respond(code, b"", headers=[(b"location", target.encode("latin-1"))])


async def redirect_to(req: Request) -> None:
    url = req.arg("url")
    if url is None:
        raise ValueError("url is required")
    await req.drain()
    code = int(req.arg("status", "302") or 302)
    await req.respond(code, b"", headers=[(b"location", url.encode("utf-8"))])


async def cookies_set(req: Request) -> None:
    await req.drain()
    pairs = [(k, v) for k, v in req.query if k != "redirect"]
    headers: Headers = [(b"set-cookie", f"{k}={v}; Path=/".encode()) for k, v in pairs]
    await _cookie_reply(req, headers, {"set": dict(pairs)})


async def cookies_delete(req: Request) -> None:
    await req.drain()
    names = [k for k, _ in req.query if k != "redirect"]
    expired = "; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
    headers: Headers = [(b"set-cookie", f"{k}={expired}".encode()) for k in names]
    await _cookie_reply(req, headers, {"deleted": names})


async def _cookie_reply(req: Request, headers: Headers, data: dict[str, Any]) -> None:
    if req.arg("redirect") in ("1", "true"):
        headers.append((b"location", b"/cookies"))
        await req.respond(302, b"", headers=headers)
    else:
        await req.json(data, headers=headers)


async def cookies(req: Request) -> None:
    await req.drain()
    # HTTP/2 clients may split Cookie into several fields (RFC 9113 8.2.3).
    raw = [v.decode("latin-1") for v in req.header_values(b"cookie")]
    jar: dict[str, str] = {}
    for crumb in "; ".join(raw).split(";"):
        name, sep, value = crumb.strip().partition("=")
        if sep:
            jar[name] = value
    await req.json({"cookies": jar, "cookie_headers": raw})


def _compress(encoding: str, data: bytes, *, raw_deflate: bool) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data, mtime=0)
    if encoding == "deflate":
        if raw_deflate:
            compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            return compressor.compress(data) + compressor.flush()
        return zlib.compress(data)
    if encoding == "br":
        return bytes(brotli.compress(data))
    return bytes(zstandard.ZstdCompressor().compress(data))


async def compressed(req: Request) -> None:
    await req.drain()
    encoding = req.path.strip("/")
    pad = int(req.number("pad", 0, low=0, high=MAX_BYTES))
    document = {"encoding": encoding, "method": req.method, "pad": "x" * pad}
    plain = json.dumps(document).encode()
    data = _compress(encoding, plain, raw_deflate=req.arg("raw") == "1")
    headers: Headers = [
        (b"content-type", b"application/json"),
        (b"content-encoding", encoding.encode()),
    ]
    if req.arg("stream") != "1":
        headers.append((b"content-length", str(len(data)).encode()))
        await req.start(200, headers)
        await req.body(data)
        return
    await req.start(200, headers)
    step = max(1, len(data) // 4)
    for i in range(0, len(data), step):
        await req.body(data[i : i + step], more=True)
    await req.body(b"")


def _pieces(n: int, chunk: int) -> Iterator[bytes]:
    for offset in range(0, n, chunk):
        yield pattern_bytes(min(chunk, n - offset), offset)


async def send_bytes(req: Request) -> None:
    n = int(req.path.rsplit("/", 1)[1])
    if not 0 <= n <= MAX_BYTES:
        raise ValueError(f"n must be within 0-{MAX_BYTES}")
    chunk = int(req.number("chunk", 65536, low=1, high=MAX_BYTES))
    await req.drain()
    headers: Headers = [(b"content-type", b"application/octet-stream")]
    if req.path.startswith("/bytes/"):
        headers.append((b"content-length", str(n).encode()))
    await req.start(200, headers)
    for piece in _pieces(n, chunk):
        await req.body(piece, more=True)
    await req.body(b"")


async def slow(req: Request) -> None:
    delay = req.number("delay", 1.0, low=0, high=MAX_DELAY)
    if await req.pause(delay):
        await req.json({"delay": delay})


async def slow_body(req: Request) -> None:
    count = int(req.number("chunks", 3, low=0, high=10_000))
    delay = req.number("delay", 0.1, low=0, high=MAX_DELAY)
    size = int(req.number("size", 16, low=1, high=1 << 20))
    await req.drain()
    await req.start(200, [(b"content-type", b"application/octet-stream")])
    for i in range(count):
        if not await req.pause(delay):
            return  # client gone or server stopping: leave the body unfinished
        await req.body(pattern_bytes(size, i * size), more=True)
    await req.body(b"")


async def fixed_json(req: Request) -> None:
    await req.drain()
    await req.json(FIXED_JSON)


async def text(req: Request) -> None:
    await req.drain()
    charset = req.arg("charset")
    sample = req.arg("text", TEXT_SAMPLE) or ""
    try:
        data = sample.encode(charset or "utf-8")
    except (LookupError, UnicodeEncodeError) as exc:
        raise ValueError(f"cannot encode in {charset!r}: {exc}") from None
    content_type = f"text/plain; charset={charset}" if charset else "text/plain"
    await req.respond(200, data, content_type=content_type)


async def set_headers(req: Request) -> None:
    await req.drain()
    headers: Headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in req.query]
    await req.json({"headers": [[k, v] for k, v in req.query]}, headers=headers)


async def trailers(req: Request) -> None:
    await req.drain()
    wanted = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in req.query]
    # hypercorn only emits trailers on HTTP/2 and only if the client sent `te: trailers`.
    if req.scope["http_version"] != "2" or req.header(b"te") != b"trailers":
        await req.respond(200, TRAILERS_BODY, headers=[(b"x-trailers", b"unsupported")])
        return
    await req.start(200, [(b"content-type", b"text/plain")], trailers=True)
    await req.body(TRAILERS_BODY)
    await req.send(
        {
            "type": "http.response.trailers",
            "headers": wanted or DEFAULT_TRAILERS,
            "more_trailers": False,
        }
    )


async def stats(req: Request) -> None:
    await req.drain()
    await req.json(req.app.stats.snapshot().as_json())


class _PartCollector:
    """Streaming callbacks for python-multipart: one summary dict per part."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []
        self.complete = False
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, str] = {}
        self._digest = hashlib.sha256()
        self._size = 0
        self._kept = bytearray()

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_part_data": self._data,
            "on_part_end": self._end,
            "on_end": self._finish,
        }

    def _begin(self) -> None:
        self._headers = {}
        self._digest = hashlib.sha256()
        self._size = 0
        self._kept = bytearray()

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").lower()
        self._headers[name] = self._value.decode("latin-1")
        self._field.clear()
        self._value.clear()

    def _data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        self._digest.update(piece)
        self._size += len(piece)
        if self._size < ECHO_BODY_LIMIT:
            self._kept += piece

    def _end(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition"))
        filename = options.get(b"filename")
        self.parts.append(
            {
                "name": options.get(b"name", b"").decode("utf-8", "replace"),
                "filename": None if filename is None else filename.decode("utf-8", "replace"),
                "content_type": self._headers.get("content-type"),
                "headers": self._headers,
                "size": self._size,
                "sha256": self._digest.hexdigest(),
                # Small plain fields are echoed so tests can check their text.
                "value": self._kept.decode("latin-1")
                if filename is None and self._size < ECHO_BODY_LIMIT
                else None,
            }
        )

    def _finish(self) -> None:
        self.complete = True


async def upload(req: Request) -> None:
    content_type = req.header(b"content-type")
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in options:
        await req.drain()
        await req.error(400, "expected multipart/form-data with a boundary")
        return
    collector = _PartCollector()
    parser = MultipartParser(options[b"boundary"], collector.callbacks())
    received = 0
    failure: str | None = None
    async for chunk in req.chunks():
        received += len(chunk)
        if failure is None:
            try:
                parser.write(chunk)
            except Exception as exc:  # python-multipart's parse errors; keep draining
                failure = f"{type(exc).__name__}: {exc}"
    parser.finalize()
    content_length = req.header(b"content-length")
    transfer_encoding = req.header(b"transfer-encoding")
    await req.json(
        {
            "parts": collector.parts,
            "complete": collector.complete,
            "error": failure,
            "content_type": (content_type or b"").decode("latin-1"),
            "content_length": None if content_length is None else int(content_length),
            "transfer_encoding": None
            if transfer_encoding is None
            else transfer_encoding.decode("latin-1"),
            "body_bytes": received,
            "http_version": f"HTTP/{req.scope['http_version']}",
        },
        status=200 if failure is None else 400,
    )


_EXACT: dict[str, Handler] = {
    "/echo": echo,
    "/redirect-to": redirect_to,
    "/cookies": cookies,
    "/cookies/set": cookies_set,
    "/cookies/delete": cookies_delete,
    "/gzip": compressed,
    "/deflate": compressed,
    "/br": compressed,
    "/zstd": compressed,
    "/slow": slow,
    "/slow-body": slow_body,
    "/json": fixed_json,
    "/text": text,
    "/headers": set_headers,
    "/upload": upload,
    "/trailers": trailers,
    "/_stats": stats,
}
_PREFIX: list[tuple[str, Handler]] = [
    ("/echo/", echo),
    ("/status/", status),
    ("/redirect/", redirect),
    ("/bytes/", send_bytes),
    ("/stream-bytes/", send_bytes),
]


def _route(path: str) -> Handler | None:
    handler = _EXACT.get(path)
    if handler is not None:
        return handler
    for prefix, candidate in _PREFIX:
        if path.startswith(prefix):
            return candidate
    return None
