"""The stage runner: one pipeline run, stage by stage (orchestrator.stages), resumable from the store.

Each stage is marked in the run manifest (`<run>/manifest.json`): running, then done or failed. A
rerun with the same run id skips the stages marked done, and every stage resumes inside itself
(LUT rows already measured, Tune trials already finished, fine-tune checkpoints, validate records).
Every input that can be checked is checked before Ray starts and before anything is written
(orchestrator.preflight): the run id, the hardware, the address, the weights, the store, the data.
Bad input raises BadInputError (the CLI's exit 2).
"""
from __future__ import annotations

import time

from haloc.errors import BadInputError

from .run_spec import RESUME_SAFE, RunSpec
from .stages import STAGES, RunContext


def run_pipeline(spec: RunSpec, console=None) -> dict:
    """Run (or resume) every stage of `spec`; returns the report dict."""
    from rich.console import Console

    from . import preflight
    from .manifest import RunManifest
    from .run_layout import RunLayout
    from .store import Store, validate_run_id

    console = console or Console(stderr=True)
    validate_run_id(spec.run_id)
    preflight.check_model(spec)
    profiles = preflight.resolve_profiles(spec)
    if spec.address:  # a dead or malformed address fails here, before the store is touched
        from .cluster import check_reachable

        check_reachable(spec.address)
    preflight.check_weights(spec)
    store = Store.open(spec.store)
    preflight.check_data(spec, console)
    manifest = RunManifest.load_or_create(store, spec.run_id, spec.to_dict(), resume_safe=RESUME_SAFE)
    ctx = RunContext(spec, RunLayout(store, spec.run_id), manifest, console, profiles)
    label = " [bold yellow](demo: generated data, not real)[/]" if spec.is_demo else ""
    console.print(f"[bold]HALOC run[/] {spec.run_id}: {spec.model} on {spec.dataset}{label}")
    console.print(f"store: {ctx.layout.uri()}")
    _connect(ctx)
    for stage in STAGES:
        if manifest.stage_state(stage.name) == "done" and stage.name != "report":
            console.print(f"[dim]{stage.name}: done in an earlier attempt, skipped[/]")
            continue
        console.rule(f"[bold]{stage.name}")
        manifest.mark(stage.name, "running")
        started = time.monotonic()
        try:
            info = stage.run(ctx) or {}
        except BaseException as e:
            try:
                manifest.mark(stage.name, "failed", error=f"{type(e).__name__}: {str(e)[:300]}")
            except Exception:  # the store itself may be what failed: the stage's own error is the one to raise
                pass
            bad = _unwrap(e)
            if isinstance(bad, BadInputError) and bad is not e:
                raise bad from None  # a bad input found inside a Ray task: exit 2 with its message
            raise
        manifest.mark(stage.name, "done", seconds=round(time.monotonic() - started, 1), **info)
    console.print(f"[bold green]done[/]: report at {ctx.layout.uri('report.html')}")
    return ctx.report


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


def _connect(ctx: RunContext) -> None:
    from .cluster import check_profiles_feasible, connect
    from .ray_compat import dashboard_url

    connect(ctx.spec.address)
    check_profiles_feasible(list(ctx.profiles.values()))
    url = dashboard_url()
    if url:
        ctx.console.print(f"Ray dashboard: http://{url}")
