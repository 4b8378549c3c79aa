"""The faces for other stacks (issue 23): get and set ops/s through each
face, against that stack's usual choices, in one process, one run:

- cachelib / Flask-Caching: SimpleCache (in-process), FileSystemCache,
  RedisCache (the run's redis-server, TCP loopback);
- Litestar: MemoryStore (in-process), FileStore, RedisStore;
- fastapi-cache2: InMemoryBackend (in-process), RedisBackend;
- aiocache: SimpleMemoryCache (in-process), RedisCache.

1,000 keys, 100-byte values (bytes where the stack stores bytes, else a
100-byte str), each key set then read; interleaved rounds, the best of each
kept (this machine is shared: the best round is the least disturbed). The
async faces are awaited in a loop on one event loop, as a request handler
would. Every choice runs with its own defaults (shmcache's aiocache face
has no asyncio timeout per call, aiocache's own backends 5 s: see
shmcache/aiocache.py). Targets: at least 10x the file-based and Redis
choices, at least 0.8x the in-process one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time

from bench.workloads import log

KEYS, VALUE = 1000, 100
ROUNDS = 5


def _sync_rates(cache, keys, value, reps: int) -> dict:
    def sets() -> float:
        t0 = time.perf_counter()
        for _ in range(reps):
            for k in keys:
                cache.set(k, value)
        return reps * len(keys) / (time.perf_counter() - t0)

    def gets() -> float:
        t0 = time.perf_counter()
        for _ in range(reps):
            for k in keys:
                cache.get(k)
        return reps * len(keys) / (time.perf_counter() - t0)

    return {"set": sets(), "get": gets()}


async def _async_rates(store, keys, value, reps: int) -> dict:
    t0 = time.perf_counter()
    for _ in range(reps):
        for k in keys:
            await store.set(k, value)
    s = reps * len(keys) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(reps):
        for k in keys:
            await store.get(k)
    g = reps * len(keys) / (time.perf_counter() - t0)
    return {"set": s, "get": g}


def run(redis_port: int | None, quick: bool) -> dict:
    import redis

    tmp = tempfile.mkdtemp(prefix="shmcache-bench-faces-")
    loc = f"bench-faces-{os.getpid()}"
    keys = [f"k{i}" for i in range(KEYS)]
    value = os.urandom(VALUE // 2).hex().encode()  # 100 bytes
    fast, slow = (2, 1) if quick else (50, 2)  # repetitions: in-process choices, then file/Redis ones
    url = None if redis_port is None else f"redis://127.0.0.1:{redis_port}"
    out: dict = {"keys": KEYS, "value_bytes": VALUE, "redis": url is not None}
    try:
        # -- cachelib / Flask-Caching --
        from cachelib import FileSystemCache, RedisCache, SimpleCache

        from shmcache.cachelib import SharedMemoryCache as CachelibShm

        makers = {
            "shmcache": lambda: (CachelibShm(loc + "-cl", size="64MB"), fast),
            "SimpleCache": lambda: (SimpleCache(threshold=10 * KEYS), fast),
            "FileSystemCache": lambda: (FileSystemCache(os.path.join(tmp, "fs"), threshold=10 * KEYS), slow),
        }
        if url:
            makers["RedisCache"] = lambda: (RedisCache(port=redis_port, db=5), slow)
        out["cachelib"] = asyncio.run(_compare("cachelib", makers, keys, value, quick, sync=True))

        # -- Litestar --
        from litestar.stores.file import FileStore
        from litestar.stores.memory import MemoryStore
        from litestar.stores.redis import RedisStore

        from shmcache.litestar import SharedMemoryStore

        makers = {
            "shmcache": lambda: (SharedMemoryStore(loc + "-ls", size="64MB"), fast),
            "MemoryStore": lambda: (MemoryStore(), fast),
            "FileStore": lambda: (FileStore(os.path.join(tmp, "ls")), slow),
        }
        if url:
            makers["RedisStore"] = lambda: (RedisStore.with_client(url, db=6), slow)
        out["litestar"] = asyncio.run(_compare("litestar", makers, keys, value, quick))

        # -- fastapi-cache2 --
        from fastapi_cache.backends.inmemory import InMemoryBackend
        from fastapi_cache.backends.redis import RedisBackend

        from shmcache.fastapi_cache import SharedMemoryBackend

        makers = {
            "shmcache": lambda: (SharedMemoryBackend(loc + "-fc", size="64MB"), fast),
            "InMemoryBackend": lambda: (InMemoryBackend(), fast),
        }
        if url:
            makers["RedisBackend"] = lambda: (RedisBackend(redis.asyncio.Redis.from_url(url, db=7)), slow)
        out["fastapi"] = asyncio.run(_compare("fastapi", makers, keys, value, quick))

        # -- aiocache --
        from aiocache import RedisCache as AioRedis
        from aiocache import SimpleMemoryCache

        from shmcache.aiocache import SharedMemoryCache as AioShm

        makers = {
            "shmcache": lambda: (AioShm(location=loc + "-ac", size="64MB"), fast),
            "SimpleMemoryCache": lambda: (SimpleMemoryCache(), fast),
        }
        if url:
            makers["RedisCache"] = lambda: (AioRedis(endpoint="127.0.0.1", port=redis_port, db=8), slow)
        # a str: aiocache's RedisCache serializes with JSON by default
        out["aiocache"] = asyncio.run(_compare("aiocache", makers, keys, value.decode(), quick))
        return out
    finally:
        import shmcache

        for suffix in ("-cl", "-ls", "-fc", "-ac"):
            shmcache.destroy(loc + suffix)
        shutil.rmtree(tmp, ignore_errors=True)
        if url:
            redis.Redis(port=redis_port).flushall()


async def _compare(stack: str, makers: dict, keys, value, quick: bool, sync: bool = False) -> dict:
    """Interleaved rounds of every choice of `stack` (`makers`: name ->
    a function making (cache, repetitions)); the best of each op."""
    made = {name: make() for name, make in makers.items()}
    best: dict = {}
    for _ in range(2 if quick else ROUNDS):
        for name, (store, reps) in made.items():
            r = _sync_rates(store, keys, value, reps) if sync else await _async_rates(store, keys, value, reps)
            b = best.setdefault(name, {"set": 0.0, "get": 0.0})
            b["set"], b["get"] = max(b["set"], r["set"]), max(b["get"], r["get"])
    for store, _ in made.values():
        close = getattr(store, "close", None) or getattr(store, "_shutdown", None)
        if close is not None and asyncio.iscoroutinefunction(close):
            await close()
    for name, r in best.items():
        log(f"   {stack:9} {name:26} get {r['get']:>12,.0f}/s  set {r['set']:>12,.0f}/s")
    return best
