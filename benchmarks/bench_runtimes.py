"""Measured speedup against the FLOPs-ideal one, under eager PyTorch and under ONNX Runtime, side by side.

    .venv/bin/python -m benchmarks.bench_runtimes [--model resnet18] [--image-size 224] [--batches 1 16]
        [--reduction 0.66] [--searched cpu=RUN/models/cpu-b0.6/ranks.json onnxruntime=...] [--rounds 15]

For each batch: the original, uniform ranks (every layer at one fraction of its max rank, bisected to
`--reduction` of the FLOPs) and each `--searched` ranks file (what the pipeline's search picked for a
runtime), plus uniform ranks at the FLOPs of each searched set; every model timed in both runtimes,
the original and the compressed ones interleaved in one session (hw_profiles.measure.measure_models,
the profiles `cpu` and `onnxruntime`: 2 threads each), one runtime after the other. The table gives
the measured speedup over the original in the same runtime, the FLOPs-ideal speedup and the share.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

import haloc
from haloc.hardware_loss import layer_flops
from hw_profiles.measure import measure_models
from hw_profiles.profile import get_profile

RUNTIMES = ("cpu", "onnxruntime")  # the hardware profiles: eager torch, and ONNX Runtime, on this CPU


def uniform_ranks(specs: dict, total: float, reduction: float) -> dict:
    """Every layer at one fraction of its max rank, bisected to `reduction` of the FLOPs (at or above it)."""
    lo, hi = 0.0, 1.0
    for _ in range(30):
        f = (lo + hi) / 2
        ranks = {n: max(1, int(round(f * s.max_rank))) for n, s in specs.items()}
        red = sum(layer_flops(s, s.max_rank) - layer_flops(s, ranks[n]) for n, s in specs.items()) / total
        lo, hi = (lo, f) if red < reduction else (f, hi)
    return {n: max(1, int(round(lo * s.max_rank))) for n, s in specs.items()}


def kept(ranks: dict, specs: dict) -> dict:
    """Layers at their max rank stay whole (as the pipeline leaves them)."""
    return {n: r for n, r in ranks.items() if not (isinstance(r, int) and r >= specs[n].max_rank)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--reduction", type=float, default=0.66, help="FLOPs reduction of the uniform ranks")
    parser.add_argument("--searched", nargs="*", default=[], metavar="RUNTIME=RANKS_JSON",
                        help="ranks the search picked for a runtime (a run's models/<config>/ranks.json)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per runtime and batch")
    args = parser.parse_args(argv)

    spec = haloc.models.ModelSpec(args.model, args.num_classes, (3, args.image_size, args.image_size))
    model = spec.create().eval()
    x1 = torch.zeros(1, *spec.size)
    specs = haloc.decomposable_layers(model, x1)
    total = haloc.flops(model, x1)
    configs = {"uniform": uniform_ranks(specs, total, args.reduction)}
    for item in args.searched:
        runtime, path = item.split("=", 1)
        ranks = json.loads(Path(path).read_text())["ranks"]
        configs[f"searched for {runtime}"] = ranks
        small = haloc.decompose(model, kept(ranks, specs)).eval()
        configs[f"uniform at the FLOPs of 'searched for {runtime}'"] = uniform_ranks(
            specs, total, 1 - haloc.flops(small, x1) / total)
    configs = {k: kept(v, specs) for k, v in configs.items()}
    ideal = {k: total / haloc.flops(haloc.decompose(model, v).eval(), x1) for k, v in configs.items()}
    print(f"{args.model} at {args.image_size}px, {torch.get_num_threads()} torch threads in this process; "
          f"{args.rounds} interleaved rounds per runtime and batch (medians)")
    print("| batch | ranks | FLOPs-ideal | runtime | original ms | compressed ms | measured speedup | share of ideal |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in args.batches:
        for runtime in RUNTIMES:
            profile = replace(get_profile(runtime), warmup=3)
            out = measure_models(profile, spec.to_dict(), [{}] + list(configs.values()), batch, rounds=args.rounds)
            base = out[0]["median_ms"]
            for (label, _), o in zip(configs.items(), out[1:]):
                speed = base / o["median_ms"]
                print(f"| {batch} | {label} | {ideal[label]:.2f}x | {runtime} | {base:.2f} | {o['median_ms']:.2f} | "
                      f"{speed:.2f}x | {speed / ideal[label]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
