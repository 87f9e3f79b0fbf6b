"""Cost tables and the hardware-aware loss (docs/method.md section 3).

A `CostTable` is one target: per layer, the cost of each candidate rank (latency in ms from a LUT,
or FLOPs), the fixed cost of everything that is not searched, and the budget T. The expected cost
of the supernet is E = fixed + sum_layers sum_i m_i * cost[layer][i], with m the mixing weights of
the latest forward (or softmax(alpha), see SearchConfig.penalty_cost). The penalty bites above the
budget, and with a weight `below` > 0 (ours) also under it:

    multiplicative: loss = CE * max(1, E/T)^beta * min(1, E/T)^(-beta * below)
    additive:       loss = CE + lambda * (max(0, E/T - 1) + below * max(0, 1 - E/T))

Several tables (one budget per hardware target) multiply or add their penalties. `below` = 0 is
the paper's one-sided hinge. It stops pulling once E is under T, and CE alone pulls ranks back up
only weakly: measured on the digits, E fell to 0.8 T after the first alpha epochs and stayed there,
so the projection, not alpha, decided the ranks. With `below` = 1 the distribution is held at the
budget and the discrete read-out needs little projection.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .decomposition import LayerSpec, build_layer, lut_rank
from .errors import BadInputError

PENALTIES = ("multiplicative", "additive")


@dataclass(frozen=True)
class CostTable:
    """One cost target of a search (a hardware's measured latency, or FLOPs): each searched layer's cost
    per candidate rank, the cost of everything not searched, and the budget the ranks must fit."""
    name: str  # hardware target ("cpu", "asic", ...) or "flops"
    layer_costs: dict[str, tuple[float, ...]]  # aligned with the rank space's candidates; last = original layer
    fixed_cost: float  # layers that are not searched, plus any measured overhead
    budget: float  # absolute target T the search aims at, same unit as the costs
    unit: str = "ms"
    meta: dict = field(default_factory=dict, compare=False)
    # The budget that must hold, when the search aims a safety margin below it (timed hardware: the
    # LUT predicts a whole model only to within its calibration error). None: `budget` itself.
    limit: float | None = None

    @property
    def must_meet(self) -> float:
        """The user's budget, against which `within_budget` is judged."""
        return self.budget if self.limit is None else self.limit

    @property
    def original_cost(self) -> float:
        """Cost of the undecomposed model: every layer at its last candidate (max_rank = original)."""
        return self.fixed_cost + sum(c[-1] for c in self.layer_costs.values())

    @property
    def reference_cost(self) -> float:
        """The original's cost that budget fractions are of: as measured where a budget was set from a
        measurement (`with_budget_fraction(reference=...)`), else the table's own `original_cost`."""
        return float(self.meta.get("reference_cost", self.original_cost))

    @property
    def min_cost(self) -> float:
        return self.fixed_cost + sum(min(c) for c in self.layer_costs.values())

    def with_budget_fraction(self, fraction: float, clamp: bool = False, margin: float = 0.0,
                             reference: float | None = None) -> CostTable:
        """The same table with budget = fraction x the original's cost; refuses budgets nothing can meet,
        or, with `clamp` (costs known to be unreliable), aims at the smallest reachable cost instead and
        records the asked fraction in meta["clamped_from"].

        `reference`: the original's cost as measured, where it was (timed hardware: the calibration's
        own measurement of the original), else the table's `original_cost`. A budget is judged against
        the measured original, and a LUT can price the original itself several percent off (seen: 6%
        over on the demo's cpu, which let a search "within" 0.6 measure 0.63), so the budget starts
        from what was measured, not from the LUT's view of it.

        `margin` > 0: the search aims at fraction x (1 - margin) (never below the smallest reachable
        cost) while `limit` keeps the asked budget, so that a model the LUT puts just under the budget
        is not a coin toss on the hardware. meta records the margin and the fraction aimed at."""
        if not 0 < fraction:
            raise BadInputError(f"budget {fraction} must be a positive fraction of the original cost")
        if not 0 <= margin < 1:
            raise BadInputError(f"budget margin {margin} must be a fraction in [0, 1)")
        original = self.original_cost if reference is None else float(reference)
        if not original > 0:
            raise BadInputError(f"cost table {self.name!r}: the original's cost {original!r} must be positive")
        budget = fraction * original
        if budget < self.min_cost and clamp:
            meta = dict(self.meta, clamped_from=fraction)
            return CostTable(self.name, self.layer_costs, self.fixed_cost, self.min_cost * (1 + 1e-9), self.unit, meta)
        if budget < self.min_cost:
            raise BadInputError(
                f"budget {fraction:g} of {self.name} ({budget:.4g} {self.unit}) is below the smallest reachable "
                f"cost {self.min_cost:.4g} {self.unit} (fraction {self.min_cost / original:.3f}); "
                "raise the budget or add smaller candidate ranks")
        base_meta = self.meta if reference is None else dict(self.meta, reference_cost=original)
        if not margin:
            return CostTable(self.name, self.layer_costs, self.fixed_cost, budget, self.unit, base_meta)
        target = max(budget * (1 - margin), min(budget, self.min_cost * (1 + 1e-9)))
        meta = dict(base_meta, margin=margin, aimed_fraction=target / original)
        return CostTable(self.name, self.layer_costs, self.fixed_cost, target, self.unit, meta, limit=budget)

    def cost_of(self, choice: dict[str, int], candidates: dict[str, tuple[int, ...]]) -> float:
        """Cost of a discrete architecture {layer: rank}; a rank must be one of the layer's candidates."""
        total = self.fixed_cost
        for name, costs in self.layer_costs.items():
            total += costs[candidates[name].index(choice[name])]
        return total

    def check_against(self, candidates: dict[str, tuple[int, ...]]) -> None:
        for name, cands in candidates.items():
            costs = self.layer_costs.get(name)
            if costs is None:
                raise BadInputError(f"cost table {self.name!r} has no costs for layer {name!r}; "
                                    "profile that layer or remove it from the rank space")
            if len(costs) != len(cands):
                raise BadInputError(f"cost table {self.name!r}, layer {name!r}: {len(costs)} costs for "
                                    f"{len(cands)} candidate ranks")


def expected_cost(layer_weights: dict[str, torch.Tensor], table: CostTable) -> torch.Tensor:
    """E = fixed + sum_l m_l . cost_l (differentiable in the mixing weights)."""
    total = None
    for name, costs in table.layer_costs.items():
        m = layer_weights[name]
        term = (m * torch.as_tensor(costs, dtype=m.dtype, device=m.device)).sum()
        total = term if total is None else total + term
    return total + table.fixed_cost


def hardware_loss(ce: torch.Tensor, costs: list[torch.Tensor], tables: list[CostTable], penalty: str = "additive",
                  beta: float = 0.6, lam: float = 1.0, below: float = 0.0) -> torch.Tensor:
    """CE with the budget penalty of every table applied (`below`: weight of the under-budget side)."""
    if penalty not in PENALTIES:
        raise BadInputError(f"penalty {penalty!r} unknown; use one of {PENALTIES}")
    if below < 0:
        raise BadInputError(f"below={below} must be >= 0 (0: penalise only above the budget)")
    loss = ce
    for cost, table in zip(costs, tables):
        ratio = cost / table.budget
        if penalty == "multiplicative":
            loss = loss * torch.clamp(ratio, min=1.0) ** beta
            if below:
                loss = loss * torch.clamp(ratio, max=1.0) ** (-beta * below)
        else:
            loss = loss + lam * torch.relu(ratio - 1.0)
            if below:
                loss = loss + lam * below * torch.relu(1.0 - ratio)
    return loss


def budget_prior(tables: list[CostTable], names: list[str], max_mu: float = 1e6) -> dict[str, torch.Tensor]:
    """Architecture logits of the most uncertain distribution that meets every budget on average.

    alpha_l,i = -mu * sum_t cost_t[l][i] / T_t (a Gibbs distribution over each layer's candidates),
    with the smallest mu >= 0 at which every table's expected cost is at most its budget (mu = 0,
    uniform, when uniform already meets them). A search started here samples architectures near
    the budget from its first step, instead of spending its first epochs getting there.
    """
    unit = {n: torch.stack([torch.as_tensor(t.layer_costs[n], dtype=torch.float64) / t.budget for t in tables]).sum(0)
            for n in names}  # (M,) per layer: candidate costs in budgets, summed over tables

    def worst_ratio(mu: float) -> float:
        weights = {n: torch.softmax(-mu * u, 0) for n, u in unit.items()}
        return max(float(expected_cost(weights, t)) / t.budget for t in tables)

    lo, hi = 0.0, 1.0
    if worst_ratio(0.0) > 1.0:
        while worst_ratio(hi) > 1.0 and hi < max_mu:
            lo, hi = hi, hi * 2.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if worst_ratio(mid) > 1.0 else (lo, mid)
        mu = hi
    else:
        mu = 0.0
    return {n: (-mu * u).float() for n, u in unit.items()}


def layer_flops(spec: LayerSpec, rank: int, batch: int = 1) -> int:
    """FLOPs of one layer at `rank` (max_rank: the original layer), counted by torch on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    if spec.op == "conv2d" and spec.input_hw is None:
        raise BadInputError(f"layer {spec.name!r} has no input size: trace the specs with an example input")
    with torch.device("meta"):
        module = build_layer(spec, lut_rank(spec, rank))
        x = torch.empty(batch, spec.in_channels, *spec.input_hw) if spec.op == "conv2d" else \
            torch.empty(batch, spec.in_channels)
        with FlopCounterMode(display=False) as counter:
            module(x)
    return int(counter.get_total_flops())


def flops_cost_table(specs: dict[str, LayerSpec], candidates: dict[str, tuple[int, ...]], total_flops: int,
                     budget_fraction: float = 1.0) -> CostTable:
    """The FLOPs variant: costs in GFLOPs; fixed = total - the searched layers' original FLOPs."""
    layer_costs = {n: tuple(layer_flops(specs[n], r) / 1e9 for r in cands) for n, cands in candidates.items()}
    fixed = total_flops / 1e9 - sum(c[-1] for c in layer_costs.values())
    table = CostTable("flops", layer_costs, fixed, budget=total_flops / 1e9, unit="GFLOPs")
    return table.with_budget_fraction(budget_fraction)
