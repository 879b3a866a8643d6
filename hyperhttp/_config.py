"""Configuration values: timeouts, and the checks on the client's limits.
Immutable, validated when built."""

from __future__ import annotations

from typing import TypeAlias

_UNSET = object()


class Timeout:
    """Timeouts in seconds, each `None` for no limit.

    `Timeout(5.0)` sets all four; `Timeout(5.0, connect=1.0)` overrides one;
    `Timeout(connect=1.0, read=10.0, write=10.0, pool=5.0)` sets each.
    """

    __slots__ = ("connect", "pool", "read", "write")

    connect: float | None
    read: float | None
    write: float | None
    pool: float | None

    def __init__(
        self,
        timeout: TimeoutTypes | object = _UNSET,
        *,
        connect: float | object | None = _UNSET,
        read: float | object | None = _UNSET,
        write: float | object | None = _UNSET,
        pool: float | object | None = _UNSET,
    ) -> None:
        if isinstance(timeout, Timeout):
            base: tuple[float | None, ...] = (
                timeout.connect, timeout.read, timeout.write, timeout.pool
            )
        elif timeout is _UNSET:
            if _UNSET in (connect, read, write, pool):
                raise ValueError(
                    "Timeout() needs a default, e.g. Timeout(10.0), or all four of "
                    "connect, read, write and pool"
                )
            base = (None, None, None, None)
        elif timeout is None or isinstance(timeout, int | float):
            base = (timeout,) * 4
        else:
            raise TypeError(f"timeout must be a number, None or Timeout, not {timeout!r}")
        values = []
        for given, default in zip((connect, read, write, pool), base, strict=True):
            value = default if given is _UNSET else given
            if value is not None:
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise TypeError(f"timeout values must be numbers or None, not {value!r}")
                if not value >= 0:  # NaN too: it compares false with anything
                    raise ValueError(f"timeouts must be numbers >= 0, not {value!r}")
                value = float(value)
            values.append(value)
        for name, value in zip(("connect", "read", "write", "pool"), values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Timeout is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timeout):
            return NotImplemented
        return (self.connect, self.read, self.write, self.pool) == (
            other.connect, other.read, other.write, other.pool
        )

    def __hash__(self) -> int:
        return hash((self.connect, self.read, self.write, self.pool))

    def __repr__(self) -> str:
        if len({self.connect, self.read, self.write, self.pool}) == 1:
            return f"Timeout({self.connect})"
        return (
            f"Timeout(connect={self.connect}, read={self.read}, "
            f"write={self.write}, pool={self.pool})"
        )


TimeoutTypes: TypeAlias = float | int | Timeout | None

DEFAULT_TIMEOUT = Timeout(30.0)


def check_limits(
    max_connections: int | None,
    per_host: int | None,
    keepalive: int | None,
    max_redirects: int,
    max_response_size: int | None,
    happy_eyeballs_delay: float,
) -> None:
    """Refuse a `Client` limit of the wrong type or out of range, naming it."""
    for name, value in (
        ("max_connections", max_connections),
        ("max_connections_per_host", per_host),
        ("max_keepalive_connections", keepalive),
        ("max_response_size", max_response_size),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{name} must be an int or None, not {value!r}")
        if value is not None and value < (0 if name == "max_keepalive_connections" else 1):
            raise ValueError(f"{name} must be positive, got {value}")
    if max_redirects < 0:
        raise ValueError(f"max_redirects must be >= 0, got {max_redirects}")
    if not happy_eyeballs_delay >= 0:  # NaN fails this too
        raise ValueError(f"happy_eyeballs_delay must be >= 0, got {happy_eyeballs_delay}")
