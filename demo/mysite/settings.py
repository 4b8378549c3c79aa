"""Minimal Django settings for the shmcache demo: no database, no apps, one
cache shared by every gunicorn worker through POSIX shared memory."""

import os

SECRET_KEY = "shmcache-demo-not-secret"
DEBUG = os.environ.get("SHMCACHE_DEMO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict = {}
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
USE_TZ = True

CACHES = {
    "default": {
        "BACKEND": "shmcache.django.SharedMemoryCache",
        "LOCATION": os.environ.get("SHMCACHE_DEMO_LOCATION", "shmcache-demo"),
        "TIMEOUT": None,  # demo values never expire
        "OPTIONS": {"SIZE": os.environ.get("SHMCACHE_DEMO_SIZE", "32MB")},
    }
}

# Show view errors (tracebacks) on gunicorn's stderr even with DEBUG off.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR"},
        "shmcache": {"handlers": ["stderr"], "level": "WARNING"},
    },
}
