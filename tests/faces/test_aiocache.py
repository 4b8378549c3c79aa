"""shmcache's aiocache cache (aiocache 0.12's BaseCache): add raises on an
existing key, increment is atomic across processes, expire, exists,
multi_get/multi_set, delete, clear(namespace), serializers, optimistic
locks and redlock."""

import asyncio
import multiprocessing

import pytest
from aiocache.lock import OptimisticLock, OptimisticLockError, RedLock
from aiocache.serializers import JsonSerializer, PickleSerializer

from shmcache.aiocache import SharedMemoryCache

FORK = multiprocessing.get_context("fork")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def cache(location):
    return SharedMemoryCache(location=location, size="8MB", max_item_size="64KB", namespace="app:")


def test_get_set_add_delete_exists_multi(cache):
    async def go():
        assert await cache.set("a", {"x": [1, 2]}) is True
        assert await cache.get("a") == {"x": [1, 2]}, "objects as they are (NullSerializer, shmcache pickles)"
        assert await cache.get("missing") is None and await cache.get("missing", default=7) == 7
        assert await cache.add("b", 1) is True
        with pytest.raises(ValueError, match="already exists"):
            await cache.add("b", 2)
        assert await cache.get("b") == 1
        assert await cache.exists("a") and not await cache.exists("zz")
        assert await cache.multi_set([("m1", 1), ("m2", "two")]) is True
        assert await cache.multi_get(["m1", "zz", "m2"]) == [1, None, "two"]
        assert await cache.delete("m1") == 1 and await cache.delete("m1") == 0
        raw = cache._cache  # the namespace is part of the stored key, with no separator (as the memory backend)
        assert raw.get("app:a") == {"x": [1, 2]} and raw.get("a") is None

    run(go())


def test_ttl_and_expire(cache, clock_offset):
    async def go():
        await cache.set("t", "v", ttl=10)
        await cache.set("forever", "v", ttl=0)
        assert await cache.expire("t", 100) is True
        assert await cache.expire("zz", 5) is False
        with clock_offset(50_000):
            assert await cache.get("t") == "v", "expire() moved the expiry"
        await cache.expire("t", 0)  # 0: no expiry any more
        with clock_offset(10_000_000):
            assert await cache.get("t") == "v" and await cache.get("forever") == "v"
        await cache.set("short", "v", ttl=1)
        with clock_offset(2_000):
            assert await cache.get("short") is None and not await cache.exists("short")

    run(go())


def test_clear_a_namespace_or_everything(cache, location):
    other = SharedMemoryCache(location=location, size="8MB", max_item_size="64KB", namespace="other:")

    async def go():
        await cache.set("k", 1)
        await other.set("k", 2)
        assert await cache.clear(namespace="app:") is True
        assert await cache.get("k") is None and await other.get("k") == 2
        await cache.set("k", 1)
        await cache.clear()  # no namespace: the whole cache, as Memory and Redis
        assert await cache.get("k") is None and await other.get("k") is None

    run(go())


def test_serializers_as_given(location):
    async def go():
        js = SharedMemoryCache(location=location, size="8MB", serializer=JsonSerializer())
        await js.set("t", (1, 2))
        assert await js.get("t") == [1, 2], "JSON really used: a tuple comes back a list"
        pk = SharedMemoryCache(location=location, size="8MB", serializer=PickleSerializer())
        await pk.set("p", (1, 2))
        assert await pk.get("p") == (1, 2) and isinstance(pk._cache.get("p"), bytes)

    run(go())


def _increments(location, n):
    async def go():
        c = SharedMemoryCache(location=location, size="8MB", namespace="app:")
        for _ in range(n):
            await c.increment("hits")

    asyncio.run(go())


def test_increment_is_atomic_across_four_processes(cache, location, run_forked):
    run_forked(_increments, [(location, 500)] * 4)
    assert run(cache.get("hits")) == 2000
    assert run(cache.increment("hits", -1000)) == 1000
    assert run(cache.increment("new", 5)) == 5, "a missing key starts with the delta"

    async def not_int():
        await cache.set("s", "text")
        await cache.increment("s")

    with pytest.raises(TypeError, match="not an integer"):
        run(not_int())


def test_optimistic_lock_and_redlock(cache):
    async def go():
        await cache.set("doc", {"v": 1})
        async with OptimisticLock(cache, "doc") as lock:
            await lock.cas({"v": 2})
        assert await cache.get("doc") == {"v": 2}
        with pytest.raises(OptimisticLockError):
            async with OptimisticLock(cache, "doc") as lock:
                await cache.set("doc", {"v": 3})  # someone else wrote meanwhile
                await lock.cas({"v": 4})
        assert await cache.get("doc") == {"v": 3}
        async with RedLock(cache, "resource", lease=5):
            assert await cache.exists("resource-lock")
        assert not await cache.exists("resource-lock"), "released: the lock's own value matched"

    run(go())


def test_bad_options_are_named(location):
    with pytest.raises(TypeError, match=r"SharedMemoryCache: unknown option\(s\) 'sise'"):
        SharedMemoryCache(location=location, sise="1MB")
    with pytest.raises(ValueError, match="invalid size"):
        SharedMemoryCache(location=location, size=-1)
