"""shmcache.django.SharedMemoryCache: behaviour beyond Django's own BaseCacheTests
(those run in test_django_suite.py)."""

import asyncio
import importlib
import logging
import sys
import uuid

import pytest

import shmcache

OPTIONS = {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB"}
TOO_BIG = b"x" * (64 * 1024 + 1)


def backend(location, **params):
    from shmcache.django import SharedMemoryCache

    params.setdefault("OPTIONS", dict(OPTIONS))
    return SharedMemoryCache(location, params)


# ---------------------------------------------------------------- configuration


def test_caches_handler_builds_the_backend(django_settings):
    from django.core.cache import caches

    from shmcache.django import SharedMemoryCache

    c = caches["default"]
    assert isinstance(c, SharedMemoryCache)
    c.set("handler-key", {"a": 1})
    assert c.get("handler-key") == {"a": 1}
    assert c.delete("handler-key") is True


def test_unknown_option_names_it(django_settings, location):
    with pytest.raises(ValueError) as ei:
        backend(location, OPTIONS={**OPTIONS, "SIZZE": "1MB"})
    assert "SIZZE" in str(ei.value)
    assert not shmcache.destroy(location)  # nothing was created


def test_ignored_culling_options_are_accepted(django_settings, location):
    c = backend(location, OPTIONS={**OPTIONS, "MAX_ENTRIES": 10, "CULL_FREQUENCY": 2})
    c.set("k", 1)
    assert c.get("k") == 1


@pytest.mark.parametrize(
    "options, option",
    [
        ({"SIZE": "abc"}, "SIZE"),
        ({"SIZE": -5}, "SIZE"),
        ({"SIZE": "1MB", "MAX_ITEM_SIZE": "1MB"}, "SIZE"),
        ({"MAX_ITEM_SIZE": 0}, "MAX_ITEM_SIZE"),
        ({"LOCK_TIMEOUT": 0}, "LOCK_TIMEOUT"),
        ({"SHARDS": -1}, "SHARDS"),
        ({"PICKLE_PROTOCOL": 99}, "PICKLE_PROTOCOL"),
    ],
    ids=repr,
)
def test_bad_option_value_names_it(django_settings, location, options, option):
    with pytest.raises(ValueError) as ei:
        backend(location, OPTIONS={**OPTIONS, **options})
    msg = str(ei.value)
    assert f"invalid {option}:" in msg, msg


@pytest.mark.parametrize("loc", ["", "a\0b"], ids=repr)
def test_bad_location(django_settings, loc):
    with pytest.raises(ValueError) as ei:
        backend(loc)
    assert "LOCATION" in str(ei.value)


def test_another_size_shares_the_segment_in_use(django_cache, location):
    # A deploy with a new SIZE while old workers run: no error, one cache.
    django_cache.set("k", "v")
    other = backend(location, OPTIONS={**OPTIONS, "SIZE": "16MB"})
    assert other.get("k") == "v"
    other.delete("k")
    assert django_cache.get("k") is None


# ---------------------------------------------------------------- undecodable values


@pytest.fixture
def vanishing_module(tmp_path):
    """A module that can be imported now and not after `gone()` is called."""
    name = f"shmcache_tmp_{uuid.uuid4().hex}"
    path = tmp_path / f"{name}.py"
    path.write_text("class Thing:\n    def __init__(self, n):\n        self.n = n\n")
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    mod = importlib.import_module(name)

    def gone():
        sys.modules.pop(name, None)
        sys.path.remove(str(tmp_path))
        path.unlink()
        importlib.invalidate_caches()
        with pytest.raises(ImportError):
            importlib.import_module(name)

    mod.gone = gone
    try:
        yield mod
    finally:
        sys.modules.pop(name, None)
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))


def test_value_that_cannot_be_unpickled_is_a_miss_and_dropped(django_cache, vanishing_module, caplog):
    django_cache.set("obj", vanishing_module.Thing(7))
    django_cache.set("fine", "ok")
    assert django_cache.get("obj").n == 7
    vanishing_module.gone()

    assert django_cache.has_key("obj")  # still there: has_key does not unpickle
    with caplog.at_level(logging.WARNING, logger="shmcache"):
        assert django_cache.get("obj", "default") == "default"
    assert any("obj" in r.getMessage() for r in caplog.records)
    assert not django_cache.has_key("obj")  # dropped
    assert django_cache.stats()["items"] == 1
    assert django_cache.get("fine") == "ok"


def test_get_many_skips_and_drops_undecodable_values(django_cache, vanishing_module):
    django_cache.set_many({"a": vanishing_module.Thing(1), "b": 2, "c": vanishing_module.Thing(3)})
    vanishing_module.gone()
    assert django_cache.get_many(["a", "b", "c"]) == {"b": 2}
    assert not django_cache.has_key("a") and not django_cache.has_key("c")
    assert django_cache.get_or_set("a", "fresh") == "fresh"
    assert django_cache.get("a") == "fresh"


# ---------------------------------------------------------------- shared store


def test_int_is_stored_natively(django_cache):
    django_cache.set("n", 41)
    k = django_cache.make_and_validate_key("n")
    value = django_cache._cache._core.get(k)  # a native int comes back as int, not (encoding, bytes)
    assert type(value) is int and value == 41
    assert django_cache.incr("n") == 42
    django_cache.set("big", 2**64)  # beyond 64 bits: native too (ENC_BIGINT), still an int
    assert django_cache.get("big") == 2**64
    assert django_cache.incr("big") == 2**64 + 1
    django_cache.set("float", 1.0)
    with pytest.raises(TypeError):
        django_cache.incr("float")


def _incr_loop(cache, n):
    for _ in range(n):
        cache.incr("hits")


def test_two_instances_on_one_location_incr_atomically(django_settings, location, run_forked):
    a = backend(location)
    b = backend(location, OPTIONS={**OPTIONS, "LOCK_TIMEOUT": 1})  # a separate mapping
    a.set("hits", 0)
    assert b.incr("hits") == 1
    assert a.get("hits") == 1
    run_forked(_incr_loop, [(c, 1500) for c in (a, b, a, b)], meanwhile=lambda: _incr_loop(b, 1500))
    assert a.get("hits") == b.get("hits") == 1 + 5 * 1500


def test_key_prefix_and_version_aliases_share_one_segment(django_settings, location):
    a = backend(location, KEY_PREFIX="a")
    b = backend(location, KEY_PREFIX="b")
    v2 = backend(location, KEY_PREFIX="a", VERSION=2)
    a.set("k", "from a")
    assert b.get("k") is None
    assert v2.get("k") is None
    b.set("k", "from b")
    v2.set("k", "from a v2")
    assert a.get("k") == "from a"
    assert b.get("k") == "from b"
    assert v2.get("k") == "from a v2"
    assert a.get("k", version=2) == "from a v2"
    assert a.stats()["items"] == b.stats()["items"] == 3
    assert a.stats()["segment"] == b.stats()["segment"]
    b.delete("k")
    assert a.get("k") == "from a"
    a.clear()  # one store: clear empties it for every alias
    assert v2.get("k") is None
    assert b.stats()["items"] == 0


# ---------------------------------------------------------------- too large


def test_set_many_with_one_oversize_value(django_cache, caplog):
    django_cache.set("big", "old")
    with caplog.at_level(logging.WARNING, logger="shmcache"):
        failed = django_cache.set_many({"a": 1, "big": TOO_BIG, "c": "three"})
    assert failed == ["big"]
    assert django_cache.get_many(["a", "big", "c"]) == {"a": 1, "c": "three"}
    assert caplog.records


def test_set_oversize_removes_old_value(django_cache, caplog):
    django_cache.set("big", "old")
    django_cache.set("other", "kept")
    with caplog.at_level(logging.WARNING, logger="shmcache"):
        assert django_cache.set("big", TOO_BIG) is None  # Django's set returns None
    assert django_cache.get("big") is None
    assert django_cache.get("other") == "kept"
    assert django_cache.add("big", TOO_BIG) is False
    assert not django_cache.has_key("big")
    assert any("big" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- async


def test_async_methods(django_cache):
    async def main():
        c = django_cache
        await c.aset("a", "A")
        assert await c.aget("a") == "A"
        assert await c.aget("missing", "dflt") == "dflt"
        assert await c.aadd("a", "other") is False
        assert await c.aadd("n", 10) is True
        assert await c.aincr("n", 5) == 15
        assert await c.adecr("n", 3) == 12
        assert await c.aset_many({"x": 1, "y": [2], "z": TOO_BIG}) == ["z"]
        assert await c.aget_many(["x", "y", "z", "a"]) == {"x": 1, "y": [2], "a": "A"}
        assert await c.ahas_key("x") is True
        assert await c.ahas_key("z") is False
        assert await c.atouch("x", 100) is True
        assert await c.atouch("missing", 100) is False
        assert 99 < c.ttl("x") <= 100
        await c.adelete_many(["x", "y"])
        assert await c.aget_many(["x", "y"]) == {}
        assert await c.aget_or_set("g", lambda: "computed") == "computed"
        assert await c.aget_or_set("g", "ignored") == "computed"
        assert await c.adelete("g") is True
        assert await c.aincr_version("a") == 2
        assert await c.aget("a", version=2) == "A"
        await c.aclear()
        assert await c.aget("a", version=2) is None
        assert c.stats()["items"] == 0
        await c.aclose()
        return "done"

    assert asyncio.run(main()) == "done"


# ---------------------------------------------------------------- versions, ttl, timeouts


def test_incr_version_keeps_value_and_expiry(django_cache):
    django_cache.set("k", {"v": 1}, timeout=100)
    assert django_cache.incr_version("k") == 2
    assert django_cache.get("k") is None
    assert django_cache.get("k", version=2) == {"v": 1}
    assert 98 < django_cache.ttl("k", version=2) <= 100
    assert django_cache.decr_version("k", version=2) == 1
    assert django_cache.get("k") == {"v": 1}
    assert django_cache.get("k", version=2) is None
    with pytest.raises(ValueError):
        django_cache.incr_version("missing")


def test_incr_version_of_int_still_incrs(django_cache):
    django_cache.set("n", 5, timeout=None)
    django_cache.incr_version("n")
    assert django_cache.ttl("n", version=2) is None
    assert django_cache.incr("n", version=2) == 6


def test_ttl(django_cache):
    assert django_cache.ttl("missing") == 0
    django_cache.set("forever", 1, timeout=None)
    assert django_cache.ttl("forever") is None
    django_cache.set("timed", 1, timeout=60)
    t = django_cache.ttl("timed")
    assert isinstance(t, float) and 59 < t <= 60
    django_cache.set("default", 1)  # TIMEOUT defaults to 300 in Django
    assert 299 < django_cache.ttl("default") <= 300


def test_timeout_none_never_expires(django_cache, clock_offset):
    django_cache.set("never", "v", timeout=None)
    django_cache.set("soon", "v", timeout=10)
    with clock_offset(20 * 365 * 86400 * 1000):
        assert django_cache.get("never") == "v"
        assert django_cache.get("soon") is None


def test_timeout_zero_is_not_stored(django_cache):
    django_cache.set("k", "old")
    django_cache.set("k", "new", timeout=0)
    assert django_cache.get("k", "miss") == "miss"
    django_cache.set("neg", "v", timeout=-1)
    assert not django_cache.has_key("neg")
    assert django_cache.set_many({"a": 1}, timeout=0) == []
    assert django_cache.get("a") is None


def test_backend_timeout_option(django_settings, location, clock_offset):
    never = backend(location, TIMEOUT=None)
    never.set("k", 1)
    assert never.ttl("k") is None
    short = backend(location, TIMEOUT=2)  # BaseCache makes TIMEOUT an int
    short.set("s", 1)
    assert 1 < short.ttl("s") <= 2
    with clock_offset(2500):
        assert short.get("s") is None
        assert never.get("k") == 1
