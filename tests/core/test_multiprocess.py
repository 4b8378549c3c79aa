"""Real processes sharing one cache: atomic incr, add races, a lock holder
SIGKILLed mid-write, and a /dev/shm too small for SIZE."""

import hashlib
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import shmcache
from devkit.lock_holder import hold_shard_lock
from tests.conftest import unshare_mount_argv

FORK = mp.get_context("fork")


def _incr_worker(name, n, q):
    c = shmcache.Cache(name, size="8MB", max_item_size="64KB")
    for _ in range(n):
        c.incr("counter")
    q.put(os.getpid())


def test_incr_is_atomic_across_processes(name):
    c = shmcache.Cache(name, size="8MB", max_item_size="64KB")
    c.set("counter", 0)
    q = FORK.Queue()
    procs = [FORK.Process(target=_incr_worker, args=(name, 10_000, q)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert len({q.get(timeout=5) for _ in procs}) == 4
    assert c.get("counter") == 40_000


def _add_worker(name, rounds, start, q):
    c = shmcache.Cache(name, size="8MB", max_item_size="64KB")
    start.wait()
    wins = [r for r in range(rounds) if c.add(f"race-{r}", os.getpid())]
    q.put((os.getpid(), wins))


def test_add_race_has_exactly_one_winner(name):
    rounds = 2000
    q, start = FORK.Queue(), FORK.Event()
    procs = [FORK.Process(target=_add_worker, args=(name, rounds, start, q)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    winners = {}
    for pid, wins in results:
        for r in wins:
            assert r not in winners, f"round {r} won twice"
            winners[r] = pid
    assert len(winners) == rounds
    c = shmcache.Cache(name, size="8MB", max_item_size="64KB")
    # What is stored is the winner's value.
    assert all(c.get(f"race-{r}") == pid for r, pid in winners.items())


def _value(key: str, n: int) -> bytes:
    """A self-checking value: key, length and digest embedded."""
    body = (key.encode() * (n // max(1, len(key)) + 1))[:n]
    return key.encode() + b"|" + hashlib.sha256(key.encode() + body).hexdigest().encode() + b"|" + body


def _check(key: str, v) -> None:
    k, digest, body = v.split(b"|", 2)
    assert k == key.encode(), f"foreign value under {key}: {k!r}"
    assert hashlib.sha256(k + body).hexdigest().encode() == digest, f"torn value under {key}"


def _busy_worker(name, keys, stop, q):
    """Keep reading/writing every shard; report the slowest operation."""
    c = shmcache.Cache(name, size="8MB", max_item_size="256KB", lock_timeout=0.05)
    worst, ops, timeouts = 0.0, 0, 0
    while not stop.is_set():
        for k in keys:
            t = time.monotonic()
            try:
                v = c.get(k)
                if v is not None:
                    _check(k, v)
                c.set(k, _value(k, 500))
            except shmcache.LockTimeout:
                timeouts += 1
            worst = max(worst, time.monotonic() - t)
            ops += 1
    q.put((worst, ops, timeouts))


def test_sigkilled_lock_holder_blocks_nobody(name):
    c = shmcache.Cache(name, size="8MB", max_item_size="256KB", lock_timeout=0.05)
    keys = [f"k{i}" for i in range(300)]
    for k in keys:
        c.set(k, _value(k, 500))
    victim = keys[0]
    shard = c._core.shard_of(victim.encode())
    same = [k for k in keys if c._core.shard_of(k.encode()) == shard]
    others = [k for k in keys if c._core.shard_of(k.encode()) != shard]
    assert len(same) >= 2 and others

    holder = hold_shard_lock(name, victim, "8MB", "256KB", 200_000)

    stop, q = FORK.Event(), FORK.Queue()
    busy = [FORK.Process(target=_busy_worker, args=(name, keys[:60], stop, q)) for _ in range(2)]
    for p in busy:
        p.start()
    time.sleep(0.5)
    # Other shards work normally while the holder sits in its lock.
    for k in others[:50]:
        _check(k, c.get(k))

    holder.send_signal(signal.SIGKILL)
    holder.wait()
    killed_at = time.monotonic()
    # The dead owner's shard is usable again within a second.
    while True:
        try:
            got = c.get(victim)
            break
        except shmcache.LockTimeout:
            assert time.monotonic() - killed_at < 1.0, "shard still blocked after 1 s"
    assert got is None or got == b"x" * 200_000 or _check(victim, got) is None
    time.sleep(0.3)
    stop.set()
    for p in busy:
        p.join(30)
        assert p.exitcode == 0, "a worker failed (torn/foreign value or crash)"
    results = [q.get(timeout=5) for _ in busy]
    for worst, ops, _timeouts in results:
        assert ops > 100
        # Bounded waits: no op took much longer than the lock timeout.
        assert worst < 0.05 + 0.5, f"an operation blocked for {worst:.3f}s"

    s = c.stats()
    assert s["lock_recoveries"] == 1, s
    # The dead writer's shard is rebuilt from its log, not wiped: nothing
    # but what the busy workers themselves overwrite is lost, in any shard.
    assert s["shard_wipes"] == 0, s
    for k in others + [k for k in same if k not in keys[:60] and k != victim]:
        v = c.get(k)
        assert v is not None, f"{k} was lost"
        _check(k, v)
    items, _ = c._core.verify()
    assert items == c.stats()["items"]


def test_size_beyond_free_dev_shm_is_a_clear_error(name):
    free = shutil.disk_usage("/dev/shm").free
    too_big = free + (1 << 30)
    with pytest.raises(shmcache.SegmentError) as e:
        shmcache.Cache(name, size=too_big)
    msg = str(e.value)
    assert "SIZE" in msg and "free" in msg, msg
    assert not os.path.exists("/dev/shm" + shmcache.segment_name(name))


SMALL_TMPFS = textwrap.dedent(
    """
    set -e
    mount -t tmpfs -o size=1m tmpfs /dev/shm
    exec "$0" -c '
import shmcache
from devkit.lock_holder import hold_shard_lock
try:
    shmcache.Cache("tiny-tmpfs", size="4MB", max_item_size="64KB")
except shmcache.SegmentError as e:
    print("ERROR:", e)
else:
    print("NO ERROR")
'
    """
)


def test_small_tmpfs_gives_error_not_sigbus():
    """A 4 MiB cache on a 1 MiB /dev/shm (Docker's small default, scaled down),
    in a private mount namespace."""
    base = unshare_mount_argv()
    p = subprocess.run(base + ["sh", "-c", SMALL_TMPFS, sys.executable], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)  # -7 would be SIGBUS
    assert p.stdout.startswith("ERROR:"), p.stdout + p.stderr
    assert "SIZE" in p.stdout and "/dev/shm" in p.stdout, p.stdout


def _str_writer(name, stop):
    c = shmcache.Cache(name, size="1MB", max_item_size="64KB", shards=1)
    i = 0
    while not stop.is_set():
        for k in range(40):
            c.set(f"s{k}", chr(0x4E00 + (i + k) % 2000) * (3000 + (i * 7 + k) % 9000))
        i += 1


def test_lock_free_str_reads_under_concurrent_writes(name):
    """Regression: a lock-free get of a str racing a writer must never raise
    (it once decoded shared memory that was changing) nor return a torn str."""
    c = shmcache.Cache(name, size="1MB", max_item_size="64KB", shards=1)
    stop = FORK.Event()
    writers = [FORK.Process(target=_str_writer, args=(name, stop)) for _ in range(2)]
    for p in writers:
        p.start()
    reads = 0
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for k in range(40):
                v = c.get(f"s{k}")
                if v is not None:
                    assert len(set(v)) == 1, "torn str"
                    reads += 1
    finally:
        stop.set()
        for p in writers:
            p.join(30)
    assert reads > 100


GEOMETRY_PEER = textwrap.dedent(
    """
    import sys, time, shmcache
    name, size = sys.argv[1], sys.argv[2]
    c = shmcache.Cache(name, size=size, max_item_size="64KB")
    print("ready", c._core.inode, flush=True)
    for line in sys.stdin:
        op, key, *val = line.split()
        if op == "set":
            c.set(key, val[0])
            print("ok", flush=True)
        elif op == "delete":
            c.delete(key)
            print("ok", flush=True)
        else:
            print("value", c.get(key), flush=True)
    """
)


def test_processes_asking_other_sizes_share_one_cache(name):
    """Old (8MB) and new (16MB) settings alive at once, started alternately:
    no call fails, one segment, a write or delete by either is seen by the
    other at once (no split brain)."""
    peers = []
    try:
        for size in ("8MB", "16MB", "8MB", "16MB"):
            p = subprocess.Popen(
                [sys.executable, "-c", GEOMETRY_PEER, name, size],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            line = p.stdout.readline().split()
            assert line[:1] == ["ready"], (line, p.stderr.read() if p.poll() is not None else "")
            peers.append((p, int(line[1])))
        assert len({inode for _, inode in peers}) == 1, "split brain"

        def ask(p, cmd):
            p.stdin.write(cmd + "\n")
            p.stdin.flush()
            return p.stdout.readline().split()

        for i, (writer, _) in enumerate(peers):
            assert ask(writer, f"set k v{i}") == ["ok"]
            for reader, _ in peers:
                assert ask(reader, "get k") == ["value", f"v{i}"]
        assert ask(peers[1][0], "delete k") == ["ok"]
        for reader, _ in peers:
            assert ask(reader, "get k") == ["value", "None"]
    finally:
        for p, _ in peers:
            p.stdin.close()
            p.wait(10)
