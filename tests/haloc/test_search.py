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
                                                          steps_per_epoch=4, alpha_init="uniform", arch_every=1))
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
    ds = torch.utils.data.TensorDataset(torch.randn(32, 3, 32, 32, generator=g),
                                        torch.randint(0, 10, (32,), generator=g))
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


class RecordingDataset(torch.utils.data.Dataset):
    """Random images whose __getitem__ records the order it is read in."""

    def __init__(self, n=48, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
        self.reads = []

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.reads.append(int(i))
        return self.x[i], self.y[i]


def test_search_draws_a_new_batch_order_every_epoch_and_repeats_itself():
    """haloc.search seeds its loaders per epoch (seed_epoch), as the README uses it with make_loader."""
    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model)
    space = build_rank_space(specs, "step", step=16)
    table = latency_like_table(specs, space.candidates).with_budget_fraction(0.7)
    cfg = SearchConfig(epochs=2, warmup_epochs=1, heldout_eval=False)
    orders = []
    for _ in range(2):
        data = RecordingDataset()
        train = haloc.make_loader(data, 16, shuffle=True, seed=0)
        held = haloc.make_loader(RecordingDataset(16, seed=1), 16, shuffle=True, seed=1)
        search(model, train, held, space, [table], cfg)
        orders.append(data.reads)
    first, second = orders[0][:48], orders[0][48:96]
    assert sorted(first) == sorted(second) == list(range(48)) and first != second
    assert orders[0] == orders[1]  # same seed, same orders


@pytest.mark.parametrize("penalty", ["additive", "multiplicative"])
def test_below_budget_side_pulls_up_from_under_the_budget(penalty):
    table = CostTable("hw", {"a": (1.0, 2.0, 4.0)}, fixed_cost=0.0, budget=3.0)
    ce = torch.tensor(1.0)
    under = torch.tensor(1.5, requires_grad=True)
    hardware_loss(ce, [under], [table], penalty, lam=2.0, below=1.0).backward()
    assert under.grad < 0  # lower loss with more cost: back toward the budget
    one_sided = torch.tensor(1.5, requires_grad=True)
    hardware_loss(ce, [one_sided], [table], penalty, lam=2.0).backward()
    assert one_sided.grad is None or float(one_sided.grad) == 0.0
    at = hardware_loss(ce, [torch.tensor(3.0)], [table], penalty, lam=2.0, below=1.0)
    assert float(at) == pytest.approx(1.0)  # nothing at the budget itself
    over = [float(hardware_loss(ce, [torch.tensor(c)], [table], penalty, lam=2.0, below=b)) for b in (0.0, 1.0)
            for c in (4.0,)]
    assert over[0] == over[1] > 1.0  # above the budget both sides agree
    with pytest.raises(ValueError, match="below"):
        hardware_loss(ce, [under], [table], penalty, below=-1.0)


def test_quantile_projection_spreads_the_cut_over_uncertain_layers():
    """Greedy projection pushes the layer already off its peak to the bottom; quantile lowers each
    uncertain layer a little, and neither touches the layer alpha is sure about."""
    cands = {n: (1, 2, 3, 4) for n in "abc"}
    table = CostTable("x", {n: (1.0, 2.0, 3.0, 4.0) for n in "abc"}, 0.0, budget=9.0)
    probs = {"a": [0.0, 0.0, 0.0, 1.0],  # sure
             "b": [0.2, 0.2, 0.25, 0.35], "c": [0.2, 0.2, 0.25, 0.35]}  # unsure, the same
    start = {"a": 4, "b": 4, "c": 4}
    greedy = project_to_budget(start, probs, cands, [table], fill_tolerance=0.05, method="greedy")
    quant = project_to_budget(start, probs, cands, [table], fill_tolerance=0.05, method="quantile")
    for out in (greedy, quant):
        assert table.cost_of(out, cands) == 9.0 and out["a"] == 4
    assert sorted([greedy["b"], greedy["c"]]) == [1, 4]  # all of the cut in one of two equal layers
    assert sorted([quant["b"], quant["c"]]) == [2, 3]  # shared between them
    with pytest.raises(ValueError, match="projection 'x' unknown"):
        project_to_budget(start, probs, cands, [table], method="x")


@pytest.mark.parametrize("penalty_cost,arch_every,weight_mix", [("sample", 1, "gumbel"), ("sample", 2, "sample"),
                                                               ("expected", 1, "sample"), ("expected", 2, "gumbel")])
def test_search_options_run_and_meet_the_budget(penalty_cost, arch_every, weight_mix):
    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model)
    space = build_rank_space(specs, "step", step=8)
    table = latency_like_table(specs, space.candidates).with_budget_fraction(0.6)
    train, held = tiny_loaders()
    cfg = SearchConfig(epochs=2, warmup_epochs=1, steps_per_epoch=4, below_budget=1.0, lam=5.0,
                       penalty_cost=penalty_cost, arch_every=arch_every, projection="quantile",
                       weight_mix=weight_mix)
    s = SupernetSearch(model, space, [table], cfg)
    seen = []
    original_arch_step = s.solver._arch_step
    s.solver._arch_step = lambda x, y: seen.append(1) or original_arch_step(x, y)
    for _ in range(cfg.epochs):
        s.run_epoch(train, held)
    assert len(seen) == 4 // arch_every  # alpha steps only after the warm-up epoch, every k-th batch
    res = s.result()
    assert res.within_budget == {"fakehw": True}
    assert 0.0 <= res.history[-1]["heldout_acc_argmax"] <= 1.0


@pytest.mark.parametrize("bad", [dict(penalty_cost="mean"), dict(projection="lagrange"), dict(arch_every=0),
                                 dict(kd_weight=1.5), dict(kd_temperature=0.0), dict(weight_mix="soft"),
                                 dict(arch_objective="fm"), dict(arch_kd_weight=2.0)])
def test_search_config_refuses_unknown_options(bad):
    with pytest.raises(ValueError, match="unknown|arch_every|kd_weight|arch_kd_weight"):
        SearchConfig(**bad)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.6])
def test_budget_prior_starts_alpha_at_the_budget(fraction):
    """alpha_init="budget": expected cost at (not over) the budget from the first step, and as
    uncertain as that allows (uniform when uniform already meets the budget)."""
    model = haloc.models.create("resnet20")
    x = torch.zeros(1, 3, 32, 32)
    specs = haloc.decomposable_layers(model, x)
    space = build_rank_space(specs, "step", step=4)
    table = haloc.flops_cost_table(specs, space.candidates, haloc.flops(model, x), fraction)
    uniform = SupernetSearch(model, space, [table], SearchConfig(alpha_init="uniform"))
    prior = SupernetSearch(model, space, [table], SearchConfig(alpha_init="budget"))
    start = uniform.expected_costs()[0] / table.budget
    ratio = prior.expected_costs()[0] / table.budget
    if start > 1.0:
        assert ratio == pytest.approx(1.0, abs=1e-4) and prior.alpha_entropy() < uniform.alpha_entropy()
        for layer in prior.supernet.layers().values():  # cheaper candidates are more likely
            assert all(a >= b - 1e-6 for a, b in zip(layer.alpha.tolist(), layer.alpha.tolist()[1:]))
    else:
        assert ratio == pytest.approx(start) and prior.alpha_entropy() == pytest.approx(uniform.alpha_entropy())
    with pytest.raises(ValueError, match="alpha_init"):
        SearchConfig(alpha_init="zeros")


def test_sampled_readout_picks_the_best_heldout_architecture_within_budget():
    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model)
    space = build_rank_space(specs, "step", step=8)
    table = latency_like_table(specs, space.candidates).with_budget_fraction(0.6)
    train, held = tiny_loaders()
    s = SupernetSearch(model, space, [table], SearchConfig(epochs=1, warmup_epochs=0, steps_per_epoch=2,
                                                          readout_samples=4, heldout_eval=False))
    s.run_epoch(train, held)
    res = s.result()
    assert 2 <= len(res.readout) <= 5 and res.readout[0]["source"] == "argmax"
    best = max(r["heldout_top1"] for r in res.readout)
    chosen = next(r for r in res.readout if r["ranks"] == res.all_ranks)
    assert chosen["heldout_top1"] == best
    for r in res.readout:
        assert table.cost_of(r["ranks"], space.candidates) <= table.budget * (1 + 1e-9)
    acc, _ = s.architecture_accuracy(res.all_ranks, held)
    assert acc == pytest.approx(chosen["heldout_top1"])  # the read-out's figure is reproducible
    assert s.result().all_ranks == res.all_ranks  # same seed and epoch: same samples


def test_readme_core_library_snippet_runs():
    """The guide's "Using the core library without Ray" code (docs/guide.md), with a shorter search."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "guide.md").read_text()
    start = text.index("## 6. Using the core library without Ray")
    code = text[text.index("```python", start) + len("```python"):text.index("```", text.index("```python", start) + 9)]
    assert "haloc.search(" in code and "SearchConfig(epochs=5)" in code
    code = code.replace("SearchConfig(epochs=5)", "SearchConfig(epochs=1, warmup_epochs=0, steps_per_epoch=2, "
                                                  "readout_samples=2)")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["result"].within_budget == {"flops": True}


def test_projection_steps_over_a_plateau_of_the_violated_table():
    """Two targets: on "b" the next smaller candidate costs the same (a staircase plateau), so only a
    jump two candidates down saves anything there; the projection must still reach b's budget."""
    cands = {"l1": (8, 16, 24, 32), "l2": (8, 16, 24, 32)}
    a = CostTable("a", {n: (1.0, 2.0, 3.0, 4.0) for n in cands}, 0.0, budget=8.0)
    b = CostTable("b", {n: (1.0, 1.0, 2.0, 2.0) for n in cands}, 0.0, budget=3.0)
    probs = {n: [0.25] * 4 for n in cands}
    chosen = project_to_budget({n: 32 for n in cands}, probs, cands, [a, b], fill_tolerance=None)
    assert b.cost_of(chosen, cands) <= 3.0 and a.cost_of(chosen, cands) <= 8.0
    assert sorted(chosen.values()) == [16, 32]  # one layer gives way, across the plateau, the other keeps its rank


def test_kd_weight_steps_pull_the_supernet_toward_the_original():
    """kd_weight 1: the weight steps learn the original's soft outputs, not the (random) labels."""
    import torch.nn.functional as F

    model = haloc.models.create("resnet20").eval()
    specs = haloc.decomposable_layers(model)
    space = build_rank_space(specs, "step", step=8)
    table = latency_like_table(specs, space.candidates).with_budget_fraction(0.8)
    train, held = tiny_loaders()
    x = next(iter(held))[0]

    def kl_to_original(kd_weight):
        torch.manual_seed(0)
        s = SupernetSearch(model, space, [table], SearchConfig(epochs=3, warmup_epochs=3, steps_per_epoch=6,
                                                              fm_weight=0.0, kd_weight=kd_weight))
        for _ in range(3):
            s.seed_loaders(train, held)
            s.run_epoch(train, held)
        assert s.history[-1]["seconds"]["teacher"] > 0 or kd_weight == 0  # the teacher ran only for KD
        student = s.searched_model(s.supernet.argmax_ranks())
        haloc.reestimate_batchnorm(student, held)
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(student(x), 1), F.softmax(model(x), 1), reduction="batchmean"))

    with_kd, without = kl_to_original(1.0), kl_to_original(0.0)
    assert with_kd < without


def resnet20_setup(fraction):
    """An untrained ResNet-20 in eval mode, its specs, a step-8 rank space and a latency-like table."""
    model = haloc.models.create("resnet20").eval()
    specs = haloc.decomposable_layers(model)
    space = build_rank_space(specs, "step", step=8)
    return model, specs, space, latency_like_table(specs, space.candidates).with_budget_fraction(fraction)


def test_blockwise_error_is_zero_for_whole_layers_and_grows_with_truncation():
    """Each block is fed the original's input to it: the error of the whole-layer architecture is
    zero, and truncating one layer shows only that layer's block error."""
    model, specs, space, table = resnet20_setup(0.8)
    s = SupernetSearch(model, space, [table], SearchConfig(train_weights=False, arch_objective="blockwise"))
    s.supernet.eval()
    x = torch.randn(4, 3, 32, 32)
    whole = {n: c[-1] for n, c in space.candidates.items()}
    one = dict(whole, **{"layer2.1.conv1": space.candidates["layer2.1.conv1"][0]})
    every = {n: c[0] for n, c in space.candidates.items()}
    errors = {}
    for name, ranks in (("whole", whole), ("one", one), ("every", every)):
        s.supernet.fix(ranks)
        with torch.no_grad():
            errors[name] = float(s.blockwise_error(x))
    assert errors["whole"] < 1e-8
    assert errors["one"] > 1e-4
    assert errors["every"] > 5 * errors["one"]  # one block of nine against all of them


def test_blockwise_alpha_steps_pull_toward_ranks_that_keep_the_blocks():
    """Without a cost term, the blockwise data term alone moves alpha toward larger ranks."""
    model, specs, space, table = resnet20_setup(0.8)
    train, held = tiny_loaders()
    s = SupernetSearch(model, space, [table], SearchConfig(
        epochs=2, train_weights=False, arch_objective="blockwise", lam=0.0, alpha_init="uniform",
        arch_lr=0.1, arch_every=1, steps_per_epoch=4, tau_start=1.0, tau_end=1.0))

    def mean_rank_fraction():
        return sum(sum(p * r / c[-1] for p, r in zip(s.supernet.probabilities()[n], c))
                   for n, c in space.candidates.items()) / len(space.candidates)

    start = mean_rank_fraction()
    for _ in range(2):
        s.run_epoch(train, held)
    assert mean_rank_fraction() > start + 0.05
    assert s.history[-1]["heldout_acc"] is None  # no whole-network forward in the alpha steps


def test_blockwise_readout_keeps_the_candidate_with_the_smallest_blockwise_error():
    model, specs, space, table = resnet20_setup(0.6)
    train, held = tiny_loaders()
    s = SupernetSearch(model, space, [table], SearchConfig(
        epochs=1, train_weights=False, arch_objective="blockwise", steps_per_epoch=2, readout_samples=4))
    s.run_epoch(train, held)
    res = s.result()
    assert len(res.readout) >= 2 and all("heldout_blockwise" in r for r in res.readout)
    best = min(res.readout, key=lambda r: r["heldout_blockwise"])
    assert res.all_ranks == best["ranks"] and res.within_budget == {"fakehw": True}


def test_arch_kd_weight_one_makes_the_alpha_steps_ignore_the_labels():
    """arch_kd_weight 1: the alpha steps' data term is the KL to the original's outputs alone."""
    model, specs, space, table = resnet20_setup(0.6)
    train, held = tiny_loaders()
    x = torch.cat([b[0] for b in held])
    probabilities = []
    for kd, label_seed in ((1.0, 0), (1.0, 1), (0.0, 1)):
        labels = torch.randint(0, 10, (len(x),), generator=torch.Generator().manual_seed(label_seed))
        held_l = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, labels), batch_size=16)
        s = SupernetSearch(model, space, [table], SearchConfig(epochs=1, train_weights=False, arch_kd_weight=kd,
                                                              steps_per_epoch=3, arch_every=1, arch_lr=0.1))
        s.run_epoch(train, held_l)
        probabilities.append(s.supernet.probabilities())
    same = probabilities[0] == probabilities[1]
    assert same and probabilities[0] != probabilities[2]


def test_blockwise_objective_refuses_a_block_that_returns_no_tensor():
    """A user's block with a tuple output cannot be compared: one clear error naming it and the way out."""
    import torch.nn as nn

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y, y

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.pair = Pair()
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            y = self.pair(self.stem(x))[0]
            return self.head(y.mean(dim=(2, 3)))

    model = Net().eval()
    x = torch.randn(2, 3, 8, 8)
    specs = {n: s for n, s in haloc.decomposable_layers(model, x).items() if n == "pair.conv"}
    space = build_rank_space(specs, "step", step=4)
    table = latency_like_table(specs, space.candidates).with_budget_fraction(0.8)
    s = SupernetSearch(model, space, [table], SearchConfig(train_weights=False, arch_objective="blockwise"),
                       specs=specs)
    with pytest.raises(ValueError, match="block 'pair' returns tuple.*supernet search mode"):
        s.blockwise_error(x)


def test_fraction_prior_starts_alpha_at_the_uniform_allocation_that_fits_the_budget():
    from haloc.baselines import uniform_ranks

    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model)
    space = build_rank_space(specs, "step", step=8)
    table = latency_like_table(specs, space.candidates).with_budget_fraction(0.5)
    s = SupernetSearch(model, space, [table], SearchConfig(alpha_init="fraction", train_weights=False))
    start = s.supernet.argmax_ranks()
    assert start == uniform_ranks(specs, space.candidates, [table]).ranks
    assert table.cost_of(start, space.candidates) <= table.budget
    probs = s.supernet.probabilities()["layer3.0.conv2"]
    peak = probs.index(max(probs))
    assert all(probs[i] >= probs[i + 1] for i in range(peak, len(probs) - 1))  # falls off away from the peak


def exact_search(fraction=0.6, **fields):
    model, specs, space, table = resnet20_setup(fraction)
    cfg = haloc.search_config("blockwise", **{"arch_solver": "exact", "epochs": 1, **fields})
    return SupernetSearch(model, space, [table], cfg), space, table


def test_exact_solver_finds_less_blockwise_error_than_uniform_ranks_within_the_budget():
    """The exact solver's ranks have the least blockwise error that fits the budget: on the batches it
    measured, no other allocation that fits (here uniform ranks, and a gradient search's) does better."""
    from haloc.baselines import uniform_ranks

    s, space, table = exact_search()
    train, held = tiny_loaders()
    s.run_epoch(train, held)
    res = s.result()
    assert res.within_budget == {"fakehw": True}
    assert res.all_ranks == s.supernet.argmax_ranks()
    batches = [(x, y) for x, y in list(held)[:s.cfg.table_batches]]  # the batches the tables measured
    exact = s.architecture_blockwise_error(res.all_ranks, batches)
    assert exact == pytest.approx(s.history[-1]["heldout_ce"], rel=1e-5)
    uniform = uniform_ranks(s.specs, space.candidates, [table]).ranks
    assert table.cost_of(uniform, space.candidates) <= table.budget
    assert exact <= s.architecture_blockwise_error(uniform, batches) + 1e-6
    g = SupernetSearch(s.original, space, [table], haloc.search_config("blockwise", epochs=1, steps_per_epoch=4))
    g.run_epoch(train, held)
    assert exact <= s.architecture_blockwise_error(g.result().all_ranks, batches) + 1e-6
    # the history reads like a gradient search's: expected cost of the answer, a decided alpha
    assert s.history[-1]["expected_fakehw"] == pytest.approx(res.predicted_cost["fakehw"], rel=1e-6)
    assert s.history[-1]["alpha_entropy"] < 1e-6


def test_exact_solver_tables_join_a_blocks_layers():
    """A residual block's two convs are measured together (every pair of candidates), fc alone."""
    s, space, _table = exact_search()
    groups = dict((tuple(m), b) for b, m in s.solver.error_groups())
    assert ("layer1.0.conv1", "layer1.0.conv2") in groups and ("fc",) in groups
    s.solver.measure_error_tables(torch.randn(8, 3, 32, 32))
    tables = s.solver.error_tables()
    pair = tables[("layer3.0.conv1", "layer3.0.conv2")]
    c1, c2 = space.candidates["layer3.0.conv1"], space.candidates["layer3.0.conv2"]
    assert pair.shape == (len(c1), len(c2))
    assert float(pair[-1, -1]) < float(pair[0, -1]) and float(pair[-1, -1]) < float(pair[-1, 0])
    assert float(pair[0, 0]) > float(pair[-1, -1])


def test_exact_search_resumes_from_its_checkpoint_with_its_tables():
    train, held = tiny_loaders()
    a, space, table = exact_search(epochs=2)
    a.run_epoch(train, held)
    b = SupernetSearch(a.original, space, [table], a.cfg)  # the same model: its blocks are the tables' source
    b.load_state_dict(a.state_dict())
    assert b.solver._table_count == a.solver._table_count == a.cfg.table_batches  # batches measured
    for s in (a, b):
        s.seed_loaders(train, held, epoch=1)
        s.run_epoch(train, held)
    assert a.result().all_ranks == b.result().all_ranks
    assert a.solver._table_count == b.solver._table_count == 2 * a.cfg.table_batches


def test_exact_solver_needs_the_blockwise_objective_without_weight_training():
    with pytest.raises(haloc.BadInputError, match="arch_solver 'exact' needs"):
        SearchConfig(arch_solver="exact")  # the CE objective, weights trained
    with pytest.raises(haloc.BadInputError, match="arch_solver 'exact' needs"):
        SearchConfig(arch_solver="exact", arch_objective="blockwise", train_weights=True)
    with pytest.raises(haloc.BadInputError, match="unknown"):
        SearchConfig(arch_solver="annealing")


def test_branch_block_error_divides_by_what_the_blocks_layers_add():
    """block_error "branch": a residual block's error is scaled by its branch's power (its output less
    the output with its convs silenced), smaller than the whole output's, so the same truncation
    weighs more; a block that is one layer (fc) is scaled by its whole output either way."""
    model, specs, space, table = resnet20_setup(0.6)
    x = torch.randn(8, 3, 32, 32)
    scales = {}
    for kind in ("output", "branch"):
        s = SupernetSearch(model, space, [table], haloc.search_config("blockwise", block_error=kind))
        scales[kind] = {n: float(v[3]) for n, v in s._block_io(x).items()}
    assert scales["branch"]["fc"] == pytest.approx(scales["output"]["fc"])
    residual = [n for n in scales["output"] if n.startswith("layer")]
    assert all(scales["branch"][n] < scales["output"][n] for n in residual)
    with pytest.raises(haloc.BadInputError, match="block_error"):
        SearchConfig(block_error="layer")
