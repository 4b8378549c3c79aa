"""The faces' fixture: their servers (gunicorn, uvicorn) on a fixture app of tests/apps."""

import pytest
from faces_helpers import gunicorn_cmd, uvicorn_cmd, wait_all_workers

import shmcache
from devkit.gunicorn_demo import AppServer


@pytest.fixture
def serve(location):
    """``serve("flask_app:app", "gunicorn", workers=4)``: that app of
    tests/apps on LOCATION under a real server (stopped after the test),
    with the segments it made destroyed."""
    started = []

    def start(app: str, server: str, workers: int) -> AppServer:
        if server == "gunicorn":
            s = AppServer(location, gunicorn_cmd(app, workers), workers=workers)
        else:
            pytest.importorskip("uvicorn", reason="uvicorn is not installed (requirements-dev.txt)")
            s = AppServer(location, uvicorn_cmd(app, workers), pass_socket=False, workers=workers)
        started.append(s)
        s.start()
        wait_all_workers(s, workers)  # every worker up, not only the first to answer
        return s

    yield start
    for s in started:
        s.stop()
    shmcache.destroy(location + "-calls")
