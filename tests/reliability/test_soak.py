"""The soak test (python -m tools.soak) for one minute: sizes up to MAX_ITEM_SIZE,
overwrites, deletes and TTLs from two writer processes, many times the
cache's capacity; the segment never grows, stats agree with verify(), sets
keep succeeding through eviction and deleted items' memory comes back.
`make soak` runs it for ten minutes."""

from devkit import run_module


def test_soak_one_minute():
    r = run_module("tools.soak", "--seconds", "60", capture_output=True, text=True, timeout=400)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "soak: OK" in out, out
    assert "after drain        items 0, bytes_used 0, verify (0, 0)" in out, out
