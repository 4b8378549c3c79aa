"""Locks shared by every process of the host (`cache.lock`, `alock`, on both faces), shaped like
redis-py's: exact read-modify-write across real processes, a SIGKILLed holder's lock
free at once, a held lock that survives a full cache, timeouts, ownership and thread-local
tokens, bad arguments named, holders in another pid namespace."""

import asyncio
import multiprocessing
import os
import signal
import time

import pytest

import shmcache
from shmcache import _holder

FORK = multiprocessing.get_context("fork")
OPTIONS = {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB"}


def _rmw(location, n, q):
    from shmcache.django import SharedMemoryCache

    c = SharedMemoryCache(location, {"OPTIONS": OPTIONS})
    inside = 0
    for _ in range(n):
        with c.lock("counter-lock", timeout=10, sleep=0.001):
            c.set("holders", c.get("holders", 0) + 1)
            inside = max(inside, c.get("holders"))
            v = c.get("counter", 0)  # not atomic: only the lock makes it exact
            time.sleep(0)
            c.set("counter", v + 1)
            c.set("holders", c.get("holders") - 1)
    q.put(inside)


def test_lock_makes_read_modify_write_exact_across_processes(django_cache, location, run_forked):
    q = FORK.Queue()
    run_forked(_rmw, [(location, 250, q)] * 4)
    assert django_cache.get("counter") == 1000
    assert max(q.get(timeout=5) for _ in range(4)) == 1, "the lock was held by two processes at once"


def _hold_forever(location, key, ready):
    c = shmcache.Cache(location, size="8MB", max_item_size="64KB")
    c.lock(key, timeout=None).acquire()
    ready.set()
    time.sleep(600)


@pytest.mark.parametrize("timeout", [None, 3600])
def test_a_killed_holder_frees_the_lock_at_once(cache, location, timeout):
    ready = FORK.Event()
    p = FORK.Process(target=_hold_forever, args=(location, "L", ready))
    p.start()
    assert ready.wait(10)
    lk = cache.lock("L", timeout=timeout)
    assert not lk.acquire(blocking=False), "the lock was granted while held"
    assert cache.has_key("L") and lk.locked() and not lk.owned()
    os.kill(p.pid, signal.SIGKILL)
    t0 = time.monotonic()
    assert lk.acquire(blocking_timeout=5)
    took = time.monotonic() - t0
    p.join()
    assert took < 0.1, f"took {took:.3f} s after the holder died"
    assert lk.owned()
    lk.release()


def _fill(location, n):
    c = shmcache.Cache(location, size="8MB", max_item_size="64KB")
    for i in range(n):
        c.set(f"fill-{i}", b"f" * 4000)


def test_a_held_lock_survives_a_full_cache_written_by_other_processes(cache, location, run_forked):
    """A lock key is pinned: other processes writing 10x the cache's size
    evict everything else around it, never the lock, nor an extended one."""
    a = cache.lock("held", timeout=None)
    b = cache.lock("extended", timeout=600)
    assert a.acquire(blocking=False) and b.acquire(blocking=False)
    cache.set("plain", b"x")
    run_forked(_fill, [(location, 10_000)] * 2)
    b.extend(60)
    run_forked(_fill, [(location, 10_000)] * 2)
    assert cache.stats()["evictions"] > 10_000
    assert cache.get("plain") is None, "the cache was never full"
    for lk in (a, b):
        assert lk.owned() and cache.has_key(lk.name)
        assert not cache.lock(lk.name).acquire(blocking=False), "a held lock was granted again"
        lk.release()
    assert not cache.has_key("held")


def test_lock_timeout_expires(cache, clock_offset):
    a = cache.lock("L", timeout=5)
    assert a.acquire()
    b = cache.lock("L", timeout=5)
    assert not b.acquire(blocking=False)
    with clock_offset(6_000):
        assert b.acquire(blocking=False), "an expired lock is free"
        with pytest.raises(shmcache.LockNotOwnedError):
            a.release()
        b.release()


def test_lock_api(django_cache):
    lk = django_cache.lock("L", timeout=10)
    with pytest.raises(shmcache.LockError):
        lk.release()  # not held
    with lk:
        assert lk.locked() and lk.owned() and django_cache.has_key("L")
        assert lk.extend(5) and 14 < django_cache.ttl("L") <= 15
        assert lk.extend(2, replace_ttl=True) and 1 < django_cache.ttl("L") <= 2
        assert lk.reacquire() and 9 < django_cache.ttl("L") <= 10
    assert not lk.locked() and not django_cache.has_key("L")
    forever = django_cache.lock("F")
    forever.acquire()
    with pytest.raises(shmcache.LockError, match="no timeout"):
        forever.extend(1)
    forever.release()
    assert django_cache.lock("B", blocking_timeout=0.05).acquire() is True
    t0 = time.monotonic()
    assert django_cache.lock("B", blocking_timeout=0.05).acquire() is False
    assert time.monotonic() - t0 < 1
    with pytest.raises(shmcache.LockError, match="Unable to acquire"), django_cache.lock("B", blocking=False):
        pass


def test_lock_taken_over_is_not_owned_and_cannot_be_released(cache):
    a = cache.lock("L", timeout=10)
    a.acquire()
    cache.delete("L")  # as if expired
    b = cache.lock("L", timeout=10)
    assert b.acquire(blocking=False)
    assert not a.owned()
    with pytest.raises(shmcache.LockNotOwnedError):
        a.extend(1)
    with pytest.raises(shmcache.LockNotOwnedError):
        a.reacquire()
    with pytest.raises(shmcache.LockNotOwnedError):
        a.release()
    with pytest.raises(shmcache.LockError):
        a.release()  # released (and failed) once already: unlocked, as in redis-py
    assert b.owned()
    b.release()


def test_thread_local_tokens(cache):
    import threading

    lk = cache.lock("T", timeout=10)
    lk.acquire()
    seen = []
    t = threading.Thread(target=lambda: seen.append(lk.owned()))
    t.start()
    t.join()
    assert seen == [False], "another thread must not own a thread-local lock"
    shared = cache.lock("S", timeout=10, thread_local=False)
    shared.acquire()
    t = threading.Thread(target=shared.release)
    t.start()
    t.join()
    assert not shared.locked()
    lk.release()


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(timeout="1"), TypeError, "timeout"),
        (dict(timeout=0), ValueError, "timeout"),
        (dict(sleep=-1), ValueError, "sleep"),
        (dict(blocking_timeout=float("nan")), ValueError, "blocking_timeout"),
    ],
    ids=repr,
)
def test_lock_bad_arguments_name_them(cache, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        cache.lock("L", **kwargs)


def test_holder_in_another_pid_namespace_is_never_judged_dead():
    me = _holder.me()
    pid, start, ns = me.split(":")
    assert not _holder.is_dead(_holder.new_token())
    assert _holder.is_dead(f"{pid}:{int(start) + 1}:{ns}:x"), "same pid, other start time: a recycled pid"
    assert not _holder.is_dead(f"{pid}:{int(start) + 1}:{int(ns) + 1}:x"), "another namespace: cannot tell"
    assert not _holder.is_dead("garbage") and not _holder.is_dead(7)


def test_async_lock_and_expire_family(django_cache):
    async def main():
        async with django_cache.alock("A", timeout=5) as lk:
            assert await lk.owned()
            other = django_cache.alock("A", timeout=5)
            assert await other.acquire(blocking_timeout=0.05) is False
        assert await django_cache.apersist("A") is False
        await django_cache.aset("k", 1)
        assert await django_cache.aexpire("k", 10) and 9 < await django_cache.attl("k") <= 10
        assert await django_cache.aincr("c", ignore_key_check=True) == 1

    asyncio.run(main())
