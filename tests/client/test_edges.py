"""Edge cases beyond test_cache_api.py: the MAX_ITEM_SIZE boundary (key and
value both count), floods of tiny items, extreme and unusual keys, None
values through every path, incr at the signed 64-bit edges, clear() racing
with writers in other processes, and bad input at every public entry point
(a clear exception naming the problem, and nothing already stored lost)."""

import multiprocessing as mp
import pickle
import time
import unicodedata
import warnings

import pytest

import shmcache

MAX = 64 * 1024  # the fixtures' MAX_ITEM_SIZE
FORK = mp.get_context("fork")


def rec(key: bytes, n: int) -> int:
    """Bytes an item takes in the log: 32-byte header, key, value, pad to 8."""
    return (32 + len(key) + n + 7) & ~7


# ---------------------------------------------------------------- MAX_ITEM_SIZE: key + value


@pytest.mark.parametrize("key", ["k", "k" * 250, "k" * 300, "ключ", b"\x00\xff"], ids=["1", "250", "300", "unicode", "binary"])
def test_exact_max_item_size_fits_and_one_byte_over_does_not(cache, key, caplog):
    kb = key if isinstance(key, bytes) else key.encode()
    fits = b"x" * (MAX - len(kb))
    assert cache.set(key, fits) is True
    assert cache.get(key) == fits
    # One byte over: not stored, and the previous value must not look current.
    assert cache.set(key, fits + b"y") is False
    assert cache.get(key, "miss") == "miss"
    assert cache.add(key, fits + b"y") is False
    assert cache.add(key, fits) is True
    assert cache.get(key) == fits
    assert cache.set_many({key: fits + b"y", "other": b"o"}) == [key]
    assert cache.get_many([key, "other"]) == {"other": b"o"}
    assert cache.set_many({key: fits}) == []
    assert cache.get(key) == fits
    assert cache.stats()["bytes_used"] >= rec(kb, len(fits))
    assert cache._core.verify()[0] == cache.stats()["items"]


def test_str_values_count_utf8_bytes(cache):
    # "é" is two bytes in UTF-8: the limit is on bytes, not characters.
    key = "s"
    assert cache.set(key, "é" * ((MAX - 1) // 2)) is True
    assert cache.set(key, "é" * ((MAX - 1) // 2 + 1)) is False
    assert cache.set(key, "e" * (MAX - 1)) is True
    assert cache.get(key) == "e" * (MAX - 1)


def test_int_values_take_eight_bytes(cache):
    assert cache.set("k" * (MAX - 8), 2**63 - 1) is True
    assert cache.get("k" * (MAX - 8)) == 2**63 - 1
    assert cache.set("k" * (MAX - 7), 1) is False
    assert cache.incr("k" * (MAX - 8), -1) == 2**63 - 2


def test_pickled_values_count_their_pickle(cache):
    def pickled(n):
        return len(pickle.dumps(["x" * n], pickle.HIGHEST_PROTOCOL))

    overhead = pickled(MAX - 200) - (MAX - 200)
    n = MAX - 1 - overhead  # key "p" + pickle = MAX exactly
    assert pickled(n) == MAX - 1 and pickled(n + 1) == MAX
    assert cache.set("p", ["x" * n]) is True
    assert cache.get("p") == ["x" * n]
    assert cache.set("p", ["x" * (n + 1)]) is False
    assert cache.get("p", "miss") == "miss"


def test_key_alone_at_and_over_the_limit(cache, caplog):
    assert cache.set("k" * MAX, b"") is True
    assert cache.get("k" * MAX) == b""
    assert cache.set("k" * (MAX + 1), b"") is False
    assert cache.get("k" * (MAX + 1), "miss") == "miss"
    assert not cache.has_key("k" * (MAX + 1))
    assert cache.delete("k" * (MAX + 1)) is False
    with pytest.raises(KeyError):
        cache.incr("k" * (MAX + 1))


def test_django_key_prefix_and_version_count_towards_the_limit(django_settings, location, caplog):
    from shmcache.django import SharedMemoryCache

    c = SharedMemoryCache(location, {"KEY_PREFIX": "pfx", "OPTIONS": {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB"}})
    stored = c.make_key("k").encode()  # "pfx:1:k"
    assert stored == b"pfx:1:k"
    fits = b"x" * (MAX - len(stored))
    c.set("k", fits)
    assert c.get("k") == fits
    c.set("k", fits + b"y")  # not stored, logged; the old value is removed
    assert c.get("k") is None
    assert c.add("k", fits + b"y") is False
    assert c.add("k", fits) is True
    assert c.set_many({"k": fits + b"y", "j": b"j"}) == ["k"]
    assert c.get_many(["k", "j"]) == {"j": b"j"}


# ---------------------------------------------------------------- many tiny items


def test_many_tiny_items(cache):
    n = 50_000
    keys = [f"{i:x}" for i in range(n)]
    for i, k in enumerate(keys):
        assert cache.set(k, i % 3 and b"" or b"\x00") is True
    got = cache.get_many(keys)
    assert len(got) == n, f"{n - len(got)} tiny items lost in a cache far from full"
    assert all(got[k] == (i % 3 and b"" or b"\x00") for i, k in enumerate(keys))
    st = cache.stats()
    assert st["evictions"] == 0
    assert cache._core.verify() == (st["items"], st["bytes_used"]) == (n, sum(rec(k.encode(), 1 if i % 3 == 0 else 0) for i, k in enumerate(keys)))
    # Four times as many: the index (not the log) fills; sets keep succeeding.
    for i in range(n, 5 * n):
        assert cache.set(f"{i:x}", b"t") is True
    st = cache.stats()
    assert st["evictions"] > 0
    assert cache._core.verify() == (st["items"], st["bytes_used"])
    assert cache.get(f"{5 * n - 1:x}") == b"t"
    # Memory comes back: delete everything ever written.
    cache.delete_many([f"{i:x}" for i in range(5 * n)])
    st = cache.stats()
    assert (st["items"], st["bytes_used"]) == (0, 0)
    assert cache._core.verify() == (0, 0)


@pytest.mark.parametrize("value", [b"", "", 0, False, (), [], {}, 0.0], ids=repr)
def test_empty_and_falsy_values_are_hits(cache, value):
    assert cache.set("k", value) is True
    got = cache.get("k", "miss")
    assert got == value and type(got) is type(value)
    assert cache.get_many(["k"]) == {"k": value}


# ---------------------------------------------------------------- keys


def test_every_one_byte_key_is_its_own_key(cache):
    for b in range(256):
        assert cache.set(bytes([b]), b)
    for b in range(256):
        assert cache.get(bytes([b])) == b
    assert cache.get(b"") is None
    assert cache.set(b"", "empty") and cache.get("") == "empty"  # str keys are their UTF-8 bytes
    assert cache.get("a") == ord("a")
    assert cache.stats()["items"] == 257


@pytest.mark.parametrize("n", [249, 250, 251, 255, 256, 1000, 4096, 60_000])
def test_long_keys_are_exact(cache, n):
    k = "k" * n
    assert cache.set(k, n)
    assert cache.get(k) == n
    assert cache.get("k" * (n - 1), "miss") == "miss"
    assert cache.get("k" * (n + 1), "miss") == "miss"
    assert cache.get(k[:-1] + "K", "miss") == "miss"
    assert cache.delete(k) and not cache.has_key(k)


def test_unicode_keys_are_their_exact_code_points(cache):
    nfc = unicodedata.normalize("NFC", "café")
    nfd = unicodedata.normalize("NFD", "café")
    keys = [nfc, nfd, "CAFÉ", "a\0b", "a", "a\u200db", "ab", "\ud800", "\udfff", "👍🏽", "👍", "שלום", "\t\n ", "\x7f"]
    assert len(set(keys)) == len(keys)
    for i, k in enumerate(keys):
        assert cache.set(k, i)
    for i, k in enumerate(keys):
        assert cache.get(k) == i, k
    assert cache.get(nfc.encode()) == 0  # bytes and str meet at UTF-8
    assert cache.get_many(keys) == {k: i for i, k in enumerate(keys)}
    assert cache.delete_many(keys) == len(keys)


def test_django_keys_short_long_and_unicode(django_cache):
    from django.core.cache import CacheKeyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheKeyWarning)
        django_cache.set("k", 1)
        django_cache.set("ключ🔑", 2)
        django_cache.set("k" * 247, 3)  # ":1:" + 247 = 250 characters, memcached's limit
    with pytest.warns(CacheKeyWarning):
        django_cache.set("k" * 248, 4)  # works, with Django's portability warning
    with pytest.warns(CacheKeyWarning):
        django_cache.set("k" * 10_000, 5)
    assert django_cache.get_many(["k", "ключ🔑", "k" * 247]) == {"k": 1, "ключ🔑": 2, "k" * 247: 3}
    with pytest.warns(CacheKeyWarning):
        assert django_cache.get("k" * 248) == 4
    with pytest.warns(CacheKeyWarning):
        assert django_cache.get("k" * 10_000) == 5


# ---------------------------------------------------------------- None values


def test_none_values_everywhere(cache):
    sentinel = object()
    cache.set_many({"a": None, "b": 1})
    assert cache.get("a", sentinel) is None
    assert cache.get_many(["a", "b", "c"]) == {"a": None, "b": 1}
    assert cache.add("a", 1) is False
    assert cache.ttl("a") is None
    assert cache.touch("a", 100) is True
    assert 99 < cache.ttl("a") <= 100
    with pytest.raises(TypeError):
        cache.incr("a")
    assert cache.get("a", sentinel) is None
    assert cache.delete("a") is True
    assert cache.get("a", sentinel) is sentinel


def test_none_values_through_django(django_cache):
    django_cache.set("n", None)
    assert django_cache.get("n", "default") is None
    assert django_cache.has_key("n")
    assert django_cache.get_many(["n", "missing"]) == {"n": None}
    assert django_cache.add("n", 1) is False
    calls = []
    assert django_cache.get_or_set("n", lambda: calls.append(1) or "computed") is None
    assert calls == []  # a stored None is a hit
    assert django_cache.get_or_set("other", lambda: None) is None
    assert django_cache.has_key("other")
    assert django_cache.incr_version("n") == 2
    assert django_cache.get("n", "default", version=2) is None
    assert django_cache.get("n", "default") == "default"


# ---------------------------------------------------------------- incr at the int64 edges


@pytest.mark.parametrize(
    "start, delta",
    [(2**63 - 1, 1), (2**62, 2**62), (1, 2**63 - 1), (-(2**63), -1), (-(2**62), -(2**62) - 1), (-1, -(2**63))],
    ids=["max+1", "2^62+2^62", "1+max", "min-1", "-2^62-(2^62+1)", "-1+min"],
)
def test_incr_past_int64_is_exact(cache, django_cache, start, delta):
    for c in (cache, django_cache):
        c.set("n", start)
        assert c.incr("n", delta) == start + delta
        assert c.get("n") == start + delta
        if delta != -(2**63):  # decr by -delta: -(−2**63) is itself out of range
            c.set("n", start)
            assert c.decr("n", -delta) == start + delta
            assert c.get("n") == start + delta


def test_incr_to_exactly_the_edges_works(cache):
    cache.set("n", 2**63 - 2)
    assert cache.incr("n") == 2**63 - 1
    assert cache.decr("n", 2**63 - 1) == 0
    assert cache.decr("n", 2**63 - 1) == -(2**63) + 1
    assert cache.decr("n") == -(2**63)
    assert cache.incr("n", 2**63 - 1) == -1
    assert type(cache.get("n")) is int


def test_incr_delta_beyond_int64_is_exact(cache):
    for delta in (2**63, -(2**63) - 1, 2**64, 10**30):
        cache.set("n", 0)
        assert cache.incr("n", delta) == delta
        assert cache.get("n") == delta


# ---------------------------------------------------------------- clear() racing with writers


def _self_describing(key: str, n: int, size: int) -> bytes:
    unit = f"{key}#{n};".encode()
    return (unit * (size // len(unit) + 1))[:size]


def _check_value(key: str, v) -> None:
    """A value read must be whole: the repetition of one `key#n;` unit."""
    if v is None:
        return
    assert isinstance(v, bytes), type(v)
    unit = v[: v.index(b";") + 1]
    assert unit.startswith(key.encode() + b"#"), (key, v[:40])
    assert v == (unit * (len(v) // len(unit) + 1))[: len(v)], f"torn value for {key}: {v[:60]!r}..."


def _race_writer(location, seconds, wid, q):
    try:
        c = shmcache.Cache(location, size="8MB", max_item_size="64KB")
        end, n, sets, hits = time.monotonic() + seconds, 0, 0, 0
        while time.monotonic() < end:
            n += 1
            key = f"k{(n * 7 + wid) % 300}"
            size = 40 + ((n * 131) % (MAX - 50) if n % 10 == 0 else n % 200)  # at least two units
            if c.set(key, _self_describing(key, n, size)) is not True:
                raise AssertionError(f"set of {size} bytes returned False")
            sets += 1
            other = f"k{n % 300}"
            v = c.get(other)
            _check_value(other, v)
            hits += v is not None
        q.put(("ok", wid, sets, hits))
    except BaseException as e:
        q.put(("error", wid, repr(e), 0))


def test_clear_racing_with_sets_from_other_processes(location):
    # clear() waits for every shard's lock in turn: a generous LOCK_TIMEOUT,
    # so that three writers on a loaded 2-core machine cannot time it out.
    cache = shmcache.Cache(location, size="8MB", max_item_size="64KB", lock_timeout=2.0)
    seconds = 3.0
    q = FORK.Queue()
    procs = [FORK.Process(target=_race_writer, args=(location, seconds, w, q)) for w in range(3)]
    for p in procs:
        p.start()
    clears, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        cache.clear()
        clears += 1
        for i in range(0, 300, 7):
            _check_value(f"k{i}", cache.get(f"k{i}"))
        time.sleep(0.002)
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert all(r[0] == "ok" for r in results), results
    assert sum(r[2] for r in results) > 1000 and clears > 100, (results, clears)
    st = cache.stats()
    assert cache._core.verify() == (st["items"], st["bytes_used"])
    assert st["shard_wipes"] == clears * st["shards"]  # each clear wipes every shard; nothing else does
    cache.clear()
    assert cache._core.verify() == (0, 0)
    assert cache.set("after", b"v") and cache.get("after") == b"v"


# ---------------------------------------------------------------- bad input everywhere

SENTINEL = ("sentinel", {"stored": "before the bad call"})


@pytest.fixture
def guarded(cache):
    """The cache with a stored sentinel that every bad call must leave alone."""
    cache.set(*SENTINEL)
    cache.set("n", 5)
    yield cache
    assert cache.get(SENTINEL[0]) == SENTINEL[1], "a bad call lost stored data"
    assert cache.get("n") == 5, "a bad call changed a stored counter"
    assert cache._core.verify()[0] == cache.stats()["items"]


def bad(exc, *words):
    """Assert `call` raises `exc` with a message naming the problem: it
    contains one of `words` (case-insensitive)."""

    def check(call):
        with pytest.raises(exc) as ei:
            call()
        msg = str(ei.value)
        assert any(w.lower() in msg.lower() for w in words), f"{type(ei.value).__name__}: {msg!r} names none of {words}"

    return check


KEY_ERR = bad(TypeError, "key")
BAD_KEYS = [1, None, 1.5, True, ("a",), ["a"], bytearray(b"a"), memoryview(b"a"), object(), print]


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda k: type(k).__name__)
def test_bad_key_types_name_the_key(guarded, key):
    c = guarded
    for call in (
        lambda: c.get(key),
        lambda: c.get(key, "default"),
        lambda: c.set(key, 1),
        lambda: c.add(key, 1),
        lambda: c.delete(key),
        lambda: c.has_key(key),
        lambda: key in c,
        lambda: c.touch(key, 1),
        lambda: c.incr(key),
        lambda: c.decr(key),
        lambda: c.ttl(key),
        lambda: c.get_many([SENTINEL[0], key]),
        lambda: c.delete_many([SENTINEL[0], key]),
    ):
        KEY_ERR(call)
    try:
        mapping = {SENTINEL[0]: "overwritten?", key: 2}
    except TypeError:  # unhashable: cannot be a mapping's key at all
        return
    KEY_ERR(lambda: c.set_many(mapping))


BAD_TIMEOUTS = [
    (float("nan"), ValueError),
    (float("inf"), ValueError),
    (1e11, ValueError),
    (1e300, ValueError),
    (2**100, ValueError),
    ("10", TypeError),
    (b"10", TypeError),
    (True, TypeError),
    ([1], TypeError),
    (1j, TypeError),
]


@pytest.mark.parametrize("timeout, exc", BAD_TIMEOUTS, ids=lambda t: repr(t)[:20])
def test_bad_timeouts_name_the_timeout(guarded, timeout, exc):
    c = guarded
    check = bad(exc, "timeout")
    check(lambda: c.set(SENTINEL[0], "overwritten?", timeout=timeout))
    check(lambda: c.add("new", 1, timeout=timeout))
    check(lambda: c.touch(SENTINEL[0], timeout))
    check(lambda: c.touch("n", timeout))
    check(lambda: c.set_many({SENTINEL[0]: "overwritten?", "new": 1}, timeout=timeout))
    assert "new" not in c


BAD_DELTAS = [1.5, float("nan"), "1", b"1", None, [1], 1j]


@pytest.mark.parametrize("delta", BAD_DELTAS, ids=repr)
def test_bad_incr_deltas_name_the_problem(guarded, delta):
    bad(TypeError, "integer", "delta")(lambda: guarded.incr("n", delta))


@pytest.mark.parametrize("delta", ["1", None], ids=repr)
def test_bad_decr_deltas_name_the_problem(guarded, delta):
    bad(TypeError, "integer", "delta")(lambda: guarded.decr("n", delta))


@pytest.mark.parametrize(
    "kwargs, option",
    [
        (dict(size=-1), "size"),
        (dict(size=2**40 + 1), "size"),
        (dict(size="2TB"), "size"),
        (dict(size=float("nan")), "size"),
        (dict(size="nanMB"), "size"),
        (dict(max_item_size=-5), "max_item_size"),
        (dict(max_item_size=2**31), "max_item_size"),
        (dict(shards=2**40), "shards"),
        (dict(shards=1.5), "shards"),
        (dict(lock_timeout=float("nan")), "lock_timeout"),
        (dict(lock_timeout=float("inf")), "lock_timeout"),
        (dict(lock_timeout=61), "lock_timeout"),
        (dict(default_timeout="5"), "default_timeout"),
        (dict(pickle_protocol=1.0), "pickle_protocol"),
    ],
    ids=repr,
)
def test_bad_constructor_arguments_name_the_option(guarded, location, kwargs, option):
    # On the guarded cache's own LOCATION: a refused attach must not touch it.
    args = {"size": "8MB", "max_item_size": "64KB", **kwargs}
    bad(ValueError, option)(lambda: shmcache.Cache(location, **args))


@pytest.mark.parametrize("option", ["size", "max_item_size"])
def test_sizes_beyond_u64_name_the_option(guarded, location, option):
    args = {"size": "8MB", "max_item_size": "64KB", option: 2**64}
    bad(ValueError, option)(lambda: shmcache.Cache(location, **args))


@pytest.mark.parametrize("t", [float("nan"), float("inf")], ids=repr)
def test_non_finite_default_timeout_is_refused_up_front(location, t):
    bad(ValueError, "default_timeout")(lambda: shmcache.Cache(location, size="8MB", max_item_size="64KB", default_timeout=t))


@pytest.mark.parametrize("loc", [None, 5, b"name", "", "a\0b", "x" * 201], ids=repr)
def test_bad_locations_name_the_location(guarded, loc):
    check = bad(ValueError, "location", "name")
    check(lambda: shmcache.destroy(loc))
    check(lambda: shmcache.segment_name(loc))
    check(lambda: shmcache.Cache(loc))


def test_bad_batch_arguments_name_the_problem(guarded):
    c = guarded
    for call in (lambda: c.get_many(None), lambda: c.get_many(5), lambda: c.delete_many(None), lambda: c.set_many(None)):
        bad(TypeError, "iterable", "not")(call)


def test_set_many_of_pairs_names_the_mapping(guarded):
    bad(TypeError, "mapping", "dict")(lambda: guarded.set_many([(SENTINEL[0], "overwritten?")]))


def test_delete_many_of_a_str_is_refused(cache):
    cache.set("n", 5)
    with pytest.raises(TypeError):
        cache.delete_many("sentinel")
    assert cache.get("n") == 5


def test_django_bad_timeouts_and_deltas(django_cache):
    c = django_cache
    c.set(*SENTINEL)
    c.set("n", 5)
    for t in (float("nan"), float("inf"), 1e12):
        bad(ValueError, "timeout")(lambda t=t: c.set(SENTINEL[0], "overwritten?", timeout=t))
        bad(ValueError, "timeout")(lambda t=t: c.touch("n", t))
        bad(ValueError, "timeout")(lambda t=t: c.set_many({SENTINEL[0]: "x"}, timeout=t))
    for d in (1.5, "1", None):
        bad(TypeError, "integer", "delta")(lambda d=d: c.incr("n", d))
    bad(ValueError, "not found")(lambda: c.incr("missing"))
    assert c.get(SENTINEL[0]) == SENTINEL[1]
    assert c.get("n") == 5


def test_django_non_numeric_timeout_names_the_timeout(django_cache):
    bad((TypeError, ValueError), "timeout")(lambda: django_cache.set("k", 1, timeout="soon"))
