"""Content-Encoding decoders: round trips, chunking, stacks, errors and bombs."""

from __future__ import annotations

import gzip
import random
import struct
import tracemalloc
import zlib

import brotli
import pytest
import zstandard

from hyperhttp import _decoders as decoders
from hyperhttp._decoders import ContentDecoder, IdentityDecoder, accept_encoding, make_decoder
from hyperhttp._exceptions import DecodingError

# Compressible and incompressible parts, so blocks of every kind appear.
PAYLOAD = random.Random(7).randbytes(20_000) + b"the quick brown fox " * 15_000


def _zlib(data: bytes, wbits: int) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": lambda d: _zlib(d, zlib.MAX_WBITS),
    "br": brotli.compress,
    "zstd": _zstd,
}


def drain(
    decoder: ContentDecoder, body: bytes, *, step: int, limit: int = -1
) -> tuple[bytes, int]:
    """Feed `body` in `step`-byte chunks the way a careful caller does;
    return the output and the largest single decode() result."""
    out: list[bytes] = []
    largest = 0
    for i in range(0, len(body), step):
        piece = decoder.decode(body[i : i + step], limit)
        for _ in range(1_000_000):
            out.append(piece)
            largest = max(largest, len(piece))
            if decoder.needs_input:
                break
            piece = decoder.decode(b"", limit)
        else:
            raise AssertionError("decoder never asked for input")
    out.append(decoder.flush())
    return b"".join(out), largest


# --- round trips ------------------------------------------------------------------

@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_round_trip_whole_body(coding: str) -> None:
    body = ENCODERS[coding](PAYLOAD)
    decoder = make_decoder(coding)
    assert decoder.decode(body) + decoder.flush() == PAYLOAD


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_round_trip_one_byte_at_a_time(coding: str) -> None:
    payload = PAYLOAD[:30_000]
    body = ENCODERS[coding](payload)
    decoder = make_decoder(coding)
    out = b"".join(decoder.decode(body[i : i + 1]) for i in range(len(body)))
    assert out + decoder.flush() == payload


@pytest.mark.parametrize("coding", sorted(ENCODERS))
@pytest.mark.parametrize(("step", "limit"), [(1, 97), (1000, 4096), (1 << 20, 1000)])
def test_bounded_output_round_trip(coding: str, step: int, limit: int) -> None:
    body = ENCODERS[coding](PAYLOAD)
    out, largest = drain(make_decoder(coding), body, step=step, limit=limit)
    assert out == PAYLOAD
    assert 0 < largest <= limit


@pytest.mark.parametrize("coding", [*sorted(ENCODERS), "gzip, br"])
def test_flush_after_partial_bounded_read_returns_the_rest(coding: str) -> None:
    body = brotli.compress(gzip.compress(PAYLOAD)) if coding == "gzip, br" else (
        ENCODERS[coding](PAYLOAD))
    d = make_decoder(coding)
    first = d.decode(body, 1000)
    assert len(first) == 1000
    assert not d.needs_input
    assert first + d.flush() == PAYLOAD


def test_coding_names_are_case_and_space_insensitive() -> None:
    decoder = make_decoder("  GZip ")
    assert decoder.decode(gzip.compress(b"abc")) + decoder.flush() == b"abc"


def test_deflate_raw_and_zlib_wrapped() -> None:
    raw = _zlib(PAYLOAD, -zlib.MAX_WBITS)
    wrapped = _zlib(PAYLOAD, zlib.MAX_WBITS)
    assert raw[:2] != wrapped[:2]
    for body in (raw, wrapped):
        d = make_decoder("deflate")
        assert d.decode(body) + d.flush() == PAYLOAD
        # the wrapper is detected even when the first chunk is one byte
        d = make_decoder("deflate")
        assert d.decode(body[:1]) == b""
        assert d.needs_input
        assert d.decode(body[1:]) + d.flush() == PAYLOAD


def test_gzip_multi_member() -> None:
    body = gzip.compress(b"first ") + gzip.compress(b"second")
    out, _ = drain(make_decoder("gzip"), body, step=1, limit=4)
    assert out == b"first second"


def test_gzip_trailing_garbage_ignored() -> None:
    d = make_decoder("gzip")
    assert d.decode(gzip.compress(b"body") + b"\x00\x00junk") + d.flush() == b"body"


TRAILERS = [b"junk", b"\r\n", bytes(16), b"\x1f", b"x" * 70_000]
WBITS = {"deflate": zlib.MAX_WBITS, "raw deflate": -zlib.MAX_WBITS, "gzip": 16 + zlib.MAX_WBITS}


@pytest.mark.parametrize(
    ("wrapper", "trailer"),
    [(w, t) for w in WBITS for t in TRAILERS]
    + [("deflate", b"\x1f\x8b"), ("raw deflate", b"\x1f\x8b")],  # gzip: a next member
    ids=lambda v: repr(v[:8]) if isinstance(v, bytes) else v,
)
def test_bytes_after_the_end_of_the_stream_are_ignored(wrapper: str, trailer: bytes) -> None:
    """deflate (zlib-wrapped or raw) ignores them as gzip does. They used to
    be held for ever with needs_input False, and every caller spun."""
    coding = "gzip" if wrapper == "gzip" else "deflate"
    body = _zlib(b"hello", WBITS[wrapper]) + trailer
    d = make_decoder(coding)
    assert d.decode(body, 65536) == b"hello"
    assert d.needs_input
    assert d.decode(b"more junk") == b""  # still nothing after the end
    assert d.needs_input
    assert d.flush() == b""
    for step in (1, 3):
        out, _ = drain(make_decoder(coding), body, step=step, limit=2)
        assert out == b"hello"


def test_trailing_bytes_inside_a_stack_do_not_spin() -> None:
    # "deflate, gzip": gzip undone first, then a deflate stream with a byte after it.
    body = gzip.compress(_zlib(b"hi", zlib.MAX_WBITS) + b"x")
    d = make_decoder("deflate, gzip")
    assert d.decode(body, 1 << 18) == b"hi"
    assert d.needs_input
    assert d.flush() == b""
    out, _ = drain(make_decoder("deflate, gzip"), body, step=1, limit=1)
    assert out == b"hi"


def test_zstd_multiple_and_skippable_frames() -> None:
    skippable = struct.pack("<II", 0x184D2A50, 5) + b"12345"
    body = _zstd(b"one,") + skippable + zstandard.ZstdCompressor().compress(b"two")
    for step in (1, 3, len(body)):
        out, _ = drain(make_decoder("zstd"), body, step=step, limit=2)
        assert out == b"one,two"


# --- stacks, identity, unknown ----------------------------------------------------

def test_stacked_codings_decode_in_reverse_order() -> None:
    # "gzip, br": gzip applied first, br last, so br is undone first.
    body = brotli.compress(gzip.compress(PAYLOAD))
    d = make_decoder("gzip, br")
    assert d.decode(body) + d.flush() == PAYLOAD
    out, largest = drain(make_decoder("gzip, br"), body, step=333, limit=1000)
    assert out == PAYLOAD and largest <= 1000
    # the other order must not decode it
    with pytest.raises(DecodingError):
        d = make_decoder("br, gzip")
        d.decode(body)
        d.flush()


def test_three_stacked_codings_byte_by_byte() -> None:
    payload = PAYLOAD[:20_000]
    body = gzip.compress(_zstd(_zlib(payload, zlib.MAX_WBITS)))
    out, largest = drain(make_decoder("deflate, zstd, gzip"), body, step=1, limit=512)
    assert out == payload and largest <= 512


def test_identity_is_a_shared_passthrough() -> None:
    for value in (None, "", "identity", " identity "):
        d = make_decoder(value)
        assert isinstance(d, IdentityDecoder)
        assert d.decode(b"abc") == b"abc"
        assert d.flush() == b""
        assert d.needs_input
    assert make_decoder(None) is make_decoder("identity")


def test_identity_inside_stack_is_skipped() -> None:
    d = make_decoder("identity, gzip")
    assert d.decode(gzip.compress(b"x")) + d.flush() == b"x"


def test_unknown_coding_passes_through() -> None:
    d = make_decoder("compress")
    assert d.decode(b"\x1f\x9d raw") + d.flush() == b"\x1f\x9d raw"


def test_stack_stops_at_unknown_coding() -> None:
    # gzip was applied under "foo": we cannot reach it, so nothing is decoded.
    d = make_decoder("gzip, foo")
    assert d.decode(b"opaque") + d.flush() == b"opaque"
    # foo under gzip: gzip is undone, the foo-coded bytes come out as they are.
    d = make_decoder("foo, gzip")
    assert d.decode(gzip.compress(b"foo-coded")) + d.flush() == b"foo-coded"


# --- errors -----------------------------------------------------------------------

@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_corrupt_body_raises_decoding_error_naming_the_coding(coding: str) -> None:
    d = make_decoder(coding)
    with pytest.raises(DecodingError, match=coding):
        d.decode(b"\x1f\x8b\x08\x00 this is not compressed at all, not one bit of it" * 4)
        d.flush()


def test_corrupt_gzip_crc_detected() -> None:
    body = bytearray(gzip.compress(b"payload" * 100))
    body[-6] ^= 0xFF  # inside the CRC32 trailer
    d = make_decoder("gzip")
    with pytest.raises(DecodingError, match="gzip"):
        d.decode(bytes(body))
        d.flush()


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_truncated_stream_raises_at_flush(coding: str) -> None:
    body = ENCODERS[coding](PAYLOAD)
    d = make_decoder(coding)
    d.decode(body[: len(body) - 5])
    with pytest.raises(DecodingError, match=coding):
        d.flush()


def test_truncated_gzip_header_raises_at_flush() -> None:
    d = make_decoder("gzip")
    assert d.decode(b"\x1f\x8b\x08") == b""
    with pytest.raises(DecodingError, match="gzip"):
        d.flush()


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd", "gzip, br"])
def test_empty_body_is_not_an_error(coding: str) -> None:
    # HEAD, 204 and 304 responses carry Content-Encoding with no body.
    d = make_decoder(coding)
    assert d.decode(b"") == b""
    assert d.flush() == b""


@pytest.mark.parametrize(
    ("coding", "package"), [("br", "brotli"), ("zstd", "zstd"), ("gzip, br", "brotli")]
)
def test_missing_package_fails_only_on_a_byte_of_body(
    monkeypatch: pytest.MonkeyPatch, coding: str, package: str
) -> None:
    """HEAD, 204 and 304 carry Content-Encoding with no body: without brotli
    or zstandard installed, make_decoder used to raise for them too."""
    monkeypatch.setattr(decoders, "_brotli", lambda: None)
    monkeypatch.setattr(decoders, "_zstandard", lambda: None)
    d = make_decoder(coding)
    assert d.decode(b"") == b""
    assert d.needs_input
    assert d.flush() == b""
    d = make_decoder(coding)
    with pytest.raises(DecodingError, match=rf"install hyperhttp\[{package}\]"):
        d.decode(b"\x0b\x02\x80hello\x03")  # never handed out as if it were the body
        d.flush()


def test_missing_package_under_another_coding(monkeypatch: pytest.MonkeyPatch) -> None:
    # "br, gzip": gzip undone first; what it yields is brotli, which cannot be decoded.
    monkeypatch.setattr(decoders, "_brotli", lambda: None)
    d = make_decoder("br, gzip")
    with pytest.raises(DecodingError, match="br: "):
        d.decode(gzip.compress(brotli.compress(b"hello")))
        d.flush()
    d = make_decoder("br, gzip")
    assert d.decode(gzip.compress(b"")) + d.flush() == b""  # nothing reached br


def test_decoding_error_is_a_hyperhttp_error() -> None:
    from hyperhttp._exceptions import HyperHTTPError

    assert issubclass(DecodingError, HyperHTTPError)


def test_accept_encoding_lists_what_can_be_decoded() -> None:
    value = accept_encoding()
    codings = [c.strip() for c in value.split(",")]
    assert codings == ["gzip", "deflate", "br", "zstd"]
    for coding in codings:
        d = make_decoder(coding)
        assert not isinstance(d, IdentityDecoder)


# --- decompression bombs ----------------------------------------------------------

GIB = 1 << 30


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """1 GiB of zeros, gzipped by streaming 1 MiB at a time (about 4.6 MB)."""
    c = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [c.compress(zeros) for _ in range(GIB >> 20)]
    parts.append(c.flush())
    return b"".join(parts)


def test_gzip_bomb_output_is_bounded_per_call(gzip_bomb: bytes) -> None:
    limit = 64 * 1024
    d = make_decoder("gzip")
    produced = 0
    fed = 0
    tracemalloc.start()
    try:
        # A caller with a 16 MiB budget, reading 64 KiB network chunks.
        while produced < 16 << 20:
            chunk = gzip_bomb[fed : fed + 65536]
            fed += len(chunk)
            out = d.decode(chunk, limit)
            for _ in range(100_000):
                assert len(out) <= limit
                assert out.count(0) == len(out)
                produced += len(out)
                if d.needs_input or produced >= 16 << 20:
                    break
                out = d.decode(b"", limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The caller stopped early: the rest of the gigabyte was never inflated,
    # and memory never held more than a few chunks.
    assert 16 << 20 <= produced < (16 << 20) + limit
    assert fed < len(gzip_bomb) // 8
    assert not d.needs_input  # the unread tail is still held, compressed
    assert peak < 4 << 20


def test_gzip_bomb_fully_drained_gives_one_gib(gzip_bomb: bytes) -> None:
    d = make_decoder("gzip")
    total = 0
    for i in range(0, len(gzip_bomb), 1 << 20):
        out = d.decode(gzip_bomb[i : i + (1 << 20)], 4 << 20)
        for _ in range(100_000):
            assert len(out) <= 4 << 20
            total += len(out)
            if d.needs_input:
                break
            out = d.decode(b"", 4 << 20)
    total += len(d.flush())
    assert total == GIB


@pytest.mark.parametrize("coding", ["zstd", "br", "gzip, br"])
def test_other_bombs_are_bounded(coding: str) -> None:
    # Zeros compressed 1 MiB at a time: zstd reaches ~32000:1, brotli more,
    # so one small input chunk stands for hundreds of MiB.
    zeros = bytes(1 << 20)
    mib = 64 if coding == "gzip, br" else 256
    if coding == "zstd":
        c = zstandard.ZstdCompressor().compressobj()
        body = b"".join([c.compress(zeros) for _ in range(mib)] + [c.flush()])
    else:
        if coding == "gzip, br":
            g = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            inner = b"".join([g.compress(zeros) for _ in range(mib)] + [g.flush()])
            body = brotli.compress(inner, quality=5)
        else:
            b = brotli.Compressor(quality=5)
            body = b"".join([b.process(zeros) for _ in range(mib)] + [b.finish()])
    assert len(body) < 1 << 20
    limit = 32 * 1024
    d = make_decoder(coding)
    out = d.decode(body, limit)  # the whole bomb in one chunk
    produced = 0
    for _ in range(200):
        assert 0 < len(out) <= limit
        produced += len(out)
        out = d.decode(b"", limit)
    assert not d.needs_input
    assert produced == 200 * limit
    # and draining the rest gives exactly the original size
    produced += len(out)
    for _ in range(100_000):
        if d.needs_input:
            break
        produced += len(d.decode(b"", 1 << 20))
    produced += len(d.flush())
    assert produced == mib << 20
