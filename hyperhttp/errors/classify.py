"""Error categories: one classifier shared by the retry policy and the breaker.

`classify(exc_or_status)` files every failure under one `ErrorCategory`.
The retry policy retries a failed *exception* when its category is in
`RetryPolicy.retry_categories`; the breaker counts an outcome against a host
when its category is in `counted_categories`. Response statuses are
classified too (for the breaker and telemetry), but whether a *status* is
retried is decided by `status_force_list` alone.

Mapping (exceptions of `hyperhttp._exceptions`; subclasses inherit their
parent's category unless listed):

    ConnectError                      CONNECTION  refused, unreachable, reset while opening
    ProxyError                        status of the proxy's answer, else CONNECTION
    DNSError                          DNS         the name did not resolve
    ConnectTimeout                    TIMEOUT     a timeout, like its parent TimeoutException
    ReadTimeout, WriteTimeout,        TIMEOUT
    PoolTimeout, TimeoutException

ConnectTimeout follows the hierarchy (`except TimeoutException` catches it)
while a refused or unreachable connect stays CONNECTION, never TIMEOUT
(urllib3 #2319 is the warning). Both provably never sent the request, and
the breaker counts both by default; `retry_categories=["TIMEOUT"]` alone
retries connect timeouts but not refusals.

    ReadError, WriteError             TRANSIENT   the connection dropped mid-exchange
    NetworkError                      TRANSIENT
    RemoteProtocolError               TRANSIENT   peer closed early / stale keep-alive
    StreamReset                       by HTTP/2 error code, see `_RESET_CATEGORIES`
                                      (REFUSED_STREAM and CANCEL are TRANSIENT)
    RequestNotProcessed               TRANSIENT   refused stream / above GOAWAY: never sent
    TLSError                          TLS         certificate/ALPN: retrying will not help
    DecodingError                     PROTOCOL    the server sent a body we cannot decode
    LocalProtocolError, InvalidURL,   CLIENT      our request or our local state is at fault
    TooManyRedirects, ResponseTooLarge,
    StreamConsumed, PoolClosed,
    CoordinatorError, ProtocolError,
    TransportError, HyperHTTPError
    HTTPStatusError                   by its response status
    RetryError                        by its original_exception
    CircuitBreakerOpen                CIRCUIT_OPEN  refused locally, nothing was sent
    anything else (not ours)          UNKNOWN

    status 429                        RATE_LIMIT
    status 503                        TRANSIENT   (temporarily unavailable, usually with Retry-After)
    other 5xx                         SERVER
    other 4xx                         CLIENT
    1xx-3xx, 600-999                  none        not a failure (`status_category` gives None)

The HTTP/1.1 parser accepts any three-digit status on purpose (crawlers meet
LinkedIn's 999); such a response is the host answering, never a failure.

`was_never_sent(exc)` answers the other question the retry policy asks: did
this failure provably happen before any byte of the request reached the
server? Such a request may be sent again whatever its method.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from .._exceptions import (
    CircuitBreakerOpen,
    ConnectError,
    ConnectTimeout,
    CoordinatorError,
    DecodingError,
    DNSError,
    HTTPStatusError,
    HyperHTTPError,
    InvalidURL,
    LocalProtocolError,
    NetworkError,
    PoolClosed,
    PoolTimeout,
    ProtocolError,
    ProxyError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    RequestNotProcessed,
    ResponseTooLarge,
    RetryError,
    StreamConsumed,
    StreamReset,
    TimeoutException,
    TLSError,
    TooManyRedirects,
    TransportError,
    WriteError,
    WriteTimeout,
)


class ErrorCategory(StrEnum):
    """Why an attempt failed. Values equal their names, so strings work too."""

    CONNECTION = "CONNECTION"
    """No connection could be opened (refused, unreachable, proxy tunnel failed)."""
    DNS = "DNS"
    """The host name did not resolve."""
    TIMEOUT = "TIMEOUT"
    """A connect, read, write or pool timeout ran out."""
    TRANSIENT = "TRANSIENT"
    """The connection dropped or a stream was refused mid-exchange; status 503."""
    RATE_LIMIT = "RATE_LIMIT"
    """The server asked us to slow down: status 429, HTTP/2 ENHANCE_YOUR_CALM."""
    SERVER = "SERVER"
    """The server failed: 5xx other than 503, HTTP/2 INTERNAL_ERROR."""
    TLS = "TLS"
    """The TLS handshake failed: certificate, protocol version or ALPN."""
    PROTOCOL = "PROTOCOL"
    """The server broke HTTP rules on a stream, or sent an undecodable body."""
    CLIENT = "CLIENT"
    """Our request or local state is at fault (4xx, bad URL, closed pool...)."""
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    """The circuit breaker refused the attempt; nothing was sent."""
    UNKNOWN = "UNKNOWN"
    """An exception from outside hyperhttp."""


# HTTP/2 error codes (RFC 9113 section 7).
REFUSED_STREAM = 0x7
_RESET_CATEGORIES: dict[int, ErrorCategory] = {
    0x0: ErrorCategory.TRANSIENT,  # NO_ERROR: the server gave up on the stream early
    0x1: ErrorCategory.PROTOCOL,  # PROTOCOL_ERROR
    0x2: ErrorCategory.SERVER,  # INTERNAL_ERROR
    0x3: ErrorCategory.PROTOCOL,  # FLOW_CONTROL_ERROR
    0x4: ErrorCategory.PROTOCOL,  # SETTINGS_TIMEOUT
    0x5: ErrorCategory.PROTOCOL,  # STREAM_CLOSED
    0x6: ErrorCategory.PROTOCOL,  # FRAME_SIZE_ERROR
    REFUSED_STREAM: ErrorCategory.TRANSIENT,  # not processed at all: safe to resend
    0x8: ErrorCategory.TRANSIENT,  # CANCEL: e.g. the server is shutting down
    0x9: ErrorCategory.PROTOCOL,  # COMPRESSION_ERROR
    0xA: ErrorCategory.CONNECTION,  # CONNECT_ERROR: a CONNECT tunnel failed
    0xB: ErrorCategory.RATE_LIMIT,  # ENHANCE_YOUR_CALM
    0xC: ErrorCategory.TLS,  # INADEQUATE_SECURITY
    0xD: ErrorCategory.PROTOCOL,  # HTTP_1_1_REQUIRED
}
# RFC 9113 section 7: an unknown code may be treated as INTERNAL_ERROR.
_UNKNOWN_RESET_CATEGORY = ErrorCategory.SERVER

# Exact class -> category. Looked up along the MRO, so a subclass nobody
# listed inherits its parent's category at run time; the unit tests demand an
# explicit entry for every class of `_exceptions`, so a new class gets a
# deliberate decision. Classes whose category depends on the instance
# (StreamReset, ProxyError, HTTPStatusError, RetryError) are handled first in
# `classify` and listed here with their fallback.
CATEGORY_BY_CLASS: dict[type[BaseException], ErrorCategory] = {
    HyperHTTPError: ErrorCategory.CLIENT,
    TransportError: ErrorCategory.CLIENT,
    TimeoutException: ErrorCategory.TIMEOUT,
    ConnectTimeout: ErrorCategory.TIMEOUT,
    ReadTimeout: ErrorCategory.TIMEOUT,
    WriteTimeout: ErrorCategory.TIMEOUT,
    PoolTimeout: ErrorCategory.TIMEOUT,
    NetworkError: ErrorCategory.TRANSIENT,
    ConnectError: ErrorCategory.CONNECTION,
    ReadError: ErrorCategory.TRANSIENT,
    WriteError: ErrorCategory.TRANSIENT,
    ProtocolError: ErrorCategory.CLIENT,
    RemoteProtocolError: ErrorCategory.TRANSIENT,
    RequestNotProcessed: ErrorCategory.TRANSIENT,
    StreamReset: _UNKNOWN_RESET_CATEGORY,
    LocalProtocolError: ErrorCategory.CLIENT,
    ProxyError: ErrorCategory.CONNECTION,
    TLSError: ErrorCategory.TLS,
    DNSError: ErrorCategory.DNS,
    HTTPStatusError: ErrorCategory.CLIENT,
    TooManyRedirects: ErrorCategory.CLIENT,
    InvalidURL: ErrorCategory.CLIENT,
    DecodingError: ErrorCategory.PROTOCOL,
    ResponseTooLarge: ErrorCategory.CLIENT,
    StreamConsumed: ErrorCategory.CLIENT,
    PoolClosed: ErrorCategory.CLIENT,
    CircuitBreakerOpen: ErrorCategory.CIRCUIT_OPEN,
    RetryError: ErrorCategory.UNKNOWN,
    CoordinatorError: ErrorCategory.CLIENT,
}

# Failures that happen before the request's first byte is written.
_NEVER_SENT: tuple[type[BaseException], ...] = (
    ConnectError,
    ConnectTimeout,
    PoolTimeout,
    DNSError,
    ProxyError,  # the tunnel to the origin was never opened
    TLSError,  # the handshake precedes the request
    LocalProtocolError,
    InvalidURL,
    PoolClosed,
    CircuitBreakerOpen,
    RequestNotProcessed,  # the server said so (REFUSED_STREAM, GOAWAY)
)


def classify_status(status_code: int) -> ErrorCategory:
    """Category of a failed response status (400-599).

    Raises ValueError for a status that is not a failure (below 400) or not
    an HTTP status at all.
    """
    if isinstance(status_code, bool) or not isinstance(status_code, int):
        raise TypeError(f"status code must be an int, got {type(status_code).__name__}")
    if not 400 <= status_code <= 599:
        raise ValueError(f"status {status_code} is not a 4xx or 5xx failure status")
    if status_code == 429:
        return ErrorCategory.RATE_LIMIT
    if status_code == 503:
        return ErrorCategory.TRANSIENT
    if status_code >= 500:
        return ErrorCategory.SERVER
    return ErrorCategory.CLIENT


def status_category(status_code: int) -> ErrorCategory | None:
    """Category of a response status, None when it is not a failure.

    Only 400-599 are failures; 1xx-3xx and the non-standard statuses above
    599 the HTTP/1.1 parser lets through (LinkedIn's 999) say the host
    answered, so the retry policy, telemetry and the breaker take them as
    accepted responses.
    """
    if isinstance(status_code, bool) or not isinstance(status_code, int):
        raise TypeError(f"status code must be an int, got {type(status_code).__name__}")
    if not 400 <= status_code <= 599:
        return None
    return classify_status(status_code)


def classify_reset(error_code: int) -> ErrorCategory:
    """Category of an HTTP/2 RST_STREAM error code."""
    return _RESET_CATEGORIES.get(error_code, _UNKNOWN_RESET_CATEGORY)


def classify(failure: BaseException | int) -> ErrorCategory:
    """File an exception or a failed response status under one category."""
    if isinstance(failure, int) and not isinstance(failure, bool):
        return classify_status(failure)
    if not isinstance(failure, BaseException):
        raise TypeError(f"cannot classify {type(failure).__name__}")
    # Categories that depend on the instance, not just the class.
    if isinstance(failure, StreamReset):
        return classify_reset(failure.error_code)
    if isinstance(failure, ProxyError) and failure.status_code is not None:
        status = failure.status_code
        if 400 <= status <= 599:
            return classify_status(status)
        return ErrorCategory.CONNECTION
    if isinstance(failure, HTTPStatusError):
        return _classify_status_lenient(failure.response.status_code)
    if isinstance(failure, RetryError):
        original = failure.original_exception
        return ErrorCategory.UNKNOWN if original is None else classify(original)
    for cls in type(failure).__mro__:
        category = CATEGORY_BY_CLASS.get(cls)
        if category is not None:
            return category
    return ErrorCategory.UNKNOWN


def _classify_status_lenient(status_code: int) -> ErrorCategory:
    try:
        return classify_status(status_code)
    except (TypeError, ValueError):
        return ErrorCategory.CLIENT


def parse_categories(
    value: Iterable[str | ErrorCategory], *, name: str = "categories"
) -> frozenset[ErrorCategory]:
    """Categories from `ErrorCategory` members or their names (any case).

    Raises TypeError for a bare string or a non-string item and ValueError
    for an unknown name.
    """
    if isinstance(value, str | bytes):
        raise TypeError(f"{name} must be a collection of categories, not one string")
    result: set[ErrorCategory] = set()
    for item in value:
        if isinstance(item, ErrorCategory):
            result.add(item)
            continue
        if not isinstance(item, str):
            raise TypeError(f"{name} items must be str, got {type(item).__name__}")
        try:
            result.add(ErrorCategory(item.upper()))
        except ValueError:
            valid = ", ".join(c.value for c in ErrorCategory)
            raise ValueError(
                f"unknown category {item!r} in {name}; expected one of {valid}"
            ) from None
    return frozenset(result)


def was_never_sent(failure: BaseException) -> bool:
    """True when the failure provably happened before the request left.

    Connect failures and timeouts, DNS, pool timeouts, a failed proxy tunnel
    or TLS handshake, a request refused locally, and an HTTP/2 stream the
    server refused (REFUSED_STREAM: RFC 9113 guarantees it was not
    processed). Such a request may be re-sent whatever its method. The client
    may know more (a stream above a GOAWAY's last-stream-id): it says so with
    `sent=False` when asking the retry policy.
    """
    if isinstance(failure, StreamReset):
        return failure.error_code == REFUSED_STREAM
    if isinstance(failure, RetryError):
        return False
    return isinstance(failure, _NEVER_SENT)


__all__ = [
    "CATEGORY_BY_CLASS",
    "REFUSED_STREAM",
    "ErrorCategory",
    "classify",
    "classify_reset",
    "classify_status",
    "parse_categories",
    "status_category",
    "was_never_sent",
]
