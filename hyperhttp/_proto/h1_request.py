"""The request side of HTTP/1.1, sans-I/O: request heads and chunked bodies.

A client sends the same header fields with request after request (its
defaults, an API version, a user agent), to many targets. `field_block()`
checks such a set of fields once, works out the framing they declare and
serialises them once; each request then only adds its request line
(checked once per distinct method and target) and, when the fields declare
no framing, its Content-Length or Transfer-Encoding line. Both caches are bounded and
emptied when full, so one-off values (a request id per request) cost a
miss each, not memory: a miss checks only the fields not seen before.
Fields that carry credentials are never cached (see `_block_with_secrets`).

Every check here runs before a connection is taken, so a refused request
spends nothing and sends nothing.
"""

from __future__ import annotations

from typing import Final, final

from .._exceptions import LocalProtocolError
from .h1_fields import _MAX_CL_DIGITS, _SECRET_NAMES, _short
from .http11 import validate_fields, validate_request_line

__all__ = [
    "CHUNKED_END",
    "FieldBlock",
    "check_request_line",
    "encode_chunk",
    "field_block",
    "request_framing",
    "serialize_request_head",
]

_Field = tuple[str, str, str]  # (name as given, lower-case name, value)

CHUNKED_END: Final = b"0\r\n\r\n"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_UNDECLARED: Final = -1  # FieldBlock.declared: neither Content-Length nor Transfer-Encoding

_CACHE_MAX = 1024
_BLOCKS: dict[tuple[_Field, ...], FieldBlock] = {}
_VALID_FIELDS: set[_Field] = set()
_VALID_LINES: set[tuple[str, str]] = set()


def encode_chunk(data: bytes) -> list[bytes]:
    """One chunk of a chunked body, as pieces to write in order (the data
    itself is not copied). Empty data gives no pieces: an empty chunk would
    end the body, which is `CHUNKED_END`'s job."""
    if not data:
        return []
    return [b"%x\r\n" % len(data), data, b"\r\n"]


@final
class FieldBlock:
    """A request's header fields, checked and serialised.

    `lines` holds the field lines (Host first when the fields have one),
    each ending in CRLF; `declared` is the framing the fields declare: a
    Content-Length, None for chunked, or -1 for neither (the body's own
    length then decides, see `framing`)."""

    __slots__ = ("_closed", "declared", "has_host", "lines")

    def __init__(self, lines: bytes, declared: int | None, has_host: bool) -> None:
        self.lines = lines
        self.declared = declared
        self.has_host = has_host
        self._closed = lines + b"\r\n"

    def framing(self, body_length: int | None) -> int | None:
        """How a body of `body_length` bytes (None: unknown) goes on the
        wire with these fields: the exact number of bytes, or None for
        chunked."""
        declared = self.declared
        return body_length if declared == _UNDECLARED else declared

    def head(self, method: str, target: str, host: str | None, body_length: int | None) -> bytes:
        """The whole request head: request line, Host (the fields' own, else
        `host` if given), the fields, framing added the way `Request` does
        it when the fields declare none (chunked for an unknown length, the
        length when there is a body or for POST, PUT and PATCH)."""
        if self.has_host or host is None:
            line = f"{method} {target} HTTP/1.1\r\n"
        else:
            line = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"
        if self.declared != _UNDECLARED:
            return line.encode("latin-1") + self._closed
        if body_length is None:
            return line.encode("latin-1") + self.lines + b"Transfer-Encoding: chunked\r\n\r\n"
        if body_length or method in _BODY_METHODS:
            return line.encode("latin-1") + self.lines + b"Content-Length: %d\r\n\r\n" % body_length
        return line.encode("latin-1") + self._closed


def field_block(headers: list[_Field]) -> FieldBlock:
    """The checked, serialised form of `headers`; raises LocalProtocolError
    for a field that could be misread (see `validate_fields`) or framing
    h11 refused to send (see `request_framing`)."""
    key = tuple(headers)
    block = _BLOCKS.get(key)
    if block is None:
        if any(lower in _SECRET_NAMES for _, lower, _ in headers):
            return _block_with_secrets(headers)
        block = _new_block(headers)
        if len(_BLOCKS) >= _CACHE_MAX:
            _BLOCKS.clear()
        _BLOCKS[key] = block
    return block


def _block_with_secrets(headers: list[_Field]) -> FieldBlock:
    """A block for fields that carry credentials (Authorization, Cookie):
    the caches are process-wide, so these fields are checked and serialised
    for each request and go after the others, whose block is cached as
    usual. Fields of different names may come in any order (RFC 9110 5.3);
    those of one name keep theirs."""
    secret = [field for field in headers if field[1] in _SECRET_NAMES]
    validate_fields(secret)
    base = field_block([field for field in headers if field[1] not in _SECRET_NAMES])
    lines = "".join([f"{name}: {value}\r\n" for name, _, value in secret]).encode("latin-1")
    return FieldBlock(base.lines + lines, base.declared, base.has_host)


def _new_block(headers: list[_Field]) -> FieldBlock:
    known = _VALID_FIELDS
    fresh = [field for field in headers if field not in known]
    if fresh:
        validate_fields(fresh)
        if len(known) + len(fresh) > _CACHE_MAX:
            known.clear()
        known.update(fresh)
    framing = request_framing(headers, _UNDECLARED)
    hosts = [f"{n}: {v}\r\n" for n, lower, v in headers if lower == "host"]
    others = [f"{n}: {v}\r\n" for n, lower, v in headers if lower != "host"]
    return FieldBlock("".join(hosts + others).encode("latin-1"), framing, bool(hosts))


def check_request_line(method: str, target: str) -> None:
    """`validate_request_line`, once per distinct (method, target)."""
    if (method, target) not in _VALID_LINES:
        validate_request_line(method, target)
        if len(_VALID_LINES) >= _CACHE_MAX:
            _VALID_LINES.clear()
        _VALID_LINES.add((method, target))


def serialize_request_head(
    method: str,
    target: str,
    headers: list[_Field],
    *,
    body_length: int | None,
    host: str | None,
) -> bytes:
    """The request line and header section, as one bytes object.

    Host comes first: the one in `headers`, else `host` (if given). When
    `headers` declare neither Content-Length nor Transfer-Encoding, framing
    is added the way `Request` does it: chunked for an unknown length, the
    length when there is a body (or for POST, PUT and PATCH). The fields
    are checked as `field_block` checks them."""
    return field_block(headers).head(method, target, host, body_length)


def request_framing(headers: list[_Field], body_length: int | None) -> int | None:
    """How the body of a request with these headers goes on the wire, as
    `serialize_request_head` frames it: the exact number of bytes to send,
    or None for chunked. Raises LocalProtocolError where h11 refused to send:
    a Transfer-Encoding other than `chunked`, more than one, a malformed or
    conflicting Content-Length, more than one Host."""
    length: str | None = None
    chunked = False
    hosts = 0
    for _name, lower, value in headers:
        if lower == "host":
            hosts += 1
        elif lower == "transfer-encoding":
            if chunked or value.strip(" \t").lower() != "chunked":
                raise LocalProtocolError(
                    f"Transfer-Encoding {_short(value)} cannot be sent: only one, "
                    "and only 'chunked'"
                )
            chunked = True
        elif lower == "content-length":
            values = {v.strip(" \t") for v in value.split(",")}
            one = values.pop()
            if values or not (one.isdigit() and one.isascii()) or len(one) > _MAX_CL_DIGITS:
                raise LocalProtocolError(f"invalid Content-Length {_short(value)} in the request")
            if length is not None and length != one:
                raise LocalProtocolError("conflicting Content-Length values in the request")
            length = one
    if hosts > 1:
        raise LocalProtocolError("more than one Host field in the request")
    if chunked:
        return None
    if length is not None:
        return int(length)
    return body_length
