"""Parsing and checking of user options (sizes, timeouts), with errors that
name the option to change."""

from __future__ import annotations

import re

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}
# Memory sizes people write as "256MB" mean MiB (like memcached's -m and
# Redis' maxmemory "256mb"); say "256MiB" or an int to be exact.
_BINARY = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

DEFAULT_SIZE = 64 * 1024**2
DEFAULT_MAX_ITEM_SIZE = 1024**2
DEFAULT_LOCK_TIMEOUT = 0.1


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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= 60):
        raise ValueError(f"invalid {option}: {value!r}; give seconds, more than 0 and at most 60")
    return float(value)


def parse_int(value: object, option: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (lo <= value <= hi):
        raise ValueError(f"invalid {option}: {value!r}; give an integer from {lo} to {hi}")
    return value


def check_location(location: object, option: str = "LOCATION") -> str:
    if not isinstance(location, str) or not location or "\0" in location or len(location) > 200:
        raise ValueError(
            f"invalid {option}: {location!r}; give a non-empty name (at most 200 characters, no NUL) "
            "that identifies this cache on the host"
        )
    return location
