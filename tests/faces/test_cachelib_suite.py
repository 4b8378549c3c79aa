"""cachelib's own test mixins, as it ships them, against
shmcache.cachelib.SharedMemoryCache (devkit/cachelib_suite.py)."""

import sys

import cachelib

from devkit.cachelib_suite import run_cachelib_tests


def test_cachelibs_mixins_pass():
    run_cachelib_tests(sys.executable, cachelib.__version__)
