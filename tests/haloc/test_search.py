import math

import pytest
import torch

import haloc
from haloc.hardware_loss import CostTable, expected_cost, hardware_loss
from haloc.rank_space import build_rank_space
from haloc.search_loop import SearchConfig, SupernetSearch, project_to_budget, search


def test_penalty_is_zero_under_budget_and_grows_above():
    table = CostTable("hw", {"a": (1.0, 2.0, 4.0)}, fixed_cost=1.0, budget=3.0)
    ce = torch.tensor(2.0)
    under = expected_cost({"a": torch.tensor([0.0, 1.0, 0.0])}, table)  # 3.0, at budget
    assert float(under) == 3.0
    for penalty in ("additive", "multiplicative"):
        assert float(hardware_loss(ce, [under], [table], penalty)) == 2.0
        losses = [float(hardware_loss(ce, [torch.tensor(c)], [table], penalty)) for c in (3.5, 4.0, 5.0)]
        assert 2.0 < losses[0] < losses[1] < losses[2]
    # several tables: each adds its own penalty
    other = CostTable("hw2", {"a": (1.0, 1.0, 1.0)}, 0.0, budget=0.5)
    both = hardware_loss(ce, [torch.tensor(3.0), torch.tensor(1.0)], [table, other], "additive", lam=1.0)
    assert float(both) == pytest.approx(3.0)


def test_budget_fraction_below_minimum_is_refused_with_the_minimum():
    table = CostTable("cpu", {"a": (1.0, 2.0, 4.0)}, fixed_cost=1.0, budget=5.0)
    assert table.with_budget_fraction(0.5).budget == 2.5
    with pytest.raises(ValueError, match=r"below the smallest reachable cost 2 ms \(fraction 0.400\)"):
        table.with_budget_fraction(0.3)


def test_projection_meets_every_budget_and_prefers_likely_ranks():
    cands = {"a": (1, 2, 3), "b": (1, 2, 3)}
    t1 = CostTable("x", {"a": (1.0, 2.0, 3.0), "b": (1.0, 2.0, 3.0)}, 0.0, budget=4.0)
    probs = {"a": [0.1, 0.1, 0.8], "b": [0.3, 0.3, 0.4]}  # b is less sure: b gives way first
    out = project_to_budget({"a": 3, "b": 3}, probs, cands, [t1], fill_tolerance=None)
    assert t1.cost_of(out, cands) <= 4.0 and out["a"] == 3
    # fill: far under budget -> raise ranks up to the budget
    filled = project_to_budget({"a": 1, "b": 1}, probs, cands, [t1], fill_tolerance=0.05)
    assert t1.cost_of(filled, cands) == 4.0


def tiny_loaders(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    ds = torch.utils.data.TensorDataset(x, y)
    train = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, generator=g)
    held = torch.utils.data.DataLoader(ds, batch_size=16)
    return train, held


def latency_like_table(specs, cands, seed=0):
    """A made-up but plausible latency table: cost grows with rank, original at the end."""
    g = torch.Generator().manual_seed(seed)
    costs = {}
    for n, cs in cands.items():
        base = float(torch.rand((), generator=g)) + 0.5
        costs[n] = tuple(base * (0.2 + 0.8 * r / cs[-1]) for r in cs)
    return CostTable("fakehw", costs, fixed_cost=0.3, budget=1.0)


@pytest.mark.parametrize("penalty", ["additive", "multiplicative"])
def test_short_search_ends_within_budget(penalty):
    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model)
    space = build_rank_space(specs, "step", step=8)
    table = latency_like_table(specs, space.candidates).with_budget_fraction(0.6)
    train, held = tiny_loaders()
    cfg = SearchConfig(epochs=2, warmup_epochs=1, steps_per_epoch=3, penalty=penalty, lam=5.0, beta=2.0)
    res = search(model, train, held, space, [table], cfg)
    assert res.within_budget == {"fakehw": True}
    assert res.predicted_cost["fakehw"] <= table.budget
    assert res.predicted_cost["fakehw"] == pytest.approx(table.cost_of(res.all_ranks, space.candidates))
    assert set(res.ranks) <= set(res.all_ranks)
    assert all(r < specs[n].max_rank for n, r in res.ranks.items())
    assert len(res.history) == 2 and res.history[-1]["heldout_ce"] is not None
    haloc.decompose(model, res.ranks)  # the result is a valid ranks dict


def test_alpha_moves_expected_cost_toward_budget():
    """Only alpha trains (train once, search many): the expected cost falls toward a tight budget."""
    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model)
    space = build_rank_space(specs, "step", step=8)
    table = latency_like_table(specs, space.candidates).with_budget_fraction(0.5)
    train, held = tiny_loaders()
    s = SupernetSearch(model, space, [table], SearchConfig(epochs=3, train_weights=False, lam=20.0, arch_lr=0.1,
                                                          steps_per_epoch=4))
    start = s.expected_costs()[0]
    assert s.alpha_entropy() == pytest.approx(sum(math.log(len(c)) for c in space.candidates.values())
                                              / len(space.candidates), rel=1e-5)
    for _ in range(3):
        s.run_epoch(train, held)
    assert s.expected_costs()[0] < start
    assert s.alpha_entropy() < s.history[0]["alpha_entropy"] + 1e-9


def test_search_checkpoint_resumes_identically():
    """Stop after epoch 1, restore from the state dict in a new search: epoch 2 gives the same weights and alpha."""
    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model)
    space = build_rank_space(specs, "step", step=16)
    table = latency_like_table(specs, space.candidates).with_budget_fraction(0.7)
    cfg = SearchConfig(epochs=2, warmup_epochs=0, steps_per_epoch=2)
    g = torch.Generator().manual_seed(3)
    ds = torch.utils.data.TensorDataset(torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g))
    loader = torch.utils.data.DataLoader(ds, batch_size=16)  # fixed order

    a = SupernetSearch(model, space, [table], cfg)
    a.run_epoch(loader, loader)
    state = a.state_dict()
    a.run_epoch(loader, loader)

    b = SupernetSearch(model, space, [table], cfg)
    b.load_state_dict(state)
    assert b.epoch == 1
    b.run_epoch(loader, loader)
    for (k, va), vb in zip(a.supernet.state_dict().items(), b.supernet.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    assert a.result().all_ranks == b.result().all_ranks


def test_cost_table_missing_layer_is_refused():
    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model)
    space = build_rank_space(specs, "step", step=8)
    table = CostTable("cpu", {"fc": (1.0,)}, 0.0, 1.0)
    with pytest.raises(ValueError, match="has no costs for layer 'layer1.0.conv1'"):
        SupernetSearch(model, space, [table], SearchConfig())
