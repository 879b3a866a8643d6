"""Multipart uploads end to end, checked by a real server-side parser.

The `/upload` endpoint of tests/support/app.py runs python-multipart behind
hypercorn and reports every part (name, filename, Content-Type, size,
sha256), the request's Content-Length and Transfer-Encoding and the bytes it
received, so a client that only looks right from its own side fails here.
Raw servers stand in where a behaviour must be forced: answering 503 first,
or reading slowly so the client must pause its reader.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import pathlib
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from python_multipart.multipart import MultipartParser, parse_options_header

import hyperhttp
from hyperhttp import MultipartEncoder, MultipartFile, StreamConsumed
from hyperhttp._backends.stream import SocketStream
from hyperhttp._multipart import _FileReader
from hyperhttp.errors.retry import RetryPolicy
from hyperhttp.utils.backoff import ExponentialBackoff
from tests.support.certs import TestCerts
from tests.support.digest_server import DigestServer, DigestServerApp
from tests.support.h2server import H2Server, H2ServerConfig
from tests.support.raw import read_head
from tests.support.servers import ServerHandle

NO_WAIT = ExponentialBackoff(base=0.0, factor=1.0, max_backoff=0.0, jitter=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(n: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking bytes (a prime-length pattern)."""
    return bytes((i * 31 + seed) % 251 for i in range(n))


async def agen(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


@dataclass
class Target:
    url: str
    http_version: str
    client_kwargs: dict[str, Any]

    def client(self, **kwargs: Any) -> hyperhttp.Client:
        return hyperhttp.Client(**self.client_kwargs, **kwargs)


@pytest.fixture(params=["h1", "h2"])
def target(request: pytest.FixtureRequest, ca_pem_path: str) -> Target:
    if request.param == "h1":
        server: ServerHandle = request.getfixturevalue("http_server")
        return Target(server.url, "HTTP/1.1", {"http2": False})
    server = request.getfixturevalue("https_server")
    return Target(server.url, "HTTP/2", {"http2": True, "verify": ca_pem_path})


def parts_by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in report["parts"]}


def assert_framed_by_length(report: dict[str, Any]) -> None:
    """A body of known size: Content-Length on the wire, equal to what arrived."""
    assert report["error"] is None and report["complete"] is True
    assert report["transfer_encoding"] is None
    assert report["content_length"] is not None
    assert report["content_length"] == report["body_bytes"]


def assert_part(
    part: dict[str, Any], data: bytes, filename: str | None, content_type: str | None
) -> None:
    assert part["filename"] == filename
    assert part["content_type"] == content_type
    assert part["size"] == len(data)
    assert part["sha256"] == sha(data)


# --- part shapes ----------------------------------------------------------------


async def test_every_part_shape_merged_with_data(
    loop_name: str, target: Target, tmp_path: pathlib.Path
) -> None:
    blobs = {name: payload(size, seed) for seed, (name, size) in enumerate(
        [("raw", 1000), ("barr", 777), ("mview", 4096), ("path", 300_000), ("strpath", 5),
         ("handle", 70_000), ("two", 12), ("three", 13), ("mfpath", 2_500_000),
         ("mffile", 9), ("mfbytes", 0), ("mfiter", 200_001)]
    )}
    for name in ("path", "strpath", "handle", "mfpath", "mffile"):
        (tmp_path / f"{name}.bin").write_bytes(blobs[name])
    (tmp_path / "doc.pdf").write_bytes(blobs["path"])
    iter_chunks = [blobs["mfiter"][i : i + 65536] for i in range(0, 200_001, 65536)]
    with open(tmp_path / "handle.bin", "rb") as handle, open(tmp_path / "mffile.bin", "rb") as mf:
        files: dict[str, Any] = {
            "raw": blobs["raw"],
            "barr": bytearray(blobs["barr"]),
            "mview": memoryview(blobs["mview"]),
            "path": tmp_path / "doc.pdf",
            "strpath": str(tmp_path / "strpath.bin"),
            "handle": handle,
            "two": ("notes.txt", blobs["two"]),
            "three": ("x.dat", blobs["three"], "application/x-custom"),
            "mfpath": MultipartFile(path=tmp_path / "mfpath.bin", content_type="image/png"),
            "mffile": MultipartFile(file=mf, filename="renamed.json"),
            "mfbytes": MultipartFile(content=b"", filename="empty.txt"),
            "mfiter": MultipartFile(content=agen(iter_chunks), size=200_001, filename="it.csv"),
        }
        data = {"user": "alice", "note": "quarterly report ☃", "n": 3, "tags": ["a", "b"]}
        async with target.client() as client:
            response = await client.post(target.url + "/upload", data=data, files=files)
    assert response.status_code == 200, response.text
    assert response.http_version == target.http_version
    report = response.json()
    assert report["http_version"] == target.http_version
    assert report["content_type"].startswith("multipart/form-data; boundary=")
    assert_framed_by_length(report)
    names = [p["name"] for p in report["parts"]]
    # Text fields first (a list repeats its name), then files in the order given.
    assert names == ["user", "note", "n", "tags", "tags", *files]
    parts = parts_by_name(report)
    assert parts["user"]["value"] == "alice" and parts["user"]["filename"] is None
    assert parts["note"]["value"].encode("latin-1").decode() == "quarterly report ☃"
    assert [p["value"] for p in report["parts"] if p["name"] == "tags"] == ["a", "b"]
    octet = "application/octet-stream"
    assert_part(parts["raw"], blobs["raw"], None, octet)
    assert_part(parts["barr"], blobs["barr"], None, octet)
    assert_part(parts["mview"], blobs["mview"], None, octet)
    assert_part(parts["path"], blobs["path"], "doc.pdf", "application/pdf")
    assert_part(parts["strpath"], blobs["strpath"], "strpath.bin", octet)
    assert_part(parts["handle"], blobs["handle"], "handle.bin", octet)
    assert_part(parts["two"], blobs["two"], "notes.txt", "text/plain")
    assert_part(parts["three"], blobs["three"], "x.dat", "application/x-custom")
    assert_part(parts["mfpath"], blobs["mfpath"], "mfpath.bin", "image/png")
    assert_part(parts["mffile"], blobs["mffile"], "renamed.json", "application/json")
    assert_part(parts["mfbytes"], b"", "empty.txt", "text/plain")
    assert_part(parts["mfiter"], blobs["mfiter"], "it.csv", "text/csv")


async def test_data_alone_stays_url_encoded(loop_name: str, target: Target) -> None:
    async with target.client() as client:
        response = await client.post(target.url + "/echo", data={"user": "alice", "q": "a b&c"})
    echo = response.json()
    headers = dict(echo["headers"])
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert echo["body"] == "user=alice&q=a+b%26c"
    assert int(headers["content-length"]) == echo["body_length"]


async def test_prebuilt_encoder_small_chunks(
    loop_name: str, target: Target, tmp_path: pathlib.Path
) -> None:
    big = payload(1_000_003, 7)
    (tmp_path / "big.bin").write_bytes(big)
    encoder = MultipartEncoder(
        [("user", "alice"), ("file", MultipartFile(path=tmp_path / "big.bin")),
         ("inline", ("a.txt", payload(5000, 1)))],
        chunk_size=4097,  # odd and small: many chunks, none aligned with part edges
    )
    async with target.client() as client:
        response = await client.post(target.url + "/upload", content=encoder)
        # A replayable encoder can be sent again, in full, as a new request.
        again = await client.post(target.url + "/upload", content=encoder)
    for r in (response, again):
        report = r.json()
        assert_framed_by_length(report)
        assert report["content_length"] == encoder.content_length
        assert report["content_type"] == encoder.content_type
        parts = parts_by_name(report)
        assert parts["user"]["value"] == "alice"
        assert_part(parts["file"], big, "big.bin", "application/octet-stream")
        assert_part(parts["inline"], payload(5000, 1), "a.txt", "text/plain")


async def test_http11_writes_file_pieces_two_per_call_where_the_transport_gathers_them(
    loop_name: str, http_server: ServerHandle, tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Reads stay chunk_size each, but a transport that writes a list without
    # joining it (uvloop; asyncio from 3.12) gets two file pieces per call:
    # half the thread hops and socket writes per byte. asyncio's 3.11 socket
    # transport would copy the pair into one bytes first, so it gets them
    # one at a time.
    chunk = 64 * 1024
    data = payload(5 * chunk + 123, 3)
    (tmp_path / "f.bin").write_bytes(data)
    writes: list[list[int]] = []
    real_write, real_writelines = SocketStream.write, SocketStream.writelines

    def write(stream: SocketStream, piece: bytes) -> None:
        writes.append([len(piece)])
        real_write(stream, piece)

    def writelines(stream: SocketStream, pieces: list[bytes]) -> None:
        writes.append([len(p) for p in pieces])
        real_writelines(stream, pieces)

    monkeypatch.setattr(SocketStream, "write", write)
    monkeypatch.setattr(SocketStream, "writelines", writelines)
    encoder = MultipartEncoder([("f", tmp_path / "f.bin")], chunk_size=chunk)
    async with hyperhttp.Client(http2=False) as client:
        response = await client.post(http_server.url + "/upload", content=encoder)
    report = response.json()
    assert_framed_by_length(report)
    assert_part(parts_by_name(report)["f"], data, "f.bin", "application/octet-stream")
    file_writes = [sizes for sizes in writes if chunk in sizes or 123 in sizes]
    gathers = loop_name == "uvloop" or sys.version_info >= (3, 12)
    if gathers:
        assert file_writes == [[chunk, chunk], [chunk, chunk], [chunk, 123]]
    else:
        assert file_writes == [[chunk]] * 5 + [[123]]


async def test_spec_examples_as_printed(
    loop_name: str, target: Target, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The documentation's paths are relative ("./report.pdf", "./big.bin").
    monkeypatch.chdir(tmp_path)
    report_pdf = b"%PDF-1.4\n" + payload(150_000, 3)
    big = payload(3 * 1024 * 1024 + 17, 5)
    pathlib.Path("report.pdf").write_bytes(report_pdf)
    pathlib.Path("big.bin").write_bytes(big)

    async with target.client() as client:
        r = await client.post(
            target.url + "/upload",
            data={"user": "alice", "note": "quarterly report"},
            files={
                "avatar": ("me.png", b"\x89PNG...", "image/png"),
                "report": pathlib.Path("./report.pdf"),
            },
        )
    first = r.json()
    assert_framed_by_length(first)
    assert [p["name"] for p in first["parts"]] == ["user", "note", "avatar", "report"]
    parts = parts_by_name(first)
    assert parts["note"]["value"] == "quarterly report"
    assert_part(parts["avatar"], b"\x89PNG...", "me.png", "image/png")
    assert_part(parts["report"], report_pdf, "report.pdf", "application/pdf")

    encoder = MultipartEncoder([
        ("user", "alice"),
        ("file", MultipartFile(path="./big.bin", content_type="application/octet-stream")),
    ], chunk_size=2 * 1024 * 1024)

    async with target.client() as client:
        r2 = await client.post(target.url + "/upload", content=encoder)
    second = r2.json()
    assert_framed_by_length(second)
    assert second["content_type"] == encoder.content_type
    assert_part(parts_by_name(second)["file"], big, "big.bin", "application/octet-stream")


async def test_unknown_size_part_falls_back_to_streaming(loop_name: str, target: Target) -> None:
    chunks = [payload(n, n) for n in (1, 65536, 3, 100_000, 0, 17)]
    encoder = MultipartEncoder([("f", ("u.bin", agen(chunks))), ("after", "tail")])
    assert encoder.content_length is None
    async with target.client() as client:
        response = await client.post(target.url + "/upload", content=encoder)
    report = response.json()
    assert report["error"] is None and report["complete"] is True
    assert report["content_length"] is None
    if target.http_version == "HTTP/1.1":
        assert report["transfer_encoding"] == "chunked"
    else:  # HTTP/2 has no chunked coding: a plain DATA stream ended by END_STREAM
        assert report["transfer_encoding"] is None
    assert_part(parts_by_name(report)["f"], b"".join(chunks), "u.bin", "application/octet-stream")
    assert parts_by_name(report)["after"]["value"] == "tail"


# --- backpressure -----------------------------------------------------------------


class ReadCounter:
    """Counts `_FileReader.read` calls: the chunks actually taken from disk."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.bytes = 0
        original = _FileReader.read

        def counting(reader: _FileReader, n: int) -> bytes:
            chunk = original(reader, n)
            self.calls += 1
            self.bytes += len(chunk)
            return chunk

        monkeypatch.setattr(_FileReader, "read", counting)


def sparse_file(path: pathlib.Path, size: int) -> pathlib.Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


class StallingSink:
    """A raw HTTP/1.1 server that takes `before` body bytes, stops reading for
    `stall` seconds, then reads the rest and answers 200 with the count.

    Its receive buffer is pinned small so the client's kernel buffers, not
    the server's, are what fill up while it stalls.
    """

    def __init__(self, before: int, stall: float) -> None:
        self.before = before
        self.stall = stall
        self.received = 0
        self.stalled = threading.Event()
        self.resume = threading.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        head = await read_head(reader)
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while self.received < length:
            if self.received >= self.before and not self.stalled.is_set():
                self.stalled.set()
                await asyncio.sleep(self.stall)
                self.resume.set()
            chunk = await reader.read(min(65536, length - self.received))
            if not chunk:
                return
            self.received += len(chunk)
        body = str(self.received).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()


async def test_slow_server_pauses_the_disk_reader_http11(
    loop_name: str, raw_server: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size, chunk = 64 * 1024 * 1024, 256 * 1024
    big = sparse_file(tmp_path / "sparse.bin", size)
    counter = ReadCounter(monkeypatch)
    sink = StallingSink(before=1024 * 1024, stall=0.6)
    server = raw_server(sink)
    encoder = MultipartEncoder([("f", big)], chunk_size=chunk)
    ahead_during_stall: list[int] = []

    async def watch() -> None:
        while not sink.resume.is_set():
            if sink.stalled.is_set():
                ahead_during_stall.append(counter.bytes - sink.received)
            await asyncio.sleep(0.02)

    async with hyperhttp.Client(http2=False, timeout=30.0) as client:
        watcher = asyncio.create_task(watch())
        response = await client.post(server.url + "/sink", content=encoder)
        await watcher
    assert response.status_code == 200
    assert int(response.text) == encoder.content_length
    assert counter.bytes == size
    assert len(ahead_during_stall) >= 10
    # While the server read nothing the reader stopped: what was read but not
    # received is bounded by the kernel's send buffer plus a few chunks, far
    # below the 64 MiB a reader without backpressure would have pulled in.
    wmem_max = int(pathlib.Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    assert max(ahead_during_stall) <= wmem_max + 256 * 1024 + 4 * chunk
    assert max(ahead_during_stall) < size // 4
    # ...and it really had paused, not raced to the end before the stall.
    assert ahead_during_stall[-1] == ahead_during_stall[len(ahead_during_stall) // 2]


@pytest.fixture
def starving_h2_server(certs: TestCerts) -> Iterator[H2Server]:
    """Our h2 server that never acknowledges request bodies: the client gets
    one 64 KiB stream window of credit, then none."""
    server = H2Server(
        certs.server_ssl_context(alpn=("h2",)), H2ServerConfig(read_bodies=False)
    ).start()
    yield server
    server.stop()


async def test_flow_control_pauses_the_disk_reader_http2(
    loop_name: str,
    starving_h2_server: H2Server,
    ca_pem_path: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chunk = 64 * 1024
    big = sparse_file(tmp_path / "sparse.bin", 32 * 1024 * 1024)
    counter = ReadCounter(monkeypatch)
    encoder = MultipartEncoder([("f", big)], chunk_size=chunk)
    timeout = hyperhttp.Timeout(10.0, write=0.5)
    async with hyperhttp.Client(verify=ca_pem_path, timeout=timeout) as client:
        with pytest.raises(hyperhttp.WriteTimeout):
            await client.post(f"https://localhost:{starving_h2_server.port}/echo", content=encoder)
    # 65535 bytes of credit, then nothing: the reader took at most the chunk
    # being sent and the next one, not the 512 chunks of the file.
    assert 1 <= counter.calls <= 3
    received = sum(starving_h2_server.stats.received.values())
    assert received <= 65535
    # The file the encoder opened is closed once the failed request unwinds
    # (the abandoned body generator is finalized within a few loop turns).
    for _ in range(5):
        await asyncio.sleep(0)
    assert not encoder._readers


# --- re-sending -------------------------------------------------------------------


def parse_multipart(content_type: bytes, body: bytes) -> dict[str, tuple[str | None, str]]:
    """name -> (filename, sha256) as python-multipart reads `body`."""
    _, options = parse_options_header(content_type)
    out: dict[str, tuple[str | None, str]] = {}
    state: dict[str, Any] = {}

    def begin() -> None:
        state.update(field=bytearray(), value=bytearray(), headers={}, data=bytearray())

    def header_end() -> None:
        state["headers"][state["field"].decode().lower()] = state["value"].decode()
        state["field"], state["value"] = bytearray(), bytearray()

    def end() -> None:
        _, opts = parse_options_header(state["headers"]["content-disposition"])
        filename = opts.get(b"filename")
        out[opts[b"name"].decode()] = (
            None if filename is None else filename.decode(), sha(bytes(state["data"]))
        )

    parser = MultipartParser(options[b"boundary"], {
        "on_part_begin": begin,
        "on_header_field": lambda d, s, e: state["field"].extend(d[s:e]),
        "on_header_value": lambda d, s, e: state["value"].extend(d[s:e]),
        "on_header_end": header_end,
        "on_part_data": lambda d, s, e: state["data"].extend(d[s:e]),
        "on_part_end": end,
    })
    parser.write(body)
    parser.finalize()
    return out


class FailFirst:
    """A raw HTTP/1.1 server answering 503 to its first request, 200 after;
    it keeps every request (head, body) it read in full."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes]] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_head(reader)
            if not head:
                return
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
            )
            body = await reader.readexactly(int(fields[b"content-length"]))
            self.requests.append((fields[b"content-type"], body))
            status = b"503 Service Unavailable" if len(self.requests) == 1 else b"200 OK"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()


async def test_retry_resends_a_replayable_body_in_full(
    loop_name: str, raw_server: Any, tmp_path: pathlib.Path
) -> None:
    blob = payload(1_500_000, 9)
    (tmp_path / "r.bin").write_bytes(blob)
    handler = FailFirst()
    server = raw_server(handler)
    policy = RetryPolicy(
        max_retries=2, status_force_list=[503], backoff_strategy=NO_WAIT,
        retry_non_idempotent=True,
    )
    async with hyperhttp.Client(http2=False, retry=policy) as client:
        response = await client.post(
            server.url + "/u", data={"k": "v"},
            files={"p": tmp_path / "r.bin", "b": ("b.txt", b"bytes part")},
        )
    assert response.status_code == 200
    assert len(handler.requests) == 2
    (ct1, body1), (ct2, body2) = handler.requests
    assert body1 == body2 and ct1 == ct2
    assert parse_multipart(ct2, body2) == {
        "k": (None, sha(b"v")), "p": ("r.bin", sha(blob)), "b": ("b.txt", sha(b"bytes part")),
    }


@pytest.mark.parametrize("make", ["handle", "async_iterable"])
async def test_retry_never_resends_a_single_use_body(
    loop_name: str, raw_server: Any, tmp_path: pathlib.Path, make: str
) -> None:
    blob = payload(300_000, 2)
    (tmp_path / "once.bin").write_bytes(blob)
    handler = FailFirst()
    server = raw_server(handler)
    policy = RetryPolicy(
        max_retries=2, status_force_list=[503], backoff_strategy=NO_WAIT,
        retry_non_idempotent=True,
    )
    with open(tmp_path / "once.bin", "rb") as fh:
        part: Any = fh if make == "handle" else MultipartFile(
            content=agen([blob[:100_000], blob[100_000:]]), size=len(blob), filename="once.bin"
        )
        encoder = MultipartEncoder([("f", part)])
        assert not encoder.is_replayable
        async with hyperhttp.Client(http2=False, retry=policy) as client:
            response = await client.post(server.url + "/u", content=encoder)
            # The retry policy declines (the body cannot be replayed): the 503
            # is the answer, and nothing short was ever sent.
            assert response.status_code == 503
            assert len(handler.requests) == 1
            assert parse_multipart(*handler.requests[0])["f"] == ("once.bin", sha(blob))
            # Sending the spent body again fails before a byte goes out.
            with pytest.raises(StreamConsumed, match="can be read only once"):
                await client.post(server.url + "/u", content=encoder)
    assert len(handler.requests) == 1


@pytest.mark.parametrize("status", [307, 308])
async def test_redirect_resends_a_replayable_body_in_full(
    loop_name: str, target: Target, tmp_path: pathlib.Path, status: int
) -> None:
    blob = payload(2_000_000, 4)
    (tmp_path / "redir.bin").write_bytes(blob)
    async with target.client(follow_redirects=True) as client:
        response = await client.post(
            f"{target.url}/redirect-to?url=/upload&status={status}",
            data={"k": "v"}, files={"f": tmp_path / "redir.bin"},
        )
    assert [h.status_code for h in response.history] == [status]
    assert response.http_version == target.http_version
    report = response.json()
    assert_framed_by_length(report)
    assert_part(parts_by_name(report)["f"], blob, "redir.bin", "application/octet-stream")
    assert parts_by_name(report)["k"]["value"] == "v"


@pytest.mark.parametrize("make", ["handle", "async_iterable"])
async def test_redirect_with_single_use_body_raises(
    loop_name: str, target: Target, tmp_path: pathlib.Path, make: str
) -> None:
    (tmp_path / "once.bin").write_bytes(payload(10_000))
    with open(tmp_path / "once.bin", "rb") as fh:
        part = fh if make == "handle" else ("once.bin", agen([payload(10_000)]))
        async with target.client(follow_redirects=True) as client:
            with pytest.raises(StreamConsumed, match="single-use"):
                await client.post(
                    f"{target.url}/redirect-to?url=/upload&status=307", files={"f": part}
                )


class CountingDigestApp(DigestServerApp):
    """The digest server, also keeping each request's body length and sha256."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[tuple[int, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        digest, size = hashlib.sha256(), 0

        async def counting_receive() -> Any:
            nonlocal size
            message = await receive()
            body = message.get("body", b"")
            digest.update(body)
            size += len(body)
            if not message.get("more_body", False):
                self.bodies.append((size, digest.hexdigest()))
            return message

        await super().__call__(scope, counting_receive, send)


async def test_digest_round_trip_resends_the_body_in_full(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    blob = payload(1_200_000, 6)
    (tmp_path / "d.bin").write_bytes(blob)
    app = CountingDigestApp()
    encoder = MultipartEncoder([("f", tmp_path / "d.bin"), ("t", "text")])
    assert encoder.content_length is not None
    with DigestServer(app) as server:
        auth = hyperhttp.DigestAuth("Mufasa", "Circle of Life")
        async with hyperhttp.Client(http2=False, auth=auth) as client:
            response = await client.post(server.url + "/dir/index.html", content=encoder)
    assert response.status_code == 200
    assert [e.status for e in app.log] == [401, 200]
    assert len(app.bodies) == 2
    assert app.bodies[0] == app.bodies[1]
    assert app.bodies[0][0] == encoder.content_length


async def test_digest_with_single_use_body_does_not_resend(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    app = CountingDigestApp()
    blob = payload(50_000)
    encoder = MultipartEncoder([("f", MultipartFile(file=io.BytesIO(blob), filename="x"))])
    with DigestServer(app) as server:
        auth = hyperhttp.DigestAuth("Mufasa", "Circle of Life")
        async with hyperhttp.Client(http2=False, auth=auth) as client:
            with pytest.raises(hyperhttp.StreamConsumed, match="Digest"):
                await client.post(server.url + "/p", content=encoder)
    # The body went out once, whole, on the challenged request; no short copy.
    assert len(app.bodies) == 1 and app.bodies[0][0] == encoder.content_length


# --- failure while sending ----------------------------------------------------------


async def test_file_changed_after_building_fails_before_sending(
    loop_name: str, target: Target, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "grow.bin"
    path.write_bytes(payload(1000))
    encoder = MultipartEncoder([("f", path)])
    path.write_bytes(payload(2000))
    async with target.client() as client:
        with pytest.raises(hyperhttp.LocalProtocolError, match="Content-Length would be wrong"):
            await client.post(target.url + "/upload", content=encoder)
        # The connection was not left half-written: the next request works.
        ok = await client.post(target.url + "/upload", files={"f": ("a", b"abc")})
    assert ok.json()["parts"][0]["size"] == 3



async def head_then_stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request head, then never read the body nor answer: the
    client's socket buffers fill and its upload waits in drain."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    await read_head(reader)
    await asyncio.Event().wait()  # until the server stops


@pytest.mark.parametrize("ending", ["cancelled", "write_timeout"])
async def test_abandoned_upload_closes_the_callers_content_generator_at_once(
    loop_name: str, raw_server: Any, ending: str
) -> None:
    """The body wrapper was closed but not the caller's generator inside
    it: its `finally` (closing a file, a cursor...) waited for the garbage
    collector, here for as long as the caller kept a reference to it."""
    yielded: list[int] = []
    closed: list[str] = []

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"x" * 65536
                yielded.append(1)
        finally:
            closed.append("finally ran")

    server = raw_server(head_then_stall)
    body = chunks()  # held by the caller throughout, as callers do
    write = 0.3 if ending == "write_timeout" else 10.0
    timeout = hyperhttp.Timeout(10.0, write=write)
    async with hyperhttp.Client(http2=False, timeout=timeout) as client:
        upload = asyncio.ensure_future(client.post(server.url + "/up", content=body))
        if ending == "cancelled":
            # Wait for the stall: the generator stops being asked for more.
            seen = -1
            while len(yielded) != seen:
                seen = len(yielded)
                await asyncio.sleep(0.2)
            assert not upload.done()
            upload.cancel()
            with pytest.raises(asyncio.CancelledError):
                await upload
        else:
            with pytest.raises(hyperhttp.WriteTimeout):
                await upload
        assert len(yielded) > 1  # it stopped mid-upload, not before the body
        assert closed == ["finally ran"]
        assert all(s["in_use"] == 0 for s in client.get_pool_stats().values())
