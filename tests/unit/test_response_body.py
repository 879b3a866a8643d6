"""Response bodies read from memory or a stand-in stream (no network): lines,
charsets, JSON, Content-Encoding on `content=`, `aiter_raw` after a read,
and `max_size` against responses that have no body."""

from __future__ import annotations

import gzip
import itertools
import re
from collections.abc import Iterator

import pytest

import hyperhttp
from hyperhttp import Request, Response
from hyperhttp import _models as models
from tests.support.doubles import ChunkStream


async def lines_of(chunks: list[bytes]) -> list[str]:
    r = Response(200, stream=ChunkStream(chunks))
    return [line async for line in r.aiter_lines()]


# --- aiter_lines ---------------------------------------------------------------------

LINE_END = re.compile(r"\r\n|\r|\n")


class CountingLineEnd:
    """Stands in for the line-end pattern and counts the characters searched."""

    def __init__(self) -> None:
        self.searched = 0

    def finditer(self, text: str, pos: int = 0) -> Iterator[re.Match[str]]:
        self.searched += len(text) - pos
        return LINE_END.finditer(text, pos)


async def test_aiter_lines_searches_each_character_once(
    loop_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 20,000-character line in 1-byte chunks: searching the whole
    unfinished line again at every chunk was 200 million characters."""
    counter = CountingLineEnd()
    monkeypatch.setattr(models, "_LINE_END", counter)
    n = 20_000
    assert await lines_of([b"x"] * n + [b"\r", b"\n", b"y"]) == ["x" * n, "y"]
    assert n < counter.searched <= n + 3


def reference_lines(text: str) -> list[str]:
    lines = LINE_END.split(text)
    if lines[-1] == "":
        lines.pop()
    return lines


LINES_BODY = b"a\r\nb\rc\n\r\nd\r\r\n\ne\x85\xe2\x80\xa8\r"


async def test_aiter_lines_wherever_the_chunks_split(loop_name: str) -> None:
    """CRLF, LF or CR end a line; a CR and LF in two chunks are one ending."""
    expected = reference_lines(LINES_BODY.decode("utf-8", errors="replace"))
    assert expected == ["a", "b", "c", "", "d", "", "", "e\ufffd\u2028"]
    body = LINES_BODY
    assert await lines_of([body[i : i + 1] for i in range(len(body))]) == expected
    for i, j in itertools.combinations(range(1, len(body)), 2):
        assert await lines_of([body[:i], body[i:j], body[j:]]) == expected, (i, j)
    assert await lines_of([b"x\r", b"\n"]) == ["x"]
    assert await lines_of([b"\r", b"\r", b"\n", b"\n"]) == ["", "", ""]
    assert await lines_of([b"no ending"]) == ["no ending"]


# --- encoding and text ---------------------------------------------------------------

HOSTILE_CHARSETS = [
    "no-such-charset", "undefined", "idna", "punycode", "rot13", "base64", "hex",
    "zlib", "bz2", "uu", "quopri", "unicode_escape", "raw_unicode_escape",
]


@pytest.mark.parametrize("charset", HOSTILE_CHARSETS)
async def test_a_charset_that_cannot_decode_text_falls_back_to_utf8(
    loop_name: str, charset: str
) -> None:
    body = b"caf\xc3\xa9 \xff abc-\\x41"
    expected = body.decode("utf-8", errors="replace")
    headers = {"Content-Type": f"text/plain; charset={charset}"}
    r = Response(200, headers=headers, content=body)
    assert r.encoding == "utf-8"
    assert r.text == expected
    r = Response(200, headers=headers, stream=ChunkStream([body[:4], body[4:]]))
    assert "".join([t async for t in r.aiter_text()]) == expected


@pytest.mark.parametrize("charset", ["utf-16", "UTF-32"])
async def test_utf16_and_utf32_without_a_bom_stream_as_text_reads_them(
    loop_name: str, charset: str
) -> None:
    """Python's incremental utf-16 decoder raises on a stream with no BOM,
    whatever the error handler; `.text` read it in the machine's order."""
    body = "ab€".encode(charset.lower() + "-le")
    headers = {"Content-Type": f"text/plain; charset={charset}"}
    whole = Response(200, headers=headers, content=body)
    assert whole.encoding == charset.lower()
    r = Response(200, headers=headers, stream=ChunkStream([body[i : i + 1] for i in range(len(body))]))
    assert "".join([t async for t in r.aiter_text()]) == whole.text
    # With a BOM it sets the order and is not part of the text.
    body = "ab€".encode(charset.lower() + "-be")
    bom = b"\xfe\xff" if charset == "utf-16" else b"\x00\x00\xfe\xff"
    r = Response(200, headers=headers, stream=ChunkStream([bom[:1], bom[1:] + body]))
    assert "".join([t async for t in r.aiter_text()]) == "ab€"


# --- json ----------------------------------------------------------------------------

def test_json_that_is_not_utf8_is_a_decoding_error() -> None:
    r = Response(200, content=b'{"name": "caf\xe9"}')
    with pytest.raises(hyperhttp.DecodingError, match="not UTF-8"):
        r.json()


def test_json_may_start_with_a_utf8_bom() -> None:
    assert Response(200, content=b'\xef\xbb\xbf{"a": 1}').json() == {"a": 1}
    assert Response(200, content=b'\xef\xbb\xbf{"a": 1}').json(type=dict[str, int]) == {"a": 1}
    with pytest.raises(hyperhttp.DecodingError):
        Response(200, content=b"\xef\xbb\xbf").json()
    with pytest.raises(hyperhttp.DecodingError):  # only one BOM, only at the start
        Response(200, content=b'\xef\xbb\xbf\xef\xbb\xbf{"a": 1}').json()


# --- content= with a Content-Encoding ------------------------------------------------

PACKED = gzip.compress(b'{"hello": "world"}')


async def test_content_with_a_content_encoding_is_decoded(loop_name: str) -> None:
    r = Response(200, headers={"Content-Encoding": "gzip"}, content=PACKED)
    assert r.content == b'{"hello": "world"}'
    assert r.json() == {"hello": "world"}
    assert r.headers["content-length"] == str(len(PACKED))  # the length as sent
    assert [c async for c in r.aiter_bytes()] == [b'{"hello": "world"}']
    assert b"".join([c async for c in r.aiter_raw()]) == PACKED  # still compressed
    with pytest.raises(hyperhttp.DecodingError, match="gzip"):
        Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip at all")


async def test_mock_transport_response_is_decoded(loop_name: str) -> None:
    def handler(request: Request) -> Response:
        return Response(200, headers={"Content-Encoding": "gzip"}, content=PACKED)

    transport = hyperhttp.MockTransport(handler)
    async with hyperhttp.Client(transport=transport) as client:
        response = await client.get("http://example.test/")
    assert response.json() == {"hello": "world"}


# --- aiter_raw after the body was read -----------------------------------------------

async def test_aiter_raw_after_a_decoded_read_refuses(loop_name: str) -> None:
    """It gave the decoded body, which is not what aiter_raw promises."""
    r = Response(200, headers={"Content-Encoding": "gzip"}, stream=ChunkStream([PACKED]))
    assert await r.aread() == b'{"hello": "world"}'
    with pytest.raises(hyperhttp.StreamConsumed, match=r"Content-Encoding \(gzip\)"):
        [c async for c in r.aiter_raw()]
    assert r.content == b'{"hello": "world"}'  # what was read is still there


@pytest.mark.parametrize("coding", [None, "identity", "x-unknown"])
async def test_aiter_raw_after_a_read_with_nothing_decoded(loop_name: str, coding: str | None) -> None:
    headers = {"Content-Encoding": coding} if coding else {}
    r = Response(200, headers=headers, stream=ChunkStream([b"as ", b"sent"]))
    assert await r.aread() == b"as sent"
    assert [c async for c in r.aiter_raw()] == [b"as sent"]


# --- max_size and responses without a body -------------------------------------------

@pytest.mark.parametrize(
    ("method", "status", "too_large"),
    [("HEAD", 200, False), ("GET", 204, False), ("GET", 304, False), ("HEAD", 304, False),
     ("GET", 103, False), ("GET", 200, True), ("POST", 200, True)],
)
async def test_max_size_skips_the_declared_length_of_a_bodiless_response(
    loop_name: str, method: str, status: int, too_large: bool
) -> None:
    stream = ChunkStream([])
    r = Response(status, headers={"Content-Length": "1000000", "Content-Encoding": "gzip"},
                 stream=stream, request=Request(method, "http://h/"))
    r.max_size = 1000
    if too_large:
        with pytest.raises(hyperhttp.ResponseTooLarge):
            await r.aread()
    else:
        assert await r.aread() == b""
    assert stream.closed == 1
