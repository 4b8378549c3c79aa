"""TieredCache's options, API and edges against a real redis-server: clear
errors for bad options, L1_EXCLUDE and keys outside the prefix never in L1,
get_many's fills, RedisCache's format in L2, incr and lock atomic across two
hosts' processes, the async face, and a Redis that refuses CLIENT TRACKING."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import time

import pytest
import redis
import tiered_hosts
from tiered_hosts import destroy_l1

import shmcache
from shmcache.tiered import TieredClient, l1_location


def django_cache(location, url, prefix="site", **options):
    from shmcache.django import TieredCache

    return TieredCache(location, {"KEY_PREFIX": prefix, "OPTIONS": {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB", "L2": url, **options}})


@pytest.fixture
def cleanup():
    made = []
    yield made.append
    for loc, prefix in made:
        destroy_l1(loc, prefix)


def settle(c, timeout=5.0):
    """Until the listener has applied every invalidation of writes completed
    before now (its watermark passes now): then a read fills L1."""
    tiered_hosts.settle(c._core, timeout)


def wait_live(c, timeout=5.0):
    c = getattr(c, "_cache", c)
    c.listen()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if c.stats()["live"]:
            return
        time.sleep(0.01)
    raise AssertionError("L1 not live")


def test_a_lagging_watermark_prompts_one_listener_check_per_period(location):
    """get_live's True: live, but the listener has missed PINGs; once per
    lag period for a client, so one read checks on it and the rest read."""
    core = shmcache._core.Cache(location, 4 << 20, 64 << 10)
    core.set(b"k", b"v", None)
    now = shmcache._core.monotonic_ms()
    core.set_watermark_ms(now)
    assert core.get_live(b"k") is False, "until set_live_reads nothing is live"
    core.set_live_reads(1000, 600)
    assert core.get_live(b"k") == b"v"
    core.set_watermark_ms(now - 700)
    assert core.get_live(b"k") is True
    assert core.get_live(b"k") == b"v" and not core.lag_due(), "once per period"
    other = shmcache._core.Cache(location, 4 << 20, 64 << 10)  # another client: its own period
    other.set_live_reads(1000, 30)
    assert other.lag_due() is True and other.lag_due() is False
    time.sleep(0.05)
    assert other.lag_due() is True, "and again once the period has passed"
    other.set_live_reads(1000, 0)
    time.sleep(0.05)
    assert other.get_live(b"k") == b"v" and not other.lag_due(), "lag 0: never asked"
    core.set_watermark_ms(now - 1200)
    assert core.get_live(b"k") is False and not core.lag_due(), "not live: L2 answers"


def test_a_listener_check_that_outlasts_the_lag_is_made_once_per_read(redis_server, location, cleanup):
    """A check on the listener slower than the lag period (here 1 ms, with
    PINGs every 0.2 s: always lagging) is made once, then the read answers."""
    cleanup((location, "site"))
    c = TieredClient(location, redis_server.url, key_prefix="site", size="8MB", max_item_size="64KB")
    wait_live(c)
    c.set("site:1:k", "v")
    settle(c)
    assert c.get("site:1:k") == "v" and c._core.get("site:1:k") == "v", "filled"
    c._core.set_live_reads(60_000, 1)
    checks = []
    real_listen = c.listen

    def slow_listen():
        checks.append(1)
        real_listen()
        time.sleep(0.005)

    c.listen = slow_listen
    before = c.stats()
    time.sleep(0.005)
    assert c.get("site:1:k") == "v" and len(checks) == 1
    time.sleep(0.005)
    assert c.has_key("site:1:k") and len(checks) == 2
    after = c.stats()
    assert after["l1_hits"] == before["l1_hits"] + 2, "both answered from L1"
    assert after["l2_hits"] == before["l2_hits"] and after["not_live_reads"] == before["not_live_reads"]


@pytest.mark.parametrize(
    "options, names",
    [
        ({}, "L2 missing"),
        ({"L2": "http://localhost:6379"}, "invalid L2"),
        ({"L2": {"LOCATION": ["redis://a:1", "redis://b:1"]}}, "invalid L2 LOCATION"),
        ({"L2": {"LOCATION": "redis://a:1", "OPTIONS": {"serializer": "x"}}}, "serializer"),
        ({"L2": {"LOCATION": "redis://a:1", "PORT": 1}}, "PORT"),
        ({"L2": "redis://a:1", "MAX_STALENESS": 0}, "invalid MAX_STALENESS"),
        ({"L2": "redis://a:1", "MAX_STALENESS": -1}, "invalid MAX_STALENESS"),
        ({"L2": "redis://a:1", "MAX_STALENESS": True}, "invalid MAX_STALENESS"),
        ({"L2": "redis://a:1", "L1_MAX_TIMEOUT": 0}, "invalid L1_MAX_TIMEOUT"),
        ({"L2": "redis://a:1", "L1_EXCLUDE": [1]}, "invalid L1_EXCLUDE"),
        ({"L2": "redis://a:1", "SIZE": "lots"}, "invalid SIZE"),
        ({"L2": "redis://a:1", "MAXSTALENESS": 1}, "unknown OPTIONS for TieredCache: MAXSTALENESS"),
        ({"L2": "redis://a:1", "SOCKET_TIMEOUT": 1}, "SOCKET_TIMEOUT: django-redis .* in L2.s OPTIONS"),
    ],
)
def test_bad_options_are_clear_errors_naming_the_option(options, names, location):
    from shmcache.django import TieredCache

    with pytest.raises(ValueError, match=names):
        TieredCache(location, {"KEY_PREFIX": "site", "OPTIONS": options})
    assert not shmcache.destroy(l1_location(location, "site")), "nothing was created"


def test_values_in_L2_are_RedisCaches_so_both_share_data(redis_server, location, cleanup):
    from django.core.cache.backends.redis import RedisCache

    cleanup((location, "site"))
    t = django_cache(location, redis_server.url)
    rc = RedisCache(redis_server.url, {"KEY_PREFIX": "site"})
    t.set("a", {"x": [1, 2]})
    t.set("n", 41)
    assert rc.get("a") == {"x": [1, 2]} and rc.get("n") == 41
    rc.set("b", ("tuple", 1.5))
    assert t.get("b") == ("tuple", 1.5)
    assert rc.incr("n") == 42 and t.get("n") == 42
    raw = redis.Redis.from_url(redis_server.url)
    assert raw.get("site:1:n") == b"42" and pickle.loads(raw.get("site:1:a")) == {"x": [1, 2]}


def test_excluded_keys_and_keys_outside_the_prefix_never_enter_L1(redis_server, location, cleanup):
    cleanup((location, "site"))
    c = TieredClient(location, redis_server.url, key_prefix="site", l1_exclude=["site:1:rl:"], size="8MB", max_item_size="64KB")
    wait_live(c)
    for k in ("site:1:rl:ip", "other:1:k", "site:1:ok"):
        c.set(k, "v")
    settle(c)
    for k in ("site:1:rl:ip", "other:1:k", "site:1:ok"):
        assert c.get(k) == "v" and c.get(k) == "v"
    assert c._core.get("site:1:ok") == "v"
    assert c._core.get("site:1:rl:ip") is None and c._core.get("other:1:k") is None
    assert c.get_many(["site:1:rl:ip", "other:1:k", "site:1:ok"]) == {"site:1:rl:ip": "v", "other:1:k": "v", "site:1:ok": "v"}
    assert c._core.get("site:1:rl:ip") is None and c._core.get("other:1:k") is None


def test_get_many_fills_L1_in_one_round_trip_and_keeps_L2s_ttl(redis_server, location, cleanup):
    cleanup((location, "site"))
    c = TieredClient(location, redis_server.url, key_prefix="site", size="8MB", max_item_size="64KB")
    wait_live(c)
    keys = [f"site:1:m{i}" for i in range(20)]
    c.set_many({k: i for i, k in enumerate(keys)}, 60)
    c.set("site:1:forever", "f", None)
    settle(c)  # until the listener has heard of these writes, a fill may be (rightly) dropped
    before = c.stats()
    got = c.get_many([*keys, "site:1:absent", "site:1:forever"])
    assert got == {**{k: i for i, k in enumerate(keys)}, "site:1:forever": "f"}
    after = c.stats()
    assert after["l2_hits"] - before["l2_hits"] == 21 and after["l2_misses"] - before["l2_misses"] == 1
    assert after["fills"] - before["fills"] == 21
    assert 59_000 < c._core.ttl_ms(keys[0]) <= 60_000
    assert c._core.ttl_ms("site:1:forever") <= 300_000  # L1_MAX_TIMEOUT caps a key with no expiry
    hits = c.stats()["l1_hits"]
    assert c.get_many(keys) == {k: i for i, k in enumerate(keys)}
    assert c.stats()["l1_hits"] == hits + 20


def _incr_and_lock(loc, url, n, q):
    from shmcache.django import TieredCache

    c = TieredCache(loc, {"KEY_PREFIX": "site", "OPTIONS": {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB", "L2": url}})
    overlaps = 0
    for _ in range(n):
        c.incr("counter")
        with c.lock("L", timeout=5):
            if c.get("inside"):
                overlaps += 1
            c.set("inside", 1)
            c.delete("inside")
    q.put(overlaps)


def test_incr_and_lock_are_atomic_across_hosts(redis_server, location, cleanup):
    cleanup((location + "-a", "site"))
    cleanup((location + "-b", "site"))
    c = django_cache(location + "-a", redis_server.url)
    c.set("counter", 0)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_incr_and_lock, args=(location + ("-a" if i % 2 else "-b"), redis_server.url, 150, q))
             for i in range(4)]
    for p in procs:
        p.start()
    overlaps = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert c.get("counter") == 600
    assert overlaps == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        c.incr("missing")
    assert c.incr("missing", ignore_key_check=True) == 1
    c.set("text", "abc")
    with pytest.raises(TypeError):
        c.incr("text")


def test_the_django_face_async_twins_and_expiry_extras(redis_server, location, cleanup):
    cleanup((location, "site"))
    c = django_cache(location, redis_server.url)
    wait_live(c)

    async def go():
        await c.aset("k", "v", 30)
        assert await c.aget("k") == "v"
        assert await c.aadd("k", "other") is False
        assert await c.aget_many(["k", "x"]) == {"k": "v"}
        assert await c.atouch("k", None) is True
        assert c.ttl("k") is None
        assert c.expire("k", 5) and 4 < c.ttl("k") <= 5
        assert c.persist("k") and c.ttl("k") is None
        assert await c.aincr_version("k") == 2
        assert c.get("k") is None and c.get("k", version=2) == "v"
        assert await c.adelete("k", version=2) is True
        assert sorted(c.keys("*")) == []
        async with c.alock("al", timeout=5):
            assert not c.lock("al").acquire(blocking=False)
        await c.aclear()

    asyncio.run(go())


def test_a_redis_that_refuses_tracking_is_logged_once_and_L2_answers(redis_server, location, cleanup, caplog):
    raw = redis.Redis.from_url(redis_server.url)
    raw.execute_command("ACL", "SETUSER", "default", "-client|tracking")
    cleanup((location, "site"))
    c = TieredClient(location, redis_server.url, key_prefix="site", size="8MB", max_item_size="64KB")
    with caplog.at_level(logging.ERROR, logger="shmcache.tiered"):
        c.set("site:1:k", "v")
        c.listen()
        deadline = time.monotonic() + 3
        while not [r for r in caplog.records if "no invalidations" in r.getMessage()] and time.monotonic() < deadline:
            time.sleep(0.02)
        for _ in range(5):
            assert c.get("site:1:k") == "v"
    errors = [r for r in caplog.records if "no invalidations" in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]
    st = c.stats()
    assert not st["live"] and st["not_live_reads"] >= 5 and st["l1_hits"] == 0 and st["fills"] == 0


def test_an_unknown_option_is_named_before_anything_is_made(location):
    with pytest.raises(TypeError, match="TieredClient: unknown option.s. 'sise'; known: .*size"):
        TieredClient(location, "redis://127.0.0.1:1/0", sise="8MB")
    assert not os.path.exists("/dev/shm/" + shmcache.segment_name(location)), "nothing made"


def test_without_redis_py_the_error_names_the_extra_and_no_l1_is_made(location):
    """redis-py hidden from a fresh interpreter: TieredClient says which
    extra to install, before the L1 segment is created."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import shmcache\n"
        "from shmcache.tiered import TieredClient, l1_location\n"
        "try:\n"
        f"    TieredClient({location!r}, 'redis://127.0.0.1:1/0', key_prefix='p', size='8MB')\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
        "import os\n"
        f"print('segment' if os.path.exists('/dev/shm/' + shmcache.segment_name(l1_location({location!r}, 'p'))) else 'no segment')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "ImportError: shmcache's TieredCache needs redis-py: pip install 'shmcache[tiered]'" in out.stdout, out
    assert out.stdout.rstrip().endswith("no segment"), out
