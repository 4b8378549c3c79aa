"""A process with its own `shmcache.Cache`, driven over stdin/stdout (one
JSON command per line): for tests that need another live process on a
segment (tests/client/test_resize.py, tests/servers/test_gunicorn_lifecycle.py)."""

from __future__ import annotations

import json
import subprocess
import sys

# Opens the cache with SIZE argv[2], then answers one JSON command per line.
WORKER = r"""
import json, sys, shmcache
c = shmcache.Cache(sys.argv[1], size=sys.argv[2], max_item_size="64KB")
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    if op == "set":
        c.set(cmd["key"], cmd["value"]); out = True
    elif op == "get":
        out = c.get(cmd["key"])
    elif op == "delete":
        out = c.delete(cmd["key"])
    elif op == "geo":
        out = [c._core.geometry, c._core.requested_geometry, c._core.inode]
    else:
        break
    print(json.dumps(out), flush=True)
"""


class Worker:
    """`Worker(location, "16MB")("set", key="k", value="v")`; `.quit()`."""

    def __init__(self, location: str, size: str) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-c", WORKER, location, size], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert json.loads(self.p.stdout.readline()) == {"ready": True}

    def __call__(self, op: str, **kw):
        self.p.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def quit(self) -> None:
        """Stop the process (its cache's want of its SIZE goes with it)."""
        if self.p.poll() is None:
            self.p.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.p.stdin.flush()
        assert self.p.wait(10) == 0
