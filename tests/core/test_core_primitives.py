"""Smoke tests of the core primitives behind the django-redis drop-in
(locks, key iteration, big-integer incr), on `shmcache._core.Cache` directly."""

import multiprocessing
import os
import random
import time
from collections import Counter

import pytest

from shmcache import _core

MB = 1 << 20


@pytest.fixture
def core(location):
    return _core.Cache(location, 8 * MB, 64 << 10)


# ---------------------------------------------------------------- integers of any size


def test_bigints_are_stored_natively(core):
    for v in (2**63, -(2**63) - 1, 2**100, -(10**40), 2**63 - 1, -(2**63), 0):
        assert core.set("n", v, None) is True
        got = core.get("n")
        assert got == v and type(got) is int
    core.set("n", 2**100, None)
    assert core.get_many(["n"]) == ([2**100], 0)
    assert core.get_with_ttl("n") == (2**100, -1)
    assert _core.ENC_BIGINT not in (_core.ENC_BYTES, _core.ENC_PICKLE, _core.ENC_INT, _core.ENC_STR)
    # An encoded tuple of ENC_BIGINT is read back as the int it holds.
    core.set("t", (_core.ENC_BIGINT, (2**70).to_bytes(10, "little", signed=True)), None)
    assert core.get("t") == 2**70


def test_incr_crosses_the_i64_edges_exactly(core):
    core.set("n", 2**63 - 1, None)
    assert core.incr("n", 1) == 2**63
    assert core.get("n") == 2**63
    assert core.incr("n", -1) == 2**63 - 1
    core.set("m", -(2**63), None)
    assert core.incr("m", -1) == -(2**63) - 1
    assert core.incr("m", 2**64) == 2**63 - 1
    assert core.incr("m", 10**30) == 10**30 + 2**63 - 1
    assert core.incr("m", -(10**30)) == 2**63 - 1
    assert type(core.incr("m", 0)) is int


def test_incr_create_and_expiry(core, clock_offset):
    with pytest.raises(KeyError):
        core.incr("missing", 1)
    assert core.get("missing") is None
    assert core.incr("c", 5, create=True) == 5
    assert core.incr("c", 5, True) == 10
    assert core.incr("big", 2**80, create=True) == 2**80
    assert core.ttl_ms("c") == -1
    # The expiry is kept, also when the value is promoted.
    core.set("e", 2**63 - 1, 100)
    assert core.incr("e", 1) == 2**63
    assert 99_000 < core.ttl_ms("e") <= 100_000
    # Expired: missing, or created anew with no expiry.
    with clock_offset(200_000):
        with pytest.raises(KeyError):
            core.incr("e", 1)
        core.set("e", 7, 100)
    with clock_offset(400_000):
        assert core.incr("e", 2, create=True) == 2
        assert core.ttl_ms("e") == -1


def test_incr_of_a_non_integer_is_a_typeerror(core):
    for v in (b"12", "12", (_core.ENC_PICKLE, b"x")):
        core.set("v", v, None)
        with pytest.raises(TypeError):
            core.incr("v", 1)
        with pytest.raises(TypeError):
            core.incr("v", 1, create=True)
        assert core.get("v") == v
    with pytest.raises(TypeError):
        core.incr("v", 1.5)


def _incr_worker(location, n):
    c = _core.Cache(location, 8 * MB, 64 << 10)
    for _ in range(n):
        c.incr("counter", 1)
    os._exit(0)


def test_incr_is_atomic_across_processes_over_the_i64_boundary(location, core, run_forked):
    start = 2**63 - 1000
    core.set("counter", start, None)
    run_forked(_incr_worker, [(location, 500)] * 4)
    assert core.get("counter") == start + 2000  # crossed 2**63 on the way


# ---------------------------------------------------------------- compare-and-set / -delete


def test_compare_and_set_and_delete(core):
    assert core.compare_and_set("lock", b"me", b"me", 10) is False  # missing
    assert core.compare_and_delete("lock", b"me") is False
    assert core.set("lock", b"me", 10, add=True)
    assert core.compare_and_set("lock", b"you", b"you", 10) is False
    assert core.compare_and_set("lock", "me", b"x", 10) is False  # str is not bytes
    assert core.compare_and_set("lock", b"me", b"me", 100) is True  # extend
    assert 99_000 < core.ttl_ms("lock") <= 100_000
    assert core.compare_and_set("lock", b"me", b"a much longer owner token " * 5, None) is True
    assert core.ttl_ms("lock") == -1
    assert core.compare_and_delete("lock", b"me") is False
    assert core.compare_and_delete("lock", b"a much longer owner token " * 5) is True
    assert core.get("lock") is None
    # Integers (big ones too) compare by value; 1 is not b"1" nor "1".
    core.set("n", 2**70, None)
    assert core.compare_and_set("n", 2**70 + 1, 0, None) is False
    assert core.compare_and_set("n", 2**70, 1, None) is True
    assert core.compare_and_set("n", b"1", 2, None) is False
    assert core.compare_and_set("n", 1, 2**64, None) is True
    assert core.get("n") == 2**64
    with pytest.raises(ValueError):
        core.compare_and_set("n", 2**64, 1, 0)  # timeout as set's: > 0 or None


def test_compare_and_set_on_an_expired_key_is_false(core, clock_offset):
    core.set("lock", b"dead-holder", 1)
    with clock_offset(5_000):
        assert core.compare_and_set("lock", b"dead-holder", b"me", 10) is False
        assert core.compare_and_delete("lock", b"dead-holder") is False
        assert core.set("lock", b"me", 10, add=True) is True  # the takeover


# ---------------------------------------------------------------- scan


def test_scan_static(core):
    keys = {f"user:{i}".encode() for i in range(3000)} | {b"other", "caf\u00e9:1".encode()}
    for k in keys:
        core.set(k, b"v" * (len(k) % 50), None)
    for count in (1, 10, 1000):
        it = core.scan(count=count)
        assert iter(it) is it
        batches = list(it)
        assert all(type(b) is list and b for b in batches)
        got = [k for b in batches for k in b]
        assert all(type(k) is bytes for k in got)
        assert sorted(got) == sorted(keys)
    got = [k for b in core.scan(b"user:1", 50) for k in b]
    assert sorted(got) == sorted(k for k in keys if k.startswith(b"user:1"))
    assert [k for b in core.scan("caf\u00e9") for k in b] == ["caf\u00e9:1".encode()]
    assert list(core.scan(b"nobody")) == []
    it = core.scan(b"other")
    assert next(it) == [b"other"]
    with pytest.raises(StopIteration):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    with pytest.raises(ValueError):
        core.scan(count=0)
    with pytest.raises(TypeError):
        core.scan(1)


def _scan_writer(location, stop):
    c = _core.Cache(location, 1 * MB, 1024)
    rng = random.Random(os.getpid())
    while not stop.is_set():
        for _ in range(200):
            r = rng.random()
            i = rng.randrange(500)
            if r < 0.3:
                c.set(f"keep:{i}", b"k" * (20 + i % 4), None)  # in place
            elif r < 0.5:
                c.set(f"keep:{i}", b"k" * rng.randrange(30, 300), None)  # another size
            elif r < 0.7:
                c.delete(f"churn:{i % 200}")
            else:
                c.set(f"churn:{i % 200}", b"c" * rng.randrange(300), None)
    os._exit(0)


def test_scan_is_exactly_once_while_another_process_writes(location):
    # A small cache whose logs fill with dead records: reclaim keeps moving
    # the live ones to the head while the scan walks (nothing is evicted).
    core = _core.Cache(location, 1 * MB, 1024)
    keep = {f"keep:{i}".encode() for i in range(500)}
    for k in keep:
        core.set(k, b"k" * 20, None)
    stop = multiprocessing.get_context("fork").Event()
    p = multiprocessing.get_context("fork").Process(target=_scan_writer, args=(location, stop))
    p.start()
    try:
        sets0, scans, deadline = core.stats()["sets"], 0, time.monotonic() + 20
        # Scan again and again until the writer has done plenty meanwhile.
        while (scans < 5 or core.stats()["sets"] - sets0 < 20_000) and time.monotonic() < deadline:
            scans += 1
            got = Counter(k for b in core.scan(count=5) for k in b)
            twice = [k for k, n in got.items() if n > 1]
            assert not twice, f"returned more than once: {twice[:5]}"
            assert keep <= set(got), f"missing: {sorted(keep - set(got))[:5]}"
    finally:
        stop.set()
        p.join(30)
    assert p.exitcode == 0
    s = core.stats()
    assert s["sets"] - sets0 >= 20_000, "the writer hardly ran"
    assert s["evictions"] == 0
    core.verify()
