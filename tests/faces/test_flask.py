"""Flask-Caching on shmcache's cachelib face, in a Flask app under a real
``gunicorn -w 4``: a memoized function computed once per argument across
the workers, an ``@cache.cached`` view computed once, ``inc`` from every
worker exact."""

from faces_helpers import computed

WORKERS = 4


def test_flask_caching_backend_shared_by_four_gunicorn_workers(serve, location):
    s = serve("flask_app:app", "gunicorn", WORKERS)
    assert s.get("/stats")["backend"] == "shmcache.cachelib.SharedMemoryCache"
    # memoize: first calls one at a time (Flask-Caching's per-function
    # version key is written by whichever call misses first), then many.
    for n in range(5):
        assert s.get(f"/square/{n}")["value"] == n * n
    answers = s.get_many([f"/square/{n % 5}" for n in range(60)], concurrency=8)
    assert [a["value"] for a in answers] == [(n % 5) ** 2 for n in range(60)]
    assert len({a["pid"] for a in answers}) >= 2, "more than one worker answered"
    assert [computed(location, f"square:{n}") for n in range(5)] == [1] * 5, "computed once per argument"
    # cached view: computed once, every worker answers with that response.
    first = s.get("/cached")
    views = s.get_many(["/cached"] * 40, concurrency=8)
    assert {v["computed"] for v in views} == {1} and all(v == first for v in views)
    assert computed(location, "cached") == 1
    # inc from every worker, concurrently: exact.
    incs = s.get_many(["/inc/hits"] * 200, concurrency=8)
    assert sorted(i["value"] for i in incs) == list(range(1, 201)), "every increment counted once"
    assert len({i["pid"] for i in incs}) >= 2
    assert s.get("/get/hits")["value"] == 200
