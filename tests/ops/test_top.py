"""`python -m shmcache top`: frames printed with --once/--count while other
processes work the cache, and the live view in a real terminal (tmux)."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

import shmcache


def run(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "shmcache", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def busy(location):
    """The cache of ``location`` worked by another process (sets and gets,
    all on keys of shard 0 then of every shard) until the test ends."""
    shmcache.Cache(location, size="8MB", max_item_size="4KB", shards=8)
    code = textwrap.dedent(f"""
        import shmcache, time
        c = shmcache.Cache({location!r}, size="8MB", max_item_size="4KB", shards=8)
        hot = [k for k in (f"h{{i}}" for i in range(2000)) if c._core.shard_of(k) == 3][:50]
        print("ready", flush=True)
        end = time.time() + 60
        i = 0
        while time.time() < end:
            for k in hot:
                c.set(k, i)
                c.get(k)
                c.get(k + "-miss")
            c.set(f"cold{{i % 500}}", i)
            i += 1
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    try:
        yield location
    finally:
        p.kill()
        p.wait()


def _rate(text, label):
    m = re.search(rf"{label} ([\d,.]+)", text)
    assert m, (label, text)
    return float(m.group(1).replace(",", ""))


def test_once_prints_one_frame_with_rates_and_busiest_shard(busy):
    p = run("top", busy, "--once", "--interval", "0.3")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "\x1b" not in out  # plain text, no redraw escapes
    assert out.startswith(f"shmcache top  {busy}  (")
    assert _rate(out, "ops/s  gets") > 100 and _rate(out, "sets") > 50
    hit = re.search(r"hit ratio ([\d.]+)% \(last 0\.\d+s\)", out)
    assert hit and 40 <= float(hit.group(1)) <= 60, out  # one hit, one miss per key: ~50%
    assert "memory used" in out and "evictions" in out and "expirations" in out and "lock timeouts" in out
    table = out.split("busiest shards")[1].splitlines()[2:]
    assert len(table) == 8, out  # every shard fits in 40 lines
    assert table[0].split()[0] == "3", out  # the hot shard first
    assert out.count("shmcache top") == 1


def test_count_prints_that_many_frames(busy):
    t = time.monotonic()
    p = run("top", busy, "--count", "3", "--interval", "0.1")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("shmcache top") == 3
    assert time.monotonic() - t >= 0.3


def test_top_errors(location):
    p = run("top", location, "--once", "--interval", "0.1")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"no process on this host has created the cache '{location}' yet" in p.stderr, p.stderr
    p = run("top", location, "--interval", "0")
    assert p.returncode == 2 and "--interval" in p.stderr
    p = run("top", location, "--once", "--count", "2")
    assert p.returncode == 2 and "not allowed" in p.stderr
    p = run("top")
    assert p.returncode == 2 and "location" in p.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (make test installs it)")
def test_live_view_in_a_real_terminal_redraws_and_quits_on_q(busy):
    sess = f"shmtop-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "TERM": "xterm-256color"}
    cmd = f"{sys.executable} -m shmcache top {busy} --interval 0.2; echo exited-$?; sleep 30"
    tmux = ["tmux", "-L", sess]  # a private server: no user's tmux touched
    subprocess.run([*tmux, "new-session", "-d", "-s", sess, "-x", "110", "-y", "30", cmd], check=True, env=env)
    try:

        def screen():
            return subprocess.run([*tmux, "capture-pane", "-p", "-t", sess], capture_output=True, text=True).stdout

        def wait_for(pred, secs=10):
            end = time.monotonic() + secs
            while time.monotonic() < end:
                s = screen()
                if pred(s):
                    return s
                time.sleep(0.1)
            raise AssertionError(f"screen never matched:\n{screen()}")

        first = wait_for(lambda s: "busiest shards" in s and "ops/s  gets" in s)
        assert first.count("shmcache top") == 1  # redrawn in place, not scrolled
        clock = re.search(r"\d\d:\d\d:\d\d", first).group(0)
        # It refreshes: the sets counter moves on between frames.
        wait_for(lambda s: "busiest shards" in s and re.search(r"\d\d:\d\d:\d\d", s).group(0) != clock, 5)
        lines = first.splitlines()
        assert all(len(line) <= 110 for line in lines)
        rows = first.split("busiest shards")[1].strip().splitlines()[1:]
        assert 1 <= len(rows) <= 30 - 9  # cut to the terminal's height
        subprocess.run([*tmux, "send-keys", "-t", sess, "q"], check=True)
        after = wait_for(lambda s: "exited-0" in s, 5)
        assert "busiest shards" not in after  # the alternate screen was left
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
