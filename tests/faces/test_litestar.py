"""shmcache's Litestar store: its semantics (as Litestar's own stores,
where they disagree as RedisStore), and a Litestar app under a real
``uvicorn --workers 2`` whose rate limit, response cache and server-side
sessions hold across the workers."""

import asyncio
from datetime import timedelta

import httpx
import pytest
from faces_helpers import computed
from litestar.exceptions import ImproperlyConfiguredException

import shmcache
from shmcache.litestar import SharedMemoryStore

run = asyncio.run


@pytest.fixture
def store(location):
    return SharedMemoryStore(location, size="8MB", max_item_size="64KB")


def test_set_get_delete_exists_and_expiry(store, clock_offset):
    async def go():
        await store.set("a", "text")  # str: stored as UTF-8
        await store.set("b", b"\x00bytes", expires_in=60)
        await store.set("c", b"never", expires_in=0)  # 0: no expiry, as MemoryStore
        await store.set("d", b"td", expires_in=timedelta(seconds=30))
        assert await store.get("a") == b"text" and await store.get("b") == b"\x00bytes"
        assert await store.get("missing") is None
        assert await store.expires_in("missing") is None, "None: missing"
        assert await store.expires_in("a") == -1 and await store.expires_in("c") == -1, "-1: never expires"
        assert 58 <= await store.expires_in("b") <= 60 and 28 <= await store.expires_in("d") <= 30
        assert await store.exists("b")
        with clock_offset(61_000):
            assert not await store.exists("b"), "False once expired (as RedisStore, unlike MemoryStore)"
            assert await store.get("b") is None and await store.expires_in("b") is None
            assert await store.get("c") == b"never"
        await store.delete("a")
        await store.delete("a")  # a missing key: a no-op
        assert await store.get("a") is None and not await store.exists("a")

    run(go())


def test_get_renews_only_a_key_that_has_an_expiry(store):
    async def go():
        await store.set("t", b"v", expires_in=10)
        await store.set("forever", b"v")
        assert await store.get("t", renew_for=100) == b"v"
        assert 98 <= await store.expires_in("t") <= 100
        assert await store.get("forever", renew_for=timedelta(seconds=5)) == b"v"
        assert await store.expires_in("forever") == -1, "no expiry: renew_for is a no-op"

    run(go())


def test_namespaces_nest_share_one_segment_and_delete_all_goes_down_only(store, location):
    async def go():
        a = store.with_namespace("a")
        a_b = a.with_namespace("b")
        ab = store.with_namespace("ab")  # a sibling whose name starts like "a"
        odd = store.with_namespace("x/y:z")  # separators in a name stay inside it
        for s, v in ((store, b"root"), (a, b"a"), (a_b, b"a.b"), (ab, b"ab"), (odd, b"odd")):
            await s.set("k", v)
        assert [await s.get("k") for s in (store, a, a_b, ab, odd)] == [b"root", b"a", b"a.b", b"ab", b"odd"]
        assert a_b.namespace == "LITESTAR/a/b" and a._cache is store._cache, "one segment"
        await a.delete_all()
        assert await a.get("k") is None and await a_b.get("k") is None, "the namespace and the ones below it"
        assert [await s.get("k") for s in (store, ab, odd)] == [b"root", b"ab", b"odd"], "never above or beside"
        await store.delete_all()
        assert [await s.get("k") for s in (store, ab, odd)] == [None, None, None]
        bare = SharedMemoryStore(location, size="8MB", max_item_size="64KB", namespace=None)
        await bare.set("k", b"no namespace")
        assert await bare.get("k") == b"no namespace"
        with pytest.raises(ImproperlyConfiguredException, match="No namespace"):
            await bare.delete_all()  # as RedisStore without a namespace

    run(go())


def test_bad_options_and_values_are_named(location):
    with pytest.raises(TypeError, match=r"SharedMemoryStore: unknown option\(s\) 'sise'"):
        SharedMemoryStore(location, sise="8MB")
    with pytest.raises(ValueError, match="invalid size"):
        SharedMemoryStore(location, size="lots")
    with pytest.raises(TypeError, match="namespace"):
        SharedMemoryStore(location, namespace="")
    store = SharedMemoryStore(location, size="8MB")
    with pytest.raises(TypeError, match="str or bytes"):
        run(store.set("k", 1))
    with pytest.raises(TypeError, match="expires_in"):
        run(store.set("k", b"v", expires_in="soon"))
    assert not shmcache.Cache(location, size="8MB").keys("*"), "nothing stored by the refused calls"


def test_rate_limit_response_cache_and_sessions_hold_across_two_uvicorn_workers(serve, location):
    s = serve("litestar_app:app", "uvicorn", 2)
    url = s.base_url
    # Rate limit 10 a minute: 40 requests on fresh connections (both workers answer), 10 pass.
    statuses, pids = [], set()
    for _ in range(40):
        with httpx.Client() as c:  # a new connection each time
            r = c.get(url + "/limited")
        statuses.append(r.status_code)
        pids.add(int(r.headers["x-pid"]))
    assert statuses.count(200) == 10 and statuses.count(429) == 30, statuses
    assert statuses[:10] == [200] * 10, "the first ten pass, the rest are limited"
    assert len(pids) == 2, f"both workers served the 40 requests: {pids}"
    # The response cache: computed once, whichever worker answers.
    answers = [httpx.get(url + "/cached").json() for _ in range(20)]
    assert {a["computed"] for a in answers} == {1} and computed(location, "cached") == 1
    # Server-side sessions: set through one worker, read through the other.
    with httpx.Client(base_url=url) as c:
        r = c.get("/session/set/shared")
        writer = int(r.headers["x-pid"])
        seen = {}
        for _ in range(200):
            with httpx.Client(base_url=url, cookies=c.cookies) as other:  # another connection, the same cookie
                r = other.get("/session/get")
            seen[int(r.headers["x-pid"])] = r.json()["value"]
            if len(seen) == 2:
                break
    assert set(seen) > {writer} and set(seen.values()) == {"shared"}, seen
