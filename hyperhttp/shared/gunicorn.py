"""Ready hooks for a ``gunicorn.conf.py``: one coordinator for the whole fleet.

    # gunicorn.conf.py
    from hyperhttp.shared.gunicorn import on_starting, on_exit

The master starts the coordinator (with `subprocess`, before any worker is
forked) and exports its address as ``$HYPERHTTP_COORDINATOR``, which the
workers inherit; ``hyperhttp.Client(coordinator=True)`` in the app picks it
up. ``on_exit`` stops it. Or build hooks with other caps::

    on_starting, on_exit = fleet_hooks(max_connections=500, max_connections_per_host=50)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ._connect import ENV_VAR
from ._launch import Coordinator

__all__ = ["fleet_hooks", "on_exit", "on_starting"]

Hook = Callable[[Any], None]


def fleet_hooks(
    *,
    name: str | None = None,
    max_connections: int | None = None,
    max_connections_per_host: int | None = None,
    dns_ttl: float | None = None,
) -> tuple[Hook, Hook]:
    """``(on_starting, on_exit)`` hooks; unset values come from the environment
    (``HYPERHTTP_MAX_CONNECTIONS``, ``HYPERHTTP_MAX_CONNECTIONS_PER_HOST``,
    ``HYPERHTTP_DNS_TTL``) or the `Coordinator.launch` defaults (200, 32, 60)."""
    state: dict[str, Coordinator] = {}

    def setting(key: str, given: Any, default: Any, kind: Callable[[str], Any]) -> Any:
        if given is not None:
            return given
        text = os.environ.get(key)
        if not text:
            return default
        return None if text.lower() == "none" else kind(text)

    def starting(server: Any) -> None:
        coord = Coordinator.launch(
            name or f"gunicorn-{os.getpid()}",
            max_connections=setting("HYPERHTTP_MAX_CONNECTIONS", max_connections, 200, int),
            max_connections_per_host=setting(
                "HYPERHTTP_MAX_CONNECTIONS_PER_HOST", max_connections_per_host, 32, int),
            dns_ttl=setting("HYPERHTTP_DNS_TTL", dns_ttl, 60.0, float),
        )
        state["coord"] = coord
        os.environ[ENV_VAR] = coord.address  # inherited by every worker forked later
        log = getattr(server, "log", None)
        if log is not None:
            log.info("hyperhttp coordinator pid %s at %s", coord.pid, coord.address)

    def exiting(server: Any) -> None:
        coord = state.pop("coord", None)
        if coord is not None:
            coord.stop()
            os.environ.pop(ENV_VAR, None)

    return starting, exiting


on_starting, on_exit = fleet_hooks()
