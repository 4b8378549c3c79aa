"""Flask + Flask-Caching on one shared-memory cache for every worker.

    pip install "shmcache[flask]" gunicorn
    gunicorn -w 4 --chdir examples flask_example:app
    curl localhost:8000/fib/30      # computed once, whichever worker you reach
    curl localhost:8000/visits      # one count for the four workers
    curl localhost:8000/stats
"""

import os

from flask import Flask, jsonify
from flask_caching import Cache

LOCATION = os.environ.get("SHMCACHE_APP_LOCATION", "flask-example")

app = Flask(__name__)
app.config.from_mapping(
    CACHE_TYPE="shmcache.cachelib.SharedMemoryCache",  # one cache per host, in shared memory
    CACHE_DEFAULT_TIMEOUT=300,
    CACHE_OPTIONS={"location": LOCATION, "size": "64MB", "key_prefix": "flask:"},
)
cache = Cache(app)


@cache.memoize(timeout=600)
def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


@app.get("/fib/<int:n>")
def fib_view(n: int):
    return jsonify(n=n, fib=fib(n), pid=os.getpid())


@app.get("/visits")
def visits():
    return jsonify(visits=cache.cache.inc("visits"), pid=os.getpid())  # atomic across the workers


@app.get("/stats")
def stats():
    return jsonify(pid=os.getpid(), **cache.cache.stats())  # every worker's counts


if __name__ == "__main__":
    app.run()
