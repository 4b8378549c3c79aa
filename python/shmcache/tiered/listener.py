"""The invalidation listener of a tiered cache's L1: one per L1 segment per
host (docs/tiered.md).

It owns one raw Redis connection (RESP2), on which it turns on server-assisted
client-side caching in BCAST mode for the KEY_PREFIX, redirected to itself
(``CLIENT TRACKING on REDIRECT <own id> BCAST PREFIX <prefix>``; never
NOLOOP), and SUBSCRIBEs to ``__redis__:invalidate``. A list of keys
invalidates those keys in L1; a null (FLUSHDB/FLUSHALL) flushes L1.

Liveness: it PINGs on that connection every ~0.2 s and, when the PONG
arrives, stores the PING's send time as the segment's watermark. A PONG is
queued behind every invalidation Redis sent before it, so once the watermark
reads W, every write completed before W has been applied to L1. Workers
serve from L1 only while the watermark is younger than MAX_STALENESS. On
every (re)connect, L1 is flushed before the first watermark is written.

Election: the listener holds a POSIX record lock (``lockf``) on a file beside
the segment (``/dev/shm/.<segment>.listener``). The kernel drops it when the
holder dies, and a child never inherits it. Workers try to take it at most
every `TRY_EVERY` seconds from their cache operations (`ensure`); the winner
runs the listener in a daemon thread. A process that forks first stops its
listener thread (a fork handler), so a Gunicorn ``--preload`` master never
forks with one, and its children start none of their own until elected.
``python -m shmcache listen`` runs the same loop in the foreground (a
sidecar, `shmcache.tiered.sidecar`), for hosts whose workers are too busy.

This module knows nothing of the client: it is given the L1 handle, a
factory of connections to L2 and a redis-py client (for the canary).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from .. import _core
from .._core import ShmCacheError

log = logging.getLogger("shmcache.tiered")

# How often a worker tries to take over the listener lock (from operations).
TRY_EVERY = 0.5
# How often the listener PINGs (at most; a quarter of MAX_STALENESS if smaller).
PING_EVERY = 0.2
# A watermark older than this many PING periods: the listener has missed
# PINGs, so a worker whose reads are all L1 hits checks on it (the election)
# before MAX_STALENESS turns the L1 off. 3 periods is 3/4 of MAX_STALENESS at
# most.
LAG_PINGS = 3
# A PING unanswered this long: the connection is taken as dead (reconnect).
PONG_TIMEOUT = 5.0
# How long the startup canary waits for its own invalidation.
CANARY_WAIT = 2.0
CHANNEL = b"__redis__:invalidate"


# The most often one kind of the listener's failures is logged.
LOG_EVERY = 60.0


def _refused(e: Exception) -> bool:
    """An error that retrying will not cure soon: a wrong password, an ACL
    user without a permission the listener needs."""
    from redis import exceptions as x

    return isinstance(e, (x.AuthenticationError, x.AuthorizationError, x.NoPermissionError)) or (
        isinstance(e, x.ResponseError) and str(e).startswith(("WRONGPASS", "NOPERM", "NOAUTH"))
    )


def _address(conn: Any) -> str:
    """host:port (or the socket's path) of the server a connection reached."""
    if getattr(conn, "path", None):
        return str(conn.path)
    return f"{conn.host}:{conn.port}"


def _refuse_a_cluster(conn: Any) -> None:
    """A Redis Cluster node: not supported (each key lives on one node; its
    invalidations come from that node alone)."""
    from redis.exceptions import ResponseError

    try:
        conn.send_command("INFO", "cluster")
        info = conn.read_response()
    except ResponseError:
        return  # INFO not allowed to this user: nothing to tell
    if b"cluster_enabled:1" in (info if isinstance(info, bytes) else str(info).encode()):
        raise TrackingUnavailable(
            "L2 is a Redis Cluster node; TieredCache supports one Redis server or a primary behind sentinels "
            "(docs/tiered.md, 'Redis Cluster')"
        )


def state_path(segment: str) -> str:
    """The listener's state beside the election file: L2's address it last
    reached and the failovers followed (JSON, replaced whole)."""
    return lock_path(segment) + ".state"


def read_state(path: str) -> dict:
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(path: str, state: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


class TrackingUnavailable(RuntimeError):
    """Redis accepted the connection but sends no invalidations (CLIENT
    TRACKING refused or disabled, as on some managed services)."""


def ping_ms(max_staleness: float) -> int:
    """The PING period for a MAX_STALENESS (seconds), in ms."""
    return max(1, int(min(PING_EVERY, max_staleness / 4) * 1000))


def lock_path(segment: str) -> str:
    """The election file beside the segment in /dev/shm (a dot name: no
    segment scan of /dev/shm takes it for a segment)."""
    return f"/dev/shm/.{segment.lstrip('/')}.listener"


def _open_lock_file(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise OSError(f"{path} is not a regular file owned by this user; remove it")
    return fd


def try_lock(path: str) -> int | None:
    """The fd holding the election lock, or None if another process holds it."""
    fd = _open_lock_file(path)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class Listener:
    """The loop that keeps one L1 segment coherent with Redis.

    `core` is the L1 (`_core.Cache`), `connect` makes a new RESP2 redis-py
    ``Connection`` to L2, `client` is a ``redis.Redis`` on L2 (for the
    canary's write), `prefix` the tracking PREFIX (the KEY_PREFIX)."""

    def __init__(
        self,
        core: _core.Cache,
        connect: Callable[[], Any],
        client: Any,
        prefix: str,
        max_staleness: float,
        stop: threading.Event | None = None,
    ) -> None:
        self.core, self.connect, self.client, self.prefix = core, connect, client, prefix
        self.max_ms = int(max_staleness * 1000)
        self.ping_ms = ping_ms(max_staleness)
        self.stop = stop or threading.Event()
        self.sessions = 0
        self._said: dict[str, tuple[float | None, int]] = {}
        self.state_path = state_path(core.segment)
        wm = core.watermark_ms
        self._last_wm = wm or None  # for "time not live": a predecessor's last watermark

    # -- the loop --

    def run(self) -> None:
        """Connect, listen, reconnect until `stop`: after a lost connection
        (a failover, a restart) at once, then backing off to 1 s; after an
        error that retrying will not cure soon (a wrong password, a missing
        permission) from 1 s to 30 s; after Redis refused tracking, every
        30 s. Each kind of failure is logged at most once a minute."""
        self.core.set_listener_pid(os.getpid())
        self.core.tier_add("listener_starts", 1)
        backoff, cap = 0.05, 1.0
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                self._session()
            except TrackingUnavailable as e:
                self._say(
                    logging.ERROR, "tracking",
                    "shmcache tiered: Redis sends no invalidations (%s); every read goes to L2 (L1 unused). "
                    "Enable CLIENT TRACKING on the server (and give the user the listener's permissions: "
                    "docs/tiered.md, 'Production Redis'), or use SharedMemoryCache or RedisCache alone", e,
                )  # fmt: skip
                self.stop.wait(30.0)
                continue
            except Exception as e:  # noqa: BLE001 - any failure: not live, reconnect
                if self.stop.is_set():
                    break
                if _refused(e):  # a wrong password, a missing permission: slow down, say so
                    backoff, cap = max(backoff, 1.0), 30.0
                    self._say(logging.ERROR, "refused", "shmcache tiered: Redis refused the invalidation listener "
                              "(%s: %s); retrying every %s s at most", type(e).__name__, e, cap)  # fmt: skip
                else:
                    cap = 1.0
                    self._say(logging.WARNING, "lost", "shmcache tiered: invalidation connection lost (%s: %s); "
                              "reconnecting", type(e).__name__, e)  # fmt: skip
            finally:
                self.core.set_watermark_ms(0)
            if time.monotonic() - t0 > 5:
                backoff = 0.05 if cap == 1.0 else 1.0
            self.stop.wait(backoff)
            backoff = min(backoff * 2, cap)

    def _say(self, level: int, kind: str, msg: str, *args: Any) -> None:
        """Log `msg` unless this kind of failure was logged less than a
        minute ago (then count it, and say how many came meanwhile)."""
        now = time.monotonic()
        last, quiet = self._said.get(kind, (None, 0))
        if last is not None and now - last < LOG_EVERY:
            self._said[kind] = (last, quiet + 1)
            return
        if quiet:
            msg += f" ({quiet} more time(s) in the last minute)"
        self._said[kind] = (now, 0)
        log.log(level, msg, *args)

    def _session(self) -> None:
        from redis.exceptions import ResponseError  # a listener runs only with redis-py

        conn = self.connect()
        try:
            conn.connect()
            _refuse_a_cluster(conn)  # before SUBSCRIBE: then only (UN)SUBSCRIBE and PING are allowed
            self._connected_to(_address(conn))
            try:
                conn.send_command("CLIENT", "ID")
                cid = conn.read_response()
                conn.send_command("CLIENT", "TRACKING", "on", "REDIRECT", cid, "BCAST", "PREFIX", self.prefix)
                conn.read_response()
                conn.send_command("SUBSCRIBE", CHANNEL)
                conn.read_response()
            except ResponseError as e:
                # An error reply (not a dropped connection): refused, by an
                # ACL, a renamed command or a service that disables tracking.
                raise TrackingUnavailable(f"{type(e).__name__}: {e}") from None
            self._canary(conn)
            # Every notice from here on reaches us: what L1 holds from before
            # may have missed some, so it goes before L1 is live again.
            self.core.flush()
            self.sessions += 1
            self._listen(conn)
        finally:
            conn.disconnect()

    def _connected_to(self, address: str) -> None:
        """Note L2's address in the state file; a new one (the sentinels
        promoted a replica, since this or an earlier listener's last
        session) counts as a failover followed."""
        state = read_state(self.state_path)
        failovers = int(state.get("failovers", 0))
        if state.get("primary") and state["primary"] != address:
            failovers += 1
            log.warning("shmcache tiered: L2's primary is now %s (was %s): a failover followed", address, state["primary"])
        write_state(self.state_path, {"primary": address, "failovers": failovers, "pid": os.getpid()})

    def _canary(self, conn: Any) -> None:
        """Write a key under the prefix and wait for its invalidation."""
        key = f"{self.prefix}\0shmcache-canary:{uuid.uuid4().hex}".encode("utf-8", "surrogatepass")
        self.client.set(key, b"1", px=10_000)
        deadline = time.monotonic() + CANARY_WAIT
        try:
            while time.monotonic() < deadline:
                if conn.can_read(timeout=0.05):
                    msg = conn.read_response()
                    keys = self._handle(msg)
                    if keys is not None and key in keys:
                        return
            raise TrackingUnavailable(f"no invalidation of a canary key within {CANARY_WAIT} s")
        finally:
            self.client.delete(key)

    def _listen(self, conn: Any) -> None:
        now_ms = _core.monotonic_ms
        ping_sent: int | None = None
        next_ping = 0
        while not self.stop.is_set():
            now = now_ms()
            if ping_sent is None and now >= next_ping:
                ping_sent, next_ping = now, now + self.ping_ms
                conn.send_command("PING")
            elif ping_sent is not None and now - ping_sent > PONG_TIMEOUT * 1000:
                raise TimeoutError(f"no PONG within {PONG_TIMEOUT} s")
            wait = max(0.0, min(0.05, (next_ping - now) / 1000)) if ping_sent is None else 0.05
            if not conn.can_read(timeout=wait):
                continue
            msg = conn.read_response()
            if isinstance(msg, list) and msg and msg[0] in (b"pong", "pong"):
                if ping_sent is not None:
                    self._live(ping_sent)
                    ping_sent = None
                continue
            self._handle(msg)

    def _live(self, sent: int) -> None:
        last = self._last_wm
        if last is not None and sent - last > self.max_ms:
            self.core.tier_add("not_live_ms", sent - last - self.max_ms)
        self._last_wm = sent
        self.core.set_watermark_ms(sent)

    def _handle(self, msg: Any) -> list[bytes] | None:
        """Apply one pub/sub message; returns the keys it invalidated."""
        if not (isinstance(msg, list) and len(msg) == 3 and msg[0] in (b"message", "message")):
            return None
        data = msg[2]
        if data is None:
            self.core.flush()  # FLUSHDB / FLUSHALL
            return []
        keys = data if isinstance(data, list) else [data]
        try:
            self.core.invalidate_many(keys)
        except ShmCacheError as e:
            # A lost invalidation would break the bound: flush instead (a
            # failure there ends the session, which flushes before live).
            log.warning("shmcache tiered: invalidation failed (%s); flushing L1", e)
            self.core.flush()
        return keys


# ---- one listener per segment per process, elected per host ----

_state_lock = threading.Lock()
_running: dict[str, tuple[threading.Thread, threading.Event, int]] = {}


def running_here(segment: str) -> bool:
    t = _running.get(segment)
    return t is not None and t[0].is_alive()


def ensure(segment: str, make: Callable[[threading.Event], Listener]) -> bool:
    """Start this segment's listener in this process if no process holds
    the election lock. Returns whether this process runs it."""
    with _state_lock:
        cur = _running.get(segment)
        if cur is not None:
            if cur[0].is_alive():
                return True
            os.close(cur[2])  # its thread ended: give the lock back, then compete
            del _running[segment]
        fd = try_lock(lock_path(segment))
        if fd is None:
            return False
        stop = threading.Event()
        try:
            listener = make(stop)
        except BaseException:
            os.close(fd)
            raise
        t = threading.Thread(target=listener.run, name=f"shmcache-listener {segment}", daemon=True)
        _running[segment] = (t, stop, fd)
        t.start()
        return True


def stop_all(timeout: float = 2.0) -> None:
    """Stop this process's listener threads and give their locks back."""
    with _state_lock:
        for _t, stop, _ in _running.values():
            stop.set()
        for seg, (t, _, fd) in list(_running.items()):
            t.join(timeout)
            if not t.is_alive():  # else keep its lock: two listeners must never run
                os.close(fd)
                del _running[seg]


def _before_fork() -> None:
    # A forked child must not start life with a listener thread's state (and
    # CPython warns about forking with threads); the parent restarts its
    # listener lazily, from its next operations, if it is still elected.
    if _running:
        stop_all(1.0)


def _after_fork_in_child() -> None:
    global _state_lock
    _state_lock = threading.Lock()
    _running.clear()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
