"""A TieredCache's options, checked before anything is opened (the backend,
`TieredClient` and the system checks all use them; nothing here needs
redis-py): L2, MAX_STALENESS, L1_MAX_TIMEOUT, L1_EXCLUDE, and the L1
segment's LOCATION (one per LOCATION and KEY_PREFIX)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
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
_CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://", "redis-cluster://")
# Options of Django's RedisCache that change what is stored or where: values
# must stay in RedisCache's own format, and reads must go to the primary.
_L2_REFUSED = ("serializer", "pool_class", "parser_class")

DEFAULT_MAX_STALENESS = 1.0
DEFAULT_L1_MAX_TIMEOUT = 300.0


@dataclass(frozen=True)
class L2Spec:
    """Where L2 is: a Redis URL, or a primary found through sentinels
    (SERVICE, DB); `options` are redis-py's connection arguments for the
    server (password, ssl_*, timeouts), `sentinel_options` those for the
    sentinels."""

    url: str | None
    options: dict
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    sentinel_options: dict = field(default_factory=dict)

    def describe(self) -> str:
        """For logs and errors (no password)."""
        if self.sentinels:
            return f"sentinel service {self.service!r} (db {self.db}) via " + ", ".join(f"{h}:{p}" for h, p in self.sentinels)
        return _without_password(self.url or "")


def _without_password(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


_URL_KEYS = {"LOCATION", "OPTIONS"}
_SENTINEL_KEYS = {"SENTINELS", "SERVICE", "DB", "OPTIONS", "SENTINEL_OPTIONS"}


def _check_options(opts: object, option: str) -> dict:
    if opts is None:
        return {}
    if not isinstance(opts, Mapping) or not all(isinstance(k, str) for k in opts):
        raise ValueError(f"invalid {option}: {opts!r}; give a dict of redis-py connection arguments")
    refused = sorted(set(opts) & set(_L2_REFUSED))
    if refused:
        raise ValueError(f"invalid {option}: {', '.join(refused)} not supported (L2 keeps RedisCache's own format)")
    return dict(opts)


def _check_url(value: object, option: str) -> str:
    if isinstance(value, str) and value.startswith(_CLUSTER_SCHEMES):
        raise ValueError(
            f"invalid {option}: {value!r}: Redis Cluster is not supported (docs/tiered.md, 'Redis Cluster'); give one "
            "Redis server, or a primary behind sentinels (SENTINELS, SERVICE)"
        )
    if not isinstance(value, str) or not value.startswith(_L2_SCHEMES):
        raise ValueError(
            f"invalid {option}: {value!r}; give a Redis URL (redis://host:port/db, rediss://..., unix:///path), "
            "a dict with LOCATION and OPTIONS, or one with SENTINELS and SERVICE"
        )
    return value


def _check_sentinels(value: Mapping, option: str) -> L2Spec:
    unknown = set(value) - _SENTINEL_KEYS
    if unknown:
        raise ValueError(
            f"invalid {option}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; a Sentinel L2 takes "
            f"{', '.join(sorted(_SENTINEL_KEYS))}"
        )
    nodes = value.get("SENTINELS")
    if (
        not isinstance(nodes, (list, tuple))
        or not nodes
        or not all(
            isinstance(n, (list, tuple)) and len(n) == 2 and isinstance(n[0], str) and n[0]
            and isinstance(n[1], int) and not isinstance(n[1], bool) and 0 < n[1] < 65536
            for n in nodes
        )
    ):  # fmt: skip
        raise ValueError(
            f"invalid {option} SENTINELS: {nodes!r}; give a list of [host, port] pairs, e.g. "
            "[['10.0.0.7', 26379], ['10.0.0.8', 26379], ['10.0.0.9', 26379]]"
        )
    service = value.get("SERVICE")
    if not isinstance(service, str) or not service:
        raise ValueError(f"invalid {option} SERVICE: {service!r}; give the name the sentinels monitor, e.g. 'mymaster'")
    db = value.get("DB", 0)
    if isinstance(db, bool) or not isinstance(db, int) or db < 0:
        raise ValueError(f"invalid {option} DB: {db!r}; give a database number (0 or more)")
    opts = _check_options(value.get("OPTIONS"), f"{option} OPTIONS")
    if "db" in opts:
        raise ValueError(f"invalid {option} OPTIONS: db; give the database as {option} DB")
    return L2Spec(
        None, opts, tuple((h, p) for h, p in nodes), service, db, _check_options(value.get("SENTINEL_OPTIONS"), f"{option} SENTINEL_OPTIONS")
    )


def parse_l2(value: object, option: str = "L2") -> L2Spec:
    """L2 from a Redis URL, a dict like Django's RedisCache settings
    ({"LOCATION": url, "OPTIONS": {...}}), or a Sentinel dict ({"SENTINELS":
    [[host, port], ...], "SERVICE": name, "DB": 0, "OPTIONS": {...},
    "SENTINEL_OPTIONS": {...}}); each error names the key to change."""
    if not isinstance(value, Mapping):
        return L2Spec(_check_url(value, option), {})
    if "SENTINELS" in value or "SERVICE" in value:
        return _check_sentinels(value, option)
    unknown = set(value) - _URL_KEYS
    if unknown:
        raise ValueError(
            f"invalid {option}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; give LOCATION and OPTIONS "
            "(or SENTINELS, SERVICE, DB, OPTIONS and SENTINEL_OPTIONS for a primary behind sentinels)"
        )
    loc = value.get("LOCATION")
    if isinstance(loc, (list, tuple)):
        if len(loc) != 1:
            raise ValueError(
                f"invalid {option} LOCATION: {loc!r}; give one Redis server (read replicas would break the "
                "staleness bound, and Redis Cluster is not supported: docs/tiered.md, 'Redis Cluster')"
            )
        loc = loc[0]
    return L2Spec(_check_url(loc, option), _check_options(value.get("OPTIONS"), f"{option} OPTIONS"))


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
    (one segment, and one listener, per tracked prefix; a prefix over 64
    bytes is replaced by its SHA-1 in hex)."""
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

    l2: L2Spec  # where L2 is, and how to connect
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
    return TierOptions(
        parse_l2(l2, names[0]),
        key_prefix,
        parse_max_staleness(max_staleness, names[1]),
        parse_l1_max_timeout(l1_max_timeout, names[2]),
        parse_l1_exclude(l1_exclude, names[3]),
    )
