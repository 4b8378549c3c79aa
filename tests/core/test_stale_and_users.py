"""Stale segments of other layout versions are removed once nobody is
attached; another user can neither read our segment nor share our cache."""

import fcntl
import os
import subprocess
import sys
import uuid

import pytest

import shmcache


def _fake_old_layout(tag):
    path = f"/dev/shm/shmcache-{os.geteuid()}-{tag}-0000000000000000-v0"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.ftruncate(fd, 4096)
    return path, fd


def test_stale_old_layout_removed_only_when_unattached():
    tag = uuid.uuid4().hex[:8]
    unused, fd1 = _fake_old_layout("old-" + tag)
    os.close(fd1)
    busy, fd2 = _fake_old_layout("busy-" + tag)
    fcntl.flock(fd2, fcntl.LOCK_SH)  # an old-version process still attached
    name = f"stale-{os.getpid()}-{tag}"
    try:
        shmcache.Cache(name, size="3MB", max_item_size="4KB")  # creating a segment collects garbage
        assert not os.path.exists(unused)
        assert os.path.exists(busy)
    finally:
        os.close(fd2)
        if os.path.exists(busy):
            os.unlink(busy)
        shmcache.destroy(name)


CHILD = """
import os, sys
import shmcache  # loaded as root, then privileges are dropped for good
os.setgroups([]); os.setgid(65534); os.setuid(65534)
path = sys.argv[1]
try:
    open(path, "rb").read(1)
    print("READ")
except PermissionError:
    print("DENIED")
c = shmcache.Cache(sys.argv[2], size="3MB", max_item_size="4KB")
print(c._core.segment)
print(repr(c.get("secret")))
shmcache.destroy(sys.argv[2])
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges to another uid")
def test_other_uid_cannot_read_or_share():
    name = f"users-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    c = shmcache.Cache(name, size="3MB", max_item_size="4KB")
    c.set("secret", b"s3cret")
    try:
        path = "/dev/shm" + c._core.segment
        p = subprocess.run(
            [sys.executable, "-c", CHILD, path, name],
            capture_output=True, text=True, timeout=60,
        )
        assert p.returncode == 0, p.stderr
        denied, segment, value = p.stdout.split("\n")[:3]
        assert denied == "DENIED"
        assert segment != c._core.segment and segment.startswith("/shmcache-65534-")
        assert value == "None"
        assert c.get("secret") == b"s3cret"
    finally:
        shmcache.destroy(name)
