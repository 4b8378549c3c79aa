"""What aiocache's per-call timeout costs the shmcache face (quoted in
README.md, "aiocache"): `get` of a 100 B value awaited in a loop, with the
face's default ``timeout=None`` and with aiocache's usual ``timeout=5``
(each call then runs in `asyncio.wait_for`); interleaved rounds, the
median of each::

    .venv/bin/python -m bench.probes.aiocache_timeout
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import shmcache
from shmcache.aiocache import SharedMemoryCache


async def _rate(cache, n: int = 20_000) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await cache.get("k")
    return n / (time.perf_counter() - t0)


async def main() -> None:
    loc = f"probe-aiocache-{os.getpid()}"
    plain, timed = SharedMemoryCache(location=loc, size="8MB"), SharedMemoryCache(location=loc, size="8MB", timeout=5)
    try:
        await plain.set("k", b"x" * 100)
        rates: dict = {"timeout=None": [], "timeout=5": []}
        for _ in range(9):
            rates["timeout=None"].append(await _rate(plain))
            rates["timeout=5"].append(await _rate(timed))
        none, five = statistics.median(rates["timeout=None"]), statistics.median(rates["timeout=5"])
        print(f"get, timeout=None: {none:,.0f}/s; timeout=5: {five:,.0f}/s; a call with the timeout costs {none / five:.1f}x")
    finally:
        shmcache.destroy(loc)


if __name__ == "__main__":
    asyncio.run(main())
