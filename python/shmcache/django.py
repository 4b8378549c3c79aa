"""Django cache backend: every worker process of the host shares one cache.

    CACHES = {"default": {
        "BACKEND": "shmcache.django.SharedMemoryCache",
        "LOCATION": "mysite",
        "OPTIONS": {"SIZE": "256MB"},
    }}

Every alias with the same LOCATION (whatever its KEY_PREFIX, VERSION or
KEY_FUNCTION) sees one store. Integers are stored natively so incr/decr are
atomic across workers; exact str and bytes as they are; everything else is
pickled. A value that can no longer be unpickled is a miss and is dropped.
A lock that cannot be had within LOCK_TIMEOUT makes a read a miss and a write
a no-op (logged), never an error page; incr/decr raise instead, since they
must not silently lose a count.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, default_key_func

from . import _core, attach
from ._codec import encode, load, pickled
from ._options import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_MAX_ITEM_SIZE,
    DEFAULT_SIZE,
    check_location,
    parse_int,
    parse_seconds,
    parse_size,
)

log = logging.getLogger("shmcache")

_KNOWN_OPTIONS = {"SIZE", "MAX_ITEM_SIZE", "SHARDS", "LOCK_TIMEOUT", "PICKLE_PROTOCOL"}
# Understood by BaseCache for LocMem/file/db culling; eviction here is automatic.
_IGNORED_OPTIONS = {"MAX_ENTRIES", "CULL_FREQUENCY"}

_ShmCacheError = _core.ShmCacheError
_LockTimeout = _core.LockTimeout
_ValueTooLarge = _core.ValueTooLarge


class SharedMemoryCache(BaseCache):
    def __init__(self, location: str, params: dict) -> None:
        super().__init__(params)
        options = params.get("OPTIONS") or {}
        unknown = set(options) - _KNOWN_OPTIONS - _IGNORED_OPTIONS
        if unknown:
            raise ValueError(
                f"unknown OPTIONS for shmcache: {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(_KNOWN_OPTIONS))}"
            )
        self._location = check_location(location)
        self._size = parse_size(options.get("SIZE", DEFAULT_SIZE), "SIZE")
        self._max_item_size = parse_size(options.get("MAX_ITEM_SIZE", DEFAULT_MAX_ITEM_SIZE), "MAX_ITEM_SIZE")
        self._shards = parse_int(options.get("SHARDS", 0), "SHARDS", 0, 1024)
        self._lock_timeout = parse_seconds(options.get("LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT), "LOCK_TIMEOUT")
        self._protocol = parse_int(
            options.get("PICKLE_PROTOCOL", pickle.HIGHEST_PROTOCOL), "PICKLE_PROTOCOL", 0, pickle.HIGHEST_PROTOCOL
        )
        # Skip validate_key for keys it cannot warn about, unless a subclass changed it.
        self._plain_validation = type(self).validate_key is BaseCache.validate_key
        self._core = attach(self._location, self._size, self._max_item_size, self._shards, self._lock_timeout)

    # ---- helpers ----

    def _k(self, key: Any, version: int | None) -> str:
        """make_and_validate_key, with a fast path for the common case: the
        default key function and a key that draws no memcached warning."""
        if version is None:
            version = self.version
        if self.key_func is default_key_func:
            k = f"{self.key_prefix}:{version}:{key}"
        else:
            k = self.key_func(key, self.key_prefix, version)
        if not (self._plain_validation and len(k) <= 250 and k.isprintable() and " " not in k):
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

    def _load(self, k: str, item: tuple, default: Any) -> Any:
        try:
            return load(item)
        except Exception as e:  # code changed between deploys, class gone, ...
            log.warning("shmcache: dropping value of %.200r that cannot be loaded: %r", k, e)
            self._try(self._core.delete, k)
            return default

    def _try(self, fn, *args, fallback=None):
        """Run a core call; a lock timeout or a damaged segment is logged and
        answered with `fallback` (a cache must not take the site down)."""
        try:
            return fn(*args)
        except _ShmCacheError as e:
            if isinstance(e, _ValueTooLarge):
                raise
            log.warning("shmcache %s: %s", self._location, e)
            return fallback

    def _store(self, k: str, value: Any, seconds: float | None, add: bool) -> bool:
        v = encode(value, self._protocol)
        try:
            try:
                return self._core.set(k, v, seconds, add)
            except UnicodeEncodeError:  # a str with lone surrogates: pickle keeps it
                return self._core.set(k, pickled(value, self._protocol), seconds, add)
        except _ValueTooLarge as e:
            log.warning("shmcache: not storing %.200r: %s", k, e)
            if not add:
                self._try(self._core.delete, k)  # the old value must not look current
            return False
        except _ShmCacheError as e:
            log.warning("shmcache %s: %s", self._location, e)
            return False

    # ---- the BaseCache API ----

    def get(self, key, default=None, version=None):
        k = self._k(key, version)
        try:
            v = self._core.get(k)
        except _ShmCacheError as e:
            log.warning("shmcache %s: %s", self._location, e)
            return default
        if v is None:
            return default
        if type(v) is tuple:
            return self._load(k, v, default)
        return v

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        k = self._k(key, version)
        seconds = self._seconds(timeout)
        if seconds is not None and seconds <= 0:
            self._try(self._core.delete, k)
            return
        self._store(k, value, seconds, False)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        k = self._k(key, version)
        seconds = self._seconds(timeout)
        if seconds is not None and seconds <= 0:
            # Nothing is kept; report what a store-then-expire would have.
            return not self._try(self._core.has, k, fallback=True)
        return self._store(k, value, seconds, True)

    def get_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        val = self.get(key, self._missing_key, version=version)
        if val is self._missing_key:
            if callable(default):
                default = default()
            self.add(key, default, timeout=timeout, version=version)
            # Another process may have won the add: return what is stored.
            return self.get(key, default, version=version)
        return val

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        k = self._k(key, version)
        seconds = self._seconds(timeout)
        if seconds is not None and seconds <= 0:
            return bool(self._try(self._core.delete, k, fallback=False))
        return bool(self._try(self._core.touch, k, seconds, fallback=False))

    def delete(self, key, version=None):
        return bool(self._try(self._core.delete, self._k(key, version), fallback=False))

    def has_key(self, key, version=None):
        return bool(self._try(self._core.has, self._k(key, version), fallback=False))

    def incr(self, key, delta=1, version=None):
        k = self._k(key, version)
        try:
            return self._core.incr(k, delta)
        except KeyError:
            raise ValueError(f"Key '{key}' not found") from None

    def decr(self, key, delta=1, version=None):
        if type(delta) is not int:
            raise TypeError(f"delta must be an integer, not {type(delta).__name__}")
        return self.incr(key, -delta, version=version)

    def get_many(self, keys, version=None):
        keys = list(keys)
        ks = [self._k(key, version) for key in keys]
        values, _ = self._try(self._core.get_many, ks, fallback=None) or ((), 0)
        out = {}
        for key, k, v in zip(keys, ks, values):
            if v is not None:
                if type(v) is tuple:
                    v = self._load(k, v, self._missing_key)
                    if v is self._missing_key:
                        continue
                out[key] = v
        return out

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        keys = list(data)
        ks = [self._k(key, version) for key in keys]
        seconds = self._seconds(timeout)
        if seconds is not None and seconds <= 0:
            self._try(self._core.delete_many, ks)
            return []
        items = []
        for key, k in zip(keys, ks):
            v = encode(data[key], self._protocol)
            if type(v) is str and not v.isascii():
                try:
                    v.encode()
                except UnicodeEncodeError:
                    v = pickled(data[key], self._protocol)
            items.append((k, v))
        failed_ix = self._try(self._core.set_many, items, seconds, fallback=None)
        if failed_ix is None:
            return keys
        if failed_ix:
            log.warning("shmcache: %d key(s) not stored (too large or lock timeout)", len(failed_ix))
            self._try(self._core.delete_many, [ks[i] for i in failed_ix])
        return [keys[i] for i in failed_ix]

    def delete_many(self, keys, version=None):
        self._try(self._core.delete_many, [self._k(key, version) for key in keys])

    def clear(self):
        self._try(self._core.clear)

    def incr_version(self, key, delta=1, version=None):
        if version is None:
            version = self.version
        old = self._k(key, version)
        new = self._k(key, version + delta)
        value = self.get(key, self._missing_key, version=version)
        if value is self._missing_key:
            raise ValueError(f"Key '{key}' not found")
        ms = self._try(self._core.ttl_ms, old, fallback=-1)
        seconds = None if ms < 0 else max(ms, 1) / 1000
        self._store(new, value, seconds, False)
        self._try(self._core.delete, old)
        return version + delta

    def decr_version(self, key, delta=1, version=None):
        return self.incr_version(key, -delta, version)

    def close(self, **kwargs):
        """Called by Django after every request: nothing to do, the shared
        mapping stays for the life of the process."""

    # ---- beyond BaseCache ----

    def ttl(self, key, version=None):
        """Seconds left; None if it never expires; 0 if missing (django-redis style)."""
        ms = self._try(self._core.ttl_ms, self._k(key, version), fallback=-2)
        return None if ms == -1 else 0 if ms == -2 else ms / 1000

    def stats(self) -> dict:
        return self._core.stats()

    # ---- async: the operations take microseconds, so no thread-pool hop ----

    async def aget(self, key, default=None, version=None):
        return self.get(key, default, version)

    async def aset(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self.set(key, value, timeout, version)

    async def aadd(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self.add(key, value, timeout, version)

    async def aget_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        val = await self.aget(key, self._missing_key, version=version)
        if val is self._missing_key:
            if callable(default):
                default = default()
            await self.aadd(key, default, timeout=timeout, version=version)
            return await self.aget(key, default, version=version)
        return val

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

    async def adecr_version(self, key, delta=1, version=None):
        return self.decr_version(key, delta, version)

    async def aclose(self, **kwargs):
        return self.close(**kwargs)
