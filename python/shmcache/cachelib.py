"""cachelib (and Flask-Caching) face: every worker process of the host
shares one cache.

    from shmcache.cachelib import SharedMemoryCache
    cache = SharedMemoryCache("myapp", size="256MB", key_prefix="flask:")

or, with Flask-Caching, as its backend (no factory of its own)::

    app.config.from_mapping(CACHE_TYPE="shmcache.cachelib.SharedMemoryCache", CACHE_DEFAULT_TIMEOUT=300,
                            CACHE_OPTIONS={"location": "myapp", "size": "256MB", "key_prefix": "flask:"})

A thin face over `shmcache.Cache` (on_error="log": a lock timeout is a miss
or a failed write, never an exception), with cachelib's semantics: a timeout
of 0 never expires (``timedelta`` timeouts work); ``get`` is None on a miss;
``set``/``add``/``delete``/``clear`` return bools; ``get_many`` is a list in
key order; ``delete_many`` returns the deleted keys (a missing key counts as
deleted); ``inc``/``dec`` are atomic across processes, a missing key starting
at 0; with a ``key_prefix``, ``clear()`` clears that prefix only. An
assigned ``cache.serializer`` (cachelib's ``JSONSerializer``, say) encodes
every value but exact ints, which stay native so ``inc`` stays atomic;
without one, shmcache's own encoding (bytes, str and ints as they are,
anything else pickled).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

try:
    from cachelib import BaseCache
except ImportError:
    raise ImportError("shmcache.cachelib needs cachelib: pip install 'shmcache[flask]' (or pip install cachelib)") from None

from ._glob import glob_escape
from ._options import DEFAULT_SIZE, Settings, check_location
from .client import Cache

FACE = "shmcache.cachelib.SharedMemoryCache"


class SharedMemoryCache(BaseCache):
    """A cachelib cache in shared memory on LOCATION `location` (see the module doc)."""

    def __init__(
        self,
        location: str,
        *,
        size: int | str = DEFAULT_SIZE,
        default_timeout: int | dt.timedelta = 300,
        key_prefix: str | None = None,
        ignore_delete_many_errors: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(default_timeout=default_timeout, ignore_delete_many_errors=ignore_delete_many_errors)
        if key_prefix is not None and not isinstance(key_prefix, str):
            raise TypeError(f"{FACE}: key_prefix must be a str or None, not {type(key_prefix).__name__}")
        settings = Settings.for_face(
            FACE,
            {"size": size, **options},
            refused={"serializer": "assign cache.serializer (a cachelib serializer) instead"},
        )
        self._cache = Cache.from_settings(check_location(location, "location"), settings, on_error="log")
        self.key_prefix = key_prefix or ""
        self.serializer: Any = None  # a cachelib serializer, once assigned (Flask-Caching's CACHE_SERIALIZER)

    # -- cachelib's rules: keys, timeouts, values --

    def _k(self, key: str) -> str:
        return self.key_prefix + key

    def _seconds(self, timeout: int | dt.timedelta | None) -> float | None:
        t = self._normalize_timeout(timeout)
        return None if t == 0 else t  # 0: never expires

    def _dump(self, value: Any) -> Any:
        s = self.serializer
        if s is None or type(value) is int:
            return value
        return s.dumps(value)

    def _load(self, stored: Any) -> Any:
        s = self.serializer
        if s is None or stored is None or type(stored) is int:
            return stored
        return s.loads(stored)

    # -- cachelib's BaseCache API --

    def get(self, key: str) -> Any:
        return self._load(self._cache.get(self._k(key)))

    def set(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        return self._cache.set(self._k(key), self._dump(value), self._seconds(timeout))

    def add(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        return self._cache.add(self._k(key), self._dump(value), self._seconds(timeout))

    def delete(self, key: str) -> bool:
        return self._cache.delete(self._k(key))

    def has(self, key: str) -> bool:
        return self._cache.has_key(self._k(key))

    def get_many(self, *keys: str) -> list[Any]:
        found = self._cache.get_many([self._k(k) for k in keys])
        return [self._load(found.get(self._k(k))) for k in keys]

    def set_many(self, mapping: dict[str, Any], timeout: int | dt.timedelta | None = None) -> list[Any]:
        """The keys stored (all of them, but those too large or whose shard's lock timed out)."""
        failed = set(self._cache.set_many({self._k(k): self._dump(v) for k, v in mapping.items()}, self._seconds(timeout)))
        return [k for k in mapping if self._k(k) not in failed]

    def delete_many(self, *keys: str) -> list[Any]:
        """The keys gone afterwards (a missing key counts as deleted);
        RuntimeError naming the others if ``ignore_delete_many_errors`` is False."""
        self._cache.delete_many([self._k(k) for k in keys])
        failed = [k for k in keys if self._cache.has_key(self._k(k))]
        if failed and not self.ignore_delete_many_errors:
            raise RuntimeError(f"Failed to delete keys: {failed}")
        return [k for k in keys if k not in failed]

    def clear(self) -> bool:
        """Every key under ``key_prefix`` (the whole cache without one)."""
        if not self.key_prefix:
            self._cache.clear()
        else:
            self._cache.delete_pattern(glob_escape(self.key_prefix) + "*")
        return True

    def inc(self, key: str, delta: int = 1) -> int | None:
        """Atomic across processes; a missing key starts at 0 (and never expires, as Redis INCRBY)."""
        return self._cache.incr(self._k(key), delta, ignore_key_check=True)

    def dec(self, key: str, delta: int = 1) -> int | None:
        return self._cache.decr(self._k(key), delta, ignore_key_check=True)

    # -- beyond cachelib --

    def stats(self) -> dict:
        """The shared cache's counters (`shmcache.Cache.stats`): every worker's."""
        return self._cache.stats()
