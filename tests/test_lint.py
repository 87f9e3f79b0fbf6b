"""ruff over the whole repository, with the rules of pyproject.toml's [tool.ruff] (pyflakes, pycodestyle
at 120 columns, import order, bugbear, pyupgrade): unused imports and names, undefined names, loop
variables caught late by closures and the like fail the suite, as they would a review."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "No module named ruff" not in proc.stderr, "ruff is a test dependency: pip install -e '.[test]'"
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
