"""``TieredClient``: shmcache on each host (L1) in front of Redis (L2), kept
coherent by Redis's server-assisted client-side caching; the engine behind
``shmcache.django.TieredCache`` (as `shmcache.Cache` is behind
``SharedMemoryCache``). See docs/tiered.md for the design and the guarantee:

    a hit reflects every L2 write completed more than MAX_STALENESS ago,
    whatever failed (listener killed or stopped, connection dropped, Redis
    restarted).

It holds an L1 (a `shmcache.Cache`, whose segment it reaches through the
binding directly, under its own policy: L1's errors are logged and L2
answers) and an L2 (`l2.L2`), and decides every method itself:

- Reads (``get``, ``get_many``, ``has_key``): L1 while it is live (the
  listener's watermark younger than MAX_STALENESS); otherwise L2 and no
  fill. A miss is one round trip (GET and PTTL pipelined; MGET for many
  keys), then an L1 fill with the time L2 gives the key (at most
  L1_MAX_TIMEOUT), guarded by a fill token taken before the L2 read: an
  invalidation or flush in between drops the fill.
- Writes (``set``, ``add``, ``delete``, ``touch`` and the expire family,
  ``incr``/``decr``, ``rename``, ``set_many``, ``delete_many``): L2 first
  (the truth), then this host's L1 is invalidated (so a host reads its own
  writes); the other hosts hear of it from Redis. add, incr/decr,
  set(nx=True) and locks run in Redis, so they are atomic across hosts.
- ``ttl``/``pttl``: L2's PTTL. ``iter_keys``/``keys``/``delete_pattern``:
  L2's SCAN (and DEL). ``clear``: FLUSHDB, and every host's listener
  flushes its L1.
- ``get_or_set``/``memoize``: one computation across every host (`flight`).
- ``lock``/``alock``: redis-py's locks in L2. ``dump``/``load``: refused.
- Every method that may need Redis has an ``a*`` twin running the same
  steps on ``redis.asyncio`` (`l2`); an L1 hit through ``aget`` answers
  inline.
- L1_EXCLUDE: key prefixes (of made keys) that never enter L1.
- Redis Cluster is not supported (one Redis server, or a primary).
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Mapping
from typing import Any

from .._api import (
    _DEFAULT,
    _MISSING,
    FLIGHT_WAIT,
    AsyncClientBase,
    _check_pattern,
    _delta,
    _itersize,
    _key_list,
    log,
    on_error,
)
from .._core import ShmCacheError, ValueTooLarge
from .._options import Settings, check_location, parse_default_timeout
from ..client import Cache
from . import listener
from .flight import flight
from .l2 import INCR_EXISTING, L2, Request, cmd, dump, load, pipe, px, set_cmd
from .options import (
    DEFAULT_L1_MAX_TIMEOUT,
    DEFAULT_MAX_STALENESS,
    TierOptions,
    l1_location,
    parse_django,
    parse_tier,
)

# Sentinels of the L1 read: a miss while live (read L2 and fill), and not
# live (read L2, fill nothing).
_MISS = object()
_NOT_LIVE = object()


class TieredClient(AsyncClientBase):
    """L1 (a `shmcache.Cache` on `name`) in front of L2 (Redis at `l2`).

    Keys are the made keys (the Django face makes them); `key_prefix` is the
    tracking PREFIX the listener registers (Django's KEY_PREFIX). One
    LOCATION serves one L2 and one prefix. Errors of L1 are logged and L2
    answers; errors of L2 (Redis down) raise, as RedisCache's do."""

    def __init__(
        self,
        name: str,
        l2: str | Mapping = "redis://127.0.0.1:6379/0",
        key_prefix: str = "",
        max_staleness: float = DEFAULT_MAX_STALENESS,
        l1_max_timeout: float | None = DEFAULT_L1_MAX_TIMEOUT,
        l1_exclude: Iterable[str] = (),
        default_timeout: float | None = None,
        **l1_options: Any,
    ) -> None:
        settings = Settings.for_face("TieredClient", l1_options)
        exclude = l1_exclude if isinstance(l1_exclude, str) else list(l1_exclude)
        tier = parse_tier(l2, key_prefix, max_staleness, l1_max_timeout, exclude)  # before L1 is created
        l1 = l1_location(check_location(name, "name"), key_prefix)
        self._compose(l1, settings, tier, parse_default_timeout(default_timeout, "default_timeout"), None)

    @classmethod
    def from_options(
        cls, location: str, options: Mapping[str, Any], key_prefix: str = "", json_encoder: type | None = None
    ) -> TieredClient:
        """From a Django CACHES entry (errors name the OPTIONS keys)."""
        l1, settings, tier = parse_django(location, options, key_prefix)
        self = cls.__new__(cls)
        self._compose(l1, settings, tier, None, json_encoder)
        return self

    def _compose(
        self, name: str, settings: Settings, tier: TierOptions, default_timeout: float | None, json_encoder: type | None
    ) -> None:
        self.l2 = L2(tier.l2)  # first: without redis-py, an ImportError naming the extra, and no L1 made
        self.l1 = Cache.from_settings(name, settings, default_timeout, "log", json_encoder)
        self.name = self.l1.name
        self.default_timeout = default_timeout
        self._raise = False  # L1's errors are logged, and L2 answers (`_api.on_error`)
        self.pickle_protocol = settings.pickle_protocol
        self._core = self.l1.core  # the tier's L1 words live beside the items
        self.key_prefix = tier.key_prefix
        self.max_staleness = tier.max_staleness
        self._max_ms = max(1, int(tier.max_staleness * 1000))
        self._core.set_live_reads(self._max_ms, listener.LAG_PINGS * listener.ping_ms(tier.max_staleness))
        self.l1_max_timeout = tier.l1_max_timeout
        self._excl = tier.l1_exclude
        self._excl_b = tuple(p.encode("utf-8", "surrogatepass") for p in tier.l1_exclude)
        # Only keys under the tracked prefix may enter L1 (a KEY_FUNCTION may
        # make others: those go to L2 alone).
        self._prefix_b = tier.key_prefix.encode("utf-8", "surrogatepass")
        self._screen = bool(tier.l1_exclude) or bool(tier.key_prefix)
        self.segment = self._core.segment
        self._next_try = 0.0

    # -- the listener: elected lazily, from operations --

    def make_listener(self, stop: threading.Event) -> listener.Listener:
        """The invalidation listener of this L1 (run by the elected process)."""
        connect = self.l2.listener_connections()
        return listener.Listener(self._core, connect, self.l2.sync, self.key_prefix, self.max_staleness, stop)

    def _tick(self) -> None:
        """At most every TRY_EVERY s: take over the listener if nobody runs
        it (a non-blocking lockf and, if won, a thread: never a wait)."""
        now = time.monotonic()
        if now < self._next_try:
            return
        self._next_try = now + listener.TRY_EVERY
        try:
            listener.ensure(self.segment, self.make_listener)
        except OSError as e:
            self._failed_quietly("listener election failed", e)

    def listen(self) -> None:
        """Start (or check) the listener now rather than from operations."""
        self._next_try = 0.0
        self._tick()

    def _failed_quietly(self, what: str, e: Exception) -> None:
        log.warning("shmcache tiered %s: %s: %s", self.name, what, e)

    def _excluded(self, key: Any) -> bool:
        """Is `key` kept out of L1 (L1_EXCLUDE, or not under the prefix)?"""
        if type(key) is str:
            return not key.startswith(self.key_prefix) or (bool(self._excl) and key.startswith(self._excl))
        return not key.startswith(self._prefix_b) or (bool(self._excl) and key.startswith(self._excl_b))

    # -- L1 (its errors: logged, and L2 answers) --

    @on_error(False)
    def _get_live(self, key: Any) -> Any:
        """The core's live read: the L1 value (or its encoded tuple), None
        (a miss), False (not live) or True (live, but the listener missed
        PINGs: `_checked` checks on it, then reads)."""
        return self._core.get_live(key)

    def _checked(self, key: Any) -> Any:
        """get_live's True: check on the listener, then read (one check
        per call, however long it took)."""
        self.listen()
        v = self._get_live(key)
        while v is True:
            v = self._get_live(key)
        return v

    def _l1_rest(self, key: Any, v: Any) -> Any:
        """What the hot path of `get` leaves: the value, `_MISS` (live: read
        L2 and fill) or `_NOT_LIVE` (read L2 alone). No key is screened: a
        key outside the prefix or in L1_EXCLUDE is never filled (`_fill`)."""
        if v is True:
            v = self._checked(key)
        if v is None:
            return _MISS
        if v is False:
            return _NOT_LIVE
        if type(v) is tuple:
            return self.l1.decode(key, v, _MISS)
        return v

    @on_error((False, None))
    def _l1_many(self, keys: list) -> tuple[bool, list | None]:
        """(live, L1's values or None) for `keys`."""
        live = self._core.live(self._max_ms)
        if live and self._core.lag_due():  # a lagging listener: see `_get_live` and `_checked`
            self.listen()
        return live, (self._core.get_many(keys)[0] if live else None)

    def _invalidate(self, *keys: Any) -> None:
        """This host's L1 forgets `keys` (after an L2 write: read your
        writes); if it cannot, L1 is flushed, or else not live."""
        if keys and not self._try_invalidate(keys):
            self._invalidate_all()

    @on_error(False)
    def _try_invalidate(self, keys: tuple) -> bool:
        if len(keys) == 1:
            self._core.invalidate(keys[0])
        else:
            self._core.invalidate_many(list(keys))
        return True

    @on_error(False)
    def _try_flush(self) -> bool:
        self._core.flush()
        return True

    @on_error(None)
    def _fill(self, key: Any, value: Any, pttl: int, t0: float, token: tuple[int, int]) -> None:
        if pttl == -2 or (self._screen and self._excluded(key)):
            return
        t = self.l1_max_timeout
        if pttl >= 0:
            left = pttl / 1000 - (time.monotonic() - t0)  # from before the request: never later than L2's
            if left <= 0:
                return
            t = left if t is None else min(t, left)
        try:
            self._core.set_if_token(key, self.l1.encode(value), t, token)
        except ValueTooLarge:
            pass  # L1 cannot hold it; L2 still does

    def _from_l2(self, key: Any, raw: bytes | None, default: Any) -> Any:
        if raw is None:
            return default
        try:
            return load(raw)
        except Exception as e:  # noqa: BLE001 - code changed between deploys, ...
            self._failed_quietly(f"undecodable L2 value for key {key!r:.200}", e)
            return default

    # -- the steps of each operation (`l2`: run sync or async) --

    def _get(self, key: Any, default: Any) -> Generator[Any, Any, Any]:
        v = self._l1_rest(key, self._get_live(key))
        if v is _MISS or v is _NOT_LIVE:
            v = yield from self._read(key, default, v is _MISS)
        return v

    def _read(self, key: Any, default: Any, fill: bool) -> Generator[Any, Any, Any]:
        """L2 answers. With `fill` (L1 live, a miss): GET and PTTL in one
        round trip, then a fill guarded by the token taken before the read.
        (Not a MULTI: a write between the two sends an invalidation, which
        drops the fill, so GET and PTTL need not be atomic.)"""
        self._tick()
        if not fill:  # not live: L2 answers, nothing is filled
            (raw,) = yield cmd("GET", key)
            return self._from_l2(key, raw, default)
        token = self._core.fill_token(key)
        t0 = time.monotonic()
        raw, pttl = yield pipe(("GET", key), ("PTTL", key))
        if raw is None:
            self._core.tier_add("l2_misses", 1)
            return default
        self._core.tier_add("l2_hits", 1)
        v = self._from_l2(key, raw, _MISSING)
        if v is _MISSING:
            return default
        self._fill(key, v, pttl, t0, token)
        return v

    def _set(self, key: Any, value: Any, timeout: Any, nx: bool) -> Generator[Any, Any, bool]:
        if nx:
            return (yield from self._add(key, value, timeout))
        t = self._timeout(timeout)
        if t is not None and t <= 0:
            yield from self._delete(key)
            return False
        self._tick()
        yield cmd(*set_cmd(key, dump(value, self.pickle_protocol), px(t)))
        self._invalidate(key)
        return True

    def _add(self, key: Any, value: Any, timeout: Any) -> Generator[Any, Any, bool]:
        t = self._timeout(timeout)
        self._tick()
        if t is not None and t <= 0:
            (n,) = yield cmd("EXISTS", key)
            return not n
        (stored,) = yield cmd(*set_cmd(key, dump(value, self.pickle_protocol), px(t), nx=True))
        if stored:
            self._invalidate(key)
        return bool(stored)

    def _delete(self, key: Any) -> Generator[Any, Any, bool]:
        self._tick()
        try:
            (n,) = yield cmd("DEL", key)
        finally:
            self._invalidate(key)
        return bool(n)

    def _touch(self, key: Any, timeout: Any) -> Generator[Any, Any, bool]:
        t = self._timeout(timeout)
        if t is not None and t <= 0:
            return (yield from self._delete(key))
        self._tick()
        try:
            if t is None:
                found, _ = yield pipe(("EXISTS", key), ("PERSIST", key), multi=True)
            else:
                (found,) = yield cmd("PEXPIRE", key, px(t))
        finally:
            self._invalidate(key)
        return bool(found)

    def _incr(self, key: Any, delta: int, ignore_key_check: bool) -> Generator[Any, Any, int]:
        self._tick()
        try:
            if ignore_key_check:
                (n,) = yield cmd("INCRBY", key, delta)
            else:
                (n,) = yield cmd("EVAL", INCR_EXISTING, 1, key, delta)
        except self.l2.errors.ResponseError as e:
            if "not an integer" in str(e):
                raise TypeError(f"the value of {key!r} in L2 is not an integer (or the result overflows 64 bits)") from None
            raise
        finally:
            self._invalidate(key)
        if n is None:
            raise KeyError(key)
        return int(n)

    def _has(self, key: Any) -> Generator[Any, Any, bool]:
        v = self._get_live(key)
        if v is True:
            v = self._checked(key)
        if v is not None and v is not False:
            return True
        self._tick()
        (n,) = yield cmd("EXISTS", key)
        return bool(n)

    def _pttl(self, key: Any) -> Generator[Any, Any, int]:
        (ms,) = yield cmd("PTTL", key)
        return int(ms)

    def _rename(self, src: Any, dst: Any) -> Generator[Any, Any, bool]:
        self._tick()
        try:
            yield cmd("RENAME", src, dst)
        except self.l2.errors.ResponseError:
            return False  # no such key
        finally:
            self._invalidate(src, dst)
        return True

    def _get_many(self, keys: Any) -> Generator[Any, Any, dict]:
        keys = _key_list(keys)
        if not keys:
            return {}
        live, values = self._l1_many(keys)
        out: dict = {}
        missing = []
        for i, k in enumerate(keys):
            v = _MISSING if values is None or values[i] is None else values[i]
            if type(v) is tuple:
                v = self.l1.decode(k, v, _MISSING)
            if v is _MISSING:
                missing.append(k)
            else:
                out[k] = v
        if not missing:
            return out
        self._tick()
        fill = [k for k in missing if not (self._screen and self._excluded(k))] if live else []
        tokens = [self._core.fill_token(k) for k in fill]
        t0 = time.monotonic()
        raws, *pttls = yield pipe(("MGET", *missing), *(("PTTL", k) for k in fill))
        ttl_of = dict(zip(fill, zip(pttls, tokens)))
        hits = 0
        for k, raw in zip(missing, raws):
            v = self._from_l2(k, raw, _MISSING)
            if v is _MISSING:
                continue
            hits += 1
            out[k] = v
            if k in ttl_of:
                pttl, token = ttl_of[k]
                self._fill(k, v, pttl, t0, token)
        self._core.tier_add("l2_hits", hits)
        self._core.tier_add("l2_misses", len(missing) - hits)
        return out

    def _set_many(self, mapping: Any, timeout: Any) -> Generator[Any, Any, list]:
        if not isinstance(mapping, Mapping):
            raise TypeError(f"set_many needs a mapping (a dict of key -> value), not {type(mapping).__name__}")
        t = self._timeout(timeout)
        keys = list(mapping)
        if t is not None and t <= 0:
            yield from self._delete_many(keys)
            return []
        if not keys:
            return []
        self._tick()
        ms, proto = px(t), self.pickle_protocol
        try:
            yield pipe(*(set_cmd(k, dump(mapping[k], proto), ms) for k in keys), multi=True)
        finally:
            self._invalidate(*keys)
        return []

    def _delete_many(self, keys: Any) -> Generator[Any, Any, int]:
        keys = _key_list(keys)
        if not keys:
            return 0
        self._tick()
        try:
            (n,) = yield cmd("DEL", *keys)
        finally:
            self._invalidate(*keys)
        return int(n)

    def _clear(self) -> Generator[Any, Any, None]:
        self._tick()
        yield cmd("FLUSHDB")
        self._invalidate_all()

    def _invalidate_all(self) -> None:
        """This host's L1 is flushed, or else not live until the listener
        has flushed it."""
        if not self._try_flush():
            self._core.set_watermark_ms(0)

    def _scan(self, pattern: str, itersize: int | None) -> Generator[Request, Any, None]:
        """The SCAN requests of a key iteration, each sent the last reply
        (an iterator, not steps: `iter_keys` yields keys between them)."""
        count, pattern = _itersize(itersize), _check_pattern(pattern)
        cursor = 0
        while True:
            ((cursor, _),) = yield cmd("SCAN", cursor, "MATCH", pattern, "COUNT", count)
            if not cursor:
                return

    @staticmethod
    def _next_scan(scan: Generator[Request, Any, None], replies: list | None) -> Request | None:
        try:
            return next(scan) if replies is None else scan.send(replies)
        except StopIteration:
            return None

    @staticmethod
    def _new_keys(replies: list, seen: set[bytes]) -> list[str]:
        """The keys of a SCAN reply not yet seen (SCAN may return one twice)."""
        out = []
        for raw in replies[0][1]:
            if raw not in seen:
                seen.add(raw)
                out.append(raw.decode("utf-8", "surrogatepass"))
        return out

    # -- one key --

    def get(self, key: str | bytes, default: Any = None) -> Any:
        # The hot path, inline: an L1 hit of a native value (bytes, str, int).
        # The error policy is called directly (`_failed`), not through a
        # decorator: a call here would cost the hit path 10 %.
        try:
            v = self._core.get_live(key)
        except ShmCacheError as e:
            v = self._failed(e, False)
        if v is None or v is False or v is True or type(v) is tuple:
            v = self._l1_rest(key, v)
            if v is _MISS or v is _NOT_LIVE:
                return self.l2.run(self._read(key, default, v is _MISS))
        return v

    async def aget(self, key: str | bytes, default: Any = None) -> Any:
        # As `get` (written out again for the same reason): an L1 hit answers inline, no await.
        try:
            v = self._core.get_live(key)
        except ShmCacheError as e:
            v = self._failed(e, False)
        if v is None or v is False or v is True or type(v) is tuple:
            v = self._l1_rest(key, v)
            if v is _MISS or v is _NOT_LIVE:
                return await self.l2.arun(self._read(key, default, v is _MISS))
        return v

    def set(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT, nx: bool = False) -> bool:
        return self.l2.run(self._set(key, value, timeout, nx))

    async def aset(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT, nx: bool = False) -> bool:
        return await self.l2.arun(self._set(key, value, timeout, nx))

    def add(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT) -> bool:
        return self.l2.run(self._add(key, value, timeout))

    async def aadd(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT) -> bool:
        return await self.l2.arun(self._add(key, value, timeout))

    def delete(self, key: str | bytes) -> bool:
        return self.l2.run(self._delete(key))

    async def adelete(self, key: str | bytes) -> bool:
        return await self.l2.arun(self._delete(key))

    def touch(self, key: str | bytes, timeout: Any = _DEFAULT) -> bool:
        return self.l2.run(self._touch(key, timeout))

    async def atouch(self, key: str | bytes, timeout: Any = _DEFAULT) -> bool:
        return await self.l2.arun(self._touch(key, timeout))

    def incr(self, key: str | bytes, delta: int = 1, ignore_key_check: bool = False) -> int:
        """Atomic across hosts (Redis INCRBY, 64-bit). KeyError if missing
        unless `ignore_key_check`; TypeError if not an integer."""
        return self.l2.run(self._incr(key, _delta(delta), bool(ignore_key_check)))

    async def aincr(self, key: str | bytes, delta: int = 1, ignore_key_check: bool = False) -> int:
        return await self.l2.arun(self._incr(key, _delta(delta), bool(ignore_key_check)))

    def decr(self, key: str | bytes, delta: int = 1, ignore_key_check: bool = False) -> int:
        return self.l2.run(self._incr(key, -_delta(delta), bool(ignore_key_check)))

    async def adecr(self, key: str | bytes, delta: int = 1, ignore_key_check: bool = False) -> int:
        return await self.l2.arun(self._incr(key, -_delta(delta), bool(ignore_key_check)))

    def has_key(self, key: str | bytes) -> bool:
        return self.l2.run(self._has(key))

    async def ahas_key(self, key: str | bytes) -> bool:
        return await self.l2.arun(self._has(key))

    __contains__ = has_key

    def _ttl_ms(self, key: str | bytes) -> int:
        return self.l2.run(self._pttl(key))

    async def _attl_ms(self, key: str | bytes) -> int:
        return await self.l2.arun(self._pttl(key))

    def rename(self, src: str | bytes, dst: str | bytes) -> bool:
        """Redis RENAME (the time left moves with the value); False if missing."""
        return self.l2.run(self._rename(src, dst))

    async def arename(self, src: str | bytes, dst: str | bytes) -> bool:
        return await self.l2.arun(self._rename(src, dst))

    # -- many keys --

    def get_many(self, keys: Iterable[str | bytes]) -> dict:
        return self.l2.run(self._get_many(keys))

    async def aget_many(self, keys: Iterable[str | bytes]) -> dict:
        return await self.l2.arun(self._get_many(keys))

    def set_many(self, mapping: Mapping, timeout: Any = _DEFAULT) -> list:
        return self.l2.run(self._set_many(mapping, timeout))

    async def aset_many(self, mapping: Mapping, timeout: Any = _DEFAULT) -> list:
        return await self.l2.arun(self._set_many(mapping, timeout))

    def delete_many(self, keys: Iterable[str | bytes]) -> int:
        return self.l2.run(self._delete_many(keys))

    async def adelete_many(self, keys: Iterable[str | bytes]) -> int:
        return await self.l2.arun(self._delete_many(keys))

    def iter_keys(self, pattern: str = "*", itersize: int | None = None) -> Iterator[str]:
        """The keys in L2 matching the Redis glob `pattern` (SCAN; each once)."""
        scan, seen, replies = self._scan(pattern, itersize), set[bytes](), None
        while (req := self._next_scan(scan, replies)) is not None:
            replies = self.l2.send(req)
            yield from self._new_keys(replies, seen)

    async def aiter_keys(self, pattern: str = "*", itersize: int | None = None) -> AsyncIterator[str]:
        scan, seen, replies = self._scan(pattern, itersize), set[bytes](), None
        while (req := self._next_scan(scan, replies)) is not None:
            replies = await self.l2.asend(req)
            for k in self._new_keys(replies, seen):
                yield k

    # -- get_or_set: one computation across every host; locks in Redis --

    def get_or_set(self, key: str | bytes, default: Any, timeout: Any = _DEFAULT, wait: float = FLIGHT_WAIT) -> Any:
        """The value, or `default` (called if callable) stored and returned.
        When processes on any hosts miss one key at once, one computes and
        the rest wait for its value (at most `wait` s, then they compute
        themselves); a holder that dies or stops frees them within
        FLIGHT_LEASE s (`flight`, docs/tiered.md)."""
        return self.l2.run(flight(self, key, default, timeout, wait))

    async def aget_or_set(self, key: str | bytes, default: Any, timeout: Any = _DEFAULT, wait: float = FLIGHT_WAIT) -> Any:
        """`get_or_set` that waits with ``asyncio.sleep`` and talks to Redis
        on the loop (the callable itself is called as it is, as Django does)."""
        return await self.l2.arun(flight(self, key, default, timeout, wait))

    def _new_lock(self, key: str | bytes, options: tuple, for_asyncio: bool) -> Any:
        # redis-py's Lock (redis.asyncio's for alock) in L2: shared by every host.
        return self.l2.lock(key, options, for_asyncio)

    # -- the whole cache --

    def clear(self) -> None:
        """FLUSHDB on L2 (every host's listener then flushes its L1), and
        this host's L1 at once."""
        self.l2.run(self._clear())

    async def aclear(self) -> None:
        await self.l2.arun(self._clear())

    def stats(self) -> dict:
        """The tier's counters (host-wide; `not_live_ms` the time L1 was not
        live), the listener (L2's address it last reached, `l2_primary`, and
        the failovers it followed), and L1's own stats."""
        from .._core import monotonic_ms

        l1 = self._core.stats()
        wm = self._core.watermark_ms
        state = listener.read_state(listener.state_path(self.segment))
        return {
            "l1_hits": l1["hits"],
            "l1_misses": l1["misses"],
            **self._core.tier_stats(),
            "live": self._core.live(self._max_ms),
            "watermark_age_ms": None if not wm else monotonic_ms() - wm,
            "listener_pid": self._core.listener_pid,
            "listener_here": listener.running_here(self.segment),
            "l2": self.l2.spec.describe(),
            "l2_primary": state.get("primary"),
            "failovers": int(state.get("failovers", 0)),
            "redis_commands": self.l2.commands,
            "l1": l1,
        }

    def dump(self, path: Any) -> dict:
        raise TypeError("a TieredCache's truth is Redis: snapshot Redis itself (its L1 refills from it)")

    load = dump

    def close(self) -> None:
        """Nothing per request: the L2 connection pools and L1 stay for the process."""

    async def aclose(self) -> None:
        """Close the running loop's L2 connection pool (the next async call
        opens a new one); the sync pool and L1 stay."""
        await self.l2.aclose()
