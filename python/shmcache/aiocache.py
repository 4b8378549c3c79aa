"""aiocache face: an aiocache cache (0.12) in shared memory, shared by
every worker process of the host.

    from shmcache.aiocache import SharedMemoryCache
    cache = SharedMemoryCache(location="myapp", size="256MB", namespace="app:")

A thin face over `shmcache.Cache`: aiocache's ``BaseCache`` does the rest
(namespaces, key builders, serializers, plugins, timeouts), and the
backend's coroutines run inline (the operations take microseconds). As
aiocache's own backends: ``add`` raises ValueError when the key exists;
``increment`` creates a missing key with the delta, and is atomic across
processes; ``expire(key, 0)`` removes the expiry; ``clear(namespace)``
deletes that namespace's keys (keys that start with it, as in the memory
backend), and ``clear()`` the whole cache, as Memory and Redis do. The
default serializer is aiocache's ``NullSerializer`` (as SimpleMemoryCache's):
values go to shmcache as they are (bytes, str and ints natively, anything
else pickled); another serializer (``PickleSerializer``, ``JsonSerializer``)
is used as given. The default ``timeout`` is None, not aiocache's 5 s: an
operation never waits on I/O, and a timeout costs an asyncio task per call.
"""

from __future__ import annotations

from typing import Any

try:
    from aiocache.base import BaseCache
    from aiocache.serializers import NullSerializer
except ImportError:
    raise ImportError("shmcache.aiocache needs aiocache: pip install 'shmcache[aiocache]' (or pip install aiocache)") from None

from ._glob import glob_escape
from ._options import DEFAULT_SIZE, Settings, check_location
from .client import Cache

FACE = "shmcache.aiocache.SharedMemoryCache"
# aiocache's own BaseCache arguments, passed on to it.
_AIOCACHE_ARGS = ("serializer", "plugins", "namespace", "key_builder", "timeout", "ttl")


class SharedMemoryCache(BaseCache):
    """An aiocache cache on LOCATION `location` (see the module doc)."""

    NAME = "shmcache"

    def __init__(self, location: str = "aiocache", size: int | str = DEFAULT_SIZE, **kwargs: Any) -> None:
        base = {k: kwargs.pop(k) for k in _AIOCACHE_ARGS if k in kwargs}
        settings = Settings.for_face(FACE, {"size": size, **kwargs})  # serializer= is aiocache's (taken above)
        base["serializer"] = base.get("serializer") or NullSerializer()
        # No asyncio timeout by default: an operation never waits on I/O and
        # cannot be interrupted, and aiocache's timeout (5 s by default) wraps
        # every call in asyncio.wait_for, a task per call (about 5x the cost of
        # the operation). timeout= still sets one.
        base.setdefault("timeout", None)
        super().__init__(**base)
        self._cache = Cache.from_settings(check_location(location, "location"), settings, on_error="log")

    @classmethod
    def parse_uri_path(cls, path: str) -> dict:
        return {}

    async def _get(self, key: str, encoding: str = "utf-8", _conn: Any = None) -> Any:
        return self._cache.get(key)

    async def _gets(self, key: str, encoding: str = "utf-8", _conn: Any = None) -> Any:
        return self._cache.get(key)  # the value is its own CAS token, as in the memory backend

    async def _multi_get(self, keys: list, encoding: str = "utf-8", _conn: Any = None) -> list:
        found = self._cache.get_many(keys)
        return [found.get(k) for k in keys]

    async def _set(self, key: str, value: Any, ttl: float | None = None, _cas_token: Any = None, _conn: Any = None) -> Any:
        t = ttl or None  # 0 and None: never expires
        if _cas_token is not None:
            return self._cache.compare_and_set(key, _cas_token, value, t) or 0
        return self._cache.set(key, value, t)

    async def _multi_set(self, pairs: list, ttl: float | None = None, _conn: Any = None) -> bool:
        return not self._cache.set_many(dict(pairs), ttl or None)

    async def _add(self, key: str, value: Any, ttl: float | None = None, _conn: Any = None) -> bool:
        if not self._cache.add(key, value, ttl or None):
            raise ValueError(f"Key {key} already exists, use .set to update the value")
        return True

    async def _exists(self, key: str, _conn: Any = None) -> bool:
        return self._cache.has_key(key)

    async def _increment(self, key: str, delta: int, _conn: Any = None) -> int:
        try:
            return self._cache.incr(key, delta, ignore_key_check=True)
        except TypeError:
            raise TypeError("Value is not an integer") from None

    async def _expire(self, key: str, ttl: float, _conn: Any = None) -> bool:
        return self._cache.expire(key, ttl or None)  # 0: no expiry any more

    async def _delete(self, key: str, _conn: Any = None) -> int:
        return int(self._cache.delete(key))

    async def _clear(self, namespace: str | None = None, _conn: Any = None) -> bool:
        if namespace:
            self._cache.delete_pattern(glob_escape(namespace) + "*")
        else:
            self._cache.clear()
        return True

    async def _raw(self, command: str, *args: Any, encoding: str = "utf-8", _conn: Any = None, **kwargs: Any) -> Any:
        """`command` of `shmcache.Cache` itself (``raw("ttl", key)``): what is beyond aiocache's API."""
        return getattr(self._cache, command)(*args, **kwargs)

    async def _redlock_release(self, key: str, value: Any) -> int:
        return int(self._cache.compare_and_delete(key, value))

    async def _close(self, *args: Any, _conn: Any = None, **kwargs: Any) -> None:
        self._cache.close()
