"""Supernet step cost and compressed-model speedup (issue 2's figures; results go to BENCHMARKS.md).

1. One training step of the supernet (masked mixture) against one training step of the plain
   Tucker-2 model at the largest candidate ranks, and against a naive mixture that runs every
   candidate separately and sums (about M times the work). Interleaved, medians.
2. ResNet-18 at about 66% fewer FLOPs: measured CPU speedup against the FLOPs-ideal speedup, at
   batch 1 and 16, for uniform ranks and for the same ranks snapped down to the largest rank of
   their measured latency step (docs/method.md section 2).

    .venv/bin/python -m benchmarks.bench_supernet [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import haloc
from haloc.hardware_loss import layer_flops
from haloc.layers import Tucker2Conv
from haloc.rank_space import build_rank_space, latency_sensitive_candidates
from haloc.supernet import Supernet, SupernetLayer


class NaiveMixture(nn.Module):
    """Reference: every candidate's own forward, weighted and summed (what the masked mixture avoids)."""

    def __init__(self, layer: SupernetLayer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        layer, f = self.layer, self.layer.factors
        m = layer.mixing_weights()
        out = 0
        for mi, r in zip(m, layer.candidates):
            if isinstance(f, Tucker2Conv):
                r_in, r_out = min(r, f.rank[0]), min(r, f.rank[1])
                z = F.conv2d(x, f.first.weight[:r_in])
                z = F.conv2d(z, f.core.weight[:r_out, :r_in], None, f.core.stride, f.core.padding, f.core.dilation)
                y = F.conv2d(z, f.last.weight[:, :r_out], f.last.bias)
            elif isinstance(f.first, nn.Linear):
                y = F.linear(F.linear(x, f.first.weight[:r]), f.last.weight[:, :r], f.last.bias)
            else:
                z = F.conv2d(x, f.first.weight[:r], None, f.first.stride, f.first.padding)
                y = F.conv2d(z, f.last.weight[:, :r], f.last.bias)
            out = out + mi * y
        return out


def naive_supernet(model, space, specs):
    net = Supernet(model, space, specs)
    for name, layer in net.layers().items():
        net.net.set_submodule(name, NaiveMixture(layer))
    return net


def train_step_fn(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def interleaved_medians(fns: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in samples.items()}


def bench_supernet_step(model_name: str, batch: int, step: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = haloc.models.create(model_name)
    specs = haloc.decomposable_layers(model)
    space = build_rank_space(specs, "step", step=step)
    m_mean = statistics.fmean(len(c) for c in space.candidates.values())
    x = torch.randn(batch, *haloc.models.input_size(model_name))
    y = torch.randint(0, haloc.models.num_classes(model_name), (batch,))
    plain = haloc.decompose(model, {n: s.max_rank for n, s in specs.items()})
    supernet = Supernet(model, space, specs)
    naive = naive_supernet(model, space, specs)
    for net in (supernet, naive):
        net.set_mix("gumbel", tau=1.0)
    ms = interleaved_medians({
        "original": train_step_fn(model, x, y),
        "tucker2_at_largest": train_step_fn(plain, x, y),
        "supernet_masked": train_step_fn(supernet, x, y),
        "supernet_naive": train_step_fn(naive, x, y),
    }, repeats)
    base = ms["tucker2_at_largest"]
    print(f"\n## Supernet training step, {model_name}, batch {batch}, rank step {step} "
          f"(mean {m_mean:.1f} candidates per layer), medians of {repeats}, {torch.get_num_threads()} threads")
    print("| variant | ms/step | ratio to Tucker-2 at largest ranks |\n|---|---|---|")
    for k, v in ms.items():
        print(f"| {k} | {v:.1f} | {v / base:.2f} |")


def time_model(model, x, repeats):
    model.eval()
    with torch.inference_mode():
        return interleaved_medians({"m": lambda: model(x)}, repeats, warmup=5)["m"]


def layer_curves(specs, batch, step, repeats):
    """CPU latency (ms, median) per layer at rank 0 (original) and every multiple of `step`."""
    from haloc.decomposition import KEEP_WHOLE, build_layer
    from hw_profiles.timing import time_module

    curves = {}
    for name, spec in specs.items():
        x = torch.randn(batch, spec.in_channels, *spec.input_hw) if spec.op == "conv2d" else \
            torch.randn(batch, spec.in_channels)
        curve = {0: time_module(build_layer(spec, KEEP_WHOLE), x, repeats=repeats).median_ms}
        for r in range(step, spec.max_rank, step):
            curve[r] = time_module(build_layer(spec, r), x, repeats=repeats).median_ms
        curves[name] = curve
    return curves


def bench_resnet18_speedup(batches, target_reduction: float, repeats: int, curve_step: int) -> None:
    torch.manual_seed(0)
    model = haloc.models.create("resnet18").eval()
    x1 = torch.randn(1, 3, 224, 224)
    specs = haloc.decomposable_layers(model, x1)
    total = haloc.flops(model, x1)
    # uniform fraction of every layer's max rank, bisected to the target FLOPs reduction
    lo, hi = 0.01, 1.0
    for _ in range(20):
        f = (lo + hi) / 2
        ranks = {n: max(1, int(round(f * s.max_rank))) for n, s in specs.items()}
        red = sum(layer_flops(s, s.max_rank) - layer_flops(s, ranks[n]) for n, s in specs.items()) / total
        lo, hi = (lo, f) if red < target_reduction else (f, hi)
    uniform = {n: max(1, int(round(hi * s.max_rank))) for n, s in specs.items()}
    print(f"\n## ResNet-18, uniform rank fraction {hi:.3f} of max_rank")
    for batch in batches:
        x = torch.randn(batch, 3, 224, 224)
        sub = {n: s for n, s in haloc.decomposable_layers(model, x).items()}
        curves = layer_curves(sub, batch, curve_step, repeats=max(5, repeats // 2))
        snapped = {}
        for n, r in uniform.items():
            cands = latency_sensitive_candidates(sub[n], curves[n])
            below = [c for c in cands if c <= r]
            snapped[n] = below[-1] if below else cands[0]
        models = {}
        for label, ranks in (("uniform", uniform), ("snapped to latency steps", snapped)):
            kept = {n: r for n, r in ranks.items() if r < specs[n].max_rank}
            models[label] = haloc.decompose(model, kept).eval()
        with torch.inference_mode():  # all three side by side, interleaved, in one run
            ms = interleaved_medians({"original": lambda x=x: model(x),
                                      **{k: (lambda m=m, x=x: m(x)) for k, m in models.items()}}, repeats, warmup=5)
        print(f"\nbatch {batch}: original {ms['original']:.1f} ms (medians of {repeats}, interleaved, "
              f"{torch.get_num_threads()} threads)")
        print("| ranks | FLOPs reduction | FLOPs-ideal speedup | measured CPU speedup | share of ideal | ms |")
        print("|---|---|---|---|---|---|")
        for label, small in models.items():
            ideal = total / haloc.flops(small, x1)
            speed = ms["original"] / ms[label]
            print(f"| {label} | {1 - 1 / ideal:.1%} | {ideal:.2f}x | {speed:.2f}x | {speed / ideal:.2f} | "
                  f"{ms[label]:.1f} |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke run")
    p.add_argument("--skip-resnet18", action="store_true")
    p.add_argument("--only-resnet18", action="store_true")
    args = p.parse_args()
    reps = 5 if args.quick else 15
    if not args.only_resnet18:
        bench_supernet_step("resnet20", batch=64, step=4, repeats=reps)
        bench_supernet_step("resnet20", batch=64, step=8, repeats=reps)
        bench_supernet_step("vgg16", batch=32, step=32, repeats=max(3, reps // 2))
    if not args.skip_resnet18:
        bench_resnet18_speedup(batches=(1, 16), target_reduction=0.66, repeats=reps, curve_step=32)


if __name__ == "__main__":
    main()
