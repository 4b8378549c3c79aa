"""Django cache backend: every worker process of the host shares one cache.

    CACHES = {"default": {
        "BACKEND": "shmcache.django.SharedMemoryCache",
        "LOCATION": "mysite",
        "OPTIONS": {"SIZE": "256MB"},
    }}

A thin face over `shmcache.Cache` (as Django's ``RedisCache`` is over
``RedisCacheClient``): this module makes and validates keys (KEY_PREFIX,
VERSION, KEY_FUNCTION, or a subclass's ``make_key``/``validate_key``) and maps
Django's timeouts; the client does the rest. Every alias with the same
LOCATION sees one store. The client runs with ``on_error="log"``: a lock that
cannot be had within LOCK_TIMEOUT makes a read a miss and a write a no-op
(logged), never an error page; incr/decr raise instead, since they must not
silently lose a count.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, default_key_func, get_key_func
from django.core.serializers.json import DjangoJSONEncoder

from ._api import FLIGHT_WAIT, _check_pattern
from ._glob import glob_escape
from .client import Cache
from .memoize import memoize

if TYPE_CHECKING:
    from .tiered import TieredClient


def default_reverse_key(key: str) -> str:
    """The user's key from a key made by Django's default KEY_FUNCTION
    (``prefix:version:key``); REVERSE_KEY_FUNCTION replaces it, as in django-redis."""
    return key.split(":", 2)[2]


class SharedMemoryCache(BaseCache):
    def __init__(self, location: str, params: dict) -> None:
        super().__init__(params)
        self._cache = self._client(location, params.get("OPTIONS") or {})
        self._reverse_key = get_key_func(params.get("REVERSE_KEY_FUNCTION") or default_reverse_key)
        self._get, self._set = self._cache.get, self._cache.set  # bound once: the hot paths
        # Keys are built inline unless a subclass changed how (or KEY_FUNCTION
        # is set, checked per call: Django's tests swap it on the instance).
        cls = type(self)
        self._plain_keys = all(
            getattr(cls, m) is getattr(BaseCache, m) for m in ("make_key", "validate_key", "make_and_validate_key")
        )

    def _client(self, location: str, options: dict) -> Cache:
        return Cache.from_options(location, options, on_error="log", json_encoder=DjangoJSONEncoder)

    # ---- Django's rules: keys and timeouts ----

    def _k(self, key: Any, version: int | None) -> str:
        """make_and_validate_key, with a fast path for the common case: the
        default key function and a key that draws no memcached warning."""
        if not self._plain_keys or self.key_func is not default_key_func:
            return self.make_and_validate_key(key, version=version)
        k = f"{self.key_prefix}:{self.version if version is None else version}:{key}"
        if not (len(k) <= 250 and k.isprintable() and " " not in k):
            self.validate_key(k)
        return k

    def _seconds(self, timeout: Any) -> float | None:
        """Relative seconds (None = never); <= 0 means do not keep."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        try:
            return float(timeout)
        except (TypeError, ValueError):
            raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}") from None

    # ---- the BaseCache API ----

    def get(self, key, default=None, version=None):
        return self._get(self._k(key, version), default)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, nx=False):
        """Store (returns None, as BaseCache). With ``nx=True`` only if absent,
        atomically, returning whether it stored (django-redis's SET NX)."""
        if nx:
            return self._cache.add(self._k(key, version), value, self._seconds(timeout))
        self._set(self._k(key, version), value, self._seconds(timeout))

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._cache.add(self._k(key, version), value, self._seconds(timeout))

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._cache.touch(self._k(key, version), self._seconds(timeout))

    def delete(self, key, version=None):
        return self._cache.delete(self._k(key, version))

    def has_key(self, key, version=None):
        return self._cache.has_key(self._k(key, version))

    def incr(self, key, delta=1, version=None, ignore_key_check=False):
        """Atomic, on integers of any size. ValueError if missing, unless
        `ignore_key_check` (then a missing key starts at 0, as django-redis)."""
        try:
            return self._cache.incr(self._k(key, version), delta, ignore_key_check)
        except KeyError:
            raise ValueError(f"Key '{key}' not found") from None

    def decr(self, key, delta=1, version=None, ignore_key_check=False):
        try:
            return self._cache.decr(self._k(key, version), delta, ignore_key_check)
        except KeyError:
            raise ValueError(f"Key '{key}' not found") from None

    def get_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None, wait=FLIGHT_WAIT):
        """BaseCache's get_or_set, stampede-safe: when several processes miss
        one key at once, one calls `default` and the rest wait for it (at
        most `wait` seconds)."""
        return self._cache.get_or_set(self._k(key, version), default, self._seconds(timeout), wait)

    def get_many(self, keys, version=None):
        made = {self._k(key, version): key for key in keys}
        return {made[k]: v for k, v in self._cache.get_many(made).items()}

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        made = {self._k(key, version): key for key in data}
        failed = self._cache.set_many({k: data[key] for k, key in made.items()}, self._seconds(timeout))
        return [made[k] for k in failed]

    def delete_many(self, keys, version=None):
        """How many of the keys existed (django-redis's count); None for no
        keys, as BaseCache (Django's suite asserts it; django-redis's asks
        only for a falsy answer)."""
        made = [self._k(key, version) for key in keys]
        return self._cache.delete_many(made) if made else None

    def clear(self):
        self._cache.clear()

    def incr_version(self, key, delta=1, version=None):
        """Move the value to version + delta, keeping the time it has left
        (BaseCache's version would make it live for the default timeout)."""
        if version is None:
            version = self.version
        if not self._cache.rename(self._k(key, version), self._k(key, version + delta)):
            raise ValueError(f"Key '{key}' not found")
        return version + delta

    # ---- beyond BaseCache: django-redis's extras ----

    def ttl(self, key, version=None):
        """Seconds left (a float); None if it never expires; 0 if missing."""
        return self._cache.ttl(self._k(key, version))

    def pttl(self, key, version=None):
        """Milliseconds left; None if it never expires; 0 if missing."""
        return self._cache.pttl(self._k(key, version))

    def expire(self, key, timeout, version=None):
        """A new expiry in seconds (DEFAULT_TIMEOUT: TIMEOUT). Whether the key existed."""
        return self._cache.expire(self._k(key, version), self._seconds(timeout))

    def pexpire(self, key, timeout, version=None):
        if timeout is DEFAULT_TIMEOUT:
            timeout = None if self.default_timeout is None else self.default_timeout * 1000
        return self._cache.pexpire(self._k(key, version), timeout)

    def expire_at(self, key, when, version=None):
        """Expire at a datetime or Unix timestamp (seconds); in the past deletes."""
        return self._cache.expire_at(self._k(key, version), when)

    def pexpire_at(self, key, when, version=None):
        """Expire at a datetime or Unix timestamp in milliseconds."""
        return self._cache.pexpire_at(self._k(key, version), when)

    def persist(self, key, version=None):
        """Never expire. Whether the key existed."""
        return self._cache.persist(self._k(key, version))

    def _pattern(self, pattern: str, version, prefix) -> str:
        """The glob over made keys, as django-redis's make_pattern."""
        _check_pattern(pattern)
        prefix = self.key_prefix if prefix is None else prefix
        version = self.version if version is None else version
        return self.key_func(pattern, glob_escape(prefix), glob_escape(str(version)))

    def iter_keys(self, search, itersize=None, version=None) -> Iterator[str]:
        """The user's keys matching the glob `search` under this alias's
        KEY_PREFIX and VERSION. Walks every shard (docs/architecture.md);
        a key present throughout is yielded exactly once."""
        for k in self._cache.iter_keys(self._pattern(search, version, None), itersize):
            yield self._reverse_key(k)

    def keys(self, search, version=None) -> list[str]:
        return list(self.iter_keys(search, version=version))

    def delete_pattern(self, pattern, version=None, prefix=None, itersize=None) -> int:
        """Delete the keys matching `pattern`; returns how many."""
        return self._cache.delete_pattern(self._pattern(pattern, version, prefix), itersize)

    def lock(self, key, version=None, timeout=None, sleep=0.1, blocking=True, blocking_timeout=None, thread_local=True):
        """The client's lock, like django-redis's (a redis-py ``Lock``):
        shared by every process of the host (`shmcache.lock`), or by every
        host on a TieredCache (redis-py's own, in Redis)."""
        return self._cache.lock(self._k(key, version), timeout, sleep, blocking, blocking_timeout, thread_local)

    def memoize(self, timeout=DEFAULT_TIMEOUT, key_prefix=None, typed=False) -> Callable:
        """Decorator caching a function's results (see `shmcache.memoize`)."""
        return memoize(self, timeout, key_prefix, typed)

    def stats(self) -> dict:
        return self._cache.stats()

    def close(self, **kwargs):
        """Nothing to release per request (Django calls it after each)."""
        self._cache.close()

    def dump(self, path) -> dict:
        """Write a snapshot of the cache to `path` (`shmcache.Cache.dump`)."""
        return self._cache.dump(path)

    def load(self, path) -> dict:
        """Load the snapshot `path` (`shmcache.Cache.load`)."""
        return self._cache.load(path)

    # ---- async: the operations take microseconds, so no thread-pool hop ----

    async def aget(self, key, default=None, version=None):
        return self.get(key, default, version)

    async def aset(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, nx=False):
        return self.set(key, value, timeout, version, nx)

    async def aadd(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self.add(key, value, timeout, version)

    async def atouch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self.touch(key, timeout, version)

    async def adelete(self, key, version=None):
        return self.delete(key, version)

    async def ahas_key(self, key, version=None):
        return self.has_key(key, version)

    async def aincr(self, key, delta=1, version=None, ignore_key_check=False):
        return self.incr(key, delta, version, ignore_key_check)

    async def adecr(self, key, delta=1, version=None, ignore_key_check=False):
        return self.decr(key, delta, version, ignore_key_check)

    async def aget_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None, wait=FLIGHT_WAIT):
        return await self._cache.aget_or_set(self._k(key, version), default, self._seconds(timeout), wait)

    async def aget_many(self, keys, version=None):
        return self.get_many(keys, version)

    async def aset_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return self.set_many(data, timeout, version)

    async def adelete_many(self, keys, version=None):
        return self.delete_many(keys, version)

    async def aclear(self):
        return self.clear()

    async def aincr_version(self, key, delta=1, version=None):
        return self.incr_version(key, delta, version)

    async def attl(self, key, version=None):
        return self.ttl(key, version)

    async def apttl(self, key, version=None):
        return self.pttl(key, version)

    async def aexpire(self, key, timeout, version=None):
        return self.expire(key, timeout, version)

    async def apexpire(self, key, timeout, version=None):
        return self.pexpire(key, timeout, version)

    async def aexpire_at(self, key, when, version=None):
        return self.expire_at(key, when, version)

    async def apexpire_at(self, key, when, version=None):
        return self.pexpire_at(key, when, version)

    async def apersist(self, key, version=None):
        return self.persist(key, version)

    async def akeys(self, search, version=None):
        return self.keys(search, version)

    async def aiter_keys(self, search, itersize=None, version=None) -> AsyncIterator[str]:
        for k in self.iter_keys(search, itersize, version):
            yield k

    async def adelete_pattern(self, pattern, version=None, prefix=None, itersize=None):
        return self.delete_pattern(pattern, version, prefix, itersize)

    def alock(self, key, version=None, timeout=None, sleep=0.1, blocking=True, blocking_timeout=None, thread_local=True):
        """`lock` for asyncio (its acquire waits with ``asyncio.sleep``):
        ``async with cache.alock("k"):``, inside a coroutine."""
        return self._cache.alock(self._k(key, version), timeout, sleep, blocking, blocking_timeout, thread_local)

    async def aclose(self, **kwargs):
        """`close`, inline (Django 6.1's BaseCache.aclose calls close in a thread)."""
        self.close(**kwargs)


class TieredCache(SharedMemoryCache):
    """shmcache on every host (L1) in front of Redis (L2), kept coherent
    (`shmcache.tiered`, docs/tiered.md)::

        "default": {"BACKEND": "shmcache.django.TieredCache", "LOCATION": "site-l1", "KEY_PREFIX": "site",
                    "OPTIONS": {"SIZE": "256MB", "L2": "redis://10.0.0.5:6379/0"}}

    The same face as `SharedMemoryCache` over a `TieredClient`: L2 keys and
    values are RedisCache's, so both can share a Redis. ``lock()`` is
    redis-py's lock on L2 (shared by every host). The ``a*`` methods await
    the client's own: Redis on ``redis.asyncio``, so the event loop never
    waits on it (an L1 hit answers inline)."""

    _cache: TieredClient

    def _client(self, location: str, options: dict) -> TieredClient:  # type: ignore[override]
        from .tiered.client import TieredClient

        return TieredClient.from_options(location, options, self.key_prefix, json_encoder=DjangoJSONEncoder)

    # ---- async: the client's own, on redis.asyncio ----

    async def aget(self, key, default=None, version=None):
        return await self._cache.aget(self._k(key, version), default)

    async def aset(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, nx=False):
        stored = await self._cache.aset(self._k(key, version), value, self._seconds(timeout), nx)
        return stored if nx else None

    async def aadd(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return await self._cache.aadd(self._k(key, version), value, self._seconds(timeout))

    async def atouch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return await self._cache.atouch(self._k(key, version), self._seconds(timeout))

    async def adelete(self, key, version=None):
        return await self._cache.adelete(self._k(key, version))

    async def ahas_key(self, key, version=None):
        return await self._cache.ahas_key(self._k(key, version))

    async def aincr(self, key, delta=1, version=None, ignore_key_check=False):
        try:
            return await self._cache.aincr(self._k(key, version), delta, ignore_key_check)
        except KeyError:
            raise ValueError(f"Key '{key}' not found") from None

    async def adecr(self, key, delta=1, version=None, ignore_key_check=False):
        try:
            return await self._cache.adecr(self._k(key, version), delta, ignore_key_check)
        except KeyError:
            raise ValueError(f"Key '{key}' not found") from None

    async def aget_many(self, keys, version=None):
        made = {self._k(key, version): key for key in keys}
        return {made[k]: v for k, v in (await self._cache.aget_many(made)).items()}

    async def aset_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        made = {self._k(key, version): key for key in data}
        failed = await self._cache.aset_many({k: data[key] for k, key in made.items()}, self._seconds(timeout))
        return [made[k] for k in failed]

    async def adelete_many(self, keys, version=None):
        made = [self._k(key, version) for key in keys]
        return await self._cache.adelete_many(made) if made else None

    async def aclear(self):
        await self._cache.aclear()

    async def aincr_version(self, key, delta=1, version=None):
        if version is None:
            version = self.version
        if not await self._cache.arename(self._k(key, version), self._k(key, version + delta)):
            raise ValueError(f"Key '{key}' not found")
        return version + delta

    async def attl(self, key, version=None):
        return await self._cache.attl(self._k(key, version))

    async def apttl(self, key, version=None):
        return await self._cache.apttl(self._k(key, version))

    async def aexpire(self, key, timeout, version=None):
        return await self._cache.aexpire(self._k(key, version), self._seconds(timeout))

    async def apexpire(self, key, timeout, version=None):
        if timeout is DEFAULT_TIMEOUT:
            timeout = None if self.default_timeout is None else self.default_timeout * 1000
        return await self._cache.apexpire(self._k(key, version), timeout)

    async def aexpire_at(self, key, when, version=None):
        return await self._cache.aexpire_at(self._k(key, version), when)

    async def apexpire_at(self, key, when, version=None):
        return await self._cache.apexpire_at(self._k(key, version), when)

    async def apersist(self, key, version=None):
        return await self._cache.apersist(self._k(key, version))

    async def akeys(self, search, version=None):
        return [k async for k in self.aiter_keys(search, version=version)]

    async def aiter_keys(self, search, itersize=None, version=None) -> AsyncIterator[str]:
        async for k in self._cache.aiter_keys(self._pattern(search, version, None), itersize):
            yield self._reverse_key(k)

    async def adelete_pattern(self, pattern, version=None, prefix=None, itersize=None):
        return await self._cache.adelete_pattern(self._pattern(pattern, version, prefix), itersize)

    async def aclose(self, **kwargs):
        """Close this event loop's Redis connections, then `close`."""
        await self._cache.aclose()
        self.close(**kwargs)
