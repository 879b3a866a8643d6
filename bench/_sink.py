"""Upload sink: a minimal HTTP/1.1 server that reads every request body to
the end (Content-Length or chunked) and only then answers 200 with the byte
count, so an upload's time covers the whole body.

nginx is not used for uploads: for a POST to `return 200` it answers at once
and discards the body afterwards, so a client that reads the response while
still sending would stop the clock early. `GET /stats` returns
{"connections": n, "requests": n, "bytes": n}; only connections that carried
an upload are counted.

Run: python bench/_sink.py --port 8080 [--cpu 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import cast

HEAD, BODY, CHUNK_LINE, CHUNK_DATA, CHUNK_END, TRAILER = range(6)
MAX_HEAD = 64 * 1024


class Stats:
    connections = 0
    requests = 0
    bytes = 0


class SinkProtocol(asyncio.Protocol):
    """One connection: parse heads, count body bytes without keeping them."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = HEAD
        self.remaining = 0
        self.received = 0
        self.counted = False
        self.is_stats = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        pos = 0
        n = len(data)
        while pos < n:
            if self.state == HEAD:
                self.buf += data[pos:]
                pos = n
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEAD:
                        self._fail()
                    return
                head = bytes(self.buf[:end])
                data = bytes(self.buf[end + 4:])
                self.buf.clear()
                pos, n = 0, len(data)
                self._start(head)
            elif self.state in (BODY, CHUNK_DATA):
                take = min(self.remaining, n - pos)
                self.remaining -= take
                self.received += take
                pos += take
                if self.remaining == 0:
                    if self.state == BODY:
                        self._finish()
                    else:
                        self.state = CHUNK_END
            else:  # a line: chunk size, CRLF after chunk data, or trailer
                nl = data.find(b"\n", pos)
                if nl < 0:
                    self.buf += data[pos:]
                    return
                line = bytes(self.buf) + data[pos:nl]
                self.buf.clear()
                pos = nl + 1
                self._line(line.strip())

    def _line(self, line: bytes) -> None:
        if self.state == CHUNK_END:
            self.state = CHUNK_LINE
        elif self.state == CHUNK_LINE:
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                self.state = TRAILER
            else:
                self.remaining = size
                self.state = CHUNK_DATA
        elif self.state == TRAILER and not line:
            self._finish()

    def _start(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self._fail()
            return
        headers: dict[bytes, bytes] = {}
        for raw in lines[1:]:
            name, _, value = raw.partition(b":")
            headers[name.strip().lower()] = value.strip()
        self.is_stats = parts[0] == b"GET" and parts[1] == b"/stats"
        if not self.is_stats and not self.counted:
            self.counted = True
            Stats.connections += 1
        if headers.get(b"expect", b"").lower() == b"100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.received = 0
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self.state = CHUNK_LINE
        else:
            self.remaining = int(headers.get(b"content-length", b"0"))
            self.state = BODY
            if self.remaining == 0:
                self._finish()

    def _finish(self) -> None:
        if self.is_stats:
            body = json.dumps({"connections": Stats.connections, "requests": Stats.requests,
                               "bytes": Stats.bytes}).encode()
        else:
            Stats.requests += 1
            Stats.bytes += self.received
            body = json.dumps({"received": self.received}).encode()
        self.state = HEAD
        if self.transport is not None:
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body
            )

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SinkProtocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {args.cpu})
        except OSError:
            pass
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(args.port))


if __name__ == "__main__":
    main()
