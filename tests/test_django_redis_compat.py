"""Code written for django-redis, run on shmcache: set(nx=), incr beyond 64
bits and with ignore_key_check, the expire family, key iteration, locks,
stampede-safe get_or_set, memoize, SERIALIZER/COMPRESSOR. Real processes
where the point is sharing (fork), no mocks."""

import asyncio
import datetime
import multiprocessing
import os
import signal
import time

import pytest

import shmcache
from shmcache import _holder

FORK = multiprocessing.get_context("fork")
OPTIONS = {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB"}


def backend(location, **params):
    from shmcache.django import SharedMemoryCache

    params.setdefault("OPTIONS", dict(OPTIONS))
    return SharedMemoryCache(location, params)


# ---------------------------------------------------------------- set(nx=), incr, delete_many


def test_set_nx_is_add(django_cache, cache):
    for c in (django_cache, cache):
        assert c.set("k", 1, nx=True) is True
        assert c.set("k", 2, nx=True) is False
        assert c.get("k") == 1
        c.set("k", 3)
        assert c.get("k") == 3
        assert c.set("gone", 1, timeout=0, nx=True) is True and not c.has_key("gone")


def test_incr_ignore_key_check_starts_at_the_delta(django_cache, cache):
    assert django_cache.incr("n", 5, ignore_key_check=True) == 5
    assert django_cache.ttl("n") is None  # as Redis INCRBY: no expiry
    assert django_cache.decr("m", 2, ignore_key_check=True) == -2
    with pytest.raises(ValueError):
        django_cache.incr("missing")
    assert cache.incr("c", ignore_key_check=True) == 1 and cache.incr("c", ignore_key_check=True) == 2
    with pytest.raises(KeyError):
        cache.incr("missing")


@pytest.mark.parametrize("start, delta", [(2**63 - 1, 1), (-(2**63), -1), (2**100, 1), (2**100, -(2**100)), (5, 2**70)])
def test_incr_beyond_64_bits_keeps_going(cache, django_cache, start, delta):
    for c in (cache, django_cache):
        c.set("n", start, timeout=100)
        assert c.incr("n", delta) == start + delta
        assert c.get("n") == start + delta
        assert c.decr("n", delta) == start
        assert 99 < c.ttl("n") <= 100, "incr kept the expiry"


def _incr_big(location, n):
    c = shmcache.Cache(location, size="8MB", max_item_size="64KB")
    for _ in range(n):
        c.incr("big")


def test_incr_across_the_64_bit_edge_is_atomic_across_processes(cache, location, run_forked):
    cache.set("big", 2**63 - 1000)
    run_forked(_incr_big, [(location, 500)] * 4)
    assert cache.get("big") == 2**63 - 1000 + 2000


def test_delete_many_returns_how_many_existed(django_cache, cache):
    django_cache.set_many({"a": 1, "b": 2})
    assert django_cache.delete_many(["a", "b", "c"]) == 2
    assert django_cache.delete_many([]) is None  # BaseCache's answer (Django's suite); falsy for django-redis
    assert cache.delete_many([]) == 0  # the plain client counts
    cache.set("x", 1)
    assert cache.delete_many(["x", "y"]) == 1


# ---------------------------------------------------------------- the expire family


def test_ttl_pttl_missing_forever_and_timed(django_cache, clock_offset):
    c = django_cache
    assert c.ttl("missing") == 0 and c.pttl("missing") == 0
    c.set("forever", 1, timeout=None)
    assert c.ttl("forever") is None and c.pttl("forever") is None
    c.set("timed", 1, timeout=10)
    assert 9_000 < c.pttl("timed") <= 10_000 and isinstance(c.pttl("timed"), int)
    with clock_offset(11_000):
        assert c.ttl("timed") == 0 and c.pttl("timed") == 0


def test_expire_pexpire_persist(django_cache, clock_offset):
    c = django_cache
    assert c.expire("missing", 10) is False and c.persist("missing") is False
    c.set("k", 1, timeout=None)
    assert c.expire("k", 10) is True and 9 < c.ttl("k") <= 10
    assert c.pexpire("k", 5_000) is True and 4_000 < c.pttl("k") <= 5_000
    assert c.persist("k") is True and c.ttl("k") is None
    assert c.expire("k", 0) is True and not c.has_key("k")  # 0: delete, as Redis EXPIRE 0
    c.set("k", 1, timeout=100)
    with clock_offset(101_000):
        assert c.expire("k", 10) is False, "an expired key does not exist"


def test_expire_at_and_pexpire_at(django_cache):
    c = django_cache
    c.set("k", 1, timeout=None)
    soon = time.time() + 30
    assert c.expire_at("k", soon) is True and 29 < c.ttl("k") <= 30
    assert c.pexpire_at("k", int(soon * 1000) + 10_000) is True and 39 < c.ttl("k") <= 40
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=60)
    assert c.expire_at("k", when) is True and 59 < c.ttl("k") <= 60
    assert c.expire_at("k", time.time() - 1) is True  # in the past: deleted
    assert not c.has_key("k")
    assert c.expire_at("missing", soon) is False


def test_expire_family_respects_versions_and_prefixes(django_settings, location):
    a = backend(location, KEY_PREFIX="a")
    b = backend(location, KEY_PREFIX="b")
    a.set("k", 1, timeout=None)
    assert b.expire("k", 5) is False and a.ttl("k") is None
    assert a.expire("k", 5, version=2) is False
    a.set("k", 2, version=2, timeout=None)
    assert a.expire("k", 5, version=2) is True
    assert a.ttl("k") is None and 4 < a.ttl("k", version=2) <= 5


@pytest.mark.parametrize("bad", ["soon", [1], object()], ids=repr)
def test_expire_family_bad_arguments_name_them(django_cache, cache, bad):
    django_cache.set("k", 1)
    with pytest.raises(TypeError, match="when"):
        django_cache.expire_at("k", bad)
    with pytest.raises(TypeError, match="when"):
        cache.pexpire_at("k", bad)
    with pytest.raises(TypeError, match="timeout"):
        cache.expire("k", bad)
    assert django_cache.get("k") == 1


# ---------------------------------------------------------------- locks


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


# ---------------------------------------------------------------- get_or_set single flight, memoize


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


# ---------------------------------------------------------------- SERIALIZER, COMPRESSOR, django-redis options


@pytest.mark.parametrize("serializer", ["pickle", "json", "msgpack", "django_redis.serializers.json.JSONSerializer"])
@pytest.mark.parametrize("compressor", [None, "zlib", "lzma", "zstd", "lz4", "django_redis.compressors.zlib.ZlibCompressor"])
def test_serializers_and_compressors_round_trip(django_settings, location, serializer, compressor):
    c = backend(location, OPTIONS={**OPTIONS, "SERIALIZER": serializer, "COMPRESSOR": compressor, "COMPRESS_MIN_LENGTH": 10})
    values = {"d": {"a": [1, 2, "x"], "b": None}, "s": "text " * 100, "b": b"\x00" * 500, "i": 7, "big": 2**80}
    c.set_many(values)
    assert c.get_many(list(values)) == values
    assert c.incr("i") == 8, "native ints stay native (atomic incr) whatever the serializer"
    assert c._cache._core.get(c.make_key("i")) == 8


def test_json_serializer_refuses_pickled_values(django_settings, location):
    pickled = backend(location)
    pickled.set("obj", {1, 2})  # a set: pickled
    js = backend(location, OPTIONS={**OPTIONS, "SERIALIZER": "json"})
    assert js.get("obj", "default") == "default", "a JSON cache must not unpickle"
    with pytest.raises(TypeError):
        js.set("obj", {1, 2})  # not JSON-serializable: a clear error, nothing stored


def test_compression_shrinks_what_is_stored(django_settings, location):
    c = backend(location, OPTIONS={**OPTIONS, "COMPRESSOR": "zlib"})
    c.set("big", "a" * 20_000)
    assert c.stats()["bytes_used"] < 2_000
    assert c.get("big") == "a" * 20_000


@pytest.mark.parametrize(
    "options, word",
    [
        ({"CLIENT_CLASS": "django_redis.client.DefaultClient"}, "CLIENT_CLASS"),
        ({"CONNECTION_POOL_KWARGS": {}}, "CONNECTION_POOL_KWARGS"),
        ({"SERIALIZER": "yaml"}, "SERIALIZER"),
        ({"COMPRESSOR": "brotli"}, "COMPRESSOR"),
        ({"COMPRESS_MIN_LENGTH": -1}, "COMPRESS_MIN_LENGTH"),
    ],
    ids=repr,
)
def test_django_redis_only_and_bad_options_are_named(django_settings, location, options, word):
    with pytest.raises(ValueError, match=word) as ei:
        backend(location, OPTIONS={**OPTIONS, **options})
    if word == "CLIENT_CLASS":
        assert "remove" in str(ei.value)
    assert not shmcache.destroy(location), "nothing was created"


@pytest.mark.parametrize("wait", [-1, float("nan"), "5", True], ids=repr)
def test_get_or_set_bad_wait_is_named_even_on_a_hit(cache, wait):
    cache.set("k", 1)
    with pytest.raises(ValueError, match="wait"):
        cache.get_or_set("k", 2, wait=wait)
