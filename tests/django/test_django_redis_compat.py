"""Code written for django-redis, run on shmcache: set(nx=), incr beyond 64
bits and with ignore_key_check, delete_many's count, the expire family,
SERIALIZER/COMPRESSOR and django-redis's option names. Real processes where
the point is sharing (fork), no mocks. (Locks: tests/client/test_locks.py;
get_or_set and memoize: tests/client/test_get_or_set.py; key iteration:
tests/client/test_key_iteration.py.)"""

import datetime
import multiprocessing
import time

import pytest

import shmcache
from tests.conftest import django_backend

FORK = multiprocessing.get_context("fork")
OPTIONS = {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB"}



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
    a = django_backend(location, KEY_PREFIX="a")
    b = django_backend(location, KEY_PREFIX="b")
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


# ---------------------------------------------------------------- get_or_set single flight, memoize


# ---------------------------------------------------------------- SERIALIZER, COMPRESSOR, django-redis options


@pytest.mark.parametrize("serializer", ["pickle", "json", "msgpack", "django_redis.serializers.json.JSONSerializer"])
@pytest.mark.parametrize("compressor", [None, "zlib", "lzma", "zstd", "lz4", "django_redis.compressors.zlib.ZlibCompressor"])
def test_serializers_and_compressors_round_trip(django_settings, location, serializer, compressor):
    c = django_backend(location, OPTIONS={**OPTIONS, "SERIALIZER": serializer, "COMPRESSOR": compressor, "COMPRESS_MIN_LENGTH": 10})
    values = {"d": {"a": [1, 2, "x"], "b": None}, "s": "text " * 100, "b": b"\x00" * 500, "i": 7, "big": 2**80}
    c.set_many(values)
    assert c.get_many(list(values)) == values
    assert c.incr("i") == 8, "native ints stay native (atomic incr) whatever the serializer"
    assert c._cache._core.get(c.make_key("i")) == 8


def test_json_serializer_refuses_pickled_values(django_settings, location):
    pickled = django_backend(location)
    pickled.set("obj", {1, 2})  # a set: pickled
    js = django_backend(location, OPTIONS={**OPTIONS, "SERIALIZER": "json"})
    assert js.get("obj", "default") == "default", "a JSON cache must not unpickle"
    with pytest.raises(TypeError):
        js.set("obj", {1, 2})  # not JSON-serializable: a clear error, nothing stored


def test_compression_shrinks_what_is_stored(django_settings, location):
    c = django_backend(location, OPTIONS={**OPTIONS, "COMPRESSOR": "zlib"})
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
        django_backend(location, OPTIONS={**OPTIONS, **options})
    if word == "CLIENT_CLASS":
        assert "remove" in str(ei.value)
    assert not shmcache.destroy(location), "nothing was created"


