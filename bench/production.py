"""TieredCache on the Redis production runs (issue 24), in one run:

- the failover timeline: a primary and a replica behind three sentinels
  (down-after 1 s); a TieredClient host whose listener is live; the primary
  SIGKILLed; the moments the sentinels name the replica primary, the first
  write succeeds again, and L1 is live again (on a watermark sent after the
  kill). A fresh set-up per trial;
- the staleness after a remote write on Valkey beside Redis (each host's
  listener a ``python -m shmcache listen`` sidecar, as in bench/tiered.py),
  idle, the same method as bench/tiered.py's.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import tempfile
import time

from bench.workloads import log
from devkit.redis_server import RedisServer, SentinelSet, redis_server_path
from devkit.wait import wait_for

PREFIX = "bp"


def _failover_trial(tmp: str, loc: str) -> dict:
    import redis

    from shmcache._core import monotonic_ms
    from shmcache.tiered import TieredClient, l1_location
    from shmcache.tiered import listener as _listener

    s = SentinelSet(os.path.join(tmp, "sentinels"))
    c = TieredClient(loc, s.options(), key_prefix=PREFIX, size="16MB", max_staleness=1.0)
    try:
        c.listen()
        wait_for(lambda: c._core.live(1000), 15, "L1 live", every=0.001)
        c.set(f"{PREFIX}:1:k", 0)
        os.kill(s.primary.pid, signal.SIGKILL)
        t0, kill_ms = time.monotonic(), monotonic_ms()
        promoted = written = live = None
        i = 0
        while time.monotonic() - t0 < 30 and (promoted is None or written is None or live is None):
            now = time.monotonic() - t0
            if promoted is None and s.primary_address() == ("127.0.0.1", s.replica.port):
                promoted = now
            if written is None:
                try:
                    i += 1
                    c.set(f"{PREFIX}:1:k", i)
                    written = time.monotonic() - t0
                except redis.RedisError:
                    pass
            if live is None and c._core.live(1000) and c._core.watermark_ms > kill_ms:
                live = time.monotonic() - t0
            time.sleep(0.005)
        return {"promoted_s": promoted, "first_write_s": written, "l1_live_s": live,
                "failovers": c.stats()["failovers"]}  # fmt: skip
    finally:
        _listener.stop_all()
        _destroy(l1_location(loc, PREFIX), c.segment)
        s.stop()


def _destroy(l1: str, seg: str) -> None:
    """An L1 segment, its election file and its listener's state."""
    import shmcache
    from shmcache.tiered import listener as _listener

    shmcache.destroy(l1)
    for path in (_listener.lock_path(seg), _listener.state_path(seg)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def failover(quick: bool) -> dict:
    tmp = tempfile.mkdtemp(prefix="shmcache-bench-failover-")
    try:
        trials = [_failover_trial(os.path.join(tmp, str(i)), f"bench-fo-{os.getpid()}-{i}") for i in range(1 if quick else 3)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = {"trials": trials}
    for k in ("promoted_s", "first_write_s", "l1_live_s"):
        got = [t[k] for t in trials if t[k] is not None]
        out[k] = statistics.median(got) if len(got) == len(trials) else None
    def sec(x: float | None) -> str:
        return "never" if x is None else f"{x:.2f} s"

    log(f"   failover (median of {len(trials)}): replica promoted {sec(out['promoted_s'])}, first write "
        f"{sec(out['first_write_s'])}, L1 live again {sec(out['l1_live_s'])} after the SIGKILL")
    return out


def staleness_on(exe: str, tmp: str, n: int) -> dict:
    """bench/tiered.py's staleness after a remote write (idle), with L2 a
    fresh `exe` (redis-server or valkey-server)."""
    import shmcache
    from bench import tiered as T
    from shmcache.tiered import l1_location

    srv = RedisServer(os.path.join(tmp, exe), exe=exe)
    loc = f"bench-stale-{exe}-{os.getpid()}"
    sides = []
    try:
        tiered, tiered_b, _, _ = T._client_caches(srv.url, loc)
        sides = [T._sidecar(loc + "-a", srv.url), T._sidecar(loc + "-b", srv.url)]
        for c in (tiered, tiered_b):
            T._wait(lambda c=c: c._cache.stats()["live"], 15, "the sidecars live")
        return T.staleness(tiered, tiered_b, n, 0, loc, srv.url)
    finally:
        for p in sides:
            p.kill()
            p.wait(5)
        for name in (loc + "-a", loc + "-b"):
            l1 = l1_location(name, T.PREFIX)
            _destroy(l1, shmcache.segment_name(l1))
        shmcache.destroy(loc + "-plain")
        srv.stop()


def run(quick: bool) -> dict:
    out: dict = {"failover": failover(quick)}
    tmp = tempfile.mkdtemp(prefix="shmcache-bench-valkey-")
    try:
        n = 30 if quick else 300
        out["staleness"] = {"redis": staleness_on("redis-server", tmp, n)}
        if redis_server_path("valkey-server"):
            out["staleness"]["valkey"] = staleness_on("valkey-server", tmp, n)
        else:
            out["staleness"]["valkey"] = None
            log("   valkey-server not installed (make test-tools installs it): Valkey not measured")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
