"""Best-of-25 ns per Django get/set of 100 B bytes over 1,000 keys, for
comparing two versions of the Python package back to back:

    PYTHONPATH=/tmp/old/python taskset -c 1 .venv/bin/python -m bench.django_hot_path
    taskset -c 1 .venv/bin/python -m bench.django_hot_path

(`/tmp/old` from `git archive <rev> python/shmcache | tar -x -C /tmp/old`,
with the built `_core*.so` copied beside it.) Prints which package ran.
"""

import os
import timeit

import django
from django.conf import settings


def main() -> None:
    loc = f"hotpath-{os.getpid()}"
    settings.configure(
        CACHES={"default": {"BACKEND": "shmcache.django.SharedMemoryCache", "LOCATION": loc, "OPTIONS": {"SIZE": "64MB"}}},
        INSTALLED_APPS=[],
    )
    django.setup()
    from django.core.cache import caches

    import shmcache

    c, v = caches["default"], b"x" * 100
    keys = [f"key:{i}" for i in range(1000)]
    for k in keys:
        c.set(k, v)

    def gets():
        for k in keys:
            c.get(k)

    def sets():
        for k in keys:
            c.set(k, v)

    try:
        g, s = (min(timeit.repeat(f, number=50, repeat=25)) / 50_000 * 1e9 for f in (gets, sets))
        print(f"{os.path.dirname(shmcache.__file__)}: get {g:.0f} ns  set {s:.0f} ns")
    finally:
        shmcache.destroy(loc)


if __name__ == "__main__":
    main()
