"""A FastAPI app on fastapi-cache2 with shmcache's backend: an
``@cache(expire=60)`` endpoint, for tests/faces/test_fastapi.py under a real
``uvicorn --workers 2``. What it computes is counted in LOCATION-calls."""

import os

from fastapi import FastAPI
from fastapi_cache import FastAPICache
from fastapi_cache.decorator import cache

import shmcache
from shmcache.fastapi_cache import SharedMemoryBackend

LOCATION = os.environ["SHMCACHE_APP_LOCATION"]
calls = shmcache.Cache(LOCATION + "-calls", size="4MB")


# At import, in each worker (FastAPICache.init is synchronous; the example uses a lifespan).
FastAPICache.init(SharedMemoryBackend(LOCATION, size="16MB"), prefix="fastapi-cache")
app = FastAPI()


@app.get("/stats")
async def stats() -> dict:
    return {"pid": os.getpid()}


@app.get("/cached")
@cache(expire=60)
async def cached() -> dict:
    return {"pid": os.getpid(), "computed": calls.incr("cached", ignore_key_check=True)}
