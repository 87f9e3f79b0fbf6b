"""Selection on hand-made trial records: best by held-out accuracy, seed statistics, rank agreement."""
import json
import math

import pytest

from haloc.errors import BadInputError
from orchestrator.run_layout import RunLayout
from orchestrator.stages.select import mean_std, rank_agreement, select_configs, write_selected


def trial(tid, seed, acc, cost, ranks, budget=0.5, targets="cpu", within=True, status="done"):
    return {"trial_id": tid, "targets": targets, "budget": budget, "seed": seed, "status": status,
            "selected_heldout_acc": acc, "predicted_cost": {"cpu": cost}, "budget_abs": {"cpu": 2.0},
            "within_budget": {"cpu": within}, "ranks": {k: v for k, v in ranks.items() if v < 64},
            "all_ranks": ranks, "lam": None, "beta": None}


def test_rank_agreement_is_the_mean_pairwise_share_of_equal_layers():
    a, b, c = {"x": 1, "y": 2}, {"x": 1, "y": 3}, {"x": 4, "y": 3}
    assert rank_agreement([a]) == 1.0
    assert rank_agreement([a, a]) == 1.0
    assert rank_agreement([a, b]) == 0.5
    assert rank_agreement([a, b, c]) == pytest.approx((0.5 + 0.0 + 0.5) / 3)


def test_mean_std_over_seeds():
    assert mean_std([1.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))


def test_best_seed_by_heldout_accuracy_with_seed_statistics():
    trials = [trial("t0", 0, 0.60, 1.8, {"l1": 16, "l2": 32}),
              trial("t1", 1, 0.70, 1.9, {"l1": 16, "l2": 48}),
              trial("t2", 2, 0.65, 2.0, {"l1": 16, "l2": 32}),
              trial("t3", 0, 0.90, 1.0, {"l1": 64, "l2": 64}, budget=0.8)]
    configs = select_configs(trials, model="resnet20")
    assert [(c["budget"], c["trial_id"]) for c in configs] == [(0.5, "t1"), (0.8, "t3")]
    c = configs[0]
    assert c["targets"] == ["cpu"] and c["model"] == "resnet20" and c["seeds"] == [0, 1, 2] and c["best_seed"] == 1
    assert c["heldout_acc"] == 0.70
    assert c["heldout_acc_mean"] == pytest.approx(0.65)
    assert c["heldout_acc_std"] == pytest.approx(math.sqrt((0.05 ** 2 + 0.05 ** 2) / 3))
    assert c["predicted_cost_over_seeds"]["cpu"]["mean"] == pytest.approx(1.9)
    assert c["rank_agreement"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert c["ranks"] == {"l1": 16, "l2": 48} and c["within_budget"] is True
    assert configs[1]["rank_agreement"] is None and configs[1]["ranks"] == {}  # one trial: nothing to agree


def test_a_trial_over_budget_loses_to_one_within_it():
    trials = [trial("over", 0, 0.99, 2.5, {"l": 64}, within=False), trial("ok", 1, 0.50, 1.9, {"l": 32})]
    (c,) = select_configs(trials, "m")
    assert c["trial_id"] == "ok" and c["within_budget"]
    # every seed over budget: the best is still returned, flagged
    (c,) = select_configs([trials[0]], "m")
    assert c["trial_id"] == "over" and c["within_budget"] is False


def test_joint_targets_split_into_a_list_and_unfinished_cells_are_refused():
    rec = trial("j", 0, 0.5, 1.0, {"l": 8}, targets="cpu+asic")
    assert select_configs([rec], "m")[0]["targets"] == ["cpu", "asic"]
    with pytest.raises(BadInputError, match=r"no finished trial for .*\('cpu', 0.5\).*resume"):
        select_configs([trial("e", 0, None, None, {}, status="error")], "m")
    # an errored seed beside a finished one: the cell is selected from the finished one
    (c,) = select_configs([trial("a", 0, 0.4, 1.0, {"l": 8}), trial("e", 1, None, None, {}, status="error")], "m")
    assert c["seeds"] == [0]


def test_write_selected_is_json_in_the_run_folder(tmp_path):
    configs = select_configs([trial("t", 0, 0.5, 1.0, {"l": 8})], "resnet20")
    path = write_selected(RunLayout(str(tmp_path), "r1"), configs)
    assert path == "r1/selected.json"
    data = json.loads((tmp_path / "r1" / "selected.json").read_text())
    assert data["run_id"] == "r1" and data["configs"][0]["trial_id"] == "t"
    assert [p.name for p in (tmp_path / "r1").iterdir()] == ["selected.json"]  # no temp file left


def test_a_one_trial_cell_has_no_spread_and_says_how_it_was_searched():
    """One trial measures no spread: its standard deviations and rank agreement are None, not a
    measured 0 and 1; a deterministic mode's one trial is marked so, a supernet cell of one seed not."""
    exact = select_configs([trial("t0", 3, 0.8, 1.5, {"l1": 16})], model="resnet20", mode="blockwise-exact")[0]
    assert exact["heldout_acc_std"] is None and exact["rank_agreement"] is None
    assert exact["predicted_cost_over_seeds"]["cpu"] == {"mean": 1.5, "std": None}
    assert exact["search"] == {"mode": "blockwise-exact", "deterministic": True} and exact["seeds"] == [3]
    one_seed = select_configs([trial("t0", 3, 0.8, 1.5, {"l1": 16})], model="resnet20")[0]
    assert one_seed["search"] == {"mode": "supernet", "deterministic": False}
    restored = select_configs([trial("t0", 0, 0.8, 1.5, {"l1": 16}), trial("t1", 1, 0.7, 1.6, {"l1": 16})],
                              model="resnet20", mode="blockwise-exact")[0]
    assert restored["search"]["deterministic"] is False and restored["heldout_acc_std"] == pytest.approx(0.05)
