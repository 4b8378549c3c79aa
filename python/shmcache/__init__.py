"""shmcache: one cache in OS shared memory for every process on a host.

``shmcache.Cache`` is the plain Python API (Flask, FastAPI, Celery, scripts)
and the client behind ``shmcache.django.SharedMemoryCache``, the Django cache
backend.
"""

from __future__ import annotations

import sys

if not sys.platform.startswith("linux"):  # before _core, which could not load (or be built) there
    raise ImportError(f"shmcache supports Linux only (it needs robust process-shared mutexes and /dev/shm), not {sys.platform}")

from . import _core  # noqa: E402
from ._core import LockTimeout, SegmentError, ShmCacheError, SnapshotError, ValueTooLarge  # noqa: E402
from .client import Cache, destroy, segment_name  # noqa: E402
from .lock import AsyncLock, Lock, LockError, LockNotOwnedError  # noqa: E402
from .memoize import memoize  # noqa: E402

__all__ = [
    "AsyncLock",
    "Cache",
    "Lock",
    "LockError",
    "LockNotOwnedError",
    "LockTimeout",
    "SegmentError",
    "ShmCacheError",
    "ValueTooLarge",
    "SnapshotError",
    "destroy",
    "memoize",
    "segment_name",
]
__version__: str = _core.__version__
