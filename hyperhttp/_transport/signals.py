"""Signals from a connection to the pool: the request may go out again on
another connection.

`StaleConnection` never reaches a caller: the pool retries once, or
converts it to a RemoteProtocolError. `RequestNotProcessed` is public
(hyperhttp._exceptions); the pool resends it a few times and then lets it
through, still saying that the server did not act on the request.
"""

from __future__ import annotations

from .._exceptions import RemoteProtocolError, RequestNotProcessed

__all__ = ["RequestNotProcessed", "StaleConnection"]


class StaleConnection(RemoteProtocolError):
    """A reused keep-alive connection was closed by the server before any
    byte of the response: the usual keep-alive race. Retried once on a
    fresh connection when the method is idempotent and the body replayable."""


