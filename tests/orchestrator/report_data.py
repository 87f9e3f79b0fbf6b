"""Generated inputs of build_report for a big run (hardware x budgets configs, each measured on every
hardware): what the report's page must still show well. Deterministic (one seeded Random)."""
from __future__ import annotations

import random

from orchestrator.stages.report import build_report

HARDWARE = ("cpu", "cuda", "jetson", "asic")
LAYERS = {f"layer{s}.{b}.conv{c}": 64 * 2 ** (s - 1) for s in range(1, 5) for b in range(2) for c in (1, 2)}
LAYERS["fc"] = 10
ORIGINAL_MS = {"cpu": 12.0, "cuda": 1.4, "jetson": 6.5, "asic": 0.9}


def _calibration(rng: random.Random, hw: str, n: int = 10) -> dict:
    a, b = 0.2 * ORIGINAL_MS[hw], 0.9
    points = []
    for _ in range(n):
        s = rng.uniform(0.3, 1.0) * ORIGINAL_MS[hw]
        points.append({"lut_sum_ms": s, "measured_ms": (a + b * s) * rng.uniform(0.93, 1.09),
                       "loo_error": rng.uniform(0, 0.14), "p10_ms": None, "p90_ms": None, "ranks": {"fc": 3}})
    share = sum(p["loo_error"] <= 0.1 for p in points) / n
    return {"hardware": hw, "a_ms": a, "b": b, "samples": n, "within_10pct": share, "median_rel_error": 0.05,
            "points": points, "gate": 1.0 if hw == "asic" else 0.9, "passed": share >= 0.9, "remeasured_rows": 3,
            "rounds": 1, "lut_fingerprint": "x"}


def big_report(hardware=HARDWARE, budgets=(0.5, 0.7), seeds=(0, 1, 2), seed: int = 0) -> dict:
    rng = random.Random(seed)
    flops0 = 1_800_000_000
    baseline = {"flops": flops0, "params": 11_700_000, "top1": 0.71, "top5": 0.90, "n_val": 50_000,
                "latency_ms": {h: ORIGINAL_MS[h] for h in hardware},
                "predicted_latency_ms": {h: ORIGINAL_MS[h] * 1.03 for h in hardware}}
    validations, trials, finetunes = [], [], {}
    for hw in hardware:
        for budget in budgets:
            cid = f"{hw}-b{budget:g}"
            ranks = {}
            for k, (n, top) in enumerate(LAYERS.items()):
                if k % 7 == 3:
                    continue  # kept whole
                ranks[n] = 1 if k % 11 == 5 else max(1, int(top * rng.uniform(0.1, 0.9)))
            flops = int(flops0 * budget * rng.uniform(0.7, 0.95))
            measured = {h: ORIGINAL_MS[h] * budget * rng.uniform(0.85, 1.12) for h in hardware}
            predicted = {h: m * rng.uniform(0.9, 1.15) for h, m in measured.items()}
            ms = measured[hw]
            check = {"budget_ms": budget * ORIGINAL_MS[hw], "measured_ms": ms, "measured_p10_ms": ms * 0.97,
                     "measured_p90_ms": ms * 1.04, "met": ms <= budget * ORIGINAL_MS[hw],
                     "ratio": ms / ORIGINAL_MS[hw], "ratio_p10": ms / ORIGINAL_MS[hw] * 0.97,
                     "ratio_p90": ms / ORIGINAL_MS[hw] * 1.04}
            check["within_noise"] = check["ratio_p10"] <= budget <= check["ratio_p90"]
            base = f"runs-big/models/{cid}"
            validations.append({
                "config_id": cid, "targets": [hw], "hardware": hw, "budget": budget, "budget_metric": "latency",
                "seeds": list(seeds), "best_seed": seeds[0], "ranks": ranks, "flops": flops, "params": 6_000_000,
                "flops_reduction": 1 - flops / flops0, "ideal_speedup": flops0 / flops,
                "top1": 0.71 - (1 - budget) * rng.uniform(0.05, 0.2), "top5": 0.88, "n_val": 50_000,
                "measured_latency_ms": measured, "predicted_latency_ms": predicted,
                "speedup": {h: ORIGINAL_MS[h] / m for h, m in measured.items()},
                "budget_check": {hw: check}, "within_budget": True, "heldout_acc": 0.6, "onnx_max_abs_diff": 1e-6,
                "artifacts": {"model": f"{base}/model.pt", "ranks": f"{base}/ranks.json",
                              "onnx": f"{base}/model.onnx"}})
            for s in seeds:
                hist = [{"epoch": ep, "heldout_acc": 0.3 + 0.08 * ep + rng.uniform(-0.03, 0.03),
                         "alpha_entropy": 2.0 / (ep + 1), "expected_over_budget": {hw: (1.6 + 0.1 * s) * 0.87 ** ep}}
                        for ep in range(6)]
                trials.append({"targets": hw, "budget": budget, "seed": s, "status": "done",
                               "selected_heldout_acc": hist[-1]["heldout_acc"], "predicted_cost": {hw: ms},
                               "within_budget": {hw: True}, "trial_id": f"t-{cid}-{s}", "history": hist})
            finetunes[cid] = {"epoch": 3, "epochs": 3, "num_workers": 2, "history": [
                {"epoch": ep, "train": {"loss": 1.4 - 0.2 * ep, "top1": 0.5}, "val": {"top1": 0.5 + 0.05 * ep,
                                                                                       "top5": 0.8}}
                for ep in range(3)]}
    stages = {n: {"state": "done", "started": f"2026-01-01T10:{10 + 5 * k:02d}:00.000+00:00",
                  "finished": f"2026-01-01T10:{12 + 5 * k:02d}:30.000+00:00", "attempts": 1, "info": {}}
              for k, n in enumerate(("weights", "profile", "search", "select", "finetune", "validate"))}
    stages["report"] = {"state": "running", "started": "2026-01-01T10:45:00.000+00:00", "finished": None,
                        "attempts": 1, "info": {}}
    calibrations = {h: _calibration(rng, h) for h in hardware}
    return build_report("runs-big", "resnet18", "imagenet val (50000 images)", list(hardware), baseline,
                        validations, trials=trials, finetunes=finetunes, max_ranks=LAYERS,
                        simulated=[h for h in hardware if h == "asic"], calibrations=calibrations, stages=stages,
                        store_uri="/data/runs", weights_info={"source": "torchvision"})
