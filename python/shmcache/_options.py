"""Parsing and checking of user options (sizes, timeouts), with errors that
name the option to change.

Every option has two spellings: the keyword of ``shmcache.Cache`` (``size``)
and the Django OPTIONS key (``SIZE``). `Settings` parses either, so each
option is checked once, by one function, and its error names the option the
way the user wrote it.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._codec import parse_compressor, parse_serializer

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip
# Memory sizes people write as "256MB" mean MiB (like memcached's -m and
# Redis' maxmemory "256mb"); say "256MiB" or an int to be exact.
_BINARY = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

DEFAULT_SIZE = 64 * 1024**2
DEFAULT_MAX_ITEM_SIZE = 1024**2
DEFAULT_LOCK_TIMEOUT = 0.1
MAX_LOCATION_BYTES = 200


def parse_size(value: object, option: str) -> int:
    """Bytes from an int or a string like "256MB" (= 256 MiB), "1.5GiB", "512k"."""
    if isinstance(value, bool):
        raise ValueError(f"invalid {option}: {value!r}; give a size such as 268435456 or '256MB'")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _SIZE_RE.match(value)
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS:
            raise ValueError(f"invalid {option}: {value!r}; give a size such as 268435456 or '256MB'")
        n = int(float(m.group(1)) * _BINARY.get(unit, _UNITS[unit]))
    else:
        raise ValueError(f"invalid {option}: {value!r}; give a size such as 268435456 or '256MB'")
    if n <= 0:
        raise ValueError(f"invalid {option}: {value!r}; must be more than 0 bytes")
    if n > 2**40:
        raise ValueError(f"invalid {option}: {value!r}; at most 1 TiB is supported")
    return n


def parse_seconds(value: object, option: str) -> float:
    """A lock wait: more than 0 and at most 60 seconds (NaN and inf fail)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= 60):
        raise ValueError(f"invalid {option}: {value!r}; give seconds, more than 0 and at most 60")
    return float(value)


def parse_int(value: object, option: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (lo <= value <= hi):
        raise ValueError(f"invalid {option}: {value!r}; give an integer from {lo} to {hi}")
    return value


def parse_default_timeout(value: object, option: str) -> float | None:
    """A default expiry: finite seconds, or None for never."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ):
        raise ValueError(f"invalid {option}: {value!r}; give a finite number of seconds or None")
    return value


def check_location(location: object, option: str = "LOCATION") -> str:
    """The name of a cache on the host: at most 200 bytes of UTF-8 (the core
    counts the same bytes), no NUL."""
    if (
        not isinstance(location, str)
        or not location
        or "\0" in location
        or len(location.encode("utf-8", "surrogatepass")) > MAX_LOCATION_BYTES
    ):
        raise ValueError(
            f"invalid {option}: {location!r}; give a non-empty name of at most {MAX_LOCATION_BYTES} bytes "
            "(UTF-8), without NUL, that identifies this cache on the host"
        )
    return location


def _compress_min_length(v: object, option: str) -> int:
    return parse_int(v, option, 0, 2**40)


def _shards(v: object, option: str) -> int:
    return parse_int(v, option, 0, 1024)


def _pickle_protocol(v: object, option: str) -> int:
    return parse_int(v, option, 0, pickle.HIGHEST_PROTOCOL)


def _snapshot(v: object, option: str) -> str | None:
    """A snapshot file to load into a segment this process creates, or None."""
    if v is None:
        return None
    if isinstance(v, (str, os.PathLike)):
        path = os.fspath(v)
        if isinstance(path, str) and path and "\0" not in path:
            return path
    raise ValueError(f"invalid {option}: {v!r}; give the path of a snapshot file (`python -m shmcache dump`) or None")


# keyword, Django OPTIONS key, default, parser
_FIELDS: tuple[tuple[str, str, Any, Callable[[object, str], Any]], ...] = (
    ("size", "SIZE", DEFAULT_SIZE, parse_size),
    ("max_item_size", "MAX_ITEM_SIZE", DEFAULT_MAX_ITEM_SIZE, parse_size),
    ("shards", "SHARDS", 0, _shards),
    ("lock_timeout", "LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT, parse_seconds),
    ("pickle_protocol", "PICKLE_PROTOCOL", pickle.HIGHEST_PROTOCOL, _pickle_protocol),
    ("serializer", "SERIALIZER", "pickle", parse_serializer),
    ("compressor", "COMPRESSOR", None, parse_compressor),
    ("compress_min_length", "COMPRESS_MIN_LENGTH", 1024, _compress_min_length),
    ("snapshot", "SNAPSHOT", None, _snapshot),
)
DJANGO_OPTIONS = frozenset(django for _, django, _, _ in _FIELDS)
# Understood by BaseCache for LocMem/file/db culling; eviction here is automatic.
IGNORED_DJANGO_OPTIONS = frozenset({"MAX_ENTRIES", "CULL_FREQUENCY"})
# django-redis options that have no meaning without a Redis server: named in
# the error, with what to do, so a settings file copied over fails clearly.
DJANGO_REDIS_ONLY_OPTIONS = frozenset({
    "CLIENT_CLASS", "CLIENT_KWARGS", "CONNECTION_POOL_CLASS", "CONNECTION_POOL_KWARGS", "CONNECTION_FACTORY",
    "PARSER_CLASS", "PASSWORD", "USERNAME", "SOCKET_CONNECT_TIMEOUT", "SOCKET_TIMEOUT", "REDIS_CLIENT_CLASS",
    "REDIS_CLIENT_KWARGS", "IGNORE_EXCEPTIONS", "LOG_IGNORED_EXCEPTIONS", "CLOSE_CONNECTION", "REPLICA_READ_ONLY",
    "SENTINELS", "SENTINEL_KWARGS", "DB", "PICKLE_VERSION",
})  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """Validated options of one cache: the segment's geometry, the lock wait,
    how values are pickled, and the snapshot a fresh segment loads."""

    size: int = DEFAULT_SIZE
    max_item_size: int = DEFAULT_MAX_ITEM_SIZE
    shards: int = 0
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    pickle_protocol: int = pickle.HIGHEST_PROTOCOL
    serializer: str = "pickle"
    compressor: str | None = None
    compress_min_length: int = 1024
    snapshot: str | None = None

    @classmethod
    def from_kwargs(cls, **given: Any) -> Settings:
        """From ``shmcache.Cache`` keywords; errors name the keyword."""
        return cls(**{kw: parse(given.get(kw, default), kw) for kw, _, default, parse in _FIELDS})

    @classmethod
    def for_face(cls, face: str, given: Mapping[str, Any], refused: Mapping[str, str] | None = None) -> Settings:
        """From a face's keywords (``size="256MB"``, ...): an unknown keyword,
        or one the face takes another way (`refused`: keyword -> what to do
        instead), is a TypeError naming it and the known ones."""
        refused = dict(refused or {})
        bad = sorted(set(given) & set(refused))
        if bad:
            raise TypeError(f"{face}: option {bad[0]!r} is not taken here; {refused[bad[0]]}")
        known = sorted(kw for kw, *_ in _FIELDS if kw not in refused)
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise TypeError(f"{face}: unknown option(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
        return cls.from_kwargs(**given)

    @classmethod
    def from_django(cls, options: Mapping[str, Any]) -> Settings:
        """From a Django CACHES entry's OPTIONS; errors name the OPTIONS key."""
        redis_only = sorted(set(options) & DJANGO_REDIS_ONLY_OPTIONS)
        if redis_only:
            raise ValueError(
                f"OPTIONS {', '.join(redis_only)}: django-redis option(s) with no meaning for shmcache, which "
                "talks to no Redis server; remove them (PICKLE_VERSION is PICKLE_PROTOCOL here)"
            )
        unknown = set(options) - DJANGO_OPTIONS - IGNORED_DJANGO_OPTIONS
        if unknown:
            raise ValueError(
                f"unknown OPTIONS for shmcache: {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(DJANGO_OPTIONS))}"
            )
        return cls(**{kw: parse(options.get(key, default), key) for kw, key, default, parse in _FIELDS})
