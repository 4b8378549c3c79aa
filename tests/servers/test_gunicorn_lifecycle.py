"""Servers' lifecycles around one shared segment: gunicorn with and without
--preload, HUP reload, USR2 upgrade (old and new masters side by side), a
worker SIGKILLed or recycled, a full master restart; uWSGI (prefork and
--lazy-apps) and uvicorn --workers 2 attach and share.

The cache must outlive every worker and master: values written before are
read after, and the segment in /dev/shm keeps its inode throughout.

uWSGI and uvicorn come from tests/requirements-lifecycle.txt; their tests
are skipped when they are not installed.
"""

import os
import shutil
import signal
import sys
import uuid
from pathlib import Path

import pytest

import shmcache
from devkit import TEST_APPS
from devkit.cache_worker import Worker
from devkit.gunicorn_demo import DEMO_DIR, AppServer, Gunicorn, gunicorn_argv
from devkit.proc import alive, children, stop_pid
from devkit.wait import wait_for

pytest.importorskip("gunicorn")

TESTS = TEST_APPS  # lifecycle_app.py, gunicorn_conf_master_attach.py

WORKERS = 2


@pytest.fixture
def location():
    name = f"life-srv-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    shmcache.destroy(name)


def seg_inode(location: str) -> int:
    return os.stat("/dev/shm" + shmcache.segment_name(location)).st_ino


def write_values(server, n: int, tag: str) -> dict:
    values = {f"lc{i}": f"{tag}-{i}" for i in range(n)}
    for r in server.get_many([f"/set/{k}/{v}" for k, v in values.items()], concurrency=4):
        assert r["value"] == values[r["key"]]
    return values


def assert_values(server, values: dict) -> set[int]:
    """Every value reads back (4 at a time, so several workers answer);
    returns the pids that answered."""
    keys = list(values)
    pids = set()
    for k, r in zip(keys, server.get_many([f"/get/{k}" for k in keys], concurrency=4)):
        assert r["value"] == values[k], f"pid {r['pid']} read {k}={r['value']!r}, expected {values[k]!r}"
        pids.add(r["pid"])
    return pids


def pids_answering(server, n: int = 24) -> set[int]:
    return {r["pid"] for r in server.get_many(["/stats"] * n, concurrency=4)}


class Server(AppServer):
    """An AppServer of the lifecycle app (tests/apps/lifecycle_app.py) and the demo site."""

    def __init__(self, location, cmd, pass_socket=True, env=None, startup_timeout=40.0):
        super().__init__(location, cmd, pass_socket=pass_socket, env=env, startup_timeout=startup_timeout,
                         workers=WORKERS, pythonpath=(DEMO_DIR, TESTS))


def first_generation(server, location: str, tag: str) -> tuple[int, set[int], dict, int]:
    """Start `server` and write 10 values through it: (its master, its
    workers, the values, the segment's inode)."""
    server.start()
    master = server.master_pid
    values = write_values(server, 10, tag)
    return master, children(master), values, seg_inode(location)


def written_by_one_read_by_other(server, old_workers: set[int], new_workers: set[int]) -> None:
    """Two generations side by side share one cache: a value written through
    a worker of one is read through a worker of the other."""
    for i in range(4):
        w = server.get(f"/set/side{i}/v{i}")
        other = new_workers if w["pid"] in old_workers else old_workers

        def read_by_other(i=i, other=other):
            for r in server.get_many([f"/get/side{i}"] * 8):
                if r["pid"] in other:
                    return r

        r = wait_for(read_by_other, 30, "a read from the other generation", every=0)
        assert r["value"] == f"v{i}", r


def usr2_new_generation(server, old_master: int, old_workers: set[int]) -> tuple[int, set[int]]:
    """After SIGUSR2: the new master (the old one's child by fork + exec that
    has workers) and its workers, once both generations answer on the socket."""

    def new_master_ready():
        for pid in children(old_master) - old_workers:
            if len(children(pid)) >= WORKERS:
                return pid

    new_master = wait_for(new_master_ready, 40, "the new master and its workers")
    new_workers = children(new_master)

    def both_answer():
        seen = pids_answering(server, 16)
        return seen & old_workers and seen & new_workers

    wait_for(both_answer, 40, "answers from old and new workers", every=0)
    return new_master, new_workers


def gunicorn_cmd(*extra, bind_address=False, script=False):
    def cmd(fd, port):
        bind = f"127.0.0.1:{port}" if bind_address else f"fd://{fd}"
        exe = [str(Path(sys.executable).parent / "gunicorn")] if script else None
        return gunicorn_argv(bind, WORKERS, extra, exe)

    return cmd


# ---------------------------------------------------------------- gunicorn


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_gunicorn_workers_share_with_and_without_preload(location, preload):
    extra = ("--preload", "-c", str(TESTS / "gunicorn_conf_master_attach.py")) if preload else ()
    with Gunicorn(location, workers=WORKERS, extra_args=extra) as g:
        values = write_values(g, 12, "pre" if preload else "nopre")
        readers = assert_values(g, values)
        for k, v in list(values.items())[:3]:  # each read by a worker other than its writer too
            writer = g.get(f"/set/{k}/{v}x")["pid"]
            r = g.get_from_other_pid(f"/get/{k}", not_pid=writer)
            assert r["value"] == v + "x"
            readers.add(r["pid"])
        assert len(readers) >= 2
        assert g.get("/stats")["stats"]["segment"] == shmcache.segment_name(location)
        if preload:
            # the master attached before forking; every worker sees what it wrote
            master = g.master_pid
            for r in g.get_many(["/get/master-attached"] * 8):
                assert r["value"] == master and r["pid"] != master
        inode = seg_inode(location)
    # the segment outlives the server
    assert seg_inode(location) == inode


def test_gunicorn_hup_reload_keeps_the_cache(location):
    with Gunicorn(location, workers=WORKERS) as g:
        values = write_values(g, 10, "hup")
        for i in range(1, 4):
            assert g.get("/incr/hits")["value"] == i
        inode = seg_inode(location)
        old = g.worker_pids()
        assert len(old) == WORKERS
        g.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(g.worker_pids()) == WORKERS and not (g.worker_pids() & old), 40, "new workers after HUP")
        readers = assert_values(g, values)
        assert not readers & old, "answered by a worker from before the reload"
        assert g.get("/incr/hits")["value"] == 4
        assert g.proc.poll() is None
        assert seg_inode(location) == inode
        assert g.get("/stats")["stats"]["lock_recoveries"] == 0


def test_gunicorn_usr2_upgrade_old_and_new_masters_share(location):
    # USR2 re-execs the master with its own argv, which gets its listeners
    # from GUNICORN_FD. With --bind fd://N the new master would look for fd N
    # again, so bind an address here; and run the `gunicorn` script: re-exec
    # of `python -m gunicorn` runs gunicorn/__main__.py as a script, whose
    # directory then shadows the stdlib `http` package.
    if not (Path(sys.executable).parent / "gunicorn").exists():
        pytest.skip("no gunicorn script beside this interpreter")
    s = Server(location, gunicorn_cmd(bind_address=True, script=True), pass_socket=False)
    new_master = None
    try:
        old_master, old_workers, values, inode = first_generation(s, location, "usr2")
        assert len(old_workers) == WORKERS

        s.proc.send_signal(signal.SIGUSR2)
        # Side by side: both generations answer on the socket, on one cache.
        new_master, new_workers = usr2_new_generation(s, old_master, old_workers)
        # A value written through one generation is read through the other.
        written_by_one_read_by_other(s, old_workers, new_workers)
        assert_values(s, values)
        assert seg_inode(location) == inode

        # Retire the old master: its workers stop, the new generation serves.
        s.proc.send_signal(signal.SIGTERM)
        s.proc.wait(20)
        wait_for(lambda: not any(alive(p) for p in old_workers), 20, "the old workers to exit")
        assert alive(new_master)
        readers = assert_values(s, values)
        assert readers <= children(new_master)
        assert seg_inode(location) == inode
    finally:
        if new_master:
            stop_pid(new_master)
        s.stop()


def test_gunicorn_worker_killed_or_recycled_and_master_restarted(location):
    values = {}
    with Gunicorn(location, workers=WORKERS, extra_args=("--max-requests", "6", "--max-requests-jitter", "2")) as g:
        values = write_values(g, 10, "gen1")
        inode = seg_inode(location)
        before = g.worker_pids()
        # max-requests recycles workers: the values stay
        pids = set()
        for _ in range(4):
            pids |= assert_values(g, values)
        assert len(pids | before) > WORKERS, "no worker was recycled"
        # a worker SIGKILLed: gunicorn replaces it; the values stay
        victim = next(iter(g.worker_pids()))
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in g.worker_pids() and len(g.worker_pids()) == WORKERS, 30, "a replacement worker")
        assert_values(g, values)
        assert seg_inode(location) == inode
    # the master stopped: the segment stays, with its values
    assert seg_inode(location) == inode
    with Gunicorn(location, workers=WORKERS) as g2:
        assert_values(g2, values)
        assert g2.get("/incr/after-restart")["value"] == 1
        assert seg_inode(location) == inode
        assert g2.get("/stats")["stats"]["items"] >= len(values)


# ---------------------------------------------------------------- uWSGI


def _uwsgi() -> str | None:
    venv = Path(sys.executable).parent / "uwsgi"
    return str(venv) if venv.exists() else shutil.which("uwsgi")


@pytest.mark.parametrize("lazy", [False, True], ids=["prefork", "lazy-apps"])
def test_uwsgi_workers_attach_and_share(location, lazy):
    uwsgi = _uwsgi()
    if uwsgi is None:
        pytest.skip("uWSGI is not installed (pip install -r tests/requirements-lifecycle.txt)")

    def cmd(fd, port):
        return [uwsgi, "--master", "--processes", str(WORKERS), "--http-socket", f"127.0.0.1:{port}",
                "--module", "lifecycle_app:application", "--pythonpath", str(TESTS), "--virtualenv", sys.prefix,
                "--need-app", "--die-on-term", "--disable-logging", "--strict", *(["--lazy-apps"] if lazy else [])]

    with Server(location, cmd, pass_socket=False) as s:
        infos = {}
        wait_for(lambda: len(infos) >= WORKERS or infos.update({i["pid"]: i for i in s.get_many(["/info"] * 8)}),
                 30, "answers from both uWSGI workers", every=0)
        assert len(infos) >= WORKERS
        for pid, info in infos.items():
            assert info["inode"] == seg_inode(location)
            if lazy:
                assert info["import_pid"] == pid  # each worker attached itself
            else:
                assert info["import_pid"] == s.master_pid != pid  # attached in the master, then forked
        values = write_values(s, 10, "uwsgi")
        assert len(assert_values(s, values) | set(infos)) >= 2
        writer = s.get("/set/x/1")["pid"]
        assert s.get_from_other_pid("/get/x", not_pid=writer)["value"] == "1"
        for i in range(1, 6):
            assert s.get("/incr/n")["value"] == i
        inode = seg_inode(location)
    with Server(location, cmd, pass_socket=False) as s2:  # restarted: the same segment, the same values
        assert_values(s2, values)
        assert seg_inode(location) == inode


# ---------------------------------------------------------------- uvicorn


def test_uvicorn_workers_attach_and_share(location):
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install -r tests/requirements-lifecycle.txt)")

    def cmd(fd, port):
        return [sys.executable, "-m", "uvicorn", "lifecycle_app:app", "--workers", str(WORKERS), "--port", str(port),
                "--host", "127.0.0.1", "--app-dir", str(TESTS), "--log-level", "warning", "--no-access-log"]

    with Server(location, cmd, pass_socket=False) as s:
        infos = {}
        wait_for(lambda: len(infos) >= WORKERS or infos.update({i["pid"]: i for i in s.get_many(["/info"] * 8)}),
                 30, "answers from both uvicorn workers", every=0)
        for pid, info in infos.items():
            assert info["import_pid"] == pid  # spawned workers each attach
            assert info["inode"] == seg_inode(location)
        values = write_values(s, 10, "asgi")
        assert_values(s, values)
        writer = s.get("/set/x/1")["pid"]
        assert s.get_from_other_pid("/get/x", not_pid=writer)["value"] == "1"
        for i in range(1, 6):
            assert s.get("/incr/n")["value"] == i
        inode = seg_inode(location)
    with Server(location, cmd, pass_socket=False) as s2:
        assert_values(s2, values)
        assert s2.get("/incr/n")["value"] == 6
        assert seg_inode(location) == inode


# ---------------------------------------------------------------- a new SIZE


def sized_gunicorn_cmd(*extra, bind_address=False, script=False):
    """gunicorn serving tests/apps/lifecycle_app.py (which reads its SIZE from
    SHMCACHE_APP_SIZE_FILE in each worker, so a HUP picks up a new one)."""

    def cmd(fd, port):
        bind = f"127.0.0.1:{port}" if bind_address else f"fd://{fd}"
        exe = [str(Path(sys.executable).parent / "gunicorn")] if script else [sys.executable, "-m", "gunicorn"]
        return [*exe, "--bind", bind, "--workers", str(WORKERS), "--pythonpath", str(TESTS),
                "--graceful-timeout", "5", "--timeout", "30", "--log-level", "info", *extra,
                "lifecycle_app:application"]

    return cmd


def infos(server, n=16):
    return {r["pid"]: r for r in server.get_many(["/info"] * n, concurrency=4)}


def test_gunicorn_hup_with_a_new_size_is_no_outage_then_takes_over(location, tmp_path):
    """Workers re-forked by HUP with SIZE changed from 8MB to 16MB while the
    cache is in use: every request succeeds, the new workers share the
    segment in use (its geometry), the values are kept; once the last
    process asking for 8MB is gone, the cache is migrated to 16MB with its
    values, without a manual step."""
    size_file = tmp_path / "size"
    size_file.write_text("8MB")
    s = Server(location, sized_gunicorn_cmd(), env={"SHMCACHE_APP_SIZE_FILE": str(size_file)})
    # The master keeps the segment in use across the HUP (as a --preload
    # master or a sibling server would): another process attaches too.
    keep = Worker(location, "8MB")
    try:
        s.start()
        values = write_values(s, 10, "hupsize")
        inode = seg_inode(location)
        old = s.worker_pids()
        size_file.write_text("16MB")
        s.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(s.worker_pids()) == WORKERS and not (s.worker_pids() & old), 40, "new workers after HUP")
        seen = infos(s)
        assert not set(seen) & old
        for r in seen.values():
            assert r["requested"][0] > r["geometry"][0], r  # asked for 16MB, runs on the 8MB segment
            assert r["inode"] == inode
        assert_values(s, values)
        assert s.get("/set/after/hup")["value"] == "hup"
        assert keep("get", key="after") == "hup"
        keep("delete", key="lc0")
        assert s.get("/get/lc0")["value"] is None
        assert seg_inode(location) == inode
        # The last process asking for 8MB goes: the new workers migrate the
        # cache to 16MB at their next check, with its items.
        keep.quit()

        def all_on_16mb():
            seen = infos(s)
            return all(r["geometry"] == r["requested"] for r in seen.values()) and seen

        for r in wait_for(all_on_16mb, 20, "the workers to run on a 16MB segment").values():
            assert r["geometry"][0] > 12 << 20 and r["inode"] == seg_inode(location) != inode, r
        del values["lc0"]
        assert_values(s, values)
        assert s.get("/get/lc0")["value"] is None and s.get("/get/after")["value"] == "hup"
    finally:
        s.stop()
        keep.quit()


def test_gunicorn_usr2_with_a_new_size_old_and_new_masters_share_then_new_takes_over(location, tmp_path):
    """USR2 with SIZE changed: old and new masters' workers serve side by side
    on one segment; a write or delete through either generation is seen by
    the other; no request fails; once the old master and its workers are
    gone, the new workers migrate the cache to the new SIZE with its values."""
    if not (Path(sys.executable).parent / "gunicorn").exists():
        pytest.skip("no gunicorn script beside this interpreter")
    size_file = tmp_path / "size"
    size_file.write_text("8MB")
    s = Server(location, sized_gunicorn_cmd(bind_address=True, script=True), pass_socket=False,
               env={"SHMCACHE_APP_SIZE_FILE": str(size_file)})
    new_master = None
    try:
        old_master, old_workers, values, inode = first_generation(s, location, "usr2size")
        size_file.write_text("16MB")
        s.proc.send_signal(signal.SIGUSR2)
        new_master, new_workers = usr2_new_generation(s, old_master, old_workers)
        for r in infos(s, 24).values():
            assert r["inode"] == inode, r  # one segment: no split brain
            if r["pid"] in new_workers:
                assert r["requested"][0] > r["geometry"][0], r
        written_by_one_read_by_other(s, old_workers, new_workers)
        assert_values(s, values)
        s.proc.send_signal(signal.SIGTERM)
        s.proc.wait(20)
        wait_for(lambda: not any(alive(p) for p in old_workers), 20, "the old workers to exit")
        assert assert_values(s, values) <= children(new_master)
        # Only the new generation runs: it migrates the cache to 16MB.

        def all_on_16mb():
            seen = infos(s)
            return all(r["geometry"] == r["requested"] for r in seen.values()) and seen

        for r in wait_for(all_on_16mb, 20, "the new workers to run on a 16MB segment").values():
            assert r["geometry"][0] > 12 << 20 and r["inode"] != inode, r
        assert_values(s, values)
    finally:
        if new_master:
            stop_pid(new_master)
        s.stop()
