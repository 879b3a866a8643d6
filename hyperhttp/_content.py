"""Request bodies.

Every request carries a body object with one shape, whatever the caller
passed (`content=`, `data=`, `files=`, `json=`):

- `content_length`: exact size, or None when unknown (HTTP/1.1 then sends it
  chunked, HTTP/2 as plain DATA frames);
- `content_type`: the Content-Type the body implies, or None;
- `is_replayable`: whether it can be produced again from the start, which
  retries, 307/308 redirects and digest round trips need;
- `__aiter__()`: a fresh pass over the bytes. A second pass over a
  single-use body raises `StreamConsumed` instead of sending a short body.

`MultipartEncoder` (in `_multipart`) has the same shape.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec

from ._exceptions import StreamConsumed
from ._urls import encode_params


@runtime_checkable
class RequestBody(Protocol):
    @property
    def content_length(self) -> int | None: ...

    @property
    def content_type(self) -> str | None: ...

    @property
    def is_replayable(self) -> bool: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...


class BytesBody:
    """A body held in memory; replayable."""

    __slots__ = ("_content_type", "data")

    def __init__(self, data: bytes, content_type: str | None = None) -> None:
        self.data = data
        self._content_type = content_type

    @property
    def content_length(self) -> int:
        return len(self.data)

    @property
    def content_type(self) -> str | None:
        return self._content_type

    @property
    def is_replayable(self) -> bool:
        return True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.data:
            yield self.data

    def __repr__(self) -> str:
        return f"<BytesBody {len(self.data)} bytes>"


EMPTY_BODY = BytesBody(b"")


class IterableBody:
    """A body from a sync or async iterable of bytes; single use."""

    __slots__ = ("_consumed", "_iterable", "_length")

    def __init__(
        self, iterable: Iterable[bytes] | AsyncIterable[bytes], length: int | None = None
    ) -> None:
        self._iterable = iterable
        self._length = length
        self._consumed = False

    @property
    def content_length(self) -> int | None:
        return self._length

    @property
    def content_type(self) -> str | None:
        return None

    @property
    def is_replayable(self) -> bool:
        return False

    @property
    def has_started(self) -> bool:
        """True once a pass over the body has begun."""
        return self._consumed

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._consumed:
            raise StreamConsumed(
                "the request body is a single-use iterable that was already sent; "
                "pass bytes or a re-openable source to allow it to be sent again"
            )
        self._consumed = True
        it = self._iterable
        if isinstance(it, AsyncIterable):
            chunks = aiter(it)
            try:
                async for chunk in chunks:
                    yield _as_bytes(chunk)
            finally:
                # `async for` leaves an unfinished iterator open: the caller's
                # generator would run its `finally` only when collected.
                await close_body_iterator(chunks)
        else:
            for chunk in it:
                yield _as_bytes(chunk)

    def __repr__(self) -> str:
        return f"<IterableBody length={self._length}>"


def _as_bytes(chunk: Any) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, bytearray | memoryview):
        return bytes(chunk)
    if isinstance(chunk, str):
        # Refused rather than encoded: a file opened in text mode would go
        # out with its line endings and its encoding changed.
        raise TypeError(
            "request body chunks must be bytes, not str: encode the text, "
            "or open files in binary mode ('rb')"
        )
    raise TypeError(f"request body chunks must be bytes, not {type(chunk).__name__}")


_json_encoder = msgspec.json.Encoder()


def encode_request_body(
    *,
    content: Any = None,
    data: Any = None,
    files: Any = None,
    json: Any = None,
    content_type: str | None = None,
) -> RequestBody:
    """Build the body object for the arguments a caller gave.
    `content_type`: the caller's own Content-Type header, if any; a
    multipart one's `boundary=` is the one the body is built with."""
    if (content is not None) + (data is not None) + (files is not None) + (json is not None) > 1:
        _check_one_body(content, data, files, json)
    if content is not None:
        if isinstance(content, bytes):
            return BytesBody(content)
        if isinstance(content, str):
            return BytesBody(content.encode("utf-8"))
        if isinstance(content, bytearray | memoryview):
            return BytesBody(bytes(content))
        if isinstance(content, RequestBody):
            return content
        if isinstance(content, Mapping):
            # Iterating it would send its keys run together.
            raise TypeError(
                f"content= takes bytes, str or an iterable of bytes, not "
                f"{type(content).__name__}; use json= to send it as JSON, "
                f"or data= to send it as form fields"
            )
        if isinstance(content, AsyncIterable | Iterable):
            return IterableBody(content)
        raise TypeError(f"unsupported type for content=: {type(content).__name__}")
    if files:
        from ._multipart import build_multipart

        return build_multipart(data, files, boundary=multipart_boundary(content_type))
    if data is not None:
        if isinstance(data, bytes | str):
            raise TypeError("data= takes a mapping of form fields; use content= for raw bytes")
        if isinstance(data, Mapping | list | tuple):
            return BytesBody(
                encode_params(data).encode("ascii"), "application/x-www-form-urlencoded"
            )
        raise TypeError(f"unsupported type for data=: {type(data).__name__}")
    if json is not None:
        try:
            return BytesBody(_json_encoder.encode(json), "application/json")
        except (TypeError, msgspec.EncodeError) as exc:
            raise TypeError(f"json= value cannot be encoded as JSON: {exc}") from None
    return EMPTY_BODY


def _check_one_body(content: Any, data: Any, files: Any, json: Any) -> None:
    """Refuse a second body (it used to be dropped silently); `data=` with
    `files=` is the one pair allowed: a multipart form."""
    given = [name for name, value in (("content=", content), ("data=", data), ("json=", json))
             if value is not None]
    if len(given) > 1:
        raise TypeError(f"give only one of content=, data= and json= (got {' and '.join(given)})")
    if files is not None and given and given[0] != "data=":
        raise TypeError(
            f"files= sends a multipart form (with data= for its fields); "
            f"it cannot be combined with {given[0]}"
        )


_BOUNDARY_PARAM = re.compile(r';\s*boundary\s*=\s*(?:"([^"]*)"|([^;\s]+))', re.IGNORECASE)


def multipart_boundary(content_type: str | None) -> str | None:
    """The boundary a caller's multipart/form-data Content-Type names, if any:
    the body must use it, or the server reads no part at all."""
    if not content_type or not content_type.lower().lstrip().startswith("multipart/"):
        return None
    match = _BOUNDARY_PARAM.search(content_type)
    if match is None:
        return None
    return match.group(1) if match.group(1) is not None else match.group(2)


async def close_body_iterator(chunks: AsyncIterator[Any]) -> None:
    """Close a pass over a body now (files it opened are closed at once,
    not when the loop gets round to finalising an abandoned generator)."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
