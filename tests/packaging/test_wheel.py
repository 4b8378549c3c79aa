"""The shipped wheel (``make wheel``: dist/), checked and installed as a user
would: ``auditwheel show`` must find it manylinux_2_17 (glibc 2.17 at most);
it is installed, with no Rust on PATH and only binary packages allowed, into
fresh venvs of CPythons found on this machine, and run there.

* ``make test`` (short): the oldest CPython (>= 3.10), the two-process smoke
  test (tests/apps/wheel_smoke.py).
* ``make test-matrix`` (SHMCACHE_MATRIX=1): the oldest CPython with Django
  4.2 LTS, 3.11 with Django 5.2 LTS, 3.13 with Django 6.0, 3.12 and 3.13
  with Django 6.1 (which needs 3.12 or newer); in each, Django is installed
  first and ``<wheel>[django,tiered]`` after it must leave it as it was (the
  extra allows every tested release), then the smoke test and Django's own
  cache suite on SharedMemoryCache and on TieredCache, with a redis-server
  of ours (devkit/django_suite.py).

An interpreter that is absent is skipped with a message naming it. Without
a wheel in dist/ the tests skip, unless SHMCACHE_WHEEL_REQUIRED is set (as
the Makefile does after building it), when they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devkit import ROOT, TEST_APPS
from devkit.django_suite import MATRIX_PAIRS, run_both
from devkit.redis_server import redis_server_path

DIST = ROOT / "dist"
MIN_PYTHON = (3, 10)  # pyproject's requires-python
SMOKE = TEST_APPS / "wheel_smoke.py"
MATRIX = bool(os.environ.get("SHMCACHE_MATRIX"))


def cargo_version() -> str:
    m = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M)
    assert m
    return m.group(1)


def built(pattern: str) -> Path:
    found = sorted(DIST.glob(pattern))
    if not found:
        msg = f"no {pattern} in {DIST}: run `make wheel`"
        if os.environ.get("SHMCACHE_WHEEL_REQUIRED"):
            pytest.fail(msg)
        pytest.skip(msg)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def wheel() -> Path:
    return built(f"shmcache-{cargo_version()}-cp310-abi3-*.whl")


def _interpreter_info(exe: str) -> tuple[tuple[int, int, int], bool] | None:
    """(version, free-threaded) of a CPython, or None if it does not run."""
    code = ("import sys, sysconfig, json; print(json.dumps([sys.implementation.name, list(sys.version_info[:3]),"
            " bool(sysconfig.get_config_var('Py_GIL_DISABLED'))]))")
    try:
        p = subprocess.run([exe, "-c", code], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    if p.returncode != 0:
        return None
    impl, version, free_threaded = json.loads(p.stdout)
    return (tuple(version), free_threaded) if impl == "cpython" else None


def find_pythons() -> dict[tuple[int, int], str]:
    """The newest patch release of each CPython minor >= 3.10 on this
    machine (pyenv's versions, then python3.X on PATH); free-threaded builds
    are left out: the abi3 wheel does not install there (docs/install.md)."""
    candidates = []
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if root.is_dir():
        candidates += [d / "bin" / "python3" for d in root.iterdir() if re.fullmatch(r"\d+\.\d+\.\d+", d.name)]
    for minor in range(MIN_PYTHON[1], 20):
        exe = shutil.which(f"python3.{minor}")
        if exe:
            candidates.append(Path(exe))
    found: dict[tuple[int, int], tuple[tuple[int, int, int], str]] = {}
    for exe in candidates:
        info = _interpreter_info(str(exe)) if exe.exists() else None
        if info is None or info[1] or info[0][:2] < MIN_PYTHON:
            continue
        version = info[0]
        if version[:2] not in found or version > found[version[:2]][0]:
            found[version[:2]] = (version, str(exe))
    return {k: v[1] for k, v in sorted(found.items())}


PYTHONS = find_pythons()


def pick(which: str) -> tuple[tuple[int, int], str]:
    """"oldest" or "3.11": that interpreter, or a skip saying it is absent."""
    if not PYTHONS:
        pytest.skip(f"no CPython >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} found (pyenv versions, python3.X on PATH)")
    if which == "oldest":
        minor = min(PYTHONS)
    else:
        minor = tuple(int(x) for x in which.split("."))
        if minor not in PYTHONS:
            pytest.skip(f"CPython {which} not found (have {sorted(PYTHONS)})")
    return minor, PYTHONS[minor]


def no_rust_env(venv: Path) -> dict:
    """This environment with the venv first on PATH and no directory that
    holds cargo, rustc or rustup (nor the dev venv, nor PYTHONPATH)."""
    rust = ("cargo", "rustc", "rustup")
    keep = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not any((Path(d) / t).exists() for t in rust) and Path(d).resolve() != Path(sys.prefix, "bin").resolve()]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *keep])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def make_venv(python: str, venv: Path, wheel: Path, *requirements: str, extras: str = "") -> tuple[str, dict]:
    """A fresh venv of `python` with `requirements` (from the index, binary
    only), then the wheel (with `extras`, e.g. "django,tiered"), installed
    with no Rust on PATH."""
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    env = no_rust_env(venv)
    py = str(venv / "bin" / "python")
    check = "import shutil, sys; sys.exit(any(shutil.which(t) for t in ('cargo', 'rustc', 'rustup')))"
    assert shutil.which("cargo", path=env["PATH"]) is None
    assert subprocess.run([py, "-c", check], env=env, timeout=60).returncode == 0, "Rust still on PATH"
    pip = [py, "-m", "pip", "install", "-q", "--only-binary=:all:"]
    if requirements:
        p = subprocess.run([*pip, *requirements], env=env, cwd=venv, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
    index = [] if extras else ["--no-index"]  # the wheel alone needs nothing from the index
    target = f"{wheel}[{extras}]" if extras else str(wheel)
    p = subprocess.run([*pip, *index, target], env=env, cwd=venv, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return py, env


def smoke(py: str, env: dict, venv: Path, minor: tuple[int, int]) -> dict:
    # From the venv directory: the repository's python/ must not be importable.
    p = subprocess.run([py, str(SMOKE)], env=env, cwd=venv, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    info = json.loads(p.stdout.strip().splitlines()[-1])
    assert info["ok"] and info["version"] == cargo_version(), info
    assert tuple(info["python"][:2]) == minor, info
    assert Path(info["core"]).resolve().is_relative_to(venv.resolve()), f"not the installed wheel: {info}"
    assert Path(info["core"]).name == "_core.abi3.so", info
    return info


def test_auditwheel_finds_manylinux_2_17(wheel):
    auditwheel = Path(sys.executable).parent / "auditwheel"
    if not auditwheel.exists():
        pytest.skip("auditwheel is not installed (requirements-wheel.txt)")
    p = subprocess.run([str(auditwheel), "show", str(wheel)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    text = " ".join(p.stdout.split())
    assert 'is consistent with the following platform tag: "manylinux_2_17_x86_64"' in text, p.stdout
    assert wheel.name.endswith("-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"), wheel.name


def test_sdist_holds_the_sources_and_no_binary():
    import tarfile

    sdist = built(f"shmcache-{cargo_version()}.tar.gz")
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"Cargo.toml", "Cargo.lock", "build.rs", "LICENSE", "README.md", "pyproject.toml", "PKG-INFO",
            "src/lib.rs", "src/python.rs", "python/shmcache/__init__.py", "python/shmcache/py.typed"} <= names
    assert not [n for n in names if n.endswith((".so", ".whl")) or n.startswith(("target/", ".venv/", "dist/"))]


def test_wheel_in_the_oldest_python(wheel, tmp_path):
    """make test's share: one fresh venv (the oldest CPython), the smoke test."""
    minor, python = pick("oldest")
    venv = tmp_path / f"venv-{minor[0]}.{minor[1]}"
    py, env = make_venv(python, venv, wheel)
    smoke(py, env, venv, minor)


@pytest.mark.skipif(not MATRIX, reason="the full matrix runs in `make test-matrix` (SHMCACHE_MATRIX=1)")
@pytest.mark.parametrize("which, django", MATRIX_PAIRS)
def test_wheel_matrix(wheel, tmp_path, which, django):
    minor, python = pick(which)
    if redis_server_path() is None:
        pytest.skip("redis-server not installed (TieredCache's run of the suite; make test-tools installs it as root)")
    venv = tmp_path / f"venv-{minor[0]}.{minor[1]}-django-{django}"
    py, env = make_venv(python, venv, wheel, f"Django=={django}.*", extras="django,tiered")
    version = subprocess.run([py, "-c", "import django; print(django.get_version())"], env=env, cwd=venv,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version.startswith(django + "."), f"installing the wheel's [django] extra moved Django to {version}"
    smoke(py, env, venv, minor)
    ran = run_both(py, version, env=env)
    print(f"CPython {minor[0]}.{minor[1]} + Django {version}:", ran)


@pytest.mark.skipif(not MATRIX, reason="the full matrix runs in `make test-matrix` (SHMCACHE_MATRIX=1)")
@pytest.mark.parametrize("minor", sorted(PYTHONS), ids=lambda m: f"{m[0]}.{m[1]}")
def test_wheel_smoke_in_every_python(wheel, tmp_path, minor):
    """The one abi3 wheel in every CPython >= 3.10 present (3.12 too, which
    the Django matrix leaves out)."""
    venv = tmp_path / f"venv-{minor[0]}.{minor[1]}"
    py, env = make_venv(PYTHONS[minor], venv, wheel)
    smoke(py, env, venv, minor)
