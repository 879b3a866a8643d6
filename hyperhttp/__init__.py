"""hyperhttp: an async HTTP/1.1 and HTTP/2 client whose limits can hold
across a whole worker fleet.

    async with hyperhttp.Client() as client:
        r = await client.get("https://example.org/")
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._auth import Auth, BasicAuth, BearerAuth, DigestAuth
from ._client import Client
from ._config import Timeout
from ._exceptions import (
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
from ._headers import Headers
from ._models import Request, Response
from ._multipart import MultipartEncoder, MultipartFile
from ._tls import InsecureTLSWarning
from ._transports import AsyncBaseTransport, HTTPTransport, MockTransport
from ._urls import URL


def install_uvloop() -> None:
    """Make uvloop the event loop policy (Linux and macOS)."""
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


__all__ = [
    "URL",
    "AsyncBaseTransport",
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "CircuitBreakerOpen",
    "Client",
    "ConnectError",
    "ConnectTimeout",
    "CoordinatorError",
    "DNSError",
    "DecodingError",
    "DigestAuth",
    "HTTPStatusError",
    "HTTPTransport",
    "Headers",
    "HyperHTTPError",
    "InsecureTLSWarning",
    "InvalidURL",
    "LocalProtocolError",
    "MockTransport",
    "MultipartEncoder",
    "MultipartFile",
    "NetworkError",
    "PoolClosed",
    "PoolTimeout",
    "ProtocolError",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Request",
    "RequestNotProcessed",
    "Response",
    "ResponseTooLarge",
    "RetryError",
    "StreamConsumed",
    "StreamReset",
    "TLSError",
    "Timeout",
    "TimeoutException",
    "TooManyRedirects",
    "TransportError",
    "WriteError",
    "WriteTimeout",
    "__version__",
    "install_uvloop",
]
