"""How long an asyncio event loop is held (tests, bench): a ticker task that
sleeps a little, over and over, and records the gaps between its wake-ups;
and a call awaited while a process (a redis-server) is SIGSTOPped."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any


class Ticker:
    """``async with Ticker() as t: ...``, then ``t.max_gap`` (seconds) and
    ``len(t.gaps)``: a gap much longer than `every` means the loop was held."""

    def __init__(self, every: float = 0.002) -> None:
        self.every = every
        self.gaps: list[float] = []
        self._done = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while not self._done.is_set():
            await asyncio.sleep(self.every)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(self.every * 5)  # running before the block starts
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._done.set()
        assert self._task is not None
        await self._task

    @property
    def max_gap(self) -> float:
        return max(self.gaps)


async def while_stopped(pid: int, seconds: float, call: Callable[[], Awaitable[Any]], every: float = 0.002) -> tuple:
    """Await `call()` with process `pid` SIGSTOPped, and SIGCONTed from
    another thread after `seconds`, while a Ticker runs on this loop:
    (its result, the ticker's longest gap, the call's duration), all in
    seconds. The process runs again before this returns."""
    async with Ticker(every) as t:
        os.kill(pid, signal.SIGSTOP)
        resume = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
        resume.start()
        t0 = time.monotonic()
        try:
            result = await call()
        finally:
            took = time.monotonic() - t0
    await asyncio.to_thread(resume.join)
    return result, t.max_gap, took
