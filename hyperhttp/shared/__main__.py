"""``python -m hyperhttp.shared``: run a fleet coordinator in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from .._exceptions import CoordinatorError
from ._runtime import paths_for
from ._server import CoordinatorServer, ServerConfig


def _cap(text: str) -> int | None:
    if text.lower() in {"none", "unlimited", "0"}:
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer or 'none'")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hyperhttp.shared",
        description="Run a hyperhttp fleet coordinator in the foreground.",
    )
    add_server_arguments(parser)
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="INFO")
    return parser


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by this entry point and ``hyperhttp coordinator start``."""
    parser.add_argument("--name", default="default", help="coordinator name (one per user)")
    parser.add_argument("--runtime-dir", default=None, help="directory for socket and lock")
    parser.add_argument("--socket", default=None, help="explicit socket path")
    parser.add_argument("--max-connections", type=_cap, default=200,
                        help="fleet-wide cap over all hosts ('none' for no cap)")
    parser.add_argument("--max-connections-per-host", type=_cap, default=32,
                        help="fleet-wide cap per host:port ('none' for no cap)")
    parser.add_argument("--dns-ttl", type=float, default=60.0,
                        help="upper bound in seconds on shared DNS answers")
    parser.add_argument("--grace", type=float, default=None,
                        help="seconds to wait for re-declared leases before granting "
                             "(default 2, or 0 at the first start at a path)")
    parser.add_argument("--exit-when-idle", type=float, default=None,
                        help="exit after this many seconds without workers")
    parser.add_argument("--backend", default=None,
                        help="redis://host:port/db: share the caps and breakers with the "
                             "coordinators of other hosts (needs the 'redis' extra)")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    paths = paths_for(args.name, runtime_dir=args.runtime_dir, socket_path=args.socket)
    return ServerConfig(
        paths=paths,
        max_connections=args.max_connections,
        max_connections_per_host=args.max_connections_per_host,
        dns_ttl=args.dns_ttl,
        grace=args.grace,
        exit_when_idle=args.exit_when_idle,
        backend=getattr(args, "backend", None),
    )


def _report(fd: int | None, line: str) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, (line + "\n").encode())
        os.close(fd)


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    ready_fd: int | None = getattr(args, "ready_fd", None)
    try:
        server = CoordinatorServer(config_from_args(args))
        server.open()
    except (CoordinatorError, OSError, ValueError, ImportError) as exc:
        _report(ready_fd, f"error {exc}")
        print(f"hyperhttp coordinator: {exc}", file=sys.stderr)
        return 3

    def ready(address: str) -> None:
        _report(ready_fd, f"ready {address}")

    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(server.serve(ready))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s hyperhttp-coordinator[%(process)d] %(levelname)s %(message)s",
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
