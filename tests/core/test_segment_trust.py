"""The segment is refused when someone else made it, its mode is wider than
0600, or its header is of another layout; names never escape /dev/shm."""

import os
import struct

import pytest

import shmcache


def path(name):
    return "/dev/shm" + shmcache.segment_name(name)


def test_segment_is_private_to_its_user(name):
    shmcache.Cache(name, size="3MB", max_item_size="4KB")
    st = os.stat(path(name))
    assert st.st_mode & 0o777 == 0o600
    assert st.st_uid == os.geteuid()


def test_wider_mode_is_refused_and_data_untouched(name):
    c = shmcache.Cache(name, size="3MB", max_item_size="4KB")
    c.set("k", b"v")
    os.chmod(path(name), 0o644)
    from shmcache import _core

    with pytest.raises(shmcache.SegmentError, match="mode 644"):
        _core.Cache(name, 3 * 2**20, 4096, 0, 0.1)
    os.chmod(path(name), 0o600)
    assert c.get("k") == b"v"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file owned by another uid")
def test_segment_of_another_user_is_refused(name):
    from shmcache import _core

    fd = os.open(path(name), os.O_CREAT | os.O_RDWR, 0o600)
    os.ftruncate(fd, 3 * 2**20)
    os.close(fd)
    os.chown(path(name), 54321, -1)
    with pytest.raises(shmcache.SegmentError, match="owned by uid 54321"):
        _core.Cache(name, 3 * 2**20, 4096, 0, 0.1)


def test_other_layout_version_is_not_read(name):
    from shmcache import _core

    c = shmcache.Cache(name, size="3MB", max_item_size="4KB")
    c.set("k", b"v")
    with open(path(name), "r+b") as f:  # layout_version is the u32 at offset 8
        f.seek(8)
        (v,) = struct.unpack("<I", f.read(4))
        f.seek(8)
        f.write(struct.pack("<I", v + 1))
    with pytest.raises(shmcache.SegmentError, match="unknown format"):
        _core.Cache(name, 3 * 2**20, 4096, 0, 0.1)


def test_location_cannot_escape_dev_shm():
    for loc in ["../../etc/passwd", "a/b", "..", "x" * 200]:
        n = shmcache.segment_name(loc)
        assert n.startswith("/shmcache-") and "/" not in n[1:] and ".." not in n
    for bad in ["", "a\0b", "x" * 201]:
        with pytest.raises(ValueError, match="LOCATION"):
            shmcache.segment_name(bad)
