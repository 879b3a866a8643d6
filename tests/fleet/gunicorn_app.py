"""An ASGI app for the gunicorn fleet test: every request calls an upstream
through one coordinated `hyperhttp.Client` per worker process.

gunicorn imports this module in each worker (after the fork), so the
module-level client belongs to that worker; ``coordinator=True`` finds the
coordinator through ``$HYPERHTTP_COORDINATOR``, exported by the
`hyperhttp.shared.gunicorn` hooks in the master. The upstream's address
comes from ``$FLEET_UPSTREAM`` ("host:port").
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import hyperhttp

UPSTREAM = f"http://{os.environ.get('FLEET_UPSTREAM', '127.0.0.1:9')}"

client = hyperhttp.Client(
    coordinator=True,
    coordinator_required=True,
    max_connections=100,  # far above the fleet cap: only the coordinator holds it
    max_connections_per_host=100,
    http2=False,
    trust_env=False,
    timeout=20.0,
)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    upstream = await client.get(f"{UPSTREAM}/delay/20")
    body = json.dumps({"pid": os.getpid(), "upstream": upstream.status_code}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
