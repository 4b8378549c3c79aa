"""``python -m shmcache top NAME``: a refreshing terminal view of one cache.

Every ``--interval`` seconds it reads the segment's counters (``stats()``
and ``shard_stats()``: lock-free reads, nothing is changed) and shows the
hit ratio, ops/s from the counters' deltas, memory, evictions, expirations,
lock timeouts and the busiest shards. On a terminal it redraws in place
(ANSI escapes, the alternate screen; q or Ctrl-C quits); otherwise, and
with ``--once``, it prints plain frames. ``--once`` prints one frame (its
rates measured over one interval) and exits; ``--count N`` prints N.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from . import _core

HEADER_LINES = 9  # the lines above the shard table's rows


@dataclass
class Sample:
    at: float  # time.monotonic()
    stats: dict[str, Any]
    shards: list[dict[str, int]]


def sample(location: str) -> Sample:
    """One reading of the cache (attached afresh: a recreated segment is
    followed). SegmentError if it has no segment."""
    c = _core.Cache.attach_existing(location)
    return Sample(time.monotonic(), c.stats(), c.shard_stats())


def _mib(n: float) -> str:
    for unit, f in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{int(n)} B"


def _num(n: float) -> str:
    return f"{n:,.0f}" if n >= 100 or n == int(n) else f"{n:,.1f}"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _delta(cur: Mapping[str, Any], prev: Mapping[str, Any] | None, key: str) -> int:
    # A counter that went down: the segment was recreated (destroy), so
    # the new one counts from 0.
    if prev is None:
        return int(cur.get(key, 0))
    d = int(cur.get(key, 0)) - int(prev.get(key, 0))
    return d if d >= 0 else int(cur.get(key, 0))


def frame(location: str, cur: Sample, prev: Sample | None, width: int = 100, height: int = 40) -> list[str]:
    """The lines of one frame. Rates are over ``cur.at - prev.at``; with no
    ``prev``, the totals are shown and the rates are '-'."""
    s = cur.stats
    dt = (cur.at - prev.at) if prev else 0.0
    p = prev.stats if prev else None
    if p is not None and p.get("segment") != s.get("segment"):
        p = None

    def rate(key: str) -> str:
        return _num(_delta(s, p, key) / dt) if p is not None and dt > 0 else "-"

    def rate_of(n: int) -> str:
        return _num(n / dt) if p is not None and dt > 0 else "-"

    hits, misses = _delta(s, p, "hits"), _delta(s, p, "misses")
    gets = hits + misses
    when = time.strftime("%H:%M:%S")
    span = f"last {dt:.1f}s" if p is not None else "since start"
    lines = [
        f"shmcache top  {location}  ({s.get('segment', '')})  {when}",
        f"items {_num(s['items'])}   memory used {_mib(s['bytes_used'])} of {_mib(s['bytes_capacity'])} "
        f"({_pct(s['bytes_used'], s['bytes_capacity'])})   free {_mib(s['bytes_free'])}   "
        f"segment {_mib(s['segment_size'])}, {s['shards']} shards",
        f"hit ratio {_pct(hits, gets)} ({span})   {_pct(s['hits'], s['hits'] + s['misses'])} (since start)",
        f"ops/s  gets {rate_of(gets)}   hits {rate('hits')}   misses {rate('misses')}   sets {rate('sets')}",
        f"evictions {_num(s['evictions'])} ({rate('evictions')}/s)   "
        f"expirations {_num(s['expirations'])} ({rate('expirations')}/s)",
        f"lock timeouts {_num(s['lock_timeouts'])} ({rate('lock_timeouts')}/s)   "
        f"lock recoveries {_num(s['lock_recoveries'])}   shard wipes {_num(s['shard_wipes'])}",
        "",
        f"busiest shards (gets + sets, {span})",
        f"{'shard':>5} {'ops/s' if p is not None else 'ops':>10} {'hit%':>6} {'items':>9} {'used':>7} "
        f"{'evictions':>10} {'lock t/o':>9}",
    ]
    prev_shards = {d["shard"]: d for d in prev.shards} if p is not None and prev else {}

    def ops(d: Mapping[str, int]) -> int:
        q = prev_shards.get(d["shard"]) if p is not None else None
        return sum(_delta(d, q, k) for k in ("hits", "misses", "sets"))

    ranked = sorted(cur.shards, key=lambda d: (-ops(d), d["shard"]))
    for d in ranked[: max(1, height - HEADER_LINES - 1)]:
        q = prev_shards.get(d["shard"]) if p is not None else None
        h, m = _delta(d, q, "hits"), _delta(d, q, "misses")
        n = ops(d)
        lines.append(
            f"{d['shard']:>5} {rate_of(n) if p is not None else _num(n):>10} {_pct(h, h + m):>6} "
            f"{_num(d['items']):>9} {_pct(d['bytes_used'], d['bytes_capacity']):>7} "
            f"{_num(d['evictions']):>10} {_num(d['lock_timeouts']):>9}"
        )
    return [line[:width] for line in lines]


def frames(location: str, interval: float, count: int | None) -> Iterator[list[str]]:
    """``count`` frames (None: forever), each after one interval, so that
    every frame has rates."""
    prev = sample(location)
    n = 0
    while count is None or n < count:
        time.sleep(interval)
        cur = sample(location)
        size = shutil.get_terminal_size((100, 40))
        yield frame(location, cur, prev, size.columns, size.lines)
        prev, n = cur, n + 1


@contextlib.contextmanager
def _screen(out: TextIO) -> Iterator[None]:
    """The alternate screen with the cursor hidden, and keys read one at a
    time (for q) when stdin is a terminal; all restored on the way out."""
    old = None
    try:
        import termios
        import tty

        if sys.stdin.isatty():
            old = termios.tcgetattr(sys.stdin.fileno())
            tty.setcbreak(sys.stdin.fileno())
    except (ImportError, OSError):
        old = None
    out.write("\x1b[?1049h\x1b[?25l")
    out.flush()
    try:
        yield
    finally:
        out.write("\x1b[?25h\x1b[?1049l")
        out.flush()
        if old is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, old)


def _quit_pressed(timeout: float) -> bool:
    """Wait up to ``timeout`` for a key on a terminal stdin; True for q."""
    if not sys.stdin.isatty():
        time.sleep(timeout)
        return False
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        r, _, _ = select.select([sys.stdin], [], [], left)
        if r and os.read(sys.stdin.fileno(), 1) in (b"q", b"Q"):
            return True
    return False


def run(location: str, interval: float, count: int | None, out: TextIO = sys.stdout, live: bool | None = None) -> int:
    if live is None:
        live = out.isatty() and count != 1
    if not live:
        for i, lines in enumerate(frames(location, interval, count)):
            out.write(("\n" if i else "") + "\n".join(lines) + "\n")
            out.flush()
        return 0
    with _screen(out):
        prev = sample(location)
        n = 0
        while count is None or n < count:
            if _quit_pressed(interval):
                break
            cur = sample(location)
            size = shutil.get_terminal_size((100, 40))
            lines = frame(location, cur, prev, size.columns, size.lines)
            # Home, each line cleared to its end, the rest of the screen cleared.
            out.write("\x1b[H" + "".join(line + "\x1b[K\n" for line in lines) + "\x1b[J")
            out.flush()
            prev, n = cur, n + 1
    return 0


def _positive(v: str) -> float:
    f = float(v)
    if not (0 < f <= 3600):
        raise argparse.ArgumentTypeError(f"invalid --interval: {v}; give seconds, more than 0 and at most 3600")
    return f


def _count(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"invalid --count: {v}; give a number of frames, at least 1")
    return n


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="shmcache top", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("location", help="the cache's LOCATION (Django) or name (shmcache.Cache)")
    p.add_argument("--interval", "-n", type=_positive, default=1.0, help="seconds between frames (default 1)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--once", action="store_true", help="print one frame (rates over one interval) and exit")
    g.add_argument("--count", type=_count, help="print this many frames and exit")
    a = p.parse_args(list(argv))
    count = 1 if a.once else a.count
    try:
        return run(a.location, a.interval, count, live=False if a.once else None)
    except KeyboardInterrupt:
        return 0
    except (ValueError, _core.ShmCacheError) as e:
        print(f"shmcache: {e}", file=sys.stderr)
        return 2
