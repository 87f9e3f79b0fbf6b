"""The validate stage on the fine-tune of test_finetune.py (one per session), on the real two-node Ray:
accuracy, FLOPs, latency measured by profiler actors on `cpu` (torch) and `asic` (ZigZag, only node_b
offers `hw_asic`), the LUT prediction on `cpu` (a real coarse LUT, a hand-made calibration), export
and ONNX check, resume (a rerun validates nothing again), and the report of the validated run.
"""
import importlib
import json
import sys

import pytest
import torch

import haloc
from haloc.errors import BadInputError
from haloc.export import load_compressed
from hw_profiles.calibration import fit_calibration
from orchestrator.artifacts import config_id
from orchestrator.run_layout import RunLayout
from orchestrator.stages.profiling import profile_model
from orchestrator.stages.validate import ValidateSpec, load_baseline, run_validate


def _finetune_module():
    """test_finetune.py as pytest imported it (its name depends on tests/orchestrator having an
    __init__.py): one module object, so its memoised fine-tune is shared, not run twice."""
    for name in ("test_finetune", "tests.orchestrator.test_finetune"):
        if name in sys.modules:
            return sys.modules[name]
    try:
        return importlib.import_module("test_finetune")  # rootdir-less folder: pytest put it on sys.path
    except ImportError:
        return importlib.import_module("tests.orchestrator.test_finetune")


finetuned_run = _finetune_module().finetuned_run


@pytest.fixture(scope="module")
def validated(ray_cluster, tmp_path_factory):
    run = finetuned_run(tmp_path_factory.mktemp("finetune"))
    store, run_id = run["store"], run["run_id"]
    # A coarse real LUT (+ calibration) for `cpu` only: `asic` has none, so it gets no prediction.
    profile_model(RunLayout(store, run_id), "resnet20", ["cpu"], rank_step=64, progress=False)
    # A hand-made calibration (measured = 0.5 ms + 1.0 x LUT sum): the prediction must apply it.
    RunLayout(store, run_id).write_calibration(fit_calibration("cpu", [1.0, 2.0], [1.5, 2.5]))
    spec = ValidateSpec(model="resnet20", hardware=("cpu", "asic"), data=run["spec"].data, weights="pretrained.pt",
                        eval_batch_size=32)
    records = run_validate(RunLayout(store, run_id), [run["config"]], spec)
    return dict(run, records=records, vspec=spec)


def test_accuracy_cost_and_latency_of_the_compressed_model(validated):
    rec = validated["records"][config_id(validated["config"])]
    assert 0.0 <= rec["top1"] <= rec["top5"] <= 1.0 and rec["n_val"] == 64
    assert rec["search"] == {}  # the selection's own {"mode", "deterministic"}: this hand-made config has none
    base = load_baseline(RunLayout(validated["store"], validated["run_id"]))
    assert 0.0 <= base["top1"] <= 1.0
    assert 0 < rec["flops"] < base["flops"] and 0 < rec["params"] < base["params"]
    assert rec["flops_reduction"] == pytest.approx(1 - rec["flops"] / base["flops"])
    assert rec["ideal_speedup"] == pytest.approx(base["flops"] / rec["flops"])
    for hw in ("cpu", "asic"):
        assert rec["measured_latency_ms"][hw] > 0 and base["latency_ms"][hw] > 0
        assert rec["speedup"][hw] == pytest.approx(rec["baseline_latency_ms"][hw] / rec["measured_latency_ms"][hw])
    assert rec["baseline_latency_ms"]["asic"] == base["latency_ms"]["asic"]  # simulated: deterministic
    assert rec["targets"] == ["cpu"] and rec["budget"] == 0.6 and rec["seeds"] == [0, 1]


def test_lut_prediction_where_a_lut_exists(validated):
    rec = validated["records"][config_id(validated["config"])]
    assert set(rec["predicted_latency_ms"]) == {"cpu"}  # asic has no LUT in this run
    assert rec["lut_sum_ms"]["cpu"] > 0
    assert rec["predicted_latency_ms"]["cpu"] == pytest.approx(0.5 + rec["lut_sum_ms"]["cpu"])  # calibrated
    err = rec["lut_error"]["cpu"]
    assert err == pytest.approx((rec["predicted_latency_ms"]["cpu"] - rec["measured_latency_ms"]["cpu"])
                                / rec["measured_latency_ms"]["cpu"])


def test_artifacts_reload_and_onnx_matches(validated, tmp_path):
    store, run_id = validated["store"], validated["run_id"]
    cid = config_id(validated["config"])
    rec = validated["records"][cid]
    assert rec["artifacts"] == RunLayout(store, run_id).export_paths(cid)
    for path in rec["artifacts"].values():
        assert store.exists(path)
    assert rec["onnx_max_abs_diff"] < 1e-3
    folder = tmp_path / "m"
    store.download_dir(f"{run_id}/models/{cid}", folder)
    model, ranks = load_compressed(folder, expected_model="resnet20")
    assert json.loads((folder / "ranks.json").read_text())["ranks"] == validated["config"]["ranks"]
    final = haloc.decompose(haloc.models.create("resnet20", num_classes=10), ranks)

    final.load_state_dict(RunLayout(store, run_id).read_final_state(cid))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), final.eval()(x))


def test_rerun_validates_nothing_again(validated):
    store, run_id = validated["store"], validated["run_id"]
    cid = config_id(validated["config"])
    layout = RunLayout(store, run_id)
    before = store.read_bytes(layout.record(cid)), store.read_bytes(layout.baseline)
    again = run_validate(RunLayout(store, run_id), [validated["config"]], validated["vspec"])
    assert again[cid] == validated["records"][cid]
    assert (store.read_bytes(layout.record(cid)), store.read_bytes(layout.baseline)) == before


def test_missing_finetune_weights_fail_naming_the_file(tmp_path):
    with pytest.raises(BadInputError, match=r"finetune/cpu-b0.5/final.pt do not exist"):
        run_validate(RunLayout(str(tmp_path), "r"), [{"targets": ["cpu"], "budget": 0.5, "ranks": {}}],
                     ValidateSpec(hardware=("cpu",)))


def test_report_from_the_validated_run(validated):
    from orchestrator.stages.report import DEMO_LABEL, check_report, report_from_store, write_report

    store, run_id = validated["store"], validated["run_id"]
    from hw_profiles.profile import get_profile

    profiles = [get_profile("cpu"), get_profile("asic")]
    report = report_from_store(RunLayout(store, run_id), [validated["config"]], profiles, "resnet20", "demo")
    check_report(report)
    assert report["dataset"] == DEMO_LABEL and report["baseline"]["latency_ms"]["asic"] > 0
    (result,) = report["results"]
    assert result["finetune"]["completed"] == 2 and len(result["finetune"]["history"]) == 2
    assert report["layers"]["names"][0] == "layer1.0.conv1"  # the model's layer order
    assert result["lut_error"]["cpu"] is not None and "asic" not in result["lut_error"]
    # the delta against the original has its noise: both top-1s were measured on the 64 validation images
    assert result["top1_change"]["n_val"] == 64 and result["top1_change"]["noise"] > 0
    paths = write_report(RunLayout(store, run_id), report)
    assert DEMO_LABEL in store.read_text(paths["html"])
