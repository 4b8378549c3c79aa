"""Run Django's own cache test-suite (BaseCacheTests from the source
distribution of the installed Django) against shmcache.django.SharedMemoryCache
(the runner is devkit/django_suite.py; tests/packaging/test_wheel.py runs it against
the installed wheel with other Django releases)."""

import sys

import django

from devkit.django_suite import run_base_cache_tests


def test_django_base_cache_tests_pass():
    run_base_cache_tests(sys.executable, django.get_version())
