"""Django's own generic cache tests (``BaseCacheTests`` from the source
distribution of a Django release) run against shmcache's backends, with any
interpreter: the dev venv's (tests/django/test_django_suite.py,
tests/tiered/test_tiered_django.py) or a fresh venv in which the wheel is installed
(tests/packaging/test_wheel.py, the release workflow: `run_both`).

The test tree of Django `version` is downloaded once (its sdist, by the
`python` that will run it, so pip honours that interpreter's
requires-python) into ``.cache/django-<version>/``; our test module
(tests/django/suite/test_shmcache_backend.py) is copied into its
``tests/cache/`` and run by Django's ``runtests.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from devkit import ROOT
from devkit.sdist import sdist_tree

OUR_MODULE = ROOT / "tests" / "django" / "suite" / "test_shmcache_backend.py"
TIERED_MODULE = ROOT / "tests" / "django" / "suite" / "test_tiered_backend.py"
# (CPython, Django) pairs of `make test-matrix` (tests/packaging/test_wheel.py; "oldest"
# is 3.10); the release workflow runs these, and Django 6.0 and 6.1 on
# CPython 3.14, which no machine here has (tests/packaging/test_packaging.py).
MATRIX_PAIRS = [("oldest", "4.2"), ("3.11", "5.2"), ("3.13", "6.0"), ("3.12", "6.1"), ("3.13", "6.1")]
# Only the cull tests may be skipped (MAX_ENTRIES/CULL_FREQUENCY are not honoured).
ALLOWED_SKIPS = {"test_cull", "test_zero_cull", "test_cull_delete_when_store_empty"}


def django_tests_dir(version: str, python: str, env: dict | None = None) -> Path:
    """Django `version`'s ``tests/`` directory, fetched with `python`'s pip if needed."""
    return sdist_tree("django", version, python, env) / "tests"


def run_base_cache_tests(
    python: str,
    version: str,
    env: dict | None = None,
    timeout: float = 600,
    module: Path = OUR_MODULE,
    extra_env: dict | None = None,
) -> str:
    """Run BaseCacheTests of Django `version` with `python` (in whose
    environment that Django and shmcache are installed) and assert that all
    of them ran and passed, only the cull tests skipped. Returns the output.
    `module` is our test module (the SharedMemoryCache one by default;
    tests/django/suite/test_tiered_backend.py for TieredCache)."""
    ours = module.read_text()
    assert not re.search(r"^\s+(async )?def test_", ours, re.M), f"{module.name} replaces a test of Django's suite"
    tests = django_tests_dir(version, python, env)
    shutil.copy(module, tests / "cache")
    env = dict(os.environ if env is None else env)
    env.update(SHMCACHE_SUITE_LOCATION=f"django-suite-{os.getpid()}-{version}", PYTHONWARNINGS="ignore")
    env.update(extra_env or {})
    p = subprocess.run(
        [python, "runtests.py", f"cache.{module.stem}", "--settings=test_sqlite", "--parallel=1", "-v", "2"],
        cwd=tests, env=env, capture_output=True, text=True, timeout=timeout,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-8000:]
    m = re.search(r"Ran (\d+) tests", out)
    source = (tests / "cache" / "tests.py").read_text()
    body = source.split("class BaseCacheTests", 1)[1].split("\nclass ", 1)[0]
    expected = len(re.findall(r"^    (?:async )?def test_", body, re.M))
    assert m and int(m.group(1)) == expected > 40, (expected, out[-3000:])
    skipped = re.findall(r"^(test\w+) .*\.\.\. skipped", out, re.M)
    assert set(skipped) <= ALLOWED_SKIPS, skipped
    assert "FAILED" not in out, out[-8000:]
    return out


def run_both(python: str, version: str, env: dict | None = None) -> dict[str, str]:
    """The suite on SharedMemoryCache, then on TieredCache with a
    redis-server of our own on loopback (devkit/redis_server.py: Debian's or
    Ubuntu's package, which must be installed). {backend: its summary line}."""
    import tempfile

    from devkit.redis_server import RedisServer

    ran = {}
    out = run_base_cache_tests(python, version, env=env)
    ran["SharedMemoryCache"] = re.findall(r"^Ran \d+ tests.*$", out, re.M)[0]
    with tempfile.TemporaryDirectory(prefix="shmcache-suite-redis-") as d:
        srv = RedisServer(d)
        try:
            out = run_base_cache_tests(python, version, env=env, module=TIERED_MODULE,
                                       extra_env={"SHMCACHE_SUITE_L2": srv.url})
        finally:
            srv.stop()
    ran["TieredCache"] = re.findall(r"^Ran \d+ tests.*$", out, re.M)[0]
    return ran


def main() -> None:
    """``python -m devkit.django_suite``: the suite on both backends with
    this interpreter and its installed Django, shmcache and redis-py (the
    release workflow's wheel test)."""
    import sys

    import django

    for backend, line in run_both(sys.executable, django.get_version()).items():
        print(f"{line} ({backend}, Django {django.get_version()}): OK")


if __name__ == "__main__":
    main()
