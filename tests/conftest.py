"""Test-suite wiring.

Every `async def test_*` runs twice, once on the default asyncio loop and once
on uvloop, each in a fresh loop made by `asyncio.Runner`. Servers used by
the tests run in their own threads or processes with their own loops, so the
fixtures that start them are ordinary synchronous fixtures.

`@pytest.mark.loops("asyncio")` restricts a test to the named loops.

While an async test runs, blockbuster watches the loop: a blocking call made
by hyperhttp's own code inside it (file or socket I/O, time.sleep) fails the
test (STYLE.md item 12).
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from blockbuster import blockbuster_ctx

pytest_plugins = ["tests.support.fixtures"]

# Blocking on purpose, once per object built, never per request:
# - building a Client loads its CA bundle and certificates (build clients at
#   start-up and share them; the docs say so);
# - a multipart path part is stat'ed once when the encoder is built, for the
#   exact Content-Length; its reads run off the loop.
# - the fleet's admin calls are synchronous by contract (launch returns when
#   the coordinator is ready; status and stop are for shells and launchers),
#   never used on a request path; tests call them from async tests.
ALLOWED_TO_BLOCK = [
    ("hyperhttp/_tls.py", {"create_ssl_context"}),
    ("hyperhttp/_multipart_io.py", {"_path_source"}),
    ("hyperhttp/shared/_launch.py", {"launch", "stop", "spawn"}),
    ("hyperhttp/shared/_connect.py", {"fleet_status", "stop_coordinator"}),
]

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A private temp dir with a short path: Unix socket paths are limited to
    107 bytes and pytest's tmp_path can be longer (the fleet tests)."""
    path = Path(tempfile.mkdtemp(prefix="hh", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not inspect.iscoroutinefunction(metafunc.function):
        return
    names = list(LOOP_FACTORIES)
    marker = metafunc.definition.get_closest_marker("loops")
    if marker is not None:
        names = [n for n in names if n in marker.args]
    metafunc.fixturenames.append("loop_name")
    metafunc.parametrize("loop_name", names)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    funcargs = pyfuncitem.funcargs
    loop_name = pyfuncitem.callspec.params["loop_name"]
    sig = inspect.signature(func)
    kwargs: dict[str, Any] = {k: funcargs[k] for k in sig.parameters if k in funcargs}
    factory = LOOP_FACTORIES[loop_name]
    # The blocking-call guard: a blocking call (file, socket, sleep) made by
    # hyperhttp's own code inside the loop fails the test.
    with blockbuster_ctx(["hyperhttp"]) as guard, asyncio.Runner(loop_factory=factory) as runner:
        for function in guard.functions.values():
            for filename, names in ALLOWED_TO_BLOCK:
                function.can_block_in(filename, names)
        runner.run(func(**kwargs))
    return True
