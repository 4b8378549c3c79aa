"""shmcache's fastapi-cache2 backend: its semantics (as RedisBackend's,
where InMemoryBackend differs), and an ``@cache(expire=60)`` endpoint of a
FastAPI app under a real ``uvicorn --workers 2``, computed once across the
workers."""

import asyncio

import pytest
from faces_helpers import computed

from shmcache.fastapi_cache import SharedMemoryBackend

run = asyncio.run


def test_get_set_ttl_and_clear(location, clock_offset):
    backend = SharedMemoryBackend(location, size="8MB", max_item_size="64KB")

    async def go():
        await backend.set("fastapi-cache:ns:a", b"A", expire=60)
        await backend.set("fastapi-cache:ns:b", b"B")  # no expire: kept until evicted (as Redis)
        await backend.set("fastapi-cache:ns2:c", b"C", expire=60)
        await backend.set("fastapi-cache:other:d", b"D")
        assert await backend.get("fastapi-cache:ns:a") == b"A" and await backend.get("nope") is None
        ttl, v = await backend.get_with_ttl("fastapi-cache:ns:a")
        assert v == b"A" and 59 <= ttl <= 60
        assert await backend.get_with_ttl("fastapi-cache:ns:b") == (-1, b"B"), "-1: no expiry"
        assert await backend.get_with_ttl("nope") == (-2, None), "-2: missing (as Redis)"
        with clock_offset(3_600_000):
            assert await backend.get("fastapi-cache:ns:b") == b"B", "expire=None keeps the value"
            assert await backend.get_with_ttl("fastapi-cache:ns2:c") == (-2, None), "expired"
        await backend.set("fastapi-cache:ns2:c", b"C", expire=60)
        assert await backend.clear(namespace="fastapi-cache:ns") == 2, "only ns:, not ns2:"
        assert await backend.get("fastapi-cache:ns2:c") == b"C"
        assert await backend.clear(key="fastapi-cache:other:d") == 1
        assert await backend.clear(key="fastapi-cache:other:d") == 0
        assert await backend.clear() == 0

    run(go())


def test_bad_options_are_named(location):
    with pytest.raises(TypeError, match=r"SharedMemoryBackend: unknown option\(s\) 'ttl'"):
        SharedMemoryBackend(location, ttl=5)
    with pytest.raises(TypeError, match="expire"):
        run(SharedMemoryBackend(location, size="8MB").set("k", b"v", expire="1m"))


def test_cached_endpoint_computed_once_across_two_uvicorn_workers(serve, location):
    s = serve("fastapi_app:app", "uvicorn", 2)
    first = s.get("/cached")  # alone: fastapi-cache2's decorator lets concurrent first requests each compute
    answers = s.get_many(["/cached"] * 40, concurrency=8)  # new connections, 8 at a time: both workers answer
    assert first["computed"] == 1 and all(a == first for a in answers), answers
    assert computed(location, "cached") == 1
