from __future__ import annotations

import asyncio


async def test_runs_on_a_loop(loop_name: str) -> None:
    loop = asyncio.get_running_loop()
    assert ("uvloop" in type(loop).__module__) == (loop_name == "uvloop")
