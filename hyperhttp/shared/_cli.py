"""``hyperhttp coordinator start|stop|status``: functions the main CLI calls.

Each takes the parsed `argparse.Namespace` from a parser built with
`add_arguments`, and returns the process exit status (status also prints).
Errors go to stderr, so stdout only ever holds what a script may parse.
"""

from __future__ import annotations

import argparse
import json
import sys

from .._exceptions import CoordinatorError
from ._connect import fleet_status, stop_coordinator
from ._launch import Coordinator
from ._runtime import paths_for

__all__ = ["add_arguments", "format_status", "start_cli", "status_cli", "stop_cli"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``start|stop|status`` and their options to `parser`."""
    from .__main__ import add_server_arguments

    parser.add_argument("action", choices=["start", "stop", "status"])
    add_server_arguments(parser)
    parser.add_argument("--foreground", action="store_true", help="start: do not detach")
    parser.add_argument("--json", action="store_true", help="status: print JSON")


def start_cli(args: argparse.Namespace) -> int:
    """Start a coordinator (in the background unless --foreground); prints its address."""
    if getattr(args, "foreground", False):
        from .__main__ import run

        return run(args)
    try:
        coord = Coordinator.launch(
            args.name, max_connections=args.max_connections,
            max_connections_per_host=args.max_connections_per_host, dns_ttl=args.dns_ttl,
            runtime_dir=args.runtime_dir, socket_path=args.socket, detach=True,
            backend=getattr(args, "backend", None),
        ).detach()
    except CoordinatorError as exc:
        print(f"hyperhttp coordinator: {exc}", file=sys.stderr)
        return 1
    print(f"coordinator {args.name} running, pid {coord.pid}")
    print(f"export HYPERHTTP_COORDINATOR={coord.address}")
    return 0


def stop_cli(args: argparse.Namespace) -> int:
    try:
        pid = stop_coordinator(paths_for(args.name, runtime_dir=args.runtime_dir,
                                         socket_path=args.socket))
    except CoordinatorError as exc:
        print(f"hyperhttp coordinator: {exc}", file=sys.stderr)
        return 1
    print(f"stopped coordinator pid {pid}")
    return 0


def status_cli(args: argparse.Namespace) -> str:
    """The fleet status as text (or JSON with --json); raises CoordinatorError."""
    st = fleet_status(paths_for(args.name, runtime_dir=args.runtime_dir, socket_path=args.socket))
    if getattr(args, "json", False):
        return json.dumps(st, indent=2, sort_keys=True)
    return format_status(st)


def format_status(st: dict[str, object]) -> str:
    """A human summary of `fleet_status()`."""
    lines = [
        f"coordinator pid {st['pid']} at {st['address']} (up {st['uptime']}s"
        + (", grace period" if st.get("grace") else "") + ")",
        f"caps: {st['max_connections']} total, {st['max_connections_per_host']} per host; "
        f"dns_ttl {st['dns_ttl']}s",
        f"leases: {st['leases']} held, {st['waiting']} waiting",
    ]
    per_host = st.get("per_host") or {}
    waiting = st.get("waiting_per_host") or {}
    assert isinstance(per_host, dict) and isinstance(waiting, dict)
    for host in sorted(set(per_host) | set(waiting)):
        lines.append(f"  {host}: {per_host.get(host, 0)} held, {waiting.get(host, 0)} waiting")
    workers = st.get("workers") or []
    assert isinstance(workers, list)
    lines.append(f"workers: {len(workers)}")
    for w in workers:
        lines.append(f"  pid {w['pid']}: {w['leases']} held, {w['waiting']} waiting")
    breakers = st.get("breakers") or {}
    assert isinstance(breakers, dict)
    lines.append(f"breakers: {len(breakers)}")
    for key, b in breakers.items():
        lines.append(f"  {key}: {b['state']} (remaining {b['remaining']}s, "
                     f"failures {b['failures']}, probe {'busy' if b['probe_in_flight'] else 'free'})")
    dns = st.get("dns") or {}
    assert isinstance(dns, dict)
    lines.append(f"dns: {len(dns)}")
    for key, d in dns.items():
        lines.append(f"  {key}: {', '.join(d['addresses'])} (expires in {d['expires_in']}s)")
    return "\n".join(lines)
