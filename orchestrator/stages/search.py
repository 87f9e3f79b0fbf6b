"""The search stage: HALOC supernet searches as Ray Tune experiments, resumable from the store.

    spec = SearchSpec(model="resnet20", hardware=("cpu",), budgets=(0.4, 0.6), seeds=(0, 1))
    trials = run_search(RunLayout("runs", "r1"), spec)  # list of trial dicts, see `trial_record`

Layout in the store (orchestrator.run_layout):

    <run>/search/grid/                 the Tune experiment of a grid search (one per run)
    <run>/search/optuna-<targets>-b<budget>/   with Optuna: one experiment per (targets, budget)
    <run>/search/shared_supernet.pt    train once, search many: the supernet weights trained once
    <run>/search/trials.json           one record per trial, what `select` reads

Callbacks (`workers.search_trainable.TrialCallback`) run inside every trial: at its start, before
and after each epoch (the tests inject failures and tracing this way).

Trials: target groups x budgets x seeds as a grid (`grid_axes`). A target group is one hardware (one
trial per hardware), all hardware at once (`joint=True`: one trial, a budget on each), or `("flops",)`
with `budget_metric="flops"`. A deterministic mode (`blockwise-exact`) runs one trial per (targets,
budget), with the first seed only (`SearchSpec.trial_seeds`). With `optuna_samples > 0`, OptunaSearch
samples lam (additive penalty) or beta (multiplicative) and the seed; Optuna cannot take grid
parameters, so each (targets, budget) gets its own Tuner. ASHA (`asha=True`) stops trials early on
the reported `objective`.

Resume: a rerun with the same run id restores every experiment already in the store with
`Tuner.restore(resume_unfinished=True, resume_errored=True)`; finished trials are not rerun, errored
and interrupted ones continue from their last checkpoint, searcher state comes back with the
experiment. A restored experiment keeps the grid it was made with: a blockwise-exact run searched
before it ran once per (targets, budget) finishes its per-seed trials, and `select` reads them all.
Everything that can be checked (hardware names, budgets against the smallest reachable
cost, LUTs covering the model) is checked before Ray is touched: bad input raises BadInputError.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from haloc.config import from_dict_strict
from haloc.errors import BadInputError
from hw_profiles.profile import profiles_for

from ..artifacts import targets_key
from ..run_layout import RunLayout
from ..run_spec import DETERMINISTIC_SEARCH_MODES, SEARCH_MODES
from ..store import Store

log = logging.getLogger(__name__)

GRID_NAME = "grid"
OBJECTIVE = "objective"


@dataclass(frozen=True)
class SearchSpec:
    model: str | dict = "resnet20"  # a registry name or a haloc.models.ModelSpec's dict form
    hardware: tuple[str, ...] = ("cpu",)  # hardware profile names
    budgets: tuple[float, ...] = (0.5,)  # fractions of the original model's cost on each target
    seeds: tuple[int, ...] = (0,)
    budget_metric: str = "latency"  # or "flops": one FLOPs table instead of the hardware's LUTs
    joint: bool = False  # all hardware in one trial (a budget on each) instead of one trial per hardware
    budget_margin: float | None = None  # aim this fraction below a latency budget (None: each profile's)
    # --- the inner search
    epochs: int = 10
    warmup_epochs: int = 1
    steps_per_epoch: int | None = None  # None: the whole training split every epoch
    batch_size: int = 64
    penalty: str = "additive"
    lam: float = 2.0
    beta: float = 0.6
    mode: str = "supernet"  # haloc.SEARCH_MODES: "supernet" (the paper's), "blockwise" (alpha only) or
    #                         "blockwise-exact" (the blockwise error's tables, minimised exactly)
    arch_lr: float | None = None  # None: the mode's own (SearchConfig's 0.05; blockwise 0.3)
    weight_lr: float = 0.01
    # --- data: the TRAINING set (haloc.data.DataConfig fields), split into weight and held-out (alpha) parts
    data: dict = field(default_factory=lambda: {"kind": "demo", "demo_train": 2000})
    heldout_fraction: float = 0.2
    weights: str | None = None  # store path (relative to the run) of the model's pretrained state dict
    # --- rank space
    rank_mode: str = "step"  # or "latency": from the targets' LUT curves
    rank_step: int = 8
    rank_rel_tol: float = 0.02
    max_candidates: int | None = None
    rank_merge: str = "union"  # several hardware in latency mode: union or intersection of candidates
    # --- train once, search many
    train_once: bool = False
    shared_epochs: int | None = None  # epochs of the shared weight training (None: `epochs`)
    # --- Tune
    optuna_samples: int = 0  # > 0: OptunaSearch over lam/beta and the seed, per (targets, budget)
    lam_range: tuple[float, float] = (0.5, 20.0)
    beta_range: tuple[float, float] = (0.3, 3.0)
    asha: bool = False
    asha_grace: int = 2
    max_failures: int = 1  # automatic retries of a failed trial (from its checkpoint)
    max_concurrent: int | None = None
    gpus_per_trial: float | None = None  # None: 1 when the cluster has a GPU, else 0

    def __post_init__(self):
        for name in ("hardware", "budgets", "seeds", "lam_range", "beta_range"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.hardware and self.budget_metric != "flops":
            raise BadInputError("search spec: hardware is empty; name at least one profile (e.g. 'cpu')")
        if not self.budgets or any(not isinstance(b, (int, float)) or b <= 0 for b in self.budgets):
            raise BadInputError(f"search spec: budgets {self.budgets} must be positive fractions (e.g. 0.5)")
        if not self.seeds:
            raise BadInputError("search spec: seeds is empty; give at least one (e.g. 0)")
        if self.budget_margin is not None and not (isinstance(self.budget_margin, (int, float))
                                                   and 0 <= self.budget_margin <= 0.5):
            raise BadInputError(f"search spec: budget_margin {self.budget_margin!r}; give a fraction in [0, 0.5]")
        if self.budget_metric not in ("latency", "flops"):
            raise BadInputError(f"search spec: budget_metric {self.budget_metric!r}; use 'latency' or 'flops'")
        if self.epochs < 1 or self.batch_size < 1:
            raise BadInputError("search spec: epochs and batch_size must be >= 1")
        if self.optuna_samples < 0 or self.max_failures < 0 or self.asha_grace < 1:
            raise BadInputError("search spec: optuna_samples, max_failures must be >= 0 and asha_grace >= 1")
        if self.mode not in SEARCH_MODES:
            raise BadInputError(f"search spec: mode {self.mode!r}; use one of {SEARCH_MODES}")
        if self.optuna_samples and self.deterministic:
            raise BadInputError(f"search spec: optuna_samples samples lam/beta and the seed, which the deterministic "
                                f"{self.mode!r} search does not read (it runs once per targets and budget); drop "
                                "optuna_samples, or use mode 'supernet' or 'blockwise'")
        if self.train_once and self.mode != "supernet":
            raise BadInputError(f"search spec: train_once trains shared supernet weights, which the {self.mode!r} "
                                "search never uses; use mode 'supernet' with train_once, or drop train_once")
        if self.penalty not in ("additive", "multiplicative"):
            raise BadInputError(f"search spec: penalty {self.penalty!r}; use 'additive' or 'multiplicative'")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists: what the manifest stores

    @classmethod
    def from_dict(cls, data: dict) -> SearchSpec:
        return from_dict_strict(cls, data, "search spec")

    @property
    def deterministic(self) -> bool:
        """The mode gives the same ranks for the same inputs and seed, with nothing random to sample."""
        return self.mode in DETERMINISTIC_SEARCH_MODES

    def trial_seeds(self) -> tuple[int, ...]:
        """The seeds that get a trial. A deterministic search runs once: the seed only draws the
        held-out batches its error tables are measured on (their order and composition, which the
        batch statistics in BatchNorm see, and their augmentations on real data) and the batches that
        re-estimate the kept weights' BatchNorm, so more seeds would measure the same search on other
        batches, not search again. The first seed is the one: the same seeds give the same result, an
        older run's per-seed grid always holds that trial, and `--seeds S` draws other batches."""
        return self.seeds[:1] if self.deterministic else self.seeds

    def target_groups(self) -> list[tuple[str, ...]]:
        """The cost targets of each kind of trial."""
        if self.budget_metric == "flops":
            return [("flops",)]
        return [tuple(self.hardware)] if self.joint else [(h,) for h in self.hardware]

    def search_config_fields(self) -> dict:
        """SearchConfig fields common to every trial (seed, lam/beta and device are set per trial)."""
        fields = dict(mode=self.mode, epochs=self.epochs, penalty=self.penalty, lam=self.lam, beta=self.beta,
                      weight_lr=self.weight_lr, steps_per_epoch=self.steps_per_epoch)
        if self.mode == "supernet":  # the blockwise mode trains no weights: no warm-up
            fields["warmup_epochs"] = self.warmup_epochs
        if self.arch_lr is not None:
            fields["arch_lr"] = self.arch_lr
        return fields

    def data_fields(self) -> dict:
        """DataConfig fields; the search reads only the training split (2 demo validation samples)."""
        return dict(self.data, demo_val=2) if self.data.get("kind", "demo") == "demo" else dict(self.data)


# ---- preparation on the driver: everything checked before Ray is touched ----------------------------

@dataclass
class Prepared:
    context: object  # workers.search_trainable.SearchContext
    groups: list[tuple[str, ...]]
    tables_meta: dict = field(default_factory=dict)


def prepare(layout: RunLayout, spec: SearchSpec, profiles: dict, callbacks=()) -> Prepared:
    """Specs, rank space and every cost table of the run; BadInputError on any bad input.
    `profiles`: {name: HardwareProfile} of every target (`hw_profiles.profile.profiles_for`)."""
    import haloc
    from workers.search_trainable import SearchContext

    from ..cost_tables import cost_tables, search_rank_space

    model = haloc.models.ModelSpec.of(spec.model)  # an unknown model -> BadInputError naming the known ones
    _check_data(spec)
    specs = haloc.models.layer_specs(model)
    lut_profiles = [profiles[h] for h in spec.hardware] if spec.rank_mode == "latency" else []
    space = search_rank_space(layout, specs, lut_profiles, spec.rank_mode, spec.rank_step, spec.rank_rel_tol,
                              spec.max_candidates, spec.rank_merge)
    groups = spec.target_groups()
    tables, meta = {}, {}
    for group in groups:
        for budget in spec.budgets:
            group_profiles = [profiles[t] for t in group if t in profiles]  # ("flops",) has none
            ts = cost_tables(layout, model, specs, space, group_profiles, float(budget), spec.budget_metric,
                             spec.budget_margin)
            tables[(targets_key(group), float(budget))] = ts
            meta[f"{targets_key(group)}@{float(budget):g}"] = {
                t.name: {"budget": t.budget, "original": t.reference_cost, "min": t.min_cost, "unit": t.unit,
                         **t.meta} for t in ts}
    model_state = _load_weights(layout, spec.weights) if spec.weights else None
    ctx = SearchContext(model=model, specs=specs, rank_space=space, tables=tables,
                        base=spec.search_config_fields(), data=spec.data_fields(), batch_size=spec.batch_size,
                        heldout_fraction=spec.heldout_fraction, model_state=model_state, callbacks=tuple(callbacks))
    return Prepared(ctx, groups, meta)


def _check_data(spec: SearchSpec) -> None:
    from haloc.data import KINDS, DataConfig

    cfg = DataConfig.from_dict(spec.data)
    if cfg.kind not in KINDS:
        raise BadInputError(f"search spec: data kind {cfg.kind!r} unknown; choose one of {list(KINDS)}")
    if cfg.kind != "demo" and not cfg.root:
        raise BadInputError(f"search spec: data kind {cfg.kind!r} needs a root folder (data['root'])")


def _load_weights(layout: RunLayout, path: str) -> dict:
    if not layout.exists(path):
        raise BadInputError(f"model weights {layout.uri(path)} do not exist; train the model first or fix "
                            "the spec's weights path")
    return layout.original_state(path)


# ---- Tune --------------------------------------------------------------------------------------------

def _resources(spec: SearchSpec) -> dict:
    import ray

    gpus = spec.gpus_per_trial
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return {"cpu": 1, "gpu": gpus} if gpus else {"cpu": 1}


def grid_axes(spec: SearchSpec, groups) -> dict[str, list]:
    """The grid search's axes, {"targets": keys, "budget": budgets, "seed": seeds}, one trial per
    combination: what `_experiments` hands Tune, kept pure (no Ray) so that a test can count it."""
    return {"targets": [targets_key(g) for g in groups], "budget": [float(b) for b in spec.budgets],
            "seed": [int(s) for s in spec.trial_seeds()]}


def _experiments(spec: SearchSpec, groups) -> list[tuple[str, dict, int, object]]:
    """(name, param_space, num_samples, search_alg) of every Tune experiment of the run."""
    from ray import tune

    if spec.optuna_samples == 0:
        space = {axis: tune.grid_search(values) for axis, values in grid_axes(spec, groups).items()}
        return [(GRID_NAME, space, 1, None)]
    keys = [targets_key(g) for g in groups]
    budgets = [float(b) for b in spec.budgets]
    from ray.tune.search.optuna import OptunaSearch

    out = []
    for key in keys:
        for budget in budgets:
            # Optuna samples only; constants go in as one-choice categoricals.
            space = {"targets": tune.choice([key]), "budget": tune.choice([budget]),
                     "seed": tune.choice(list(spec.trial_seeds()))}
            if spec.penalty == "additive":
                space["lam"] = tune.loguniform(*spec.lam_range)
            else:
                space["beta"] = tune.uniform(*spec.beta_range)
            name = f"optuna-{key}-b{budget:g}"
            out.append((name, space, spec.optuna_samples, OptunaSearch(metric=OBJECTIVE, mode="max", seed=0)))
    return out


def _grid_size(space: dict) -> int:
    """Trials of one sample of a param space (the product of its grid_search axes)."""
    n = 1
    for v in space.values():
        if isinstance(v, dict) and "grid_search" in v:
            n *= len(v["grid_search"])
    return n


def _tuner(layout: RunLayout, spec: SearchSpec, name: str, param_space: dict, num_samples: int,
           search_alg, trainable):
    from ray import tune

    search_store = layout.search_store()
    fs = search_store.filesystem
    path = f"{search_store.root_path}/{name}"
    if tune.Tuner.can_restore(path, storage_filesystem=fs):
        log.info("restoring Tune experiment %s", search_store.uri_of(name))
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=fs), True
    scheduler = None
    if spec.asha:
        from ray.tune.schedulers import ASHAScheduler

        # alpha moves only after warm-up: judging earlier would judge the weights alone
        scheduler = ASHAScheduler(metric=OBJECTIVE, mode="max", max_t=spec.epochs, time_attr="training_iteration",
                                  grace_period=min(spec.epochs, max(spec.asha_grace, spec.warmup_epochs + 1)))
    tune_config = tune.TuneConfig(num_samples=num_samples, search_alg=search_alg, scheduler=scheduler,
                                  max_concurrent_trials=spec.max_concurrent)
    run_config = tune.RunConfig(name=name, storage_path=search_store.root_path, storage_filesystem=fs, verbose=0,
                                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=2))
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config), False


def trial_record(result, experiment: str) -> dict:
    """A plain dict of one Tune trial's outcome (what `select` and the benchmarks read)."""
    m = dict(result.metrics or {})
    cfg = dict(result.config or {})
    trial_id = m.get("trial_id") or str(result.path).rstrip("/").rsplit("/", 1)[-1]
    rec = {"trial_id": trial_id, "experiment": experiment, "targets": cfg.get("targets"),
           "budget": cfg.get("budget"), "seed": cfg.get("seed"), "lam": cfg.get("lam"), "beta": cfg.get("beta"),
           "status": "error" if result.error else ("done" if m.get("done") else "stopped"),
           "error": str(result.error).splitlines()[0][:300] if result.error else None,
           "epochs": m.get("training_iteration"), "trial_wall_seconds": m.get("time_total_s"),
           "inner_seconds": m.get("inner_seconds")}
    for key in ("selected_heldout_acc", "selected_heldout_ce", "ranks", "all_ranks", "predicted_cost",
                "argmax_cost", "budget_abs", "aimed_abs", "within_budget", "heldout_acc", "history", "searched_weights",
                OBJECTIVE):
        rec[key] = _plain(m.get(key))
    return rec


def _plain(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def run_search(layout: RunLayout, spec: SearchSpec, *, profiles: dict | None = None, address: str | None = None,
               callbacks=(), progress=None) -> list[dict]:
    """Run (or resume) the search of the run `layout` holds; returns one record per trial, also in
    trials.json. `profiles`: {name: HardwareProfile} of the targets (None: looked up by name).
    `callbacks`: TrialCallback instances run inside every trial (picklable); `progress(event)`: the
    driver's progress lines (the trials' own epochs arrive through workers.progress)."""
    progress = progress or (lambda _event: None)
    from ray import tune

    from workers.search_trainable import search_trainable

    from ..cluster import connect
    from ..ray_compat import keep_keys_out_of_runtime_envs

    if not isinstance(spec, SearchSpec):
        raise BadInputError(f"run_search needs a SearchSpec, got {type(spec).__name__}")
    prepared = prepare(layout, spec, profiles_for(spec.hardware, profiles, what="search spec"), callbacks)
    _warn_explicit_keys(layout.store)
    keep_keys_out_of_runtime_envs()
    connect(address)
    ctx = prepared.context
    if spec.train_once:
        ctx = _with_shared_weights(layout, spec, ctx)
    trainable = tune.with_resources(tune.with_parameters(search_trainable, context=ctx), _resources(spec))
    records = []
    experiments = _experiments(spec, prepared.groups)
    trials = sum(samples * _grid_size(space) for _, space, samples, _ in experiments)
    progress({"kind": "search_start", "trials": trials, "epochs": spec.epochs})
    for name, space, samples, alg in experiments:
        tuner, restored = _tuner(layout, spec, name, space, samples, alg, trainable)
        grid = tuner.fit()
        done = [dict(trial_record(r, name), restored=restored) for r in grid]
        for result, rec in zip(grid, done):
            rec["searched_state"] = _keep_searched(layout, result, rec)
        progress({"kind": "search_end", "trials": {r["trial_id"]: r["epochs"] for r in done if r["status"] == "done"}})
        for r in done:
            cost = {hw: c / r["budget_abs"][hw] for hw, c in (r.get("predicted_cost") or {}).items()
                    if (r.get("budget_abs") or {}).get(hw)}
            progress({"kind": "search_trial_done", "targets": r["targets"], "budget": r["budget"], "seed": r["seed"],
                      "status": r["status"], "error": r["error"], "heldout_acc": r.get("selected_heldout_acc"),
                      "cost_over_budget": cost})
        records += done
    records.sort(key=lambda r: (str(r["targets"]), r["budget"] or 0, r["seed"] or 0, r["trial_id"]))
    layout.write_trials({"run_id": layout.run_id, "spec": spec.to_dict(), "tables": prepared.tables_meta,
                         "trials": records})
    return records


SEARCHED_DIR = "search/searched"  # <run>/search/searched/<trial_id>.pt


def _keep_searched(layout: RunLayout, result, rec: dict) -> str | None:
    """Copy a finished trial's searched weights (workers.search_trainable.SEARCHED_FILE, in its final
    checkpoint) to `<run>/search/searched/<trial_id>.pt`, where the fine-tune starts from them; the run
    path, or None for a trial without them (not done, or searched before they were kept)."""
    from workers.search_trainable import SEARCHED_FILE

    rel = f"{SEARCHED_DIR}/{rec['trial_id']}.pt"
    if rec["status"] != "done":
        return None
    if layout.exists(rel):
        return rel
    checkpoint = getattr(result, "checkpoint", None)
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        path = Path(d) / SEARCHED_FILE
        if not path.exists():
            return None
        layout.store.write_bytes(layout.path(rel), path.read_bytes())
    return rel


def _warn_explicit_keys(store: Store) -> None:
    """Tune pickles its storage filesystem (keys included, if given explicitly) into the experiment."""
    if not store.is_remote:
        return
    reduced = store.filesystem.__reduce__()
    options = reduced[1][0] if len(reduced) > 1 and reduced[1] and isinstance(reduced[1][0], dict) else {}
    if options.get("secret_key"):
        log.warning("store %s: S3 keys were given explicitly; Ray Tune stores its filesystem, keys included, in "
                    "the experiment files (tuner.pkl, experiment_state). Give keys through the environment or "
                    "the AWS profile of every node instead.", store.uri)


def _with_shared_weights(layout: RunLayout, spec: SearchSpec, ctx):
    """Train the supernet once (a Ray task) unless its weights are already in the store."""
    import ray

    from workers.search_trainable import train_shared_supernet, with_context

    if not layout.store.exists(layout.shared_supernet):
        epochs = spec.shared_epochs or spec.epochs
        res = _resources(spec)
        task = ray.remote(num_cpus=res["cpu"], num_gpus=res.get("gpu", 0))(train_shared_supernet)
        state, info = ray.get(task.remote(ctx, epochs, int(spec.seeds[0])))
        layout.write_shared_supernet(state, info)
    return with_context(ctx, shared_supernet=layout.read_shared_supernet())


def load_trials(layout: RunLayout) -> list[dict]:
    return layout.read_trials()
