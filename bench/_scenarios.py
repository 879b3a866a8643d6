"""The benchmark matrix: scenarios, clients, and which client runs where.

A scenario fixes what is asked of the server (path, protocol, how many
requests in flight, how much is moved); a client is one implementation that
can be driven through it. Adding a scenario means adding a `Scenario` here
and, if its `kind` is new, a runner in `_worker.py` (Python clients) and in
`_external.py` (wrk/h2load).

The fleet scenarios (4 worker processes sharing one connection budget, with
and without `hyperhttp.shared.Coordinator`) are declared but not yet runnable:
`FLEET_HOOK` is the slot where their runner plugs in (see README).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024
GIB = 1024 * MIB

TINY_PATH = "/tiny.txt"  # 13 bytes: "Hello, world!"
MEDIUM_PATH = "/100k.bin"  # 100 KiB, used to warm up download clients
LARGE_PATH = "/10m.bin"  # 10 MiB
UPLOAD_PATH = "/upload"  # served by the sink, not nginx


@dataclass(frozen=True)
class Scenario:
    """One row group of the results table."""

    name: str
    kind: str  # "tiny" | "download" | "upload" | "fleet"
    proto: str  # "h1" (cleartext HTTP/1.1) | "h2" (TLS, ALPN h2)
    inflight: int
    path: str
    count: int = 0  # downloads per run (kind "download")
    description: str = ""
    runnable: bool = True

    @property
    def unit(self) -> str:
        return "req/s" if self.kind == "tiny" else "MB/s"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("h1-tiny-1", "tiny", "h1", 1, TINY_PATH,
             description="13-byte body, 1 request in flight, HTTP/1.1 cleartext"),
    Scenario("h1-tiny-64", "tiny", "h1", 64, TINY_PATH,
             description="13-byte body, 64 requests in flight, HTTP/1.1 cleartext"),
    Scenario("h2-tiny-1", "tiny", "h2", 1, TINY_PATH,
             description="13-byte body, 1 request in flight, HTTP/2 over TLS"),
    Scenario("h2-tiny-64", "tiny", "h2", 64, TINY_PATH,
             description="13-byte body, 64 requests in flight, HTTP/2 over TLS"),
    Scenario("h1-download", "download", "h1", 4, LARGE_PATH, count=20,
             description="20 downloads of 10 MiB, 4 at a time, HTTP/1.1 cleartext"),
    Scenario("h2-download", "download", "h2", 4, LARGE_PATH, count=20,
             description="20 downloads of 10 MiB, 4 at a time, HTTP/2 over TLS"),
    Scenario("h1-upload", "upload", "h1", 1, UPLOAD_PATH,
             description="one multipart/form-data POST of a 1 GiB file (256 MiB in --quick), HTTP/1.1 cleartext"),
    # Slot for the fleet scenarios: 4 worker processes against one origin with
    # a shared max_connections, without and with the coordinator.
    Scenario("fleet-4w", "fleet", "h1", 64, TINY_PATH, runnable=False,
             description="4 worker processes, per-process limits (no coordinator)"),
    Scenario("fleet-4w-coord", "fleet", "h1", 64, TINY_PATH, runnable=False,
             description="4 worker processes sharing limits through the coordinator"),
)

SCENARIO_BY_NAME = {s.name: s for s in SCENARIOS}

# Fleet runner hook: set to a callable(scenario, client, loop, settings) -> dict
# with the same keys as a worker result (see _worker.py) to enable the fleet
# scenarios. Left None until hyperhttp.shared lands.
FLEET_HOOK: Callable[..., dict[str, Any]] | None = None


@dataclass(frozen=True)
class ClientSpec:
    """A client implementation and where it can run."""

    name: str
    protos: frozenset[str]
    kinds: frozenset[str] = field(default=frozenset({"tiny", "download", "upload"}))
    external: bool = False  # a native load generator, not a Python subprocess
    role: str = "peer"  # "ours" | "peer" | "raw" | "ceiling"


CLIENTS: tuple[ClientSpec, ...] = (
    ClientSpec("hyperhttp", frozenset({"h1", "h2"}), role="ours"),
    ClientSpec("hyperhttp-2.1.0", frozenset({"h1", "h2"})),
    ClientSpec("aiohttp", frozenset({"h1"})),  # aiohttp has no HTTP/2
    ClientSpec("httpx", frozenset({"h1", "h2"})),
    ClientSpec("niquests", frozenset({"h1", "h2"})),
    ClientSpec("raw", frozenset({"h1"}), role="raw"),
    ClientSpec("wrk", frozenset({"h1"}), kinds=frozenset({"tiny"}), external=True,
               role="ceiling"),
    ClientSpec("h2load", frozenset({"h1", "h2"}), external=True, role="ceiling"),
)

CLIENT_BY_NAME = {c.name: c for c in CLIENTS}
LOOPS = ("asyncio", "uvloop")


def cells(scenario: Scenario, clients: list[str], loops: list[str]) -> list[tuple[str, str]]:
    """The (client, loop) pairs that run in `scenario`, in table order."""
    out: list[tuple[str, str]] = []
    for name in clients:
        spec = CLIENT_BY_NAME[name]
        if scenario.proto not in spec.protos or scenario.kind not in spec.kinds:
            continue
        if spec.external:
            # h2load is the HTTP/1.1 ceiling only where wrk cannot serve (counts).
            if name == "h2load" and scenario.proto == "h1" and scenario.kind == "tiny":
                continue
            out.append((name, "-"))
        else:
            out.extend((name, loop) for loop in loops)
    return out
