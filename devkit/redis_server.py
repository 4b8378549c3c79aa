"""A redis-server (or valkey-server) of our own for tests and the bench: the
Debian package's binary on loopback, a free port, no persistence (``--save
"" --appendonly no``), in a directory of ours; stopped (and restartable on
the same port) by whoever started it.

Also the set-ups production runs (issue 24): TLS with client certificates
(`TLSFiles`, made with openssl), ACL users (``extra`` arguments or
``ACL SETUSER`` afterwards), Valkey (``exe="valkey-server"``), and a primary
with a replica watched by three sentinels (`SentinelSet`)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass

from devkit.net import free_port
from devkit.proc import stop


def redis_server_path(exe: str = "redis-server") -> str | None:
    return shutil.which(exe) or (os.path.exists(f"/usr/bin/{exe}") and f"/usr/bin/{exe}") or None


@dataclass(frozen=True)
class TLSFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate,
    signed by that CA (openssl, in `directory`)."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    @classmethod
    def make(cls, directory: str) -> TLSFiles:
        os.makedirs(directory, exist_ok=True)

        def path(name: str) -> str:
            return os.path.join(directory, name)

        def run(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=shmcache test CA",
            "-keyout", path("ca.key"), "-out", path("ca.crt"))  # fmt: skip
        with open(path("san.ext"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for who in ("server", "client"):
            run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}", "-keyout", path(f"{who}.key"),
                "-out", path(f"{who}.csr"))  # fmt: skip
            run("x509", "-req", "-in", path(f"{who}.csr"), "-CA", path("ca.crt"), "-CAkey", path("ca.key"),
                "-CAcreateserial", "-days", "2", "-extfile", path("san.ext"), "-out", path(f"{who}.crt"))  # fmt: skip
        return cls(path("ca.crt"), path("server.crt"), path("server.key"), path("client.crt"), path("client.key"))

    def server_args(self) -> list[str]:
        """redis-server arguments: TLS only, client certificates required."""
        return ["--tls-cert-file", self.server_cert, "--tls-key-file", self.server_key,
                "--tls-ca-cert-file", self.ca, "--tls-auth-clients", "yes"]  # fmt: skip

    def client_options(self) -> dict:
        """redis-py connection options for a client presenting its certificate."""
        return {"ssl_certfile": self.client_cert, "ssl_keyfile": self.client_key, "ssl_ca_certs": self.ca}

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


class RedisServer:
    """A server on a free port of 127.0.0.1. With `tls`, it listens with TLS
    only (plain port 0, the port given as ``--tls-port``). It is up once it
    answers a PING at all (a server whose default user is off answers NOAUTH)."""

    def __init__(
        self,
        directory: str,
        extra: list[str] | None = None,
        exe: str = "redis-server",
        tls: TLSFiles | None = None,
    ) -> None:
        path = redis_server_path(exe)
        if path is None:
            raise FileNotFoundError(f"{exe} is not installed (Debian package {exe})")
        self.exe, self.dir, self.extra, self.tls = path, directory, list(extra or []), tls
        os.makedirs(directory, exist_ok=True)
        self.port = free_port()
        scheme = "rediss" if tls else "redis"
        self.url = f"{scheme}://127.0.0.1:{self.port}/0"  # the port stays across restarts
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _args(self) -> list[str]:
        ports = ["--port", "0", "--tls-port", str(self.port), *self.tls.server_args()] if self.tls else ["--port", str(self.port)]
        return [
            self.exe, *ports, "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
            "--logfile", os.path.join(self.dir, "redis.log"), *self.extra,
        ]  # fmt: skip

    def start(self) -> None:
        self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_answering()

    def _wait_answering(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.exe} exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                if self._ping().startswith((b"+PONG", b"-NOAUTH", b"-NOPERM", b"-ERR")):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.exe} did not answer on 127.0.0.1:{self.port}")

    def _log_tail(self, lines: int = 3) -> str:
        """The last lines of the server's log, where it says why it stopped."""
        try:
            with open(os.path.join(self.dir, "redis.log"), errors="replace") as f:
                return " | ".join(line.strip() for line in f.readlines()[-lines:])
        except OSError as e:
            return f"no log in {self.dir} ({e})"

    def _ping(self) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
            s = self.tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1") if self.tls else raw
            s.sendall(b"PING\r\n")
            return s.recv(64)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port (its data is gone: no persistence)."""
        self.stop()
        self.start()


class SentinelSet:
    """A primary and a replica (redis-server), watched by three sentinels
    (the same binary with ``--sentinel``) as SERVICE, with a short
    down-after (`down_after_ms`): a primary SIGKILLed is replaced by the
    replica within a few seconds. The sentinels may ask for a password
    (`sentinel_password`) and speak TLS only (`tls`); the servers are plain.
    `options()` is the L2 setting that finds the primary through them."""

    SERVICE = "mymaster"

    def __init__(self, directory: str, down_after_ms: int = 1000, exe: str = "redis-server",
                 sentinel_password: str | None = None, tls: TLSFiles | None = None) -> None:  # fmt: skip
        self.dir, self.password, self.tls = directory, sentinel_password, tls
        self.primary = RedisServer(os.path.join(directory, "primary"), exe=exe)
        self.replica = RedisServer(os.path.join(directory, "replica"), ["--replicaof", "127.0.0.1", str(self.primary.port)], exe=exe)
        self.servers = [self.primary, self.replica]
        self.sentinels: list[subprocess.Popen] = []
        self.sentinel_ports: list[int] = []
        try:
            for i in range(3):
                self._start_sentinel(os.path.join(directory, f"sentinel{i}"), down_after_ms)
            self.wait_for(lambda: self.primary_address() == ("127.0.0.1", self.primary.port), 15, "the sentinels")
            self.wait_for(self._replica_in_sync, 15, "the replica in sync")
        except BaseException:
            self.stop()
            raise

    def _start_sentinel(self, d: str, down_after_ms: int) -> None:
        os.makedirs(d, exist_ok=True)
        port = free_port()
        listen = [f"port 0\ntls-port {port}", f"tls-cert-file {self.tls.server_cert}", f"tls-key-file {self.tls.server_key}",
                  f"tls-ca-cert-file {self.tls.ca}", "tls-auth-clients yes"] if self.tls else [f"port {port}"]  # fmt: skip
        lines = [
            *listen, "bind 127.0.0.1", f"dir {d}", f"logfile {os.path.join(d, 'sentinel.log')}",
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 2",
            f"sentinel down-after-milliseconds {self.SERVICE} {down_after_ms}",
            f"sentinel failover-timeout {self.SERVICE} 5000",
            f"sentinel parallel-syncs {self.SERVICE} 1",
            *([f"requirepass {self.password}", f"sentinel sentinel-pass {self.password}"] if self.password else []),
        ]  # fmt: skip
        conf = os.path.join(d, "sentinel.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.sentinels.append(subprocess.Popen([self.primary.exe, conf, "--sentinel"], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))  # fmt: skip
        self.sentinel_ports.append(port)

    @property
    def addresses(self) -> list[list]:
        return [["127.0.0.1", p] for p in self.sentinel_ports]

    def sentinel_options(self) -> dict:
        """redis-py arguments for connections to the sentinels."""
        opts: dict = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
        if self.password:
            opts["password"] = self.password
        if self.tls:
            opts.update(ssl=True, **self.tls.client_options())
        return opts

    def options(self, **server_options) -> dict:
        """The L2 setting (TieredCache's OPTIONS L2, TieredClient's l2=)."""
        return {"SENTINELS": self.addresses, "SERVICE": self.SERVICE, "DB": 0,
                "OPTIONS": {"socket_timeout": 1.0, "socket_connect_timeout": 0.5, **server_options},
                "SENTINEL_OPTIONS": self.sentinel_options()}  # fmt: skip

    def primary_address(self) -> tuple[str, int] | None:
        """The primary as a sentinel that answers names it, or None."""
        import redis

        for port in self.sentinel_ports:
            try:
                r = redis.Redis("127.0.0.1", port, **self.sentinel_options())
                addr = r.execute_command("SENTINEL", "get-master-addr-by-name", self.SERVICE)
                r.close()
            except redis.RedisError:
                continue
            if addr:
                return addr[0].decode(), int(addr[1])
        return None

    def _replica_in_sync(self) -> bool:
        import redis

        try:
            return redis.Redis("127.0.0.1", self.replica.port).info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False

    @staticmethod
    def wait_for(cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.05)
        raise RuntimeError(f"timed out waiting for {what}")

    def stop(self) -> None:
        for p in self.sentinels:
            stop(p)
        for s in self.servers:
            s.stop()
