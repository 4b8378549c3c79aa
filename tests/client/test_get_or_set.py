"""get_or_set and memoize, stampede-safe on one host: one process of six computes, a
killed computer frees its waiters at once, waiters compute themselves past `wait`, plain
values and None, memoize on both faces, bad arguments named (the tier's, across hosts,
is in tests/tiered/test_tiered.py)."""

import asyncio
import multiprocessing
import os
import signal
import time

import pytest

import shmcache

FORK = multiprocessing.get_context("fork")
OPTIONS = {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB"}


def _miss_together(location, barrier, q):
    from shmcache.django import SharedMemoryCache

    c = SharedMemoryCache(location, {"OPTIONS": OPTIONS})
    barrier.wait()

    def compute():
        c.incr("calls", ignore_key_check=True)
        time.sleep(0.3)
        return f"value-from-{os.getpid()}"

    q.put(c.get_or_set("hot", compute, timeout=60))


def test_get_or_set_runs_the_callable_once_for_six_processes(django_cache, location, run_forked):
    barrier, q = FORK.Barrier(6), FORK.Queue()
    run_forked(_miss_together, [(location, barrier, q)] * 6)
    values = {q.get(timeout=5) for _ in range(6)}
    assert django_cache.get("calls") == 1, "more than one process ran the callable"
    assert len(values) == 1 and values == {django_cache.get("hot")}


def _compute_then_die(location, started):
    c = shmcache.Cache(location, size="8MB", max_item_size="64KB")

    def compute():
        started.set()
        time.sleep(600)

    c.get_or_set("slow", compute)


def test_a_killed_computer_frees_its_waiters_at_once(cache, location):
    started = FORK.Event()
    p = FORK.Process(target=_compute_then_die, args=(location, started))
    p.start()
    assert started.wait(10)
    t0 = time.monotonic()
    killer = FORK.Process(target=lambda: (time.sleep(0.2), os.kill(p.pid, signal.SIGKILL)))
    killer.start()
    assert cache.get_or_set("slow", lambda: "mine", wait=30) == "mine"
    took = time.monotonic() - t0
    killer.join()
    p.join()
    assert took < 1.0, f"the waiter waited {took:.2f} s for a dead process"


def test_get_or_set_waits_at_most_wait_then_computes(cache, location):
    started = FORK.Event()
    p = FORK.Process(target=_compute_then_die, args=(location, started))
    p.start()
    try:
        assert started.wait(10)
        t0 = time.monotonic()
        assert cache.get_or_set("slow", lambda: "impatient", wait=0.3) == "impatient"
        assert 0.25 < time.monotonic() - t0 < 3
    finally:
        p.kill()
        p.join()


def test_get_or_set_plain_values_none_and_errors(cache, django_cache):
    assert cache.get_or_set("a", 1) == 1 and cache.get_or_set("a", 2) == 1
    assert cache.get_or_set("n", lambda: None) is None and "n" in cache  # a stored None is a hit
    with pytest.raises(ZeroDivisionError):
        cache.get_or_set("e", lambda: 1 / 0)
    assert cache.get_or_set("e", lambda: "fine") == "fine", "a failed computation leaves no marker behind"
    assert django_cache.get_or_set("d", lambda: [1], timeout=5) == [1] and 4 < django_cache.ttl("d") <= 5
    assert asyncio.run(django_cache.aget_or_set("x", lambda: "async")) == "async"


def test_memoize_on_both_faces(cache, django_cache):
    calls = []

    @cache.memoize(timeout=60)
    def square(x, power=2):
        calls.append(x)
        return x**power

    assert square(3) == 9 and square(3) == 9 and square(3, power=3) == 27
    assert calls == [3, 3]
    assert cache.delete(square.__cache_key__(3))
    assert square(3) == 9 and calls == [3, 3, 3]

    @django_cache.memoize(timeout=60, typed=True)
    def ident(x):
        calls.append(("d", x))
        return x

    assert ident(1) == 1 and ident(1.0) == 1.0 and ident(1) == 1
    assert [type(x) for tag, x in calls[3:]] == [int, float], "typed: 1 and 1.0 computed apart, each once"
    assert 59 < django_cache.ttl(ident.__cache_key__(1)) <= 60

    with pytest.raises(TypeError, match="coroutine"):

        @shmcache.memoize(cache)
        async def coro():
            pass


@pytest.mark.parametrize("wait", [-1, float("nan"), "5", True], ids=repr)
def test_get_or_set_bad_wait_is_named_even_on_a_hit(cache, wait):
    cache.set("k", 1)
    with pytest.raises(ValueError, match="wait"):
        cache.get_or_set("k", 2, wait=wait)
