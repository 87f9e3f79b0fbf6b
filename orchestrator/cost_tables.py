"""Cost tables and the rank space of a search, built on the driver from the store's LUTs (or FLOPs).

    specs = haloc.models.layer_specs("resnet20")
    layout, cpu = RunLayout(store, run_id), get_profile("cpu")
    space = search_rank_space(layout, specs, [cpu], mode="latency")
    tables = cost_tables(layout, "resnet20", specs, space, [cpu], budget=0.5)

A latency table's layer costs are b x (LUT latency of each candidate rank) and its fixed cost is a,
from the hardware's end-to-end calibration (`<run>/luts/<hw>.calibration.json`), so that the table
predicts the whole model's latency. Without a calibration, fixed = 0 and b = 1: the budget is then a
fraction of the decomposable layers' summed LUT latency only, which `meta["calibrated"]` records.
The run's layout and its HardwareProfile objects come from the caller (the runner resolves both once,
`RunContext`): nothing here looks a profile up by name.

Rank space over several hardware targets: the UNION of each target's latency-sensitive candidates
(each thinned to `max_candidates` first). An intersection is often only {max_rank} (staircases of a
CPU and a systolic array rarely share steps), which leaves nothing to search; with the union each
target still finds its own step edges, and a rank that wastes latency on one target is simply
priced correctly by that target's table. `merge="intersection"` is there for comparison.
"""
from __future__ import annotations

from haloc.errors import BadInputError

FLOPS = "flops"
METRICS = ("latency", FLOPS)
MERGES = ("union", "intersection")


def load_checked_lut(layout, profile, specs: dict):
    """The LUT of `profile` in `layout` (an orchestrator.run_layout.RunLayout), or BadInputError naming
    the hardware, the missing layers and the fix."""
    lut = layout.latency_table(profile.name)
    missing = lut.missing_layers(specs, profile.batch_size)
    if missing:
        raise BadInputError(
            f"the LUT of hardware {profile.name!r} ({layout.lut(profile.name)}) lacks {len(missing)} layer(s) of "
            f"the model: {missing[:6]}{' ...' if len(missing) > 6 else ''}; profile the model on {profile.name!r} "
            "first (the profile stage, orchestrator.stages.profiling.profile_model) or use --budget-metric flops")
    return lut


def search_rank_space(layout, specs: dict, profiles: list, mode: str = "step", step: int = 8,
                      rel_tol: float = 0.02, max_candidates: int | None = None, merge: str = "union"):
    """The candidate ranks of every layer: constant `step`, or from the LUT curves of `profiles` (the
    targets' HardwareProfiles, merged); `layout` may be None in step mode."""
    from haloc.rank_space import RankSpace, build_rank_space

    if mode == "step":
        return build_rank_space(specs, "step", step=step)
    if mode != "latency":
        raise BadInputError(f"rank space mode {mode!r} unknown; use 'step' or 'latency'")
    if merge not in MERGES:
        raise BadInputError(f"rank space merge {merge!r} unknown; use one of {MERGES}")
    if not profiles:
        raise BadInputError("rank space mode 'latency' needs at least one hardware target with a LUT")
    spaces = []
    for profile in profiles:
        lut = load_checked_lut(layout, profile, specs)
        curves = {n: lut.curve(s, profile.batch_size) for n, s in specs.items()}
        spaces.append(build_rank_space(specs, "latency", curves=curves, rel_tol=rel_tol,
                                       max_candidates=max_candidates).candidates)
    merged = {}
    for name in specs:
        sets = [set(s[name]) for s in spaces]
        ranks = set.union(*sets) if merge == "union" else set.intersection(*sets)
        merged[name] = tuple(sorted(ranks | {specs[name].max_rank}))
    return RankSpace(merged)


def latency_table(layout, profile, specs: dict, candidates: dict, budget: float, margin: float | None = None):
    """A CostTable in ms for `profile`'s hardware: b x LUT latency per candidate, fixed a; budget a fraction.

    The search aims `margin` below the budget (None: the profile's `search_margin`, from the
    calibration's held-out error), and `within_budget` is still judged against the budget itself."""
    from haloc.hardware_loss import CostTable

    hardware, batch = profile.name, profile.batch_size
    lut = load_checked_lut(layout, profile, specs)
    cal = layout.read_calibration(hardware)
    a, b = (cal.a_ms, cal.b) if cal else (0.0, 1.0)
    costs = {n: tuple(b * ms for ms in lut.candidate_latencies(specs[n], cands, batch))
             for n, cands in candidates.items()}
    meta = {"hardware": hardware, "batch": batch, "calibrated": cal is not None,
            "note": "fixed = calibration a, layers x b" if cal else
            "no calibration: fixed cost 0, budget is a fraction of the decomposable layers' LUT sum"}
    table = CostTable(hardware, costs, fixed_cost=a, budget=1.0, unit="ms", meta=meta)
    if margin is None:
        margin = profile.search_margin(cal.median_rel_error, cal.worst_under) if cal else profile.search_margin(None)
    # A LUT that failed its gate and was accepted (--accept-noisy-lut) prices the floor with noise too:
    # the search aims at the floor it sees, and validation's measured verdict says whether the budget held.
    # The budget is a fraction of the original as measured (validation judges it so), not as the LUT
    # prices it: the calibrated fit can be several percent off at the original itself.
    return table.with_budget_fraction(budget, clamp=cal is not None and not cal.passed, margin=margin,
                                      reference=cal.original_ms if cal else None)


def flops_table(model, specs: dict, candidates: dict, budget: float):

    import haloc
    from haloc.hardware_loss import flops_cost_table

    spec = haloc.models.ModelSpec.of(model)
    total = haloc.flops(spec.create(), spec.example())
    return flops_cost_table(specs, candidates, total, budget)


def cost_tables(layout, model, specs: dict, rank_space, profiles: list, budget: float, metric: str = "latency",
                margin: float | None = None) -> list:
    """One CostTable per target profile (one FLOPs table for the FLOPs metric, `profiles` unused), each
    with budget x its original cost. FLOPs are counted exactly: no margin; latency tables aim `margin`
    below (None: each profile's)."""
    if metric not in METRICS:
        raise BadInputError(f"budget metric {metric!r} unknown; use one of {METRICS}")
    if metric == FLOPS:
        return [flops_table(model, specs, rank_space.candidates, budget)]
    return [latency_table(layout, p, specs, rank_space.candidates, budget, margin) for p in profiles]


def reachable_floors(layout, model, profiles: list, metric: str = "latency", rank_mode: str = "latency",
                     rank_step: int = 8) -> dict[str, float]:
    """{target: the smallest cost fraction any architecture of the search's rank space reaches}:
    budgets below it cannot be met (what the search stage would refuse)."""
    import haloc

    specs = haloc.models.layer_specs(model)
    if metric == FLOPS:
        space = search_rank_space(None, specs, [], "step", rank_step)
        table = flops_table(model, specs, space.candidates, 1.0)
        return {FLOPS: table.min_cost / table.original_cost}
    space = search_rank_space(layout, specs, profiles, rank_mode, rank_step)
    out = {}
    for p in profiles:
        table = latency_table(layout, p, specs, space.candidates, 1.0)
        out[p.name] = table.min_cost / table.reference_cost
    return out
