"""The stage runner: one pipeline run, stage by stage, resumable from the store.

    weights -> profile -> search -> select -> finetune -> validate -> report

Each stage is marked in the run manifest (`<run>/manifest.json`): running, then done or failed. A
rerun with the same run id skips the stages marked done, and every stage resumes inside itself
(LUT rows already measured, Tune trials already finished, fine-tune checkpoints, validate records).
Every input that can be checked is checked before Ray starts: the run id, the store, the hardware
names, the data. Bad input raises BadInputError (the CLI's exit 2).
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass

from haloc.errors import BadInputError

from .run_spec import RESUME_SAFE, RunSpec

STAGES = ("weights", "profile", "search", "select", "finetune", "validate", "report")
WEIGHTS_PATH = "weights/original.pt"  # relative to the run: the original model every stage starts from


@dataclass
class RunContext:
    spec: RunSpec
    store: object  # orchestrator.store.Store
    manifest: object  # orchestrator.manifest.RunManifest
    console: object  # rich Console
    data_root: str | None  # local folder of the data (an s3:// data set synced to the cache)

    def data_config(self) -> dict:
        s = self.spec
        return dict(kind=s.dataset, root=s.data, image_size=s.image_size, num_classes=s.num_classes,
                    demo_train=s.demo_train, demo_val=s.demo_val, seed=0)


def run_pipeline(spec: RunSpec, console=None) -> dict:
    """Run (or resume) every stage of `spec`; returns the report dict."""
    from rich.console import Console

    from .manifest import RunManifest
    from .store import Store, validate_run_id

    console = console or Console(stderr=True)
    validate_run_id(spec.run_id)
    _check_hardware(spec)
    if spec.address:  # a dead or malformed address fails here, before the store is touched
        from .cluster import check_reachable

        check_reachable(spec.address)
    _check_weights(spec)
    store = Store.open(spec.store)
    data_root = _check_data(spec, console)
    manifest = RunManifest.load_or_create(store, spec.run_id, spec.to_dict(), resume_safe=RESUME_SAFE)
    ctx = RunContext(spec, store, manifest, console, data_root)
    label = " [bold yellow](demo: generated data, not real)[/]" if spec.is_demo else ""
    console.print(f"[bold]HALOC run[/] {spec.run_id}: {spec.model} on {spec.dataset}{label}")
    console.print(f"store: {store.uri_of(spec.run_id)}")
    _connect(ctx)
    report = None
    for stage in STAGES:
        if manifest.stage_state(stage) == "done" and stage != "report":
            console.print(f"[dim]{stage}: done in an earlier attempt, skipped[/]")
            continue
        console.rule(f"[bold]{stage}")
        manifest.mark(stage, "running")
        started = time.monotonic()
        try:
            info = _STAGES[stage](ctx) or {}
        except BaseException as e:
            manifest.mark(stage, "failed", error=f"{type(e).__name__}: {str(e)[:300]}")
            bad = _unwrap(e)
            if isinstance(bad, BadInputError) and bad is not e:
                raise bad from None  # a bad input found inside a Ray task: exit 2 with its message
            raise
        if stage == "report":
            report, info = info, {"results": len(info.get("results", []))}
        manifest.mark(stage, "done", seconds=round(time.monotonic() - started, 1), **info)
    console.print(f"[bold green]done[/]: report at {store.uri_of(f'{spec.run_id}/report.html')}")
    return report


def _unwrap(e: BaseException) -> BaseException:
    """The BadInputError inside a Ray task/actor/Tune error, if there is one."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, BadInputError):
            return e
        cause = getattr(e, "cause", None)
        e = cause if isinstance(cause, BaseException) else e.__cause__
    return e


# ---- checks before Ray starts ------------------------------------------------------------------------

def _check_hardware(spec: RunSpec) -> None:
    import haloc
    from hw_profiles.profile import get_profile

    if spec.model not in haloc.models.list_models():
        raise BadInputError(f"model {spec.model!r} unknown; choose one of {haloc.models.list_models()}")
    for hw in spec.hardware:
        get_profile(hw)


def _check_weights(spec: RunSpec) -> None:
    """--weights that cannot be read or do not fit the model fail here, before anything is written
    (the weights stage would find it only after Ray started and the manifest was created)."""
    if not spec.weights or spec.weights == "torchvision":  # torchvision's are checked when fetched
        return
    import haloc

    haloc.models.create(spec.model, weights=spec.weights)  # as the weights stage loads them


# Verifying every image of a real ImageNet (1.28M files) would take hours; above this many files a
# sample is decoded up front and the loaders still reject a corrupt file with its path.
VERIFY_ALL_UP_TO = 20000


def _check_data(spec: RunSpec, console) -> str | None:
    """Local folder of the data set after checking its layout (s3:// is synced to the cache first)."""
    if spec.is_demo:
        if spec.data:
            raise BadInputError("--data was given with the demo data set; drop --data or choose a real data set")
        return None
    if not spec.data:
        raise BadInputError(f"the {spec.dataset} pipeline needs --data (a local folder or s3:// URI), "
                            "or --preset demo for generated data")
    from haloc import data as hdata
    from workers.data_cache import local_data_path

    if "://" in spec.data:
        console.print(f"syncing {spec.data.split('?', 1)[0]} to the local data cache")
    try:
        root = local_data_path(spec.data)
    except OSError as e:
        raise BadInputError(f"--data {spec.data.split('?', 1)[0]!r} cannot be read ({e}); check the path, "
                            "the endpoint and the credentials") from None
    if spec.dataset == "cifar10":
        hdata.cifar10_datasets(root)  # reads every batch: a corrupt one raises naming the file
    elif spec.dataset == "imagenet":
        hdata.check_imagefolder_layout(root)
        from pathlib import Path

        for split in ("train", "val"):
            hdata.verify_image_folder(Path(root) / split, max_files=VERIFY_ALL_UP_TO)
    else:
        raise BadInputError(f"data set {spec.dataset!r} unknown; use imagenet, cifar10 or demo")
    return root


def _connect(ctx: RunContext) -> None:
    from hw_profiles.profile import get_profile

    from .cluster import check_profiles_feasible, connect, dashboard_url

    connect(ctx.spec.address)
    check_profiles_feasible([get_profile(h) for h in ctx.spec.hardware])
    url = dashboard_url()
    if url:
        ctx.console.print(f"Ray dashboard: http://{url}")


# ---- stages --------------------------------------------------------------------------------------------

def _stage_weights(ctx: RunContext) -> dict:
    """Put the original model's weights in the store: from --weights, or trained here first."""
    import ray
    import torch

    import haloc

    spec, path = ctx.spec, f"{ctx.spec.run_id}/{WEIGHTS_PATH}"
    if ctx.store.exists(path):
        return {"source": "store"}
    if spec.weights:
        model = haloc.models.create(spec.model, weights=spec.weights)
        state, info = model.state_dict(), {"source": spec.weights.split("?", 1)[0]}
    else:
        from workers.pretrain import pretrain_original

        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus)(pretrain_original).options(name="pretrain_original")
        train = dict(epochs=spec.pretrain_epochs, lr=spec.pretrain_lr, batch_size=spec.finetune_batch_size,
                     max_steps_per_epoch=spec.finetune_steps_per_epoch, log_every=0)
        ctx.console.print(f"no --weights: training the original {spec.model} for {spec.pretrain_epochs} epochs")
        state, res = ray.get(task.remote(spec.model, ctx.data_config(), train))
        info = {"source": f"trained here for {res['epochs']} epochs", "val": res["val"]}
    buf = io.BytesIO()
    torch.save(state, buf)
    ctx.store.write_bytes(path, buf.getvalue())
    return info


def _stage_profile(ctx: RunContext) -> dict:
    from .profiling import calibrate, profile_model

    spec = ctx.spec
    results = profile_model(ctx.store, spec.model, list(spec.hardware), batch=spec.profile_batch,
                            run_id=spec.run_id, rank_step=spec.rank_step, progress=spec.progress)
    cals = calibrate(ctx.store, spec.model, list(spec.hardware), batch=spec.profile_batch, run_id=spec.run_id,
                     samples=spec.calibration_samples, rank_step=spec.rank_step)
    for hw, cal in cals.items():
        ctx.console.print(f"{hw}: LUT calibrated, a={cal.a_ms:.3f} ms, b={cal.b:.3f}, "
                          f"{cal.within_10pct:.0%} of held-out configurations within 10%")
    return {"rows": {hw: r.total_rows for hw, r in results.items()},
            "measured": {hw: r.measured_rows for hw, r in results.items()},
            "calibration_within_10pct": {hw: c.within_10pct for hw, c in cals.items()}}


def _stage_search(ctx: RunContext) -> dict:
    from .search import SearchSpec, run_search

    s = ctx.spec
    sspec = SearchSpec(
        model=s.model, hardware=s.hardware, budgets=s.budgets, seeds=s.seeds, budget_metric=s.budget_metric,
        joint=s.multi_target, epochs=s.search_epochs, warmup_epochs=s.search_warmup_epochs,
        steps_per_epoch=s.search_steps_per_epoch, batch_size=s.search_batch_size, penalty=s.penalty, lam=s.lam,
        data=s.dataset, data_root=s.data, demo_samples=s.demo_train, demo_image_size=s.image_size,
        demo_classes=s.num_classes, heldout_fraction=s.heldout_fraction, weights=WEIGHTS_PATH,
        rank_mode=s.rank_mode if s.budget_metric == "latency" else "step", rank_step=s.rank_step)
    trials = run_search(ctx.store, s.run_id, sspec)
    failed = [t for t in trials if t["status"] != "done"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(trials)} search trials did not finish "
                           f"(first: {failed[0].get('error')}); rerun the same command to resume them")
    return {"trials": len(trials)}


def _stage_select(ctx: RunContext) -> dict:
    from .select import run_select

    configs = run_select(ctx.store, ctx.spec.run_id, ctx.spec.model)
    return {"configs": len(configs)}


def _selected(ctx: RunContext) -> list[dict]:
    return ctx.store.read_json(f"{ctx.spec.run_id}/selected.json")["configs"]


def _stage_finetune(ctx: RunContext) -> dict:
    from .finetune import FinetuneSpec, run_finetune

    s = ctx.spec
    fspec = FinetuneSpec(model=s.model, data=ctx.data_config(), num_classes=s.num_classes, weights=WEIGHTS_PATH,
                         num_workers=s.finetune_workers,
                         train=dict(epochs=s.finetune_epochs, lr=s.finetune_lr, batch_size=s.finetune_batch_size,
                                    kd_weight=s.kd_weight, max_steps_per_epoch=s.finetune_steps_per_epoch,
                                    log_every=0))
    records = run_finetune(ctx.store, s.run_id, _selected(ctx), fspec)
    return {"configs": len(records)}


def _stage_validate(ctx: RunContext) -> dict:
    from .validate import ValidateSpec, run_validate

    s = ctx.spec
    vspec = ValidateSpec(model=s.model, hardware=s.hardware, data=ctx.data_config(), num_classes=s.num_classes,
                         weights=WEIGHTS_PATH, budget_metric=s.budget_metric, latency_batch=s.latency_batch)
    records = run_validate(ctx.store, s.run_id, _selected(ctx), vspec)
    return {"configs": len(records)}


def _stage_report(ctx: RunContext) -> dict:
    from .report import render_table, report_from_store, write_report

    s = ctx.spec
    weights = ctx.manifest.stage("weights").get("info", {})
    report = report_from_store(ctx.store, s.run_id, _selected(ctx), list(s.hardware), s.model, s.dataset,
                               budget_metric=s.budget_metric,
                               extra={"preset": s.preset, "weights": weights.get("source")})
    write_report(ctx.store, s.run_id, report)
    ctx.console.print(render_table(report))
    return report


_STAGES = {"weights": _stage_weights, "profile": _stage_profile, "search": _stage_search, "select": _stage_select,
           "finetune": _stage_finetune, "validate": _stage_validate, "report": _stage_report}
