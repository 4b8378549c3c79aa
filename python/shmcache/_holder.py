"""Who holds a lock, and whether that process is still alive.

A lock (or a get_or_set computation) is stored as a key whose value is a
token naming its holder: ``pid:starttime:pidns:random``. `starttime` (from
/proc/<pid>/stat, clock ticks since boot) tells a live holder from a
recycled pid; `pidns` (the inode of /proc/self/ns/pid) tells whether the
holder's pids mean anything here. A waiter that finds the holder dead takes
the lock over at once, whatever its timeout; one in another pid namespace
(containers sharing /dev/shm) cannot judge, and waits for the timeout.
"""

from __future__ import annotations

import os
import uuid

_me: str | None = None


def _starttime(pid: int | str) -> str | None:
    """Field 22 of /proc/<pid>/stat, None if there is no such live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: it exited while we read
        return None
    fields = stat.rsplit(b")", 1)[-1].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):  # a zombie has died: it only waits to be reaped
        return None
    return fields[19].decode()


def _pidns() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "?"


def me() -> str:
    """This process: pid, start time and pid namespace."""
    global _me
    if _me is None:
        _me = f"{os.getpid()}:{_starttime('self')}:{_pidns()}"
    return _me


def _forget() -> None:
    global _me
    _me = None


os.register_at_fork(after_in_child=_forget)


def new_token() -> str:
    return f"{me()}:{uuid.uuid4().hex}"


def is_dead(token: object) -> bool:
    """True only when the token's holder is known to have exited: same pid
    namespace, and no live process with its pid and start time."""
    if isinstance(token, bytes):
        token = token.decode("utf-8", "replace")
    if not isinstance(token, str):
        return False
    parts = token.split(":")
    if len(parts) != 4 or not parts[0].isdigit():
        return False
    pid, start, ns, _ = parts
    if ns != _pidns() or ns == "?":
        return False  # another pid namespace: its pids are not ours to look up
    return _starttime(pid) != start
