#!/usr/bin/env python3
"""Gunicorn chaos: the demo Django site (demo/mysite) under a real gunicorn
whose workers are recycled and killed all the time, with client load.

    python -m tools.chaos_gunicorn --seconds 120 [--workers 4] [--json out.json]
    python -m tools.chaos --gunicorn --seconds 120          # the same

* ``--max-requests 20 --max-requests-jitter 10``: every worker is replaced
  after 20-30 requests, so workers start (and attach) and exit constantly;
* ``--timeout 2``: a sleeper thread keeps asking for ``/sleep/<timeout+3>``
  (gunicorn aborts, then SIGKILLs, that worker) and for
  ``/pauseset/<key>/<ms>``, a set that sleeps half-way through writing its
  value with the shard lock held and the shard marked mid-write (the core's
  test hook), so gunicorn's SIGKILL lands inside the critical section; the
  key is chosen on another shard than the counter's;
* several client threads send get/set/incr/stats for the whole run.

Pass conditions: every request that is not a deliberate sleeper answers 200;
every request (sleepers included) finishes within a bound (no hung worker,
and gunicorn reports no WORKER TIMEOUT beyond the deliberate sleepers); the
segment's inode in /dev/shm never changes and the name never disappears;
/incr returns every value once and the final counter equals the number of
successful increments (plus at most the ones whose answer was lost); no /get
returns a value that was not written for its key; the master stays up; the
sleepers were killed and their locks recovered (lock_recoveries at least the
killed pausesets), their shards rebuilt from the log, never wiped
(shard_wipes 0).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path

from devkit.net import HTTPStatusError, get_json
from devkit.stats import percentile

DEMO_SIZE = "32MB"  # demo/mysite/settings.py: SHMCACHE_DEMO_SIZE


class Result:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = Counter()  # kind -> count
        self.ok = Counter()
        self.errors: list[dict] = []  # non-deliberate failures
        self.latencies: list[float] = []
        self.over_bound: list[dict] = []
        self.pids: set[int] = set()
        self.incr_values: list[int] = []
        self.incr_uncertain = 0
        self.wrong_values: list[dict] = []
        self.sleepers = Counter()  # outcome -> count
        self.sleeper_latencies: list[float] = []
        self.sleeper_log: list[dict] = []


def http_get(url: str, timeout: float):
    """(status, body dict or None, error string or None)."""
    try:
        return 200, get_json(url, timeout), None
    except HTTPStatusError as e:
        return e.status, None, f"HTTP {e.status}"
    except Exception as e:  # connection reset/refused, timeout, bad JSON
        return None, None, repr(e)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--threads", type=int, default=6, help="client threads")
    p.add_argument("--max-requests", type=int, default=20)
    p.add_argument("--jitter", type=int, default=10)
    p.add_argument("--timeout", type=int, default=2, help="gunicorn --timeout")
    p.add_argument("--sleep-every", type=float, default=3.0, help="mean seconds between deliberate sleepers")
    p.add_argument("--request-bound", type=float, default=10.0, help="longest acceptable answer time (s)")
    p.add_argument("--preload", action="store_true", help="gunicorn --preload")
    p.add_argument("--json")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--seed", type=int)
    a = p.parse_args(argv)

    import shmcache
    from devkit.gunicorn_demo import Gunicorn

    location = f"chaos-gunicorn-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    seg_path = "/dev/shm" + shmcache.segment_name(location)
    extra = ["--max-requests", str(a.max_requests), "--max-requests-jitter", str(a.jitter),
             "--timeout", str(a.timeout), "--graceful-timeout", str(a.timeout + 3)]
    if a.preload:
        extra.append("--preload")
    g = Gunicorn(location, workers=a.workers, extra_args=tuple(extra),
                 env={"SHMCACHE_DEMO_CHAOS": "1", "SHMCACHE_DEMO_SIZE": DEMO_SIZE}, startup_timeout=60)
    res = Result()
    rng = random.Random(a.seed)
    t_start = time.monotonic()
    load_start = os.getloadavg()
    out: dict = {}
    signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    signal.alarm(int(a.seconds + 180))
    try:
        g.start()
        base = g.base_url
        c = shmcache.Cache(location, size=DEMO_SIZE)  # to aim pausesets away from the counter's shard
        inode0 = os.stat(seg_path).st_ino
        ctr_shard = c._core.shard_of(b":1:ctr")
        pause_keys = [k for k in (f"pz{i}" for i in range(200)) if c._core.shard_of(b":1:" + k.encode()) != ctr_shard][:20]
        stop = threading.Event()
        deadline = time.monotonic() + a.seconds
        inodes: Counter = Counter()
        missing = [0]
        master_died = [False]

        def monitor():
            while not stop.is_set():
                try:
                    inodes[os.stat(seg_path).st_ino] += 1
                except FileNotFoundError:
                    missing[0] += 1
                if g.proc.poll() is not None:
                    master_died[0] = True
                time.sleep(0.02)

        def record(kind, t0, status, body, err, deliberate=False):
            dt = time.monotonic() - t0
            with res.lock:
                res.requests[kind] += 1
                if body and "pid" in body:
                    res.pids.add(body["pid"])
                if deliberate:
                    return dt
                res.latencies.append(dt)
                if dt > a.request_bound:
                    res.over_bound.append({"kind": kind, "seconds": round(dt, 3)})
                if status == 200:
                    res.ok[kind] += 1
                else:
                    res.errors.append({"kind": kind, "status": status, "error": err, "t": round(time.monotonic() - t_start, 3)})
            return dt

        def client(n):
            r = random.Random(rng.random() + n)
            keys = [f"k{i}" for i in range(300)]
            seq = 0
            while time.monotonic() < deadline and not stop.is_set():
                x = r.random()
                t0 = time.monotonic()
                if x < 0.35:
                    k = r.choice(keys)
                    st, body, err = http_get(f"{base}/get/{k}", a.request_bound * 2)
                    record("get", t0, st, body, err)
                    if st == 200:
                        v = body.get("value")
                        if v is not None and not (isinstance(v, str) and re.fullmatch(re.escape(k) + r"\.\d+\.\d+", v)):
                            with res.lock:
                                res.wrong_values.append({"key": k, "value": repr(v)[:80]})
                elif x < 0.60:
                    k = r.choice(keys)
                    seq += 1
                    st, body, err = http_get(f"{base}/set/{k}/{k}.{n}.{seq}", a.request_bound * 2)
                    record("set", t0, st, body, err)
                elif x < 0.95:
                    st, body, err = http_get(f"{base}/incr/ctr", a.request_bound * 2)
                    record("incr", t0, st, body, err)
                    with res.lock:
                        if st == 200:
                            res.incr_values.append(body["value"])
                        else:
                            res.incr_uncertain += 1
                else:
                    st, body, err = http_get(f"{base}/stats", a.request_bound * 2)
                    record("stats", t0, st, body, err)

        def sleeper():
            n = 0
            while not stop.is_set():
                # the first two (one of each kind) come early, so short runs have both
                wait = 1.0 if n < 2 else rng.expovariate(1 / a.sleep_every)
                if time.monotonic() + wait + a.timeout + 6 > deadline:
                    break
                if stop.wait(wait):
                    break
                n += 1
                if n % 2:
                    kind, path = "sleep", f"/sleep/{a.timeout + 3}"
                else:
                    kind, path = "pauseset", f"/pauseset/{rng.choice(pause_keys)}/{(a.timeout + 4) * 1000}"
                t0 = time.monotonic()
                st, body, err = http_get(base + path, a.timeout + 30)
                dt = record(kind, t0, st, body, err, deliberate=True)
                with res.lock:
                    res.sleeper_latencies.append(dt)
                    # SIGABRT at --timeout: gunicorn's handler raises SystemExit in the
                    # view and answers 500; if the worker cannot run Python (the
                    # pauseset sleeps inside the core), the master SIGKILLs it.
                    if st == 200:
                        outcome = "answered"
                    elif st == 500:
                        outcome = "aborted"
                    elif st is None and "timed out" not in (err or ""):
                        outcome = "killed"
                    else:
                        outcome = "other"
                    res.sleepers[f"{kind}_{outcome}"] += 1
                    res.sleeper_log.append({"kind": kind, "status": st, "error": err, "seconds": round(dt, 3)})
                    if dt > a.timeout + 3 + 10:
                        res.over_bound.append({"kind": kind, "seconds": round(dt, 3)})

        threads = [threading.Thread(target=monitor, daemon=True), threading.Thread(target=sleeper, daemon=True)]
        threads += [threading.Thread(target=client, args=(i,), daemon=True) for i in range(a.threads)]
        for t in threads:
            t.start()
        next_report = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if not a.quiet and time.monotonic() >= next_report:
                next_report += 10
                with res.lock:
                    print(f"[gunicorn chaos {time.monotonic() - t_start:6.1f}s] requests={sum(res.requests.values())} "
                          f"errors={len(res.errors)} pids={len(res.pids)} sleepers={dict(res.sleepers)} "
                          f"load={os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
        for t in threads[1:]:
            t.join(a.request_bound * 2 + a.timeout + 40)
        hung_threads = sum(t.is_alive() for t in threads[1:])
        stop.set()
        threads[0].join(5)
        run_seconds = time.monotonic() - t_start

        # -- after the load: the site still answers, the counter adds up --
        st, body, err = http_get(f"{base}/get/ctr", 20)
        final = body.get("value") if st == 200 else None
        c._core.verify()  # takes every shard lock: any lock left by a killed worker is recovered now
        stats = c.stats()
        log = g.log_tail(1 << 30)
        master_alive = g.proc.poll() is None
        inode_end = os.stat(seg_path).st_ino if os.path.exists(seg_path) else None
    except BaseException as e:
        out = {"mode": "gunicorn", "pass": False, "failures": [f"aborted: {e!r}"], "traceback": traceback.format_exc()[-3000:],
               "gunicorn_log_tail": g.log_tail(3000) if g.proc else ""}
        print(json.dumps(out, indent=2), file=sys.stderr)
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=2))
        return 1
    finally:
        signal.alarm(0)
        g.stop()
        shmcache.destroy(location)

    vals = res.incr_values
    ok_incr = len(vals)
    incr_ok = (len(set(vals)) == len(vals) and isinstance(final, int)
               and ok_incr <= final <= ok_incr + res.incr_uncertain and (max(vals) if vals else 0) <= final)
    def pct(q):
        return round(percentile(res.latencies, q), 4) if res.latencies else None

    # Which workers gunicorn timed out: the deliberate sleepers (they log their
    # pid), workers that never answered (their boot, i.e. importing Django,
    # outlasted --timeout on a starved CPU), and any other: a hung worker.
    deliberate = sum(res.sleepers.values())
    sleeper_pids = {int(x) for x in re.findall(r"chaos-sleeper pid=(\d+)", log)}
    timed_out = [int(x) for x in re.findall(r"WORKER TIMEOUT \(pid:(\d+)\)", log)]
    worker_timeouts = len(timed_out)
    to_sleepers = [p for p in timed_out if p in sleeper_pids]

    def exiting(p):  # recycled by --max-requests before it timed out
        i = log.find(f"[{p}] [INFO] Autorestarting worker")
        return 0 <= i < log.find(f"WORKER TIMEOUT (pid:{p})")

    to_booting = [p for p in timed_out if p not in sleeper_pids and p not in res.pids]
    to_exiting = [p for p in timed_out if p not in sleeper_pids and p in res.pids and exiting(p)]
    to_hung = [p for p in timed_out if p not in sleeper_pids and p in res.pids and not exiting(p)]
    killed_pausesets = res.sleepers.get("pauseset_killed", 0)
    out = {
        "mode": "gunicorn",
        "seconds": a.seconds,
        "run_seconds": round(run_seconds, 2),
        "gunicorn": {"workers": a.workers, "max_requests": a.max_requests, "jitter": a.jitter, "timeout": a.timeout,
                     "preload": a.preload, "client_threads": a.threads},
        "requests_total": sum(res.requests.values()),
        "requests_by_kind": dict(res.requests),
        "requests_per_second": round(sum(res.requests.values()) / max(run_seconds, 1e-9), 1),
        "non_deliberate_requests": len(res.latencies),
        "non_200_not_deliberate": len(res.errors),
        "errors_examples": res.errors[:10],
        "deliberate_sleepers": dict(res.sleepers),
        "latency_s": {"p50": pct(50), "p99": pct(99), "max": pct(100)},
        "sleeper_examples": res.sleeper_log[:6],
        "sleeper_latency_max_s": round(max(res.sleeper_latencies), 3) if res.sleeper_latencies else None,
        "requests_over_bound": len(res.over_bound),
        "over_bound_examples": res.over_bound[:10],
        "client_threads_hung": hung_threads,
        "worker_pids_seen": len(res.pids),
        "worker_boots": len(re.findall(r"Booting worker", log)),
        "worker_recycles_max_requests": len(re.findall(r"Autorestarting worker", log)),
        "worker_timeouts_logged": worker_timeouts,
        "worker_timeouts": {"deliberate_sleepers": len(to_sleepers), "before_first_answer_booting": len(to_booting),
                            "exiting_after_max_requests": len(to_exiting),
                            "hung_after_serving": len(to_hung), "hung_pids": to_hung[:10]},
        "master_alive": master_alive,
        "segment_inodes_seen": len(inodes),
        "segment_missing_samples": missing[0],
        "inode_start_end_equal": inode0 == inode_end,
        "incr": {"ok_responses": ok_incr, "uncertain": res.incr_uncertain, "final": final,
                 "distinct": len(set(vals)) == len(vals), "ok": incr_ok},
        "wrong_values": len(res.wrong_values),
        "wrong_value_examples": res.wrong_values[:5],
        "stats_end": {k: stats[k] for k in ("items", "hits", "misses", "sets", "evictions", "lock_recoveries",
                                            "lock_timeouts", "shard_wipes")},
        "load_avg_start": [round(x, 2) for x in load_start],
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
    }
    f = []
    if out["non_deliberate_requests"] == 0:
        f.append("no requests were made")
    if out["non_200_not_deliberate"]:
        f.append(f"{out['non_200_not_deliberate']} non-200 answers to ordinary requests")
    if out["requests_over_bound"] or hung_threads:
        f.append(f"{out['requests_over_bound']} request(s) over the bound, {hung_threads} client thread(s) hung")
    if to_hung:
        f.append(f"{len(to_hung)} worker(s) that had served requests and were not sleeping timed out: hung")
    if len(to_sleepers) > deliberate:
        f.append(f"{len(to_sleepers)} sleeper timeouts for {deliberate} deliberate sleepers")
    if master_died[0] or not master_alive:
        f.append("the gunicorn master died")
    if len(inodes) != 1 or missing[0] or not out["inode_start_end_equal"]:
        f.append(f"the segment changed: inodes seen {list(inodes)}, missing {missing[0]} times")
    if not incr_ok:
        f.append("increments do not add up")
    if res.wrong_values:
        f.append(f"{len(res.wrong_values)} wrong value(s) read")
    if a.seconds >= 15 and out["worker_recycles_max_requests"] == 0:
        f.append("no worker was recycled by --max-requests")
    if a.seconds >= 15 and not (res.sleepers.get("sleep_aborted") or res.sleepers.get("sleep_killed")):
        f.append("no sleeper was stopped by the timeout")
    if a.seconds >= 15 and not res.sleepers.get("pauseset_killed"):
        f.append("no pauseset was SIGKILLed inside the lock")
    if res.sleepers.get("sleep_other") or res.sleepers.get("pauseset_other"):
        f.append("a sleeper ended in an unexpected way")
    if res.sleepers.get("sleep_answered") or res.sleepers.get("pauseset_answered"):
        f.append("a sleeper past --timeout was answered: gunicorn did not kill it")
    if stats["lock_recoveries"] < killed_pausesets or stats["shard_wipes"]:
        f.append(f"{killed_pausesets} pausesets killed: {stats['lock_recoveries']} lock recoveries (want as many), {stats['shard_wipes']} wipes (want 0)")
    out["failures"] = f
    out["pass"] = not f
    lines = [
        f"shmcache gunicorn chaos: {a.workers} workers, --max-requests {a.max_requests} (+{a.jitter}), --timeout {a.timeout}"
        f"{', --preload' if a.preload else ''}; {a.threads} client threads for {run_seconds:.0f}s; load {out['load_avg_start'][0]} -> {out['load_avg_end'][0]}",
        f"  requests                 {out['requests_total']:>8}  ({out['requests_per_second']}/s; {dict(res.requests)})",
        f"  non-200 (not deliberate) {out['non_200_not_deliberate']:>8}",
        f"  deliberate sleepers      {deliberate:>8}  ({dict(res.sleepers)}; slowest to end {out['sleeper_latency_max_s']}s)",
        f"  latency p50/p99/max      {out['latency_s']['p50']}/{out['latency_s']['p99']}/{out['latency_s']['max']} s (bound {a.request_bound}s; over bound {out['requests_over_bound']})",
        f"  workers                  {out['worker_pids_seen']:>8} pids seen, {out['worker_boots']} boots, {out['worker_recycles_max_requests']} max-requests recycles, {worker_timeouts} WORKER TIMEOUTs "
        f"({len(to_sleepers)} sleepers, {len(to_booting)} while booting, {len(to_exiting)} while exiting, {len(to_hung)} hung)",
        f"  segment inode            {'unchanged' if len(inodes) == 1 and not missing[0] else 'CHANGED':>8}",
        f"  incr                     {'ok' if incr_ok else 'FAILED':>8}  ({ok_incr} answered, final {final}, uncertain {res.incr_uncertain})",
        f"  wrong values             {len(res.wrong_values):>8}",
        f"  stats                    lock_recoveries {stats['lock_recoveries']}, shard_wipes {stats['shard_wipes']}, lock_timeouts {stats['lock_timeouts']}, evictions {stats['evictions']}",
        "PASS" if out["pass"] else "FAIL: " + "; ".join(f),
    ]
    for line in lines:
        print(line, flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0 if out["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
