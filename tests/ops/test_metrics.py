"""Prometheus metrics: `stats --format prometheus` and the prometheus_client
collector of shmcache.metrics, read by other processes than the writers,
and parsed by prometheus_client's own parser (the format is checked, not
our idea of it)."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

import shmcache
from devkit import ROOT
from shmcache import metrics

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "shmcache", *args], capture_output=True, text=True, timeout=60, **kw)


def _writer(location, n_sets, n_gets):
    """In another process: n_sets sets, n_gets gets (n_sets of them hits)."""
    code = textwrap.dedent(f"""
        import shmcache
        c = shmcache.Cache({location!r}, size="4MB", max_item_size="4KB")
        for i in range({n_sets}):
            c.set(f"k{{i}}", i)
        for i in range({n_gets}):
            c.get(f"k{{i}}")
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _samples(text):
    """{(sample name, location): value} from exposition text."""
    out, types = {}, {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("shmcache_"):
            continue  # the default registry's python_*/process_* metrics
        types[fam.name] = fam.type
        for s in fam.samples:
            out[(s.name, s.labels["location"])] = s.value
            assert set(s.labels) == {"location", "segment"}, s.labels
    return out, types


def test_cli_prometheus_format_parses_and_matches_stats(location):
    _writer(location, 40, 100)
    p = run("stats", location, "--format", "prometheus")
    assert p.returncode == 0, p.stderr
    text = p.stdout
    assert "# HELP shmcache_hits Gets that found a live item." in text
    assert "# TYPE shmcache_hits counter" in text
    assert "# TYPE shmcache_items gauge" in text
    samples, types = _samples(text)
    assert types["shmcache_hits"] == "counter" and types["shmcache_memory_used_bytes"] == "gauge"
    assert samples[("shmcache_hits_total", location)] == 40
    assert samples[("shmcache_misses_total", location)] == 60
    assert samples[("shmcache_sets_total", location)] == 40
    assert samples[("shmcache_items", location)] == 40
    assert samples[("shmcache_up", location)] == 1
    st = json.loads(run("stats", location).stdout)  # json stays the default
    assert samples[("shmcache_memory_used_bytes", location)] == st["bytes_used"]
    assert samples[("shmcache_memory_free_bytes", location)] == st["bytes_free"]
    assert samples[("shmcache_segment_size_bytes", location)] == st["segment_size"]
    assert samples[("shmcache_max_item_size_bytes", location)] == 4096
    assert json.loads(run("stats", location, "--format", "json").stdout)["items"] == 40
    for line in text.splitlines():
        if not line.startswith("#"):
            assert line.startswith("shmcache_"), line
            name = line.split("{")[0]
            assert name.endswith("_total") == (types[name.removesuffix("_total")] == "counter"), line


def test_cli_prometheus_of_a_missing_cache_fails_like_json(location):
    p = run("stats", location, "--format", "prometheus")
    assert p.returncode == 2 and not p.stdout
    assert f"no process on this host has created the cache '{location}' yet" in p.stderr, p.stderr


def test_text_escapes_label_values():
    loc = 'we"ird\\name\nx'
    text = metrics.prometheus_text({loc: None})
    samples, _ = _samples(text)
    assert samples[("shmcache_up", loc)] == 0
    assert ("shmcache_items", loc) not in samples


def test_collector_reports_live_counters_from_other_processes(location):
    other = location + "-absent"
    c = shmcache.Cache(location, size="4MB", max_item_size="4KB")
    reg = prometheus_client.CollectorRegistry()
    collector = metrics.register([location, other], registry=reg)
    assert isinstance(collector, metrics.ShmCacheCollector)
    assert reg.get_sample_value("shmcache_up", {"location": other, "segment": shmcache.segment_name(other)}) == 0
    labels = {"location": location, "segment": c.stats()["segment"]}
    assert reg.get_sample_value("shmcache_hits_total", labels) == 0
    _writer(location, 10, 25)  # another process
    assert reg.get_sample_value("shmcache_hits_total", labels) == 10
    assert reg.get_sample_value("shmcache_misses_total", labels) == 15
    assert reg.get_sample_value("shmcache_items", labels) == 10
    text = prometheus_client.generate_latest(reg).decode()
    samples, types = _samples(text)
    assert types["shmcache_evictions"] == "counter" and samples[("shmcache_sets_total", location)] == 10
    # The segment of `other` appears later: the next scrape sees it, nothing created before.
    assert not os.path.exists("/dev/shm" + shmcache.segment_name(other))
    try:
        _writer(other, 3, 3)
        assert reg.get_sample_value("shmcache_up", {"location": other, "segment": shmcache.segment_name(other)}) == 1
    finally:
        shmcache.destroy(other)


def test_collector_of_cache_objects_and_django_caches(location):
    c = shmcache.Cache(location, size="4MB", max_item_size="4KB")
    c.set("a", 1)
    reg = prometheus_client.CollectorRegistry()
    metrics.register([c], registry=reg)
    assert reg.get_sample_value("shmcache_items", {"location": location, "segment": c.stats()["segment"]}) == 1
    with pytest.raises(TypeError, match="not a shmcache cache or LOCATION"):
        metrics.ShmCacheCollector([object()]).collect()
    with pytest.raises(ValueError, match="at least one"):
        metrics.ShmCacheCollector([])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_register_django_serves_every_shmcache_alias_over_http(location, tmp_path):
    """A process with Django settings (two shmcache aliases on one LOCATION,
    one on another, a LocMem alias) serves /metrics with prometheus_client's
    HTTP server; a scrape over HTTP sees both LOCATIONs once each."""
    loc2 = location + "-b"
    port = _free_port()
    code = textwrap.dedent(f"""
        import django, time
        from django.conf import settings
        B = "shmcache.django.SharedMemoryCache"
        settings.configure(CACHES={{
            "default": {{"BACKEND": B, "LOCATION": {location!r}, "OPTIONS": {{"SIZE": "4MB"}}}},
            "same": {{"BACKEND": B, "LOCATION": {location!r}, "OPTIONS": {{"SIZE": "4MB"}}}},
            "other": {{"BACKEND": B, "LOCATION": {loc2!r}}},
            "local": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        }})
        django.setup()
        from django.core.cache import caches
        import prometheus_client
        from shmcache.metrics import register_django
        register_django()
        caches["default"].set("x", 1)
        caches["default"].get("x")
        prometheus_client.start_http_server({port}, addr="127.0.0.1")
        print("ready", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        p.kill()
        p.wait()
        shmcache.destroy(loc2)
    samples, _ = _samples(text)
    assert samples[("shmcache_up", location)] == 1 and samples[("shmcache_hits_total", location)] == 1
    assert samples[("shmcache_up", loc2)] == 0  # never used: no segment, none created
    ups = [line for line in text.splitlines() if line.startswith("shmcache_up{")]
    assert len(ups) == 2, ups


def test_without_prometheus_client_the_collector_names_the_package(location):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["prometheus_client"] = None  # as if not installed
        import shmcache
        from shmcache import metrics
        c = shmcache.Cache({location!r}, size="4MB")
        assert "shmcache_items" in metrics.prometheus_text({{{location!r}: c.stats()}})
        try:
            metrics.ShmCacheCollector([{location!r}])
        except ImportError as e:
            print(e)
        else:
            raise SystemExit("no ImportError")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "prometheus_client" in p.stdout and "pip install" in p.stdout
    # And the package does not require it.
    with open(ROOT / "pyproject.toml") as f:
        assert "prometheus" not in f.read()


def test_scrape_is_read_only(location):
    c = shmcache.Cache(location, size="4MB")
    c.set("a", 1)
    before = c.stats()
    reg = prometheus_client.CollectorRegistry()
    metrics.register([location], registry=reg)
    for _ in range(3):
        prometheus_client.generate_latest(reg)
        time.sleep(0.01)
    after = c.stats()
    assert {k: after[k] for k in ("hits", "misses", "sets", "items")} == {
        k: before[k] for k in ("hits", "misses", "sets", "items")
    }
