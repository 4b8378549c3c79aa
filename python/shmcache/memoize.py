"""``memoize``: cache a function's results by its arguments, stampede-safe.

Works with either face: ``@cache.memoize(timeout=60)`` on a
``shmcache.Cache`` or on the Django backend (``caches["default"].memoize``),
or ``shmcache.memoize(cache, timeout=60)``. The key is the function's module
and qualified name (or `key_prefix`) and a digest of its pickled arguments;
the call goes through ``get_or_set``, so when many processes miss at once one
computes and the others wait for its result. ``f.__cache_key__(*args,
**kwargs)`` gives the key of a call (to delete it, say).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import pickle
from collections.abc import Callable
from typing import Any

_UNSET = object()


def memoize(cache: Any, timeout: Any = _UNSET, key_prefix: str | None = None, typed: bool = False) -> Callable:
    """`cache`: anything with ``get_or_set(key, callable, timeout)``. With
    `typed`, arguments of different types (1 and 1.0) are cached apart."""
    options = {} if timeout is _UNSET else {"timeout": timeout}

    def decorator(func: Callable) -> Callable:
        if inspect.iscoroutinefunction(func):
            raise TypeError(f"memoize wraps plain functions; {func.__qualname__} is a coroutine function")
        base = key_prefix if key_prefix is not None else f"{func.__module__}.{func.__qualname__}"

        def cache_key(*args: Any, **kwargs: Any) -> str:
            call = (args, tuple(sorted(kwargs.items())))
            if typed:
                call += (tuple(type(a).__qualname__ for a in args), tuple(type(v).__qualname__ for _, v in call[1]))
            try:
                data = pickle.dumps(call, 4)
            except Exception as e:
                raise TypeError(f"memoize needs picklable arguments to make a key for {func.__qualname__}: {e}") from e
            return f"memoize:{base}:{hashlib.blake2b(data, digest_size=16).hexdigest()}"

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return cache.get_or_set(cache_key(*args, **kwargs), lambda: func(*args, **kwargs), **options)

        wrapper.__cache_key__ = cache_key  # type: ignore[attr-defined]
        return wrapper

    return decorator

