"""The one exception hierarchy of hyperhttp.

Every failure a caller can see is one of these; foreign exceptions (OSError,
ssl, h11, h2, msgspec) are translated into them at one boundary each.

    HyperHTTPError
    ├── TransportError
    │   ├── TimeoutException
    │   │   ├── ConnectTimeout
    │   │   ├── ReadTimeout
    │   │   ├── WriteTimeout
    │   │   └── PoolTimeout
    │   ├── NetworkError
    │   │   ├── ConnectError
    │   │   ├── ReadError
    │   │   └── WriteError
    │   ├── ProtocolError
    │   │   ├── RemoteProtocolError
    │   │   │   ├── StreamReset          (HTTP/2 RST_STREAM on one stream)
    │   │   │   └── RequestNotProcessed  (HTTP/2: the server said it did not act)
    │   │   └── LocalProtocolError
    │   ├── ProxyError
    │   └── TLSError
    ├── DNSError
    ├── HTTPStatusError
    ├── TooManyRedirects
    ├── InvalidURL
    ├── DecodingError
    ├── ResponseTooLarge
    ├── StreamConsumed
    ├── PoolClosed
    ├── CircuitBreakerOpen(host, remaining)
    ├── RetryError(original_exception)
    └── CoordinatorError

Messages name the host and what happened. They never contain a password, a
token or a proxy credential: URLs are rendered through `URL.redacted()`
before they reach a message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import Request, Response


class HyperHTTPError(Exception):
    """Base of every exception hyperhttp raises."""

    def __init__(self, message: str = "", *, request: Request | None = None) -> None:
        super().__init__(message)
        self._request = request

    @property
    def request(self) -> Request:
        if self._request is None:
            raise RuntimeError(f"{type(self).__name__} has no request attached")
        return self._request

    @request.setter
    def request(self, request: Request) -> None:
        self._request = request

    @property
    def has_request(self) -> bool:
        return self._request is not None


class TransportError(HyperHTTPError):
    """The request could not be carried to the server and back."""


class TimeoutException(TransportError):
    """A timeout ran out."""


class ConnectTimeout(TimeoutException):
    """Opening the TCP connection (or the TLS handshake) took too long."""


class ReadTimeout(TimeoutException):
    """The server sent nothing for longer than the read timeout."""


class WriteTimeout(TimeoutException):
    """The server accepted no data for longer than the write timeout."""


class PoolTimeout(TimeoutException):
    """No connection slot became free within the pool timeout."""


class NetworkError(TransportError):
    """The network failed: refused, reset or closed."""


class ConnectError(NetworkError):
    """The connection could not be opened."""


class ReadError(NetworkError):
    """Receiving from the server failed."""


class WriteError(NetworkError):
    """Sending to the server failed."""


class ProtocolError(TransportError):
    """One side broke the rules of HTTP."""


class RemoteProtocolError(ProtocolError):
    """The server broke the rules of HTTP: a malformed or illegal response."""


class StreamReset(RemoteProtocolError):
    """The server reset one HTTP/2 stream; the connection lives on."""

    def __init__(
        self, message: str = "", *, error_code: int = 0, request: Request | None = None
    ) -> None:
        super().__init__(message, request=request)
        self.error_code = error_code


class RequestNotProcessed(RemoteProtocolError):
    """The server said it did not process the request: an HTTP/2 stream it
    refused (REFUSED_STREAM) or one above its GOAWAY's last stream id. The
    pool sends such a request again by itself a few times; this reaches the
    caller when that ran out or the body could not be sent again. Safe to
    retry whatever the method (the retry policy does)."""


class LocalProtocolError(ProtocolError):
    """The request would break the rules of HTTP; nothing was sent."""


class ProxyError(TransportError):
    """The proxy refused or failed the request (status kept in `status_code`)."""

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        request: Request | None = None,
    ) -> None:
        super().__init__(message, request=request)
        self.status_code = status_code


class TLSError(TransportError):
    """The TLS handshake failed: certificate, protocol or ALPN."""


class DNSError(HyperHTTPError):
    """A host name did not resolve."""


class HTTPStatusError(HyperHTTPError):
    """Raised by `Response.raise_for_status()` for 4xx and 5xx responses."""

    def __init__(self, message: str, *, request: Request, response: Response) -> None:
        super().__init__(message, request=request)
        self.response = response


class TooManyRedirects(HyperHTTPError):
    """More redirects than `max_redirects`."""


class InvalidURL(HyperHTTPError):
    """A URL could not be parsed or cannot be requested."""


class DecodingError(HyperHTTPError):
    """A response body could not be decoded (content encoding, JSON, charset)."""


class ResponseTooLarge(HyperHTTPError):
    """The response body is larger than `max_response_size`."""


class StreamConsumed(HyperHTTPError):
    """A single-use body was read already and cannot be read or sent again."""


class PoolClosed(HyperHTTPError):
    """A request was made on a client or pool that is closed."""


class CircuitBreakerOpen(HyperHTTPError):
    """The circuit breaker for `host` is open for another `remaining` seconds."""

    def __init__(self, host: str, remaining: float, *, request: Request | None = None) -> None:
        super().__init__(
            f"circuit breaker for {host} is open; retry in {remaining:.1f}s", request=request
        )
        self.host = host
        self.remaining = remaining


class RetryError(HyperHTTPError):
    """All retries failed; the last failure is `original_exception`."""

    def __init__(
        self,
        message: str,
        *,
        original_exception: BaseException | None,
        attempts: int = 0,
        request: Request | None = None,
        history: tuple[Any, ...] = (),
    ) -> None:
        super().__init__(message, request=request)
        self.original_exception = original_exception
        self.attempts = attempts
        self.history = history


class CoordinatorError(HyperHTTPError):
    """The fleet coordinator is required but cannot be reached or refused us."""


__all__ = [
    "CircuitBreakerOpen",
    "ConnectError",
    "ConnectTimeout",
    "CoordinatorError",
    "DNSError",
    "DecodingError",
    "HTTPStatusError",
    "HyperHTTPError",
    "InvalidURL",
    "LocalProtocolError",
    "NetworkError",
    "PoolClosed",
    "PoolTimeout",
    "ProtocolError",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "ResponseTooLarge",
    "RetryError",
    "StreamConsumed",
    "StreamReset",
    "TLSError",
    "TimeoutException",
    "TooManyRedirects",
    "TransportError",
    "WriteError",
    "WriteTimeout",
]
