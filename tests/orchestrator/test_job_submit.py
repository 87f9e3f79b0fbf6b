"""`ray job submit` against the session's two-node cluster (Ray 2.60 needs RAY_AUTH_MODE=token for it)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.pipeline
def test_ray_job_submit_runs_a_project_entry_point(ray_cluster):
    from orchestrator.ray_compat import dashboard_url

    url = dashboard_url()
    assert url and url.startswith("127.0.0.1:")  # the dashboard listens on loopback only
    bin_dir = str(Path(sys.executable).parent)
    env = dict(ray_cluster.env, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), PYTHONPATH=str(ROOT))
    for _attempt in range(3):
        proc = subprocess.run([str(Path(bin_dir) / "ray"), "job", "submit", "--address", f"http://{url}",
                               "--", sys.executable, "-m", "workers.detect"],  # the venv's python, as on a node
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        # Ray's own transient answer while the head's job agent is (re)starting: "please try again later"
        if "No available agent to submit job" not in proc.stderr:
            break
        time.sleep(5)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert '"hw_cpu"' in proc.stdout and "succeeded" in proc.stdout
