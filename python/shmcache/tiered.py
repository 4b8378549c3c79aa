"""A two-level cache: shmcache on each host (L1) in front of Redis (L2),
kept coherent by Redis's server-assisted client-side caching.

``TieredClient`` is the engine behind ``shmcache.django.TieredCache`` (as
`shmcache.Cache` is behind ``SharedMemoryCache``); see docs/tiered.md for
the design and the guarantee:

    a hit reflects every L2 write completed more than MAX_STALENESS ago,
    whatever failed (listener killed or stopped, connection dropped, Redis
    restarted).

- Reads: L1 while it is live (the listener's watermark younger than
  MAX_STALENESS); otherwise L2 and no fill. A miss is one round trip (GET and
  PTTL in one MULTI; MGET for many keys), then an L1 fill with the time L2
  gives the key (at most L1_MAX_TIMEOUT), guarded by a fill token taken
  before the L2 read: an invalidation or flush in between drops the fill.
- Writes: L2 first (the truth), then this host's L1 is invalidated (so a
  host reads its own writes); the other hosts hear of it from Redis. add,
  incr/decr, set(nx=True) and lock() run in Redis, so they are atomic across
  hosts. clear() is FLUSHDB: every host's listener flushes its L1.
- L2 keys and values are exactly Django's ``RedisCache``'s (the made key;
  ints as themselves, everything else pickled), so the two share data.
- L1_EXCLUDE: key prefixes (of made keys) that never enter L1.
- Redis Cluster is not supported (one Redis server, or a primary).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import pickle
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from . import _listener
from ._core import ShmCacheError, ValueTooLarge
from ._options import (
    DJANGO_OPTIONS,
    DJANGO_REDIS_ONLY_OPTIONS,
    IGNORED_DJANGO_OPTIONS,
    Settings,
    check_location,
    parse_default_timeout,
)
from .client import _DEFAULT, _MISSING, Cache, _delta, _itersize, _key_list, log

_TIER_OPTIONS = ("L2", "MAX_STALENESS", "L1_MAX_TIMEOUT", "L1_EXCLUDE")
_L2_SCHEMES = ("redis://", "rediss://", "unix://")
# Options of Django's RedisCache that change what is stored or where: values
# must stay in RedisCache's own format, and reads must go to the primary.
_L2_REFUSED = ("serializer", "pool_class", "parser_class")

DEFAULT_MAX_STALENESS = 1.0
DEFAULT_L1_MAX_TIMEOUT = 300.0

# INCRBY only if the key exists (Django's incr raises on a missing key).
_INCR_EXISTING = "if redis.call('EXISTS', KEYS[1]) == 0 then return false end return redis.call('INCRBY', KEYS[1], ARGV[1])"


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ImportError(
            "shmcache's TieredCache needs redis-py: pip install 'shmcache[tiered]' (or pip install redis)"
        ) from None
    return redis


def parse_l2(value: object, option: str = "L2") -> tuple[str, dict]:
    """(url, connection options) from a Redis URL or a dict like Django's
    RedisCache settings ({"LOCATION": url, "OPTIONS": {...}})."""
    opts: dict = {}
    if isinstance(value, Mapping):
        unknown = set(value) - {"LOCATION", "OPTIONS"}
        if unknown:
            raise ValueError(f"invalid {option}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; give LOCATION and OPTIONS")
        loc = value.get("LOCATION")
        if isinstance(loc, (list, tuple)):
            if len(loc) != 1:
                raise ValueError(
                    f"invalid {option} LOCATION: {loc!r}; give one Redis server (read replicas would break the "
                    "staleness bound, and Redis Cluster is not supported)"
                )
            loc = loc[0]
        opts = dict(value.get("OPTIONS") or {})
        refused = sorted(set(opts) & set(_L2_REFUSED))
        if refused:
            raise ValueError(
                f"invalid {option} OPTIONS: {', '.join(refused)} not supported (L2 keeps RedisCache's own format)"
            )
        value = loc
    if not isinstance(value, str) or not value.startswith(_L2_SCHEMES):
        raise ValueError(
            f"invalid {option}: {value!r}; give a Redis URL (redis://host:port/db, rediss://..., unix:///path) "
            "or a dict with LOCATION and OPTIONS"
        )
    return value, opts


def parse_max_staleness(value: object, option: str = "MAX_STALENESS") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.01 <= value <= 3600):
        raise ValueError(f"invalid {option}: {value!r}; give seconds, at least 0.01 and at most 3600")
    return float(value)


def parse_l1_max_timeout(value: object, option: str = "L1_MAX_TIMEOUT") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < 1e9):
        raise ValueError(f"invalid {option}: {value!r}; give seconds (more than 0) or None for L2's own expiry")
    return float(value)


def parse_l1_exclude(value: object, option: str = "L1_EXCLUDE") -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) and p for p in value):
        raise ValueError(f"invalid {option}: {value!r}; give a list of key prefixes (made keys, e.g. 'site:1:ratelimit:')")
    return tuple(value)


def l1_location(location: str, key_prefix: str) -> str:
    """The L1 segment's LOCATION: LOCATION itself, or ``LOCATION#KEY_PREFIX``
    (one segment, and one listener, per tracked prefix)."""
    if not key_prefix:
        return location
    tail = key_prefix if len(key_prefix.encode("utf-8", "surrogatepass")) <= 64 else hashlib.sha1(key_prefix.encode("utf-8", "surrogatepass")).hexdigest()
    return check_location(f"{location}#{tail}")


def _dump_l2(value: Any, protocol: int) -> Any:
    """Django's RedisSerializer: an exact int as itself, anything else pickled."""
    return value if type(value) is int else pickle.dumps(value, protocol)


def _load_l2(data: bytes) -> Any:
    try:
        return int(data)
    except ValueError:
        return pickle.loads(data)


def _px(t: float | None) -> int | None:
    return None if t is None else max(1, math.ceil(t * 1000))


def parse_django(location: object, options: Mapping[str, Any], key_prefix: object = "") -> tuple[str, Settings, tuple]:
    """Every option of a TieredCache CACHES entry checked, nothing opened:
    (the L1 segment's LOCATION, its Settings, the tier's parsed options).
    The backend and the system checks (`shmcache.checks`) both use it."""
    if "L2" not in options:
        raise ValueError("OPTIONS L2 missing: give the Redis URL of the shared tier, e.g. 'redis://10.0.0.5:6379/0'")
    redis_opts = sorted(set(options) & DJANGO_REDIS_ONLY_OPTIONS)
    if redis_opts:
        raise ValueError(
            f"OPTIONS {', '.join(redis_opts)}: django-redis option(s); TieredCache takes Redis connection options "
            "as redis-py's, in L2's OPTIONS: 'L2': {'LOCATION': url, 'OPTIONS': {'socket_timeout': 1, ...}}"
        )
    unknown = set(options) - DJANGO_OPTIONS - IGNORED_DJANGO_OPTIONS - set(_TIER_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown OPTIONS for TieredCache: {', '.join(sorted(map(str, unknown)))}; known: "
            f"{', '.join(sorted([*DJANGO_OPTIONS, *_TIER_OPTIONS]))} (Redis connection options go in L2's OPTIONS)"
        )
    if not isinstance(key_prefix, str):
        raise ValueError(f"invalid KEY_PREFIX: {key_prefix!r}; give a str")
    tier = (
        parse_l2(options["L2"]),
        key_prefix,
        parse_max_staleness(options.get("MAX_STALENESS", DEFAULT_MAX_STALENESS)),
        parse_l1_max_timeout(options.get("L1_MAX_TIMEOUT", DEFAULT_L1_MAX_TIMEOUT)),
        parse_l1_exclude(options.get("L1_EXCLUDE", ())),
    )
    settings = Settings.from_django({k: v for k, v in options.items() if k not in _TIER_OPTIONS})
    return l1_location(check_location(location), key_prefix), settings, tier


class TieredClient(Cache):
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
        settings = Settings.from_kwargs(**l1_options)
        unknown = set(l1_options) - set(Settings.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown option(s) for TieredClient: {', '.join(sorted(unknown))}")
        if not isinstance(key_prefix, str):
            raise ValueError(f"invalid key_prefix: {key_prefix!r}; give a str")
        tier = (  # all checked before the L1 segment is created
            parse_l2(l2, "l2"),
            key_prefix,
            parse_max_staleness(max_staleness, "max_staleness"),
            parse_l1_max_timeout(l1_max_timeout, "l1_max_timeout"),
            parse_l1_exclude(list(l1_exclude), "l1_exclude"),
        )
        _import_redis()
        l1 = l1_location(check_location(name, "name"), key_prefix)
        self._open(l1, settings, parse_default_timeout(default_timeout, "default_timeout"), "log")
        self._tier(*tier)

    @classmethod
    def from_options(  # type: ignore[override]
        cls, location: str, options: Mapping[str, Any], key_prefix: str = "", json_encoder: type | None = None
    ) -> TieredClient:
        """From a Django CACHES entry (errors name the OPTIONS keys)."""
        l1, settings, tier = parse_django(location, options, key_prefix)
        _import_redis()
        self = cls.__new__(cls)
        self._open(l1, settings, None, "log", json_encoder)
        self._tier(*tier)
        return self

    def _tier(
        self, l2: tuple[str, dict], prefix: str, staleness: float, l1_max: float | None, exclude: tuple[str, ...]
    ) -> None:
        redis = _import_redis()
        self.l2_url, self._l2_options = l2
        self._redis_mod = redis
        self._r = redis.Redis(connection_pool=redis.ConnectionPool.from_url(self.l2_url, **self._l2_options))
        self.key_prefix = prefix
        self.max_staleness = staleness
        self._max_ms = max(1, int(staleness * 1000))
        self._core.set_live_reads(self._max_ms, _listener.LAG_PINGS * _listener.ping_ms(staleness))
        self.l1_max_timeout = l1_max
        self._excl = exclude
        self._excl_b = tuple(p.encode("utf-8", "surrogatepass") for p in exclude)
        # Only keys under the tracked prefix may enter L1 (a KEY_FUNCTION may
        # make others: those go to L2 alone).
        self._prefix_b = prefix.encode("utf-8", "surrogatepass")
        self._screen = bool(exclude) or bool(prefix)
        self._incr_existing = self._r.register_script(_INCR_EXISTING)
        self._segment = self._core.segment
        self._next_try = 0.0
        self._cmds = 0  # Redis commands sent by this client (bench)

    # -- the listener: elected lazily, from operations --

    def _make_listener(self, stop: threading.Event) -> _listener.Listener:
        # RESP2 (pub/sub), no automatic health-check PINGs (they would read
        # our replies), and a name to find it by in CLIENT LIST.
        opts = {**self._l2_options, "protocol": 2, "health_check_interval": 0, "client_name": "shmcache-listener"}
        pool = self._redis_mod.ConnectionPool.from_url(self.l2_url, **opts)
        return _listener.Listener(self._core, pool.make_connection, self._r, self.key_prefix, self.max_staleness, stop)

    def _tick(self) -> None:
        """At most every TRY_EVERY s: take over the listener if nobody runs it."""
        now = time.monotonic()
        if now < self._next_try:
            return
        self._next_try = now + _listener.TRY_EVERY
        try:
            _listener.ensure(self._segment, self._make_listener)
        except OSError as e:
            log.warning("shmcache tiered %s: listener election failed: %s", self.name, e)

    def listen(self) -> None:
        """Start (or check) the listener now rather than from operations."""
        self._next_try = 0.0
        self._tick()

    def _excluded(self, key: Any) -> bool:
        """Is `key` kept out of L1 (L1_EXCLUDE, or not under the prefix)?"""
        if type(key) is str:
            return not key.startswith(self.key_prefix) or (bool(self._excl) and key.startswith(self._excl))
        return not key.startswith(self._prefix_b) or (bool(self._excl) and key.startswith(self._excl_b))

    # -- L1 --

    def _invalidate(self, *keys: Any) -> None:
        """This host's L1 forgets `keys` (after an L2 write: read your writes)."""
        try:
            if len(keys) == 1:
                self._core.invalidate(keys[0])
            elif keys:
                self._core.invalidate_many(list(keys))
        except ShmCacheError as e:
            log.warning("shmcache tiered %s: L1 invalidation failed (%s); flushing L1", self.name, e)
            try:
                self._core.flush()
            except ShmCacheError:
                self._core.set_watermark_ms(0)  # not live until the listener has flushed

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
            self._core.set_if_token(key, self._encode(value), t, token)
        except ValueTooLarge:
            pass  # L1 cannot hold it; L2 still does
        except ShmCacheError as e:
            log.warning("shmcache tiered %s: L1 fill skipped: %s", self.name, e)

    # -- L2 --

    def _decode(self, key: Any, raw: bytes | None, default: Any) -> Any:
        if raw is None:
            return default
        try:
            return _load_l2(raw)
        except Exception as e:  # noqa: BLE001 - code changed between deploys, ...
            log.warning("shmcache tiered: undecodable L2 value for key %.200r: %s", key, e)
            return default

    def _l2_get(self, key: Any, default: Any) -> Any:
        self._cmds += 1
        return self._decode(key, self._r.get(key), default)

    def _read(self, key: Any, default: Any) -> Any:
        """An L1 miss: GET and PTTL in one round trip, then a guarded fill.
        (Not a MULTI: a write between the two sends an invalidation, which
        drops the fill, so GET and PTTL need not be atomic.)"""
        self._tick()
        token = self._core.fill_token(key)
        t0 = time.monotonic()
        pipe = self._r.pipeline(transaction=False)
        pipe.get(key)
        pipe.pttl(key)
        raw, pttl = pipe.execute()
        self._cmds += 2
        if raw is None:
            self._core.tier_add("l2_misses", 1)
            return default
        self._core.tier_add("l2_hits", 1)
        v = self._decode(key, raw, _MISSING)
        if v is _MISSING:
            return default
        _fill_pause(key, after_read=True)
        self._fill(key, v, pttl, t0, token)
        return v

    def _get_live_checked(self, key: str | bytes) -> Any:
        """After get_live's True (live, but the listener missed PINGs): check
        on the listener, then read. One check per call: should the check
        outlast a lag period, the next True is not acted on."""
        self.listen()
        v = self._core.get_live(key)
        while v is True:
            v = self._core.get_live(key)
        return v

    # -- one key --

    def get(self, key: str | bytes, default: Any = None) -> Any:
        # The hot path: an L1 hit. No key is screened here: a key outside the
        # prefix or in L1_EXCLUDE is never filled (`_fill`), so never in L1.
        try:
            v = self._core.get_live(key)
            if v is True:
                v = self._get_live_checked(key)
        except ShmCacheError as e:
            log.warning("shmcache tiered %s: %s", self.name, e)
            v = False
        if v is None:
            return self._read(key, default)
        if v is False:  # not live: L2 answers, nothing is filled
            self._tick()
            return self._l2_get(key, default)
        if type(v) is tuple:
            v = self._load(key, v, _MISSING)
            if v is _MISSING:
                return self._read(key, default)
        return v

    def set(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT, nx: bool = False) -> bool:
        if nx:
            return self.add(key, value, timeout)
        t = self._timeout(timeout)
        if t is not None and t <= 0:
            self.delete(key)
            return False
        self._tick()
        self._r.set(key, _dump_l2(value, self.pickle_protocol), px=_px(t))
        self._cmds += 1
        self._invalidate(key)
        return True

    def add(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT) -> bool:
        t = self._timeout(timeout)
        self._tick()
        self._cmds += 1
        if t is not None and t <= 0:
            return not self._r.exists(key)
        stored = bool(self._r.set(key, _dump_l2(value, self.pickle_protocol), px=_px(t), nx=True))
        if stored:
            self._invalidate(key)
        return stored

    def delete(self, key: str | bytes) -> bool:
        self._tick()
        n = self._r.delete(key)
        self._cmds += 1
        self._invalidate(key)
        return bool(n)

    def touch(self, key: str | bytes, timeout: Any = _DEFAULT) -> bool:
        t = self._timeout(timeout)
        if t is not None and t <= 0:
            return self.delete(key)
        self._tick()
        if t is None:
            pipe = self._r.pipeline(transaction=True)
            pipe.exists(key)
            pipe.persist(key)
            found = bool(pipe.execute()[0])
        else:
            found = bool(self._r.pexpire(key, _px(t)))
        self._cmds += 1
        self._invalidate(key)
        return found

    def _incr(self, key: str | bytes, delta: int, ignore_key_check: bool) -> int:
        self._tick()
        redis = self._redis_mod
        try:
            if ignore_key_check:
                n = self._r.incrby(key, delta)
            else:
                n = self._incr_existing(keys=[key], args=[delta])
        except redis.ResponseError as e:
            if "not an integer" in str(e):
                raise TypeError(f"the value of {key!r} in L2 is not an integer (or the result overflows 64 bits)") from None
            raise
        finally:
            self._cmds += 1
            self._invalidate(key)
        if n is None:
            raise KeyError(key)
        return int(n)

    def incr(self, key: str | bytes, delta: int = 1, ignore_key_check: bool = False) -> int:
        """Atomic across hosts (Redis INCRBY, 64-bit). KeyError if missing
        unless `ignore_key_check`; TypeError if not an integer."""
        return self._incr(key, _delta(delta), bool(ignore_key_check))

    def decr(self, key: str | bytes, delta: int = 1, ignore_key_check: bool = False) -> int:
        return self._incr(key, -_delta(delta), bool(ignore_key_check))

    def has_key(self, key: str | bytes) -> bool:
        try:
            v = self._core.get_live(key)
            if v is True:
                v = self._get_live_checked(key)
        except ShmCacheError:
            v = False
        if v is not None and v is not False:
            return True
        self._tick()
        self._cmds += 1
        return bool(self._r.exists(key))

    __contains__ = has_key

    def _ttl_ms(self, key: str | bytes) -> int:
        self._cmds += 1
        return int(self._r.pttl(key))

    def rename(self, src: str | bytes, dst: str | bytes) -> bool:
        """Redis RENAME (the time left moves with the value); False if missing."""
        self._tick()
        self._cmds += 1
        try:
            self._r.rename(src, dst)
        except self._redis_mod.ResponseError:
            return False
        finally:
            self._invalidate(src, dst)
        return True

    # -- many keys --

    def get_many(self, keys: Iterable[str | bytes]) -> dict:
        keys = _key_list(keys)
        if not keys:
            return {}
        out: dict = {}
        try:
            live = self._core.live(self._max_ms)
            if live and self._core.lag_due():  # see `get`
                self.listen()
            values = self._core.get_many(keys)[0] if live else [None] * len(keys)
        except ShmCacheError as e:
            log.warning("shmcache tiered %s: %s", self.name, e)
            live, values = False, [None] * len(keys)
        missing = []
        for k, v in zip(keys, values):
            if v is not None:
                if type(v) is tuple:
                    v = self._load(k, v, _MISSING)
                    if v is _MISSING:
                        missing.append(k)
                        continue
                out[k] = v
            else:
                missing.append(k)
        if not missing:
            return out
        self._tick()
        fill = [k for k in missing if not (self._screen and self._excluded(k))] if live else []
        tokens = [self._core.fill_token(k) for k in fill]
        t0 = time.monotonic()
        pipe = self._r.pipeline(transaction=False)
        pipe.mget(missing)
        for k in fill:
            pipe.pttl(k)
        raws, *pttls = pipe.execute()
        self._cmds += 1 + len(fill)
        ttl_of = dict(zip(fill, zip(pttls, tokens)))
        hits = 0
        for k, raw in zip(missing, raws):
            v = self._decode(k, raw, _MISSING)
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

    def set_many(self, mapping: Mapping, timeout: Any = _DEFAULT) -> list:
        if not isinstance(mapping, Mapping):
            raise TypeError(f"set_many needs a mapping (a dict of key -> value), not {type(mapping).__name__}")
        t = self._timeout(timeout)
        keys = list(mapping)
        if t is not None and t <= 0:
            self.delete_many(keys)
            return []
        if not keys:
            return []
        self._tick()
        pipe = self._r.pipeline(transaction=True)
        px = _px(t)
        for k in keys:
            pipe.set(k, _dump_l2(mapping[k], self.pickle_protocol), px=px)
        pipe.execute()
        self._cmds += len(keys)
        self._invalidate(*keys)
        return []

    def delete_many(self, keys: Iterable[str | bytes]) -> int:
        keys = _key_list(keys)
        if not keys:
            return 0
        self._tick()
        n = self._r.delete(*keys)
        self._cmds += 1
        self._invalidate(*keys)
        return int(n)

    def iter_keys(self, pattern: str = "*", itersize: int | None = None) -> Iterator[str]:
        """The keys in L2 matching the Redis glob `pattern` (SCAN; each once)."""
        count = _itersize(itersize)
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str (a glob such as 'user:*'), not {type(pattern).__name__}")
        seen: set[bytes] = set()
        for raw in self._r.scan_iter(match=pattern, count=count):
            if raw not in seen:
                seen.add(raw)
                yield raw.decode("utf-8", "surrogatepass")

    # -- locks: in Redis, so shared by every host --

    def lock(
        self,
        key: str | bytes,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        thread_local: bool = True,
    ) -> Any:
        """redis-py's ``Lock`` on L2 (what django-redis's ``lock()`` returns)."""
        return self._r.lock(
            key, timeout=timeout, sleep=sleep, blocking=blocking, blocking_timeout=blocking_timeout, thread_local=thread_local
        )

    def alock(
        self,
        key: str | bytes,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        thread_local: bool = True,
    ) -> Any:
        """`lock` whose acquire waits with ``asyncio.sleep``."""
        return AsyncRedisLock(self.lock(key, timeout, sleep, blocking, blocking_timeout, thread_local))

    # -- the whole cache --

    def clear(self) -> None:
        """FLUSHDB on L2 (every host's listener then flushes its L1), and
        this host's L1 at once."""
        self._tick()
        self._r.flushdb()
        self._cmds += 1
        try:
            self._core.flush()
        except ShmCacheError as e:
            log.warning("shmcache tiered %s: L1 flush failed: %s", self.name, e)
            self._core.set_watermark_ms(0)

    def stats(self) -> dict:
        """The tier's counters (host-wide), the listener, and L1's own stats."""
        l1 = self._core.stats()
        t = self._core.tier_stats()
        wm = self._core.watermark_ms
        from ._core import monotonic_ms

        return {
            "l1_hits": l1["hits"],
            "l1_misses": l1["misses"],
            **t,
            "live": self._core.live(self._max_ms),
            "watermark_age_ms": None if not wm else monotonic_ms() - wm,
            "listener_pid": self._core.listener_pid,
            "listener_here": _listener.running_here(self._segment),
            "redis_commands": self._cmds,
            "l1": l1,
        }

    def dump(self, path: Any) -> dict:
        raise TypeError("a TieredCache's truth is Redis: snapshot Redis itself (its L1 refills from it)")

    load = dump

    def close(self) -> None:
        """Nothing per request: the L2 connection pool and L1 stay for the process."""


class AsyncRedisLock:
    """A redis-py ``Lock`` whose acquire polls with ``asyncio.sleep``."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock

    async def __aenter__(self) -> AsyncRedisLock:
        if await self.acquire():
            return self
        from redis.exceptions import LockError

        raise LockError("Unable to acquire lock within the time specified")

    async def __aexit__(self, *exc: object) -> None:
        self.lock.release()

    async def acquire(self, blocking: bool | None = None, blocking_timeout: float | None = None, token: Any = None) -> bool:
        lk = self.lock
        blocking = lk.blocking if blocking is None else blocking
        bt = lk.blocking_timeout if blocking_timeout is None else blocking_timeout
        deadline = None if bt is None else time.monotonic() + bt
        while True:
            if lk.acquire(blocking=False, token=token):
                return True
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False
            await asyncio.sleep(lk.sleep)

    async def release(self) -> None:
        self.lock.release()

    async def locked(self) -> bool:
        return self.lock.locked()

    async def owned(self) -> bool:
        return self.lock.owned()

    async def extend(self, additional_time: float, replace_ttl: bool = False) -> bool:
        return self.lock.extend(additional_time, replace_ttl)


# ---- test hook: hold a fill between its L2 read and its store ----

_pause: dict[str, Any] = {}


def _fill_pause(key: Any, after_read: bool = False) -> None:
    """Tests only (`set_fill_pause`): a fill of `key` waits, after its L2
    read, until the given file exists."""
    if _pause and after_read and _pause.get("key") == key:
        import os

        with open(_pause["reached"], "w"):
            pass
        deadline = time.monotonic() + 30
        while not os.path.exists(_pause["release"]) and time.monotonic() < deadline:
            time.sleep(0.005)


def set_fill_pause(key: str | None, reached: str = "", release: str = "") -> None:
    """Test hook: the next fills of `key` in this process stop after their
    L2 read, create the file `reached`, and wait for the file `release`."""
    _pause.clear()
    if key is not None:
        _pause.update(key=key, reached=reached, release=release)
