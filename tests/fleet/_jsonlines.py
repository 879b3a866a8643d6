"""The plumbing of the fleet test worker processes: commands arrive as JSON
lines on stdin, events leave as JSON lines on stdout."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any


def emit(*event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def serve_commands(command: Callable[[Any], None], done: asyncio.Event) -> None:
    """Feed each stdin line to `command` until `done` is set (or stdin ends);
    says ["ready", pid] once listening."""
    loop = asyncio.get_running_loop()
    buf = b""

    def readable() -> None:
        nonlocal buf
        data = os.read(0, 65536)
        if not data:
            done.set()
            loop.remove_reader(0)
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                command(json.loads(line))

    os.set_blocking(0, False)
    loop.add_reader(0, readable)
    emit("ready", os.getpid())
    await done.wait()
