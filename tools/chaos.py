#!/usr/bin/env python3
"""Chaos run: prove shmcache survives what production does to it.

Process mode (default)::

    python -m tools.chaos --seconds 300 [--procs 4] [--json out.json]

P worker processes (forked from this one after it attached, as under
``gunicorn --preload``) run a random mix of get/set/add/delete/incr/touch/
get_many/set_many and, rarely, clear on one small shared cache (so it evicts
all the time), while this process SIGKILLs random workers at random moments
and forks replacements. For a fraction of the kills it tells a worker to arm
the core's test hook (``_set_test_pause_ms``) before a set, waits until that
worker sleeps half-way through writing the value (lock held, shard marked
mid-write), SIGSTOPs it, confirms from /proc/PID/syscall that it is in that
sleep, and SIGKILLs it: a kill known to land inside the critical section.

What is checked:

* every value is self-checking (magic, its key, its length, a blake2b digest,
  sizes from 16 B to near MAX_ITEM_SIZE): a torn or misplaced ("foreign")
  value read by any get/get_many is counted. A third of the keys always get
  values of one length, so their overwrites (armed ones included) are
  written in place; the rest change size and are appended;
* values stored with a TTL carry the writer's clock before the call and the
  TTL: one returned later than that plus the tolerance is an expired value
  returned (a set that was itself slow is re-judged with the clock read after
  it returned, logged by the writer; a set whose writer was killed before it
  could log that is "unverifiable" and excluded);
* increments: every worker increments one shared counter (in its own small
  segment: nothing else lives there, nothing evicts or clears it) and appends
  each returned value to its own file. The counter must never return a value
  twice, and its final value must be within [confirmed, confirmed + kills
  that landed during an increment]. A kill mid-increment must not lose the
  counter (the shard is recovered from its log, and an in-place increment is
  one store); a worker that finds it gone re-creates it under a new "epoch"
  (high bits of the value, numbers taken with O_EXCL files), and any epoch
  beyond the first must be explained by a shard wipe of the counter segment
  (there should be none);
* every operation is timed; one that took longer than its lock-wait bound
  (LOCK_TIMEOUT per shard lock it takes + --margin) is "blocked" (a hang);
  the in-flight operation of every killed worker is checked against the same
  bound when it dies, and workers must stop within seconds at the end;
* app locks (``cache.lock()``, in a segment of their own): workers do a
  non-atomic read-modify-write of one counter inside ``with lock`` and are
  killed there too. The lock must never be held by two live processes (each
  holder records its pid in a shared word and checks the previous holder's
  is gone; a release that finds the lock taken over from a live holder is a
  violation too), a dead holder's lock (timeout=None) must be taken over
  (no acquire gives up after --lock-wait seconds), and the counter must end
  within [confirmed, confirmed + kills while holding the lock];
* lock_recoveries >= kills inside the lock (each one's lock came back, its
  shard rebuilt from its log rather than wiped), and wipes not explained by
  clear() are corruption; at the end every shard of both segments is walked
  (verify()).

The summary is printed, written as JSON with --json, and the exit status is
non-zero if any pass condition fails.

Gunicorn mode::

    python -m tools.chaos --gunicorn --seconds 120 [--json out.json]

runs tools/chaos_gunicorn.py (see there).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import mmap
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import uuid
from collections import defaultdict
from pathlib import Path

from devkit.proc import alive, proc_state, read_proc

# ---------------------------------------------------------------------------
# shared per-worker slot (int64 words in an anonymous MAP_SHARED mapping that
# every forked worker inherits; a killed worker's counts stay there)

W = 64  # words per slot
G_STOP = 0  # global header (slot -1 region): stop flag
G_HOLDER = 1  # pid of the worker inside the app lock's critical section (0: none)
HDR_WORDS = 8

F_CMD = 0  # parent -> worker: arm the pause hook (ms) for the next set
F_STATE = 1  # see ST_*
F_OP_START = 2  # time.monotonic_ns() at the start of the op in flight (0: none)
F_OP_BOUND = 3  # its bound (ns)
F_OP_KIND = 4
F_NONCE_BASE = 5  # TTL values in flight: their nonces [base, base+n)
F_NONCE_N = 6
F_INCARNATION = 7
F_ALOCK_CMD = 30  # parent -> worker: take the app lock and stay inside until killed

C_BASE = 8
(C_OPS, C_LOCK_TIMEOUTS, C_BLOCKED, C_TORN, C_FOREIGN, C_EXP_SUSPECT, C_ERRORS, C_HITS,
 C_MISSES, C_MAX_NS, C_CTR_OK, C_CTR_RESEED, C_CLEARS, C_ARMED_SETS, C_SETMANY_FAILED,
 C_TTL_CHECKED, C_SETS, C_INCR_MAIN_RESEED, C_BLOCKED_RAISED, C_ALOCK_OK, C_ALOCK_TWO,
 C_ALOCK_GAVEUP) = range(C_BASE, C_BASE + 22)
C_KIND_BASE = 32  # + op kind: per-kind counts
C_KMAX_BASE = 48  # + op kind: per-kind slowest (ns)

ST_IDLE, ST_OP, ST_ARMED, ST_CTR, ST_ALOCK = 0, 1, 2, 3, 4

OPS = ["get", "set", "add", "delete", "incr", "touch", "get_many", "set_many", "counter_incr", "clear", "armed_set",
       "lock_rmw"]
K_GET, K_SET, K_ADD, K_DELETE, K_INCR, K_TOUCH, K_GET_MANY, K_SET_MANY, K_CTR, K_CLEAR, K_ARMED, K_ALOCK = range(len(OPS))
WEIGHTS = {K_GET: 30, K_SET: 18, K_ADD: 5, K_DELETE: 5, K_INCR: 6, K_TOUCH: 4, K_GET_MANY: 6, K_SET_MANY: 4, K_CTR: 8,
           K_ALOCK: 4}
ALOCK_KEY, ALOCK_CTR = b"app-lock", b"app-lock-counter"

# syscall numbers (x86_64 / aarch64) of the sleep the pause hook makes
SLEEP_SYSCALLS = {"35", "230", "101", "115"}
FUTEX_SYSCALLS = {"202", "98"}

# ---------------------------------------------------------------------------
# self-checking values

MAGIC = b"CHv1"
HDR = struct.Struct("<HIQQQ")  # key_len, body_len, nonce, t0_ms, ttl_ms (0: not checked)
DIGEST = 8
FIXED = len(MAGIC) + HDR.size + DIGEST
CTR_KEY = b"ctr"
EPOCH_SHIFT = 40
LOW_MASK = (1 << EPOCH_SHIFT) - 1
SLOW_SET_MS = 2  # a TTL set slower than this logs the clock after it returned
HOT = 16  # v:0 .. v:15 are hot keys with large values


def body_digest(key: bytes, body: bytes) -> bytes:
    d = hashlib.blake2b(key, digest_size=16)
    d.update(body)
    return d.digest()


def make_value(key: bytes, body: bytes, nonce: int, t0_ms: int, ttl_ms: int, bd: bytes | None = None) -> bytes:
    """The digest covers the header and (through `bd`, the slow part, which
    can be computed first) the key and body, so a writer can read its clock
    for t0 just before storing."""
    head = MAGIC + HDR.pack(len(key), len(body), nonce, t0_ms, ttl_ms)
    d = hashlib.blake2b(head, digest_size=DIGEST)
    d.update(bd or body_digest(key, body))
    return head + d.digest() + key + body


def check_value(key: bytes, v) -> tuple[str, tuple | None]:
    """('ok', (nonce, t0, ttl)) | ('torn', None) | ('foreign', None)."""
    if type(v) is not bytes or len(v) < FIXED or v[:4] != MAGIC:
        return "torn", None
    klen, blen, nonce, t0, ttl = HDR.unpack_from(v, 4)
    if FIXED + klen + blen != len(v):
        return "torn", None
    mv = memoryview(v)
    d = hashlib.blake2b(mv[: 4 + HDR.size], digest_size=DIGEST)
    bd = hashlib.blake2b(mv[FIXED: FIXED + klen], digest_size=16)
    bd.update(mv[FIXED + klen:])
    d.update(bd.digest())
    if d.digest() != v[4 + HDR.size: FIXED]:
        return "torn", None
    if v[FIXED: FIXED + klen] != key:
        return "foreign", None
    return "ok", (nonce, t0, ttl)


STR_MAGIC = "CHs1"


def make_str_value(key: bytes, body: str, nonce: int, t0_ms: int, ttl_ms: int) -> str:
    """A str value (stored as UTF-8 text, returned as str): same checks as
    make_value; the body mixes 1- to 4-byte UTF-8 characters."""
    head = f"{STR_MAGIC}|{key.decode()}|{nonce}|{t0_ms}|{ttl_ms}|{len(body)}|"
    d = hashlib.blake2b((head + body).encode(), digest_size=DIGEST).hexdigest()
    return head + d + "|" + body


def check_str_value(key: bytes, v: str) -> tuple[str, tuple | None]:
    parts = v.split("|", 7)
    if len(parts) != 8 or parts[0] != STR_MAGIC:
        return "torn", None
    _, k, nonce, t0, ttl, n, d, body = parts
    head = "|".join(parts[:6]) + "|"
    if not (nonce.isdigit() and t0.isdigit() and ttl.isdigit() and n.isdigit()) or int(n) != len(body):
        return "torn", None
    if hashlib.blake2b((head + body).encode(), digest_size=DIGEST).hexdigest() != d:
        return "torn", None
    if k != key.decode():
        return "foreign", None
    return "ok", (int(nonce), int(t0), int(ttl))


# ---------------------------------------------------------------------------
# configuration shared by parent and workers (set in main before forking)


class Cfg:
    location = ""
    ctr_location = ""
    lock_location = ""
    lock_wait = 5.0
    size = 4 << 20
    max_item_size = 64 << 10
    ctr_size = 1 << 20
    lock_timeout = 0.1
    margin = 0.2
    tol_ms = 5
    procs = 4
    rundir = ""
    nshards = 0
    body = b""
    text = ""  # random text of 1- to 4-byte UTF-8 characters
    nv, ni, nt = 8000, 200, 500
    clear_p = 1 / 200_000
    inject: list = []
    inject_p = 1 / 5_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------------
# the worker


class Worker:
    def __init__(self, slots: memoryview, slot: int, incarnation: int) -> None:
        import shmcache
        from shmcache import _core

        self.shmcache, self.core_mod = shmcache, _core
        self.S, self.slot, self.b = slots, slot, HDR_WORDS + slot * W
        self.rng = random.Random(os.urandom(16))
        self.c = shmcache.Cache(Cfg.location, size=Cfg.size, max_item_size=Cfg.max_item_size, lock_timeout=Cfg.lock_timeout)
        self.cc = shmcache.Cache(Cfg.ctr_location, size=Cfg.ctr_size, max_item_size=4096, lock_timeout=Cfg.lock_timeout)
        self.lk = shmcache.Cache(Cfg.lock_location, size=Cfg.ctr_size, max_item_size=4096, lock_timeout=Cfg.lock_timeout)
        self.LockTimeout = shmcache.LockTimeout
        self.nonce = incarnation << 32
        d = Cfg.rundir
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self.fd_ctr = os.open(f"{d}/ctr-{slot}.log", flags, 0o600)
        self.fd_slow = os.open(f"{d}/slow-{slot}.log", flags, 0o600)
        self.fd_events = os.open(f"{d}/events-{slot}.log", flags, 0o600)
        self.lt_ns = int(Cfg.lock_timeout * 1e9)
        self.margin_ns = int(Cfg.margin * 1e9)
        kinds, weights = zip(*WEIGHTS.items())
        self.kinds, self.cum = kinds, list(_accumulate(weights))
        self.vkeys = [b"v:%d" % i for i in range(Cfg.nv)]
        self.hot = set(self.vkeys[:HOT])
        # Every third key always gets a bytes value of one length: each
        # overwrite of it keeps the record size and is written in place.
        self.fixed_len = {k: (8192 + i * 997 % 24576 if k in self.hot else 16 + i * 37 % 4000)
                          for i, k in enumerate(self.vkeys) if i % 3 == 0}
        self.ikeys = [b"i:%d" % i for i in range(Cfg.ni)]
        self.tkeys = [b"t:%d" % i for i in range(Cfg.nt)]
        self.shard_of = self.c._core.shard_of
        self.max_body = Cfg.max_item_size - FIXED - 16

    # -- bookkeeping --
    def inc(self, f: int, n: int = 1) -> None:
        self.S[self.b + f] += n

    def event(self, kind: str, **kw) -> None:
        kw.update(kind=kind, slot=self.slot, pid=os.getpid(), t=time.time())
        os.write(self.fd_events, (json.dumps(kw) + "\n").encode())

    # -- value helpers --
    def vkey(self) -> bytes:
        """15% a few hot keys (large values, read and rewritten all the time),
        40% a warm set, the rest anywhere."""
        r = self.rng.random()
        n = self.rng.randrange(HOT) if r < 0.15 else self.rng.randrange(500) if r < 0.55 else self.rng.randrange(Cfg.nv)
        return self.vkeys[n]

    def body_len(self) -> int:
        r = self.rng.random()
        if r < 0.60:
            n = self.rng.randint(16, 256)
        elif r < 0.90:
            n = self.rng.randint(257, 4096)
        elif r < 0.98:
            n = self.rng.randint(4097, 16384)
        else:
            n = self.rng.randint(16385, self.max_body)
        return n

    def body(self, n: int) -> bytes:
        off = self.rng.randrange(len(Cfg.body) - n)
        return Cfg.body[off: off + n]

    def text(self, nbytes: int) -> str:
        n = max(1, nbytes // 3)  # characters are 1 to 4 bytes (1.7 on average)
        off = self.rng.randrange(len(Cfg.text) - n)
        return Cfg.text[off: off + n]

    def ttl(self) -> int:
        """TTL in ms, 0 = none."""
        r = self.rng.random()
        if r < 0.4:
            return 0
        if r < 0.7:
            return self.rng.randint(20, 500)
        return self.rng.randint(500, 10_000)

    def next_nonce(self) -> int:
        self.nonce += 1
        return self.nonce

    def check(self, key: bytes, v, t_get0: int) -> None:
        if v is None:
            self.inc(C_MISSES)
            return
        self.inc(C_HITS)
        if key[:1] == b"i":
            if type(v) is not int:
                self.inc(C_FOREIGN)
                self.event("foreign", key=key.decode(), got=repr(v)[:100])
            return
        verdict, info = check_str_value(key, v) if type(v) is str else check_value(key, v)
        if verdict == "torn":
            self.inc(C_TORN)
            self.event("torn", key=key.decode(), type=type(v).__name__, length=len(v) if isinstance(v, (bytes, str)) else None,
                       head=repr(v[:60]) if isinstance(v, (bytes, str)) else repr(v)[:60])
        elif verdict == "foreign":
            self.inc(C_FOREIGN)
            self.event("foreign", key=key.decode(), got=repr(v[:80]))
        else:
            nonce, t0, ttl = info
            if ttl:
                self.inc(C_TTL_CHECKED)
                if t_get0 > t0 + ttl + Cfg.tol_ms:
                    self.inc(C_EXP_SUSPECT)
                    self.event("expired_suspect", key=key.decode(), nonce=nonce, t0=t0, ttl=ttl, t_get0=t_get0,
                               late_ms=t_get0 - (t0 + ttl))

    # -- the loop --
    def run(self) -> None:
        S, b = self.S, self.b
        rng = self.rng
        while not S[G_STOP]:
            pause = S[b + F_CMD]
            if pause:
                S[b + F_CMD] = 0
                self.op(K_ARMED, pause)
                continue
            if S[b + F_ALOCK_CMD]:
                S[b + F_ALOCK_CMD] = 0
                self.op(K_ALOCK, 1)
                continue
            if rng.random() < Cfg.clear_p:
                self.op(K_CLEAR)
                continue
            if Cfg.inject and rng.random() < Cfg.inject_p:
                self.inject(rng.choice(Cfg.inject))
                continue
            x = rng.random() * self.cum[-1]
            for kind, c in zip(self.kinds, self.cum):  # noqa: B007 (kind is used after the loop)
                if x < c:
                    break
            self.op(kind)

    def inject(self, what: str) -> None:
        """Self-test of the checks (--inject): store a bad value on purpose
        and read it back through the ordinary check, or overrun a bound."""
        key = self.vkeys[self.rng.randrange(Cfg.nv)]
        t = now_ms()
        if what == "torn":
            v = bytearray(make_value(key, self.body(100), self.next_nonce(), 0, 0))
            v[-1] ^= 0xFF
            self.c.set(key, bytes(v))
        elif what == "foreign":
            self.c.set(key, make_value(b"v:other", self.body(100), self.next_nonce(), 0, 0))
        elif what == "expired":  # claims to have expired 9 s ago, stored for a minute
            self.c.set(key, make_value(key, self.body(100), self.next_nonce(), t - 10_000, 1_000), 60)
        elif what == "blocked":
            self.timed(K_GET, 1, lambda: (time.sleep((self.lt_ns + self.margin_ns) / 1e9 + 0.05), self.c.get(key))[1])
            return
        self.check(key, self.c.get(key), now_ms())

    def timed(self, kind: int, nlocks: int, fn, *args, extra_ns: int = 0):
        """Run one cache call, timed against its bound."""
        S, b = self.S, self.b
        bound = nlocks * self.lt_ns + self.margin_ns + extra_ns
        S[b + F_OP_KIND] = kind
        S[b + F_OP_BOUND] = bound
        t = time.monotonic_ns()
        S[b + F_OP_START] = t
        raised = None
        try:
            return fn(*args)
        except BaseException as e:
            raised = repr(e)
            raise
        finally:
            dt = time.monotonic_ns() - t
            S[b + F_OP_START] = 0
            if dt > S[b + C_MAX_NS]:
                S[b + C_MAX_NS] = dt
            if dt > S[b + C_KMAX_BASE + kind]:
                S[b + C_KMAX_BASE + kind] = dt
            if dt > bound:
                S[b + C_BLOCKED] += 1
                if raised and not raised.startswith(("LockTimeout", "KeyError")):
                    S[b + C_BLOCKED_RAISED] += 1
                self.event("blocked", op=OPS[kind], seconds=dt / 1e9, bound=bound / 1e9, raised=raised)

    def op(self, kind: int, arg: int = 0) -> None:
        S, b = self.S, self.b
        S[b + F_STATE] = ST_OP
        try:
            getattr(self, "op_" + OPS[kind])(arg)
            S[b + C_OPS] += 1
            S[b + C_KIND_BASE + kind] += 1
        except self.LockTimeout:
            S[b + C_LOCK_TIMEOUTS] += 1
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # anything else is a finding (pyo3's PanicException is a BaseException)
            S[b + C_ERRORS] += 1
            self.event("error", op=OPS[kind], error=repr(e), tb=traceback.format_exc()[-2000:])
        finally:
            S[b + F_STATE] = ST_IDLE

    def op_get(self, _):
        r = self.rng.random()
        key = self.vkey() if r < 0.75 else self.rng.choice(self.ikeys) if r < 0.88 else self.rng.choice(self.tkeys)
        t0 = now_ms()
        v = self.timed(K_GET, 1, self.c.get, key)
        self.check(key, v, t0)

    def _ttl_set(self, kind: int, fn, key: bytes, add: bool = False):
        ttl = self.ttl()
        nonce = self.next_nonce()
        hot = key in self.hot
        fixed = self.fixed_len.get(key)
        n = fixed or (self.rng.randint(8192, 32768) if hot else self.body_len())
        if fixed is None and self.rng.random() < (0.5 if hot else 0.25):  # a str value
            text = self.text(n)
            t0 = now_ms()
            v = make_str_value(key, text, nonce, t0, ttl)
        else:
            body = self.body(n)
            bd = body_digest(key, body)
            t0 = now_ms()  # as close as possible to the core's own clock reading
            v = make_value(key, body, nonce, t0, ttl, bd)
        S, b = self.S, self.b
        if ttl:
            S[b + F_NONCE_BASE] = nonce
            S[b + F_NONCE_N] = 1
        r = self.timed(kind, 1, fn, key, v, ttl / 1000 if ttl else None)
        if ttl:
            t1 = now_ms()
            if t1 - t0 > SLOW_SET_MS:
                os.write(self.fd_slow, b"%d %d\n" % (nonce, t1))
            S[b + F_NONCE_N] = 0
        self.inc(C_SETS)
        return r

    def op_set(self, _):
        r = self.rng.random()
        if r < 0.8:
            self._ttl_set(K_SET, self.c.set, self.vkey())
        elif r < 0.9:
            self.timed(K_SET, 1, self.c.set, self.rng.choice(self.ikeys), self.rng.randint(-1000, 1000))
        else:  # touch keyspace: values do not carry their expiry (touch changes it)
            key = self.rng.choice(self.tkeys)
            v = make_value(key, self.body(self.rng.randint(16, 2048)), self.next_nonce(), 0, 0)
            self.timed(K_SET, 1, self.c.set, key, v, self.rng.choice([None, 0.05, 0.5, 5.0]))

    def op_add(self, _):
        self._ttl_set(K_ADD, self.c.add, self.vkey(), add=True)

    def op_delete(self, _):
        r = self.rng.random()
        key = self.vkey() if r < 0.7 else self.rng.choice(self.ikeys) if r < 0.85 else self.rng.choice(self.tkeys)
        self.timed(K_DELETE, 1, self.c.delete, key)

    def op_incr(self, _):
        key = self.rng.choice(self.ikeys)
        try:
            v = self.timed(K_INCR, 1, self.c.incr, key, self.rng.choice([1, 1, 1, -1, 7]))
        except KeyError:
            self.inc(C_INCR_MAIN_RESEED)
            self.timed(K_INCR, 1, self.c.add, key, self.rng.randint(0, 1000))
            return
        except TypeError as e:
            self.inc(C_FOREIGN)
            self.event("foreign", key=key.decode(), got="incr TypeError " + repr(e))
            return
        if type(v) is not int:
            self.inc(C_FOREIGN)
            self.event("foreign", key=key.decode(), got=repr(v)[:100])

    def op_touch(self, _):
        key = self.rng.choice(self.tkeys)
        self.timed(K_TOUCH, 1, self.c.touch, key, self.rng.choice([None, 0.05, 0.5, 5.0, 30.0]))

    def op_get_many(self, _):
        keys = list({self.vkey() if self.rng.random() < 0.8 else self.rng.choice(self.ikeys)
                     for _ in range(self.rng.randint(2, 12))})
        nlocks = len({self.shard_of(k) for k in keys})
        t0 = now_ms()
        got = self.timed(K_GET_MANY, nlocks, self.c.get_many, keys)
        for k in keys:
            self.check(k, got.get(k), t0)

    def op_set_many(self, _):
        keys = list({self.vkey() for _ in range(self.rng.randint(2, 8))})
        nlocks = len({self.shard_of(k) for k in keys})
        ttl = self.ttl()
        base = self.nonce + 1
        bodies = {k: self.body(self.rng.randint(16, 4096)) for k in keys}
        bds = {k: body_digest(k, bodies[k]) for k in keys}
        t0 = now_ms()
        items = {k: make_value(k, bodies[k], self.next_nonce(), t0, ttl, bds[k]) for k in keys}
        if self.rng.random() < 0.25:  # one of them as a str value
            k = keys[0]
            items[k] = make_str_value(k, self.text(len(bodies[k])), base, t0, ttl)
        S, b = self.S, self.b
        if ttl:
            S[b + F_NONCE_BASE] = base
            S[b + F_NONCE_N] = len(keys)
        failed = self.timed(K_SET_MANY, nlocks, self.c.set_many, items, ttl / 1000 if ttl else None)
        if ttl:
            t1 = now_ms()
            if t1 - t0 > SLOW_SET_MS:
                for i in range(len(keys)):
                    os.write(self.fd_slow, b"%d %d\n" % (base + i, t1))
            S[b + F_NONCE_N] = 0
        if failed:
            self.inc(C_SETMANY_FAILED, len(failed))
        self.inc(C_SETS, len(keys))

    def op_counter_incr(self, _):
        S, b = self.S, self.b
        S[b + F_STATE] = ST_CTR
        try:
            r = self.timed(K_CTR, 1, self.cc.incr, CTR_KEY, 1)
        except KeyError:
            S[b + F_STATE] = ST_OP
            self.reseed_counter()
            return
        os.write(self.fd_ctr, b"%d\n" % r)
        S[b + F_STATE] = ST_OP
        self.inc(C_CTR_OK)

    def reseed_counter(self) -> None:
        """The counter is gone (its shard was wiped): start a new epoch."""
        e = 1
        while True:
            try:
                fd = os.open(f"{Cfg.rundir}/epoch-{e}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                os.close(fd)
                break
            except FileExistsError:
                e += 1
        added = self.timed(K_CTR, 1, self.cc.add, CTR_KEY, e << EPOCH_SHIFT)
        self.inc(C_CTR_RESEED)
        self.event("counter_reseed", epoch=e, added=bool(added))

    def op_lock_rmw(self, stay: int):
        """A non-atomic read-modify-write that only the app lock makes exact
        (with `stay`, it waits inside, between the read and the write, for
        the parent's kill)."""
        S, b = self.S, self.b
        lock = self.lk.lock(ALOCK_KEY, timeout=None, sleep=0.001)
        acquire = lambda: lock.acquire(blocking_timeout=Cfg.lock_wait)  # noqa: E731
        # The bound allows for a holder told to stay inside until killed (2 s).
        if not self.timed(K_ALOCK, 1, acquire, extra_ns=int((Cfg.lock_wait + 2) * 1e9)):
            self.inc(C_ALOCK_GAVEUP)
            self.event("app_lock_gave_up", wait=Cfg.lock_wait, holder=self.lk.get(ALOCK_KEY))
            return
        S[b + F_STATE] = ST_ALOCK
        try:
            other = S[G_HOLDER]
            if other and other != os.getpid() and alive(other):
                self.inc(C_ALOCK_TWO)
                self.event("app_lock_two_holders", other=other)
            S[G_HOLDER] = os.getpid()
            v = self.lk.get(ALOCK_CTR, 0)
            if stay:
                time.sleep(2)  # the parent kills us here; if it does not, carry on
            self.lk.set(ALOCK_CTR, v + 1)
            self.inc(C_ALOCK_OK)
            S[G_HOLDER] = 0
        finally:
            try:
                lock.release()
            except self.shmcache.LockNotOwnedError:
                self.inc(C_ALOCK_TWO)  # taken over from a live holder
                self.event("app_lock_taken_from_live_holder")
            S[b + F_STATE] = ST_OP

    def op_clear(self, _):
        self.inc(C_CLEARS)  # counted when started: a kill may interrupt it
        self.timed(K_CLEAR, Cfg.nshards, self.c.clear)

    def op_armed_set(self, pause_ms: int):
        """A set with the pause hook armed: the parent kills us during it."""
        key = self.vkey()
        v = make_value(key, self.body(self.fixed_len.get(key) or self.rng.randint(1024, 8192)), self.next_nonce(), 0, 0)
        S, b = self.S, self.b
        self.inc(C_ARMED_SETS)
        self.core_mod._set_test_pause_ms(pause_ms)
        S[b + F_STATE] = ST_ARMED
        try:
            self.timed(K_ARMED, 1, self.c.set, key, v, extra_ns=pause_ms * 1_000_000)
        finally:
            self.core_mod._set_test_pause_ms(0)


def _accumulate(ws):
    t = 0
    for w in ws:
        t += w
        yield t


def worker_main(slots: memoryview, slot: int, incarnation: int) -> None:
    """Entry point in the forked child; never returns."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        lg = logging.getLogger("shmcache")  # set_many logs lock timeouts; we count them
        lg.addHandler(logging.NullHandler())
        lg.propagate = False
        Worker(slots, slot, incarnation).run()
    except BaseException:
        code = 3
        try:
            with open(f"{Cfg.rundir}/crash-{slot}-{os.getpid()}.txt", "w") as f:
                f.write(traceback.format_exc())
        except Exception:
            pass
    finally:
        os._exit(code)


# ---------------------------------------------------------------------------
# the parent: killer and judge


class Chaos:
    def __init__(self, args) -> None:
        import shmcache

        self.args = args
        self.shmcache = shmcache
        self.rng = random.Random(args.seed)
        self.mm = mmap.mmap(-1, 8 * (HDR_WORDS + W * args.procs))
        self.S = memoryview(self.mm).cast("q")
        self.pids: dict[int, int] = {}  # pid -> slot
        self.slot_pid: dict[int, int] = {}
        self.incarnations = 0
        self.kills = 0
        self.kills_armed = 0
        self.kills_in_lock = 0
        self.kills_waiting_lock = 0
        self.kills_armed_missed = 0  # the armed set had finished (or not started) when the kill came
        self.kills_during_incr = 0
        self.kills_holding_app_lock = 0
        self.app_lock_no_response = 0
        self.blocked_at_kill = 0
        self.crashes: list[dict] = []
        self.unverifiable_nonces: set[int] = set()
        self.armed_no_response = 0
        self.respawns = 0
        self.findings: list[str] = []

    # -- workers --
    def spawn(self, slot: int) -> None:
        b = HDR_WORDS + slot * W
        for f in (F_CMD, F_STATE, F_OP_START, F_OP_BOUND, F_OP_KIND, F_NONCE_BASE, F_NONCE_N):
            self.S[b + f] = 0
        self.incarnations += 1
        self.S[b + F_INCARNATION] = self.incarnations
        pid = os.fork()
        if pid == 0:
            worker_main(self.S, slot, self.incarnations)
        self.pids[pid] = slot
        self.slot_pid[slot] = pid

    def after_death(self, pid: int, status: int, killed_by_us: bool, t_kill_ns: int | None = None) -> None:
        """Account for a dead worker from what it left in its slot, then replace it."""
        slot = self.pids.pop(pid)
        del self.slot_pid[slot]
        b = HDR_WORDS + slot * W
        S = self.S
        if S[b + F_STATE] == ST_CTR:
            self.kills_during_incr += 1
        if S[b + F_STATE] == ST_ALOCK:
            self.kills_holding_app_lock += 1
        if S[b + F_NONCE_N]:
            base = S[b + F_NONCE_BASE]
            self.unverifiable_nonces.update(range(base, base + S[b + F_NONCE_N]))
        start = S[b + F_OP_START]
        if start:
            t_end = t_kill_ns or time.monotonic_ns()
            if t_end - start > S[b + F_OP_BOUND]:
                self.blocked_at_kill += 1
                self.findings.append(
                    f"worker {pid} was killed {(t_end - start) / 1e9:.3f}s into {OPS[S[b + F_OP_KIND]]} "
                    f"(bound {S[b + F_OP_BOUND] / 1e9:.3f}s)"
                )
        if not killed_by_us:
            crash = {"pid": pid, "slot": slot, "status": status}
            f = Path(self.args.rundir, f"crash-{slot}-{pid}.txt")
            if f.exists():
                crash["traceback"] = f.read_text()[-3000:]
            self.crashes.append(crash)
        if not S[G_STOP]:
            self.respawns += 1
            self.spawn(slot)

    def reap(self) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.pids:
                self.after_death(pid, status, killed_by_us=False)

    def kill(self, slot: int, inspect: bool) -> str:
        """SIGKILL the worker in `slot` (SIGSTOP + look first if `inspect`).
        Returns the syscall it was stopped in ('' if not inspected)."""
        pid = self.slot_pid[slot]
        sysc = ""
        if inspect:
            os.kill(pid, signal.SIGSTOP)
            deadline = time.monotonic() + 0.5
            while proc_state(pid) not in ("T", "t", "Z", "X", "?") and time.monotonic() < deadline:
                time.sleep(0.0001)
            sysc = read_proc(pid, "syscall").split(" ", 1)[0].strip()
        t_kill = time.monotonic_ns()
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        ours = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        self.kills += ours
        self.after_death(pid, status, killed_by_us=ours, t_kill_ns=t_kill)
        return sysc

    def armed_kill(self) -> None:
        slot = self.rng.randrange(self.args.procs)
        b = HDR_WORDS + slot * W
        # Most pauses end (by the kill) before LOCK_TIMEOUT; some outlast it, so
        # waits that run out (LockTimeout) are exercised as well.
        pause = self.rng.randint(20, 80) if self.rng.random() < 0.7 else self.rng.randint(150, 400)
        pid = self.slot_pid[slot]
        self.S[b + F_CMD] = pause
        deadline = time.monotonic() + 1.0
        while self.S[b + F_STATE] != ST_ARMED:
            if time.monotonic() > deadline or pid not in self.pids:
                self.armed_no_response += 1
                break
            time.sleep(0.0002)
        if pid not in self.pids:  # it died meanwhile (reaped elsewhere: impossible, single-threaded)
            return
        time.sleep(self.rng.uniform(0.0005, pause * 0.6 / 1000))
        armed = self.S[b + F_STATE] == ST_ARMED
        sysc = self.kill(slot, inspect=True)
        self.kills_armed += 1
        if armed and sysc in SLEEP_SYSCALLS:
            self.kills_in_lock += 1
        elif armed and sysc in FUTEX_SYSCALLS:
            self.kills_waiting_lock += 1
        else:
            self.kills_armed_missed += 1

    def app_lock_kill(self) -> None:
        """Tell a worker to take the app lock and wait inside; kill it there."""
        slot = self.rng.randrange(self.args.procs)
        b = HDR_WORDS + slot * W
        pid = self.slot_pid[slot]
        self.S[b + F_ALOCK_CMD] = 1
        deadline = time.monotonic() + 1.0
        while self.S[b + F_STATE] != ST_ALOCK:
            if time.monotonic() > deadline:
                self.S[b + F_ALOCK_CMD] = 0
                self.app_lock_no_response += 1
                return
            time.sleep(0.0002)
        time.sleep(self.rng.uniform(0.0, 0.01))
        if pid in self.pids:
            self.kill(slot, inspect=False)  # after_death counts it (state ST_ALOCK)

    # -- the run --
    def run(self) -> dict:
        a = self.args
        sh = self.shmcache
        t_start = time.monotonic()
        load_start = os.getloadavg()
        c = sh.Cache(Cfg.location, size=Cfg.size, max_item_size=Cfg.max_item_size, lock_timeout=Cfg.lock_timeout)
        cc = sh.Cache(Cfg.ctr_location, size=Cfg.ctr_size, max_item_size=4096, lock_timeout=Cfg.lock_timeout)
        Cfg.nshards = c.stats()["shards"]
        inode0 = c._core.inode
        Path(a.rundir, "epoch-1").touch()
        cc.set(CTR_KEY, 1 << EPOCH_SHIFT)
        lk = sh.Cache(Cfg.lock_location, size=Cfg.ctr_size, max_item_size=4096, lock_timeout=Cfg.lock_timeout)
        for slot in range(a.procs):
            self.spawn(slot)
        deadline = t_start + a.seconds
        next_kill = time.monotonic() + self.rng.expovariate(a.kill_rate)
        next_report = time.monotonic() + a.report_every
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            self.reap()
            if now >= next_kill:
                x = self.rng.random()
                if x < a.armed_fraction:
                    self.armed_kill()
                elif x < a.armed_fraction + a.app_lock_fraction:
                    self.app_lock_kill()
                else:
                    self.kill(self.rng.randrange(a.procs), inspect=self.rng.random() < 0.2)
                next_kill = time.monotonic() + self.rng.expovariate(a.kill_rate)
            if now >= next_report and not a.quiet:
                next_report = now + a.report_every
                self.report_progress(c, now - t_start)
            time.sleep(min(0.002, max(0.0, next_kill - time.monotonic())))
        run_seconds = time.monotonic() - t_start

        # -- stop: every worker must finish its operation and exit promptly --
        self.S[G_STOP] = 1
        hung = []
        stop_deadline = time.monotonic() + a.stop_timeout
        while self.pids and time.monotonic() < stop_deadline:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)
                continue
            if pid in self.pids:
                clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
                self.after_death(pid, status, killed_by_us=clean)  # a clean exit is not a crash
        for pid, slot in list(self.pids.items()):
            b = HDR_WORDS + slot * W
            hung.append({"pid": pid, "slot": slot, "syscall": read_proc(pid, "syscall").strip(),
                         "op": OPS[self.S[b + F_OP_KIND]],
                         "op_seconds": (time.monotonic_ns() - self.S[b + F_OP_START]) / 1e9 if self.S[b + F_OP_START] else None})
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.pids.pop(pid)

        # -- judge --
        t_judge = time.monotonic()
        verify, verify_ctr = {}, {}
        try:
            items, nbytes = c._core.verify()
            verify = {"ok": True, "items": items, "bytes": nbytes}
        except Exception as e:
            verify = {"ok": False, "error": repr(e)}
        final = None
        try:
            final = cc.get(CTR_KEY)
            i2, b2 = cc._core.verify()
            verify_ctr = {"ok": True, "items": i2, "bytes": b2}
        except Exception as e:
            verify_ctr = {"ok": False, "error": repr(e)}
        st = c.stats()
        cst = cc.stats()
        try:
            app = {"final": lk.get(ALOCK_CTR, 0), "stats": lk.stats(), "verify": lk._core.verify()}
        except Exception as e:
            app = {"final": None, "error": repr(e)}
        result = self.judge(st, cst, final, run_seconds, hung, verify, verify_ctr)
        self.judge_app_lock(result, app)
        result["inode_unchanged"] = c._core.inode == inode0
        result["load_avg_start"] = [round(x, 2) for x in load_start]
        result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        result["judge_seconds"] = round(time.monotonic() - t_judge, 3)
        result["wall_seconds"] = round(time.monotonic() - t_start, 3)
        if not result["inode_unchanged"]:
            result["failures"].append("the segment's inode changed during the run")
            result["pass"] = False
        return result

    def slot_sum(self, f: int) -> int:
        return sum(self.S[HDR_WORDS + s * W + f] for s in range(self.args.procs))

    def report_progress(self, c, elapsed: float) -> None:
        st = c.stats()
        print(
            f"[chaos {elapsed:6.1f}s] ops={self.slot_sum(C_OPS)} kills={self.kills} in_lock={self.kills_in_lock} "
            f"recoveries={st['lock_recoveries']} wipes={st['shard_wipes']} evictions={st['evictions']} "
            f"blocked={self.slot_sum(C_BLOCKED) + self.blocked_at_kill} torn={self.slot_sum(C_TORN)} "
            f"foreign={self.slot_sum(C_FOREIGN)} load={os.getloadavg()[0]:.2f}",
            file=sys.stderr, flush=True,
        )

    def read_events(self) -> list[dict]:
        out = []
        for f in sorted(Path(self.args.rundir).glob("events-*.log")):
            for line in f.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line cut by SIGKILL
        return out

    def judge_app_lock(self, r: dict, app: dict) -> None:
        """The app lock's checks, added to `r` (see the module doc)."""
        confirmed = self.slot_sum(C_ALOCK_OK)
        final = app.get("final")
        a = {
            "rmw_confirmed": confirmed,
            "counter_final": final,
            "kills_holding_the_lock": self.kills_holding_app_lock,
            "two_live_holders": self.slot_sum(C_ALOCK_TWO),
            "acquires_given_up": self.slot_sum(C_ALOCK_GAVEUP),
            "told_to_hold_but_did_not_in_1s": self.app_lock_no_response,
            "lock_segment_shard_wipes": (app.get("stats") or {}).get("shard_wipes"),
            "error": app.get("error"),
        }
        a["counter_ok"] = final is not None and confirmed <= final <= confirmed + self.kills_holding_app_lock
        r["app_lock"] = a
        long_enough = self.args.seconds >= 5
        r["failures"] += [msg for failed, msg in (
            (a["two_live_holders"], f"the app lock was held by two live processes {a['two_live_holders']} time(s)"),
            (a["lock_segment_shard_wipes"],
             f"{a['lock_segment_shard_wipes']} shard wipe(s) in the app-lock segment (nothing there clears it)"),
            (a["acquires_given_up"],
             f"{a['acquires_given_up']} app-lock acquire(s) gave up after {Cfg.lock_wait}s (a dead holder's lock not taken over?)"),
            (not a["counter_ok"], "the app lock's counter is outside [confirmed, confirmed + kills holding the lock]"),
            (long_enough and self.slot_sum(C_KIND_BASE + K_ALOCK) == 0, "no app-lock operation ran"),
            (self.args.app_lock_fraction > 0 and long_enough and not self.kills_holding_app_lock,
             "no kill landed while a worker held the app lock"),
        ) if failed]
        r["pass"] = not r["failures"]

    def judge(self, st, cst, final, run_seconds, hung, verify, verify_ctr) -> dict:
        a = self.args
        rd = Path(a.rundir)
        events = self.read_events()
        by_kind = defaultdict(list)
        for e in events:
            by_kind[e["kind"]].append(e)

        # expired values: re-judge suspects with the writers' slow-set log
        slow = {}
        for f in rd.glob("slow-*.log"):
            for line in f.read_text().splitlines():
                p = line.split()
                if len(p) == 2:
                    slow[int(p[0])] = int(p[1])
        expired, explained, unverifiable = [], 0, 0
        for e in by_kind["expired_suspect"]:
            n = e["nonce"]
            if n in self.unverifiable_nonces:
                unverifiable += 1
            elif n in slow and e["t_get0"] <= slow[n] + e["ttl"] + Cfg.tol_ms:
                explained += 1
            else:
                expired.append(e)

        # the shared counter
        vals = []
        for f in rd.glob("ctr-*.log"):
            for line in f.read_text().splitlines():
                if line.strip().isdigit():
                    vals.append(int(line))
        by_epoch = defaultdict(list)
        for v in vals:
            by_epoch[v >> EPOCH_SHIFT].append(v & LOW_MASK)
        dups = sum(len(vs) - len(set(vs)) for vs in by_epoch.values())
        gaps = sum(max(vs) - len(set(vs)) for vs in by_epoch.values() if vs)
        epochs = set(by_epoch)
        incr = {
            "confirmed_total": len(vals),
            "epochs": sorted(epochs | ({final >> EPOCH_SHIFT} if isinstance(final, int) else set())),
            "duplicates": dups,
            "unconfirmed_gaps": gaps,
            "uncertain": self.kills_during_incr,
            "counter_segment_shard_wipes": cst["shard_wipes"],
            "counter_segment_lock_recoveries": cst["lock_recoveries"],
            "counter_lock_timeouts": cst["lock_timeouts"],
        }
        ok = dups == 0 and gaps <= self.kills_during_incr
        if isinstance(final, int):
            ef, lf = final >> EPOCH_SHIFT, final & LOW_MASK
            confirmed = len(set(by_epoch.get(ef, [])))
            incr.update(final_epoch=ef, final_value=lf, confirmed_in_final_epoch=confirmed,
                        max_logged_in_final_epoch=max(by_epoch.get(ef, [0])))
            ok = ok and confirmed <= lf <= confirmed + self.kills_during_incr and max(by_epoch.get(ef, [0])) <= lf
            ok = ok and len(incr["epochs"]) - 1 <= cst["shard_wipes"]
        else:
            incr.update(final_value=None, note="counter gone at the end (its shard was wiped)")
            ok = ok and len(incr["epochs"]) <= cst["shard_wipes"]
        incr["ok"] = bool(ok)

        ops_by_kind = {OPS[k]: self.slot_sum(C_KIND_BASE + k) for k in range(len(OPS))}
        blocked = self.slot_sum(C_BLOCKED)
        clears = self.slot_sum(C_CLEARS)
        max_wipes_explained = clears * Cfg.nshards
        r = {
            "mode": "processes",
            "seconds": a.seconds,
            "run_seconds": round(run_seconds, 3),
            "procs": a.procs,
            "cache": {"size": Cfg.size, "max_item_size": Cfg.max_item_size, "shards": Cfg.nshards,
                      "lock_timeout": Cfg.lock_timeout},
            "ops_total": self.slot_sum(C_OPS),
            "ops_per_second": round(self.slot_sum(C_OPS) / max(run_seconds, 1e-9)),
            "ops_by_kind": ops_by_kind,
            "sets": self.slot_sum(C_SETS),
            "hits": self.slot_sum(C_HITS),
            "misses": self.slot_sum(C_MISSES),
            "clears": clears,
            "kills": self.kills,
            "kills_armed": self.kills_armed,
            "kills_in_lock": self.kills_in_lock,
            "kills_armed_waiting_for_lock": self.kills_waiting_lock,
            "kills_armed_missed": self.kills_armed_missed,
            "armed_no_response": self.armed_no_response,
            "kills_during_counter_incr": self.kills_during_incr,
            "respawns": self.respawns,
            "worker_crashes": len(self.crashes),
            "worker_errors": self.slot_sum(C_ERRORS),
            "lock_recoveries": st["lock_recoveries"],
            "shard_wipes": st["shard_wipes"],
            "shard_wipes_unexplained": max(0, st["shard_wipes"] - max_wipes_explained),
            "evictions": st["evictions"],
            "expirations": st["expirations"],
            "lock_timeouts": st["lock_timeouts"],
            "lock_timeouts_raised": self.slot_sum(C_LOCK_TIMEOUTS),
            "set_many_keys_not_stored": self.slot_sum(C_SETMANY_FAILED),
            "stats_end": {k: st[k] for k in ("items", "bytes_used", "hits", "misses", "sets", "evictions",
                                            "expirations", "lock_recoveries", "lock_timeouts", "shard_wipes")},
            "bound_s": {"per_lock": Cfg.lock_timeout, "margin": Cfg.margin},
            "max_op_s": round(max(self.S[HDR_WORDS + s * W + C_MAX_NS] for s in range(a.procs)) / 1e9, 4),
            "max_op_s_by_kind": {OPS[k]: round(max(self.S[HDR_WORDS + s * W + C_KMAX_BASE + k] for s in range(a.procs)) / 1e9, 4)
                                 for k in range(len(OPS))},
            "ops_blocked_over_bound": blocked + self.blocked_at_kill + len(hung),
            "blocked_detail": {"completed_ops": blocked, "of_which_raised_an_unexpected_exception": self.slot_sum(C_BLOCKED_RAISED),
                               "in_flight_at_kill": self.blocked_at_kill,
                               "hung_at_end": len(hung), "examples": (by_kind["blocked"][:5] + hung[:5])},
            "torn_values": self.slot_sum(C_TORN),
            "foreign_values": self.slot_sum(C_FOREIGN),
            "ttl_values_checked": self.slot_sum(C_TTL_CHECKED),
            "expired_values_returned": len(expired),
            "expired_suspects_explained_by_slow_set": explained,
            "expired_suspects_unverifiable": unverifiable,
            "incr": incr,
            "verify": verify,
            "verify_counter_segment": verify_ctr,
        }
        examples = by_kind["torn"][:5] + by_kind["foreign"][:5] + expired[:5] + by_kind["error"][:5]
        if examples:
            r["examples"] = examples
        if self.crashes:
            r["crashes"] = self.crashes[:5]
        if self.findings:
            r["findings"] = self.findings[:20]

        f = [msg for failed, msg in (
            (r["ops_total"] == 0, "no operations ran"),
            (r["kills"] == 0, "no worker was killed"),
            (a.armed_fraction > 0 and a.seconds >= 5 and r["kills_in_lock"] == 0, "no kill landed inside the lock"),
            (r["ops_blocked_over_bound"], f"{r['ops_blocked_over_bound']} operation(s) blocked longer than their bound"),
            (r["torn_values"], f"{r['torn_values']} torn value(s) read"),
            (r["foreign_values"], f"{r['foreign_values']} foreign value(s) read"),
            (r["expired_values_returned"], f"{r['expired_values_returned']} expired value(s) returned"),
            (not incr["ok"], "increment accounting failed"),
            (r["worker_crashes"], f"{r['worker_crashes']} worker(s) died on their own"),
            (r["worker_errors"], f"{r['worker_errors']} unexpected exception(s) in workers"),
            (r["lock_recoveries"] + cst["lock_recoveries"] > r["kills"], "more lock recoveries than kills"),
            (r["lock_recoveries"] < r["kills_in_lock"], "fewer lock recoveries than kills inside the lock"),
            (r["shard_wipes_unexplained"], f"{r['shard_wipes_unexplained']} shard wipe(s) not explained by clear() "
             "(a kill mid-write must recover, not wipe)"),
            (not verify.get("ok") or not verify_ctr.get("ok"), "verify() failed"),
        ) if failed]
        r["failures"] = f
        r["pass"] = not f
        return r


def summary_lines(r: dict) -> list[str]:
    inc = r["incr"]
    return [
        f"shmcache chaos: {r['procs']} workers for {r['run_seconds']:.0f}s "
        f"(cache {r['cache']['size'] >> 20} MiB, {r['cache']['shards']} shards, LOCK_TIMEOUT {r['cache']['lock_timeout']}s); "
        f"load {r['load_avg_start'][0]} -> {r['load_avg_end'][0]}",
        f"  operations               {r['ops_total']:>10}  ({r['ops_per_second']}/s; sets {r['sets']}, hits {r['hits']}, misses {r['misses']}, clears {r['clears']})",
        f"  kills                    {r['kills']:>10}  (respawned {r['respawns']}; armed {r['kills_armed']})",
        f"  kills inside the lock    {r['kills_in_lock']:>10}  (armed but waiting for the lock {r['kills_armed_waiting_for_lock']}, missed {r['kills_armed_missed']})",
        f"  lock_recoveries          {r['lock_recoveries']:>10}",
        f"  shard_wipes              {r['shard_wipes']:>10}  (unexplained {r['shard_wipes_unexplained']})",
        f"  evictions / expirations  {r['evictions']:>10} / {r['expirations']}",
        f"  lock timeouts            {r['lock_timeouts']:>10}  (raised to callers {r['lock_timeouts_raised']})",
        f"  ops blocked > bound      {r['ops_blocked_over_bound']:>10}  (bound {r['bound_s']['per_lock']}s per lock + {r['bound_s']['margin']}s; slowest op {r['max_op_s']}s; "
        f"of the blocked, {r['blocked_detail']['of_which_raised_an_unexpected_exception']} raised an unexpected exception)",
        f"  torn / foreign values    {r['torn_values']:>10} / {r['foreign_values']}",
        f"  expired values returned  {r['expired_values_returned']:>10}  (TTL values checked {r['ttl_values_checked']}; suspects explained by a slow set {r['expired_suspects_explained_by_slow_set']}, unverifiable {r['expired_suspects_unverifiable']})",
        f"  incr check               {'ok' if inc['ok'] else 'FAILED':>10}  (confirmed {inc['confirmed_total']}, final {inc.get('final_value')} in epoch {inc.get('final_epoch')}, "
        f"confirmed in that epoch {inc.get('confirmed_in_final_epoch')}, uncertain {inc['uncertain']}, duplicates {inc['duplicates']}, epochs {len(inc['epochs'])})",
        f"  app lock (cache.lock)    {'ok' if r['app_lock']['counter_ok'] and not r['app_lock']['two_live_holders'] and not r['app_lock']['acquires_given_up'] else 'FAILED':>10}  "
        f"(read-modify-writes {r['app_lock']['rmw_confirmed']}, counter {r['app_lock']['counter_final']}, kills holding it {r['app_lock']['kills_holding_the_lock']}, "
        f"two live holders {r['app_lock']['two_live_holders']} (lock segment wipes {r['app_lock']['lock_segment_shard_wipes']}), acquires given up {r['app_lock']['acquires_given_up']})",
        f"  worker crashes / errors  {r['worker_crashes']:>10} / {r['worker_errors']}",
        f"  verify()                 {'ok' if r['verify'].get('ok') and r['verify_counter_segment'].get('ok') else 'FAILED':>10}",
        "PASS" if r["pass"] else "FAIL: " + "; ".join(r["failures"]),
    ]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--json", help="write the results here as JSON")
    p.add_argument("--gunicorn", action="store_true", help="run the gunicorn chaos mode (tools/chaos_gunicorn.py)")
    p.add_argument("--kill-rate", type=float, default=15.0, help="kills per second (default 15)")
    p.add_argument("--armed-fraction", type=float, default=0.3, help="fraction of kills aimed inside the lock")
    p.add_argument("--app-lock-fraction", type=float, default=0.1,
                   help="fraction of kills aimed at a worker holding the app lock (cache.lock)")
    p.add_argument("--size", default="4MB")
    p.add_argument("--max-item-size", default="64KB")
    p.add_argument("--lock-timeout", type=float, default=0.1)
    p.add_argument("--margin", type=float, default=0.2, help="slack added to each operation's lock-wait bound")
    p.add_argument("--stop-timeout", type=float, default=10.0, help="how long workers get to stop at the end")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--report-every", type=float, default=10.0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the run directory (logs) and segments")
    p.add_argument("--inject", default="", help="self-test: comma list of torn,foreign,expired,blocked to inject "
                   "on purpose (the run must then FAIL with those counted)")
    a, rest = p.parse_known_args(argv)
    return a, rest


def main(argv=None) -> int:
    a, rest = parse_args(argv)
    if a.gunicorn:
        from tools import chaos_gunicorn

        return chaos_gunicorn.main(rest + ["--seconds", str(a.seconds)] + (["--json", a.json] if a.json else [])
                                   + (["--quiet"] if a.quiet else []))
    if rest:
        print(f"unknown arguments: {rest}", file=sys.stderr)
        return 2
    if a.procs < 1:
        print("--procs must be at least 1", file=sys.stderr)
        return 2
    import shmcache
    from shmcache._options import parse_size

    run = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    Cfg.location = f"chaos-{run}"
    Cfg.ctr_location = f"chaos-{run}-ctr"
    Cfg.lock_location = f"chaos-{run}-lock"
    Cfg.size = parse_size(a.size, "--size")
    Cfg.max_item_size = parse_size(a.max_item_size, "--max-item-size")
    Cfg.lock_timeout = a.lock_timeout
    Cfg.margin = a.margin
    Cfg.procs = a.procs
    Cfg.inject = [x for x in a.inject.split(",") if x]
    bad = set(Cfg.inject) - {"torn", "foreign", "expired", "blocked"}
    if bad:
        print(f"unknown --inject kinds: {sorted(bad)}", file=sys.stderr)
        return 2
    Cfg.body = os.urandom(Cfg.max_item_size + 4096)
    chars = "abcxyz019|éßø€😀中文"
    r = random.Random(a.seed)
    Cfg.text = "".join(r.choice(chars) for _ in range(Cfg.max_item_size // 2))
    a.rundir = Cfg.rundir = tempfile.mkdtemp(prefix="shmcache-chaos-")
    # Whatever happens, stop in bounded time.
    def over_time(*_):
        raise TimeoutError("chaos run over its time limit")

    signal.signal(signal.SIGALRM, over_time)
    signal.alarm(int(a.seconds + a.stop_timeout + 120))
    chaos = Chaos(a)
    code = 1
    try:
        r = chaos.run()
        r["run_dir"] = a.rundir if a.keep else None
        for line in summary_lines(r):
            print(line, flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(r, indent=2, default=str))
        code = 0 if r["pass"] else 1
    except BaseException as e:
        print(f"chaos run aborted: {e!r}\n{traceback.format_exc()}", file=sys.stderr)
        if a.json:
            Path(a.json).write_text(json.dumps({"pass": False, "failures": [f"aborted: {e!r}"]}, indent=2))
        code = 1
    finally:
        signal.alarm(0)
        chaos.S[G_STOP] = 1
        for pid in list(chaos.pids):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        if not a.keep:
            shmcache.destroy(Cfg.location)
            shmcache.destroy(Cfg.ctr_location)
            shmcache.destroy(Cfg.lock_location)
            shutil.rmtree(a.rundir, ignore_errors=True)
        else:
            print(f"kept: run directory {a.rundir}, segments {Cfg.location}, {Cfg.ctr_location}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
