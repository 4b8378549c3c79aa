"""The Django cache backends compared, as one CACHES setting."""

from __future__ import annotations

import importlib
import os

# (alias, label); the order is the order of every table.
BACKENDS = [
    ("shmcache", "shmcache"),
    ("locmem", "LocMemCache"),
    ("file", "FileBasedCache"),
    ("redis_unix", "RedisCache (unix socket)"),
    ("redis_tcp", "RedisCache (TCP)"),
    ("django_redis", "django-redis (TCP)"),
    ("memcached", "PyMemcacheCache (TCP)"),
    ("diskcache", "diskcache DjangoCache"),
]
LABEL = dict(BACKENDS)

# Every backend keeps items an hour: nothing expires during the run.
TIMEOUT = 3600
SHM_SIZE = "256MB"
SHM_MAX_ITEM = "1MB"


def _missing_module(*names: str) -> str | None:
    for n in names:
        try:
            importlib.import_module(n)
        except Exception as e:  # noqa: BLE001
            return f"Python package {n!r} cannot be imported ({e.__class__.__name__}: {e}); pip install -r bench/requirements.txt"
    return None


def caches_setting(tmpdir: str, shm_location: str, redis, memcached, server_skip: dict[str, str]) -> tuple[dict, dict[str, str]]:
    """CACHES for every backend that can run, and {alias: why skipped}."""
    caches: dict[str, dict] = {}
    skipped: dict[str, str] = {}

    def add(alias: str, cfg: dict, needs: tuple[str, ...] = (), why_not: str | None = None) -> None:
        why = why_not or _missing_module(*needs)
        if why:
            skipped[alias] = why
        else:
            caches[alias] = {"TIMEOUT": TIMEOUT, **cfg}

    add("shmcache", {
        "BACKEND": "shmcache.django.SharedMemoryCache",
        "LOCATION": shm_location,
        "OPTIONS": {"SIZE": SHM_SIZE, "MAX_ITEM_SIZE": SHM_MAX_ITEM},
    }, ("shmcache.django",))
    add("locmem", {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "bench",
        # Django's default MAX_ENTRIES (300) would cull the benchmark's key pools.
        "OPTIONS": {"MAX_ENTRIES": 10_000_000},
    })
    add("file", {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": os.path.join(tmpdir, "filecache"),
        "OPTIONS": {"MAX_ENTRIES": 10_000_000},
    })
    def why_skipped(server: str, srv) -> str | None:
        return server_skip.get(server) or (None if srv is not None else f"{server} could not be started")

    redis_why = why_skipped("redis-server", redis)
    add("redis_unix", {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"unix://{redis.unix_socket}?db=0" if redis else "",
    }, ("redis", "hiredis"), redis_why)
    add("redis_tcp", {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{redis.port}/1" if redis else "",
    }, ("redis", "hiredis"), redis_why)
    add("django_redis", {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{redis.port}/2" if redis else "",
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }, ("django_redis", "redis", "hiredis"), redis_why)
    memc_why = why_skipped("memcached", memcached)
    add("memcached", {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": f"127.0.0.1:{memcached.port}" if memcached else "",
    }, ("pymemcache",), memc_why)
    add("diskcache", {
        "BACKEND": "diskcache.DjangoCache",
        "LOCATION": os.path.join(tmpdir, "diskcache"),
        "OPTIONS": {"size_limit": 2**31},
    }, ("diskcache",))
    return caches, skipped
