"""The report: `report.json` (the contract of docs/design.md), a self-contained `report.html` with plots, a rich table.

    report = build_report(run_id, model, dataset, hardware, baseline, validations, trials=..., finetunes=...)
    write_report(store, run_id, report)          # <run>/report.json, <run>/report.html, atomically
    rich.print(render_table(report))

`build_report` is pure (numbers in, dict out); `report_from_store` gathers its inputs from a run's
artifacts (validate records, baseline, selected.json, the search's trials.json, fine-tune records).

Beyond the contract each result carries: `config_id`, `targets`, `budget_metric`, `best_seed`,
`ideal_speedup` (original FLOPs / compressed FLOPs) and `speedup_share` (measured / ideal),
`lut_error` ((predicted - measured) / measured), `heldout_acc` over seeds, `per_seed` (each search
trial's held-out accuracy and predicted cost), the fine-tune history and `onnx_max_abs_diff`.
A report on generated data says so in `dataset`, in `demo: true`, and at the top of the HTML.
"""
from __future__ import annotations

import html
import io
import math
import statistics

from haloc.errors import BadInputError

from .artifacts import parse_targets, targets_key
from .run_layout import RunLayout

DEMO_LABEL = "demo (generated, not real data)"  # = haloc.data.DEMO_NAME (not imported: it pulls in torch)
CONTRACT_KEYS = ("run_id", "model", "dataset", "hardware", "baseline", "results")
BASELINE_KEYS = ("flops", "params", "top1", "top5", "latency_ms")
RESULT_KEYS = ("hardware", "budget", "seeds", "ranks", "flops", "params", "flops_reduction", "predicted_latency_ms",
               "measured_latency_ms", "speedup", "top1", "top5", "artifacts")


# ---- the pure part --------------------------------------------------------------------------------

def _finite(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _ratio(a, b):
    a, b = _finite(a), _finite(b)
    return a / b if a is not None and b else None


def dataset_label(dataset: str) -> tuple[str, bool]:
    """(label, is_demo): the demo data set is always labelled as generated."""
    demo = dataset in ("demo", DEMO_LABEL) or dataset.startswith("demo")
    return (DEMO_LABEL if demo else dataset), demo


def _per_seed(trials: list[dict], targets: str, budget: float) -> list[dict]:
    out = []
    for t in trials:
        if not t.get("targets") or targets_key(t["targets"]) != targets or _finite(t.get("budget")) != float(budget):
            continue
        if t.get("status", "done") != "done":
            continue
        within = t.get("within_budget")
        out.append({"seed": t.get("seed"), "heldout_acc": _finite(t.get("selected_heldout_acc")),
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
            "num_workers": finetune.get("num_workers"), "history": rows}


def build_result(validation: dict, hardware: list[str], trials: list[dict], finetune: dict | None) -> dict:
    """One `results` entry from a validate record (orchestrator.validate) and its seeds and fine-tune."""
    targets = parse_targets(validation.get("targets") or validation["hardware"])
    key = targets_key(targets)
    measured = {h: _finite(v) for h, v in (validation.get("measured_latency_ms") or {}).items()}
    predicted = {h: _finite(v) for h, v in (validation.get("predicted_latency_ms") or {}).items()}
    ideal = _finite(validation.get("ideal_speedup"))
    speedup = {h: _finite(v) for h, v in (validation.get("speedup") or {}).items()}
    per_seed = _per_seed(trials, key, validation["budget"])
    accs = [s["heldout_acc"] for s in per_seed if s["heldout_acc"] is not None]
    held = {"best": _finite(validation.get("heldout_acc")),
            "mean": statistics.fmean(accs) if accs else _finite(validation.get("heldout_acc_mean")),
            "std": ((statistics.pstdev(accs) if len(accs) > 1 else 0.0) if accs
                    else _finite(validation.get("heldout_acc_std")))}
    return {
        "config_id": validation.get("config_id"), "hardware": key, "targets": list(targets),
        "budget": validation["budget"], "budget_metric": validation.get("budget_metric", "latency"),
        "seeds": list(validation.get("seeds") or [s["seed"] for s in per_seed]),
        "best_seed": validation.get("best_seed"),
        "ranks": dict(validation["ranks"]), "flops": int(validation["flops"]), "params": int(validation["params"]),
        "flops_reduction": validation["flops_reduction"], "ideal_speedup": ideal,
        "predicted_latency_ms": predicted, "measured_latency_ms": measured, "speedup": speedup,
        "baseline_latency_ms": {h: _finite(v) for h, v in (validation.get("baseline_latency_ms") or {}).items()},
        "speedup_share": {h: _ratio(s, ideal) for h, s in speedup.items()},
        "lut_error": {h: _ratio(predicted[h] - measured[h], measured[h]) if predicted[h] is not None
                      and measured.get(h) is not None else None for h in predicted},
        "search_predicted_cost": dict(validation.get("search_predicted_cost") or {}),
        "within_budget": validation.get("within_budget"),  # the LUT's view (the search's prediction)
        "budget_check": dict(validation.get("budget_check") or {}),  # the measurement's
        "measured_latency_p10_ms": dict(validation.get("measured_latency_p10_ms") or {}),
        "measured_latency_p90_ms": dict(validation.get("measured_latency_p90_ms") or {}),
        "top1": validation["top1"], "top5": validation["top5"], "heldout_acc": held, "per_seed": per_seed,
        "finetune": _history(finetune), "onnx_max_abs_diff": _finite(validation.get("onnx_max_abs_diff")),
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
                 extra: dict | None = None, lut_quality: dict | None = None, simulated: list[str] = ()) -> dict:
    """The report dict (docs/design.md section 4, plus the extras listed in the module docstring).

    `validations`: validate records (a list, or {config_id: record}); `baseline`: the original model's
    validate record; `trials`: the search's trial records (per-seed points); `finetunes`:
    {config_id: fine-tune record}; `max_ranks`: {layer: max rank}, for the ranks plot; `lut_quality`:
    {hw: orchestrator.verdicts.lut_quality}; `simulated`: hardware whose "measured" latency is simulated.
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
            "top5": baseline["top5"], "latency_ms": {h: _finite(v) for h, v in baseline["latency_ms"].items()},
            "predicted_latency_ms": {h: _finite(v) for h, v in (baseline.get("predicted_latency_ms") or {}).items()},
            "latency_batch": dict(baseline.get("latency_batch") or {})}
    layers = list(max_ranks or {})  # the model's layer order, where known
    layers += sorted({n for r in results for n in r["ranks"]} - set(layers))
    report = {"run_id": run_id, "model": model, "dataset": label, "demo": demo, "hardware": list(hardware),
              "simulated": [h for h in hardware if h in set(simulated)],
              "budget_metric": budget_metric, "baseline": base, "results": results,
              "lut_quality": dict(lut_quality or {}), "summary": _summary(results, list(hardware)),
              "layers": {"names": layers, "max_ranks": dict(max_ranks or {})}}
    report["warnings"] = _warnings(report)
    if store_uri:
        report["store"] = store_uri
    if extra:
        report.update({k: v for k, v in extra.items() if k not in report})
    return report


def _warnings(report: dict) -> list[str]:
    """What a reader must know before trusting a number of the report."""
    from .verdicts import misses

    out = list(misses(report))
    for r in report["results"]:
        for hw, check in r["budget_check"].items():
            if check.get("met") and check.get("within_noise"):
                out.append(f"{r['config_id']}: met its budget on {hw} only within the measurement's noise "
                           f"(paired ratio {check['ratio_p10']:.3f}-{check['ratio_p90']:.3f} against {r['budget']:g})")
        lut_ok = r.get("within_budget")
        if lut_ok is not None and bool(lut_ok) != all(c.get("met") for c in r["budget_check"].values()):
            out.append(f"{r['config_id']}: the LUT predicted {'within' if lut_ok else 'over'} budget, the "
                       f"measurement says {'met' if not lut_ok else 'missed'}")
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

def report_from_store(store, run_id: str, configs: list[dict], hardware: list[str], model: str, dataset: str,
                      budget_metric: str = "latency", extra: dict | None = None) -> dict:
    """build_report over a run's artifacts (validate records must exist for every config)."""
    import haloc
    from hw_profiles.profile import get_profile

    from .artifacts import as_selected

    layout = RunLayout(store, run_id)
    ids = [c.config_id for c in as_selected(configs, model)]
    absent = [layout.store.uri_of(layout.record(c)) for c in ids if layout.read_record(c) is None]
    if absent:
        raise BadInputError(f"report: validate records {absent} do not exist; run the validate stage first")
    validations = [layout.read_record(c) for c in ids]
    trials = (layout.read_trials_doc() or {}).get("trials", [])
    finetunes = {c: info for c in ids if (info := layout.read_final_info(c)) is not None}
    try:
        max_ranks = {n: s.max_rank for n, s in haloc.models.layer_specs(model).items()}
    except BadInputError:
        max_ranks = None
    return build_report(run_id, model, dataset, hardware, layout.read_baseline(), validations, trials=trials,
                        finetunes=finetunes, max_ranks=max_ranks, budget_metric=budget_metric,
                        store_uri=layout.store.uri, extra=extra, lut_quality=_lut_quality(layout, hardware),
                        simulated=[h for h in hardware if get_profile(h).is_simulator])


def rerender(store, run_id: str) -> dict:
    """A run's report built again from its stored artifacts and written (`haloc report RUN`): the run's
    manifest says its model, hardware, data and preset, as the report stage reads them from the spec.
    A run that is not in the store, or has no selection or validate records yet -> BadInputError."""
    from hw_profiles.profile import register_profile_dir

    from .manifest import RunManifest

    layout = RunLayout(store, run_id)
    manifest = RunManifest.read(layout.store, run_id)
    if manifest is None:
        raise BadInputError(f"run {run_id!r} is not in store {layout.store.uri} (no manifest.json); pass the run id "
                            "and the --store the run was made with")
    spec = manifest.get("spec") or {}
    for folder in spec.get("profile_dirs") or ():  # the run's own hardware profiles, as its preflight registered
        register_profile_dir(folder)
    weights = (manifest.get("stages", {}).get("weights") or {}).get("info", {})
    report = report_from_store(layout.store, run_id, layout.read_selected(), list(spec["hardware"]), spec["model"],
                               spec.get("data_description") or spec["dataset"],
                               budget_metric=spec.get("budget_metric", "latency"),
                               extra={"preset": spec.get("preset"), "weights": weights.get("source")})
    write_report(layout.store, run_id, report)
    return report


def _lut_quality(layout: RunLayout, hardware: list[str]) -> dict:
    """{hw: lut_quality} of each hardware with a calibration (a LUT without one has no verdict)."""
    from .verdicts import lut_quality

    out = {}
    for hw in hardware:
        cal = layout.read_calibration(hw)
        if cal is None:
            continue
        table = layout.read_lut(hw)
        noisy = sum(bool(v) for v in table.column("noisy").to_pylist())
        out[hw] = lut_quality(cal, noisy_rows=noisy, accepted=True)  # it got this far: it was accepted
    return out


def write_report(store, run_id: str, report: dict) -> dict[str, str]:
    """Write `<run>/report.json` and `<run>/report.html` (each one atomic write); returns their store paths."""
    check_report(report)
    return RunLayout(store, run_id).write_report(report, render_html(report))


# ---- terminal -----------------------------------------------------------------------------------------

def _fmt(x, spec: str = ".3f", none: str = "-") -> str:
    return none if _finite(x) is None else format(x, spec)


def render_table(report: dict):
    """A rich Table: one row per result; per hardware one cell "ms (speedup, LUT error)"."""
    from rich.table import Table

    hw = report["hardware"]
    title = f"{report['model']} on {report['dataset']} — run {report['run_id']}"
    table = Table(title=title, caption="per hardware: measured ms (speedup over the original, LUT prediction "
                                       "error); ideal: the FLOPs ratio")
    for col in ("config", "budget", "verdict (measured)", "top-1", "top-5", "FLOPs red.", "ideal"):
        table.add_column(col, justify="left" if col in ("config", "verdict (measured)") else "right")
    for h in hw:
        table.add_column(h, justify="right")
    b = report["baseline"]
    row = ["original", "-", "-", _fmt(b["top1"]), _fmt(b["top5"]), "-", "1.00x"]
    row += [f"{_fmt(b['latency_ms'].get(h), '.3f')}" for h in hw]
    table.add_row(*row, style="dim")
    for r in report["results"]:
        missed = any(not c.get("met") for c in r["budget_check"].values())
        verdict = f"[bold red]{verdict_text(r)}[/]" if missed else f"[green]{verdict_text(r)}[/]"
        row = [r.get("config_id") or r["hardware"], f"{r['budget']:g} {r.get('budget_metric', '')}".strip(), verdict,
               _fmt(r["top1"]), _fmt(r["top5"]), f"{100 * r['flops_reduction']:.1f}%",
               _fmt(r.get("ideal_speedup"), ".2f") + "x"]
        for h in hw:
            err = (r.get("lut_error") or {}).get(h)
            err_s = "-" if err is None else f"{100 * err:+.1f}%"
            row.append(f"{_fmt(r['measured_latency_ms'].get(h), '.3f')} "
                       f"({_fmt(r['speedup'].get(h), '.2f')}x, {err_s})")
        table.add_row(*row)
    return table


# ---- HTML ---------------------------------------------------------------------------------------------

def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: the SVG sits inside HTML


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes, color="gray")


def plot_accuracy_latency(report: dict) -> str:
    """Per hardware: top-1 against measured latency (fine-tuned), and each seed's held-out accuracy
    against its search-predicted cost (hollow), beside the original model (star)."""
    import matplotlib.pyplot as plt

    hw = report["hardware"] or ["-"]
    fig, axes = plt.subplots(1, len(hw), figsize=(5 * len(hw), 4), squeeze=False)
    for ax, h in zip(axes[0], hw):
        b = report["baseline"]
        if b["latency_ms"].get(h) is not None:
            ax.scatter([b["latency_ms"][h]], [b["top1"]], marker="*", s=180, color="black", label="original (top-1)")
        pts = [(r["measured_latency_ms"].get(h), r["top1"], r) for r in report["results"]]
        pts = [p for p in pts if p[0] is not None]
        for k, (x, y, r) in enumerate(pts):
            ax.scatter([x], [y], color=f"C{k % 10}", s=50, label=f"{r.get('config_id') or r['hardware']} (top-1)")
            seeds = [(s["predicted_cost"].get(h), s["heldout_acc"], s["seed"]) for s in r["per_seed"]]
            seeds = [s for s in seeds if s[0] is not None and s[1] is not None]
            if seeds:
                ax.scatter([s[0] for s in seeds], [s[1] for s in seeds], facecolors="none", edgecolors=f"C{k % 10}",
                           s=40, label=f"  seeds {[s[2] for s in seeds]} (held-out, predicted cost)")
        if not pts and b["latency_ms"].get(h) is None:
            _no_data(ax, f"latency for {h}")
        ax.set_title(f"{h}: accuracy vs latency")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        if pts:
            ax.legend(fontsize=7)
    return _svg(fig)


def plot_ranks(report: dict) -> str:
    """Per-layer rank of each config (a layer left whole is drawn at its maximum rank, if known)."""
    import matplotlib.pyplot as plt

    names = report["layers"]["names"]
    max_ranks = report["layers"].get("max_ranks") or {}
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4))
    if not names or not report["results"]:
        _no_data(ax, "ranks")
    for k, r in enumerate(report["results"]):
        ys = []
        for n in names:
            v = r["ranks"].get(n, max_ranks.get(n))
            ys.append(max(v) if isinstance(v, (list, tuple)) else v)
        ax.plot(range(len(names)), [float("nan") if y is None else y for y in ys], marker="o",
                color=f"C{k % 10}", label=r.get("config_id") or r["hardware"])
    if max_ranks:
        ax.plot(range(len(names)), [max_ranks.get(n, float("nan")) for n in names], ls="--", color="gray",
                label="max rank (original)")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=70, fontsize=7)
    ax.set_ylabel("rank")
    ax.set_title("per-layer ranks")
    ax.grid(alpha=0.3)
    if report["results"]:
        ax.legend(fontsize=7)
    return _svg(fig)


def _identity_plot(ax, xs, ys) -> None:
    if xs:
        lo, hi = min(xs + ys), max(xs + ys)
        ax.plot([lo, hi], [lo, hi], ls="--", color="gray", label="y = x")


def plot_lut_vs_measured(report: dict) -> str:
    """LUT-predicted (calibrated) against measured latency, per hardware, compressed and original."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    xs_all, ys_all = [], []
    for k, h in enumerate(report["hardware"]):
        pts = [(r["predicted_latency_ms"].get(h), r["measured_latency_ms"].get(h)) for r in report["results"]]
        b = report["baseline"]
        pts.append((b.get("predicted_latency_ms", {}).get(h), b["latency_ms"].get(h)))
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=f"C{k % 10}", label=h)
            xs_all += [p[0] for p in pts]
            ys_all += [p[1] for p in pts]
    if not xs_all:
        _no_data(ax, "LUT predictions (no LUT in this run)")
    _identity_plot(ax, xs_all, ys_all)
    ax.set_xlabel("LUT-predicted latency (ms)")
    ax.set_ylabel("measured latency (ms)")
    ax.set_title("LUT prediction vs measurement")
    ax.grid(alpha=0.3)
    if xs_all:
        ax.legend(fontsize=7)
    return _svg(fig)


def plot_speedup(report: dict) -> str:
    """Measured speedup against the FLOPs-ideal one, per hardware."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    xs_all, ys_all = [], []
    for k, h in enumerate(report["hardware"]):
        pts = [(r.get("ideal_speedup"), r["speedup"].get(h)) for r in report["results"]]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=f"C{k % 10}", label=h)
            xs_all += [p[0] for p in pts]
            ys_all += [p[1] for p in pts]
    if not xs_all:
        _no_data(ax, "speedups")
    _identity_plot(ax, xs_all, ys_all)
    ax.axhline(1.0, color="red", lw=0.8, ls=":", label="no speedup")
    ax.set_xlabel("FLOPs-ideal speedup")
    ax.set_ylabel("measured speedup")
    ax.set_title("ideal vs measured speedup")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _svg(fig)


PLOTS = (("Accuracy vs latency", plot_accuracy_latency), ("Per-layer ranks", plot_ranks),
         ("LUT prediction vs measurement", plot_lut_vs_measured), ("FLOPs-ideal vs measured speedup", plot_speedup))


def _html_table(report: dict) -> str:
    hw = report["hardware"]
    e = html.escape
    head = ["config", "budget", "verdict (measured)", "LUT's view", "seeds", "top-1", "top-5", "FLOPs", "FLOPs red.",
            "params", "ideal"]
    for h in hw:
        head += [f"{h} ms", f"{h} pred. ms", f"{h} speedup", f"{h} share of ideal"]
    head += ["ONNX |diff|", "artifacts"]
    rows = ["<tr>" + "".join(f"<th>{e(c)}</th>" for c in head) + "</tr>"]
    b = report["baseline"]
    cells = ["original", "-", "-", "-", "-", _fmt(b["top1"]), _fmt(b["top5"]), f"{b['flops']:,}", "-",
             f"{b['params']:,}", "1.00x"]
    for h in hw:
        cells += [_fmt(b["latency_ms"].get(h)), _fmt(b["predicted_latency_ms"].get(h)), "1.00x", "-"]
    cells += ["-", "-"]
    rows.append("<tr class='base'>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    for r in report["results"]:
        cells = [r.get("config_id") or r["hardware"], f"{r['budget']:g} ({r.get('budget_metric', '')})",
                 verdict_text(r), {True: "within budget", False: "over budget", None: "-"}[r.get("within_budget")],
                 ",".join(map(str, r["seeds"])), _fmt(r["top1"]), _fmt(r["top5"]), f"{r['flops']:,}",
                 f"{100 * r['flops_reduction']:.1f}%", f"{r['params']:,}", _fmt(r.get("ideal_speedup"), ".2f") + "x"]
        for h in hw:
            share = r["speedup_share"].get(h)
            cells += [_fmt(r["measured_latency_ms"].get(h)), _fmt(r["predicted_latency_ms"].get(h)),
                      _fmt(r["speedup"].get(h), ".2f") + "x", "-" if share is None else f"{100 * share:.0f}%"]
        cells += [_fmt(r.get("onnx_max_abs_diff"), ".2e"), ", ".join(r["artifacts"].values())]
        missed = any(not c.get("met") for c in r["budget_check"].values())
        rows.append(f"<tr class='{'missed' if missed else 'met'}'>" + "".join(f"<td>{e(str(c))}</td>" for c in cells)
                    + "</tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def verdict_text(result: dict) -> str:
    """"met on cpu" / "MISSED on cpu (1.04 of the original against 0.9)" per target, measured."""
    parts = []
    for hw, check in result.get("budget_check", {}).items():
        noise = ", within noise" if check.get("within_noise") else ""
        if check.get("met"):
            parts.append(f"met on {hw}{noise}")
        else:
            parts.append(f"MISSED on {hw} ({check.get('ratio', float('nan')):.3f} of the original against "
                         f"{result['budget']:g}{noise})")
    return "; ".join(parts) or "not measured"


def render_html(report: dict) -> str:
    """One self-contained HTML page: inline SVG plots (matplotlib, Agg), no external files or scripts."""
    import json

    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes and CI
    e = html.escape
    banner = (f"<div class='demo'>DATA SET: {e(DEMO_LABEL)}. The accuracies below say nothing about real "
              "images; the run exercises every stage for real.</div>") if report.get("demo") else ""
    from .verdicts import misses

    bad = misses(report)
    if bad:
        banner += ("<div class='alarm'><b>Not every result can be trusted:</b><ul>"
                   + "".join(f"<li>{e(m)}</li>" for m in bad) + "</ul></div>")
    others = [w for w in report.get("warnings", []) if w not in bad]
    if others:
        banner += "<div class='note'><ul>" + "".join(f"<li>{e(w)}</li>" for w in others) + "</ul></div>"
    meta = (f"<p>model <b>{e(report['model'])}</b> · data set <b>{e(report['dataset'])}</b> · hardware "
            f"<b>{e(', '.join(report['hardware']))}</b> · budget metric <b>{e(report.get('budget_metric', ''))}</b>"
            + (f" · store <code>{e(report['store'])}</code>" if report.get("store") else "") + "</p>")
    figures = "\n".join(f"<h2>{e(title)}</h2>\n<div class='plot'>{fn(report)}</div>" for title, fn in PLOTS)
    raw = e(json.dumps(report, indent=1, sort_keys=True))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>HALOC report {e(report['run_id'])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
.demo {{ background: #fff3cd; border: 2px solid #d39e00; padding: 0.8em; font-weight: bold; margin-bottom: 1em; }}
.alarm {{ background: #f8d7da; border: 2px solid #b02a37; color: #58151c; padding: 0.8em; margin-bottom: 1em; }}
.note {{ background: #eef; border: 1px solid #99c; padding: 0.5em; margin-bottom: 1em; }}
tr.missed td {{ background: #f8d7da; }}
table {{ border-collapse: collapse; font-size: 0.85em; }} td, th {{ border: 1px solid #ccc; padding: 3px 6px; }}
tr.base {{ color: #666; }} .plot svg {{ max-width: 100%; height: auto; }}
</style></head><body>
{banner}
<h1>HALOC report: run {e(report['run_id'])}</h1>
{meta}
<h2>Results</h2>
{_html_table(report)}
{figures}
<details><summary>report.json</summary><pre>{raw}</pre></details>
</body></html>
"""
