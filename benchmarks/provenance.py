"""Where a benchmark's figures came from: the code version, the machine, its load, the date.

Every result file under benchmarks/results/ carries `provenance(started)`, so that a figure in
BENCHMARKS.md can be traced to a commit and to how busy the machine was while it was measured.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


def code_version() -> str:
    """The checkout's commit, with "+dirty" when files differ from it ("unknown" outside git)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def machine() -> dict:
    return {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "processor": platform.processor() or platform.machine()}


def provenance(started: float, load_before: tuple | None = None) -> dict:
    """Fields of a result file: code version, machine, load average (1, 5, 15 min) at the end, and
    the start and end dates (UTC)."""
    now = dt.datetime.now(dt.timezone.utc)
    return {"code_version": code_version(), "machine": machine(), "load_at_end": list(os.getloadavg()),
            "load_at_start": list(load_before) if load_before else None,
            "started": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
            "finished": now.isoformat(timespec="seconds")}
