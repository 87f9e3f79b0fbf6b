"""Profiling figures for BENCHMARKS.md, on an embedded local Ray or a running cluster (--address).

    python benchmarks/bench_profiling.py                 # all parts, a few minutes on 2 cores
    python benchmarks/bench_profiling.py --smoke-test    # tiny grids, to check it runs
    python benchmarks/bench_profiling.py --parts lut,parallel --json out.json

The `parallel` part compares CPU and ASIC profiling on two nodes at once with one after the other;
it needs two nodes with different resources, e.g. on one machine:

    ray start --head --port=6390 --resources='{"hw_cpu": 1}' --num-cpus=1
    ray start --address=127.0.0.1:6390 --resources='{"hw_asic": 1}' --num-cpus=1
    python benchmarks/bench_profiling.py --parts parallel --address 127.0.0.1:6390

Parts:
  lut       time to build the CPU LUT of resnet18 (batch 1) and resnet20 over the rank grid
  parallel  CPU and ASIC profiling of resnet20 on two nodes at once vs one after the other
  accuracy  share of random rank configs whose calibrated LUT prediction is within 10% of the
            measured end-to-end latency (leave-one-out), CPU and ASIC; ZigZag seconds per config;
            with --busy N, N processes of this benchmark keep cores busy meanwhile (a shared node),
            and the rows the noise handling measured again or refused are counted

    python benchmarks/bench_profiling.py --parts accuracy --asic-samples 0 --busy 1
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from orchestrator.run_layout import RunLayout

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout


def _profiles(args):
    from hw_profiles.profile import get_profile

    cpu = replace(get_profile("cpu"), threads=args.threads, repeats=args.repeats)
    asic = get_profile("asic")
    if args.smoke_test:
        cpu, asic = replace(cpu, rank_step=64, repeats=3, warmup=1), replace(asic, rank_step=64)
    return cpu, asic


def bench_lut(args, cpu) -> dict:
    from orchestrator.stages.profiling import profile_model

    out = {}
    for model, step in (("resnet20", args.rank_step_r20), ("resnet18", args.rank_step_r18)):
        profile = replace(cpu, rank_step=cpu.rank_step if args.smoke_test else step)
        with tempfile.TemporaryDirectory() as store:
            t0 = time.monotonic()
            r = profile_model(RunLayout(store, "b"), model, [profile], progress=False)["cpu"]
            out[model] = {"rows": r.total_rows, "rank_step": profile.rank_step, "seconds": time.monotonic() - t0,
                          "rows_per_s": r.rate, "actors": len(r.actor_nodes)}
    return out


def bench_parallel(args, cpu, asic) -> dict:
    from orchestrator.stages.profiling import profile_model

    def run(profiles) -> float:
        with tempfile.TemporaryDirectory() as store:
            t0 = time.monotonic()
            profile_model(RunLayout(store, "b"), "resnet20", profiles, progress=False)
            return time.monotonic() - t0

    cpu = replace(cpu, rank_step=cpu.rank_step if args.smoke_test else args.rank_step_r20)
    alone_cpu, alone_asic = run([cpu]), run([asic])
    together = run([cpu, asic])
    return {"cpu_s": alone_cpu, "asic_s": alone_asic, "sequential_s": alone_cpu + alone_asic, "together_s": together,
            "together_over_sum": together / (alone_cpu + alone_asic),
            "together_over_longest": together / max(alone_cpu, alone_asic)}


_BUSY = "while True:\n    pass\n"


def busy_processes(n: int) -> list:
    """n processes each keeping one core busy (a neighbour on a shared node); the caller kills them."""
    import subprocess

    return [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(n)]


def bench_accuracy(args, cpu, asic) -> dict:
    from orchestrator.run_layout import RunLayout
    from orchestrator.stages.profiling import calibrate, profile_model

    out = {}
    model = args.accuracy_model
    cpu = replace(cpu, rank_step=cpu.rank_step if args.smoke_test else args.rank_step_accuracy)
    todo = [(cpu, args.samples)] + ([(asic, args.asic_samples)] if args.asic_samples else [])
    busy = busy_processes(args.busy)
    try:
        with tempfile.TemporaryDirectory() as store:
            for profile, samples in todo:
                t0 = time.monotonic()
                profile_model(RunLayout(store, "b"), model, [profile], progress=False)
                profile_s = time.monotonic() - t0
                t0 = time.monotonic()
                cal = calibrate(RunLayout(store, "b"), model, [profile], samples=samples,
                                accept_noisy=True)[profile.name]
                seconds = time.monotonic() - t0
                rows = RunLayout(store, "b").read_lut(profile.name).to_pylist()
                out[profile.name] = {
                    "model": model, "rank_step": profile.rank_step, "samples": cal.samples, "a_ms": cal.a_ms,
                    "b": cal.b, "within_10pct_loo": cal.within_10pct, "median_rel_error_loo": cal.median_rel_error,
                    "gate": cal.gate, "passed": cal.passed, "gate_rounds": cal.rounds,
                    "remeasured_rows_gate": cal.remeasured_rows, "rows": len(rows),
                    "rows_remeasured": sum(r["remeasured"] > 0 for r in rows),
                    "rows_noisy": sum(bool(r["noisy"]) for r in rows), "profile_s": profile_s,
                    "seconds_per_config": seconds / samples, "busy_processes": args.busy}
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="lut,parallel,accuracy")
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads while timing")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rank-step-r20", type=int, default=8)
    parser.add_argument("--rank-step-r18", type=int, default=32)
    parser.add_argument("--samples", type=int, default=20, help="random configs for the CPU calibration")
    parser.add_argument("--asic-samples", type=int, default=6, help="random configs for the ASIC calibration (0: skip)")
    parser.add_argument("--accuracy-model", default="resnet20", help="model of the accuracy part")
    parser.add_argument("--rank-step-accuracy", type=int, default=8, help="CPU LUT grid of the accuracy part")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--address", help="a running Ray cluster (default: an embedded local Ray)")
    parser.add_argument("--busy", type=int, default=0, help="accuracy part: keep this many cores busy meanwhile")
    args = parser.parse_args(argv)

    import ray

    from orchestrator.cluster import connect

    cpu, asic = _profiles(args)
    connect(args.address)
    figures = {"machine": {"cores": __import__("os").cpu_count()}, "threads": args.threads, "repeats": cpu.repeats}
    try:
        parts = args.parts.split(",")
        if "lut" in parts:
            figures["lut"] = bench_lut(args, cpu)
            print(json.dumps({"lut": figures["lut"]}, indent=1), flush=True)
        if "parallel" in parts:
            figures["parallel"] = bench_parallel(args, cpu, asic)
            print(json.dumps({"parallel": figures["parallel"]}, indent=1), flush=True)
        if "accuracy" in parts:
            figures["accuracy"] = bench_accuracy(args, cpu, asic)
            print(json.dumps({"accuracy": figures["accuracy"]}, indent=1), flush=True)
    finally:
        ray.shutdown()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
