"""Redis and memcached for the benchmark: installed if missing (apt-get, as
root), started on loopback / a unix socket in our own temp dir on ports of
our own, and stopped at the end. Nothing else on the host is touched."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from devkit.net import free_port
from devkit.proc import rss_kb, stop

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[bench {time.monotonic() - _T0:5.0f}s] {msg}", flush=True)


def ensure_installed(allow_install: bool) -> dict[str, str]:
    """Make sure redis-server and memcached exist. Returns {program: why it is
    missing} for those still missing."""
    progs = {"redis-server": "redis-server", "memcached": "memcached"}
    missing = [p for p in progs if shutil.which(p) is None]
    if missing and allow_install:
        if os.geteuid() != 0:
            log(f"{', '.join(missing)} missing and not root: cannot apt-get install")
        elif shutil.which("apt-get") is None:
            log(f"{', '.join(missing)} missing and no apt-get")
        else:
            pkgs = [progs[p] for p in missing]
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            cmd = ["apt-get", "install", "-y", "-q", *pkgs]
            log(f"installing {' '.join(pkgs)}: {' '.join(cmd)}")
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                log("apt-get install failed; running apt-get update once and retrying")
                subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
                r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                log(f"apt-get install failed: {r.stderr.strip()[-300:]}")
    why = {}
    for p in progs:
        if shutil.which(p) is None:
            if not allow_install:
                why[p] = f"{p} not installed (--no-install given)"
            elif os.geteuid() != 0:
                why[p] = f"{p} not installed and not root, so not apt-get installed"
            else:
                why[p] = f"{p} not installed and apt-get install {progs[p]} failed"
    return why


def version_of(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001
        return f"unknown ({e})"


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    unix_socket: str | None = None
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        return rss_kb(self.pid) * 1024

    def stop(self) -> None:
        stop(self.proc)


class Servers:
    """Every server this run started; stop_all() ends exactly those."""

    def __init__(self, tmpdir: str) -> None:
        self.tmpdir = tmpdir
        self.running: list[Server] = []

    def _wait_tcp(self, srv: Server, probe: bytes, expect: bytes, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if srv.proc.poll() is not None:
                raise RuntimeError(f"{srv.name} exited with {srv.proc.returncode}: {' '.join(srv.args)}")
            try:
                with socket.create_connection(("127.0.0.1", srv.port), timeout=0.5) as s:
                    s.sendall(probe)
                    if expect in s.recv(64):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{srv.name} did not answer on 127.0.0.1:{srv.port}")

    def start_redis(self, name: str, extra: list[str] | None = None) -> Server:
        d = os.path.join(self.tmpdir, name)
        os.makedirs(d, exist_ok=True)
        port = free_port()
        sock = os.path.join(d, "redis.sock")
        args = [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--unixsocket", sock, "--unixsocketperm", "700", "--dir", d, "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--logfile", os.path.join(d, "redis.log"), *(extra or []),
        ]
        srv = Server(name, subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port, sock, args)
        self.running.append(srv)
        self._wait_tcp(srv, b"PING\r\n", b"+PONG")
        deadline = time.monotonic() + 5
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        return srv

    def start_memcached(self, name: str, mem_mb: int, extra: list[str] | None = None) -> Server:
        port = free_port()
        args = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", str(mem_mb), "-c", "1024", *(extra or [])]
        if os.geteuid() == 0:
            args += ["-u", "root"]  # memcached refuses to run as root without -u
        srv = Server(name, subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port, None, args)
        self.running.append(srv)
        self._wait_tcp(srv, b"version\r\n", b"VERSION")
        return srv

    @contextmanager
    def started(self, start: Callable[[], Server]) -> Iterator[Server]:
        """`with servers.started(lambda: servers.start_redis(...)) as srv:` stops it on the way out."""
        srv = start()
        try:
            yield srv
        finally:
            self.stop(srv)

    def stop(self, srv: Server) -> None:
        srv.stop()
        if srv in self.running:
            self.running.remove(srv)

    def stop_all(self) -> None:
        for srv in list(self.running):
            try:
                srv.stop()
            finally:
                self.running.remove(srv)
