"""The `haloc` command (pyproject's [project.scripts]; also `python -m pipelines.haloc_cli`).

    haloc run PIPELINE [flags]     a pipeline run, as `python -m pipelines.PIPELINE [flags]` (same flags, exit codes)
    haloc report RUN [--store S]   report.html and the terminal table again, from a run's stored artifacts
    haloc env [flags]              what `python -m pipelines.env` prints (versions, devices, profiles, nodes)
    haloc detect [flags]           what `python -m workers.detect` prints (this node's Ray resources)
    haloc --version

Exit codes as the pipelines' (pipelines.cli): 0 done, 2 bad input with one line naming it, 1 anything else.
"""
from __future__ import annotations

import argparse
import sys

from haloc.errors import BadInputError

from .cli import EXIT_BAD_INPUT, EXIT_OK
from .presets import CIFAR_RESNET20, CIFAR_VGG16, COMPRESS, IMAGENET_RESNET18

PIPELINES = {d.pipeline: d for d in (COMPRESS, IMAGENET_RESNET18, CIFAR_RESNET20, CIFAR_VGG16)}
COMMANDS = {
    "run": "compress: profile, search, select, fine-tune, validate and report (`haloc run PIPELINE --help`)",
    "report": "re-render report.html and the terminal table from a run's stored artifacts",
    "env": "versions, devices, hardware profiles and the cluster's nodes (attach it to bug reports)",
    "detect": "this node's Ray resources (hw_cpu, hw_cuda, hw_jetson, hw_asic) for `ray start --resources`",
}


def usage() -> str:
    lines = ["usage: haloc [--version] COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<8}{what}" for name, what in COMMANDS.items()]
    lines += ["", f"pipelines: {', '.join(PIPELINES)}"]
    return "\n".join(lines)


def _bad(line: str) -> int:
    print(f"error: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return EXIT_OK if argv else EXIT_BAD_INPUT
    if argv[0] == "--version":
        from haloc import __version__

        print(f"haloc {__version__}")
        return EXIT_OK
    command, rest = argv[0], argv[1:]
    if command == "run":
        return _run(rest)
    if command == "report":
        return _report(rest)
    if command == "env":
        from .env import main as env_main

        return env_main(rest)
    if command == "detect":
        from workers.detect import main as detect_main

        return detect_main(rest)
    return _bad(f"unknown command {command!r}; use one of {', '.join(COMMANDS)} (haloc --help)")


def _run(rest: list[str]) -> int:
    from .cli import main as pipeline_main

    if not rest or rest[0].startswith("-"):
        if rest[:1] in (["-h"], ["--help"]):
            print(f"usage: haloc run PIPELINE [flags]; PIPELINE: {', '.join(PIPELINES)}; "
                  "`haloc run PIPELINE --help` lists the flags")
            return EXIT_OK
        return _bad(f"haloc run needs a pipeline first: haloc run PIPELINE [flags], PIPELINE one of "
                    f"{', '.join(PIPELINES)}")
    name = rest[0]
    if name not in PIPELINES:
        return _bad(f"unknown pipeline {name!r}; use one of {', '.join(PIPELINES)}")
    return pipeline_main(PIPELINES[name], rest[1:], prog=f"haloc run {name}")


def _report(rest: list[str]) -> int:
    p = argparse.ArgumentParser(prog="haloc report", description=COMMANDS["report"] + ".",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run", metavar="RUN", help="the run id")
    p.add_argument("--store", default="runs", help="the run's artifact store: a local folder or s3://bucket/prefix")
    args = p.parse_args(rest)  # argparse itself exits 2 on malformed arguments
    try:
        if "://" not in args.store:
            from pathlib import Path

            if not Path(args.store).expanduser().is_dir():  # opening a local store would create it
                raise BadInputError(f"store folder {args.store!r} does not exist; pass the --store the run was "
                                    "made with")
        from orchestrator.run_layout import RunLayout
        from orchestrator.stages.report import render_table, rerender

        report = rerender(args.store, args.run)
        from rich.console import Console

        # not a terminal (a pipe, a file): wide enough that no cell wraps, as the pipelines' own table
        Console(soft_wrap=True, highlight=False,
                width=None if sys.stdout.isatty() else 1000).print(render_table(report))
        print(f"report at {RunLayout(args.store, args.run).uri('report.html')}", file=sys.stderr)
        return EXIT_OK
    except BaseException as e:
        from .cli import classify

        code, line = classify(e)
        if code is None:
            raise
        print(line, file=sys.stderr)
        return code


def console() -> None:
    """The console script: main's exit code. After `haloc run` the interpreter's teardown is skipped,
    as `python -m pipelines.X` skips it (pipelines.cli.run_and_exit says why)."""
    import os

    code = main()
    if sys.argv[1:2] != ["run"]:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    console()
