"""Django's own generic cache tests (BaseCacheTests), run against
shmcache.django.TieredCache (L1 shmcache in front of a real redis-server).

Copied at test time into ``tests/cache/`` of Django's source distribution
(tests/tiered/test_tiered_django.py starts the Redis and passes its URL in
SHMCACHE_SUITE_L2). The cull tests are excluded as Django excludes them for
its Redis backend. As for Django's RedisCache, incr on a value that is not
an integer fails in Redis (here a TypeError naming the key). No test is
replaced, edited or skipped (devkit/django_suite.py checks that this module
defines none).
"""

import os

from django.test import TestCase, override_settings

from .tests import BaseCacheTests, caches_setting_for_tests

LOCATION = os.environ.get("SHMCACHE_SUITE_LOCATION", f"django-suite-{os.getpid()}") + "-tiered"
L2 = os.environ["SHMCACHE_SUITE_L2"]


@override_settings(
    CACHES=caches_setting_for_tests(
        BACKEND="shmcache.django.TieredCache",
        LOCATION=LOCATION,
        OPTIONS={"SIZE": "16MB", "L2": L2},
        exclude={"cull", "zero_cull"},
    )
)
class TieredCacheTests(BaseCacheTests, TestCase):
    incr_decr_type_error = TypeError

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        import shmcache
        from shmcache.tiered import listener as _listener

        _listener.stop_all()
        for loc in (LOCATION, LOCATION + "#cacheprefix"):
            shmcache.destroy(loc)
