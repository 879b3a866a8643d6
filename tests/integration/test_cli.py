"""The `hyperhttp` command, run as `python -m hyperhttp` in a subprocess."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hyperhttp import _cli
from tests.support.app import FIXED_JSON, pattern_bytes
from tests.support.fixtures import RawServerFactory
from tests.support.raw import canned
from tests.support.servers import ServerHandle

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # No proxy from the environment may divert a loopback request.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        env.pop(name, None)
    return env


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "hyperhttp", *args],
        capture_output=True, timeout=60, cwd=ROOT, env=_env(), check=False,
    )


def split_output(stdout: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = stdout.partition(b"\n\n")
    lines = head.decode("latin-1").splitlines()
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return lines[0], headers, body


def test_get_prints_status_headers_and_body(http_server: ServerHandle) -> None:
    result = run("get", http_server.url + "/json")
    assert result.returncode == 0, result.stderr
    status, headers, body = split_output(result.stdout)
    assert status.startswith("HTTP/1.1 200")
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == FIXED_JSON


def test_header_option(http_server: ServerHandle) -> None:
    result = run("get", http_server.url + "/echo", "-H", "X-One: 1", "-H", "X-Two:two words")
    assert result.returncode == 0, result.stderr
    _, _, body = split_output(result.stdout)
    seen = json.loads(body)["headers"]
    assert ["x-one", "1"] in seen
    assert ["x-two", "two words"] in seen


def test_json_null_is_sent_as_a_json_body(http_server: ServerHandle) -> None:
    # json=None means "no body" to the library; the CLI sent nothing.
    result = run("post", http_server.url + "/echo", "--json", "null")
    assert result.returncode == 0, result.stderr
    seen = json.loads(split_output(result.stdout)[2])
    assert seen["body"] == "null"
    assert ["content-type", "application/json"] in seen["headers"]


def test_data_from_a_pipe_is_sent_whole(http_server: ServerHandle) -> None:
    # Its fstat size is 0: the body went out as Content-Length: 0.
    payload = b"from a pipe\n" * 1000
    result = subprocess.run(
        [sys.executable, "-m", "hyperhttp", "post", http_server.url + "/echo", "-d",
         "@/dev/stdin"],
        input=payload, capture_output=True, timeout=60, cwd=ROOT, env=_env(), check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(split_output(result.stdout)[2])
    assert seen["body"] == payload.decode()
    assert ["transfer-encoding", "chunked"] in seen["headers"]


def test_json_option_posts_json(http_server: ServerHandle) -> None:
    result = run("post", http_server.url + "/echo", "--json", '{"a": [1, 2]}')
    assert result.returncode == 0, result.stderr
    seen = json.loads(split_output(result.stdout)[2])
    assert seen["method"] == "POST"
    assert json.loads(seen["body"]) == {"a": [1, 2]}
    assert ["content-type", "application/json"] in seen["headers"]


def test_quiet_prints_only_the_body(http_server: ServerHandle) -> None:
    result = run("get", "-q", http_server.url + "/bytes/1000")
    assert result.returncode == 0, result.stderr
    assert result.stdout == pattern_bytes(1000)


def test_output_file_and_progress(http_server: ServerHandle, tmp_path: Path) -> None:
    target = tmp_path / "download.bin"
    result = run("get", http_server.url + "/bytes/300000", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == pattern_bytes(300_000)
    assert b"300000" not in split_output(result.stdout)[2]  # the body went to the file
    progress = result.stderr.decode()
    assert "300000/300000" in progress
    assert "100.0%" in progress


def test_non_2xx_exit_code(http_server: ServerHandle) -> None:
    result = run("get", http_server.url + "/status/404")
    assert result.returncode == _cli.EXIT_HTTP_ERROR == 1
    assert split_output(result.stdout)[0].startswith("HTTP/1.1 404")
    assert run("get", http_server.url + "/status/503").returncode == 1


def test_connection_error_is_reported(http_server: ServerHandle) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        result = run("get", f"http://127.0.0.1:{sock.getsockname()[1]}/")
    finally:
        sock.close()
    assert result.returncode == _cli.EXIT_NO_RESPONSE == 2
    assert b"ConnectError" in result.stderr
    assert b"Traceback" not in result.stderr


def test_cacert(https_h1_server: ServerHandle, ca_pem_path: str) -> None:
    result = run("get", "--http1", "--cacert", ca_pem_path, https_h1_server.url + "/echo")
    assert result.returncode == 0, result.stderr
    seen = json.loads(split_output(result.stdout)[2])
    assert seen["scheme"] == "https"
    untrusted = run("get", "--http1", https_h1_server.url + "/echo")
    assert untrusted.returncode not in (0, 1)
    assert b"TLSError" in untrusted.stderr
    assert b"localhost" in untrusted.stderr


def test_follow_redirects_option(http_server: ServerHandle) -> None:
    result = run("get", "-L", http_server.url + "/redirect/2")
    assert result.returncode == 0, result.stderr
    assert json.loads(split_output(result.stdout)[2])["path"] == "/echo"
    unfollowed = run("get", http_server.url + "/redirect/2")
    assert split_output(unfollowed.stdout)[0].startswith("HTTP/1.1 302")


def test_data_from_file_is_uploaded(http_server: ServerHandle, tmp_path: Path) -> None:
    source = tmp_path / "upload.bin"
    source.write_bytes(pattern_bytes(20_000))
    result = run("post", "-q", "-d", f"@{source}", http_server.url + "/echo")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["body_length"] == 20_000
    assert seen["body"].encode("latin-1") == pattern_bytes(20_000)


def test_upload_from_file_shows_progress(http_server: ServerHandle, tmp_path: Path) -> None:
    # basic-usage.md: "a progress bar for downloads and uploads to and from files".
    source = tmp_path / "upload.bin"
    source.write_bytes(pattern_bytes(200_000))
    result = run("post", "-q", "-d", f"@{source}", http_server.url + "/echo")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["body_length"] == 200_000
    assert "200000" in result.stderr.decode(), "no upload progress on stderr"


# Exit statuses: each outcome its own, all documented.


def test_every_exit_status_is_documented() -> None:
    codes = {value for name, value in vars(_cli).items() if name.startswith("EXIT_")}
    assert len(codes) == len([n for n in vars(_cli) if n.startswith("EXIT_")])  # all distinct
    table = (ROOT / "docs" / "cli.md").read_text().partition("## Exit status")[2]
    documented = {int(m) for m in re.findall(r"^\| `(\d+)` \|", table, re.MULTILINE)}
    assert documented == codes | {0}


# Standard output closed early: `hyperhttp get URL | head`.


def test_reader_leaving_mid_body_ends_quietly(http_server: ServerHandle) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperhttp", "get", "-q", http_server.url + "/bytes/4000000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stdout.read(10) == pattern_bytes(10)
        proc.stdout.close()  # 4 MB do not fit in the pipe: the next write fails
        err = proc.stderr.read()
        assert proc.wait(60) == _cli.EXIT_PIPE_CLOSED == 141
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert err == b""


def test_reader_gone_before_output_ends_quietly(http_server: ServerHandle) -> None:
    # Nothing reads at all: the head, buffered, fails only when flushed.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "hyperhttp", "get", http_server.url + "/json"],
            stdout=write_end, stderr=subprocess.PIPE, timeout=60, cwd=ROOT, env=_env(),
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == _cli.EXIT_PIPE_CLOSED
    assert result.stderr == b""  # not even "Exception ignored ... BrokenPipeError"


# Local files: one line naming the file, EXIT_LOCAL_FILE, nothing sent.

_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.mark.parametrize(("option", "name", "reason"), [
    ("-d", "@missing", "No such file or directory"),
    ("-d", "@.", "Is a directory"),
    ("-o", "missing/out", "No such file or directory"),
    ("--cacert", "missing.pem", "no such file or directory"),
    ("--cacert", "junk.pem", "not a CA bundle"),
])
def test_unusable_local_file(raw_server: RawServerFactory, tmp_path: Path, option: str,
                             name: str, reason: str) -> None:
    (tmp_path / "junk.pem").write_text("junk\n")
    path = str(tmp_path / name.lstrip("@")) if name != "@." else str(tmp_path)
    value = "@" + path if name.startswith("@") else path
    server = raw_server(canned(_ANSWER), tls=option == "--cacert")
    result = run("put", server.url + "/x", option, value)
    assert result.returncode == _cli.EXIT_LOCAL_FILE == 74
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hyperhttp: ") and f"{path!r} ({option}" in lines[0]
    assert reason in lines[0]
    assert server.accepted == 0  # nothing was sent that could not be completed
    assert not (tmp_path / "missing").exists()


# Usage errors: argparse's message, EXIT_USAGE.


@pytest.mark.parametrize("args", [
    ["--timeout", "-1"], ["--timeout", "nan"], ["--timeout", "inf"], ["--timeout", "0"],
    ["--timeout", "soon"], ["-H", "NoColon"], ["--json", "{x"], ["--no-such-option"],
])
def test_usage_errors(args: list[str]) -> None:
    result = run("post", "http://127.0.0.1:9/never", *args)
    assert result.returncode == _cli.EXIT_USAGE == 64, result.stderr
    assert b"Traceback" not in result.stderr
    assert re.match(r"hyperhttp( post)?: error: ", result.stderr.decode().splitlines()[-1])


def test_a_header_without_its_colon_is_not_echoed() -> None:
    # It may be a token typed as "Authorization Bearer ...".
    result = run("get", "http://127.0.0.1:9/never", "-H", "Authorization Bearer s3cr3t-t0ken")
    assert result.returncode == _cli.EXIT_USAGE
    assert b"s3cr3t-t0ken" not in result.stderr
    assert "a header needs a name and a colon: 'Name: value'" in result.stderr.decode()


def test_missing_command_is_a_usage_error() -> None:
    assert run().returncode == _cli.EXIT_USAGE


def test_url_without_scheme_suggests_one_and_hides_the_password() -> None:
    result = run("get", "user:s3cretpw@127.0.0.1:9/x")
    assert result.returncode == _cli.EXIT_USAGE
    error = result.stderr.decode().splitlines()[-1]
    assert error.endswith(
        "URL has no scheme; did you mean 'http://user:[secure]@127.0.0.1:9/x'?"), error
    assert b"s3cretpw" not in result.stderr
    assert b"base_url" not in result.stderr
    assert "did you mean 'http://127.0.0.1:9/x'?" in run("get", "//127.0.0.1:9/x").stderr.decode()


# Warnings: one line, in the command only.


def test_insecure_warning_is_one_line(https_server: ServerHandle) -> None:
    result = run("get", "-k", "-q", https_server.url + "/json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == FIXED_JSON
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("hyperhttp: warning: TLS certificate verification is disabled")


def test_warning_format_is_restored_after_the_command(https_server: ServerHandle) -> None:
    code = ("import warnings, hyperhttp._cli as cli; "
            f"cli.main(['get', '-k', '-q', {https_server.url + '/json'!r}]); "
            "warnings.warn('after the command', UserWarning)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                            cwd=ROOT, env=_env(), check=False)
    err = result.stderr.decode()
    assert "hyperhttp: warning: TLS certificate verification" in err
    assert "UserWarning: after the command" in err  # Python's own format again


# -o writes the decoded body; the progress total must count the same bytes.


def test_output_progress_of_a_compressed_body(http_server: ServerHandle, tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    result = run("get", "-q", http_server.url + "/gzip?pad=100000", "-o", str(target))
    assert result.returncode == 0, result.stderr
    body = target.read_bytes()
    assert json.loads(body)["pad"] == "x" * 100_000  # decoded, as printing would show it
    progress = result.stderr.decode()
    assert not re.search(r"\d+/\d+ bytes", progress), progress  # no compressed total
    assert f"\r{len(body)} bytes" in progress


# A hostile server and a terminal: the head escaped, a binary body refused.

_HOSTILE_HEAD = (b"HTTP/1.1 200 O\x1b[2JK\r\nX-Evil: a\x1b]0;pwned\x07b\x9b\tc\x7f\r\n"
                 b"Content-Length: 2\r\n\r\nok")
_BINARY_BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nab\x00\x1b[2Jz"


def run_on_terminal(*args: str) -> tuple[int, bytes, bytes]:
    """Run the command with stdout on a pseudo-terminal: (status, what the
    terminal received, stderr)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "hyperhttp", *args], stdout=slave,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT,
                                env=_env())
    finally:
        os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command has closed the terminal
                break
            if not data:
                break
            shown += data
        assert proc.stderr is not None
        err = proc.stderr.read()
        status = proc.wait(60)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        if proc.stderr is not None:
            proc.stderr.close()
    return status, bytes(shown), err


def test_terminal_sees_control_bytes_of_the_head_escaped(raw_server: RawServerFactory) -> None:
    server = raw_server(canned(_HOSTILE_HEAD))
    status, shown, _ = run_on_terminal("get", server.url + "/")
    assert status == 0
    assert b"HTTP/1.1 200 O\\x1b[2JK" in shown
    assert b"X-Evil: a\\x1b]0;pwned\\x07b\\x9b\tc\\x7f" in shown
    assert b"\x1b" not in shown and b"\x07" not in shown and "\x9b".encode() not in shown
    piped = run("get", server.url + "/")  # a pipe gets the head as sent
    assert b"X-Evil: a\x1b]0;pwned\x07b" in piped.stdout


def test_terminal_refuses_a_binary_body(raw_server: RawServerFactory, tmp_path: Path) -> None:
    server = raw_server(canned(_BINARY_BODY))
    status, shown, err = run_on_terminal("get", server.url + "/")
    assert status == _cli.EXIT_BINARY_TO_TERMINAL == 3
    assert b"\x00" not in shown and b"\x1b" not in shown
    lines = err.decode().splitlines()
    assert len(lines) == 1 and "-o FILE" in lines[0] and lines[0].startswith("hyperhttp: ")
    assert run("get", "-q", server.url + "/").stdout == b"ab\x00\x1b[2Jz"  # pipes: as sent
    target = tmp_path / "body.bin"
    status, _, _ = run_on_terminal("get", "-q", server.url + "/", "-o", str(target))
    assert status == 0
    assert target.read_bytes() == b"ab\x00\x1b[2Jz"
