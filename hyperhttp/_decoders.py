"""Content-Encoding decoders: gzip, deflate, br, zstd, identity and stacks of them.

`make_decoder(header_value)` returns a `ContentDecoder`, fed the raw body
chunk by chunk:

    decoder = make_decoder(response.headers.get("content-encoding"))
    for raw in chunks:
        out = decoder.decode(raw, max_length=65536)
        while True:
            consume(out)                      # the caller counts and may stop here
            if decoder.needs_input:
                break
            out = decoder.decode(b"", max_length=65536)
    consume(decoder.flush())

With `max_length` each call returns at most that many bytes and keeps the
rest of its input to itself, so a decompression bomb (a small body that
inflates to gigabytes) never gets further than one `max_length` ahead of a
caller that stops reading. Without it (`max_length <= 0`, the default),
`decode()` returns everything the given input decodes to.

Decisions:
- Unknown codings pass through unchanged, as httpx does: the caller gets the
  bytes as sent. In a stack (`Content-Encoding: gzip, foo`) decoding stops at
  the last coding we do not know, since what lies under it cannot be decoded.
- `br` and `zstd` need the optional `brotli` and `zstandard` packages. When
  they are missing, the decoder raises `DecodingError` at the first byte of
  body rather than hand out compressed bytes as if they were the body (an
  empty body still decodes to nothing); `accept_encoding()` leaves them out,
  so only a misbehaving server sends them.
- `deflate` is accepted zlib-wrapped (RFC 9110) and raw (what some servers
  send); the first two bytes tell which.
- A stream that ends before its compressed end marker raises
  `DecodingError` from `flush()`; an empty body never does (HEAD, 204, 304
  carry Content-Encoding with no body). Bytes after the end of a gzip member
  start another member when they begin with the gzip magic, and are otherwise
  ignored, as browsers do; bytes after the end of a deflate stream (which has
  no members) are ignored the same way.
"""

from __future__ import annotations

import functools
import zlib
from typing import Any, Protocol

from ._exceptions import DecodingError

__all__ = ["ContentDecoder", "accept_encoding", "make_decoder"]

_GZIP_MAGIC = b"\x1f\x8b"


class ContentDecoder(Protocol):
    """What `make_decoder` returns."""

    def decode(self, data: bytes, max_length: int = -1) -> bytes:
        """Feed `data`; return decoded bytes, at most `max_length` if it is > 0."""

    @property
    def needs_input(self) -> bool:
        """True when all input given so far has been decoded and returned."""

    def flush(self) -> bytes:
        """End of input: return what is left; `DecodingError` if truncated."""


class IdentityDecoder:
    """No coding: bytes pass through untouched (and unbounded: they are not inflated)."""

    __slots__ = ()

    def decode(self, data: bytes, max_length: int = -1) -> bytes:
        return data

    @property
    def needs_input(self) -> bool:
        return True

    def flush(self) -> bytes:
        return b""

    def __repr__(self) -> str:
        return "<IdentityDecoder>"


class _ZlibDecoder:
    """gzip (multi-member) and deflate (zlib-wrapped or raw), on `zlib`.

    zlib honours `max_length` itself and hands back unconsumed input in
    `unconsumed_tail`, so output is bounded exactly.
    """

    __slots__ = ("_gzip", "_in", "_name", "_obj", "_seen", "_stalled")

    def __init__(self, name: str) -> None:
        self._name = name
        self._gzip = name != "deflate"
        self._in = b""
        self._seen = False
        self._stalled = False  # holding 1 byte that cannot progress without more
        # deflate picks its wrapper once the first two bytes are known.
        self._obj: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if self._gzip else None

    @property
    def needs_input(self) -> bool:
        return self._stalled or not self._in

    def decode(self, data: bytes, max_length: int = -1) -> bytes:
        if data:
            self._seen = True
            self._stalled = False
            self._in = self._in + data if self._in else data
        if not self._in:
            return b""
        try:
            return self._run(max_length if max_length > 0 else 0)
        except zlib.error as exc:
            self._in = b""
            raise DecodingError(f"{self._name}: corrupt compressed body ({exc})") from None

    def _run(self, limit: int) -> bytes:
        out: list[bytes] = []
        budget = limit
        while self._in:
            obj = self._obj
            if obj is None:
                if len(self._in) < 2:
                    self._stalled = True
                    break
                obj = self._obj = zlib.decompressobj(_deflate_wbits(self._in))
            elif obj.eof:
                if not self._next_member():
                    break
                obj = self._obj
            chunk = obj.decompress(self._in, budget)
            self._in = obj.unused_data if obj.eof else obj.unconsumed_tail
            if chunk:
                out.append(chunk)
                if limit:
                    budget -= len(chunk)
                    if budget <= 0:
                        break
            elif not obj.eof:
                self._stalled = bool(self._in)  # zlib wants more before it can go on
                break
        return out[0] if len(out) == 1 else b"".join(out)

    def _next_member(self) -> bool:
        """Bytes after the end of a stream: start the next gzip member, or
        drop them (trailing garbage or padding, and anything after deflate).
        Never leaves them held with nothing to do, or needs_input would stay
        False for ever."""
        if self._gzip:
            if self._in[:2] == _GZIP_MAGIC:
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
                return True
            if self._in == _GZIP_MAGIC[:1]:
                self._stalled = True  # perhaps the start of another member
                return False
        self._in = b""
        return False

    def flush(self) -> bytes:
        out = self.decode(b"") if self._in else b""
        obj = self._obj
        if obj is None:
            if self._seen:
                raise DecodingError(f"{self._name}: body truncated in the stream header")
            return out
        tail: bytes = obj.flush()
        if self._seen and not obj.eof:
            raise DecodingError(f"{self._name}: compressed body is truncated")
        self._in = b""
        return out + tail if tail else out

    def __repr__(self) -> str:
        return f"<{self._name} decoder pending={len(self._in)}>"


def _deflate_wbits(head: bytes) -> int:
    # A zlib header: CM=8 (deflate), CINFO<=7, and the 16-bit header a multiple of 31.
    cmf, flg = head[0], head[1]
    if cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0:
        return zlib.MAX_WBITS
    return -zlib.MAX_WBITS


class _BufferedDecoder:
    """Base for libraries whose calls can overshoot a limit: keeps the surplus
    output in `_out` and the not-yet-fed input in `_in`."""

    __slots__ = ("_errors", "_in", "_name", "_out", "_seen", "_stalled")

    def __init__(self, name: str, errors: tuple[type[BaseException], ...]) -> None:
        self._name = name
        self._errors = errors  # the library's own exception classes
        self._in = b""
        self._out = b""
        self._seen = False
        self._stalled = False  # input is held that cannot progress without more

    @property
    def needs_input(self) -> bool:
        return (self._stalled or not self._in) and not self._out and not self._has_more()

    def _has_more(self) -> bool:
        return False

    def decode(self, data: bytes, max_length: int = -1) -> bytes:
        if data:
            self._seen = True
            self._stalled = False
            self._in = self._in + data if self._in else data
        limit = max_length if max_length > 0 else 0
        if limit and len(self._out) >= limit:
            return self._take(limit)
        try:
            produced = self._step(limit - len(self._out) if limit else 0)
        except self._errors as exc:
            self._in = b""
            raise DecodingError(f"{self._name}: corrupt compressed body ({exc})") from None
        self._out = self._out + produced if self._out else produced
        return self._take(limit) if limit else self._take_all()

    def _take(self, limit: int) -> bytes:
        out, self._out = self._out[:limit], self._out[limit:]
        return out

    def _take_all(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def _step(self, limit: int) -> bytes:
        raise NotImplementedError

    def _is_complete(self) -> bool:
        raise NotImplementedError

    def flush(self) -> bytes:
        parts = [self._take_all()]
        for _ in range(1 << 20):  # bounded: each round consumes input or output
            if self.needs_input:
                break
            parts.append(self.decode(b""))
        if self._seen and not self._is_complete():
            raise DecodingError(f"{self._name}: compressed body is truncated")
        return b"".join(parts)

    def __repr__(self) -> str:
        return f"<{self._name} decoder pending={len(self._in)} buffered={len(self._out)}>"


class _UnavailableDecoder:
    """br or zstd without its package: an empty body (HEAD, 204, 304)
    decodes to nothing; the first byte of a real one is a `DecodingError`."""

    __slots__ = ("_message",)

    def __init__(self, message: str) -> None:
        self._message = message

    def decode(self, data: bytes, max_length: int = -1) -> bytes:
        if data:
            raise DecodingError(self._message)
        return b""

    @property
    def needs_input(self) -> bool:
        return True

    def flush(self) -> bytes:
        return b""

    def __repr__(self) -> str:
        return f"<unavailable decoder {self._message!r}>"


class _BrotliDecoder(_BufferedDecoder):
    """br via the `brotli` package; bounded by `output_buffer_limit` (brotli >= 1.2)."""

    __slots__ = ("_bounded", "_more", "_obj")

    def __init__(self, module: Any) -> None:
        super().__init__("br", (module.error,))
        self._obj = module.Decompressor()
        self._bounded = hasattr(self._obj, "can_accept_more_data")
        self._more = False

    def _has_more(self) -> bool:
        return self._more

    def _step(self, limit: int) -> bytes:
        obj = self._obj
        if not limit or not self._bounded:
            parts: list[bytes] = []
            if self._bounded and (self._more or not obj.can_accept_more_data()):
                parts.append(obj.process(b""))  # what a bounded call left inside
            data, self._in = self._in, b""
            if data:
                parts.append(obj.process(data))
            self._more = False
            return b"".join(parts)
        # While the decoder holds input of its own it must be called with b"".
        if self._in and obj.can_accept_more_data():
            data, self._in = self._in, b""
        else:
            data = b""
        out = bytes(obj.process(data, output_buffer_limit=limit))
        # Short of the limit means it stopped for want of input, not of room.
        self._more = len(out) >= limit or not obj.can_accept_more_data()
        return out

    def _is_complete(self) -> bool:
        return bool(self._obj.is_finished())


_ZSTD_MAGIC = 0xFD2FB528
_PHASE_FRAME, _PHASE_BLOCK, _PHASE_CHECKSUM = 0, 1, 2


class _ZstdDecoder(_BufferedDecoder):
    """zstd via `zstandard`, across frames (and skippable frames).

    zstandard's decompressobj has no output limit, so we read the frame
    structure (RFC 8878 section 3.1) ourselves and never feed it past the end
    of one block: one call then yields at most one block, 128 KiB, however
    well the block compresses (a zero-filled block is 4 bytes).
    """

    __slots__ = ("_checksum", "_factory", "_left", "_obj", "_phase", "_pos")

    def __init__(self, module: Any) -> None:
        super().__init__("zstd", (module.ZstdError,))
        self._factory = module.ZstdDecompressor()
        self._obj = self._factory.decompressobj()
        self._phase = _PHASE_FRAME
        self._checksum = False
        self._left = 0  # bytes of the current unit not yet fed
        self._pos = 0  # start of the unfed part of self._in

    def _step(self, limit: int) -> bytes:
        out: list[bytes] = []
        produced = 0
        while not limit or produced < limit:
            if not self._left:
                unit = self._next_unit()
                if unit is None:
                    self._stalled = bool(self._in)
                    break
                self._left = unit
            piece = self._in[self._pos : self._pos + self._left]
            if not piece:
                break
            self._pos += len(piece)
            self._left -= len(piece)
            chunk = self._feed(piece)
            if chunk:
                out.append(chunk)
                produced += len(chunk)
        if self._pos >= len(self._in):
            self._in = b""
            self._pos = 0
        return b"".join(out)

    def _next_unit(self) -> int | None:
        """Length of the next frame header, block, checksum or skippable
        frame at `_pos`; None until enough bytes have arrived to tell."""
        buf, pos = self._in, self._pos
        avail = len(buf) - pos
        if self._phase == _PHASE_BLOCK:
            if avail < 3:
                return None
            head = int.from_bytes(buf[pos : pos + 3], "little")
            if head & 1:  # last block of the frame
                self._phase = _PHASE_CHECKSUM if self._checksum else _PHASE_FRAME
            return 3 + (1 if (head >> 1) & 3 == 1 else head >> 3)  # an RLE block holds 1 byte
        if self._phase == _PHASE_CHECKSUM:
            self._phase = _PHASE_FRAME
            return 4
        if avail < 5:
            return None
        magic = int.from_bytes(buf[pos : pos + 4], "little")
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
            if avail < 8:
                return None
            return 8 + int.from_bytes(buf[pos + 4 : pos + 8], "little")
        if magic != _ZSTD_MAGIC:
            return avail  # not zstd: let the library say so
        desc = buf[pos + 4]
        single = (desc >> 5) & 1
        size_field = (single, 2, 4, 8)[desc >> 6]
        self._checksum = bool(desc & 4)
        self._phase = _PHASE_BLOCK
        return 5 + (1 - single) + (0, 1, 2, 4)[desc & 3] + size_field

    def _feed(self, piece: bytes) -> bytes:
        chunks: list[bytes] = []
        while piece:
            if self._obj.eof:
                self._obj = self._factory.decompressobj()
            chunks.append(self._obj.decompress(piece))
            piece = self._obj.unused_data if self._obj.eof else b""
        return b"".join(chunks)

    def _is_complete(self) -> bool:
        return self._phase == _PHASE_FRAME and not self._left and not self._in


class _StackedDecoder:
    """Several codings, `Content-Encoding: a, b` meaning b was applied last.

    `stages` are in decoding order. Each stage is pulled only when the one
    after it needs input, so no stage holds more than one `max_length` of
    its neighbour's output.
    """

    __slots__ = ("_in", "_stages")

    def __init__(self, stages: list[ContentDecoder]) -> None:
        self._stages = stages
        self._in = b""

    @property
    def needs_input(self) -> bool:
        return not self._in and all(s.needs_input for s in self._stages)

    def _pull(self, i: int, limit: int) -> bytes:
        stage = self._stages[i]
        if not stage.needs_input:
            return stage.decode(b"", limit)
        if i == 0:
            data, self._in = self._in, b""
        else:
            data = self._pull(i - 1, limit)
        return stage.decode(data, limit) if data else b""

    def decode(self, data: bytes, max_length: int = -1) -> bytes:
        if data:
            self._in = self._in + data if self._in else data
        limit = max_length if max_length > 0 else 0
        last = len(self._stages) - 1
        parts: list[bytes] = []
        produced = 0
        for _ in range(1 << 24):  # bounded: each round consumes input or yields output
            if self.needs_input or (limit and produced >= limit):
                break
            out = self._pull(last, limit - produced if limit else 0)
            parts.append(out)
            produced += len(out)
        return b"".join(parts)

    def flush(self) -> bytes:
        data = self.decode(b"")
        for i, stage in enumerate(self._stages):
            tail = stage.flush()
            for later in self._stages[i + 1 :]:
                tail = later.decode(tail) if tail else b""
            data += tail
        return data

    def __repr__(self) -> str:
        return f"<StackedDecoder {self._stages!r}>"


@functools.cache
def _brotli() -> Any:
    try:
        import brotli
    except ImportError:
        return None
    return brotli


@functools.cache
def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


_IDENTITY = IdentityDecoder()


def _one(coding: str) -> ContentDecoder | None:
    """A decoder for one coding; None when it is unknown (pass through)."""
    if coding in ("gzip", "x-gzip"):
        return _ZlibDecoder("gzip")
    if coding == "deflate":
        return _ZlibDecoder("deflate")
    if coding == "br":
        module = _brotli()
        if module is None:
            return _UnavailableDecoder("br: body is brotli-encoded; install hyperhttp[brotli]")
        return _BrotliDecoder(module)
    if coding == "zstd":
        module = _zstandard()
        if module is None:
            return _UnavailableDecoder("zstd: body is zstd-encoded; install hyperhttp[zstd]")
        return _ZstdDecoder(module)
    return None


def make_decoder(content_encoding: str | None) -> ContentDecoder:
    """The decoder for a Content-Encoding header value (None or "" for none).

    For br or zstd without their package, the decoder raises `DecodingError`
    when it is given a byte to decode.
    """
    if not content_encoding:
        return _IDENTITY
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    stages: list[ContentDecoder] = []
    for coding in reversed(codings):  # the last coding listed was applied last
        if not coding or coding == "identity":
            continue
        stage = _one(coding)
        if stage is None:
            break  # unknown: what lies beneath cannot be reached
        stages.append(stage)
    if not stages:
        return _IDENTITY
    if len(stages) == 1:
        return stages[0]
    return _StackedDecoder(stages)


@functools.cache
def accept_encoding() -> str:
    """The Accept-Encoding value the client sends: only codings it can decode."""
    codings = ["gzip", "deflate"]
    if _brotli() is not None:
        codings.append("br")
    if _zstandard() is not None:
        codings.append("zstd")
    return ", ".join(codings)
