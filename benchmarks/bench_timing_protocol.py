"""The cpu profile's timing protocol: 1 against 2 torch intra-op threads, for row noise and for how
well the LUT predicts whole models, on a quiet machine and with one core kept busy.

    python benchmarks/bench_timing_protocol.py                     # both conditions, a few minutes
    python benchmarks/bench_timing_protocol.py --conditions quiet --json out.json
    python benchmarks/bench_timing_protocol.py --smoke-test        # tiny, to check it runs

For each condition (quiet; `busy`: one spinning process of this benchmark's own on one core, as a
neighbour would) and each thread count, it measures the demo model's LUT rows with the project's own
row protocol (hw_profiles.measure.measure_rows: timing, the reference workload, re-measurement of
noisy rows), the two thread counts row by row in turns (so that both see the same machine), then
calibrates each LUT on whole models (the original, the cheapest the LUT prices, random configs
spread between; hw_profiles.calibration) and reports the share of held-out models within 10%.
No Ray: these are the functions the profiler actors call. Figures: BENCHMARKS.md, "timing protocol".
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

RESULT = Path(__file__).parent / "results" / "timing_protocol.json"


def _spin():
    """One process keeping one core busy, stopped by the caller."""
    return subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"], stdout=subprocess.DEVNULL)


def _rows(profiles: dict, items: list) -> dict:
    """LUT rows of every item under each profile, the profiles in turns per row (order alternating)."""
    from hw_profiles.measure import measure_rows, reference_clock

    clocks = {t: reference_clock(p) for t, p in profiles.items()}
    rows = {t: [] for t in profiles}
    seconds = {t: 0.0 for t in profiles}
    order = list(profiles)
    for i, item in enumerate(items):
        for t in (order if i % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            rows[t] += measure_rows(profiles[t], [item], clocks[t])
            seconds[t] += time.perf_counter() - t0
    return {"rows": rows, "seconds": seconds}


def _row_figures(rows: list, max_spread: float, seconds: float) -> dict:
    spreads = [(r.latency_p90_ms - r.latency_p10_ms) / r.latency_median_ms for r in rows]
    ordered = sorted(spreads)
    return {"rows": len(rows), "noisy_rows": sum(r.noisy for r in rows),
            "remeasured_rows": sum(r.remeasured > 0 for r in rows),
            "spread_median": statistics.median(ordered), "spread_p90": ordered[int(0.9 * (len(ordered) - 1))],
            "over_max_spread": sum(s > max_spread for s in spreads), "seconds": seconds}


def _calibration(profile, model: str, rows: list, samples: int) -> dict:
    import haloc
    from hw_profiles.calibration import cheapest_config, fit_calibration, random_configs
    from hw_profiles.lut import LatencyTable, rows_to_table
    from hw_profiles.measure import measure_models

    specs = haloc.models.layer_specs(model)
    lut = LatencyTable(profile.name, rows_to_table(rows))
    configs = [{}, cheapest_config(specs, lut, profile.batch_size)]
    configs += random_configs(specs, samples - 2, seed=0, rank_step=profile.rank_step)
    t0 = time.perf_counter()
    measured = measure_models(profile, model, configs, profile.batch_size)
    sums = [lut.predict(specs, c, profile.batch_size) for c in configs]
    cal = fit_calibration(profile.name, sums, [m["median_ms"] for m in measured], profile.gate,
                          [{"ranks": c} for c in configs])
    low, high = cal.cost_span
    return {"within_10pct": cal.within_10pct, "median_rel_error": cal.median_rel_error, "passed": cal.passed,
            "samples": cal.samples, "cost_span": [low, high], "a_ms": cal.a_ms, "b": cal.b,
            "seconds": time.perf_counter() - t0}


def run_condition(condition: str, args) -> dict:
    import haloc
    from hw_profiles.profile import get_profile
    from orchestrator.stages.profiling import needed_items

    base = replace(get_profile("cpu"), rank_step=args.rank_step)
    if args.smoke_test:
        base = replace(base, repeats=3, warmup=1)
    profiles = {t: replace(base, threads=t) for t in args.threads}
    items = needed_items(haloc.models.layer_specs(args.model), base, base.batch_size, base.rank_step)
    items = items[:args.max_rows] if args.max_rows else items
    spinner = _spin() if condition == "busy" else None
    try:
        measured = _rows(profiles, items)
        out = {}
        for t, p in profiles.items():
            complete = not args.max_rows  # a calibration needs every layer's rows
            out[str(t)] = {**_row_figures(measured["rows"][t], p.max_spread, measured["seconds"][t]),
                           "calibration": _calibration(p, args.model, measured["rows"][t], args.samples)
                           if complete else None}
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait(timeout=10)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conditions", default="quiet,busy", help="comma-separated: quiet, busy")
    ap.add_argument("--threads", default="1,2", help="thread counts to compare, comma-separated")
    ap.add_argument("--model", default="resnet18-demo")
    ap.add_argument("--rank-step", type=int, default=32, help="the demo's profiling grid (95 rows of resnet18-demo)")
    ap.add_argument("--samples", type=int, default=10, help="whole models per calibration (the demo's)")
    ap.add_argument("--max-rows", type=int, default=0, help="measure only the first N rows (0: all)")
    ap.add_argument("--json", default=str(RESULT), help="result file (default benchmarks/results/timing_protocol.json)")
    ap.add_argument("--smoke-test", action="store_true", help="tiny settings: checks that it runs")
    args = ap.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",")]
    if args.smoke_test:
        args.model, args.samples, args.rank_step = "resnet20", 4, 64
    import os

    from benchmarks.provenance import provenance

    started, load_before = time.time(), os.getloadavg()
    results = {c: run_condition(c, args) for c in args.conditions.split(",")}
    record = {"benchmark": "timing_protocol", "command": "python benchmarks/bench_timing_protocol.py "
              + " ".join(argv if argv is not None else sys.argv[1:]), **provenance(started, load_before),
              "settings": {"model": args.model, "rank_step": args.rank_step, "samples": args.samples,
                           "max_rows": args.max_rows, "threads": args.threads, "smoke_test": args.smoke_test},
              "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    for condition, arms in results.items():
        for t, f in arms.items():
            c = f["calibration"]
            cal = (f"calibration {c['within_10pct']:.0%} within 10% (median error {c['median_rel_error']:.1%}, models "
                   f"{c['cost_span'][0]:.2f}-{c['cost_span'][1]:.2f} of the original)" if c else "no calibration")
            print(f"{condition:5s} threads {t}: {f['rows']} rows in {f['seconds']:.0f} s, noisy {f['noisy_rows']}, "
                  f"re-measured {f['remeasured_rows']}, spread median {f['spread_median']:.3f} p90 "
                  f"{f['spread_p90']:.3f}; {cal}")
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
