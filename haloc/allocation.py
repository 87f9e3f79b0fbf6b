"""The ranks that minimise a sum of measured errors under additive cost budgets.

    ranks = min_error_ranks({("layer1.0.conv1", "layer1.0.conv2"): table, ("fc",): fc_table, ...},
                            candidates, cost_tables)

Layers come in groups (a residual block's convs, whose errors do not add up: a block whose two convs
are both cut loses its branch once, not twice); `table[i, j, ...]` is the group's error with its
first layer at its i-th candidate, its second at its j-th, and so on. The blockwise search measures
the tables (`haloc.search_exact.ExactSolver.measure_error_tables`). Each `CostTable` is a fixed cost plus one cost
per layer and candidate, so the choice is a multiple-choice knapsack over the groups' options. It is
solved by dynamic programming over the budget cut into `bins` steps, every cost rounded up to a
whole step: the answer never exceeds a budget and is optimal up to one step of slack per group
(0.3% of the budget for ResNet-20's 10 groups at the default 4,000 steps). Several tables are met
together by weighting their costs into one (each alone, all alike, then any table the answer breaks
weighted up) and polishing the best answer that meets all with single and paired moves: a local
optimum, not a proven one.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from .errors import BadInputError
from .hardware_loss import CostTable

Group = tuple  # of layer names


def min_error_ranks(tables_by_group: dict[Group, np.ndarray], candidates: dict[str, tuple[int, ...]],
                    cost_tables: list[CostTable], bins: int = 4_000, rounds: int = 40) -> dict[str, int]:
    """The candidate of every grouped layer whose summed group error is least with every table's cost
    at most its `budget`. A budget nothing can meet returns the cheapest choice found (the caller
    checks `within_budget`, as for any projection)."""
    if not cost_tables:
        raise BadInputError("an allocation needs at least one cost table")
    groups = [_Group(g, np.asarray(e, dtype=float), candidates, cost_tables) for g, e in tables_by_group.items()]
    rooms = [t.budget - t.fixed_cost for t in cost_tables]
    if any(room <= 0 for room in rooms):
        return _ranks(groups, [g.cheapest() for g in groups])
    several = len(cost_tables) > 1
    tried = list(np.eye(len(cost_tables))) if several else []
    weights = np.ones(len(cost_tables))
    best, best_error = None, math.inf
    for k in range(len(tried) + (rounds if several else 1)):
        w = tried[k] if k < len(tried) else weights
        shares = [sum(wt * c / room for wt, c, room in zip(w, g.costs, rooms)) / w.sum() for g in groups]
        choice = _knapsack(groups, shares, bins)
        if choice is None:
            break
        broken = np.array([c > t.budget * (1 + 1e-9)
                           for c, t in zip(_costs(groups, choice, cost_tables), cost_tables)])
        if not broken.any():
            error = sum(g.errors[o] for g, o in zip(groups, choice))
            if error < best_error:
                best, best_error = choice, error
        if k >= len(tried):
            if not broken.any():
                break
            weights = weights * np.where(broken, 1.5, 1.0)
    if several:
        best = _repair(groups, [g.cheapest() for g in groups], cost_tables) if best is None else best
        best = _polish(groups, best, cost_tables) if best is not None else None
    return _ranks(groups, best if best is not None else [g.cheapest() for g in groups])


class _Group:
    """One group's options, flattened: errors (n_options,), costs per cost table (n_options,) each."""

    def __init__(self, names: Group, errors: np.ndarray, candidates: dict[str, tuple[int, ...]],
                 cost_tables: list[CostTable]):
        shape = tuple(len(candidates[n]) for n in names)
        if errors.shape != shape:
            raise BadInputError(f"layers {names}: an error table of shape {errors.shape} for {shape} candidates")
        if not np.isfinite(errors).all():
            raise BadInputError(f"layers {names}: the error table holds a non-finite value")
        self.names, self.shape = names, shape
        self.candidates = [candidates[n] for n in names]
        self.errors = errors.reshape(-1)
        self.costs = []
        for t in cost_tables:
            total = np.zeros(shape)
            for axis, n in enumerate(names):
                view = [1] * len(names)
                view[axis] = shape[axis]
                total = total + np.asarray(t.layer_costs[n], dtype=float).reshape(view)
            self.costs.append(total.reshape(-1))

    def ranks(self, option: int) -> dict[str, int]:
        index = np.unravel_index(option, self.shape)
        return {n: c[int(i)] for n, c, i in zip(self.names, self.candidates, index)}

    def cheapest(self) -> int:
        return int(np.argmin(sum(self.costs)))


def _knapsack(groups: list[_Group], shares: list[np.ndarray], bins: int) -> list[int] | None:
    """Option per group minimising the summed error with the summed share at most 1 (in steps of
    1 / bins, rounded up); None when even the cheapest choice does not fit."""
    steps = [np.maximum(np.ceil(s * bins - 1e-9), 0).astype(np.int64) for s in shares]
    best = np.zeros(bins + 1)  # best[j]: least error of the groups so far with their cost at most j steps
    picks = []
    for group, cost in zip(groups, steps):
        new = np.full(bins + 1, np.inf)
        pick = np.full(bins + 1, -1, dtype=np.int64)
        for option in np.flatnonzero(cost <= bins):
            c = int(cost[option])
            total = best[:bins + 1 - c] + group.errors[option]
            better = total < new[c:]
            new[c:][better] = total[better]
            pick[c:][better] = option
        best = new
        picks.append(pick)
    if not np.isfinite(best[bins]):
        return None
    choice, j = [], bins
    for cost, pick in zip(reversed(steps), reversed(picks)):
        option = int(pick[j])
        choice.append(option)
        j -= int(cost[option])
    return choice[::-1]


def _costs(groups: list[_Group], choice: list[int], cost_tables: list[CostTable]) -> list[float]:
    return [t.fixed_cost + sum(float(g.costs[k][o]) for g, o in zip(groups, choice)) for k, t in enumerate(cost_tables)]


def _fits(groups: list[_Group], choice: list[int], cost_tables: list[CostTable]) -> bool:
    return all(c <= t.budget * (1 + 1e-9) for c, t in zip(_costs(groups, choice, cost_tables), cost_tables))


def _ranks(groups: list[_Group], choice: list[int]) -> dict[str, int]:
    out = {}
    for g, o in zip(groups, choice):
        out.update(g.ranks(o))
    return out


def _overshoot(groups: list[_Group], choice: list[int], cost_tables: list[CostTable]) -> float:
    return sum(max(0.0, c - t.budget) / max(t.budget, 1e-12)
               for c, t in zip(_costs(groups, choice, cost_tables), cost_tables))


def _repair(groups: list[_Group], choice: list[int], cost_tables: list[CostTable]) -> list[int] | None:
    """Single-group moves that shrink the summed overshoot of the budgets most, until every budget
    holds (the answer) or no move shrinks it (None)."""
    choice = list(choice)
    while (now := _overshoot(groups, choice, cost_tables)) > 1e-12:
        moves = [choice[:i] + [o] + choice[i + 1:] for i, g in enumerate(groups)
                 for o in range(len(g.errors)) if o != choice[i]]
        scored = [(_overshoot(groups, m, cost_tables), k) for k, m in enumerate(moves)]
        if not scored or min(scored)[0] >= now - 1e-12:
            return None
        choice = moves[min(scored)[1]]
    return choice


def _polish(groups: list[_Group], choice: list[int], cost_tables: list[CostTable],
            pair_limit: int = 400) -> list[int]:
    """Moves of one group, and of two (where the groups have at most `pair_limit` options in all),
    that lower the summed error while every budget holds, best first, until none does."""
    choice = list(choice)
    options = [range(len(g.errors)) for g in groups]
    pairs = sum(len(o) for o in options) <= pair_limit
    while True:
        gain, move = 1e-12, None
        for a, b in itertools.combinations_with_replacement(range(len(groups)), 2):
            if a != b and not pairs:
                continue
            for oa in options[a]:
                for ob in (options[b] if a != b else (None,)):
                    trial = list(choice)
                    trial[a] = oa
                    if ob is not None:
                        trial[b] = ob
                    g = sum(groups[i].errors[choice[i]] - groups[i].errors[trial[i]] for i in {a, b})
                    if g > gain and _fits(groups, trial, cost_tables):
                        gain, move = g, trial
        if move is None:
            return choice
        choice = move
