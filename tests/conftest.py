"""Test-suite wiring.

Every `async def test_*` runs twice, once on the default asyncio loop and once
on uvloop, each in a fresh loop made by `asyncio.Runner`. Servers used by
the tests run in their own threads or processes with their own loops, so the
fixtures that start them are ordinary synchronous fixtures.

`@pytest.mark.loops("asyncio")` restricts a test to the named loops.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

pytest_plugins = ["tests.support.fixtures"]

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


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
    with asyncio.Runner(loop_factory=factory, debug=False) as runner:
        runner.run(func(**kwargs))
    return True
