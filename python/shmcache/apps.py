"""``"shmcache"`` in INSTALLED_APPS: system checks of the shmcache aliases
(`shmcache.checks`) and ``manage.py shmcache`` (the command line, by alias)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.apps import AppConfig


class _NotOpened:
    """Stands in for a shmcache alias while one of Django's cache checks runs."""


def _guarded(check: Callable[..., Any]) -> Callable[..., Any]:
    """Django's own cache checks open every alias (``caches[alias]``, only
    to see if it is a FileBasedCache). For a shmcache alias that attaches to
    (or creates) its segment during ``manage.py check``, and an option error
    raises there: a traceback instead of shmcache.E001. So while such a check
    runs, the shmcache aliases not opened yet in this thread are a stand-in
    (not a FileBasedCache, which is all the check asks); shmcache's own
    checks look at them without opening anything."""

    @functools.wraps(check)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        from django.core.cache import caches

        from .checks import shmcache_aliases

        placed = []
        for alias in shmcache_aliases():
            if not hasattr(caches._connections, alias):  # not opened yet (this thread)
                caches[alias] = _NotOpened()
                placed.append(alias)
        try:
            return check(*args, **kwargs)
        finally:
            for alias in placed:
                del caches[alias]

    guarded.__shmcache_guarded__ = True  # type: ignore[attr-defined]
    return guarded


class ShmCacheConfig(AppConfig):
    name = "shmcache"
    verbose_name = "shmcache"

    def ready(self) -> None:
        from django.core.checks import registry

        from . import checks  # noqa: F401  (registers shmcache's checks)

        reg = registry.registry
        for attr in ("registered_checks", "deployment_checks"):
            found = getattr(reg, attr, set())
            for c in list(found):
                if getattr(c, "__module__", "") == "django.core.checks.caches" and not getattr(
                    c, "__shmcache_guarded__", False
                ):
                    g = _guarded(c)
                    found.discard(c)
                    found.add(g)
