"""The Ray Tune trainable of a HALOC search trial, and the "train once" supernet training.

    trainable = tune.with_parameters(search_trainable, context=SearchContext(...))
    config = {"targets": "cpu+asic", "budget": 0.5, "seed": 0, "lam": 2.0}   # one trial

The driver builds the model's specs, the rank space and every cost table once and hands them over
in `SearchContext` (through the object store), so no trial rebuilds them. A trial runs
`SupernetSearch` epoch by epoch; after every epoch it checkpoints the search state (supernet
weights, alpha, both optimizers, epoch, RNG) and reports cross-entropy, held-out accuracy, the
expected cost against the budget of every target and the alpha entropy. The last report carries
the `SearchResult` (ranks, predicted costs, ...) and the held-out accuracy of the selected discrete
architecture, with a checkpoint holding `result.json` as well. A restarted trial resumes from its
latest checkpoint; data order per epoch depends only on (seed, epoch), so a resume repeats nothing.

"Train once, search many": `train_shared_supernet` trains the supernet weights once with alpha
frozen uniform (weight steps only); trials given `shared_supernet` load those weights, reset alpha
and only re-optimise alpha (`train_weights=False`).
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

STATE_FILE = "search.pt"
RESULT_FILE = "result.json"
SEARCHED_FILE = "searched.pt"  # final checkpoint only: the selected ranks with the supernet's own weights


class TrialCallback:
    """Called by every search trial, in the trial's own worker process: subclass and override what
    you need, and pass instances to `orchestrator.stages.search.run_search(callbacks=[...])`. Instances
    travel to the workers pickled, so define the class in an importable module."""

    def on_trial_start(self, config: dict, start_epoch: int, trial_id: str) -> None:
        """After the trial restored its checkpoint (start_epoch > 0) or started afresh."""

    def on_epoch_start(self, config: dict, epoch: int) -> None:
        """Before epoch `epoch` (1-based); an exception fails the trial (Tune retries it)."""

    def on_epoch_end(self, config: dict, epoch: int, report: dict) -> None:
        """After epoch `epoch` was reported to Tune with its checkpoint."""


@dataclass(frozen=True)
class SearchContext:
    """Everything a trial needs that is the same for all trials (built once on the driver)."""

    model: object  # haloc.models.ModelSpec
    specs: dict  # layer name -> LayerSpec (traced with an example input)
    rank_space: object  # haloc RankSpace, shared by every trial
    tables: dict  # (targets key, budget) -> list[CostTable] with absolute budgets
    base: dict  # SearchConfig fields common to all trials (epochs, lrs, penalty, ...)
    data: dict  # haloc.data.DataConfig fields
    batch_size: int = 32
    heldout_fraction: float = 0.2
    model_state: dict | None = None  # pretrained weights of the model (None: the model's init)
    shared_supernet: dict | None = None  # train once, search many: trained supernet weights
    callbacks: tuple = ()  # TrialCallback instances


# ---- pieces shared by the trainable and the shared training ----------------------------------------

def build_model(ctx: SearchContext, seed: int = 0):
    import torch

    import haloc

    torch.manual_seed(seed)  # without weights the initialisation is the seed's, so a trial repeats exactly
    model = haloc.models.ModelSpec.of(ctx.model).create()
    if ctx.model_state is not None:
        model.load_state_dict(ctx.model_state)
    return model


def build_loaders(ctx: SearchContext, seed: int):
    """(train, held-out) loaders over two disjoint parts of the TRAINING data (never validation)."""
    from haloc.data import DataConfig, build_datasets, make_loader, split_train_heldout

    from .data_cache import local_data_config

    train_set, _ = build_datasets(DataConfig(**local_data_config(ctx.data)))  # s3:// data: synced to the node
    train, held = split_train_heldout(train_set, ctx.heldout_fraction, seed=ctx.data.get("seed", 0))
    batch = max(2, min(ctx.batch_size, len(train)))  # a part smaller than a batch: one batch an epoch
    return (make_loader(train, batch, shuffle=True, seed=seed, drop_last=True),
            make_loader(held, ctx.batch_size, shuffle=True, seed=seed + 7_777))


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _seed_loaders(train, held, seed: int, epoch: int) -> None:
    from haloc.data import seed_epoch

    seed_epoch(held, seed + 7_777, epoch)
    seed_epoch(train, seed, epoch)  # last: it also sets the global RNG that the epoch starts from


@dataclass
class _Timer:
    seconds: float = 0.0

    def __enter__(self):
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._t


# ---- the trainable -----------------------------------------------------------------------------------

def _trial_config(ctx: SearchContext, config: dict):
    from haloc import search_config

    fields = dict(ctx.base, seed=int(config["seed"]), device=_device())
    mode = fields.pop("mode", "supernet")
    for key in ("lam", "beta"):
        if config.get(key) is not None:
            fields[key] = float(config[key])
    if ctx.shared_supernet is not None:
        fields.update(train_weights=False, warmup_epochs=0)
    return search_config(mode, **fields)


def search_trainable(config: dict, context: SearchContext) -> None:
    """One Tune trial: a supernet search for (targets, budget, seed[, lam, beta])."""
    import torch
    from ray import tune

    from haloc import SupernetSearch

    wall_start = time.perf_counter()
    ctx = context
    key = (config["targets"], float(config["budget"]))
    if key not in ctx.tables:
        raise KeyError(f"no cost tables for targets {key[0]!r} at budget {key[1]} in the search context")
    tables = ctx.tables[key]
    cfg = _trial_config(ctx, config)
    search = SupernetSearch(build_model(ctx, cfg.seed), ctx.rank_space, tables, cfg, specs=ctx.specs)
    inner = _Timer()
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location=search.device, weights_only=True)
        search.load_state_dict(state)
        inner.seconds = float(state.get("inner_seconds", 0.0))
    elif ctx.shared_supernet is not None:
        search.load_weights_only(ctx.shared_supernet)
    for cb in ctx.callbacks:
        cb.on_trial_start(config, search.epoch, tune.get_context().get_trial_id())
    train, held = build_loaders(ctx, cfg.seed)

    while search.epoch < cfg.epochs:
        for cb in ctx.callbacks:
            cb.on_epoch_start(config, search.epoch + 1)
        _seed_loaders(train, held, cfg.seed, search.epoch)
        with inner:
            metrics = search.run_epoch(train, held)
        report = _epoch_report(metrics, tables)
        report["inner_seconds"] = inner.seconds
        _publish_progress(config, search.epoch, cfg.epochs, report)
        final = search.epoch >= cfg.epochs
        with tempfile.TemporaryDirectory() as d:
            state = search.state_dict()
            state["inner_seconds"] = inner.seconds
            torch.save(state, Path(d) / STATE_FILE)
            if final:
                with inner:
                    result = search.result()
                    # the same measure as each epoch's argmax line (BatchNorm on batch statistics): the
                    # running statistics are the relaxed supernet's and put any discrete choice near chance
                    acc, ce = search.architecture_accuracy(result.all_ranks, held)
                summary = _final_summary(result, acc, ce, config, inner.seconds, time.perf_counter() - wall_start)
                try:
                    torch.save(searched_state(search, result.all_ranks, train), Path(d) / SEARCHED_FILE)
                    summary["searched_weights"] = "kept"
                except Exception as e:
                    log.warning("trial %s: its searched weights could not be kept (%s: %s); the fine-tune "
                                "will start from HOSVD", config, type(e).__name__, e)
                    summary["searched_weights"] = f"not kept: {type(e).__name__}: {str(e)[:200]}"
                report.update(summary)
                (Path(d) / RESULT_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True))
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(d))
        for cb in ctx.callbacks:
            cb.on_epoch_end(config, search.epoch, report)


def searched_state(search, all_ranks: dict, loader) -> dict:
    """The state dict of the selected architecture with the supernet's trained factors (BatchNorm
    statistics re-estimated on training batches: the supernet's are those of the mixture). The
    fine-tune starts from it: measured on the digits, better than a fresh HOSVD of the original
    (BENCHMARKS.md section 9)."""
    import haloc

    model = search.supernet.extract(all_ranks)
    haloc.reestimate_batchnorm(model, loader, max_batches=10)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


_GAUGES: dict = {}


def _publish_progress(config: dict, epoch: int, epochs: int, report: dict) -> None:
    """Search progress as Ray metrics (dashboard / Prometheus): epoch share done and held-out accuracy."""
    from ray.util.metrics import Gauge

    from .progress import emit

    if not _GAUGES:
        keys = ("targets", "budget", "seed")
        _GAUGES["progress"] = Gauge("haloc_search_progress", "share of a search trial's epochs done", keys)
        _GAUGES["acc"] = Gauge("haloc_search_heldout_acc", "held-out accuracy of a search trial", keys)
    tags = {"targets": str(config.get("targets")), "budget": str(config.get("budget")), "seed": str(config.get("seed"))}
    _GAUGES["progress"].set(epoch / max(1, epochs), tags=tags)
    if report.get("heldout_acc") is not None:
        _GAUGES["acc"].set(float(report["heldout_acc"]), tags=tags)
    costs = {k.split("/", 1)[1]: v for k, v in report.items() if k.startswith("expected_over_budget/")}
    emit("search_epoch", trial_id=_trial_id(), targets=str(config.get("targets")),
         budget=config.get("budget"), seed=config.get("seed"), epoch=epoch, epochs=epochs,
         heldout_acc=report.get("heldout_acc"), cost_over_budget=costs)


def _trial_id() -> str | None:
    try:
        from ray import tune

        return tune.get_context().get_trial_id()
    except Exception:
        return None


def _epoch_report(metrics: dict, tables) -> dict:
    report = {k: v for k, v in metrics.items() if not k.startswith(("expected_", "budget_"))}
    acc = _heldout_acc(metrics)
    report["heldout_acc"] = acc if acc is not None else float("nan")
    report["heldout_ce"] = report.get("heldout_ce") if report.get("heldout_ce") is not None else float("nan")
    for t in tables:
        expected = metrics[f"expected_{t.name}"]
        report[f"expected_cost/{t.name}"] = expected
        report[f"budget/{t.name}"] = t.must_meet
        report[f"expected_over_budget/{t.name}"] = expected / t.must_meet
    over = sum(max(0.0, report[f"expected_over_budget/{t.name}"] - 1.0) for t in tables)
    acc = report["heldout_acc"]
    report["objective"] = (0.0 if acc != acc else acc) - over  # what Optuna and ASHA maximise
    report["done"] = False
    return report


def _final_summary(result, acc: float, ce: float, config: dict, inner_s: float, wall_s: float) -> dict:
    """What selection reads: the chosen ranks, their predicted cost per target and held-out quality."""
    over = sum(max(0.0, result.predicted_cost[n] / result.budget[n] - 1.0) for n in result.budget)
    return {
        "done": True, "objective": acc - over, "selected_heldout_acc": acc, "selected_heldout_ce": ce,
        "ranks": result.ranks, "all_ranks": result.all_ranks, "predicted_cost": result.predicted_cost,
        "argmax_cost": result.argmax_cost, "budget_abs": result.budget, "aimed_abs": result.aimed,
        "within_budget": result.within_budget,
        "targets": config["targets"], "budget": float(config["budget"]), "seed": int(config["seed"]),
        "lam": config.get("lam"), "beta": config.get("beta"), "inner_seconds": inner_s,
        "attempt_wall_seconds": wall_s, "history": search_curve(result.history),
    }


def _heldout_acc(metrics: dict) -> float | None:
    """The epoch's held-out accuracy: of the alpha steps' relaxed supernet, or, where the alpha steps
    ran no whole network (the blockwise mode), of the epoch's argmax architecture."""
    acc = metrics.get("heldout_acc")
    return acc if acc is not None else metrics.get("heldout_acc_argmax")


def search_curve(history: list[dict]) -> list[dict]:
    """Per epoch: held-out accuracy, alpha entropy and expected cost / budget per target (the report's curves)."""
    out = []
    for m in history:
        names = [k[len("expected_"):] for k in m if k.startswith("expected_")]
        out.append({"epoch": m.get("epoch"), "heldout_acc": _heldout_acc(m),
                    "alpha_entropy": m.get("alpha_entropy"),
                    "expected_over_budget": {n: m[f"expected_{n}"] / m[f"budget_{n}"] for n in names
                                             if m.get(f"budget_{n}")}})
    return out


# ---- train once, search many ------------------------------------------------------------------------

def train_shared_supernet(context: SearchContext, epochs: int, seed: int = 0) -> tuple[dict, dict]:
    """Train the supernet's weights for `epochs` with alpha frozen uniform (every candidate sampled).

    Returns (supernet state dict on the CPU, {"seconds", "epochs", "train_ce"}). The cost table is
    irrelevant here (alpha never moves); any table of the context satisfies SupernetSearch.
    """
    from haloc import SearchConfig, SupernetSearch

    tables = next(iter(context.tables.values()))
    fields = dict(context.base, epochs=epochs, warmup_epochs=epochs, train_weights=True, seed=seed,
                  device=_device())
    fields.pop("mode", None)  # train once: the supernet mode's weight steps, whatever the trials then do
    search = SupernetSearch(build_model(context, seed), context.rank_space, tables, SearchConfig(**fields),
                            specs=context.specs)
    train, held = build_loaders(context, seed)
    start = time.perf_counter()
    ce = None
    for epoch in range(epochs):
        _seed_loaders(train, held, seed, epoch)
        ce = search.run_epoch(train, held)["train_ce"]
    state = {k: v.detach().cpu() for k, v in search.supernet.state_dict().items()}
    return state, {"seconds": time.perf_counter() - start, "epochs": epochs, "train_ce": ce}


def with_context(ctx: SearchContext, **changes) -> SearchContext:
    return replace(ctx, **changes)

