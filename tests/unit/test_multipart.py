"""The streaming multipart/form-data encoder, checked with a real parser.

Every body produced here is decoded by `python_multipart`'s MultipartParser,
and each part's name, filename, Content-Type, size and sha256 are compared
with what went in.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import io
import os
import pathlib
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

import hyperhttp
from hyperhttp._exceptions import LocalProtocolError, StreamConsumed
from hyperhttp._multipart import MultipartEncoder, MultipartFile, build_multipart
from hyperhttp._multipart_io import _FileReader

MiB = 1024 * 1024


@dataclass
class Part:
    headers: list[tuple[str, str]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(values) <= 1, self.headers
        return values[0] if values else None

    def disposition(self) -> dict[str, str]:
        raw = self.header("Content-Disposition")
        assert raw is not None
        kind, params = parse_options_header(raw.encode("utf-8"))
        assert kind == b"form-data"
        # parse_options_header decodes bytes as latin-1; undo that to get UTF-8 text.
        return {
            k.decode("latin-1"): v.decode("latin-1").encode("latin-1").decode()
            for k, v in params.items()
        }

    @property
    def name(self) -> str:
        return self.disposition()["name"]

    @property
    def filename(self) -> str | None:
        return self.disposition().get("filename")

    @property
    def content_type(self) -> str | None:
        return self.header("Content-Type")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def parse(body: bytes, enc: MultipartEncoder) -> list[Part]:
    """Decode a body with python_multipart; fail unless it ends properly."""
    assert enc.content_type == f"multipart/form-data; boundary={enc.boundary}"
    parts: list[Part] = []
    hname = bytearray()
    hvalue = bytearray()

    def on_part_begin() -> None:
        parts.append(Part())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        hname.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        hvalue.extend(data[start:end])

    def on_header_end() -> None:
        parts[-1].headers.append((hname.decode("utf-8"), hvalue.decode("utf-8")))
        hname.clear()
        hvalue.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    parser = MultipartParser(
        enc.boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
    parser.write(body)
    parser.finalize()
    assert parser.state == MultipartState.END
    return parts


async def chunks_of(enc: MultipartEncoder) -> list[bytes]:
    out = [chunk async for chunk in enc]
    assert all(type(c) is bytes and c for c in out), "chunks are non-empty bytes"
    return out


async def encode(enc: MultipartEncoder) -> bytes:
    body = b"".join(await chunks_of(enc))
    if enc.content_length is not None:
        assert enc.content_length == len(body)
    return body


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def agen(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        await asyncio.sleep(0)
        yield piece


def write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.write_bytes(data)
    return path


def open_fds_to(path: pathlib.Path) -> int:
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                count += 1
        except OSError:
            pass
    return count


# ----------------------------------------------------------------- the user documentation


async def test_quick_usage_example(loop_name: str, tmp_path: pathlib.Path) -> None:
    pdf = write(tmp_path / "report.pdf", b"%PDF-1.7 " + os.urandom(5000))
    enc = build_multipart(
        {"user": "alice", "note": "quarterly report"},
        {"avatar": ("me.png", b"\x89PNG...", "image/png"), "report": pathlib.Path(pdf)},
    )
    parts = parse(await encode(enc), enc)
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("user", None, None),
        ("note", None, None),
        ("avatar", "me.png", "image/png"),
        ("report", "report.pdf", "application/pdf"),
    ]
    assert bytes(parts[0].data) == b"alice"
    assert bytes(parts[1].data) == b"quarterly report"
    assert bytes(parts[2].data) == b"\x89PNG..."
    assert parts[3].sha256 == sha(pdf.read_bytes())
    assert enc.is_replayable


async def test_prebuilt_encoder_example(
    loop_name: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = os.urandom(5 * MiB + 17)
    write(tmp_path / "big.bin", data)
    encoder = MultipartEncoder(
        [
            ("user", "alice"),
            ("file", MultipartFile(path="./big.bin", content_type="application/octet-stream")),
        ],
        chunk_size=2 * 1024 * 1024,
    )
    chunks = await chunks_of(encoder)
    assert max(len(c) for c in chunks) == 2 * MiB
    body = b"".join(chunks)
    assert encoder.content_length == len(body)
    user, file = parse(body, encoder)
    assert (user.name, bytes(user.data)) == ("user", b"alice")
    assert (file.name, file.filename, file.content_type) == (
        "file",
        "big.bin",
        "application/octet-stream",
    )
    assert file.sha256 == sha(data)


# ----------------------------------------------------------------- every shape of the table


def _shapes(
    tmp_path: pathlib.Path, payload: bytes, stack: contextlib.ExitStack
) -> dict[str, tuple[Any, str | None, str]]:
    """files= value → (value, expected filename, expected content type)."""
    p = write(tmp_path / "doc.txt", payload)
    q = write(tmp_path / "blob.unknownext", payload)
    return {
        "bytes": (payload, None, "application/octet-stream"),
        "bytearray": (bytearray(payload), None, "application/octet-stream"),
        "memoryview": (memoryview(payload), None, "application/octet-stream"),
        "path": (p, "doc.txt", "text/plain"),
        "str-path": (str(p), "doc.txt", "text/plain"),
        "unknown-ext": (q, "blob.unknownext", "application/octet-stream"),
        "handle": (stack.enter_context(open(p, "rb")), "doc.txt", "text/plain"),
        "bytesio": (io.BytesIO(payload), None, "application/octet-stream"),
        "2-tuple": (("a.json", payload), "a.json", "application/json"),
        "3-tuple": (("a.json", payload, "text/x-custom"), "a.json", "text/x-custom"),
        "tuple-path": (("renamed.bin", str(p)), "renamed.bin", "application/octet-stream"),
        "tuple-handle": (("h.png", stack.enter_context(open(p, "rb"))), "h.png", "image/png"),
        "tuple-none": ((None, payload), None, "application/octet-stream"),
        "tuple-async": (("s.csv", agen(payload[:10], payload[10:])), "s.csv", "text/csv"),
        "mf-path": (MultipartFile(path=p), "doc.txt", "text/plain"),
        "mf-file": (
            MultipartFile(file=stack.enter_context(open(p, "rb")), filename="x.gif"),
            "x.gif",
            "image/gif",
        ),
        "mf-content": (MultipartFile(content=payload, filename="c.html"), "c.html", "text/html"),
        "mf-content-path": (MultipartFile(content=p, content_type="a/b"), "doc.txt", "a/b"),
        "mf-async-sized": (
            MultipartFile(content=agen(payload), size=len(payload), filename="z"),
            "z",
            "application/octet-stream",
        ),
    }


async def test_every_shape_of_files(loop_name: str, tmp_path: pathlib.Path) -> None:
    payload = os.urandom(3000)
    with contextlib.ExitStack() as stack:
        shapes = _shapes(tmp_path, payload, stack)
        enc = build_multipart(None, list((name, v[0]) for name, v in shapes.items()))
        body = await encode(enc)
    parts = parse(body, enc)
    assert len(parts) == len(shapes)
    for part, (name, (_, filename, ctype)) in zip(parts, shapes.items(), strict=True):
        assert (part.name, part.filename, part.content_type) == (name, filename, ctype), name
        assert len(part.data) == len(payload), name
        assert part.sha256 == sha(payload), name
    # Only the async iterable without a size leaves the length unknown.
    assert enc.content_length is None
    assert not enc.is_replayable


async def test_four_tuple_adds_headers(loop_name: str) -> None:
    enc = build_multipart(
        None, {"f": ("a.txt", b"hi", None, {"X-Tag": "one", "Content-Type": "x/y"})}
    )
    (part,) = parse(await encode(enc), enc)
    assert part.header("X-Tag") == "one"
    assert part.content_type == "x/y"
    assert part.filename == "a.txt"


async def test_handle_size_counts_from_current_position(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    data = os.urandom(10_000)
    p = write(tmp_path / "f.bin", data)
    with open(p, "rb") as fh:
        fh.read(1234)
        enc = MultipartEncoder([("f", fh)])
        assert enc.content_length is not None
        (part,) = parse(await encode(enc), enc)
    assert part.sha256 == sha(data[1234:])


# ----------------------------------------------------------------- text fields and names


async def test_text_only_encoder_has_plain_text_parts(loop_name: str) -> None:
    enc = MultipartEncoder(
        {"a": "x", "n": 3, "f": 1.5, "t": True, "no": False, "z": None, "u": "é✓"}
    )
    parts = parse(await encode(enc), enc)
    assert [(p.name, bytes(p.data)) for p in parts] == [
        ("a", b"x"),
        ("n", b"3"),
        ("f", b"1.5"),
        ("t", b"true"),
        ("no", b"false"),
        ("z", b""),
        ("u", "é✓".encode()),
    ]
    assert all(p.filename is None and p.content_type is None for p in parts)
    assert enc.is_replayable and enc.content_length is not None


async def test_str_is_text_in_data_and_encoder_but_a_path_in_files(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    p = write(tmp_path / "p.txt", b"file body")
    enc = build_multipart({"d": str(p)}, {"f": str(p)})
    d, f = parse(await encode(enc), enc)
    assert (bytes(d.data), d.filename) == (str(p).encode(), None)
    assert (bytes(f.data), f.filename) == (b"file body", "p.txt")
    enc2 = MultipartEncoder([("d", str(p))])
    (d2,) = parse(await encode(enc2), enc2)
    assert bytes(d2.data) == str(p).encode()


def test_missing_str_path_says_how_to_send_text() -> None:
    with pytest.raises(FileNotFoundError, match="pass bytes"):
        build_multipart(None, {"f": ("a.txt", "hello world")})


async def test_repeated_names_keep_order(loop_name: str) -> None:
    enc = build_multipart(
        [("tag", ["a", "b"]), ("x", "1"), ("tag", "c")],
        {"f": [b"one", ("2.txt", b"two")], "g": b"three"},
    )
    parts = parse(await encode(enc), enc)
    assert [(p.name, bytes(p.data)) for p in parts] == [
        ("tag", b"a"),
        ("tag", b"b"),
        ("x", b"1"),
        ("tag", b"c"),
        ("f", b"one"),
        ("f", b"two"),
        ("g", b"three"),
    ]
    assert repr(enc) == f"<MultipartEncoder parts=7 content_length={enc.content_length}>"


async def test_data_bytes_is_a_text_value_and_empty_bodies(loop_name: str) -> None:
    enc = build_multipart({"raw": b"\x00\xff"}, {"empty": b""})
    raw, empty = parse(await encode(enc), enc)
    assert (bytes(raw.data), raw.content_type) == (b"\x00\xff", None)
    assert (bytes(empty.data), empty.content_type) == (b"", "application/octet-stream")
    nothing = MultipartEncoder([], boundary="b0")
    assert await encode(nothing) == b"--b0--\r\n"


@pytest.mark.parametrize(
    ("name", "filename"),
    [
        ('a"; filename="evil.sh', 'x"\r\nX-Evil: 1\r\n\r\nboom'),
        ("tab\there\x00nul", "line\nfeed\rcr.txt"),
        ("trailing\\", "back\\slash\\"),
        ("naïve ✓ 名前", "résumé 履歴書.pdf"),
        ("\x7f\x1b", '"'),
    ],
)
async def test_names_cannot_inject_headers_or_parameters(
    loop_name: str, name: str, filename: str
) -> None:
    enc = build_multipart({"before": "1"}, [(name, (filename, b"payload")), ("after", b"2")])
    body = await encode(enc)
    parts = parse(body, enc)
    assert len(parts) == 3
    _, part, after = parts
    # One Content-Disposition and one Content-Type, nothing injected.
    assert [k.lower() for k, _ in part.headers] == ["content-disposition", "content-type"]
    assert set(part.disposition()) == {"name", "filename"}

    def escape(s: str) -> str:  # as a browser does, plus every control character and '\'
        return "".join(f"%{ord(c):02X}" if ord(c) < 0x20 or c in '\x7f"\\' else c for c in s)

    line = f'Content-Disposition: form-data; name="{escape(name)}"; filename="{escape(filename)}"'
    assert line.encode() in body
    assert b"\\" not in body.split(b"\r\n\r\n")[1]  # no backslash left in the headers
    # The percent-escapes reach the server as they are, as with browsers.
    assert (part.name, part.filename) == (escape(name), escape(filename))
    assert bytes(part.data) == b"payload"
    assert (after.name, bytes(after.data)) == ("after", b"2")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "v\r\nX-Evil: 1"},
        {"Bad Name": "v"},
        {"Content-Disposition": "form-data"},
        {"X": "\x00"},
    ],
)
def test_bad_part_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        build_multipart(None, {"f": ("a", b"x", None, headers)})


def test_bad_content_type_is_refused() -> None:
    with pytest.raises(ValueError):
        MultipartFile(content=b"x", content_type="text/plain\r\nX-Evil: 1")


# ----------------------------------------------------------------- boundary


def test_random_boundary_avoids_in_memory_content(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = iter(["a" * 32, "b" * 32])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(tokens))
    enc = MultipartEncoder([("f", bytearray(b"xx--" + b"a" * 32 + b"yy")), ("t", "z")])
    assert enc.boundary == "b" * 32


def test_random_boundary_is_128_bits_and_differs() -> None:
    a, b = MultipartEncoder({"a": "1"}), MultipartEncoder({"a": "1"})
    assert len(a.boundary) == 32 and int(a.boundary, 16) >= 0
    assert a.boundary != b.boundary


def test_given_boundary_is_checked() -> None:
    with pytest.raises(ValueError, match="occurs in the content"):
        MultipartEncoder({"t": "x--fixed"}, boundary="fixed")
    for bad in ["", "x" * 71, "ends in space ", 'quote"', "nl\n"]:
        with pytest.raises(ValueError):
            MultipartEncoder({"t": "x"}, boundary=bad)


async def test_boundary_absent_from_large_memoryview_content(loop_name: str) -> None:
    data = os.urandom(3 * MiB)
    enc = MultipartEncoder([("f", memoryview(data))], chunk_size=MiB)
    body = await encode(enc)
    assert body.count(b"--" + enc.boundary.encode()) == 2
    (part,) = parse(body, enc)
    assert part.sha256 == sha(data)


# ----------------------------------------------------------------- sizes and streaming


async def test_unknown_size_async_iterable_gives_no_content_length(loop_name: str) -> None:
    enc = MultipartEncoder(
        [("t", "x"), ("s", ("s.bin", agen(b"ab", b"", cast(bytes, bytearray(b"cd")))))]
    )
    assert enc.content_length is None
    assert not enc.is_replayable
    _, s = parse(await encode(enc), enc)
    assert bytes(s.data) == b"abcd"


async def test_async_iterable_with_size_gives_content_length_and_is_checked(loop_name: str) -> None:
    enc = MultipartEncoder([("s", MultipartFile(content=agen(b"ab", b"cd"), size=4))])
    assert enc.content_length is not None
    (s,) = parse(await encode(enc), enc)
    assert bytes(s.data) == b"abcd"
    for pieces in [(b"ab",), (b"ab", b"cde")]:
        wrong = MultipartEncoder([("s", MultipartFile(content=agen(*pieces), size=4))])
        with pytest.raises(LocalProtocolError, match="size=4"):
            await encode(wrong)


async def test_path_and_bytes_bodies_replay_identically(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    p = write(tmp_path / "r.bin", os.urandom(300_000))
    enc = MultipartEncoder(
        [("a", p), ("b", os.urandom(200_000)), ("c", bytearray(b"z" * 50)), ("d", "t")],
        chunk_size=64 * 1024,
    )
    assert enc.is_replayable
    first, second = await encode(enc), await encode(enc)
    assert first == second
    assert len(parse(first, enc)) == 4


async def test_single_use_handle_refuses_second_pass(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    p = write(tmp_path / "once.bin", b"data" * 1000)
    with open(p, "rb") as fh:
        enc = MultipartEncoder([("t", "x"), ("up", fh)])
        assert not enc.is_replayable
        await encode(enc)
        with pytest.raises(StreamConsumed, match=r"'up' \(file 'once.bin'\).*open file handle"):
            async for _ in enc:
                pass


async def test_single_use_async_iterable_refuses_second_pass(loop_name: str) -> None:
    enc = MultipartEncoder([("s", ("s.bin", agen(b"abc")))])
    await encode(enc)
    with pytest.raises(StreamConsumed, match=r"async iterable.*sent again"):
        enc.__aiter__()


async def test_pass_abandoned_before_single_use_part_does_not_consume_it(loop_name: str) -> None:
    enc = MultipartEncoder([("t", "x" * 100), ("s", ("s.bin", agen(b"abc")))], chunk_size=16)
    it = enc.__aiter__()
    await it.__anext__()
    await it.aclose()  # type: ignore[attr-defined]
    (_, s) = parse(await encode(enc), enc)
    assert bytes(s.data) == b"abc"


async def test_abandoned_async_generator_is_closed(loop_name: str) -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        try:
            for _ in range(100):
                yield b"x" * 10
        finally:
            closed.set()

    enc = MultipartEncoder([("s", ("s", source()))])
    it = enc.__aiter__()
    await it.__anext__()  # part header
    await it.__anext__()  # first chunk of the generator
    await it.aclose()  # type: ignore[attr-defined]
    assert closed.is_set()


async def test_path_file_is_closed_after_full_and_abandoned_passes(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    p = write(tmp_path / "c.bin", os.urandom(100_000))
    enc = MultipartEncoder([("f", p)], chunk_size=10_000)
    assert open_fds_to(p) == 0  # not opened at construction
    it = enc.__aiter__()
    await it.__anext__()  # header
    await it.__anext__()  # first file chunk
    assert open_fds_to(p) == 1
    await it.aclose()  # type: ignore[attr-defined]
    assert open_fds_to(p) == 0
    await encode(enc)
    assert open_fds_to(p) == 0


async def test_path_file_is_closed_when_the_pass_is_cancelled(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    p = tmp_path / "sparse.bin"
    with open(p, "wb") as fh:
        fh.truncate(256 * MiB)
    enc = MultipartEncoder([("f", p)], chunk_size=MiB)
    started = asyncio.Event()

    async def consume() -> None:
        async for chunk in enc:
            if len(chunk) == MiB:
                started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 10)
    assert open_fds_to(p) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A read still running in its worker thread closes the file when it returns.
    for _ in range(200):
        if open_fds_to(p) == 0:
            break
        await asyncio.sleep(0.01)
    assert open_fds_to(p) == 0


class RecordedReads:
    """Replaces `_FileReader.read`: records each call, raises on call `fail_at`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int = 0) -> None:
        self.sizes: list[int] = []
        original = _FileReader.read

        def read(reader: _FileReader, n: int) -> bytes:
            if len(self.sizes) + 1 == fail_at:
                self.sizes.append(-1)
                raise OSError(5, "Input/output error")
            chunk = original(reader, n)
            self.sizes.append(len(chunk))
            return chunk

        monkeypatch.setattr(_FileReader, "read", read)

    async def wait_for(self, calls: int) -> None:
        for _ in range(200):
            if len(self.sizes) >= calls:
                return
            await asyncio.sleep(0.01)


async def first_file_chunk(it: AsyncIterator[bytes], size: int) -> bytes:
    while len(chunk := await it.__anext__()) != size:
        pass  # the part's head
    return chunk


def four_and_a_half_chunks(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[bytes, RecordedReads, MultipartEncoder]:
    """A 4,500-byte file part in 1,000-byte chunks, its reads recorded."""
    data = os.urandom(4500)
    p = write(tmp_path / "a.bin", data)
    return data, RecordedReads(monkeypatch), MultipartEncoder([("f", p)], chunk_size=1000)


async def test_the_next_file_chunk_is_read_while_the_caller_holds_this_one(
    loop_name: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While the caller writes a chunk to the socket, the reader thread reads
    # the next: the socket is not left idle for a thread hop per chunk.
    data, reads, enc = four_and_a_half_chunks(tmp_path, monkeypatch)
    it = enc.__aiter__()
    assert await first_file_chunk(it, 1000) == data[:1000]
    await reads.wait_for(2)
    assert reads.sizes == [1000, 1000]  # the second read ran with the first chunk held
    rest = [chunk async for chunk in it]
    assert b"".join(rest).startswith(data[1000:])
    # Never past the size announced: the last read asked for the 500 left.
    assert reads.sizes == [1000, 1000, 1000, 1000, 500]


async def test_an_abandoned_read_ahead_leaves_no_error_behind(
    loop_name: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The read run ahead fails after the caller stopped: nobody wanted that
    # chunk, so nothing is raised or logged as "never retrieved", and the
    # file is closed.
    p = write(tmp_path / "a.bin", os.urandom(5000))
    reads = RecordedReads(monkeypatch, fail_at=2)
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        enc = MultipartEncoder([("f", p)], chunk_size=1000)
        it = enc.__aiter__()
        await first_file_chunk(it, 1000)
        await reads.wait_for(2)
        assert reads.sizes == [1000, -1]
        await it.aclose()  # type: ignore[attr-defined]
        del it
        gc.collect()
        await asyncio.sleep(0)
        assert errors == []
        assert open_fds_to(p) == 0
    finally:
        loop.set_exception_handler(None)


async def test_a_failed_read_ahead_is_raised_to_the_caller_that_takes_it(
    loop_name: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = write(tmp_path / "a.bin", os.urandom(5000))
    RecordedReads(monkeypatch, fail_at=2)
    enc = MultipartEncoder([("f", p)], chunk_size=1000)
    it = enc.__aiter__()
    await first_file_chunk(it, 1000)
    with pytest.raises(OSError, match="Input/output error"):
        await it.__anext__()
    assert open_fds_to(p) == 0


async def test_encoder_aclose_closes_files_of_passes_in_flight(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    p = write(tmp_path / "a.bin", os.urandom(50_000))
    enc = MultipartEncoder([("f", p)], chunk_size=1000)
    it = enc.__aiter__()
    await it.__anext__()
    await it.__anext__()
    assert open_fds_to(p) == 1
    await enc.aclose()
    assert open_fds_to(p) == 0
    await it.aclose()  # type: ignore[attr-defined]


async def test_changed_file_size_fails_before_sending(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    p = write(tmp_path / "grow.bin", b"a" * 1000)
    enc = MultipartEncoder([("t", "x"), ("f", p)])
    with open(p, "ab") as fh:
        fh.write(b"more")
    it = enc.__aiter__()
    with pytest.raises(
        LocalProtocolError, match=r"'f' \(file 'grow.bin'\).*now 1004 bytes but was 1000"
    ):
        await it.__anext__()  # nothing was produced


async def test_file_truncated_during_send_is_an_error(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    p = write(tmp_path / "shrink.bin", b"a" * 100_000)
    enc = MultipartEncoder([("f", p)], chunk_size=10_000)
    it = enc.__aiter__()
    await it.__anext__()
    await it.__anext__()
    os.truncate(p, 20_000)
    with pytest.raises(LocalProtocolError, match="short"):
        while True:
            await it.__anext__()
    assert open_fds_to(p) == 0


async def test_runs_take_two_pieces_per_read_each_at_most_chunk_size(
    loop_name: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The HTTP/1.1 writer's pass: file pieces come two per thread hop, but
    # every read is still chunk_size, and never past the size announced.
    data, reads, enc = four_and_a_half_chunks(tmp_path, monkeypatch)
    runs = [run async for run in enc._aiter_runs()]
    assert reads.sizes == [1000, 1000, 1000, 1000, 500]
    file_runs = [[len(piece) for piece in run] for run in runs[1:-1]]
    assert file_runs == [[1000, 1000], [1000, 1000], [500]]
    assert b"".join(piece for run in runs[1:-1] for piece in run) == data
    assert b"".join(piece for run in runs for piece in run) == b"".join(
        [chunk async for chunk in enc]
    )


async def test_a_file_truncated_inside_a_run_names_the_bytes_missing(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    p = write(tmp_path / "shrink.bin", b"a" * 100_000)
    enc = MultipartEncoder([("f", p)], chunk_size=10_000)
    runs = enc._aiter_runs()
    await runs.__anext__()  # the part's head
    first = await runs.__anext__()
    assert [len(piece) for piece in first] == [10_000, 10_000]
    # The next run (being read ahead now) ends at 40,000, inside what is kept.
    os.truncate(p, 45_000)
    await runs.__anext__()
    # The next run gets 5,000 bytes, then the end of the file: 55,000 missing.
    with pytest.raises(LocalProtocolError, match="ended 55000 bytes short of the 100000"):
        await runs.__anext__()
    assert open_fds_to(p) == 0


def test_path_size_mismatch_and_bad_arguments(tmp_path: pathlib.Path) -> None:
    p = write(tmp_path / "s.bin", b"abc")
    with pytest.raises(ValueError, match="size=5"):
        MultipartFile(path=p, size=5)
    with pytest.raises(ValueError, match="size=4"):
        MultipartFile(content=b"abc", size=4)
    with pytest.raises(TypeError, match="exactly one"):
        MultipartFile(path=p, content=b"x")
    with pytest.raises(TypeError, match="exactly one"):
        MultipartFile()
    with pytest.raises(IsADirectoryError):
        MultipartFile(path=tmp_path)
    with open(p) as text, pytest.raises(TypeError, match="binary mode"):
        MultipartFile(file=text)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unsupported"):
        MultipartEncoder([("x", object())])
    with pytest.raises(TypeError, match="files="):
        build_multipart({"d": p}, {})
    with pytest.raises(ValueError, match="chunk_size"):
        MultipartEncoder({"a": "b"}, chunk_size=0)


def test_repr_shows_counts_never_content(tmp_path: pathlib.Path) -> None:
    p = write(tmp_path / "secret-name.bin", b"abc")
    enc = MultipartEncoder([("password", "hunter2"), ("f", p)])
    text = repr(enc)
    assert text == f"<MultipartEncoder parts=2 content_length={enc.content_length}>"
    assert "hunter2" not in text and "secret" not in text


async def test_large_sparse_file_streams_in_chunk_size_pieces(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    p = tmp_path / "sparse64.bin"
    with open(p, "wb") as fh:
        fh.truncate(64 * MiB)
    chunk_size = MiB
    enc = MultipartEncoder([("meta", "m"), ("f", p), ("tail", "t")], chunk_size=chunk_size)
    chunks = await chunks_of(enc)
    header_size = len(
        f'--{enc.boundary}\r\nContent-Disposition: form-data; name="f"; filename="sparse64.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    assert max(len(c) for c in chunks) <= chunk_size + header_size
    assert sum(len(c) == chunk_size for c in chunks) == 64
    body = b"".join(chunks)
    assert enc.content_length == len(body)
    meta, f, tail = parse(body, enc)
    assert len(f.data) == 64 * MiB and f.sha256 == sha(bytes(64 * MiB))
    assert (bytes(meta.data), bytes(tail.data)) == (b"m", b"t")


_MEMORY_PROBE = """
import asyncio, pathlib, sys, tracemalloc
import uvloop
from hyperhttp import MultipartEncoder

async def main(path):
    enc = MultipartEncoder([("f", pathlib.Path(path))])
    total = 0
    tracemalloc.start()
    async for chunk in enc:
        total += len(chunk)
        del chunk
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(total, enc.content_length, peak)

factory = uvloop.new_event_loop if sys.argv[2] == "uvloop" else asyncio.new_event_loop
with asyncio.Runner(loop_factory=factory) as runner:
    runner.run(main(sys.argv[1]))
"""


@pytest.mark.timeout(300)
def test_one_gib_upload_uses_a_few_chunks_of_memory(tmp_path: pathlib.Path) -> None:
    """Measured in a fresh process: tracemalloc counts every thread's
    allocations, and in a full test run other tests' server threads share
    this process and would be counted as the encoder's."""
    p = tmp_path / "sparse1g.bin"
    with open(p, "wb") as fh:
        fh.truncate(1024 * MiB)
    for loop_name in ("asyncio", "uvloop"):
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, str(p), loop_name],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout.split()
        total, length, peak = (int(x) for x in out)
        assert total == length > 1024 * MiB
        # The chunk being read, the one just yielded and the finished futures the
        # loop still holds: 2-4 chunks were measured. Buffering the file would be 1024.
        assert peak < 6 * MiB, f"{loop_name}: peak {peak / MiB:.1f} MiB"


async def test_fifo_path_streams_once_with_unknown_size(
    loop_name: str, tmp_path: pathlib.Path
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    data = os.urandom(300_000)
    enc = MultipartEncoder([("p", fifo)], chunk_size=64 * 1024)
    assert enc.content_length is None and not enc.is_replayable

    def writer() -> None:
        with open(fifo, "wb") as fh:  # blocks until the encoder opens the read end
            fh.write(data)

    writing = asyncio.get_running_loop().run_in_executor(None, writer)
    try:
        body = await asyncio.wait_for(encode(enc), 10)
    finally:
        if not writing.done():  # free a writer still waiting for a reader
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        await asyncio.wait_for(writing, 10)
    (part,) = parse(body, enc)
    assert (part.filename, part.sha256) == ("pipe", sha(data))
    with pytest.raises(StreamConsumed, match="non-regular file"):
        enc.__aiter__()


def test_multipart_file_reports_what_it_will_send(tmp_path: pathlib.Path) -> None:
    p = write(tmp_path / "photo.jpeg", b"x" * 123)
    mf = MultipartFile(path=p)
    assert (mf.filename, mf.content_type, mf.size) == ("photo.jpeg", "image/jpeg", 123)
    assert repr(mf) == "<MultipartFile filename='photo.jpeg' size=123>"
    streamed = MultipartFile(content=agen(b"a"), filename="s")
    assert streamed.size is None


@pytest.mark.parametrize(
    ("boundary", "shown"),
    [("plain-boundary_1.x", "plain-boundary_1.x"), ("a b", '"a b"'), ("a:b=c/d?e", '"a:b=c/d?e"')],
)
def test_a_boundary_with_tspecials_is_quoted_in_the_content_type(boundary: str, shown: str) -> None:
    """RFC 2046 allows space, ':', '=', '/', '?', '(', ')' and ',' in a
    boundary; RFC 2045 then requires a quoted-string, or parsers cut it."""
    encoder = MultipartEncoder({"f": "v"}, boundary=boundary)
    assert encoder.content_type == f"multipart/form-data; boundary={shown}"


@pytest.mark.parametrize(
    "given",
    ["multipart/form-data; boundary=my-fixed-boundary",
     'multipart/form-data; boundary="my-fixed-boundary"'],
)
def test_a_callers_multipart_content_type_sets_the_boundary(given: str) -> None:
    """The caller's Content-Type was sent, but the body used a random
    boundary: the server found no part at all."""
    request = hyperhttp.Request(
        "POST", "http://h/", headers={"Content-Type": given},
        data={"user": "alice"}, files={"doc": ("d.txt", b"hi")},
    )
    assert request.headers["content-type"] == given
    assert isinstance(request.stream, MultipartEncoder)
    assert request.stream.boundary == "my-fixed-boundary"


def test_a_callers_multipart_content_type_without_boundary_gets_the_bodys() -> None:
    request = hyperhttp.Request(
        "POST", "http://h/", headers={"Content-Type": "multipart/form-data"},
        files={"doc": ("d.txt", b"hi")},
    )
    assert isinstance(request.stream, MultipartEncoder)
    assert request.headers["content-type"] == request.stream.content_type
