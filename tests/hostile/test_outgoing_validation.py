"""Requests that could be misread on the wire are refused before a byte is sent.

CR, LF and NUL in a method, header name, header value or request target
would let a caller's data split one request into two (request smuggling,
header injection). The client must raise `LocalProtocolError` (or
`InvalidURL` for the URL itself), the server must receive zero bytes, and
the pool must be as it was.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

import hyperhttp
from hyperhttp._proto.http11 import validate_request_head
from tests.support.fixtures import RawServerFactory
from tests.support.raw import RawServer, read_head

GOOD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class CountingHandler:
    """Counts every byte received on every connection; answers each request head."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received = 0

    @property
    def received(self) -> int:
        with self._lock:
            return self._received

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        while True:
            data = await reader.read(65536)
            if not data:
                return
            with self._lock:
                self._received += len(data)
            buffer += data
            while b"\r\n\r\n" in buffer:
                _, _, buffer = buffer.partition(b"\r\n\r\n")
                writer.write(GOOD)
                await writer.drain()


BAD_HEADERS: dict[str, list[tuple[str, str]]] = {
    "lf-in-value": [("X-Test", "a\nInjected: 1")],
    "crlf-in-value": [("X-Test", "a\r\nInjected: 1")],
    "cr-in-value": [("X-Test", "a\rb")],
    "nul-in-value": [("X-Test", "a\x00b")],
    "crlf-in-name": [("X-Test\r\nInjected", "1")],
    "nul-in-name": [("X-Te\x00st", "1")],
    "space-in-name": [("X Test", "1")],
    "colon-in-name": [("X-Test:", "1")],
    "empty-name": [("", "1")],
    "non-latin1-value": [("X-Test", "snow ☃")],
}

BAD_METHODS = ["GET\r\nX: 1", "GE\x00T", "GET /smuggled HTTP/1.1\r\n\r\nGET", "G T", ""]


def stats_for(client: hyperhttp.Client, server: RawServer) -> dict[str, int] | None:
    return client.get_pool_stats().get(f"127.0.0.1:{server.port}")


@pytest.mark.parametrize("case", list(BAD_HEADERS))
async def test_bad_header_sends_nothing(
    loop_name: str, raw_server: RawServerFactory, case: str
) -> None:
    handler = CountingHandler()
    server = raw_server(handler)
    async with hyperhttp.Client(http2=False) as client:
        with pytest.raises(hyperhttp.LocalProtocolError):
            await client.get(server.url + "/x", headers=BAD_HEADERS[case])
        await asyncio.sleep(0.05)  # anything written would have arrived by now
        assert handler.received == 0
        assert client.get_pool_stats() == {}
        assert (await client.get(server.url + "/ok")).content == b"ok"


@pytest.mark.parametrize("method", BAD_METHODS)
async def test_bad_method_sends_nothing(
    loop_name: str, raw_server: RawServerFactory, method: str
) -> None:
    handler = CountingHandler()
    server = raw_server(handler)
    async with hyperhttp.Client(http2=False) as client:
        with pytest.raises(hyperhttp.LocalProtocolError):
            await client.request(method, server.url + "/x")
        await asyncio.sleep(0.05)
        assert handler.received == 0
        assert client.get_pool_stats() == {}


@pytest.mark.parametrize("case", ["crlf-in-value", "crlf-in-name"])
async def test_bad_header_leaves_warm_pool_unchanged(
    loop_name: str, raw_server: RawServerFactory, case: str
) -> None:
    handler = CountingHandler()
    server = raw_server(handler)
    async with hyperhttp.Client(http2=False) as client:
        assert (await client.get(server.url + "/warm")).content == b"ok"
        before_bytes = handler.received
        before_pool = stats_for(client, server)
        assert before_pool == {"idle": 1, "in_use": 0, "total": 1}
        with pytest.raises(hyperhttp.LocalProtocolError):
            await client.get(server.url + "/x", headers=BAD_HEADERS[case])
        await asyncio.sleep(0.05)
        assert handler.received == before_bytes
        # The idle connection was not spent on a request that never went out.
        assert stats_for(client, server) == before_pool
        assert (await client.get(server.url + "/again")).content == b"ok"
        assert server.accepted == 1


async def test_header_added_by_request_hook_is_validated(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    handler = CountingHandler()
    server = raw_server(handler)

    def inject(request: hyperhttp.Request) -> None:
        request.headers["X-Signed"] = "sig\r\nX-Admin: yes"

    async with hyperhttp.Client(http2=False, event_hooks={"request": [inject]}) as client:
        with pytest.raises(hyperhttp.LocalProtocolError):
            await client.get(server.url + "/x")
    await asyncio.sleep(0.05)
    assert handler.received == 0


@pytest.mark.parametrize(
    "path", ["/a\r\nX-Injected: 1", "/a\nb", "/a\x00b", "/a\rb", "/a\tb"]
)
async def test_control_characters_in_target_send_nothing(
    loop_name: str, raw_server: RawServerFactory, path: str
) -> None:
    handler = CountingHandler()
    server = raw_server(handler)
    async with hyperhttp.Client(http2=False) as client:
        with pytest.raises((hyperhttp.InvalidURL, hyperhttp.LocalProtocolError)):
            await client.get(server.url + path)
        await asyncio.sleep(0.05)
        assert handler.received == 0
        assert server.accepted == 0
        assert client.get_pool_stats() == {}


async def test_control_characters_in_cookie_send_nothing(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    handler = CountingHandler()
    server = raw_server(handler)
    async with hyperhttp.Client(http2=False) as client:
        with pytest.raises(hyperhttp.LocalProtocolError):
            await client.get(server.url + "/x", cookies={"c": "1\r\nX-Injected: 1"})
        await asyncio.sleep(0.05)
        assert handler.received == 0
        assert client.get_pool_stats() == {}


async def test_spaces_in_path_and_query_are_encoded_not_split(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    requests: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        requests.append(head)
        writer.write(GOOD)
        await writer.drain()

    server = raw_server(record)
    async with hyperhttp.Client(http2=False) as client:
        await client.get(server.url + "/a b", params={"q": "x y HTTP/1.1"})
    request_line = requests[0].split(b"\r\n", 1)[0]
    method, target, version = request_line.split(b" ")
    assert method == b"GET"
    assert version == b"HTTP/1.1"
    assert b" " not in target
    assert target.startswith(b"/a%20b?q=")


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("GET", "/a\r\nb", []),
        ("GET", "/a b", []),
        ("GET", "/a\x00b", []),
        ("GET", "", []),
        ("G\nET", "/", []),
        ("GET", "/", [("X", "x", "a\rb")]),
        ("GET", "/", [("X\x00", "x\x00", "a")]),
        ("GET", "/", [("X", "x", "snow \u2603")]),
    ],
)
def test_sans_io_head_check(
    method: str, target: str, headers: list[tuple[str, str, str]]
) -> None:
    with pytest.raises(hyperhttp.LocalProtocolError, match="nothing was sent"):
        validate_request_head(method, target, headers)


def test_sans_io_head_check_accepts_good_head() -> None:
    validate_request_head(
        "PATCH", "/a%20b?x=1", [("X-Ok", "x-ok", "value with spaces\tand tab caf\xe9")]
    )
