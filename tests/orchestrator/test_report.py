"""The report on hand-made numbers: contract keys and types, derived figures, HTML plots and demo label,
the rich table, and the atomic writes into a store."""
import json
import re

import pytest
from rich.console import Console

from haloc.errors import BadInputError
from orchestrator.report import (DEMO_LABEL, build_report, check_report, render_html, render_table,
                                 write_report)
from orchestrator.store import Store

BASELINE = {"flops": 82_000_000, "params": 270_000, "top1": 0.91, "top5": 0.99,
            "latency_ms": {"cpu": 5.0, "asic": 0.2}, "predicted_latency_ms": {"cpu": 5.5}, "latency_batch": {"cpu": 1}}


def validation(cid, targets, budget, flops, cpu_ms, asic_ms, pred_cpu, top1):
    return {"config_id": cid, "targets": targets, "hardware": "+".join(targets), "budget": budget,
            "budget_metric": "latency", "seeds": [0, 1], "best_seed": 1,
            "ranks": {"layer1.0.conv1": 8, "fc": 5}, "flops": flops, "params": 150_000,
            "flops_reduction": 1 - flops / BASELINE["flops"], "ideal_speedup": BASELINE["flops"] / flops,
            "top1": top1, "top5": 0.98, "measured_latency_ms": {"cpu": cpu_ms, "asic": asic_ms},
            "speedup": {"cpu": 5.0 / cpu_ms, "asic": 0.2 / asic_ms}, "predicted_latency_ms": {"cpu": pred_cpu},
            "heldout_acc": 0.8, "onnx_max_abs_diff": 2e-6,
            "artifacts": {"model": f"r/models/{cid}/model.pt", "ranks": f"r/models/{cid}/ranks.json",
                          "onnx": f"r/models/{cid}/model.onnx"}}


VALIDATIONS = [validation("cpu-b0.5", ["cpu"], 0.5, 41_000_000, 2.5, 0.25, 3.0, 0.88),
               validation("asic-b0.7", ["asic"], 0.7, 20_500_000, 4.0, 0.1, 4.0, 0.85)]
TRIALS = [{"targets": "cpu", "budget": 0.5, "seed": 0, "status": "done", "selected_heldout_acc": 0.7,
           "predicted_cost": {"cpu": 2.4}, "within_budget": {"cpu": True}},
          {"targets": "cpu", "budget": 0.5, "seed": 1, "status": "done", "selected_heldout_acc": 0.8,
           "predicted_cost": {"cpu": 2.6}, "within_budget": {"cpu": False}},
          {"targets": "cpu", "budget": 0.5, "seed": 2, "status": "error", "selected_heldout_acc": None},
          {"targets": "asic", "budget": 0.7, "seed": 0, "status": "done", "selected_heldout_acc": 0.6,
           "predicted_cost": {"asic": 0.12}, "within_budget": {"asic": True}}]
FINETUNES = {"cpu-b0.5": {"epoch": 2, "epochs": 2, "num_workers": 2, "history": [
    {"epoch": 0, "train": {"loss": 1.5, "top1": 0.5}, "val": {"top1": 0.8, "top5": 0.97}},
    {"epoch": 1, "train": {"loss": 1.2, "top1": 0.6}, "val": {"top1": 0.88, "top5": 0.98}}]}}


@pytest.fixture(scope="module")
def report():
    return build_report("r", "resnet20", "demo", ["cpu", "asic"], BASELINE, VALIDATIONS, trials=TRIALS,
                        finetunes=FINETUNES, max_ranks={"layer1.0.conv1": 16, "layer1.0.conv2": 16, "fc": 10})


def test_contract_keys_and_types(report):
    check_report(report)
    assert report["run_id"] == "r" and report["model"] == "resnet20" and report["hardware"] == ["cpu", "asic"]
    assert report["dataset"] == DEMO_LABEL and report["demo"] is True
    b = report["baseline"]
    assert isinstance(b["flops"], int) and isinstance(b["params"], int)
    assert b["latency_ms"] == {"cpu": 5.0, "asic": 0.2}
    assert len(report["results"]) == 2
    for r in report["results"]:
        assert isinstance(r["hardware"], str) and isinstance(r["budget"], float) and isinstance(r["seeds"], list)
        assert isinstance(r["ranks"], dict) and isinstance(r["flops"], int) and isinstance(r["params"], int)
        assert 0 < r["flops_reduction"] < 1
        for key in ("predicted_latency_ms", "measured_latency_ms", "speedup"):
            assert isinstance(r[key], dict)
        assert set(r["artifacts"]) == {"model", "ranks", "onnx"}
    json.dumps(report, allow_nan=False)  # strict JSON: no NaN or inf anywhere


def test_derived_figures(report):
    by_id = {r["config_id"]: r for r in report["results"]}
    cpu = by_id["cpu-b0.5"]
    assert cpu["speedup"]["cpu"] == pytest.approx(2.0) and cpu["ideal_speedup"] == pytest.approx(2.0)
    assert cpu["speedup_share"]["cpu"] == pytest.approx(1.0)
    assert cpu["lut_error"] == {"cpu": pytest.approx(0.2)}  # (3.0 - 2.5) / 2.5; asic has no prediction
    assert [s["seed"] for s in cpu["per_seed"]] == [0, 1]  # the errored seed is left out
    assert cpu["heldout_acc"]["mean"] == pytest.approx(0.75) and cpu["heldout_acc"]["std"] == pytest.approx(0.05)
    assert cpu["per_seed"][1]["within_budget"] is False
    assert [h["val_top1"] for h in cpu["finetune"]["history"]] == [0.8, 0.88]
    asic = by_id["asic-b0.7"]
    assert asic["speedup"]["asic"] == pytest.approx(2.0) and asic["speedup_share"]["asic"] == pytest.approx(0.5)
    assert asic["finetune"] is None
    s = report["summary"]
    assert s["lut_error_median_abs"]["cpu"] == pytest.approx(0.1)  # median of |0.2| and |0.0|
    assert s["lut_error_median_abs"]["asic"] is None and s["best_top1"] == 0.88
    assert report["results"][0]["hardware"] == "asic"  # sorted by (hardware, budget)


def test_real_dataset_is_not_labelled_demo():
    rep = build_report("r", "resnet20", "cifar10 test", ["cpu"], BASELINE, VALIDATIONS[:1])
    assert rep["dataset"] == "cifar10 test" and rep["demo"] is False
    assert "DATA SET" not in render_html(rep)
    assert rep["results"][0]["per_seed"] == []


def test_bad_baseline_and_missing_keys_are_named():
    with pytest.raises(BadInputError, match=r"baseline lacks \['latency_ms'\]"):
        build_report("r", "m", "demo", ["cpu"], {k: v for k, v in BASELINE.items() if k != "latency_ms"}, [])
    with pytest.raises(BadInputError, match="report lacks key 'results'"):
        check_report({"run_id": "r", "model": "m", "dataset": "d", "hardware": [], "baseline": BASELINE})


def test_html_is_self_contained_with_four_plots_and_the_demo_label(report):
    page = render_html(report)
    assert page.index(DEMO_LABEL) < page.index("<h1>")  # the label at the top
    assert page.count("<svg") == 4
    for title in ("Accuracy vs latency", "Per-layer ranks", "LUT prediction vs measurement",
                  "FLOPs-ideal vs measured speedup"):
        assert f"<h2>{title}</h2>" in page
    assert not re.search(r"""(src|href)=["']https?:""", page)  # nothing fetched from elsewhere
    assert "cpu-b0.5" in page and "r/models/asic-b0.7/model.onnx" in page


def test_table_renders_every_result(report):
    console = Console(width=250, record=True)
    console.print(render_table(report))
    text = console.export_text()
    assert "cpu-b0.5" in text and "asic-b0.7" in text and "original" in text
    assert "2.00x" in text and "+20.0%" in text and "50.0%" in text  # speedup, LUT error, FLOPs reduction


def test_write_report_puts_both_files_in_the_store(report, tmp_path):
    store = Store.open(str(tmp_path))
    paths = write_report(store, "r", report)
    assert paths == {"json": "r/report.json", "html": "r/report.html"}
    assert store.read_json("r/report.json") == json.loads(json.dumps(report))
    assert store.read_text("r/report.html").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.html", "report.json"]  # no temp files
