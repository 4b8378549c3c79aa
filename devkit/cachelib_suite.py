"""cachelib's own test mixins (CommonTests, HasTests, ClearTests,
SerializerTests, DeleteManyWithPrefixTests, from the source distribution of
the installed cachelib) run against shmcache.cachelib.SharedMemoryCache.

The sdist is downloaded once (by the `python` that will run it) into
``.cache/cachelib-<version>/``; our test module
(tests/faces/cachelib_suite/test_shmcache_cachelib.py) is copied into its
``tests/`` and run there by pytest, under cachelib's own configuration
(warnings are errors) and conftest.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

from devkit import ROOT
from devkit.sdist import sdist_tree

OUR_MODULE = ROOT / "tests" / "faces" / "cachelib_suite" / "test_shmcache_cachelib.py"
MIXINS = {"common.py": "CommonTests", "has.py": "HasTests", "clear.py": "ClearTests",
          "serializer.py": "SerializerTests", "delete_many_with_prefix.py": "DeleteManyWithPrefixTests"}  # fmt: skip


def cachelib_tests_dir(version: str, python: str) -> Path:
    return sdist_tree("cachelib", version, python) / "tests"


def expected_tests(tests: Path) -> int:
    """How many tests the five mixins hold, each run twice (cachelib's
    conftest parametrizes key_prefix: none, and one)."""
    n = 0
    for module, cls in MIXINS.items():
        tree = ast.parse((tests / module).read_text())
        (node,) = [c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == cls]
        n += sum(1 for f in node.body if isinstance(f, ast.FunctionDef) and f.name.startswith("test_"))
    return 2 * n


def run_cachelib_tests(python: str, version: str, timeout: float = 600) -> str:
    """Run the mixins with `python` (where that cachelib and shmcache are
    installed); assert every one of their tests ran and passed. The output."""
    ours = OUR_MODULE.read_text()
    assert not re.search(r"^\s+def test_", ours, re.M), f"{OUR_MODULE.name} replaces a test of cachelib's"
    tests = cachelib_tests_dir(version, python)
    shutil.copy(OUR_MODULE, tests)
    env = dict(os.environ, SHMCACHE_SUITE_LOCATION=f"cachelib-suite-{os.getpid()}-{version}")
    p = subprocess.run(
        [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", f"tests/{OUR_MODULE.name}"],
        cwd=tests.parent, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-8000:]
    m = re.search(r"(\d+) passed", out)
    assert m and int(m.group(1)) == expected_tests(tests) > 20, (expected_tests(tests), out[-3000:])
    assert not re.search(r"\d+ (skipped|xfailed|failed|error)", out), out[-3000:]
    return out
