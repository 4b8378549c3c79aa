"""``python -m shmcache listen LOCATION --l2 URL [--prefix P] ...``: a
tiered cache's invalidation listener as a sidecar process (docs/tiered.md),
for hosts whose workers are too busy to run it. It waits while another
process holds the election and takes over within TRY_EVERY seconds of that
process's death."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from .._core import ShmCacheError
from .client import TieredClient
from .listener import TRY_EVERY, lock_path, log, try_lock


def _l2_arg(value: str) -> object:
    """A Redis URL, or a JSON object: the same forms as OPTIONS L2."""
    if not value.lstrip().startswith("{"):
        return value
    try:
        return json.loads(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--l2 is not valid JSON: {e}") from None


def main(argv: list[str]) -> int:
    """Run the listener of LOCATION's L1 in the foreground until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="shmcache listen", description=__doc__)
    p.add_argument("location", help="the TieredCache's LOCATION")
    p.add_argument("--l2", required=True, type=_l2_arg,
                   help="OPTIONS L2: a Redis URL, or its dict form as JSON (LOCATION/OPTIONS, or SENTINELS/SERVICE/...)")
    p.add_argument("--prefix", default="", help="the KEY_PREFIX (default '')")
    p.add_argument("--max-staleness", type=float, default=1.0, help="seconds (OPTIONS MAX_STALENESS; default 1.0)")
    p.add_argument("--size", default="64MB", help="SIZE, if this process creates the L1 segment (default 64MB)")
    p.add_argument("--max-item-size", default="1MB", help="MAX_ITEM_SIZE, likewise (default 1MB)")
    p.add_argument("--shards", type=int, default=0, help="SHARDS, likewise (default auto)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        client = TieredClient(
            a.location, a.l2, key_prefix=a.prefix, max_staleness=a.max_staleness,
            size=a.size, max_item_size=a.max_item_size, shards=a.shards,
        )  # fmt: skip
    except (ValueError, OSError, ShmCacheError) as e:
        print(f"shmcache listen: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    path = lock_path(client.segment)
    waiting = False
    while not stop.is_set():
        fd = try_lock(path)
        if fd is None:
            if not waiting:
                log.info("shmcache listen: another process is the listener of %s; waiting to take over", client.name)
                waiting = True
            stop.wait(TRY_EVERY)
            continue
        try:
            log.info("shmcache listen: listening for %s (pid %d)", client.name, os.getpid())
            client.make_listener(stop).run()
        finally:
            os.close(fd)
    return 0
