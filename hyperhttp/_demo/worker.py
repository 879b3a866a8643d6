"""One demo worker process: a coordinated Client hammering the demo server.

    python -m hyperhttp._demo.worker ADDRESS URL CA SECONDS CONCURRENCY CAP

Runs for SECONDS (bounded) with CONCURRENCY tasks, then prints one JSON
line: requests that succeeded and failed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def _main(address: str, url: str, ca: str, seconds: float, concurrency: int,
                cap: int) -> dict[str, int]:
    import hyperhttp

    ok = failed = 0
    deadline = time.monotonic() + min(seconds, 30.0)
    async with hyperhttp.Client(
        coordinator=address, coordinator_required=True, verify=ca, http2=False,
        max_connections=cap, max_connections_per_host=cap, timeout=10.0,
    ) as client:

        async def loop() -> None:
            nonlocal ok, failed
            while time.monotonic() < deadline:
                try:
                    r = await client.get(url + "/slow/0.02")
                    ok += r.status_code == 200
                except hyperhttp.HyperHTTPError:
                    failed += 1

        await asyncio.gather(*[loop() for _ in range(concurrency)])
    return {"ok": ok, "failed": failed}


def main() -> None:
    address, url, ca, seconds, concurrency, cap = sys.argv[1:7]
    result = asyncio.run(_main(address, url, ca, float(seconds), int(concurrency), int(cap)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
