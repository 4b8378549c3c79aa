"""A redis-server of our own for tests and the bench: the Debian package's
binary on loopback, a free port, no persistence (``--save "" --appendonly
no``), in a directory of ours; stopped (and restartable on the same port)
by whoever started it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

from devkit.net import free_port
from devkit.proc import stop


def redis_server_path() -> str | None:
    return shutil.which("redis-server") or (os.path.exists("/usr/bin/redis-server") and "/usr/bin/redis-server") or None


class RedisServer:
    def __init__(self, directory: str, extra: list[str] | None = None) -> None:
        exe = redis_server_path()
        if exe is None:
            raise FileNotFoundError("redis-server is not installed (Debian package redis-server)")
        self.exe, self.dir, self.extra = exe, directory, list(extra or [])
        os.makedirs(directory, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"  # the port stays across restarts
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        args = [
            self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
            "--logfile", os.path.join(self.dir, "redis.log"), *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} (see {self.dir}/redis.log)")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if b"+PONG" in s.recv(64):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port (its data is gone: no persistence)."""
        self.stop()
        self.start()
