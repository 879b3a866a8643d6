"""Pure modules import no I/O machinery (DESIGN.md section 1).

Each module is imported in a fresh interpreter. `hyperhttp/__init__.py`
imports the Client (and so asyncio) on purpose, so the package itself is
replaced by an empty stub with the real `__path__`: what is checked is the
module's own import graph. When a forbidden module is imported, the import
chain through hyperhttp modules is reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("asyncio", "socket", "ssl", "selectors")

PURE_MODULES = [
    "hyperhttp._urls",
    "hyperhttp._headers",
    "hyperhttp._config",
    "hyperhttp._exceptions",
    "hyperhttp._content",
    "hyperhttp._models",
    "hyperhttp._redirects",
    "hyperhttp._proto.http11",
    "hyperhttp._auth",
    "hyperhttp._multipart",
    "hyperhttp._multipart_io",
    "hyperhttp._cookies",
    "hyperhttp._decoders",
    "hyperhttp._proxy",
    "hyperhttp._noproxy",
    "hyperhttp.errors",
    "hyperhttp.errors.classify",
    "hyperhttp.errors.retry",
    "hyperhttp.errors.circuit_breaker",
    "hyperhttp.errors.telemetry",
    "hyperhttp.utils",
    "hyperhttp.utils.backoff",
]

PROBE = r"""
import importlib, importlib.abc, json, sys, traceback, types

root, target, forbidden = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
already = sorted(name for name in forbidden if name in sys.modules)
culprits = {}

class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in forbidden and name not in culprits:
            frames = [f"{f.filename.split(root)[-1]}:{f.lineno}"
                      for f in traceback.extract_stack()
                      if root in f.filename and "<frozen" not in f.filename]
            culprits[name] = frames
        return None

sys.meta_path.insert(0, Spy())
sys.path.insert(0, root)
stub = types.ModuleType("hyperhttp")
stub.__path__ = [root + "/hyperhttp"]
stub.__version__ = "0.0.0"
sys.modules["hyperhttp"] = stub
importlib.import_module(target)
loaded = sorted(name for name in forbidden if name in sys.modules)
print(json.dumps({"already": already, "loaded": loaded, "culprits": culprits}))
"""


def probe(module: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT), module, ",".join(FORBIDDEN)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def test_interpreter_starts_clean() -> None:
    # Otherwise the check below would prove nothing.
    data = probe("hyperhttp._exceptions")
    assert data["already"] == []


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io(module: str) -> None:
    data = probe(module)
    assert data["loaded"] == [], (
        f"{module} imports {data['loaded']}; import chains: {data['culprits']}"
    )


def test_probe_detects_an_impure_module() -> None:
    # The transport layer does use asyncio: the probe must notice.
    data = probe("hyperhttp._backends.stream")
    assert "asyncio" in data["loaded"]  # type: ignore[operator]
