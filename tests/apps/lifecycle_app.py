"""A tiny app on the plain ``shmcache.Cache`` API, as WSGI (``application``)
and as a raw ASGI callable (``app``), for tests/servers/test_gunicorn_lifecycle.py
(uWSGI, uvicorn). Same paths as demo/mysite: /set/<k>/<v>, /get/<k>,
/incr/<k>, /stats, plus /info; every answer is JSON naming the pid.

The cache is attached when this module is imported: in the master before it
forks (uWSGI's default prefork, gunicorn --preload), or in each worker
(uWSGI --lazy-apps, uvicorn --workers, which spawns).
"""

import json
import os
from pathlib import Path

import shmcache

LOCATION = os.environ["SHMCACHE_APP_LOCATION"]
# SIZE from a file when SHMCACHE_APP_SIZE_FILE names one, read at import: in
# each worker without --preload, so a HUP or USR2 picks up a changed SIZE.
_size_file = os.environ.get("SHMCACHE_APP_SIZE_FILE")
SIZE = Path(_size_file).read_text().strip() if _size_file else "8MB"
cache = shmcache.Cache(LOCATION, size=SIZE, max_item_size="64KB")
IMPORT_PID = os.getpid()


def handle(path: str) -> tuple[int, dict]:
    parts = path.strip("/").split("/")
    out = {"pid": os.getpid()}
    if parts[0] == "set" and len(parts) == 3:
        cache.set(parts[1], parts[2])
        out.update(key=parts[1], value=parts[2])
    elif parts[0] == "get" and len(parts) == 2:
        out.update(key=parts[1], value=cache.get(parts[1]))
    elif parts[0] == "incr" and len(parts) == 2:
        cache.add(parts[1], 0)
        out.update(key=parts[1], value=cache.incr(parts[1]))
    elif parts == ["stats"]:
        out.update(stats=cache.stats())
    elif parts == ["info"]:
        out.update(import_pid=IMPORT_PID, ppid=os.getppid(), inode=cache._core.inode, segment=cache._core.segment,
                   geometry=cache._core.geometry, requested=cache._core.requested_geometry)
    else:
        return 404, {"error": "not found", "path": path}
    return 200, out


def application(environ, start_response):
    status, body = handle(environ.get("PATH_INFO", "/"))
    data = json.dumps(body).encode()
    start_response(f"{status} {'OK' if status == 200 else 'Not Found'}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    status, body = handle(scope["path"])
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
