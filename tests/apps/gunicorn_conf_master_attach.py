"""gunicorn config for tests/servers/test_gunicorn_lifecycle.py: with --preload, the
master attaches to the cache (and writes its pid there) before it forks any
worker, as an app that touches the cache at import time would."""

import os


def when_ready(server):
    from django.core.cache import cache

    cache.set("master-attached", os.getpid())
