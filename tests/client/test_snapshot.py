"""Snapshots with real processes (issue 12, item 2): `python -m shmcache
dump|load`, `Cache.dump/load`, the SNAPSHOT option; damaged, truncated and
other-version files refused with the cache unchanged; /dev/shm full during a
load; a loader SIGKILLed mid-load; a smaller cache keeps the most recent."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import shmcache
from devkit import ROOT as DEVKIT_ROOT
from shmcache import _core
from tests.conftest import unique_location, unshare_mount_argv

ROOT = str(DEVKIT_ROOT)
ENV = {**os.environ, "PYTHONPATH": ROOT}


def cli(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "shmcache", *args], capture_output=True, text=True, timeout=120, env=ENV)
    if check:
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p


def run(code, *args, timeout=120):
    p = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p.stdout


@pytest.fixture
def other():
    name = unique_location("snap")
    try:
        yield name
    finally:
        shmcache.destroy(name)


WRITER = """
import sys, shmcache
c = shmcache.Cache(sys.argv[1], size="8MB", max_item_size="64KB")
c.set("bytes", b"\\x00\\xffraw")
c.set("str", "héllo")
c.set("int", -42)
c.set("big", 2**100)
c.set("neg_big", -(2**80) + 1)
c.set("pickle", {"a": (1, 2.5), "b": None})
c.set("ttl", "keeps", timeout=3600)
c.set("soon", "gone", timeout=1.5)
for i in range(2000):
    c.set(f"k{i}", b"v" * (i % 500))
"""


def test_round_trip_between_processes(location, other, tmp_path):
    """Values of every encoding come back as themselves, TTLs keep their
    absolute expiry, and items expired by load time are not loaded."""
    f = str(tmp_path / "c.snap")
    run(WRITER, location)
    out = cli("dump", location, f).stdout
    assert "dumped 2008 items" in out, out
    time.sleep(1.6)  # "soon" expires
    src_ttl = shmcache.Cache(location, size="8MB", max_item_size="64KB").ttl("ttl")
    out = cli("load", other, f, "--size", "8MB").stdout
    assert "loaded 2007 of 2008" in out and "skipped 1 expired" in out, out
    c = shmcache.Cache(other, size="8MB")
    assert c.get("bytes") == b"\x00\xffraw" and c.get("str") == "héllo"
    assert c.get("int") == -42 and c.get("big") == 2**100 and c.get("neg_big") == -(2**80) + 1
    assert c.get("pickle") == {"a": (1, 2.5), "b": None}
    assert c.get("soon") is None
    assert all(c.get(f"k{i}") == b"v" * (i % 500) for i in range(2000))
    assert c.ttl("int") is None and abs(c.ttl("ttl") - src_ttl) < 2
    assert c._core.ttl_ms("ttl") > 3500_000
    assert c.incr("big", 1) == 2**100 + 1  # still a native int, not a pickle
    c._core.verify()


def _damaged(good: bytes):
    mid = len(good) // 2
    yield "a flipped byte in the header", good[:5] + bytes([good[5] ^ 1]) + good[6:]
    yield "a flipped byte in a record", good[:mid] + bytes([good[mid] ^ 0x10]) + good[mid + 1 :]
    yield "a flipped byte in the checksum", good[:-1] + bytes([good[-1] ^ 0x80])
    for cut in (len(good) - 1, len(good) - 8, len(good) - 24, mid, 40, 20, 7, 0):
        yield f"truncated to {cut} bytes", good[:cut]
    yield "bytes after the end", good + b"\0"
    version2 = good[:8] + (_core.SNAPSHOT_VERSION + 1).to_bytes(4, "little") + good[12:]
    yield "another format version", version2


def test_damaged_truncated_or_other_version_refused_cache_unchanged(location, other, tmp_path):
    f = tmp_path / "c.snap"
    written = time.monotonic()
    run(WRITER, location)
    cli("dump", location, str(f))
    good = f.read_bytes()
    live = shmcache.Cache(other, size="8MB", max_item_size="64KB")
    live.set("mine", "untouched")
    live.set("k5", "not from the file")
    before = live._core.stats()["items"]
    for what, data in _damaged(good):
        bad = tmp_path / "bad.snap"
        bad.write_bytes(data)
        p = cli("load", other, str(bad), check=False)
        assert p.returncode == 2, (what, p.stdout, p.stderr)
        assert "snapshot" in p.stderr and str(bad) in p.stderr, (what, p.stderr)
        if "version" in what:
            assert "version" in p.stderr, p.stderr
        with pytest.raises(shmcache.SnapshotError):
            live.load(bad)
        assert live._core.stats()["items"] == before, what
        assert live.get("k5") == "not from the file" and live.get("mine") == "untouched", what
    time.sleep(max(0.0, written + 1.6 - time.monotonic()))  # "soon" has expired
    assert live.load(f)["loaded"] == 2007  # the good file still loads


def test_load_when_dev_shm_is_full(tmp_path):
    """load --size on a /dev/shm too small for the cache (a private 1 MiB
    tmpfs): a clear error naming SIZE and /dev/shm, exit 2, no SIGBUS."""
    base = unshare_mount_argv()
    loc = unique_location("snap-full")
    f = str(tmp_path / "c.snap")
    try:
        run(WRITER, loc)
        cli("dump", loc, f)
    finally:
        shmcache.destroy(loc)
    script = f'set -e; mount -t tmpfs -o size=1m tmpfs /dev/shm; exec "$0" -m shmcache load {loc} {f} --size 4MB'
    p = subprocess.run(base + ["sh", "-c", script, sys.executable], capture_output=True, text=True, timeout=60, env=ENV)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)  # -7 would be SIGBUS
    assert "SIZE" in p.stderr and "/dev/shm" in p.stderr and "free" in p.stderr, p.stderr


def test_loader_killed_mid_load_leaves_cache_usable(location, other, tmp_path):
    """A loader SIGKILLed while it holds a shard lock mid-write: the next
    process recovers the lock (and the shard, from its log), verify()
    passes and reads and writes work."""
    f = str(tmp_path / "c.snap")
    run(
        """
        import sys, shmcache
        c = shmcache.Cache(sys.argv[1], size="16MB", max_item_size="64KB")
        for i in range(20000):
            c.set(f"k{i}", b"x" * 400)
        """,
        location,
    )
    cli("dump", location, f)
    loader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, shmcache; shmcache._core._set_test_pause_ms(2);"
            "c = shmcache.Cache(sys.argv[1], size='16MB', max_item_size='64KB');"
            "print('go', flush=True); c.load(sys.argv[2])",
            other,
            f,
        ],
        stdout=subprocess.PIPE,
        env=ENV,
    )
    try:
        assert loader.stdout.readline() == b"go\n"
        c = shmcache.Cache(other, size="16MB", max_item_size="64KB")
        deadline = time.monotonic() + 30
        while c._core.stats()["items"] < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(loader.pid, signal.SIGKILL)
    finally:
        loader.wait(30)
    assert loader.returncode == -signal.SIGKILL
    c._core.verify()
    for i in range(200):
        c.set(f"after{i}", i)
    assert [c.get(f"after{i}") for i in range(200)] == list(range(200))
    c._core.verify()
    # The load can be run again to completion.
    assert c.load(f)["loaded"] == 20000
    assert c.get("k19999") == b"x" * 400


def test_smaller_cache_keeps_the_most_recently_used(location, other, tmp_path):
    """Into a cache a quarter the size: the newest writes and the old keys
    read since (CLOCK's visited bit) are kept; the oldest unread are not."""
    f = str(tmp_path / "c.snap")
    run(
        """
        import sys, shmcache
        c = shmcache.Cache(sys.argv[1], size="16MB", max_item_size="64KB")
        for i in range(40000):
            c.set(f"k{i:05}", b"v" * 200)
        for i in range(100):  # old but used
            assert c.get(f"k{i:05}") is not None
        """,
        location,
    )
    cli("dump", location, f)
    out = cli("load", other, f, "--size", "4MB").stdout
    assert "did not fit" in out, out
    c = shmcache.Cache(other, size="4MB")
    has = lambda i: c.get(f"k{i:05}") is not None  # noqa: E731
    assert sum(map(has, range(39000, 40000))) > 950  # the newest
    assert sum(map(has, range(100))) > 95  # old, read recently
    assert sum(map(has, range(100, 1100))) < 50  # old, unread
    c._core.verify()


SNAP_USER = """
import sys, shmcache
c = shmcache.Cache(sys.argv[1], size="8MB", max_item_size="64KB", snapshot=sys.argv[2])
print(c._core.created, c.get("str"), c.get("big"))
if len(sys.argv) > 3:
    c.set("str", sys.argv[3])
"""


def test_snapshot_option_loads_on_a_fresh_segment_only(location, tmp_path, caplog):
    f = str(tmp_path / "c.snap")
    run(WRITER, location)
    cli("dump", location, f)
    shmcache.destroy(location)  # a reboot: /dev/shm is empty
    # The first process creates the segment and loads the snapshot.
    assert run(SNAP_USER, location, f, "changed").split() == ["True", "héllo", str(2**100)]
    # The next attaches (not created): the snapshot is not loaded over live data.
    assert run(SNAP_USER, location, f).split() == ["False", "changed", str(2**100)]
    shmcache.destroy(location)
    # No file yet (first boot) or a damaged one: logged, the cache starts empty.
    with caplog.at_level(logging.INFO, logger="shmcache"):
        c = shmcache.Cache(location, size="8MB", max_item_size="64KB", snapshot=str(tmp_path / "none.snap"))
        assert c._core.created and c.get("str") is None
        shmcache.destroy(location)
        bad = tmp_path / "bad.snap"
        bad.write_bytes(Path(f).read_bytes()[:-3])
        shmcache.client._attached.clear()
        c = shmcache.Cache(location, size="8MB", max_item_size="64KB", snapshot=str(bad))
        assert c.get("str") is None and c._core.stats()["items"] == 0
    assert "no snapshot" in caplog.text and "SNAPSHOT not loaded" in caplog.text, caplog.text
    with pytest.raises(ValueError, match="snapshot"):
        shmcache.Cache(location, snapshot=3)


def test_django_face_and_option(tmp_path):
    """SNAPSHOT in OPTIONS, and SharedMemoryCache.dump/load."""
    pytest.importorskip("django")
    from shmcache.django import SharedMemoryCache

    loc, f = unique_location("snap-dj"), str(tmp_path / "d.snap")
    try:
        a = SharedMemoryCache(loc, {"OPTIONS": {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB"}})
        a.set("x", {"y": 1}, timeout=None)
        assert a.dump(f)["records"] == 1
        a.clear()
        assert a.load(f)["loaded"] == 1 and a.get("x") == {"y": 1}
        shmcache.destroy(loc)
        out = run(
            """
            import sys
            from shmcache.django import SharedMemoryCache
            b = SharedMemoryCache(sys.argv[1], {"OPTIONS": {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB", "SNAPSHOT": sys.argv[2]}})
            print(b.get("x"))
            """,
            loc,
            f,
        )
        assert out.strip() == "{'y': 1}"
        with pytest.raises(ValueError, match="SNAPSHOT"):
            SharedMemoryCache(loc, {"OPTIONS": {"SNAPSHOT": 1}})
    finally:
        shmcache.destroy(loc)
