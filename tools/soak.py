#!/usr/bin/env python3
"""Soak test: hours of cache life compressed into N seconds.

Writer processes (``--procs``, forked) hammer one ``shmcache.Cache`` with a
mix of sizes from a few bytes to the MAX_ITEM_SIZE limit, overwrites,
deletes, TTLs (some expiring within the run), touches and reads, writing
many times the cache's capacity so it evicts all the time. Every writer
checks what it reads against what it wrote: a value read back is the latest
version written to that key (whole, never torn or stale), never one
deleted or past its TTL, and every set of a value within MAX_ITEM_SIZE
returns True. Operation latencies are recorded; an operation that raises
LockTimeout (the lock holder kept the lock past LOCK_TIMEOUT, as happens
when a loaded host deschedules it) changed nothing and is counted and
skipped; more than ``--max-lock-timeouts-ppm`` per million is a failure.

Every ``--check-every`` seconds the writers pause (at a barrier, between
operations) and the checker verifies:

* the segment file in /dev/shm never changes size (no growth, no truncation);
* ``stats()['items']`` and ``stats()['bytes_used']`` equal what
  ``_core.verify()`` counts by walking every shard, and no shard was ever
  wiped (a wipe in a healthy run means damage was detected);
* memory returns: a probe of known items is set, then deleted, and
  ``bytes_used`` drops by exactly their record sizes, back to at most its
  level before the probe.

At the end every key is deleted: ``items`` and ``bytes_used`` must be 0.
Prints figures; exits 1 on any failure.

    python -m tools.soak --seconds 600          (make soak)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import threading
import time
import traceback
import uuid

import shmcache
from devkit.proc import rss_kb

REC_HDR = 32
FORK = mp.get_context("fork")


def rec_size(key: bytes, value_len: int) -> int:
    """Bytes an item occupies in the log (32-byte header, key, value, pad to 8)."""
    return (REC_HDR + len(key) + value_len + 7) & ~7


def value_for(key: bytes, version: int, size: int) -> bytes:
    """A deterministic value: the key and version, then a fill byte that
    changes with the version, so a stale or torn value never compares equal."""
    return (b"%s|%d|" % (key, version) + bytes([version % 251]) * size)[:size]


class Failure(Exception):
    pass


# ---------------------------------------------------------------- writers


def writer(wid: int, args, pause, stop, barrier, results) -> None:
    try:
        results.put(("done", wid, _writer(wid, args, pause, stop, barrier)))
    except BaseException as e:  # report, never hang the checker
        results.put(("error", wid, f"writer {wid}: {e!r}\n{traceback.format_exc()}"))
        barrier.abort()
        sys.exit(1)


def _writer(wid: int, args, pause, stop, barrier) -> dict:
    c = shmcache.Cache(args.location, size=args.size, max_item_size=args.max_item_size)
    max_item = c.stats()["max_item_size"]
    rnd = random.Random(args.seed * 1000 + wid)
    # key -> (version, value size, deadline after which it must be gone, or None); deleted keys -> None
    state: dict[bytes, tuple[int, int, float | None] | None] = {}
    n = dict(sets=0, set_bytes=0, gets=0, hits=0, deletes=0, touches=0, ttl_sets=0, near_max=0, same_size=0, typed=0,
             lock_timeouts=0, over_10ms=0, over_100ms=0, max_op_ms=0.0)
    keys = [b"w%d-%d" % (wid, i) for i in range(args.keys)]
    version = 0
    skipped = object()

    def call(fn, *a, **kw):
        """One cache call, timed. A LockTimeout means a lock holder kept the
        lock past LOCK_TIMEOUT (on a loaded host: descheduled while holding
        it); the call changed nothing, so it is counted and skipped."""
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        except shmcache.LockTimeout:
            n["lock_timeouts"] += 1
            return skipped
        finally:
            ms = (time.perf_counter() - t) * 1000
            if ms > n["max_op_ms"]:
                n["max_op_ms"] = ms
            if ms > 10:
                n["over_10ms"] += 1
                n["over_100ms"] += ms > 100

    def size_for(key: bytes) -> int:
        room = max_item - len(key)
        prev = state.get(key)
        if prev is not None and prev[1] >= 0 and rnd.random() < 0.2:
            n["same_size"] += 1  # the same record size: overwritten in place
            return prev[1]
        r = rnd.random()
        if r < 0.40:
            return rnd.randint(0, 64)  # tiny
        if r < 0.70:
            return rnd.randint(65, 4096)  # small
        if r < 0.90:
            return rnd.randint(4097, min(64 * 1024, room))  # medium
        if r < 0.97:
            return rnd.randint(min(64 * 1024, room), room)  # large
        n["near_max"] += 1
        return room - rnd.randint(0, 8)  # at or just under MAX_ITEM_SIZE (key + value)

    while not stop.is_set():
        if pause.is_set():
            barrier.wait(timeout=args.barrier_timeout)  # paused: the checker runs
            barrier.wait(timeout=args.barrier_timeout)  # resumed
            continue
        for _ in range(50):
            key = keys[int(rnd.paretovariate(1.2)) % len(keys)] if rnd.random() < 0.5 else rnd.choice(keys)
            op = rnd.random()
            now = time.time()
            if op < 0.45:  # set (some with a TTL)
                version += 1
                size = size_for(key)
                ttl = None
                if rnd.random() < 0.3:
                    ttl = rnd.choice([0.05, 0.2, 1.0, 5.0, 60.0])
                    n["ttl_sets"] += 1
                if rnd.random() < 0.05:  # other value types go through encode/pickle
                    val: object = {"k": key, "v": version} if rnd.random() < 0.5 else version
                    size = -1
                else:
                    val = value_for(key, version, size)
                ok = call(c.set, key, val, timeout=ttl)
                if ok is skipped:
                    continue
                if size < 0:
                    n["typed"] += 1
                else:
                    n["set_bytes"] += size
                if ok is not True:
                    raise Failure(f"set of {key!r} ({size} bytes, max item {max_item}) returned {ok!r}")
                n["sets"] += 1
                deadline = None if ttl is None else time.time() + ttl + 0.005
                state[key] = (version, size, deadline)
            elif op < 0.85:  # get, checked against what this writer wrote last
                got = call(c.get, key)
                if got is skipped:
                    continue
                n["gets"] += 1
                st = state.get(key)
                if got is None:
                    continue
                n["hits"] += 1
                if st is None:
                    raise Failure(f"get {key!r}: a deleted or never-written key returned a value")
                ver, size, deadline = st
                if deadline is not None and now > deadline:
                    raise Failure(f"get {key!r}: returned a value {now - deadline:.3f}s past its TTL")
                want = ({"k": key, "v": ver}, ver) if size < 0 else (value_for(key, ver, size),)
                if got not in want:
                    desc = got[:40] if isinstance(got, bytes) else got
                    raise Failure(f"get {key!r}: stale, torn or foreign value {desc!r} (latest version {ver})")
            elif op < 0.95:
                if call(c.delete, key) is skipped:
                    continue
                n["deletes"] += 1
                state[key] = None
            else:  # touch: a new TTL (or none) for a live key
                st = state.get(key)
                ttl = rnd.choice([None, 0.1, 2.0, 30.0])
                if (r := call(c.touch, key, ttl)) is skipped:
                    continue
                if r:
                    if st is None:
                        raise Failure(f"touch {key!r}: a deleted or never-written key was present")
                    state[key] = (st[0], st[1], None if ttl is None else time.time() + ttl + 0.005)
                n["touches"] += 1
    n["rss_anon_kb"] = rss_kb("self", "RssAnon")
    return n


# ---------------------------------------------------------------- checker


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--procs", type=int, default=2, help="writer processes")
    ap.add_argument("--size", default="32MB")
    ap.add_argument("--max-item-size", default="512KB")
    ap.add_argument("--keys", type=int, default=20_000, help="keys per writer")
    ap.add_argument("--check-every", type=float, default=5.0, help="seconds between checks")
    ap.add_argument("--probe", type=int, default=300, help="items set and deleted by each memory check")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--location", default=None)
    ap.add_argument("--barrier-timeout", type=float, default=120.0)
    ap.add_argument("--max-rss-mb", type=int, default=256, help="fail if a writer's private memory ends above this")
    ap.add_argument("--max-lock-timeouts-ppm", type=float, default=100,
                    help="lock timeouts tolerated per million operations (a loaded host can deschedule a lock holder)")
    args = ap.parse_args(argv)
    args.seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    args.location = args.location or f"soak-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    shmcache.destroy(args.location)
    try:
        return run(args)
    finally:
        shmcache.destroy(args.location)


def run(args) -> int:
    c = shmcache.Cache(args.location, size=args.size, max_item_size=args.max_item_size)
    s0 = c.stats()
    path = "/dev/shm" + s0["segment"]
    seg_size = os.stat(path).st_size
    cap, max_item = s0["bytes_capacity"], s0["max_item_size"]
    print(f"soak: {args.seconds:g}s, {args.procs} writer process(es), seed {args.seed}")
    print(f"soak: segment {path}: {seg_size} bytes, {s0['shards']} shards, item capacity {cap} bytes, "
          f"MAX_ITEM_SIZE {max_item}")
    failures: list[str] = []
    figures = dict(checks=0, probes_set=0, probe_bytes_returned=0, min_items=None, max_items=0, max_bytes_used=0)
    rnd = random.Random(args.seed)

    def fail(msg: str) -> None:
        failures.append(msg)
        print(f"soak: FAIL: {msg}", flush=True)

    def check(label: str) -> None:
        figures["checks"] += 1
        size = os.stat(path).st_size
        if size != seg_size:
            fail(f"{label}: segment file is {size} bytes, was {seg_size}")
        st = c.stats()
        items, used = c._core.verify()
        if (st["items"], st["bytes_used"]) != (items, used):
            fail(f"{label}: stats() says {st['items']} items / {st['bytes_used']} bytes, verify() counts {items} / {used}")
        if st["shard_wipes"] != s0["shard_wipes"]:
            fail(f"{label}: {st['shard_wipes'] - s0['shard_wipes']} shard wipe(s): damage detected in a healthy run")
        if st["bytes_used"] > st["bytes_capacity"]:
            fail(f"{label}: bytes_used {st['bytes_used']} > capacity {st['bytes_capacity']}")
        figures["min_items"] = items if figures["min_items"] is None else min(figures["min_items"], items)
        figures["max_items"] = max(figures["max_items"], items)
        figures["max_bytes_used"] = max(figures["max_bytes_used"], used)
        # Memory returns: set a probe of known items, delete them, and watch
        # bytes_used fall by exactly their record sizes.
        before = c.stats()["bytes_used"]
        probe = {}
        for i in range(args.probe):
            k = f"probe-{figures['checks']}-{i}".encode()
            n = rnd.choice([0, 10, 1000, 20_000, max_item // 4, max_item - len(k)])
            probe[k] = n
            if c.set(k, b"p" * n) is not True:
                fail(f"{label}: probe set of {n} bytes returned False")
        figures["probes_set"] += len(probe)
        mid = c.stats()["bytes_used"]
        freed = sum(rec_size(k, n) for k, n in probe.items() if c.delete(k))  # evicted ones free nothing
        after = c.stats()["bytes_used"]
        figures["probe_bytes_returned"] += mid - after
        if mid - after != freed:
            fail(f"{label}: deleting the probe freed {mid - after} bytes, its items hold {freed}")
        if after > before:
            fail(f"{label}: bytes_used {after} after the probe was deleted, {before} before it was set")
        print(f"soak: [{label}] items {items}, bytes_used {used} ({100 * used / cap:.0f}% of capacity), "
              f"probe freed {mid - after} bytes, evictions {st['evictions']}, expirations {st['expirations']}",
              flush=True)

    pause, stop = FORK.Event(), FORK.Event()
    barrier = FORK.Barrier(args.procs + 1)
    results = FORK.Queue()
    procs = [FORK.Process(target=writer, args=(w, args, pause, stop, barrier, results), daemon=True)
             for w in range(args.procs)]
    rss0 = rss_kb("self", "RssAnon")
    t0 = time.time()
    for p in procs:
        p.start()
    deadline = t0 + args.seconds
    next_check = t0 + min(args.check_every, args.seconds / 2)
    broken = False
    while time.time() < deadline and not broken:
        time.sleep(max(0.0, min(next_check, deadline) - time.time()))
        if any(not p.is_alive() for p in procs):
            break
        if time.time() >= next_check:
            pause.set()
            try:
                barrier.wait(timeout=args.barrier_timeout)  # every writer is between operations
                check(f"{time.time() - t0:6.1f}s")
                pause.clear()
                barrier.wait(timeout=args.barrier_timeout)
            except threading.BrokenBarrierError:
                broken = True
            next_check = time.time() + args.check_every
    stop.set()
    pause.clear()
    done = {}
    for _ in procs:
        try:
            kind, wid, payload = results.get(timeout=args.barrier_timeout)
        except Exception:
            fail("a writer neither finished nor reported an error")
            break
        if kind == "error":
            fail(payload)
        else:
            done[wid] = payload
    for p in procs:
        p.join(30)
        if p.exitcode not in (0, None) and not failures:
            fail(f"writer pid {p.pid} exited with {p.exitcode}")
    elapsed = time.time() - t0

    if not failures:
        check("final")
    st = c.stats()
    # Drain: delete every key; all memory must come back.
    for w in range(args.procs):
        c.delete_many([b"w%d-%d" % (w, i) for i in range(args.keys)])
    end = c.stats()
    end_verify = c._core.verify()
    if (end["items"], end["bytes_used"]) != (0, 0) or end_verify != (0, 0):
        fail(f"after deleting every key: {end['items']} items, {end['bytes_used']} bytes used, verify {end_verify}")

    tot = {k: sum(d[k] for d in done.values()) for k in (next(iter(done.values())) if done else {})}
    written = tot.get("set_bytes", 0)
    print()
    print(f"soak figures ({elapsed:.0f}s, {args.procs} writers, seed {args.seed}):")
    print(f"  segment size       {seg_size} bytes, unchanged: {os.stat(path).st_size == seg_size}")
    print(f"  item capacity      {cap} bytes")
    if tot:
        print(f"  sets               {tot['sets']} ({tot['sets'] / elapsed:.0f}/s), all True; "
              f"{tot['ttl_sets']} with a TTL, {tot['near_max']} at/near MAX_ITEM_SIZE, {tot['same_size']} the key's previous size (in place if still stored), {tot['typed']} pickled/int")
        print(f"  value bytes set    {written} = {written / cap:.1f} x capacity")
        print(f"  gets               {tot['gets']}, hits {tot['hits']} ({100 * tot['hits'] / max(tot['gets'], 1):.1f}%), "
              f"every hit the latest version")
        print(f"  deletes / touches  {tot['deletes']} / {tot['touches']}")
        ops = tot["sets"] + tot["gets"] + tot["deletes"] + tot["touches"]
        print(f"  slow operations    {tot['over_10ms']} over 10 ms, {tot['over_100ms']} over 100 ms of {ops}; "
              f"slowest {max(d['max_op_ms'] for d in done.values()):.1f} ms")
        print(f"  lock timeouts      {tot['lock_timeouts']} (operation skipped; LOCK_TIMEOUT 0.1 s)")
        print(f"  writer RssAnon     {', '.join(str(d['rss_anon_kb']) + ' KiB' for d in done.values())}")
    print(f"  evictions          {st['evictions']}")
    print(f"  expirations        {st['expirations']}")
    print(f"  shard wipes        {st['shard_wipes']}; lock timeouts {st['lock_timeouts']}; lock recoveries {st['lock_recoveries']}")
    print(f"  items at checks    {figures['min_items']}..{figures['max_items']}; max bytes_used "
          f"{figures['max_bytes_used']} ({100 * figures['max_bytes_used'] / cap:.0f}% of capacity)")
    print(f"  checks             {figures['checks']} (size, stats == verify, no wipes, probe of {args.probe} "
          f"items freed exactly: {figures['probe_bytes_returned']} bytes in all)")
    print(f"  after drain        items {end['items']}, bytes_used {end['bytes_used']}, verify {end_verify}")
    print(f"  checker RssAnon    {rss0} KiB -> {rss_kb('self', 'RssAnon')} KiB")
    if tot and written < 2 * cap:
        fail(f"wrote only {written} bytes, less than twice the capacity ({2 * cap}); run longer")
    if tot and tot["lock_timeouts"] * 1_000_000 > args.max_lock_timeouts_ppm * max(tot["sets"] + tot["gets"], 1):
        fail(f"{tot['lock_timeouts']} lock timeouts: more than {args.max_lock_timeouts_ppm} per million operations")
    if tot and st["evictions"] == 0:
        fail("no evictions: the cache never filled")
    # A leak of anything per operation would show after millions of them.
    for w, d in done.items():
        if d["rss_anon_kb"] > args.max_rss_mb * 1024:
            fail(f"writer {w} ends with {d['rss_anon_kb']} KiB of private memory (limit {args.max_rss_mb} MiB): a leak?")
    if len(done) != args.procs and not failures:
        fail("not every writer reported")
    print(f"soak: {'FAILED' if failures else 'OK'} ({len(failures)} failure(s))")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
