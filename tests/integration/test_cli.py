"""The `hyperhttp` command, run as `python -m hyperhttp` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.app import FIXED_JSON, pattern_bytes
from tests.support.servers import ServerHandle

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # No proxy from the environment may divert a loopback request.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "hyperhttp", *args],
        capture_output=True, timeout=60, cwd=ROOT, env=env, check=False,
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
    assert result.returncode != 0
    assert split_output(result.stdout)[0].startswith("HTTP/1.1 404")
    assert run("get", http_server.url + "/status/503").returncode != 0


def test_connection_error_is_reported(http_server: ServerHandle) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        result = run("get", f"http://127.0.0.1:{sock.getsockname()[1]}/")
    finally:
        sock.close()
    assert result.returncode not in (0, 1)
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
