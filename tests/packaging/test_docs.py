"""docs/architecture.md stays true to the tree: every module file of the
Python package and of the Rust crate is named in one of its tables (by its
path inside the package or under src/), and every module a table names
exists. And the layering is one way: no import circle in the package, no
module circle in the crate (tools/import_cycles.py, also run by make lint)."""

import re

from devkit import ROOT
from tools import import_cycles

DOC = ROOT / "docs" / "architecture.md"
PKG = ROOT / "python" / "shmcache"
SRC = ROOT / "src"


def table_names() -> set[str]:
    """The `backticked` names in the first column of the doc's tables."""
    names = set()
    for line in DOC.read_text().splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            first = line.split("|")[1]
            names.update(re.findall(r"`([^`]+\.(?:py|rs))`", first))
    return names


def test_every_python_module_is_in_a_table():
    files = {p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py")}
    missing = sorted(files - table_names())
    assert not missing, f"docs/architecture.md names no row for: {missing}"


def test_every_rust_module_is_in_a_table():
    files = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.rs")}
    missing = sorted(files - table_names())
    assert not missing, f"docs/architecture.md names no row for: {missing}"


def test_every_module_in_a_table_exists():
    known = {p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py")}
    known |= {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.rs")}
    known |= {"build.rs"}
    gone = sorted(table_names() - known)
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def test_no_import_circle_in_the_package_nor_module_circle_in_the_crate():
    py = import_cycles.cycles(import_cycles.python_graph(PKG))
    rs = import_cycles.cycles(import_cycles.rust_layer_graph(import_cycles.rust_graph(SRC)))
    assert not py, f"import circles in python/shmcache: {py}"
    assert not rs, f"module circles in src/: {rs}"


def test_the_circle_check_finds_a_circle():
    """The check itself: a made-up graph with a circle, and one without."""
    assert import_cycles.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles.cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_faces_call_only_the_client():
    """A face (Django's, cachelib's, Litestar's, fastapi-cache2's,
    aiocache's) goes through `shmcache.Cache` (or the tier's client), never
    the binding, nor a client's private parts."""
    for face in ("django.py", "cachelib.py", "litestar.py", "fastapi_cache.py", "aiocache.py"):
        src = (PKG / face).read_text()
        assert "_core" not in src, f"{face} calls the binding"
        assert not re.search(r"_cache\._[a-z]", src), f"{face} reaches into its client's private parts"


def test_the_binding_calls_only_the_cores_api():
    """The binding (src/python.rs, src/python/) names nothing of the layers
    below the cache: no shard, its guard or its operations, no segment or
    its layout. What it needs of them the crate root re-exports."""
    files = [SRC / "python.rs", *sorted((SRC / "python").glob("*.rs"))]
    assert len(files) > 3
    for f in files:
        src = f.read_text()
        found = re.findall(r"crate::(?:shard|mem)\b|\bShard(?:Guard)?\s*[:<{(]", src)
        assert not found, f"{f.relative_to(ROOT)} uses {sorted(set(found))}"
