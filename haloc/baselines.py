"""Simple rank choices to measure the search against, each fitted to the same cost tables' budgets.

    choice = uniform_ranks(specs, space.candidates, [table])        # fraction of max rank, equal for all
    choice = energy_ranks(model, specs, space.candidates, [table])  # equal retained spectral energy
    choice = alds_ranks(model, specs, space.candidates, [table])    # min-max relative approximation error
    choice = random_ranks(specs, space.candidates, [table], seed=0)
    haloc.decompose(model, choice.compressed)

Every method has one knob (a fraction, an energy, an error) that orders its architectures from
cheap to generous. It takes the most generous knob value whose architecture meets every budget,
then fills what is left of the budget by raising, one candidate at a time, the layer it considers
most starved (lowest rank fraction, lowest energy, largest error; random: any) while every budget
still holds. So each ends as close under the budget as its candidates allow. A method that meets
no budget even at its cheapest setting returns that setting with `within_budget=False`: on latency
tables decomposed layers can be slower than the originals, and uniform ranks may not reach a budget.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from .decomposition import LayerSpec
from .errors import BadInputError
from .hardware_loss import CostTable
from .layers import tucker2_factors

METHODS = ("uniform", "energy", "alds", "random")


@dataclass
class RankSelection:
    """Ranks chosen by a simple rule (uniform, energy, ALDS, random) under the same cost tables as the
    search, with their costs: the baselines the search is measured against."""
    method: str
    ranks: dict[str, int]  # every searched layer; max_rank = left whole
    costs: dict[str, float]  # per cost table (its unit)
    budgets: dict[str, float]
    within_budget: bool
    setting: float | None = None  # the knob value: fraction, energy or error (None: random)

    def compressed(self, specs: dict[str, LayerSpec]) -> dict[str, int]:
        """The ranks JSON content: layers at max_rank stay whole and are left out."""
        return {n: r for n, r in self.ranks.items() if r < specs[n].max_rank}

    @property
    def fractions(self) -> dict[str, float]:
        """Achieved cost / budget per table."""
        return {k: self.costs[k] / self.budgets[k] for k in self.costs}


# ---- spectra: what energy and ALDS rank by -----------------------------------------------------------

@torch.no_grad()
def relative_errors(model: nn.Module, specs: dict[str, LayerSpec],
                    candidates: dict[str, tuple[int, ...]]) -> dict[str, tuple[float, ...]]:
    """Per layer and candidate: ||W - W_r||_F / ||W||_F of the truncation `decompose` starts from.

    Tucker-2 (HOSVD) at (r_out, r_in): the factors are orthonormal, so the kept energy is the norm
    of the core's leading (r_out, r_in) block; SVD: the leading singular values. max_rank: 0.
    """
    modules = dict(model.named_modules())
    out = {}
    for name, cands in candidates.items():
        spec, w = specs[name], modules[name].weight.detach()
        if spec.kind == "tucker2":
            c_out, c_in = w.shape[:2]
            _, core, _ = tucker2_factors(w, c_out, c_in)  # full-rank rotation of W: (C_out, C_in, K, K)
            block = core.double().pow(2).sum(dim=(2, 3))  # (C_out, C_in) energy per channel pair
            total = float(block.sum())
            kept = [float(block[:min(r, c_out), :min(r, c_in)].sum()) for r in cands]
        else:
            s2 = torch.linalg.svdvals(w.flatten(1).double()).pow(2)  # (min(in, out),)
            total = float(s2.sum())
            kept = [float(s2[:r].sum()) for r in cands]
        out[name] = tuple(max(0.0, 1.0 - k / max(total, 1e-30)) ** 0.5 if r < spec.max_rank else 0.0
                          for k, r in zip(kept, cands))
    return out


@torch.no_grad()
def retained_energies(model: nn.Module, specs: dict[str, LayerSpec],
                      candidates: dict[str, tuple[int, ...]]) -> dict[str, tuple[float, ...]]:
    """Per layer and candidate: the share of squared singular values kept, the per-mode criterion.

    Tucker-2: the smaller of the output-mode and input-mode shares (each mode's unfolding has its
    own spectrum); SVD: the matrix's. max_rank: 1.
    """
    modules = dict(model.named_modules())
    out = {}
    for name, cands in candidates.items():
        spec, w = specs[name], modules[name].weight.detach().double()
        if spec.kind == "tucker2":
            modes = [w.flatten(1), w.transpose(0, 1).flatten(1)]  # (C_out, C_in K K), (C_in, C_out K K)
        else:
            modes = [w.flatten(1)]
        shares = []
        for m in modes:
            s2 = torch.linalg.svdvals(m).pow(2)
            cum = torch.cumsum(s2, 0) / s2.sum().clamp_min(1e-30)  # (rank,)
            shares.append([float(cum[min(r, len(cum)) - 1]) for r in cands])
        out[name] = tuple(min(col) if r < spec.max_rank else 1.0 for col, r in zip(zip(*shares), cands))
    return out


# ---- fitting a knob to the budgets -------------------------------------------------------------------

def _costs(choice: dict[str, int], candidates, tables: list[CostTable]) -> dict[str, float]:
    return {t.name: t.cost_of(choice, candidates) for t in tables}


def _fits(choice: dict[str, int], candidates, tables: list[CostTable]) -> bool:
    return all(t.cost_of(choice, candidates) <= t.budget * (1 + 1e-9) for t in tables)


def fill_budget(choice: dict[str, int], candidates: dict[str, tuple[int, ...]], tables: list[CostTable],
                starvation: Callable[[str, int], float]) -> dict[str, int]:
    """Raise layers while every budget holds: each round, the most starved layer (highest
    `starvation(name, rank)`) that has a larger candidate fitting the budgets moves to the smallest
    such candidate."""
    choice = dict(choice)
    while True:
        moves = []
        for name, rank in choice.items():
            cands = candidates[name]
            for bigger in cands[cands.index(rank) + 1:]:
                trial = dict(choice, **{name: bigger})
                if _fits(trial, candidates, tables):
                    moves.append((starvation(name, rank), name, bigger))
                    break
        if not moves:
            return choice
        _, name, bigger = max(moves, key=lambda m: m[0])
        choice[name] = bigger


def _fit_knob(method: str, settings: list[float], ranks_at: Callable[[float], dict[str, int]],
              candidates, tables: list[CostTable], starvation) -> RankSelection:
    """`settings` from most generous to cheapest: the first that fits, then filled."""
    if not tables:
        raise BadInputError(f"{method} ranks need at least one cost table with a budget")
    for t in tables:
        t.check_against(candidates)
    for value in settings:
        choice = ranks_at(value)
        if _fits(choice, candidates, tables):
            choice = fill_budget(choice, candidates, tables, starvation)
            return RankSelection(method, choice, _costs(choice, candidates, tables),
                                 {t.name: t.budget for t in tables}, True, value)
    cheapest = min((ranks_at(v) for v in settings), key=lambda c: max(t.cost_of(c, candidates) / t.budget
                                                                         for t in tables))
    return RankSelection(method, cheapest, _costs(cheapest, candidates, tables),
                         {t.name: t.budget for t in tables}, False, None)


def uniform_ranks(specs: dict[str, LayerSpec], candidates: dict[str, tuple[int, ...]],
                  tables: list[CostTable]) -> RankSelection:
    """The same fraction f of max rank in every layer (each rank the largest candidate <= f x max_rank)."""
    def ranks_at(f: float) -> dict[str, int]:
        out = {}
        for name, cands in candidates.items():
            fitting = [c for c in cands if c <= f * specs[name].max_rank + 1e-9]
            out[name] = fitting[-1] if fitting else cands[0]
        return out

    settings = sorted({c / specs[n].max_rank for n, cs in candidates.items() for c in cs}, reverse=True)
    return _fit_knob("uniform", settings, ranks_at, candidates, tables,
                     lambda name, rank: -rank / specs[name].max_rank)


def energy_ranks(model: nn.Module, specs: dict[str, LayerSpec], candidates: dict[str, tuple[int, ...]],
                 tables: list[CostTable]) -> RankSelection:
    """The same share e of spectral energy kept in every layer (smallest candidate keeping >= e)."""
    energy = retained_energies(model, specs, candidates)

    def ranks_at(e: float) -> dict[str, int]:
        return {n: next(c for c, k in zip(cs, energy[n]) if k >= e - 1e-12) for n, cs in candidates.items()}

    settings = sorted({k for ks in energy.values() for k in ks}, reverse=True)
    return _fit_knob("energy", settings, ranks_at, candidates, tables,
                     lambda name, rank: -energy[name][candidates[name].index(rank)])


def alds_ranks(model: nn.Module, specs: dict[str, LayerSpec], candidates: dict[str, tuple[int, ...]],
               tables: list[CostTable]) -> RankSelection:
    """ALDS-style error equalisation: minimise the largest relative approximation error under the
    budgets (every layer at the smallest candidate with error <= eps; then the worst layers raised)."""
    errors = relative_errors(model, specs, candidates)

    def ranks_at(eps: float) -> dict[str, int]:
        return {n: next(c for c, e in zip(cs, errors[n]) if e <= eps + 1e-12) for n, cs in candidates.items()}

    settings = sorted({e for es in errors.values() for e in es})
    return _fit_knob("alds", settings, ranks_at, candidates, tables,
                     lambda name, rank: errors[name][candidates[name].index(rank)])


def random_ranks(specs: dict[str, LayerSpec], candidates: dict[str, tuple[int, ...]], tables: list[CostTable],
                 seed: int = 0) -> RankSelection:
    """A random rank vector near the budgets: a random candidate per layer, random layers lowered one
    candidate at a time while over budget, then random layers raised while every budget holds."""
    if not tables:
        raise BadInputError("random ranks need at least one cost table with a budget")
    for t in tables:
        t.check_against(candidates)
    rng = random.Random(seed)
    choice = {n: rng.choice(cs) for n, cs in candidates.items()}
    while not _fits(choice, candidates, tables):
        lowerable = [n for n in choice if candidates[n].index(choice[n]) > 0]
        if not lowerable:
            break
        n = rng.choice(lowerable)
        choice[n] = candidates[n][candidates[n].index(choice[n]) - 1]
    within = _fits(choice, candidates, tables)
    if within:  # a fresh random priority at every look: each round raises a random layer that fits
        choice = fill_budget(choice, candidates, tables, lambda name, rank: rng.random())
    return RankSelection("random", choice, _costs(choice, candidates, tables), {t.name: t.budget for t in tables},
                         within, None)


def select_ranks(method: str, model: nn.Module, specs: dict[str, LayerSpec],
                 candidates: dict[str, tuple[int, ...]], tables: list[CostTable], seed: int = 0) -> RankSelection:
    """One of METHODS by name."""
    if method == "uniform":
        return uniform_ranks(specs, candidates, tables)
    if method == "energy":
        return energy_ranks(model, specs, candidates, tables)
    if method == "alds":
        return alds_ranks(model, specs, candidates, tables)
    if method == "random":
        return random_ranks(specs, candidates, tables, seed)
    raise BadInputError(f"rank selection method {method!r} unknown; use one of {METHODS}")
