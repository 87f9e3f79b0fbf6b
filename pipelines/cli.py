"""The command line shared by the pipelines: flags and presets -> (pipelines.spec_builder) a RunSpec -> the runner.

Exit codes (README, "Exit codes"): 0 done, every budget met on measurement; 3 done, but a model
missed its budget on measurement or a noisy LUT was accepted (each named; --allow-miss makes it 0);
2 bad input (one message naming the input and the fix, no traceback); 4 the store became unavailable
(an outage: rerun the same command once it answers); 5 a LUT failed its quality gate (a busy node:
rerun on a quiet one, or --accept-noisy-lut); 1 anything else; 130 interrupted (rerun to resume).
Heavy imports (torch, ray) happen only after the flags are parsed.
"""
from __future__ import annotations

import argparse
import functools
import sys

from haloc.errors import BadInputError, as_flag

from .presets import PRESETS, PipelineDefaults
from .spec_builder import DEFAULT_PRESET, DEFAULT_STORE

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_VERDICT, EXIT_STORE_UNAVAILABLE, EXIT_NOISY_LUT = 0, 1, 2, 3, 4, 5
# interrupted: 128 + the signal (130 SIGINT, 143 SIGTERM), from orchestrator.interrupts.Interrupted.exit_code




def _default(defaults: PipelineDefaults, *fields: str) -> str:
    """"(default: ...)" of RunSpec fields as the presets set them, e.g. "(default: demo, quick: 0.6; paper: 0.34)"."""
    from dataclasses import MISSING
    from dataclasses import fields as dataclass_fields

    from orchestrator.run_spec import RunSpec

    base = {f.name: f.default for f in dataclass_fields(RunSpec) if f.default is not MISSING}

    def shown(preset: str) -> str:
        values = [defaults.preset(preset).get(f, base.get(f)) for f in fields]
        return " ".join(" ".join(map(str, v)) if isinstance(v, tuple) else "none" if v is None
                        else ("on" if v else "off") if isinstance(v, bool) else str(v)
                        for v in values)

    by_value: dict[str, list[str]] = {}
    for preset in PRESETS:
        by_value.setdefault(shown(preset), []).append(preset)
    if len(by_value) == 1:
        return f"(default: {next(iter(by_value))})"
    return "(default: " + "; ".join(f"{', '.join(names)}: {v}" for v, names in by_value.items()) + ")"


# --help's groups, one per stage of a run (and one for the run itself), in the order a run meets them
GROUPS = {
    "run": "run and cluster",
    "data": "data and model (and, without --weights, training the original first)",
    "profile": "profile: each hardware's layer latencies (LUTs) and their calibration",
    "search": "search: ranks per hardware and budget",
    "finetune": "fine-tune the selected models",
    "verdict": "validate and report",
}


def build_parser(defaults: PipelineDefaults, prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or f"python -m pipelines.{defaults.pipeline}",
        description="HALOC on Ray: profile, search, select, fine-tune, validate and report "
                    f"{defaults.model or 'the model that --model names'}.",
        epilog="Defaults that depend on --preset are given per preset. Exit codes: 0 every budget met on "
               "measurement, 3 a budget missed or a noisy LUT accepted, 2 bad input, 4 store unavailable, "
               "5 a LUT failed its quality gate, 130 interrupted, 1 anything else.")
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    d = functools.partial(_default, defaults)
    _run_flags(groups["run"])
    _data_flags(groups["data"], defaults, d)
    _profile_flags(groups["profile"], d)
    _search_flags(groups["search"], d)
    _finetune_flags(groups["finetune"], d)
    _verdict_flags(groups["verdict"], d)
    return p


def _knob(g, name: str, d, **extra) -> None:
    """The flag of RunSpec field `name`, made from its declaration (orchestrator.run_spec.knob): its
    form, its type (a tuple takes one value or more), its choices and help, and each preset's default."""
    from orchestrator.run_spec import flag_of, knob_of

    f = knob_of(name)
    kind, kwargs = f.type, {}
    if kind.startswith("tuple["):
        kwargs["nargs"], kind = "+", kind[len("tuple["):].split(",")[0]
    kind = kind.split(" | ")[0]
    if kind == "bool":  # a switch: off unless given
        kwargs["action"] = "store_true"
    elif f.metadata["choices"]:
        kwargs["choices"] = f.metadata["choices"]
    elif kind in ("int", "float"):
        kwargs["type"] = int if kind == "int" else float
    g.add_argument(flag_of(name), help=f"{f.metadata['help']} {d(name)}", **kwargs, **extra)


def _run_flags(g) -> None:
    # --preset and --store default to None here, so that a value from --config is told apart from a flag
    # given; spec_builder.build_spec resolves them to DEFAULT_PRESET and DEFAULT_STORE
    g.add_argument("--config", metavar="RUN_YAML",
                   help="a YAML file of RunSpec fields (e.g. a run's own <store>/<run>/config.yaml): its values "
                        "replace the preset's, the flags given replace its (default: none)")
    g.add_argument("--preset", choices=PRESETS,
                   help="demo: every stage on generated data in minutes; quick: the demo's short settings on your "
                        f"--data; paper: the paper's setup (needs --data) (default: {DEFAULT_PRESET})")
    g.add_argument("--store", help="artifact store: a local folder or s3://bucket/prefix "
                                   "(?endpoint_override=host:port&scheme=http for S3-compatible servers) "
                                   f"(default: {DEFAULT_STORE})")
    g.add_argument("--run-id", help="run id; rerun with the same id to resume "
                                    "(default: <pipeline>-demo, or <pipeline>-<preset>-<data folder>)")
    g.add_argument("--address", help="a running Ray cluster (host:port or auto) (default: an embedded local Ray)")
    g.add_argument("--no-progress", action="store_true",
                   help="plain, complete lines instead of live bars and tables (default: off; plain anyway when "
                        "the output is not a terminal)")
    g.add_argument("--verbose", action="store_true",
                   help="show Ray's, Tune's and Train's own output too (default: off, it goes to "
                        "<run>/logs/driver.log)")


def _data_flags(g, defaults: PipelineDefaults, d) -> None:
    g.add_argument("--data", help=f"{defaults.dataset or 'the'} data: a local folder or s3:// URI (ImageFolder "
                                  "train/ and val/, or CIFAR-10 python batches), or package.module:factory "
                                  "returning (train, val) torch Datasets (default: none, the demo's generated data)")
    g.add_argument("--model", help="the model to compress: a registry name, torchvision:NAME (any torchvision "
                                   "classification model) or package.module:factory (a callable returning an "
                                   f"nn.Module) (default: {defaults.model or 'none: give one'})")
    g.add_argument("--weights", help="pretrained weights: torchvision, a file or s3:// URI; none: the original is "
                                     f"trained here first {d('weights')}")
    g.add_argument("--num-classes", type=int,
                   help=f"classes of the model's head (default: read from --data; {defaults.demo.get('num_classes')} "
                        "in the demo)")
    g.add_argument("--image-size", type=int, metavar="S",
                   help="side of the model's input: S x S RGB images, what the data loaders give (default: the "
                        f"pipeline's {defaults.image_size}, or the data's own side when its images are smaller or "
                        f"come from your own datasets; {defaults.demo.get('image_size')} in the demo)")
    # the input's old flag: every loader gives RGB squares, so its C and H=W only restated --image-size;
    # still taken (flags_given says it is deprecated), no longer listed
    g.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help=argparse.SUPPRESS)
    g.add_argument("--py-modules", action="append", metavar="DIR",
                   help="a local package folder that Ray ships to every node (your model or data factory); "
                        "repeatable (default: none)")
    g.add_argument("--demo-size", type=int, nargs=2, metavar=("TRAIN", "VAL"),
                   help=f"demo data: samples per split {d('demo_train', 'demo_val')}")
    for name in ("pretrain_epochs", "pretrain_rounds", "pretrain_steps_per_epoch", "pretrain_batch_size",
                 "pretrain_lr"):
        _knob(g, name, d)


def _profile_flags(g, d) -> None:
    from hw_profiles.profile import list_profiles

    g.add_argument("--hardware", nargs="+",
                   help=f"hardware profiles to target: {', '.join(list_profiles())}, "
                        "or one of yours from --profile-dir "
                        f"(`haloc env --profile-dir DIR` lists them) {d('hardware')}")
    g.add_argument("--profile-dir", action="append", metavar="DIR",
                   help="a folder of your own hardware profiles (*.yaml, as hw_profiles/profiles/); repeatable "
                        "(default: none)")
    _knob(g, "rank_step", d)
    _knob(g, "calibration_samples", d)
    g.add_argument("--reprofile", nargs="*", metavar="HW",
                   help="measure the LUTs of this run again (all hardware, or the named) and redo every later stage "
                        "(default: off)")
    _knob(g, "luts_from", d, metavar="RUN_ID")
    _knob(g, "accept_noisy_lut", d)


def _search_flags(g, d) -> None:
    _knob(g, "budgets", d)
    _knob(g, "budget_metric", d)
    g.add_argument("--budget-margin", type=float, metavar="M",
                   help="aim the search this fraction below each latency budget, so that models the LUT puts "
                        "just under it still meet it when measured (default: each hardware profile's: the larger of "
                        "twice its calibrated LUT's median error and its worst under-prediction + 0.01, 0.03-0.10; "
                        "0 on simulators)")
    for name in ("seeds", "search_mode", "rank_mode", "search_epochs", "search_steps_per_epoch", "multi_target"):
        _knob(g, name, d)


def _finetune_flags(g, d) -> None:
    for name in ("finetune_epochs", "finetune_steps_per_epoch", "finetune_init", "finetune_workers"):
        _knob(g, name, d)


def _verdict_flags(g, d) -> None:
    _knob(g, "allow_miss", d)


def spec_from_args(args: argparse.Namespace, defaults: PipelineDefaults):
    """The command line's way into the one configuration path: the flags given, as RunSpec fields, and
    --config's file, into pipelines.spec_builder.build_spec (which the Python API calls directly)."""
    from . import run_config
    from .spec_builder import build_spec

    config, where = ({}, "--config")
    if getattr(args, "config", None):
        config, where = run_config.load_config(args.config), f"--config {args.config}"
    return build_spec(defaults, flags_given(args), config, where)


# flags made by hand whose value is the RunSpec field of the same name, when given (every knob's own flag,
# `_knob`, is taken too)
_SAME_NAME = ("preset", "data", "store", "run_id", "num_classes", "address", "model", "weights", "budget_margin")


def flags_given(args: argparse.Namespace) -> dict:
    """{RunSpec field: value} of every flag given (a flag not given is absent, not None)."""
    from pathlib import Path

    from orchestrator.run_spec import flag_knobs

    given = {k: getattr(args, k) for k in _SAME_NAME if getattr(args, k, None) is not None}
    for k in flag_knobs():
        value = getattr(args, k, None)
        if value is not None and value is not False:  # a switch left off is not given
            given[k] = tuple(value) if isinstance(value, list) else value
    image_size = _image_size(args)
    if image_size is not None:
        given["image_size"] = image_size
    if getattr(args, "hardware", None):
        given["hardware"] = tuple(args.hardware)
    if getattr(args, "demo_size", None):
        given["demo_train"], given["demo_val"] = args.demo_size
    if getattr(args, "no_progress", False):
        given["progress"] = False
    if getattr(args, "py_modules", None):
        given["py_modules"] = tuple(args.py_modules)
    if getattr(args, "profile_dir", None):
        given["profile_dirs"] = tuple(str(Path(d).expanduser().resolve()) for d in args.profile_dir)
    return given


def _image_size(args) -> int | None:
    """--image-size, or the side S of the deprecated --input-size 3 S S (taken, with a warning naming
    the flag that replaces it, so that an older command line still runs)."""
    if getattr(args, "input_size", None) is None:
        return args.image_size
    c, h, w = args.input_size
    if c != 3 or h != w or h < 8:
        raise BadInputError(f"--input-size {c} {h} {w}: the data loaders give RGB squares; pass --image-size S "
                            "with S >= 8 (e.g. --image-size 32), which replaces --input-size")
    if args.image_size is not None and args.image_size != h:
        raise BadInputError(f"--input-size {c} {h} {w} and --image-size {args.image_size} disagree; give "
                            "--image-size alone (it replaces --input-size)")
    print(f"warning: --input-size is deprecated and will be removed; pass --image-size {h} (the same "
          f"{c} x {h} x {w} input)", file=sys.stderr)
    return h


def main(defaults: PipelineDefaults, argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(defaults, prog).parse_args(argv)  # argparse itself exits 2 on malformed flags
    try:
        spec = spec_from_args(args, defaults)
        from orchestrator.runner import run_pipeline
        from orchestrator.verdicts import misses

        report = run_pipeline(spec, reprofile=args.reprofile, verbose=args.verbose, redirect=True)
        problems = misses(report)
        print(verdict_summary(report), file=sys.stderr)
        for line in problems:
            print(f"verdict: {line}", file=sys.stderr)
        if problems and not spec.allow_miss:
            print(f"exit 3: {len(problems)} verdict(s) above; the report is written (--allow-miss exits 0)",
                  file=sys.stderr)
            return EXIT_VERDICT
        return EXIT_OK
    except BaseException as e:
        code, line = classify(e)
        if code is None:
            raise
        print(line, file=sys.stderr)
        return code


def run_and_exit(defaults: PipelineDefaults) -> None:
    """`python -m pipelines.X`: main's exit code, without the interpreter's teardown. By then the run has
    ended, Ray is disconnected and every line is flushed; what is left are threads of Ray's core worker
    and torch, whose teardown at interpreter exit can crash and turn a finished run's code into a
    signal's (seen once in the suite: every stage done, the report written, a non-zero exit)."""
    import os

    code = main(defaults)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def verdict_summary(report: dict) -> str:
    """One line: how many results met their budget on measurement, on every target they name, how many
    of those only within the measurement's noise (uncertain), which are dominated on a target of theirs,
    and how the original was made."""
    results = report.get("results", [])
    met = [r for r in results if r.get("budget_check") and all(c.get("met") for c in r["budget_check"].values())]
    uncertain = [r.get("config_id") for r in met if r.get("uncertain")]
    dominated = []
    for r in results:  # on its own targets: another model is as accurate or more and as fast or faster there
        by = sorted({c for h, cs in (r.get("dominated_by") or {}).items() if h in r.get("targets", []) for c in cs})
        if by:
            dominated.append(f"{r.get('config_id')} (by {', '.join(by)})")
    beats = [r.get("config_id") for r in results if r.get("beats_original")]
    noisy = [hw for hw, q in (report.get("lut_quality") or {}).items() if not q.get("passed", True)]
    line = f"verdicts: {len(met)} of {len(results)} result(s) met their budget on measurement"
    line += f", {len(uncertain)} uncertain (met within noise: {', '.join(uncertain)})" if uncertain else ""
    line += f"; dominated: {', '.join(dominated)}" if dominated else ""
    line += f"; beats the original beyond noise: {', '.join(beats)} (the report says why it may)" if beats else ""
    training = ((report.get("baseline") or {}).get("training") or {}).get("text")
    line += f"; original: {training}" if training else ""
    return line + (f"; LUT(s) that failed the quality gate, accepted: {', '.join(noisy)}" if noisy else "")


def classify(e: BaseException) -> tuple[int | None, str]:
    """(exit code, the one line to print) of a known failure, (None, "") for a bug (its traceback
    is the report). A signal or a bad input can arrive wrapped by Ray: the whole chain is looked at."""
    from orchestrator.interrupts import Interrupted
    from orchestrator.runner import in_chain
    from orchestrator.store import StoreUnavailableError, StoreWriteError
    from orchestrator.verdicts import NoisyLutError

    if (found := in_chain(e, Interrupted)) is not None:
        where = f" in {found.stage}" if found.stage else ""
        return found.exit_code, (f"\ninterrupted{where} ({found}); rerun the same command (same --run-id and "
                                 "--store) to resume")
    if isinstance(e, KeyboardInterrupt):  # outside a stage, raised by Ray for our signal
        from orchestrator.interrupts import from_keyboard_interrupt

        return from_keyboard_interrupt().exit_code, ("\ninterrupted; rerun the same command (same --run-id and "
                                                     "--store) to resume")
    if isinstance(e, NoisyLutError):
        return EXIT_NOISY_LUT, f"error: {e}"
    if isinstance(e, BadInputError):  # the core names its parameters; the command line shows them as flags
        return EXIT_BAD_INPUT, f"error: {e.render(as_flag)}"
    if isinstance(e, StoreUnavailableError):
        return EXIT_STORE_UNAVAILABLE, (f"error: {e}. Nothing written before the outage is lost: rerun the same "
                                        "command (same --run-id and --store) once the store answers again")
    if isinstance(e, StoreWriteError):
        return EXIT_FAILED, f"error: {e.strerror}"
    return None, ""
