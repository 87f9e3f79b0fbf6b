"""The baselines of the rank-selection comparison: each meets every budget and ends close under it."""
import pytest
import torch

import haloc
from haloc.baselines import (
    METHODS,
    alds_ranks,
    energy_ranks,
    relative_errors,
    retained_energies,
    select_ranks,
    uniform_ranks,
)
from haloc.hardware_loss import CostTable, flops_cost_table
from haloc.rank_space import build_rank_space


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = haloc.models.create("resnet20")
    x = torch.zeros(1, 3, 32, 32)
    specs = haloc.decomposable_layers(model, x)
    space = build_rank_space(specs, "step", step=4)
    return model, specs, space.candidates, haloc.flops(model, x)


def bumpy_latency_table(candidates, seed=0):
    """Latency-like: costs grow with rank but not monotonically, and the whole layer is not the
    most expensive candidate (a decomposed layer can be slower than the original)."""
    g = torch.Generator().manual_seed(seed)
    costs = {}
    for name, cands in candidates.items():
        ramp = [0.05 + (r / cands[-1]) ** 2 + 0.1 * float(torch.rand((), generator=g)) for r in cands]
        ramp[-1] = 0.8  # the original layer: cheaper than the widest decompositions
        costs[name] = tuple(ramp)
    return CostTable("bumpy", costs, fixed_cost=0.5, budget=1.0)


def tables_for(kind, resnet, fraction):
    model, specs, candidates, total = resnet
    if kind == "flops":
        return [flops_cost_table(specs, candidates, total, fraction)]
    latency = bumpy_latency_table(candidates).with_budget_fraction(fraction + 0.25)
    if kind == "latency":
        return [latency]
    return [flops_cost_table(specs, candidates, total, fraction), latency]


def raisable(choice, candidates, tables):
    """Layers that could still move to a larger candidate without breaking any budget."""
    out = []
    for name, rank in choice.items():
        cands = candidates[name]
        for bigger in cands[cands.index(rank) + 1:]:
            trial = dict(choice, **{name: bigger})
            if all(t.cost_of(trial, candidates) <= t.budget * (1 + 1e-9) for t in tables):
                out.append(name)
                break
    return out


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["flops", "latency", "both"])
@pytest.mark.parametrize("fraction", [0.2, 0.3, 0.5])
def test_every_method_meets_every_budget_and_leaves_nothing_to_fill(resnet, method, kind, fraction):
    model, specs, candidates, _ = resnet
    tables = tables_for(kind, resnet, fraction)
    sel = select_ranks(method, model, specs, candidates, tables, seed=3)
    assert sel.within_budget
    for t in tables:
        assert sel.costs[t.name] == pytest.approx(t.cost_of(sel.ranks, candidates))
        assert sel.costs[t.name] <= t.budget * (1 + 1e-9)
    assert all(sel.ranks[n] in candidates[n] for n in candidates)
    assert raisable(sel.ranks, candidates, tables) == []  # as close under the budget as one move allows
    haloc.decompose(model, sel.compressed(specs))  # a valid ranks dict


def test_flops_budgets_end_within_a_few_percent_under(resnet):
    model, specs, candidates, total = resnet
    for method in METHODS:
        for fraction in (0.2, 0.3, 0.5):
            sel = select_ranks(method, model, specs, candidates, tables_for("flops", resnet, fraction))
            assert 0.95 <= sel.fractions["flops"] <= 1.0, (method, fraction, sel.fractions)


def test_uniform_keeps_one_fraction_and_alds_minimises_the_worst_error(resnet):
    model, specs, candidates, _ = resnet
    tables = tables_for("flops", resnet, 0.3)
    uni = uniform_ranks(specs, candidates, tables)
    for name, rank in uni.ranks.items():  # the fill only ever raises above the common fraction
        floor = [c for c in candidates[name] if c <= uni.setting * specs[name].max_rank + 1e-9]
        assert rank >= (floor[-1] if floor else candidates[name][0])
    errors = relative_errors(model, specs, candidates)
    worst = lambda sel: max(errors[n][candidates[n].index(r)] for n, r in sel.ranks.items())  # noqa: E731
    alds = alds_ranks(model, specs, candidates, tables)
    assert worst(alds) <= worst(uni) + 1e-12
    energy = retained_energies(model, specs, candidates)
    least = lambda sel: min(energy[n][candidates[n].index(r)] for n, r in sel.ranks.items())  # noqa: E731
    assert least(energy_ranks(model, specs, candidates, tables)) >= least(uni) - 1e-12


def test_errors_and_energies_are_monotone_and_exact_at_max_rank(resnet):
    model, specs, candidates, _ = resnet
    errors = relative_errors(model, specs, candidates)
    energies = retained_energies(model, specs, candidates)
    for name in candidates:
        e, k = errors[name], energies[name]
        assert all(a >= b - 1e-12 for a, b in zip(e, e[1:])) and e[-1] == 0.0
        assert all(a <= b + 1e-12 for a, b in zip(k, k[1:])) and k[-1] == 1.0
    # the error is the real truncation error of the decomposition that haloc.decompose builds
    name, rank = "layer2.1.conv2", candidates["layer2.1.conv2"][2]
    small = haloc.decompose(model, {name: rank})
    f = dict(small.named_modules())[name]
    w = dict(model.named_modules())[name].weight
    with torch.no_grad():
        approx = torch.einsum("or,rskl,si->oikl", f.last.weight[:, :, 0, 0], f.core.weight,
                              f.first.weight[:, :, 0, 0])  # (C_out, C_in, K, K)
        measured = float((w - approx).norm() / w.norm())
    assert measured == pytest.approx(errors[name][2], rel=1e-3)


def test_random_is_seeded_and_varies(resnet):
    model, specs, candidates, _ = resnet
    tables = tables_for("flops", resnet, 0.3)
    a = select_ranks("random", model, specs, candidates, tables, seed=1)
    b = select_ranks("random", model, specs, candidates, tables, seed=1)
    c = select_ranks("random", model, specs, candidates, tables, seed=2)
    assert a.ranks == b.ranks and a.ranks != c.ranks


@pytest.mark.parametrize("method", METHODS)
def test_a_budget_no_setting_reaches_is_reported_not_hidden(resnet, method):
    model, specs, candidates, _ = resnet
    # every decomposition slower than the whole layer: below the original's cost nothing fits
    costs = {n: tuple([2.0] * (len(c) - 1) + [1.0]) for n, c in candidates.items()}
    table = CostTable("slow", costs, fixed_cost=0.0, budget=0.9 * len(candidates))
    sel = select_ranks(method, model, specs, candidates, [table])
    assert not sel.within_budget and sel.costs["slow"] > table.budget


def test_unknown_method_names_the_choices(resnet):
    model, specs, candidates, _ = resnet
    with pytest.raises(ValueError, match="unknown; use one of"):
        select_ranks("best", model, specs, candidates, tables_for("flops", resnet, 0.3))
