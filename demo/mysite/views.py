"""Every response names the worker process (pid) that served it, so a client
can see a value written by one worker being read by another."""

import os
import sys
import time
from html import escape

from django.conf import settings
from django.core.cache import cache
from django.http import Http404, HttpResponse, JsonResponse


def _counter(key: str) -> int:
    cache.add(key, 0)  # atomic: only the first worker creates it
    return cache.incr(key)


def index(request):
    views = _counter("demo:pageviews")
    pid = os.getpid()
    location = settings.CACHES["default"]["LOCATION"]
    return HttpResponse(
        "<!doctype html><title>shmcache demo</title>"
        f"<h1>Page views: {views}</h1>"
        f"<p>Served by worker pid {pid}. Reload: the count is shared by every worker.</p>"
        '<p><a href="/stats">cache stats</a></p>'
        f"<p>cache location: <code>{escape(location)}</code></p>"
    )


def set_value(request, key, value):
    cache.set(key, value)
    return JsonResponse({"pid": os.getpid(), "key": key, "value": value})


def get_value(request, key):
    return JsonResponse({"pid": os.getpid(), "key": key, "value": cache.get(key)})


def incr(request, key):
    return JsonResponse({"pid": os.getpid(), "key": key, "value": _counter(key)})


def stats(request):
    return JsonResponse({"pid": os.getpid(), "stats": cache.stats()})


# ---- chaos views (tools/chaos_gunicorn.py): only when SHMCACHE_DEMO_CHAOS=1 ----

def _chaos_enabled() -> bool:
    return os.environ.get("SHMCACHE_DEMO_CHAOS") == "1"


def sleep(request, seconds):
    """Sleep, then answer: past gunicorn's --timeout the worker is killed."""
    if not _chaos_enabled():
        raise Http404("chaos views are off")
    print(f"chaos-sleeper pid={os.getpid()}", file=sys.stderr, flush=True)  # in gunicorn's log
    time.sleep(float(seconds))
    return JsonResponse({"pid": os.getpid(), "slept": float(seconds)})


def pause_set(request, key, ms):
    """A set that sleeps `ms` half-way through writing its value, holding the
    shard lock with the shard marked mid-write (the core's test hook): past
    gunicorn's --timeout the worker is killed inside the critical section."""
    if not _chaos_enabled():
        raise Http404("chaos views are off")
    from shmcache import _core

    print(f"chaos-sleeper pid={os.getpid()}", file=sys.stderr, flush=True)
    _core._set_test_pause_ms(int(ms))
    try:
        cache.set(key, "p" * 20000)
    finally:
        _core._set_test_pause_ms(0)
    return JsonResponse({"pid": os.getpid(), "key": key, "paused_ms": int(ms)})
