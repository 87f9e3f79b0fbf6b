"""The stages of a pipeline run, in order, and where each stage's own typed spec is made from the
run's flat RunSpec: the fields that come straight from a knob are its `view` (each knob says where it
goes, orchestrator.run_spec); a stage adds only what it computes (the model's spec, the data's config).

    weights -> profile -> search -> select -> finetune -> validate -> report

A stage object has a `name` and `run(ctx) -> info` (a small JSON dict the manifest records). The
runner (orchestrator.runner) loops over `STAGES`; each stage reads what earlier ones wrote through
`ctx.layout` (orchestrator.run_layout) and calls its own module, never another stage's.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..run_layout import WEIGHTS, RunLayout
from ..run_spec import RunSpec, stage_inputs, view


@dataclass
class RunContext:
    spec: RunSpec
    layout: RunLayout
    manifest: object  # orchestrator.manifest.RunManifest
    console: object  # the runner's rich Console: stages show lines through `show`, and hand it only to live bars
    profiles: dict  # {name: HardwareProfile}, resolved once per run
    report: dict | None = None  # set by the report stage
    progress: object = None  # progress(event): orchestrator.run_output's lines (None: silent)
    live: bool = False  # a terminal with progress on: live bars and tables instead of lines

    def show(self, line) -> None:
        """A line (rich markup) or a renderable for the user: the runner's output shows it, not the stage."""
        self.console.print(line)

    def say(self, event: dict) -> None:
        if self.progress is not None:
            self.progress(event)

    def data_config(self) -> dict:
        """The run's data set as haloc.data.DataConfig fields: the one shape every stage receives."""
        s = self.spec
        return dict(kind=s.dataset, root=s.data, image_size=s.image_size, num_classes=s.num_classes,
                    demo_train=s.demo_train, demo_val=s.demo_val, seed=0)


class Stage:
    name: str = ""
    # the RunSpec fields this stage is the first to read (a change redoes it and what follows), from
    # their declarations (orchestrator.run_spec.knob)
    inputs: tuple[str, ...] = ()

    def run(self, ctx: RunContext) -> dict:
        raise NotImplementedError


class WeightsStage(Stage):
    name = "weights"
    # what defines the original model and its data: a change makes every artifact wrong (refused)
    inputs = stage_inputs("weights")

    def spec(self, ctx: RunContext):
        from ..train_jobs import Workers
        from .weights import DEMO_TARGET_TOP1, WeightsSpec

        s, fields = ctx.spec, view(ctx.spec, "weights")  # the knobs' own fields; what follows is computed
        target = DEMO_TARGET_TOP1 if s.dataset == "demo" else None  # the demo's data: a real baseline reaches it
        return WeightsSpec(**dict(fields, train=dict(fields["train"], log_every=0)), model=s.model_spec,
                           data=ctx.data_config(), workers=Workers(num_workers=s.finetune_workers), target_top1=target)

    def run(self, ctx: RunContext) -> dict:
        from .weights import run_weights

        return run_weights(ctx.layout, self.spec(ctx), ctx.show)


class ProfileStage(Stage):
    name = "profile"
    inputs = stage_inputs("profile")

    def run(self, ctx: RunContext) -> dict:
        from hw_profiles.lut import noisy_rows

        from ..cost_tables import reachable_floors
        from ..verdicts import gate_message, noisy_rows_text
        from .profiling import calibrate, profile_model

        s, profiles = ctx.spec, list(ctx.profiles.values())

        results = profile_model(ctx.layout, s.model_spec, profiles, batch=s.profile_batch,
                                rank_step=s.rank_step, progress=ctx.live, console=ctx.console, say=ctx.say)
        cals = calibrate(ctx.layout, s.model_spec, profiles, batch=s.profile_batch,
                         samples=s.calibration_samples, rank_step=s.rank_step, accept_noisy=s.accept_noisy_lut,
                         say=ctx.say)
        for hw, cal in cals.items():
            verdict = "[green]passed[/]" if cal.passed else "[bold red]FAILED, accepted (--accept-noisy-lut)[/]"
            ctx.show(f"{hw}: LUT calibrated, a={cal.a_ms:.3f} ms, b={cal.b:.3f}, {cal.within_tolerance:.0%} of "
                     f"the calibration's configurations within {cal.tolerance_text} (gate {cal.gate:.0%}: {verdict})")
            low, high = cal.cost_span
            ctx.show(f"{hw}: the calibration's models measured {low:.2f}-{high:.2f} of the original")
            noisy = noisy_rows(ctx.layout.read_lut(hw))
            p = ctx.profiles[hw]
            if not cal.passed:
                ctx.show(f"[bold red]warning[/]: {gate_message(hw, cal, noisy, p.is_simulator, p.max_spread)}")
            elif noisy:
                ctx.show(f"[yellow]warning[/]: {hw}: {noisy_rows_text(noisy, p.max_spread)}; kept with their "
                                  "spread, since the calibrated LUT passed its held-out gate")
        floors = reachable_floors(ctx.layout, s.model_spec, profiles, s.budget_metric,
                                  s.rank_mode if s.budget_metric == "latency" else "step", s.rank_step)
        for target, floor in floors.items():
            low = [b for b in s.budgets if b < floor]
            note = f"; [bold red]budget(s) {low} cannot be met[/]: rerun with --budgets >= {floor:.3f}" if low else ""
            if low and target in cals and not cals[target].passed:
                note = (f"; [bold red]budget(s) {low} are below it[/] on a LUT that failed its gate: the search aims "
                        "at that floor and validation measures whether the budget held")
            ctx.show(f"{target}: the cheapest reachable model costs {floor:.3f} of the original{note}")
        return {"rows": {hw: r.total_rows for hw, r in results.items()},
                "measured": {hw: r.measured_rows for hw, r in results.items()},
                "remeasured": {hw: r.remeasured_rows for hw, r in results.items()},
                "noisy_rows": {hw: r.noisy_rows for hw, r in results.items()},
                "stale_rows": {hw: r.stale_rows for hw, r in results.items()},
                "calibration_cost_span": {hw: list(c.cost_span) for hw, c in cals.items()},
                "calibration_within_10pct": {hw: c.within_10pct for hw, c in cals.items()},
                "gate_passed": {hw: c.passed for hw, c in cals.items()},
                "reachable_floor": floors,
                "profiles": {hw: p.to_dict() for hw, p in ctx.profiles.items()}}


class SearchStage(Stage):
    name = "search"
    inputs = stage_inputs("search")

    def spec(self, ctx: RunContext):
        from .search import SearchSpec

        s = ctx.spec
        return SearchSpec(**view(s, "search"), model=s.model_spec, data=ctx.data_config(), weights=WEIGHTS,
                          rank_mode=s.rank_mode if s.budget_metric == "latency" else "step")

    def run(self, ctx: RunContext) -> dict:
        from .search import run_search

        trials = run_search(ctx.layout, self.spec(ctx), profiles=ctx.profiles, progress=ctx.say)
        failed = [t for t in trials if t["status"] != "done"]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(trials)} search trials did not finish "
                               f"(first: {failed[0].get('error')}); rerun the same command to resume them")
        return {"trials": len(trials)}


class SelectStage(Stage):
    name = "select"

    def run(self, ctx: RunContext) -> dict:
        from .select import run_select

        return {"configs": len(run_select(ctx.layout, ctx.spec.model))}


class FinetuneStage(Stage):
    name = "finetune"
    inputs = stage_inputs("finetune")

    def spec(self, ctx: RunContext):
        from .finetune import FinetuneSpec

        fields = view(ctx.spec, "finetune")
        return FinetuneSpec(**dict(fields, train=dict(fields["train"], log_every=0)), model=ctx.spec.model_spec,
                            data=ctx.data_config(), weights=WEIGHTS)

    def run(self, ctx: RunContext) -> dict:
        from .finetune import run_finetune

        records = run_finetune(ctx.layout, ctx.layout.read_selected(), self.spec(ctx))
        return {"configs": len(records)}


class ValidateStage(Stage):
    name = "validate"
    inputs = stage_inputs("validate")

    def spec(self, ctx: RunContext):
        from .validate import ValidateSpec

        return ValidateSpec(**view(ctx.spec, "validate"), model=ctx.spec.model_spec, data=ctx.data_config(),
                            weights=WEIGHTS)

    def run(self, ctx: RunContext) -> dict:
        from .validate import run_validate

        records = run_validate(ctx.layout, ctx.layout.read_selected(), self.spec(ctx), profiles=ctx.profiles,
                               progress=ctx.say)
        return {"configs": len(records)}


class ReportStage(Stage):
    name = "report"
    inputs = stage_inputs("report")

    def run(self, ctx: RunContext) -> dict:
        from .report import render_table, report_from_store, write_report

        s = ctx.spec
        weights = ctx.manifest.stage("weights").get("info", {})
        report = report_from_store(ctx.layout, ctx.layout.read_selected(), list(ctx.profiles.values()), s.model,
                                   s.data_description or s.dataset, budget_metric=s.budget_metric,
                                   extra={"preset": s.preset, "weights": weights.get("source"),
                                          "search_mode": s.search_mode})
        write_report(ctx.layout, report)
        ctx.show(render_table(report))
        ctx.report = report
        return {"results": len(report.get("results", []))}


STAGES: tuple[Stage, ...] = (WeightsStage(), ProfileStage(), SearchStage(), SelectStage(), FinetuneStage(),
                             ValidateStage(), ReportStage())
STAGE_NAMES = tuple(stage.name for stage in STAGES)


def stages_to_redo(changed: list[str]) -> list[str]:
    """The stages a rerun must redo after the RunSpec keys `changed` (dotted keys: their first part
    counts): the first stage reading one of them and every later stage. Empty: nothing to redo."""
    top = {key.split(".")[0] for key in changed}
    for i, stage in enumerate(STAGES):
        if top & set(stage.inputs):
            return [s.name for s in STAGES[i:]]
    return []

