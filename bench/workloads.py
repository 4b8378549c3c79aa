"""The measurements. Everything that goes through Django uses
`django.core.cache.caches[alias]` (or a fresh instance of the same alias in a
forked worker), the same code path an application takes.

Timing: each call is time-stamped with perf_counter_ns just before it; a
call's latency is the gap to the next stamp (so it includes ~50 ns of loop
and timer overhead, the same for every backend), and ops/s is calls divided
by the first-to-last stamp. The garbage collector is off while timing.
"""

from __future__ import annotations

import gc
import math
import multiprocessing as mp
import os
import random
import string
import time
import uuid

import numpy as np

from bench.servers import log
from devkit.proc import rss_kb
from devkit.stats import percentile

VALUE_SIZES = [100, 10_000, 100_000]


# ---------------------------------------------------------------- helpers

def make_value(size: int) -> str:
    """About `size` bytes of text (random words: compresses like real text,
    not like a repeated string, which matters to FileBasedCache's zlib)."""
    rng = random.Random(size)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(500)]
    out, n = [], 0
    while n < size:
        w = rng.choice(words)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:size]


def make_dict_value() -> dict:
    """A small structured value (pickled by every backend), ~100 B pickled."""
    return {"id": 12345, "name": "Ada Lovelace", "tags": ["a", "b"], "score": 1.5, "ok": True}


def pct(lat_ns, q: float) -> float:
    """Percentile of latencies in ns, in microseconds."""
    return percentile(lat_ns, q) / 1000.0


_SENTINEL = object()


def timed(fn, args, extra=None, _sentinel=_SENTINEL):
    """Call fn(a) (or fn(a, extra)) for each a in args, stamping each call.
    Returns (ops/s, latencies in ns as an int64 array)."""
    pc = time.perf_counter_ns
    n = len(args)
    ts = [0] * (n + 1)
    gc.collect()
    gc.disable()
    try:
        if extra is None:
            for i, a in enumerate(args):
                ts[i] = pc()
                fn(a)
        else:
            for i, a in enumerate(args):
                ts[i] = pc()
                fn(a, extra)
        ts[n] = pc()
    finally:
        gc.enable()
    t = np.asarray(ts, dtype=np.int64)
    lat = np.diff(t)
    return n * 1e9 / max(1, int(t[-1] - t[0])), lat


class Budget:
    """How many ops a measurement gets: enough for ~`seconds`, within
    [floor, cap]; but a very slow backend gets at most `max_seconds` (and at
    least `min_ops` calls)."""

    def __init__(self, seconds: float, floor: int, cap: int, probe: int, max_seconds: float = 1.5, min_ops: int = 50) -> None:
        self.seconds, self.floor, self.cap, self.probe = seconds, floor, cap, probe
        self.max_seconds, self.min_ops = max_seconds, min(min_ops, floor)

    def ops(self, per_op_s: float, cap: int | None = None) -> int:
        per = max(per_op_s, 1e-9)
        n = max(self.floor, min(cap or self.cap, self.cap, int(self.seconds / per)))
        return max(self.min_ops, min(n, int(self.max_seconds / per)))

    def probe_time(self, fn, args, extra=None) -> float:
        """Seconds per call, from a few calls (also warms the path up)."""
        args = args[: self.probe]
        t0 = time.perf_counter()
        call_all(fn, args, extra)
        return (time.perf_counter() - t0) / max(1, len(args))


def call_all(fn, args, extra=None) -> None:
    """fn(a) for every a in args, or fn(a, extra): the loop inlined here
    (no call per operation beyond fn's own)."""
    if extra is None:
        for a in args:
            fn(a)
    else:
        for a in args:
            fn(a, extra)


def fill(cache, keys, value) -> None:
    """Store value under every key (set_many in batches; untimed)."""
    for i in range(0, len(keys), 100):
        cache.set_many(dict.fromkeys(keys[i:i + 100], value))


def row(op: str, size, ops_s: float, lat, n: int, **extra) -> dict:
    return {
        "op": op, "size": size, "ops_per_s": ops_s, "p50_us": pct(lat, 50), "p99_us": pct(lat, 99),
        "mean_us": float(np.mean(lat)) / 1000 if len(lat) else float("nan"), "n": n, **extra,
    }


# ---------------------------------------------------------------- single process

def single_process(alias: str, budget: Budget, quick: bool) -> list[dict]:
    from django.core.cache import caches

    c = caches[alias]
    c.clear()
    rng = random.Random(42)
    out: list[dict] = []

    def measure(op, size, fn, args, extra=None, **kw):
        ops_s, lat = timed(fn, args, extra)
        r = row(op, size, ops_s, lat, len(args), **kw)
        out.append(r)
        log(f"  {alias:13s} {op:12s} {str(size):>6s}: {ops_s:12,.0f} ops/s  p50 {r['p50_us']:8.1f} us  p99 {r['p99_us']:8.1f} us  (n={len(args)})")

    for size in VALUE_SIZES:
        v = make_value(size)
        pool_n = (100 if quick else 1000) if size <= 10_000 else (50 if quick else 200)
        pool = [f"sp:{size}:{i}" for i in range(pool_n)]
        fill(c, pool, v)
        # get-hit
        per = budget.probe_time(c.get, pool)
        args = [pool[rng.randrange(pool_n)] for _ in range(budget.ops(per))]
        hits = sum(c.get(k) == v for k in pool[:20])
        measure("get-hit", size, c.get, args, verified_hits=f"{hits}/20")
        # set (overwrite)
        per = budget.probe_time(c.set, pool, v)
        args = [pool[rng.randrange(pool_n)] for _ in range(budget.ops(per))]
        measure("set", size, c.set, args, v)
        # add (new keys; bounded so a run stores at most ~150 MB)
        cal = [f"addcal:{size}:{i}" for i in range(budget.probe)]
        per = budget.probe_time(c.add, cal, v)
        n = budget.ops(per, cap=max(budget.floor, 150_000_000 // size))
        args = [f"add:{size}:{i}" for i in range(n)]
        measure("add", size, c.add, args, v)
        c.delete_many(args)
        c.delete_many(cal)
        # get_many(10)
        per = budget.probe_time(c.get_many, [rng.sample(pool, 10) for _ in range(budget.probe)])
        args = [rng.sample(pool, 10) for _ in range(budget.ops(per))]
        measure("get_many(10)", size, c.get_many, args)
        # set_many(10)
        per = budget.probe_time(c.set_many, [dict.fromkeys(rng.sample(pool, 10), v) for _ in range(budget.probe)])
        args = [dict.fromkeys(rng.sample(pool, 10), v) for _ in range(budget.ops(per, cap=max(budget.floor, 15_000_000 // size)))]
        measure("set_many(10)", size, c.set_many, args)
        c.clear()

    # Size-independent operations (100 B or small ints).
    v = make_value(100)
    misses = [f"miss:{i}" for i in range(budget.cap)]
    per = budget.probe_time(c.get, misses)
    measure("get-miss", "-", c.get, misses[: budget.ops(per)])

    counters = [f"ctr:{i}" for i in range(100)]
    fill(c, counters, 0)
    per = budget.probe_time(c.incr, counters)
    n = budget.ops(per)
    measure("incr", "-", c.incr, [counters[i % 100] for i in range(n)])

    cal = [f"delcal:{i}" for i in range(budget.probe)]
    t0 = time.perf_counter()
    fill(c, cal, v)
    per_set = (time.perf_counter() - t0) / len(cal)
    per = budget.probe_time(c.delete, cal)
    # Deletes need keys stored first: spend at most max_seconds storing them.
    n = min(budget.ops(per, cap=200_000), max(budget.min_ops, int(budget.max_seconds / max(per_set, 1e-9))))
    args = [f"del:{i}" for i in range(n)]
    fill(c, args, v)
    measure("delete", "-", c.delete, args)

    # A structured value (pickled by every backend, shmcache included).
    dv = make_dict_value()
    pool = [f"dict:{i}" for i in range(100 if quick else 1000)]
    fill(c, pool, dv)
    per = budget.probe_time(c.get, pool)
    measure("get-hit", "dict", c.get, [pool[rng.randrange(len(pool))] for _ in range(budget.ops(per))])
    per = budget.probe_time(c.set, pool, dv)
    measure("set", "dict", c.set, [pool[rng.randrange(len(pool))] for _ in range(budget.ops(per))], dv)
    c.clear()
    return out


# ---------------------------------------------------------------- multi process

MP_KEYS = 10_000
MP_ALPHA = 0.99
MP_SET_FRACTION = 0.10
MP_VALUE_SIZE = 100


def zipf_ranks(n_keys: int, alpha: float, n: int, seed: int) -> np.ndarray:
    """n draws of ranks 0..n_keys-1 with P(rank r) ~ 1/(r+1)^alpha."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n_keys + 1, dtype=np.float64) ** alpha
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(n)), n_keys - 1)


def _mp_worker(alias, trace, value, duration_s, barrier, q):
    try:
        from django.core.cache import caches

        c = caches.create_connection(alias)  # a fresh client in this process
        get, set_ = c.get, c.set
        get(trace[0][0])
        L = len(trace)
        chunk = 512
        pc = time.perf_counter_ns
        barrier.wait(60)
        cpu0 = time.process_time()
        end = pc() + int(duration_s * 1e9)
        stamps, starts = [], []
        misses = 0
        pos = 0
        gc.disable()
        while True:
            part = trace[pos : pos + chunk]
            ts = [0] * (len(part) + 1)
            for j, (k, is_set) in enumerate(part):
                ts[j] = pc()
                if is_set:
                    set_(k, value)
                elif get(k) is None:
                    misses += 1
            ts[-1] = pc()
            stamps.append(ts)
            starts.append(pos)
            pos = (pos + chunk) % L
            if ts[-1] >= end:
                break
        cpu = time.process_time() - cpu0
        gc.enable()
        get_lat, set_lat = [], []
        ops = 0
        for ts, p in zip(stamps, starts):
            d = np.diff(np.asarray(ts, dtype=np.int64))
            flags = np.fromiter((s for _, s in trace[p : p + len(d)]), dtype=bool, count=len(d))
            get_lat.append(d[~flags])
            set_lat.append(d[flags])
            ops += len(d)
        elapsed = stamps[-1][-1] - stamps[0][0]
        gl, sl = np.concatenate(get_lat), np.concatenate(set_lat)
        q.put({"ok": True, "ops": ops, "elapsed_ns": elapsed, "misses": misses, "gets": len(gl), "cpu_s": cpu,
               "get_lat": gl.tobytes(), "set_lat": sl.tobytes()})
    except BaseException as e:  # noqa: BLE001
        q.put({"ok": False, "error": f"{e.__class__.__name__}: {e}"})


def multi_process(
    alias: str, procs: list[int], duration_s: float, warm_s: float, trace_len: int, rounds: int = 1
) -> list[dict]:
    """Each process count of `procs` for `duration_s`, in `rounds` rounds
    that go through every count in turn (so a drift in the machine's speed
    hits every count alike): each count's round of median throughput is
    kept, and ``scaling`` is the median over rounds of a count's aggregate
    over the single process's in the same round."""
    from django.core.cache import caches

    c = caches[alias]
    c.clear()
    value = make_value(MP_VALUE_SIZE)
    keys = [f"mp:{i:05d}" for i in range(MP_KEYS)]
    perm = np.random.default_rng(7).permutation(MP_KEYS)  # rank -> key: popular keys spread out
    # Warm: store keys in popularity order, for at most warm_s (FileBasedCache
    # lists its directory on every set, so it may not get through all 10k).
    t0 = time.monotonic()
    stored = 0
    for i in range(0, MP_KEYS, 100):
        c.set_many({keys[perm[r]]: value for r in range(i, min(i + 100, MP_KEYS))})
        stored = min(i + 100, MP_KEYS)
        if time.monotonic() - t0 > warm_s:
            break
    c.close()
    runs: dict[int, list[dict]] = {p: [] for p in procs}
    for _ in range(rounds):
        for p in procs:
            runs[p].append(_mp_run(c, alias, p, value, keys, perm, duration_s, trace_len, stored))
    results = []
    for p in procs:
        by_agg = sorted(runs[p], key=lambda r: r["agg_ops_per_s"])
        r = dict(by_agg[len(by_agg) // 2])  # the median round
        if rounds > 1:
            r["rounds_agg_ops_per_s"] = [x["agg_ops_per_s"] for x in runs[p]]
        if procs[0] == 1:
            ratios = sorted(x["agg_ops_per_s"] / one["agg_ops_per_s"] for x, one in zip(runs[p], runs[1]))
            r["scaling"] = ratios[len(ratios) // 2]
        results.append(r)
        log(f"  {alias:13s} P={p}: {r['agg_ops_per_s']:12,.0f} ops/s aggregate  p99 {r['p99_us']:8.1f} us  get p99 "
            f"{r['get_p99_us']:8.1f} us  hit {r['get_hit_ratio']:.3f}  workers on CPU {r['worker_cores']:.2f} cores"
            + (f"  ({rounds} rounds; x{r['scaling']:.2f} the 1-process aggregate, the median)" if rounds > 1 and "scaling" in r else ""))
    c.clear()
    return results


def _mp_run(c, alias, p, value, keys, perm, duration_s, trace_len, stored) -> dict:
    """One run of `p` worker processes for `duration_s`."""
    ctx = mp.get_context("fork")
    traces = []
    for w in range(p):
        ranks = zipf_ranks(MP_KEYS, MP_ALPHA, trace_len, seed=1000 * p + w)
        is_set = np.random.default_rng(99 + w).random(trace_len) < MP_SET_FRACTION
        traces.append([(keys[perm[r]], bool(s)) for r, s in zip(ranks, is_set)])
    st0 = c.stats() if alias == "shmcache" else None
    barrier = ctx.Barrier(p)
    q = ctx.Queue()
    workers = [ctx.Process(target=_mp_worker, args=(alias, traces[w], value, duration_s, barrier, q), daemon=True)
               for w in range(p)]
    for w in workers:
        w.start()
    got = []
    for _ in workers:
        got.append(q.get(timeout=duration_s + 120))
    for w in workers:
        w.join(30)
    bad = [g["error"] for g in got if not g["ok"]]
    if bad:
        raise RuntimeError(f"{alias} P={p}: {bad[0]}")
    agg = sum(g["ops"] / (g["elapsed_ns"] / 1e9) for g in got)
    gl = np.concatenate([np.frombuffer(g["get_lat"], dtype=np.int64) for g in got])
    sl = np.concatenate([np.frombuffer(g["set_lat"], dtype=np.int64) for g in got])
    al = np.concatenate([gl, sl])
    gets = sum(g["gets"] for g in got)
    r = {
        "procs": p, "agg_ops_per_s": agg, "per_proc_ops_per_s": agg / p,
        "p50_us": pct(al, 50), "p99_us": pct(al, 99), "get_p50_us": pct(gl, 50), "get_p99_us": pct(gl, 99),
        "set_p99_us": pct(sl, 99), "ops": int(sum(g["ops"] for g in got)),
        "get_hit_ratio": 1 - sum(g["misses"] for g in got) / max(1, gets), "warmed_keys": stored,
        # CPU time the workers got, in cores (P workers that never wait would show P, at most nproc).
        "worker_cores": sum(g["cpu_s"] / (g["elapsed_ns"] / 1e9) for g in got),
    }
    if st0 is not None:
        st1 = c.stats()
        r["shm_counters"] = {k: st1.get(k, 0) - st0.get(k, 0) for k in ("lock_timeouts", "lock_recoveries", "evictions", "shard_wipes")}
    return r


def _share_writer(alias, key, token, written, read_done):
    from django.core.cache import caches

    c = caches.create_connection(alias)
    c.set(key, token)
    written.set()
    read_done.wait(30)


def _share_reader(alias, key, written, read_done, q):
    from django.core.cache import caches

    try:
        written.wait(30)
        c = caches.create_connection(alias)
        q.put(c.get(key))
    except BaseException as e:  # noqa: BLE001
        q.put(f"error: {e}")
    finally:
        read_done.set()


def shared_check(alias: str) -> dict:
    """Set a value in one process, read it in another (both forked from us,
    neither sees what the other has in its own memory)."""
    ctx = mp.get_context("fork")
    token = uuid.uuid4().hex
    key = f"share-check:{token[:8]}"
    written, read_done, q = ctx.Event(), ctx.Event(), ctx.Queue()
    a = ctx.Process(target=_share_writer, args=(alias, key, token, written, read_done), daemon=True)
    b = ctx.Process(target=_share_reader, args=(alias, key, written, read_done, q), daemon=True)
    a.start()
    b.start()
    got = q.get(timeout=60)
    a.join(30)
    b.join(30)
    from django.core.cache import caches

    caches[alias].delete(key)
    return {"shared": got == token, "read_in_other_process": None if got is None else ("token" if got == token else str(got)[:80])}


# ---------------------------------------------------------------- hit ratio

HR_BYTES_MB = 64
HR_KEYS = 200_000
HR_ALPHA = 0.9
HR_MIN, HR_MAX = 200, 4000


def hit_ratio_trace(n: int, seed: int = 5):
    ranks = zipf_ranks(HR_KEYS, HR_ALPHA, n, seed)
    perm = np.random.default_rng(seed + 1).permutation(HR_KEYS)
    # log-uniform value sizes per key, fixed for the key
    sizes = np.exp(np.random.default_rng(seed + 2).uniform(math.log(HR_MIN), math.log(HR_MAX), HR_KEYS)).astype(np.int64)
    keys = perm[ranks]
    return keys, sizes


def replay(name: str, get, set_, keys, sizes, warm: int) -> dict:
    blob = os.urandom(HR_MAX + 16)
    hits = misses = 0
    t0 = time.perf_counter()
    for i, k in enumerate(keys.tolist()):
        key = f"hr:{k:07d}"
        if get(key) is None:
            set_(key, blob[: sizes[k]])
            if i >= warm:
                misses += 1
        elif i >= warm:
            hits += 1
    dt = time.perf_counter() - t0
    r = {"hit_ratio": hits / max(1, hits + misses), "requests": int(len(keys)), "measured": hits + misses, "seconds": dt}
    log(f"  {name:28s} hit ratio {r['hit_ratio']:.4f}  ({len(keys):,} requests in {dt:.1f} s)")
    return r


def lru_reference(keys, sizes, budget_bytes: int, warm: int) -> dict:
    """Exact LRU that counts only key + value bytes (no per-item overhead)."""
    from collections import OrderedDict

    lru: OrderedDict = OrderedDict()
    used = hits = misses = 0
    for i, k in enumerate(keys.tolist()):
        if k in lru:
            lru.move_to_end(k)
            if i >= warm:
                hits += 1
            continue
        if i >= warm:
            misses += 1
        sz = int(sizes[k]) + 10
        while used + sz > budget_bytes and lru:
            _, s = lru.popitem(last=False)
            used -= s
        lru[k] = sz
        used += sz
    return {"hit_ratio": hits / max(1, hits + misses)}


# ---------------------------------------------------------------- raw API

def core_setter(core):
    """`_core.Cache.set` of a bytes value with no expiry, whichever signature
    this build has: (key, value, timeout[, add]) or (key, enc, value, timeout[, add])."""
    try:
        core.set(b"bench:probe", b"x", None)
        f = lambda k, v: core.set(k, v, None)  # noqa: E731
        f.label = "_core.set(key, value, None)"
    except TypeError:
        core.set(b"bench:probe", 0, b"x", None)
        f = lambda k, v: core.set(k, 0, v, None)  # noqa: E731
        f.label = "_core.set(key, 0, value, None)"
    return f


def raw_api(seconds: float) -> dict:
    import shmcache

    name = f"bench-raw-{os.getpid()}"
    try:
        return _raw_api(shmcache.Cache(name, size="64MB"), seconds)
    finally:
        shmcache.destroy(name)


def _raw_api(c, seconds: float) -> dict:
    keys = [b"raw:%08d" % i for i in range(1000)]
    val = os.urandom(100)
    for k in keys:
        c.set(k, val)
    args = [keys[i % 1000] for i in range(200_000)]

    def rate(fn, extra=None):
        best = []
        for _ in range(5):
            t0 = time.perf_counter()
            n = 0
            gc.disable()
            while time.perf_counter() - t0 < seconds / 5:
                call_all(fn, args, extra)
                n += len(args)
            gc.enable()
            best.append(n / (time.perf_counter() - t0))
        return float(np.median(best))

    core = c._core
    core_set = core_setter(core)
    out = {
        "cache_get_per_s": rate(c.get),
        "cache_set_per_s": rate(c.set, val),
        "core_get_per_s": rate(core.get),
        "value_bytes": 100, "key_bytes": len(keys[0]),
    }
    out["core_set_per_s"] = rate(core_set, val)
    out["core_set_call"] = core_set.label
    log(f"  raw Cache.get {out['cache_get_per_s']:,.0f}/s  Cache.set {out['cache_set_per_s']:,.0f}/s  _core.get {out['core_get_per_s']:,.0f}/s")
    return out


# ---------------------------------------------------------------- memory

MEM_ITEMS = 100_000
MEM_VALUE = 100


def shm_overhead(items: int) -> dict:
    """shmcache's per-item overhead for small items (raw API, exact bytes)."""
    import shmcache

    name = f"bench-mem-{os.getpid()}"
    try:
        c = shmcache.Cache(name, size="64MB")
        val = b"v" * MEM_VALUE
        payload = 0
        for i in range(items):
            k = b"mem:%06d" % i
            c.set(k, val)
            payload += len(k) + len(val)
        st = c.stats()
    finally:
        shmcache.destroy(name)
    n = st["items"]
    index_bytes = st["segment_size"] - 4096 - st["shards"] * 512 - st["bytes_capacity"]
    return {
        "items_stored": n, "items_offered": items, "key_bytes": 10, "value_bytes": MEM_VALUE,
        "bytes_used": st["bytes_used"], "payload_bytes": payload * n // items,
        "overhead_per_item": (st["bytes_used"] - payload * n / items) / max(1, n),
        "index_bytes_reserved": index_bytes, "segment_size": st["segment_size"], "evictions": st["evictions"],
        "bytes_capacity": st["bytes_capacity"], "record_bytes": st["bytes_used"] / max(1, n),
    }


def _locmem_rss_child(q, items):
    """In a fresh (spawned) interpreter: RSS growth of LocMemCache holding the
    data set. Fresh, so no memory freed earlier in the run is reused."""
    import django
    from django.conf import settings

    settings.configure(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                           "LOCATION": "mem", "TIMEOUT": 3600, "OPTIONS": {"MAX_ENTRIES": 10_000_000}}})
    django.setup()
    from django.core.cache import caches

    c = caches["default"]
    c.set("warm", "v")  # imports and first-use allocations happen before the baseline
    gc.collect()
    before = rss_kb() * 1024
    v = "v" * MEM_VALUE
    for i in range(0, items, 1000):
        c.set_many({f"mem:{j:06d}": v for j in range(i, min(items, i + 1000))})
    gc.collect()
    q.put(rss_kb() * 1024 - before)


def locmem_rss_growth(items: int) -> int:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_locmem_rss_child, args=(q, items), daemon=True)
    p.start()
    r = q.get(timeout=300)
    p.join(30)
    return r


def load(cache, items: int) -> None:
    """The memory data set through a Django backend instance: `items` keys
    mem:NNNNNN with 100-character str values, set_many in batches of 1000."""
    v = "v" * MEM_VALUE
    for i in range(0, items, 1000):
        cache.set_many({f"mem:{j:06d}": v for j in range(i, min(items, i + 1000))})
    cache.close()
