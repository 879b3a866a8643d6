"""Servers that answer before they have read the whole request body.

A server may refuse an upload (413, 401) as soon as it has the head and then
stop reading. The client's writes then block; the answer is already in its
receive buffer. RFC 9112 9.5: a client should watch for such an answer while
it sends and stop sending. A 1xx is no such answer, and a 2xx that keeps the
connection may come from a server that answers as it reads: then the whole
body is still sent. Raw servers on loopback; the bodies are large enough to
fill the socket buffers on both sides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

import hyperhttp
from tests.support.fixtures import RawServerFactory
from tests.support.raw import read_head

BODY = b"x" * (32 * 1024 * 1024)
TIMEOUT = hyperhttp.Timeout(10.0, write=4.0, read=4.0)
REFUSAL = b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\n%s\r\ntoo big!"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _pieces() -> AsyncIterator[bytes]:
    for start in range(0, len(BODY), 1 << 20):
        yield BODY[start:start + (1 << 20)]


def refuses_then_stops_reading(close_header: bool) -> object:
    """Answer the first request's head with a 413 and never read its body;
    later connections get 200."""
    state = {"connections": 0}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["connections"] += 1
        if state["connections"] == 1:
            await read_head(reader)
            writer.write(REFUSAL % (b"Connection: close\r\n" if close_header else b""))
            await writer.drain()
            await asyncio.sleep(30)  # stop reading; cancelled when the server stops
            return
        while await read_head(reader):
            writer.write(OK)
            await writer.drain()

    return handler


@pytest.mark.parametrize("close_header", [True, False], ids=["close", "keep-alive"])
@pytest.mark.parametrize("streamed", [False, True], ids=["bytes", "iterator"])
async def test_a_refusal_sent_while_the_body_is_blocked_is_the_answer(
    loop_name: str, raw_server: RawServerFactory, close_header: bool, streamed: bool
) -> None:
    server = raw_server(refuses_then_stops_reading(close_header))  # type: ignore[arg-type]
    async with hyperhttp.Client(http2=False, timeout=TIMEOUT) as client:
        began = time.monotonic()
        response = await client.post(server.url + "/upload", content=_pieces() if streamed else BODY)
        waited = time.monotonic() - began
        assert (response.status_code, response.content) == (413, b"too big!")
        # Before, the client waited out its write timeout (4 s) and raised
        # WriteTimeout, the 413 lost in its buffer.
        assert waited < 2.0, f"answered after {waited:.2f}s"
        # Half a body went out: that connection carries nothing more, even
        # when the server would keep it.
        assert (await client.get(server.url + "/next")).content == b"ok"
        assert server.accepted == 2
    assert not server.handler_errors


def reads_slowly(early: bytes) -> tuple[object, list[int]]:
    """Send `early` at once, then read the whole body slowly (pausing so the
    client's writes block), then answer 200 with how much arrived (unless
    `early` was that answer). `seen`: the length of each body read."""
    seen: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await read_head(reader):
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            writer.write(early)
            await writer.drain()
            await asyncio.sleep(0.3)  # the client's writes block meanwhile
            got = 0
            while got < length:
                got += len(await reader.read(min(1 << 20, length - got)))
            seen.append(got)
            if not early.startswith(b"HTTP/1.1 200"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(str(got)), got))
            await writer.drain()

    return handler, seen


async def test_a_100_continue_does_not_stop_the_body(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    handler, seen = reads_slowly(b"HTTP/1.1 100 Continue\r\n\r\n")
    server = raw_server(handler)  # type: ignore[arg-type]
    async with hyperhttp.Client(http2=False, timeout=TIMEOUT) as client:
        response = await client.post(server.url + "/upload", content=BODY)
        assert response.status_code == 200
        assert response.content == str(len(BODY)).encode()
        assert seen == [len(BODY)]
        await client.post(server.url + "/again", content=b"small")
        assert server.accepted == 1  # a complete exchange: the connection is kept


async def test_an_early_2xx_that_keeps_the_connection_gets_the_whole_body(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    handler, seen = reads_slowly(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
    server = raw_server(handler)  # type: ignore[arg-type]
    async with hyperhttp.Client(http2=False, timeout=TIMEOUT) as client:
        response = await client.post(server.url + "/upload", content=BODY)
        assert (response.status_code, response.content) == (200, b"early")
        # The server answers the next request only once it has read this
        # body to its end, on the same connection.
        await client.post(server.url + "/again", content=b"small")
        assert seen[0] == len(BODY)
        assert server.accepted == 1
