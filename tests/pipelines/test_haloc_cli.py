"""The `haloc` command: its pyproject entry, --version, `run` delegating to the pipelines' command line
(same flags and exit codes; only inputs refused before any stage are used here), `report` re-rendering a
run from its stored artifacts (a store made by hand: manifest, selection, validate records), and
`env` / `detect` printing what their modules print."""
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import haloc
from orchestrator.manifest import RunManifest
from orchestrator.run_layout import RunLayout
from orchestrator.store import Store
from pipelines.haloc_cli import main
from tests.orchestrator.test_report import BASELINE, TRIALS, validation

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _callable(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def test_pyproject_names_the_entry_point_and_the_version_source():
    assert callable(_callable(PYPROJECT["project"]["scripts"]["haloc"]))
    assert "version" in PYPROJECT["project"]["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    module, _, name = attr.rpartition(".")
    assert getattr(importlib.import_module(module), name) == haloc.__version__


def test_core_dependencies_and_extras():
    core = " ".join(PYPROJECT["project"]["dependencies"])
    for heavy in ("ray", "pyarrow", "rich", "onnx", "optuna", "zigzag", "boto3", "six"):
        assert heavy not in core, heavy
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert any(d.startswith("ray[default,tune]") for d in extras["ray"]) and "matplotlib>=3.7" in extras["ray"]
    assert {"onnx>=1.15", "onnxruntime>=1.17"} <= set(extras["onnx"]) and any("zigzag" in d for d in extras["asic"])
    assert extras["all"] == ["haloc-ray[ray,asic,onnx]"] and any(d.startswith("boto3") for d in extras["test"])
    assert '-e ".[all,test]"' in (ROOT / "scripts" / "setup.sh").read_text()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"haloc {haloc.__version__}"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv,message", [
    (["run"], "haloc run needs a pipeline first"),
    (["run", "--preset", "demo"], "PIPELINE one of compress, imagenet_resnet18, cifar_resnet20, cifar_vgg16"),
    (["run", "resnet50"], "unknown pipeline 'resnet50'"),
    (["compress"], "unknown command 'compress'"),
    # refused by the pipeline's own command line, before any stage: the same line and exit code
    (["run", "cifar_vgg16", "--preset", "paper"], "--preset paper needs --data (the cifar10 folder"),
    (["run", "imagenet_resnet18", "--preset", "demo", "--data", "/x"], "the demo preset generates its own data"),
    (["run", "cifar_resnet20", "--budgets", "2"], "--budgets [2.0]"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    assert message in one_error_line(capsys)


def test_run_help_is_the_pipelines_with_its_name(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "cifar_vgg16", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: haloc run cifar_vgg16") and "report vgg16" in out and "--config" in out


def made_run(tmp_path, run_id="r"):
    """A run as its stages leave it before the report: manifest (with the spec), selected.json,
    the validate records and the baseline, the search's trials."""
    store = Store.open(str(tmp_path / "store"))
    spec = {"pipeline": "cifar_resnet20", "model": "resnet20", "dataset": "demo", "hardware": ["cpu", "asic"],
            "budget_metric": "latency", "preset": "demo", "data_description": None, "profile_dirs": []}
    manifest = RunManifest.load_or_create(store, run_id, spec)
    manifest.mark("weights", "done", source="trained here")
    layout = RunLayout(store, run_id)
    records = [validation("cpu-b0.5", ["cpu"], 0.5, 41_000_000, 2.5, 0.25, 3.0, 0.88),
               validation("asic-b0.7", ["asic"], 0.7, 20_500_000, 4.0, 0.1, 4.0, 0.85)]
    layout.write_selected([{"model": "resnet20", "targets": r["targets"], "budget": r["budget"], "ranks": r["ranks"]}
                           for r in records])
    for r in records:
        layout.write_record(r["config_id"], r)
    layout.write_baseline(BASELINE)
    layout.write_trials({"trials": TRIALS})
    return store, layout


def test_report_rerenders_from_the_stored_artifacts(tmp_path, capsys):
    store, layout = made_run(tmp_path)
    assert main(["report", "r", "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr()
    assert "cpu-b0.5" in out.out and "asic-b0.7" in out.out and "original" in out.out
    assert "report.html" in out.err
    report = json.loads((tmp_path / "store" / "r" / "report.json").read_text())
    assert report["model"] == "resnet20" and report["hardware"] == ["cpu", "asic"]  # from the manifest's spec
    assert report["demo"] is True and report["weights"] == "trained here" and report["preset"] == "demo"
    assert sorted(r["config_id"] for r in report["results"]) == ["asic-b0.7", "cpu-b0.5"]
    html = (tmp_path / "store" / "r" / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "demo (generated, not real data)" in html


def test_report_of_a_missing_run_or_record_exits_2_naming_it(tmp_path, capsys):
    store, layout = made_run(tmp_path)
    root = str(tmp_path / "store")
    assert main(["report", "other", "--store", root]) == 2
    assert "run 'other' is not in store" in one_error_line(capsys)
    assert main(["report", "r", "--store", str(tmp_path / "nowhere")]) == 2
    assert "store folder" in one_error_line(capsys) and not (tmp_path / "nowhere").exists()
    (tmp_path / "store" / "r" / "validate" / "asic-b0.7.json").unlink()
    assert main(["report", "r", "--store", root]) == 2
    assert "validate records" in (err := one_error_line(capsys)) and "asic-b0.7.json" in err
    assert not (tmp_path / "store" / "r" / "report.json").exists()


def _python(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_detect_and_env_print_what_their_modules_print(capsys):
    via_haloc, direct = _python("-m", "pipelines.haloc_cli", "detect"), _python("-m", "workers.detect")
    assert via_haloc.returncode == direct.returncode == 0
    assert via_haloc.stdout == direct.stdout and "hw_cpu" in json.loads(via_haloc.stdout)
    assert main(["env", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"versions", "profiles", "node"} <= set(report) and report["cluster"] is None
