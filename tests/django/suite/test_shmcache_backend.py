"""Django's own generic cache tests (BaseCacheTests), run against shmcache.

This file is copied at test time into ``tests/cache/`` of the Django source
distribution of the installed Django version (see ``tests/django/test_django_suite.py``)
and run with Django's ``runtests.py``. The cull tests are excluded exactly as
Django excludes them for its memcached and Redis backends: shmcache evicts by
memory (CLOCK), not by MAX_ENTRIES/CULL_FREQUENCY. No test is replaced,
edited or skipped (devkit/django_suite.py checks that this module defines
none).
"""

import os

from django.test import TestCase, override_settings

from .tests import BaseCacheTests, caches_setting_for_tests

LOCATION = os.environ.get("SHMCACHE_SUITE_LOCATION", f"django-suite-{os.getpid()}")


@override_settings(
    CACHES=caches_setting_for_tests(
        BACKEND="shmcache.django.SharedMemoryCache",
        LOCATION=LOCATION,
        OPTIONS={"SIZE": "32MB"},
        exclude={"cull", "zero_cull"},
    )
)
class SharedMemoryCacheTests(BaseCacheTests, TestCase):
    # incr on a non-integer raises TypeError, like LocMemCache.
    incr_decr_type_error = TypeError

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        import shmcache

        shmcache.destroy(LOCATION)
