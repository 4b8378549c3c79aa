"""A tiny WSGI app on TieredClient for tests/tiered/test_tiered_gunicorn.py:
/get/<k>, /set/<k>/<v>, /info; every answer is JSON naming the pid.

It touches the cache at import (a read: a miss, which would elect a
listener), so under gunicorn --preload the master does so before it forks."""

import json
import os
import threading

from shmcache.tiered import TieredClient

cache = TieredClient(
    os.environ["SHMCACHE_APP_LOCATION"], os.environ["SHMCACHE_APP_L2"], key_prefix="app",
    max_staleness=0.5, size="8MB", max_item_size="64KB",
)  # fmt: skip
cache.get("app:boot")
IMPORT_PID = os.getpid()


def handle(path: str) -> dict:
    parts = path.strip("/").split("/")
    out = {"pid": os.getpid()}
    if parts[0] == "set" and len(parts) == 3:
        cache.set("app:" + parts[1], parts[2])
    elif parts[0] == "get" and len(parts) == 2:
        out["value"] = cache.get("app:" + parts[1])
    elif parts == ["info"]:
        st = cache.stats()
        out.update(import_pid=IMPORT_PID, threads=[t.name for t in threading.enumerate()],
                   live=st["live"], listener_pid=st["listener_pid"], listener_here=st["listener_here"])
    return out


def application(environ, start_response):
    data = json.dumps(handle(environ.get("PATH_INFO", "/"))).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
