"""Search-stage figures for BENCHMARKS.md: budget adherence, Tune overhead, full vs train-once search.

    .venv/bin/python -m benchmarks.bench_search --smoke          # about 2 minutes on 2 CPU cores
    .venv/bin/python -m benchmarks.bench_search --steps 40 --out bench_search.json

All searches run through `orchestrator.stages.search.run_search` on an embedded local Ray (or `--address`),
resnet20 on the generated demo data (not real data: accuracies only compare the variants here),
FLOPs budgets, rank step 16.

1. Budget adherence: per budget, the predicted cost of the selected architecture over the budget
   (goal: <= 1 and >= 0.95), beside the plain argmax's (before the projection onto the budget).
2. Tune overhead: 1 - inner search time / trial wall time (Tune's `time_total_s`, which includes the
   trainable's setup: model, data, checkpoints), and the whole experiment's driver wall time.
3. Full searches vs "train once, search many" over the same (budget, seed) grid: search cost in
   epochs of plain training (the original model, same batch and steps per epoch), and the held-out
   accuracy of the selected architectures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace

from orchestrator.run_layout import RunLayout


def plain_epoch_seconds(batch: int, steps: int, samples: int) -> float:
    """Seconds of one epoch (`steps` steps) of plain SGD training of resnet20 on the demo data."""
    import torch
    import torch.nn.functional as F

    import haloc
    from haloc.data import demo_dataset, make_loader

    model = haloc.models.create("resnet20")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = make_loader(demo_dataset(samples), batch, shuffle=True, drop_last=True)
    batches = [b for _, b in zip(range(steps + 2), loader)]
    model.train()
    start = None
    for i, (x, y) in enumerate(batches):
        if i == 2:  # two warm-up steps
            start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)  # x: (N, 3, 32, 32)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) * steps / max(1, len(batches) - 2)


def budget_adherence(records: list[dict], configs: list[dict]) -> list[dict]:
    by_id = {r["trial_id"]: r for r in records}
    rows = []
    for c in configs:
        best = by_id[c["trial_id"]]
        rows.append({"budget": c["budget"],
                     "selected_over_budget": c["predicted_cost"]["flops"] / c["budget_abs"]["flops"],
                     "argmax_over_budget": best["argmax_cost"]["flops"] / best["budget_abs"]["flops"],
                     "within_budget": c["within_budget"]})
    return rows


def overhead(records: list[dict]) -> dict:
    walls = [r["trial_wall_seconds"] for r in records]
    inner = [r["inner_seconds"] for r in records]
    shares = [1 - i / w for i, w in zip(inner, walls)]
    return {"trials": len(records), "trial_wall_s_mean": statistics.fmean(walls),
            "inner_s_mean": statistics.fmean(inner), "overhead_share_mean": statistics.fmean(shares)}


def summary(records: list[dict]) -> dict:
    accs = [r["selected_heldout_acc"] for r in records]
    return {"heldout_acc_mean": statistics.fmean(accs), "heldout_acc_std": statistics.pstdev(accs),
            "inner_s_total": sum(r["inner_seconds"] for r in records)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="the smallest sizes (a check that it runs)")
    p.add_argument("--steps", type=int, default=20, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--long-steps", type=int, default=120, help="steps per epoch of the one long overhead trial")
    p.add_argument("--address", default=None)
    p.add_argument("--store", default=None, help="store for the runs (default: a temp folder)")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.epochs, args.long_steps = 3, 2, 10

    from orchestrator.cluster import connect
    from orchestrator.stages.search import SearchSpec, run_search
    from orchestrator.stages.select import select_configs

    store = args.store or tempfile.mkdtemp(prefix="bench-search-")
    connect(args.address, num_cpus=None if args.address else 2)
    batch, samples = 32, 640
    base = SearchSpec(model="resnet20", budget_metric="flops", epochs=args.epochs, warmup_epochs=1,
                      steps_per_epoch=args.steps, batch_size=batch, data={"kind": "demo", "demo_train": samples},
                      rank_step=16, lam=5.0)
    out: dict = {"args": vars(args), "store": store}

    # 1 + 2: budget adherence and Tune overhead over a budget sweep
    sweep = replace(base, budgets=(0.6, 0.7, 0.8, 0.9), seeds=(0,))
    t = time.perf_counter()
    records = run_search(RunLayout(store, "adherence"), sweep)
    fit_wall = time.perf_counter() - t
    out["budget_adherence"] = budget_adherence(records, select_configs(records, "resnet20"))
    out["overhead_short"] = dict(overhead(records), experiment_wall_s=fit_wall)
    long = replace(base, budgets=(0.8,), seeds=(0,), steps_per_epoch=args.long_steps)
    out["overhead_long"] = overhead(run_search(RunLayout(store, "overhead-long"), long))

    # 3: full searches vs train once, search many, over the same grid
    grid = replace(base, budgets=(0.6, 0.8), seeds=(0, 1))
    plain = plain_epoch_seconds(batch, args.steps, samples)
    full = run_search(RunLayout(store, "full"), grid)
    once = run_search(RunLayout(store, "once"), replace(grid, train_once=True, shared_epochs=args.epochs))
    with open(f"{store}/once/search/shared_supernet.json") as f:
        shared = json.load(f)
    full_s, once_s = summary(full), summary(once)
    out["plain_epoch_s"] = plain
    out["full"] = dict(full_s, plain_epochs=full_s["inner_s_total"] / plain)
    out["train_once"] = dict(once_s, shared_s=shared["seconds"],
                             plain_epochs=(shared["seconds"] + once_s["inner_s_total"]) / plain)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
