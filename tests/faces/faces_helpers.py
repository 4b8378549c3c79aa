"""Helpers of the faces' tests: server commands on the fixture apps of
tests/apps, and the counts of what the apps computed."""

import sys

import shmcache
from devkit.gunicorn_demo import AppServer, no_control_socket
from devkit.wait import wait_for


def gunicorn_cmd(app: str, workers: int):
    def cmd(fd, port):
        return [sys.executable, "-m", "gunicorn", "--bind", f"fd://{fd}", "--workers", str(workers),
                "--log-level", "warning", "--timeout", "30", *no_control_socket(), app]  # fmt: skip

    return cmd


def uvicorn_cmd(app: str, workers: int):
    def cmd(fd, port):
        return [sys.executable, "-m", "uvicorn", app, "--workers", str(workers), "--host", "127.0.0.1",
                "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip

    return cmd


def computed(location: str, name: str) -> int:
    """How many times the app computed `name` (its counter in LOCATION-calls)."""
    return shmcache.Cache(location + "-calls", size="4MB").get(name) or 0


def wait_all_workers(server: AppServer, workers: int, timeout: float = 30) -> set[int]:
    """Until `workers` different pids have answered ``/stats`` (bursts of
    concurrent requests on fresh connections): the pids."""
    seen: set[int] = set()

    def all_up() -> bool:
        seen.update(r["pid"] for r in server.get_many(["/stats"] * 8, concurrency=4))
        return len(seen) >= workers

    wait_for(all_up, timeout, f"answers from {workers} workers", every=0.05)
    return seen
