"""Litestar face: a `Store` in shared memory, so a rate limit, a response
cache and server-side sessions hold across every worker of the host
(Litestar's own MemoryStore is per process).

    from shmcache.litestar import SharedMemoryStore
    root = SharedMemoryStore("myapp", size="256MB")
    app = Litestar(stores={"rate_limit": root.with_namespace("rate_limit"),
                           "response_cache": root.with_namespace("response_cache"),
                           "sessions": root.with_namespace("sessions")}, ...)

A thin face over `shmcache.Cache`. Its methods are coroutines that run
inline (the operations take microseconds). As Litestar's own stores:
values are bytes (a str is stored as UTF-8); ``expires_in`` of 0 or None
never expires; ``expires_in(key)`` is None for a missing key and -1 for one
that never expires; ``get(key, renew_for=...)`` renews only a key that has
an expiry. Beyond MemoryStore: ``exists`` is False once a key has expired
(as RedisStore's). Namespaces nest and share one segment; ``delete_all``
clears its namespace and the ones below it, never those above or beside
(RedisStore's pattern also matches a sibling sharing a prefix).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any
from urllib.parse import quote

try:
    from litestar.exceptions import ImproperlyConfiguredException
    from litestar.stores.base import NamespacedStore
except ImportError:
    raise ImportError("shmcache.litestar needs Litestar: pip install 'shmcache[litestar]' (or pip install litestar)") from None

from ._glob import glob_escape
from ._options import DEFAULT_SIZE, Settings, check_location
from .client import Cache

FACE = "shmcache.litestar.SharedMemoryStore"
_DEFAULT_NAMESPACE = "LITESTAR"


def _seconds(value: int | timedelta | None, name: str) -> float | None:
    """None for never; seconds otherwise (0 means never, as Litestar's MemoryStore)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be seconds (an int) or a timedelta, not {value!r}")
    return None if value == 0 else float(value)


class SharedMemoryStore(NamespacedStore):
    """A Litestar store on LOCATION `location`, in `namespace` (None: no
    namespace, and then no ``delete_all``, as RedisStore)."""

    __slots__ = ("_cache", "_path", "_prefix")

    def __init__(
        self,
        location: str,
        *,
        size: int | str = DEFAULT_SIZE,
        namespace: str | None = _DEFAULT_NAMESPACE,
        **options: Any,
    ) -> None:
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise TypeError(f"{FACE}: namespace must be a non-empty str or None, not {namespace!r}")
        settings = Settings.for_face(FACE, {"size": size, **options})
        self._cache = Cache.from_settings(check_location(location, "location"), settings, on_error="log")
        self._path: tuple[str, ...] = () if namespace is None else (namespace,)
        self._prefix = self._prefix_of(self._path)
        self.namespace = namespace

    @staticmethod
    def _prefix_of(path: tuple[str, ...]) -> str:
        # Each name quoted (no '/' left in it) and closed by '/': a namespace's
        # keys, and its children's, all start with its prefix; a sibling's never do.
        return "".join(quote(name, safe="") + "/" for name in path)

    def with_namespace(self, namespace: str) -> SharedMemoryStore:
        """A store in the child namespace `namespace` of this one, on the same segment."""
        if not isinstance(namespace, str) or not namespace:
            raise TypeError(f"{FACE}: namespace must be a non-empty str, not {namespace!r}")
        child = object.__new__(type(self))
        child._cache = self._cache
        child._path = (*self._path, namespace)
        child._prefix = self._prefix_of(child._path)
        child.namespace = "/".join(child._path)
        return child

    def _k(self, key: str) -> str:
        return self._prefix + ":" + key  # ':' never ends a prefix: no key is a namespace

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, bytes):
            raise TypeError(f"a store's value is str or bytes, not {type(value).__name__}")
        self._cache.set(self._k(key), value, _seconds(expires_in, "expires_in"))

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        k = self._k(key)
        if not renew_for:
            return self._cache.get(k)
        got = self._cache.get_with_ttl(k)
        if got is None:
            return None
        value, left = got
        if left is not None:  # only a key that has an expiry is renewed
            self._cache.expire(k, _seconds(renew_for, "renew_for"))
        return value

    async def delete(self, key: str) -> None:
        self._cache.delete(self._k(key))

    async def delete_all(self) -> None:
        """Every key of this namespace and of the ones below it."""
        if not self._path:
            raise ImproperlyConfiguredException("Cannot perform delete operation: No namespace configured")
        self._cache.delete_pattern(glob_escape(self._prefix) + "*")

    async def exists(self, key: str) -> bool:
        return self._cache.has_key(self._k(key))

    async def expires_in(self, key: str) -> int | None:
        """Whole seconds left; -1 if it never expires; None if missing."""
        ms = self._cache.pttl(self._k(key))
        if ms is None:
            return -1
        if ms == 0:
            return None
        return ms // 1000
