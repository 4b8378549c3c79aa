"""FastAPI + fastapi-cache2: an expensive endpoint computed once for every
worker of the host.

    pip install "shmcache[fastapi]" uvicorn
    uvicorn --workers 2 --app-dir examples fastapi_example:app
    curl localhost:8000/report      # the same report from both workers for a minute
"""

import os
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_cache import FastAPICache
from fastapi_cache.decorator import cache

from shmcache.fastapi_cache import SharedMemoryBackend

LOCATION = os.environ.get("SHMCACHE_APP_LOCATION", "fastapi-example")


@asynccontextmanager
async def lifespan(app: FastAPI):
    FastAPICache.init(SharedMemoryBackend(LOCATION, size="64MB"), prefix="fastapi-cache")
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/report")
@cache(expire=60)
async def report() -> dict:
    return {"computed_at": time.time(), "pid": os.getpid()}


@app.get("/stats")
async def stats() -> dict:
    return {"pid": os.getpid()}
