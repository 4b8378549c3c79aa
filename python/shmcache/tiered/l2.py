"""L2: the Redis a tier stands in front of, and how operations talk to it.

Every operation that talks to Redis is written once, as a generator of
*steps* (`shmcache.tiered.client`): it yields a request (the commands of one
round trip, `cmd`/`pipe`) and is sent back the replies, one per command, or
has the error thrown into it; a float it yields is a pause. `L2.run` drives
it with redis-py's client, `L2.arun` with ``redis.asyncio`` on the running
loop (a pool per event loop), so the sync and async methods keep the same
rules and the event loop never waits on Redis.

Keys and values are Django's ``RedisCache``'s: the made key; an exact int
as itself, anything else pickled (`dump`, `load`).
"""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import threading
import time
from collections.abc import Generator
from typing import Any

from .options import L2Spec

Request = tuple  # (transaction: bool, commands: tuple of command tuples)

# INCRBY only if the key exists (Django's incr raises on a missing key).
INCR_EXISTING = "if redis.call('EXISTS', KEYS[1]) == 0 then return false end return redis.call('INCRBY', KEYS[1], ARGV[1])"


def import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ImportError(
            "shmcache's TieredCache needs redis-py: pip install 'shmcache[tiered]' (or pip install redis)"
        ) from None
    return redis


def cmd(*args: Any) -> Request:
    """One command, alone in its round trip."""
    return (False, (args,))


def pipe(*cmds: tuple, multi: bool = False) -> Request:
    """Commands in one round trip (pipelined; in a MULTI with `multi`)."""
    return (multi, cmds)


def set_cmd(key: Any, data: Any, px: int | None, nx: bool = False) -> tuple:
    return ("SET", key, data, *(() if px is None else ("PX", px)), *(("NX",) if nx else ()))


def px(t: float | None) -> int | None:
    """Seconds as Redis's whole milliseconds (at least 1), or None: never."""
    return None if t is None else max(1, math.ceil(t * 1000))


def dump(value: Any, protocol: int) -> Any:
    """Django's RedisSerializer: an exact int as itself, anything else pickled."""
    return value if type(value) is int else pickle.dumps(value, protocol)


def load(data: bytes) -> Any:
    try:
        return int(data)
    except ValueError:
        return pickle.loads(data)


class _Drive:
    """Where a run of steps is: the request it waits on, or done with its value."""

    __slots__ = ("steps", "request", "done", "value")

    def __init__(self, steps: Generator[Any, Any, Any]) -> None:
        self.steps, self.done, self.value = steps, False, None
        self._advance(steps.__next__)

    def answer(self, replies: Any, error: Exception | None) -> None:
        """The request's replies sent in, or its error thrown in; an error
        the steps do not handle propagates from here."""
        if error is None:
            self._advance(lambda: self.steps.send(replies))
        else:
            self._advance(lambda: self.steps.throw(error))

    def _advance(self, resume: Any) -> None:
        try:
            self.request = resume()
        except StopIteration as done:
            self.done, self.value = True, done.value


class L2:
    """Redis at `spec` (`options.L2Spec`: a URL, or a primary found through
    sentinels, followed across a failover): a client for the sync driver,
    and one per event loop for the async driver (asyncio connections belong
    to one loop) made on the loop's first call and closed by `aclose`;
    pools of loops that closed without it are dropped when another loop
    opens one (their sockets close as they are collected)."""

    def __init__(self, spec: L2Spec) -> None:
        redis = import_redis()
        self.spec = spec
        self.redis_module = redis
        self.errors = redis.exceptions  # Redis errors are matched by class
        if spec.sentinels:
            from redis.sentinel import Sentinel

            self._sentinel = Sentinel(list(spec.sentinels), sentinel_kwargs=spec.sentinel_options, **spec.options)
            self.sync = self._sentinel.master_for(spec.service, db=spec.db)
        else:
            self.sync = redis.Redis(connection_pool=redis.ConnectionPool.from_url(spec.url, **spec.options))
        self._aclients: dict[asyncio.AbstractEventLoop, tuple[int, Any]] = {}
        self._aclients_lock = threading.Lock()
        self.commands = 0  # Redis commands sent (the bench counts them)

    def _new_async_client(self) -> Any:
        if self.spec.sentinels:
            from redis.asyncio.sentinel import Sentinel

            s = self.spec
            return Sentinel(list(s.sentinels), sentinel_kwargs=s.sentinel_options, **s.options).master_for(s.service, db=s.db)
        from redis import asyncio as aioredis

        return aioredis.Redis(connection_pool=aioredis.ConnectionPool.from_url(self.spec.url, **self.spec.options))

    # -- the sync driver --

    def send(self, req: Request) -> list:
        multi, cmds = req
        self.commands += len(cmds)
        if len(cmds) == 1 and not multi:
            return [self.sync.execute_command(*cmds[0])]
        p = self.sync.pipeline(transaction=multi)
        for c in cmds:
            p.execute_command(*c)
        return p.execute()

    def run(self, steps: Generator[Any, Any, Any]) -> Any:
        """Drive `steps` to their result: each request sent, the replies
        sent back (or the error thrown in: the steps' except/finally run)."""
        drive = _Drive(steps)
        while not drive.done:
            drive.answer(*self._io(drive.request))
        return drive.value

    def _io(self, req: Any) -> tuple[Any, Exception | None]:
        """A request sent, or a pause slept: (the replies, None) or (None, the error)."""
        try:
            return (time.sleep(req) if type(req) is float else self.send(req)), None
        except Exception as e:  # noqa: BLE001 - thrown into the steps, which decide
            return None, e

    # -- the async driver --

    def aredis(self) -> Any:
        """The running loop's ``redis.asyncio`` client."""
        loop = asyncio.get_running_loop()
        got = self._aclients.get(loop)
        if got is not None and got[0] == os.getpid():
            return got[1]
        with self._aclients_lock:
            for old in [lp for lp, (pid, _) in self._aclients.items() if lp.is_closed() or pid != os.getpid()]:
                del self._aclients[old]
            r = self._new_async_client()
            self._aclients[loop] = (os.getpid(), r)
        return r

    async def asend(self, req: Request) -> list:
        multi, cmds = req
        r = self.aredis()
        self.commands += len(cmds)
        if len(cmds) == 1 and not multi:
            return [await r.execute_command(*cmds[0])]
        p = r.pipeline(transaction=multi)
        for c in cmds:
            p.execute_command(*c)
        return await p.execute()

    async def arun(self, steps: Generator[Any, Any, Any]) -> Any:
        """`run` on the event loop: requests awaited, pauses with ``asyncio.sleep``."""
        drive = _Drive(steps)
        while not drive.done:
            drive.answer(*await self._aio(drive.request))
        return drive.value

    async def _aio(self, req: Any) -> tuple[Any, Exception | None]:
        try:
            return (await asyncio.sleep(req) if type(req) is float else await self.asend(req)), None
        except Exception as e:  # noqa: BLE001 - as in _io
            return None, e

    async def aclose(self) -> None:
        """Close the running loop's pool (the next async call opens a new one)."""
        loop = asyncio.get_running_loop()
        with self._aclients_lock:
            got = self._aclients.pop(loop, None)
        if got is not None and got[0] == os.getpid():
            close = getattr(got[1], "aclose", None) or got[1].close  # aclose: redis-py >= 5.0.1
            await close(close_connection_pool=True)

    # -- locks, and the listener's connections --

    def lock(self, key: Any, options: tuple, for_asyncio: bool) -> Any:
        """redis-py's ``Lock`` on `key` (``redis.asyncio``'s on the running
        loop's pool `for_asyncio`: call it inside a coroutine), with
        (timeout, sleep, blocking, blocking_timeout, thread_local)."""
        timeout, sleep, blocking, blocking_timeout, thread_local = options
        if for_asyncio:
            try:
                r = self.aredis()
            except RuntimeError:
                raise RuntimeError("alock() is called inside a coroutine: its lock uses the running event loop") from None
        else:
            r = self.sync
        return r.lock(
            key, timeout=timeout, sleep=sleep, blocking=blocking, blocking_timeout=blocking_timeout, thread_local=thread_local
        )

    def listener_connections(self) -> Any:
        """A factory of raw connections for the invalidation listener:
        RESP2 (pub/sub), no automatic health-check PINGs (they would read its
        replies), and a name to find it by in CLIENT LIST. Behind sentinels,
        each connection asks them for the primary as it connects."""
        s = self.spec
        opts = {**s.options, "protocol": 2, "health_check_interval": 0, "client_name": "shmcache-listener"}
        if s.sentinels:
            from redis.sentinel import SentinelConnectionPool

            return SentinelConnectionPool(s.service, self._sentinel, db=s.db, **opts).make_connection
        return self.redis_module.ConnectionPool.from_url(s.url, **opts).make_connection
