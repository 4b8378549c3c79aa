"""A Litestar app whose stores are shmcache's (one segment, a namespace
each): a rate limit of 10 a minute, a cached handler, server-side sessions.
For tests/faces/test_litestar.py under a real ``uvicorn --workers 2``.
Every response carries its worker's pid in ``x-pid`` (the rate limiter's
429s too: an ASGI wrapper adds it). What it computes is counted in
LOCATION-calls."""

import os

from litestar import Litestar, Request, get
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.middleware.session.server_side import ServerSideSessionConfig

import shmcache
from shmcache.litestar import SharedMemoryStore

LOCATION = os.environ["SHMCACHE_APP_LOCATION"]
calls = shmcache.Cache(LOCATION + "-calls", size="4MB")
root = SharedMemoryStore(LOCATION, size="16MB")


@get("/stats", sync_to_thread=False)
def stats() -> dict:
    return {"pid": os.getpid()}


@get("/limited", sync_to_thread=False)
def limited() -> dict:
    return {"pid": os.getpid()}


@get("/cached", cache=60, sync_to_thread=False)
def cached() -> dict:
    return {"pid": os.getpid(), "computed": calls.incr("cached", ignore_key_check=True)}


@get("/session/set/{value:str}", sync_to_thread=False)
def session_set(request: Request, value: str) -> dict:
    request.session["value"] = value
    return {"pid": os.getpid()}


@get("/session/get", sync_to_thread=False)
def session_get(request: Request) -> dict:
    return {"pid": os.getpid(), "value": request.session.get("value")}


rate_limit = RateLimitConfig(rate_limit=("minute", 10), store="rate_limit", exclude=["/stats", "/cached", "/session"])
sessions = ServerSideSessionConfig(store="sessions")
litestar_app = Litestar(
    route_handlers=[stats, limited, cached, session_set, session_get],
    middleware=[rate_limit.middleware, sessions.middleware],
    stores={
        "rate_limit": root.with_namespace("rate_limit"),
        "response_cache": root.with_namespace("response_cache"),
        "sessions": root.with_namespace("sessions"),
    },
)


async def app(scope, receive, send):
    """The Litestar app, each response stamped with this worker's pid."""

    async def stamped(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"x-pid", str(os.getpid()).encode())]}
        await send(message)

    await litestar_app(scope, receive, stamped if scope["type"] == "http" else send)
