"""The HALOC rank search: the supernet, its schedule, the read-out and the checkpoint, with the solver
that moves alpha each epoch as a strategy of its own (cfg.arch_solver):

    search = SupernetSearch(model, rank_space, [cost_table, ...], SearchConfig(...))
    for epoch in range(cfg.epochs): search.run_epoch(train_loader, heldout_loader)   # checkpointable
    result = search.result()

    haloc/search_gradient.py  "gradient": weight steps and alpha steps alternating (the paper's relaxation)
    haloc/search_exact.py     "exact": blockwise error tables and the least-error allocation under the budgets

Gradient solver: weight steps minimise CE + w_fm(t) * feature-map MSE against the frozen original (interference
mitigation; w_fm decays linearly to 0). Alpha steps minimise the hardware-aware loss on held-out
batches of the training data. tau anneals exponentially from tau_start to tau_end over all steps.
The result is the per-layer argmax, projected onto the budget(s) when the argmax misses them.
"""
from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .decomposition import LayerSpec, decomposable_layers, to_ranks_json
from .errors import BadInputError
from .hardware_loss import PENALTIES, CostTable, budget_prior, expected_cost
from .rank_space import RankSpace
from .supernet import Supernet

PENALTY_COSTS = ("sample", "expected")
ALPHA_INITS = ("uniform", "budget", "fraction")
PROJECTIONS = ("greedy", "quantile")
WEIGHT_MIXES = ("gumbel", "sample")
ARCH_OBJECTIVES = ("ce", "blockwise")
ARCH_MIXES = ("gumbel", "softmax")
ARCH_SOLVERS = ("gradient", "exact")
BLOCK_ERRORS = ("output", "branch")


@dataclass(frozen=True)
class SearchConfig:
    """The knobs of one rank search (`haloc.search`): schedule, penalty, projection, read-out and the
    weight steps; `haloc.search_config(mode)` gives each search mode's settings."""
    epochs: int = 10
    warmup_epochs: int = 1  # weight steps only, before alpha starts to move
    train_weights: bool = True  # False: "train once, search many" - only alpha moves
    weight_lr: float = 0.01
    weight_momentum: float = 0.9
    weight_decay: float = 5e-4
    arch_lr: float = 0.05
    tau_start: float = 5.0
    tau_end: float = 0.1
    penalty: str = "additive"  # or "multiplicative"
    lam: float = 2.0  # additive weight
    below_budget: float = 1.0  # weight of the penalty's under-budget side (0: the paper's one-sided hinge)
    beta: float = 0.6  # multiplicative exponent
    fm_weight: float = 1.0  # feature-map regulariser at the start; decays linearly to 0
    kd_weight: float = 0.0  # weight steps: (1 - k) CE + k T^2 KL(original || supernet), as haloc.finetune's KD
    kd_temperature: float = 4.0
    arch_kd_weight: float = 0.0  # alpha steps: the same KD mix against the original on the held-out batch
    #                              (0: plain cross-entropy on the labels, the paper's data term)
    arch_mix: str = "gumbel"  # alpha steps' relaxation: "gumbel" (the paper's) or "softmax" (softmax(alpha / tau),
    #                           no noise: the same gradient step after step, for short searches)
    arch_objective: str = "ce"  # alpha steps' data term: "ce" (the network's loss, the paper's) or "blockwise"
    #   (each block of the supernet fed the original's input to that block, its relative output error
    #   against the original's; informative where the whole truncated network is near chance)
    arch_solver: str = "gradient"  # "gradient": alpha steps under the cost penalty (the paper's relaxation);
    #   "exact" (blockwise objective, no weight training): each epoch measures every layer's blockwise
    #   error at every candidate on `table_batches` held-out batches, and the result is the allocation
    #   with the least summed error under the budgets, solved exactly (`haloc.allocation`)
    table_batches: int = 2  # arch_solver "exact": held-out batches the error tables take per epoch
    block_error: str = "output"  # the blockwise objective's scale per block: "output" (the block's output
    #   power) or "branch" (the power of what the block's searched layers add to it: its output less its
    #   output with them silenced, e.g. a residual block's shortcut alone), so that a residual block whose
    #   branch is small beside its shortcut is not cheap to cut
    weight_mix: str = "gumbel"  # weight steps: "gumbel" (the relaxed mixture alpha steps use) or "sample"
    #                            (one architecture drawn from softmax(alpha) per step, trained as itself)
    steps_per_epoch: int | None = None  # cap on batches per epoch (None: the whole train loader)
    fill_budget: bool = True  # after the argmax, raise ranks while the budget(s) allow it
    fill_tolerance: float = 0.05  # ... only when the argmax is more than this fraction under budget
    penalty_cost: str = "expected"  # E[cost] in the penalty: "sample" (this step's Gumbel mixture) or
    #                               "expected" (softmax(alpha), the distribution the result is read from)
    projection: str = "greedy"  # over budget: "greedy" (least log-probability lost per cost saved) or
    #                             "quantile" (every layer lowered to one shared quantile of its own alpha)
    arch_every: int = 2  # an alpha step after every k-th weight step (search cost: fewer alpha steps)
    alpha_init: str = "budget"  # or "uniform": "budget" is the most uncertain alpha whose E[cost] meets the budget;
    #                             "fraction": peaked at one fraction of max rank in every layer, fitted to the budget
    heldout_eval: bool = True  # each epoch: held-out accuracy of the current argmax architecture
    readout_samples: int = 16  # > 0: the result is the best on the held-out split of the projected argmax
    #                           and this many architectures sampled from softmax(alpha), each projected
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if self.penalty not in PENALTIES:
            raise BadInputError(f"penalty {self.penalty!r} unknown; use one of {PENALTIES}")
        if self.below_budget < 0:
            raise BadInputError(f"below_budget={self.below_budget} must be >= 0 (0: penalise only above the budget)")
        if self.epochs < 1 or self.tau_start <= 0 or self.tau_end <= 0:
            raise BadInputError("search needs epochs >= 1 and positive tau_start, tau_end")
        if self.penalty_cost not in PENALTY_COSTS:
            raise BadInputError(f"penalty_cost {self.penalty_cost!r} unknown; use one of {PENALTY_COSTS}")
        if self.projection not in PROJECTIONS:
            raise BadInputError(f"projection {self.projection!r} unknown; use one of {PROJECTIONS}")
        if self.alpha_init not in ALPHA_INITS:
            raise BadInputError(f"alpha_init {self.alpha_init!r} unknown; use one of {ALPHA_INITS}")
        if self.readout_samples < 0:
            raise BadInputError(f"readout_samples={self.readout_samples} must be >= 0 (0: the argmax alone)")
        if not 0 <= self.arch_kd_weight <= 1:
            raise BadInputError(f"arch_kd_weight={self.arch_kd_weight} must be in [0, 1] (0: plain cross-entropy)")
        if not 0 <= self.kd_weight <= 1 or self.kd_temperature <= 0:
            raise BadInputError(f"kd_weight={self.kd_weight} must be in [0, 1] and kd_temperature="
                                f"{self.kd_temperature} > 0 (kd_weight 0: plain cross-entropy)")
        if self.weight_mix not in WEIGHT_MIXES:
            raise BadInputError(f"weight_mix {self.weight_mix!r} unknown; use one of {WEIGHT_MIXES}")
        if self.arch_mix not in ARCH_MIXES:
            raise BadInputError(f"arch_mix {self.arch_mix!r} unknown; use one of {ARCH_MIXES}")
        if self.arch_objective not in ARCH_OBJECTIVES:
            raise BadInputError(f"arch_objective {self.arch_objective!r} unknown; use one of {ARCH_OBJECTIVES}")
        if self.arch_solver not in ARCH_SOLVERS:
            raise BadInputError(f"arch_solver {self.arch_solver!r} unknown; use one of {ARCH_SOLVERS}")
        if self.arch_solver == "exact" and (self.arch_objective != "blockwise" or self.train_weights):
            raise BadInputError("arch_solver 'exact' needs arch_objective='blockwise' and train_weights=False "
                                "(its per-layer error tables are of the untrained supernet); use the "
                                "'blockwise' search mode, or arch_solver='gradient'")
        if self.block_error not in BLOCK_ERRORS:
            raise BadInputError(f"block_error {self.block_error!r} unknown; use one of {BLOCK_ERRORS}")
        if self.table_batches < 1:
            raise BadInputError(f"table_batches={self.table_batches} must be >= 1")
        if self.arch_every < 1:
            raise BadInputError(f"arch_every={self.arch_every} must be >= 1 (1: an alpha step per weight step)")


@dataclass
class SearchResult:
    """What a search selected: the ranks (the ranks JSON), their predicted cost per table, whether they
    fit each budget, and the search's history."""
    ranks: dict[str, int]  # the ranks JSON: only layers that are decomposed
    all_ranks: dict[str, int]  # every searched layer, max_rank = not decomposed
    predicted_cost: dict[str, float]  # per cost table, of `all_ranks`
    argmax_cost: dict[str, float]  # per cost table, of the plain argmax before projection
    budget: dict[str, float]  # per cost table, the budget that must hold (CostTable.must_meet)
    within_budget: dict[str, bool]  # predicted_cost <= budget, the LUT's view
    probabilities: dict[str, list[float]]
    history: list[dict] = field(default_factory=list)
    readout: list[dict] = field(default_factory=list)  # candidates the read-out compared: ranks, source, held-out top-1
    # per cost table, the cost the search aimed at (a margin below)
    aimed: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def block_members(model: nn.Module, candidates: dict[str, tuple[int, ...]]) -> list[tuple[str, list[str]]]:
    """[(block, its searched layers)], blocks as `feature_modules`."""
    return [(block, [m for m in candidates if m == block or m.startswith(block + ".")])
            for block in feature_modules(model, list(candidates))]


def feature_modules(model: nn.Module, layer_names: list[str]) -> list[str]:
    """Blocks to match: each searched layer's parent, unless the parent is a plain Sequential
    (then the layer itself); modules inside another chosen module are dropped."""
    modules = dict(model.named_modules())
    chosen = []
    for name in layer_names:
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        pick = name if parent == "" or isinstance(modules[parent], nn.Sequential) else parent
        if pick not in chosen:
            chosen.append(pick)
    return [c for c in chosen if not any(c != o and c.startswith(o + ".") for o in chosen)]


class SupernetSearch:
    """One search: the supernet, its two optimizers and the schedule; `state_dict` makes it resumable."""

    def __init__(self, model: nn.Module, rank_space: RankSpace, cost_tables: list[CostTable], cfg: SearchConfig,
                 specs: dict[str, LayerSpec] | None = None, steps_per_epoch: int | None = None):
        if not cost_tables:
            raise BadInputError("a search needs at least one cost table (a hardware target or FLOPs)")
        for table in cost_tables:
            table.check_against(rank_space.candidates)
        self.cfg = cfg
        self.rank_space = rank_space
        self.tables = cost_tables
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.specs = specs or decomposable_layers(model)
        self.original = copy.deepcopy(model).to(self.device).eval()
        for p in self.original.parameters():
            p.requires_grad_(False)
        self.supernet = Supernet(model, rank_space, self.specs).to(self.device)
        self.weight_opt = torch.optim.SGD(self.supernet.weight_parameters(), lr=cfg.weight_lr,
                                          momentum=cfg.weight_momentum, weight_decay=cfg.weight_decay)
        self.reset_alpha()
        self.arch_opt = torch.optim.Adam(self.supernet.arch_parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999))
        self.steps_per_epoch = steps_per_epoch or cfg.steps_per_epoch
        self.epoch = 0
        self.step = 0
        self.history: list[dict] = []
        self._heldout: Iterable | None = None  # the latest epoch's held-out loader (the read-out's data)
        self._blocks: list | None = None  # (name, original's block, supernet's block, its searched layers)
        # how an epoch moves alpha: one strategy per arch_solver, each with the state it keeps
        from .search_exact import ExactSolver
        from .search_gradient import GradientSolver

        self.solver = ExactSolver(self) if cfg.arch_solver == "exact" else GradientSolver(self)
        self.generator = torch.Generator().manual_seed(cfg.seed)

    @torch.no_grad()
    def reset_alpha(self) -> None:
        """alpha at its start: uniform, or `budget_prior` of the cost tables (cfg.alpha_init)."""
        layers = self.supernet.layers()
        prior = (budget_prior(self.tables, list(layers)) if self.cfg.alpha_init == "budget" else
                 fraction_prior(self.specs, self.rank_space.candidates, self.tables)
                 if self.cfg.alpha_init == "fraction" else None)
        for name, layer in layers.items():
            layer.alpha.copy_(prior[name] if prior else torch.zeros_like(layer.alpha))

    # --- schedule ------------------------------------------------------------------------------
    def total_steps(self) -> int:
        return max(1, self.cfg.epochs * (self.steps_per_epoch or 1))

    def tau(self) -> float:
        frac = min(1.0, self.step / self.total_steps())
        return self.cfg.tau_start * (self.cfg.tau_end / self.cfg.tau_start) ** frac

    def fm_weight(self) -> float:
        return self.cfg.fm_weight * max(0.0, 1.0 - self.step / self.total_steps())

    # --- one epoch -----------------------------------------------------------------------------
    def seed_loaders(self, train_loader, heldout_loader, epoch: int | None = None) -> None:
        """Seed the next epoch's batch orders and RNG from (seed, epoch) alone, as `haloc.finetune`
        does: each epoch draws a new order, and a resumed search repeats the uninterrupted one."""
        from .data import seed_epoch

        epoch = self.epoch if epoch is None else epoch
        for loader, seed in ((heldout_loader, self.cfg.seed + 7_777), (train_loader, self.cfg.seed)):
            if hasattr(loader, "generator") or hasattr(getattr(loader, "sampler", None), "set_epoch"):
                seed_epoch(loader, seed, epoch)  # the train loader last: it sets the global RNG too

    def run_epoch(self, train_loader: Iterable, heldout_loader: Iterable) -> dict:
        """One epoch of the solver (haloc.search_gradient or haloc.search_exact); returns its metrics."""
        if self.steps_per_epoch is None:
            self.steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
        self._heldout = heldout_loader
        return self.solver.run_epoch(train_loader, heldout_loader)

    def _end_epoch(self, metrics: dict, seconds: dict, heldout_loader: Iterable, epoch_start: float) -> dict:
        """The epoch's held-out accuracy of its argmax (cfg.heldout_eval), times, expected costs and
        budgets into `metrics`, appended to the history."""
        if self.cfg.heldout_eval:
            t0 = time.perf_counter()
            metrics["heldout_acc_argmax"] = self.argmax_accuracy(heldout_loader)
            seconds["eval"] = time.perf_counter() - t0
        seconds["total"] = time.perf_counter() - epoch_start
        metrics["seconds"] = seconds
        metrics.update({f"expected_{t.name}": c for t, c in zip(self.tables, self.expected_costs())})
        metrics.update({f"budget_{t.name}": t.must_meet for t in self.tables})
        self.history.append(metrics)
        return metrics

    def blockwise_error(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over blocks (`feature_modules`) of the relative MSE between each supernet block's output
        and the original's, every block fed the original's own input to it: each block's error is its
        own layers' truncation alone, not the sum of everything upstream."""
        seen = self._block_io(x)
        terms = []
        for n, _t, student in self._block_list():
            args, kwargs, target, scale = seen[n]
            out = student(*args, **kwargs)  # the original's input to this block (a block called twice: its last call)
            terms.append(F.mse_loss(out, target) / scale)
        return torch.stack(terms).mean()

    def _block_list(self) -> list:
        """[(name, original's block, supernet's block, its searched layers)]: found once, not per step."""
        if self._blocks is None:
            t_mods, s_mods = dict(self.original.named_modules()), dict(self.supernet.net.named_modules())
            self._blocks = [(n, t_mods[n], s_mods[n], members)
                            for n, members in block_members(self.original, self.rank_space.candidates)]
        return [b[:3] for b in self._blocks]

    @torch.no_grad()
    def _block_io(self, x: torch.Tensor) -> dict[str, tuple]:
        """{block: (args, kwargs, output, scale)} of every block in one forward of the original on `x`;
        scale: the mean square the block's error is divided by (cfg.block_error)."""
        blocks = self._block_list()
        seen: dict[str, tuple] = {}

        def keep(name):
            def hook(_m, args, kwargs, out):
                seen[name] = (args, kwargs, out)
            return hook

        hooks = [t.register_forward_hook(keep(n), with_kwargs=True) for n, t, _s in blocks]
        try:
            self.original(x)
        finally:
            for h in hooks:
                h.remove()
        for n, _t, _s in blocks:
            if n not in seen:
                raise BadInputError(f"block {n!r} did not run in the model's forward, so the blockwise search "
                                    "cannot measure it; use the supernet search mode for this model")
            if not isinstance(seen[n][2], torch.Tensor):
                raise BadInputError(f"block {n!r} returns {type(seen[n][2]).__name__}, not a tensor, so the "
                                    "blockwise search cannot compare it; use the supernet search mode for this model")
        out = {}
        for n, original, _s, members in self._blocks:
            args, kwargs, target = seen[n]
            power = target
            if self.cfg.block_error == "branch":  # what the searched layers add: the block less its output without them
                modules = dict(original.named_modules())
                silence = [modules[m[len(n) + 1:] if m != n else ""].register_forward_hook(
                    lambda _m, _a, o: torch.zeros_like(o)) for m in members]
                try:
                    power = target - original(*args, **kwargs)
                finally:
                    for h in silence:
                        h.remove()
            out[n] = (args, kwargs, target, power.pow(2).mean().clamp_min(1e-8))
        return out

    # --- read-outs -----------------------------------------------------------------------------
    @torch.no_grad()
    def expected_costs(self) -> list[float]:
        """E[cost] under softmax(alpha) (no Gumbel noise), per table."""
        weights = {n: F.softmax(layer.alpha, 0) for n, layer in self.supernet.layers().items()}
        return [float(expected_cost(weights, t)) for t in self.tables]

    @torch.no_grad()
    def argmax_accuracy(self, loader: Iterable, max_batches: int | None = None) -> float:
        """Top-1 of the current argmax architecture (supernet weights) on `loader`."""
        return self.architecture_accuracy(self.supernet.argmax_ranks(), loader, max_batches)[0]

    @torch.no_grad()
    def architecture_accuracy(self, ranks: dict[str, int], loader: Iterable,
                              max_batches: int | None = None) -> tuple[float, float]:
        """(top-1, mean CE) of one discrete architecture with the supernet's weights on `loader`.

        BatchNorm uses each batch's own statistics: the running ones belong to the Gumbel mixture,
        and with them a discrete architecture scores near chance whatever its ranks.
        """
        correct = seen = 0
        ce = 0.0
        with _discrete(self.supernet, ranks):
            for i, (x, y) in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                x, y = x.to(self.device), y.to(self.device)
                logits = self.supernet(x)  # (N, classes)
                correct += int((logits.argmax(1) == y).sum())
                ce += float(F.cross_entropy(logits, y, reduction="sum"))
                seen += len(y)
        return correct / max(seen, 1), ce / max(seen, 1)

    @torch.no_grad()
    def architecture_blockwise_error(self, ranks: dict[str, int], loader: Iterable,
                                     max_batches: int | None = None) -> float:
        """The blockwise objective (`blockwise_error`) of one discrete architecture on `loader`, batch
        statistics in BatchNorm as in `architecture_accuracy`."""
        with _discrete(self.supernet, ranks):
            errors = [float(self.blockwise_error(x.to(self.device))) for i, (x, _y) in enumerate(loader)
                      if max_batches is None or i < max_batches]
        return sum(errors) / max(len(errors), 1)

    @torch.no_grad()
    def alpha_entropy(self) -> float:
        """Mean entropy of softmax(alpha) over layers, in nats (log M at start, 0 when decided)."""
        ents = [-(p * p.clamp_min(1e-12).log()).sum() for p in
                (F.softmax(layer.alpha, 0) for layer in self.supernet.layers().values())]
        return float(torch.stack(ents).mean())

    def result(self, heldout_loader: Iterable | None = None) -> SearchResult:
        """The selected architecture: the argmax projected onto the budget(s); with
        cfg.readout_samples > 0, the best on `heldout_loader` (default: the latest epoch's held-out
        loader) of that and as many architectures sampled from softmax(alpha), each projected."""
        probs = self.supernet.probabilities()
        cands = self.rank_space.candidates
        argmax = self.supernet.argmax_ranks()
        exact_fits = self.solver.solution is not None and argmax == self.solver.solution and all(
            t.cost_of(argmax, cands) <= t.budget * (1 + 1e-9) for t in self.tables)
        chosen = argmax if exact_fits else self._project(argmax, probs)  # the exact answer needs no fill
        readout = []
        loader = heldout_loader if heldout_loader is not None else self._heldout
        if self.cfg.readout_samples and loader is not None:
            options = {_key(chosen): ("argmax", chosen)}
            g = torch.Generator().manual_seed(self.cfg.seed * 7_919 + self.epoch)
            for _ in range(self.cfg.readout_samples):
                sample = {n: cands[n][int(torch.multinomial(torch.tensor(p), 1, generator=g))]
                          for n, p in probs.items()}
                projected = self._project(sample, probs)
                options.setdefault(_key(projected), ("sample", projected))
            for source, ranks in options.values():
                acc, ce = self.architecture_accuracy(ranks, loader)
                entry = {"source": source, "ranks": ranks, "heldout_top1": acc, "heldout_ce": ce}
                if self.cfg.arch_objective == "blockwise":
                    entry["heldout_blockwise"] = self.architecture_blockwise_error(ranks, loader)
                readout.append(entry)
            # judged by the search's own objective: near the floor of a tight budget every untrained
            # candidate's top-1 is near chance, while the blockwise error still tells them apart
            best = (min(readout, key=lambda r: r["heldout_blockwise"]) if self.cfg.arch_objective == "blockwise"
                    else max(readout, key=lambda r: (r["heldout_top1"], -r["heldout_ce"])))
            chosen = best["ranks"]
        predicted = {t.name: t.cost_of(chosen, cands) for t in self.tables}
        return SearchResult(
            ranks=to_ranks_json(chosen, self.specs), all_ranks=chosen, predicted_cost=predicted,
            argmax_cost={t.name: t.cost_of(argmax, cands) for t in self.tables},
            budget={t.name: t.must_meet for t in self.tables},
            within_budget={t.name: predicted[t.name] <= t.must_meet * (1 + 1e-9) for t in self.tables},
            probabilities=probs, history=list(self.history), readout=readout,
            aimed={t.name: t.budget for t in self.tables})

    def _project(self, choice: dict[str, int], probs: dict[str, list[float]]) -> dict[str, int]:
        return project_to_budget(choice, probs, self.rank_space.candidates, self.tables,
                                 fill_tolerance=self.cfg.fill_tolerance if self.cfg.fill_budget else None,
                                 method=self.cfg.projection)

    def searched_model(self, ranks: dict[str, int] | None = None) -> nn.Module:
        """An architecture (default: `result().all_ranks`) with the supernet's trained weights, a
        fine-tune's starting point instead of a fresh HOSVD. Its BatchNorm statistics are the
        supernet's: `haloc.reestimate_batchnorm` before evaluating it."""
        return self.supernet.extract(ranks if ranks is not None else self.result().all_ranks)

    # --- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """A snapshot (deep copy: training on afterwards does not change it)."""
        return copy.deepcopy({"supernet": self.supernet.state_dict(), "weight_opt": self.weight_opt.state_dict(),
                "arch_opt": self.arch_opt.state_dict(), "epoch": self.epoch, "step": self.step,
                "steps_per_epoch": self.steps_per_epoch, "history": self.history,
                "rng": torch.get_rng_state(), "config": asdict(self.cfg),
                "error_tables": self.solver.state()})

    def load_state_dict(self, state: dict) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.weight_opt.load_state_dict(state["weight_opt"])
        self.arch_opt.load_state_dict(state["arch_opt"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.steps_per_epoch = state["steps_per_epoch"]
        self.history = list(state["history"])
        torch.set_rng_state(state["rng"])
        self.solver.load(state.get("error_tables") or {})

    def load_weights_only(self, supernet_state: dict) -> None:
        """Start from trained supernet weights (train once, search many): alpha starts afresh
        (uniform, or at this search's budget prior)."""
        missing, unexpected = self.supernet.load_state_dict(supernet_state, strict=False)
        if unexpected or [m for m in missing if not m.endswith("alpha")]:
            raise BadInputError("supernet weights do not fit this rank space: "
                                f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        self.reset_alpha()


@contextmanager
def _discrete(supernet: Supernet, ranks: dict[str, int]):
    """The supernet as one discrete architecture (`Supernet.fix`) with train-mode BatchNorm at momentum 0
    (each batch's own statistics, the running ones left unchanged); mix modes restored on exit."""
    bns = [m for m in supernet.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training, momenta = supernet.training, [bn.momentum for bn in bns]
    modes = {n: (layer.mode, layer.tau, layer.fixed_index) for n, layer in supernet.layers().items()}
    try:
        for bn in bns:
            bn.momentum = 0.0
        supernet.train()
        supernet.fix(ranks)
        yield supernet
    finally:
        for n, layer in supernet.layers().items():
            layer.mode, layer.tau, layer.fixed_index = modes[n]
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        supernet.train(was_training)


def fraction_prior(specs: dict[str, LayerSpec], candidates: dict[str, tuple[int, ...]], tables: list[CostTable],
                   sharpness: float = 1.0) -> dict[str, torch.Tensor]:
    """Architecture logits peaked at the uniform-fraction allocation that fits the budgets
    (`haloc.baselines.uniform_ranks`): alpha_i = -sharpness x |i - i*|, i* that allocation's
    candidate. A search started here moves a layer off the simple choice only where its data term
    says so."""
    from .baselines import uniform_ranks

    chosen = uniform_ranks(specs, candidates, tables).ranks
    out = {}
    for name, cands in candidates.items():
        peak = cands.index(chosen[name])
        out[name] = -sharpness * (torch.arange(len(cands), dtype=torch.float32) - peak).abs()
    return out


def _key(ranks: dict[str, int]) -> tuple:
    return tuple(sorted(ranks.items()))


def _cycle(loader: Iterable):
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise BadInputError("the held-out loader is empty; give the search a non-empty held-out split")


def quantile_choice(choice: dict[str, int], probs: dict[str, list[float]], candidates: dict[str, tuple[int, ...]],
                    q: float) -> dict[str, int]:
    """Every layer at min(its rank in `choice`, the q-quantile of its own alpha distribution)."""
    out = {}
    for name, rank in choice.items():
        cum, idx = 0.0, len(probs[name]) - 1
        for i, p in enumerate(probs[name]):
            cum += p
            if cum >= q - 1e-12:
                idx = i
                break
        out[name] = min(rank, candidates[name][idx])
    return out


def project_to_budget(choice: dict[str, int], probs: dict[str, list[float]], candidates: dict[str, tuple[int, ...]],
                      tables: list[CostTable], fill_tolerance: float | None = 0.05,
                      method: str = "greedy") -> dict[str, int]:
    """Make a discrete architecture meet every budget, changing as little alpha-preference as possible.

    Over budget, `method` "greedy": repeatedly lower the layer whose next-smaller candidate loses the
    least log-probability per unit of normalised cost saved on the violated tables. Once a layer is
    off its peak, steps between its unlikely candidates look free, so this tends to push a few layers
    to their smallest rank. "quantile": lower every layer to one shared quantile q of its own alpha
    distribution (the largest q that fits), so each gives way in proportion to its own uncertainty;
    then the greedy steps finish. Under budget by more than `fill_tolerance` (None: never): raise
    ranks the greedy way while every budget still holds.
    """
    if method not in PROJECTIONS:
        raise BadInputError(f"projection {method!r} unknown; use one of {PROJECTIONS}")
    choice = dict(choice)
    logp = {n: [math.log(max(p, 1e-12)) for p in ps] for n, ps in probs.items()}

    def costs():
        return [t.cost_of(choice, candidates) for t in tables]

    if method == "quantile" and any(c > t.budget for c, t in zip(costs(), tables)):
        levels = sorted({min(1.0, sum(ps[:i + 1])) for ps in probs.values() for i in range(len(ps))}, reverse=True)
        for q in levels:
            trial = quantile_choice(choice, probs, candidates, q)
            if all(t.cost_of(trial, candidates) <= t.budget for t in tables):
                choice = trial
                break
        else:
            choice = quantile_choice(choice, probs, candidates, 0.0)

    def move_gain(name: str, new_idx: int, weights: list[float]) -> tuple[float, float]:
        """(normalised cost saved, log-probability lost) of moving `name` to candidate `new_idx`."""
        old_idx = candidates[name].index(choice[name])
        delta = sum(w * (t.layer_costs[name][old_idx] - t.layer_costs[name][new_idx]) / t.budget
                    for w, t in zip(weights, tables))
        return delta, logp[name][old_idx] - logp[name][new_idx]

    while True:
        over = [c > t.budget for c, t in zip(costs(), tables)]
        if not any(over):
            break
        best = None
        weights = [1.0 if o else 0.0 for o in over]
        for name in choice:
            idx = candidates[name].index(choice[name])
            # the nearest smaller candidate that saves cost on a violated table: with several tables a
            # step can be free on one (a plateau of its staircase) and must not stop the projection
            for lower in range(idx - 1, -1, -1):
                saved, lost = move_gain(name, lower, weights)
                if saved > 0:
                    break
            else:
                continue
            score = lost / saved
            if best is None or score < best[0]:
                best = (score, name, lower)
        if best is None:
            break  # nothing left to lower: the caller reports within_budget = False
        choice[best[1]] = candidates[best[1]][best[2]]

    if fill_tolerance is None:
        return choice
    if any(c > t.budget * (1 - fill_tolerance) for c, t in zip(costs(), tables)):
        return choice
    while True:
        best = None
        current = costs()
        for name in choice:
            idx = candidates[name].index(choice[name])
            if idx + 1 >= len(candidates[name]):
                continue
            new = [c - t.layer_costs[name][idx] + t.layer_costs[name][idx + 1] for c, t in zip(current, tables)]
            if any(nc > t.budget for nc, t in zip(new, tables)):
                continue
            added, lost = move_gain(name, idx + 1, [1.0] * len(tables))
            added = max(-added, 1e-12)
            score = lost / added
            if best is None or score < best[0]:
                best = (score, name, idx + 1)
        if best is None:
            break
        choice[best[1]] = candidates[best[1]][best[2]]
        if any(c > t.budget * (1 - fill_tolerance) for c, t in zip(costs(), tables)):
            break
    return choice


# Named search modes: SearchConfig fields each sets (the user's own fields win over them).
# "supernet": the paper's search, weight steps and alpha steps on the network's loss.
# "blockwise": only alpha moves, on the supernet as the HOSVD of the original left it, driven by each
#   block's output error against the original's (each block fed the original's input) under the
#   cost penalty; costs under one fine-tune epoch on ResNet-20 (BENCHMARKS.md section 9).
# "blockwise-exact": the same objective measured as tables (every block at every combination of its
#   layers' candidates) and minimised exactly under the budgets; deterministic, no alpha steps. On
#   the digits it beat "blockwise" at the looser budgets and lost at the tightest (BENCHMARKS.md).
SEARCH_MODES: dict[str, dict] = {
    "supernet": {},
    "blockwise": dict(train_weights=False, warmup_epochs=0, arch_objective="blockwise", arch_lr=0.3,
                      readout_samples=0, fill_tolerance=0.0),
    # the branch error: over 7 digits splits x 2 seeds it fine-tuned as well as or better than the output
    # error and the gradient search in every cell measured (BENCHMARKS.md section 9)
    "blockwise-exact": dict(train_weights=False, warmup_epochs=0, arch_objective="blockwise", arch_solver="exact",
                            block_error="branch", readout_samples=0, fill_tolerance=0.0),
}


def search_config(mode: str = "supernet", **fields) -> SearchConfig:
    """A SearchConfig for a named mode (`SEARCH_MODES`), `fields` overriding the mode's own."""
    if mode not in SEARCH_MODES:
        raise BadInputError(f"search mode {mode!r} unknown; use one of {tuple(SEARCH_MODES)}")
    return SearchConfig(**{**SEARCH_MODES[mode], **fields})


def search(model: nn.Module, train_loader, heldout_loader, rank_space: RankSpace, cost_tables: list[CostTable],
           cfg: SearchConfig = SearchConfig(), on_epoch_end: Callable[[SupernetSearch, dict], None] | None = None
           ) -> SearchResult:
    """Run a whole search in this process; `on_epoch_end(search, metrics)` can checkpoint or report.

    Each epoch first re-seeds both loaders from (cfg.seed, epoch) (`SupernetSearch.seed_loaders`), so
    `haloc.make_loader` loaders draw a new batch order every epoch, as in the Ray trials.
    """
    s = SupernetSearch(model, rank_space, cost_tables, cfg)
    for _ in range(cfg.epochs):
        s.seed_loaders(train_loader, heldout_loader)
        metrics = s.run_epoch(train_loader, heldout_loader)
        if on_epoch_end:
            on_epoch_end(s, metrics)
    return s.result()
