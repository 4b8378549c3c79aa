"""Sockets and HTTP for the tests, tools and bench (standard library only)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request


class HTTPStatusError(RuntimeError):
    """A non-2xx answer; `status` is its code."""

    def __init__(self, url: str, status: int, reason: str, body: bytes) -> None:
        super().__init__(f"GET {url} -> HTTP {status} {reason}: {body[:200]!r}")
        self.status = status


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A bound, listening socket on a free port. A server can inherit it
    (gunicorn ``--bind fd://N``), so there is no window in which another
    process could take the port between choosing it and binding it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(128)
    return s


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (prefer listening_socket() when the
    server can inherit a socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10.0):
    """GET url on a fresh connection (``Connection: close``) and decode the
    JSON body. Raises HTTPStatusError on a non-2xx answer; OSError (refused,
    reset, timed out) and ValueError (not JSON) pass through."""
    req = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        try:
            body = e.read()
        except Exception:  # the server died mid-answer: the status is what we have
            body = b""
        raise HTTPStatusError(url, e.code, e.reason, body) from None
    return json.loads(body)
