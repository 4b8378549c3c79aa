"""A Flask app on Flask-Caching with shmcache's cachelib face, for
tests/faces/test_flask.py under a real ``gunicorn -w 4``. Its cache is
LOCATION (SHMCACHE_APP_LOCATION); what it computes is counted in another
shmcache segment, LOCATION-calls, which the test reads."""

import os

from flask import Flask, jsonify
from flask_caching import Cache

import shmcache

LOCATION = os.environ["SHMCACHE_APP_LOCATION"]
calls = shmcache.Cache(LOCATION + "-calls", size="4MB")

app = Flask(__name__)
app.config.from_mapping(
    CACHE_TYPE="shmcache.cachelib.SharedMemoryCache",
    CACHE_DEFAULT_TIMEOUT=300,
    CACHE_OPTIONS={"location": LOCATION, "size": "16MB", "key_prefix": "flask:"},
)
cache = Cache(app)


@cache.memoize(timeout=60)
def square(n: int) -> int:
    calls.incr(f"square:{n}", ignore_key_check=True)
    return n * n


@app.get("/stats")
def stats():
    return jsonify(pid=os.getpid(), backend=type(cache.cache).__module__ + "." + type(cache.cache).__name__)


@app.get("/square/<int:n>")
def square_view(n: int):
    return jsonify(pid=os.getpid(), value=square(n))


@app.get("/cached")
@cache.cached(timeout=60)
def cached_view():
    return jsonify(pid=os.getpid(), computed=calls.incr("cached", ignore_key_check=True))


@app.get("/inc/<name>")
def inc(name: str):
    return jsonify(pid=os.getpid(), value=cache.cache.inc(name))


@app.get("/get/<name>")
def get(name: str):
    return jsonify(pid=os.getpid(), value=cache.get(name))
