"""shmcache: one cache in OS shared memory for every process on a host.

``shmcache.Cache`` is the plain Python API (Flask, FastAPI, Celery, scripts);
``shmcache.django.SharedMemoryCache`` is the Django cache backend.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import threading
from collections.abc import Mapping
from typing import Any, Iterable

from . import _core
from ._codec import encode, load
from ._core import LockTimeout, SegmentError, ShmCacheError, ValueTooLarge
from ._options import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_MAX_ITEM_SIZE,
    DEFAULT_SIZE,
    check_location,
    parse_int,
    parse_seconds,
    parse_size,
)

__all__ = ["Cache", "ShmCacheError", "LockTimeout", "SegmentError", "ValueTooLarge", "destroy", "segment_name"]
__version__ = "0.1.0"

log = logging.getLogger("shmcache")

_attached: dict[tuple, _core.Cache] = {}
_attach_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held the lock at fork time.
    global _attach_lock
    _attach_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def attach(location: str, size: int, max_item_size: int, shards: int, lock_timeout: float) -> _core.Cache:
    """The process-wide handle on a segment: every Cache and Django alias with
    the same LOCATION and geometry shares one mapping. It stays valid in
    forked children (the mapping is MAP_SHARED and owns no process state)."""
    k = (location, size, max_item_size, shards, lock_timeout)
    with _attach_lock:
        c = _attached.get(k)
        if c is None:
            c = _attached[k] = _core.Cache(location, size, max_item_size, shards, lock_timeout)
        return c


def segment_name(location: str) -> str:
    """The /dev/shm name of LOCATION's segment for this user."""
    return _core.segment_name(check_location(location))


def destroy(location: str) -> bool:
    """Remove LOCATION's segment. Attached processes keep using their mapping
    until they exit; new ones create a fresh, empty segment."""
    with _attach_lock:
        for k in [k for k in _attached if k[0] == location]:
            del _attached[k]
    return _core.destroy(check_location(location))


_DEFAULT = object()


def _delta(delta: Any) -> int:
    if type(delta) is not int:
        raise TypeError(f"delta must be an integer, not {type(delta).__name__}")
    return delta


def _key_list(keys: Any) -> list:
    """A list of keys from an iterable; a lone str or bytes is refused (it
    would otherwise be taken as one key per character)."""
    if isinstance(keys, (str, bytes)):
        raise TypeError(f"expected an iterable of keys, not a single {type(keys).__name__} key")
    return list(keys)
_ENC_PICKLE = _core.ENC_PICKLE


def _encode_safe(value: Any, protocol: int) -> Any:
    """`encode`, pickling up front what the core could not store natively."""
    v = encode(value, protocol)
    if type(v) is str:
        try:
            v.encode()
        except UnicodeEncodeError:
            return (_ENC_PICKLE, pickle.dumps(value, protocol))
    return v


class Cache:
    """A shared-memory cache for any Python program.

    ``Cache("myapp", size="256MB")`` in every process of the host gives one
    shared cache. Keys are ``str`` or ``bytes``; values are ``bytes`` or any
    picklable object. Timeouts are seconds; ``None`` means never expire; 0 or
    less means "do not keep".
    """

    def __init__(
        self,
        name: str,
        size: int | str = DEFAULT_SIZE,
        max_item_size: int | str = DEFAULT_MAX_ITEM_SIZE,
        shards: int = 0,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        default_timeout: float | None = None,
        pickle_protocol: int = pickle.HIGHEST_PROTOCOL,
    ) -> None:
        self.name = check_location(name, "name")
        self._core = attach(
            self.name,
            parse_size(size, "size"),
            parse_size(max_item_size, "max_item_size"),
            parse_int(shards, "shards", 0, 1024),
            parse_seconds(lock_timeout, "lock_timeout"),
        )
        if default_timeout is not None and (
            isinstance(default_timeout, bool)
            or not isinstance(default_timeout, (int, float))
            or not math.isfinite(default_timeout)
        ):
            raise ValueError(f"invalid default_timeout: {default_timeout!r}; give a finite number of seconds or None")
        self.default_timeout = default_timeout
        self.pickle_protocol = parse_int(pickle_protocol, "pickle_protocol", 0, pickle.HIGHEST_PROTOCOL)

    # -- helpers --
    def _timeout(self, timeout: Any) -> float | None:
        if timeout is _DEFAULT:
            return self.default_timeout
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be seconds (int or float) or None, not {type(timeout).__name__}")
        return timeout

    def _load(self, key: Any, item: tuple, default: Any) -> Any:
        try:
            return load(item)
        except Exception as e:  # a value this code can no longer unpickle
            log.warning("shmcache: dropping undecodable value for key %.200r: %s", key, e)
            self._core.delete(key)
            return default

    def _store(self, key: Any, value: Any, t: float | None, add: bool) -> bool:
        v = encode(value, self.pickle_protocol)
        try:
            return self._core.set(key, v, t, add)
        except UnicodeEncodeError:  # a str with lone surrogates: pickle keeps it
            return self._core.set(key, (_ENC_PICKLE, pickle.dumps(value, self.pickle_protocol)), t, add)
        except ValueTooLarge as e:
            log.warning("shmcache: not storing %.200r: %s", key, e)
            if not add:
                self._core.delete(key)  # never leave the previous value looking current
            return False

    # -- operations --
    def get(self, key: str | bytes, default: Any = None) -> Any:
        v = self._core.get(key)
        if v is None:
            return default
        if type(v) is tuple:
            return self._load(key, v, default)
        return v

    def set(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT) -> bool:
        """Store; False if not stored (too large: the old value is removed)."""
        t = self._timeout(timeout)
        if t is not None and t <= 0:
            self._core.delete(key)
            return False
        return self._store(key, value, t, False)

    def add(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT) -> bool:
        """Store only if absent, atomically across processes."""
        t = self._timeout(timeout)
        if t is not None and t <= 0:
            return not self._core.has(key)
        return self._store(key, value, t, True)

    def delete(self, key: str | bytes) -> bool:
        return self._core.delete(key)

    def touch(self, key: str | bytes, timeout: Any = _DEFAULT) -> bool:
        t = self._timeout(timeout)
        if t is not None and t <= 0:
            return self._core.delete(key)
        return self._core.touch(key, t)

    def incr(self, key: str | bytes, delta: int = 1) -> int:
        """Atomic across processes. KeyError if missing, TypeError if not an
        int, OverflowError outside the signed 64-bit range."""
        return self._core.incr(key, delta)

    def decr(self, key: str | bytes, delta: int = 1) -> int:
        return self._core.incr(key, -_delta(delta))

    def has_key(self, key: str | bytes) -> bool:
        return self._core.has(key)

    __contains__ = has_key

    def ttl(self, key: str | bytes) -> float | None:
        """Seconds left; None if it never expires; 0 if missing."""
        ms = self._core.ttl_ms(key)
        return None if ms == -1 else 0 if ms == -2 else ms / 1000

    def get_many(self, keys: Iterable[str | bytes]) -> dict:
        keys = _key_list(keys)
        out = {}
        for key, v in zip(keys, self._core.get_many(keys)[0]):
            if v is not None:
                if type(v) is tuple:
                    v = self._load(key, v, _DEFAULT)
                    if v is _DEFAULT:
                        continue
                out[key] = v
        return out

    def set_many(self, mapping: Mapping, timeout: Any = _DEFAULT) -> list:
        """Returns the keys that were not stored."""
        if not isinstance(mapping, Mapping):
            raise TypeError(f"set_many needs a mapping (a dict of key -> value), not {type(mapping).__name__}")
        t = self._timeout(timeout)
        keys = list(mapping)
        if t is not None and t <= 0:
            self._core.delete_many(keys)
            return []
        items = [(k, _encode_safe(mapping[k], self.pickle_protocol)) for k in keys]
        failed = [keys[i] for i in self._core.set_many(items, t)]
        if failed:
            log.warning("shmcache: %d key(s) not stored (too large or lock timeout)", len(failed))
            try:
                self._core.delete_many(failed)
            except ShmCacheError:
                pass
        return failed

    def delete_many(self, keys: Iterable[str | bytes]) -> int:
        return self._core.delete_many(_key_list(keys))

    def clear(self) -> None:
        self._core.clear()

    def stats(self) -> dict:
        return self._core.stats()

    def close(self) -> None:
        """Nothing to release per call: the mapping is shared by every Cache on
        this LOCATION in the process and unmapped when the process exits."""
