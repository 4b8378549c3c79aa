"""The one client behind both faces: its error policy, option parsing, key
rules of the Django face, and the fixes the structure review asked for."""

import logging
import re
import warnings

import pytest

import shmcache
from devkit import ROOT
from devkit.lock_holder import hold_shard_lock
from shmcache.client import Cache

SIZE, MAX_ITEM = "8MB", "64KB"

@pytest.fixture
def held_shard(location):
    """``held_shard(key)`` starts a process that holds the lock of `key`'s
    shard (paused mid-write) and returns once it does; killed afterwards."""
    procs = []

    def hold(key):
        procs.append(hold_shard_lock(location, key, SIZE, MAX_ITEM, 60_000))
        return procs[-1]

    yield hold
    for p in procs:
        p.kill()
        p.wait()


def _split(c, key, n=400, prefix=""):
    """Keys on `key`'s shard and keys on other shards."""
    shard = c._core.shard_of(prefix + key)
    keys = [f"k{i}" for i in range(n)]
    same = [k for k in keys if c._core.shard_of(prefix + k) == shard]
    other = [k for k in keys if c._core.shard_of(prefix + k) != shard]
    assert same and other
    return same, other


# ---------------------------------------------------------------- error policy


def test_get_many_that_times_out_raises_like_get(location, held_shard):
    c = Cache(location, size=SIZE, max_item_size=MAX_ITEM, lock_timeout=0.05)
    same, other = _split(c, "victim")
    c.set_many({k: k for k in same + other})
    held_shard("victim")
    with pytest.raises(shmcache.LockTimeout):
        c.get(same[0])
    with pytest.raises(shmcache.LockTimeout) as ei:
        c.get_many(same + other)
    assert f"{len(same)} of {len(same) + len(other)} keys" in str(ei.value)
    assert c.get_many(other) == {k: k for k in other}  # other shards are not affected


def test_logging_client_answers_a_timed_out_get_many_with_what_it_read(location, held_shard, caplog):
    c = Cache(location, size=SIZE, max_item_size=MAX_ITEM, lock_timeout=0.05, on_error="log")
    same, other = _split(c, "victim")
    c.set_many({k: k for k in same + other})
    held_shard("victim")
    with caplog.at_level(logging.WARNING, logger="shmcache"):
        assert c.get_many(same + other) == {k: k for k in other}
        assert c.get(same[0], "dflt") == "dflt"
        assert c.set(same[0], "new") is False
        assert c.delete(same[0]) is False
        assert c.has_key(same[0]) is False
        assert c.ttl(same[0]) == 0
    msgs = [r.getMessage() for r in caplog.records]
    assert any(f"{len(same)} of" in m and "LOCK_TIMEOUT" in m for m in msgs), msgs
    assert sum("LOCK_TIMEOUT" in m for m in msgs) >= 6, msgs
    with pytest.raises(shmcache.LockTimeout):  # a count is never lost silently
        c.incr(same[0])


def test_django_get_many_that_times_out_is_logged_and_partial(django_cache, location, held_shard, caplog):
    c = django_cache
    same, other = _split(c._cache, "victim", prefix=":1:")
    c.set_many({k: k for k in same + other})
    held_shard(":1:victim")
    with caplog.at_level(logging.WARNING, logger="shmcache"):
        assert c.get_many(same + other) == {k: k for k in other}
    assert any("keys not read" in r.getMessage() for r in caplog.records)


def test_django_incr_version_does_not_make_a_value_permanent_when_the_read_times_out(
    django_cache, location, held_shard
):
    c = django_cache
    same, _ = _split(c._cache, "victim", prefix=":1:")
    c.set(same[0], "v", timeout=60)
    held_shard(":1:victim")
    with pytest.raises(ValueError, match="not found"):
        c.incr_version(same[0])  # the read timed out: a miss, nothing stored
    assert c.get(same[0], version=2) is None


def test_bad_on_error_names_the_option(location):
    with pytest.raises(ValueError, match="on_error"):
        Cache(location, size=SIZE, max_item_size=MAX_ITEM, on_error="ignore")


# ---------------------------------------------------------------- rename / incr_version


def test_rename_moves_value_and_time_left(cache):
    cache.set("a", {"x": 1}, timeout=100)
    assert cache.rename("a", "b") is True
    assert "a" not in cache and cache.get("b") == {"x": 1}
    assert 98 < cache.ttl("b") <= 100
    cache.set("p", 5, timeout=None)
    assert cache.rename("p", "q") and cache.ttl("q") is None and cache.incr("q") == 6
    assert cache.rename("missing", "z") is False and "z" not in cache


def test_rename_of_an_expired_key_is_a_miss(cache, clock_offset):
    cache.set("a", "v", timeout=5)
    with clock_offset(6_000):
        assert cache.rename("a", "b") is False
        assert "b" not in cache


def test_incr_version_keeps_the_time_left_and_never_makes_it_permanent(django_cache, clock_offset):
    c = django_cache
    c.set("k", "v", timeout=10)
    with clock_offset(9_000):
        assert c.incr_version("k") == 2
        assert 0 < c.ttl("k", version=2) <= 1
    with clock_offset(10_500):
        assert c.get("k", version=2) is None, "the copy outlived the original's expiry"
    c.set("k", "v", timeout=10)
    with clock_offset(11_000):  # expired before incr_version: not found, nothing stored
        with pytest.raises(ValueError):
            c.incr_version("k")
        assert c.get("k", version=2) is None


# ---------------------------------------------------------------- the Django face's key rules


def test_subclass_make_key_is_honoured(django_settings, location):
    from shmcache.django import SharedMemoryCache

    class Upper(SharedMemoryCache):
        def make_key(self, key, version=None):
            return "U:" + str(key).upper()

    c = Upper(location, {"OPTIONS": {"SIZE": SIZE, "MAX_ITEM_SIZE": MAX_ITEM}})
    c.set("abc", 1)
    plain = Cache(location, size=SIZE, max_item_size=MAX_ITEM)
    assert plain.get("U:ABC") == 1
    assert c.get("ABC") == 1  # the same made key
    c.set_many({"x": 2})
    assert plain.get("U:X") == 2 and c.get_many(["x"]) == {"x": 2}
    assert c.incr("abc") == 2


def test_subclass_validate_key_is_honoured(django_settings, location):
    from shmcache.django import SharedMemoryCache

    class Strict(SharedMemoryCache):
        def validate_key(self, key):
            if "bad" in key:
                raise ValueError(f"refused key {key}")

    c = Strict(location, {"OPTIONS": {"SIZE": SIZE, "MAX_ITEM_SIZE": MAX_ITEM}})
    c.set("good", 1)
    with pytest.raises(ValueError, match="refused"):
        c.set("bad", 1)


def test_key_function_is_honoured(django_settings, location):
    from shmcache.django import SharedMemoryCache

    c = SharedMemoryCache(
        location,
        {"KEY_FUNCTION": lambda key, prefix, version: f"kf-{prefix}-{version}-{key}", "KEY_PREFIX": "p",
         "OPTIONS": {"SIZE": SIZE, "MAX_ITEM_SIZE": MAX_ITEM}},
    )
    c.set("a", 1)
    assert Cache(location, size=SIZE, max_item_size=MAX_ITEM).get("kf-p-1-a") == 1


def test_inline_keys_still_warn_like_validate_key(django_cache):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        django_cache.set("has space", 1)
        django_cache.set("x" * 300, 1)
    assert len(w) == 2


def test_django_face_calls_only_the_client():
    src = (ROOT / "python/shmcache/django.py").read_text()
    assert "_core" not in src


# ---------------------------------------------------------------- options, names, version


def test_from_options_names_the_django_key(location):
    with pytest.raises(ValueError, match=r"invalid SIZE:"):
        Cache.from_options(location, {"SIZE": "lots"})
    c = Cache.from_options(location, {"SIZE": SIZE, "MAX_ITEM_SIZE": MAX_ITEM, "LOCK_TIMEOUT": 0.5})
    assert c.settings.lock_timeout == 0.5 and c.settings.size == 8 * 2**20


@pytest.mark.parametrize("lock_timeout", [float("nan"), float("inf"), -1.0])
def test_core_refuses_a_non_finite_lock_timeout(location, lock_timeout):
    from shmcache import _core

    with pytest.raises(ValueError, match="LOCK_TIMEOUT"):
        _core.Cache(location, 8 * 2**20, 64 * 1024, 0, lock_timeout)


def test_location_limit_is_200_bytes_of_utf8(location):
    ok = "é" * 100  # 200 bytes
    for call in (lambda n: Cache(n, size=SIZE, max_item_size=MAX_ITEM), shmcache.segment_name):
        with pytest.raises(ValueError, match="200 bytes"):
            call("é" * 101)
    try:
        Cache(ok, size=SIZE, max_item_size=MAX_ITEM).set("k", 1)
        assert Cache(ok, size=SIZE, max_item_size=MAX_ITEM).get("k") == 1
    finally:
        shmcache.destroy(ok)


def test_version_is_the_one_in_cargo_toml():
    cargo = re.search(r'(?m)^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text()).group(1)
    assert shmcache.__version__ == cargo
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", cargo)


@pytest.mark.parametrize("delta", [True, 1.0, "1"], ids=repr)
def test_incr_and_decr_check_delta_alike(cache, delta):
    cache.set("n", 5)
    for op in (cache.incr, cache.decr):
        with pytest.raises(TypeError, match="delta"):
            op("n", delta)
    assert cache.get("n") == 5


def test_the_error_policy_refuses_a_fallback_every_caller_would_share():
    """A fallback is one object returned on every failure: a mutable one
    (a dict a caller then fills) would leak into the next caller's answer."""
    from shmcache._api import on_error

    with pytest.raises(TypeError, match="mutable fallback .dict. would be shared by every caller; use answer="):
        on_error({})
    fresh = on_error(answer=lambda keys: {})

    class Failing:
        def _failed(self, e, answer):
            return answer

        @fresh
        def get_many(self, keys):
            raise shmcache.ShmCacheError("unusable segment")

    c = Failing()
    first = c.get_many(["a"])
    first["a"] = 1
    assert c.get_many(["a"]) == {} and c.get_many(["a"]) is not first
