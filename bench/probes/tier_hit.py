"""The cost of a TieredCache L1 hit, layer by layer, against a plain
shmcache get (quoted in bench/changes.md). Two measurements:

- ``layers``: ns per call of `_core.Cache.get` and `get_live`, and of
  `shmcache.Cache.get` and `TieredClient.get` (a 100 B value with an
  expiry; a 200,000-call loop, the median of 15);
- ``django``: bench/tiered.py's `hit_rates` (TieredCache against
  SharedMemoryCache through Django, the median of 200 paired chunks).

To compare two builds of the core, swap python/shmcache/_core.abi3.so
between runs (build both alike, e.g. ``cargo build --release --features
python,test-hooks --lib`` and copy target/release/libshmcache.so)::

    .venv/bin/python -m bench.probes.tier_hit layers
    .venv/bin/python -m bench.probes.tier_hit django
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import shmcache
from bench import tiered as bt
from devkit.redis_server import RedisServer
from devkit.wait import wait_for
from shmcache.tiered import TieredClient, l1_location


def _settled(core) -> None:
    t = shmcache._core.monotonic_ms()
    wait_for(lambda: core.watermark_ms > t, 5, "the watermark to pass now")


def layers(url: str) -> None:
    from shmcache.tiered import listener

    loc = f"probe-tier-{os.getpid()}"
    t = TieredClient(loc, url, key_prefix="s", size="8MB")
    p = shmcache.Cache(loc + "-plain", size="8MB")
    key, value = "s:1:k", b"x" * 100
    try:
        t.set(key, value, 3600)
        p.set(key, value, 3600)
        t.listen()
        wait_for(lambda: t.stats()["live"], 10, "the L1 live")
        _settled(t._core)
        assert t.get(key) == value and t._core.get(key) == value, "an L1 hit"

        def ns(f, n=200_000) -> float:
            s = time.perf_counter_ns()
            for _ in range(n):
                f(key)
            return (time.perf_counter_ns() - s) / n

        calls = {"_core get": p._core.get, "_core get_live": t._core.get_live, "Cache.get": p.get, "TieredClient.get": t.get}
        res: dict = {name: [] for name in calls}
        for _ in range(15):
            for name, f in calls.items():
                res[name].append(ns(f))
        print(" ".join(f"{name} {statistics.median(v):.1f} ns;" for name, v in res.items()))
    finally:
        listener.stop_all()
        shmcache.destroy(l1_location(loc, "s"))
        shmcache.destroy(loc + "-plain")


def django(url: str) -> None:
    import django as dj
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    dj.setup()
    loc = f"probe-tierdj-{os.getpid()}"
    tiered, _, plain, rc = bt._client_caches(url, loc)
    side = bt._sidecar(loc + "-a", url)
    try:
        bt._wait(lambda: tiered._cache.stats()["live"], 15, "the sidecar live")
        h = bt.hit_rates(tiered, plain, rc, False)
        print(f"Django L1 hit: {h['ratio']:.3f}x SharedMemoryCache (TieredCache {h['tiered']:,.0f}/s, SharedMemoryCache {h['shmcache']:,.0f}/s)")
    finally:
        side.kill()
        side.wait()
        for name in (loc + "-a", loc + "-b"):
            shmcache.destroy(l1_location(name, bt.PREFIX))
        shmcache.destroy(loc + "-plain")


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    if which not in ("layers", "django"):
        sys.exit("usage: python -m bench.probes.tier_hit layers|django")
    srv = RedisServer(tempfile.mkdtemp(prefix="probe-redis-"))
    try:
        (layers if which == "layers" else django)(f"redis://127.0.0.1:{srv.port}/3")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
