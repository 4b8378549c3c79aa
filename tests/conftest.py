"""Shared fixtures: a unique cache LOCATION per test (its segment destroyed
afterwards), a plain ``shmcache.Cache`` on it, and a Django backend on it."""

import contextlib
import itertools
import multiprocessing
import os
import uuid

import pytest

import shmcache

# django/suite: copied into Django's own test tree and run there (devkit/django_suite.py);
# apps: the fixture apps (WSGI/ASGI apps, a gunicorn config, the wheel smoke test).
collect_ignore = ["django/suite", "faces/cachelib_suite", "apps"]

_counter = itertools.count()
_RUN = uuid.uuid4().hex[:8]


def unique_location(prefix: str = "t") -> str:
    return f"{prefix}-{os.getpid()}-{_RUN}-{next(_counter)}"


@pytest.fixture
def location():
    name = unique_location()
    try:
        yield name
    finally:
        shmcache.destroy(name)


@pytest.fixture
def name(location):
    """The same unique LOCATION, for tests that call it a name."""
    return location


@contextlib.contextmanager
def _clock_shifted(ms):
    shmcache._core._set_clock_offset_ms(ms)
    try:
        yield
    finally:
        shmcache._core._set_clock_offset_ms(0)


@pytest.fixture
def clock_offset():
    """``with clock_offset(ms):`` runs a block with this process's cache
    clock moved by ``ms`` (expire items without sleeping)."""
    return _clock_shifted


def _run_forked(target, args_list, meanwhile=None, timeout=60):
    procs = [multiprocessing.get_context("fork").Process(target=target, args=args) for args in args_list]
    for p in procs:
        p.start()
    if meanwhile is not None:
        meanwhile()
    for p in procs:
        p.join(timeout)
    assert [p.exitcode for p in procs] == [0] * len(procs), "a forked process failed or hung"


@pytest.fixture
def run_forked():
    """``run_forked(target, [args, ...], meanwhile=f)`` runs ``target(*args)``
    in one forked process per args tuple while this process runs ``f()``,
    then checks that every child exited 0 within the timeout."""
    return _run_forked


@pytest.fixture
def cache(location):
    return shmcache.Cache(location, size="8MB", max_item_size="64KB")


_django_ready = False


def _setup_django() -> None:
    global _django_ready
    if _django_ready:
        return
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            CACHES={
                "default": {
                    "BACKEND": "shmcache.django.SharedMemoryCache",
                    "LOCATION": unique_location("django-default"),
                    "OPTIONS": {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB"},
                }
            },
            DATABASES={},
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
    django.setup()
    _django_ready = True


@pytest.fixture(scope="session")
def django_settings():
    _setup_django()
    yield
    from django.conf import settings

    # The default alias' segment exists only if some test touched it.
    shmcache.destroy(settings.CACHES["default"]["LOCATION"])


def django_backend(location: str, **params):
    """A SharedMemoryCache on `location` with Django's `params` (OPTIONS
    default to a small cache); the test's django_settings fixture sets Django up."""
    from shmcache.django import SharedMemoryCache

    params.setdefault("OPTIONS", {"SIZE": "8MB", "MAX_ITEM_SIZE": "64KB"})
    return SharedMemoryCache(location, params)


@pytest.fixture
def django_cache(django_settings, location):
    """A fresh SharedMemoryCache on this test's own LOCATION."""
    return django_backend(location)


def unshare_mount_argv() -> list[str]:
    """The argv prefix that runs a command in a private mount namespace
    (as root, or as a user in a new user namespace); the test is skipped,
    saying why, where that cannot be done here."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        pytest.skip("unshare not installed")
    base = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    probe = subprocess.run(base + ["true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    return base


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of our own on loopback (devkit/redis_server.py; no
    persistence), stopped afterwards. Skipped, saying why, where the Debian
    package is not installed (`make test-tools` installs it)."""
    from devkit.redis_server import RedisServer, redis_server_path

    if redis_server_path() is None:
        pytest.skip("redis-server not installed (apt-get install redis-server; make test-tools does it as root)")
    srv = RedisServer(str(tmp_path / "redis"))
    try:
        yield srv
    finally:
        srv.stop()
