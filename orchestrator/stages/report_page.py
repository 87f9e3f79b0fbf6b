"""report.html: one self-contained page (inline CSS and SVG, no scripts, nothing fetched) that answers
"which model should I ship?" first, then shows the evidence.

    page = render_page(report)   # the dict of orchestrator.stages.report.build_report

Order: the verdict and the recommended model per hardware and budget, the warnings, then one shared
legend (one colour and number per config, used by every plot and table), accuracy against measured
latency with the Pareto front and the budget lines, the results tables, the LUT's calibration, the
ranks, the speedups, the search curves, the fine-tune history and the stage timings.
Plots are matplotlib (Agg) SVG with text kept as text, so titles and labels stay searchable.
"""
from __future__ import annotations

import html
import io
import json
import re
from dataclasses import dataclass

from .report_values import delta_text, finite, fmt, label_of, top1_se, verdict_text

# tab10 without its red and grey (red means "missed" on this page, grey is the calibration's), then tab20's light
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
SEED_STYLES = ("-", "--", ":", "-.")
MISSED, MET = "#b02a37", "#2e7d32"
e = html.escape


@dataclass(frozen=True)
class Style:
    number: int  # shown beside the config's points, in the legend and in the tables
    color: str


def config_styles(report: dict) -> dict[str, Style]:
    return {label_of(r): Style(k + 1, PALETTE[k % len(PALETTE)]) for k, r in enumerate(report["results"])}


def hw_label(report: dict, hw: str) -> str:
    return f"{hw} (simulated)" if hw in report.get("simulated", []) else hw


# ---- plots --------------------------------------------------------------------------------------------

def _figure(width: float, height: float, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes and CI
    import matplotlib.pyplot as plt

    # The plots' own style over matplotlib's defaults, whatever the process's rcParams hold: a library
    # may set them globally on import (ZigZag's plotting module sets label and tick sizes; in the test
    # session the report's texts came out a third larger and ran into each other). The caller's
    # rcParams come back when the figure is saved (`_svg`).
    saved = matplotlib.rcParams.copy()
    plt.style.use("default")
    plt.rcParams.update(PLOT_STYLE)
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    fig._haloc_saved_rc = saved
    return fig, list(axes[0])


PLOT_STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
              "axes.grid": True, "grid.alpha": 0.25,
              "font.family": "DejaVu Sans"}  # matplotlib's own font: found on every machine


def _declutter(fig) -> None:
    """Move each number tag (`_tag`) off the tags placed before it, just past the one it sits on
    (downwards in the axes' upper half, upwards in its lower half: into the plot, not over the axis):
    configs with close points (a calibration's diamonds, curves ending at one value) keep readable
    numbers."""
    tags = [a for ax in fig.axes for a in ax.__dict__.get("_haloc_tags", [])]
    if len(tags) < 2:
        return
    for ax in fig.axes:  # the limits are computed lazily: a tag outside stale ones would measure as clipped
        ax.get_xlim(), ax.get_ylim()
    renderer = fig.canvas.get_renderer()
    placed = []
    for a in tags:
        up = a.axes.transAxes.inverted().transform(a.axes.transData.transform(a.xy))[1] < 0.5
        for _ in range(len(tags) + 1):
            box = a.get_window_extent(renderer)
            hit = next((p for p in placed if box.overlaps(p)), None)
            if hit is None:
                break
            x, y = a.xyann
            step = (hit.y1 - box.y0) if up else -(box.y1 - hit.y0)
            a.xyann = (x, y + step * 72 / fig.dpi + (0.5 if up else -0.5))  # pixels to points, and a hair more
        placed.append(a.get_window_extent(renderer))


def _svg(fig) -> str:
    """The figure as inline SVG whose texts look the same in every viewer: the visible glyphs are outlines
    (matplotlib's layout, whatever fonts, zoom or minimum font size the viewer has; as <text>, CI's
    browser drew them twice as large and tick labels ran into axis labels), and the same texts lie over
    them as transparent <text> (class plot-text), so the page stays searchable, selectable and read out."""
    import matplotlib.pyplot as plt

    _declutter(fig)
    saved = {}
    for fonttype in ("path", "none"):  # the same layout twice: tight bbox and positions do not depend on it
        buf = io.StringIO()
        with plt.rc_context({"svg.fonttype": fonttype}):
            fig.savefig(buf, format="svg", bbox_inches="tight")
        saved[fonttype] = buf.getvalue()
    plt.close(fig)
    plt.rcParams.update(getattr(fig, "_haloc_saved_rc", {}))  # the caller's style, as it was before `_figure`
    drawn, texts = saved["path"], saved["none"]
    if drawn[drawn.index("<svg"):drawn.index(">", drawn.index("<svg"))] != \
            texts[texts.index("<svg"):texts.index(">", texts.index("<svg"))]:
        raise RuntimeError("the two renderings of one plot have different sizes")  # they would not line up
    overlay = "".join(re.findall(r"<text\b.*?</text>", texts, flags=re.S))
    drawn = drawn[drawn.index("<svg"):]  # drop the XML prolog and doctype: the SVG sits inside HTML
    end = drawn.rindex("</svg>")
    return f"{drawn[:end]}<g class=\"plot-text\" style=\"fill-opacity: 0\">{overlay}</g>\n{drawn[end:]}"


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def _tag(ax, x, y, style: Style, offset=(5, 4), **kw) -> None:
    """The config's number beside a point; _declutter moves it off other tags when the SVG is written."""
    kw = {"fontsize": 8, **kw}
    ax.__dict__.setdefault("_haloc_tags", []).append(ax.annotate(
        str(style.number), (x, y), xytext=offset, textcoords="offset points", color=style.color,
        fontweight="bold", **kw))


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: no 2.2 or -0.04


def _spread(r: dict, hw: str) -> tuple:
    check = (r.get("budget_check") or {}).get(hw) or {}
    lo = r.get("measured_latency_p10_ms", {}).get(hw, check.get("measured_p10_ms"))
    hi = r.get("measured_latency_p90_ms", {}).get(hw, check.get("measured_p90_ms"))
    return finite(lo), finite(hi)


def _top1_bar(ax, x, top1, se, color) -> None:
    """A top-1's noise, +- 2 standard errors, clipped to [0, 1] (a top-1 of 1.0 has no room above)."""
    if not se or finite(top1) is None:
        return
    lo, hi = min(2 * se, top1), min(2 * se, 1 - top1)
    ax.errorbar([x], [top1], yerr=[[lo], [hi]], fmt="none", ecolor=color, alpha=0.35, lw=1)


def plot_accuracy_latency(report: dict, hw: str, styles: dict) -> str:
    """Top-1 against measured latency on `hw`: each config (filled: searched for `hw`; bars: latency
    p10-p90 and top-1 +- 2 standard errors), the original (star), the Pareto front (staircase) and each
    budget searched for `hw` (dashed, in ms; named in a legend under the axes, never over the points)."""
    fig, (ax,) = _figure(5.2, 3.7)
    b, xy = report["baseline"], {}
    for r in report["results"]:
        x, st = r["measured_latency_ms"].get(hw), styles[label_of(r)]
        if x is None:
            continue
        xy[label_of(r)] = (x, r["top1"])
        lo, hi = _spread(r, hw)
        if lo is not None and hi is not None:
            ax.errorbar([x], [r["top1"]], xerr=[[max(x - lo, 0)], [max(hi - x, 0)]], fmt="none", ecolor=st.color,
                        alpha=0.6, lw=1, capsize=3)
        _top1_bar(ax, x, r["top1"], top1_se(r["top1"], (r.get("top1_change") or {}).get("n_val")), st.color)
        own = hw in r.get("targets", [])
        ax.scatter([x], [r["top1"]], s=55, zorder=3, color=st.color if own else "white", edgecolors=st.color,
                   linewidths=1.6)
        _tag(ax, x, r["top1"], st)
    if b["latency_ms"].get(hw) is not None:
        xy["original"] = (b["latency_ms"][hw], b["top1"])
        ax.scatter([b["latency_ms"][hw]], [b["top1"]], marker="*", s=190, color="black", zorder=4)
        _top1_bar(ax, b["latency_ms"][hw], b["top1"], b.get("top1_se"), "black")
        ax.annotate("original", xy["original"], xytext=(6, -10), textcoords="offset points", fontsize=8)
    front = [xy[c] for c in report.get("pareto", {}).get(hw, []) if c in xy]
    if len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#555", lw=1.2, alpha=0.6, zorder=2)
    budgets = []
    for rec in report.get("recommendations", []):
        if rec["hardware"] == hw and rec.get("budget_ms") is not None:
            budgets.append(ax.axvline(rec["budget_ms"], ls="--", color=MISSED, lw=1, alpha=0.8,
                                      label=f"budget {rec['budget']:g} = {rec['budget_ms']:.3g} ms"))
    if budgets:  # under the x label: a label inside the axes sat over the points at the top
        ax.legend(handles=budgets, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(len(budgets), 3),
                  fontsize=7, frameon=False, labelcolor=MISSED)
    if not xy:
        _no_data(ax, f"no latency measured on {hw}")
    ax.set_title(f"{hw_label(report, hw)}: top-1 vs measured latency")
    ax.set_xlabel(("simulated" if hw in report.get("simulated", []) else "measured") + " latency (ms), median, p10-p90")
    ax.set_ylabel("top-1 accuracy (\u00b1 2 SE)")
    return _svg(fig)


def plot_calibration(report: dict, hw: str, styles: dict) -> str:
    """Measured whole-model latency against the layers' LUT sum: every calibration point (red cross:
    the gate's prediction of it missed by over 10%), the fit with a +-10% band, and the validated
    models (config colours) and the original (star), which the fit never saw."""
    fig, (ax,) = _figure(5.2, 3.7)
    cal = report.get("calibration", {}).get(hw)
    if not cal:
        _no_data(ax, f"no calibration of the {hw} LUT in this run")
        ax.set_title(f"{hw_label(report, hw)}: LUT calibration")
        return _svg(fig)
    pts = [p for p in cal["points"] if p.get("lut_sum_ms") is not None and p.get("measured_ms") is not None]
    xs = [p["lut_sum_ms"] for p in pts] + [h["lut_sum_ms"] for h in cal["heldout"] if h["lut_sum_ms"] is not None]
    if xs:
        import numpy as np

        line = np.linspace(min(xs) * 0.95, max(xs) * 1.05, 50)
        fit = cal["a_ms"] + cal["b"] * line
        ax.fill_between(line, fit * 0.9, fit * 1.1, color="#888", alpha=0.15, lw=0)
        ax.plot(line, fit, color="#444", lw=1.2)
    for good in (True, False):
        sel = [p for p in pts if ((err := p.get("gate_error", p.get("loo_error"))) is None or err <= 0.10) == good]
        if sel:
            ax.scatter([p["lut_sum_ms"] for p in sel], [p["measured_ms"] for p in sel], s=22 if good else 34,
                       color="#888" if good else MISSED, marker="o" if good else "x", zorder=3)
    for h in cal["heldout"]:
        if h["lut_sum_ms"] is None:
            continue
        if h["config_id"] == "original":
            ax.scatter([h["lut_sum_ms"]], [h["measured_ms"]], marker="*", s=150, color="black", zorder=4)
        elif h["config_id"] in styles:
            st = styles[h["config_id"]]
            ax.scatter([h["lut_sum_ms"]], [h["measured_ms"]], marker="D", s=34, color=st.color, zorder=4)
            _tag(ax, h["lut_sum_ms"], h["measured_ms"], st)
    share = cal.get("within_10pct")
    gate = cal.get("gate")
    stats = (f"a = {cal['a_ms']:.3g} ms, b = {cal['b']:.3g}; "
             + (f"{share:.0%} within 10%" if share is not None else "")
             + (f" (gate {gate:.0%})" if gate else ""))
    ax.set_title(f"{hw_label(report, hw)}: LUT calibration\n{stats}", fontsize=9)
    ax.set_xlabel("sum of the layers' LUT latencies (ms)")
    ax.set_ylabel("whole-model latency (ms)")
    return _svg(fig)


def plot_speedup(report: dict, hw: str, styles: dict) -> str:
    """Measured speedup on `hw` against the FLOPs-ideal one (y = x: the FLOPs cut fully pays off)."""
    fig, (ax,) = _figure(5.2, 3.7)
    pts = []
    for r in report["results"]:
        x, y = r.get("ideal_speedup"), r["speedup"].get(hw)
        if x is None or y is None:
            continue
        st = styles[label_of(r)]
        own = hw in r.get("targets", [])
        ax.scatter([x], [y], s=55, zorder=3, color=st.color if own else "white", edgecolors=st.color, linewidths=1.6)
        _tag(ax, x, y, st)
        pts += [x, y]
    if pts:
        lo, hi = min(pts + [1.0]), max(pts)
        ax.plot([lo, hi], [lo, hi], ls="--", color="gray", lw=1)
        ax.text(hi, hi, "ideal ", ha="right", va="bottom", fontsize=7, color="gray")
        ax.axhline(1.0, color=MISSED, lw=0.8, ls=":")
    else:
        _no_data(ax, f"no speedup measured on {hw}")
    ax.set_title(f"{hw_label(report, hw)}: measured vs FLOPs-ideal speedup")
    ax.set_xlabel("FLOPs-ideal speedup (original FLOPs / compressed)")
    ax.set_ylabel("measured speedup")
    return _svg(fig)


def plot_ranks(report: dict, styles: dict) -> str:
    """Each layer's rank as a fraction of its max rank, configs side by side (hatched: kept whole; the
    rank is written at each bar's end, so rank 1 shows too)."""
    from matplotlib.colors import to_rgb

    names, results = report["layers"]["names"], report["results"]
    k = max(len(results), 1)
    # each bar at least as tall as its rank's text (5 pt with 5+ configs): the numbers never touch
    fig, (ax,) = _figure(7.5, max(2.5, len(names) * (0.095 * k + 0.13) + 0.9))
    if not names or not results:
        _no_data(ax, "no ranks")
        return _svg(fig)
    height = 0.8 / k
    small = 5 if k > 4 else 6.5
    for j, r in enumerate(results):
        st = styles[label_of(r)]
        for i, n in enumerate(names):
            y = i - 0.4 + height * (j + 0.5)
            frac, whole = r["rank_fraction"].get(n), n in r["kept_whole"]
            rank = r["ranks"].get(n)
            text = "whole" if whole else str(rank)
            if frac is None:
                ax.text(0.01, y, f"rank {text}", va="center", fontsize=small, color=st.color)
                continue
            # kept whole: an opaque pale face under a full-colour hatch (alpha would fade the hatch with it)
            pale = tuple(0.3 * c + 0.7 for c in to_rgb(st.color))
            ax.barh(y, frac, height=height * 0.92, color=pale if whole else st.color,
                    hatch="////" if whole else None, edgecolor=st.color, lw=0.5)
            ax.text(frac + 0.01, y, text, va="center", fontsize=small, color="#333")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_ylim(len(names) - 0.5, -0.5)  # the model's first layer on top
    ax.set_xlim(0, 1.15)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xticklabels(["0", "25%", "50%", "75%", "100%"])
    ax.axvline(1.0, color="#444", lw=0.8)
    ax.grid(axis="y", alpha=0)
    ax.set_xlabel("rank / the layer's max rank (hatched: kept whole)")
    ax.set_title("per-layer ranks, as a fraction of each layer's max rank")
    return _svg(fig)


def _seed_curves(r: dict):
    for i, s in enumerate(r.get("per_seed") or []):
        hist = s.get("history") or []
        if hist:
            yield SEED_STYLES[i % len(SEED_STYLES)], s, hist


def _over_budget(h: dict, hw: str):
    over = h.get("expected_over_budget") or {}
    if hw in over:
        return finite(over[hw])
    return finite(next(iter(over.values()))) if len(over) == 1 else None


ENTROPY_FLAT = 1e-6  # nats: a mean alpha entropy that moves less than this over the search did not move


def _entropy_absent(own: list[dict]) -> str | None:
    """Why the alpha-entropy panel is left out for these configs, or None to draw it: a deterministic
    search (blockwise-exact) has no alpha to settle, and a flat curve shows nothing."""
    if all((r.get("search") or {}).get("deterministic") for r in own):
        modes = sorted({(r.get("search") or {}).get("mode") or "deterministic" for r in own})
        return (f"No alpha-entropy panel: {', '.join(modes)} is a deterministic search (one run per hardware and "
                "budget, its ranks found exactly), so no architecture distribution settles over epochs.")
    values = [[v for h in hist if (v := finite(h.get("alpha_entropy"))) is not None]
              for r in own for _, _, hist in _seed_curves(r)]
    if not any(v and max(v) - min(v) > ENTROPY_FLAT for v in values):
        return "No alpha-entropy panel: the alpha entropy did not change over any search's epochs (a flat line)."
    return None


def plot_search(report: dict, hw: str, styles: dict) -> dict | None:
    """The search of every config searched for `hw`, per epoch and seed (line style), one SVG per panel
    (they wrap on a narrow page): held-out accuracy, the expected cost over the budget (1 = at the
    budget) and the alpha entropy, where it says something (`_entropy_absent`). Returns {"panels":
    [svg], "note": why a panel is absent, or None}; None when no trial kept its curve."""
    own = [r for r in report["results"] if hw in r.get("targets", []) and any(True for _ in _seed_curves(r))]
    if not own:
        return None
    note = _entropy_absent(own)
    name = hw_label(report, hw)
    panels = [("heldout_acc", f"{name}: held-out accuracy", "held-out accuracy"),
              ("over_budget", f"{name}: expected cost / budget", "expected cost / budget")]
    if note is None:
        panels.append(("alpha_entropy", f"{name}: alpha entropy (0 = decided)", "mean alpha entropy (nats)"))
    out = []
    for key, title, ylabel in panels:
        fig, (ax,) = _figure(4.2, 3.0)
        for r in own:
            st = styles[label_of(r)]
            for k, (ls, _seed, hist) in enumerate(_seed_curves(r)):
                ep = [h.get("epoch") for h in hist]
                ys = [_over_budget(h, hw) if key == "over_budget" else finite(h.get(key)) for h in hist]
                ax.plot(ep, [float("nan") if v is None else v for v in ys], ls=ls, color=st.color, marker=".", lw=1.3)
                if k == 0 and key != "alpha_entropy" and ep and ys[-1] is not None:  # one number per config
                    _tag(ax, ep[-1], ys[-1], st, offset=(4, 0), fontsize=7, va="center")
        if key == "over_budget":
            ax.axhline(1.0, color=MISSED, ls="--", lw=1)
            ax.text(0.01, 1.0, "budget", color=MISSED, fontsize=7, va="bottom", transform=ax.get_yaxis_transform())
        ax.set_title(title)
        ax.set_xlabel("search epoch")
        ax.set_ylabel(ylabel)
        _integer_ticks(ax)
        out.append(_svg(fig))
    return {"panels": out, "note": note}


def plot_finetune(report: dict, styles: dict) -> str | None:
    """Validation top-1 and training loss per fine-tune epoch. None when no config was fine-tuned here."""
    tuned = [r for r in report["results"] if (r.get("finetune") or {}).get("history")]
    if not tuned:
        return None
    fig, (acc, loss) = _figure(9.5, 3.1, ncols=2)
    for r in tuned:
        st = styles[label_of(r)]
        hist = r["finetune"]["history"]
        ep = [h["epoch"] for h in hist]
        for ax, key in ((acc, "val_top1"), (loss, "train_loss")):
            ys = [float("nan") if finite(h.get(key)) is None else h[key] for h in hist]
            ax.plot(ep, ys, color=st.color, marker="o", ms=4, lw=1.3)
            if ep:
                _tag(ax, ep[-1], ys[-1], st, offset=(5, 0), fontsize=7, va="center")
    acc.set_title("fine-tune: validation top-1 per epoch")
    loss.set_title("fine-tune: training loss per epoch")
    for ax in (acc, loss):
        ax.set_xlabel("epoch")
        _integer_ticks(ax)
    acc.set_ylabel("validation top-1")
    loss.set_ylabel("training loss")
    return _svg(fig)


# ---- HTML pieces ------------------------------------------------------------------------------------

def _chip(style: Style | None) -> str:
    if style is None:
        return "<span class='chip orig'>&#9733;</span>"
    return f"<span class='chip' style='background:{style.color}'>{style.number}</span>"


def _cfg(styles: dict, label: str) -> str:
    return f"<span class='cfg'>{_chip(styles.get(label))}{e(label)}</span>"


def _table(head: list[str], rows: list[str], cls: str = "") -> str:
    """A table in a wrapper that scrolls sideways on its own (the page itself never does)."""
    return (f"<div class='wrap'><table class='{cls}'><thead><tr>" + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _check_badge(r: dict, hw: str) -> str:
    check = (r.get("budget_check") or {}).get(hw)
    if not check:
        return "<span class='dim'>&middot;</span>"
    tip = "the budget lies inside the measured p10-p90 spread: a rerun may decide otherwise"
    noise = (f"<br><span class='noise' title='{tip}'>" + ("uncertain: " if check.get("met") else "")
             + "within noise</span>") if check.get("within_noise") else ""
    ratio = finite(check.get("ratio"))
    figs = f" {ratio:.3f} / {r['budget']:g}" if ratio is not None else ""
    if check.get("met"):
        return f"<span class='ok'>&#10003; met</span><span class='dim'>{figs}</span>{noise}"
    return f"<span class='bad'>&#10007; missed</span><span class='dim'>{figs}</span>{noise}"


def _verdict_cell(r: dict) -> str:
    checks = r.get("budget_check") or {}
    if len(checks) == 1:  # the target column names the hardware
        return f"<span title='{e(verdict_text(r))}'>{_check_badge(r, next(iter(checks)))}</span>"
    parts = [f"{e(hw)}: {_check_badge(r, hw)}" for hw in checks]
    return f"<span title='{e(verdict_text(r))}'>" + ("<br>".join(parts) or "not measured") + "</span>"


def _delta_cell(change: dict | None) -> str:
    """The top-1 change against the original in points with its noise; beyond the noise: coloured."""
    text = e(delta_text(change, "").replace("+-", "\u00b1"))
    if not change or not change.get("beyond_noise"):
        return f"<span title='top-1 change against the original, +- 2 standard errors'>{text}</span>"
    cls = "ok" if change["delta"] > 0 else "bad"
    return f"<span class='{cls}' title='beyond the validation set&#39;s noise'>{text}</span>"


def _dominated(styles: dict, by: list[str], hw: str | None = None) -> str:
    where = f" on {e(hw)}" if hw else ""
    return (f"<span class='bad' title='another model is at least as accurate and at least as fast here'>dominated"
            f"</span>{where} by " + ", ".join(_cfg(styles, c) for c in by))


def original_line(report: dict) -> str:
    """How the original was made and the validation set's noise: what every delta is measured against."""
    b = report["baseline"]
    t = b.get("training") or {}
    weak = t.get("how") == "trained" and t.get("stable") is False
    text = e(t.get("text") or "weights of unrecorded origin")
    se = b.get("top1_se")
    noise = (f" · {b['n_val']} validation images: top-1 &plusmn; {100 * 2 * se:.1f} points (2 standard errors)"
             if b.get("n_val") and se is not None else "")
    return (f"<p class='orig'>{_chip(None)}<b>Original</b> (top-1 {fmt(b['top1'])}): "
            + (f"<span class='bad'>{text}</span>" if weak else text) + f"<span class='dim'>{noise}</span></p>")


def verdict_section(report: dict, styles: dict) -> str:
    recs = report.get("recommendations", [])
    met = [x for x in recs if x["config_id"]]
    lead = (f"<p class='lead'>{len(met)} of {len(recs)} hardware budgets have a model that met them on measurement."
            "</p>" if recs else "<p class='lead'>No budget was searched for; nothing to recommend.</p>")
    lead += original_line(report)
    rows = []
    for x in recs:
        hw = f"{e(hw_label(report, x['hardware']))}"
        budget = f"{x['budget']:g}" + (f"<br><span class='dim'>= {x['budget_ms']:.3g} ms</span>"
                                       if x.get("budget_ms") is not None else "")
        if x["config_id"]:
            note = ["<span class='noise' title='met, but the measured p10-p90 straddles the budget: a rerun may "
                    "miss it'>uncertain: met within noise</span>" if x.get("uncertain") else "",
                    _dominated(styles, x["dominated_by"]) if x.get("dominated_by") else "",
                    f"measured {x['measured_ms']:.3g} ms" if x.get("measured_ms") is not None else "",
                    "" if x["basis"] == "budget check" else "measured there, searched for other hardware",
                    f"{len(x['met_by'])} of {x['candidates']} configs fit" if x["candidates"] > 1 else ""]
            rows.append(f"<tr class='met'><td>{hw}</td><td>{budget}</td><td>{_cfg(styles, x['config_id'])}</td>"
                        f"<td>{fmt(x['top1'])}</td><td>{_delta_cell(x.get('top1_change'))}</td>"
                        f"<td class='notes'>{' · '.join(n for n in note if n)}</td></tr>")
        else:
            close = x.get("closest")
            note = (f"closest: {_cfg(styles, close['config_id'])} at {close['ratio']:.3f} of the original"
                    if close else "no config was measured here")
            rows.append(f"<tr class='missed'><td>{hw}</td><td>{budget}</td><td><span class='bad'>none met</span></td>"
                        f"<td>-</td><td>-</td><td class='notes'>{note}</td></tr>")
    ship = _table(["hardware", "budget<br><span class='dim'>of the original</span>", "ship", "top-1",
                   "vs original<br><span class='dim'>points</span>", "notes"], rows, "ship") if rows else ""
    targets = [h for h in report["hardware"] if any(h in (r.get("budget_check") or {}) for r in report["results"])]
    targets += sorted({h for r in report["results"] for h in (r.get("budget_check") or {})} - set(targets))
    matrix_rows = []
    for r in report["results"]:
        groups: dict[tuple, list[str]] = {}  # the same dominators on several hardware: one line
        for h, by in (r.get("dominated_by") or {}).items():
            groups.setdefault(tuple(by), []).append(h)
        dom = "<br>".join(_dominated(styles, list(by), ", ".join(hs)) for by, hs in groups.items())
        matrix_rows.append(f"<tr><td>{_cfg(styles, label_of(r))}</td><td>{r['budget']:g}</td><td>{fmt(r['top1'])}"
                           f"<br>{_delta_cell(r.get('top1_change'))}</td>"
                           + "".join(f"<td>{_check_badge(r, h)}</td>" for h in targets)
                           + f"<td class='notes dom'>{dom or '<span class=dim>not dominated</span>'}</td></tr>")
    matrix = _table(["config", "budget", "top-1<br><span class='dim'>vs original</span>"]
                    + [e(hw_label(report, h)) for h in targets] + ["dominated"], matrix_rows, "matrix") \
        if matrix_rows else ""
    return (f"<section id='verdict'><h2>Which model to ship</h2>{lead}{ship}"
            "<p class='hint'>Per hardware and budget: the most accurate config that met the budget on measurement "
            "(its own paired budget check, or its measured median against the original's for a config searched "
            "for other hardware). vs original: the top-1 change in points &plusmn; 2 standard errors of the "
            "difference (binomial, on the validation set's size); coloured where it is beyond that noise. "
            "Uncertain: the budget lies inside the measured p10-p90, so a rerun may miss it. Dominated: another "
            "model (or the original) is at least as accurate and at least as fast on that hardware, one of "
            "them strictly.</p>"
            f"<h3>Budget verdicts, measured (ratio to the original / budget)</h3>{matrix}</section>")


def warnings_section(report: dict) -> str:
    from ..verdicts import misses

    bad = misses(report)
    others = [w for w in report.get("warnings", []) if w not in bad]
    out = "<section id='warnings'><h2>Warnings</h2>"
    if bad:
        out += ("<div class='alarm'><b>Not every result can be trusted:</b><ul>"
                + "".join(f"<li>{e(m)}</li>" for m in bad) + "</ul></div>")
    if others:
        out += "<div class='note'><ul>" + "".join(f"<li>{e(w)}</li>" for w in others) + "</ul></div>"
    if not bad and not others:
        out += "<p>None: every budget met on measurement, every LUT passed its gate.</p>"
    return out + "</section>"


def legend(report: dict, styles: dict) -> str:
    items = "".join(f"<span class='item'>{_cfg(styles, label_of(r))}<span class='dim'> {e(r['hardware'])} "
                    f"@{r['budget']:g}</span></span>" for r in report["results"])
    keys = ("<span class='item'>&#9733; original</span><span class='item'>&#9679; searched for that hardware"
            "</span><span class='item'>&#9675; searched for other hardware</span><span class='item'>"
            "<span class='ln step'></span> Pareto front</span><span class='item'><span class='ln dash'></span>"
            " budget</span><span class='item'>&#9670; validated model (calibration)</span><span class='item'>"
            "grey &#9679; / red &#10007; calibration point within / over 10%</span><span class='item'>"
            "search lines: solid, dashed, dotted = 1st, 2nd, 3rd seed</span>")
    return f"<div class='legend' id='legend'><div>{items}</div><div class='keys'>{keys}</div></div>"


def _link(report: dict, kind: str, path: str) -> str:
    """A relative link from report.html (in the run's folder) to an artifact of a local store; an S3
    store's artifact is named by its URI (a browser cannot open it)."""
    store, run = report.get("store") or "", report["run_id"]
    name = kind if kind != "model" else "weights"
    if "://" in store and not store.startswith("file://"):
        return f"<code title='{e(store.rstrip('/') + '/' + path)}'>{e(name)}</code>"
    rel = path[len(run) + 1:] if path.startswith(run + "/") else path
    return f"<a href='{e(rel)}' title='{e(path)}'>{e(name)}</a>"


def results_tables(report: dict, styles: dict) -> str:
    b = report["baseline"]
    head = ["config", "target", f"budget <span class='dim'>{e(report.get('budget_metric', ''))}</span>",
            "verdict (measured)", "LUT's view", "top-1 / top-5<br><span class='dim'>vs original</span>",
            "held-out (seeds)", "FLOPs cut (ideal)", "params",
            "artifacts"]
    rows = [f"<tr class='base'><td>{_cfg(styles, 'original')}</td><td>-</td><td>-</td><td>-</td><td>-</td>"
            f"<td>{fmt(b['top1'])} / {fmt(b['top5'])}</td><td>-</td><td>{b['flops'] / 1e6:,.1f} MFLOPs</td>"
            f"<td>{b['params'] / 1e6:,.2f} M</td><td>-</td></tr>"]
    for r in report["results"]:
        held = r.get("heldout_acc") or {}
        deterministic = (r.get("search") or {}).get("deterministic")
        spread = (f" &plusmn; {fmt(held['std'])}" if held.get("std") is not None and not deterministic
                  else " <span class='dim' title='one search trial: nothing varied to give a spread'>(one run"
                  + (", deterministic search" if deterministic else "") + ")</span>")
        count = "" if deterministic else f" <span class='dim'>n={len(r['seeds'])}</span>"
        seeds = f"{fmt(held.get('mean'))}{spread}{count}" if held.get("mean") is not None else "-"
        lut = {True: "within", False: "<span class='bad'>over</span>", None: "-"}[r.get("within_budget")]
        missed = any(not c.get("met") for c in r["budget_check"].values())
        arts = " ".join(_link(report, k, p) for k, p in r["artifacts"].items())
        aimed = [f"{h} {f:.3g}" for h, f in (r.get("search_aimed_fraction") or {}).items() if f < r["budget"] - 1e-9]
        budget = f"{r['budget']:g}" + (f"<br><span class='dim' title='the search aimed a safety margin below the "
                                       f"budget'>aimed {e(', '.join(aimed))}</span>" if aimed else "")
        rows.append(f"<tr class='{'missed' if missed else 'met'}'><td>{_cfg(styles, label_of(r))}</td>"
                    f"<td>{e(r['hardware'])}</td><td>{budget}</td><td>{_verdict_cell(r)}</td><td>{lut}</td>"
                    f"<td><b>{fmt(r['top1'])}</b> / {fmt(r['top5'])}<br>{_delta_cell(r.get('top1_change'))}</td>"
                    f"<td>{seeds}</td>"
                    f"<td>{100 * r['flops_reduction']:.1f}% <span class='dim'>({fmt(r.get('ideal_speedup'), '.2f')}x)"
                    f"</span></td><td>{r['params'] / 1e6:,.2f} M</td><td class='arts'>{arts}</td></tr>")
    main = _table(head, rows, "results")
    hw = report["hardware"]
    lat_rows = [f"<tr class='base'><td>{_cfg(styles, 'original')}</td>"
                + "".join(f"<td><b>{fmt(b['latency_ms'].get(h))}</b> ms<br><span class='dim'>LUT "
                          f"{fmt(b['predicted_latency_ms'].get(h))} ms</span></td>" for h in hw) + "</tr>"]
    for r in report["results"]:
        cells = []
        for h in hw:
            ms = r["measured_latency_ms"].get(h)
            if ms is None:
                cells.append("<td class='dim'>not measured</td>")
                continue
            lo, hi = _spread(r, h)
            spread = f" <span class='dim'>({lo:.3g}-{hi:.3g})</span>" if lo is not None and hi is not None else ""
            share, err = r["speedup_share"].get(h), (r.get("lut_error") or {}).get(h)
            check = (r.get("budget_check") or {}).get(h)
            cls = "" if not check else (" class='cmet'" if check.get("met") else " class='cmiss'")
            cells.append(f"<td{cls}><b>{ms:.3f}</b> ms{spread}<br>{fmt(r['speedup'].get(h), '.2f')}x"
                         + (f" <span class='dim'>= {100 * share:.0f}% of ideal</span>" if share is not None else "")
                         + f"<br><span class='dim'>LUT {fmt(r['predicted_latency_ms'].get(h))} ms"
                         + (f" ({100 * err:+.1f}%)" if err is not None else "") + "</span></td>")
        lat_rows.append(f"<tr><td>{_cfg(styles, label_of(r))}</td>{''.join(cells)}</tr>")
    per_hw = _table(["config"] + [e(hw_label(report, h)) for h in hw], lat_rows, "perhw")
    return (f"<section id='results'><h2>Results</h2>{main}"
            "<h3>Latency per hardware</h3><p class='hint'>measured median (p10-p90) · speedup over the original "
            "(share of the FLOPs-ideal) · LUT prediction (its error); green / red edge: the budget met / missed "
            f"there.</p>{per_hw}</section>")


def calibration_section(report: dict, styles: dict) -> str:
    rows = []
    for h in report["hardware"]:
        cal, q = report.get("calibration", {}).get(h), report.get("lut_quality", {}).get(h, {})
        if not cal:
            rows.append(f"<tr><td>{e(hw_label(report, h))}</td><td colspan='6' class='dim'>no calibration</td></tr>")
            continue
        gate_ok = cal.get("passed")
        held = cal.get("heldout_within_10pct")
        rows.append(f"<tr><td>{e(hw_label(report, h))}</td><td>{cal['samples']}</td>"
                    f"<td>{fmt(cal.get('within_10pct'), '.0%')}</td><td>{fmt(cal.get('gate'), '.0%')} "
                    + ("<span class='ok'>passed</span>" if gate_ok else "<span class='bad'>failed</span>")
                    + f"</td><td>{fmt(cal.get('median_rel_error'), '.1%')}</td>"
                    f"<td>{fmt(held, '.0%')} <span class='dim'>of {len(cal['heldout'])}</span></td>"
                    f"<td>{q.get('remeasured_rows', cal.get('remeasured_rows')) or 0} rows, {cal.get('rounds') or 0} "
                    f"round(s)<br><span class='dim'>{q.get('noisy_rows', 0)} noisy</span></td></tr>")
    table = _table(["hardware", "points", "within 10%<br><span class='dim'>held out; ends in the fit</span>", "gate",
                    "median error", "validated<br><span class='dim'>within 10%</span>", "re-measured"], rows, "cal")
    plots = "".join(f"<figure class='plot'>{plot_calibration(report, h, styles)}</figure>" for h in report["hardware"])
    return (f"<section id='calibration'><h2>LUT calibration</h2><p class='hint'>measured ~ a + b x (sum of the "
            "layers' LUT latencies). Each calibration point is predicted from a fit without it (leave-one-out), "
            "except the two ends of the range (the original and the cheapest model), which bound every model a "
            "budget selects and are judged by the fit through them; the validated models were never fitted "
            f"on.</p>{table}<div class='grid'>{plots}</div></section>")


def search_section(report: dict, styles: dict) -> str:
    body = ""
    drawn = {h: p for h in report["hardware"] if (p := plot_search(report, h, styles)) is not None}
    notes = {p["note"] for p in drawn.values()}
    for h, plots in drawn.items():
        note = f"<p class='hint'>{e(plots['note'])}</p>" if plots["note"] and len(notes) > 1 else ""
        body += (f"<h3>{e(hw_label(report, h))}: per search epoch</h3><div class='grid three'>"
                 + "".join(f"<figure class='plot'>{p}</figure>" for p in plots["panels"]) + f"</div>{note}")
    if len(notes) == 1 and None not in notes:  # the same reason on every hardware: said once
        body += f"<p class='hint'>{e(notes.pop())}</p>"
    body = body or ("<p class='dim'>No trial of this run kept its per-epoch curve (made before it was "
                    "recorded).</p>")
    rows = []
    for r in report["results"]:
        for s in r.get("per_seed") or []:
            cost = ", ".join(f"{k} {v:.3g}" for k, v in s["predicted_cost"].items() if finite(v) is not None)
            lut = {True: "within", False: "<span class='bad'>over</span>", None: "-"}[s.get("within_budget")]
            best = " <span class='dim'>(selected)</span>" if s.get("seed") == r.get("best_seed") else ""
            rows.append(f"<tr><td>{_cfg(styles, label_of(r))}</td><td>{e(str(s.get('seed')))}{best}</td>"
                        f"<td>{fmt(s.get('heldout_acc'))}</td><td>{e(cost) or '-'}</td><td>{lut}</td>"
                        f"<td>{len(s.get('history') or [])}</td></tr>")
    seeds = _table(["config", "seed", "held-out accuracy (selected ranks)", "predicted cost (ms)", "LUT's view",
                    "epochs recorded"],
                   rows, "seeds") if rows else ""
    agree = [f"{_cfg(styles, label_of(r))} {fmt(r['rank_agreement'], '.2f')}" for r in report["results"]
             if r.get("rank_agreement") is not None and len(r.get("seeds") or []) > 1]
    if agree:
        seeds += ("<p class='hint'>The seeds' agreement on ranks (the share of layers at the same rank, mean over "
                  "pairs of seeds): " + ", ".join(agree) + "</p>")
    mode = SEARCH_MODE_TEXT.get(report.get("search_mode"), "")
    mode = f"<p class='hint'>{e(mode)}</p>" if mode else ""
    return f"<section id='search'><h2>Search</h2>{mode}{body}<h3>Seeds</h3>{seeds}</section>"


SEARCH_MODE_TEXT = {
    "supernet": "Search mode: supernet (the paper's): weight steps train the supernet, alpha steps move the "
                "architecture on held-out data; held-out accuracy is the supernet's.",
    "blockwise": "Search mode: blockwise: only alpha moved, on the HOSVD of the original (no weight training), "
                 "driven by each block's output error against the original's; held-out accuracy is of each "
                 "epoch's argmax architecture before any fine-tune, so it is low where the budget is tight.",
    "blockwise-exact": "Search mode: blockwise-exact: each block's output error against the original's (relative "
                       "to what the block's searched layers add) measured at every combination of its layers' "
                       "ranks (no weight training), and the ranks with the "
                       "least summed error under the budget found exactly; held-out accuracy is of the chosen "
                       "architecture before any fine-tune, so it is low where the budget is tight.",
}


def finetune_section(report: dict, styles: dict) -> str:
    svg = plot_finetune(report, styles)
    body = f"<figure class='plot wide1'>{svg}</figure>" if svg else "<p class='dim'>No fine-tune history.</p>"
    starts = [f"{_cfg(styles, label_of(r))} {e(r['finetune']['init'])}" for r in report["results"]
              if (r.get("finetune") or {}).get("init")]
    if starts:
        body += ("<p class='hint'>Each fine-tune started from (supernet: the search's own factors for the selected "
                 "ranks; hosvd: a fresh decomposition of the original): " + ", ".join(starts) + "</p>")
    return f"<section id='finetune'><h2>Fine-tune</h2>{body}</section>"


def stages_section(report: dict) -> str:
    stages = report.get("stages") or {}
    if not stages:
        return "<section id='stages'><h2>Stage timings</h2><p class='dim'>No manifest was read.</p></section>"
    longest = max([s["seconds"] for s in stages.values() if s.get("seconds")] or [1])
    rows = []
    for name, s in stages.items():
        sec = s.get("seconds")
        width = 100 * sec / longest if sec else 0
        shown = (f"{sec:,.1f} s" if sec < 120 else f"{sec / 60:,.1f} min") if sec is not None else "-"
        state = s.get("state") or "-"
        rows.append(f"<tr><td>{e(name)}</td><td class='st-{e(state)}'>{e(state)}</td><td>{shown}</td>"
                    f"<td class='barcell'><div class='bar' style='width:{width:.1f}%'></div></td>"
                    f"<td class='dim'>{e(s.get('started') or '-')}</td>"
                    f"<td>{e(str(s.get('attempts') or '-'))}</td></tr>")
    total = sum(s["seconds"] for s in stages.values() if s.get("seconds"))
    return (f"<section id='stages'><h2>Stage timings</h2><p class='hint'>from the run's manifest; "
            f"{total / 60:,.1f} min in all (the report stage is still running as it writes this)</p>"
            + _table(["stage", "state", "time", "", "started (UTC)", "attempts"], rows, "stages") + "</section>")


CSS = """
:root { --fg: #1d2329; --dim: #6a737d; --line: #d8dee4; --bg2: #f6f8fa; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0 auto; padding: 1.2em 2em 3em; max-width: 1500px; line-height: 1.45; }
h1 { font-size: 1.6em; margin: 0.2em 0; } h2 { font-size: 1.25em; margin: 1.6em 0 0.5em; padding-bottom: 0.2em;
     border-bottom: 2px solid var(--line); } h3 { font-size: 1em; margin: 1.2em 0 0.4em; color: #333; }
nav { font-size: 0.85em; margin: 0.3em 0 0.8em; } nav a { margin-right: 0.9em; color: #0b5cad; text-decoration: none; }
.meta { color: var(--dim); margin: 0; } .meta b { color: var(--fg); } code { word-break: break-all; }
.lead { font-size: 1.05em; } .hint { color: var(--dim); font-size: 0.85em; margin: 0.3em 0; }
.dim { color: var(--dim); } .ok { color: #2e7d32; font-weight: 600; } .bad { color: #b02a37; font-weight: 600; }
.noise { color: #8a5300; font-size: 0.85em; } .orig { margin: 0.2em 0 0.6em; }
.demo { background: #fff3cd; border: 2px solid #d39e00; padding: 0.7em 1em; font-weight: 600; margin: 0.6em 0; }
.alarm { background: #f8d7da; border: 1px solid #b02a37; color: #58151c; padding: 0.5em 1em; margin-bottom: 0.6em; }
.note { background: #eef2fb; border: 1px solid #a9b8dc; padding: 0.5em 1em; }
.alarm ul, .note ul { margin: 0.3em 0; padding-left: 1.2em; }
.wrap { overflow-x: auto; max-width: 100%; margin: 0.3em 0 0.6em; }
table { border-collapse: collapse; font-size: 0.84em; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: var(--bg2); font-weight: 600; }
td { white-space: nowrap; } td.notes { white-space: normal; min-width: 12em; } td.dom { min-width: 9em; }
tr.base td { color: #555; background: #fafafa; }
tr.missed td:first-child, td.cmiss { box-shadow: inset 3px 0 0 #b02a37; }
tr.met td:first-child, td.cmet { box-shadow: inset 3px 0 0 #2e7d32; }
table.ship td { font-size: 1.05em; padding: 6px 12px; }
td.arts a, td.arts code { margin-right: 0.5em; }
.chip { display: inline-block; min-width: 1.5em; padding: 0 0.3em; margin-right: 0.4em; border-radius: 0.75em;
        color: #fff; font-size: 0.8em; font-weight: 700; text-align: center; }
.chip.orig { background: #222; } .cfg { white-space: nowrap; }
.legend { position: sticky; top: 0; z-index: 5; background: rgba(255,255,255,0.96); border: 1px solid var(--line);
          border-radius: 6px; padding: 0.45em 0.8em; margin: 1.2em 0 0; font-size: 0.85em; }
.legend .item { display: inline-block; margin: 0.1em 1.1em 0.1em 0; white-space: nowrap; }
.legend .keys { color: var(--dim); margin-top: 0.2em; font-size: 0.92em; }
.ln { display: inline-block; width: 1.8em; height: 0; vertical-align: middle; }
.ln.step { border-top: 2px solid #777; } .ln.dash { border-top: 2px dashed #b02a37; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 480px), 1fr)); gap: 0.8em 1.4em; }
.grid.wide { grid-template-columns: repeat(auto-fill, minmax(min(100%, 760px), 1fr)); }
.grid.three { grid-template-columns: repeat(auto-fill, minmax(min(100%, 330px), 1fr)); }
.grid.three svg { max-width: 560px; }
figure.plot { margin: 0; min-width: 0; } .plot svg { width: 100%; height: auto; display: block; }
.plot.ranks svg { max-width: 860px; } .plot.wide1 svg, .grid.wide svg { max-width: 1000px; }
td.barcell { width: 40%; min-width: 120px; }
.bar { height: 0.8em; background: #5b8dd6; border-radius: 2px; margin-top: 0.3em; }
.st-done { color: #2e7d32; } .st-failed { color: #b02a37; } .st-running { color: #8a5300; }
details pre { overflow-x: auto; background: var(--bg2); padding: 0.8em; font-size: 0.75em; max-height: 40em; }
"""


def render_page(report: dict) -> str:
    styles = config_styles(report)
    banner = (f"<div class='demo'>DATA SET: {e(report['dataset'])}. The accuracies below say nothing about real "
              "images; the run exercises every stage for real.</div>") if report.get("demo") else ""
    sim = report.get("simulated") or []
    meta = (f"<p class='meta'>model <b>{e(report['model'])}</b> · data set <b>{e(report['dataset'])}</b> · hardware "
            f"<b>{e(', '.join(hw_label(report, h) for h in report['hardware']))}</b> · budget metric "
            f"<b>{e(report.get('budget_metric', ''))}</b> · {len(report['results'])} configs"
            + (f" · store <code>{e(report['store'])}</code>" if report.get("store") else "") + "</p>")
    if sim:
        meta += (f"<p class='hint'>{e(', '.join(sim))}: simulated hardware; its 'measured' latency is the "
                 "simulator's, not a device's.</p>")
    nav = "<nav>" + "".join(f"<a href='#{i}'>{t}</a>" for i, t in (
        ("verdict", "verdict"), ("warnings", "warnings"), ("accuracy", "accuracy vs latency"), ("results", "results"),
        ("calibration", "LUT calibration"), ("ranks", "ranks"), ("speedup", "speedup"), ("search", "search"),
        ("finetune", "fine-tune"), ("stages", "stage timings"))) + "</nav>"
    hw = report["hardware"]
    accuracy = ("<section id='accuracy'><h2>Accuracy vs measured latency</h2><div class='grid'>"
                + "".join(f"<figure class='plot'>{plot_accuracy_latency(report, h, styles)}</figure>" for h in hw)
                + "</div></section>")
    ranks = (f"<section id='ranks'><h2>Per-layer ranks</h2><figure class='plot ranks'>{plot_ranks(report, styles)}"
             "</figure></section>")
    speed = ("<section id='speedup'><h2>Measured vs FLOPs-ideal speedup</h2><div class='grid'>"
             + "".join(f"<figure class='plot'>{plot_speedup(report, h, styles)}</figure>" for h in hw)
             + "</div></section>")
    raw = e(json.dumps(report, indent=1, sort_keys=True))
    body = "\n".join([banner, f"<h1>HALOC report: run {e(report['run_id'])}</h1>", meta, nav,
                      verdict_section(report, styles), warnings_section(report), legend(report, styles), accuracy,
                      results_tables(report, styles), calibration_section(report, styles), ranks, speed,
                      search_section(report, styles), finetune_section(report, styles), stages_section(report),
                      f"<details><summary>report.json</summary><pre>{raw}</pre></details>"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>HALOC report {e(report['run_id'])}</title>
<style>{CSS}</style></head><body>
{body}
</body></html>
"""
