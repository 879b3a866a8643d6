"""Internal signals from a connection to the pool: the request was not
processed by the server and may go out again on another connection.

They never reach a caller: the pool retries, or converts them to a public
exception when it may not retry.
"""

from __future__ import annotations

from .._exceptions import RemoteProtocolError


class StaleConnection(RemoteProtocolError):
    """A reused keep-alive connection was closed by the server before any
    byte of the response: the usual keep-alive race. Retried once on a
    fresh connection when the method is idempotent and the body replayable."""


class RequestNotProcessed(RemoteProtocolError):
    """The server said it did not process the request (HTTP/2 GOAWAY with a
    higher last-stream-id, or REFUSED_STREAM). Always safe to send again."""
