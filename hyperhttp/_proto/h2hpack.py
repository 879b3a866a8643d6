"""HPACK header block decoding (RFC 7541), faster than hpack's for our use.

hpack's `Decoder.decode` spends most of its time on per-field machinery: a
memoryview slice and a method call per field, a generic integer decoder
call per integer, a Huffman decode per coded string, and a copy of every
field through `_unicode_if_needed`: about 30 us for a typical response
head. Servers such as nginx send every response field as a Huffman-coded
literal, so a block-level cache misses whenever a value (Date) changes, or
whenever the server really uses its dynamic table.

`FastDecoder.decode` decodes the same blocks in one loop over the bytes:

- integers that fit their prefix (nearly all) are read inline;
- Huffman strings are memoised process-wide, keyed by their coded bytes
  (servers repeat their values: Server, Content-Type, a Date per second);
- fields indexed in the static table are prebuilt `HeaderTuple` objects.

It keeps hpack's contract exactly: the same `HeaderTuple` /
`NeverIndexedHeaderTuple` list, the dynamic table changed only through
hpack's own `HeaderTable` (`add`, `get_by_index`, `maxsize`), the same
exception classes and messages (memoryview addresses aside) at the same
points (a failing block leaves the table as hpack would have left it), the header list size check after
each field, and `_assert_valid_table_size` at the end. One deliberate
difference: a block with more than two table size updates is refused
(RFC 7541 section 4.2), where hpack decodes any number of them. hpack's debug
logging is not repeated. If the hpack internals this relies on are missing
or behave differently, `decode` is hpack's own (checked once at import).

Nothing here touches a socket or the event loop.
"""

from __future__ import annotations

from typing import Any

from hpack import Decoder, HeaderTuple, NeverIndexedHeaderTuple
from hpack.exceptions import HPACKDecodingError, InvalidTableSizeError, OversizedHeaderListError

__all__ = ["FAST_HPACK", "FastDecoder"]

# Huffman-decoded strings by their coded bytes. Bounded, emptied when full;
# long strings, Set-Cookie values and fields the peer marked never-indexed
# are not kept (they are rarely repeated, and need not linger in memory).
_HUFFMAN_CACHE_SIZE = 2048
_HUFFMAN_MAX_KEY = 128
_huffman_memo: dict[bytes, bytes] = {}

# hpack's "too long" limit: the prefix octet and at most five more.
_VARINT_MAX_LENGTH = 5

_new_tuple = tuple.__new__


def _load_internals() -> tuple[Any, tuple[Any, ...]] | None:
    try:
        from hpack.huffman_table import decode_huffman
        from hpack.table import HeaderTable

        static = tuple(HeaderTable.STATIC_TABLE)
        if len(static) != 61 or HeaderTable.STATIC_TABLE_LENGTH != 61:
            return None
        if not all(
            callable(getattr(HeaderTable, name, None)) for name in ("add", "get_by_index")
        ) or not callable(getattr(Decoder, "_assert_valid_table_size", None)):
            return None
        return decode_huffman, static
    except Exception:  # any failure means: use hpack's own decoder
        return None


_internals = _load_internals()
_decode_huffman: Any = _internals[0] if _internals else None
# Index 0 is never valid; it is a placeholder so that field `i` is at [i].
_STATIC_FIELDS: tuple[HeaderTuple, ...] = (
    (HeaderTuple(b"", b""), *(HeaderTuple(n, v) for n, v in _internals[1])) if _internals else ()
)
_STATIC_NAMES: tuple[bytes, ...] = tuple(f[0] for f in _STATIC_FIELDS)


def _integer_error(data: bytes, start: int, literal: bool, message: str) -> HPACKDecodingError:
    # hpack names the rest of the block in its message: as bytes inside
    # literal fields, as a memoryview elsewhere.
    rest: object = data[start:] if literal else memoryview(data)[start:]
    return HPACKDecodingError(message.format(rest))


def _integer(data: bytes, start: int, limit: int, literal: bool) -> tuple[int, int]:
    """(value, position after it) of the integer whose prefix, all ones
    (`limit`), is at `start` (RFC 7541 5.1), with hpack's length limit."""
    number = limit
    pos = start + 1
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise _integer_error(
                data, start, literal, "Unable to decode HPACK integer representation from {!r}"
            )
        octet = data[pos]
        pos += 1
        number += (octet & 0x7F) << shift
        if octet < 0x80:
            return number, pos
        shift += 7
        if pos - start > _VARINT_MAX_LENGTH:
            raise _integer_error(
                data, start, literal, "Variable integer representation is too long: {!r}"
            )


def _string(data: bytes, pos: int, keep: bool) -> tuple[bytes, int]:
    """(the string literal at `pos`, position after it) (RFC 7541 5.2)."""
    if pos >= len(data):
        raise _integer_error(
            data, pos, True, "Unable to decode HPACK integer representation from {!r}"
        )
    octet = data[pos]
    length = octet & 0x7F
    if length == 0x7F:
        length, first = _integer(data, pos, 0x7F, True)
    else:
        first = pos + 1
    pos = first + length
    if pos > len(data):
        raise HPACKDecodingError("Truncated header block")
    text = data[first:pos]
    if octet & 0x80:
        decoded = _huffman_memo.get(text)
        return (_huffman_miss(text, keep) if decoded is None else decoded), pos
    return text, pos


def _huffman_miss(text: bytes, keep: bool) -> bytes:
    decoded: bytes = _decode_huffman(text)
    if keep and len(text) <= _HUFFMAN_MAX_KEY:
        if len(_huffman_memo) >= _HUFFMAN_CACHE_SIZE:
            _huffman_memo.clear()
        _huffman_memo[text] = decoded
    return decoded


class FastDecoder(Decoder):
    """hpack's `Decoder`, with a faster `decode` giving identical results."""

    def decode(self, data: bytes, raw: bool = False) -> Any:
        """The fields of an HPACK header block, as hpack's `Decoder.decode`
        gives them; raises hpack's `HPACKDecodingError` family as it does."""
        if not FAST_HPACK or type(data) is not bytes:
            return super().decode(data, raw)
        headers = self._decode_fields(data)
        self._assert_valid_table_size()
        if raw:
            return headers
        try:
            return [h.__class__(h[0].decode("utf-8"), h[1].decode("utf-8")) for h in headers]
        except UnicodeDecodeError as err:
            raise HPACKDecodingError("Unable to decode headers as UTF-8") from err

    def _decode_fields(self, data: bytes) -> list[HeaderTuple]:
        table = self.header_table
        memo = _huffman_memo
        limit = self.max_header_list_size
        headers: list[HeaderTuple] = []
        inflated = 0
        updates = 0  # table size updates so far
        pos = 0
        end = len(data)
        while pos < end:
            first = data[pos]
            if first & 0x80:  # indexed field (6.1)
                index = first & 0x7F
                if index == 0x7F:
                    index, pos = _integer(data, pos, 0x7F, False)
                else:
                    pos += 1
                if 0 < index <= 61:
                    header = _STATIC_FIELDS[index]
                else:
                    header = _new_tuple(HeaderTuple, table.get_by_index(index))
            elif first & 0x40 or not first & 0x20:  # a literal (6.2)
                mask = 0x3F if first & 0x40 else 0x0F
                index = first & mask
                if index:  # the name by index
                    if index == mask:
                        index, pos = _integer(data, pos, mask, True)
                    else:
                        pos += 1
                    name = _STATIC_NAMES[index] if index <= 61 else table.get_by_index(index)[0]
                else:
                    name, pos = _string(data, pos + 1, True)
                # The value, inline: every literal has one.
                if pos >= end:
                    raise _integer_error(
                        data, pos, True, "Unable to decode HPACK integer representation from {!r}"
                    )
                octet = data[pos]
                length = octet & 0x7F
                if length == 0x7F:
                    length, start = _integer(data, pos, 0x7F, True)
                else:
                    start = pos + 1
                pos = start + length
                if pos > end:
                    raise HPACKDecodingError("Truncated header block")
                value = data[start:pos]
                if octet & 0x80:
                    decoded = memo.get(value)
                    if decoded is None:
                        keep = (first & 0xF0) != 0x10 and name != b"set-cookie"
                        decoded = _huffman_miss(value, keep)
                    value = decoded
                if first & 0x40:  # with incremental indexing (6.2.1)
                    header = _new_tuple(HeaderTuple, (name, value))
                    table.add(name, value)
                elif first & 0x10:  # never indexed (6.2.3)
                    header = _new_tuple(NeverIndexedHeaderTuple, (name, value))
                else:  # without indexing (6.2.2)
                    header = _new_tuple(HeaderTuple, (name, value))
            else:  # dynamic table size update (6.3)
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                # RFC 7541 4.2: at most two (the smallest size, then the
                # last); hpack takes any number, each costing a loop turn.
                updates += 1
                if updates > 2:
                    raise HPACKDecodingError("More than two table size updates in one block")
                size = first & 0x1F
                if size == 0x1F:
                    size, pos = _integer(data, pos, 0x1F, False)
                else:
                    pos += 1
                if size > self.max_allowed_table_size:
                    raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                self.header_table_size = size
                continue
            headers.append(header)
            inflated += 32 + len(header[0]) + len(header[1])
            if inflated > limit:
                raise OversizedHeaderListError(
                    f"A header list larger than {limit} has been received"
                )
        return headers


def _agrees_with_hpack() -> bool:
    # A probe, once: RFC 7541 C.6.1 and C.6.2 (Huffman literals with
    # incremental indexing, then fields indexed in the dynamic table) and
    # a never-indexed literal with a literal name, decoded by both.
    if _internals is None:
        return False
    blocks = [
        bytes.fromhex(
            "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff"
            "6e919d29ad171863c78f0b97c8e9ae82ae43d3"
        ),
        bytes.fromhex("4883640effc1c0bf"),
        bytes.fromhex("1003616263036465660f2f00"),
    ]
    try:
        theirs, ours = Decoder(), FastDecoder()
        for block in blocks:
            expected = theirs.decode(block, raw=True)
            got = ours._decode_fields(block)
            if [(type(h), h) for h in expected] != [(type(h), h) for h in got]:
                return False
        return list(theirs.header_table.dynamic_entries) == list(ours.header_table.dynamic_entries)
    except Exception:  # any failure means: use hpack's own decoder
        return False


FAST_HPACK = _agrees_with_hpack()
