"""Geometry migration (issue 12): `python -m shmcache resize` of a full
256 MB cache to 512 MB (everything copied) and to 128 MB (the hottest half
kept), while a writer process sets in a loop. Reports the writers' pause
(every shard lock held for the copy), the copy rate in MB of items per
second of pause, and the writer's slowest set during the resize."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench.workloads import log

SIZE_MB, VALUE_BYTES = 256, 4096

# Sets in a loop until stdin closes; prints its slowest set (ms) and count.
WRITER = r"""
import json, sys, threading, time, shmcache
c = shmcache.Cache(sys.argv[1], size=sys.argv[2], max_item_size="64KB")
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
print("ready", flush=True)
worst, n, v = 0.0, 0, b"w" * 100
while not stop.is_set():
    t = time.perf_counter()
    c.set(f"writer:{n % 1000}", v)
    worst = max(worst, time.perf_counter() - t)
    n += 1
    time.sleep(0.0005)
print(json.dumps({"worst_set_ms": worst * 1000, "sets": n}), flush=True)
"""


def one(size_mb: int, to_mb: int) -> dict:
    import shmcache
    from shmcache import _core

    loc = f"bench-resize-{os.getpid()}-{to_mb}"
    try:
        c = shmcache.Cache(loc, size=f"{size_mb}MB", max_item_size="64KB")
        value, i = os.urandom(VALUE_BYTES), 0
        while c.stats()["evictions"] == 0:
            c._core.set_many([(f"rz:{j:08}", value) for j in range(i, i + 1000)], None)
            i += 1000
        items = c.stats()["items"]
        w = subprocess.Popen([sys.executable, "-c", WRITER, loc, f"{size_mb}MB"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert w.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        t0 = time.perf_counter()
        r = _core.resize(loc, to_mb << 20, 64 << 10, 0, 1.0)
        total_s = time.perf_counter() - t0
        time.sleep(0.3)
        out, _ = w.communicate("", timeout=30)
        wr = json.loads(out.strip().splitlines()[-1])
        pause = max(r["pause_ms"], 1) / 1000
        res = {
            "from_mb": size_mb, "to_mb": to_mb, "items_before": items, "copied": r["items"], "dropped": r["dropped"],
            "bytes": r["bytes"], "pause_ms": r["pause_ms"], "resize_seconds": round(total_s, 4),
            "copy_mb_per_s": r["bytes"] / 1e6 / pause, "writer_worst_set_ms": round(wr["worst_set_ms"], 2),
            "writer_sets": wr["sets"],
        }  # fmt: skip
        log(f"   {size_mb} MB -> {to_mb} MB: copied {r['items']:,} of {items:,} items, writers paused "
            f"{r['pause_ms']} ms ({res['copy_mb_per_s']:,.0f} MB/s); resize {total_s:.2f} s; "
            f"the writer's slowest set {res['writer_worst_set_ms']} ms")
        return res
    finally:
        shmcache.destroy(loc)


def run(tmp: str, quick: bool) -> dict:
    size = 32 if quick else SIZE_MB
    return {"grow": one(size, size * 2), "shrink": one(size, size // 2)}
