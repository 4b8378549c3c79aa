"""Django's own generic cache tests (BaseCacheTests), run against shmcache.

This file is copied at test time into ``tests/cache/`` of the Django source
distribution of the installed Django version (see ``tests/test_django_suite.py``)
and run with Django's ``runtests.py``. The cull tests are excluded exactly as
Django excludes them for its memcached and Redis backends: shmcache evicts by
memory (CLOCK), not by MAX_ENTRIES/CULL_FREQUENCY. One test is replaced:
``delete_many`` returns a count (django-redis's contract), not None.
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

    def test_delete_many_no_keys(self):
        # BaseCache returns None; shmcache returns how many keys existed, as
        # django-redis does (0 here), so code written for either works.
        from django.core.cache import cache

        self.assertEqual(cache.delete_many([]), 0)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        import shmcache

        shmcache.destroy(LOCATION)
