"""A FastAPI app on fastapi-cache2 with shmcache's backend: an
``@cache(expire=60)`` endpoint, for tests/faces/test_fastapi.py under a real
``uvicorn --workers 2``. What it computes is counted in LOCATION-calls."""

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_cache import FastAPICache
from fastapi_cache.decorator import cache

import shmcache
from shmcache.fastapi_cache import SharedMemoryBackend

LOCATION = os.environ["SHMCACHE_APP_LOCATION"]
calls = shmcache.Cache(LOCATION + "-calls", size="4MB")


@asynccontextmanager
async def lifespan(app: FastAPI):
    FastAPICache.init(SharedMemoryBackend(LOCATION, size="16MB"), prefix="fastapi-cache")
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/stats")
async def stats() -> dict:
    return {"pid": os.getpid()}


@app.get("/cached")
@cache(expire=60)
async def cached() -> dict:
    return {"pid": os.getpid(), "computed": calls.incr("cached", ignore_key_check=True)}
