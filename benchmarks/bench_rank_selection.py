"""Search quality: HALOC's ranks against simple rank choices at equal cost, on real data (issue 11).

    .venv/bin/python -m benchmarks.bench_rank_selection --quick                 # a few minutes
    .venv/bin/python -m benchmarks.bench_rank_selection --models resnet20       # the full comparison
    .venv/bin/python -m benchmarks.bench_rank_selection --models vgg16
    .venv/bin/python -m benchmarks.bench_rank_selection --models vgg16 --targets asic --budgets 0.3  # any target
    .venv/bin/python -m benchmarks.bench_rank_selection --models resnet20 --phase latency   # then
    .venv/bin/python -m benchmarks.bench_rank_selection --models resnet20 vgg16 --phase summary

Data: scikit-learn's real handwritten digits (1,797 images, `haloc.digits_datasets`: 32x32x3,
1437/360 stratified split by seed 0), or `--data`: CIFAR-10 python batches or an
ImageFolder tree of your own (train/ and val/, a folder per class, read at 32x32). The search trains its
weights on 80% of the training split and its alpha on the other 20% (never the test split).
`--splits 1 2 ...` runs the same cells on other stratified splits of the digits, each with its own
original model (`base-split<N>.pt`) and cells (`<target>-b<budget>-split<N>s<seed>`): 360 test
images tell methods apart to one image in 360, and the summary pools every split's runs and pairs
them (the difference per run between two methods, `paired_difference`). `--digits-distortion 1`
warps and noises every digit once (`haloc.data.distort_digits`): a harder task (originals at 95-98%
instead of 99-100%) on which rank choices differ by more than a test image or two.

Per model: the original is trained once (cached), LUTs are built in-process (torch timing of the
`cpu` profile at `--threads`, and the `asic` ZigZag simulation), each calibrated end to end as the
pipeline does (measured ~ a + b x LUT sum). Then, per cost target (FLOPs, cpu or asic latency),
budget and seed, every method picks ranks from the same rank space under the same cost table:

    haloc     the project's search, its SearchConfig defaults (or --search KEY=VALUE; mode=blockwise
              for the blockwise search, `haloc.SEARCH_MODES`)
    uniform   one fraction of max rank for all layers     energy   one retained spectral energy
    alds      min-max relative approximation error        random   one random vector; random-best:
              the best of --random-n on the held-out split after decomposition

and every architecture gets the same fine-tune (KD from the original, same epochs and schedule;
HALOC also from its supernet weights: haloc-sn; --haloc-starts picks which of haloc, haloc-sn and
haloc-long run). "<method>-long" fine-tunes for as many more epochs as the search trained weights,
compute-matched against haloc-sn; an alpha-only search (blockwise) is counted by its alpha steps,
given to the -long baselines as as many more fine-tune steps (`fine_tune_schedule`). haloc-long is
HALOC's ranks (fresh HOSVD) trained as long, which tells the ranks' quality apart from the search's
cost. The summary gives a verdict per protocol: HALOC against the plain baselines (equal
fine-tune) and against the -long ones (compute-matched). Recorded per
result: achieved cost / budget, test top-1 after decomposition (BatchNorm re-estimated, no
training), after the search with the supernet's own weights (HALOC), after the fine-tune; layers
left whole, smallest rank; for HALOC the search's per-epoch evidence. Every cell is one JSON file
under `--out`, so a rerun resumes. The latency phase measures every final model (cpu timed
interleaved with the original, asic simulated); run it when nothing else of yours runs. The summary
phase writes summary.md/json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import combinations
from pathlib import Path

FLOPS = "flops"
DEFAULT_OUT = "runs/bench_rank_selection"
BASELINES = ("uniform", "energy", "alds", "random")


@dataclass
class ModelPlan:
    """What runs for one model: budgets per target, epochs, the rank grid."""

    model: str
    rank_step: int  # constant-step candidates of the FLOPs targets (the paper preset's)
    lut_rank_step: int  # profiling grid of the LUTs (latency targets' candidates come from it)
    targets: dict  # {"flops": [0.5, ...], "cpu": [...], "asic": [...]}
    seeds: tuple = (0, 1, 2)
    base_epochs: int = 40
    base_lr: float = 0.05
    finetune_epochs: int = 2  # short: the starting point must matter for the comparison to discriminate
    finetune_lr: float = 0.01
    kd_weight: float = 0.5
    batch_size: int = 64
    random_n: int = 6
    calibration_samples: int = 12
    search: dict = field(default_factory=dict)  # SearchConfig overrides (none: the defaults ship)
    digits_distortion: float = 0.0  # > 0: the harder, distorted digits (`haloc.data.distort_digits`)
    num_classes: int | None = None  # None: the model's 10 (the digits); --data's own count


PLANS = {
    "resnet20": ModelPlan("resnet20", rank_step=4, lut_rank_step=8,
                          targets={FLOPS: [0.5, 0.3, 0.28, 0.2, 0.1], "cpu": [0.8], "asic": [0.9]}),
    # VGG-16 costs about 6x a ResNet-20 step here: two FLOPs budgets, the paper's 0.14 and 0.3.
    # Its base at lr 0.05 reached only 62% on the digits in 20 epochs; at 0.01 it is at 99% by epoch 4.
    "vgg16": ModelPlan("vgg16", rank_step=16, lut_rank_step=32, targets={FLOPS: [0.3, 0.14]},
                       base_epochs=30, base_lr=0.01),
}


def plan_targets(plan: ModelPlan, budgets: list[float] | None, targets: list[str] | None) -> dict:
    """The plan's {target: budgets} as --budgets and --targets set them: the budgets replace those of
    every target of the plan, or of the targets named (which may include one the plan lacks, e.g.
    VGG-16 at an asic budget); a target named without budgets must be one of the plan's own."""
    if budgets:
        return {k: list(budgets) for k in (targets or plan.targets)}
    missing = sorted(set(targets or ()) - set(plan.targets))
    if missing:
        raise ValueError(f"--targets {' '.join(targets)}: {plan.model} has no budgets for {', '.join(missing)} "
                         f"(its own: {', '.join(plan.targets)}); give them with --budgets")
    return plan.targets


def quick_plan() -> ModelPlan:
    return ModelPlan("resnet20", rank_step=8, lut_rank_step=16, targets={FLOPS: [0.3], "asic": [0.92]},
                     seeds=(0,), base_epochs=5, finetune_epochs=1, random_n=3, calibration_samples=4,
                     search=dict(epochs=2, warmup_epochs=1))


# ---- data ------------------------------------------------------------------------------------------

@dataclass
class Loaders:
    train: object  # the whole training split (base model, fine-tunes)
    search_train: object  # its weight part
    heldout: object  # its alpha part (the search's and random-best's selection data)
    test: object
    bn: object  # training images for BatchNorm re-estimation (fixed order)
    name: str


def build_loaders(data: str | None, batch: int, seed: int = 0, split: int = 0, distortion: float = 0.0,
                  _cache: dict = {}) -> Loaders:  # noqa: B006
    """Loaders over fixed splits whose batch orders follow `seed` (the seed of a fine-tune or search:
    a loader's order comes from its own seed, `seed_epoch` only moves it to the next epoch). `split`
    picks the digits' train/test split (another 360 test images, another original model);
    `distortion` the digits' difficulty (`haloc.data.distort_digits`)."""
    import haloc
    from haloc.data import DataConfig, build_datasets, detect_data_kind, make_loader, split_train_heldout

    if (data, split, distortion) not in _cache:
        if data:  # CIFAR-10 batches or an ImageFolder tree, the latter at the plans' models' 32x32
            train, test = build_datasets(DataConfig(kind=detect_data_kind(data), root=data, image_size=32))
        else:
            train, test = haloc.digits_datasets(seed=split, distortion=distortion)
        _cache[data, split, distortion] = (train, test, *split_train_heldout(train, 0.2, seed=0))
    train, test, weights_part, held = _cache[data, split, distortion]
    return Loaders(make_loader(train, batch, shuffle=True, seed=seed),
                   make_loader(weights_part, batch, shuffle=True, seed=seed, drop_last=True),
                   make_loader(held, batch, shuffle=True, seed=seed + 7_777),
                   make_loader(test, 256, shuffle=False), make_loader(train, batch, shuffle=False),
                   haloc.dataset_label(train))


# ---- the original model ----------------------------------------------------------------------------

def base_model(plan: ModelPlan, loaders: Loaders, folder: Path, split: int = 0):
    import torch

    from haloc.train import TrainConfig, evaluate, finetune

    tag = f"-split{split}" if split else ""
    path, meta_path = folder / f"base{tag}.pt", folder / f"base{tag}.json"
    model = model_spec(plan).create()
    if path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("data", loaders.name) != loaders.name:  # its cells were run on other data: never mix them
            print(f"{folder}: its original was trained on {meta.get('data')!r}, not {loaders.name!r}; give this "
                  "data its own --out folder", file=sys.stderr)
            raise SystemExit(2)
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), meta
    start = time.perf_counter()
    cfg = TrainConfig(epochs=plan.base_epochs, lr=plan.base_lr, kd_weight=0.0, device="cpu", seed=0, log_every=0)
    finetune(model, None, loaders.train, None, cfg)
    meta = {"top1": evaluate(model, loaders.test)["top1"], "epochs": plan.base_epochs, "split": split,
            "seconds": time.perf_counter() - start, "data": loaders.name, "num_classes": plan.num_classes}
    _atomic_save(path, model.state_dict())
    _write_json(meta_path, meta)
    return model.eval(), meta


# ---- LUTs and cost tables --------------------------------------------------------------------------

def cpu_profile(threads: int):
    from hw_profiles.profile import get_profile

    return replace(get_profile("cpu"), threads=threads)


def profiles(threads: int) -> dict:
    from hw_profiles.profile import get_profile

    return {"cpu": cpu_profile(threads), "asic": get_profile("asic")}


def build_lut(profile, specs: dict, rank_step: int, path: Path):
    """Measure (or read back) every (signature, rank) of the model on `profile`; resumable."""
    from hw_profiles.lut import LatencyTable, existing_keys, merge, read_lut, rows_to_table, write_lut
    from hw_profiles.measure import measure_rows
    from hw_profiles.signature import LayerSignature, profiling_ranks

    table = read_lut(path)
    have = existing_keys(table)
    items = {}
    for spec in specs.values():
        sig = LayerSignature.from_spec(spec, profile.batch_size, profile.dtype)
        for r in profiling_ranks(spec, rank_step):
            if (profile.name, sig.key, r) not in have:
                items[(sig.key, r)] = (sig, r)
    todo = list(items.values())
    for i in range(0, len(todo), 16):
        table = merge(table, rows_to_table(measure_rows(profile, todo[i:i + 16])))
        write_lut(path, table)
    return LatencyTable(profile.name, table)


def calibrate(profile, plan: ModelPlan, lut, specs: dict, path: Path):
    """measured ~ a + b x LUT sum over the original and random configurations (cached JSON)."""
    from hw_profiles.calibration import Calibration, fit_calibration, random_configs
    from hw_profiles.measure import measure_model_ms

    if path.exists():
        return Calibration.from_dict(json.loads(path.read_text()))
    configs = [{}] + random_configs(specs, plan.calibration_samples - 1, seed=0, rank_step=plan.lut_rank_step)
    measured = [measure_model_ms(profile, model_spec(plan), c, profile.batch_size) for c in configs]
    sums = [lut.predict(specs, c, profile.batch_size) for c in configs]
    cal = fit_calibration(profile.name, sums, measured)
    _write_json(path, cal.to_dict())
    return cal


@dataclass
class Target:
    name: str  # "flops", "cpu", "asic"
    space: object  # haloc RankSpace
    table_at: object  # fraction -> CostTable
    meta: dict


def build_targets(plan: ModelPlan, model, specs: dict, folder: Path, threads: int,
                  only: set | None = None) -> dict[str, Target]:
    """The cost targets of the plan (only those in `only`, when given: a LUT is measured only if used)."""
    import torch

    import haloc
    from haloc.hardware_loss import CostTable, flops_cost_table
    from haloc.rank_space import build_rank_space

    targets = {}
    total = haloc.flops(model, torch.zeros(1, *haloc.models.input_size(plan.model)))
    if FLOPS in plan.targets:
        space = build_rank_space(specs, "step", step=plan.rank_step)
        targets[FLOPS] = Target(FLOPS, space, lambda f, s=space: flops_cost_table(specs, s.candidates, total, f),
                                {"total_gflops": total / 1e9})
    for name, profile in profiles(threads).items():
        if name not in plan.targets or (only and name not in only):
            continue
        lut = build_lut(profile, specs, plan.lut_rank_step, folder / "luts" / f"{name}.parquet")
        cal = calibrate(profile, plan, lut, specs, folder / "luts" / f"{name}.calibration.json")
        batch = profile.batch_size
        space = build_rank_space(specs, "latency", curves={n: lut.curve(s, batch) for n, s in specs.items()})
        costs = {n: tuple(cal.b * ms for ms in lut.candidate_latencies(specs[n], c, batch))
                 for n, c in space.candidates.items()}
        base = CostTable(name, costs, fixed_cost=cal.a_ms, budget=1.0, unit="ms")
        targets[name] = Target(name, space, lambda f, b=base: b.with_budget_fraction(f),
                               {"calibration": {"a_ms": cal.a_ms, "b": cal.b, "within_10pct": cal.within_10pct,
                                                "median_rel_error": cal.median_rel_error},
                                "min_fraction": base.min_cost / base.original_cost})
    return targets


# ---- one architecture: decomposed, (searched,) fine-tuned -------------------------------------------

def ranks_summary(all_ranks: dict, specs: dict) -> dict:
    low = [r for n, r in all_ranks.items() if r < specs[n].max_rank]
    kxk = [r for n, r in all_ranks.items() if r < specs[n].max_rank and specs[n].kind == "tucker2"]
    return {"whole_layers": sum(r >= specs[n].max_rank for n, r in all_ranks.items()),
            "min_rank": min(low) if low else None, "kxk_rank1": sum(r == 1 for r in kxk),
            "kxk_rank_le2": sum(r <= 2 for r in kxk)}


def score(plan: ModelPlan, base, student, loaders: Loaders, seed: int, epochs: float | None = None) -> dict:
    """Test top-1 after BatchNorm re-estimation, then after the common fine-tune of `epochs` (default
    the plan's; a fraction is matched in steps, see `fine_tune_schedule`)."""
    import haloc
    from haloc.train import TrainConfig, evaluate, finetune

    haloc.reestimate_batchnorm(student, loaders.bn, max_batches=10)
    before = evaluate(student, loaders.test)["top1"]
    start = time.perf_counter()
    whole, steps = fine_tune_schedule(epochs or plan.finetune_epochs, len(loaders.train))
    cfg = TrainConfig(epochs=whole, lr=plan.finetune_lr, kd_weight=plan.kd_weight, device="cpu",
                      seed=seed, log_every=0, max_steps_per_epoch=steps)
    finetune(student, base, loaders.train, None, cfg)
    return {"top1_decomposed": before, "top1_finetuned": evaluate(student, loaders.test)["top1"],
            "finetune_seconds": time.perf_counter() - start, "finetune_epochs": epochs or plan.finetune_epochs,
            "finetune_steps": whole * (steps or len(loaders.train))}


def fine_tune_schedule(epochs: float, steps_per_epoch: int) -> tuple[int, int | None]:
    """(whole epochs, steps per epoch or None for all) that train round(epochs x steps_per_epoch) steps
    in all: a fractional epoch count (a compute-matched baseline given an alpha-only search's
    share) becomes ceil(epochs) epochs of equally many steps, each a little short of a full pass."""
    total = round(epochs * steps_per_epoch)
    whole = max(1, math.ceil(total / steps_per_epoch - 1e-9))
    per = math.ceil(total / whole)
    return whole, (None if per >= steps_per_epoch else per)


HALOC_STARTS = ("hosvd", "supernet", "long")  # fine-tunes of HALOC's result: haloc, haloc-sn, haloc-long
START_SUFFIX = {"hosvd": "", "supernet": "-sn", "long": "-long"}


def run_haloc(plan, base, specs, target, table, loaders, seed, cell_dir: Path, overrides: dict,
              starts: tuple = HALOC_STARTS) -> dict:
    import torch

    import haloc
    from haloc.search_loop import SupernetSearch

    cfg = search_cfg(plan, overrides, seed=seed, device="cpu")
    search = SupernetSearch(base, target.space, [table], cfg, specs=specs)
    forwards = table_forwards_of(base, specs, target.space.candidates)
    ckpt = cell_dir / f"search-{_tag(overrides)}.pt"
    if ckpt.exists():
        search.load_state_dict(torch.load(ckpt, weights_only=True))  # plain tensors and numbers: no pickled code
    start = time.perf_counter()
    while search.epoch < cfg.epochs:
        search.seed_loaders(loaders.search_train, loaders.heldout)
        search.run_epoch(loaders.search_train, loaders.heldout)
        _atomic_save(ckpt, search.state_dict())
    seconds = time.perf_counter() - start
    res = search.result()
    searched = search.supernet.extract(res.all_ranks)
    haloc.reestimate_batchnorm(searched, loaders.bn, max_batches=10)
    top1_search = haloc.evaluate(searched, loaders.test)["top1"]
    os.replace(ckpt, cell_dir / f"supernet-{_tag(overrides)}.pt")  # kept: read-outs can be compared offline
    common = {"ranks": res.all_ranks, **ranks_summary(res.all_ranks, specs),
              "cost": res.predicted_cost[table.name], "budget": table.budget,
              "argmax_cost": res.argmax_cost[table.name], "within_budget": res.within_budget[table.name],
              "search_seconds": seconds, "config": asdict(cfg), "history": res.history,
              "probabilities": res.probabilities, "top1_search": top1_search, "readout": res.readout,
              "search_epoch_equivalent": search_epoch_equivalent(cfg, loaders, forwards)}
    out = {}
    if "hosvd" in starts:
        out["haloc"] = {**common, **score(plan, base, haloc.decompose(base, res.ranks), loaders, seed)}
    if "supernet" in starts:
        out["haloc-sn"] = {**common, **score(plan, base, searched, loaders, seed)}
    if "long" in starts:
        # HALOC's ranks trained exactly as long as the "-long" baselines' (not compute-matched: the
        # search comes on top), so that the ranks' own quality is told apart from the search's cost
        long_epochs = finetune_epochs_of("haloc-long", plan, overrides, loaders, forwards)
        out["haloc-long"] = {**common, "finetune_epochs": long_epochs,
                             **score(plan, base, haloc.decompose(base, res.ranks), loaders, seed, long_epochs)}
    return out


def search_cfg(plan: ModelPlan, overrides: dict, **fields):
    """The SearchConfig of a run: its mode's fields (overrides["mode"], default "supernet"), then the
    plan's, then the --search overrides, then `fields`."""
    from haloc.search_loop import search_config

    merged = {**plan.search, **overrides, **fields}
    return search_config(merged.pop("mode", "supernet"), **merged)


def finetune_epochs_of(method: str, plan: ModelPlan, overrides: dict | None = None,
                       loaders: Loaders | None = None, table_forwards: float | None = None) -> float:
    """The common fine-tune, plus this run's search cost in epochs for a compute-matched "<method>-long"
    (a fraction for an alpha-only search: `fine_tune_schedule` matches it in steps)."""

    if not method.endswith("-long"):
        return plan.finetune_epochs
    cfg = search_cfg(plan, overrides or {})
    return plan.finetune_epochs + search_epoch_equivalent(cfg, loaders, table_forwards)


def table_forwards_of(base, specs: dict, candidates: dict) -> float:
    """`haloc.search_exact.exact_table_forwards` of this model and rank space (the exact solver's work)."""
    from haloc.search_exact import exact_table_forwards

    return exact_table_forwards(base, specs, candidates)


def search_epoch_equivalent(cfg, loaders: Loaders | None, table_forwards: float | None = None) -> float:
    """A search's weight training in fine-tune epochs, as the compute-matched baselines are given it.

    A search that trains weights counts one epoch per search epoch (a search epoch really costs
    about 1.2 compressed fine-tune epochs on ResNet-20, so this favours HALOC). An alpha-only
    search (train_weights=False) counts the images its alpha steps process (forward and backward)
    over the training split's size (alpha steps over fine-tune steps per epoch: both take batches of
    the plan's size); its forward-only read-out is not counted, and the summary
    prints the measured seconds of both, so that the match can be checked."""
    if cfg.train_weights:
        return float(cfg.epochs)
    if cfg.arch_solver == "exact":
        # the tables' forwards (`exact_table_forwards` per batch) as fine-tune steps of 3 forwards each
        # (a forward and its backward; the fine-tune's teacher forward is not counted: favours the baselines)
        if loaders is None or table_forwards is None:
            raise ValueError("the exact solver's cost needs the loaders and its tables' forwards per batch")
        return cfg.epochs * cfg.table_batches * table_forwards / 3 / len(loaders.train)
    if loaders is None:
        raise ValueError("an alpha-only search's cost needs the loaders (steps per epoch and batch size)")
    steps = len(loaders.search_train) if cfg.steps_per_epoch is None else min(cfg.steps_per_epoch,
                                                                                len(loaders.search_train))
    alpha_steps = cfg.epochs * math.ceil(steps / cfg.arch_every)
    return alpha_steps / len(loaders.train)  # alpha steps over the fine-tune's steps per epoch (same batch)


def run_baseline(method, plan, base, specs, target, table, loaders, seed, overrides: dict | None = None) -> dict:
    import haloc
    from haloc.baselines import select_ranks

    if method != "random":
        # "<method>-long": the same ranks, fine-tuned for as many more epochs as this run's search
        # trains weights (compute-matched in epochs against HALOC started from its supernet; a search
        # epoch costs about 1.2 compressed fine-tune epochs on ResNet-20 and 3.5 on VGG-16 here, so
        # the match favours HALOC: section 9 of BENCHMARKS.md)
        name = method.removesuffix("-long")
        sel = select_ranks(name, base, specs, target.space.candidates, [table])
        out = {"ranks": sel.ranks, **ranks_summary(sel.ranks, specs), "cost": sel.costs[table.name],
               "budget": table.budget, "within_budget": sel.within_budget, "setting": sel.setting}
        if not sel.within_budget:
            return {method: out}  # reported as unreachable, not fine-tuned
        epochs = finetune_epochs_of(method, plan, overrides, loaders,
                                    table_forwards_of(base, specs, target.space.candidates))
        student = haloc.decompose(base, sel.compressed(specs))
        return {method: {**out, "finetune_epochs": epochs, **score(plan, base, student, loaders, seed, epochs)}}
    draws = []
    for i in range(plan.random_n):
        sel = select_ranks("random", base, specs, target.space.candidates, [table], seed=seed * 1000 + i)
        student = haloc.decompose(base, sel.compressed(specs))
        haloc.reestimate_batchnorm(student, loaders.bn, max_batches=10)
        draws.append({"sel": sel, "heldout": haloc.evaluate(student, loaders.heldout)["top1"],
                      "test_decomposed": haloc.evaluate(student, loaders.test)["top1"]})
    results = {}
    for name, draw in (("random", draws[0]), ("random-best", max(draws, key=lambda d: d["heldout"]))):
        sel = draw["sel"]
        results[name] = {"ranks": sel.ranks, **ranks_summary(sel.ranks, specs), "cost": sel.costs[table.name],
                         "budget": table.budget, "within_budget": sel.within_budget,
                         "draws_top1_decomposed": [d["test_decomposed"] for d in draws],
                         **score(plan, base, haloc.decompose(base, sel.compressed(specs)), loaders, seed)}
    return results


# ---- the run -----------------------------------------------------------------------------------------

def cell_name(target: str, budget: float, seed: int, split: int = 0) -> str:
    """A cell's folder: target, budget and run; a run is a seed, on a digits split other than 0 also
    the split (`flops-b0.28-s3`, `flops-b0.28-split2s3`)."""
    return f"{target}-b{budget:g}-" + (f"split{split}s{seed}" if split else f"s{seed}")


def parse_cell(name: str) -> tuple[str, float, str]:
    """The inverse of `cell_name`: (target, budget, run), e.g. ("flops", 0.28, "split2s3")."""
    target, budget, run = name.rsplit("-", 2)
    return target, float(budget[1:]), run


def run_model(plan: ModelPlan, out: Path, data: str | None, threads: int, overrides: dict, only: set | None,
              methods: tuple, variant: str | None = None, starts: tuple = HALOC_STARTS,
              splits: tuple = (0,)) -> None:
    import torch

    import haloc

    folder = out / plan.model
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HALOC_ZIGZAG_CACHE", str(out / "zigzag.sqlite"))
    targets = None
    for split in splits:
        loaders = build_loaders(data, plan.batch_size, split=split, distortion=plan.digits_distortion)
        base, meta = base_model(plan, loaders, folder, split)
        log(f"{plan.model}: original top-1 {meta['top1']:.4f} on {loaders.name}")
        specs = haloc.decomposable_layers(base, torch.zeros(1, *haloc.models.input_size(plan.model)))
        if targets is None:  # the tables price shapes, not weights: one set serves every split
            targets = build_targets(plan, base, specs, folder, threads, only)
            known = json.loads((folder / "targets.json").read_text()) if (folder / "targets.json").exists() else {}
            _write_json(folder / "targets.json", {**known, **{k: {"meta": t.meta, "candidates": t.space.candidates}
                                                              for k, t in targets.items()}})
        run_cells(plan, folder, data, base, specs, targets, overrides, only, methods, variant, starts, split)


def run_cells(plan: ModelPlan, folder: Path, data: str | None, base, specs: dict, targets: dict, overrides: dict,
              only: set | None, methods: tuple, variant: str | None, starts: tuple, split: int) -> None:
    import torch

    for target_name, budgets in plan.targets.items():
        if only and target_name not in only:
            continue
        target = targets[target_name]
        for budget in budgets:
            for seed in plan.seeds:
                loaders = build_loaders(data, plan.batch_size, seed, split, plan.digits_distortion)
                cell = cell_name(target_name, budget, seed, split)
                cell_dir = folder / "cells" / cell
                cell_dir.mkdir(parents=True, exist_ok=True)
                try:
                    table = target.table_at(budget)
                except ValueError as e:  # below the smallest reachable cost: every method fails alike
                    _write_json(cell_dir / "unreachable.json", {"error": str(e)})
                    log(f"{cell}: {e}")
                    continue
                for method in methods:
                    name = method if method != "haloc" else variant or f"haloc{_suffix(overrides)}"
                    outputs = [name] if method != "haloc" else [name + START_SUFFIX[s] for s in starts]
                    if all((cell_dir / f"{o}.json").exists() for o in outputs):
                        continue
                    start = time.perf_counter()
                    with torch.random.fork_rng():
                        torch.manual_seed(seed)
                        if method == "haloc":
                            res = run_haloc(plan, base, specs, target, table, loaders, seed, cell_dir, overrides,
                                            starts)
                            res = {k.replace("haloc", name, 1): v for k, v in res.items()}
                        else:
                            res = run_baseline(method, plan, base, specs, target, table, loaders, seed, overrides)
                    for key, value in res.items():
                        _write_json(cell_dir / f"{key}.json", {**value, "method": key, "cell": cell,
                                                               "seconds": time.perf_counter() - start})
                    log(f"{plan.model} {cell} {name}: " + ", ".join(
                        f"{k} {v.get('top1_finetuned', float('nan')):.4f} ({v['cost'] / v['budget']:.3f} of budget)"
                        for k, v in res.items()))


# ---- measured latency of every final model ------------------------------------------------------------

def model_spec(plan: ModelPlan):
    """The plan's model with its data's class count (what every phase builds and times)."""
    from haloc.models import ModelSpec

    return ModelSpec(plan.model, plan.num_classes)


def recorded_classes(folder: Path) -> int | None:
    """The class count a model folder's original was trained for (None: the model's own 10)."""
    meta = folder / "base.json"
    return json.loads(meta.read_text()).get("num_classes") if meta.exists() else None


def data_classes(data: str) -> int:
    """--data's class count (its CIFAR batches' meta, or an ImageFolder's class folders), layout checked."""
    from haloc.data import data_facts, detect_data_kind

    return data_facts(detect_data_kind(data), data).num_classes


def haloc_specs(model: str, num_classes: int | None = None) -> dict:
    """The decomposable layers of a registered model, as the cells' ranks name them."""
    import torch

    import haloc

    return haloc.decomposable_layers(haloc.models.create(model, num_classes),
                                     torch.zeros(1, *haloc.models.input_size(model)))


def measure_latencies(plan: ModelPlan, out: Path, threads: int, rounds: int = 3, only: set | None = None) -> None:
    """cpu: each model timed interleaved with the original (A, B, A, B...), medians over `rounds`;
    asic: simulated (deterministic). Cached per rank vector in latency.json. `only`: the final models
    of these targets' cells alone (`--targets cpu`: the latency budgets' models, without every FLOPs run)."""
    from hw_profiles.measure import measure_model_ms

    folder = out / plan.model
    path = folder / "latency.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    os.environ.setdefault("HALOC_ZIGZAG_CACHE", str(out / "zigzag.sqlite"))

    specs = haloc_specs(plan.model, plan.num_classes)
    vectors = {}
    for f in sorted((folder / "cells").glob("*/*.json")):
        if only and parse_cell(f.parent.name)[0] not in only:
            continue
        rec = json.loads(f.read_text())
        if "ranks" in rec:
            ranks = {n: r for n, r in rec["ranks"].items() if r < specs[n].max_rank}
            vectors[_ranks_key(ranks)] = ranks
    hw, model = profiles(threads), model_spec(plan)
    if "original" not in cache:
        cache["original"] = {"asic": measure_model_ms(hw["asic"], model, {}, 1)}
    for key, ranks in vectors.items():
        if key in cache:
            continue
        ratios, ms = [], []
        for _ in range(rounds):
            o = measure_model_ms(hw["cpu"], model, {}, 1)
            m = measure_model_ms(hw["cpu"], model, ranks, 1)
            ratios.append(m / o)
            ms.append(m)
        asic = measure_model_ms(hw["asic"], model, ranks, 1)
        cache[key] = {"cpu_ratio": statistics.median(ratios), "cpu_ms": statistics.median(ms),
                      "asic_ratio": asic / cache["original"]["asic"], "asic_ms": asic}
        _write_json(path, cache)
    cache["load"] = os.getloadavg()
    _write_json(path, cache)


# ---- search cost against plain training ---------------------------------------------------------------

def search_cost(plan: ModelPlan, out: Path, data: str | None, overrides: dict, rounds: int = 3) -> dict:
    """Seconds of one plain training epoch of the original (SGD, the search's weight split and batch)
    against a search's warm-up epoch and a full epoch (weight step, the regulariser's teacher
    forward, alpha step, held-out read-out), interleaved round by round; medians and ratios."""
    import copy

    import torch
    import torch.nn.functional as F

    import haloc
    from haloc.search_loop import SupernetSearch

    loaders = build_loaders(data, plan.batch_size, distortion=plan.digits_distortion)
    folder = out / plan.model
    base, _ = base_model(plan, loaders, folder)
    specs = haloc.decomposable_layers(base, torch.zeros(1, *haloc.models.input_size(plan.model)))
    targets = build_targets(replace(plan, targets={FLOPS: [0.3]}), base, specs, folder, 1)
    table = targets[FLOPS].table_at(0.3)
    samples = {"plain": [], "warmup": [], "search": []}
    parts = {"weight": [], "teacher": [], "arch": [], "eval": []}
    for r in range(rounds):
        model = copy.deepcopy(base).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        haloc.seed_epoch(loaders.search_train, 0, r)
        t0 = time.perf_counter()
        for x, y in loaders.search_train:
            loss = F.cross_entropy(model(x), y)  # x: (N, 3, 32, 32)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        samples["plain"].append(time.perf_counter() - t0)
        cfg = search_cfg(plan, overrides, epochs=2, warmup_epochs=1, seed=r)
        search = SupernetSearch(base, targets[FLOPS].space, [table], cfg, specs=specs)
        for key in ("warmup", "search"):
            search.seed_loaders(loaders.search_train, loaders.heldout)
            metrics = search.run_epoch(loaders.search_train, loaders.heldout)
            samples[key].append(metrics["seconds"]["total"])
        for k in parts:
            parts[k].append(metrics["seconds"][k])
    med = {k: statistics.median(v) for k, v in samples.items()}
    result = {"model": plan.model, "rounds": rounds, "seconds_median": med,
              "warmup_over_plain": med["warmup"] / med["plain"], "search_over_plain": med["search"] / med["plain"],
              "breakdown_over_plain": {k: statistics.median(v) / med["plain"] for k, v in parts.items()},
              "steps": len(loaders.search_train), "batch": plan.batch_size, "overrides": overrides,
              "load_before_after": os.getloadavg(), "threads": torch.get_num_threads()}
    _write_json(folder / f"search_cost{_suffix(overrides)}.json", result)
    print(json.dumps(result, indent=1))
    return result


# ---- summary ------------------------------------------------------------------------------------------

METHOD_ORDER = ("haloc", "haloc-sn", "haloc-long", "haloc-paper", "haloc-paper-sn", "uniform", "energy", "alds",
                "random", "random-best", "uniform-long", "energy-long", "alds-long")


def summarize(out: Path, models: list[str]) -> dict:
    summary = {}
    lines = []
    for model in models:
        folder = out / model
        if not (folder / "cells").exists():
            continue
        specs = haloc_specs(model, recorded_classes(out / model))
        base = json.loads((folder / "base.json").read_text())
        others = [json.loads(f.read_text())["top1"] for f in sorted(folder.glob("base-split*.json"))]
        latency = json.loads((folder / "latency.json").read_text()) if (folder / "latency.json").exists() else {}
        groups: dict = {}
        for f in sorted((folder / "cells").glob("*/*.json")):
            rec = json.loads(f.read_text())
            if "method" not in rec:
                continue
            target, budget, _ = parse_cell(rec["cell"])
            groups.setdefault((target, budget), {}).setdefault(rec["method"], []).append(rec)
        splits = ""
        if others:
            span = f"{min(others) * 100:.2f}" + (f"-{max(others) * 100:.2f}" if max(others) > min(others) else "")
            splits = f"; the originals of {len(others)} other split(s): {span}%"
        data = f" on {base['data'].replace(' train ', ' ')}" if base.get("data") else ""
        lines += [f"### {model} (original top-1 {base['top1'] * 100:.2f}%{data}, {base['epochs']} epochs{splits})", ""]
        for (target, budget), by_method in sorted(groups.items(), key=lambda kv: (kv[0][0] != FLOPS, kv[0])):
            rows, stats = [], {}
            order = sorted(by_method, key=lambda m: (METHOD_ORDER.index(m.split("@")[0]) if m.split("@")[0]
                                                     in METHOD_ORDER else 99, m))
            for method in order:
                recs = by_method[method]
                st = method_stats(recs, specs, latency)
                stats[method] = st
                rows.append(st)
            verdict = discrimination(stats)
            protocols = protocol_verdicts(stats)
            summary[f"{model}/{target}/{budget:g}"] = {"methods": stats, "verdict": verdict, "protocols": protocols}
            lines += [f"#### {model}, {target} budget {budget:g} ({verdict['text']})", "",
                      "| method | runs | cost / budget | top-1 decomposed | top-1 after search | top-1 fine-tuned |"
                      " whole layers | min rank | KxK at rank <= 2 | cpu measured | asic measured |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for method, st in stats.items():
                lines.append(f"| {method} | {st['seeds']} | {st['cost_fraction']} | {st['decomposed']} | "
                             f"{st['searched']} | {st['finetuned']} | {st['whole_layers']} | {st['min_rank']} | "
                             f"{st['kxk_le2']} | {st['cpu']} | {st['asic']} |")
            lines.append("")
            lines += [f"- {name}: {v['text']}" + (f"; each HALOC variant against the best baseline: {v['halo_text']}"
                                                   if v.get("halo_text") else "") for name, v in protocols.items()]
            lines += [""] if protocols else []
            evidence = search_evidence(by_method)
            if evidence:
                summary[f"{model}/{target}/{budget:g}"]["evidence"] = evidence
                lines += evidence_lines(evidence) + [""]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    _write_json(out / "summary.json", summary)
    print("\n".join(lines))
    return summary


def _mean_std(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def method_stats(recs: list[dict], specs: dict, latency: dict) -> dict:
    reached = [r for r in recs if r.get("within_budget", True)]
    if not reached:
        cost = statistics.fmean(r["cost"] / r["budget"] for r in recs)
        return {"seeds": len(recs), "cost_fraction": f"cannot reach (cheapest {cost:.2f})", "decomposed": "-",
                "searched": "-", "finetuned": "-", "whole_layers": "-", "min_rank": "-", "kxk_le2": "-",
                "cpu": "-", "asic": "-", "finetuned_values": [], "reachable": False}
    lat = [latency.get(_ranks_key({n: r for n, r in rec["ranks"].items() if r < specs[n].max_rank})) for rec in reached]
    lat = [x for x in lat if x]
    fmt = lambda xs, d=2: (f"{statistics.fmean(xs):.{d}f}" if xs else "-")  # noqa: E731
    decomposed = [r["top1_decomposed"] for r in reached]
    if reached[0].get("draws_top1_decomposed") and reached[0]["method"] == "random":
        decomposed = [x for r in reached for x in r["draws_top1_decomposed"]]  # every draw, not only the one tuned
    return {"seeds": len(reached), "cost_fraction": fmt([r["cost"] / r["budget"] for r in reached], 3),
            "decomposed": _mean_std(decomposed, digits=1),
            "searched": _mean_std([r["top1_search"] for r in reached if "top1_search" in r], digits=1),
            "finetuned": _mean_std([r["top1_finetuned"] for r in reached]),
            "finetuned_values": [r["top1_finetuned"] for r in reached],
            "finetuned_by_run": {r["cell"]: r["top1_finetuned"] for r in reached},
            "whole_layers": fmt([r["whole_layers"] for r in reached], 1),
            "min_rank": min((r["min_rank"] for r in reached if r["min_rank"] is not None), default="-"),
            "kxk_le2": fmt([r["kxk_rank_le2"] for r in reached], 1),
            "cpu": fmt([x["cpu_ratio"] for x in lat]), "asic": fmt([x["asic_ratio"] for x in lat]), "reachable": True}


def discrimination(stats: dict) -> dict:
    """Does the comparison separate methods here? Means further apart than the largest seed std."""
    vals = {m: s["finetuned_values"] for m, s in stats.items() if s.get("finetuned_values")}
    if len(vals) < 2:
        return {"text": "one method", "discriminates": False}
    means = {m: statistics.fmean(v) for m, v in vals.items()}
    stds = [statistics.stdev(v) for v in vals.values() if len(v) > 1]
    spread = max(means.values()) - min(means.values())
    noise = max(stds) if stds else 0.0
    best = max(means, key=means.get)
    disc = spread > noise and noise > 0
    text = (f"discriminates: spread of means {spread * 100:.2f} > largest seed std {noise * 100:.2f}; best {best}"
            if disc else f"within noise: spread of means {spread * 100:.2f}, largest seed std {noise * 100:.2f}")
    return {"text": text, "discriminates": disc, "best": best, "spread": spread, "noise": noise, "means": means}


def protocol_verdicts(stats: dict) -> dict:
    """The verdict of each protocol this cell holds, HALOC's variants against its baselines:
    "equal fine-tune" (plain baselines, every method the same fine-tune, the search's cost apart) and
    "compute-matched" (the -long baselines, given the search's training as more fine-tuning).
    HALOC's variants that are not "-long" take part in both; haloc-long is the ranks alone."""
    halo = {m: st for m, st in stats.items() if m.startswith("haloc") and not m.endswith("-long")}
    plain = {m: st for m, st in stats.items() if m in BASELINES or m == "random-best"}
    long = {m: st for m, st in stats.items() if m.endswith("-long") and not m.startswith("haloc")}
    out = {}
    for name, base in (("equal fine-tune", plain), ("compute-matched", long)):
        if not halo or not base:
            continue
        v = discrimination({**halo, **base})
        means = {m: statistics.fmean(st["finetuned_values"]) for m, st in {**halo, **base}.items()
                 if st.get("finetuned_values")}
        b = max((m for m in base if m in means), key=means.get, default=None)
        # every HALOC variant against the best baseline, each on its own line: the best of several
        # variants would win comparisons by selection alone
        per_variant = {}
        for h in sorted((m for m in halo if m in means), key=means.get, reverse=True):
            if not b:
                break
            stds = [statistics.stdev(stats[m]["finetuned_values"]) for m in (h, b)
                    if len(stats[m]["finetuned_values"]) > 1]
            gap, noise = means[h] - means[b], max(stds, default=0.0)
            word = ("better beyond" if gap > noise else "worse beyond" if -gap > noise else "within")
            paired = paired_difference(stats[h], stats[b])
            per_variant[h] = {"gap": gap, "noise": noise, "verdict": word, "paired": paired,
                              "text": f"{h} {gap * 100:+.2f} points against {b}, {word} the larger seed std "
                                      f"{noise * 100:.2f}" + (f" ({paired['text']})" if paired else "")}
        if per_variant:
            best = next(iter(per_variant.values()))
            v["halo_text"] = "; ".join(p["text"] for p in per_variant.values())
            v["halo_gap"], v["halo_noise"], v["halo_variants"] = best["gap"], best["noise"], per_variant
        out[name] = v
    return out


def paired_difference(a: dict, b: dict) -> dict | None:
    """Method a less method b over the runs (split, seed) both have: each run shares its split's
    original and test images and its seed's batch order, so the difference per run cancels what the
    two share; its mean +- standard error, and whether it is beyond twice the standard error."""
    runs = sorted(set(a.get("finetuned_by_run", {})) & set(b.get("finetuned_by_run", {})))
    if len(runs) < 2:
        return None
    diffs = [a["finetuned_by_run"][r] - b["finetuned_by_run"][r] for r in runs]
    mean, se = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    beyond = abs(mean) > 2 * se
    return {"mean": mean, "se": se, "runs": len(runs), "beyond_2se": beyond,
            "text": f"paired over {len(runs)} runs {mean * 100:+.2f} +- {se * 100:.2f} (standard error), "
                    + ("beyond" if beyond else "within") + " twice its standard error"}


def _split_of(rec: dict) -> str:
    """The digits split of a result, from its cell's run ("split2s0" -> "split2", "s0" -> "")."""
    return parse_cell(rec["cell"])[2].rsplit("s", 1)[0] if "cell" in rec else ""


def search_evidence(by_method: dict) -> dict:
    """The search's own evidence per HALOC variant: per epoch held-out accuracy of the argmax,
    expected cost / budget and alpha entropy (means over seeds); the seeds' agreement on ranks
    (pairs of seeds on the same split)."""
    out = {}
    searches: dict = {}  # haloc, haloc-sn and haloc-long are one search fine-tuned three ways: its evidence once
    for method, recs in by_method.items():
        if method.startswith("haloc") and "history" in recs[0]:
            base = method.removesuffix("-sn").removesuffix("-long")
            if base not in searches or method == base:
                searches[base] = (method, recs)
    for method, recs in searches.values():
        epochs = len(recs[0]["history"])
        per_epoch = []
        for e in range(epochs):
            hs = [r["history"][e] for r in recs if len(r["history"]) > e]
            key = next(k for k in hs[0] if k.startswith("expected_"))
            budget_key = "budget_" + key.removeprefix("expected_")
            per_epoch.append({
                "epoch": e + 1,
                "heldout_acc_argmax": _safe_mean([h.get("heldout_acc_argmax") for h in hs]),
                "cost_over_budget": statistics.fmean(h[key] / h[budget_key] for h in hs),
                "alpha_entropy": statistics.fmean(h["alpha_entropy"] for h in hs)})
        # seeds agree or not on one original: runs of other splits (other originals) are not compared
        same_original = [(a["ranks"], b["ranks"]) for a, b in combinations(recs, 2) if _split_of(a) == _split_of(b)]
        agreement = (statistics.fmean(sum(a[n] == b[n] for n in a) / len(a) for a, b in same_original)
                     if same_original else None)
        out[method] = {"per_epoch": per_epoch, "rank_agreement": agreement,
                       "argmax_over_budget": statistics.fmean(r["argmax_cost"] / r["budget"] for r in recs),
                       "search_seconds": statistics.fmean(r["search_seconds"] for r in recs),
                       "search_over_finetune_epoch": _safe_mean([
                           r["search_seconds"] / (r["finetune_seconds"] / r.get("finetune_epochs", 1))
                           for r in recs if r.get("finetune_seconds") and r.get("finetune_epochs")]),
                       "search_epoch_equivalent": _safe_mean([r.get("search_epoch_equivalent") for r in recs])}
    return out


def evidence_lines(evidence: dict) -> list[str]:
    lines = []
    for method, ev in evidence.items():
        agree = "-" if ev["rank_agreement"] is None else f"{ev['rank_agreement']:.2f}"
        epochs = "; ".join(f"{p['epoch']}: acc {_fmt(p['heldout_acc_argmax'])}, E/T {p['cost_over_budget']:.2f}, "
                           f"H {p['alpha_entropy']:.2f}" for p in ev["per_epoch"])
        lines.append(f"- {method} evidence (seed means): {epochs}. Argmax before projection "
                     f"{ev['argmax_over_budget']:.2f} of budget; seeds on one split agree on {agree} "
                     "of the layers' ranks; "
                     f"search {ev['search_seconds']:.0f} s" + (
                         f" = {ev['search_over_finetune_epoch']:.2f} measured fine-tune epochs (counted as "
                         f"{ev['search_epoch_equivalent']:.2f} for the -long baselines)"
                         if ev.get("search_over_finetune_epoch") and ev.get("search_epoch_equivalent") else "") + ".")
    return lines


def _safe_mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _fmt(x):
    return "-" if x is None else f"{x:.3f}"


# ---- helpers -----------------------------------------------------------------------------------------

def _ranks_key(ranks: dict) -> str:
    return hashlib.sha1(json.dumps(sorted(ranks.items())).encode()).hexdigest()[:16]


def _tag(overrides: dict) -> str:
    return _suffix(overrides).lstrip("@") or "default"


def _suffix(overrides: dict) -> str:
    return "@" + ",".join(f"{k}={v}" for k, v in sorted(overrides.items())) if overrides else ""


def _write_json(path: Path, obj) -> None:
    from haloc.files import atomic_write  # a temp name of its own: bench processes may share --out

    atomic_write(path, json.dumps(obj, indent=1, default=float) + "\n")


def _atomic_save(path: Path, obj) -> None:
    import torch

    from haloc.files import atomic_write

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", flush=True)


def parse_overrides(items: list[str]) -> dict:
    from haloc.search_loop import SearchConfig

    types = {f.name: f.type for f in fields(SearchConfig)} | {"mode": "str"}  # mode: haloc.SEARCH_MODES
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"--search {item!r}: unknown SearchConfig field; known: {sorted(types)}")
        kind = str(types[key])
        out[key] = (value.lower() in ("1", "true", "yes") if "bool" in kind else int(value) if kind == "int"
                    else float(value) if "float" in kind else None if value == "None" else value)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="resnet20, one FLOPs and one asic budget, one seed, "
                                                        "tiny epochs: a check that everything runs")
    p.add_argument("--models", nargs="+", default=["resnet20"], choices=sorted(PLANS))
    p.add_argument("--out", default=None, help=f"results folder (default {DEFAULT_OUT}[-quick])")
    p.add_argument("--data", default=None, help="instead of the digits: CIFAR-10's python batches, or an "
                   "ImageFolder tree (train/ and val/, a folder per class; images at 32x32)")
    p.add_argument("--phase", choices=("cells", "latency", "summary", "cost", "all"), default="all",
                   help="cost: a search epoch against a plain training epoch (run it on a quiet machine)")
    p.add_argument("--targets", nargs="+", default=None, choices=(FLOPS, "cpu", "asic"),
                   help="only these targets; with --budgets also a target the model's plan lacks")
    p.add_argument("--methods", nargs="*", default=["haloc", *BASELINES],
                   help="methods to run (none: only the original model, LUTs and calibrations)")
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--splits", nargs="+", type=int, default=[0],
                   help="digits train/test splits to run (each its own original model and 360 test images; "
                        "the summary pools every split's runs); 0 is the default split")
    p.add_argument("--digits-distortion", type=float, default=0.0, metavar="S",
                   help="distort the digits (a fixed random warp and noise per image, strength S, 1 = rotation up "
                        "to 30 degrees): a harder task; give it its own --out")
    p.add_argument("--budgets", nargs="+", type=float, default=None,
                   help="replace every target's budgets (those of --targets, when given)")
    p.add_argument("--search", nargs="*", default=[], metavar="KEY=VALUE",
                   help="SearchConfig overrides for a HALOC variant (stored as haloc@KEY=VALUE,...)")
    p.add_argument("--variant", default=None, help="name of the HALOC variant's results (default: haloc@overrides)")
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--haloc-starts", nargs="+", choices=HALOC_STARTS, default=list(HALOC_STARTS),
                   help="which fine-tunes of HALOC's result to run: hosvd (haloc), supernet (haloc-sn), "
                        "long (haloc-long)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared machine)")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out or (DEFAULT_OUT + ("-quick" if args.quick else "")))
    overrides = parse_overrides(args.search)
    plans = [quick_plan()] if args.quick else [replace(PLANS[m]) for m in args.models]  # PLANS stay as shipped
    from haloc.data import DIGITS_MAX_DISTORTION

    if not 0 <= args.digits_distortion <= DIGITS_MAX_DISTORTION:  # refused before any work, as haloc.data would
        print(f"--digits-distortion {args.digits_distortion:g}: give a strength from 0 (none) to "
              f"{DIGITS_MAX_DISTORTION:g} (1: rotation up to 30 degrees)", file=sys.stderr)
        return 2
    if args.data and args.digits_distortion:
        print(f"--digits-distortion {args.digits_distortion:g} distorts the digits; a --data folder is used as it "
              "is (drop one of them)", file=sys.stderr)
        return 2
    if args.data and args.splits != [0]:
        print(f"--splits {' '.join(map(str, args.splits))}: splits are the digits' own; a --data folder "
              "brings its own train/test split (drop --splits)", file=sys.stderr)
        return 2
    classes = None
    if args.data:
        from haloc.errors import BadInputError

        try:
            classes = data_classes(args.data)
        except BadInputError as e:
            print(e, file=sys.stderr)
            return 2
    for plan in plans:
        plan.num_classes = classes if args.data else recorded_classes(out / plan.model)
        if args.seeds:
            plan.seeds = tuple(args.seeds)
        if args.phase in ("cells", "all"):  # only cells run budgets: latency and summary read the cells there are
            try:
                plan.targets = plan_targets(plan, args.budgets, args.targets)
            except ValueError as e:
                print(e, file=sys.stderr)
                return 2
        if args.finetune_epochs:
            plan.finetune_epochs = args.finetune_epochs
        plan.digits_distortion = args.digits_distortion
        log(f"{plan.model}: {asdict(plan)}; search overrides {overrides}; uptime load {os.getloadavg()}")
        if args.phase in ("cells", "all"):
            run_model(plan, out, args.data, args.threads, overrides, set(args.targets) if args.targets else None,
                      tuple(args.methods), args.variant, tuple(args.haloc_starts), tuple(args.splits))
        if args.phase in ("latency", "all"):
            measure_latencies(plan, out, args.threads, rounds=1 if args.quick else 3,  # --quick: a check it runs
                              only=set(args.targets) if args.targets else None)
        if args.phase == "cost":
            search_cost(plan, out, args.data, overrides)
    if args.phase in ("summary", "all"):
        summarize(out, [p.model for p in plans])
    return 0


if __name__ == "__main__":
    sys.exit(main())
