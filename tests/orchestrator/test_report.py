"""The report on hand-made numbers: contract keys and types, derived figures, HTML plots and demo label,
the rich table, and the atomic writes into a store."""
import json
import math
import re

import pytest
from rich.console import Console

from haloc.errors import BadInputError
from orchestrator.run_layout import RunLayout
from orchestrator.stages.report import DEMO_LABEL, build_report, check_report, render_html, render_table, write_report
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
    assert "cpu: the LUT has no calibration; its predictions are the layers' sum only" in report["warnings"]
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


def test_html_is_self_contained_with_its_plots_and_the_demo_label(report):
    page = render_html(report)
    assert page.index(DEMO_LABEL) < page.index("<h1>")  # the label at the top
    # per hardware: accuracy vs latency, calibration, speedup; one ranks plot and one fine-tune plot;
    # no search plot (these trials kept no per-epoch curve), which the page says
    assert page.count("<svg") == 2 * 3 + 2
    assert "kept its per-epoch curve" in page
    for title in ("Which model to ship", "Warnings", "Accuracy vs measured latency", "Results", "LUT calibration",
                  "Per-layer ranks", "Measured vs FLOPs-ideal speedup", "Search", "Fine-tune", "Stage timings"):
        assert f"<h2>{title}</h2>" in page
    assert page.index("Which model to ship") < page.index("<h2>Warnings</h2>") < page.index("<svg")
    assert page.count("class='legend'") == 1  # one legend, outside the plots
    assert not re.search(r"""(src|href)=["']https?:""", page)  # nothing fetched from elsewhere
    assert "<script" not in page
    assert "cpu-b0.5" in page and "r/models/asic-b0.7/model.onnx" in page
    assert "href='models/asic-b0.7/model.onnx'" in page  # relative to report.html in the run's folder


def test_table_renders_every_result(report):
    console = Console(width=250, record=True)
    console.print(render_table(report))
    text = console.export_text()
    assert "cpu-b0.5" in text and "asic-b0.7" in text and "original" in text
    assert "2.00x" in text and "+20.0%" in text and "50.0%" in text  # speedup, LUT error, FLOPs reduction


def test_write_report_puts_both_files_in_the_store(report, tmp_path):
    store = Store.open(str(tmp_path))
    paths = write_report(RunLayout(store, "r"), report)
    assert paths == {"json": "r/report.json", "html": "r/report.html"}
    assert store.read_json("r/report.json") == json.loads(json.dumps(report))
    assert store.read_text("r/report.html").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.html", "report.json"]  # no temp files


# ---- "which model should I ship?" -------------------------------------------------------------------

def check(budget_ms, measured_ms, original_ms, spread=0.02):
    r = measured_ms / original_ms
    return {"budget_ms": budget_ms, "measured_ms": measured_ms, "measured_p10_ms": measured_ms * 0.99,
            "measured_p90_ms": measured_ms * 1.01, "met": measured_ms <= budget_ms, "ratio": r,
            "ratio_p10": r - spread, "ratio_p90": r + spread,
            "within_noise": r - spread <= budget_ms / original_ms <= r + spread}


def shipping_validations():
    """cpu-b0.5 met its budget but is dominated on cpu by asic-b0.5 (faster and more accurate there);
    asic-b0.5 missed its own budget on asic, and nothing else fits it."""
    a = validation("cpu-b0.5", ["cpu"], 0.5, 41_000_000, 2.5, 0.3, 2.6, 0.80)
    a["budget_check"] = {"cpu": check(2.5, 2.5, 5.0, spread=0.0)}
    b = validation("cpu-b0.7", ["cpu"], 0.7, 57_000_000, 3.4, 0.3, 3.5, 0.86)
    b["budget_check"] = {"cpu": check(3.5, 3.4, 5.0)}
    c = validation("asic-b0.5", ["asic"], 0.5, 30_000_000, 2.45, 0.15, 2.5, 0.84)
    c["budget_check"] = {"asic": check(0.1, 0.15, 0.2)}
    return [a, b, c]


def test_recommended_model_per_hardware_and_budget():
    rep = build_report("r", "resnet20", "cifar10 test", ["cpu", "asic"], BASELINE, shipping_validations())
    recs = {(x["hardware"], x["budget"]): x for x in rep["recommendations"]}
    assert sorted(recs) == [("asic", 0.5), ("cpu", 0.5), ("cpu", 0.7)]  # the budgets searched for each hardware
    # cpu at 0.5: asic-b0.5 is measured at 2.45 ms there, under 0.5 x 5 ms, and more accurate than cpu-b0.5
    assert recs["cpu", 0.5]["config_id"] == "asic-b0.5" and recs["cpu", 0.5]["top1"] == 0.84
    assert recs["cpu", 0.5]["basis"] == "measured (searched for other hardware)"
    assert sorted(recs["cpu", 0.5]["met_by"]) == ["asic-b0.5", "cpu-b0.5"]  # cpu-b0.7's 3.4 ms does not fit
    # cpu at 0.7: every config fits; the most accurate wins, on its own paired budget check
    assert recs["cpu", 0.7]["config_id"] == "cpu-b0.7" and recs["cpu", 0.7]["basis"] == "budget check"
    assert recs["cpu", 0.7]["budget_ms"] == pytest.approx(3.5)
    # asic at 0.5: nothing met it; the closest miss is named
    assert recs["asic", 0.5]["config_id"] is None and recs["asic", 0.5]["met_by"] == []
    assert recs["asic", 0.5]["closest"]["config_id"] == "asic-b0.5"
    assert recs["asic", 0.5]["closest"]["ratio"] == pytest.approx(0.75)
    page = render_html(rep)
    verdict = page[page.index("<h2>Which model to ship</h2>"):page.index("<h2>Warnings</h2>")]
    assert "none met" in verdict and "2 of 3 hardware budgets have a model" in verdict
    assert "asic (simulated)" not in verdict  # only hardware passed as simulated is marked so
    json.dumps(rep, allow_nan=False)


def test_pareto_front_per_hardware():
    rep = build_report("r", "resnet20", "cifar10 test", ["cpu", "asic"], BASELINE, shipping_validations())
    # cpu: cpu-b0.5 (2.5 ms, 0.80) is dominated by asic-b0.5 (2.45 ms, 0.84); the original is the most accurate
    assert rep["pareto"]["cpu"] == ["asic-b0.5", "cpu-b0.7", "original"]
    # asic: cpu-b0.5 and cpu-b0.7 (0.3 ms) are slower and less accurate than the original (0.2 ms)
    assert rep["pareto"]["asic"] == ["asic-b0.5", "original"]


def test_calibration_points_fit_and_held_out_models():
    from hw_profiles.calibration import fit_calibration

    sums, measured = [1.0, 2.0, 3.0, 4.0, 5.0, 2.5], [1.6, 2.5, 3.4, 4.3, 5.2, 3.4]
    cal = fit_calibration("cpu", sums, measured, gate=0.9, extra=[{"ranks": {"fc": 3}}] * 6)
    vals = shipping_validations()
    vals[0]["lut_sum_ms"] = {"cpu": 2.3}
    rep = build_report("r", "resnet20", "cifar10 test", ["cpu", "asic"], BASELINE, vals, calibrations={"cpu": cal})
    view = rep["calibration"]["cpu"]
    assert len(view["points"]) == 6 and view["samples"] == 6
    assert [p["lut_sum_ms"] for p in view["points"]] == sums and "ranks" not in view["points"][0]
    assert view["a_ms"] == pytest.approx(cal.a_ms) and view["b"] == pytest.approx(cal.b)
    assert view["within_10pct"] == cal.within_10pct and view["gate"] == 0.9
    held = {h["config_id"]: h for h in view["heldout"]}
    assert sorted(held) == ["asic-b0.5", "cpu-b0.5", "cpu-b0.7", "original"]
    assert held["cpu-b0.5"]["lut_sum_ms"] == 2.3  # recorded by validate
    assert held["cpu-b0.7"]["lut_sum_ms"] == pytest.approx((3.5 - cal.a_ms) / cal.b)  # else from the fit
    assert held["original"]["error"] == pytest.approx(0.1)  # 5.5 predicted, 5.0 measured
    assert view["heldout_within_10pct"] == 1.0
    assert "asic" not in rep["calibration"]
    assert not any("LUT has no calibration" in w for w in rep["warnings"])  # asic has no LUT prediction at all
    json.dumps(rep, allow_nan=False)
    page = render_html(rep)
    assert "no calibration of the asic LUT in this run" in page


def test_stage_times_from_the_manifest():
    stages = {"search": {"state": "done", "started": "2026-01-01T10:05:00.000+00:00",
                         "finished": "2026-01-01T10:07:30.000+00:00", "attempts": 2, "info": {"trials": 4}},
              "weights": {"state": "done", "started": "2026-01-01T10:00:00.000+00:00",
                          "finished": "2026-01-01T10:00:40.500+00:00", "attempts": 1, "info": {}},
              "report": {"state": "running", "started": "2026-01-01T10:09:00.000+00:00", "finished": None},
              "finetune": {"state": "pending", "info": {}}}
    rep = build_report("r", "resnet20", "cifar10 test", ["cpu"], BASELINE, VALIDATIONS[:1], stages=stages)
    assert list(rep["stages"]) == ["weights", "search", "report", "finetune"]  # as they started; never: last
    assert rep["stages"]["search"]["seconds"] == pytest.approx(150.0) and rep["stages"]["search"]["attempts"] == 2
    assert rep["stages"]["weights"]["seconds"] == pytest.approx(40.5)
    assert rep["stages"]["report"]["seconds"] is None and rep["stages"]["report"]["state"] == "running"
    page = render_html(rep)
    timings = page[page.index("<h2>Stage timings</h2>"):]
    assert "2.5 min" in timings and "40.5 s" in timings and "3.2 min in all" in timings


def test_rank_fractions_and_kept_whole():
    v = validation("cpu-b0.5", ["cpu"], 0.5, 41_000_000, 2.5, 0.25, 3.0, 0.88)
    v["ranks"] = {"layer1.0.conv1": 8, "layer1.0.conv2": 16, "fc": 1, "layer2.0.conv1": [4, 6]}
    max_ranks = {"layer1.0.conv1": 16, "layer1.0.conv2": 16, "layer1.1.conv1": 32, "fc": 10, "layer2.0.conv1": 12}
    rep = build_report("r", "resnet20", "cifar10 test", ["cpu"], BASELINE, [v], max_ranks=max_ranks)
    (r,) = rep["results"]
    assert r["rank_fraction"] == {"layer1.0.conv1": 0.5, "layer1.0.conv2": 1.0, "layer1.1.conv1": 1.0, "fc": 0.1,
                                  "layer2.0.conv1": 0.5}  # a Tucker-2 pair counts by its larger side
    assert r["kept_whole"] == ["layer1.0.conv2", "layer1.1.conv1"]  # at its max rank, and absent from the ranks
    page = render_html(rep)
    ranks = page[page.index("<h2>Per-layer ranks</h2>"):page.index("<h2>Measured vs FLOPs-ideal speedup</h2>")]
    assert ranks.count(">whole<") == 2 and ">1<" in ranks  # both visible as text in the plot


def test_artifacts_of_an_s3_store_are_named_not_linked(report):
    rep = dict(report, store="s3://bucket/runs")
    page = render_html(rep)
    assert "href='models/" not in page and "s3://bucket/runs/r/models/cpu-b0.5/model.onnx" in page


def test_search_evidence_kxk_rank1_aimed_fraction_and_the_seeds_agreement():
    """Issue 11 item 9 and 7: the page shows each search's alpha entropy and the seeds' agreement, and
    the report names every KxK conv left at rank 1 (a Tucker-2 pair counts when either side is 1)."""
    v = validation("cpu-b0.5", ["cpu"], 0.5, 41_000_000, 2.5, 0.25, 3.0, 0.88)
    v.update(ranks={"layer1.0.conv1": 1, "layer1.0.conv2": [1, 6], "fc": 1, "layer2.0.conv1": 4},
             rank_agreement=0.75, search_aimed_fraction={"cpu": 0.47})
    history = [{"epoch": e, "heldout_acc": 0.5 + 0.1 * e, "alpha_entropy": 1.2 - 0.4 * e,
                "expected_over_budget": {"cpu": 0.95}} for e in range(3)]
    trials = [{"targets": "cpu", "budget": 0.5, "seed": s, "status": "done", "selected_heldout_acc": 0.7,
               "predicted_cost": {"cpu": 2.4}, "within_budget": {"cpu": True}, "history": history} for s in (0, 1)]
    rep = build_report("r", "resnet20", "demo", ["cpu"], BASELINE, [v], trials=trials,
                       kxk_layers=["layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1"])
    (r,) = rep["results"]
    assert r["kxk_rank1"] == ["layer1.0.conv1", "layer1.0.conv2"]  # fc is a Linear: rank 1 is no KxK issue
    assert r["rank_agreement"] == 0.75 and r["search_aimed_fraction"] == {"cpu": 0.47}
    assert any("2 KxK conv(s) at rank 1" in w for w in rep["warnings"])
    page = render_html(rep)
    assert "alpha entropy (0 = decided)" in page and "agreement on ranks" in page and "aimed cpu 0.47" in page


def test_the_search_section_says_which_search_mode_ran():
    v = validation("cpu-b0.5", ["cpu"], 0.5, 41_000_000, 2.5, 0.25, 3.0, 0.88)
    for mode in ("blockwise", "supernet", "blockwise-exact"):
        rep = build_report("r", "resnet20", "demo", ["cpu"], BASELINE, [v], extra={"search_mode": mode})
        assert rep["search_mode"] == mode
        assert f"Search mode: {mode}" in render_html(rep)


# ---- the decision: accuracy against the original, uncertain, dominated (issue 28 items 4-6) ---------

def terminal(rep) -> str:
    console = Console(width=400, record=True)
    console.print(render_table(rep))
    return console.export_text()


def with_n(base: dict, n: int, top1: float | None = None) -> dict:
    return dict(base, n_val=n, **({} if top1 is None else {"top1": top1}))


def test_top1_change_against_the_original_with_its_binomial_noise():
    v = validation("cpu-b0.5", ["cpu"], 0.5, 41_000_000, 2.5, 0.25, 3.0, 0.88)
    v["n_val"] = 1000
    rep = build_report("r", "resnet20", "cifar10 test", ["cpu"], with_n(BASELINE, 1000), [v])
    (r,) = rep["results"]
    change = r["top1_change"]
    assert change["delta"] == pytest.approx(-0.03)
    # Agresti-Coull binomial standard errors of 0.88 and 0.91 on 1000 images, combined as independent
    se = lambda p: math.sqrt(((p * 1000 + 2) / 1004) * (1 - (p * 1000 + 2) / 1004) / 1004)  # noqa: E731
    assert change["se"] == pytest.approx(math.hypot(se(0.88), se(0.91)))
    assert change["noise"] == pytest.approx(2 * change["se"]) and change["noise"] == pytest.approx(0.0275, abs=1e-4)
    assert change["beyond_noise"] is True  # 3.0 points against a noise of 2.75
    assert r["beats_original"] is None  # beyond noise, but worse: nothing to explain
    assert "-3.0 ±2.8" in render_html(rep)
    assert "ship on cpu @0.5: cpu-b0.5, top-1 -3.0 +-2.8 pts vs the original" in terminal(rep)
    # on 100 images the same 3 points are within the noise; with no size recorded the noise is unknown
    v["n_val"] = 100
    assert build_report("r", "m", "d", ["cpu"], with_n(BASELINE, 100), [v])["results"][0]["top1_change"][
        "beyond_noise"] is False
    del v["n_val"]
    unknown = build_report("r", "m", "d", ["cpu"], BASELINE, [v])["results"][0]["top1_change"]
    assert unknown["noise"] is None and unknown["beyond_noise"] is None and unknown["delta"] == pytest.approx(-0.03)


def test_a_top1_of_one_still_has_noise():
    """1.0 on 128 images (the demo's) is not exact: the plain sqrt(p(1-p)/n) would print +-0.0."""
    from orchestrator.stages.report_values import top1_se

    assert top1_se(1.0, 128) == pytest.approx(0.0106, abs=1e-4)
    assert top1_se(0.9, None) is None and top1_se(None, 10) is None


def test_dominated_models_are_marked_per_hardware_and_trade_offs_are_not():
    rep = build_report("r", "resnet20", "cifar10 test", ["cpu", "asic"], BASELINE, shipping_validations())
    dom = {r["config_id"]: r["dominated_by"] for r in rep["results"]}
    # cpu: cpu-b0.5 (2.5 ms, 0.80) loses to asic-b0.5 (2.45 ms, 0.84); cpu-b0.7 (3.4 ms, 0.86) is slower but
    # more accurate than both: a trade-off, not dominated
    assert dom["cpu-b0.5"]["cpu"] == ["asic-b0.5"]
    assert "cpu" not in dom["cpu-b0.7"] and "cpu" not in dom["asic-b0.5"]
    # asic (original 0.2 ms, 0.91): cpu-b0.7 at 0.3 ms and 0.86 loses to the original; asic-b0.5 at 0.15 ms
    # and 0.84 is faster than the original: a trade-off; cpu-b0.5 (0.3 ms, 0.80) ties cpu-b0.7's latency
    # and has less top-1, so cpu-b0.7 dominates it too
    assert dom["cpu-b0.7"]["asic"] == ["original"]
    assert sorted(dom["cpu-b0.5"]["asic"]) == ["asic-b0.5", "cpu-b0.7", "original"]
    assert dom["asic-b0.5"] == {}
    # dominance agrees with the Pareto front
    for hw in ("cpu", "asic"):
        front = set(rep["pareto"][hw])
        assert {r["config_id"] for r in rep["results"] if hw not in r["dominated_by"]} == front - {"original"}
    page = render_html(rep)
    verdicts = page[page.index("<h2>Which model to ship</h2>"):page.index("<h2>Warnings</h2>")]
    assert verdicts.count(">dominated</span> on ") == 3  # cpu-b0.5: cpu and asic differ in who; cpu-b0.7: asic
    text = terminal(rep)
    assert "cpu-b0.5: dominated by asic-b0.5 on cpu" in text  # on its own target only
    assert "cpu-b0.7: dominated" not in text  # dominated on asic, which it was not searched for


def test_met_within_noise_is_uncertain():
    rep = build_report("r", "resnet20", "cifar10 test", ["cpu", "asic"], BASELINE, shipping_validations())
    recs = {(x["hardware"], x["budget"]): x for x in rep["recommendations"]}
    # cpu-b0.7: 3.4 ms against 3.5, its paired ratio 0.66-0.70 straddles the budget 0.7
    assert recs["cpu", 0.7]["config_id"] == "cpu-b0.7" and recs["cpu", 0.7]["uncertain"] is True
    # asic-b0.5 on cpu at 0.5: no measured spread recorded, so nothing straddles: certain
    assert recs["cpu", 0.5]["uncertain"] is False
    assert recs["asic", 0.5]["uncertain"] is False  # none met: nothing to be uncertain about
    by_id = {r["config_id"]: r for r in rep["results"]}
    assert by_id["cpu-b0.7"]["uncertain"] == ["cpu"] and by_id["cpu-b0.5"]["uncertain"] == []
    page = render_html(rep)
    ship = page[page.index("<h2>Which model to ship</h2>"):page.index("<h3>Budget verdicts")]
    assert ship.count("uncertain: met within noise") == 1
    text = terminal(rep)
    assert "ship on cpu @0.7: cpu-b0.7" in text and "UNCERTAIN: met only within the measurement's noise" in text
    assert "met on cpu, uncertain (within noise)" in text


def test_original_training_in_the_report_the_page_and_the_terminal():
    info = {"source": "trained here for 6 epochs", "original_training": {
        "epochs": 6, "val_top1": 0.95, "target_top1": 0.9, "stable": True, "history": [0.5, 0.9, 0.95], "rounds": 2}}
    rep = build_report("r", "resnet20", "demo", ["cpu"], with_n(BASELINE, 128), VALIDATIONS[:1], weights_info=info)
    training = json.loads(json.dumps(rep))["baseline"]["training"]
    assert training["how"] == "trained" and training["epochs"] == 6 and training["stable"] is True
    assert training["history"] == [0.5, 0.9, 0.95] and training["rounds"] == 2
    line = "trained here, 6 epochs in 2 rounds, val top-1 0.950, stable (target 0.9)"
    assert training["text"] == line
    assert line in render_html(rep) and f"original: {line}; 128 validation images" in terminal(rep)
    assert not any("weak baseline" in w for w in rep["warnings"])
    info["original_training"].update(stable=False, val_top1=0.7, rounds=3)
    weak = build_report("r", "resnet20", "demo", ["cpu"], BASELINE, VALIDATIONS[:1], weights_info=info)
    assert any("NOT stable or below its target: a weak baseline" in w for w in weak["warnings"])
    given = build_report("r", "resnet20", "imagenet", ["cpu"], BASELINE, VALIDATIONS[:1],
                         weights_info={"source": "torchvision"})
    assert given["baseline"]["training"] == {"how": "pretrained", "source": "torchvision",
                                             "text": "pretrained weights torchvision"}
    assert "original: pretrained weights torchvision" in terminal(given)


def test_beating_the_original_beyond_noise_says_why_it_may():
    info = {"source": "trained here for 4 epochs", "original_training": {
        "epochs": 4, "val_top1": 0.80, "target_top1": 0.9, "stable": False, "history": [0.6, 0.8], "rounds": 1}}
    better = validation("cpu-b0.5", ["cpu"], 0.5, 41_000_000, 2.5, 0.25, 3.0, 0.90)
    close = validation("asic-b0.7", ["asic"], 0.7, 20_500_000, 4.0, 0.1, 4.0, 0.81)
    for v in (better, close):
        v["n_val"] = 500
    rep = build_report("r", "resnet20", "demo", ["cpu", "asic"], with_n(BASELINE, 500, top1=0.80), [better, close],
                       finetunes=FINETUNES, weights_info=info)
    by_id = {r["config_id"]: r for r in rep["results"]}
    beats = by_id["cpu-b0.5"]["beats_original"]
    assert beats["why"] == ["the original may be under-trained (4 epochs here, its top-1 not stable)",
                            "the fine-tune trained it 2 more epochs on the same training data"]
    assert beats["text"].startswith("cpu-b0.5: top-1 0.900 beats the original's 0.800 by +10.0 points, beyond")
    assert by_id["asic-b0.7"]["beats_original"] is None  # +1 point on 500 images: within the noise
    assert beats["text"] in rep["warnings"]
    assert "it may be because the original may be under-trained" in render_html(rep)
    text = terminal(rep)
    assert "cpu-b0.5: top-1 0.900 beats the original's 0.800" in text and "asic-b0.7: top-1" not in text


def test_a_deterministic_search_shows_no_spread_and_no_entropy_panel():
    v = validation("cpu-b0.5", ["cpu"], 0.5, 41_000_000, 2.5, 0.25, 3.0, 0.88)
    v.update(seeds=[0], best_seed=0, search={"mode": "blockwise-exact", "deterministic": True})
    history = [{"epoch": e, "heldout_acc": 0.7, "alpha_entropy": 1.6e-11, "expected_over_budget": {"cpu": 0.9}}
               for e in (1, 2, 3)]
    trials = [{"targets": "cpu", "budget": 0.5, "seed": 0, "status": "done", "selected_heldout_acc": 0.7,
               "predicted_cost": {"cpu": 2.4}, "within_budget": {"cpu": True}, "history": history}]
    rep = build_report("r", "resnet20", "demo", ["cpu"], BASELINE, [v], trials=trials,
                       extra={"search_mode": "blockwise-exact"})
    assert rep["results"][0]["search"] == {"mode": "blockwise-exact", "deterministic": True}
    page = render_html(rep)
    search = page[page.index("<h2>Search</h2>"):page.index("<h2>Fine-tune</h2>")]
    assert "cpu: held-out accuracy" in search and "cpu: expected cost / budget" in search
    assert "alpha entropy (0 = decided)" not in search
    assert "No alpha-entropy panel: blockwise-exact is a deterministic search" in search
    assert search.count("<svg") == 2
    results = page[page.index("<h2>Results</h2>"):page.index("<h3>Latency per hardware")]
    assert "&plusmn; 0.000" not in results and "n=" not in results and "deterministic search" in results
    # a search whose entropy never moved draws no flat panel either, and says so
    del v["search"]
    flat = render_html(build_report("r", "resnet20", "demo", ["cpu"], BASELINE, [v], trials=trials))
    assert "alpha entropy (0 = decided)" not in flat and "did not change over any search" in flat


def test_the_budget_is_named_under_the_trade_off_plot_not_over_its_points():
    rep = build_report("r", "resnet20", "cifar10 test", ["cpu", "asic"], BASELINE, shipping_validations())
    from orchestrator.stages.report_page import config_styles, plot_accuracy_latency

    svg = plot_accuracy_latency(rep, "cpu", config_styles(rep))
    assert "budget 0.5 = 2.5 ms" in svg and "budget 0.7 = 3.5 ms" in svg
    # the legend under the axes: its text lies below the x axis label (SVG y grows downwards)
    ys = {t: float(y) for y, t in re.findall(r'<text[^>]*\by="([\d.]+)"[^>]*>([^<]+)</text>', svg)}
    label = next(y for t, y in ys.items() if t.startswith("measured latency (ms)"))
    assert ys["budget 0.5 = 2.5 ms"] > label


def test_plots_look_the_same_whatever_rcparams_the_process_holds():
    """A library may set matplotlib's rcParams globally on import (ZigZag's own plotting module sets
    label and tick sizes, and the test session's report came out a third larger, its texts on each
    other): the report's plots keep their own style, and the caller's rcParams are left as they were."""
    import re

    import matplotlib
    import matplotlib.pyplot as plt

    from orchestrator.stages.report_page import config_styles, plot_accuracy_latency, plot_ranks
    from tests.orchestrator.report_data import big_report

    report = big_report()
    styles = config_styles(report)

    def shapes():
        svgs = [plot_accuracy_latency(report, "cpu", styles), plot_ranks(report, styles)]
        return [re.search(r'viewBox="([^"]*)"', s).group(1) for s in svgs], sorted(
            set(re.findall(r"font-size: [\d.]+px", "".join(svgs))))

    with plt.style.context("default"):
        clean = shapes()
    with plt.rc_context({"font.size": 20, "axes.labelsize": 30, "xtick.labelsize": 25, "ytick.labelsize": 25,
                         "legend.fontsize": 22, "figure.dpi": 150}):
        def style():  # the backend keys are not style: matplotlib.use("Agg") may set them
            return {k: v for k, v in matplotlib.rcParams.items() if not k.startswith("backend")}

        wild = style()
        assert shapes() == clean
        assert style() == wild  # the caller's style is back
