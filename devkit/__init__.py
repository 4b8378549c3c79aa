"""Helpers shared by the tests, tools/, bench/ and demo/ (not part of the
installed shmcache package).

Import it from the repository root: pytest puts the root on sys.path
(``pythonpath`` in pyproject.toml), and the scripts run as modules from
there (``python -m tools.chaos``, ``python -m bench.run``,
``python -m demo.run_demo``). `run_module` starts one of them as a child
the same way.

* ``devkit.django_suite``: Django's own BaseCacheTests run against our backend;
* ``devkit.gunicorn_demo``: the demo Django site under a real gunicorn;
* ``devkit.loop``: how long an asyncio event loop is held;
* ``devkit.net``: free ports, a listening socket, a JSON GET;
* ``devkit.proc``: /proc readers (process state, children, RSS);
* ``devkit.stats``: percentiles;
* ``devkit.wait``: polling until a condition holds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The fixture apps of the tests (WSGI/ASGI apps, a gunicorn config, the wheel smoke test).
TEST_APPS = ROOT / "tests" / "apps"


def run_module(module: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m module args...`` with this interpreter, from the
    repository root (so the child imports devkit, tools, bench as we do);
    keyword arguments go to subprocess.run."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, **kwargs)
