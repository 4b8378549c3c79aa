"""The command line: list, stats, verify, clear, destroy on a real segment."""

import json
import os
import subprocess
import sys
import uuid

import shmcache


def run(*args):
    return subprocess.run([sys.executable, "-m", "shmcache", *args], capture_output=True, text=True, timeout=60)


def test_cli_round_trip():
    name = f"cli-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    c = shmcache.Cache(name, size="3MB", max_item_size="4KB")
    try:
        c.set("a", b"1")
        c.set("b", 2)
        p = run("stats", name)
        assert p.returncode == 0, p.stderr
        s = json.loads(p.stdout)
        assert s["items"] == 2 and s["max_item_size"] == 4096
        p = run("verify", name)
        assert p.returncode == 0 and "2 items" in p.stdout, p.stdout + p.stderr
        assert shmcache.segment_name(name)[1:] in run("list").stdout
        p = run("clear", name)
        assert p.returncode == 0
        assert c.get("a") is None and c.stats()["items"] == 0
        assert run("destroy", name).returncode == 0
        assert not os.path.exists("/dev/shm" + shmcache.segment_name(name))
        p = run("stats", name)
        assert p.returncode == 2 and f"no process on this host has created the cache '{name}' yet" in p.stderr, p.stderr
    finally:
        shmcache.destroy(name)


def test_admin_commands_on_a_cache_nobody_created_say_so_and_create_nothing():
    name = f"cli-none-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    for args in (["stats"], ["stats", "--format", "prometheus"], ["verify"], ["clear"], ["dump"], ["top", "--once"]):
        cmd = [args[0], name, *args[1:]] if args[0] != "dump" else ["dump", name, os.devnull]
        p = run(*cmd)
        assert p.returncode != 0, (cmd, p.stdout)
        assert f"no process on this host has created the cache '{name}' yet" in p.stderr, (cmd, p.stderr)
        assert "Traceback" not in p.stderr, p.stderr
    assert not os.path.exists("/dev/shm" + shmcache.segment_name(name)), "an admin command created the cache"
