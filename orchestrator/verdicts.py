"""Measured verdicts: is a LUT good enough to search on, did a selected model meet its budget, and
what the run's exit code says about both. Pure functions over measurements (numbers in, dicts out).

A result is never called good on the LUT's word alone: `within_budget` is what the search predicted
from the LUT, `met` is what was measured on the hardware, with the measured spread beside it.
"""
from __future__ import annotations

import math
import statistics

EXIT_OK, EXIT_VERDICT = 0, 3  # 3: done, but a budget was missed on measurement or a noisy LUT was accepted


class NoisyLutError(RuntimeError):
    """A LUT failed its quality gate (the calibrated prediction misses too many held-out whole-model
    measurements): the timing node was too busy to measure. Not bad input."""


def lut_quality(calibration, noisy_rows: int = 0, accepted: bool = False) -> dict:
    """The report's `lut_quality` entry of one hardware, from its Calibration. Noisy rows kept in a
    LUT whose calibration passed are counted (`noisy_rows`) but not a failure: the gate judges the
    LUT. `accepted_noisy`: the LUT failed its gate and the run went on (--accept-noisy-lut)."""
    return {"within_10pct": calibration.within_10pct, "median_abs_error": calibration.median_rel_error,
            "tolerance": calibration.tolerance, "within_tolerance": calibration.within_tolerance,
            "gate": calibration.gate, "passed": calibration.passed, "remeasured_rows": calibration.remeasured_rows,
            "noisy_rows": noisy_rows, "accepted_noisy": accepted and not calibration.passed,
            "samples": calibration.samples, "rounds": calibration.rounds}


def noisy_rows_text(noisy: list[dict], max_spread: float | None, shown: int = 3) -> str:
    """'2 LUT row(s) stayed noisy (spread (p90 - p10) / median against the profile's limit 0.5: ...)'."""
    if not noisy:
        return ""
    limit = f" against the profile's limit {max_spread:g}" if max_spread is not None else ""
    listed = "; ".join(f"{r['signature']} rank {r['rank']}: {r['spread']:.2f}" for r in noisy[:shown])
    more = f"; and {len(noisy) - shown} more" if len(noisy) > shown else ""
    return (f"{len(noisy)} LUT row(s) stayed noisy after every re-measurement (spread (p90 - p10) / median"
            f"{limit}: {listed}{more})")


def gate_message(hardware: str, calibration, noisy: list[dict] = (), simulated: bool = False,
                 max_spread: float | None = None, profile_file: str | None = None) -> str:
    """What failed (the calibrated LUT's held-out figures, and the rows that stayed noisy), and the
    ways on, with a copy-paste recipe for a profile that times with more repeats."""
    what = (f"{calibration.within_tolerance:.0%} of the calibration's configurations within "
            f"{calibration.tolerance_text} of the measured latency "
            f"(gate {calibration.gate:.0%}, median error {calibration.median_rel_error:.1%}, "
            f"{calibration.remeasured_rows} rows measured again in {calibration.rounds} round(s))")
    rows = noisy_rows_text(list(noisy), max_spread)
    if rows:
        what += f"; {rows}"
    if simulated:
        return (f"the LUT of simulated hardware {hardware!r} failed its quality gate: {what}; the layers' sum does "
                "not predict the simulated whole model. Pass --accept-noisy-lut to go on with it, and report it")
    source = profile_file or f"hw_profiles/profiles/{hardware}.yaml"
    recipe = (f"mkdir -p my_profiles && cp {source} my_profiles/{hardware}.yaml && "
              f"sed -i 's/^repeats: .*/repeats: 60/' my_profiles/{hardware}.yaml")
    return (f"the LUT of hardware {hardware!r} failed its quality gate: {what}; the node was probably busy while "
            "it measured. Fix: rerun on a quiet node (the same command resumes and keeps every steady row); or "
            f"time with more repeats in your own copy of the profile: `{recipe}`, then rerun the same command with "
            "`--profile-dir my_profiles` added (its rows are measured again under the new protocol); or pass "
            "--accept-noisy-lut to go on with this LUT (the report then says so and the run exits 3)")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


def budget_check(budget: float, original: dict, compressed: dict) -> dict:
    """The measured verdict of one model on one hardware against `budget` x the original's latency.

    `original` and `compressed` are measure_models results of one interleaved session (median_ms,
    p10_ms, p90_ms, samples_ms). The verdict is one number, `ratio`: the median of the paired
    per-round ratios (compressed / original timed in the same round, so a slow moment of the node
    slows both and cancels), or the ratio of the medians where there are no pairs (one sample each).
    met: ratio <= budget; every text and the report's "which model to ship" read this same ratio.
    within_noise: the budget lies inside the spread (p10-p90) of the paired ratios, so a rerun could
    decide the other way. budget_ms / measured_ms are the same session's medians, for the plots.
    """
    budget_ms = budget * original["median_ms"]
    measured = compressed["median_ms"]
    pairs = [c / o for c, o in zip(compressed.get("samples_ms") or [], original.get("samples_ms") or []) if o > 0]
    ratio = statistics.median(pairs) if pairs else measured / original["median_ms"]
    ratio_p10 = _quantile(pairs, 0.1) if pairs else ratio
    ratio_p90 = _quantile(pairs, 0.9) if pairs else ratio
    return {"budget_ms": budget_ms, "measured_ms": measured, "measured_p10_ms": compressed["p10_ms"],
            "measured_p90_ms": compressed["p90_ms"], "met": bool(ratio <= budget * (1 + 1e-9)),
            "ratio": ratio, "paired_rounds": len(pairs), "ratio_p10": ratio_p10, "ratio_p90": ratio_p90,
            "within_noise": bool(ratio_p10 <= budget <= ratio_p90) and ratio_p10 != ratio_p90}


def flops_check(budget: float, original_flops: int, flops: int) -> dict:
    """FLOPs are counted, not measured: exact."""
    budget_flops = budget * original_flops
    return {"budget_flops": budget_flops, "measured_flops": flops, "met": bool(flops <= budget_flops * (1 + 1e-9)),
            "ratio": flops / original_flops, "within_noise": False}


def misses(report: dict) -> list[str]:
    """One line per reason the run must not exit 0: a missed budget, a noisy LUT accepted."""
    out = []
    for r in report.get("results", []):
        for target, check in (r.get("budget_check") or {}).items():
            if not check.get("met"):
                got = check.get("measured_ms", check.get("measured_flops"))
                want = check.get("budget_ms", check.get("budget_flops"))
                unit = "ms" if "budget_ms" in check else "FLOPs"
                paired = f", median of {check['paired_rounds']} paired rounds" if check.get("paired_rounds") else ""
                ratio = check.get("ratio", got * r["budget"] / want if got is not None and want else float("nan"))
                out.append(f"{r.get('config_id')}: missed its budget on {target}: {ratio:.3f} of the original "
                           f"against {r['budget']:g} (measured {_num(got)} {unit} against {_num(want)} {unit}{paired})"
                           + (", within the measurement's noise" if check.get("within_noise") else ""))
    for hw, q in (report.get("lut_quality") or {}).items():
        if q.get("accepted_noisy"):
            out.append(f"the LUT of {hw!r} was accepted noisy (--accept-noisy-lut): "
                       f"{q.get('within_tolerance', q['within_10pct']):.0%} within "
                       f"{q.get('tolerance', 0.10) * 100:g}%, "
                       f"gate {q['gate']:.0%}; its predictions are not to be trusted")
    return out


def exit_code(report: dict, allow_miss: bool = False) -> int:
    return EXIT_OK if allow_miss or not misses(report) else EXIT_VERDICT


def _num(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.4g}" if abs(x) < 1e6 else f"{x:.4e}"
