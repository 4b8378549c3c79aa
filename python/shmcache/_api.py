"""What the two clients share, written once: `shmcache.Cache` (one host)
and `shmcache.tiered.TieredClient` (L1 in front of Redis).

- the error policy (`on_error`): a lock timeout or an unusable segment
  (`ShmCacheError`) raised, or logged and answered as an empty cache would;
- the checks of arguments (timeouts, deltas, key lists, batch sizes, waits);
- the lock signatures (redis-py's ``Lock``), and the operations derived
  from a client's primitives, as Django's ``BaseCache`` derives ``get_many``
  from ``get``: ``ttl``/``pttl`` from ``_ttl_ms``, the expire family from
  ``touch``, ``keys`` and ``delete_pattern`` from ``iter_keys`` and
  ``delete_many``, ``memoize`` from ``get_or_set`` (and their ``a*`` twins
  from the async primitives, for a client that has them).
"""

from __future__ import annotations

import datetime
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ._core import ShmCacheError
from .memoize import memoize

log = logging.getLogger("shmcache")

_DEFAULT = object()  # "the client's default timeout"
_MISSING = object()

# How long get_or_set waits, by default, for another process computing the
# same key before computing it itself.
FLIGHT_WAIT = 10.0


# ---- the error policy ----


def on_error(fallback: Any = None, *, answer: Callable[..., Any] | None = None) -> Callable:
    """The error policy of one method, declared where it is defined: a
    `ShmCacheError` (a lock not had within LOCK_TIMEOUT, an unusable
    segment) is raised when the client's ``on_error`` is "raise", or logged,
    and the method answers as an empty cache would: `fallback`, or
    ``answer(*args, **kwargs)`` (e.g. ``set_many``'s keys, all unstored).
    A fallback is one object returned to every caller, so a mutable one is
    refused: build it with ``answer`` (``answer=lambda keys: {}``)."""
    if isinstance(fallback, (dict, list, set, bytearray)):
        raise TypeError(f"on_error: a mutable fallback ({type(fallback).__name__}) would be shared by every caller; use answer=")

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except ShmCacheError as e:
                return self._failed(e, fallback if answer is None else answer(*args, **kwargs))

        return guarded

    return decorate


# ---- argument checks ----


def _delta(delta: Any) -> int:
    if type(delta) is not int:
        raise TypeError(f"delta must be an integer, not {type(delta).__name__}")
    return delta


def _until(when: Any, unit: float, name: str) -> float:
    """Seconds from now until `when` (a datetime, or a Unix time in `unit`s)."""
    if isinstance(when, datetime.datetime):
        return when.timestamp() - time.time()
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        raise TypeError(f"{name} must be a datetime or a Unix timestamp, not {type(when).__name__}")
    return when * unit - time.time()


def _itersize(itersize: Any) -> int:
    if itersize is None:
        return 1000
    if isinstance(itersize, bool) or not isinstance(itersize, int) or itersize < 1:
        raise ValueError(f"itersize must be a positive integer (records per batch), not {itersize!r}")
    return itersize


def _check_pattern(pattern: Any) -> str:
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str (a glob such as 'user:*'), not {type(pattern).__name__}")
    return pattern


def _check_wait(wait: Any) -> None:
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not wait >= 0:
        raise ValueError(f"wait must be seconds >= 0, not {wait!r}")


def _key_list(keys: Any) -> list:
    """A list of keys from an iterable; a lone str or bytes is refused (it
    would otherwise be taken as one key per character)."""
    if isinstance(keys, (str, bytes)):
        raise TypeError(f"expected an iterable of keys, not a single {type(keys).__name__} key")
    return list(keys)


def _flight_key(key: Any) -> Any:
    """The key of the marker a get_or_set computation holds (starts with NUL:
    outside every Django KEY_PREFIX, so no key iteration lists it)."""
    if isinstance(key, bytes):
        return b"\0shmcache-flight\0" + key
    if isinstance(key, str):
        return "\0shmcache-flight\0" + key
    raise TypeError(f"cache keys must be str or bytes, not {type(key).__name__}")


def _ttl_seconds(ms: int) -> float | None:
    return None if ms == -1 else 0 if ms == -2 else ms / 1000


def _ttl_millis(ms: int) -> int | None:
    return None if ms == -1 else 0 if ms == -2 else ms


class ClientBase:
    """The shared part of a client. A client defines the primitives
    (``touch``, ``_ttl_ms``, ``iter_keys``, ``delete_many``, ``get_or_set``,
    ``_new_lock``, ...) and the attributes ``name``, ``default_timeout`` and
    ``_raise``; everything here is derived from them."""

    name: str
    default_timeout: float | None
    _raise: bool

    def _failed(self, e: ShmCacheError, fallback: Any) -> Any:
        """A lock timeout or an unusable segment: raise it, or log it and
        answer `fallback` (`on_error`)."""
        if self._raise:
            raise e
        log.warning("shmcache %s: %s", self.name, e)
        return fallback

    def _timeout(self, timeout: Any) -> float | None:
        if timeout is _DEFAULT:
            return self.default_timeout
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be seconds (int or float) or None, not {type(timeout).__name__}")
        return timeout

    # -- derived from touch and _ttl_ms --

    def ttl(self, key: str | bytes) -> float | None:
        """Seconds left; None if it never expires; 0 if missing or expired."""
        return _ttl_seconds(self._ttl_ms(key))

    def pttl(self, key: str | bytes) -> int | None:
        """Milliseconds left; None if it never expires; 0 if missing or expired."""
        return _ttl_millis(self._ttl_ms(key))

    def expire(self, key: str | bytes, timeout: Any) -> bool:
        """Give an existing key `timeout` seconds to live (None: never; 0 or
        less deletes it). Whether the key existed."""
        return self.touch(key, timeout)

    def pexpire(self, key: str | bytes, timeout: Any) -> bool:
        """`expire` in milliseconds."""
        t = self._timeout(timeout)
        return self.touch(key, None if t is None else t / 1000)

    def expire_at(self, key: str | bytes, when: Any) -> bool:
        """Expire at `when`: a datetime (naive means local time) or a Unix
        timestamp in seconds; a time in the past deletes the key."""
        return self.touch(key, _until(when, 1.0, "when"))

    def pexpire_at(self, key: str | bytes, when: Any) -> bool:
        """`expire_at` with a Unix timestamp in milliseconds (or a datetime)."""
        return self.touch(key, _until(when, 0.001, "when"))

    def persist(self, key: str | bytes) -> bool:
        """Remove the key's expiry. Whether the key existed."""
        return self.touch(key, None)

    # -- derived from iter_keys and delete_many --

    def keys(self, pattern: str = "*") -> list[str]:
        """`iter_keys` as a list."""
        return list(self.iter_keys(pattern))

    def delete_pattern(self, pattern: str, itersize: int | None = None) -> int:
        """Delete the keys matching `pattern` (a batch of `itersize` at a time); how many were deleted."""
        n, batch, size = 0, [], _itersize(itersize)
        for k in self.iter_keys(pattern, size):
            batch.append(k)
            if len(batch) >= size:
                n += self.delete_many(batch)
                batch = []
        return n + (self.delete_many(batch) if batch else 0)

    # -- locks (redis-py's Lock signature) and memoize --

    def lock(
        self,
        key: str | bytes,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        thread_local: bool = True,
    ) -> Any:
        """A lock on `key`, shaped like redis-py's ``Lock`` (what
        django-redis's ``lock()`` returns): shared by every process of the
        host (`shmcache.lock`), or by every host (the tier's, in Redis)."""
        return self._new_lock(key, (timeout, sleep, blocking, blocking_timeout, thread_local), False)

    def alock(self, key: str | bytes, *args: Any, **kwargs: Any) -> Any:
        """`lock` for asyncio, with `lock`'s arguments: ``async with
        cache.alock("k"):`` (its acquire waits with ``asyncio.sleep``)."""
        bound = _LOCK_SIGNATURE.bind(self, key, *args, **kwargs)
        bound.apply_defaults()
        _, key, *options = bound.args
        return self._new_lock(key, tuple(options), True)

    def memoize(self, timeout: Any = _DEFAULT, key_prefix: str | None = None, typed: bool = False) -> Callable:
        """Decorator: cache a function's results by its arguments, through
        `get_or_set` (see `shmcache.memoize`)."""
        return memoize(self, timeout, key_prefix, typed)

    # The primitives these are derived from; a client defines them.

    def touch(self, key: str | bytes, timeout: Any = _DEFAULT) -> bool:
        raise NotImplementedError

    def _ttl_ms(self, key: str | bytes) -> int:
        raise NotImplementedError

    def iter_keys(self, pattern: str = "*", itersize: int | None = None) -> Iterator[str]:
        raise NotImplementedError

    def delete_many(self, keys: Any) -> int:
        raise NotImplementedError

    def _new_lock(self, key: str | bytes, options: tuple, for_asyncio: bool) -> Any:
        """A lock on `key` with redis-py's options (timeout, sleep,
        blocking, blocking_timeout, thread_local), for asyncio or not."""
        raise NotImplementedError


_LOCK_SIGNATURE = inspect.signature(ClientBase.lock)
ClientBase.alock.__signature__ = _LOCK_SIGNATURE  # type: ignore[attr-defined]


class AsyncClientBase(ClientBase):
    """ClientBase, and the ``a*`` twins of its derived operations, for a
    client whose primitives have async twins (``atouch``, ``_attl_ms``,
    ``aiter_keys``, ``adelete_many``)."""

    async def attl(self, key: str | bytes) -> float | None:
        return _ttl_seconds(await self._attl_ms(key))

    async def apttl(self, key: str | bytes) -> int | None:
        return _ttl_millis(await self._attl_ms(key))

    async def aexpire(self, key: str | bytes, timeout: Any) -> bool:
        return await self.atouch(key, timeout)

    async def apexpire(self, key: str | bytes, timeout: Any) -> bool:
        t = self._timeout(timeout)
        return await self.atouch(key, None if t is None else t / 1000)

    async def aexpire_at(self, key: str | bytes, when: Any) -> bool:
        return await self.atouch(key, _until(when, 1.0, "when"))

    async def apexpire_at(self, key: str | bytes, when: Any) -> bool:
        return await self.atouch(key, _until(when, 0.001, "when"))

    async def apersist(self, key: str | bytes) -> bool:
        return await self.atouch(key, None)

    async def akeys(self, pattern: str = "*") -> list[str]:
        return [k async for k in self.aiter_keys(pattern)]

    async def adelete_pattern(self, pattern: str, itersize: int | None = None) -> int:
        n, batch, size = 0, [], _itersize(itersize)
        async for k in self.aiter_keys(pattern, size):
            batch.append(k)
            if len(batch) >= size:
                n += await self.adelete_many(batch)
                batch = []
        return n + (await self.adelete_many(batch) if batch else 0)

    # The primitives these are derived from; a client defines them.

    async def _attl_ms(self, key: str | bytes) -> int:
        raise NotImplementedError

    async def atouch(self, key: str | bytes, timeout: Any = _DEFAULT) -> bool:
        raise NotImplementedError

    def aiter_keys(self, pattern: str = "*", itersize: int | None = None) -> AsyncIterator[str]:
        raise NotImplementedError

    async def adelete_many(self, keys: Any) -> int:
        raise NotImplementedError
