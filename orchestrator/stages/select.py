"""The select stage: per (hardware target(s), budget) the best architecture across seeds.

    configs = select_configs(trials, model="resnet20")      # pure: trial records -> configs (dicts)
    write_selected(RunLayout("runs", "r1"), configs)         # <run>/selected.json, atomically

Each config is a `SelectedConfig` (orchestrator.artifacts) in its dict form.

The best trial of a cell is the one with the highest held-out accuracy of its selected architecture,
among trials whose selection meets every budget (if none does, among all, flagged). Beside it: the
mean and standard deviation over the cell's trials (seeds) of that accuracy and of the predicted
cost per target, and the rank agreement, the mean over pairs of trials of the share of layers on
which both chose the same rank (1.0: every seed found the same architecture). A cell of one trial
has no spread: its standard deviations and rank agreement are None, not a measured 0 or 1.

Each config's `search` says how it was searched: {"mode": the search mode, "deterministic": true
when the cell is the one run of a deterministic mode (blockwise-exact: one trial per cell, its
`seeds` the one seed that drew the held-out batches)}. A run searched per seed in that mode before
it ran once (its trials restored) keeps its per-seed cell, with "deterministic": false.
"""
from __future__ import annotations

import itertools
import statistics

from haloc.errors import BadInputError

from ..artifacts import SelectedConfig, parse_targets
from ..run_layout import RunLayout
from ..run_spec import DETERMINISTIC_SEARCH_MODES


def rank_agreement(rank_sets: list[dict[str, int]]) -> float:
    """Mean pairwise share of layers with equal rank over the layers both name; 1.0 for < 2 sets."""
    if len(rank_sets) < 2:
        return 1.0
    shares = []
    for a, b in itertools.combinations(rank_sets, 2):
        layers = set(a) | set(b)
        shares.append(sum(a.get(n) == b.get(n) for n in layers) / len(layers) if layers else 1.0)
    return sum(shares) / len(shares)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for one value)."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def _meets_budget(trial: dict) -> bool:
    return bool(trial.get("within_budget")) and all(trial["within_budget"].values())


def _spread(values: list[float], single: bool) -> tuple[float, float | None]:
    """(mean, std) over a cell's trials; the std of one trial is None: nothing varied to measure it."""
    m, s = mean_std(values)
    return m, None if single else s


def select_cell(trials: list[dict], mode: str = "supernet") -> dict:
    """The summary of one (targets, budget) cell from its finished trial records, searched in `mode`."""
    if not trials:
        raise BadInputError("select: a (targets, budget) cell has no finished trial; rerun the search stage")
    pool = [t for t in trials if _meets_budget(t)] or trials
    best = max(pool, key=lambda t: (t["selected_heldout_acc"], -t["seed"]))  # ties: the smallest seed
    single = len(trials) == 1
    acc_mean, acc_std = _spread([t["selected_heldout_acc"] for t in trials], single)
    cost = {}
    for name in best["predicted_cost"]:
        m, s = _spread([t["predicted_cost"][name] for t in trials], single)
        cost[name] = {"mean": m, "std": s}
    return {
        "targets": list(parse_targets(best["targets"])), "budget": best["budget"],
        "seeds": sorted(t["seed"] for t in trials), "best_seed": best["seed"],
        "trial_id": best["trial_id"], "ranks": best["ranks"], "all_ranks": best["all_ranks"],
        "predicted_cost": best["predicted_cost"], "budget_abs": best["budget_abs"],
        "aimed_abs": best.get("aimed_abs") or {}, "searched_state": best.get("searched_state"),
        "within_budget": _meets_budget(best), "heldout_acc": best["selected_heldout_acc"],
        "heldout_acc_mean": acc_mean, "heldout_acc_std": acc_std, "predicted_cost_over_seeds": cost,
        "rank_agreement": None if single else rank_agreement([t["all_ranks"] for t in trials]),
        "lam": best.get("lam"), "beta": best.get("beta"),
        "search": {"mode": mode, "deterministic": single and mode in DETERMINISTIC_SEARCH_MODES},
    }


def select_configs(trials: list[dict], model: str, mode: str = "supernet") -> list[dict]:
    """One config per (targets, budget) present among the finished trials (searched in `mode`), in a
    stable order."""
    done = [t for t in trials if t.get("status") == "done"]
    cells: dict[tuple[str, float], list[dict]] = {}
    for t in done:
        cells.setdefault((str(t["targets"]), float(t["budget"])), []).append(t)
    missing = sorted({(str(t["targets"]), float(t["budget"])) for t in trials} - set(cells))
    if missing:
        raise BadInputError(f"select: no finished trial for (targets, budget) {missing}; rerun the search "
                            "stage with the same run id to resume it")
    return [SelectedConfig.from_dict(select_cell(cells[k], mode), model).to_dict() for k in sorted(cells)]


def write_selected(layout: RunLayout, configs: list[dict], **info) -> str:
    """Write `<run>/selected.json` atomically; returns its path in the store."""
    return layout.write_selected(configs, **info)


def run_select(layout: RunLayout, model: str) -> list[dict]:
    """Read the search stage's trial records, select, write selected.json; returns the configs."""
    doc = layout.read_trials_doc()
    if doc is None:
        layout.read_trials()  # raises, naming the missing trials.json
    mode = (doc.get("spec") or {}).get("mode", "supernet")  # a run searched before modes existed: supernet
    configs = select_configs(doc["trials"], model, mode)
    layout.write_selected(configs)
    return configs
