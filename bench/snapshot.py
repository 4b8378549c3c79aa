"""Snapshots: `Cache.dump` and `Cache.load` of a full 256 MB cache (issue
12), in MB/s of snapshot file. Filled with 4 KiB values until the cache
evicts (full), dumped to a file in the run's temporary directory, cleared,
and loaded back into the same segment."""

from __future__ import annotations

import os
import time

from bench.workloads import log

SIZE_MB, VALUE_BYTES = 256, 4096


def run(tmp: str, quick: bool) -> dict:
    import shmcache

    size_mb = 32 if quick else SIZE_MB
    loc = f"bench-snapshot-{os.getpid()}"
    path = os.path.join(tmp, "bench.snap")
    try:
        c = shmcache.Cache(loc, size=f"{size_mb}MB", max_item_size="64KB")
        c.clear()
        value, i = os.urandom(VALUE_BYTES), 0
        while c.stats()["evictions"] == 0:
            c._core.set_many([(f"snap:{j:08}", value) for j in range(i, i + 1000)], None)
            i += 1000
        items = c.stats()["items"]
        t0 = time.perf_counter()
        d = c.dump(path)
        dump_s = time.perf_counter() - t0
        c.clear()
        t0 = time.perf_counter()
        ld = c.load(path)
        load_s = time.perf_counter() - t0
        mb = d["file_bytes"] / 1e6
        out = {
            "size_mb": size_mb, "value_bytes": VALUE_BYTES, "items": items, "file_bytes": d["file_bytes"],
            "dump_seconds": round(dump_s, 4), "load_seconds": round(load_s, 4),
            "dump_mb_per_s": mb / dump_s, "load_mb_per_s": mb / load_s,
            "loaded": ld["loaded"], "dropped": ld["dropped"],
        }  # fmt: skip
        log(f"   dump {out['dump_mb_per_s']:,.0f} MB/s, load {out['load_mb_per_s']:,.0f} MB/s "
            f"({items:,} items, {mb:,.0f} MB file; loaded {ld['loaded']:,}, dropped {ld['dropped']:,})")
        return out
    finally:
        shmcache.destroy(loc)
        if os.path.exists(path):
            os.remove(path)
