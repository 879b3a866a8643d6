"""The `hyperhttp` command: `hyperhttp get|post|put|patch|delete|head|options URL`.

Prints the status line and headers to stdout like curl -i, then the body;
`-o FILE` streams the body to a file with a progress bar on stderr.

Every way the command can end has its own exit status (docs/cli.md lists
them), so a script can tell "the server said no" (1) from "no answer" (2)
from "you asked wrongly" (64) from "a file here is unusable" (74). What a
server sends never reaches a terminal as control bytes: the head is
escaped there, and a binary body is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import ssl
import stat
import sys
import time
import warnings
from typing import IO, Any, BinaryIO, NoReturn

VERBS = ("get", "post", "put", "patch", "delete", "head", "options")

EXIT_HTTP_ERROR = 1  # a response of 400 or more
EXIT_NO_RESPONSE = 2  # the request failed: a HyperHTTPError
EXIT_BINARY_TO_TERMINAL = 3  # a body holding NUL bytes, refused to a terminal
EXIT_USAGE = 64  # EX_USAGE: bad options or arguments
EXIT_LOCAL_FILE = 74  # EX_IOERR: a file or CA bundle on this machine is unusable
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for `cat big | head`

_CHUNK = 1024 * 1024
# C0 controls but tab, DEL, and C1 controls (header text is latin-1, so a
# 0x9b byte arrives as U+009B, which a terminal reads as CSI).
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors exiting `EXIT_USAGE`: its own 2 means "no response" here."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _LocalFileError(Exception):
    """A file named on the command line cannot be used; the message names it."""


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hyperhttp", description="Send HTTP requests with hyperhttp.")
    sub = parser.add_subparsers(dest="command", required=True)  # subparsers are _Parser too
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
        p.add_argument("url", type=_url)
        p.add_argument("-H", "--header", type=_header, action="append", default=[],
                       help="request header 'Name: value' (repeatable)")
        p.add_argument("--json", dest="json_data", type=_json_text,
                       help="JSON text sent as the body")
        p.add_argument("-d", "--data", help="raw body text (use @FILE to send a file)")
        p.add_argument("-o", "--output", help="write the body to this file")
        p.add_argument("--http1", action="store_true", help="offer only HTTP/1.1")
        p.add_argument("-L", "--follow", action="store_true", help="follow redirects")
        p.add_argument("-k", "--insecure", action="store_true",
                       help="do not verify TLS certificates")
        p.add_argument("--cacert", help="CA bundle to verify the server with")
        p.add_argument("--timeout", type=_seconds, default=30.0, help="seconds (default 30)")
        p.add_argument("-q", "--quiet", action="store_true", help="print only the body")
    return parser


# Argument types: the ArgumentTypeError they raise becomes argparse's usage
# error, "argument NAME: MESSAGE", exiting EXIT_USAGE.


def _url(text: str) -> str:
    """`text` unchanged, unless it plainly lacks a scheme ("host:port/path"):
    the command has no base_url to resolve a relative URL against."""
    from ._exceptions import InvalidURL
    from ._urls import URL

    try:
        url = URL(text)
    except InvalidURL:
        return text  # the client reports it, redacted
    if "://" in text or url.scheme in ("http", "https"):
        return text
    guess = ("http:" if text.startswith("//") else "http://") + text
    try:
        shown = URL(guess)
    except InvalidURL:
        shown = None
    if shown is None or not shown.host:
        raise argparse.ArgumentTypeError("URL has no scheme; give one, as in http://HOST/PATH")
    # redacted(): the text may carry a password, which must not be echoed.
    raise argparse.ArgumentTypeError(f"URL has no scheme; did you mean {shown.redacted()!r}?")


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        # Not quoted: a header typed without its colon may be a token.
        raise argparse.ArgumentTypeError("a header needs a name and a colon: 'Name: value'")
    return name.strip(), value.strip()


def _json_text(text: str) -> str:
    """`text`, checked to be JSON; decoded again when the request is built."""
    import msgspec

    try:
        msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"want a number of seconds above 0, not {text!r}")
    return value


def _escape(text: str) -> str:
    """`text` with control characters shown as ``\\xNN``, safe for a terminal."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: IO[str] | None = None, line: str | None = None) -> None:
    """One line per warning. The library's warnings point at the caller's
    line, which for the command is asyncio's internals: no use to show."""
    print(f"hyperhttp: warning: {_escape(str(message))}", file=sys.stderr)


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


def _open(path: str, option: str, files: contextlib.ExitStack, *, write: bool = False) -> BinaryIO:
    """`path` opened to read (or `write`) for `option`, closed with `files`."""
    try:
        # `files` closes them; ruff cannot tell it is an ExitStack, hence SIM115.
        if write:
            fh: BinaryIO = files.enter_context(open(path, "wb"))  # noqa: SIM115
        else:
            fh = files.enter_context(open(path, "rb"))  # noqa: SIM115
        if os.path.isdir(path):  # where opening a directory for reading succeeds
            raise IsADirectoryError(21, "Is a directory")
    except OSError as exc:
        doing = "write" if write else "read"
        raise _LocalFileError(f"cannot {doing} {path!r} ({option}): "
                              f"{exc.strerror or exc}") from None
    return fh


def _file_body(fh: BinaryIO) -> Any:
    """Stream an open file as the request body, with a progress bar on stderr."""
    from ._content import IterableBody

    st = os.fstat(fh.fileno())
    # A pipe or a device (-d @/dev/stdin) has no size: sent chunked.
    size = st.st_size if stat.S_ISREG(st.st_mode) else None

    async def chunks() -> Any:
        progress = _Progress(size, sys.stderr)
        while True:
            chunk = await asyncio.to_thread(fh.read, _CHUNK)
            if not chunk:
                break
            progress.update(len(chunk))
            yield chunk
        progress.update(0, final=True)

    return IterableBody(chunks(), length=size)


def _request_body(args: argparse.Namespace, files: contextlib.ExitStack) -> dict[str, Any]:
    if args.json_data is not None:
        # Sent as typed, as curl does: `null` is a JSON body too, where the
        # library's json=None would mean "no body".
        if not any(name.lower() == "content-type" for name, _ in args.header):
            args.header.append(("Content-Type", "application/json"))
        return {"content": args.json_data.encode()}
    if args.data is None:
        return {}
    if args.data.startswith("@"):
        return {"content": _file_body(_open(args.data[1:], "-d @FILE", files))}
    return {"content": args.data.encode()}


def _client(args: argparse.Namespace) -> Any:
    import hyperhttp

    verify: bool | str = args.cacert or not args.insecure
    try:
        return hyperhttp.Client(
            http2=not args.http1, verify=verify, timeout=args.timeout,
            follow_redirects=args.follow,
        )
    except OSError as exc:  # the CA bundle, read when the client is built
        if not args.cacert:
            raise
        if isinstance(exc, FileNotFoundError):
            reason = "no such file or directory"
        elif isinstance(exc, ssl.SSLError):
            reason = f"not a CA bundle ({exc.reason or exc})"
        else:
            reason = exc.strerror or str(exc)
        raise _LocalFileError(f"cannot use CA bundle {args.cacert!r} (--cacert): "
                              f"{reason}") from None


def _print_head(response: Any) -> None:
    lines = [f"{response.http_version} {response.status_code} {response.reason_phrase}"]
    lines += [f"{name}: {value}" for name, value in response.headers.multi_items()]
    if sys.stdout.isatty():
        lines = [_escape(line) for line in lines]
    sys.stdout.write("\n".join(lines) + "\n\n")
    sys.stdout.flush()  # before the body goes to sys.stdout.buffer


async def _print_body(response: Any) -> int:
    """Write the body to stdout, byte for byte; to a terminal, only if it is text."""
    out = sys.stdout.buffer
    terminal = out.isatty()
    async for chunk in response.aiter_bytes():
        if terminal and b"\0" in chunk:
            out.flush()
            print("hyperhttp: not printing a binary body to the terminal; "
                  "save it with -o FILE or pipe it (| less, > FILE)", file=sys.stderr)
            return EXIT_BINARY_TO_TERMINAL
        out.write(chunk)
    out.flush()
    return 0


def _expected_size(response: Any) -> int | None:
    """How many bytes -o will write, if the head says: Content-Length counts
    the bytes on the wire, which are what -o writes only when not encoded."""
    coding = response.headers.get("content-encoding", "").strip().lower()
    length = response.headers.get("content-length")
    if coding not in ("", "identity") or not length or not length.isdigit():
        return None
    return int(length)


async def _save_body(response: Any, fh: BinaryIO, path: str) -> None:
    """Write the (decoded) body to `fh`, with a progress bar on stderr."""
    progress = _Progress(_expected_size(response), sys.stderr)
    async for chunk in response.aiter_bytes():
        try:
            fh.write(chunk)
        except OSError as exc:
            raise _LocalFileError(f"cannot write {path!r} (-o): {exc.strerror or exc}") from None
        progress.update(len(chunk))
    progress.update(0, final=True)


async def _run(args: argparse.Namespace) -> int:
    # Everything local is checked before anything is sent: the body file,
    # the CA bundle, then the output file (last, as opening creates it).
    with contextlib.ExitStack() as files:
        kwargs = _request_body(args, files)
        client = _client(args)
        sink = _open(args.output, "-o", files, write=True) if args.output else None
        async with client, client.stream(args.command.upper(), args.url,
                                         headers=args.header, **kwargs) as response:
            if not args.quiet:
                _print_head(response)
            if sink is not None:
                await _save_body(response, sink, args.output)
            elif status := await _print_body(response):
                return status
        return 0 if response.status_code < 400 else EXIT_HTTP_ERROR


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


def _dispatch(argv: list[str] | None) -> int:
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
        print(f"hyperhttp: {type(exc).__name__}: {_escape(str(exc))}", file=sys.stderr)
        return EXIT_NO_RESPONSE
    except _LocalFileError as exc:
        print(f"hyperhttp: {_escape(str(exc))}", file=sys.stderr)
        return EXIT_LOCAL_FILE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that flushing what is still buffered
    when the interpreter exits does not fail a second time, with a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind sys.stdout
        pass
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns its exit status."""
    with warnings.catch_warnings():  # restores showwarning: the library's own is untouched
        warnings.showwarning = _show_warning
        try:
            status = _dispatch(argv)
            sys.stdout.flush()  # a reader gone away shows here, not at interpreter exit
        except BrokenPipeError:  # `hyperhttp get URL | head`: quietly, as cat does
            _discard_stdout()
            return EXIT_PIPE_CLOSED
    return status
