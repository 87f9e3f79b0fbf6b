"""Shared by the reliability tests: the pipeline CLI as a user runs it, and snapshots of what a run wrote."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.demo_run import ROOT, SMALL  # noqa: F401 (the reliability tests import them from here)


def run_cli(args: list[str], *, module: str = "pipelines.cifar_resnet20", env: dict | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m <module> ARGS` in a subprocess; the timeout is the fail-fast bound of a bad input."""
    full_env = dict(env if env is not None else os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def all_files(root: Path) -> set[str]:
    """Every file under `root` (hidden temp files included), relative, POSIX."""
    root = Path(root)
    if not root.exists():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}
