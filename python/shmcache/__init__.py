"""shmcache: one cache in OS shared memory for every process on a host.

``shmcache.Cache`` is the plain Python API (Flask, FastAPI, Celery, scripts)
and the client behind ``shmcache.django.SharedMemoryCache``, the Django cache
backend.
"""

from __future__ import annotations

from . import _core
from ._core import LockTimeout, SegmentError, ShmCacheError, ValueTooLarge
from .client import Cache, destroy, segment_name
from .lock import AsyncLock, Lock, LockError, LockNotOwnedError
from .memoize import memoize

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
    "destroy",
    "memoize",
    "segment_name",
]
__version__: str = _core.__version__
