"""Command line: ``python -m shmcache {list,stats,verify,clear,destroy,top} [LOCATION]``.

stats/verify/clear attach to an existing cache whatever its SIZE; destroy
removes its segment from /dev/shm (processes still attached keep their
mapping until they exit; new ones start a fresh, empty cache).

stats --format prometheus prints the Prometheus text format (shmcache.metrics);
top LOCATION [--interval S] [--once | --count N] is a live view (shmcache.top).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import _core, destroy

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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["top"]:  # its own options: shmcache.top
        from .top import main as top_main

        return top_main(args[1:])
    p = argparse.ArgumentParser(prog="shmcache", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["list", "stats", "verify", "clear", "destroy"])
    p.add_argument("location", nargs="?", help="the cache's LOCATION (Django) or name (shmcache.Cache)")
    p.add_argument(
        "--format", choices=["json", "prometheus"], default="json", help="stats: output format (default json)"
    )
    a = p.parse_args(argv)
    if a.command == "list":
        return _list()
    if not a.location:
        p.error(f"{a.command} needs a LOCATION")
    try:
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
    except (ValueError, _core.ShmCacheError) as e:
        print(f"shmcache: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
