"""A two-level cache: shmcache on each host (L1) in front of Redis (L2)
(docs/tiered.md). ``shmcache.django.TieredCache`` is its Django face.

- `options`: the tier's options, checked before anything opens (no redis-py needed);
- `l2`: Redis, the steps' drivers (redis-py, and redis.asyncio per event loop), RedisCache's format;
- `client`: `TieredClient`, L1 and L2 composed, every method decided;
- `flight`: get_or_set, one computation across every host;
- `listener`: the invalidation listener, one per L1 per host, and its election;
- `sidecar`: ``python -m shmcache listen``.
"""

from .client import TieredClient
from .flight import FLIGHT_LEASE
from .options import (
    DEFAULT_L1_MAX_TIMEOUT,
    DEFAULT_MAX_STALENESS,
    L2Spec,
    TierOptions,
    l1_location,
    parse_django,
    parse_tier,
)

__all__ = [
    "DEFAULT_L1_MAX_TIMEOUT",
    "DEFAULT_MAX_STALENESS",
    "FLIGHT_LEASE",
    "L2Spec",
    "TierOptions",
    "TieredClient",
    "l1_location",
    "parse_django",
    "parse_tier",
]
