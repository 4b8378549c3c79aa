"""Django system checks of the shmcache aliases in ``settings.CACHES``
(registered by ``"shmcache"`` in INSTALLED_APPS; run by ``manage.py check``
and before ``runserver``/``migrate``).

They parse each alias with ``Settings.from_django``, the parser the backend
uses, and look at /dev/shm with ``stat``/``statvfs`` only: no cache is
opened, no segment attached to or created.

=============  ===========================================================
shmcache.E001  an option error (a bad value, an unknown or django-redis
               option, a bad LOCATION): the backend's own message
shmcache.E002  SIZE needs more than the free space of /dev/shm
shmcache.E003  aliases with one LOCATION but different SIZE, MAX_ITEM_SIZE
               or SHARDS
shmcache.W001  MAX_ENTRIES / CULL_FREQUENCY set: ignored (eviction is
               automatic)
shmcache.W002  LOCK_TIMEOUT above 0.25 s: a wait that long stalls an async
               event loop
shmcache.W003  every alias fits /dev/shm alone, but not all together
shmcache.W004  the free space of /dev/shm cannot be read
=============  ===========================================================
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from django.core import checks

from . import _core
from ._options import IGNORED_DJANGO_OPTIONS, Settings, check_location

BACKEND = "shmcache.django.SharedMemoryCache"
SHM = "/dev/shm"
# The longest lock wait that does not stall an event loop noticeably: the
# async methods wait on the lock in the loop's thread (they take microseconds
# when the lock is free, so they do not hop to a thread pool).
ASYNC_LOCK_TIMEOUT = 0.25


def _backend_is(path: object, name: str) -> bool:
    """`path` names shmcache.django's class `name`, or an importable subclass."""
    if path == f"shmcache.django.{name}":
        return True
    if not isinstance(path, str) or "." not in path:
        return False
    try:
        from django.utils.module_loading import import_string

        from . import django as faces

        cls = import_string(path)
    except Exception:
        return False
    return isinstance(cls, type) and issubclass(cls, getattr(faces, name))


def is_shmcache_backend(path: object) -> bool:
    """A BACKEND of this package's Django backend, or of an importable subclass."""
    return _backend_is(path, "SharedMemoryCache")


def is_tiered_backend(path: object) -> bool:
    """A BACKEND of TieredCache (or a subclass): its OPTIONS hold L2 & co."""
    return _backend_is(path, "TieredCache")


def shmcache_aliases(caches: Mapping[str, Any] | None = None) -> dict[str, Mapping[str, Any]]:
    """``{alias: CACHES entry}`` of the aliases using shmcache's backend."""
    if caches is None:
        from django.conf import settings

        caches = settings.CACHES
    return {a: c for a, c in caches.items() if isinstance(c, Mapping) and is_shmcache_backend(c.get("BACKEND"))}


def _mib(n: int) -> str:
    return f"{n:,} bytes ({n / 1024**2:,.1f} MiB)"


def _existing_size(location: str) -> int | None:
    try:
        return os.stat(SHM + _core.segment_name(location)).st_size
    except OSError:
        return None


def _free_bytes() -> int:
    st = os.statvfs(SHM)
    return st.f_bavail * st.f_frsize


def check_caches(caches: Mapping[str, Any]) -> list[checks.CheckMessage]:
    """The checks on a CACHES mapping (`check_shmcache` runs them on settings)."""
    out: list[checks.CheckMessage] = []
    parsed: dict[str, tuple[str, Settings]] = {}
    for alias, conf in shmcache_aliases(caches).items():
        obj = f"CACHES[{alias!r}]"
        options = conf.get("OPTIONS") or {}
        try:
            if not isinstance(options, Mapping):
                raise ValueError(f"invalid OPTIONS: {options!r}; give a dict")
            if is_tiered_backend(conf.get("BACKEND")):
                # The L1 segment is LOCATION#KEY_PREFIX; the tier's options are checked too.
                from .tiered import parse_django

                location, s, _ = parse_django(conf.get("LOCATION", ""), options, conf.get("KEY_PREFIX", ""))
            else:
                location = check_location(conf.get("LOCATION", ""))
                s = Settings.from_django(options)
        except ValueError as e:
            out.append(checks.Error(str(e), hint="Change this alias's setting in CACHES.", obj=obj, id="shmcache.E001"))
            continue
        parsed[alias] = (location, s)
        ignored = sorted(set(options) & IGNORED_DJANGO_OPTIONS)
        if ignored:
            out.append(
                checks.Warning(
                    f"OPTIONS {', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} ignored by shmcache: "
                    "eviction is automatic (the least recently used items go when SIZE is full)",
                    hint=f"Remove {', '.join(ignored)}; set SIZE to bound the memory.",
                    obj=obj,
                    id="shmcache.W001",
                )
            )
        if s.lock_timeout > ASYNC_LOCK_TIMEOUT:
            out.append(
                checks.Warning(
                    f"LOCK_TIMEOUT {s.lock_timeout:g} s: the async methods (aget, aset, ...) wait for a shard lock "
                    "in the event loop's thread, so a wait this long stalls every other task of the loop",
                    hint=f"Use a LOCK_TIMEOUT of at most {ASYNC_LOCK_TIMEOUT} s (the default is 0.1) unless "
                    "nothing async uses this alias.",
                    obj=obj,
                    id="shmcache.W002",
                )
            )

    by_location: dict[str, list[tuple[str, Settings]]] = {}
    for alias, (location, s) in parsed.items():
        by_location.setdefault(location, []).append((alias, s))
    for location, group in by_location.items():
        geos = {(s.size, s.max_item_size, s.shards) for _, s in group}
        if len(geos) > 1:
            desc = "; ".join(
                f"{a!r}: SIZE {s.size}, MAX_ITEM_SIZE {s.max_item_size}, SHARDS {s.shards}" for a, s in group
            )
            out.append(
                checks.Error(
                    f"aliases {', '.join(repr(a) for a, _ in group)} share LOCATION {location!r} (one cache) "
                    f"but not its geometry: {desc}",
                    hint="Give them the same SIZE, MAX_ITEM_SIZE and SHARDS, or different LOCATIONs.",
                    obj=f"CACHES[{group[0][0]!r}]",
                    id="shmcache.E003",
                )
            )

    if not by_location:
        return out
    try:
        free = _free_bytes()
    except OSError as e:
        out.append(
            checks.Warning(
                f"cannot read the free space of {SHM}: {e}",
                hint="shmcache keeps its caches in /dev/shm (Linux); check that it is mounted.",
                id="shmcache.W004",
            )
        )
        return out
    needs: dict[str, tuple[str, int]] = {}
    for location, group in by_location.items():
        alias, s = max(group, key=lambda g: g[1].size)
        # A segment that exists with this size has its pages reserved already
        # (the core fallocates them): it needs no new space.
        need = 0 if _existing_size(location) == s.size else s.size
        needs[location] = (alias, need)
        if need > free:
            out.append(
                checks.Error(
                    f"SIZE {_mib(s.size)} of LOCATION {location!r} is more than the free space of {SHM}: "
                    f"{_mib(free)} free; creating the cache would fail",
                    hint=f"Lower SIZE in CACHES[{alias!r}]['OPTIONS'], or free or enlarge {SHM} "
                    "(mount -o remount,size=... /dev/shm; in Docker, --shm-size).",
                    obj=f"CACHES[{alias!r}]",
                    id="shmcache.E002",
                )
            )
    total = sum(n for _, n in needs.values())
    if total > free and all(n <= free for _, n in needs.values()):
        out.append(
            checks.Warning(
                f"the new caches' SIZEs add up to {_mib(total)}, more than the free space of {SHM}: {_mib(free)}; "
                "the last ones created would fail",
                hint="Lower SIZE of some aliases, or free or enlarge /dev/shm.",
                id="shmcache.W003",
            )
        )
    return out


@checks.register(checks.Tags.caches)
def check_shmcache(app_configs: Iterable[Any] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.conf import settings

    caches = getattr(settings, "CACHES", {})
    if not isinstance(caches, Mapping):
        return []
    return check_caches(caches)

