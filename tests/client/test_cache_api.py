"""The plain Python API: shmcache.Cache."""

import logging
import multiprocessing
import pickle
import re
import threading
import time
from collections import OrderedDict
from decimal import Decimal

import pytest

import shmcache

SIZE, MAX_ITEM = "8MB", "64KB"
TOO_BIG = b"x" * (64 * 1024 + 1)


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x00\xffbinary",
        "",
        "héllo wörld ✓",
        0,
        -1,
        2**63 - 1,
        -(2**63),
        1.5,
        Decimal("1.10"),
    ],
    ids=repr,
)
def test_scalar_round_trip(cache, value):
    assert cache.set("k", value) is True
    got = cache.get("k")
    assert got == value
    assert type(got) is type(value)


def test_none_is_distinct_from_a_miss(cache):
    sentinel = object()
    assert cache.get("k", sentinel) is sentinel
    assert cache.set("k", None) is True
    assert cache.get("k", sentinel) is None
    assert cache.has_key("k")
    assert "k" in cache
    assert cache.get_many(["k", "missing"]) == {"k": None}


@pytest.mark.parametrize(
    "value",
    [True, False, (1, 2), (), [1, (2, 3)], {"a": [1, 2, {"b": (3,)}]}, {1, 2}, frozenset({3}),
     bytearray(b"ab"), OrderedDict(a=1), 2**64, -(2**63) - 1, 10**100],
    ids=repr,
)
def test_exact_types_round_trip(cache, value):
    cache.set("k", value)
    got = cache.get("k")
    assert got == value
    assert type(got) is type(value)


def test_nested_picklable_objects(cache):
    value = {"points": [Point(1, 2), Point(3, 4)], "meta": (None, 1.5, "s", b"b")}
    cache.set("k", value)
    got = cache.get("k")
    assert got == value
    assert got is not value
    assert type(got["meta"]) is tuple


class TaggedStr(str):
    pass


class TaggedInt(int):
    pass


@pytest.mark.parametrize("value", [TaggedStr("x"), TaggedInt(5)], ids=repr)
def test_subclasses_keep_their_type(cache, value):
    cache.set("k", value)
    got = cache.get("k")
    assert type(got) is type(value) and got == value


def test_lone_surrogate_str_round_trips(cache):
    value = "a\ud800b"
    assert cache.set("k", value)
    assert cache.get("k") == value


# ---------------------------------------------------------------- basic ops


def test_add(cache):
    assert cache.add("k", "first") is True
    assert cache.add("k", "second") is False
    assert cache.get("k") == "first"


def test_add_after_expiry(cache, clock_offset):
    cache.set("k", "old", timeout=5)
    with clock_offset(6000):
        assert cache.add("k", "new") is True
        assert cache.get("k") == "new"


def test_delete(cache):
    cache.set("k", 1)
    assert cache.delete("k") is True
    assert cache.get("k", "miss") == "miss"
    assert cache.delete("k") is False


def test_has_key_and_in(cache):
    assert not cache.has_key("k")
    assert "k" not in cache
    cache.set("k", b"v")
    assert cache.has_key("k")
    assert "k" in cache
    assert b"k" in cache  # str keys are stored UTF-8 encoded


def test_touch(cache):
    assert cache.touch("missing", 10) is False
    cache.set("k", "v", timeout=1)
    assert cache.touch("k", 100) is True
    assert 99 < cache.ttl("k") <= 100
    assert cache.touch("k", None) is True
    assert cache.ttl("k") is None
    assert cache.get("k") == "v"


def test_touch_with_zero_or_negative_timeout_deletes(cache):
    cache.set("a", 1)
    cache.set("b", 2)
    cache.touch("a", 0)
    cache.touch("b", -1)
    assert "a" not in cache and "b" not in cache


# ---------------------------------------------------------------- incr/decr


def test_incr_decr(cache):
    cache.set("n", 10)
    assert cache.incr("n") == 11
    assert cache.incr("n", 5) == 16
    assert cache.decr("n") == 15
    assert cache.decr("n", 20) == -5
    assert cache.incr("n", -5) == -10
    assert cache.get("n") == -10
    assert type(cache.get("n")) is int


def test_incr_missing_raises_keyerror(cache):
    with pytest.raises(KeyError):
        cache.incr("missing")
    with pytest.raises(KeyError):
        cache.decr("missing")
    assert "missing" not in cache


def test_incr_expired_raises_keyerror(cache, clock_offset):
    cache.set("n", 1, timeout=5)
    with clock_offset(6000), pytest.raises(KeyError):
        cache.incr("n")


@pytest.mark.parametrize("value", ["5", b"5", 1.0, True, [1]], ids=repr)
def test_incr_non_int_raises_typeerror(cache, value):
    cache.set("v", value)
    with pytest.raises(TypeError):
        cache.incr("v")
    got = cache.get("v")
    assert got == value and type(got) is type(value)


def test_incr_past_int64(cache):
    cache.set("n", 2**63 - 1)
    assert cache.incr("n") == 2**63
    assert cache.get("n") == 2**63
    cache.set("m", -(2**63))
    assert cache.decr("m") == -(2**63) - 1
    assert cache.get("m") == -(2**63) - 1


def test_incr_keeps_the_expiry(cache):
    cache.set("n", 1, timeout=100)
    cache.incr("n")
    assert 99 < cache.ttl("n") <= 100


# ---------------------------------------------------------------- ttl and timeouts


def test_ttl(cache):
    assert cache.ttl("missing") == 0
    cache.set("forever", 1)
    assert cache.ttl("forever") is None
    cache.set("timed", 1, timeout=30)
    t = cache.ttl("timed")
    assert isinstance(t, float)
    assert 29 < t <= 30
    cache.set("short", 1, timeout=0.5)
    assert 0 < cache.ttl("short") <= 0.5


@pytest.mark.parametrize("timeout", [0, -1, -0.5])
def test_non_positive_timeout_does_not_store(cache, timeout):
    assert cache.set("new", "v", timeout=timeout) is False
    assert "new" not in cache
    cache.set("old", "v")
    assert cache.set("old", "v2", timeout=timeout) is False
    assert cache.get("old", "miss") == "miss"  # the old value is gone too
    assert cache.add("fresh", "v", timeout=timeout) is True
    assert "fresh" not in cache


def test_set_many_with_zero_timeout_removes_keys(cache):
    cache.set("a", 1)
    assert cache.set_many({"a": 2, "b": 3}, timeout=0) == []
    assert cache.get_many(["a", "b"]) == {}


def test_expiry_happens_in_real_time(cache):
    cache.set("k", "v", timeout=0.2)
    cache.set("keep", "v", timeout=30)
    assert cache.get("k") == "v"
    time.sleep(0.35)
    assert cache.get("k", "miss") == "miss"
    assert "k" not in cache
    assert cache.ttl("k") == 0
    assert cache.get("keep") == "v"


def test_expiry_with_clock_offset(cache, clock_offset):
    cache.set("short", "v", timeout=10)
    cache.set("long", "v", timeout=100)
    cache.set("never", "v", timeout=None)
    with clock_offset(11_000):
        assert cache.get("short", "miss") == "miss"
        assert cache.get_many(["short", "long"]) == {"long": "v"}
        assert 88 < cache.ttl("long") <= 89
    with clock_offset(10 * 365 * 86400 * 1000):
        assert cache.get("long", "miss") == "miss"
        assert cache.get("never") == "v"
        assert cache.ttl("never") is None


def test_default_timeout(location):
    c = shmcache.Cache(location, size=SIZE, max_item_size=MAX_ITEM, default_timeout=10)
    c.set("d", 1)
    c.set("n", 1, timeout=None)
    assert 9 < c.ttl("d") <= 10
    assert c.ttl("n") is None


@pytest.mark.parametrize("timeout", ["10", True, [1]], ids=repr)
def test_bad_timeout_type(cache, timeout):
    with pytest.raises(TypeError):
        cache.set("k", 1, timeout=timeout)
    assert "k" not in cache


# ---------------------------------------------------------------- many


def test_get_set_delete_many(cache):
    data = {"a": 1, "b": "two", b"c": b"three", "d": None, "e": [5]}
    assert cache.set_many(data) == []
    got = cache.get_many(["a", "b", b"c", "d", "e", "missing"])
    assert got == data
    assert set(got) == set(data)  # the caller's key objects come back
    assert cache.delete_many(["a", "b", "missing"]) == 2
    assert cache.get_many(["a", "b", b"c"]) == {b"c": b"three"}
    assert cache.get_many([]) == {}
    assert cache.set_many({}) == []


def test_set_many_with_timeout(cache):
    cache.set_many({"a": 1, "b": 2}, timeout=10)
    assert 9 < cache.ttl("a") <= 10
    assert 9 < cache.ttl("b") <= 10


# ---------------------------------------------------------------- too large


def test_value_too_large(cache, caplog):
    cache.set("big", "old")
    cache.set("other", "untouched")
    with caplog.at_level(logging.WARNING, logger="shmcache"):
        assert cache.set("big", TOO_BIG) is False
    assert any("big" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert cache.get("big", "miss") == "miss"  # the old value must not look current
    assert cache.get("other") == "untouched"


def test_value_just_fits(cache):
    key = "k"
    fits = b"x" * (64 * 1024 - len(key))
    assert cache.set(key, fits) is True
    assert cache.get(key) == fits
    assert cache.set(key, fits + b"x") is False


def test_add_too_large(cache, caplog):
    with caplog.at_level(logging.WARNING, logger="shmcache"):
        assert cache.add("big", TOO_BIG) is False
    assert "big" not in cache
    assert caplog.records


def test_set_many_too_large(cache, caplog):
    cache.set("big", "old")
    with caplog.at_level(logging.WARNING, logger="shmcache"):
        failed = cache.set_many({"a": 1, "big": TOO_BIG, "b": 2})
    assert failed == ["big"]
    assert cache.get_many(["a", "big", "b"]) == {"a": 1, "b": 2}
    assert caplog.records


# ---------------------------------------------------------------- clear, stats


def test_clear(cache):
    cache.set_many({f"k{i}": i for i in range(100)})
    assert cache.stats()["items"] == 100
    cache.clear()
    assert cache.stats()["items"] == 0
    assert cache.get_many([f"k{i}" for i in range(100)]) == {}
    assert cache.set("k0", "again")
    assert cache.get("k0") == "again"


def test_stats_counters_move(cache):
    s0 = cache.stats()
    cache.set("a", 1)
    cache.set("b", 2)
    cache.get("a")
    cache.get("missing")
    cache.get("missing2")
    s1 = cache.stats()
    assert s1["sets"] - s0["sets"] == 2
    assert s1["hits"] - s0["hits"] == 1
    assert s1["misses"] - s0["misses"] == 2
    assert s1["items"] == 2
    assert s1["max_item_size"] == 64 * 1024
    assert s1["bytes_used"] > 0
    assert s1["segment"] == shmcache.segment_name(cache.name)


# ---------------------------------------------------------------- keys


def test_short_long_and_unicode_keys(cache):
    keys = ["a", b"\x00", "k" * 300, b"\xff" * 300, "ключ", "鍵🔑", "a b\tc\n"]
    for i, k in enumerate(keys):
        assert cache.set(k, i)
    for i, k in enumerate(keys):
        assert cache.get(k) == i
    assert cache.get("k" * 299, "miss") == "miss"
    assert cache.get("k" * 301, "miss") == "miss"
    assert cache.get_many(keys) == {k: i for i, k in enumerate(keys)}


@pytest.mark.parametrize("key", [1, None, 1.5, ("a",), bytearray(b"a"), memoryview(b"a")], ids=repr)
def test_bad_key_types(cache, key):
    for call in (
        lambda: cache.get(key),
        lambda: cache.set(key, 1),
        lambda: cache.add(key, 1),
        lambda: cache.delete(key),
        lambda: cache.has_key(key),
        lambda: cache.touch(key, 1),
        lambda: cache.incr(key),
        lambda: cache.ttl(key),
        lambda: cache.get_many(["ok", key]),
        lambda: cache.set_many({"ok": 1, key: 2}),
        lambda: cache.delete_many(["ok", key]),
    ):
        with pytest.raises(TypeError):
            call()
    assert cache.stats()["items"] == 0


# ---------------------------------------------------------------- options


def _names(msg, option):
    return re.search(rf"(?<![A-Za-z_]){option}(?![A-Za-z_])", msg, re.I) is not None


@pytest.mark.parametrize(
    "kwargs, option",
    [
        (dict(size="lots"), "size"),
        (dict(size=-1), "size"),
        (dict(size=0), "size"),
        (dict(size="1MB", max_item_size="1MB"), "size"),
        (dict(max_item_size=0), "max_item_size"),
        (dict(max_item_size="big"), "max_item_size"),
        (dict(lock_timeout=0), "lock_timeout"),
        (dict(lock_timeout=-1), "lock_timeout"),
        (dict(shards=-1), "shards"),
        (dict(pickle_protocol=99), "pickle_protocol"),
        (dict(default_timeout="soon"), "default_timeout"),
    ],
    ids=repr,
)
def test_bad_options(location, kwargs, option):
    kwargs = {"size": SIZE, "max_item_size": MAX_ITEM, **kwargs}
    with pytest.raises(ValueError) as ei:
        shmcache.Cache(location, **kwargs)
    assert _names(str(ei.value), option), str(ei.value)


def test_size_too_small_names_size(location):
    with pytest.raises(ValueError) as ei:
        shmcache.Cache(location, size="1MB", max_item_size="1MB")
    msg = str(ei.value)
    assert re.search(r"(?<!_)SIZE", msg), msg
    assert re.search(r"\d+", msg)  # says how much is needed


@pytest.mark.parametrize("name", ["", "a\0b", None, 5, "x" * 201], ids=repr)
def test_bad_names(name):
    with pytest.raises(ValueError) as ei:
        shmcache.Cache(name, size=SIZE, max_item_size=MAX_ITEM)
    assert _names(str(ei.value), "name"), str(ei.value)


# ---------------------------------------------------------------- sharing


def test_two_caches_with_one_name_share_data(cache, location):
    other = shmcache.Cache(location, size=SIZE, max_item_size=MAX_ITEM)
    cache.set("k", "v")
    assert other.get("k") == "v"
    other.set("n", 1)
    assert cache.incr("n") == 2
    assert other.get("n") == 2
    # A second, separate mapping of the same segment (another lock timeout).
    third = shmcache.Cache(location, size=SIZE, max_item_size=MAX_ITEM, lock_timeout=0.5)
    assert third.get("k") == "v"
    third.delete("k")
    assert "k" not in cache


def test_another_size_attaches_to_the_segment_in_use(cache, location, caplog):
    # Options are a request: a segment in use with another SIZE is shared as
    # it is (a warning, never an error), so old and new settings see one cache.
    cache.set("k", "v")
    with caplog.at_level(logging.WARNING, logger="shmcache"):
        other = shmcache.Cache(location, size="16MB", max_item_size=MAX_ITEM)
    assert "asked for SIZE=" in caplog.text and "uses the existing geometry" in caplog.text, caplog.text
    assert other.get("k") == "v"
    assert other._core.geometry == cache._core.geometry != other._core.requested_geometry
    assert other._core.inode == cache._core.inode
    other.delete("k")
    assert cache.get("k") is None
    cache.set("k", "v2")
    assert other.get("k") == "v2"
    assert shmcache.Cache(location, size=SIZE, max_item_size=MAX_ITEM).get("k") == "v2"


def test_destroy_then_recreate_is_empty(location):
    c = shmcache.Cache(location, size=SIZE, max_item_size=MAX_ITEM)
    c.set("k", "v")
    assert shmcache.destroy(location) is True
    assert shmcache.destroy(location) is False
    fresh = shmcache.Cache(location, size="16MB", max_item_size=MAX_ITEM)  # new geometry is fine now
    assert fresh.get("k", "miss") == "miss"


# ---------------------------------------------------------------- pickling errors


@pytest.mark.parametrize("bad", [threading.Lock(), lambda: 1], ids=["lock", "lambda"])
def test_unpicklable_value_raises_and_stores_nothing(cache, bad):
    items_before = cache.stats()["items"]
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        cache.set("k", bad)
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        cache.add("k", bad)
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        cache.set_many({"a": 1, "k": bad, "b": 2})
    assert cache.get_many(["a", "k", "b"]) == {}
    assert cache.stats()["items"] == items_before


# ---------------------------------------------------------------- undecodable values


@pytest.mark.parametrize("enc, data", [(1, b"not a pickle"), (1, pickle.dumps(Point(1, 2))[:-3]), (9, b"x")],
                         ids=["garbage", "truncated", "unknown-encoding"])
def test_undecodable_value_is_a_miss_and_dropped(cache, caplog, enc, data):
    cache._core.set(b"bad", (enc, data), None)  # as another version of the code might have stored it
    cache.set("good", 1)
    assert cache.has_key("bad")
    with caplog.at_level(logging.WARNING, logger="shmcache"):
        assert cache.get("bad", "dflt") == "dflt"
    assert any("undecodable" in r.getMessage() for r in caplog.records)
    assert not cache.has_key("bad")
    cache._core.set(b"bad", (enc, data), None)
    assert cache.get_many(["bad", "good"]) == {"good": 1}
    assert not cache.has_key("bad")


# ---------------------------------------------------------------- processes


def _fork_child(cache, q):
    try:
        q.put(("parent", cache.get("from-parent")))
        cache.set("from-child", {"pid": "child"})
        cache.incr("counter")
        q.put(("ok", None))
    except BaseException as e:  # report instead of hanging the parent
        q.put(("error", repr(e)))


def test_fork_child_shares_the_cache(cache):
    cache.set("from-parent", [1, 2, 3])
    cache.set("counter", 0)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_fork_child, args=(cache, q))
    p.start()
    got = [q.get(timeout=30), q.get(timeout=30)]
    p.join(30)
    assert p.exitcode == 0
    assert got == [("parent", [1, 2, 3]), ("ok", None)]
    assert cache.get("from-child") == {"pid": "child"}
    assert cache.get("counter") == 1


def _incr_many(name, n):
    c = shmcache.Cache(name, size=SIZE, max_item_size=MAX_ITEM)
    for _ in range(n):
        c.incr("counter")


def test_incr_is_atomic_across_forked_processes(cache, location, run_forked):
    cache.set("counter", 0)
    run_forked(_incr_many, [(location, 2000)] * 4, meanwhile=lambda: _incr_many(location, 2000))
    assert cache.get("counter") == 5 * 2000


def _spawn_child(name, q):
    try:
        c = shmcache.Cache(name, size=SIZE, max_item_size=MAX_ITEM)
        q.put(c.get("from-parent"))
        c.set("from-spawned", ("tuple", 1))
    except BaseException as e:
        q.put(("error", repr(e)))


def test_spawned_process_opens_by_name(cache, location):
    cache.set("from-parent", {"x": 1})
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_spawn_child, args=(location, q))
    p.start()
    got = q.get(timeout=60)
    p.join(60)
    assert got == {"x": 1}
    assert p.exitcode == 0
    assert cache.get("from-spawned") == ("tuple", 1)
