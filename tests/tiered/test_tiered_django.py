"""Django's own cache test-suite (BaseCacheTests of the installed Django)
against shmcache.django.TieredCache, with a real redis-server as L2."""

import sys

import django

from devkit.django_suite import TIERED_MODULE, run_base_cache_tests


def test_django_base_cache_tests_pass_on_tiered(redis_server):
    run_base_cache_tests(
        sys.executable,
        django.get_version(),
        module=TIERED_MODULE,
        extra_env={"SHMCACHE_SUITE_L2": redis_server.url},
    )
