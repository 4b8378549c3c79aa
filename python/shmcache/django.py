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

from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, default_key_func

from .client import Cache


class SharedMemoryCache(BaseCache):
    def __init__(self, location: str, params: dict) -> None:
        super().__init__(params)
        self._cache = Cache.from_options(location, params.get("OPTIONS") or {}, on_error="log")
        self._get, self._set = self._cache.get, self._cache.set  # bound once: the hot paths
        # Keys are built inline unless a subclass changed how (or KEY_FUNCTION
        # is set, checked per call: Django's tests swap it on the instance).
        cls = type(self)
        self._plain_keys = all(
            getattr(cls, m) is getattr(BaseCache, m) for m in ("make_key", "validate_key", "make_and_validate_key")
        )

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

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        self._set(self._k(key, version), value, self._seconds(timeout))

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._cache.add(self._k(key, version), value, self._seconds(timeout))

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._cache.touch(self._k(key, version), self._seconds(timeout))

    def delete(self, key, version=None):
        return self._cache.delete(self._k(key, version))

    def has_key(self, key, version=None):
        return self._cache.has_key(self._k(key, version))

    def incr(self, key, delta=1, version=None):
        try:
            return self._cache.incr(self._k(key, version), delta)
        except KeyError:
            raise ValueError(f"Key '{key}' not found") from None

    def decr(self, key, delta=1, version=None):
        try:
            return self._cache.decr(self._k(key, version), delta)
        except KeyError:
            raise ValueError(f"Key '{key}' not found") from None

    def get_many(self, keys, version=None):
        made = {self._k(key, version): key for key in keys}
        return {made[k]: v for k, v in self._cache.get_many(made).items()}

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        made = {self._k(key, version): key for key in data}
        failed = self._cache.set_many({k: data[key] for k, key in made.items()}, self._seconds(timeout))
        return [made[k] for k in failed]

    def delete_many(self, keys, version=None):
        self._cache.delete_many([self._k(key, version) for key in keys])

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

    # ---- beyond BaseCache ----

    def ttl(self, key, version=None):
        """Seconds left; None if it never expires; 0 if missing (django-redis style)."""
        return self._cache.ttl(self._k(key, version))

    def stats(self) -> dict:
        return self._cache.stats()

    # ---- async: the operations take microseconds, so no thread-pool hop ----

    async def aget(self, key, default=None, version=None):
        return self.get(key, default, version)

    async def aset(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self.set(key, value, timeout, version)

    async def aadd(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self.add(key, value, timeout, version)

    async def atouch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self.touch(key, timeout, version)

    async def adelete(self, key, version=None):
        return self.delete(key, version)

    async def ahas_key(self, key, version=None):
        return self.has_key(key, version)

    async def aincr(self, key, delta=1, version=None):
        return self.incr(key, delta, version)

    async def adecr(self, key, delta=1, version=None):
        return self.decr(key, delta, version)

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
