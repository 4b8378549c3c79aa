"""A real `gunicorn -w 4` serving demo/mysite: values written by one worker
process are read by another, and /incr is atomic across workers."""

import os
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest

import shmcache
from devkit.gunicorn_demo import Gunicorn

WORKERS = 4


@pytest.fixture(scope="module")
def server():
    location = f"test-gunicorn-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    g = Gunicorn(location, workers=WORKERS)
    try:
        g.start()
        yield g
    finally:
        g.stop()
        shmcache.destroy(location)
        assert not Path("/dev/shm" + shmcache.segment_name(location)).exists()


def test_values_cross_worker_processes(server):
    written = {}  # key -> (value, writer pid)
    i = 0
    while len({pid for _, pid in written.values()}) < 2:
        assert i < 200, f"200 writes all served by { {p for _, p in written.values()} }"
        batch = [(f"k{n}", f"v{n}-{os.getpid()}") for n in range(i, i + WORKERS)]
        i += WORKERS
        for (k, v), r in zip(batch, server.get_many([f"/set/{k}/{v}" for k, v in batch], concurrency=WORKERS)):
            assert (r["key"], r["value"]) == (k, v)
            written[k] = (v, r["pid"])

    readers = Counter()
    for k, (v, writer) in written.items():
        r = server.get_from_other_pid(f"/get/{k}", not_pid=writer)
        assert r["pid"] != writer
        assert r["value"] == v, f"pid {r['pid']} read {k}={r['value']!r}; pid {writer} wrote {v!r}"
        readers[r["pid"]] += 1
    assert len({p for _, p in written.values()} | set(readers)) >= 2
    assert server.proc.poll() is None


def test_incr_is_atomic_across_workers(server):
    results, errors = [], []

    def worker():
        try:
            for _ in range(100):
                results.append(server.get("/incr/c"))
        except Exception as e:  # surfaced by the asserts below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert len(results) == 400
    assert sorted(r["value"] for r in results) == list(range(1, 401)), "lost or repeated increments"
    assert server.get("/get/c")["value"] == 400
    assert len({r["pid"] for r in results}) >= 2, "all increments served by one worker"
    stats = server.get("/stats")["stats"]
    assert stats["lock_timeouts"] == 0
    assert server.proc.poll() is None
