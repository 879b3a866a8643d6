"""Telemetry hooks: observe every attempt the retry loop makes.

Subclass `ErrorTelemetry` and override `record_attempt`, as a plain method
or as a coroutine. The client calls it through `emit`, which awaits a
coroutine result and logs, never raises, whatever the hook raises: a broken
metrics exporter must not fail the request.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .retry import AttemptRecord, Outcome

logger = logging.getLogger("hyperhttp.errors.telemetry")


class ErrorTelemetry:
    """Base class for attempt telemetry; every hook does nothing by default."""

    def record_attempt(
        self, retry_state: AttemptRecord, outcome: Outcome
    ) -> Awaitable[None] | None:
        """Called once per attempt.

        `retry_state` describes the attempt (`attempt`, `method`, `url`
        without credentials, `category`, `exception` or `status_code`,
        `delay` before the next attempt, `elapsed` since the first began).
        `outcome` is "success", "retry" (another attempt follows) or "fail".
        May be a coroutine function; the client awaits it.
        """
        return None


async def emit(
    telemetry: ErrorTelemetry | None, retry_state: AttemptRecord, outcome: Outcome
) -> None:
    """Call `telemetry.record_attempt`, await it if needed, never raise.

    A failure of the hook is logged at WARNING with its traceback. Hooks
    should be quick: the request waits for them.
    """
    if telemetry is None:
        return
    try:
        result = telemetry.record_attempt(retry_state, outcome)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.warning(
            "telemetry %s.record_attempt failed for attempt %d of %s %s",
            type(telemetry).__name__,
            retry_state.attempt,
            retry_state.method,
            retry_state.url,
            exc_info=True,
        )


__all__ = ["ErrorTelemetry", "emit"]
