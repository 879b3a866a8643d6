"""Microbenchmark: the Python cost of one `Client.get()` over HTTP/1.1,
everything from the Client down to the parser, with no socket.

    python3 bench/h1_path_micro.py [--inflight 1,64] [--requests N] [--repeats R]
                                   [--loop uvloop|asyncio] [--tree DIR]

Each connection of the pool sits on a stand-in transport that answers every
write, on the next turn of the loop, with a typical 13-byte nginx response
(9 header fields). No system calls and no server, so the figure (process
CPU per request, best of R runs) is steady enough to compare two trees:
run it with `--tree` pointing at another checkout for the before figure.
The loop scheduling itself costs about 1.5 µs per request here (a bare
protocol on the same stand-in transport).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `--tree DIR` imports hyperhttp from another checkout (before/after runs).
_TREE = sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv[:-1] else str(ROOT)
sys.path.insert(0, _TREE)

import hyperhttp  # noqa: E402
from hyperhttp._backends.stream import SocketStream  # noqa: E402
from hyperhttp._transport.http11 import HTTP11Connection  # noqa: E402

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 23:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\n"
    b"Last-Modified: Thu, 26 Nov 2026 22:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "65a-d"\r\nAccept-Ranges: bytes\r\n\r\nHello, world!'
)


class AnsweringTransport(asyncio.Transport):
    """Answers each write with RESPONSE on the next loop turn."""

    def __init__(self, protocol: SocketStream, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.protocol = protocol
        self.loop = loop
        self.closing = False

    def write(self, data: Any) -> None:
        self.loop.call_soon(self.answer)

    def answer(self) -> None:
        buf = self.protocol.get_buffer(len(RESPONSE))
        buf[: len(RESPONSE)] = RESPONSE
        self.protocol.buffer_updated(len(RESPONSE))

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True
        self.loop.call_soon(self.protocol.connection_lost, None)

    def close(self) -> None:
        self.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def run(inflight: int, requests: int) -> float:
    """CPU µs per request for `requests` GETs, `inflight` at a time."""
    loop = asyncio.get_running_loop()
    async with hyperhttp.Client(
        http2=False, max_connections=inflight, max_keepalive_connections=inflight
    ) as client:

        async def connect(origin: Any, timeout: Any, release: Any) -> HTTP11Connection:
            stream = SocketStream("127.0.0.1:80")
            stream.connection_made(AnsweringTransport(stream, loop))
            return HTTP11Connection(origin, stream, release)

        client._transport.pool._connector = connect  # type: ignore[attr-defined]
        url = "http://127.0.0.1/tiny.txt"
        left = requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                response = await client.get(url)
                if response.status_code != 200 or response.content != b"Hello, world!":
                    raise RuntimeError(f"unexpected response {response!r}")

        await asyncio.gather(*[client.get(url) for _ in range(inflight)])  # open the pool
        start = time.process_time()
        await asyncio.gather(*[worker() for _ in range(inflight)])
        return (time.process_time() - start) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inflight", default="1,64")
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--tree", default=str(ROOT), help="import hyperhttp from this checkout")
    args = parser.parse_args()
    for inflight in [int(x) for x in args.inflight.split(",")]:
        results = []
        for _ in range(args.repeats):
            coro = run(inflight, args.requests)
            if args.loop == "uvloop":
                import uvloop

                results.append(uvloop.run(coro))
            else:
                results.append(asyncio.run(coro))
        print(
            f"{args.loop} inflight={inflight}: {min(results):.2f} µs/request "
            f"(best of {args.repeats}; all: {' '.join(f'{r:.2f}' for r in results)})"
        )


if __name__ == "__main__":
    main()
