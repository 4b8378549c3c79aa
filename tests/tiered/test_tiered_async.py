"""TieredCache's async methods against a real redis-server: no call holds
the event loop while Redis is slow (the server SIGSTOPped for 400 ms during
each call), the answers are right afterwards, ``alock`` is redis.asyncio's
lock, ``aget_or_set`` waits with asyncio, a pool per event loop is closed
by ``aclose``, and the sync methods run in threads beside the loop.

(The guarantees shared with the sync path, fill tokens and the staleness
bound under kills, are proved in tests/tiered/test_tiered.py, whose fill-race and
history tests run with ``aget``/``aset`` too.)"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import threading
import time

import pytest
import redis
import tiered_hosts
from redis.asyncio.lock import Lock as AsyncRedisLock
from tiered_hosts import destroy_l1

from devkit.loop import Ticker, while_stopped
from devkit.wait import wait_for
from shmcache.tiered import listener as _listener

PAUSE = 0.4  # how long Redis is stopped during each call
MAX_GAP = 0.05  # the longest the loop may go without running the ticker


@pytest.fixture
def tiered(redis_server, location):
    from shmcache.django import TieredCache

    c = TieredCache(location, {"KEY_PREFIX": "site", "OPTIONS": {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB", "L2": redis_server.url}})
    c._cache.listen()
    wait_for(lambda: c._cache.stats()["live"], 5, "L1 live")
    yield c
    destroy_l1(location, "site")


def settle(c) -> None:
    """Until this host's listener has applied every invalidation sent before now."""
    tiered_hosts.settle(c._cache._core)


def _calls(c):
    """(name, setup (sync, before the pause), the async call, check of its result)."""
    k = "site:1:"

    async def alock_round() -> bool:
        async with c.alock("L", timeout=5):
            return True

    async def aiter() -> list:
        return sorted([x async for x in c.aiter_keys("it*")])

    return [
        ("aget (L1 miss)", lambda: c.set("g", "v"), lambda: c.aget("g"), lambda r: r == "v"),
        ("aget_many (misses)", lambda: c.set_many({"m1": 1, "m2": "two"}), lambda: c.aget_many(["m1", "m2", "m3"]),
         lambda r: r == {"m1": 1, "m2": "two"}),
        ("aset", lambda: None, lambda: c.aset("s", [1, 2]), lambda r: r is None and c.get("s") == [1, 2]),
        ("aset nx", lambda: c.set("snx", 1), lambda: c.aset("snx", 2, nx=True), lambda r: r is False and c.get("snx") == 1),
        ("aadd", lambda: c.delete("a"), lambda: c.aadd("a", "x"), lambda r: r is True and c.get("a") == "x"),
        ("aincr", lambda: c.set("n", 1), lambda: c.aincr("n", 5), lambda r: r == 6 and c.get("n") == 6),
        ("adecr", lambda: c.set("d", 1), lambda: c.adecr("d"), lambda r: r == 0),
        ("adelete", lambda: c.set("del", 1), lambda: c.adelete("del"), lambda r: r is True and c.get("del") is None),
        ("atouch", lambda: c.set("t", 1, 5), lambda: c.atouch("t", 100), lambda r: r is True and 99 < c.ttl("t") <= 100),
        ("ahas_key (miss)", lambda: c.delete("h"), lambda: c.ahas_key("h"), lambda r: r is False),
        ("aset_many", lambda: None, lambda: c.aset_many({"sm1": 1, "sm2": 2}), lambda r: r == [] and c.get("sm2") == 2),
        ("adelete_many", lambda: c.set_many({"dm1": 1, "dm2": 2}), lambda: c.adelete_many(["dm1", "dm2", "dm3"]),
         lambda r: r == 2),
        ("aincr_version", lambda: c.set("iv", "x"), lambda: c.aincr_version("iv"),
         lambda r: r == 2 and c.get("iv", version=2) == "x"),
        ("attl", lambda: c.set("ttl", 1, 50), lambda: c.attl("ttl"), lambda r: 49 < r <= 50),
        ("apttl", lambda: c.set("pttl", 1, 50), lambda: c.apttl("pttl"), lambda r: 49_000 < r <= 50_000),
        ("aexpire", lambda: c.set("e", 1), lambda: c.aexpire("e", 30), lambda r: r is True and 29 < c.ttl("e") <= 30),
        ("apersist", lambda: c.set("p", 1, 30), lambda: c.apersist("p"), lambda r: r is True and c.ttl("p") is None),
        ("aiter_keys", lambda: c.set_many({"it1": 1, "it2": 2}), aiter, lambda r: r == ["it1", "it2"]),
        ("akeys", lambda: c.set_many({"ak1": 1}), lambda: c.akeys("ak*"), lambda r: r == ["ak1"]),
        ("adelete_pattern", lambda: c.set_many({"dp1": 1, "dp2": 2}), lambda: c.adelete_pattern("dp*"), lambda r: r == 2),
        ("aget_or_set (miss)", lambda: c.delete("gos"), lambda: c.aget_or_set("gos", lambda: "made"),
         lambda r: r == "made" and c.get("gos") == "made"),
        ("alock", lambda: None, alock_round, lambda r: r is True and not c.has_key("L")),
        ("aclear", lambda: c.set("cl", 1), lambda: c.aclear(), lambda r: r is None and c.get("cl") is None),
        ("aclose", lambda: None, lambda: c.aclose(), lambda r: r is None),
    ], k


def test_no_async_call_holds_the_loop_while_redis_is_paused(tiered, redis_server):
    """Every async call that needs Redis, with Redis stopped for 400 ms
    during it: a ticker on the same loop never waits more than 50 ms, the
    call waits for Redis (it took the pause), and answers right."""
    c = tiered
    calls, _ = _calls(c)

    async def go() -> list:
        await c.aset("warm", 1)  # this loop's pool has a connection
        out = []
        for name, setup, call, check in calls:
            setup()
            settle(c)  # the setup's invalidations applied: an aget below is an L1 miss, not a race
            result, gap, took = await while_stopped(redis_server.pid, PAUSE, call)
            out.append((name, result, gap, took, check(result)))
        return out

    rows = asyncio.run(go())
    held = [(n, round(g, 3)) for n, _, g, _, _ in rows if g > MAX_GAP]
    assert not held, f"the loop was held: {held}"
    wrong = [(n, res) for n, res, _, _, ok in rows if not ok]
    assert not wrong, wrong
    quick = [(n, round(t, 3)) for n, _, _, t, _ in rows if t < PAUSE * 0.75 and n != "aclose"]
    assert not quick, f"answered without waiting for Redis: {quick}"


def test_an_L1_hit_through_aget_never_awaits(tiered):
    """An L1 hit answers inline: the coroutine finishes on its first step,
    without yielding to the loop (so without touching Redis)."""
    c = tiered
    c.set("hit", {"a": 1})
    settle(c)
    assert c.get("hit") == {"a": 1}  # filled
    hits = c._cache.stats()["l1_hits"]
    coro = c.aget("hit")
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    assert done.value.value == {"a": 1}
    assert c._cache.stats()["l1_hits"] == hits + 1


def test_async_writes_invalidate_this_hosts_L1_at_once(tiered):
    c = tiered

    async def go() -> None:
        await c.aset("rw", "one")
        settle(c)
        assert await c.aget("rw") == "one" and await c.aget("rw") == "one"  # filled, then a hit
        assert c._cache._core.get("site:1:rw") == "one"
        await c.aset("rw", "two")
        assert await c.aget("rw") == "two", "read your writes"
        await c.adelete("rw")
        assert await c.aget("rw") is None
        await c.aset_many({"rw": 3})
        assert await c.aget_many(["rw"]) == {"rw": 3}

    asyncio.run(go())


def test_async_reads_bypass_L1_when_it_is_not_live(tiered, redis_server):
    """No listener watermark younger than MAX_STALENESS: aget asks Redis
    and fills nothing, as get does."""
    c = tiered
    c.set("nl", "old")
    settle(c)
    assert c.get("nl") == "old"
    _listener.stop_all()  # the listener is gone; its watermark ages out
    core = c._cache._core
    core.set_watermark_ms(0)
    c._cache._next_try = time.monotonic() + 60  # and nobody takes over during the test
    redis.Redis.from_url(redis_server.url).set("site:1:nl", pickle.dumps("new"))  # as another host would
    not_live = core.tier_stats()["not_live_reads"]
    assert asyncio.run(c.aget("nl")) == "new"
    assert core.tier_stats()["not_live_reads"] == not_live + 1
    assert core.get("site:1:nl") != "new", "nothing is filled from L2 while L1 is not live"


def test_each_event_loop_has_its_own_pool_and_aclose_closes_it(tiered, redis_server):
    c = tiered
    admin = redis.Redis.from_url(redis_server.url)

    def clients() -> int:
        return len(admin.client_list())

    async def use_and_close() -> tuple:
        before = clients()
        assert await c.aget("pool-miss") is None
        assert await c.aset("pool", 1) is None
        during = clients()
        await c.aclose()
        await asyncio.sleep(0.05)
        after = clients()
        assert await c.aget("pool") == 1, "usable again after aclose (a new pool)"
        await c.aclose()
        return before, during, after

    for _ in range(2):  # two loops, one after the other: each gets its own pool
        before, during, after = asyncio.run(use_and_close())
        assert during == before + 1, (before, during)
        assert after == before, (before, after)
    assert not c._cache.l2._aclients, "aclose dropped each loop's pool"
    # A loop that ends without aclose: its pool is dropped when another loop opens one.
    asyncio.run(c.aget("pool-miss"))  # a miss: Redis answers
    (ended,) = c._cache.l2._aclients
    assert ended.is_closed()

    async def another() -> None:
        await c.aget("pool-miss")
        assert ended not in c._cache.l2._aclients and len(c._cache.l2._aclients) == 1
        await c.aclose()

    asyncio.run(another())


def test_sync_methods_in_threads_beside_the_loop(tiered):
    """What Django does: sync methods in worker threads (sync_to_async)
    while async ones run on the loop. Counts stay exact and values right."""
    c = tiered
    c.set("shared-n", 0)
    errors: list[BaseException] = []

    def sync_worker(i: int) -> None:
        try:
            for j in range(100):
                c.incr("shared-n")
                c.set(f"t{i}-{j}", j)
                assert c.get(f"t{i}-{j}") == j
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    async def go() -> None:
        threads = [threading.Thread(target=sync_worker, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for j in range(100):
            await c.aincr("shared-n")
            await c.aset(f"a-{j}", j)
            assert await c.aget(f"a-{j}") == j
        await asyncio.gather(*(asyncio.to_thread(t.join) for t in threads))

    asyncio.run(go())
    assert not errors, errors
    assert c.get("shared-n") == 400


def _hold_lock(url: str, key: str, seconds: float, ready) -> None:
    lk = redis.Redis.from_url(url).lock(key, timeout=10)
    assert lk.acquire(blocking=False)
    ready.set()
    time.sleep(seconds)
    lk.release()


def test_alock_is_an_asyncio_redis_lock_that_waits_without_holding_the_loop(tiered, redis_server):
    """Another process holds the lock (redis-py, as any host would) for
    0.5 s: alock's acquire waits for it with asyncio, the loop running."""
    c = tiered
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(redis_server.url, "site:1:shared-lock", 0.5, ready))
    p.start()
    try:
        assert ready.wait(10)

        async def go() -> tuple:
            lk = c.alock("shared-lock", timeout=5, blocking_timeout=5)
            assert isinstance(lk, AsyncRedisLock)
            async with Ticker(0.01) as t:
                t0 = time.monotonic()
                async with lk:
                    waited = time.monotonic() - t0
                    assert await lk.owned()
            return waited, t

        waited, t = asyncio.run(go())
        assert 0.3 < waited < 3, waited
        assert len(t.gaps) >= 20 and t.max_gap < MAX_GAP, "the loop ran while alock waited"
    finally:
        p.join(10)
    assert p.exitcode == 0


def _compute_slowly(location: str, url: str, seconds: float, started) -> None:
    from shmcache.django import TieredCache

    c = TieredCache(location, {"KEY_PREFIX": "site", "OPTIONS": {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB", "L2": url}})

    def compute() -> str:
        started.set()
        time.sleep(seconds)
        return "from-the-other-process"

    assert c.get_or_set("slow", compute) == "from-the-other-process"
    _listener.stop_all()


def test_aget_or_set_waits_for_another_processs_computation_with_asyncio(tiered, redis_server, location):
    c = tiered
    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()
    p = ctx.Process(target=_compute_slowly, args=(location, redis_server.url, 0.6, started))
    p.start()
    try:
        assert started.wait(10)

        async def go() -> tuple:
            async with Ticker(0.005) as t:
                v = await c.aget_or_set("slow", lambda: "computed-here")
            return v, t

        v, t = asyncio.run(go())
        assert v == "from-the-other-process"
        assert t.max_gap < MAX_GAP and len(t.gaps) > 20, (t.max_gap, len(t.gaps))
    finally:
        p.join(10)
    assert p.exitcode == 0
