"""The loopback test servers themselves work (checked with httpx, h2 and sockets)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
import time
from http import HTTPStatus

import h2.connection
import h2.events
import httpx
import pytest

from tests.support.app import FIXED_JSON, TEXT_SAMPLE, pattern_bytes
from tests.support.certs import TestCerts
from tests.support.fixtures import RawServerFactory, ServerFactory
from tests.support.raw import RawServer, canned, read_head
from tests.support.servers import ServerHandle

CANNED = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Odd:  spaced \r\n\r\nhello"


def _read_until_eof(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    data = bytearray()
    while len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _read_response(sock: socket.socket) -> bytes:
    """Read one HTTP/1.1 response framed by Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response head"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return head + b"\r\n\r\n" + body


# -- hypercorn servers: protocols ---------------------------------------------


async def test_https_server_speaks_h2_and_echoes_the_request(
    https_server: ServerHandle, client_ssl_context: ssl.SSLContext, loop_name: str
) -> None:
    async with httpx.AsyncClient(http2=True, verify=client_ssl_context) as client:
        response = await client.post(
            f"{https_server.url}/echo/a%2Fb?x=1&x=2",
            content=b"payload \xff",
            headers=[("X-Dup", "one"), ("X-Dup", "two"), ("X-Last", "z")],
        )
    assert response.http_version == "HTTP/2"
    echo = response.json()
    assert echo["http_version"] == "HTTP/2"
    assert echo["method"] == "POST"
    assert echo["scheme"] == "https"
    assert echo["path"] == "/echo/a%2Fb"
    assert echo["query"] == "x=1&x=2"
    assert echo["body"] == "payload \xff"
    assert echo["body_length"] == 9
    assert echo["body_sha256"] == hashlib.sha256(b"payload \xff").hexdigest()
    custom = [pair for pair in echo["headers"] if pair[0].startswith("x-")]
    assert custom == [["x-dup", "one"], ["x-dup", "two"], ["x-last", "z"]]
    assert ["host", f"localhost:{https_server.port}"] in echo["headers"]
    host, port = echo["client"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0


async def test_h1_only_server_negotiates_http11(
    https_h1_server: ServerHandle, client_ssl_context: ssl.SSLContext, loop_name: str
) -> None:
    async with httpx.AsyncClient(http2=True, verify=client_ssl_context) as client:
        response = await client.get(f"{https_h1_server.url}/echo")
    assert response.http_version == "HTTP/1.1"
    assert response.json()["http_version"] == "HTTP/1.1"


def test_plain_server_is_http11(http_server: ServerHandle) -> None:
    assert http_server.url == f"http://127.0.0.1:{http_server.port}"
    with httpx.Client() as client:
        echo = client.get(f"{http_server.url}/echo").json()
    assert (echo["http_version"], echo["scheme"]) == ("HTTP/1.1", "http")


def test_ipv6_server(http_server_ipv6: ServerHandle) -> None:
    assert http_server_ipv6.url == f"http://[::1]:{http_server_ipv6.port}"
    with httpx.Client() as client:
        echo = client.get(f"{http_server_ipv6.url}/echo").json()
    assert echo["client"].startswith("[::1]:")


def test_mtls_server_requires_a_client_certificate(
    mtls_server: ServerHandle, certs: TestCerts
) -> None:
    with (
        httpx.Client(verify=certs.client_ssl_context()) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.get(f"{mtls_server.url}/echo")
    assert mtls_server.stats.requests == 0
    with httpx.Client(verify=certs.client_ssl_context(with_client_cert=True)) as client:
        assert client.get(f"{mtls_server.url}/echo").status_code == 200
    assert mtls_server.stats.requests == 1


def test_server_certificate_is_rejected_without_the_test_ca(https_server: ServerHandle) -> None:
    with httpx.Client() as client, pytest.raises(httpx.ConnectError):
        client.get(f"{https_server.url}/echo")


def test_trailers_over_h2(https_server: ServerHandle, certs: TestCerts) -> None:
    context = certs.client_ssl_context(alpn=["h2"])
    conn = h2.connection.H2Connection()
    events: list[h2.events.Event] = []
    with (
        socket.create_connection(("127.0.0.1", https_server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        conn.initiate_connection()
        request = [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", f"localhost:{https_server.port}"),
            (":path", "/trailers?x-sum=42"),
            ("te", "trailers"),
        ]
        conn.send_headers(1, request, end_stream=True)
        tls.sendall(conn.data_to_send())
        for _ in range(100):
            data = tls.recv(65536)
            assert data, "server closed before the stream ended"
            events += conn.receive_data(data)
            tls.sendall(conn.data_to_send())
            if any(isinstance(e, h2.events.StreamEnded) for e in events):
                break
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert body == b"body before trailers\n"
    assert len(trailers) == 1
    assert (b"x-sum", b"42") in trailers[0].headers


def test_trailers_endpoint_says_so_over_http11(http_server: ServerHandle) -> None:
    with httpx.Client() as client:
        response = client.get(f"{http_server.url}/trailers", headers={"te": "trailers"})
    assert response.headers["x-trailers"] == "unsupported"


# -- stats --------------------------------------------------------------------


def test_stats_count_connections_and_requests(http_server: ServerHandle) -> None:
    assert http_server.stats.requests == 0  # the fixture reset it
    with httpx.Client() as client:
        clients_seen = {client.get(f"{http_server.url}/echo").json()["client"] for _ in range(3)}
    with httpx.Client() as other:
        clients_seen.add(other.get(f"{http_server.url}/echo").json()["client"])
    stats = http_server.stats
    assert stats.requests == 4
    assert stats.connection_count == 2 == len(clients_seen)
    assert stats.in_flight == 0
    assert stats.peak_in_flight == 1
    with httpx.Client() as client:
        assert client.get(f"{http_server.url}/_stats").json()["requests"] == 5
    http_server.reset_stats()
    assert (http_server.stats.requests, http_server.stats.connection_count) == (0, 0)


async def test_peak_in_flight_counts_concurrent_h2_streams(
    https_server: ServerHandle, client_ssl_context: ssl.SSLContext, loop_name: str
) -> None:
    async with httpx.AsyncClient(http2=True, verify=client_ssl_context) as client:
        await client.get(f"{https_server.url}/echo")  # open the connection first
        responses = await asyncio.gather(
            *(client.get(f"{https_server.url}/slow?delay=0.3") for _ in range(4))
        )
    assert [r.json() for r in responses] == [{"delay": 0.3}] * 4
    stats = https_server.stats
    assert stats.peak_in_flight == 4
    assert stats.connection_count == 1
    assert (stats.requests, stats.in_flight) == (5, 0)


# -- app endpoints --------------------------------------------------------------


def test_status_redirect_and_cookie_endpoints(http_server: ServerHandle) -> None:
    base = http_server.url
    with httpx.Client() as client:
        teapot = client.get(f"{base}/status/418?retry_after=7")
        assert (teapot.status_code, teapot.headers["retry-after"]) == (418, "7")
        assert teapot.text == f"418 {HTTPStatus(418).phrase}\n"
        assert client.get(f"{base}/status/204").content == b""
        assert client.get(f"{base}/status/500?body=0").content == b""
        assert client.get(f"{base}/nowhere").status_code == 404
        assert client.get(f"{base}/status/abc").status_code == 400

        hop = client.get(f"{base}/redirect/2")
        assert (hop.status_code, hop.headers["location"]) == (302, "/redirect/1")
        absolute = client.get(f"{base}/redirect/1?absolute=1&status=307")
        assert absolute.status_code == 307
        assert absolute.headers["location"] == f"{base}/echo?absolute=1&status=307"
        final = client.get(f"{base}/redirect/3", follow_redirects=True)
        assert len(final.history) == 3 and final.json()["path"] == "/echo"
        to = client.get(f"{base}/redirect-to", params={"url": "https://x.test/", "status": 308})
        assert (to.status_code, to.headers["location"]) == (308, "https://x.test/")

        jar = client.get(f"{base}/cookies/set?a=1&b=two&redirect=1", follow_redirects=True)
        assert jar.json()["cookies"] == {"a": "1", "b": "two"}
        set_only = client.get(f"{base}/cookies/set?c=3")
        assert set_only.headers.get_list("set-cookie") == ["c=3; Path=/"]
        client.get(f"{base}/cookies/delete?a")
        assert client.get(f"{base}/cookies").json()["cookies"] == {"b": "two", "c": "3"}


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize("stream", [False, True])
def test_compressed_endpoints(http_server: ServerHandle, encoding: str, stream: bool) -> None:
    url = f"{http_server.url}/{encoding}?pad=5000&stream={int(stream)}"
    with httpx.Client() as client:
        response = client.get(url)
    assert response.headers["content-encoding"] == encoding
    assert ("content-length" in response.headers) is not stream
    assert response.num_bytes_downloaded < 5000  # really compressed on the wire
    assert response.json() == {"encoding": encoding, "method": "GET", "pad": "x" * 5000}


def test_raw_deflate(http_server: ServerHandle) -> None:
    with httpx.Client() as client:
        assert client.get(f"{http_server.url}/deflate?raw=1").json()["encoding"] == "deflate"


def test_bytes_endpoints(http_server: ServerHandle) -> None:
    n = 100_003
    with httpx.Client() as client:
        fixed = client.get(f"{http_server.url}/bytes/{n}?chunk=4096")
        streamed = client.get(f"{http_server.url}/stream-bytes/{n}?chunk=7000")
    assert fixed.content == streamed.content == pattern_bytes(n)
    assert fixed.headers["content-length"] == str(n)
    assert "content-length" not in streamed.headers
    assert streamed.headers["transfer-encoding"] == "chunked"
    assert pattern_bytes(10, 250) == bytes([250, *range(9)])


def test_slow_body_streams_chunks(http_server: ServerHandle) -> None:
    url = f"{http_server.url}/slow-body?chunks=3&delay=0.2&size=10"
    with httpx.Client() as client, client.stream("GET", url) as response:
        started = time.monotonic()
        pieces = list(response.iter_raw())
        assert time.monotonic() - started >= 0.3  # the body came after the headers
    assert b"".join(pieces) == pattern_bytes(30)
    assert len(pieces) >= 2


def test_json_text_and_headers_endpoints(http_server: ServerHandle) -> None:
    with httpx.Client() as client:
        assert client.get(f"{http_server.url}/json").json() == FIXED_JSON
        latin = client.get(f"{http_server.url}/text?charset=latin-1")
        assert latin.headers["content-type"] == "text/plain; charset=latin-1"
        assert latin.content == TEXT_SAMPLE.encode("latin-1")
        assert latin.text == TEXT_SAMPLE
        utf16 = client.get(f"{http_server.url}/text?charset=utf-16")
        assert utf16.content == TEXT_SAMPLE.encode("utf-16")
        assert client.get(f"{http_server.url}/text?charset=ascii").status_code == 400
        set_headers = client.get(
            f"{http_server.url}/headers?X-Foo=1&X-Foo=2&Cache-Control=no-store"
        )
    assert set_headers.headers.get_list("x-foo") == ["1", "2"]
    assert set_headers.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("h2", [False, True])
def test_upload_parses_multipart(
    https_server: ServerHandle, client_ssl_context: ssl.SSLContext, h2: bool
) -> None:
    blob = pattern_bytes(200_000)
    with httpx.Client(http2=h2, verify=client_ssl_context) as client:
        response = client.post(
            f"{https_server.url}/upload",
            data={"field": "välue"},
            files={"file": ("data.bin", blob, "application/octet-stream")},
        )
    result = response.json()
    assert response.status_code == 200, result
    assert result["http_version"] == ("HTTP/2" if h2 else "HTTP/1.1")
    assert result["complete"] is True
    assert result["body_bytes"] == result["content_length"] > 200_000
    field, upload = result["parts"]
    assert (field["name"], field["filename"], field["value"]) == (
        "field",
        None,
        "välue".encode().decode("latin-1"),
    )
    assert (upload["name"], upload["filename"]) == ("file", "data.bin")
    assert upload["content_type"] == "application/octet-stream"
    assert upload["size"] == len(blob)
    assert upload["sha256"] == hashlib.sha256(blob).hexdigest()


def test_upload_rejects_non_multipart(http_server: ServerHandle) -> None:
    with httpx.Client() as client:
        assert client.post(f"{http_server.url}/upload", content=b"x").status_code == 400


# -- server lifecycle -------------------------------------------------------------


def test_custom_server_keep_alive_timeout_closes_idle_connections(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(config={"keep_alive_timeout": 0.2})
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        data = _read_until_eof(sock)  # the server closes the idle connection
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b'"http_version": "HTTP/1.1"' in data


def test_stop_closes_idle_and_busy_connections(server_factory: ServerFactory) -> None:
    server = server_factory()
    with (
        socket.create_connection((server.host, server.port), timeout=5) as idle,
        socket.create_connection((server.host, server.port), timeout=5) as busy,
    ):
        idle.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(idle).startswith(b"HTTP/1.1 200 ")
        busy.sendall(b"GET /slow?delay=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(200):
            if server.stats.in_flight == 1:
                break
            time.sleep(0.01)
        assert server.stats.in_flight == 1
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5
        assert not server.is_running
        assert _read_until_eof(idle) == b""
        assert b"delay" not in _read_until_eof(busy)
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=1).close()


# -- raw server -------------------------------------------------------------------


async def test_raw_canned_response_is_byte_exact(
    raw_server: RawServerFactory, loop_name: str
) -> None:
    handler = canned(CANNED)
    server = raw_server(handler)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        await writer.drain()
        received = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    assert received == CANNED
    assert handler.requests == [b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"]
    assert server.accepted == 1


def test_raw_canned_repeat_and_delay(raw_server: RawServerFactory) -> None:
    server = raw_server(canned(CANNED, close=False, repeat=True, delay=0.05))
    with httpx.Client() as client:
        bodies = [client.get(f"{server.url}/n{i}").content for i in range(3)]
    assert bodies == [b"hello"] * 3
    assert server.accepted == 1  # one kept-alive connection


def test_raw_server_over_tls(raw_server: RawServerFactory, certs: TestCerts) -> None:
    server = raw_server(canned(CANNED), tls=True)
    assert server.url == f"https://localhost:{server.port}"
    context = certs.client_ssl_context(alpn=["http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "http/1.1"
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert _read_until_eof(tls) == CANNED


def test_raw_stop_closes_held_connections_and_records_errors() -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        raise LookupError("handler bug")

    with RawServer(canned(CANNED, close=False)) as server:
        held = socket.create_connection((server.host, server.port), timeout=5)
        with held:
            held.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert held.recv(65536) == CANNED
            server.stop()
            try:
                assert held.recv(65536) == b""
            except ConnectionResetError:
                pass  # aborted: also closed
    with RawServer(broken) as server, socket.create_connection((server.host, server.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert _read_until_eof(s) == b""
        assert [str(e) for e in server.handler_errors] == ["handler bug"]


def test_servers_run_on_their_own_threads(http_server: ServerHandle) -> None:
    names = {t.name for t in threading.enumerate()}
    assert f"hypercorn {http_server.url}" in names
