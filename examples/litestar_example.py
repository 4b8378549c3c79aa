"""Litestar with a rate limit, a response cache and server-side sessions
that hold across every worker (Litestar's MemoryStore is per process).

    pip install "shmcache[litestar]" uvicorn
    uvicorn --workers 2 --app-dir examples litestar_example:app
    curl -i localhost:8000/limited   # 5 a minute for the whole host, not per worker
    curl localhost:8000/slow         # computed once a minute, for both workers
"""

import os
import time

from litestar import Litestar, Request, get
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.middleware.session.server_side import ServerSideSessionConfig

from shmcache.litestar import SharedMemoryStore

LOCATION = os.environ.get("SHMCACHE_APP_LOCATION", "litestar-example")
root = SharedMemoryStore(LOCATION, size="64MB")  # one segment; a namespace per use


@get("/limited", sync_to_thread=False)
def limited() -> dict:
    return {"ok": True, "pid": os.getpid()}


@get("/slow", cache=60, sync_to_thread=False)
def slow() -> dict:
    return {"computed_at": time.time(), "pid": os.getpid()}


@get("/visit", sync_to_thread=False)
def visit(request: Request) -> dict:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return {"visits": request.session["visits"], "pid": os.getpid()}


@get("/stats", sync_to_thread=False)
def stats() -> dict:
    return {"pid": os.getpid()}


app = Litestar(
    route_handlers=[limited, slow, visit, stats],
    middleware=[
        RateLimitConfig(rate_limit=("minute", 5), store="rate_limit", exclude=["/slow", "/visit", "/stats"]).middleware,
        ServerSideSessionConfig(store="sessions").middleware,
    ],
    stores={
        "rate_limit": root.with_namespace("rate_limit"),
        "response_cache": root.with_namespace("response_cache"),
        "sessions": root.with_namespace("sessions"),
    },
)
