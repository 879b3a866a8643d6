"""Request and Response.

A `Response` from a transport carries a `ResponseStream`: an async iterable
of raw body bytes whose `aclose()` gives the connection back (or closes it
when the body was not read to the end). Reading the body through any of the
`aiter_*` methods or `aread()` ends by closing the stream, so a connection
is released exactly once however the body was consumed.
"""

from __future__ import annotations

import codecs
import datetime
import re
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import msgspec

from ._charsets import is_text_charset, text_decoder
from ._content import (
    EMPTY_BODY,
    BytesBody,
    RequestBody,
    encode_request_body,
    multipart_boundary,
)
from ._decoders import IdentityDecoder, make_decoder
from ._exceptions import (
    DecodingError,
    HTTPStatusError,
    ResponseTooLarge,
    StreamConsumed,
)
from ._headers import Headers, HeaderTypes
from ._urls import URL, QueryParams

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


_LINE_END = re.compile(r"\r\n|\r|\n")
_UTF8_BOM = codecs.BOM_UTF8
_CLOSED_UNREAD = (
    "the response was closed before its body was read (read a streamed body "
    "inside its `async with client.stream(...)` block)"
)


class ResponseStream(Protocol):
    """A response body as a transport delivers it. A stream may also offer
    `async read_all() -> bytes` (the whole body in one call, no iterator),
    `read_now() -> bytes | None` (the whole body if it is already received,
    else None with nothing consumed) and `close_now()` (`aclose` without
    awaiting); `Response.aread()` uses them when present."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Request:
    """An HTTP request: method, URL, headers and a body."""

    __slots__ = ("__dict__", "extensions", "headers", "method", "stream", "url")

    def __init__(
        self,
        method: str,
        url: URL | str,
        *,
        headers: HeaderTypes | None = None,
        content: Any = None,
        data: Any = None,
        files: Any = None,
        json: Any = None,
        params: QueryParams | None = None,
        stream: RequestBody | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        self.method = method.upper() if isinstance(method, str) else method
        self.url = url if isinstance(url, URL) and not params else URL(url, params=params)
        self.headers = Headers(headers)
        self.extensions: dict[str, Any] = extensions if extensions is not None else {}
        if stream is None:
            stream = encode_request_body(
                content=content, data=data, files=files, json=json,
                content_type=self.headers.get("content-type") if files else None,
            )
        self.stream: RequestBody = stream
        self._set_body_headers()

    @classmethod
    def _build(
        cls,
        method: str,
        url: URL,
        headers: Headers,
        stream: RequestBody,
        extensions: dict[str, Any],
    ) -> Request:
        """A request from parts the Client made for it alone: `headers` and
        `extensions` are adopted, not copied; `method` is upper case."""
        self = cls.__new__(cls)
        self.method = method
        self.url = url
        self.headers = headers
        self.extensions = extensions
        self.stream = stream
        if stream is not EMPTY_BODY or method in _BODY_METHODS:
            self._set_body_headers()
        # else: no body, no Content-Type, and a method that does not need
        # `Content-Length: 0`: nothing to add.
        return self

    def _set_body_headers(self) -> None:
        body = self.stream
        headers = self.headers
        if body.content_type is not None:
            given = headers.get("content-type")
            if given is None or (
                # A caller's multipart type without the boundary the body was
                # built with cannot be parsed: the body's own goes instead.
                given.lower().lstrip().startswith("multipart/")
                and body.content_type.startswith("multipart/")
                and multipart_boundary(given) is None
            ):
                headers["Content-Type"] = body.content_type
        length = body.content_length
        if "content-length" in headers or "transfer-encoding" in headers:
            return
        if length is None:
            headers["Transfer-Encoding"] = "chunked"
        elif length or self.method in _BODY_METHODS:
            headers["Content-Length"] = str(length)

    def replace_body(self, stream: RequestBody | bytes) -> None:
        """Swap the body (used by hooks and auth); body headers follow."""
        if isinstance(stream, bytes):
            stream = BytesBody(stream)
        self.stream = stream
        for name in ("content-length", "transfer-encoding"):
            if name in self.headers:
                del self.headers[name]
        self._set_body_headers()

    @property
    def content(self) -> bytes:
        """The body, when it is held in memory."""
        if isinstance(self.stream, BytesBody):
            return self.stream.data
        raise StreamConsumed("the request body is streamed; it is not held in memory")

    def __repr__(self) -> str:
        return f"<Request({self.method!r}, {self.url.redacted()!r})>"


_DECODE_SLICE = 256 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_NO_BODY_STATUSES = frozenset({204, 304})


def _decode_body(content_encoding: str, data: bytes) -> bytes:
    """A whole body given in memory, decoded from its Content-Encoding."""
    decoder = make_decoder(content_encoding)
    try:
        return decoder.decode(data) + decoder.flush()
    except DecodingError as exc:
        raise DecodingError(f"response body: {exc}") from None


class _ByteStream:
    """A response stream over bytes already in memory."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.data:
            yield self.data

    async def aclose(self) -> None:
        return None


class Response:
    """An HTTP response.

    Responses from `Client.get()` and the other verbs have their body read
    already; those from `Client.stream()` are read with the `aiter_*`
    methods or `aread()`.
    """

    # Defaults shared by every instance until one is assigned: a response
    # off the wire sets only what it has (see `_from_wire`).
    max_size: int | None = None
    is_closed = False
    is_stream_consumed = False
    _content: bytes | None = None
    _text: str | None = None
    _ended: float | None = None
    _history: list[Response] | None = None
    _trailers: Headers | None = None
    _extensions: dict[str, Any] | None = None

    def __init__(
        self,
        status_code: int,
        *,
        headers: HeaderTypes | None = None,
        content: bytes | str | None = None,
        text: str | None = None,
        json: Any = None,
        stream: ResponseStream | None = None,
        request: Request | None = None,
        http_version: str = "HTTP/1.1",
        reason_phrase: str = "",
        extensions: dict[str, Any] | None = None,
    ) -> None:
        self.status_code = status_code
        self.headers = Headers(headers)
        self.http_version = http_version
        self.reason_phrase = reason_phrase
        if extensions is not None:
            self._extensions = extensions
        self._request = request
        self._started = time.perf_counter()
        if stream is None:
            body = b""
            if content is not None:
                body = content.encode("utf-8") if isinstance(content, str) else content
            elif text is not None:
                body = text.encode("utf-8")
                self.headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            elif json is not None:
                body = msgspec.json.encode(json)
                self.headers.setdefault("Content-Type", "application/json")
            if body and "content-length" not in self.headers:
                self.headers["Content-Length"] = str(len(body))
            stream = _ByteStream(body)
            if content is not None and body:
                # `content=` is the body as it would come over the wire.
                coding = self.headers.get("content-encoding")
                if coding:
                    body = _decode_body(coding, body)
            self._content = body
        self.stream: ResponseStream = stream

    @classmethod
    def _from_wire(
        cls,
        status_code: int,
        headers: Headers,
        stream: ResponseStream,
        request: Request | None,
        http_version: str,
        reason_phrase: str,
    ) -> Response:
        """A response as a transport builds it: `headers` is adopted, not
        copied (the transport made it for this response alone)."""
        self = cls.__new__(cls)
        self.status_code = status_code
        self.headers = headers
        self.http_version = http_version
        self.reason_phrase = reason_phrase
        self._request = request
        self._started = time.perf_counter()
        self.stream = stream
        return self

    @property
    def extensions(self) -> dict[str, Any]:
        ext = self._extensions
        if ext is None:
            ext = self._extensions = {}
        return ext

    @extensions.setter
    def extensions(self, value: dict[str, Any]) -> None:
        self._extensions = value

    @property
    def history(self) -> list[Response]:
        """The redirect responses that led here, oldest first."""
        history = self._history
        if history is None:
            history = self._history = []
        return history

    @history.setter
    def history(self, value: list[Response]) -> None:
        self._history = value

    @property
    def trailers(self) -> Headers:
        """Trailer fields of a chunked (HTTP/1.1) or HTTP/2 body, once read."""
        trailers = self._trailers
        if trailers is None:
            trailers = self._trailers = Headers()
        return trailers

    @trailers.setter
    def trailers(self, value: Headers) -> None:
        self._trailers = value

    # --- metadata --------------------------------------------------------
    @property
    def request(self) -> Request:
        if self._request is None:
            raise RuntimeError("this response has no request attached")
        return self._request

    @request.setter
    def request(self, value: Request) -> None:
        self._request = value

    @property
    def url(self) -> URL:
        return self.request.url

    @property
    def elapsed(self) -> datetime.timedelta:
        """Time from sending the request until the body was read (or now)."""
        ended = self._ended
        if ended is None:
            ended = time.perf_counter()
        return datetime.timedelta(seconds=ended - self._started)

    @property
    def is_informational(self) -> bool:
        return 100 <= self.status_code < 200

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def is_redirect(self) -> bool:
        return self.status_code in _REDIRECT_STATUSES and "location" in self.headers

    @property
    def is_client_error(self) -> bool:
        return 400 <= self.status_code < 500

    @property
    def is_server_error(self) -> bool:
        return 500 <= self.status_code < 600

    @property
    def is_error(self) -> bool:
        return 400 <= self.status_code < 600

    def raise_for_status(self) -> Response:
        """Raise `HTTPStatusError` for a 4xx or 5xx response; else return it."""
        if not self.is_error:
            return self
        kind = "Client error" if self.status_code < 500 else "Server error"
        where = self.request.url.redacted() if self._request is not None else "?"
        raise HTTPStatusError(
            f"{kind} '{self.status_code} {self.reason_phrase}' for url '{where}'",
            request=self.request,
            response=self,
        )

    # --- body ------------------------------------------------------------
    @property
    def content(self) -> bytes:
        if self._content is None:
            raise StreamConsumed(
                "the response body has not been read; call 'await response.aread()' first"
            )
        return self._content

    @property
    def encoding(self) -> str:
        """The charset from Content-Type if it is a text encoding Python
        knows, else utf-8."""
        ctype = self.headers.get("content-type", "") or ""
        for param in ctype.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "charset" and value:
                charset = value.strip().strip('"').lower()
                return charset if is_text_charset(charset) else "utf-8"
        return "utf-8"

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.content.decode(self.encoding, errors="replace")
        return self._text

    def json(self, **kwargs: Any) -> Any:
        content = self.content
        # RFC 8259 section 8.1: a parser may ignore a leading BOM.
        body = memoryview(content)[3:] if content.startswith(_UTF8_BOM) else content
        try:
            return msgspec.json.decode(body, **kwargs)
        except msgspec.DecodeError as exc:
            raise DecodingError(f"response body is not valid JSON: {exc}") from None
        except UnicodeDecodeError as exc:  # a string that is not UTF-8
            raise DecodingError(f"response body is not valid JSON (not UTF-8): {exc}") from None

    def _read_now(self) -> bytes | None:
        """The whole body, taken without waiting, if the transport already
        holds all of it (a small body that came with the head); else None,
        nothing taken."""
        if self._content is not None:
            return self._content
        if self.is_stream_consumed or self.max_size is not None:
            return None
        stream = self.stream
        read_now = getattr(stream, "read_now", None)
        close_now = getattr(stream, "close_now", None)
        if read_now is None or close_now is None or "content-encoding" in self.headers:
            return None
        got: bytes | None = read_now()
        if got is None:
            return None
        self.is_stream_consumed = self.is_closed = True
        self._ended = time.perf_counter()
        close_now()
        self._content = got
        return got

    async def aread(self) -> bytes:
        """Read and return the whole body; safe to call again."""
        content = self._read_now()  # the body read already, or there whole
        if content is not None:
            return content
        if self.is_closed and not self.is_stream_consumed:
            raise StreamConsumed(_CLOSED_UNREAD)
        if (
            not self.is_stream_consumed
            and self.max_size is None
            and "content-encoding" not in self.headers
        ):
            # The common case, without the generator layers of aiter_bytes;
            # a transport's stream may read the whole body in one call.
            self.is_stream_consumed = True
            stream = self.stream
            try:
                if (read_all := getattr(stream, "read_all", None)) is not None:
                    content = await read_all()
                else:
                    chunks = [chunk async for chunk in stream]
                    content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            finally:
                if not self.is_closed:
                    self.is_closed = True
                    self._ended = time.perf_counter()
                    close_now = getattr(stream, "close_now", None)
                    if close_now is not None:
                        close_now()
                    else:
                        await stream.aclose()
            self._content = content
            return content
        chunks = [chunk async for chunk in self.aiter_bytes()]
        content = self._content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return content

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it came over the wire (no content decoding).
        `StreamConsumed` once a compressed body was read and decoded."""
        if self._content is not None:
            yield self._raw_content()
            return
        if self.is_stream_consumed:
            raise StreamConsumed("the response body was already read as a stream")
        if self.is_closed:
            raise StreamConsumed(_CLOSED_UNREAD)
        self.is_stream_consumed = True
        limit = self.max_size
        if limit is not None:
            declared = self.headers.get("content-length")
            if (
                declared is not None
                and declared.isdigit()
                and int(declared) > limit
                and self._may_have_body()
            ):
                await self.aclose()
                raise ResponseTooLarge(self._too_large_message(limit))
        seen = 0
        try:
            async for chunk in self.stream:
                if limit is not None:
                    seen += len(chunk)
                    if seen > limit:
                        raise ResponseTooLarge(self._too_large_message(limit))
                yield chunk
        finally:
            await self.aclose()

    def _raw_content(self) -> bytes:
        """The body read already, as it came: `content` itself unless it was
        decoded from a Content-Encoding, whose input is then gone."""
        content = self._content
        assert content is not None
        coding = self.headers.get("content-encoding")
        if not coding or isinstance(make_decoder(coding), IdentityDecoder):
            return content
        stream = self.stream
        if isinstance(stream, _ByteStream):  # built with content=: still held
            return stream.data
        raise StreamConsumed(
            f"the response body was already read and decoded from its "
            f"Content-Encoding ({coding}); its raw bytes are gone. Use "
            f"aiter_raw() instead of aread() or .content to get them"
        )

    def _may_have_body(self) -> bool:
        """False for a response that never has one, whatever its
        Content-Length says: to HEAD, 1xx, 204 and 304."""
        status = self.status_code
        if status < 200 or status in _NO_BODY_STATUSES:
            return False
        request = self._request
        return request is None or request.method != "HEAD"

    def _where(self) -> str:
        return self._request.url.host if self._request is not None else "the server"

    def _too_large_message(self, limit: int) -> str:
        return f"response from {self._where()} is larger than max_response_size ({limit} bytes)"

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, decoded from its Content-Encoding."""
        if self._content is not None:
            if self._content:
                yield self._content
            return
        encoding = self.headers.get("content-encoding")
        if not encoding:
            async for chunk in self.aiter_raw():
                yield chunk
            return
        try:
            decoder = make_decoder(encoding)
            limit = self.max_size
            seen = 0
            async for chunk in self.aiter_raw():
                # Bounded output per call: a decompression bomb is stopped by
                # max_size after at most one slice, never inflated whole.
                out = decoder.decode(chunk, _DECODE_SLICE)
                while True:
                    if out:
                        if limit is not None:
                            seen += len(out)
                            if seen > limit:
                                await self.aclose()
                                raise ResponseTooLarge(self._too_large_message(limit))
                        yield out
                    if decoder.needs_input:
                        break
                    out = decoder.decode(b"", _DECODE_SLICE)
            tail = decoder.flush()
        except DecodingError as exc:
            raise DecodingError(f"response body from {self._where()}: {exc}") from None
        if tail:
            yield tail

    async def aiter_text(self) -> AsyncIterator[str]:
        """The body decoded to `str` with `encoding`, invalid bytes replaced."""
        decoder = text_decoder(self.encoding)
        async for chunk in self.aiter_bytes():
            text = decoder.decode(chunk)
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The text body one line at a time, without its line ending. Lines
        end at CRLF, LF or CR only: not at U+2028, U+0085, VT or FF, which
        `str.splitlines` also breaks at and which NDJSON may carry raw."""
        # Only new text is searched and an unfinished line is kept in
        # pieces, so a long line in many small chunks costs linear time.
        parts: list[str] = []
        after_cr = False  # the last text ended in CR: a leading LF pairs with it
        async for text in self.aiter_text():
            start = 1 if after_cr and text.startswith("\n") else 0
            for end in _LINE_END.finditer(text, start):
                piece = text[start : end.start()]
                if parts:
                    parts.append(piece)
                    piece = "".join(parts)
                    parts = []
                yield piece
                start = end.end()
            if start < len(text):
                parts.append(text[start:])
                after_cr = False
            else:
                after_cr = text.endswith("\r")
        if parts:
            yield "".join(parts)

    async def aclose(self) -> None:
        """Release the connection; unread body bytes are discarded."""
        if not self.is_closed:
            self.is_closed = True
            self._ended = time.perf_counter()
            await self.stream.aclose()

    def __repr__(self) -> str:
        return f"<Response [{self.status_code} {self.reason_phrase}]>"


def merge_headers(base: Headers, extra: HeaderTypes | None) -> Headers:
    merged = base.copy()
    if extra:
        merged.update(extra)
    return merged

