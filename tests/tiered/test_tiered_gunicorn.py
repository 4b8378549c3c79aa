"""TieredCache under a real Gunicorn with --preload: the master touches the
cache at import (which elects a listener in it) and then forks; no listener
thread survives in the master, and one worker becomes the host's listener.
Also `python -m shmcache listen` as a sidecar: the workers then start none."""

import os
import subprocess
import sys

import pytest

import shmcache
from devkit import TEST_APPS
from devkit.gunicorn_demo import no_control_socket
from devkit.net import get_json, listening_socket
from devkit.proc import children, stop
from devkit.wait import wait_for
from shmcache.tiered import l1_location
from shmcache.tiered import listener as _listener

pytest.importorskip("gunicorn")
TESTS = TEST_APPS  # tiered_app.py


def tasks(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


class App:
    def __init__(self, location, url, workers=3, preload=True):
        self.sock = listening_socket()
        self.port = self.sock.getsockname()[1]
        env = dict(os.environ, SHMCACHE_APP_LOCATION=location, SHMCACHE_APP_L2=url)
        args = [sys.executable, "-m", "gunicorn", "--bind", f"fd://{self.sock.fileno()}", "--workers", str(workers),
                "--pythonpath", str(TESTS), "--log-level", "warning", *no_control_socket(),
                *(["--preload"] if preload else []), "tiered_app:application"]
        self.proc = subprocess.Popen(args, env=env, pass_fds=[self.sock.fileno()])
        self.workers = workers
        wait_for(lambda: len(children(self.proc.pid)) >= workers, 30, "gunicorn workers")
        wait_for(self._answers, 30, "an answer")

    def _answers(self):
        try:
            return self.get("/info")
        except OSError:
            return None

    def get(self, path):
        return get_json(f"http://127.0.0.1:{self.port}{path}", timeout=10)

    def stop(self):
        stop(self.proc, grace=15)
        self.sock.close()


@pytest.fixture
def app_location(location):
    yield location
    seg = shmcache.segment_name(l1_location(location, "app"))
    shmcache.destroy(l1_location(location, "app"))
    try:
        os.unlink(_listener.lock_path(seg))
    except FileNotFoundError:
        pass


def test_preload_master_forks_with_no_listener_thread(redis_server, app_location):
    app = App(app_location, redis_server.url, workers=3, preload=True)
    try:
        master = app.proc.pid
        workers = set(children(master))
        # Requests are operations: the workers elect a listener among themselves.
        info = wait_for(lambda: app.get("/get/probe") and (i := app.get("/info"))["live"] and i, 15, "a live L1")
        assert info["import_pid"] == master, "the app was imported in the master"
        assert info["listener_pid"] in workers, (info, workers)
        assert tasks(master) == 1, "the master runs no thread (no listener)"
        for _ in range(20):
            i = app.get("/info")
            threads = [t for t in i["threads"] if t.startswith("shmcache-listener")]
            assert len(threads) == (1 if i["pid"] == info["listener_pid"] else 0), i
        app.get("/set/k/v1")
        assert {app.get("/get/k")["value"] for _ in range(10)} == {"v1"}
    finally:
        app.stop()


def test_sidecar_listener_means_no_listener_in_workers(redis_server, app_location):
    side = subprocess.Popen(
        [sys.executable, "-m", "shmcache", "listen", app_location, "--l2", redis_server.url, "--prefix", "app",
         "--size", "8MB", "--max-item-size", "64KB", "--max-staleness", "0.5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        core = shmcache._core.Cache(l1_location(app_location, "app"), 8 << 20, 64 << 10)
        wait_for(lambda: core.live(500) and core.listener_pid == side.pid, 15, "the sidecar live")
        app = App(app_location, redis_server.url, workers=2, preload=False)
        try:
            for _ in range(10):
                i = app.get("/info")
                assert i["live"] and i["listener_pid"] == side.pid and not i["listener_here"], i
            app.get("/set/k/v2")
            assert app.get("/get/k")["value"] == "v2"
        finally:
            app.stop()
        side.terminate()
        assert side.wait(10) == 0
    finally:
        if side.poll() is None:
            side.kill()
            side.wait(5)
