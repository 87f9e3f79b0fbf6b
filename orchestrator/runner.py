"""The stage runner: one pipeline run, stage by stage (orchestrator.stages), resumable from the store.

Each stage is marked in the run manifest (`<run>/manifest.json`): running, then done or failed. A
rerun with the same run id skips the stages marked done, and every stage resumes inside itself
(LUT rows already measured, Tune trials already finished, fine-tune checkpoints, validate records).
Every input that can be checked is checked before Ray starts and before anything is written
(orchestrator.preflight): the run id, the hardware, the address, the weights, the store, the data.
Bad input raises BadInputError (the CLI's exit 2).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from haloc.errors import BadInputError

from .run_spec import RESUME_SAFE, RunSpec
from .stages import STAGES, RunContext


def run_pipeline(spec: RunSpec, console=None, reprofile: list[str] | None = None, *, verbose: bool = False,
                 redirect: bool = False) -> dict:
    """Run (or resume) every stage of `spec`; returns the report dict.

    A rerun whose spec differs from the stored one redoes the first stage that reads a changed key
    and every later stage, keeping the earlier ones (orchestrator.stages.stages_to_redo); a change
    of the model or its data is refused. `reprofile`: hardware whose LUTs are measured again ([]:
    every hardware of the run), with every stage after profiling redone.

    Output (orchestrator.run_output): the project's lines on `console`; Ray's worker lines in the
    run's log (`<run>/logs/driver.log`), and with `redirect` (the command line) everything else the
    driver's descriptors 1 and 2 receive as well; `verbose` shows worker lines on the console too.
    """
    from . import interrupts
    from .cluster import disconnect
    from .run_output import RunOutput, terminal_console

    console = console or terminal_console()
    output = RunOutput(console, verbose=verbose, progress=spec.progress)
    interrupts.install()
    failed = True
    try:
        report = _run(spec, output, reprofile, redirect)
        failed = False
        return report
    finally:
        try:
            disconnect()  # the embedded Ray stops with the run, however the run ends
        finally:
            output.end(failed=failed)


def _run(spec: RunSpec, output, reprofile: list[str] | None, redirect: bool) -> dict:
    from . import interrupts, preflight
    from .run_layout import RunLayout
    from .run_output import duration
    from .store import Store, validate_run_id

    console = output.console
    validate_run_id(spec.run_id)
    preflight.check_model(spec)
    profiles = preflight.resolve_profiles(spec)
    if spec.address:  # a dead or malformed address fails here, before the store is touched
        from .cluster import check_reachable

        check_reachable(spec.address)
    preflight.check_data(spec, console)  # before the weights: a torchvision download is the slower check
    preflight.check_weights(spec)
    store = Store.open(spec.store)
    layout = RunLayout(store, spec.run_id)
    if spec.luts_from:
        preflight.check_luts_from(store, spec, profiles)
    _connect(spec, profiles, output, layout, redirect)  # an unoffered resource fails here, before anything is written
    interrupts.install()  # Ray installed its own handlers
    manifest = _open_manifest(layout, spec, console, reprofile)
    layout.write_config(manifest.spec)  # <run>/config.yaml: --config of it reproduces the run
    output.relocate(layout.local_log_path())
    output.name_log()
    if spec.luts_from and manifest.stage_state("profile") != "done":
        copied = layout.copy_luts_from(RunLayout(store, spec.luts_from), list(spec.hardware))
        console.print(f"LUTs from run {spec.luts_from}: {', '.join(copied) or 'none to copy'}")
    ctx = RunContext(spec, layout, manifest, console, profiles, progress=output.event, live=output.live)
    label = " [bold yellow](demo: generated data, not real)[/]" if spec.is_demo else ""
    console.print(f"[bold]HALOC run[/] {spec.run_id}: {spec.model} on {spec.data_description or spec.dataset}{label}")
    console.print(f"store: {ctx.layout.uri()}")
    for stage in STAGES:
        if manifest.stage_state(stage.name) == "done" and stage.name != "report":
            console.print(f"[dim]{stage.name}: done in an earlier attempt, skipped[/]")
            continue
        output.stage_start(stage.name)
        manifest.mark(stage.name, "running")
        started = time.monotonic()
        try:
            info = stage.run(ctx) or {}
        except BaseException as e:
            # A signal may surface wrapped: raised inside Ray's compiled code it becomes a SystemError.
            interrupted = in_chain(e, interrupts.Interrupted)
            if interrupted is None and in_chain(e, KeyboardInterrupt) is not None:
                interrupted = interrupts.from_keyboard_interrupt()  # Ray re-raised our signal as a plain one
            if interrupted is not None:
                interrupted.stage = stage.name
                manifest.mark(stage.name, "interrupted", error=f"interrupted by {signal_name(interrupted.signum)}")
                raise interrupted from None
            try:
                manifest.mark(stage.name, "failed", error=f"{type(e).__name__}: {str(e)[:300]}")
            except Exception:  # the store itself may be what failed: the stage's own error is the one to raise
                pass
            bad = in_chain(e, BadInputError)
            while isinstance(getattr(bad, "cause", None), BadInputError):  # Ray's wrapper of it: its cause
                bad = bad.cause
            if bad is not None and bad is not e:
                raise bad from None  # a bad input found inside a Ray task: exit 2 with its message
            raise
        seconds = time.monotonic() - started
        manifest.mark(stage.name, "done", seconds=round(seconds, 1), **info)
        output.stage_done(stage.name, seconds)
        interrupts.install()  # Tune and Train may have replaced them
    uploaded = _upload_log(layout, output)
    console.print(f"[bold green]done[/] in {duration(output.total())}: report at {ctx.layout.uri('report.html')}"
                  + (f"; log at {uploaded}" if uploaded else ""))
    return ctx.report


def _upload_log(layout, output) -> str | None:
    """A remote store gets the run's log at the end (a local store has it in the run already)."""
    if output.log_path is None:
        return None
    try:
        return layout.upload_log(output.log_path)
    except Exception as e:
        output.console.print(f"note: the run's log stays at {output.log_path} (copying it to the store failed: {e})")
        return None


def _open_manifest(layout, spec: RunSpec, console, reprofile: list[str] | None):
    """The run's manifest for `spec`: created, resumed, or, after a change of spec (or --reprofile),
    with the stages to redo cleared first (their artifacts, then their state: a crash in between
    only clears them again on the next try)."""
    from .manifest import RunManifest, _is_resume_safe, spec_differences
    from .stages import STAGE_NAMES, WeightsStage, stages_to_redo

    stored = RunManifest.read_spec(layout.store, spec.run_id)
    if stored is None:
        return RunManifest.load_or_create(layout.store, spec.run_id, spec.to_dict(), resume_safe=RESUME_SAFE)
    changed = [d for d in spec_differences(stored, spec.to_dict()) if not _is_resume_safe(d, RESUME_SAFE)]
    redo = stages_to_redo(changed)
    if redo[:1] == ["weights"]:
        keys = sorted({d for d in changed if d.split(".")[0] in WeightsStage.inputs})
        shown = {k: {"stored": stored.get(k, "<absent>"), "given": spec.to_dict().get(k, "<absent>")} for k in keys}
        raise BadInputError(
            f"run {spec.run_id!r} in {layout.store.uri} was made with other {', '.join(keys)}: {json.dumps(shown)}. "
            "That changes the model or data every stage starts from; use a new --run-id (add --luts-from "
            f"{spec.run_id} to reuse its LUTs), or rerun with the stored values to resume")
    cleared_hw = []
    if reprofile is not None:
        cleared_hw = list(reprofile) or list(spec.hardware)
        redo = list(STAGE_NAMES[STAGE_NAMES.index("profile"):])
    if redo:
        old = RunManifest.load_or_create(layout.store, spec.run_id, stored)
        redo = [s for s in redo if old.stage_state(s) != "pending"] if reprofile is None else redo
        for stage in redo:
            layout.clear(stage, hardware=cleared_hw)
        reason = f"--reprofile {' '.join(cleared_hw)}" if reprofile is not None else f"changed: {', '.join(changed)}"
        old.reset(redo, reason)
        kept = [s for s in STAGE_NAMES if s not in redo and old.stage_state(s) == "done"]
        console.print(f"rerun of {spec.run_id} ({reason}): keeping {', '.join(kept) or 'nothing'}; "
                      f"redoing {', '.join(redo) or 'nothing'}")
    return RunManifest.load_or_create(layout.store, spec.run_id, spec.to_dict(),
                                      resume_safe=RESUME_SAFE + tuple(changed))


def signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


def in_chain(e: BaseException, kind: type) -> BaseException | None:
    """The first exception of `kind` in `e`'s chain: Ray's `cause` of a task/actor error, then
    __cause__, then __context__ (an exception raised while another was being handled or returned)."""
    todo, seen = [e], set()
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return e
        cause = getattr(e, "cause", None)
        todo += [cause if isinstance(cause, BaseException) else None, e.__cause__, e.__context__]
    return None


def _connect(spec: RunSpec, profiles: dict, output, layout, redirect: bool) -> None:
    import tempfile

    from .cluster import check_profiles_feasible, connect
    from .ray_compat import dashboard_url

    # Ray's start-up output goes to a log already; it moves into the run once the run exists
    output.begin(Path(tempfile.mkdtemp(prefix="haloc-log-")) / "driver.log", redirect=redirect)
    connect(spec.address, py_modules=spec.py_modules)
    output.attach_ray()
    check_profiles_feasible(list(profiles.values()))
    url = dashboard_url()
    if url:
        output.console.print(f"Ray dashboard: http://{url}")
