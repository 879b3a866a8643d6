"""The charsets a text body may be decoded with.

A charset is used for text only when `is_text_charset` accepts it: a
server names it, so one that would make decoding raise (unknown, not a
text codec, idna, punycode, undefined, Python's escape codecs) is refused
and the caller falls back to UTF-8. `text_decoder` reads utf-16 and utf-32
without a BOM in the machine's byte order, as `bytes.decode` does, where
Python's own incremental decoders raise.
"""

from __future__ import annotations

import codecs
import functools
import sys
from typing import Protocol

__all__ = ["TextDecoder", "is_text_charset", "text_decoder"]


class TextDecoder(Protocol):
    """What `text_decoder` returns (a `codecs.IncrementalDecoder` or alike)."""

    def decode(self, input: bytes, final: bool = False) -> str: ...


class _ByteOrderDecoder:
    """utf-16 or utf-32, incrementally: the byte order from a BOM (dropped),
    else the machine's. Python's incremental decoders raise on a stream
    without a BOM, whatever the error handler; `bytes.decode` does not."""

    __slots__ = ("_bits", "_head", "_inner")

    def __init__(self, bits: int) -> None:
        self._bits = bits
        self._head = b""
        self._inner: codecs.IncrementalDecoder | None = None

    def decode(self, input: bytes, final: bool = False) -> str:
        inner = self._inner
        if inner is None:
            data = self._head + input
            size = self._bits // 8
            if len(data) < size and not final:
                self._head = data
                return ""
            self._head = b""
            le, be = _BOMS[self._bits]
            order = "le" if sys.byteorder == "little" else "be"
            if data.startswith(le):
                order, data = "le", data[size:]
            elif data.startswith(be):
                order, data = "be", data[size:]
            factory = codecs.getincrementaldecoder(f"utf-{self._bits}-{order}")
            inner = self._inner = factory(errors="replace")
            input = data
        return inner.decode(input, final)


_BOMS = {
    16: (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE),
    32: (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE),
}
_BYTE_ORDER_CODECS = {"utf-16": 16, "utf-32": 32}
# Text codecs by Python's account, but Python source escapes, not charsets
# (and unicode-escape warns on some input).
_NOT_CHARSETS = frozenset({"unicode-escape", "raw-unicode-escape"})
_CHARSET_PROBE = bytes(range(256))


def text_decoder(encoding: str) -> TextDecoder:
    """An incremental decoder for `encoding` (one `is_text_charset`
    accepts) with invalid bytes replaced."""
    bits = _BYTE_ORDER_CODECS.get(codecs.lookup(encoding).name)
    if bits is not None:
        return _ByteOrderDecoder(bits)
    decoder: TextDecoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    return decoder


@functools.lru_cache(maxsize=64)
def is_text_charset(name: str) -> bool:
    """True when `name` is a text encoding that decodes any bytes, whole or
    incrementally, with errors="replace". Bounded cache: servers pick names."""
    try:
        info = codecs.lookup(name)
        if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
            return False  # base64, rot13, zlib...: bytes to bytes, or str to str
        _CHARSET_PROBE.decode(name, errors="replace")
        text_decoder(name).decode(_CHARSET_PROBE, final=True)
    except (LookupError, ValueError, TypeError):  # UnicodeError is a ValueError
        return False  # unknown; or idna, punycode, undefined: raise on some input
    return True
