"""TieredCache on the Redis that production runs (issue 24), with real
servers on loopback: a primary and a replica behind three sentinels (a
failover followed with the staleness bound kept, the listener SIGKILLed
during one, sentinels with a password and TLS), an ACL user with the
smallest rule the docs give (and each of the listener's permissions shown to
be needed), a wrong password, mutual TLS, Valkey, and Redis Cluster refused
clearly. Two "hosts" (two LOCATIONs, worker processes each) share the L2."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import redis
from tiered_hosts import PREFIX, Failed, Host, destroy_l1

import shmcache
from devkit.net import free_port
from devkit.redis_server import RedisServer, SentinelSet, TLSFiles, redis_server_path
from devkit.wait import wait_for
from shmcache.tiered import TieredClient

K = f"{PREFIX}:1:"
BOUND = 0.4  # the hosts' MAX_STALENESS

pytestmark = pytest.mark.skipif(
    redis_server_path() is None, reason="redis-server not installed (make test-tools installs it as root)"
)


@pytest.fixture
def sentinels(tmp_path):
    s = SentinelSet(str(tmp_path / "sentinel"))
    yield s
    s.stop()


@pytest.fixture
def hosts(location):
    made = []

    def make(l2, n_hosts=2, **kw):
        for i in range(n_hosts):
            made.append(Host(f"{location}-h{i}", l2, max_staleness=BOUND, **kw))
        for h in made:
            h.wait_live(10)
        return made

    yield make
    for h in made:
        h.close()


def _seen_within(reader, writer, key: str, value, timeout: float = 2.0) -> float:
    """A remote write: `writer` sets, `reader` polls; seconds until seen."""
    reader.send("poll", key, value, timeout)
    time.sleep(0.01)
    writer("set", key, value)
    took = reader.result()
    assert took is not None, f"{value!r} never seen"
    return took


# ---------------------------------------------------------------- Sentinel


@pytest.mark.parametrize("mode, kill_listener", [("sync", False), ("async", False), ("sync", True)],
                         ids=["sync", "async", "listener-killed-too"])  # fmt: skip
def test_a_sentinel_failover_is_followed_with_the_bound_kept(sentinels, hosts, mode, kill_listener):
    use_async = mode == "async"
    a, b = hosts(sentinels.options())
    keys = [K + f"fo{i}" for i in range(4)]
    for k in keys:
        b.set_settled(k, "old", a)
        assert a.workers[0]("get", k) == "old"  # now in A's L1
    old_primary = sentinels.primary.port
    listener = a.listener()
    readers = [w for w in a.workers if w is not listener or not kill_listener][-2:]
    for w in readers:
        w.send("read_loop_tolerant", keys, 9.0, 0.002, use_async)
    time.sleep(0.3)
    os.kill(sentinels.primary.pid, signal.SIGKILL)
    t_kill, kill_ms = time.monotonic(), shmcache._core.monotonic_ms()
    if kill_listener:
        os.kill(listener.pid, signal.SIGKILL)
    # B rewrites every key as soon as writes succeed again.
    writes = {}
    for k in keys:
        start, end, _ = b.workers[0]("set_when_possible", k, "new", 20.0, use_async, timeout=30)
        writes[k] = (start, end)
    t_ok = max(end for _, end in writes.values())
    reads = [x for w in readers for x in w.result(30)]
    assert sentinels.primary_address() == ("127.0.0.1", sentinels.replica.port), "the replica was promoted"
    assert t_ok - t_kill < 15, f"writes succeeded again {t_ok - t_kill:.1f} s after the kill"
    stale = [(k, round(s - writes[k][1], 3), v) for k, s, e, v in reads if s > writes[k][1] + BOUND and v != "new"]
    assert not stale, f"reads past the bound after the write that were not the new value: {stale[:5]}"
    late_errors = [(k, round(s - t_ok, 3), v) for k, s, e, v in reads if s > t_ok + 1.0 and isinstance(v, Failed)]
    assert not late_errors, f"reads failed more than a second after writes succeeded again: {late_errors[:5]}"
    seen = [x for x in reads if x[1] > t_ok and x[3] == "new"]
    assert seen, "A never read the new values"
    # L1 live again within a few seconds, on the new primary, and remote writes seen in ms.
    wait_for(a.live, 5, "A's L1 live again")
    assert a.live_since(kill_ms), "live on a watermark sent after the kill (a new session)"
    alive = a.alive_workers()
    lag = sorted(_seen_within(alive[i % len(alive)], b.workers[1], K + "after", f"v{i}") for i in range(5))
    assert lag[2] < 0.05, f"remote writes seen in {lag} s after the failover"
    stats = alive[0]("stats")
    assert stats["l2_primary"] == f"127.0.0.1:{sentinels.replica.port}" and stats["failovers"] >= 1, stats
    assert stats["l2_primary"] != f"127.0.0.1:{old_primary}"
    if kill_listener:
        assert a.core.listener_pid in {w.pid for w in alive}, "a surviving worker took the listener over"


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="openssl not installed (make test-tools installs it as root)")


@needs_openssl
def test_sentinels_with_a_password_and_tls(tmp_path, hosts):
    tls = TLSFiles.make(str(tmp_path / "certs"))
    s = SentinelSet(str(tmp_path / "sentinel"), sentinel_password="s3ntinel", tls=tls)
    try:
        opts = s.options()
        assert opts["SENTINEL_OPTIONS"]["password"] == "s3ntinel" and opts["SENTINEL_OPTIONS"]["ssl"] is True
        a, b = hosts(opts)
        assert _seen_within(a.workers[0], b.workers[0], K + "tls-sentinel", "v") < 0.5
        bad = {**opts, "SENTINEL_OPTIONS": {**opts["SENTINEL_OPTIONS"], "password": "wrong"}}
        c = TieredClient(a.location + "-bad", bad, key_prefix=PREFIX, size="8MB")
        t0 = time.monotonic()
        with pytest.raises(redis.RedisError):
            c.get(K + "x")
        assert time.monotonic() - t0 < 5, "one clear error within seconds, not a hang"
        destroy_l1(a.location + "-bad")
    finally:
        s.stop()


def test_the_sidecar_takes_the_sentinel_form_as_json(sentinels, location):
    import json

    c = TieredClient(location, sentinels.options(), key_prefix=PREFIX, size="8MB")
    side = subprocess.Popen([sys.executable, "-m", "shmcache", "listen", location, "--l2", json.dumps(sentinels.options()),
                             "--prefix", PREFIX, "--size", "8MB"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for(lambda: c._core.live(1000) and c._core.listener_pid == side.pid, 15, "the sidecar live")
        assert c.stats()["l2_primary"] == f"127.0.0.1:{sentinels.primary.port}"
    finally:
        side.terminate()
        side.wait(10)
        destroy_l1(location)


def test_bad_sentinel_settings_name_the_key(location):
    from shmcache.tiered import parse_django

    good = {"SENTINELS": [["10.0.0.7", 26379]], "SERVICE": "mymaster"}
    for l2, word in [
        ({**good, "SENTINELS": []}, "SENTINELS"),
        ({**good, "SENTINELS": [["10.0.0.7", "26379"]]}, "SENTINELS"),
        ({**good, "SERVICE": ""}, "SERVICE"),
        ({"SENTINELS": good["SENTINELS"]}, "SERVICE"),
        ({**good, "DB": -1}, "DB"),
        ({**good, "OPTIONS": {"db": 1}}, "DB"),
        ({**good, "SENTINEL_OPTIONS": "pw"}, "SENTINEL_OPTIONS"),
        ({**good, "LOCATION": "redis://x"}, "LOCATION"),
        ("redis+cluster://10.0.0.5:7000", "Redis Cluster"),
        ({"LOCATION": ["redis://a", "redis://b"]}, "Redis Cluster"),
    ]:
        with pytest.raises(ValueError, match=word):
            parse_django(location, {"L2": l2})
    assert not os.path.exists("/dev/shm" + shmcache.segment_name(location)), "nothing opened"


# ---------------------------------------------------------------- ACL

# The smallest rule (docs/tiered.md, "Production Redis"): the listener's
# permissions (first line), then the workers' commands.
LISTENER_RULE = "+ping +client|id +client|setname +client|tracking +subscribe &__redis__:invalidate"
WORKER_RULE = ("+get +set +del +exists +pttl +pexpire +persist +mget +incrby +eval +evalsha +script|load +rename "
               "+scan +flushdb +multi +exec")  # fmt: skip


def _acl_server(tmp_path, rule: str) -> RedisServer:
    acl = tmp_path / "users.acl"
    acl.write_text(f"user default off\nuser shm on >s3cret ~{PREFIX}* resetchannels {rule}\n")
    return RedisServer(str(tmp_path / "redis"), ["--aclfile", str(acl)])


def test_an_acl_user_with_the_smallest_documented_rule_works(tmp_path, hosts):
    srv = _acl_server(tmp_path, f"{LISTENER_RULE} {WORKER_RULE}")
    try:
        l2 = f"redis://shm:s3cret@127.0.0.1:{srv.port}/0"
        a, b = hosts(l2)
        assert _seen_within(a.workers[0], b.workers[0], K + "acl", "v") < 0.5
        c = TieredClient(a.location + "-api", l2, key_prefix=PREFIX, size="8MB")
        try:
            c.set(K + "n", 1)
            assert c.incr(K + "n") == 2 and c.get_or_set(K + "g", lambda: "computed") == "computed"
            with c.lock(K + "lk", timeout=5):
                pass
            assert c.keys(K + "*") and c.delete_pattern(K + "n*") == 1
            c.clear()
        finally:
            destroy_l1(a.location + "-api")
    finally:
        srv.stop()


@pytest.mark.parametrize("missing", ["+ping", "+client|id", "+client|setname", "+client|tracking", "+subscribe", "&__redis__:invalidate"])
def test_each_listener_permission_is_needed_and_its_lack_said(tmp_path, location, missing, caplog):
    srv = _acl_server(tmp_path, f"{LISTENER_RULE.replace(missing, '')} {WORKER_RULE}")
    c = TieredClient(location, f"redis://shm:s3cret@127.0.0.1:{srv.port}/0", key_prefix=PREFIX, size="8MB")
    try:
        with caplog.at_level(logging.WARNING, logger="shmcache.tiered"):
            c.set(K + "k", "v")
            assert c.get(K + "k") == "v", "the workers' commands still work: L2 answers"
            c.listen()
            wait_for(lambda: caplog.records, 5, "the listener to say what is wrong")
            time.sleep(1.5)
        assert not c.stats()["live"], "no tracking: L1 is never live"
        text = " ".join(r.getMessage() for r in caplog.records)
        assert "NOPERM" in text or "permission" in text.lower(), text
        assert len(caplog.records) == 1, "said once, not on every retry"
    finally:
        destroy_l1(location)
        srv.stop()


def test_a_wrong_password_is_one_clear_error_within_seconds_and_the_listener_says_it_once(tmp_path, location, caplog):
    srv = _acl_server(tmp_path, f"{LISTENER_RULE} {WORKER_RULE}")
    c = TieredClient(location, f"redis://shm:wrong@127.0.0.1:{srv.port}/0", key_prefix=PREFIX, size="8MB")
    try:
        with caplog.at_level(logging.WARNING, logger="shmcache.tiered"):
            for call in (lambda: c.get(K + "k"), lambda: c.set(K + "k", 1), lambda: c.incr(K + "k")):
                t0 = time.monotonic()
                with pytest.raises(redis.AuthenticationError):
                    call()
                assert time.monotonic() - t0 < 2
            c.listen()
            time.sleep(4)  # the listener retries meanwhile
        said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(said) == 1, [r.getMessage() for r in caplog.records]
        assert "WRONGPASS" in said[0] or "Authentication" in said[0], said
    finally:
        destroy_l1(location)
        srv.stop()


# ---------------------------------------------------------------- TLS, Valkey, Cluster


@needs_openssl
def test_mutual_tls(tmp_path, hosts, location):
    tls = TLSFiles.make(str(tmp_path / "certs"))
    srv = RedisServer(str(tmp_path / "redis"), tls=tls)
    try:
        l2 = {"LOCATION": srv.url, "OPTIONS": tls.client_options()}
        a, b = hosts(l2)
        assert _seen_within(a.workers[0], b.workers[0], K + "tls", "v") < 0.5
        no_cert = TieredClient(location + "-nocert", {"LOCATION": srv.url, "OPTIONS": {"ssl_ca_certs": tls.ca}},
                               key_prefix=PREFIX, size="8MB")  # fmt: skip
        t0 = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            no_cert.get(K + "x")
        assert time.monotonic() - t0 < 5
        destroy_l1(location + "-nocert")
    finally:
        srv.stop()


valkey = pytest.mark.skipif(
    redis_server_path("valkey-server") is None,
    reason="valkey-server not installed (make test-tools installs it from bookworm-backports as root)",
)


@valkey
def test_valkey_two_hosts_stay_coherent(tmp_path, hosts):
    srv = RedisServer(str(tmp_path / "valkey"), exe="valkey-server")
    try:
        a, b = hosts(srv.url)
        lag = sorted(_seen_within(a.workers[i % 3], b.workers[i % 3], K + "valkey", f"v{i}") for i in range(7))
        assert lag[3] < 0.05 and lag[-1] < BOUND, lag
        assert a.workers[0]("stats")["l2_primary"] == f"127.0.0.1:{srv.port}"
    finally:
        srv.stop()


@valkey
def test_djangos_cache_suite_on_tiered_with_valkey(tmp_path):
    import django

    from devkit.django_suite import TIERED_MODULE, run_base_cache_tests

    srv = RedisServer(str(tmp_path / "valkey"), exe="valkey-server")
    try:
        run_base_cache_tests(sys.executable, django.get_version(), module=TIERED_MODULE,
                             extra_env={"SHMCACHE_SUITE_L2": srv.url})  # fmt: skip
    finally:
        srv.stop()


def test_a_cluster_node_is_refused_with_a_clear_error(tmp_path, location, caplog):
    # The bus port is given: by default it is the port + 10000, which an
    # ephemeral port above 55535 leaves no room for (redis-server exits).
    srv = RedisServer(str(tmp_path / "cluster"), ["--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                                                  "--cluster-config-file", str(tmp_path / "nodes.conf")])  # fmt: skip
    c = TieredClient(location, srv.url, key_prefix=PREFIX, size="8MB")
    try:
        with caplog.at_level(logging.ERROR, logger="shmcache.tiered"):
            c.listen()
            wait_for(lambda: caplog.records, 5, "the listener's error")
        assert "Redis Cluster" in caplog.records[0].getMessage() and not c.stats()["live"]
    finally:
        destroy_l1(location)
        srv.stop()


def test_stats_and_prometheus_show_the_primary_and_failovers(sentinels, location):
    from shmcache import metrics
    from shmcache.tiered import l1_location

    c = TieredClient(location, sentinels.options(), key_prefix=PREFIX, size="8MB")
    try:
        c.listen()
        wait_for(lambda: c.stats()["live"], 10, "live")
        s = c.stats()
        assert s["l2_primary"] == f"127.0.0.1:{sentinels.primary.port}" and s["failovers"] == 0
        assert "sentinel service 'mymaster'" in s["l2"] and "not_live_ms" in s
        text = metrics.prometheus_text({l1_location(location, PREFIX): metrics.read_stats(l1_location(location, PREFIX))})
        assert f'primary="127.0.0.1:{sentinels.primary.port}"}} 1' in text
        assert "shmcache_tier_failovers_total{" in text and "shmcache_tier_not_live_ms_total{" in text
    finally:
        destroy_l1(location)
