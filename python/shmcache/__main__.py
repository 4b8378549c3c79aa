"""Command line: ``python -m shmcache {list,stats,verify,clear,destroy,top} [LOCATION]``,
``python -m shmcache dump LOCATION FILE`` and ``load LOCATION FILE [--size SIZE]``.

stats/verify/clear attach to an existing cache whatever its SIZE; destroy
removes its segment from /dev/shm (processes still attached keep their
mapping until they exit; new ones start a fresh, empty cache). dump writes
a snapshot of the cache to FILE (beside it, then renamed into place); load
checks all of FILE, then stores its items (creating the cache with --size if
it does not exist).

resize LOCATION SIZE [--max-item-size N] [--shards N] migrates a live cache
to a new geometry now: its hot items are copied into a new segment, which
takes the name; running processes follow it within a second and keep it
(docs/architecture.md, "Geometry changes").

stats --format prometheus prints the Prometheus text format (shmcache.metrics);
top LOCATION [--interval S] [--once | --count N] is a live view (shmcache.top).
listen LOCATION --l2 URL [--prefix P] runs a TieredCache's invalidation
listener in the foreground (a sidecar; docs/tiered.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import _core, destroy
from ._options import DEFAULT_MAX_ITEM_SIZE, parse_size

SHM = "/dev/shm"


def _list() -> int:
    prefix = f"shmcache-{os.geteuid()}-"
    rows = []
    for name in sorted(os.listdir(SHM)):
        if name.startswith(prefix):
            st = os.stat(os.path.join(SHM, name))
            rows.append(f"{st.st_size:>14,}  {name}")
    print("\n".join(rows) if rows else "no shmcache segments for this user")
    return 0


def dump(location: str, file: str) -> int:
    """``dump LOCATION FILE``: a snapshot of the cache into FILE."""
    r = _core.Cache.attach_existing(location).dump(file)
    print(f"dumped {r['records']} items ({r['bytes']} bytes) to {file} ({r['file_bytes']} bytes)")
    return 0


def load(location: str, file: str, size: str | None = None) -> int:
    """``load LOCATION FILE [--size SIZE]``: the snapshot FILE into the cache
    (created with SIZE if it does not exist; without --size it must exist)."""
    if size is not None:
        c = _core.Cache(location, parse_size(size, "--size"), DEFAULT_MAX_ITEM_SIZE, 0, 1.0)
    elif not os.path.exists(SHM + _core.segment_name(location)):
        print(f"shmcache: no cache {location!r} exists; give --size SIZE to create it", file=sys.stderr)
        return 2
    else:
        c = _core.Cache.attach_existing(location)
    r = c.load(file)
    print(
        f"loaded {r['loaded']} of {r['records']} items ({r['bytes']} bytes) from {file}; "
        f"skipped {r['expired']} expired, {r['dropped']} that did not fit, {r['too_large']} over MAX_ITEM_SIZE"
    )
    return 0


def resize(location: str, size: str, max_item_size: str | None = None, shards: int | None = None) -> int:
    """``resize LOCATION SIZE``: migrate the live cache to SIZE (and MAX_ITEM_SIZE/SHARDS)."""
    c = _core.Cache.attach_existing(location)
    _, cur_max, _ = c.geometry
    new_size = parse_size(size, "SIZE")
    new_max = parse_size(max_item_size, "--max-item-size") if max_item_size is not None else cur_max
    r = _core.resize(location, new_size, new_max, shards or 0, 1.0)
    total, max_item, nshards = _core.Cache.attach_existing(location).geometry
    print(
        f"resized {location!r} to SIZE={total} MAX_ITEM_SIZE={max_item} SHARDS={nshards}: "
        f"copied {r['items']} items ({r['bytes']} bytes), left out {r['dropped']}; "
        f"writers paused {r['pause_ms']} ms"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["top"]:  # its own options: shmcache.top
        from .top import main as top_main

        return top_main(args[1:])
    if args[:1] == ["listen"]:  # its own options: shmcache.tiered.sidecar
        from .tiered.sidecar import main as listen_main

        return listen_main(args[1:])
    p = argparse.ArgumentParser(prog="shmcache", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["list", "stats", "verify", "clear", "destroy", "dump", "load", "resize"])
    p.add_argument("location", nargs="?", help="the cache's LOCATION (Django) or name (shmcache.Cache)")
    p.add_argument("file", nargs="?", help="dump/load: the snapshot file; resize: the new SIZE (e.g. 512MB)")
    p.add_argument("--max-item-size", help="resize: the new MAX_ITEM_SIZE (default: the current one)")
    p.add_argument("--shards", type=int, help="resize: the new SHARDS (default: chosen from SIZE)")
    p.add_argument("--size", help="load: the SIZE to create the cache with if it does not exist (e.g. 256MB)")
    p.add_argument(
        "--format", choices=["json", "prometheus"], default="json", help="stats: output format (default json)"
    )
    a = p.parse_args(argv)
    if a.command == "list":
        return _list()
    if not a.location:
        p.error(f"{a.command} needs a LOCATION")
    if a.command in ("dump", "load") and not a.file:
        p.error(f"{a.command} needs a LOCATION and a FILE")
    if a.command == "resize" and not a.file:
        p.error("resize needs a LOCATION and a SIZE")
    try:
        if a.command == "resize":
            return resize(a.location, a.file, a.max_item_size, a.shards)
        if a.command == "dump":
            return dump(a.location, a.file)
        if a.command == "load":
            return load(a.location, a.file, a.size)
        if a.command == "destroy":
            ok = destroy(a.location)
            print(f"removed {_core.segment_name(a.location)}" if ok else f"no segment for {a.location!r}")
            return 0 if ok else 1
        c = _core.Cache.attach_existing(a.location)
        if a.command == "stats":
            if a.format == "prometheus":
                from .metrics import prometheus_text

                print(prometheus_text({a.location: c.stats()}), end="")
            else:
                print(json.dumps(c.stats(), indent=2))
        elif a.command == "verify":
            items, nbytes = c.verify()
            print(f"ok: {items} items, {nbytes} bytes, every shard consistent")
        elif a.command == "clear":
            c.clear()
            print(f"cleared {c.segment}")
    except (ValueError, OSError, _core.ShmCacheError) as e:
        print(f"shmcache: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
