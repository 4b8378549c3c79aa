"""The plain client: everything of a shmcache cache that is not a Django
rule (the tier's client, `shmcache.tiered.client`, is the other client;
what both share, argument checks and the error policy, is in `_api`).

``shmcache.Cache`` (this module's `Cache`) is the plain Python API and the
engine behind the Django backend, as redis-py's client is behind Django's
``RedisCache``. It holds the encoding of values (`_codec`), the checking of
options (`_options`), batch handling, and the error policy (declared on
each method with `_api.on_error`; applied inline, with the same `_failed`,
on the two hot paths, `get` and the store of `set`/`add`):

- A lock that cannot be had within LOCK_TIMEOUT, or a segment that cannot be
  used (`ShmCacheError`), is raised by default (``on_error="raise"``). With
  ``on_error="log"`` (what the Django backend uses) it is logged instead and
  the call answers as if the cache were empty: a read is a miss, a write is
  not stored, a delete deletes nothing. A batch read that timed out on some
  shards follows the same rule as a single read.
- ``incr``/``decr`` always raise: they must not silently lose a count.
- A value too large for MAX_ITEM_SIZE is logged, not stored, and the old
  value of its key removed (never left looking current).
- A value that can no longer be unpickled is a miss and is dropped.
- Bad arguments (a key that is not str/bytes, a timeout that is not a number)
  raise TypeError/ValueError naming the problem and touch nothing stored.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from . import _core
from ._api import (
    _DEFAULT,
    _MISSING,
    FLIGHT_WAIT,
    ClientBase,
    _check_pattern,
    _check_wait,
    _delta,
    _flight_key,
    _itersize,
    _key_list,
    log,
    on_error,
)
from ._codec import Codec
from ._core import LockTimeout, ShmCacheError, ValueTooLarge
from ._glob import compile_glob, glob_escape, literal_prefix
from ._options import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_MAX_ITEM_SIZE,
    DEFAULT_SIZE,
    Settings,
    check_location,
    parse_default_timeout,
)
from .lock import AsyncLock, Lock, LockError

_attached: dict[tuple, _core.Cache] = {}
_attach_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held the lock at fork time.
    global _attach_lock
    _attach_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def attach(location: str, s: Settings) -> _core.Cache:
    """The process-wide handle on a segment: every Cache and Django alias with
    the same LOCATION, geometry (SIZE, MAX_ITEM_SIZE, SHARDS) and LOCK_TIMEOUT
    shares one mapping. It stays valid in forked children (the mapping is
    MAP_SHARED and owns no process state)."""
    k = (location, s.size, s.max_item_size, s.shards, s.lock_timeout)
    with _attach_lock:
        c = _attached.get(k)
        if c is None:
            c = _attached[k] = _core.Cache(location, s.size, s.max_item_size, s.shards, s.lock_timeout)
            _warn_if_adopted(location, c)
            if s.snapshot and c.created:
                _load_snapshot(c, location, s.snapshot)
        return c


def _warn_if_adopted(location: str, c: _core.Cache) -> None:
    # Options are a request: a segment in use with another geometry is
    # attached to as it is (docs/architecture.md "Geometry changes").
    have, want = c.geometry, c.requested_geometry
    if have != want:
        log.warning(
            "shmcache %r: segment %s is in use with SIZE=%d MAX_ITEM_SIZE=%d SHARDS=%d; this process asked for "
            "SIZE=%d MAX_ITEM_SIZE=%d SHARDS=%d and uses the existing geometry (one cache for all processes) "
            "until no process asks for it: then the cache migrates to the new one, its hot items kept",
            location, c.segment, *have, *want,
        )


def _load_snapshot(c: _core.Cache, location: str, path: str) -> None:
    """SNAPSHOT: this process created the segment (a fresh, empty cache, as
    after a reboot), so warm it from the file. A missing or damaged file is
    logged, never raised: an empty cache still works (and a damaged file is
    refused whole, so nothing of it was stored)."""
    try:
        r = c.load(path)
    except FileNotFoundError:
        log.info("shmcache %s: no snapshot at %s yet (SNAPSHOT); starting empty", location, path)
    except (OSError, ShmCacheError) as e:
        log.error("shmcache %s: SNAPSHOT not loaded, starting empty: %s", location, e)
    else:
        log.info("shmcache %s: loaded %d of %d items from %s (SNAPSHOT)", location, r["loaded"], r["records"], path)


def segment_name(location: str) -> str:
    """The /dev/shm name of LOCATION's segment for this user."""
    return _core.segment_name(check_location(location))


def destroy(location: str) -> bool:
    """Remove LOCATION's segment. Attached processes keep using their mapping
    until they exit; new ones create a fresh, empty segment."""
    location = check_location(location)
    with _attach_lock:
        for k in [k for k in _attached if k[0] == location]:
            del _attached[k]
    return _core.destroy(location)


_ON_ERROR = ("raise", "log")


class _Flight:
    """One get_or_set, as steps: `step` returns None once `result` is set,
    else how long to sleep before the next step (the sync and async callers
    differ only in how they sleep)."""

    def __init__(self, cache: Cache, key: Any, default: Any, timeout: Any, wait: float) -> None:
        self.cache, self.key, self.default, self.timeout = cache, key, default, timeout
        self.marker = Lock(cache, _flight_key(key), timeout=max(wait, 0.01), thread_local=False)
        self.deadline = time.monotonic() + wait
        self.pause = 0.0005
        self.result: Any = _MISSING

    def _compute(self) -> None:
        v = self.default() if callable(self.default) else self.default
        self.cache.add(self.key, v, self.timeout)
        self.result = self.cache.get(self.key, v)  # another process may have stored first

    def step(self) -> float | None:
        c = self.cache
        v = c.get(self.key, _MISSING)
        if v is not _MISSING:
            self.result = v
            return None
        if not callable(self.default):
            self._compute()  # nothing to compute: no reason to wait for anyone
            return None
        if self.marker.acquire(blocking=False):
            try:
                v = c.get(self.key, _MISSING)  # filled while we took the marker?
                if v is _MISSING:
                    self._compute()
                else:
                    self.result = v
            finally:
                try:
                    self.marker.release()
                except (LockError, ShmCacheError):
                    pass  # expired (we took longer than `wait`): waiters have gone on
            return None
        if time.monotonic() >= self.deadline:
            self._compute()
            return None
        pause, self.pause = self.pause, min(self.pause * 2, 0.02)
        return pause


class Cache(ClientBase):
    """A shared-memory cache for any Python program.

    ``Cache("myapp", size="256MB")`` in every process of the host gives one
    shared cache. Keys are ``str`` or ``bytes``; values are ``bytes`` or any
    picklable object. Timeouts are seconds; ``None`` means never expire; 0 or
    less means "do not keep". ``on_error`` is the error policy (module doc).
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
        serializer: str = "pickle",
        compressor: str | None = None,
        compress_min_length: int = 1024,
        on_error: str = "raise",
        snapshot: str | os.PathLike[str] | None = None,
    ) -> None:
        self._open(
            check_location(name, "name"),
            Settings.from_kwargs(
                size=size,
                max_item_size=max_item_size,
                shards=shards,
                lock_timeout=lock_timeout,
                pickle_protocol=pickle_protocol,
                serializer=serializer,
                compressor=compressor,
                compress_min_length=compress_min_length,
                snapshot=snapshot,
            ),
            parse_default_timeout(default_timeout, "default_timeout"),
            on_error,
        )

    @classmethod
    def from_options(
        cls, location: str, options: Mapping[str, Any], on_error: str = "log", json_encoder: type | None = None
    ) -> Cache:
        """A client from a Django CACHES entry's LOCATION and OPTIONS (errors
        name LOCATION and the OPTIONS keys)."""
        return cls.from_settings(check_location(location), Settings.from_django(options), None, on_error, json_encoder)

    @classmethod
    def from_settings(
        cls,
        name: str,
        settings: Settings,
        default_timeout: float | None = None,
        on_error: str = "raise",
        json_encoder: type | None = None,
    ) -> Cache:
        """A client on the checked LOCATION `name` with parsed `settings`
        (what a layer built on this client uses, as the tier does)."""
        self = cls.__new__(cls)
        self._open(name, settings, default_timeout, on_error, json_encoder)
        return self

    def _open(
        self,
        name: str,
        settings: Settings,
        default_timeout: float | None,
        on_error: str,
        json_encoder: type | None = None,
    ) -> None:
        if on_error not in _ON_ERROR:
            raise ValueError(f"invalid on_error: {on_error!r}; give 'raise' or 'log'")
        self._raise = on_error == "raise"
        self.name = name
        self.settings = settings
        self.default_timeout = default_timeout
        self.pickle_protocol = settings.pickle_protocol
        self._codec = Codec(
            settings.serializer, settings.compressor, settings.compress_min_length, settings.pickle_protocol, json_encoder
        )
        self.encode = self._codec.encode
        self._core = attach(name, settings)

    @property
    def core(self) -> _core.Cache:
        """The segment's handle (``shmcache._core.Cache``), shared by the
        clients of this process with the same LOCATION, geometry and
        LOCK_TIMEOUT: for a layer built on this client (the tier's L1 words,
        `Lock`), not for applications."""
        return self._core

    def decode(self, key: Any, item: tuple, default: Any) -> Any:
        """A stored (encoding, bytes) item as a value; one that no longer
        decodes (code changed between deploys, a class gone) is logged,
        dropped, and answered as `default`."""
        try:
            return self._codec.load(item)
        except Exception as e:  # code changed between deploys, class gone, ...
            log.warning("shmcache: dropping undecodable value for key %.200r: %s", key, e)
            try:
                self._core.delete(key)
            except ShmCacheError:
                pass  # already a miss; the next read tries again
            return default

    def _store(self, key: Any, value: Any, t: float | None, add: bool) -> bool:
        v = self.encode(value)
        try:
            return self._core.set(key, v, t, add)
        except ValueTooLarge as e:
            log.warning("shmcache: not storing %.200r: %s", key, e)
            if not add:
                self.delete(key)  # never leave the previous value looking current
            return False
        except ShmCacheError as e:  # the policy inline, as in `get`: the hot path of every set
            return self._failed(e, False)

    # -- one key --

    def get(self, key: str | bytes, default: Any = None) -> Any:
        # The error policy is applied inline here (and in `_store`), not by
        # `on_error`: its wrapper would make the hot path of a get 2x slower.
        try:
            v = self._core.get(key)
        except ShmCacheError as e:
            return self._failed(e, default)
        if v is None:
            return default
        if type(v) is tuple:
            return self.decode(key, v, default)
        return v

    def set(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT, nx: bool = False) -> bool:
        """Store; False if not stored (too large: the old value is removed).
        ``nx=True``: only if absent, atomically (as `add`; Redis SET NX)."""
        if nx:
            return self.add(key, value, timeout)
        # The hot path: a float (what the Django face passes) or an int.
        t = timeout if type(timeout) is float or type(timeout) is int else self._timeout(timeout)
        if t is not None and t <= 0:
            self.delete(key)
            return False
        return self._store(key, value, t, False)

    def add(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT) -> bool:
        """Store only if absent, atomically across processes."""
        t = self._timeout(timeout)
        if t is not None and t <= 0:
            return self._absent(key)  # nothing is kept; report what a store-then-expire would have
        return self._store(key, value, t, True)

    @on_error(False)
    def _absent(self, key: str | bytes) -> bool:
        return not self._core.has(key)

    @on_error(False)
    def delete(self, key: str | bytes) -> bool:
        return self._core.delete(key)

    @on_error(False)
    def touch(self, key: str | bytes, timeout: Any = _DEFAULT) -> bool:
        t = self._timeout(timeout)
        if t is not None and t <= 0:
            return self.delete(key)
        return self._core.touch(key, t)

    def incr(self, key: str | bytes, delta: int = 1, ignore_key_check: bool = False) -> int:
        """Add `delta`, atomically across processes, to an integer of any
        size (as Python ints are). KeyError if missing, unless
        `ignore_key_check`: then a missing key starts at 0 and never expires
        (Redis INCRBY). TypeError if the value is not an int. Lock timeouts
        always raise: a count must not be lost silently."""
        return self._core.incr(key, _delta(delta), bool(ignore_key_check))

    def decr(self, key: str | bytes, delta: int = 1, ignore_key_check: bool = False) -> int:
        return self._core.incr(key, -_delta(delta), bool(ignore_key_check))

    @on_error(False)
    def has_key(self, key: str | bytes) -> bool:
        return self._core.has(key)

    __contains__ = has_key

    @on_error(-2)
    def _ttl_ms(self, key: str | bytes) -> int:
        return self._core.ttl_ms(key)

    def rename(self, src: str | bytes, dst: str | bytes) -> bool:
        """Move `src`'s value to `dst` with the time it had left (Redis
        RENAME); False if `src` is missing. The value and its expiry are read
        together, so the copy never outlives the original."""
        got = self.get_with_ttl(src)
        if got is None:
            return False
        v, left = got
        stored = self._store(dst, v, None if left is None else max(left, 0.001), False)
        self.delete(src)
        return stored

    @on_error(None)
    def _get_with_ttl(self, key: str | bytes) -> tuple | None:
        return self._core.get_with_ttl(key)

    def get_with_ttl(self, key: str | bytes) -> tuple[Any, float | None] | None:
        """(value, seconds left, or None if it never expires), read together
        (as Redis's GET and TTL in one MULTI); None if missing."""
        got = self._get_with_ttl(key)
        if got is None:
            return None
        v, ms = got
        if type(v) is tuple:
            v = self.decode(key, v, _MISSING)
            if v is _MISSING:
                return None
        return v, (None if ms == -1 else ms / 1000)

    @on_error(False)
    def compare_and_set(self, key: str | bytes, expected: Any, value: Any, timeout: Any = _DEFAULT) -> bool:
        """Store `value` only if `key` holds `expected` (compared encoded:
        equal bytes, str and ints always match; other objects by their
        pickle), atomically across processes. Whether it stored."""
        t = self._timeout(timeout)
        if t is not None and t <= 0:  # matched, then not kept
            return self.compare_and_delete(key, expected)
        return self._core.compare_and_set(key, self.encode(expected), self.encode(value), t)

    @on_error(False)
    def compare_and_delete(self, key: str | bytes, expected: Any) -> bool:
        """Delete `key` only if it holds `expected` (as `compare_and_set`)."""
        return self._core.compare_and_delete(key, self.encode(expected))

    # -- many keys --

    @on_error(answer=lambda keys: {})
    def get_many(self, keys: Iterable[str | bytes]) -> dict:
        """The keys found, with their values; missing keys are left out."""
        keys = _key_list(keys)
        values, timed_out = self._core.get_many(keys)
        if timed_out:
            self._failed(LockTimeout(f"{timed_out} of {len(keys)} keys not read: timed out waiting for a shard lock (LOCK_TIMEOUT)"), None)
        out = {}
        for key, v in zip(keys, values):
            if v is not None:
                if type(v) is tuple:
                    v = self.decode(key, v, _MISSING)
                    if v is _MISSING:
                        continue
                out[key] = v
        return out

    @on_error(answer=lambda mapping, timeout=_DEFAULT: list(mapping))
    def set_many(self, mapping: Mapping, timeout: Any = _DEFAULT) -> list:
        """Store every item; returns the keys that were not stored (too large,
        or their shard's lock timed out: logged either way), as Django's
        ``set_many`` does."""
        if not isinstance(mapping, Mapping):
            raise TypeError(f"set_many needs a mapping (a dict of key -> value), not {type(mapping).__name__}")
        t = self._timeout(timeout)
        keys = list(mapping)
        if t is not None and t <= 0:
            self.delete_many(keys)
            return []
        enc = self.encode
        items = [(k, enc(mapping[k])) for k in keys]
        failed = [keys[i] for i in self._core.set_many(items, t)]
        if failed:
            log.warning("shmcache: %d key(s) not stored (too large or lock timeout)", len(failed))
            self._forget(failed)  # no old value may look current
        return failed

    def _forget(self, keys: list) -> None:
        try:
            self._core.delete_many(keys)
        except ShmCacheError:
            pass  # a best effort, after a failure already reported

    @on_error(0)
    def delete_many(self, keys: Iterable[str | bytes]) -> int:
        """Returns how many of the keys existed."""
        return self._core.delete_many(_key_list(keys))

    # -- key iteration (walks every shard: see docs/architecture.md) --

    def iter_keys(self, pattern: str = "*", itersize: int | None = None) -> Iterator[str]:
        """The keys matching the Redis glob `pattern` (``*``, ``?``,
        ``[a-z]``, ``\\`` escapes). A key present throughout the iteration is
        yielded exactly once, even while other processes write; no shard lock
        is held between two batches of `itersize` records."""
        count = _itersize(itersize)
        prefix = literal_prefix(_check_pattern(pattern))
        match = None if pattern == glob_escape(prefix) + "*" or pattern == "*" else compile_glob(pattern).fullmatch
        scan = self._core.scan(prefix, count)
        while (batch := self._next_batch(scan)) is not None:
            for raw in batch:
                k = raw.decode("utf-8", "surrogatepass")
                if match is None or match(k):
                    yield k

    @on_error(None)
    def _next_batch(self, scan: Any) -> list | None:
        return next(scan, None)

    # -- locks, single flight --

    def _new_lock(self, key: str | bytes, options: tuple, for_asyncio: bool) -> Lock | AsyncLock:
        lk = Lock(self, key, *options)
        return AsyncLock(lk) if for_asyncio else lk

    def get_or_set(self, key: str | bytes, default: Any, timeout: Any = _DEFAULT, wait: float = FLIGHT_WAIT) -> Any:
        """The stored value, or `default` (called if callable) stored and
        returned. When several processes miss one key at once, one calls
        `default` and the others wait for its value (at most `wait` seconds,
        then they compute it themselves); a computing process that dies
        frees its waiters at once."""
        _check_wait(wait)
        v = self.get(key, _MISSING)  # the common case, a hit: nothing more to set up
        if v is not _MISSING:
            return v
        flight = _Flight(self, key, default, timeout, wait)
        while (pause := flight.step()) is not None:
            time.sleep(pause)
        return flight.result

    async def aget_or_set(self, key: str | bytes, default: Any, timeout: Any = _DEFAULT, wait: float = FLIGHT_WAIT) -> Any:
        """`get_or_set` that waits with ``asyncio.sleep``."""
        _check_wait(wait)
        v = self.get(key, _MISSING)
        if v is not _MISSING:
            return v
        flight = _Flight(self, key, default, timeout, wait)
        while (pause := flight.step()) is not None:
            await asyncio.sleep(pause)
        return flight.result

    # -- the whole cache --

    @on_error(None)
    def clear(self) -> None:
        self._core.clear()

    def stats(self) -> dict:
        return self._core.stats()

    def dump(self, path: str | os.PathLike[str]) -> dict:
        """Write every live item to the snapshot file `path` (written beside
        it and renamed into place; docs/architecture.md, "Snapshots"):
        ``{"records", "bytes", "file_bytes"}``. Raises OSError naming the file."""
        return self._core.dump(path)

    def load(self, path: str | os.PathLike[str]) -> dict:
        """Store the items of the snapshot `path`, keeping their expiry
        (expired ones are skipped) and, if the cache is smaller, the most
        recently used that fit. The whole file is checked first: a damaged,
        truncated or other-version file raises `SnapshotError` and stores
        nothing. ``{"records", "loaded", "bytes", "expired", "dropped", "too_large"}``."""
        return self._core.load(path)

    def close(self) -> None:
        """Nothing to release per call: the mapping is shared by every Cache on
        this LOCATION in the process and unmapped when the process exits."""
