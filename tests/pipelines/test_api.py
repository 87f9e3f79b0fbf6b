"""pipelines.api: the pipeline as a Python call, its typed report, and the README's example run as
a user runs it (a fresh process, the embedded Ray, a store in its own folder)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from haloc.errors import BadInputError
from pipelines.api import Report, _named, compress
from tests.orchestrator.report_data import big_report

ROOT = Path(__file__).resolve().parents[2]


def test_names_of_callables_and_refusals():
    from haloc.models.cifar_resnet import resnet20

    assert _named(resnet20, "model") == "haloc.models.cifar_resnet:resnet20"
    assert _named("torchvision:resnet18", "model") == "torchvision:resnet18"
    with pytest.raises(BadInputError, match="not importable by name"):
        _named(lambda: None, "model")
    with pytest.raises(BadInputError, match=r"unknown setting\(s\) \['budget'\]"):
        compress("resnet20", budget=0.5)
    with pytest.raises(BadInputError, match="--budgets"):
        compress("resnet20", budgets=[2.0], store="/nonexistent/never-written")


def test_the_typed_report_picks_the_best_model_that_met_its_budget():
    raw = big_report()
    report = Report.from_dict(raw)
    assert len(report.results) == len(raw["results"]) and report.run_id == raw["run_id"]
    for hw in raw["hardware"]:
        best = report.best(hw)
        met = [r for r in raw["results"] if r["hardware"] == hw and r["budget_check"][hw]["met"]]
        if not met:
            assert best is None
            continue
        assert best.top1 == max(r["top1"] for r in met) and best.met[hw]
    missed = [r["config_id"] for r in raw["results"] if not all(c["met"] for c in r["budget_check"].values())]
    assert missed and all(any(cid in m for m in report.misses) for cid in missed)  # each miss is named


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("### The Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HALOC_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first, second = proc.stdout.strip().splitlines()[-2:]
    assert re.fullmatch(r"asic-b0\.9 top-1 [01]\.\d{3} \d\.\d\dx on asic \S+/models/asic-b0\.9/model\.onnx", first), first
    assert second == "misses: none"
    assert (tmp_path / "runs").is_dir()  # the store the example names, where it ran
