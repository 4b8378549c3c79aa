"""TieredCache (issue 13): shmcache L1 on every host in front of Redis.

Against the run's own redis-server (loopback), through Django's cache faces:

- L1 hit ops/s of ``TieredCache.get`` against plain ``SharedMemoryCache.get``
  (1,000 keys, 100 B values; 200 pairs of 1,000-key chunks, one of each in
  turn, the ratio the median over the pairs) and Django's ``RedisCache.get``;
- staleness after a remote write: host B writes, a process on host A polls
  (every 0.1 ms) until it reads the new value; p50/p99/max from the end of B's write, idle
  and with two busy worker processes on host A (each host's listener is a
  ``python -m shmcache listen`` sidecar, so the measuring process is not
  the listener);
- Redis commands per 1,000 requests of a Zipf (0.99) workload, 95 % gets /
  5 % sets over 10,000 keys, TieredCache against RedisCache alone
  (``INFO commandstats`` before and after; the listener's PINGs counted);
- the time until a new listener is live after the listener is SIGKILLed
  (the survivor's every read is an L1 hit: the hard case, where only the
  watermark's lag prompts it to take over);
- async (issue 21): ``aget`` of an L1 hit against ``SharedMemoryCache.aget``;
  ``aget`` of an L1 miss (L1 flushed before each round: every read a miss
  and a fill) against Django's ``RedisCache.aget`` (a thread hop per call);
  and the loop time held: the longest gap of a 1 ms ticker on the loop while
  Redis is SIGSTOPped for 200 ms during one call, for ``aget``, for
  RedisCache's ``aget``, and for the sync ``get`` awaited nowhere (what the
  async methods did before: the baseline).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time

from bench.workloads import log, make_value, zipf_ranks
from devkit.loop import while_stopped
from devkit.stats import percentile
from devkit.wait import wait_for

KEYS, VALUE = 1000, 100
# Rate comparisons run as pairs of 1,000-key chunks, alternated, and report
# the median of the per-pair ratios (this machine is shared and noisy: a
# "best round" of each side let one lucky round decide).
PAIRS = 200
PREFIX = "bt"


def _client_caches(url: str, loc: str):
    from django.core.cache.backends.redis import RedisCache

    from shmcache.django import SharedMemoryCache, TieredCache

    base = {"TIMEOUT": 3600}
    tiered = TieredCache(loc + "-a", {**base, "KEY_PREFIX": PREFIX, "OPTIONS": {"SIZE": "64MB", "L2": url}})
    tiered_b = TieredCache(loc + "-b", {**base, "KEY_PREFIX": PREFIX, "OPTIONS": {"SIZE": "64MB", "L2": url}})
    plain = SharedMemoryCache(loc + "-plain", {**base, "OPTIONS": {"SIZE": "64MB"}})
    rc = RedisCache(url, {**base, "KEY_PREFIX": PREFIX + "r"})
    return tiered, tiered_b, plain, rc


def _sidecar(loc: str, url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "shmcache", "listen", loc, "--l2", url, "--prefix", PREFIX, "--size", "64MB"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _wait(cond, timeout: float, what: str) -> None:
    wait_for(cond, timeout, what, every=0.001)  # ms polling: some waits are what is timed


def _timed(fn, keys) -> float:
    t0 = time.perf_counter()
    for k in keys:
        fn(k)
    return time.perf_counter() - t0


def _paired(times, pairs: int) -> dict:
    """`times(i)` gives (a's seconds, b's seconds) for one pair of chunks,
    run in turn (the order flipped every other pair, so a drift in the
    machine's speed hits both alike): a's and b's ops/s per chunk of one
    op (totals), and the median over pairs of a's speed over b's, the
    robust ratio on a shared, noisy machine."""
    ta = tb = 0.0
    ratios = []
    for i in range(pairs):
        da, db = times(i)
        ta, tb = ta + da, tb + db
        ratios.append(db / da)
    return {"a": pairs / ta, "b": pairs / tb, "ratio": statistics.median(ratios)}


def _pair(a, b, keys, before_a=None):
    """The `times` of `_paired` for two functions of a key over `keys`
    (`before_a`, untimed, before each of a's chunks)."""

    def times(i: int) -> tuple[float, float]:
        if before_a is not None:
            before_a()
        if i % 2:
            db = _timed(b, keys)
            return _timed(a, keys), db
        return _timed(a, keys), _timed(b, keys)

    return times


def hit_rates(tiered, plain, rc, quick: bool) -> dict:
    v = make_value(VALUE)
    keys = [f"hit:{i}" for i in range(KEYS)]
    for c in (tiered, plain, rc):
        for k in keys:
            c.set(k, v)
    for k in keys:  # fill L1
        assert tiered.get(k) == v
    hits0 = tiered._cache.stats()["l1_hits"]
    pairs = 20 if quick else PAIRS
    n = len(keys) * pairs
    p = _paired(_pair(tiered.get, plain.get, keys), pairs)
    out = {"tiered": p["a"] * len(keys), "shmcache": p["b"] * len(keys), "ratio": p["ratio"]}
    out["redis"] = len(keys) * (1 if quick else 3) / sum(_timed(rc.get, keys) for _ in range(1 if quick else 3))
    out["l1_hit_fraction"] = (tiered._cache.stats()["l1_hits"] - hits0) / n
    log(f"   L1 hit: TieredCache {out['tiered']:,.0f}/s, SharedMemoryCache {out['shmcache']:,.0f}/s "
        f"(the median of {pairs} paired chunks: {out['ratio']:.2f}x), RedisCache {out['redis']:,.0f}/s; "
        f"{out['l1_hit_fraction']:.4f} of TieredCache's gets were L1 hits")
    return out


async def _atimed(afn, keys) -> float:
    t0 = time.perf_counter()
    for k in keys:
        await afn(k)
    return time.perf_counter() - t0


async def _apaired(a, b, keys, pairs: int, before_a=None) -> dict:
    """`_paired` for two coroutine functions of a key."""
    done = []
    for i in range(pairs):
        if before_a is not None:
            before_a()
        if i % 2:
            db = await _atimed(b, keys)
            done.append((await _atimed(a, keys), db))
        else:
            done.append((await _atimed(a, keys), await _atimed(b, keys)))
    return _paired(lambda i: done[i], pairs)


async def _held(pid: int, call) -> float:
    """The longest gap (ms) of a 1 ms ticker on this loop while Redis is
    stopped for 200 ms during `call()`."""
    _, gap, _ = await while_stopped(pid, 0.2, call, every=0.001)
    return gap * 1000


def async_rates(tiered, plain, rc, redis_pid: int, quick: bool) -> dict:
    v = make_value(VALUE)
    keys = [f"ahit:{i}" for i in range(KEYS)]
    for c in (tiered, plain, rc):
        for k in keys:
            c.set(k, v)
    pairs = 20 if quick else PAIRS
    core = tiered._cache._core

    async def go() -> dict:
        for k in keys:  # fill L1 (and this loop's pools)
            assert await tiered.aget(k) == v
        await rc.aget(keys[0])
        hit = await _apaired(tiered.aget, plain.aget, keys, pairs)
        miss = await _apaired(tiered.aget, rc.aget, keys[: 50 if quick else 200], pairs // 4, before_a=core.flush)
        k = len(keys)
        out = {"tiered_hit": hit["a"] * k, "shmcache_hit": hit["b"] * k, "hit_ratio": hit["ratio"],
               "tiered_miss": miss["a"] * (50 if quick else 200), "redis_miss": miss["b"] * (50 if quick else 200),
               "miss_ratio": miss["ratio"]}  # fmt: skip
        miss_key = "ahit:0"
        core.flush()
        out["held_ms"] = {
            "tiered_aget": await _held(redis_pid, lambda: tiered.aget(miss_key)),
            "redis_aget": await _held(redis_pid, lambda: rc.aget(miss_key)),
            "sync_get_in_loop": await _held(redis_pid, lambda: asyncio.sleep(0, tiered.get(miss_key + "x"))),
        }
        await tiered.aclose()
        return out

    out = asyncio.run(go())
    h = out["held_ms"]
    log(f"   aget L1 hit: TieredCache {out['tiered_hit']:,.0f}/s, SharedMemoryCache {out['shmcache_hit']:,.0f}/s "
        f"({out['hit_ratio']:.2f}x); aget of an L1 miss: TieredCache {out['tiered_miss']:,.0f}/s, "
        f"RedisCache {out['redis_miss']:,.0f}/s ({out['miss_ratio']:.2f}x); loop held with Redis "
        f"stopped 200 ms: TieredCache.aget {h['tiered_aget']:.1f} ms, RedisCache.aget {h['redis_aget']:.1f} ms, "
        f"sync get in the loop {h['sync_get_in_loop']:.1f} ms")
    return out


def _reader(loc: str, url: str, stop_at: float, pause: float = 0.0) -> None:
    """A worker of host `loc` reading its own key until `stop_at` (every
    read an L1 hit after the first fill: no miss or write prompts the
    election), pausing `pause` s between reads."""
    from shmcache.tiered import TieredClient

    c = TieredClient(loc, url, key_prefix=PREFIX, size="64MB")
    key = f"{PREFIX}:1:reader-{os.getpid()}"
    c.set(key, 1)
    while time.monotonic() < stop_at:
        c.get(key)
        if pause:
            time.sleep(pause)


def staleness(tiered, tiered_b, n: int, busy: int, loc: str, url: str) -> dict:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_reader, args=(loc + "-a", url, time.monotonic() + 3600)) for _ in range(busy)]
    for p in procs:
        p.start()
    try:
        lat = []
        key = "stale"
        tiered_b.set(key, -1)
        for i in range(n):
            _wait(lambda i=i: tiered.get(key) == i - 1, 5, "the previous value")  # cached in L1
            tiered_b.set(key, i)
            t0 = time.monotonic()
            while tiered.get(key) != i:
                if time.monotonic() - t0 > 5:
                    raise RuntimeError("a remote write not seen within 5 s")
                time.sleep(0.0001)  # poll, leaving the CPU to the listener (2 cores)
            lat.append((time.monotonic() - t0) * 1000)
            time.sleep(0.002)
    finally:
        for p in procs:
            p.kill()
            p.join(5)
    out = {"n": n, "busy_workers": busy, "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "max_ms": max(lat)}
    log(f"   staleness after a remote write ({busy} busy workers on host A): p50 {out['p50_ms']:.3f} ms, "
        f"p99 {out['p99_ms']:.3f} ms, max {out['max_ms']:.3f} ms (n={n})")
    return out


def _commands(r) -> dict:
    return {k: v["calls"] for k, v in r.info("commandstats").items()}


def redis_commands(tiered, rc, r, quick: bool) -> dict:
    n = 5_000 if quick else 100_000
    nkeys = 10_000
    ranks = zipf_ranks(nkeys, 0.99, n, seed=13)
    import random

    rng = random.Random(13)
    is_set = [rng.random() < 0.05 for _ in range(n)]
    v = make_value(VALUE)
    out = {}
    for name, c in (("tiered", tiered), ("redis", rc)):
        c.clear()
        time.sleep(0.05)
        tiered._cache.listen()
        _wait(lambda: tiered._cache.stats()["live"], 5, "L1 live")
        before = _commands(r)
        hits0 = tiered._cache.stats()["l1_hits"] if name == "tiered" else 0
        t0 = time.monotonic()
        for rank, s in zip(ranks, is_set):
            k = f"z:{rank}"
            if s:
                c.set(k, v)
            elif c.get(k) is None:
                c.set(k, v)  # a miss is followed by a set, as an application would
        secs = time.monotonic() - t0
        after = _commands(r)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        delta["cmdstat_info"] = delta.get("cmdstat_info", 0) - 1
        total = sum(x for x in delta.values() if x > 0)
        gets = delta.get("cmdstat_get", 0) + delta.get("cmdstat_mget", 0)
        out[name] = {"per_1000": 1000 * total / n, "reads_per_1000": 1000 * gets / n, "pings": delta.get("cmdstat_ping", 0),
                     "seconds": secs, "by_command": {k[8:]: x for k, x in sorted(delta.items()) if x > 0}}
        if name == "tiered":
            out[name]["l1_hit_ratio"] = (tiered._cache.stats()["l1_hits"] - hits0) / (n - sum(is_set))
    t, rr = out["tiered"], out["redis"]
    out["reads_cut"] = 1 - t["reads_per_1000"] / rr["reads_per_1000"]
    log(f"   Redis commands per 1,000 requests (Zipf 0.99, 95% get / 5% set): TieredCache {t['per_1000']:.1f} "
        f"(reads {t['reads_per_1000']:.1f}), RedisCache {rr['per_1000']:.1f} (reads {rr['reads_per_1000']:.1f}); "
        f"reads cut {out['reads_cut']:.4f}, L1 hit ratio {t['l1_hit_ratio']:.4f}")
    return out


def takeover(loc: str, url: str, core, trials: int) -> dict:
    """SIGKILL the listener while a worker's every read is an L1 hit: seconds
    until a new listener (that worker) is live on its own watermark, and the
    L2 reads the worker made before it took over (0: only the watermark's lag
    prompted it, the hard case)."""
    from shmcache._core import monotonic_ms

    ctx = multiprocessing.get_context("fork")
    side = _sidecar(loc, url)
    current = side.pid
    procs = []
    times, l2_reads = [], []

    def reads() -> int:
        t = core.tier_stats()
        return t["l2_hits"] + t["l2_misses"]

    try:
        _wait(lambda: core.live(1000) and core.listener_pid == current, 15, "the sidecar live")
        for _ in range(trials):
            p = ctx.Process(target=_reader, args=(loc, url, time.monotonic() + 60, 0.002))
            p.start()
            procs.append(p)
            time.sleep(0.3)
            before = reads()
            os.kill(current, signal.SIGKILL)
            t0, kill_ms = time.monotonic(), monotonic_ms()
            _wait(lambda p=p: core.listener_pid == p.pid, 10, "a worker to take over")
            l2_reads.append(reads() - before)
            _wait(lambda k=kill_ms: core.live(1000) and core.watermark_ms > k, 10, "the new listener live")
            times.append(time.monotonic() - t0)
            current = p.pid
    finally:
        for p in procs:
            p.kill()
            p.join(5)
        side.kill()
        side.wait(5)
    out = {
        "trials": trials, "p50_s": statistics.median(times), "max_s": max(times), "times_s": times,
        "l2_reads_before_takeover": l2_reads,
    }  # fmt: skip
    log(
        f"   a new listener live after a SIGKILL (all-hits worker): median {out['p50_s']:.3f} s, "
        f"max {out['max_s']:.3f} s ({trials} trials; L2 reads before the takeover: {l2_reads})"
    )
    return out


def run(redis_srv, quick: bool) -> dict:
    import redis

    import shmcache
    from shmcache.tiered import l1_location
    from shmcache.tiered import listener as _listener

    url = f"redis://127.0.0.1:{redis_srv.port}/3"
    loc = f"bench-tiered-{os.getpid()}"
    tiered, tiered_b, plain, rc = _client_caches(url, loc)
    r = redis.Redis.from_url(url)
    sides = []
    out: dict = {"max_staleness_s": tiered._cache.max_staleness}
    try:
        sides = [_sidecar(loc + "-a", url), _sidecar(loc + "-b", url)]
        for c in (tiered, tiered_b):
            _wait(lambda c=c: c._cache.stats()["live"], 15, "the sidecars live")
        out["hits"] = hit_rates(tiered, plain, rc, quick)
        n = 30 if quick else 300
        out["staleness_idle"] = staleness(tiered, tiered_b, n, 0, loc, url)
        out["staleness_busy"] = staleness(tiered, tiered_b, n, 2, loc, url)
        out["commands"] = redis_commands(tiered, rc, r, quick)
        out["async"] = async_rates(tiered, plain, rc, redis_srv.pid, quick)
        for s in sides:
            s.kill()
            s.wait(5)
        sides = []
        _listener.stop_all()
        out["takeover"] = takeover(loc + "-c", url, tiered_core(loc + "-c", url), 2 if quick else 5)
        return out
    finally:
        for s in sides:
            s.kill()
            s.wait(5)
        _listener.stop_all()
        for name in (loc + "-a", loc + "-b", loc + "-c"):
            l1 = l1_location(name, PREFIX)
            try:
                os.unlink(_listener.lock_path(shmcache.segment_name(l1)))
            except FileNotFoundError:
                pass
            shmcache.destroy(l1)
        shmcache.destroy(loc + "-plain")
        r.flushdb()


def tiered_core(loc: str, url: str):
    from shmcache.tiered import TieredClient

    return TieredClient(loc, url, key_prefix=PREFIX, size="64MB")._core
