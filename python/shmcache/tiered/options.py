"""A TieredCache's options, checked before anything is opened (the backend,
`TieredClient` and the system checks all use them; nothing here needs
redis-py): L2, MAX_STALENESS, L1_MAX_TIMEOUT, L1_EXCLUDE, and the L1
segment's LOCATION (one per LOCATION and KEY_PREFIX)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, NamedTuple

from .._options import (
    DJANGO_OPTIONS,
    DJANGO_REDIS_ONLY_OPTIONS,
    IGNORED_DJANGO_OPTIONS,
    Settings,
    check_location,
)

TIER_OPTIONS = ("L2", "MAX_STALENESS", "L1_MAX_TIMEOUT", "L1_EXCLUDE")
_L2_SCHEMES = ("redis://", "rediss://", "unix://")
# Options of Django's RedisCache that change what is stored or where: values
# must stay in RedisCache's own format, and reads must go to the primary.
_L2_REFUSED = ("serializer", "pool_class", "parser_class")

DEFAULT_MAX_STALENESS = 1.0
DEFAULT_L1_MAX_TIMEOUT = 300.0


def parse_l2(value: object, option: str = "L2") -> tuple[str, dict]:
    """(url, connection options) from a Redis URL or a dict like Django's
    RedisCache settings ({"LOCATION": url, "OPTIONS": {...}})."""
    opts: dict = {}
    if isinstance(value, Mapping):
        unknown = set(value) - {"LOCATION", "OPTIONS"}
        if unknown:
            raise ValueError(f"invalid {option}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; give LOCATION and OPTIONS")
        loc = value.get("LOCATION")
        if isinstance(loc, (list, tuple)):
            if len(loc) != 1:
                raise ValueError(
                    f"invalid {option} LOCATION: {loc!r}; give one Redis server (read replicas would break the "
                    "staleness bound, and Redis Cluster is not supported)"
                )
            loc = loc[0]
        opts = dict(value.get("OPTIONS") or {})
        refused = sorted(set(opts) & set(_L2_REFUSED))
        if refused:
            raise ValueError(
                f"invalid {option} OPTIONS: {', '.join(refused)} not supported (L2 keeps RedisCache's own format)"
            )
        value = loc
    if not isinstance(value, str) or not value.startswith(_L2_SCHEMES):
        raise ValueError(
            f"invalid {option}: {value!r}; give a Redis URL (redis://host:port/db, rediss://..., unix:///path) "
            "or a dict with LOCATION and OPTIONS"
        )
    return value, opts


def parse_max_staleness(value: object, option: str = "MAX_STALENESS") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.01 <= value <= 3600):
        raise ValueError(f"invalid {option}: {value!r}; give seconds, at least 0.01 and at most 3600")
    return float(value)


def parse_l1_max_timeout(value: object, option: str = "L1_MAX_TIMEOUT") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < 1e9):
        raise ValueError(f"invalid {option}: {value!r}; give seconds (more than 0) or None for L2's own expiry")
    return float(value)


def parse_l1_exclude(value: object, option: str = "L1_EXCLUDE") -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) and p for p in value):
        raise ValueError(f"invalid {option}: {value!r}; give a list of key prefixes (made keys, e.g. 'site:1:ratelimit:')")
    return tuple(value)


def l1_location(location: str, key_prefix: str) -> str:
    """The L1 segment's LOCATION: LOCATION itself, or ``LOCATION#KEY_PREFIX``
    (one segment, and one listener, per tracked prefix)."""
    if not key_prefix:
        return location
    tail = key_prefix if len(key_prefix.encode("utf-8", "surrogatepass")) <= 64 else hashlib.sha1(key_prefix.encode("utf-8", "surrogatepass")).hexdigest()
    return check_location(f"{location}#{tail}")


def parse_django(location: object, options: Mapping[str, Any], key_prefix: object = "") -> tuple[str, Settings, TierOptions]:
    """Every option of a TieredCache CACHES entry checked, nothing opened:
    (the L1 segment's LOCATION, its Settings, the tier's parsed options).
    The backend and the system checks (`shmcache.checks`) both use it."""
    if "L2" not in options:
        raise ValueError("OPTIONS L2 missing: give the Redis URL of the shared tier, e.g. 'redis://10.0.0.5:6379/0'")
    redis_opts = sorted(set(options) & DJANGO_REDIS_ONLY_OPTIONS)
    if redis_opts:
        raise ValueError(
            f"OPTIONS {', '.join(redis_opts)}: django-redis option(s); TieredCache takes Redis connection options "
            "as redis-py's, in L2's OPTIONS: 'L2': {'LOCATION': url, 'OPTIONS': {'socket_timeout': 1, ...}}"
        )
    unknown = set(options) - DJANGO_OPTIONS - IGNORED_DJANGO_OPTIONS - set(TIER_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown OPTIONS for TieredCache: {', '.join(sorted(map(str, unknown)))}; known: "
            f"{', '.join(sorted([*DJANGO_OPTIONS, *TIER_OPTIONS]))} (Redis connection options go in L2's OPTIONS)"
        )
    tier = parse_tier(
        options["L2"],
        key_prefix,
        options.get("MAX_STALENESS", DEFAULT_MAX_STALENESS),
        options.get("L1_MAX_TIMEOUT", DEFAULT_L1_MAX_TIMEOUT),
        options.get("L1_EXCLUDE", ()),
        django=True,
    )
    settings = Settings.from_django({k: v for k, v in options.items() if k not in TIER_OPTIONS})
    return l1_location(check_location(location), key_prefix), settings, tier


class TierOptions(NamedTuple):
    """The tier's own options, checked."""

    url: str  # L2's Redis URL
    l2_options: dict  # redis-py connection-pool arguments
    key_prefix: str  # the tracking PREFIX (Django's KEY_PREFIX)
    max_staleness: float
    l1_max_timeout: float | None
    l1_exclude: tuple[str, ...]


def parse_tier(
    l2: object,
    key_prefix: object,
    max_staleness: object,
    l1_max_timeout: object,
    l1_exclude: object,
    django: bool = False,
) -> TierOptions:
    """The tier's options checked, each error naming the option as the user
    wrote it (Django's OPTIONS, or `TieredClient`'s arguments)."""
    names = (*TIER_OPTIONS, "KEY_PREFIX") if django else ("l2", "max_staleness", "l1_max_timeout", "l1_exclude", "key_prefix")
    if not isinstance(key_prefix, str):
        raise ValueError(f"invalid {names[4]}: {key_prefix!r}; give a str")
    url, l2_options = parse_l2(l2, names[0])
    return TierOptions(
        url,
        l2_options,
        key_prefix,
        parse_max_staleness(max_staleness, names[1]),
        parse_l1_max_timeout(l1_max_timeout, names[2]),
        parse_l1_exclude(l1_exclude, names[3]),
    )
