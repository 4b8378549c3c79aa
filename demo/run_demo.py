"""`make demo`: four gunicorn workers, one shmcache.

Starts `gunicorn -w 4 mysite.wsgi` on a free localhost port, writes keys
through some workers, reads them back through others, counts to 200 with
/incr from many connections at once, prints the cache stats and a one-line
verdict, then stops gunicorn and removes the shared-memory segment.
Exit status 0 only if every check passed.

    python -m demo.run_demo          (from the repository root; make demo)
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from collections import Counter
from urllib.parse import quote

import shmcache
from devkit.gunicorn_demo import Gunicorn, GunicornError

WORKERS = 4
KEYS = ["color", "fruit", "planet", "river", "city", "metal", "bird", "tree"]
READS_PER_KEY = 24
INCRS = 200


class DemoFailure(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise DemoFailure(msg)


def pids_str(pids) -> str:
    return ", ".join(str(p) for p in sorted(pids))


def run(g: Gunicorn) -> None:
    seen: Counter[int] = Counter()  # pid -> requests it served

    print(f"gunicorn master pid {g.master_pid}, workers: {pids_str(g.worker_pids())}\n")

    # 1. Write: several connections at once so different workers take them.
    token = secrets.token_hex(3)
    values = {k: f"{k}-{token}-{i}" for i, k in enumerate(KEYS)}
    writes = g.get_many([f"/set/{quote(k)}/{quote(v)}" for k, v in values.items()], concurrency=WORKERS)
    writer = {}
    for k, r in zip(KEYS, writes):
        check(r["value"] == values[k], f"/set/{k} echoed {r['value']!r}, sent {values[k]!r}")
        writer[k] = r["pid"]
        seen[r["pid"]] += 1

    # 2. Read every key back many times; every answer must be the written value.
    print(f"1. {len(KEYS)} keys written, each read back {READS_PER_KEY} times over new connections")
    print(f"   {'key':<8} {'value':<18} {'written by':<11} {'reads':>5}  {'same value read by (other pids)':<32} check")
    cross = 0
    for k in KEYS:
        reads = g.get_many([f"/get/{quote(k)}"] * READS_PER_KEY, concurrency=WORKERS)
        others = set()
        n = len(reads)
        for r in reads:
            seen[r["pid"]] += 1
            check(r["value"] == values[k],
                  f"pid {r['pid']} read {k!r} = {r['value']!r}; pid {writer[k]} wrote {values[k]!r}")
            if r["pid"] != writer[k]:
                others.add(r["pid"])
        if not others:  # unlucky scheduling: insist on another worker (bounded)
            r, tries = g.get_from_other_pid(f"/get/{quote(k)}", writer[k], with_tries=True)
            n += tries
            seen[r["pid"]] += 1
            check(r["value"] == values[k],
                  f"pid {r['pid']} read {k!r} = {r['value']!r}; pid {writer[k]} wrote {values[k]!r}")
            others.add(r["pid"])
        cross += 1
        print(f"   {k:<8} {values[k]:<18} pid {writer[k]:<7} {n:>5}  {pids_str(others):<32} ok")
    print()

    # 3. Atomic counter hammered from many connections at once.
    results = g.get_many(["/incr/hits"] * INCRS, concurrency=8)
    by_pid = Counter(r["pid"] for r in results)
    seen.update(by_pid)
    got = sorted(r["value"] for r in results)
    final = g.get("/get/hits")
    seen[final["pid"]] += 1
    print(f"2. {INCRS} x /incr/hits, 8 connections at a time")
    print(f"   final count: {final['value']} (expected {INCRS}), read by pid {final['pid']}")
    print(f"   served by {len(by_pid)} distinct pids: "
          + ", ".join(f"{p} x{n}" for p, n in sorted(by_pid.items())))
    check(final["value"] == INCRS, f"counter is {final['value']}, expected {INCRS}: increments were lost")
    check(got == list(range(1, INCRS + 1)),
          "the increments did not return 1..200 exactly once each (duplicate or lost counts)")
    print("   every increment returned a distinct value 1..200: no count lost or repeated\n")

    # 4. Stats, as any worker sees them.
    st = g.get("/stats")
    seen[st["pid"]] += 1
    s = st["stats"]
    print(f"3. cache.stats() from pid {st['pid']} (segment {s.get('segment')})")
    keys = ["items", "bytes_used", "hits", "misses", "sets", "evictions", "lock_recoveries", "lock_timeouts"]
    print("   " + "  ".join(f"{k}={s[k]}" for k in keys if k in s))
    print()

    check(len(seen) >= 2, f"only {len(seen)} worker pid served requests; cannot show sharing")
    check(s.get("lock_timeouts", 0) == 0, f"{s['lock_timeouts']} lock timeouts during the demo")
    print(f"OK: {len(seen)} workers shared one cache "
          f"({cross}/{len(KEYS)} keys read back by another worker, counter {final['value']}/{INCRS}, "
          f"pids {pids_str(seen)})")


def main() -> int:
    # A SIGTERM to the demo must still run the finally below (stop gunicorn).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.stdout.reconfigure(line_buffering=True)  # keep stdout and stderr in order
    location = f"shmcache-demo-{os.getpid()}"
    t0 = time.monotonic()
    g = Gunicorn(location, workers=WORKERS)
    code = 1
    started = False
    try:
        print(f"shmcache demo: starting gunicorn -w {WORKERS} mysite.wsgi (cache LOCATION {location!r})")
        g.start()
        started = True
        print(f"serving on {g.base_url}")
        run(g)
        code = 0
    except (DemoFailure, GunicornError, OSError, ValueError, KeyError) as e:
        print(f"\nFAIL: {type(e).__name__}: {e}", file=sys.stderr)
        if started:  # a startup failure's message already ends with the log
            print("---- gunicorn log (tail) ----\n" + g.log_tail(), file=sys.stderr)
    finally:
        rc = g.stop()
        removed = shmcache.destroy(location)
        if g.proc is not None:
            print(f"gunicorn stopped (exit code {rc}); segment removed: {removed}; "
                  f"{time.monotonic() - t0:.1f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
