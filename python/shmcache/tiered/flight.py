"""get_or_set on a tier: one computation across every host.

A miss takes a marker in Redis (``SET NX`` with a lease of FLIGHT_LEASE, on
`marker_key`), computes, stores the value (``add``) and frees
the marker (compare-and-delete). The others, on any host, poll for the value
(pauses doubling from 0.5 ms to 20 ms) and take the marker over once it
lapses: a thread renews the holder's lease while it computes, so a holder
that dies or is stopped frees them within the lease. After `wait` seconds
they compute themselves, as on one host (docs/tiered.md).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Generator
from typing import Any

from .._api import _MISSING, _check_wait, _flight_key, log
from .l2 import cmd, set_cmd

FLIGHT_LEASE = 2.0
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_FREE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Lease:
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


def flight(tier: Any, key: Any, default: Any, timeout: Any, wait: float) -> Generator[Any, Any, Any]:
    """The steps of `tier`'s get_or_set (its `_get` and `_add` steps; its
    L2's sync client renews the lease)."""
    _check_wait(wait)
    v = yield from tier._get(key, _MISSING)
    if v is not _MISSING:
        return v
    if not callable(default):
        return (yield from _store_then_get(tier, key, default, timeout))
    marker = marker_key(tier.key_prefix, key)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    lease_ms = max(1, int(min(FLIGHT_LEASE, max(wait, 0.01)) * 1000))
    pause = 0.0005
    while True:
        (got,) = yield cmd(*set_cmd(marker, token, lease_ms, nx=True))
        if got:
            v = yield from tier._get(key, _MISSING)  # stored while we took the marker?
            if v is _MISSING:
                lease = Lease(tier.l2.sync, marker, token, deadline)
                try:
                    value = default()
                except Exception:
                    lease.stop()
                    yield cmd("EVAL", _FREE, 1, marker, token)
                    raise
                lease.stop()
                v = yield from _store_then_get(tier, key, value, timeout)
            yield cmd("EVAL", _FREE, 1, marker, token)
            return v
        if time.monotonic() >= deadline:
            return (yield from _store_then_get(tier, key, default(), timeout))
        yield pause
        pause = min(pause * 2, 0.02)
        v = yield from tier._get(key, _MISSING)
        if v is not _MISSING:
            return v


def marker_key(prefix: str, key: Any) -> Any:
    """The marker of `key`'s computation: under the tracking prefix, so an
    ACL that allows the prefix's keys (``~site*``) allows it, but never a
    made key (a NUL follows the prefix where a made key has ':'), so no key
    iteration lists it): the plain client's marker (`_flight_key`) under
    the prefix."""
    m = _flight_key(key)
    return (prefix.encode("utf-8", "surrogatepass") if type(m) is bytes else prefix) + m


def _store_then_get(tier: Any, key: Any, value: Any, timeout: Any) -> Generator[Any, Any, Any]:
    yield from tier._add(key, value, timeout)
    return (yield from tier._get(key, value))  # another host may have stored first
