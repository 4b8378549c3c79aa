"""Two "hosts" on one machine for the TieredCache tests: each host is a
LOCATION (so its own L1 segment and its own listener) with worker processes
forked after attaching, all sharing one redis-server and one KEY_PREFIX.

The test process attaches to each host's segment (to look at it) but runs no
operation, so it never becomes a listener; every operation runs in a worker,
over a pipe."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import signal
import time
from typing import Any

import shmcache
from devkit.wait import wait_for
from shmcache.tiered import TieredClient, l1_location
from shmcache.tiered import listener as _listener

PREFIX = "site"


def settle(core: Any, timeout: float = 5.0) -> None:
    """Return once the listener of `core`'s L1 has applied every
    invalidation for writes completed before now: its watermark (the send
    time of a PING answered since) passes now."""
    t = shmcache._core.monotonic_ms()
    wait_for(lambda: core.watermark_ms > t, timeout, "the watermark to pass now")


def destroy_l1(location: str, prefix: str = PREFIX) -> None:
    """Stop this process's listeners, remove the L1 segment of `location`
    and `prefix` and its election file."""
    seg = shmcache.segment_name(l1_location(location, prefix))
    _listener.stop_all()
    shmcache.destroy(l1_location(location, prefix))
    for path in (_listener.lock_path(seg), _listener.state_path(seg)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _serve(client: TieredClient, conn: Any) -> None:
    while True:
        try:
            op, args = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", _OPS[op](client, *args)))
        except Exception as e:  # noqa: BLE001 - sent back to the test
            conn.send(("error", f"{type(e).__name__}: {e}"))


def _poll(client: TieredClient, key: str, expected: Any, timeout: float) -> float | None:
    """Seconds until `key` reads `expected` (polling), or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if client.get(key) == expected:
            return time.monotonic() - t0
        time.sleep(0.0002)
    return None


class Failed:
    """A call's error, in a loop told to go on (`tolerate`): its text."""

    def __init__(self, e: BaseException) -> None:
        self.text = f"{type(e).__name__}: {e}"

    def __repr__(self) -> str:
        return f"<failed {self.text}>"


async def _loop_of(call: Any, items: Any, duration: float | None, pause: float, tolerate: bool = False) -> list[tuple]:
    """Calls `call(item)` (sync, or a coroutine function) for each item in
    turn, for `duration` s if given: (item, start, end, result) each; with
    `tolerate`, a call that raises gives a `Failed` and the loop goes on."""
    out = []
    end = None if duration is None else time.monotonic() + duration
    for item in items:
        if end is not None and time.monotonic() >= end:
            break
        t0 = time.monotonic()
        try:
            v = call(item)
            if asyncio.iscoroutine(v):
                v = await v
        except Exception as e:  # noqa: BLE001 - recorded, for the test to judge
            if not tolerate:
                raise
            v = Failed(e)
        out.append((item, t0, time.monotonic(), v))
        if pause:
            await asyncio.sleep(pause)
    return out


def _read_loop(
    client: TieredClient, keys: list[str], duration: float, pause: float, use_async: bool = False, tolerate: bool = False
) -> list:
    """Reads (get, or aget) of `keys` in turn for `duration` s: (key, start,
    end, value) each; with `tolerate`, a read that raises gives a `Failed`."""
    cycle = (keys[i % len(keys)] for i in itertools.count())
    return asyncio.run(_loop_of(client.aget if use_async else client.get, cycle, duration, pause, tolerate))


def _set_when_possible(client: TieredClient, key: str, value: Any, timeout: float, use_async: bool = False) -> tuple:
    """set (or aset) `key`, again and again while L2 refuses (a failover
    under way), for at most `timeout` s: (the successful call's start, its
    end, the attempts that failed)."""
    deadline, failed = time.monotonic() + timeout, 0
    while True:
        t0 = time.monotonic()
        try:
            if use_async:
                asyncio.run(client.aset(key, value))
            else:
                client.set(key, value)
            return t0, time.monotonic(), failed
        except Exception:  # noqa: BLE001 - ConnectionError, ReadOnlyError, TimeoutError while it fails over
            failed += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _write_loop(client: TieredClient, key: str, n: int, pause: float, use_async: bool = False) -> list[tuple]:
    """Writes (set, or aset) of 1..n to `key` in order: (value, start, end) each."""
    write = (lambda v: client.aset(key, v)) if use_async else (lambda v: client.set(key, v))
    return [(v, s, e) for v, s, e, _ in asyncio.run(_loop_of(write, range(1, n + 1), None, pause))]


def _pause_fill(client: TieredClient, key: str | None, reached: str, release: str) -> None:
    """In this worker, fills of `key` stop after their L2 read (a fill
    carries the token taken before it), create the file `reached`, and wait
    for the file `release` (at most 30 s); None puts the fill back. A test's
    own patch of this process: nothing of it is in the package."""
    real = TieredClient.__dict__.get("_real_fill") or TieredClient._fill
    TieredClient._real_fill = real  # type: ignore[attr-defined]
    if key is None:
        TieredClient._fill = real  # type: ignore[method-assign]
        return

    def paused_fill(self: TieredClient, k: Any, *args: Any) -> None:
        if k == key:
            open(reached, "w").close()
            wait_for(lambda: os.path.exists(release), 30, "the test to release the fill", every=0.005)
        real(self, k, *args)

    TieredClient._fill = paused_fill  # type: ignore[method-assign]


def _computation(client: TieredClient, key: str, value: Any, seconds: float):
    """A callable for get_or_set that counts its calls in Redis
    (``computed:<key>``), takes `seconds`, then returns `value`."""

    def compute() -> Any:
        client.l2.sync.incr(f"computed:{key}")
        time.sleep(seconds)
        return value

    return compute


def _get_or_set(client: TieredClient, key: str, value: Any, seconds: float, wait: float, use_async: bool) -> tuple:
    """get_or_set (or aget_or_set) with a `_computation`: (value, seconds taken)."""
    t0 = time.monotonic()
    compute = _computation(client, key, value, seconds)
    if use_async:
        v = asyncio.run(client.aget_or_set(key, compute, 60, wait))
    else:
        v = client.get_or_set(key, compute, 60, wait)
    return v, time.monotonic() - t0


_OPS = {
    "get": lambda c, k: c.get(k),
    "set": lambda c, k, v, t=None: c.set(k, v, t),
    "delete": lambda c, k: c.delete(k),
    "listen": lambda c: (c.listen(), c._core.live(c._max_ms))[1],
    "stats": lambda c: {k: v for k, v in c.stats().items() if k != "l1"},
    "poll": _poll,
    "read_loop": _read_loop,
    "write_loop": _write_loop,
    "aget": lambda c, k: asyncio.run(c.aget(k)),
    "aset": lambda c, k, v, t=None: asyncio.run(c.aset(k, v, t)),
    "aread_loop": lambda c, *a: _read_loop(c, *a, use_async=True),
    "read_loop_tolerant": lambda c, keys, duration, pause, use_async: _read_loop(
        c, keys, duration, pause, use_async=use_async, tolerate=True),
    "set_when_possible": _set_when_possible,
    "awrite_loop": lambda c, *a: _write_loop(c, *a, use_async=True),
    "get_or_set": _get_or_set,
    "pause_fill": _pause_fill,
    "l1_raw": lambda c, k: c._core.get(k),
    "pid": lambda c: os.getpid(),
}


class Worker:
    def __init__(self, client: TieredClient) -> None:
        self.conn, child = multiprocessing.get_context("fork").Pipe()
        self.proc = multiprocessing.get_context("fork").Process(target=_serve, args=(client, child), daemon=True)
        self.proc.start()
        child.close()
        self.pid = self.proc.pid

    def send(self, op: str, *args: Any) -> None:
        self.conn.send((op, args))

    def result(self, timeout: float = 60) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"worker {self.pid} did not answer within {timeout} s")
        status, value = self.conn.recv()
        if status != "ok":
            raise AssertionError(f"worker {self.pid}: {value}")
        return value

    def __call__(self, op: str, *args: Any, timeout: float = 60) -> Any:
        self.send(op, *args)
        return self.result(timeout)

    def stop(self) -> None:
        if self.proc.is_alive():
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.kill()
        self.proc.join(5)


class Host:
    """A LOCATION with `workers` processes forked after attaching."""

    def __init__(self, location: str, url: str, workers: int = 3, max_staleness: float = 0.4, **opts: Any) -> None:
        self.location, self.max_staleness = location, max_staleness
        self.client = TieredClient(
            location, url, key_prefix=PREFIX, max_staleness=max_staleness, size="8MB", max_item_size="64KB", **opts
        )
        self.core = self.client._core
        self.workers = [Worker(self.client) for _ in range(workers)]

    @property
    def max_ms(self) -> int:
        return int(self.max_staleness * 1000)

    def live(self) -> bool:
        return self.core.live(self.max_ms)

    def live_since(self, t_ms: int) -> bool:
        """Live on a watermark sent after `t_ms`: a listener that started
        after then has flushed L1 and is live (not a predecessor's watermark
        that has not aged out yet)."""
        return self.live() and self.core.watermark_ms > t_ms

    def alive_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.proc.is_alive()]

    def wait_live(self, timeout: float = 5.0) -> float:
        """Operations in the workers until the L1 is live; the time it took."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for w in self.alive_workers():
                if w("listen"):
                    return time.monotonic() - t0
            time.sleep(0.01)
        raise AssertionError(f"{self.location}: L1 not live within {timeout} s")

    def listener(self) -> Worker:
        pid = self.core.listener_pid
        for w in self.workers:
            if w.pid == pid:
                return w
        raise AssertionError(f"the listener pid {pid} is none of the workers {[w.pid for w in self.workers]}")

    def tier(self, name: str) -> int:
        return self.core.tier_stats()[name]

    def settle(self, timeout: float = 5.0) -> None:
        """This host's listener has applied every invalidation sent before now (`settle`)."""
        settle(self.core, timeout)

    def set_settled(self, key: str, value: Any, *hosts: Host, timeout: float | None = None) -> None:
        """A worker of this host writes; returns once every host in `hosts`
        has applied the write's invalidation (so a read after it fills L1;
        a fill racing the notice would rightly be dropped)."""
        self.workers[0]("set", key, value, timeout)
        for h in hosts:
            h.settle()

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        destroy_l1(self.location)


