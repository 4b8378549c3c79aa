"""Key iteration as django-redis users write it: keys, iter_keys and
delete_pattern with Redis globs within KEY_PREFIX and VERSION, and the
exactly-once guarantee while other processes write."""

import multiprocessing

import pytest

import shmcache
from tests.conftest import django_backend

FORK = multiprocessing.get_context("fork")



def test_keys_iter_keys_delete_pattern_within_prefix_and_version(django_settings, location):
    a = django_backend(location, KEY_PREFIX="site")
    other = django_backend(location, KEY_PREFIX="other")
    a.set_many({"user:1": 1, "user:2": 2, "user:10": 10, "post:1": 0, "u*x": 9})
    a.set("user:3", 3, version=2)
    other.set("user:1", "theirs")
    assert sorted(a.keys("user:*")) == ["user:1", "user:10", "user:2"]
    assert sorted(a.keys("user:?")) == ["user:1", "user:2"]
    assert sorted(a.keys("user:[12]")) == ["user:1", "user:2"]
    assert sorted(a.keys("user:[^1]")) == ["user:2"]
    assert a.keys("u\\*x") == ["u*x"]
    assert sorted(a.keys("*")) == ["post:1", "u*x", "user:1", "user:10", "user:2"]
    assert a.keys("user:*", version=2) == ["user:3"]
    assert sorted(a.iter_keys("user:*", itersize=2)) == ["user:1", "user:10", "user:2"]
    assert a.delete_pattern("user:*") == 3
    assert a.keys("user:*") == [] and a.get("post:1") == 0 and a.get("user:3", version=2) == 3
    assert other.get("user:1") == "theirs", "another prefix is not touched"
    assert a.delete_pattern("nothing*") == 0


def test_plain_api_key_iteration(cache):
    cache.set_many({f"k{i}": i for i in range(300)})
    cache.set(b"raw", 1)
    assert len(cache.keys("k*")) == 300
    assert cache.delete_pattern("k1*", itersize=7) == len([i for i in range(300) if str(i).startswith("1")])
    with pytest.raises(ValueError, match="itersize"):
        list(cache.iter_keys("*", itersize=0))
    with pytest.raises(TypeError, match="pattern"):
        cache.keys(b"k*")


def test_flight_and_lock_internals_are_not_listed(django_cache):
    with django_cache.lock("job"):
        assert django_cache.keys("*") == ["job"]  # the lock is a key while held
        assert django_cache.has_key("job")
    assert django_cache.keys("*") == []


def _churn(location, stop, started):
    c = shmcache.Cache(location, size="8MB", max_item_size="64KB")
    i = 0
    started.set()
    while not stop.is_set():
        c.set(f"churn:{i % 500}", b"x" * (i % 300))  # new sizes: appended, old records dead
        c.set(f"stay:{i % 200}", b"y" * 40)  # same size: in place
        c.delete(f"churn:{(i * 7) % 500}")
        i += 1


def test_iter_keys_during_concurrent_writes_is_exactly_once(cache, location):
    stay = {f"stay:{i}" for i in range(200)}
    cache.set_many(dict.fromkeys(stay, b"y" * 40))
    stop, started = FORK.Event(), FORK.Event()
    p = FORK.Process(target=_churn, args=(location, stop, started))
    p.start()
    try:
        assert started.wait(10)
        for _ in range(20):
            got = list(cache.iter_keys("*", itersize=50))
            assert len(got) == len(set(got)), "a key was returned twice"
            assert stay <= set(got), f"keys present throughout were missed: {sorted(stay - set(got))[:5]}"
    finally:
        stop.set()
        p.join(10)
    assert p.exitcode == 0




def test_async_key_iteration(django_cache):
    import asyncio

    async def main():
        await django_cache.aset("k", 1)
        assert await django_cache.akeys("k*") == ["k"]
        assert [k async for k in django_cache.aiter_keys("*")] == ["k"]
        assert await django_cache.adelete_pattern("k") == 1

    asyncio.run(main())
