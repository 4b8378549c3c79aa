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
  PTTL pipelined; MGET for many keys), then an L1 fill with the time L2
  gives the key (at most L1_MAX_TIMEOUT), guarded by a fill token taken
  before the L2 read: an invalidation or flush in between drops the fill.
- Writes: L2 first (the truth), then this host's L1 is invalidated (so a
  host reads its own writes); the other hosts hear of it from Redis. add,
  incr/decr, set(nx=True) and lock() run in Redis, so they are atomic across
  hosts. clear() is FLUSHDB: every host's listener flushes its L1.
- L2 keys and values are exactly Django's ``RedisCache``'s (the made key;
  ints as themselves, everything else pickled), so the two share data.
- L1_EXCLUDE: key prefixes (of made keys) that never enter L1.
- Async: every method that may need Redis has an ``a*`` twin on
  ``redis.asyncio`` (one pool per event loop), running the same steps.
- get_or_set: one computation across every host (a leased marker in Redis).
- Redis Cluster is not supported (one Redis server, or a primary).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import pickle
import threading
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Mapping
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
from .client import (
    _DEFAULT,
    _MISSING,
    FLIGHT_WAIT,
    Cache,
    _check_wait,
    _delta,
    _flight_key,
    _itersize,
    _key_list,
    _until,
    log,
)

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


# ---- L2 requests ----
#
# Every operation that talks to Redis is written once, as a generator of
# *steps*: it yields a request (the commands of one round trip) and is sent
# back the replies, one per command, or has the error thrown into it; a float
# it yields is a pause. Its sync method runs it with redis-py's client
# (`_run`), its async twin with ``redis.asyncio`` on the running loop
# (`_arun`), so both keep every rule (fill tokens, invalidation after a
# write, the staleness bound) and the event loop never waits on Redis.

Request = tuple  # (transaction: bool, commands: tuple of command tuples)


def _cmd(*args: Any) -> Request:
    return (False, (args,))


def _pipe(*cmds: tuple, multi: bool = False) -> Request:
    return (multi, cmds)


def _set_cmd(key: Any, data: Any, px: int | None, nx: bool = False) -> tuple:
    return ("SET", key, data, *(() if px is None else ("PX", px)), *(("NX",) if nx else ()))


# Sentinels of the L1 read: a miss while live (read L2 and fill), and not
# live (read L2, fill nothing).
_MISS = object()
_NOT_LIVE = object()

# get_or_set across hosts: the marker a computation holds in Redis, its
# lease (renewed while the holder computes, so a dead or stopped holder's
# marker lapses within it), and the scripts that renew and free it only for
# its owner.
FLIGHT_LEASE = 2.0
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_FREE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class _Lease:
    """Renews a flight marker from a thread while its holder computes (the
    computation may hold the event loop, or the GIL in C code: a thread
    still runs while it waits on Redis), until `stop` or `until`."""

    def __init__(self, r: Any, marker: Any, token: str, until: float) -> None:
        self.r, self.marker, self.token, self.until = r, marker, token, until
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._renew, name="shmcache-flight-lease", daemon=True)
        self.thread.start()

    def _renew(self) -> None:
        ms = int(FLIGHT_LEASE * 1000)
        while not self.done.wait(FLIGHT_LEASE / 3) and time.monotonic() < self.until:
            try:
                if not self.r.eval(_RENEW, 1, self.marker, self.token, ms):
                    return  # lost (expired, flushed): waiters go on without us
            except Exception as e:  # noqa: BLE001 - Redis down: the marker lapses, which is safe
                log.warning("shmcache tiered: get_or_set marker not renewed: %s", e)

    def stop(self) -> None:
        self.done.set()


class TieredClient(Cache):
    """L1 (a `shmcache.Cache` on `name`) in front of L2 (Redis at `l2`).

    Keys are the made keys (the Django face makes them); `key_prefix` is the
    tracking PREFIX the listener registers (Django's KEY_PREFIX). One
    LOCATION serves one L2 and one prefix. Errors of L1 are logged and L2
    answers; errors of L2 (Redis down) raise, as RedisCache's do.

    Every method that may need Redis has an async twin (``aget``, ``aset``,
    ...) on ``redis.asyncio``, with a connection pool per event loop (closed
    by `aclose`); an L1 hit through ``aget`` never leaves the call."""

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
        self._aclients: dict[asyncio.AbstractEventLoop, tuple[int, Any]] = {}
        self._aclients_lock = threading.Lock()
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
        self._segment = self._core.segment
        self._next_try = 0.0
        self._cmds = 0  # Redis commands sent by this client (bench)

    # -- the drivers: one request at a time, sync or on the event loop --

    def _send(self, req: Request) -> list:
        multi, cmds = req
        self._cmds += len(cmds)
        if len(cmds) == 1 and not multi:
            return [self._r.execute_command(*cmds[0])]
        pipe = self._r.pipeline(transaction=multi)
        for c in cmds:
            pipe.execute_command(*c)
        return pipe.execute()

    def _run(self, steps: Generator[Any, Any, Any]) -> Any:
        try:
            req = next(steps)
            while True:
                if type(req) is float:
                    time.sleep(req)
                    req = steps.send(None)
                    continue
                try:
                    replies = self._send(req)
                except Exception as e:  # noqa: BLE001 - the steps decide (their except/finally run)
                    req = steps.throw(e)
                else:
                    req = steps.send(replies)
        except StopIteration as done:
            return done.value

    def _aredis(self) -> Any:
        """The running loop's ``redis.asyncio`` client (its own pool:
        asyncio connections belong to one loop). Pools of loops that have
        closed are dropped (their sockets close as they are collected)."""
        loop = asyncio.get_running_loop()
        got = self._aclients.get(loop)
        if got is not None and got[0] == os.getpid():
            return got[1]
        from redis import asyncio as aioredis

        with self._aclients_lock:
            for old in [lp for lp, (pid, _) in self._aclients.items() if lp.is_closed() or pid != os.getpid()]:
                del self._aclients[old]
            r = aioredis.Redis(connection_pool=aioredis.ConnectionPool.from_url(self.l2_url, **self._l2_options))
            self._aclients[loop] = (os.getpid(), r)
        return r

    async def _asend(self, req: Request) -> list:
        multi, cmds = req
        r = self._aredis()
        self._cmds += len(cmds)
        if len(cmds) == 1 and not multi:
            return [await r.execute_command(*cmds[0])]
        pipe = r.pipeline(transaction=multi)
        for c in cmds:
            pipe.execute_command(*c)
        return await pipe.execute()

    async def _arun(self, steps: Generator[Any, Any, Any]) -> Any:
        try:
            req = next(steps)
            while True:
                if type(req) is float:
                    await asyncio.sleep(req)
                    req = steps.send(None)
                    continue
                try:
                    replies = await self._asend(req)
                except Exception as e:  # noqa: BLE001 - as in _run
                    req = steps.throw(e)
                else:
                    req = steps.send(replies)
        except StopIteration as done:
            return done.value

    # -- the listener: elected lazily, from operations --

    def _make_listener(self, stop: threading.Event) -> _listener.Listener:
        # RESP2 (pub/sub), no automatic health-check PINGs (they would read
        # our replies), and a name to find it by in CLIENT LIST.
        opts = {**self._l2_options, "protocol": 2, "health_check_interval": 0, "client_name": "shmcache-listener"}
        pool = self._redis_mod.ConnectionPool.from_url(self.l2_url, **opts)
        return _listener.Listener(self._core, pool.make_connection, self._r, self.key_prefix, self.max_staleness, stop)

    def _tick(self) -> None:
        """At most every TRY_EVERY s: take over the listener if nobody runs
        it (a non-blocking lockf and, if won, a thread: never a wait)."""
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

    def _l1_failed(self, e: ShmCacheError) -> bool:
        """L1 could not be read (a lock timeout, ...): logged, and L2 answers."""
        log.warning("shmcache tiered %s: %s", self.name, e)
        return False

    def _get_live(self, key: Any) -> Any:
        """The core's live read: the L1 value (or its encoded tuple), None
        (a miss), False (not live) or True (live, but the listener missed
        PINGs: `_checked` checks on it, then reads)."""
        try:
            return self._core.get_live(key)
        except ShmCacheError as e:
            return self._l1_failed(e)

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
            return self._load(key, v, _MISS)
        return v

    def _invalidate(self, *keys: Any) -> None:
        """This host's L1 forgets `keys` (after an L2 write: read your writes)."""
        try:
            if len(keys) == 1:
                self._core.invalidate(keys[0])
            elif keys:
                self._core.invalidate_many(list(keys))
        except ShmCacheError as e:
            log.warning("shmcache tiered %s: L1 invalidation failed (%s); flushing L1", self.name, e)
            self._flush_l1()

    def _flush_l1(self) -> None:
        try:
            self._core.flush()
        except ShmCacheError as e:
            log.warning("shmcache tiered %s: L1 flush failed: %s", self.name, e)
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

    def _decode(self, key: Any, raw: bytes | None, default: Any) -> Any:
        if raw is None:
            return default
        try:
            return _load_l2(raw)
        except Exception as e:  # noqa: BLE001 - code changed between deploys, ...
            log.warning("shmcache tiered: undecodable L2 value for key %.200r: %s", key, e)
            return default

    # -- the steps of each operation (see "L2 requests" above) --

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
            (raw,) = yield _cmd("GET", key)
            return self._decode(key, raw, default)
        token = self._core.fill_token(key)
        t0 = time.monotonic()
        raw, pttl = yield _pipe(("GET", key), ("PTTL", key))
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

    def _set(self, key: Any, value: Any, timeout: Any, nx: bool) -> Generator[Any, Any, bool]:
        if nx:
            return (yield from self._add(key, value, timeout))
        t = self._timeout(timeout)
        if t is not None and t <= 0:
            yield from self._delete(key)
            return False
        self._tick()
        yield _cmd(*_set_cmd(key, _dump_l2(value, self.pickle_protocol), _px(t)))
        self._invalidate(key)
        return True

    def _add(self, key: Any, value: Any, timeout: Any) -> Generator[Any, Any, bool]:
        t = self._timeout(timeout)
        self._tick()
        if t is not None and t <= 0:
            (n,) = yield _cmd("EXISTS", key)
            return not n
        (stored,) = yield _cmd(*_set_cmd(key, _dump_l2(value, self.pickle_protocol), _px(t), nx=True))
        if stored:
            self._invalidate(key)
        return bool(stored)

    def _delete(self, key: Any) -> Generator[Any, Any, bool]:
        self._tick()
        try:
            (n,) = yield _cmd("DEL", key)
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
                found, _ = yield _pipe(("EXISTS", key), ("PERSIST", key), multi=True)
            else:
                (found,) = yield _cmd("PEXPIRE", key, _px(t))
        finally:
            self._invalidate(key)
        return bool(found)

    def _incr(self, key: Any, delta: int, ignore_key_check: bool) -> Generator[Any, Any, int]:
        self._tick()
        try:
            if ignore_key_check:
                (n,) = yield _cmd("INCRBY", key, delta)
            else:
                (n,) = yield _cmd("EVAL", _INCR_EXISTING, 1, key, delta)
        except self._redis_mod.ResponseError as e:
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
        (n,) = yield _cmd("EXISTS", key)
        return bool(n)

    def _pttl(self, key: Any) -> Generator[Any, Any, int]:
        (ms,) = yield _cmd("PTTL", key)
        return int(ms)

    def _rename(self, src: Any, dst: Any) -> Generator[Any, Any, bool]:
        self._tick()
        try:
            yield _cmd("RENAME", src, dst)
        except self._redis_mod.ResponseError:
            return False  # no such key
        finally:
            self._invalidate(src, dst)
        return True

    def _get_many(self, keys: Any) -> Generator[Any, Any, dict]:
        keys = _key_list(keys)
        if not keys:
            return {}
        out: dict = {}
        try:
            live = self._core.live(self._max_ms)
            if live and self._core.lag_due():  # see `_l1`
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
        raws, *pttls = yield _pipe(("MGET", *missing), *(("PTTL", k) for k in fill))
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
        px, proto = _px(t), self.pickle_protocol
        try:
            yield _pipe(*(_set_cmd(k, _dump_l2(mapping[k], proto), px) for k in keys), multi=True)
        finally:
            self._invalidate(*keys)
        return []

    def _delete_many(self, keys: Any) -> Generator[Any, Any, int]:
        keys = _key_list(keys)
        if not keys:
            return 0
        self._tick()
        try:
            (n,) = yield _cmd("DEL", *keys)
        finally:
            self._invalidate(*keys)
        return int(n)

    def _clear(self) -> Generator[Any, Any, None]:
        self._tick()
        yield _cmd("FLUSHDB")
        self._flush_l1()

    def _scan(self, pattern: str, itersize: int | None) -> Generator[Request, Any, None]:
        """The SCAN requests of a key iteration, each sent the last reply
        (an iterator, not steps: `iter_keys` yields keys between them)."""
        count = _itersize(itersize)
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str (a glob such as 'user:*'), not {type(pattern).__name__}")
        cursor = 0
        while True:
            ((cursor, _),) = yield _cmd("SCAN", cursor, "MATCH", pattern, "COUNT", count)
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

    def _flight(self, key: Any, default: Any, timeout: Any, wait: float) -> Generator[Any, Any, Any]:
        """get_or_set, held across hosts: a miss takes a marker in Redis (SET
        NX, a lease of FLIGHT_LEASE renewed while it computes); the others
        poll for the value (pauses doubling to 20 ms) and take the marker
        over once it lapses (its holder died or stopped), or compute
        themselves after `wait` s."""
        _check_wait(wait)
        v = yield from self._get(key, _MISSING)
        if v is not _MISSING:
            return v
        if not callable(default):
            return (yield from self._add_then_get(key, default, timeout))
        marker = _flight_key(key)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait
        lease_ms = max(1, int(min(FLIGHT_LEASE, max(wait, 0.01)) * 1000))
        pause = 0.0005
        while True:
            (got,) = yield _cmd(*_set_cmd(marker, token, lease_ms, nx=True))
            if got:
                v = yield from self._get(key, _MISSING)  # stored while we took the marker?
                if v is _MISSING:
                    lease = _Lease(self._r, marker, token, deadline)
                    try:
                        value = default()
                    except Exception:
                        lease.stop()
                        yield _cmd("EVAL", _FREE, 1, marker, token)
                        raise
                    lease.stop()
                    v = yield from self._add_then_get(key, value, timeout)
                yield _cmd("EVAL", _FREE, 1, marker, token)
                return v
            if time.monotonic() >= deadline:
                return (yield from self._add_then_get(key, default(), timeout))
            yield pause
            pause = min(pause * 2, 0.02)
            v = yield from self._get(key, _MISSING)
            if v is not _MISSING:
                return v

    def _add_then_get(self, key: Any, value: Any, timeout: Any) -> Generator[Any, Any, Any]:
        yield from self._add(key, value, timeout)
        return (yield from self._get(key, value))  # another host may have stored first

    # -- one key --

    def get(self, key: str | bytes, default: Any = None) -> Any:
        # The hot path, inline: an L1 hit of a native value (bytes, str, int).
        try:
            v = self._core.get_live(key)
        except ShmCacheError as e:
            v = self._l1_failed(e)
        if v is None or v is False or v is True or type(v) is tuple:
            v = self._l1_rest(key, v)
            if v is _MISS or v is _NOT_LIVE:
                return self._run(self._read(key, default, v is _MISS))
        return v

    async def aget(self, key: str | bytes, default: Any = None) -> Any:
        # As `get` (written out again: a call here would cost the hit path 10 %): an L1 hit answers inline, no await.
        try:
            v = self._core.get_live(key)
        except ShmCacheError as e:
            v = self._l1_failed(e)
        if v is None or v is False or v is True or type(v) is tuple:
            v = self._l1_rest(key, v)
            if v is _MISS or v is _NOT_LIVE:
                return await self._arun(self._read(key, default, v is _MISS))
        return v

    def set(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT, nx: bool = False) -> bool:
        return self._run(self._set(key, value, timeout, nx))

    async def aset(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT, nx: bool = False) -> bool:
        return await self._arun(self._set(key, value, timeout, nx))

    def add(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT) -> bool:
        return self._run(self._add(key, value, timeout))

    async def aadd(self, key: str | bytes, value: Any, timeout: Any = _DEFAULT) -> bool:
        return await self._arun(self._add(key, value, timeout))

    def delete(self, key: str | bytes) -> bool:
        return self._run(self._delete(key))

    async def adelete(self, key: str | bytes) -> bool:
        return await self._arun(self._delete(key))

    def touch(self, key: str | bytes, timeout: Any = _DEFAULT) -> bool:
        return self._run(self._touch(key, timeout))

    async def atouch(self, key: str | bytes, timeout: Any = _DEFAULT) -> bool:
        return await self._arun(self._touch(key, timeout))

    def incr(self, key: str | bytes, delta: int = 1, ignore_key_check: bool = False) -> int:
        """Atomic across hosts (Redis INCRBY, 64-bit). KeyError if missing
        unless `ignore_key_check`; TypeError if not an integer."""
        return self._run(self._incr(key, _delta(delta), bool(ignore_key_check)))

    async def aincr(self, key: str | bytes, delta: int = 1, ignore_key_check: bool = False) -> int:
        return await self._arun(self._incr(key, _delta(delta), bool(ignore_key_check)))

    def decr(self, key: str | bytes, delta: int = 1, ignore_key_check: bool = False) -> int:
        return self._run(self._incr(key, -_delta(delta), bool(ignore_key_check)))

    async def adecr(self, key: str | bytes, delta: int = 1, ignore_key_check: bool = False) -> int:
        return await self._arun(self._incr(key, -_delta(delta), bool(ignore_key_check)))

    def has_key(self, key: str | bytes) -> bool:
        return self._run(self._has(key))

    async def ahas_key(self, key: str | bytes) -> bool:
        return await self._arun(self._has(key))

    __contains__ = has_key

    def _ttl_ms(self, key: str | bytes) -> int:
        return self._run(self._pttl(key))

    async def attl(self, key: str | bytes) -> float | None:
        ms = await self._arun(self._pttl(key))
        return None if ms == -1 else 0 if ms == -2 else ms / 1000

    async def apttl(self, key: str | bytes) -> int | None:
        ms = await self._arun(self._pttl(key))
        return None if ms == -1 else 0 if ms == -2 else ms

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

    def rename(self, src: str | bytes, dst: str | bytes) -> bool:
        """Redis RENAME (the time left moves with the value); False if missing."""
        return self._run(self._rename(src, dst))

    async def arename(self, src: str | bytes, dst: str | bytes) -> bool:
        return await self._arun(self._rename(src, dst))

    # -- many keys --

    def get_many(self, keys: Iterable[str | bytes]) -> dict:
        return self._run(self._get_many(keys))

    async def aget_many(self, keys: Iterable[str | bytes]) -> dict:
        return await self._arun(self._get_many(keys))

    def set_many(self, mapping: Mapping, timeout: Any = _DEFAULT) -> list:
        return self._run(self._set_many(mapping, timeout))

    async def aset_many(self, mapping: Mapping, timeout: Any = _DEFAULT) -> list:
        return await self._arun(self._set_many(mapping, timeout))

    def delete_many(self, keys: Iterable[str | bytes]) -> int:
        return self._run(self._delete_many(keys))

    async def adelete_many(self, keys: Iterable[str | bytes]) -> int:
        return await self._arun(self._delete_many(keys))

    def iter_keys(self, pattern: str = "*", itersize: int | None = None) -> Iterator[str]:
        """The keys in L2 matching the Redis glob `pattern` (SCAN; each once)."""
        scan, seen, replies = self._scan(pattern, itersize), set[bytes](), None
        while (req := self._next_scan(scan, replies)) is not None:
            replies = self._send(req)
            yield from self._new_keys(replies, seen)

    async def aiter_keys(self, pattern: str = "*", itersize: int | None = None) -> AsyncIterator[str]:
        scan, seen, replies = self._scan(pattern, itersize), set[bytes](), None
        while (req := self._next_scan(scan, replies)) is not None:
            replies = await self._asend(req)
            for k in self._new_keys(replies, seen):
                yield k

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

    # -- get_or_set: one computation across every host --

    def get_or_set(self, key: str | bytes, default: Any, timeout: Any = _DEFAULT, wait: float = FLIGHT_WAIT) -> Any:
        """The value, or `default` (called if callable) stored and returned.
        When processes on any hosts miss one key at once, one computes and
        the rest wait for its value (at most `wait` s, then they compute
        themselves); a holder that dies or stops frees them within
        FLIGHT_LEASE s (docs/tiered.md)."""
        return self._run(self._flight(key, default, timeout, wait))

    async def aget_or_set(self, key: str | bytes, default: Any, timeout: Any = _DEFAULT, wait: float = FLIGHT_WAIT) -> Any:
        """`get_or_set` that waits with ``asyncio.sleep`` and talks to Redis
        on the loop (the callable itself is called as it is, as Django does)."""
        return await self._arun(self._flight(key, default, timeout, wait))

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
        """``redis.asyncio``'s ``Lock`` on L2, on the running loop's pool:
        ``async with cache.alock("k"):`` (call it inside a coroutine)."""
        try:
            r = self._aredis()
        except RuntimeError:
            raise RuntimeError("alock() is called inside a coroutine: its lock uses the running event loop") from None
        return r.lock(
            key, timeout=timeout, sleep=sleep, blocking=blocking, blocking_timeout=blocking_timeout, thread_local=thread_local
        )

    # -- the whole cache --

    def clear(self) -> None:
        """FLUSHDB on L2 (every host's listener then flushes its L1), and
        this host's L1 at once."""
        self._run(self._clear())

    async def aclear(self) -> None:
        await self._arun(self._clear())

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

    async def aclose(self) -> None:
        """Close the running loop's L2 connection pool (the next async call
        opens a new one); the sync pool and L1 stay."""
        loop = asyncio.get_running_loop()
        with self._aclients_lock:
            got = self._aclients.pop(loop, None)
        if got is not None and got[0] == os.getpid():
            close = getattr(got[1], "aclose", None) or got[1].close  # aclose: redis-py >= 5.0.1
            await close(close_connection_pool=True)


# ---- test hook: hold a fill between its L2 read and its store ----

_pause: dict[str, Any] = {}


def _fill_pause(key: Any, after_read: bool = False) -> None:
    """Tests only (`set_fill_pause`): a fill of `key` waits, after its L2
    read, until the given file exists."""
    if _pause and after_read and _pause.get("key") == key:
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
