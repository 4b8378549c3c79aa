#!/usr/bin/env python3
"""shmcache benchmark: the Django cache backends side by side, one run.

    make bench                       # = .venv/bin/python -m bench.run, ~10 minutes on 2 cores
    .venv/bin/python -m bench.run --quick   # smoke run in seconds (tiny op counts)

Writes docs/benchmarks.md, docs/benchmarks.png and bench/results/latest.json
(a --quick run writes bench/results/quick.{md,json,png} instead, so it never
replaces the real numbers). Starts its own redis-server and memcached on
loopback / a unix socket in a temp dir (apt-get installing them if missing
and we are root) and stops them at the end. See docs/benchmarks.md for the
method.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from bench.servers import Servers, ensure_installed, log, version_of

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pkg_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "python", "Cargo.toml"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + (" (src/python with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def run_core_bench(quick: bool) -> dict:
    if not shutil.which("cargo"):
        return {"skipped": "cargo not found"}
    cmd = ["cargo", "run", "--release", "--quiet", "--example", "core_bench"] + (["--", "--quick"] if quick else [])
    log("Rust core: " + " ".join(cmd))
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        return {"skipped": f"cargo run failed: {r.stderr.strip()[-500:]}"}
    line = [x for x in r.stdout.splitlines() if x.startswith("{")][-1]
    out = json.loads(line)
    out["cmd"] = "cargo run --release --example core_bench" + (" -- --quick" if quick else "")
    log(f"  core: {out['gets_per_sec']:,.0f} gets/s (hot {out['gets_hot_per_sec']:,.0f}), {out['sets_per_sec']:,.0f} sets/s")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny op counts, seconds")
    ap.add_argument("--no-install", action="store_true", help="never apt-get install redis-server/memcached")
    ap.add_argument("--no-callgrind", action="store_true", help="skip the valgrind profiles")
    ap.add_argument("--callgrind", action="store_true", help="run the valgrind profiles in --quick mode too")
    ap.add_argument("--sections", default="core,raw,single,multi,extras,snapshot,resize,tiered,production,faces,hitratio,memory,profile",
                    help="comma-separated subset (default: all)")
    ap.add_argument("--backends", default="", help="comma-separated aliases (default: all)")
    ap.add_argument("--out", default=None, help="output stem (default docs/benchmarks + bench/results/latest)")
    ap.add_argument("--render", metavar="JSON", help="only re-write the .md/.png from a saved results JSON")
    args = ap.parse_args()
    if args.render:
        from bench import report

        with open(args.render) as f:
            res = json.load(f)
        stem = args.out or (os.path.join(HERE, "results", "quick") if res["meta"].get("quick") else None)
        md_path = stem + ".md" if stem else os.path.join(ROOT, "docs", "benchmarks.md")
        png_path = stem + ".png" if stem else os.path.join(ROOT, "docs", "benchmarks.png")
        res["targets"] = report.targets(res)
        report.chart(res, png_path)
        report.markdown(res, md_path, os.path.relpath(png_path, os.path.dirname(md_path)), os.path.relpath(args.render, ROOT))
        log(f"rendered {md_path} and {png_path}")
        return 0
    sections = set(args.sections.split(","))
    quick = args.quick

    t_start = time.time()
    meta = {
        "command": "make bench (= .venv/bin/python -m bench.run" + (" --quick" if quick else "") + ")",
        "argv": " ".join(
            [os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else sys.executable]
            # Run as a module, argv[0] is this file's full path: say -m instead.
            + (["-m", __spec__.name] if __spec__ else [os.path.relpath(sys.argv[0], ROOT)])
            + sys.argv[1:]
        ),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(), "django": pkg_version("Django"),
        "packages": {p: pkg_version(p) for p in ("shmcache", "redis", "hiredis", "django-redis", "pymemcache", "diskcache", "numpy", "matplotlib")},
        "git": git_rev(), "loadavg_start": loadavg(), "quick": quick,
    }
    try:
        import redis.utils

        meta["redis_py_hiredis"] = bool(getattr(redis.utils, "HIREDIS_AVAILABLE", False))
    except Exception:  # noqa: BLE001
        meta["redis_py_hiredis"] = False
    log(f"{meta['date']}  {meta['nproc']} x {meta['cpu']}  load {meta['loadavg_start']}  Python {meta['python']}  Django {meta['django']}")

    results: dict = {"meta": meta, "skipped": {}, "errors": {}}

    def on_signal(signum, frame):  # stop our servers and segments on Ctrl-C / kill
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    tmp = tempfile.mkdtemp(prefix="shmcache-bench-")
    servers = Servers(tmp)
    shm_location = f"bench-{os.getpid()}"
    try:
        # Core first, while nothing else of ours is running.
        if "core" in sections:
            results["core"] = run_core_bench(quick)

        server_skip = ensure_installed(not args.no_install)
        meta["redis_server"] = version_of(["redis-server", "--version"]) if shutil.which("redis-server") else None
        meta["memcached"] = version_of(["memcached", "-V"]) if shutil.which("memcached") else None
        redis_srv = memc_srv = None
        if "redis-server" not in server_skip:
            try:
                redis_srv = servers.start_redis("redis")
            except Exception as e:  # noqa: BLE001
                server_skip["redis-server"] = f"redis-server did not start: {e}"
        if "memcached" not in server_skip:
            try:
                memc_srv = servers.start_memcached("memcached", 1024)
            except Exception as e:  # noqa: BLE001
                server_skip["memcached"] = f"memcached did not start: {e}"

        from bench.backends import BACKENDS, LABEL, caches_setting

        caches_cfg, skipped = caches_setting(tmp, shm_location, redis_srv, memc_srv, server_skip)
        if args.backends:
            keep = set(args.backends.split(","))
            for a in list(caches_cfg):
                if a not in keep:
                    del caches_cfg[a]
                    skipped[a] = "not selected (--backends)"
        results["skipped"] = skipped
        for a, why in skipped.items():
            log(f"SKIPPING {LABEL[a]}: {why}")
        results["labels"] = LABEL
        results["order"] = [a for a, _ in BACKENDS]
        results["config"] = {a: dict(c) for a, c in caches_cfg.items()}

        import django
        from django.conf import settings

        settings.configure(CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}, **caches_cfg},
                           USE_TZ=True)
        django.setup()
        from bench import workloads as W

        active = [a for a, _ in BACKENDS if a in caches_cfg]

        meta["section_load"] = {}

        def section(name: str) -> None:
            meta["section_load"][name] = loadavg()[0]

        def guarded(section: str, alias: str, fn, *a):
            try:
                return fn(*a)
            except Exception as e:  # noqa: BLE001
                msg = f"{e.__class__.__name__}: {e}"
                log(f"ERROR in {section} for {alias}: {msg}")
                traceback.print_exc()
                results["errors"][f"{section}/{alias}"] = msg
                return None

        if "raw" in sections and "shmcache" in active:
            log("== raw Python API")
            section("raw")
            results["raw"] = guarded("raw", "shmcache", W.raw_api, 0.3 if quick else 3.0)

        if "single" in sections:
            log("== single process, through django.core.cache.caches[...]")
            section("single")
            budget = W.Budget(0.01, 20, 200, 5, 0.2, 20) if quick else W.Budget(0.4, 300, 200_000, 30, 1.0, 50)
            results["single"] = {}
            for a in active:
                r = guarded("single", a, W.single_process, a, budget, quick)
                if r is not None:
                    results["single"][a] = r

        if "multi" in sections:
            log("== multi process (fork), 90% get / 10% set, Zipf 0.99 over 10k keys")
            section("multi")
            results["multi"] = {}
            results["shared"] = {}
            procs = [1, 2] if quick else [1, 2, 4]
            for a in active:
                results["shared"][a] = guarded("shared", a, W.shared_check, a)
                log(f"  {a:13s} shared across processes: {results['shared'][a]}")
                # The backends with scaling targets (shmcache, and LocMemCache, its control) run 3 rounds.
                r = guarded("multi", a, W.multi_process, a, procs, 0.15 if quick else 2.0, 0.3 if quick else 3.0,
                            5_000 if quick else 100_000, 3 if a in ("shmcache", "locmem") and not quick else 1)
                if r is not None:
                    results["multi"][a] = r
            results["multi_params"] = {"keys": W.MP_KEYS, "alpha": W.MP_ALPHA, "set_fraction": W.MP_SET_FRACTION,
                                       "value_bytes": W.MP_VALUE_SIZE, "seconds": 0.15 if quick else 2.0, "procs": procs}

        if "extras" in sections:
            from bench import extras

            log("== django-redis extras: lock pairs, set(nx=True), iter_keys / delete_pattern over 100k keys")
            section("extras")
            results["extras"] = {}
            for a in ("shmcache", "django_redis"):
                if a in active:
                    r = guarded("extras", a, extras.run, a, quick)
                    if r is not None:
                        results["extras"][a] = r

        for name, title in (("snapshot", "snapshots: dump and load of a full cache"),
                            ("resize", "resize: a full cache migrated to a new SIZE under a writer")):
            if name in sections and "shmcache" in active:
                module = importlib.import_module(f"bench.{name}")
                log(f"== {title}")
                section(name)
                r = guarded(name, "shmcache", module.run, tmp, quick)
                if r is not None:
                    results[name] = r

        if "tiered" in sections:
            from bench import tiered

            log("== TieredCache: L1 hits, staleness after a remote write, Redis commands, listener takeover")
            section("tiered")
            if redis_srv is None:
                results["skipped"]["tiered"] = server_skip.get("redis-server", "redis-server did not start")
            else:
                r = guarded("tiered", "tiered", tiered.run, redis_srv, quick)
                if r is not None:
                    results["tiered"] = r

        if "production" in sections:
            from bench import production

            log("== TieredCache on production Redis: a Sentinel failover's timeline, Valkey's staleness beside Redis's")
            section("production")
            if "redis-server" in server_skip:
                results["skipped"]["production"] = server_skip["redis-server"]
            else:
                r = guarded("production", "production", production.run, quick)
                if r is not None:
                    results["production"] = r

        if "faces" in sections and "shmcache" in active:
            from bench import faces

            log("== the faces for other stacks: get/set through each, against the stack's usual choices")
            section("faces")
            port = None if redis_srv is None else redis_srv.port
            r = guarded("faces", "faces", faces.run, port, quick)
            if r is not None:
                results["faces"] = r

        if "hitratio" in sections:
            log(f"== hit ratio at {W.HR_BYTES_MB} MB (get; on miss set), raw clients")
            section("hitratio")
            results["hitratio"] = hit_ratio(W, servers, server_skip, quick, results)

        if "memory" in sections:
            log("== memory")
            section("memory")
            results["memory"] = memory(W, servers, server_skip, results, 10_000 if quick else W.MEM_ITEMS)

        if "profile" in sections and "shmcache" in active and "locmem" in active:
            from bench import shm_profile as P

            log("== profile: layers of a Django get/set")
            section("profile")
            prof = {"layers": guarded("profile", "layers", P.layers, 2_000 if quick else 100_000)}
            if not args.no_callgrind and (args.callgrind or not quick):
                log("== profile: callgrind")
                py = sys.executable
                n = 2_000 if quick else 20_000
                jobs = {
                    "cg_shm_get": (P.callgrind_python, py, "shmcache", "get", n),
                    "cg_locmem_get": (P.callgrind_python, py, "locmem", "get", n),
                    "cg_shm_set": (P.callgrind_python, py, "shmcache", "set", n),
                    "cg_core_get": (P.callgrind_core, quick),
                }
                # Instruction counts do not depend on what else runs: two at a time.
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=2) as ex:
                    futs = {k: ex.submit(guarded, "profile", k, *job) for k, job in jobs.items()}
                    for k, f in futs.items():
                        prof[k] = f.result()
            results["profile"] = prof
    finally:
        servers.stop_all()
        try:
            import shmcache

            shmcache.destroy(shm_location)
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(tmp, ignore_errors=True)

    meta["loadavg_end"] = loadavg()
    meta["seconds"] = round(time.time() - t_start, 1)
    from bench import report

    if args.out:
        json_path, md_path, png_path = args.out + ".json", args.out + ".md", args.out + ".png"
    elif quick:
        json_path, md_path, png_path = (os.path.join(HERE, "results", "quick" + e) for e in (".json", ".md", ".png"))
    else:
        json_path = os.path.join(HERE, "results", "latest.json")
        md_path, png_path = os.path.join(ROOT, "docs", "benchmarks.md"), os.path.join(ROOT, "docs", "benchmarks.png")
    results["targets"] = report.targets(results)
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    report.chart(results, png_path)
    report.markdown(results, md_path, os.path.relpath(png_path, os.path.dirname(md_path)), os.path.relpath(json_path, ROOT))
    log(f"done in {meta['seconds']} s: {os.path.relpath(md_path, ROOT)}, {os.path.relpath(json_path, ROOT)}, {os.path.relpath(png_path, ROOT)}")
    for t in results["targets"]:
        log(f"  target {'MET ' if t['met'] else ('MISSED' if t['met'] is False else 'n/a ')}  {t['target']}: {t['detail']}")
    return 0


def hit_ratio(W, servers: Servers, server_skip: dict, quick: bool, results: dict) -> dict:
    n = 20_000 if quick else 300_000
    warm = n // 3
    keys, sizes = W.hit_ratio_trace(n)
    mb = W.HR_BYTES_MB
    out: dict = {"params": {"mb": mb, "keys": W.HR_KEYS, "alpha": W.HR_ALPHA, "value_bytes": [W.HR_MIN, W.HR_MAX],
                            "requests": n, "warmup_requests": warm,
                            "dataset_bytes": int(sizes.sum())}, "results": {}}
    import shmcache

    name = f"bench-hr-{os.getpid()}"
    try:
        c = shmcache.Cache(name, size=f"{mb}MB", max_item_size="1MB")
        r = W.replay(f"shmcache SIZE={mb}MB", c.get, c.set, keys, sizes, warm)
        st = c.stats()
        r.update(items=st["items"], bytes_used=st["bytes_used"], evictions=st["evictions"], setting=f'SIZE="{mb}MB"')
        out["results"]["shmcache"] = r
    except Exception as e:  # noqa: BLE001
        results["errors"]["hitratio/shmcache"] = repr(e)
    finally:
        shmcache.destroy(name)

    def peer(key: str, server: str, start, run) -> None:
        """Start `server`, replay against it with `run(srv)`, stop it; a skip or an error is recorded as skipped."""
        if server in server_skip:
            out["results"][key] = {"skipped": server_skip[server]}
            return
        try:
            with servers.started(start) as srv:
                out["results"][key] = run(srv)
        except Exception as e:  # noqa: BLE001
            out["results"][key] = {"skipped": f"error: {e!r}"}

    def memcached(srv) -> dict:
        from pymemcache.client.base import Client

        mc = Client(("127.0.0.1", srv.port), no_delay=True, default_noreply=False)
        r = W.replay(f"memcached -m {mb}", mc.get, mc.set, keys, sizes, warm)
        st = {k.decode() if isinstance(k, bytes) else k: v for k, v in mc.stats().items()}
        r.update(items=int(st.get("curr_items", 0)), bytes_used=int(st.get("bytes", 0)), evictions=int(st.get("evictions", 0)),
                 setting=f"-m {mb}", rss=srv.rss_bytes())
        mc.close()
        return r

    def redis_lru(srv) -> dict:
        import redis

        rc = redis.Redis(unix_socket_path=srv.unix_socket)
        r = W.replay(f"Redis maxmemory {mb}mb allkeys-lru", rc.get, rc.set, keys, sizes, warm)
        info = rc.info()
        r.update(items=int(rc.dbsize()), bytes_used=int(info["used_memory"]), evictions=int(info["evicted_keys"]),
                 setting=f"maxmemory {mb}mb, maxmemory-policy allkeys-lru", rss=int(info["used_memory_rss"]))
        rc.close()
        return r

    peer("memcached", "memcached", lambda: servers.start_memcached("memcached-hr", mb), memcached)
    peer("redis", "redis-server",
         lambda: servers.start_redis("redis-hr", ["--maxmemory", f"{mb}mb", "--maxmemory-policy", "allkeys-lru"]), redis_lru)

    out["results"]["lru_reference"] = W.lru_reference(keys, sizes, mb * 2**20, warm)
    log(f"  exact LRU of {mb} MB of key+value bytes (reference): {out['results']['lru_reference']['hit_ratio']:.4f}")
    return out


def memory(W, servers: Servers, server_skip: dict, results: dict, items: int) -> dict:
    out: dict = {"items": items, "value_bytes": W.MEM_VALUE, "key": "mem:NNNNNN (10 chars)"}
    try:
        out["shm_overhead"] = W.shm_overhead(items)
        o = out["shm_overhead"]
        log(f"  shmcache: {o['overhead_per_item']:.1f} B/item over key+value (bytes_used), index reserved {o['index_bytes_reserved']:,} B")
    except Exception as e:  # noqa: BLE001
        results["errors"]["memory/shm_overhead"] = repr(e)

    peers: dict = {}
    # shmcache through Django: the data set as Django stores it.
    try:
        import shmcache
        from shmcache.django import SharedMemoryCache

        loc = f"bench-memdj-{os.getpid()}"
        try:
            c = SharedMemoryCache(loc, {"OPTIONS": {"SIZE": "64MB"}, "TIMEOUT": 3600})
            W.load(c, items)
            st = c.stats()
        finally:
            shmcache.destroy(loc)
        peers["shmcache"] = {"bytes": st["bytes_used"], "what": "stats bytes_used (log records) for the data set; the segment reserves SIZE=64MB in /dev/shm once for all workers",
                             "reserved": st["segment_size"], "items": st["items"]}
    except Exception as e:  # noqa: BLE001
        results["errors"]["memory/shmcache"] = repr(e)
    try:
        g = W.locmem_rss_growth(items)
        peers["locmem"] = {"bytes": g, "what": "RSS growth of one process; each worker holds its own copy", "per_worker": g}
    except Exception as e:  # noqa: BLE001
        results["errors"]["memory/locmem"] = repr(e)
    def peer(key: str, server: str, start, run) -> None:
        if server in server_skip:
            return
        try:
            with servers.started(start) as srv:
                peers[key] = run(srv)
        except Exception as e:  # noqa: BLE001
            results["errors"][f"memory/{key}"] = repr(e)

    def redis_growth(srv) -> dict:
        import redis
        from django.core.cache.backends.redis import RedisCache

        rc = redis.Redis(unix_socket_path=srv.unix_socket)
        i0 = rc.info("memory")
        W.load(RedisCache(f"unix://{srv.unix_socket}?db=0", {"TIMEOUT": 3600}), items)
        i1 = rc.info("memory")
        rc.close()
        return {"bytes": i1["used_memory_rss"] - i0["used_memory_rss"],
                "used_memory_growth": i1["used_memory"] - i0["used_memory"],
                "what": "INFO memory used_memory_rss growth (Django RedisCache, pickled values)",
                "rss_after": i1["used_memory_rss"]}

    def memcached_growth(srv) -> dict:
        from django.core.cache.backends.memcached import PyMemcacheCache

        r0 = srv.rss_bytes()
        W.load(PyMemcacheCache(f"127.0.0.1:{srv.port}", {"TIMEOUT": 3600}), items)
        time.sleep(0.2)
        r1 = srv.rss_bytes()
        return {"bytes": r1 - r0, "what": "VmRSS growth from /proc/<pid>/status (Django PyMemcacheCache)", "rss_after": r1}

    peer("redis", "redis-server", lambda: servers.start_redis("redis-mem"), redis_growth)
    peer("memcached", "memcached", lambda: servers.start_memcached("memcached-mem", 1024), memcached_growth)
    out["peers"] = peers
    for k, v in peers.items():
        log(f"  {k:10s} {v['bytes'] / 2**20:8.1f} MiB for {items:,} items ({v['what']})")
    return out


if __name__ == "__main__":
    sys.exit(main())
