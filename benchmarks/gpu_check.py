"""The GPU check: one run that measures what the docs may say about a GPU, on whatever card it gets.

    bash scripts/gpu_check.sh                      # ResNet-18 at 224 px on the `cuda` profile, into $OUT
    .venv/bin/python -m benchmarks.gpu_check --profile cpu --model resnet20 --image-size 32 --out /tmp/c

Steps, each with the project's own code and no Ray (a bare GPU machine has torch, not Ray or ZigZag):
1. the LUT: every layer signature of the model at every profiled rank, timed on the profile's device
   (`hw_profiles.measure.measure_rows`: CUDA events after a synchronize and the profile's warm-up);
2. the calibration: whole models (the original, the cheapest the LUT prices, rank choices between)
   timed interleaved, the fit and its gate (`hw_profiles.calibration`), as the profile stage does;
3. the search: the demo presets' blockwise-exact search at one latency budget over cost tables made
   from that LUT by the pipeline's own code (`orchestrator.cost_tables`), on generated data (the
   model's weights are random: no weights can be downloaded there, and latency does not depend on them);
4. validation: the chosen model timed interleaved with the original in eager PyTorch, and again
   after `torch.compile` where it compiles; the speedups and the budget verdict.

Writes to --out: lut.parquet, calibration.json, gpu_check.json (every figure, the card's name, the
versions, the times of each step). Exit 0: gate passed and budget met; 3: the budget missed on
measurement; 5: the LUT failed its gate; 2: bad input (no CUDA device for a CUDA profile, say).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

RUN_ID = "gpu-check"


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU ({platform.processor() or 'unknown'})"


def profile_lut(profile, specs: dict, rank_step: int):
    """LUT rows of every (signature, rank) the model needs (the profile stage's own list), measured on
    `profile` in this process; a pyarrow table."""
    from hw_profiles.lut import rows_to_table
    from hw_profiles.measure import measure_rows
    from orchestrator.stages.profiling import needed_items

    return rows_to_table(measure_rows(profile, needed_items(specs, profile, profile.batch_size, rank_step)))


def calibrate(profile, model, specs: dict, lut, samples: int, rank_step: int):
    """The LUT's end-to-end calibration with its gate, as the profile stage makes it."""
    from hw_profiles.calibration import cheapest_config, fit_calibration, random_configs
    from hw_profiles.measure import measure_models

    batch = profile.batch_size
    configs = [{}, cheapest_config(specs, lut, batch)] + random_configs(specs, max(samples - 2, 1),
                                                                         rank_step=rank_step)
    measured = measure_models(profile, model, configs, batch)
    sums = [lut.predict(specs, c, batch) for c in configs]
    extra = [{"ranks": c, "p10_ms": m["p10_ms"], "p90_ms": m["p90_ms"], "slowdown": m["slowdown"]}
             for c, m in zip(configs, measured)]
    return fit_calibration(profile.name, sums, [m["median_ms"] for m in measured], profile.gate, extra,
                           tolerance=profile.calibration_tolerance)


def search(profile, model, specs: dict, layout, budget: float, steps: int, device: str):
    """The blockwise-exact search at `budget` over the LUT's cost table; (the SearchResult, the table)."""
    import haloc
    from haloc.data import demo_dataset
    from orchestrator.cost_tables import latency_table, search_rank_space

    space = search_rank_space(layout, specs, [profile], "latency")
    table = latency_table(layout, profile, specs, space.candidates, budget)

    # at most 10 classes of generated images (1000 patterns at 224 px would take 600 MB); labels below
    # the head's size are all a search on random weights needs
    data = demo_dataset(num_samples=max(16, 8 * steps), num_classes=min(model.classes, 10),
                        image_size=model.size[-1])
    weights_part, heldout_part = haloc.split_train_heldout(data, 0.5)
    train = haloc.make_loader(weights_part, 4, shuffle=True, drop_last=True)
    heldout = haloc.make_loader(heldout_part, 4, shuffle=True, seed=1)
    cfg = haloc.search_config("blockwise-exact", epochs=1, device=device, steps_per_epoch=steps,
                              table_batches=min(2, steps))
    result = haloc.search(model.create(), train, heldout, space, [table], cfg)
    return result, table


def compiled_speedup(model, ranks: dict, profile, rounds: int) -> dict:
    """The original and the chosen model after torch.compile, timed interleaved; or why not."""
    import torch

    import haloc
    from hw_profiles.timing import time_interleaved

    try:
        x = torch.randn(profile.batch_size, *model.size, device=profile.device)
        modules = [torch.compile(haloc.rebuild(model, r).to(profile.device).eval()) for r in ({}, ranks)]
        with torch.inference_mode():
            for m in modules:
                for _ in range(3):
                    m(x)  # compiles
        samples, _ = time_interleaved([(m, x) for m in modules], rounds, profile.threads, warmup=profile.warmup)
    except Exception as e:  # a compiler missing or failing is a finding: reported as one, not raised
        return {"available": False, "why": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"}
    import statistics

    original, small = (statistics.median(s) for s in samples)
    return {"available": True, "original_ms": original, "compressed_ms": small, "speedup": original / small}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cuda", help="hardware profile to time on (default: cuda)")
    p.add_argument("--model", default="resnet18", help="registry model (default: resnet18)")
    p.add_argument("--image-size", type=int, default=224, help="input side in pixels (default: 224)")
    p.add_argument("--num-classes", type=int, default=None, help="head size (default: the model's)")
    p.add_argument("--budget", type=float, default=0.6, help="latency budget, a fraction of the original's")
    p.add_argument("--rank-step", type=int, default=32, help="profiled ranks: 1 and every multiple of it")
    p.add_argument("--samples", type=int, default=10, help="whole models in the calibration (default: 10)")
    p.add_argument("--search-steps", type=int, default=8, help="search steps (blockwise-exact: its error batches)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile timing (minutes on a CPU)")
    p.add_argument("--out", type=Path, default=Path("gpu-check"), help="folder for the results")
    args = p.parse_args(argv)

    import torch

    import haloc
    from haloc.errors import BadInputError
    from hw_profiles.profile import get_profile
    from orchestrator.run_layout import RunLayout

    try:
        profile = get_profile(args.profile)
        if profile.is_simulator:
            raise BadInputError(f"--profile {args.profile}: a simulator; the GPU check times real hardware "
                                "(cuda, or cpu for its CPU path)")
        if profile.device.startswith("cuda") and not torch.cuda.is_available():
            raise BadInputError(f"--profile {args.profile} times on CUDA, and torch sees no CUDA device here; "
                                "run it on a GPU machine, or pass --profile cpu to check the script's CPU path")
        if not 0 < args.budget <= 1:
            raise BadInputError(f"--budget {args.budget}: give a fraction of the original's latency in (0, 1]")
        model = haloc.models.ModelSpec(args.model, args.num_classes, (3, args.image_size, args.image_size))
        specs = haloc.models.layer_specs(model)
    except BadInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    profile = replace(profile, rank_step=args.rank_step)
    args.out.mkdir(parents=True, exist_ok=True)
    layout = RunLayout(str(args.out / "store"), RUN_ID)
    times, started = {}, time.time()

    t = time.perf_counter()
    table = profile_lut(profile, specs, args.rank_step)
    layout.write_lut(profile.name, table)
    lut = layout.latency_table(profile.name)
    times["profile"] = time.perf_counter() - t
    print(f"LUT: {table.num_rows} rows on {profile.name} in {times['profile']:.0f} s", flush=True)

    t = time.perf_counter()
    cal = calibrate(profile, model, specs, lut, args.samples, args.rank_step)
    layout.write_calibration(cal)
    times["calibrate"] = time.perf_counter() - t
    print(f"calibration: a={cal.a_ms:.3f} ms, b={cal.b:.3f}, {cal.within_tolerance:.0%} within "
          f"{cal.tolerance_text} (gate {cal.gate:.0%}: {'passed' if cal.passed else 'FAILED'})", flush=True)

    t = time.perf_counter()
    try:
        result, cost_table = search(profile, model, specs, layout, args.budget, args.search_steps, profile.device)
    except BadInputError as e:  # a budget below the reachable floor, say
        print(f"error: {e}", file=sys.stderr)
        return 2
    times["search"] = time.perf_counter() - t

    t = time.perf_counter()
    from hw_profiles.measure import measure_models

    original, chosen = measure_models(profile, model, [{}, result.ranks], profile.batch_size)
    speedup = original["median_ms"] / chosen["median_ms"]
    met = chosen["median_ms"] <= args.budget * original["median_ms"]
    x = torch.zeros(1, *model.size)
    full = model.create()
    flops_ratio = haloc.flops(haloc.decompose(full, result.ranks), x) / haloc.flops(full, x)
    compiled = ({"available": False, "why": "not asked (--no-compile)"} if args.no_compile
                else compiled_speedup(model, result.ranks, profile, rounds=min(profile.repeats, 50)))
    times["validate"] = time.perf_counter() - t

    out = {
        "device": _device_name(profile.device), "profile": profile.to_dict(), "model": model.name,
        "input_size": list(model.size), "versions": {"torch": torch.__version__, "python": platform.python_version(),
                                                     "cuda": torch.version.cuda},
        "lut_rows": table.num_rows, "noisy_rows": sum(bool(v) for v in table.column("noisy").to_pylist()),
        "calibration": {"a_ms": cal.a_ms, "b": cal.b, "within_tolerance": cal.within_tolerance,
                        "tolerance": cal.tolerance, "gate": cal.gate, "passed": cal.passed,
                        "median_rel_error": cal.median_rel_error, "cost_span": list(cal.cost_span)},
        "budget": args.budget, "ranks": result.ranks,
        "predicted_ms": cal.predict(lut.predict(specs, result.ranks, profile.batch_size)),
        "search_aimed_ms": cost_table.must_meet,
        "eager": {"original_ms": original["median_ms"], "compressed_ms": chosen["median_ms"],
                  "original_p10_p90_ms": [original["p10_ms"], original["p90_ms"]],
                  "compressed_p10_p90_ms": [chosen["p10_ms"], chosen["p90_ms"]], "speedup": speedup,
                  "budget_met": met},
        "compiled": compiled, "flops_ratio": flops_ratio, "seconds": times,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
    }
    (args.out / "gpu_check.json").write_text(json.dumps(out, indent=1) + "\n")
    (args.out / "lut.parquet").write_bytes(layout.store.read_bytes(layout.lut(profile.name)))
    (args.out / "calibration.json").write_text(json.dumps(cal.to_dict(), indent=1) + "\n")
    extra = (f"; torch.compile {compiled['speedup']:.2f}x" if compiled["available"]
             else f"; torch.compile not measured ({compiled['why']})")
    print(f"{out['device']}: {model.name} at {args.image_size} px, budget {args.budget:g}: measured "
          f"{chosen['median_ms']:.3f} ms against {original['median_ms']:.3f} ms, {speedup:.2f}x eager "
          f"({'met' if met else 'MISSED'}; FLOPs {out['flops_ratio']:.2f} of the original){extra}", flush=True)
    if not cal.passed:
        return 5
    return 0 if met else 3


if __name__ == "__main__":
    sys.exit(main())
