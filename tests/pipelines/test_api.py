"""pipelines.api: the pipeline as a Python call, its typed report, and the README's example run as
a user runs it (a fresh process, the embedded Ray, a store in its own folder)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
@pytest.mark.pipeline
def test_the_readme_example_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HALOC_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first, second = proc.stdout.strip().splitlines()[-2:]
    assert re.fullmatch(r"asic-b0\.9 top-1 [01]\.\d{3} \d\.\d\dx on asic "
                        r"\S+/models/asic-b0\.9/model\.onnx", first), first
    assert second == "misses: none"
    assert (tmp_path / "runs").is_dir()  # the store the example names, where it ran


class Shifted(torch.utils.data.Dataset):
    """A user's dataset with a transform defined in their script (a lambda: plain pickle refuses it)."""

    classes = ["a", "b", "c"]

    def __init__(self, n):
        self.x, self.y = torch.randn(n, 3, 12, 12), torch.arange(n) % 3
        self.transform = lambda t: t + 1.0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(self.x[i]), int(self.y[i])


def test_datasets_given_as_objects_reach_every_node_through_the_store(tmp_path):
    from pipelines.api import _store_datasets
    from pipelines.cli import build_parser, spec_from_args
    from pipelines.presets import COMPRESS

    train, val = Shifted(24), Shifted(9)
    folder = _store_datasets(train, val, str(tmp_path / "store"))
    assert folder == _store_datasets(train, val, str(tmp_path / "store"))  # written once, named by content
    assert folder.startswith("pickled:") and Path(folder[len("pickled:"):]).parent == tmp_path / "store" / "_datasets"
    args = build_parser(COMPRESS).parse_args(["--preset", "quick", "--model", "resnet20", "--data", folder])
    spec = spec_from_args(args, COMPRESS)
    assert (spec.dataset, spec.num_classes, spec.image_size) == ("pickled", 3, 12)
    assert spec.data_description == "datasets given to pipelines.api.compress (24 train / 9 val samples, 3 classes)"
    # another process (as a Ray worker is) builds them from the folder alone, the lambda included
    code = ("from haloc.data import DataConfig, build_datasets\n"
            f"tr, va = build_datasets(DataConfig(kind='pickled', root={folder!r}))\n"
            "print(len(tr), len(va), round(float(tr[0][0].mean() - tr.x[0].mean()), 4))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["24", "9", "1.0"]
    with pytest.raises(BadInputError, match="give both train and val"):
        compress("resnet20", train=train)


def test_the_api_and_the_command_line_build_one_runspec_by_one_path(tmp_path, monkeypatch):
    """compress()'s keywords go straight into pipelines.spec_builder.build_spec, the function the flags and
    --config reach too: the same settings make the same RunSpec, with no argv or file in between."""
    import yaml

    import pipelines.api as api
    from pipelines.cli import build_parser, spec_from_args
    from pipelines.presets import COMPRESS

    folder = api._store_datasets(Shifted(24), Shifted(9), str(tmp_path / "store"))
    made = []
    monkeypatch.setattr(api, "run", lambda spec, verbose=False: made.append(spec))  # the spec, not the run
    api.compress("resnet20", folder, store=str(tmp_path / "store"), hardware=["cpu", "asic"], budgets=[0.5, 1],
                 search_epochs=2, finetune_lr=0.02, kd_weight=0.3, progress=False, run_id="same")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"finetune_lr": 0.02, "kd_weight": 0.3}))
    argv = ["--preset", "quick", "--model", "resnet20", "--data", folder, "--store", str(tmp_path / "store"),
            "--hardware", "cpu", "asic", "--budgets", "0.5", "1", "--search-epochs", "2", "--no-progress",
            "--run-id", "same", "--config", str(config)]
    assert made == [spec_from_args(build_parser(COMPRESS).parse_args(argv), COMPRESS)]
    assert (made[0].budgets, made[0].finetune_lr, made[0].progress) == ((0.5, 1.0), 0.02, False)
    with pytest.raises(BadInputError, match=r"compress\(\): budgets: 'half' must be a list of a number"):
        api.compress("resnet20", folder, store=str(tmp_path / "store"), budgets="half")
    with pytest.raises(BadInputError, match=r"compress\(\): search_epochs: 2\.5 must be an integer"):
        api.compress("resnet20", folder, store=str(tmp_path / "store"), search_epochs=2.5)
