"""Run the demo Django project (demo/mysite) under a real multi-worker
gunicorn and talk to it over HTTP. Used by demo/run_demo.py, the tests and
tools/chaos_gunicorn.py.

Only the standard library is used; gunicorn is run as
``sys.executable -m gunicorn`` so it is the same interpreter/venv.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devkit import ROOT
from devkit.net import HTTPStatusError, free_port, get_json, listening_socket
from devkit.proc import children

DEMO_DIR = ROOT / "demo"


class GunicornError(RuntimeError):
    pass


def no_control_socket() -> list[str]:
    """gunicorn >= 25 opens a control socket at a fixed per-user path
    (~/.gunicorn/gunicorn.ctl): concurrent servers would fight over it."""
    try:
        import gunicorn.config as cfg
    except ImportError:
        return []
    return ["--no-control-socket"] if hasattr(cfg, "ControlSocketDisable") else []


def gunicorn_argv(bind: str, workers: int, extra_args: tuple[str, ...] = (), exe: list[str] | None = None) -> list[str]:
    """The command serving demo/mysite: `exe` (default ``python -m gunicorn``)
    with --bind `bind` (``fd://N`` or ``host:port``), `workers`, then `extra_args`."""
    return [
        *(exe or [sys.executable, "-m", "gunicorn"]),
        "--bind", bind,
        "--workers", str(workers),
        "--pythonpath", str(DEMO_DIR),
        "--graceful-timeout", "5",
        "--timeout", "30",
        "--log-level", "info",
        *no_control_socket(),
        *extra_args,
        "mysite.wsgi:application",
    ]


class Gunicorn:
    """A gunicorn master + workers serving demo/mysite on 127.0.0.1.

        with Gunicorn(location="x-123", workers=4) as g:
            g.get("/set/a/1")

    The cache LOCATION is passed through SHMCACHE_DEMO_LOCATION. stop() sends
    SIGTERM to the master (which stops its workers) and waits; SIGKILL to the
    whole process group if it does not exit in time. It never destroys the
    segment: callers do that (shmcache.destroy(location)) after stop().
    """

    def __init__(
        self,
        location: str,
        workers: int = 4,
        extra_args: tuple[str, ...] = (),
        env: dict | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.location = location
        self.workers = workers
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self._log = None

    # -- lifecycle --
    def environment(self, pythonpath: tuple[Path, ...] = (DEMO_DIR,), **more: str) -> dict:
        """The server's environment: ours, the demo's settings, `more`, then `env=`."""
        env = dict(os.environ)
        env.update(
            SHMCACHE_DEMO_LOCATION=self.location,
            DJANGO_SETTINGS_MODULE="mysite.settings",
            PYTHONPATH=os.pathsep.join(filter(None, [*map(str, pythonpath), env.get("PYTHONPATH")])),
            PYTHONUNBUFFERED="1",
            **more,
        )
        env.update(self.extra_env)
        return env

    def command(self, fd: int) -> list[str]:
        return gunicorn_argv(f"fd://{fd}", self.workers, self.extra_args)

    def start(self) -> Gunicorn:
        sock = listening_socket()
        self.port = sock.getsockname()[1]
        return self._launch(self.command(sock.fileno()), sock, self.environment(), DEMO_DIR)

    def _launch(self, cmd: list[str], sock: socket.socket | None, env: dict, cwd: Path) -> Gunicorn:
        """Run `cmd` in its own process group (Ctrl-C reaches us, we stop it),
        its output to a temp log, handing it `sock`; wait until it answers."""
        self._log = tempfile.TemporaryFile(mode="w+b", prefix="shmcache-server-")  # noqa: SIM115 (read by log() after the server stops; freed with the object)
        try:
            self.proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                pass_fds=(sock.fileno(),) if sock is not None else (),
                start_new_session=True,
            )
        finally:
            if sock is not None:
                sock.close()  # the server holds its own copy
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise GunicornError(f"gunicorn exited with code {self.proc.returncode} during startup:\n{self.log_tail()}")
            try:
                self.get("/stats", timeout=2)
                return
            except GunicornError as e:  # it answered, with an error: no point waiting
                raise GunicornError(f"gunicorn is up but the app fails: {e}\n{self.log_tail()}") from None
            except (OSError, ValueError) as e:  # not listening/answering yet
                last = e
                time.sleep(0.05)
        raise GunicornError(f"gunicorn did not answer within {self.startup_timeout}s ({last!r}):\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the master and wait; SIGKILL its process group if needed.
        Returns the master's exit code. Safe to call more than once."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                p.wait(5)
        # Workers exit with the master; make sure none outlives it.
        self._kill_group()
        return p.returncode

    def _kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the session we created for it
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- observing --
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def master_pid(self) -> int:
        return self.proc.pid

    def worker_pids(self) -> set[int]:
        """Current worker pids (the master's children), read from /proc."""
        return children(self.proc.pid)

    def log_tail(self, n: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-n:]

    # -- HTTP --
    def get(self, path: str, timeout: float = 10.0) -> dict:
        """GET path, decoded from JSON; GunicornError on a non-2xx answer."""
        try:
            return get_json(self.base_url + path, timeout=timeout)
        except HTTPStatusError as e:
            raise GunicornError(str(e)) from None

    def get_many(self, paths: list[str], concurrency: int = 8) -> list[dict]:
        """GET every path, `concurrency` at a time (so several workers are
        busy at once and the answers come from different pids); results are in
        the order of `paths`."""
        with ThreadPoolExecutor(concurrency) as ex:
            return list(ex.map(self.get, paths))

    def get_from_other_pid(
        self, path: str, not_pid: int, attempts: int = 400, concurrency: int = 4, with_tries: bool = False
    ):
        """GET path until a worker other than `not_pid` answers (bursts of
        concurrent requests so one worker cannot take them all); returns
        that answer, or (answer, requests made) if with_tries. Raises
        GunicornError after `attempts` requests."""
        tried = 0
        while tried < attempts:
            rs = self.get_many([path] * concurrency, concurrency)
            tried += concurrency
            for r in rs:
                if r["pid"] != not_pid:
                    return (r, tried) if with_tries else r
        raise GunicornError(f"{attempts} requests for {path} were all served by pid {not_pid}")


class AppServer(Gunicorn):
    """Any HTTP server command (gunicorn, uWSGI, uvicorn, on any app), with
    Gunicorn's readiness (a JSON answer on ``/stats``), stop and HTTP
    helpers. `cmd(fd, port)` gives the argv; the socket bound on `port` is
    passed as `fd` (or closed first if `pass_socket` is False, and the server
    binds the port itself). The app finds its LOCATION in
    SHMCACHE_APP_LOCATION; `pythonpath` is put first on its PYTHONPATH and
    it runs in `pythonpath[-1]`."""

    def __init__(
        self,
        location: str,
        cmd,
        pass_socket: bool = True,
        env: dict | None = None,
        startup_timeout: float = 40.0,
        workers: int = 2,
        pythonpath: tuple[Path, ...] = (),
    ) -> None:
        super().__init__(location, workers=workers, env=env, startup_timeout=startup_timeout)
        self.cmd = cmd
        self.pass_socket = pass_socket
        self.pythonpath = tuple(pythonpath) or (ROOT / "tests" / "apps",)

    def start(self) -> AppServer:
        for attempt in range(3):
            try:
                return self._start()
            except GunicornError as e:  # lost the race for a port that was free a moment ago
                if self.pass_socket or "in use" not in str(e) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start(self) -> AppServer:
        env = self.environment(pythonpath=self.pythonpath, SHMCACHE_APP_LOCATION=self.location)
        if self.pass_socket:
            sock = listening_socket()
            self.port = sock.getsockname()[1]
            cmd = self.cmd(sock.fileno(), self.port)
        else:  # the server binds the address itself (a port free a moment ago)
            sock = None
            self.port = free_port()
            cmd = self.cmd(None, self.port)
        self._launch(cmd, sock, env, self.pythonpath[-1])
        return self
