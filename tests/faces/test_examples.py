"""Every example of examples/ runs, under the server its docstring names,
and does what it says."""

import contextlib
import subprocess
import sys

import httpx
from faces_helpers import gunicorn_cmd, uvicorn_cmd, wait_all_workers

import shmcache
from devkit import ROOT
from devkit.gunicorn_demo import AppServer

EXAMPLES = ROOT / "examples"


@contextlib.contextmanager
def serving(location, cmd, workers, pass_socket=True):
    """An example app of examples/ under its server, every worker up; then
    stopped and its cache destroyed."""
    s = AppServer(location, cmd, pass_socket=pass_socket, workers=workers, pythonpath=(EXAMPLES,))
    try:
        s.start()
        wait_all_workers(s, workers)
        yield s
    finally:
        s.stop()
        shmcache.destroy(location)


def test_flask_example_under_gunicorn(location):
    with serving(location, gunicorn_cmd("flask_example:app", 4), 4) as s:
        fibs = s.get_many(["/fib/30"] * 24, concurrency=8)
        assert {f["fib"] for f in fibs} == {832040} and len({f["pid"] for f in fibs}) >= 2
        visits = s.get_many(["/visits"] * 40, concurrency=8)
        assert sorted(v["visits"] for v in visits) == list(range(1, 41)), "one count for the four workers"
        assert s.get("/stats")["hits"] >= 23, "the other workers' fib reads hit the shared cache"


def test_litestar_example_under_uvicorn(location):
    with serving(location, uvicorn_cmd("litestar_example:app", 2), 2, pass_socket=False) as s:
        codes = [httpx.get(s.base_url + "/limited").status_code for _ in range(12)]
        assert codes == [200] * 5 + [429] * 7, codes
        first = s.get("/slow")  # alone: Litestar's response cache lets concurrent first requests each compute
        slow = s.get_many(["/slow"] * 16, concurrency=4)
        assert {x["computed_at"] for x in slow} == {first["computed_at"]}, "the first answer, whichever worker"
        with httpx.Client(base_url=s.base_url) as c:
            assert [c.get("/visit").json()["visits"] for _ in range(6)] == [1, 2, 3, 4, 5, 6]


def test_fastapi_example_under_uvicorn(location):
    with serving(location, uvicorn_cmd("fastapi_example:app", 2), 2, pass_socket=False) as s:
        first = s.get("/report")  # alone: fastapi-cache2 lets concurrent first requests each compute
        reports = s.get_many(["/report"] * 16, concurrency=4)
        assert {r["computed_at"] for r in reports} == {first["computed_at"]}, "computed once for both workers"


def test_aiocache_example(location):
    env = {"SHMCACHE_APP_LOCATION": location, "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, str(EXAMPLES / "aiocache_example.py")], capture_output=True, text=True,
                       timeout=120, env=env, cwd=ROOT)  # fmt: skip
    shmcache.destroy(location)
    assert p.returncode == 0 and "4 processes x 500 increments = 2000" in p.stdout, p.stdout + p.stderr
