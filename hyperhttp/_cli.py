"""The `hyperhttp` command: `hyperhttp get|post|put|patch|delete|head|options URL`.

Prints the status line and headers to stderr-free stdout like curl -i, then
the body; `-o FILE` streams the body to a file with a progress bar on
stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import IO, Any

VERBS = ("get", "post", "put", "patch", "delete", "head", "options")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyperhttp", description="Send HTTP requests with hyperhttp."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    coordinator = sub.add_parser(
        "coordinator", help="start, stop or inspect a fleet coordinator"
    )
    from .shared._cli import add_arguments

    add_arguments(coordinator)
    demo = sub.add_parser("demo", help="run the self-contained tour on loopback")
    demo.add_argument("--requests", type=int, default=200)
    demo.add_argument("--workers", type=int, default=4)
    demo.add_argument("--cap", type=int, default=6, help="fleet-wide connection cap")
    demo.add_argument("--no-fleet", action="store_true", help="skip the fleet part")
    for verb in VERBS:
        p = sub.add_parser(verb, help=f"send a {verb.upper()} request")
        p.add_argument("url")
        p.add_argument("-H", "--header", action="append", default=[],
                       help="request header 'Name: value' (repeatable)")
        p.add_argument("--json", dest="json_data", help="JSON text sent as the body")
        p.add_argument("-d", "--data", help="raw body text (use @FILE to send a file)")
        p.add_argument("-o", "--output", help="write the body to this file")
        p.add_argument("--http1", action="store_true", help="offer only HTTP/1.1")
        p.add_argument("-L", "--follow", action="store_true", help="follow redirects")
        p.add_argument("-k", "--insecure", action="store_true",
                       help="do not verify TLS certificates")
        p.add_argument("--cacert", help="CA bundle to verify the server with")
        p.add_argument("--timeout", type=float, default=30.0)
        p.add_argument("-q", "--quiet", action="store_true", help="print only the body")
    return parser


def _headers(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for raw in values:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"hyperhttp: bad header {raw!r}; use 'Name: value'")
        out.append((name.strip(), value.strip()))
    return out


class _Progress:
    def __init__(self, total: int | None, stream: IO[str]) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.started = time.monotonic()
        self.last = 0.0

    def update(self, n: int, *, final: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if not final and now - self.last < 0.1:
            return
        self.last = now
        rate = self.done / max(now - self.started, 1e-6) / 1e6
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            line = f"\r[{bar:<30}] {frac:6.1%} {self.done}/{self.total} bytes {rate:.1f} MB/s"
        else:
            line = f"\r{self.done} bytes {rate:.1f} MB/s"
        self.stream.write(line + ("\n" if final else ""))
        self.stream.flush()


def _file_body(path: str) -> Any:
    """Stream a file as the request body, with a progress bar on stderr."""
    import os

    from ._content import IterableBody

    size = os.path.getsize(path)

    async def chunks() -> Any:
        progress = _Progress(size, sys.stderr)
        with open(path, "rb") as fh:
            while True:
                chunk = await asyncio.to_thread(fh.read, 1024 * 1024)
                if not chunk:
                    break
                progress.update(len(chunk))
                yield chunk
        progress.update(0, final=True)

    return IterableBody(chunks(), length=size)


async def _run(args: argparse.Namespace) -> int:
    import hyperhttp

    kwargs: dict[str, Any] = {"headers": _headers(args.header)}
    if args.json_data is not None:
        import msgspec

        try:
            kwargs["json"] = msgspec.json.decode(args.json_data)
        except msgspec.DecodeError as exc:
            raise SystemExit(f"hyperhttp: --json is not valid JSON: {exc}") from None
    elif args.data is not None:
        if args.data.startswith("@"):
            kwargs["content"] = _file_body(args.data[1:])
        else:
            kwargs["content"] = args.data.encode()
    verify: bool | str = args.cacert or not args.insecure
    async with hyperhttp.Client(
        http2=not args.http1, verify=verify, timeout=args.timeout,
        follow_redirects=args.follow,
    ) as client:
        async with client.stream(args.command.upper(), args.url, **kwargs) as response:
            if not args.quiet:
                print(f"{response.http_version} {response.status_code} {response.reason_phrase}")
                for name, value in response.headers.multi_items():
                    print(f"{name}: {value}")
                print()
            if args.output:
                length = response.headers.get("content-length")
                progress = _Progress(int(length) if length and length.isdigit() else None,
                                     sys.stderr)
                with open(args.output, "wb") as fh:
                    async for chunk in response.aiter_bytes():
                        fh.write(chunk)
                        progress.update(len(chunk))
                progress.update(0, final=True)
            else:
                out = sys.stdout.buffer
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
                out.flush()
        return 0 if response.status_code < 400 else 1


def _coordinator(args: argparse.Namespace) -> int:
    import hyperhttp

    from .shared._cli import start_cli, status_cli, stop_cli

    if args.action == "start":
        return start_cli(args)
    if args.action == "stop":
        return stop_cli(args)
    try:
        print(status_cli(args))
    except hyperhttp.CoordinatorError as exc:
        print(f"hyperhttp coordinator: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import hyperhttp

    if args.command == "coordinator":
        return _coordinator(args)
    if args.command == "demo":
        from ._demo.tour import run

        return run(requests=args.requests, workers=args.workers, cap=args.cap,
                   fleet=not args.no_fleet)

    try:
        return asyncio.run(_run(args))
    except hyperhttp.HyperHTTPError as exc:
        print(f"hyperhttp: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
