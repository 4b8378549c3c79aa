"""Every response names the worker process (pid) that served it, so a client
can see a value written by one worker being read by another."""

import os
from html import escape

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse, JsonResponse


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
