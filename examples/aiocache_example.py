"""aiocache on shared memory: four processes count into one counter.

    pip install "shmcache[aiocache]"
    python examples/aiocache_example.py        # prints: 4 processes x 500 increments = 2000
"""

import asyncio
import multiprocessing
import os

from shmcache.aiocache import SharedMemoryCache

LOCATION = os.environ.get("SHMCACHE_APP_LOCATION", "aiocache-example")
PROCESSES, EACH = 4, 500


async def count(n: int) -> None:
    cache = SharedMemoryCache(location=LOCATION, size="16MB", namespace="example:")
    for _ in range(n):
        await cache.increment("hits")  # atomic across processes


def worker() -> None:
    asyncio.run(count(EACH))


async def main() -> int:
    cache = SharedMemoryCache(location=LOCATION, size="16MB", namespace="example:")
    await cache.delete("hits")
    procs = [multiprocessing.get_context("fork").Process(target=worker) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    total = await cache.get("hits")
    print(f"{PROCESSES} processes x {EACH} increments = {total}")
    return total


if __name__ == "__main__":
    asyncio.run(main())
