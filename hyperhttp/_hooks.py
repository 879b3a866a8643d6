"""Event hooks: checking the `event_hooks` mapping, running hooks, and the
carrier that takes a hook's exception past the retry policy and the breaker
(neither is about the host) to the caller, who gets it as it was raised."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["Hook", "HookError", "checked_hooks", "run_hooks"]

Hook = Callable[[Any], Any]


async def run_hooks(hooks: list[Hook], subject: Any) -> None:
    """Run event hooks in order; what one raises goes to the caller as
    `HookError`, so that neither the retry policy nor the breaker takes it
    for the host's failure (a hook may well raise ConnectError of its own)."""
    try:
        for hook in list(hooks):
            result = hook(subject)
            if inspect.isawaitable(result):
                await result
    except Exception as exc:
        raise HookError(exc) from None


class HookError(Exception):
    """Carries an event hook's exception from the attempt to `send()`, which
    raises the hook's own exception: a hook that fails ends the request
    (never retried, never counted against the host)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def checked_hooks(event_hooks: Mapping[str, Sequence[Hook]] | None) -> dict[str, list[Hook]]:
    """`event_hooks` as the client keeps it: both kinds, each a list of its own."""
    hooks: dict[str, list[Hook]] = {"request": [], "response": []}
    for name, given in (event_hooks or {}).items():
        if name not in hooks:
            raise ValueError(f"unknown event hook {name!r}; use 'request' or 'response'")
        hooks[name] = list(given)
    return hooks
