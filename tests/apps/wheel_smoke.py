"""Smoke test of an installed shmcache (the wheel, in a fresh venv): run by
tests/packaging/test_wheel.py and by .github/workflows/release.yml as

    python tests/apps/wheel_smoke.py

It needs nothing but the installed package (no test hooks, no devkit, no
Rust). Two processes, this one and a child interpreter started afresh, share
one cache: each sees the other's writes, `incr` is atomic across them and
`add` succeeds in exactly one. Prints one JSON line about what it ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid


def child(location: str) -> None:
    import shmcache

    c = shmcache.Cache(location, size="4MB", max_item_size="64KB")
    assert c.get("from-parent") == {"n": 1, "s": "é"}, c.get("from-parent")
    assert c.get("bytes") == b"\x00\xff"
    assert c.incr("counter") == 2
    c.set("from-child", [os.getpid()], timeout=60)
    print("added" if c.add("once", os.getpid()) else "not added", flush=True)


def main() -> None:
    import shmcache
    from shmcache import _core

    hooks = [n for n in ("_set_test_pause_ms", "_set_clock_offset_ms") if hasattr(_core, n)]
    assert not hooks, f"a test build: {hooks}"
    location = f"wheel-smoke-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    c = shmcache.Cache(location, size="4MB", max_item_size="64KB")
    try:
        c.set("from-parent", {"n": 1, "s": "é"}, timeout=60)
        c.set("bytes", b"\x00\xff")
        c.set("counter", 1)
        added_here = c.add("once", os.getpid())
        p = subprocess.run([sys.executable, __file__, "--child", location], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        assert p.stdout.strip() == ("not added" if added_here else "added"), p.stdout
        assert c.get("from-child") is not None and c.get("from-child") != [os.getpid()]
        assert c.incr("counter", 10) == 12
        assert c.stats()["items"] == 5, c.stats()
    finally:
        shmcache.destroy(location)
    print(json.dumps({
        "ok": True,
        "version": shmcache.__version__,
        "file": shmcache.__file__,
        "core": _core.__file__,
        "python": list(sys.version_info[:3]),
        "executable": sys.executable,
    }))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        main()
