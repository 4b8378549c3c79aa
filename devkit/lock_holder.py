"""A process that holds one shard's lock, paused half-way through a write
(the test build's `_set_test_pause_ms` hook), for tests of lock timeouts and
of a holder killed inside the lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import shmcache

_SCRIPT = textwrap.dedent(
    """
    import sys, shmcache
    from shmcache import _core
    name, key, size, max_item, n = sys.argv[1:]
    c = shmcache.Cache(name, size=size, max_item_size=max_item)
    _core._set_test_pause_ms(60_000)  # pause half-way through writing, lock held
    print("writing", flush=True)
    c.set(key, b"x" * int(n))
    """
)


def hold_shard_lock(name: str, key: str, size: str, max_item_size: str, value_bytes: int) -> subprocess.Popen:
    """Start the holder on `key`'s shard of cache `name` (opened with this
    geometry) and return once the lock is really held. The caller kills it."""
    p = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, name, key, size, max_item_size, str(value_bytes)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "writing", "the holder did not start"
        probe = shmcache.Cache(name, size=size, max_item_size=max_item_size, lock_timeout=0.01)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                probe.has_key(key)
            except shmcache.LockTimeout:
                return p
            time.sleep(0.01)
        raise AssertionError("the holder never took the lock")
    except BaseException:
        p.kill()
        p.wait()
        raise
