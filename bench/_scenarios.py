"""The benchmark matrix: scenarios, clients, and which client runs where.

A scenario fixes what is asked of the server (path, protocol, how many
requests in flight, how much is moved); a client is one implementation that
can be driven through it. Adding a scenario means adding a `Scenario` here
and, if its `kind` is new, a runner in `_worker.py` (Python clients) and in
`_external.py` (wrk/h2load).

The fleet scenarios (kind "fleet": `workers` processes splitting `inflight`
between them, without and with `hyperhttp.shared.Coordinator`) are run by
`_fleet.py` instead of `_worker.py`; `only` keeps a scenario to the clients
that can take part (the coordinator is hyperhttp's alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

MIB = 1024 * 1024
GIB = 1024 * MIB

TINY_PATH = "/tiny.txt"  # 13 bytes: "Hello, world!"
MEDIUM_PATH = "/100k.bin"  # 100 KiB, used to warm up download clients
LARGE_PATH = "/10m.bin"  # 10 MiB
UPLOAD_PATH = "/upload"  # served by the sink, not nginx
DOWNLOADS = 20  # files per download run: the scenario the targets are set on


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
    workers: int = 1  # processes sharing `inflight` (kind "fleet")
    fleet_cap: int = 0  # coordinator's fleet-wide connection cap; 0: no coordinator
    only: frozenset[str] = frozenset()  # when set, just these clients run here

    @property
    def unit(self) -> str:
        return "req/s" if self.kind in ("tiny", "fleet") else "MB/s"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("h1-tiny-1", "tiny", "h1", 1, TINY_PATH,
             description="13-byte body, 1 request in flight, HTTP/1.1 cleartext"),
    Scenario("h1-tiny-64", "tiny", "h1", 64, TINY_PATH,
             description="13-byte body, 64 requests in flight, HTTP/1.1 cleartext"),
    Scenario("h2-tiny-1", "tiny", "h2", 1, TINY_PATH,
             description="13-byte body, 1 request in flight, HTTP/2 over TLS"),
    Scenario("h2-tiny-64", "tiny", "h2", 64, TINY_PATH,
             description="13-byte body, 64 requests in flight, HTTP/2 over TLS"),
    Scenario("h1-download", "download", "h1", 4, LARGE_PATH, count=DOWNLOADS,
             description=f"{DOWNLOADS} downloads of 10 MiB, 4 at a time, HTTP/1.1 cleartext"),
    Scenario("h2-download", "download", "h2", 4, LARGE_PATH, count=DOWNLOADS,
             description=f"{DOWNLOADS} downloads of 10 MiB, 4 at a time, HTTP/2 over TLS"),
    Scenario("h1-upload", "upload", "h1", 1, UPLOAD_PATH,
             description="one multipart/form-data POST of a 1 GiB file (256 MiB in --quick), HTTP/1.1 cleartext"),
    # 4 worker processes x 16 tasks against one origin. Without a coordinator
    # each caps itself at 16 connections (64 in all); with it the fleet shares
    # 32, half the demand, so the coordinator has to queue and hand over.
    Scenario("fleet-4w", "fleet", "h1", 64, TINY_PATH, workers=4,
             description="4 worker processes x 16 tasks, 13-byte body, HTTP/1.1; "
                         "per-process cap of 16 connections, no coordinator"),
    Scenario("fleet-4w-coord", "fleet", "h1", 64, TINY_PATH, workers=4, fleet_cap=32,
             only=frozenset({"hyperhttp"}),
             description="4 worker processes x 16 tasks, 13-byte body, HTTP/1.1; "
                         "coordinator caps the fleet at 32 connections"),
)

SCENARIO_BY_NAME = {s.name: s for s in SCENARIOS}


def set_downloads(n: int) -> None:
    """Make the download scenarios move `n` files per run instead of DOWNLOADS.
    Twenty 10 MiB files pass in some 60 ms on loopback, so a fresh
    process's first buffers and fresh connections' TCP receive windows
    weigh in them; more shows the steady state.
    The report's titles follow (they are taken from here)."""
    if n < 1:
        raise ValueError(f"downloads per run must be at least 1, not {n}")
    for name, sc in SCENARIO_BY_NAME.items():
        if sc.kind == "download":
            text = sc.description.replace(f"{sc.count} downloads", f"{n} downloads", 1)
            SCENARIO_BY_NAME[name] = replace(sc, count=n, description=text)


@dataclass(frozen=True)
class ClientSpec:
    """A client implementation and where it can run."""

    name: str
    protos: frozenset[str]
    kinds: frozenset[str] = field(default=frozenset({"tiny", "download", "upload", "fleet"}))
    external: bool = False  # a native load generator, not a Python subprocess
    role: str = "peer"  # "ours" | "peer" | "raw" | "raw-protocol" | "raw-pull" | "ceiling"


CLIENTS: tuple[ClientSpec, ...] = (
    ClientSpec("hyperhttp", frozenset({"h1", "h2"}), role="ours"),
    ClientSpec("hyperhttp-2.1.0", frozenset({"h1", "h2"})),
    ClientSpec("aiohttp", frozenset({"h1"})),  # aiohttp has no HTTP/2
    ClientSpec("httpx", frozenset({"h1", "h2"})),
    ClientSpec("niquests", frozenset({"h1", "h2"})),
    ClientSpec("raw", frozenset({"h1", "h2"}), kinds=frozenset({"tiny", "download", "upload"}),
               role="raw"),
    ClientSpec("raw-protocol", frozenset({"h1", "h2"}), kinds=frozenset({"tiny", "download"}),
               role="raw-protocol"),
    ClientSpec("raw-pull", frozenset({"h1"}), kinds=frozenset({"tiny", "download"}),
               role="raw-pull"),
    ClientSpec("wrk", frozenset({"h1"}), kinds=frozenset({"tiny"}), external=True,
               role="ceiling"),
    ClientSpec("h2load", frozenset({"h1", "h2"}), kinds=frozenset({"tiny", "download", "upload"}),
               external=True, role="ceiling"),
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
        if scenario.only and name not in scenario.only:
            continue
        if spec.external:
            # h2load is the HTTP/1.1 ceiling only where wrk cannot serve (counts).
            if name == "h2load" and scenario.proto == "h1" and scenario.kind == "tiny":
                continue
            out.append((name, "-"))
        else:
            out.extend((name, loop) for loop in loops)
    return out
