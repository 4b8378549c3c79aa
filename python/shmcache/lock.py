"""A lock shared by every process of the host, shaped like redis-py's `Lock`
(what django-redis's ``cache.lock()`` returns).

The lock is a key of the cache holding its owner's token (see `_holder`):
taken with an atomic add, released and extended with compare-and-delete /
compare-and-set, so only the owner can release or extend it. While held it
is visible as a key (``has_key`` is true). Beyond Redis: a lock whose holder
process died is free at once, even with ``timeout=None`` (a waiter sees the
holder is gone and takes the lock over); across pid namespaces (containers
sharing /dev/shm) that cannot be seen, and only ``timeout`` frees it. The
key is *pinned*: a full cache moves it instead of evicting it, so a busy
cache never drops a lock that is still held.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from . import _holder
from ._core import LockTimeout

if TYPE_CHECKING:
    from .client import Cache

# A waiter polls at most this far apart, whatever `sleep` says, so a dead
# holder's lock is taken over within it; polling is a local read (~1 us).
MAX_POLL = 0.02


class LockError(Exception):
    """The lock could not be acquired, released or extended (redis-py's LockError)."""


class LockNotOwnedError(LockError):
    """The lock is held by someone else, or expired (redis-py's LockNotOwnedError)."""


def _seconds(value: Any, name: str, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds{' or None' if allow_none else ''}, not {value!r}")
    if not value >= 0:  # NaN too
        raise ValueError(f"{name} must be >= 0 seconds, not {value!r}")
    return float(value)


class Lock:
    def __init__(
        self,
        cache: Cache,
        name: str | bytes,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        thread_local: bool = True,
    ) -> None:
        if not isinstance(name, (str, bytes)):
            raise TypeError(f"lock name (the key) must be str or bytes, not {type(name).__name__}")
        self.timeout = _seconds(timeout, "timeout", True)
        if self.timeout == 0:
            raise ValueError("timeout must be more than 0 seconds, or None for a lock that only its release frees")
        self.sleep = _seconds(sleep, "sleep", False)
        self.blocking = bool(blocking)
        self.blocking_timeout = _seconds(blocking_timeout, "blocking_timeout", True)
        self.name = name
        self._cache = cache
        self._core = cache.core
        self.local: Any = threading.local() if thread_local else SimpleNamespace()
        self.local.token = None

    def __repr__(self) -> str:
        return f"<shmcache.Lock {self.name!r} of {self._cache.name!r}>"

    def __enter__(self) -> Lock:
        if self.acquire():
            return self
        raise LockError("Unable to acquire lock within the time specified")

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _try(self, token: str) -> bool:
        """One attempt: take a free lock, or one whose holder died."""
        try:
            if self._core.set(self.name, token, self.timeout, True, pin=True):
                return True
            held = self._core.get(self.name)
            if held is not None and _holder.is_dead(held):
                self._core.compare_and_delete(self.name, held)
                return bool(self._core.set(self.name, token, self.timeout, True, pin=True))
        except LockTimeout:
            pass  # the shard was busy: as if the lock were taken; try again
        return False

    def acquire(self, sleep: float | None = None, blocking: bool | None = None, blocking_timeout: float | None = None, token: str | None = None) -> bool:  # fmt: skip
        """Take the lock: True if taken, False if not within
        `blocking_timeout` (or at once, when not blocking)."""
        for pause in self._attempts(sleep, blocking, blocking_timeout, token):
            if pause is None:
                break
            time.sleep(pause)
        return self._taken

    def _attempts(
        self, sleep: float | None, blocking: bool | None, blocking_timeout: float | None, token: str | None
    ) -> Iterator[float | None]:
        """Try until taken or out of time, yielding how long to sleep
        between tries, then None (`_taken` says how it ended). The sync and
        async acquire differ only in how they sleep."""
        sleep = self.sleep if sleep is None else _seconds(sleep, "sleep", False)
        blocking = self.blocking if blocking is None else blocking
        limit = self.blocking_timeout if blocking_timeout is None else _seconds(blocking_timeout, "blocking_timeout", True)
        token = _holder.new_token() if token is None else token
        if not isinstance(token, str):
            raise TypeError(f"token must be a str, not {type(token).__name__}")
        deadline = None if limit is None else time.monotonic() + limit
        wait = min(0.0005, sleep)
        self._taken = False
        while True:
            if self._try(token):
                self.local.token = token
                self._taken = True
                break
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                break
            pause = min(wait, sleep, MAX_POLL)
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            yield pause
            wait *= 2
        yield None

    def locked(self) -> bool:
        """Is the lock held, by anyone?"""
        return self._core.has(self.name)

    def owned(self) -> bool:
        """Is the lock held with this object's token?"""
        token = getattr(self.local, "token", None)
        return token is not None and self._core.get(self.name) == token

    def release(self) -> None:
        token = getattr(self.local, "token", None)
        if token is None:
            raise LockError("Cannot release an unlocked lock")
        self.local.token = None
        if not self._core.compare_and_delete(self.name, token):
            raise LockNotOwnedError("Cannot release a lock that's no longer owned (it expired, or another took it over)")

    def extend(self, additional_time: float, replace_ttl: bool = False) -> bool:
        """Add `additional_time` seconds to the time the lock has left (or,
        with `replace_ttl`, make that the time left)."""
        token = getattr(self.local, "token", None)
        if token is None:
            raise LockError("Cannot extend an unlocked lock")
        if self.timeout is None:
            raise LockError("Cannot extend a lock with no timeout")
        extra = _seconds(additional_time, "additional_time", False)
        if replace_ttl:
            ttl = extra
        else:
            ms = self._core.ttl_ms(self.name)
            ttl = (max(ms, 0) / 1000 if ms >= 0 else 0.0) + extra
        if ttl <= 0 or not self._core.compare_and_set(self.name, token, token, ttl, pin=True):
            raise LockNotOwnedError("Cannot extend a lock that's no longer owned")
        return True

    def reacquire(self) -> bool:
        """Give the lock its full `timeout` again."""
        token = getattr(self.local, "token", None)
        if token is None:
            raise LockError("Cannot reacquire an unlocked lock")
        if self.timeout is None:
            raise LockError("Cannot reacquire a lock with no timeout")
        if not self._core.compare_and_set(self.name, token, token, self.timeout, pin=True):
            raise LockNotOwnedError("Cannot reacquire a lock that's no longer owned")
        return True


class AsyncLock:
    """A `Lock` for asyncio code: ``acquire`` waits with ``asyncio.sleep``
    (never blocking the event loop); ``async with`` takes and releases it.
    The other operations take microseconds and run directly."""

    def __init__(self, lock: Lock) -> None:
        self.lock = lock

    def __repr__(self) -> str:
        return f"<shmcache.AsyncLock {self.lock.name!r} of {self.lock._cache.name!r}>"

    async def __aenter__(self) -> AsyncLock:
        if await self.acquire():
            return self
        raise LockError("Unable to acquire lock within the time specified")

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    async def acquire(self, sleep: float | None = None, blocking: bool | None = None, blocking_timeout: float | None = None, token: str | None = None) -> bool:  # fmt: skip
        """`Lock.acquire`, waiting with ``asyncio.sleep``."""
        import asyncio

        lk = self.lock
        attempt = lk._attempts(sleep, blocking, blocking_timeout, token)
        pause = next(attempt)
        while pause is not None:
            await asyncio.sleep(pause)
            pause = next(attempt)
        return lk._taken

    async def release(self) -> None:
        self.lock.release()

    async def extend(self, additional_time: float, replace_ttl: bool = False) -> bool:
        return self.lock.extend(additional_time, replace_ttl)

    async def reacquire(self) -> bool:
        return self.lock.reacquire()

    async def locked(self) -> bool:
        return self.lock.locked()

    async def owned(self) -> bool:
        return self.lock.owned()
