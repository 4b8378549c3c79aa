"""Prometheus metrics of shmcache caches.

Two ways out, the same names and labels:

- ``prometheus_text({location: stats})``: the text exposition format (what
  ``python -m shmcache stats NAME --format prometheus`` prints, for a
  node_exporter textfile collector or a one-off look); needs nothing else.
- ``ShmCacheCollector`` / ``register()`` / ``register_django()``: a
  ``prometheus_client`` collector for a ``/metrics`` endpoint (needs the
  ``prometheus_client`` package, which shmcache does not require).

Every sample has the labels ``location`` (the LOCATION or name) and
``segment`` (the file in /dev/shm). Counters (``*_total``) are the core's
and count since the segment was created, for every process of the host
together: scrape one process per host, not every worker (the numbers would
be the same, counted once per worker). ``shmcache_up`` is 0 for a LOCATION
that has no segment (yet), with no other samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from . import _core

# stats() key, metric name (without the prefix and _total), kind, help
METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("items", "items", "gauge", "Live items."),
    ("bytes_used", "memory_used_bytes", "gauge", "Bytes of item storage holding live items."),
    ("bytes_free", "memory_free_bytes", "gauge", "Bytes of item storage not holding live items."),
    ("bytes_capacity", "memory_capacity_bytes", "gauge", "Bytes of item storage (all shards)."),
    ("segment_size", "segment_size_bytes", "gauge", "Size of the shared memory segment (SIZE)."),
    ("max_item_size", "max_item_size_bytes", "gauge", "Largest key plus value stored (MAX_ITEM_SIZE)."),
    ("shards", "shards", "gauge", "Shards (SHARDS, or the automatic count)."),
    ("hits", "hits", "counter", "Gets that found a live item."),
    ("misses", "misses", "counter", "Gets that found no live item."),
    ("sets", "sets", "counter", "Items stored."),
    ("evictions", "evictions", "counter", "Live items dropped to make room."),
    ("expirations", "expirations", "counter", "Items dropped because their timeout had passed."),
    ("lock_timeouts", "lock_timeouts", "counter", "Shard lock waits that gave up after LOCK_TIMEOUT."),
    ("lock_recoveries", "lock_recoveries", "counter", "Shard locks taken over from a dead holder."),
    ("shard_wipes", "shard_wipes", "counter", "Shards found damaged and wiped."),
    # A TieredCache's L1 (only for a segment used as one): host-wide.
    ("tier_l2_hits", "tier_l2_hits", "counter", "L1 misses answered by L2 (found)."),
    ("tier_l2_misses", "tier_l2_misses", "counter", "L1 misses L2 did not hold either."),
    ("tier_fills", "tier_fills", "counter", "L1 fills stored."),
    ("tier_fills_rejected", "tier_fills_rejected", "counter", "L1 fills dropped by their fill token (an invalidation came first)."),
    ("tier_invalidations", "tier_invalidations", "counter", "Keys invalidated in L1."),
    ("tier_flushes", "tier_flushes", "counter", "L1 flushes (reconnects, FLUSHDB, clear)."),
    ("tier_not_live_reads", "tier_not_live_reads", "counter", "Reads that bypassed L1 because it was not live."),
    ("tier_not_live_ms", "tier_not_live_ms", "counter", "Milliseconds L1 was not live (the listener's watermark past MAX_STALENESS)."),
    ("tier_listener_starts", "tier_listener_starts", "counter", "Listener elections won."),
    ("tier_failovers", "tier_failovers", "counter", "Changes of L2's primary the listener followed (Sentinel failovers)."),
    ("tier_l2_primary", "tier_l2_primary", "info", "L2's address the listener last reached (label primary)."),
)
PREFIX = "shmcache_"
LABELS = ("location", "segment")
UP = ("up", "1 if the cache's segment exists and was read, else 0.")


def read_stats(location: str) -> dict[str, Any] | None:
    """``stats()`` of the segment of ``location`` whatever its SIZE (with
    the tier's counters, ``tier_*``, for a TieredCache's L1), or None if it
    has none or it cannot be read (a scrape must not fail for one cache).
    Attaches for the call; no segment is created. An invalid LOCATION is a
    ValueError."""
    _core.segment_name(location)  # ValueError naming LOCATION if it is not one
    try:
        return _with_tier(_core.Cache.attach_existing(location))
    except (ValueError, _core.ShmCacheError):
        return None


def _with_tier(core: _core.Cache) -> dict[str, Any]:
    """`core`'s stats, and the tier's (host-wide counters, and the
    listener's state: L2's address, failovers) if it is a tiered L1."""
    from .tiered.listener import read_state, state_path

    s = dict(core.stats())
    tier, state = core.tier_stats(), read_state(state_path(core.segment))
    if state or core.listener_pid or any(tier.values()):
        s.update({f"tier_{k}": v for k, v in tier.items()})
        s["tier_failovers"] = int(state.get("failovers", 0))
        if state.get("primary"):
            s["tier_l2_primary"] = str(state["primary"])
    return s


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(stats: Mapping[str, Mapping[str, Any] | None]) -> str:
    """The text exposition format (version 0.0.4) for ``{location: stats()
    or None}``: one ``# HELP``/``# TYPE`` per metric, one sample per cache."""
    out: list[str] = []

    def family(name: str, kind: str, help: str, key: str | None) -> None:
        out.append(f"# HELP {PREFIX}{name} {help}")
        out.append(f"# TYPE {PREFIX}{name} {'gauge' if kind == 'info' else kind}")
        sample = f"{PREFIX}{name}_total" if kind == "counter" else f"{PREFIX}{name}"
        for loc, s in stats.items():
            seg = s.get("segment", _core.segment_name(loc)) if s else _core.segment_name(loc)
            labels = f'location="{_escape(loc)}",segment="{_escape(seg)}"'
            if key is None:
                out.append(f"{sample}{{{labels}}} {1 if s else 0}")
            elif s and key in s and kind == "info":
                out.append(f'{sample}{{{labels},primary="{_escape(str(s[key]))}"}} 1')
            elif s and key in s:
                out.append(f"{sample}{{{labels}}} {int(s[key])}")

    family(UP[0], "gauge", UP[1], None)
    for key, name, kind, help in METRICS:
        family(name + "_info" if kind == "info" else name, kind, help, key)
    return "\n".join(out) + "\n"


def _location_and_stats(source: Any) -> tuple[str, dict[str, Any] | None]:
    """A LOCATION string, a ``shmcache.Cache`` or a Django
    ``SharedMemoryCache``: its location and current stats (None: no segment)."""
    if isinstance(source, str):
        return source, read_stats(source)
    inner = getattr(source, "_cache", source)  # the Django backend wraps a client
    name, core = getattr(inner, "name", None), getattr(inner, "_core", None)
    if not isinstance(name, str) or core is None:
        raise TypeError(
            f"not a shmcache cache or LOCATION: {source!r}; give LOCATION strings, shmcache.Cache objects "
            "or django caches of shmcache.django.SharedMemoryCache"
        )
    return name, _with_tier(core)


def _prometheus_client() -> Any:
    try:
        import prometheus_client.core
    except ImportError as e:
        raise ImportError(
            "shmcache.metrics.ShmCacheCollector needs the prometheus_client package (pip install prometheus_client); "
            "without it, use `python -m shmcache stats NAME --format prometheus`"
        ) from e
    return prometheus_client.core


class ShmCacheCollector:
    """A ``prometheus_client`` custom collector for some caches: LOCATION
    strings (attached afresh at each scrape, so a recreated segment is seen;
    nothing is created), ``shmcache.Cache`` objects or Django caches of this
    backend. ``register(registry)`` or ``prometheus_client.REGISTRY.register``."""

    def __init__(self, caches: Iterable[Any]) -> None:
        self._core = _prometheus_client()
        self.caches = list(caches)
        if not self.caches:
            raise ValueError("ShmCacheCollector needs at least one cache or LOCATION")

    def describe(self) -> list[Any]:
        # Without samples: registering must not read (or need) the segments.
        return list(self._families({}))

    def collect(self) -> Iterator[Any]:
        return self._families(dict(_location_and_stats(c) for c in self.caches))

    def _families(self, stats: Mapping[str, Mapping[str, Any] | None]) -> Iterator[Any]:
        pc = self._core

        def samples(fam: Any, key: str | None) -> Any:
            for loc, s in stats.items():
                seg = s.get("segment", "") if s else _core.segment_name(loc)
                if key is None:
                    fam.add_metric([loc, seg], 1 if s else 0)
                elif s and key in s:
                    fam.add_metric([loc, seg], int(s[key]))
            return fam

        yield samples(pc.GaugeMetricFamily(PREFIX + UP[0], UP[1], labels=LABELS), None)
        for key, name, kind, help in METRICS:
            if kind == "info":  # the value is a label: primary="host:port"
                fam = pc.GaugeMetricFamily(PREFIX + name + "_info", help, labels=[*LABELS, "primary"])
                for loc, s in stats.items():
                    if s and key in s:
                        fam.add_metric([loc, s.get("segment", ""), str(s[key])], 1)
                yield fam
                continue
            # prometheus_client adds _total to a counter's samples itself.
            family = pc.CounterMetricFamily if kind == "counter" else pc.GaugeMetricFamily
            yield samples(family(PREFIX + name, help, labels=LABELS), key)


def register(caches: Iterable[Any], registry: Any = None) -> ShmCacheCollector:
    """Register a collector for ``caches`` (see `ShmCacheCollector`) with
    ``registry`` (default: ``prometheus_client.REGISTRY``) and return it."""
    collector = ShmCacheCollector(caches)
    if registry is None:
        registry = _prometheus_client().REGISTRY
    registry.register(collector)
    return collector


def django_locations(aliases: Iterable[str] | None = None) -> dict[str, str]:
    """``{alias: LOCATION}`` of the shmcache aliases in ``settings.CACHES``
    (``aliases``: only those; one of another backend is a ValueError)."""
    from django.conf import settings

    from .checks import shmcache_aliases

    ours = {a: c.get("LOCATION", "") for a, c in shmcache_aliases().items()}
    if aliases is None:
        return ours
    out = {}
    for a in aliases:
        if a not in ours:
            raise ValueError(f"CACHES[{a!r}] is {'not a shmcache backend' if a in settings.CACHES else 'not defined'}")
        out[a] = ours[a]
    return out


def register_django(aliases: Iterable[str] | None = None, registry: Any = None) -> ShmCacheCollector:
    """Register a collector for every shmcache alias of ``settings.CACHES``
    (or ``aliases``), by LOCATION (no cache is opened: a scrape before the
    first request reports ``shmcache_up 0``). Aliases sharing a LOCATION
    are one cache, reported once. Call it once, e.g. in an AppConfig.ready()."""
    locations = sorted(set(django_locations(aliases).values()))
    if not locations:
        raise ValueError("no CACHES alias uses shmcache.django.SharedMemoryCache")
    return register(locations, registry)
