"""The stages of a pipeline run, in order, and the one place where each stage's own typed spec is
derived from the run's flat RunSpec.

    weights -> profile -> search -> select -> finetune -> validate -> report

A stage object has a `name` and `run(ctx) -> info` (a small JSON dict the manifest records). The
runner (orchestrator.runner) loops over `STAGES`; each stage reads what earlier ones wrote through
`ctx.layout` (orchestrator.run_layout) and calls its own module, never another stage's.
"""
from __future__ import annotations

from dataclasses import dataclass

from .run_layout import WEIGHTS, RunLayout
from .run_spec import RunSpec


@dataclass
class RunContext:
    spec: RunSpec
    layout: RunLayout
    manifest: object  # orchestrator.manifest.RunManifest
    console: object  # rich Console
    profiles: dict  # {name: HardwareProfile}, resolved once per run
    report: dict | None = None  # set by the report stage

    def data_config(self) -> dict:
        """The run's data set as haloc.data.DataConfig fields: the one shape every stage receives."""
        s = self.spec
        return dict(kind=s.dataset, root=s.data, image_size=s.image_size, num_classes=s.num_classes,
                    demo_train=s.demo_train, demo_val=s.demo_val, seed=0)


class Stage:
    name: str = ""

    def run(self, ctx: RunContext) -> dict:
        raise NotImplementedError


class WeightsStage(Stage):
    name = "weights"

    def spec(self, ctx: RunContext):
        from .weights import WeightsSpec

        s = ctx.spec
        train = dict(epochs=s.pretrain_epochs, lr=s.pretrain_lr, batch_size=s.finetune_batch_size,
                     max_steps_per_epoch=s.finetune_steps_per_epoch, log_every=0)
        return WeightsSpec(model=s.model, weights=s.weights, data=ctx.data_config(), train=train)

    def run(self, ctx: RunContext) -> dict:
        from .weights import run_weights

        return run_weights(ctx.layout, self.spec(ctx), ctx.console)


class ProfileStage(Stage):
    name = "profile"

    def run(self, ctx: RunContext) -> dict:
        from .profiling import calibrate, profile_model

        s, profiles = ctx.spec, list(ctx.profiles.values())
        results = profile_model(ctx.layout.store, s.model, profiles, batch=s.profile_batch, run_id=s.run_id,
                                rank_step=s.rank_step, progress=s.progress)
        cals = calibrate(ctx.layout.store, s.model, profiles, batch=s.profile_batch, run_id=s.run_id,
                         samples=s.calibration_samples, rank_step=s.rank_step)
        for hw, cal in cals.items():
            ctx.console.print(f"{hw}: LUT calibrated, a={cal.a_ms:.3f} ms, b={cal.b:.3f}, "
                              f"{cal.within_10pct:.0%} of held-out configurations within 10%")
        return {"rows": {hw: r.total_rows for hw, r in results.items()},
                "measured": {hw: r.measured_rows for hw, r in results.items()},
                "calibration_within_10pct": {hw: c.within_10pct for hw, c in cals.items()}}


class SearchStage(Stage):
    name = "search"

    def spec(self, ctx: RunContext):
        from .search import SearchSpec

        s = ctx.spec
        return SearchSpec(
            model=s.model, hardware=s.hardware, budgets=s.budgets, seeds=s.seeds, budget_metric=s.budget_metric,
            joint=s.multi_target, epochs=s.search_epochs, warmup_epochs=s.search_warmup_epochs,
            steps_per_epoch=s.search_steps_per_epoch, batch_size=s.search_batch_size, penalty=s.penalty,
            lam=s.lam, data=ctx.data_config(), heldout_fraction=s.heldout_fraction, weights=WEIGHTS,
            rank_mode=s.rank_mode if s.budget_metric == "latency" else "step", rank_step=s.rank_step)

    def run(self, ctx: RunContext) -> dict:
        from .search import run_search

        trials = run_search(ctx.layout.store, ctx.spec.run_id, self.spec(ctx))
        failed = [t for t in trials if t["status"] != "done"]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(trials)} search trials did not finish "
                               f"(first: {failed[0].get('error')}); rerun the same command to resume them")
        return {"trials": len(trials)}


class SelectStage(Stage):
    name = "select"

    def run(self, ctx: RunContext) -> dict:
        from .select import run_select

        return {"configs": len(run_select(ctx.layout.store, ctx.spec.run_id, ctx.spec.model))}


class FinetuneStage(Stage):
    name = "finetune"

    def spec(self, ctx: RunContext):
        from .finetune import FinetuneSpec

        s = ctx.spec
        train = dict(epochs=s.finetune_epochs, lr=s.finetune_lr, batch_size=s.finetune_batch_size,
                     kd_weight=s.kd_weight, max_steps_per_epoch=s.finetune_steps_per_epoch, log_every=0)
        return FinetuneSpec(model=s.model, data=ctx.data_config(), num_classes=s.num_classes, weights=WEIGHTS,
                            num_workers=s.finetune_workers, train=train)

    def run(self, ctx: RunContext) -> dict:
        from .finetune import run_finetune

        records = run_finetune(ctx.layout.store, ctx.spec.run_id, ctx.layout.read_selected(), self.spec(ctx))
        return {"configs": len(records)}


class ValidateStage(Stage):
    name = "validate"

    def spec(self, ctx: RunContext):
        from .validate import ValidateSpec

        s = ctx.spec
        return ValidateSpec(model=s.model, hardware=s.hardware, data=ctx.data_config(), num_classes=s.num_classes,
                            weights=WEIGHTS, latency_batch=s.latency_batch)

    def run(self, ctx: RunContext) -> dict:
        from .validate import run_validate

        records = run_validate(ctx.layout.store, ctx.spec.run_id, ctx.layout.read_selected(), self.spec(ctx))
        return {"configs": len(records)}


class ReportStage(Stage):
    name = "report"

    def run(self, ctx: RunContext) -> dict:
        from .report import render_table, report_from_store, write_report

        s = ctx.spec
        weights = ctx.manifest.stage("weights").get("info", {})
        report = report_from_store(ctx.layout.store, s.run_id, ctx.layout.read_selected(), list(s.hardware), s.model,
                                   s.dataset, budget_metric=s.budget_metric,
                                   extra={"preset": s.preset, "weights": weights.get("source")})
        write_report(ctx.layout.store, s.run_id, report)
        ctx.console.print(render_table(report))
        ctx.report = report
        return {"results": len(report.get("results", []))}


STAGES: tuple[Stage, ...] = (WeightsStage(), ProfileStage(), SearchStage(), SelectStage(), FinetuneStage(),
                             ValidateStage(), ReportStage())
STAGE_NAMES = tuple(stage.name for stage in STAGES)
