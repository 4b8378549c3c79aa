"""A peer's source distribution, for the test suites it ships only there
(Django's cache tests, cachelib's mixins): fetched once into ``.cache/``."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

from devkit import ROOT

CACHE_DIR = ROOT / ".cache"


def sdist_tree(project: str, version: str, python: str, env: dict | None = None) -> Path:
    """``.cache/<project>-<version>/``, the unpacked sdist, downloaded by
    `python`'s pip (so pip honours that interpreter's requires-python) the
    first time."""
    dest = CACHE_DIR / f"{project}-{version}"
    if not (dest / "PKG-INFO").exists():
        CACHE_DIR.mkdir(exist_ok=True)
        sdist = CACHE_DIR / f"{project}-{version}.tar.gz"
        if not sdist.exists():
            subprocess.run(
                [python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", f"{project}=={version}",
                 "-d", str(CACHE_DIR), "-q"],
                check=True, env=env,
            )  # fmt: skip
        with tarfile.open(sdist) as tf:
            tf.extractall(CACHE_DIR, filter="data")
    return dest
