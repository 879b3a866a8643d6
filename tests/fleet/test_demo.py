"""`hyperhttp demo`, the README's main command, runs and shows what it claims."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_and_the_fleet_cap_holds(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    os.chmod(tmp_path, 0o700)
    result = subprocess.run(
        [sys.executable, "-m", "hyperhttp", "demo", "--requests", "60", "--workers", "3"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    out = result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert "over ['HTTP/2']" in out  # part 1 multiplexed over HTTP/2
    assert "the cap held" in out  # part 2: one client's cap, at the server
    assert "SIGKILL worker" in out and "its slots came back" in out
    assert "the fleet cap held" in out and "(0 failed)" in out
