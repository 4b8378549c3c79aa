"""Geometry changes under live processes (docs/architecture.md, "Geometry
changes"): a new SIZE never makes a call fail; old and new processes share
one cache while they overlap; once only the new settings run, the cache
migrates to them with its items; alternating starts converge; `python -m
shmcache resize` under racing writers loses no write; a migrator killed
mid-copy leaves the cache usable; a resize that cannot be done is refused
with the cache unchanged.

Every process here is a real one (subprocess) with its own `shmcache.Cache`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

import shmcache
from devkit.cache_worker import Worker
from devkit.wait import wait_for
from shmcache import _core

SHM = "/dev/shm"

# A writer: counts its own key up and sets one key per count, for `seconds`
# (at most 15000 counts, so nothing is evicted), printing how many calls
# returned (every one of them must be in the cache).
WRITER = r"""
import json, sys, time, shmcache
loc, size, tag, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
c = shmcache.Cache(loc, size=size, max_item_size="64KB", lock_timeout=0.1)
c.set(f"count-{tag}", 0)
print("ready", flush=True)
n, end, geo, switched = 0, time.monotonic() + seconds, c._core.geometry, None
while time.monotonic() < end and n < 15000:
    assert c.incr(f"count-{tag}") == n + 1, "a counted write was lost"
    n += 1
    c.set(f"w-{tag}-{n}", n)
    if switched is None and c._core.geometry != geo:
        switched = n
    time.sleep(0.0002)
print(json.dumps([n, switched]), flush=True)
"""


@pytest.fixture
def location():
    name = f"resize-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    shmcache.destroy(name)


def files_of(location: str) -> list[str]:
    base = shmcache.segment_name(location).lstrip("/")
    return sorted(f for f in os.listdir(SHM) if f.startswith(base))


def test_a_new_size_never_fails_and_takes_over_once_the_old_processes_leave(location):
    old = Worker(location, "16MB")
    for i in range(300):
        old("set", key=f"k{i}", value=f"v{i}")
    new = shmcache.Cache(location, size="32MB", max_item_size="64KB")
    geo, want, inode = new._core.geometry, new._core.requested_geometry, new._core.inode
    assert geo != want and geo == tuple(old("geo")[0])  # one segment: the one in use
    # The overlap: each sees the other's writes and deletes at once.
    new.set("from-new", "n")
    assert old("get", key="from-new") == "n"
    assert old("delete", key="k0") is True
    assert new.get("k0") is None
    # Nobody migrates while the old process wants its geometry.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert new.get("k1") == "v1"
        time.sleep(0.05)
    assert new._core.inode == inode
    old.quit()
    # Only the new settings run: the next call after the once-a-second check migrates.
    wait_for(lambda: new.get("k1") and new._core.geometry == want, 5, "the migration to 32MB")
    assert new._core.inode != inode
    assert new.get("k0") is None and new.get("from-new") == "n"
    assert all(new.get(f"k{i}") == f"v{i}" for i in range(1, 300)), "items lost in the migration"
    assert files_of(location) == [shmcache.segment_name(location).lstrip("/")], "a segment was left behind"
    # A process started now with the new settings attaches to it as it is.
    late = Worker(location, "32MB")
    assert late("get", key="k2") == "v2"
    assert tuple(late("geo")[0]) == want
    late.quit()


def test_old_and_new_processes_starting_alternately_converge(location):
    a = Worker(location, "16MB")
    a("set", key="x", value="1")
    b = Worker(location, "32MB")
    small, big = (tuple(g) for g in b("geo")[:2])
    c = Worker(location, "16MB")  # an old worker recycled during the overlap
    a.quit()
    # c still wants 16MB: no migration (b keeps calling, so it keeps checking).
    for _ in range(30):
        assert tuple(b("geo")[0]) == small and b("get", key="x") == "1"
        time.sleep(0.05)
    c.quit()
    wait_for(lambda: b("get", key="x") == "1" and tuple(b("geo")[0]) == big, 5, "the migration to 32MB")
    inode = b("geo")[2]
    # An old process now attaches to the new geometry; nobody migrates back.
    d = Worker(location, "16MB")
    assert tuple(d("geo")[0]) == big and d("get", key="x") == "1"
    for _ in range(30):
        assert b("geo")[2] == inode and d("geo")[2] == inode, "flapped between geometries"
        time.sleep(0.05)
    d.quit()
    b.quit()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shmcache", *args], capture_output=True, text=True, timeout=60)


def test_resize_command_racing_writers_loses_no_write(location):
    seed = shmcache.Cache(location, size="32MB", max_item_size="64KB")
    for i in range(2000):
        seed.set(f"pre{i}", "x" * 100)
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, location, "32MB", str(t), "3"], stdout=subprocess.PIPE, text=True)
        for t in range(2)
    ]
    for w in writers:
        assert w.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    r = run_cli("resize", location, "64MB")
    assert r.returncode == 0, r.stderr
    assert "resized" in r.stdout and "copied" in r.stdout, r.stdout
    counts = []
    for w in writers:
        out, _ = w.communicate(timeout=30)
        assert w.returncode == 0, out
        n, switched = json.loads(out.strip().splitlines()[-1])
        # The resize came while it wrote: it saw the switch half-way.
        assert switched is not None and 0 < switched < n, (n, switched)
        counts.append(n)
    c = _core.Cache.attach_existing(location)
    assert c.geometry[0] > 60 << 20
    for t, n in enumerate(counts):
        assert n > 0
        assert c.get(f"count-{t}") == n, f"writer {t}: {n} counted writes, the cache has {c.get(f'count-{t}')}"
        missing = [i for i in range(1, n + 1) if c.get(f"w-{t}-{i}") != i]
        assert not missing, f"writer {t} lost {len(missing)} writes, e.g. {missing[:5]}"
    assert all(seed.get(f"pre{i}") == "x" * 100 for i in range(2000))
    # The explicit resize stays: the writers (started before it) did not move it back.
    assert seed._core.geometry == c.geometry


def test_a_resize_that_cannot_be_done_is_refused_and_changes_nothing(location):
    c = shmcache.Cache(location, size="16MB", max_item_size="64KB")
    c.set("keep", "me")
    inode = c._core.inode
    r = run_cli("resize", location, "1KB")
    assert r.returncode == 2 and "SIZE" in r.stderr, r.stderr
    r = run_cli("resize", location, "900GB")
    assert r.returncode == 2 and "SIZE" in r.stderr and "free" in r.stderr, r.stderr
    r = run_cli("resize", f"{location}-none", "32MB")
    assert r.returncode == 2 and f"no process on this host has created the cache '{location}-none' yet" in r.stderr, r.stderr
    assert c.get("keep") == "me" and c._core.inode == inode
    assert files_of(location) == [shmcache.segment_name(location).lstrip("/")]


def test_a_migrator_killed_mid_copy_leaves_the_cache_usable(location):
    c = shmcache.Cache(location, size="16MB", max_item_size="64KB")
    for i in range(200):
        c.set(f"k{i}", i)
    inode = c._core.inode
    # The migrator pauses inside each copied set (a test hook), so it is
    # killed holding every shard lock, with the successor half-filled.
    code = (
        "import sys; from shmcache import _core; _core._set_test_pause_ms(20); "
        "print('go', flush=True); _core.resize(sys.argv[1], 32 << 20, 64 << 10)"
    )
    m = subprocess.Popen([sys.executable, "-c", code, location], stdout=subprocess.PIPE, text=True)
    assert m.stdout.readline().strip() == "go"
    wait_for(lambda: len(files_of(location)) == 2, 10, "the successor segment")
    time.sleep(0.3)
    m.send_signal(signal.SIGKILL)
    m.wait(10)
    # The old segment is as it was: every item, and writes work (robust locks).
    assert c._core.inode == inode
    assert all(c.get(f"k{i}") == i for i in range(200))
    c.set("after", "kill")
    assert c.get("after") == "kill"
    # The next resize removes the dead successor and completes.
    r = run_cli("resize", location, "32MB")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: c.get("after") == "kill" and c._core.geometry[0] > 30 << 20, 5, "the handle to follow")
    assert all(c.get(f"k{i}") == i for i in range(200))
    assert files_of(location) == [shmcache.segment_name(location).lstrip("/")]
