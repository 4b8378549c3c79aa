"""Segment lifecycle: the name removed under running processes (systemd's
RemoveIPC, a manual rm), and a redeploy with new OPTIONS."""

import multiprocessing as mp
import os
import time

import shmcache

FORK = mp.get_context("fork")


def _follower(name, go, q):
    c = shmcache.Cache(name, size="3MB", max_item_size="4KB")
    q.put(("start", os.getpid(), c._core.inode))
    go.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        c.get("probe")  # ordinary traffic is what notices the change
        time.sleep(0.01)
        if c.get("written-after") == b"yes":
            break
    q.put(("end", os.getpid(), c._core.inode))


def test_removed_segment_converges_on_one_new_segment(name):
    c = shmcache.Cache(name, size="3MB", max_item_size="4KB")
    c.set("before", b"1")
    old = c._core.inode
    go, q = FORK.Event(), FORK.Queue()
    procs = [FORK.Process(target=_follower, args=(name, go, q)) for _ in range(3)]
    for p in procs:
        p.start()
    starts = [q.get(timeout=10) for _ in procs]
    assert {s[2] for s in starts} == {old}
    os.unlink("/dev/shm" + shmcache.segment_name(name))  # what RemoveIPC does
    t0 = time.monotonic()
    go.set()
    # This process notices within about a second too and writes into the new segment.
    while c._core.inode == old:
        c.get("probe")
        time.sleep(0.01)
        assert time.monotonic() - t0 < 3, "never noticed the removal"
    c.set("written-after", b"yes")
    ends = [q.get(timeout=10) for _ in procs]
    for p in procs:
        p.join(10)
    new = {e[2] for e in ends}
    assert new == {c._core.inode} and old not in new, (old, new)
    assert os.stat("/dev/shm" + shmcache.segment_name(name)).st_ino == c._core.inode
    assert c.get("before") is None  # a fresh cache: the old one is gone with its name


def test_redeploy_with_new_size_adopts_a_used_and_migrates_an_unused_segment(name):
    code = "import shmcache,sys; c=shmcache.Cache(sys.argv[1], size=sys.argv[2], max_item_size='4KB'); c.set('k', sys.argv[2]); print(c.stats()['segment_size'])"
    import subprocess
    import sys

    a = subprocess.run([sys.executable, "-c", code, name, "3MB"], capture_output=True, text=True)
    assert a.returncode == 0, a.stderr
    # While a process is attached, another geometry is adopted as it is: no
    # error, a warning naming the geometries, and one cache for both.
    c = shmcache.Cache(name, size="3MB", max_item_size="4KB")
    b = subprocess.run([sys.executable, "-c", code, name, "5MB"], capture_output=True, text=True)
    assert b.returncode == 0, b.stderr
    assert int(b.stdout) == int(a.stdout) and "uses the existing geometry" in b.stderr, b.stderr
    assert c.get("k") == "5MB"
    # Once nobody is attached, the new deploy's first process migrates the
    # segment to its SIZE, the items with it (a stop-and-start deploy).
    shmcache.client._attached.clear()
    del c
    import gc

    gc.collect()
    read = "import shmcache,sys; c=shmcache.Cache(sys.argv[1], size=sys.argv[2], max_item_size='4KB'); print(c.get('k'), c.stats()['segment_size'])"
    b = subprocess.run([sys.executable, "-c", read, name, "5MB"], capture_output=True, text=True)
    assert b.returncode == 0, b.stderr
    value, size = b.stdout.split()
    assert value == "5MB" and int(size) > int(a.stdout), b.stdout
