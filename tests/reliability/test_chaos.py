"""Short chaos runs (the long ones are `make chaos`, see docs/reliability-chaos.md):

* python -m tools.chaos: worker processes SIGKILLed at random moments, some inside
  the shard lock mid-write, while they read and write self-checking values;
* the same with faults injected on purpose, to show the checks catch them;
* python -m tools.chaos --gunicorn: a real gunicorn recycling and timing out workers
  under client load.

Each run is a subprocess judged by the JSON it writes.
"""

import json

import pytest

from devkit import run_module


def run_chaos(tmp_path, *args, timeout=180):
    out = tmp_path / "chaos.json"
    p = run_module("tools.chaos", *args, "--json", str(out), "--quiet", capture_output=True, text=True, timeout=timeout)
    assert out.exists(), f"no JSON written (exit {p.returncode}):\n{p.stdout}\n{p.stderr[-3000:]}"
    return p, json.loads(out.read_text())


def test_process_chaos_short(tmp_path):
    p, r = run_chaos(tmp_path, "--seconds", "15", "--procs", "4")
    report = f"\n{p.stdout}\n{p.stderr[-3000:]}"
    assert r["ops_total"] > 10_000, report
    assert r["kills"] >= 50, report
    assert r["kills_in_lock"] >= 5, report
    assert r["lock_recoveries"] >= r["kills_in_lock"], report
    assert r["shard_wipes_unexplained"] == 0, report  # kills mid-write recover the shard, never wipe it
    assert r["evictions"] > 0, report  # the cache is small enough to evict
    assert r["ops_blocked_over_bound"] == 0, report
    assert r["torn_values"] == 0 and r["foreign_values"] == 0, report
    assert r["expired_values_returned"] == 0 and r["ttl_values_checked"] > 0, report
    assert r["incr"]["ok"] and r["incr"]["duplicates"] == 0, report
    assert r["worker_crashes"] == 0 and r["worker_errors"] == 0, report
    lk = r["app_lock"]  # cache.lock(): holders killed inside it, taken over, never two at once
    assert lk["kills_holding_the_lock"] >= 3 and lk["rmw_confirmed"] > 1000, report
    assert lk["two_live_holders"] == 0 and lk["acquires_given_up"] == 0 and lk["counter_ok"], report
    assert lk["lock_segment_shard_wipes"] == 0, report
    assert r["verify"]["ok"] and r["verify_counter_segment"]["ok"], report
    assert r["pass"] and p.returncode == 0, report


def test_chaos_checks_catch_injected_faults(tmp_path):
    """The checks are live: values torn, misplaced or expired on purpose, and
    an operation slower than its bound, are each counted and fail the run."""
    # Few kills: an injected 0.35 s stall must usually live long enough to be timed.
    p, r = run_chaos(tmp_path, "--seconds", "4", "--procs", "2", "--kill-rate", "1",
                     "--inject", "torn,foreign,expired,blocked")
    report = f"\n{p.stdout}\n{p.stderr[-3000:]}"
    assert p.returncode == 1 and not r["pass"], report
    assert r["torn_values"] > 0, report
    assert r["foreign_values"] > 0, report
    assert r["expired_values_returned"] > 0, report
    assert r["ops_blocked_over_bound"] > 0, report
    assert r["incr"]["ok"], report  # what was not injected still passes


def test_gunicorn_chaos_short(tmp_path):
    pytest.importorskip("gunicorn")
    p, r = run_chaos(tmp_path, "--gunicorn", "--seconds", "20")
    report = f"\n{p.stdout}\n{p.stderr[-3000:]}\n{json.dumps(r, indent=1)[:4000]}"
    assert r["non_200_not_deliberate"] == 0, report
    assert r["requests_over_bound"] == 0 and r["client_threads_hung"] == 0, report
    assert r["segment_inodes_seen"] == 1 and r["segment_missing_samples"] == 0, report
    assert r["incr"]["ok"], report
    assert r["wrong_values"] == 0, report
    assert r["worker_recycles_max_requests"] > 0, report
    assert r["worker_timeouts"]["hung_after_serving"] == 0, report
    assert r["master_alive"], report
    assert r["pass"] and p.returncode == 0, report
