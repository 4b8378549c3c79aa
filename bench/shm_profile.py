"""Where shmcache's time goes.

1. Layers of a Django get/set, timed one by one (timeit, best of 5):
   Django's key handling, str<->bytes, the FFI call into the Rust core, the
   backend's wrappers, decoding; the same for LocMemCache.
2. `valgrind --tool=callgrind` of (a) a Python process doing Django gets
   (only the measured loop is collected: --toggle-collect=map_next, the loop
   being `list(map(cache.get, keys))`), self cost grouped by shared object
   and by function; (b) the Rust core's get loop (examples/core_bench.rs
   --profile-get, built with line tables), self cost grouped by source file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import timeit
from collections import defaultdict

from bench.servers import log

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def ns(stmt: str, g: dict, number: int) -> float:
    """Best per-call time of many short repeats (~10 ms each): on a busy
    machine the shortest repeat is the one that ran undisturbed."""
    t = timeit.Timer(stmt, globals=g)
    t.timeit(min(number, 100))
    one = max(1e-8, t.timeit(200) / 200)
    per_repeat = max(20, min(number, int(0.01 / one)))
    repeats = 25 if number >= 10_000 else 5
    return min(t.repeat(repeats, per_repeat)) / per_repeat * 1e9


def layers(number: int) -> dict:
    """ns per step of get-hit / set through Django, shmcache vs LocMemCache.

    The steps follow whatever the installed backend does (it is being
    optimised): its key function (`_k` if it has one, else Django's
    make_and_validate_key + utf-8), the core call with that key, and the
    loading of a non-native item (the client's codec: `Codec.load`). A step
    the backend does not have is left out."""
    import pickle

    from django.core.cache import caches
    from django.core.cache.backends.base import DEFAULT_TIMEOUT

    from bench.workloads import make_value

    out: dict = {}
    for size in (100, 10_000, 100_000):
        v = make_value(size)
        n = number if size <= 10_000 else max(1000, number // 20)
        s = caches["shmcache"]
        lm = caches["locmem"]
        key = "prof:key:0001"
        s.set(key, v)
        lm.set(key, v)
        if hasattr(s, "_k"):
            kf = s._k
        else:
            def kf(key, version, s=s):
                return s.make_and_validate_key(key, version).encode("utf-8", "surrogatepass")
        k = kf(key, None)
        core, codec = s._cache._core, s._cache._codec
        item = core.get(k)
        encv = codec.encode(v)
        pickled = pickle.dumps(v, pickle.HIGHEST_PROTOCOL)
        g = dict(s=s, lm=lm, key=key, k=k, kf=kf, core=core, item=item, v=v, encv=encv, pickled=pickled,
                 pickle=pickle, codec=codec, DT=DEFAULT_TIMEOUT, P=pickle.HIGHEST_PROTOCOL)
        r: dict = {}

        def step(name, stmt):
            try:
                r[name] = ns(stmt, g, n)  # noqa: B023 (called within this iteration)
            except Exception as e:  # noqa: BLE001
                log(f"  layers: step {name} ({stmt}) not measured: {e!r}")

        step("shm_get_total", "s.get(key)")
        step("shm_key", "kf(key, None)")
        step("django_make_and_validate_key", "s.make_and_validate_key(key)")
        step("shm_get_core_get_ffi", "core.get(k)")
        if isinstance(item, tuple):
            step("shm_get_load", "codec.load(item)")
        step("shm_set_total", "s.set(key, v)")
        step("shm_set_seconds", "s._seconds(DT)")
        step("shm_set_encode", "codec.encode(v)")
        try:
            core.set(k, encv, 3600.0, False)
            step("shm_set_core_set_ffi", "core.set(k, encv, 3600.0, False)")
        except TypeError:
            g["enc"], g["data"] = encv[0], encv[1]
            step("shm_set_core_set_ffi", "core.set(k, enc, data, 3600.0, False)")
        step("locmem_get_total", "lm.get(key)")
        step("locmem_key", "lm.make_and_validate_key(key)")
        step("locmem_get_pickle_loads", "pickle.loads(pickled)")
        step("locmem_set_total", "lm.set(key, v)")
        step("locmem_set_pickle_dumps", "pickle.dumps(v, P)")
        gv = r.get
        # "rest" = total minus the steps; floored at 0 (steps timed alone can
        # add up to a little more than the whole).
        if "shm_get_total" in r:
            r["shm_get_rest"] = max(0.0, r["shm_get_total"] - gv("shm_key", 0) - gv("shm_get_core_get_ffi", 0) - gv("shm_get_load", 0))
        if "shm_set_total" in r:
            r["shm_set_rest"] = max(0.0, r["shm_set_total"] - gv("shm_key", 0) - gv("shm_set_seconds", 0) - gv("shm_set_encode", 0) - gv("shm_set_core_set_ffi", 0))
        if "locmem_get_total" in r:
            r["locmem_get_rest"] = max(0.0, r["locmem_get_total"] - gv("locmem_key", 0) - gv("locmem_get_pickle_loads", 0))
        if "locmem_set_total" in r:
            r["locmem_set_rest"] = max(0.0, r["locmem_set_total"] - gv("locmem_key", 0) - gv("locmem_set_pickle_dumps", 0))
        r["native_value"] = not isinstance(item, tuple)
        out[str(size)] = {kk: (round(x, 1) if isinstance(x, float) else x) for kk, x in r.items()}
        s.delete(key)
        lm.delete(key)
        log(f"  layers {size:>6} B: shm get {gv('shm_get_total', 0):.0f} ns (key {gv('shm_key', 0):.0f}, "
            f"core.get {gv('shm_get_core_get_ffi', 0):.0f}) vs locmem get {gv('locmem_get_total', 0):.0f} ns; "
            f"shm set {gv('shm_set_total', 0):.0f} ns (core.set {gv('shm_set_core_set_ffi', 0):.0f}) vs locmem set {gv('locmem_set_total', 0):.0f} ns")
    return out


# ---------------------------------------------------------------- callgrind

_NAME = re.compile(r"^\((\d+)\)(?: (.*))?$")


def parse_callgrind(path: str) -> dict:
    """Self cost (first event, Ir) by object, by function and by source file."""
    names: dict[str, dict[str, str]] = defaultdict(dict)

    def resolve(kind: str, val: str) -> str:
        m = _NAME.match(val)
        if not m:
            return val
        i, name = m.group(1), m.group(2)
        if name is not None:
            names[kind][i] = name
            return name
        return names[kind].get(i, f"({i})")

    by_obj: dict[str, int] = defaultdict(int)
    by_fn: dict[tuple[str, str], int] = defaultdict(int)
    by_file: dict[str, int] = defaultdict(int)
    ob = fn = fl = fi = "?"
    skip = False
    total = 0
    with open(path, errors="replace") as f:
        for line in f:
            c = line[:1]
            if c.isdigit() or c in "+-*":
                if skip:
                    skip = False
                    continue
                parts = line.split()
                if len(parts) < 2:
                    continue
                cost = int(parts[1])
                total += cost
                by_obj[ob] += cost
                by_fn[(fn, ob)] += cost
                by_file[fi] += cost
                continue
            if "=" not in line:
                continue
            k, _, v = line.rstrip("\n").partition("=")
            if k == "ob":
                ob = resolve("ob", v)
            elif k == "fn":
                fn = resolve("fn", v)
                fi = fl
            elif k == "fl":
                fl = fi = resolve("fl", v)
            elif k in ("fi", "fe"):
                fi = resolve("fl", v)
            elif k in ("cob",):
                resolve("ob", v)
            elif k == "cfn":
                resolve("fn", v)
            elif k in ("cfi", "cfl"):
                resolve("fl", v)
            elif k == "calls":
                skip = True
    return {"total": total, "by_obj": dict(by_obj), "by_fn": {f"{a} [{os.path.basename(b)}]": n for (a, b), n in by_fn.items()},
            "by_file": dict(by_file)}


def top(d: dict, total: int, n: int) -> list[tuple[str, int, float]]:
    return [(k, v, 100.0 * v / max(1, total)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:n]]


PY_TARGET = r"""
import sys
import django
from django.conf import settings
settings.configure(CACHES={{
    "shmcache": {{"BACKEND": "shmcache.django.SharedMemoryCache", "LOCATION": {loc!r},
                 "OPTIONS": {{"SIZE": "64MB", "MAX_ITEM_SIZE": "1MB"}}, "TIMEOUT": 3600}},
    "locmem": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "p", "TIMEOUT": 3600}},
}})
django.setup()
from django.core.cache import caches
import shmcache
alias = sys.argv[1]; op = sys.argv[2]; n = int(sys.argv[3])
c = caches[alias]
v = "x" * 100
keys = ["prof:%04d" % (i % 200) for i in range(n)]
for k in keys[:200]:
    c.set(k, v)
if op == "get":
    list(map(c.get, keys))
else:
    list(map(c.set, keys, [v] * n))
if alias == "shmcache":
    shmcache.destroy({loc!r})
"""


def run_callgrind(toggle: str, argv: list[str], what: str, d: str | None = None) -> dict | None:
    """Run `argv` under callgrind, collecting only inside functions matching `toggle`,
    and parse the profile; None (and a log line) if it fails. Removes `d` (its temp dir)."""
    d = d or tempfile.mkdtemp(prefix="bench-cg-")
    out = os.path.join(d, "callgrind.out")
    try:
        r = subprocess.run(["valgrind", "--tool=callgrind", f"--toggle-collect={toggle}", f"--callgrind-out-file={out}", *argv],
                           capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0 or not os.path.exists(out):
            log(f"callgrind of {what} failed: {r.stderr[-400:]}")
            return None
        return parse_callgrind(out)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def callgrind_python(python: str, alias: str, op: str, n: int) -> dict | None:
    if not shutil.which("valgrind"):
        return None
    d = tempfile.mkdtemp(prefix="bench-cg-")
    script = os.path.join(d, "target.py")
    loc = f"bench-cg-{os.getpid()}-{alias}-{op}"
    with open(script, "w") as f:
        f.write(PY_TARGET.format(loc=loc))
    try:
        p = run_callgrind("map_next", [python, script, alias, op, str(n)], f"{alias} {op}", d)
    finally:
        import shmcache

        shmcache.destroy(loc)
    if p is None:
        return None
    total = p["total"]
    res = {
        "cmd": f"valgrind --tool=callgrind --toggle-collect=map_next python <script: list(map(caches[{alias!r}].{op}, keys{', values' if op == 'set' else ''}))> ({n:,} calls of 100 B values)",
        "ops": n, "ir_per_op": total / n,
        "by_obj": [(os.path.basename(k), v / n, pc) for k, v, pc in top(p["by_obj"], total, 8)],
        "by_fn": [(k, v / n, pc) for k, v, pc in top(p["by_fn"], total, 18)],
    }
    log(f"  callgrind {alias} {op}: {res['ir_per_op']:.0f} instructions per op")
    return res


def _area(path: str) -> str:
    """What a source file of the core's get loop is about."""
    if "time.rs" in path or "clock_gettime" in path or "vdso" in path or path.endswith("/clock.rs"):
        return "reading the wall clock (time::now_ms: SystemTime::now, clock_gettime)"
    if "xxh3" in path or "xxhash" in path:
        return "hashing the key (xxh3)"
    if "memcmp" in path or "slice/cmp.rs" in path:
        return "comparing the key bytes (memcmp)"
    if path.startswith(ROOT + "/src/") or path.startswith("src/"):
        return "shmcache src/*.rs (index probe, record checks, seqlock, counters)"
    if path.startswith(ROOT + "/examples/"):
        return "the benchmark loop"
    if "pthread" in path or "nptl" in path:
        return "pthread mutex"
    if "/core/src/" in path or "/std/src/" in path or path.startswith(("core/", "std/")):
        return "Rust std/core code inlined into the get (Result, integer and slice helpers)"
    return "other (" + os.path.basename(path) + ")"


def callgrind_core(quick: bool) -> dict | None:
    """Build core_bench with line tables in its own target dir and profile its get loop."""
    if not shutil.which("valgrind") or not shutil.which("cargo"):
        return None
    tdir = os.path.join(ROOT, "target", "bench-profile")
    env = dict(os.environ, CARGO_TARGET_DIR=tdir, CARGO_PROFILE_RELEASE_DEBUG="line-tables-only",
               CARGO_PROFILE_RELEASE_STRIP="none")
    b = subprocess.run(["cargo", "build", "--release", "--example", "core_bench"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    if b.returncode != 0:
        log(f"building core_bench with line tables failed: {b.stderr[-400:]}")
        return None
    exe = os.path.join(tdir, "release", "examples", "core_bench")
    n = 20_000 if quick else 200_000
    p = run_callgrind("*profile_gets*", [exe, "--profile-get", str(n)], "core_bench")
    if p is None:
        return None
    total = p["total"]

    def short(path: str) -> str:
        if path.startswith(ROOT + "/"):
            return os.path.relpath(path, ROOT)
        for marker in ("/src/", "/library/"):
            if marker in path:
                pre, _, post = path.rpartition(marker)
                crate = os.path.basename(pre)
                return f"{crate}/{marker.strip('/')}/{post}" if crate not in ("main", "") else f"src/{post}"
        return path

    areas: dict[str, float] = defaultdict(float)
    for path, v in p["by_file"].items():
        areas[_area(path)] += v / n
    res = {
        "areas": sorted(areas.items(), key=lambda kv: -kv[1]),
        "cmd": "valgrind --tool=callgrind --toggle-collect='*profile_gets*' target/bench-profile/release/examples/core_bench --profile-get " + str(n),
        "ops": n, "ir_per_op": total / n,
        "by_file": [(short(k), v / n, pc) for k, v, pc in top(p["by_file"], total, 12)],
        "by_fn": [(k, v / n, pc) for k, v, pc in top(p["by_fn"], total, 12)],
    }
    log(f"  callgrind core get: {res['ir_per_op']:.0f} instructions per get")
    return res


if __name__ == "__main__":
    print(parse_callgrind(sys.argv[1])["by_obj"])
