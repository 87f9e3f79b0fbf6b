"""BENCHMARKS.md's tables, rendered from the result files committed under benchmarks/results/.

    python -m benchmarks.tables            # rewrites every rendered table of BENCHMARKS.md in place
    python -m benchmarks.tables --check    # exit 1 naming each table that differs from its result file

A rendered table sits between two marker lines in BENCHMARKS.md:

    <!-- table NAME: rendered from benchmarks/results/FILE by `python -m benchmarks.tables` -->
    ...
    <!-- end table NAME -->

and everything between them (the table and the line that says where, when and on what the figures
were measured) comes from RENDERERS[NAME] applied to the result file; an edit by hand is undone by
the next render and failed by tests/benchmarks/test_tables.py. A result file with no renderer, or a
renderer with no block, fails that test too: the evidence and the text cannot drift apart.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


@dataclass(frozen=True)
class Renderer:
    result_file: str  # under benchmarks/results/
    render: Callable[[dict], list[str]]  # the block's lines, from the result file's JSON


def _utc(stamp: str | None) -> str:
    """'2026-12-07T06:42:00+00:00' -> '2026-12-07 06:42 UTC'."""
    return f"{stamp[:10]} {stamp[11:16]} UTC" if stamp else "unknown time"


def _load(values) -> str:
    return f"{values[0]:.2f}" if values else "not recorded"


def provenance_line(record: dict, file: str) -> str:
    """Where the figures come from: the result file, the code version, the machine, the time and the load."""
    p = record.get("provenance", record)
    machine = p.get("machine") or {}
    finished = _utc(p.get("finished"))[11:] if p.get("finished") else "unknown"
    return (f"Result file `benchmarks/results/{file}`: code {p.get('code_version', 'unknown')}, host "
            f"{machine.get('host', '?')} ({machine.get('cpus', '?')} CPUs, Python {machine.get('python', '?')}), "
            f"{_utc(p.get('started'))} to {finished}, 1-minute load {_load(p.get('load_at_start'))} at the start "
            f"and {_load(p.get('load_at_end'))} at the end.")


def _shown_command(command: str) -> str:
    """A command as the README gives it: the benchmark's temporary data folder named for what it is."""
    return re.sub(r"--data \S+", "--data <generated ImageFolder>", command)


def render_first_run(record: dict) -> list[str]:
    by_command: dict[str, list[dict]] = {}
    for a in record["attempts"]:
        by_command.setdefault(_shown_command(a["command"]), []).append(a)
    lines = ["| command | attempts | exit codes | seconds | quiet before it |", "|---|---|---|---|---|"]
    for command, attempts in by_command.items():
        lines.append(f"| `{command}` | {len(attempts)} | {', '.join(str(a['exit']) for a in attempts)} | "
                     f"{', '.join(format(a['seconds'], '.0f') for a in attempts)} | "
                     f"{', '.join('yes' if a.get('quiet') else 'no' for a in attempts)} |")
    zero = sum(a["exit"] == 0 for a in record["attempts"])
    return lines + ["", f"{zero} of {len(record['attempts'])} attempts exited 0.",
                    provenance_line(record, "first_run.json")]


def render_timing_protocol(record: dict) -> list[str]:
    lines = ["| condition | threads | rows still noisy | rows measured again | spread median / p90 | rows took "
             "| within 10% (gate 0.9) | median error | models measured (of the original) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for condition, arms in record["results"].items():
        for threads, f in arms.items():
            c = f.get("calibration") or {}
            within = (f"{c['within_10pct']:.2f} ({'passed' if c['passed'] else 'failed'})" if c else "-")
            span = f"{c['cost_span'][0]:.2f}-{c['cost_span'][1]:.2f}" if c else "-"
            error = f"{c['median_rel_error']:.1%}" if c else "-"
            lines.append(f"| {condition} | {threads} | {f['noisy_rows']} of {f['rows']} | {f['remeasured_rows']} | "
                         f"{f['spread_median']:.3f} / {f['spread_p90']:.3f} | {f['seconds']:.0f} s | {within} | "
                         f"{error} | {span} |")
    settings = record.get("settings", {})
    return lines + ["", f"Settings: model {settings.get('model')}, rank step {settings.get('rank_step')}, "
                    f"{settings.get('samples')} calibration models. " + provenance_line(record, "timing_protocol.json")]


RENDERERS: dict[str, Renderer] = {
    "first_run": Renderer("first_run.json", render_first_run),
    "timing_protocol": Renderer("timing_protocol.json", render_timing_protocol),
}


def _markers(name: str) -> tuple[str, str]:
    file = RENDERERS[name].result_file
    return (f"<!-- table {name}: rendered from benchmarks/results/{file} by `python -m benchmarks.tables` -->",
            f"<!-- end table {name} -->")


def rendered_block(name: str, results: Path = RESULTS) -> str:
    record = json.loads((results / RENDERERS[name].result_file).read_text())
    return "\n".join(RENDERERS[name].render(record))


def current_block(name: str, text: str) -> str | None:
    """The text between NAME's markers in `text`, None when the markers are not there."""
    begin, end = _markers(name)
    match = re.search(re.escape(begin) + r"\n(.*?)" + re.escape(end), text, re.S)
    return match.group(1).rstrip("\n") if match else None


def render_all(text: str, results: Path = RESULTS) -> str:
    for name in RENDERERS:
        begin, end = _markers(name)
        if current_block(name, text) is None:
            raise SystemExit(f"BENCHMARKS.md has no block for table {name!r}: add the lines\n{begin}\n{end}\n"
                             "where the table belongs, then run `python -m benchmarks.tables` again")
        text = re.sub(re.escape(begin) + r"\n.*?" + re.escape(end),
                      lambda _m, n=name, b=begin, e=end: f"{b}\n{rendered_block(n, results)}\n{e}", text, flags=re.S)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its file")
    args = ap.parse_args(argv)
    text = BENCHMARKS_MD.read_text()
    new = render_all(text)
    if args.check:
        stale = [n for n in RENDERERS if current_block(n, text) != current_block(n, new)]
        for n in stale:
            print(f"BENCHMARKS.md: table {n!r} differs from benchmarks/results/{RENDERERS[n].result_file}; "
                  "run `python -m benchmarks.tables`")
        return 1 if stale else 0
    if new != text:
        BENCHMARKS_MD.write_text(new)
    print(f"BENCHMARKS.md: {len(RENDERERS)} table(s) rendered from benchmarks/results/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
