"""shmcache's cachelib face beyond cachelib's own mixins (which run in
test_cachelib_suite.py): an assigned serializer really used (the mixins
cannot tell: pickle round-trips the same values), ints native so inc stays
atomic across processes, clear() within the key prefix, bad options named;
and every face's ImportError naming its extra."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from cachelib.serializers import JSONSerializer

import shmcache
from shmcache.cachelib import SharedMemoryCache


def make(location, **kw):
    return SharedMemoryCache(location, size="8MB", max_item_size="64KB", **kw)


def test_an_assigned_serializer_is_used_and_ints_stay_native(location):
    c = make(location)
    c.serializer = JSONSerializer()
    assert c.set("t", (1, 2)) and c.get("t") == [1, 2], "through JSON: a tuple comes back a list"
    assert c._cache.get("t") == b"[1, 2]", "stored as the serializer wrote it"
    assert c.set("n", 5) and c._cache.get("n") == 5, "an exact int is stored natively"
    assert c.inc("n", 3) == 8 and c.get("n") == 8
    assert c.get_many("t", "n", "zz") == [[1, 2], 8, None]


def _inc(location, n):
    c = make(location, key_prefix="p:")
    c.serializer = JSONSerializer()
    for _ in range(n):
        c.inc("count")


def test_inc_is_atomic_across_processes(location, run_forked):
    run_forked(_inc, [(location, 500)] * 4)
    assert make(location, key_prefix="p:").get("count") == 2000


def test_timeouts_zero_never_timedelta_and_default(location, clock_offset):
    c = make(location, default_timeout=10)
    c.set("zero", 1, timeout=0)
    c.set("td", 1, timeout=timedelta(seconds=100))
    c.set("default", 1)
    with clock_offset(50_000):
        assert c.get("zero") == 1 and c.get("td") == 1 and c.get("default") is None
    with clock_offset(10_000_000):
        assert c.get("zero") == 1 and c.get("td") is None


def test_clear_with_a_key_prefix_clears_that_prefix_only(location):
    a, b, bare = make(location, key_prefix="a:"), make(location, key_prefix="b:"), make(location)
    a.set("k", 1)
    b.set("k", 2)
    assert a.clear() and a.get("k") is None and b.get("k") == 2
    assert bare.clear() and b.get("k") is None, "no prefix: the whole cache"


def test_delete_many_counts_missing_keys_as_deleted(location):
    c = make(location, key_prefix="x:")
    c.set("a", 1)
    assert c.delete_many("a", "missing") == ["a", "missing"] and not c.has("a")


def test_bad_options_are_named_and_store_nothing(location):
    with pytest.raises(TypeError, match=r"SharedMemoryCache: unknown option\(s\) 'max_entries'"):
        SharedMemoryCache(location, max_entries=10)
    with pytest.raises(TypeError, match="option 'serializer' is not taken here; assign cache.serializer"):
        SharedMemoryCache(location, serializer="json")
    with pytest.raises(ValueError, match="invalid size"):
        SharedMemoryCache(location, size="huge")
    with pytest.raises(TypeError, match="key_prefix"):
        SharedMemoryCache(location, key_prefix=5)
    assert not os.path.exists("/dev/shm" + shmcache.segment_name(location)), "no segment made"


@pytest.mark.parametrize("face, missing, extra", [
    ("shmcache.cachelib", "cachelib", "shmcache[flask]"),
    ("shmcache.litestar", "litestar", "shmcache[litestar]"),
    ("shmcache.fastapi_cache", "fastapi_cache", "shmcache[fastapi]"),
    ("shmcache.aiocache", "aiocache", "shmcache[aiocache]"),
])  # fmt: skip
def test_a_face_whose_stack_is_missing_names_its_extra(face, missing, extra):
    code = f"import sys; sys.modules[{missing!r}] = None\ntry:\n    import {face}\nexcept ImportError as e:\n    print(e)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and extra in p.stdout, p.stdout + p.stderr
