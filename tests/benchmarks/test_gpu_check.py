"""scripts/gpu_check.sh's CPU path: the same steps as on a GPU (LUT, calibration and gate, search, the
interleaved validation), on the cpu profile and a small model; and its refusals, each exit 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "scripts" / "gpu_check.sh")


def _run(args, out: Path, python: str = sys.executable, timeout: float = 600):
    env = dict(os.environ, PYTHON=python, OUT=str(out))
    return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_the_cpu_path_writes_the_lut_the_calibration_and_a_verdict_its_exit_code_follows(tmp_path):
    out = tmp_path / "out"
    proc = _run(["--profile", "cpu", "--model", "resnet20", "--image-size", "32", "--rank-step", "32",
                 "--samples", "5", "--search-steps", "2", "--budget", "0.95", "--no-compile"], out)
    assert proc.returncode in (0, 3, 5), proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= {"lut.parquet", "calibration.json", "gpu_check.json"}
    result = json.loads((out / "gpu_check.json").read_text())
    cal = json.loads((out / "calibration.json").read_text())
    assert result["lut_rows"] > 0 and cal["samples"] == 5 and result["calibration"]["passed"] == cal["passed"]
    eager = result["eager"]
    assert eager["speedup"] == pytest.approx(eager["original_ms"] / eager["compressed_ms"])
    assert eager["budget_met"] == (eager["compressed_ms"] <= 0.95 * eager["original_ms"])
    assert result["ranks"] and 0 < result["flops_ratio"] < 1
    assert result["compiled"] == {"available": False, "why": "not asked (--no-compile)"}
    expected = 5 if not cal["passed"] else (0 if eager["budget_met"] else 3)
    assert proc.returncode == expected, proc.stdout[-2000:]
    assert ("met" if eager["budget_met"] else "MISSED") in proc.stdout


def test_a_cuda_profile_without_a_cuda_device_is_refused_with_the_way_on(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the refusal cannot happen here")
    proc = _run([], tmp_path / "out", timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "torch sees no CUDA device" in proc.stderr and "--profile cpu" in proc.stderr
    assert not (tmp_path / "out" / "gpu_check.json").exists()


def test_a_python_without_torch_is_named_with_what_it_lacks(tmp_path):
    bare = Path(sys.base_prefix) / "bin" / "python3"  # the interpreter the venv was made from: no torch
    check = subprocess.run([str(bare), "-c", "import torch"], capture_output=True)
    if check.returncode == 0:
        pytest.skip(f"{bare} has torch")
    proc = _run([], tmp_path / "out", python=str(bare), timeout=60)
    assert proc.returncode == 2 and "lacks torch" in proc.stderr and str(bare) in proc.stderr
