"""Linux /proc readers: a process's state, parent, children and memory;
and stopping a child."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM `proc` if it runs, SIGKILL it if it has not exited within
    `grace` s; reaped either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def stop_pid(pid: int, grace: float = 15.0) -> None:
    """SIGTERM the process `pid` (not our child: another's, e.g. a
    gunicorn master started by SIGUSR2) if it runs, SIGKILL it if it has
    not exited within `grace` s."""
    if not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def read_proc(pid: int | str, what: str) -> str:
    """/proc/<pid>/<what> as text, "" if it cannot be read (the process is gone)."""
    try:
        with open(f"/proc/{pid}/{what}") as f:
            return f.read()
    except OSError:
        return ""


def _stat_fields(text: str) -> list[str]:
    """The fields of a /proc/<pid>/stat line after "(comm)": [state, ppid, ...]."""
    return text.rsplit(")", 1)[1].split() if ")" in text else []


def proc_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat (R, S, T, Z, ...), "?" if it is gone."""
    f = _stat_fields(read_proc(pid, "stat"))
    return f[0] if f else "?"


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    return proc_state(pid) not in ("?", "Z")


def children(pid: int) -> set[int]:
    """Live (not zombie) child processes of `pid`."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        f = _stat_fields(read_proc(stat.parent.name, "stat"))
        if len(f) > 1 and int(f[1]) == pid and f[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def rss_kb(pid: int | str = "self", field: str = "VmRSS") -> int:
    """A memory line of /proc/<pid>/status in KiB: VmRSS (all resident
    memory, shared pages included) or RssAnon (private resident memory: a
    shared-memory segment is not counted). Raises LookupError if absent."""
    for line in read_proc(pid, "status").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"no {field} in /proc/{pid}/status")
