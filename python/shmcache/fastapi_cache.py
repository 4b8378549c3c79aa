"""fastapi-cache2 face: a `Backend` in shared memory, so ``@cache``'d
endpoints are computed once for every worker of the host.

    from fastapi_cache import FastAPICache
    from shmcache.fastapi_cache import SharedMemoryBackend
    FastAPICache.init(SharedMemoryBackend("myapp", size="256MB"), prefix="fastapi-cache")

A thin face over `shmcache.Cache`; its methods are coroutines that run
inline (the operations take microseconds). As fastapi-cache2's
RedisBackend (where its InMemoryBackend differs, Redis is followed):
``set(key, value, expire=None)`` keeps the value until it is evicted;
``get_with_ttl`` gives (seconds left, value), -1 for no expiry and -2 (with
None) for a missing key; ``clear(namespace)`` deletes the keys under
``namespace:`` (the decorator's keys are ``prefix:namespace:...``), and
``clear(key=...)`` that key; both return how many keys they removed.
"""

from __future__ import annotations

import math
from typing import Any

try:
    from fastapi_cache.types import Backend
except ImportError:
    raise ImportError(
        "shmcache.fastapi_cache needs fastapi-cache2: pip install 'shmcache[fastapi]' (or pip install fastapi-cache2)"
    ) from None

from ._glob import glob_escape
from ._options import DEFAULT_SIZE, Settings, check_location
from .client import Cache

FACE = "shmcache.fastapi_cache.SharedMemoryBackend"


class SharedMemoryBackend(Backend):
    """A fastapi-cache2 backend on LOCATION `location`."""

    def __init__(self, location: str, *, size: int | str = DEFAULT_SIZE, **options: Any) -> None:
        settings = Settings.for_face(FACE, {"size": size, **options})
        self._cache = Cache.from_settings(check_location(location, "location"), settings, on_error="log")

    async def get_with_ttl(self, key: str) -> tuple[int, bytes | None]:
        got = self._cache.get_with_ttl(key)  # read together, as Redis's TTL and GET in one MULTI
        if got is None:
            return -2, None
        value, left = got
        return (-1 if left is None else math.ceil(left)), value

    async def get(self, key: str) -> bytes | None:
        return self._cache.get(key)

    async def set(self, key: str, value: bytes, expire: int | None = None) -> None:
        if expire is not None and (isinstance(expire, bool) or not isinstance(expire, int)):
            raise TypeError(f"expire must be whole seconds (an int) or None, not {expire!r}")
        self._cache.set(key, value, expire)

    async def clear(self, namespace: str | None = None, key: str | None = None) -> int:
        """How many keys were removed: those under ``namespace:``, or `key`."""
        if namespace:
            return self._cache.delete_pattern(glob_escape(namespace) + ":*")
        if key:
            return int(self._cache.delete(key))
        return 0
