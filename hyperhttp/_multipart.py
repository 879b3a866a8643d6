"""Streaming multipart/form-data request bodies.

`MultipartEncoder` turns text fields and file parts into a request body that
the client sends with Content-Length framing whenever every part's size is
known, reading files from disk in `chunk_size` pieces off the event loop.

How a value is read
    In `MultipartEncoder(fields)` a `str` (and int, float, bool, None) is a
    *text field*. Files are given as `pathlib.Path`, `MultipartFile`, an open
    binary file, bytes-like content, an async iterable of bytes, or a tuple
    `(filename, content[, content_type[, headers]])`. In the client's
    `files=` (see `build_multipart`) a bare `str` is a *path*, as the user
    documentation's table says; inside a tuple or `MultipartFile` a `str`
    content is a path as well. Send text as a file's content by passing bytes.

Body protocol (what the client relies on)
    `content_length` (int, or None when some part's size is unknown),
    `content_type`, `is_replayable`, `__aiter__()` (each call is a fresh pass
    from the start; never yields an empty chunk) and `aclose()`. A second pass
    over a part that can be read once raises `StreamConsumed` before a byte of
    that pass is produced.

Boundary
    32 hex digits (128 random bits) from `secrets`, checked against every
    in-memory part. Streamed content is not scanned: it would have to contain
    `--` plus 128 bits it cannot know in advance, a chance of about 2**-128
    per byte offset. A caller who must be deterministic passes `boundary=`.

Purity
    No asyncio at module level. The async generators that read files import
    it locally: handing blocking reads to a worker thread is their job.
"""

from __future__ import annotations

import mimetypes
import os
import re
import secrets
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Mapping,
)
from contextlib import aclosing
from typing import Any, NamedTuple, TypeAlias

from ._exceptions import LocalProtocolError, StreamConsumed
from ._multipart_io import (
    SupportsRead,
    _AsyncSource,
    _changed_message,
    _check_path_sizes,
    _consumed_message,
    _content_source,
    _FileReader,
    _handle_source,
    _HandleSource,
    _Memory,
    _path_source,
    _PathSource,
    _read_runs,
    _Source,
    _stream_async,
)

__all__ = ["DEFAULT_CHUNK_SIZE", "MultipartEncoder", "MultipartFile", "build_multipart"]

DEFAULT_CHUNK_SIZE = 1024 * 1024
# File pieces read per thread hop when the writer takes runs (HTTP/1.1): two
# 1 MiB pieces per hop and per socket write cut the client's CPU per upload
# by about 15% against one (bench/UPLOADS.md), for one more MiB in flight.
_RUN = 2
_OCTET_STREAM = "application/octet-stream"

# The first guess_type() reads the system's mime.types files: do it at
# import, never on the event loop during a request.
mimetypes.init()


FileContent: TypeAlias = (
    "bytes | bytearray | memoryview | str | os.PathLike[str] | SupportsRead | AsyncIterable[bytes]"
)
# Values are typed loosely on purpose: mypy cannot infer a dict literal of
# mixed shapes against a precise union, and every shape is checked at runtime.
Fields: TypeAlias = "Mapping[str, Any] | Iterable[tuple[str, Any]]"


# --------------------------------------------------------------------------- parts

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BCHARS = re.compile(r"[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]\Z")
# The HTML multipart encoding algorithm percent-encodes '"', CR and LF. We
# also percent-encode the other control characters and '\': parsers disagree
# on whether '\' escapes inside a quoted string (some, like cgi's, miscount
# '\\"'), and with no backslash at all every parser reads exactly what we wrote.
_QUOTE = str.maketrans(
    {**{chr(c): f"%{c:02X}" for c in [*range(0x20), 0x7F]}, '"': "%22", "\\": "%5C"}
)


class _FileSpec(NamedTuple):
    """A part's content and headers, without its field name."""

    source: _Source
    filename: str | None
    content_type: str | None
    headers: tuple[tuple[str, str], ...]


def _file_spec(
    source: _Source,
    filename: str | None,
    content_type: str | None,
    headers: Mapping[str, str] | None,
) -> _FileSpec:
    """Validate a file part's headers, guessing its Content-Type if not given."""
    if filename is not None and not isinstance(filename, str):
        raise TypeError("a multipart filename must be a str or None")
    extra: list[tuple[str, str]] = []
    for key, value in (headers or {}).items():
        _check_header(key, value)
        lower = key.lower()
        if lower == "content-disposition":
            raise ValueError("Content-Disposition of a part is built from its name and filename")
        if lower == "content-type":
            content_type = value
        else:
            extra.append((key, value))
    if content_type is None:
        guessed = mimetypes.guess_type(filename)[0] if filename else None
        content_type = guessed or _OCTET_STREAM
    _check_header("Content-Type", content_type)
    return _FileSpec(source, filename, content_type, tuple(extra))


def _check_header(key: str, value: str) -> None:
    if not isinstance(key, str) or not _TOKEN.match(key):
        raise ValueError(f"invalid multipart part header name {key!r}")
    if not isinstance(value, str) or _BAD_VALUE.search(value):
        raise ValueError(f"invalid value for multipart part header {key!r}")


class MultipartFile:
    """One file part with full control over its content and headers.

    Give exactly one of `path` (streamed from disk, replayable), `file` (an
    open binary file, streamed from its current position, single-use) or
    `content` (bytes, bytearray, memoryview, a str or Path path, an open
    binary file, or an async iterable of bytes, which is single-use and of
    unknown size unless `size` is given). `filename` defaults to the path's
    or file's base name; `content_type` defaults to a guess from the
    filename, else `application/octet-stream`. `headers` adds part headers.
    """

    __slots__ = ("_spec",)

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        file: SupportsRead | None = None,
        content: FileContent | None = None,
        filename: str | None = None,
        size: int | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if sum(x is not None for x in (path, file, content)) != 1:
            raise TypeError("MultipartFile takes exactly one of path=, file= or content=")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ValueError("size must be a non-negative int")
        if path is not None:
            if not isinstance(path, str | os.PathLike):
                raise TypeError("path= must be a str or os.PathLike")
            source, default = _path_source(path, size)
        elif file is not None:
            source, default = _handle_source(file, size)
        else:
            source, default = _content_source(content, size)
        name = filename if filename is not None else default
        self._spec = _file_spec(source, name, content_type, headers)

    @property
    def filename(self) -> str | None:
        return self._spec.filename

    @property
    def content_type(self) -> str | None:
        return self._spec.content_type

    @property
    def size(self) -> int | None:
        return self._spec.source.size

    def __repr__(self) -> str:
        return f"<MultipartFile filename={self.filename!r} size={self.size}>"


class _Part(NamedTuple):
    name: str
    spec: _FileSpec

    @property
    def label(self) -> str:
        fn = self.spec.filename
        return f"{self.name!r}" + (f" (file {fn!r})" if fn is not None else "")

    def head(self, boundary: str) -> bytes:
        spec = self.spec
        disposition = f'Content-Disposition: form-data; name="{self.name.translate(_QUOTE)}"'
        if spec.filename is not None:
            disposition += f'; filename="{spec.filename.translate(_QUOTE)}"'
        lines = [f"--{boundary}", disposition]
        if spec.content_type is not None:
            lines.append(f"Content-Type: {spec.content_type}")
        lines.extend(f"{k}: {v}" for k, v in spec.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _text_part(name: str, value: object, *, allow_bytes: bool) -> _Part:
    if isinstance(value, str):
        data = value.encode("utf-8")
    elif isinstance(value, bool):
        data = b"true" if value else b"false"
    elif isinstance(value, int | float):
        data = str(value).encode("ascii")
    elif value is None:
        data = b""
    elif allow_bytes and isinstance(value, bytes):
        data = value
    else:
        raise TypeError(
            f"data= field {name!r} takes text (str, int, float, bool or None), not "
            f"{type(value).__name__}; pass files in files="
        )
    return _Part(name, _FileSpec(_Memory(data), None, None, ()))


def _file_part(name: str, value: object) -> _Part:
    if isinstance(value, MultipartFile):
        return _Part(name, value._spec)
    if isinstance(value, tuple):
        if not 2 <= len(value) <= 4:
            raise TypeError(
                "a multipart file tuple is (filename, content[, content_type[, headers]])"
            )
        filename, content = value[0], value[1]
        content_type = value[2] if len(value) > 2 else None
        headers = value[3] if len(value) > 3 else None
        source, _ = _content_source(content, None)
        return _Part(name, _file_spec(source, filename, content_type, headers))
    source, default = _content_source(value, None)
    return _Part(name, _file_spec(source, default, None, None))


def _pairs(fields: Any) -> Iterable[tuple[str, object]]:
    items = fields.items() if isinstance(fields, Mapping) else fields
    for item in items:
        if not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], str):
            raise TypeError("multipart fields are a mapping or a list of (str name, value) pairs")
        name, value = item
        for one in value if isinstance(value, list) else (value,):
            yield name, one


def _is_text(value: object) -> bool:
    return value is None or isinstance(value, str | int | float)


# --------------------------------------------------------------------------- encoder


class MultipartEncoder:
    """A streaming multipart/form-data request body.

    `fields` is a mapping or a list of `(name, value)` pairs; a list value
    repeats the name. A `str`, int, float, bool or None value is a text field;
    any other value is a file part (bytes-like, `pathlib.Path`, an open binary
    file, an async iterable of bytes, a `(filename, content[, content_type[,
    headers]])` tuple or a `MultipartFile`). Pass the encoder as `content=`;
    its `content_type` and `content_length` become the request headers.

    Path parts are opened when the body is sent and read `chunk_size` bytes at
    a time in a worker thread. If a path's size changed since the encoder was
    built, sending fails with `LocalProtocolError` rather than sending a body
    that disagrees with its Content-Length.
    """

    __slots__ = (
        "_boundary",
        "_chunk_size",
        "_content_length",
        "_nparts",
        "_paths",
        "_readers",
        "_segments",
        "_single_use",
    )

    def __init__(
        self, fields: Fields, *, boundary: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        parts = [
            _text_part(n, v, allow_bytes=False) if _is_text(v) else _file_part(n, v)
            for n, v in _pairs(fields)
        ]
        self._build(parts, boundary, chunk_size)

    @classmethod
    def _from_parts(
        cls, parts: list[_Part], boundary: str | None, chunk_size: int
    ) -> MultipartEncoder:
        self = cls.__new__(cls)
        self._build(parts, boundary, chunk_size)
        return self

    def _build(self, parts: list[_Part], boundary: str | None, chunk_size: int) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError("chunk_size must be a positive int")
        self._chunk_size = chunk_size
        self._nparts = len(parts)
        self._boundary = _choose_boundary(parts, boundary)
        self._readers: set[_FileReader] = set()
        pieces: list[bytes | tuple[str, _Source]] = []
        for part in parts:
            pieces.append(part.head(self._boundary))
            src = part.spec.source
            if isinstance(src, _Memory) and len(src.data) <= chunk_size:
                if src.size:
                    pieces.append(bytes(src.data))
            else:
                pieces.append((part.label, src))
            pieces.append(b"\r\n")
        pieces.append(f"--{self._boundary}--\r\n".encode("ascii"))
        self._segments = _coalesce(pieces, chunk_size)
        streams = [s for s in self._segments if isinstance(s, tuple)]
        self._single_use = [(lbl, src) for lbl, src in streams if not src.replayable]
        self._paths = [
            (lbl, src) for lbl, src in streams if isinstance(src, _PathSource) and src.replayable
        ]
        sizes = [len(s) if isinstance(s, bytes) else s[1].size for s in self._segments]
        self._content_length = None if None in sizes else sum(s for s in sizes if s is not None)

    @property
    def boundary(self) -> str:
        return self._boundary

    @property
    def content_type(self) -> str:
        boundary = self._boundary
        if _TOKEN.match(boundary) is None:  # not a token: needs quotes
            # RFC 2045 5.1: a value with a space or a tspecial (':', '=',
            # '/', '?', ...), all of which RFC 2046 allows in a boundary,
            # must be a quoted-string; unquoted, parsers cut it short.
            boundary = f'"{boundary}"'
        return f"multipart/form-data; boundary={boundary}"

    @property
    def content_length(self) -> int | None:
        """Exact body size, or None if some part's size is unknown (chunked)."""
        return self._content_length

    @property
    def is_replayable(self) -> bool:
        """True when every part can be read again (no open handles or async iterables)."""
        return not self._single_use

    @property
    def has_started(self) -> bool:
        """True once a single-use part has been read, so the whole body can
        no longer be produced again (a retry may still send it if not)."""
        return any(src.used for _, src in self._single_use)

    def __repr__(self) -> str:
        return f"<MultipartEncoder parts={self._nparts} content_length={self._content_length}>"

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Start a fresh pass over the body."""
        self._check_unconsumed()
        return self._iterate()

    def _aiter_runs(self) -> AsyncIterator[list[bytes]]:
        """A fresh pass as runs of pieces, for a writer that hands a whole
        run to the socket in one call (HTTP/1.1). Files are read `_RUN`
        pieces per thread hop; each piece is still at most `chunk_size`."""
        self._check_unconsumed()
        return self._runs(_RUN)

    async def aclose(self) -> None:
        """Close the files this encoder opened for passes still in flight."""
        for reader in list(self._readers):
            reader.close()
        self._readers.clear()

    def _check_unconsumed(self) -> None:
        for label, src in self._single_use:
            if src.used:
                raise StreamConsumed(_consumed_message(label, src))

    def _claim(self, label: str, src: _Source) -> None:
        if not src.replayable:
            if src.used:
                raise StreamConsumed(_consumed_message(label, src))
            src.used = True

    async def _iterate(self) -> AsyncGenerator[bytes, None]:
        async with aclosing(self._runs(1)) as runs:
            async for run in runs:
                run.reverse()
                while run:
                    chunk = run.pop()
                    yield chunk
                    del chunk  # hold no chunk while the next one is read

    async def _runs(self, per_run: int) -> AsyncGenerator[list[bytes], None]:
        import asyncio  # reading files off the loop is this module's job

        self._check_unconsumed()
        if self._paths:
            await asyncio.to_thread(_check_path_sizes, self._paths)
        for segment in self._segments:
            if isinstance(segment, bytes):
                yield [segment]
                continue
            label, src = segment
            if isinstance(src, _Memory):
                view, step = memoryview(src.data), self._chunk_size
                for i in range(0, len(view), step):
                    yield [bytes(view[i : i + step])]
                continue
            self._claim(label, src)
            async with aclosing(self._stream(label, src, per_run)) as runs:
                async for run in runs:
                    yield run
                    del run  # hold no piece while the next run is read

    def _stream(
        self, label: str, src: _Source, per_run: int
    ) -> AsyncGenerator[list[bytes], None]:
        if isinstance(src, _PathSource):
            return self._stream_path(label, src, per_run)
        if isinstance(src, _HandleSource):
            return _read_runs(
                src.fh.read, src.threaded, src.size, self._chunk_size, label, per_run
            )
        assert isinstance(src, _AsyncSource)
        return _stream_async(src, label)

    async def _stream_path(
        self, label: str, src: _PathSource, per_run: int
    ) -> AsyncGenerator[list[bytes], None]:
        import asyncio

        reader = _FileReader(src.path)
        self._readers.add(reader)
        try:
            size_now = await asyncio.to_thread(reader.open)
            if src.replayable and size_now != src.size:
                raise LocalProtocolError(_changed_message(label, src, size_now))
            async with aclosing(
                _read_runs(reader.read, True, src.size, self._chunk_size, label, per_run)
            ) as runs:
                async for run in runs:
                    yield run
                    del run
        finally:
            self._readers.discard(reader)
            reader.close()


def _choose_boundary(parts: list[_Part], boundary: str | None) -> str:
    in_memory = [p.spec.source.data for p in parts if isinstance(p.spec.source, _Memory)]

    def collides(candidate: str) -> bool:
        needle = re.compile(re.escape(b"--" + candidate.encode("ascii")))
        return any(needle.search(data) for data in in_memory)

    if boundary is not None:
        if not isinstance(boundary, str) or not _BCHARS.match(boundary):
            raise ValueError("boundary must be 1-70 RFC 2046 characters, not ending in a space")
        if collides(boundary):
            raise ValueError("the boundary occurs in the content of a part")
        return boundary
    for _ in range(8):
        candidate = secrets.token_hex(16)
        if not collides(candidate):
            return candidate
    raise RuntimeError("could not find a multipart boundary absent from the content")


def _coalesce(
    pieces: list[bytes | tuple[str, _Source]], chunk_size: int
) -> list[bytes | tuple[str, _Source]]:
    """Join adjacent small byte pieces into blocks of up to `chunk_size`."""
    out: list[bytes | tuple[str, _Source]] = []
    buf: list[bytes] = []
    buflen = 0
    for piece in pieces:
        if isinstance(piece, bytes):
            if buf and buflen + len(piece) > chunk_size:
                out.append(b"".join(buf))
                buf, buflen = [], 0
            buf.append(piece)
            buflen += len(piece)
        else:
            if buf:
                out.append(b"".join(buf))
                buf, buflen = [], 0
            out.append(piece)
    if buf:
        out.append(b"".join(buf))
    return out


def build_multipart(
    data: Fields | None,
    files: Fields,
    *,
    boundary: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> MultipartEncoder:
    """Merge the client's `data=` and `files=` into one multipart body.

    Text fields come first, then files, each in the order given; a list value
    repeats the name. In `data=` a value is text (str, int, float, bool, None,
    or raw bytes); in `files=` a bare `str` is a path (see `MultipartEncoder`
    for the other file shapes).
    """
    parts = [_text_part(n, v, allow_bytes=True) for n, v in _pairs(data or {})]
    parts.extend(_file_part(n, v) for n, v in _pairs(files))
    return MultipartEncoder._from_parts(parts, boundary, chunk_size)
