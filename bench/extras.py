"""django-redis's extras, shmcache against django-redis on the same local
Redis in the same run: lock acquire+release pairs, ``set(nx=True)``,
``iter_keys`` and ``delete_pattern`` over 100k keys (issue: drop-in for
django-redis code)."""

from __future__ import annotations

import time

from bench.workloads import log

PAIR_N, NX_N, SCAN_N = 20_000, 20_000, 100_000


def _rate(n: int, fn) -> dict:
    t0 = time.perf_counter()
    fn()
    s = time.perf_counter() - t0
    return {"n": n, "seconds": round(s, 4), "ops_per_s": n / s}


def _fill(c, prefix: str, n: int) -> None:
    batch = 1000
    for i in range(0, n, batch):
        c.set_many({f"{prefix}{j}": j for j in range(i, min(n, i + batch))}, timeout=3600)


def run(alias: str, quick: bool) -> dict:
    from django.core.cache import caches

    c = caches[alias]
    c.clear()
    pairs, nx, scan = (500, 500, 5_000) if quick else (PAIR_N, NX_N, SCAN_N)
    out: dict = {}

    def lock_pairs():
        lk = c.lock("bench:lock", timeout=10)
        for _ in range(pairs):
            lk.acquire()
            lk.release()

    out["lock_pair"] = _rate(pairs, lock_pairs)

    def set_nx():
        for i in range(nx):
            c.set(f"nx:{i}", b"v", timeout=3600, nx=True)

    out["set_nx"] = _rate(nx, set_nx)

    _fill(c, "it:", scan)
    got = []
    out["iter_keys"] = _rate(scan, lambda: got.extend(c.iter_keys("it:*", itersize=1000)))
    out["iter_keys"]["found"] = len(got)
    _fill(c, "dp:", scan)
    deleted = []
    out["delete_pattern"] = _rate(scan, lambda: deleted.append(c.delete_pattern("dp:*", itersize=1000)))
    out["delete_pattern"]["deleted"] = deleted[0]
    assert deleted[0] == scan and len(got) == scan, (alias, deleted, len(got))
    c.clear()
    for k, v in out.items():
        log(f"  {alias:13s} {k:15s} {v['ops_per_s']:>12,.0f} /s  ({v['n']:,} in {v['seconds']:.3f} s)")
    return out
