"""The command-line functions, `python -m hyperhttp.shared`, and the gunicorn hooks."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hyperhttp import CoordinatorError
from hyperhttp.shared import ENV_VAR, Coordinator, fleet_status
from hyperhttp.shared._cli import add_arguments, start_cli, status_cli, stop_cli
from hyperhttp.shared.gunicorn import fleet_hooks

from .conftest import ROOT, wait_for


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_start_status_stop(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--runtime-dir", str(short_tmp / "c")]
    assert start_cli(_args("start", *common, "--max-connections", "7",
                           "--max-connections-per-host", "none")) == 0
    out = capsys.readouterr().out
    assert f"{ENV_VAR}={short_tmp / 'c' / 'coordinator.sock'}" in out
    text = status_cli(_args("status", *common))
    assert "caps: 7 total, None per host" in text and "leases: 0 held, 0 waiting" in text
    assert '"max_connections": 7' in status_cli(_args("status", *common, "--json"))
    assert start_cli(_args("start", *common)) == 1  # one per directory
    refused = capsys.readouterr()
    assert "already running" in refused.err and refused.out == ""  # errors on stderr
    assert stop_cli(_args("stop", *common)) == 0
    with pytest.raises(CoordinatorError):
        status_cli(_args("status", *common))
    capsys.readouterr()
    assert stop_cli(_args("stop", *common)) == 1
    not_running = capsys.readouterr()
    assert not_running.err.startswith("hyperhttp coordinator: ") and not_running.out == ""


def test_module_runs_in_the_foreground_and_stops_on_sigterm(short_tmp: Path) -> None:
    sock = short_tmp / "fg" / "coordinator.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperhttp.shared", "--runtime-dir", str(sock.parent),
         "--max-connections", "3"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: sock.exists(), timeout=10)
        wait_for(lambda: _answers(str(sock)), timeout=5)
        assert fleet_status(str(sock))["max_connections"] == 3
        proc.terminate()
        assert proc.wait(10) == 0
        assert not sock.exists()  # a clean stop removes its socket
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _answers(address: str) -> bool:
    try:
        fleet_status(address)
    except CoordinatorError:
        return False
    return True


def test_gunicorn_hooks_start_export_and_stop(monkeypatch: pytest.MonkeyPatch,
                                              short_tmp: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_tmp))
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("HYPERHTTP_MAX_CONNECTIONS_PER_HOST", "5")
    on_starting, on_exit = fleet_hooks(max_connections=50)

    class Server:
        class log:  # mimics gunicorn's arbiter.log
            @staticmethod
            def info(*args: object) -> None:
                pass

    on_starting(Server())
    address = os.environ[ENV_VAR]
    assert address.startswith(str(short_tmp / "hyperhttp"))
    st = fleet_status(address)
    assert (st["max_connections"], st["max_connections_per_host"]) == (50, 5)
    on_exit(Server())
    assert ENV_VAR not in os.environ
    with pytest.raises(CoordinatorError):
        fleet_status(address)


def test_launch_reports_why_it_could_not_start(short_tmp: Path) -> None:
    with Coordinator.launch(runtime_dir=short_tmp / "x") as coord:
        assert coord.is_running()
        with pytest.raises(CoordinatorError, match="already running"):
            Coordinator.launch(runtime_dir=short_tmp / "x")
    assert not coord.is_running()
