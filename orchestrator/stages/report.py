"""The report: `report.json` (the contract of docs/design.md), a self-contained `report.html` with plots, a rich table.

    report = build_report(run_id, model, dataset, hardware, baseline, validations, trials=..., finetunes=...)
    write_report(RunLayout("runs", "r1"), report)  # <run>/report.json, <run>/report.html, atomically
    rich.print(render_table(report))

`build_report` is pure (numbers in, dict out); `report_from_store` gathers its inputs from a run's
artifacts (validate records, baseline, selected.json, the search's trials.json, fine-tune records).

Beyond the contract each result carries: `config_id`, `targets`, `budget_metric`, `best_seed`,
`ideal_speedup` (original FLOPs / compressed FLOPs) and `speedup_share` (measured / ideal),
`lut_error` ((predicted - measured) / measured), `heldout_acc` over seeds, `per_seed` (each search
trial's held-out accuracy, predicted cost and per-epoch search curve), the fine-tune history,
`onnx_max_abs_diff`, `lut_sum_ms`, and `rank_fraction` / `kept_whole` (each layer's rank over its max).
The report adds `recommendations` (per hardware and budget: the most accurate config that met it on
measurement, or none and the closest miss), `pareto` ({hw: configs on the accuracy / measured latency
front}), `calibration` ({hw: the LUT's fit, its calibration points and the validated models as held-out
points}) and `stages` (the manifest's stage times). The decision: `baseline.training` (how the original
was made), per result `top1_change` (against the original, with the validation set's noise),
`beats_original` (why it may, beyond that noise), `uncertain` (met only within the measurement's
noise) and `dominated_by`; `decision_lines` says them in the terminal. A report on generated data says
so in `dataset`, in `demo: true`, and at the top of the HTML. The page itself: orchestrator/stages/report_page.py.
"""
from __future__ import annotations

import math
import statistics

from haloc.errors import BadInputError

from ..artifacts import parse_targets, targets_key
from ..run_layout import RunLayout
from .report_values import (
    NOISE_SE,
    delta_text,
    finite,
    fmt,
    label_of,
    positive_count,
    top1_se,
    verdict_text,
)

DEMO_LABEL = "demo (generated, not real data)"  # = haloc.data.DEMO_NAME (not imported: it pulls in torch)
CONTRACT_KEYS = ("run_id", "model", "dataset", "hardware", "baseline", "results")
BASELINE_KEYS = ("flops", "params", "top1", "top5", "latency_ms")
RESULT_KEYS = ("hardware", "budget", "seeds", "ranks", "flops", "params", "flops_reduction", "predicted_latency_ms",
               "measured_latency_ms", "speedup", "top1", "top5", "artifacts")


# ---- the pure part --------------------------------------------------------------------------------

def _ratio(a, b):
    a, b = finite(a), finite(b)
    return a / b if a is not None and b else None


def dataset_label(dataset: str) -> tuple[str, bool]:
    """(label, is_demo): the demo data set is always labelled as generated."""
    demo = dataset in ("demo", DEMO_LABEL) or dataset.startswith("demo")
    return (DEMO_LABEL if demo else dataset), demo


def _per_seed(trials: list[dict], targets: str, budget: float) -> list[dict]:
    out = []
    for t in trials:
        if not t.get("targets") or targets_key(t["targets"]) != targets or finite(t.get("budget")) != float(budget):
            continue
        if t.get("status", "done") != "done":
            continue
        within = t.get("within_budget")
        out.append({"seed": t.get("seed"), "heldout_acc": finite(t.get("selected_heldout_acc")),
                    "predicted_cost": dict(t.get("predicted_cost") or {}),
                    "within_budget": all(within.values()) if isinstance(within, dict) and within else None,
                    "trial_id": t.get("trial_id"), "history": list(t.get("history") or [])})
    return sorted(out, key=lambda s: (s["seed"] is None, s["seed"]))


def _history(finetune: dict | None) -> dict | None:
    if not finetune:
        return None
    rows = [{"epoch": h.get("epoch"), "train_loss": (h.get("train") or {}).get("loss"),
             "train_top1": (h.get("train") or {}).get("top1"), "val_top1": (h.get("val") or {}).get("top1"),
             "val_top5": (h.get("val") or {}).get("top5")} for h in finetune.get("history", [])]
    return {"epochs": finetune.get("epochs"), "completed": finetune.get("epoch"),
            "num_workers": finetune.get("num_workers"), "init": finetune.get("init"), "history": rows}


def build_result(validation: dict, hardware: list[str], trials: list[dict], finetune: dict | None) -> dict:
    """One `results` entry from a validate record (orchestrator.stages.validate) and its seeds and fine-tune."""
    targets = parse_targets(validation.get("targets") or validation["hardware"])
    key = targets_key(targets)
    measured = {h: finite(v) for h, v in (validation.get("measured_latency_ms") or {}).items()}
    predicted = {h: finite(v) for h, v in (validation.get("predicted_latency_ms") or {}).items()}
    ideal = finite(validation.get("ideal_speedup"))
    speedup = {h: finite(v) for h, v in (validation.get("speedup") or {}).items()}
    per_seed = _per_seed(trials, key, validation["budget"])
    accs = [s["heldout_acc"] for s in per_seed if s["heldout_acc"] is not None]
    held = {"best": finite(validation.get("heldout_acc")),
            "mean": statistics.fmean(accs) if accs else finite(validation.get("heldout_acc_mean")),
            "std": ((statistics.pstdev(accs) if len(accs) > 1 else None) if accs
                    else finite(validation.get("heldout_acc_std")))}
    return {
        "config_id": validation.get("config_id"), "hardware": key, "targets": list(targets),
        "budget": validation["budget"], "budget_metric": validation.get("budget_metric", "latency"),
        "seeds": list(validation.get("seeds") or [s["seed"] for s in per_seed]),
        "best_seed": validation.get("best_seed"),
        "ranks": dict(validation["ranks"]), "flops": int(validation["flops"]), "params": int(validation["params"]),
        "flops_reduction": validation["flops_reduction"], "ideal_speedup": ideal,
        "predicted_latency_ms": predicted, "measured_latency_ms": measured, "speedup": speedup,
        "baseline_latency_ms": {h: finite(v) for h, v in (validation.get("baseline_latency_ms") or {}).items()},
        "speedup_share": {h: _ratio(s, ideal) for h, s in speedup.items()},
        "lut_error": {h: _ratio(predicted[h] - measured[h], measured[h]) if predicted[h] is not None
                      and measured.get(h) is not None else None for h in predicted},
        "search_predicted_cost": dict(validation.get("search_predicted_cost") or {}),
        "search_aimed_fraction": dict(validation.get("search_aimed_fraction") or {}),
        "rank_agreement": finite(validation.get("rank_agreement")),  # the seeds' agreement on ranks
        "within_budget": validation.get("within_budget"),  # the LUT's view (the search's prediction)
        "budget_check": dict(validation.get("budget_check") or {}),  # the measurement's
        "measured_latency_p10_ms": dict(validation.get("measured_latency_p10_ms") or {}),
        "measured_latency_p90_ms": dict(validation.get("measured_latency_p90_ms") or {}),
        "lut_sum_ms": {h: finite(v) for h, v in (validation.get("lut_sum_ms") or {}).items()},
        "top1": validation["top1"], "top5": validation["top5"], "n_val": positive_count(validation.get("n_val")),
        "heldout_acc": held, "per_seed": per_seed,
        # how it was searched: {"mode", "deterministic"} (selected.json); a deterministic search ran once
        "search": dict(validation.get("search") or {}),
        "finetune": _history(finetune), "onnx_max_abs_diff": finite(validation.get("onnx_max_abs_diff")),
        "artifacts": {k: validation["artifacts"][k] for k in ("model", "ranks", "onnx")},
    }


def _summary(results: list[dict], hardware: list[str]) -> dict:
    def per_hw(field: str, reduce) -> dict:
        out = {}
        for h in hardware:
            vals = [r[field].get(h) for r in results if r[field].get(h) is not None]
            out[h] = reduce(vals) if vals else None
        return out

    return {"lut_error_median_abs": per_hw("lut_error", lambda v: statistics.median(abs(x) for x in v)),
            "speedup_share_mean": per_hw("speedup_share", statistics.fmean),
            "speedup_max": per_hw("speedup", max),
            "best_top1": max((r["top1"] for r in results), default=None)}


def build_report(run_id: str, model: str, dataset: str, hardware: list[str], baseline: dict,
                 validations, *, trials: list[dict] | None = None, finetunes: dict | None = None,
                 max_ranks: dict | None = None, budget_metric: str = "latency", store_uri: str | None = None,
                 extra: dict | None = None, lut_quality: dict | None = None, simulated: list[str] = (),
                 calibrations: dict | None = None, stages: dict | None = None,
                 kxk_layers: list[str] | None = None, weights_info: dict | None = None) -> dict:
    """The report dict (docs/design.md section 4, plus the extras listed in the module docstring).

    `validations`: validate records (a list, or {config_id: record}); `baseline`: the original model's
    validate record; `trials`: the search's trial records (per-seed points); `finetunes`:
    {config_id: fine-tune record}; `max_ranks`: {layer: max rank}, for the ranks plot; `lut_quality`:
    {hw: orchestrator.verdicts.lut_quality}; `simulated`: hardware whose "measured" latency is simulated;
    `calibrations`: {hw: Calibration or its dict}; `stages`: the manifest's {stage: record};
    `kxk_layers`: the KxK convs (Tucker-2 layers), whose rank 1 each result names in `kxk_rank1`;
    `weights_info`: the weights stage's info (where the original came from, how it trained).
    """
    records = list(validations.values()) if isinstance(validations, dict) else list(validations)
    missing = [k for k in BASELINE_KEYS if k not in baseline]
    if missing:
        raise BadInputError(f"report: the baseline lacks {missing}; rerun the validate stage")
    label, demo = dataset_label(dataset)
    results = [build_result(v, list(hardware), trials or [], (finetunes or {}).get(v.get("config_id")))
               for v in records]
    results.sort(key=lambda r: (r["hardware"], r["budget"]))
    base = {"flops": int(baseline["flops"]), "params": int(baseline["params"]), "top1": baseline["top1"],
            "top5": baseline["top5"], "latency_ms": {h: finite(v) for h, v in baseline["latency_ms"].items()},
            "predicted_latency_ms": {h: finite(v) for h, v in (baseline.get("predicted_latency_ms") or {}).items()},
            "lut_sum_ms": {h: finite(v) for h, v in (baseline.get("lut_sum_ms") or {}).items()},
            "latency_batch": dict(baseline.get("latency_batch") or {}), "n_val": positive_count(baseline.get("n_val")),
            "training": original_training(weights_info)}
    base["top1_se"] = top1_se(base["top1"], base["n_val"])
    layers = list(max_ranks or {})  # the model's layer order, where known
    layers += sorted({n for r in results for n in r["ranks"]} - set(layers))
    report = {"run_id": run_id, "model": model, "dataset": label, "demo": demo, "hardware": list(hardware),
              "simulated": [h for h in hardware if h in set(simulated)],
              "budget_metric": budget_metric, "baseline": base, "results": results,
              "lut_quality": dict(lut_quality or {}), "summary": _summary(results, list(hardware)),
              "layers": {"names": layers, "max_ranks": dict(max_ranks or {})}}
    for r in results:
        r["rank_fraction"], r["kept_whole"] = rank_fractions(r["ranks"], layers, report["layers"]["max_ranks"])
        r["kxk_rank1"] = [n for n in (kxk_layers or []) if 1 in _as_list(r["ranks"].get(n))]
    for r in results:
        r["top1_change"] = top1_change(r, base)
        r["beats_original"] = beats_original(r, base)
        # met on its own budget check, but the measured interval straddles the budget (as recommend judges it)
        r["uncertain"] = [h for h in r["budget_check"] if (f := _fits(r, h, r["budget"], base)) is not None
                          and f["met"] and f["within_noise"]]
    report["pareto"] = {h: pareto_front(report, h) for h in hardware}
    for r in results:
        r["dominated_by"] = dominated_by(report, r)
    report["recommendations"] = recommend(report)
    report["calibration"] = {h: calibration_view(c, results, base, h) for h, c in (calibrations or {}).items()
                             if c is not None}
    report["stages"] = stage_times(stages or {})
    report["warnings"] = _warnings(report)
    if store_uri:
        report["store"] = store_uri
    if extra:
        report.update({k: v for k, v in extra.items() if k not in report})
    return report


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _top_rank(v):
    return max(v) if isinstance(v, (list, tuple)) else v


def rank_fractions(ranks: dict, layers: list[str], max_ranks: dict) -> tuple[dict, list[str]]:
    """({layer: rank / max rank}, [layers kept whole]). Absent from the ranks JSON, rank 0 (KEEP_WHOLE)
    or at least the max rank: kept whole (haloc.decomposition's rule), fraction 1.0. Unknown max: None."""
    fractions, whole = {}, []
    for n in layers:
        r, top = _top_rank(ranks.get(n)), max_ranks.get(n)
        if r is None or r == 0 or (top and r >= top):
            whole.append(n)
            fractions[n] = 1.0
        else:
            fractions[n] = r / top if top else None
    return fractions, whole




def top1_change(r: dict, base: dict) -> dict:
    """The result's top-1 against the original's: the delta, its noise (NOISE_SE x the combined standard
    error of the two top-1s, taken as independent: both were measured on the same images, so this errs
    wide) and whether the delta is beyond it (None: the noise is unknown)."""
    delta = r["top1"] - base["top1"] if finite(r["top1"]) is not None and finite(base["top1"]) is not None else None
    se_r, se_b = top1_se(r["top1"], r.get("n_val") or base.get("n_val")), base.get("top1_se")
    se = math.hypot(se_r, se_b) if se_r is not None and se_b is not None else None
    return {"delta": delta, "se": se, "noise": NOISE_SE * se if se is not None else None,
            "n_val": r.get("n_val") or base.get("n_val"),
            "beyond_noise": abs(delta) > NOISE_SE * se if delta is not None and se is not None else None}


def original_training(info: dict | None) -> dict:
    """How the original was made, from the weights stage's info: {"how": "trained" | "pretrained" |
    "unknown", "source", the training's figures when trained here, and "text", one line for the page
    and the terminal}."""
    info = info or {}
    source = info.get("source")
    t = info.get("original_training")
    if t:
        rounds = t.get("rounds") or 1
        out = {"how": "trained", "source": source, **{k: t.get(k) for k in ("epochs", "rounds", "val_top1",
                                                                            "target_top1", "stable", "history")}}
        target = f" (target {t['target_top1']:g})" if finite(t.get("target_top1")) is not None else ""
        state = "stable" if t.get("stable") else "NOT stable or below its target: a weak baseline"
        out["text"] = (f"trained here, {t.get('epochs')} epochs in {rounds} round{'s' if rounds != 1 else ''}, "
                       f"val top-1 {fmt(t.get('val_top1'))}, {state}{target}")
        return out
    if not source:
        return {"how": "unknown", "source": None, "text": "weights of unrecorded origin"}
    if source == "store":
        return {"how": "unknown", "source": source, "text": "weights already in the run's store (how they were made "
                                                            "is not recorded)"}
    if source.startswith("trained here"):  # a run made before the training's record
        return {"how": "trained", "source": source, "stable": None, "text": f"{source} (its stability not recorded)"}
    return {"how": "pretrained", "source": source, "text": f"pretrained weights {source}"}


def beats_original(r: dict, base: dict) -> dict | None:
    """Why a result may beat its original by more than the validation set's noise (None: it does not):
    an original that did not settle or trained few epochs here, and the fine-tune's extra epochs."""
    change = r["top1_change"]
    if not change["beyond_noise"] or change["delta"] <= 0:
        return None
    why = []
    t = base.get("training") or {}
    if t.get("how") == "trained":
        epochs = f"{t['epochs']} epochs here" if t.get("epochs") else "trained here"
        why.append(f"the original may be under-trained ({epochs}"
                   + (", its top-1 not stable" if t.get("stable") is False else "") + ")")
    tuned = (r.get("finetune") or {}).get("completed") or (r.get("finetune") or {}).get("epochs")
    if tuned:
        why.append(f"the fine-tune trained it {tuned} more epoch{'s' if tuned != 1 else ''} on the same training data")
    if not why:
        why.append("nothing recorded explains it: check the validation set and rerun")
    return {"delta": change["delta"], "noise": change["noise"], "why": why,
            "text": f"{label_of(r)}: top-1 {r['top1']:.3f} beats the original's {base['top1']:.3f} by "
                    f"{100 * change['delta']:+.1f} points, beyond the validation set's noise "
                    f"(+-{100 * change['noise']:.1f} "
                    f"points on {change['n_val']} images); it may be because " + " and ".join(why)}


def dominated_by(report: dict, r: dict) -> dict:
    """{hw: [the configs (or "original") that dominate `r` there]}: at least its top-1 and at most its
    measured latency on hw, one of them strictly. A hardware where nothing dominates it is left out."""
    me, b, out = label_of(r), report["baseline"], {}
    for hw in report["hardware"]:
        ms = r["measured_latency_ms"].get(hw)
        if ms is None or finite(r["top1"]) is None:
            continue
        others = [(label_of(q), q["measured_latency_ms"].get(hw), q["top1"]) for q in report["results"]
                  if label_of(q) != me] + [("original", b["latency_ms"].get(hw), b["top1"])]
        by = [c for c, x, y in others if x is not None and finite(y) is not None and x <= ms and y >= r["top1"]
              and (x < ms or y > r["top1"])]
        if by:
            out[hw] = by
    return out


def pareto_front(report: dict, hw: str) -> list[str]:
    """The configs (and "original") that no other is better than on `hw` in both measured latency and
    top-1, fastest first."""
    b = report["baseline"]
    pts = [(label_of(r), r["measured_latency_ms"].get(hw), r["top1"]) for r in report["results"]]
    pts.append(("original", b["latency_ms"].get(hw), b["top1"]))
    pts = [p for p in pts if p[1] is not None and finite(p[2]) is not None]
    front = [p for p in pts if not any(q[1] <= p[1] and q[2] >= p[2] and (q[1] < p[1] or q[2] > p[2]) for q in pts)]
    return [p[0] for p in sorted(front, key=lambda p: (p[1], -p[2]))]


def _fits(r: dict, hw: str, budget: float, base: dict) -> dict | None:
    """Does result `r` fit `budget` (a fraction of the original) on `hw`, on measurement? Its own paired
    budget check where it has one (a tighter budget met is met here too), else its measured median on
    `hw` against `budget` x the original's. None: not measured there."""
    check = (r.get("budget_check") or {}).get(hw)
    if check and finite(check.get("budget_ms")) and r["budget"]:
        limit = budget * check["budget_ms"] / r["budget"]  # the original's median of the same paired session
        lo, hi = finite(check.get("ratio_p10")), finite(check.get("ratio_p90"))
        ratio = finite(check.get("ratio"))  # the check's own verdict ratio (paired rounds): one number per verdict
        ratio = check["measured_ms"] * budget / limit if ratio is None else ratio
        return {"met": bool(ratio <= budget * (1 + 1e-9)), "measured_ms": check["measured_ms"],
                "budget_ms": limit, "basis": "budget check", "ratio": ratio,
                "within_noise": lo is not None and hi is not None and lo != hi and lo <= budget <= hi}
    if check and "budget_flops" in check:
        limit = budget * check["budget_flops"] / r["budget"]
        return {"met": bool(check["measured_flops"] <= limit * (1 + 1e-9)), "measured_ms": None, "budget_ms": None,
                "basis": "FLOPs", "ratio": check["measured_flops"] * budget / limit, "within_noise": False}
    ms, orig = r["measured_latency_ms"].get(hw), base["latency_ms"].get(hw)
    if ms is None or not orig:
        return None
    lo, hi = finite(r["measured_latency_p10_ms"].get(hw)), finite(r["measured_latency_p90_ms"].get(hw))
    return {"met": bool(ms <= budget * orig * (1 + 1e-9)), "measured_ms": ms, "budget_ms": budget * orig,
            "basis": "measured (searched for other hardware)", "ratio": ms / orig,
            "within_noise": lo is not None and hi is not None and lo <= budget * orig <= hi}


def recommend(report: dict) -> list[dict]:
    """Which model to ship: per hardware and budget searched for it, the most accurate config that met
    the budget there on measurement (ties: the faster), or none, with the closest miss."""
    out = []
    for hw in report["hardware"] + (["flops"] if report.get("budget_metric") == "flops" else []):
        budgets = sorted({r["budget"] for r in report["results"] if hw in r.get("targets", [])
                          or hw in (r.get("budget_check") or {})})
        for budget in budgets:
            fits = [(r, f) for r in report["results"] if (f := _fits(r, hw, budget, report["baseline"])) is not None]
            met = [(r, f) for r, f in fits if f["met"]]
            rec = {"hardware": hw, "budget": budget, "config_id": None, "top1": None, "measured_ms": None,
                   "budget_ms": next((f["budget_ms"] for _, f in fits if f["basis"] == "budget check"), None),
                   "basis": None, "within_noise": False, "met_by": [label_of(r) for r, _ in met],
                   "candidates": len(fits), "closest": None, "top1_change": None, "dominated_by": []}
            if met:
                r, f = max(met, key=lambda rf: (rf[0]["top1"], -(rf[1]["measured_ms"] or 0)))
                rec.update(config_id=label_of(r), top1=r["top1"], measured_ms=f["measured_ms"], basis=f["basis"],
                           within_noise=f["within_noise"], budget_ms=f["budget_ms"], top1_change=r["top1_change"],
                           dominated_by=r["dominated_by"].get(hw, []))
            elif fits:
                r, f = min(fits, key=lambda rf: rf[1]["ratio"])
                rec["closest"] = {"config_id": label_of(r), "ratio": f["ratio"], "measured_ms": f["measured_ms"]}
            # met, but the measured interval straddles the budget: a rerun may decide otherwise
            rec["uncertain"] = bool(rec["config_id"] and rec["within_noise"])
            out.append(rec)
    return out


def calibration_view(cal, results: list[dict], base: dict, hw: str) -> dict:
    """A LUT's calibration for the report: the fit, every calibration point (each held out once, its
    leave-one-out error), and the validated models as held-out points never fitted on."""
    c = cal if isinstance(cal, dict) else cal.to_dict()
    a, b = float(c["a_ms"]), float(c["b"])
    points = [{k: p.get(k) for k in ("lut_sum_ms", "measured_ms", "loo_error", "gate_error", "judged", "p10_ms",
                                      "p90_ms")}
              for p in c.get("points") or []]  # the ranks are left out: the sums are what was fitted
    held = []
    for cid, sums, pred, meas in ([("original", base["lut_sum_ms"], base["predicted_latency_ms"], base["latency_ms"])]
                                  + [(label_of(r), r["lut_sum_ms"], r["predicted_latency_ms"], r["measured_latency_ms"])
                                     for r in results]):
        p, m = pred.get(hw), meas.get(hw)
        s = sums.get(hw) if sums.get(hw) is not None else ((p - a) / b if p is not None and b > 0 else None)
        if p is not None and m:
            held.append({"config_id": cid, "lut_sum_ms": s, "predicted_ms": p, "measured_ms": m,
                         "error": (p - m) / m})
    share = sum(abs(h["error"]) <= 0.10 for h in held) / len(held) if held else None
    return {"a_ms": a, "b": b, "samples": c.get("samples", len(points)), "within_10pct": c.get("within_10pct"),
            "median_rel_error": c.get("median_rel_error"), "gate": c.get("gate"), "passed": c.get("passed"),
            "rounds": c.get("rounds"), "remeasured_rows": c.get("remeasured_rows"), "points": points,
            "heldout": held, "heldout_within_10pct": share}


def _seconds(started, finished):
    import datetime as dt

    try:
        return (dt.datetime.fromisoformat(finished) - dt.datetime.fromisoformat(started)).total_seconds()
    except (TypeError, ValueError):
        return None


def stage_times(stages: dict) -> dict:
    """{stage: {state, started, finished, seconds, attempts}} from the manifest's stage records, in the
    order they started (never started: last)."""
    order = sorted(stages, key=lambda n: (stages[n].get("started") is None, stages[n].get("started") or "", n))
    return {n: {"state": stages[n].get("state"), "started": stages[n].get("started"),
                "finished": stages[n].get("finished"), "attempts": stages[n].get("attempts"),
                "seconds": _seconds(stages[n].get("started"), stages[n].get("finished"))} for n in order}


def _warnings(report: dict) -> list[str]:
    """What a reader must know before trusting a number of the report."""
    from ..verdicts import misses

    out = list(misses(report))
    training = report["baseline"].get("training") or {}
    if training.get("how") == "trained" and training.get("stable") is False:
        out.append(f"the original: {training['text']}; compare the compressed models with care")
    for r in report["results"]:
        if r.get("beats_original"):
            out.append(r["beats_original"]["text"])
        for hw, check in r["budget_check"].items():
            if check.get("met") and check.get("within_noise"):
                out.append(f"{r['config_id']}: met its budget on {hw} only within the measurement's noise "
                           f"(paired ratio {check['ratio_p10']:.3f}-{check['ratio_p90']:.3f} against {r['budget']:g})")
        lut_ok = r.get("within_budget")
        if lut_ok is not None and bool(lut_ok) != all(c.get("met") for c in r["budget_check"].values()):
            out.append(f"{r['config_id']}: the LUT predicted {'within' if lut_ok else 'over'} budget, the "
                       f"measurement says {'met' if not lut_ok else 'missed'}")
        if r.get("kxk_rank1"):
            names = ", ".join(r["kxk_rank1"][:4]) + (" ..." if len(r["kxk_rank1"]) > 4 else "")
            out.append(f"{r['config_id']}: {len(r['kxk_rank1'])} KxK conv(s) at rank 1 ({names}): each keeps a "
                       "single channel through its spatial filter; the search chose it to meet the budget")
    for hw, q in report["lut_quality"].items():
        if q.get("noisy_rows") and not q.get("accepted_noisy"):
            out.append(f"the LUT of {hw!r} holds {q['noisy_rows']} row(s) accepted noisy")
    for hw, cal in report.get("calibration", {}).items():
        off = [h for h in cal["heldout"] if abs(h["error"]) > 0.10]
        if off:
            worst = max(off, key=lambda h: abs(h["error"]))
            out.append(f"{hw}: the calibrated LUT predicted {len(off)} of {len(cal['heldout'])} validated models "
                       f"more than 10% off their measurement (worst: {worst['config_id']}, {worst['error']:+.1%})")
    for hw in report["hardware"]:
        if hw not in report.get("calibration", {}) and any(r["predicted_latency_ms"].get(hw) is not None
                                                          for r in report["results"]):
            out.append(f"{hw}: the LUT has no calibration; its predictions are the layers' sum only")
    for hw in report["simulated"]:
        out.append(f"{hw} is simulated (ZigZag): its 'measured' latency is the simulator's, not a device's")
    if report["demo"]:
        out.append("demo data (generated, not real): accuracies say nothing about real data")
    return out


def check_report(report: dict) -> None:
    """BadInputError naming the first contract key that is missing (what users' scripts rely on)."""
    for k in CONTRACT_KEYS:
        if k not in report:
            raise BadInputError(f"report lacks key {k!r}")
    for k in BASELINE_KEYS:
        if k not in report["baseline"]:
            raise BadInputError(f"report baseline lacks key {k!r}")
    for i, r in enumerate(report["results"]):
        for k in RESULT_KEYS:
            if k not in r:
                raise BadInputError(f"report result {i} lacks key {k!r}")


# ---- gathering from the store ------------------------------------------------------------------------

def report_from_store(layout: RunLayout, configs: list[dict], profiles: list, model: str, dataset: str,
                      budget_metric: str = "latency", extra: dict | None = None) -> dict:
    """build_report over a run's artifacts (validate records must exist for every config); `profiles`:
    the run's HardwareProfiles, in the run's order."""
    import haloc

    from ..artifacts import as_selected
    from ..manifest import RunManifest

    run_id, hardware = layout.run_id, [p.name for p in profiles]
    ids = [c.config_id for c in as_selected(configs, model)]
    absent = [layout.store.uri_of(layout.record(c)) for c in ids if layout.read_record(c) is None]
    if absent:
        raise BadInputError(f"report: validate records {absent} do not exist; run the validate stage first")
    # a record written before validate kept the selection's `search` takes it from selected.json
    validations = [dict(rec, search=rec.get("search") or c.search)
                   for c, rec in zip(as_selected(configs, model), (layout.read_record(i) for i in ids))]
    trials = (layout.read_trials_doc() or {}).get("trials", [])
    finetunes = {c: info for c in ids if (info := layout.read_final_info(c)) is not None}
    try:
        specs = haloc.models.layer_specs(model)
    except BadInputError:
        specs = {}
    max_ranks = {n: s.max_rank for n, s in specs.items()} or None
    manifest = RunManifest.read(layout.store, run_id) or {}
    return build_report(run_id, model, dataset, hardware, layout.read_baseline(), validations, trials=trials,
                        finetunes=finetunes, max_ranks=max_ranks, budget_metric=budget_metric,
                        store_uri=layout.store.uri, extra=extra, lut_quality=_lut_quality(layout, hardware),
                        simulated=[p.name for p in profiles if p.is_simulator],
                        calibrations={h: layout.read_calibration(h) for h in hardware},
                        stages=manifest.get("stages") or {},
                        kxk_layers=[n for n, s in specs.items() if s.kind == "tucker2"],
                        weights_info=(manifest.get("stages", {}).get("weights") or {}).get("info"))


def rerender(store, run_id: str) -> dict:
    """A run's report built again from its stored artifacts and written (`haloc report RUN`): the run's
    manifest says its model, hardware, data and preset, as the report stage reads them from the spec.
    A run that is not in the store, or has no selection or validate records yet -> BadInputError."""
    from hw_profiles.profile import get_profile, register_profile_dir

    from ..manifest import RunManifest

    layout = RunLayout(store, run_id)
    manifest = RunManifest.read(layout.store, run_id)
    if manifest is None:
        raise BadInputError(f"run {run_id!r} is not in store {layout.store.uri} (no manifest.json); pass the run id "
                            "and the --store the run was made with")
    spec = manifest.get("spec") or {}
    for folder in spec.get("profile_dirs") or ():  # the run's own hardware profiles, as its preflight registered
        register_profile_dir(folder)
    weights = (manifest.get("stages", {}).get("weights") or {}).get("info", {})
    profiles = [get_profile(h) for h in spec["hardware"]]  # resolved once, after the run's folders are known
    report = report_from_store(layout, layout.read_selected(), profiles, spec["model"],
                               spec.get("data_description") or spec["dataset"],
                               budget_metric=spec.get("budget_metric", "latency"),
                               extra={"preset": spec.get("preset"), "weights": weights.get("source"),
                                      "search_mode": spec.get("search_mode", "supernet")})
    write_report(layout, report)
    return report


def _lut_quality(layout: RunLayout, hardware: list[str]) -> dict:
    """{hw: lut_quality} of each hardware with a calibration (a LUT without one has no verdict)."""
    from ..verdicts import lut_quality

    out = {}
    for hw in hardware:
        cal = layout.read_calibration(hw)
        if cal is None:
            continue
        table = layout.read_lut(hw)
        noisy = sum(bool(v) for v in table.column("noisy").to_pylist())
        out[hw] = lut_quality(cal, noisy_rows=noisy, accepted=True)  # it got this far: it was accepted
    return out


def write_report(layout: RunLayout, report: dict) -> dict[str, str]:
    """Write `<run>/report.json` and `<run>/report.html` (each one atomic write); returns their store paths."""
    check_report(report)
    return layout.write_report(report, render_html(report))


# ---- terminal -----------------------------------------------------------------------------------------

def decision_lines(report: dict) -> list[str]:
    """The decision in a few plain lines (the terminal's last): how the original was made, per hardware
    and budget the model to ship with its top-1 change against the original ("uncertain" where it met
    the budget only within the measurement's noise), every result another dominates on its own
    targets, and why a result may beat the original beyond noise."""
    b = report["baseline"]
    training = (b.get("training") or {}).get("text") or "weights of unrecorded origin"
    se = b.get("top1_se")
    noise = (f"; {b['n_val']} validation images (a top-1 is +-{100 * 2 * se:.1f} points, 2 standard errors)"
             if b.get("n_val") and se is not None else "")
    out = [f"original: {training}{noise}"]
    for x in report.get("recommendations", []):
        where = f"ship on {x['hardware']} @{x['budget']:g}"
        if not x.get("config_id"):
            close = x.get("closest")
            out.append(f"{where}: none met" + (f" (closest: {close['config_id']} at {close['ratio']:.3f} of the "
                                                 "original)" if close else ""))
            continue
        notes = [f"top-1 {delta_text(x.get('top1_change'))} vs the original"]
        if x.get("uncertain"):
            notes.append("UNCERTAIN: met only within the measurement's noise")
        if x.get("basis") and x["basis"] != "budget check":
            notes.append("searched for other hardware")
        out.append(f"{where}: {x['config_id']}, " + ", ".join(notes))
    for r in report["results"]:
        own = {h: by for h, by in (r.get("dominated_by") or {}).items() if h in r.get("targets", [])}
        for h, by in own.items():
            out.append(f"{label_of(r)}: dominated by {', '.join(by)} on {h} "
                       "(as accurate or more, and faster or as fast)")
        if r.get("beats_original"):
            out.append(r["beats_original"]["text"])
    return out


def render_table(report: dict):
    """A rich renderable: a Table, one row per result (per hardware one cell "ms (speedup, LUT error)"),
    then the decision_lines."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    hw = report["hardware"]
    title = f"{report['model']} on {report['dataset']} — run {report['run_id']}"
    table = Table(title=title, caption="per hardware: measured ms (speedup over the original, LUT prediction "
                                       "error); ideal: the FLOPs ratio; vs orig.: top-1 change in points, +- its "
                                       "noise")
    for col in ("config", "budget", "verdict (measured)", "top-1", "vs orig.", "top-5", "FLOPs red.", "ideal"):
        table.add_column(col, justify="left" if col in ("config", "verdict (measured)") else "right")
    for h in hw:
        table.add_column(h, justify="right")
    b = report["baseline"]
    row = ["original", "-", "-", fmt(b["top1"]), "-", fmt(b["top5"]), "-", "1.00x"]
    row += [f"{fmt(b['latency_ms'].get(h), '.3f')}" for h in hw]
    table.add_row(*row, style="dim")
    for r in report["results"]:
        missed = any(not c.get("met") for c in r["budget_check"].values())
        verdict = f"[bold red]{verdict_text(r)}[/]" if missed else f"[green]{verdict_text(r)}[/]"
        row = [r.get("config_id") or r["hardware"], f"{r['budget']:g} {r.get('budget_metric', '')}".strip(), verdict,
               fmt(r["top1"]), delta_text(r.get("top1_change"), ""), fmt(r["top5"]),
               f"{100 * r['flops_reduction']:.1f}%", fmt(r.get("ideal_speedup"), ".2f") + "x"]
        for h in hw:
            err = (r.get("lut_error") or {}).get(h)
            err_s = "-" if err is None else f"{100 * err:+.1f}%"
            row.append(f"{fmt(r['measured_latency_ms'].get(h), '.3f')} "
                       f"({fmt(r['speedup'].get(h), '.2f')}x, {err_s})")
        table.add_row(*row)
    return Group(table, *(Text(line) for line in decision_lines(report)))


# ---- HTML ---------------------------------------------------------------------------------------------

def render_html(report: dict) -> str:
    """One self-contained HTML page (inline CSS and SVG plots, no scripts, nothing fetched): see
    orchestrator.stages.report_page."""
    from .report_page import render_page

    return render_page(report)
