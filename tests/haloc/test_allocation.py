"""haloc.allocation: the least-error ranks under additive budgets, checked against brute force."""
import itertools
import random

import numpy as np
import pytest

from haloc.allocation import min_error_ranks
from haloc.errors import BadInputError
from haloc.hardware_loss import CostTable


def random_problem(rng: random.Random, n_tables: int):
    layers = rng.randint(1, 5)
    cands = {f"l{i}": tuple(sorted(rng.sample(range(1, 20), rng.randint(1, 4)))) for i in range(layers)}
    names, groups, i = list(cands), [], 0
    while i < layers:  # groups of one or two layers, as residual blocks give
        k = rng.randint(1, 2)
        groups.append(tuple(names[i:i + k]))
        i += k
    state = np.random.RandomState(rng.randint(0, 10_000))
    errors = {g: state.rand(*[len(cands[n]) for n in g]) for g in groups}
    tables = []
    for k in range(n_tables):
        costs = {n: tuple(rng.uniform(0, 5) for _ in c) for n, c in cands.items()}
        top = sum(max(v) for v in costs.values())
        tables.append(CostTable(f"t{k}", costs, 1.0, 1.0 + rng.uniform(0.2, 1.0) * top))
    return cands, errors, tables


def total_error(errors, cands, ranks):
    return sum(float(e[tuple(cands[n].index(ranks[n]) for n in g)]) for g, e in errors.items())


def brute_force(cands, errors, tables):
    best = None
    for combo in itertools.product(*cands.values()):
        ranks = dict(zip(cands, combo))
        if all(t.cost_of(ranks, cands) <= t.budget for t in tables):
            e = total_error(errors, cands, ranks)
            if best is None or e < best:
                best = e
    return best


def fits(ranks, cands, tables):
    return all(t.cost_of(ranks, cands) <= t.budget * (1 + 1e-9) for t in tables)


def test_one_budget_gives_the_least_error_that_fits():
    rng = random.Random(0)
    checked = 0
    for _ in range(150):
        cands, errors, tables = random_problem(rng, 1)
        best = brute_force(cands, errors, tables)
        if best is None:
            continue
        ranks = min_error_ranks(errors, cands, tables)
        assert fits(ranks, cands, tables)
        assert total_error(errors, cands, ranks) <= best + 1e-9
        checked += 1
    assert checked > 50


def test_several_budgets_all_hold_and_no_single_change_improves():
    rng = random.Random(1)
    checked = 0
    for _ in range(200):
        cands, errors, tables = random_problem(rng, rng.randint(2, 3))
        if brute_force(cands, errors, tables) is None:
            continue
        ranks = min_error_ranks(errors, cands, tables)
        assert fits(ranks, cands, tables)
        now = total_error(errors, cands, ranks)
        for name, options in cands.items():  # a local optimum at least
            for r in options:
                moved = dict(ranks, **{name: r})
                if fits(moved, cands, tables):
                    assert total_error(errors, cands, moved) >= now - 1e-9
        checked += 1
    assert checked > 25


def test_a_group_is_priced_by_its_joint_error_not_the_sum_of_its_layers():
    """Cutting both layers of a block costs what its joint table says (the branch is lost once), so
    the answer cuts both convs of one block rather than one of each block."""
    cands = {"a1": (1, 8), "a2": (1, 8), "b1": (1, 8), "b2": (1, 8)}
    joint = np.array([[1.0, 0.9], [0.9, 0.0]])  # both cut 1.0, one cut 0.9
    costs = {n: (0.0, 1.0) for n in cands}
    table = CostTable("hw", costs, 0.0, budget=2.0)  # room for two layers at 8
    ranks = min_error_ranks({("a1", "a2"): joint, ("b1", "b2"): joint}, cands, [table])
    assert sorted(ranks.values()) == [1, 1, 8, 8]
    assert ranks["a1"] == ranks["a2"] and ranks["b1"] == ranks["b2"]


def test_a_budget_nothing_meets_returns_the_cheapest_choice():
    cands = {"a": (1, 2, 4)}
    table = CostTable("hw", {"a": (2.0, 3.0, 5.0)}, 1.0, budget=2.0)
    assert min_error_ranks({("a",): np.array([3.0, 2.0, 1.0])}, cands, [table]) == {"a": 1}


def test_bad_tables_are_refused():
    cands = {"a": (1, 2)}
    table = CostTable("hw", {"a": (1.0, 2.0)}, 0.0, budget=2.0)
    with pytest.raises(BadInputError, match="shape"):
        min_error_ranks({("a",): np.zeros(3)}, cands, [table])
    with pytest.raises(BadInputError, match="non-finite"):
        min_error_ranks({("a",): np.array([np.nan, 0.0])}, cands, [table])
    with pytest.raises(BadInputError, match="at least one cost table"):
        min_error_ranks({("a",): np.zeros(2)}, cands, [])
