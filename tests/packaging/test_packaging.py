"""What a user sees before running anything: the index metadata of the wheel,
the release workflow (valid, and making the same choices as `make wheel`),
and the Linux-only guards (build.rs for an sdist build elsewhere, the
ImportError at import elsewhere)."""

from __future__ import annotations

import email
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devkit import ROOT
from devkit.django_suite import MATRIX_PAIRS

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
TESTED_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]  # one abi3 wheel, here (make test-matrix; docs/install.md)
WORKFLOW_PYTHONS = ["3.14"]  # tested by the release workflow only: no 3.14 can be installed here
TESTED_DJANGOS = ["4.2", "5.2", "6.0", "6.1"]  # make test-matrix and the release workflow


def cargo_version() -> str:
    return re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)


def makefile_var(name: str) -> str:
    m = re.search(rf"^{name}\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, name
    return m.group(1).strip()


@pytest.fixture(scope="module")
def metadata():
    wheels = sorted((ROOT / "dist").glob(f"shmcache-{cargo_version()}-*.whl"))
    if not wheels:
        pytest.skip("no wheel in dist/: run `make wheel`")
    with zipfile.ZipFile(wheels[0]) as z:
        meta = email.message_from_bytes(z.read(f"shmcache-{cargo_version()}.dist-info/METADATA"))
        names = z.namelist()
    return meta, names


def test_metadata_a_user_sees_on_the_index(metadata):
    meta, names = metadata
    assert meta["Name"] == "shmcache" and meta["Version"] == cargo_version()
    assert meta["License-Expression"] == "MIT" and meta["License-File"] == "LICENSE"
    assert f"shmcache-{cargo_version()}.dist-info/licenses/LICENSE" in names
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().lstrip().startswith("# shmcache")
    assert "## Installation" in meta.get_payload()
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(urls), urls
    assert "django" in meta["Keywords"].split(",")
    classifiers = set(meta.get_all("Classifier"))
    pythons = TESTED_PYTHONS + WORKFLOW_PYTHONS
    assert {f"Programming Language :: Python :: {v}" for v in pythons} <= classifiers
    assert {f"Framework :: Django :: {v}" for v in TESTED_DJANGOS} <= classifiers
    assert not {c for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)} - {
        f"Programming Language :: Python :: {v}" for v in pythons}, "a Python classifier that is not tested"
    assert not {c for c in classifiers if re.fullmatch(r"Framework :: Django :: \d\.\d", c)} - {
        f"Framework :: Django :: {v}" for v in TESTED_DJANGOS}, "a Django classifier that is not tested"
    assert "Operating System :: POSIX :: Linux" in classifiers
    # The django extra allows exactly the tested feature releases.
    (req,) = [r for r in meta.get_all("Requires-Dist") if r.lower().startswith("django")]
    assert "extra == 'django'" in req, req
    try:
        from packaging.requirements import Requirement
    except ImportError:
        pytest.skip("packaging is not installed")
    spec = Requirement(req.split(";")[0]).specifier
    for v, ok in [("4.1.13", False), ("4.2.20", True), ("5.0.14", False), ("5.1.15", False), ("5.2.8", True),
                  ("6.0.1", True), ("6.1", True), ("6.1.3", True), ("6.2", False), ("6.2a1", False)]:
        assert spec.contains(v) is ok, (v, str(spec))


def test_each_stack_has_its_extra_and_its_face_is_in_the_wheel(metadata):
    meta, names = metadata
    extras = set(meta.get_all("Provides-Extra"))
    assert {"django", "tiered", "flask", "litestar", "fastapi", "aiocache"} <= extras, extras
    requires = " ".join(meta.get_all("Requires-Dist"))
    for extra, package in (("flask", "flask-caching"), ("flask", "cachelib"), ("litestar", "litestar"),
                           ("fastapi", "fastapi-cache2"), ("aiocache", "aiocache")):
        assert re.search(rf"{package}[^;]*; extra == '{extra}'", requires, re.I), (extra, package)
    for face in ("cachelib", "litestar", "fastapi_cache", "aiocache"):
        assert f"shmcache/{face}.py" in names, face


def test_classifiers_exist():
    trove = pytest.importorskip("trove_classifiers", reason="trove-classifiers is not installed (requirements-wheel.txt)")
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("classifiers = [", 1)[1].split("]", 1)[0]
    listed = re.findall(r'"([^"]+)"', block)
    assert listed and not set(listed) - trove.classifiers, set(listed) - trove.classifiers


def test_version_is_only_in_cargo_toml():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and not re.search(r"^version\s*=", text, re.M)


def test_release_workflow_is_valid_and_mirrors_make_wheel():
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (requirements-wheel.txt)")
    text = WORKFLOW.read_text()
    wf = yaml.safe_load(text)
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as True
    assert on["push"]["tags"] == ["v*"]
    jobs = wf["jobs"]
    for name, job in jobs.items():
        assert "runs-on" in job and job["steps"], name
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), (name, step)
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[\w./-]+", step["uses"]), step["uses"]
    # The four Linux wheels, by maturin-action with the release profile and the default features.
    platforms = {(p["target"], p["compat"]) for p in jobs["wheels"]["strategy"]["matrix"]["platform"]}
    assert platforms == {("x86_64", "2014"), ("aarch64", "2014"), ("x86_64", "musllinux_1_2"),
                         ("aarch64", "musllinux_1_2")}
    (build,) = [s for s in jobs["wheels"]["steps"] if s.get("uses", "").startswith("PyO3/maturin-action@")]
    args = build["with"]["args"].split()
    make_args = makefile_var("MATURIN_WHEEL_ARGS").split()
    assert "--release" in args and "--release" in make_args
    assert "manylinux2014" in make_args and build["with"]["manylinux"] == "${{ matrix.platform.compat }}"
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert "test-hooks" not in code and "--features" not in args and "--features" not in make_args
    (sdist,) = [s for s in jobs["sdist"]["steps"] if s.get("uses", "").startswith("PyO3/maturin-action@")]
    assert sdist["with"]["command"] == "sdist"
    # The Django matrix is make test-matrix's, plus each Django that supports it on the workflow-only CPythons.
    pairs = [(i["python"], i["django"]) for i in jobs["django"]["strategy"]["matrix"]["include"]]
    here = [("3.10" if py == "oldest" else py, dj) for py, dj in MATRIX_PAIRS]
    assert set(here) <= set(pairs) and sorted({dj for _, dj in pairs}) == TESTED_DJANGOS, pairs
    assert {dj for py, dj in pairs if py in WORKFLOW_PYTHONS} == {"6.0", "6.1"}, pairs
    assert set(pairs) - set(here) == {(py, dj) for py in WORKFLOW_PYTHONS for dj in ("6.0", "6.1")}, pairs
    assert {py for py, _ in pairs} == set(TESTED_PYTHONS + WORKFLOW_PYTHONS), pairs
    steps = " ".join(s.get("run", "") for s in jobs["django"]["steps"])
    assert "redis-server" in steps and "[django,tiered]" in steps and "devkit.django_suite" in steps
    # Trusted publishing, only from a tag, only after everything passed.
    pub = jobs["publish"]
    assert pub["permissions"] == {"id-token": "write"} and wf["permissions"] == {"contents": "read"}
    assert set(pub["needs"]) == {"wheels", "sdist", "django"} and "refs/tags/v" in pub["if"]
    assert any(s.get("uses", "").startswith("pypa/gh-action-pypi-publish@") for s in pub["steps"])
    assert not re.search(r"password|api[-_]token|secrets\.", text, re.I), "trusted publishing needs no secret"


def test_release_workflow_matches_githubs_schema():
    exe = Path(sys.executable).parent / "check-jsonschema"
    if not exe.exists():
        pytest.skip("check-jsonschema is not installed (requirements-wheel.txt)")
    p = subprocess.run([str(exe), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_import_elsewhere_than_linux_says_why():
    code = "import sys; sys.platform = 'darwin'; import shmcache"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last == ("ImportError: shmcache supports Linux only (it needs robust process-shared mutexes "
                    "and /dev/shm), not darwin"), p.stderr


def test_build_elsewhere_than_linux_stops_with_one_sentence(tmp_path):
    rustc = shutil.which("rustc")
    if rustc is None:
        pytest.skip("rustc is not on PATH")
    exe = tmp_path / "build-script"
    subprocess.run([rustc, "--edition", "2021", "-o", str(exe), str(ROOT / "build.rs")], check=True, timeout=300)
    for os_name, fails in [("linux", False), ("macos", True), ("windows", True), ("freebsd", True)]:
        p = subprocess.run([str(exe)], env={"CARGO_CFG_TARGET_OS": os_name}, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        errors = [line for line in p.stdout.splitlines() if line.startswith("cargo::error=")]
        if fails:
            assert errors == [f"cargo::error=shmcache supports Linux only (it needs robust process-shared mutexes "
                              f"and /dev/shm), and this build targets {os_name}."], p.stdout
        else:
            assert errors == [], p.stdout


def test_os_dependencies_are_linux_only():
    """So that on another target build.rs fails before any of them would."""
    text = (ROOT / "Cargo.toml").read_text()
    deps = text.split("[dependencies]", 1)[1].split("\n[", 1)[0]
    linux = text.split("[target.'cfg(target_os = \"linux\")'.dependencies]", 1)[1].split("\n[", 1)[0]
    for crate in ("libc", "rustix"):
        assert re.search(rf"^{crate} =", linux, re.M) and not re.search(rf"^{crate} =", deps, re.M), crate
