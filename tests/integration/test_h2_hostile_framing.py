"""HTTP/2 servers that break framing or HPACK in ways h2 alone would wait
out, or take (RFC 9113 sections 3.4 and 4.2, RFC 7541 section 4.2).

Each test runs a raw HTTP/2 server (a `RawServer` handler writing frames by
hand, TLS with ALPN h2 on 127.0.0.1) against `hyperhttp.Client`, and
requires a prompt, clear error, the GOAWAY the RFC names sent to the
server, and an event loop that kept running (`Heartbeat`, from
test_h2_negative_window.py). Timeouts are set well above what a prompt
answer takes and well below what waiting it out would.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Awaitable, Callable

import hpack
import pytest

import hyperhttp
from tests.support.certs import TestCerts
from tests.support.fixtures import RawServerFactory
from tests.support.raw import RawServer

from .test_h2_negative_window import Heartbeat

pytestmark = pytest.mark.timeout(20)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY, CONTINUATION = 0x0, 0x1, 0x4, 0x6, 0x7, 0x9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
PROTOCOL_ERROR, FRAME_SIZE_ERROR, ENHANCE_YOUR_CALM = 0x1, 0x6, 0xB
FRAME_SIZE = 64 * 1024  # the SETTINGS_MAX_FRAME_SIZE the client advertises
# A prompt error comes in well under this; waiting out a timeout takes longer.
PROMPT = 1.0
Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return n.to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


def head(sid: int, fields: list[tuple[str, str]], *, end: bool = False) -> bytes:
    block = hpack.Encoder().encode(fields)
    return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, block)


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    header = await reader.readexactly(9)
    payload = await reader.readexactly(int.from_bytes(header[:3], "big"))
    return header[3], header[4], int.from_bytes(header[5:], "big") & 0x7FFFFFFF, payload


class Scripted:
    """`RawServer` handler: reads the client's preface, runs `script`, then
    logs what the client sends until it closes (at most 5 s)."""

    def __init__(self, script: Callable[[Scripted], Awaitable[None]]) -> None:
        self.script = script
        self.received: list[Frame] = []
        self.done = threading.Event()
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        try:
            assert await reader.readexactly(len(PREFACE)) == PREFACE
            await self.script(self)
            async with asyncio.timeout(5):
                while True:
                    self.received.append(await read_frame(reader))
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self.done.set()

    async def request(self, settings: bytes | None = None) -> int:
        """Send our SETTINGS (`settings`: other frames instead), then read
        up to the client's request HEADERS; its stream id."""
        self.writer.write(frame(SETTINGS, 0, 0) if settings is None else settings)
        while True:
            kind, flags, sid, payload = await read_frame(self.reader)
            self.received.append((kind, flags, sid, payload))
            if kind == SETTINGS and not flags & ACK:
                self.writer.write(frame(SETTINGS, ACK, 0))
            if kind == HEADERS:
                return sid

    async def goaway_codes(self) -> list[int]:
        for _ in range(100):  # the client closes right after its GOAWAY
            if self.done.is_set():
                break
            await asyncio.sleep(0.05)
        return [int.from_bytes(p[4:8], "big") for k, _, _, p in self.received if k == GOAWAY]


def serve(raw_server: RawServerFactory, script: Callable[[Scripted], Awaitable[None]]) -> tuple[RawServer, Scripted]:
    handler = Scripted(script)
    return raw_server(handler, tls=True, alpn=("h2",)), handler


async def get(certs: TestCerts, url: str, timeout: hyperhttp.Timeout) -> tuple[BaseException, float]:
    """GET `url` (which must fail): the error and how long it took."""
    began = time.monotonic()
    async with hyperhttp.Client(verify=str(certs.ca_pem_path), http2=True, timeout=timeout) as client:
        with pytest.raises(hyperhttp.HyperHTTPError) as caught:
            async with Heartbeat(stall=1.0):
                await client.get(url)
    return caught.value, time.monotonic() - began


async def test_a_frame_header_over_our_max_frame_size_fails_at_once(
    certs: TestCerts, raw_server: RawServerFactory
) -> None:
    async def script(peer: Scripted) -> None:
        sid = await peer.request()
        # A DATA frame header claiming 16 MiB, 1,000 bytes of it, then silence.
        oversized = ((1 << 24) - 1).to_bytes(3, "big") + bytes((DATA, 0)) + sid.to_bytes(4, "big")
        peer.writer.write(head(sid, [(":status", "200")]) + oversized + b"x" * 1000)

    server, peer = serve(raw_server, script)
    error, took = await get(certs, server.url, hyperhttp.Timeout(5.0, read=4.0))
    assert isinstance(error, hyperhttp.RemoteProtocolError), error
    assert "sent a DATA frame on stream 1 of 16777215 bytes, over the SETTINGS_MAX_FRAME_SIZE" in str(error)
    assert took < PROMPT, f"{took:.2f}s"
    assert await peer.goaway_codes() == [FRAME_SIZE_ERROR]
    assert not server.handler_errors


async def test_an_http1_answer_to_the_preface_fails_at_once(
    certs: TestCerts, raw_server: RawServerFactory
) -> None:
    async def script(peer: Scripted) -> None:
        peer.writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await asyncio.sleep(5)  # and keep the connection open

    server, _ = serve(raw_server, script)
    error, took = await get(certs, server.url, hyperhttp.Timeout(5.0, connect=4.0))
    assert isinstance(error, hyperhttp.RemoteProtocolError), error
    assert str(error) == (
        f"localhost:{server.port} broke the HTTP/2 protocol: "
        "answered in HTTP/1.x, not HTTP/2: 'HTTP/1.1 400 Bad Request'"
    )
    assert took < PROMPT, f"{took:.2f}s"


async def test_a_server_preface_that_is_not_settings_is_refused(
    certs: TestCerts, raw_server: RawServerFactory
) -> None:
    async def script(peer: Scripted) -> None:
        sid = await peer.request(frame(PING, 0, 0, b"abcdefgh") + frame(SETTINGS, 0, 0))
        peer.writer.write(head(sid, [(":status", "200")], end=True))

    server, peer = serve(raw_server, script)
    error, took = await get(certs, server.url, hyperhttp.Timeout(3.0))
    assert isinstance(error, hyperhttp.RemoteProtocolError), error
    assert "began with a PING frame on stream 0, not its SETTINGS (RFC 9113 section 3.4)" in str(error)
    assert took < PROMPT, f"{took:.2f}s"
    assert await peer.goaway_codes() == [PROTOCOL_ERROR]


@pytest.mark.parametrize("continuations", [4, 63], ids=["just-over", "audit"])
async def test_a_header_block_flood_of_size_updates_is_refused_before_decoding(
    certs: TestCerts, raw_server: RawServerFactory, continuations: int
) -> None:
    # HEADERS and CONTINUATION frames of 64 KiB of table size updates, the
    # last (of 64 frames, 4 MiB) ending the block with a head: hpack decodes
    # every update (about 2 s of frozen loop for 4 MiB), then takes the head.
    # Five frames are over the limit already.
    async def script(peer: Scripted) -> None:
        sid = await peer.request()
        end = hpack.Encoder().encode([(":status", "200")])
        peer.writer.write(frame(HEADERS, END_STREAM, sid, b"\x20" * FRAME_SIZE))
        for i in range(continuations):
            last = i == 62
            payload = b"\x20" * (FRAME_SIZE - len(end)) + end if last else b"\x20" * FRAME_SIZE
            peer.writer.write(frame(CONTINUATION, END_HEADERS if last else 0, sid, payload))

    server, peer = serve(raw_server, script)
    error, took = await get(certs, server.url, hyperhttp.Timeout(5.0))
    assert isinstance(error, hyperhttp.RemoteProtocolError), error
    assert "more than any that decodes within the SETTINGS_MAX_HEADER_LIST_SIZE of 65536" in str(error)
    assert took < PROMPT, f"{took:.2f}s"
    if continuations == 4:
        assert await peer.goaway_codes() == [ENHANCE_YOUR_CALM]
    # Otherwise the client closes with the rest of the flood unread: TCP
    # then resets the connection, and the server may never read the GOAWAY.


async def test_three_size_updates_in_a_small_block_are_refused(
    certs: TestCerts, raw_server: RawServerFactory
) -> None:
    async def script(peer: Scripted) -> None:
        sid = await peer.request()
        block = b"\x20\x20\x20" + hpack.Encoder().encode([(":status", "200")])
        peer.writer.write(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))

    server, peer = serve(raw_server, script)
    error, _ = await get(certs, server.url, hyperhttp.Timeout(3.0))
    assert isinstance(error, hyperhttp.RemoteProtocolError), error
    assert "More than two table size updates in one block" in str(error)
    assert await peer.goaway_codes() == [PROTOCOL_ERROR]


async def test_data_on_a_stream_never_opened_names_the_stream(
    certs: TestCerts, raw_server: RawServerFactory
) -> None:
    async def script(peer: Scripted) -> None:
        sid = await peer.request()
        peer.writer.write(
            head(sid, [(":status", "200")]) + frame(DATA, 0, sid + 2, b"zzz")
            + frame(DATA, END_STREAM, sid, b"ok")
        )

    server, peer = serve(raw_server, script)
    error, _ = await get(certs, server.url, hyperhttp.Timeout(3.0))
    assert isinstance(error, hyperhttp.RemoteProtocolError), error
    assert str(error) == (
        f"localhost:{server.port} broke the HTTP/2 protocol: "
        "sent a frame on stream 3, which was never opened"
    )
    assert await peer.goaway_codes() == [PROTOCOL_ERROR]


@pytest.mark.parametrize("status", ["099", "600"])
async def test_a_status_outside_100_to_599_is_a_malformed_response(
    certs: TestCerts, raw_server: RawServerFactory, status: str
) -> None:
    async def script(peer: Scripted) -> None:
        sid = await peer.request()
        peer.writer.write(head(sid, [(":status", status)], end=True))

    server, _ = serve(raw_server, script)
    error, _ = await get(certs, server.url, hyperhttp.Timeout(3.0))
    assert isinstance(error, hyperhttp.RemoteProtocolError), error
    assert str(error) == f"response from localhost:{server.port} has an invalid :status b'{status}'"
